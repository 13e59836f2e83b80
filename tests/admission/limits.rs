//! The webhook listener's limits, against the real binary over TLS, each with a client
//! that misbehaves as an abuser would (issue 18): heads trickled or oversized, bodies
//! that stall, connections that never speak, more connections than the cap, HTTP/2
//! streams reset as fast as they open. The server's timeouts are 10 s (heads, bodies,
//! the first byte after a handshake); waits below allow for a loaded machine.

use std::time::{Duration, Instant};
use test_support::webhook::Webhook;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a test waits for the server to act on a 10 s timeout before it fails.
const PATIENCE: Duration = Duration::from_secs(40);

/// Reads until the server closes the stream; returns everything read, or None if the
/// server had not closed it within `PATIENCE`.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok()?;
    Some(out)
}

/// A legitimate review still gets its answer.
async fn still_answers(server: &Webhook) {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "after", "operation": "DELETE",
            "kind": {"group": "image.toolkit.fluxcd.io", "version": "v1", "kind": "ImageRepository"},
            "resource": {"group": "image.toolkit.fluxcd.io", "version": "v1", "resource": "imagerepositories"},
            "namespace": "default", "name": "x", "userInfo": {"username": "u"}}
    });
    let resp = server
        .client()
        .post(server.url("/validate"))
        .json(&body)
        .send()
        .await
        .expect("a legitimate review");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_head_trickled_one_header_a_second_is_dropped_after_the_header_timeout() {
    let server = Webhook::start(&[]);
    let stream = server.tls(b"http/1.1").await.expect("TLS");
    let (mut r, mut w) = tokio::io::split(stream);
    let started = Instant::now();
    let trickle = async {
        w.write_all(b"POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .await
            .expect("first line");
        for i in 0.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if w.write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let closed = tokio::select! {
        read = read_until_closed(&mut r) => read.is_some(),
        _ = trickle => true,
    };
    assert!(
        closed,
        "the server kept a trickled head open for {:?}",
        started.elapsed()
    );
    still_answers(&server).await;
}

#[tokio::test]
async fn connections_that_never_send_a_byte_after_the_handshake_are_closed() {
    let server = Webhook::start(&[]);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut stream = server.tls(alpn).await.expect("TLS");
        assert!(
            read_until_closed(&mut stream).await.is_some(),
            "an idle {} connection stayed open for {PATIENCE:?}",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test]
async fn a_head_over_16_kib_gets_431_over_http1_and_http2() {
    let server = Webhook::start(&[]);
    let mut stream = server.tls(b"http/1.1").await.expect("TLS");
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    // The server may answer before the whole head is sent, and close.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await.unwrap_or_default();
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let stream = server.tls(b"h2").await.expect("TLS");
    let (client, connection) = h2::client::handshake(stream).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post("https://127.0.0.1/validate")
        .header("x-big", "a".repeat(20 * 1024))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    let response = response.await.expect("an answer");
    assert_eq!(response.status(), 431);

    // A head of a few KiB, as kube-apiserver sends, is read.
    let resp = server
        .client()
        .post(server.url("/validate"))
        .header("x-fine", "a".repeat(4 * 1024))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        resp.status(),
        400,
        "an empty review is a bad request, not a big head"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_after_the_body_timeout() {
    let server = Webhook::start(&[]);
    let mut stream = server.tls(b"http/1.1").await.expect("TLS");
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"apiVersion\":")
        .await
        .expect("head and a part of the body");
    let answer = read_until_closed(&mut stream)
        .await
        .expect("the server gave up on the body and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");
    let metrics = test_support::metrics_text(server.metrics).await;
    assert!(metrics.contains(r#"result="timeout""#), "{metrics}");
}

#[tokio::test]
async fn past_512_connections_a_new_one_waits_until_one_closes() {
    let server = Webhook::start(&[]);
    let mut held = Vec::new();
    for _ in 0..512 {
        held.push(server.tls(b"http/1.1").await.expect("TLS within the cap"));
    }
    let mut waiting = Box::pin(server.tls(b"http/1.1"));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut waiting)
            .await
            .is_err(),
        "the 513th handshake completed while 512 connections were open"
    );
    held.truncate(511);
    tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the 513th connection was served once one closed")
        .expect("TLS");
}

/// Opens an HTTP/2 connection to the webhook; its driver runs on its own task.
async fn h2_client(
    server: &Webhook,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = server.tls(b"h2").await.expect("TLS");
    let (client, connection) = h2::client::handshake(stream).await.expect("HTTP/2");
    (client, tokio::spawn(connection))
}

#[tokio::test]
async fn http2_streams_reset_as_fast_as_they_open_leave_legitimate_reviews_answered() {
    let server = Webhook::start(&[]);
    let (client, _connection) = h2_client(&server).await;
    let flood = async move {
        let mut client = client;
        for _ in 0..20_000 {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => return,
            };
            let request = http::Request::post("https://127.0.0.1/validate")
                .body(())
                .expect("request");
            match client.send_request(request, false) {
                Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => return,
            }
        }
    };
    let legitimate = async {
        for _ in 0..20 {
            still_answers(&server).await;
        }
    };
    tokio::join!(flood, legitimate);
    still_answers(&server).await;
}

#[tokio::test]
async fn an_http2_client_that_abandons_a_hundred_started_requests_is_disconnected() {
    let server = Webhook::start(&[]);
    let (client, connection) = h2_client(&server).await;
    let abandoned = abandon_started_requests(client).await;
    assert!(
        abandoned < 20 * 32,
        "the server kept a connection whose client abandoned {abandoned} started requests"
    );
    let _ = tokio::time::timeout(PATIENCE, connection).await;
    assert!(
        server
            .log()
            .contains("closing a webhook connection whose client abandoned 100 requests"),
        "{}",
        server.log()
    );
    still_answers(&server).await;
}

/// Rounds of 32 requests (the most streams the server allows at once), each with the
/// start of a body so that its handler runs, then every one reset; until the server
/// refuses new streams or 20 rounds. Returns how many were abandoned.
async fn abandon_started_requests(mut client: h2::client::SendRequest<bytes::Bytes>) -> usize {
    let mut abandoned = 0usize;
    for _ in 0..20 {
        let mut streams = Vec::new();
        for _ in 0..32 {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => return abandoned,
            };
            let request = http::Request::post("https://127.0.0.1/validate")
                .body(())
                .expect("request");
            let Ok((_, mut stream)) = client.send_request(request, false) else {
                return abandoned;
            };
            let _ = stream.send_data(bytes::Bytes::from_static(b"{\"apiVersion\""), false);
            streams.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for mut stream in streams {
            stream.send_reset(h2::Reason::CANCEL);
            abandoned += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    abandoned
}
