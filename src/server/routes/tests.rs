use super::*;
use axum::body::Body;

fn request(content_length: usize, chunks: &[usize]) -> Request {
    let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|&n| Ok(Bytes::from(vec![b' '; n])))
        .collect();
    Request::post("/validate")
        .header(header::CONTENT_LENGTH, content_length)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn a_body_waits_while_others_hold_the_budget_and_gets_408_if_they_keep_it() {
    let budget = BodyBudget::of_kib(8);
    let mut others = Share::new(&budget);
    others.cover(8 * 1024).await;
    let refused = read_body(request(4096, &[4096]), &budget).await;
    let Err((status, message)) = refused else {
        panic!("read a body with no budget left")
    };
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(message.contains("did not arrive within 10 s"), "{message}");
    drop(others);
    let (body, share) = read_body(request(4096, &[4096]), &budget)
        .await
        .expect("read once the budget is back");
    assert_eq!(body.len(), 4096);
    assert_eq!(share.kib, 4);
}

#[tokio::test]
async fn a_bodys_buffer_grows_with_what_arrives_not_with_what_is_declared() {
    let budget = BodyBudget::of_kib(1024);
    let (body, share) = read_body(request(MAX_BODY_BYTES, &[1024, 1024]), &budget)
        .await
        .expect("read");
    assert_eq!(body.len(), 2048);
    assert!(share.kib <= 4, "{} KiB held for 2 KiB", share.kib);
    drop(share);
    assert_eq!(
        budget.0.available_permits(),
        1024,
        "the share is given back"
    );
}

#[tokio::test]
async fn a_body_over_the_cap_gives_its_share_back_while_it_is_drained() {
    let budget = BodyBudget::of_kib(4 * 1024);
    let chunks = vec![64 * 1024; MAX_BODY_BYTES / (64 * 1024) + 2];
    let refused = read_body(request(MAX_BODY_BYTES + 128 * 1024, &chunks), &budget).await;
    assert!(matches!(refused, Err((StatusCode::PAYLOAD_TOO_LARGE, _))));
    assert_eq!(budget.0.available_permits(), 4 * 1024);
}
