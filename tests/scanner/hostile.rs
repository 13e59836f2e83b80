//! Hostile and broken registries, played by the paginating stand-in: endless `Link`
//! chains, pages that come round again under new URLs, gigantic pages (declared or
//! streamed), millions of tiny tags in one page, slow bodies, gzip bombs, redirect loops
//! and redirects to other hosts. Each scan ends in a classified error at one of the
//! scanner's limits (the tag cap, the page body cap, the scan's timeout, the redirect
//! limit, loop detection), and no credential reaches another host. What is asserted are
//! those limits and request counts, never timings.

use super::{request, scanner_with, tags};
use image_reflector::scanner::{Credentials, ScanErrorKind, ScannerConfig};
use std::time::Duration;
use test_support::fake_registry::{LinkStyle, PageBody, StandIn, StandInOptions};

const MIB: usize = 1 << 20;

/// One hostile registry, the limits the scan runs under and how it must end.
struct Case {
    name: &'static str,
    registry: StandInOptions,
    limits: fn(&mut ScannerConfig),
    timeout: Duration,
    kind: ScanErrorKind,
    /// Words the error must hold.
    says: &'static str,
    /// Requests the registry may receive at most (the `/v2/` probe included).
    max_requests: usize,
}

fn stand_in(tags: Vec<String>) -> StandInOptions {
    StandInOptions {
        repository: "org/app".into(),
        tags,
        ..Default::default()
    }
}

fn cases() -> Vec<Case> {
    let page = |body: PageBody| StandInOptions {
        body,
        ..stand_in(tags("h", 20))
    };
    vec![
        Case {
            name: "endless Link chain, new tags on every page",
            registry: StandInOptions {
                link: LinkStyle::Endless,
                ..stand_in(Vec::new())
            },
            limits: |c| {
                c.page_size = 10;
                c.max_tags = 200;
            },
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::TooManyTags,
            says: "more than 200 tags",
            max_requests: 1 + 21,
        },
        Case {
            name: "endless Link chain, slower than the scan's deadline",
            registry: StandInOptions {
                link: LinkStyle::Endless,
                ..stand_in(Vec::new())
            },
            // 20 requests a second to the host: about 40 in the 1 s deadline.
            limits: |c| {
                c.page_size = 10;
                c.per_host_requests_per_second = 20.0;
            },
            timeout: Duration::from_secs(1),
            kind: ScanErrorKind::TimedOut,
            says: "did not finish within 1s",
            max_requests: 60,
        },
        Case {
            name: "pages come round again under new URLs",
            registry: StandInOptions {
                link: LinkStyle::Cycle,
                ..stand_in(tags("c", 30))
            },
            limits: |c| c.page_size = 10,
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::Malformed,
            says: "pagination loop",
            max_requests: 1 + 4,
        },
        Case {
            name: "gigantic page, length declared (4 MiB, cap 1 MiB)",
            registry: page(PageBody::Padded {
                bytes: 4 * MIB,
                content_length: true,
            }),
            limits: |c| c.max_page_bytes = MIB,
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::Malformed,
            says: "larger than 1048576 bytes",
            max_requests: 2,
        },
        Case {
            name: "gigantic page, streamed (64 MiB, cap 1 MiB)",
            registry: page(PageBody::Padded {
                bytes: 64 * MIB,
                content_length: false,
            }),
            limits: |c| c.max_page_bytes = MIB,
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::Malformed,
            says: "larger than 1048576 bytes",
            max_requests: 2,
        },
        Case {
            name: "2,000,000 one-character tags in one 8 MB page (cap 10,000 tags)",
            registry: page(PageBody::TinyTags(2_000_000)),
            limits: |c| c.max_tags = 10_000,
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::TooManyTags,
            says: "more than 10000 tags",
            max_requests: 2,
        },
        Case {
            name: "slow body, one byte every 200 ms",
            registry: page(PageBody::Trickle(Duration::from_millis(200))),
            limits: |_| {},
            timeout: Duration::from_secs(1),
            kind: ScanErrorKind::TimedOut,
            says: "did not finish within 1s",
            max_requests: 2,
        },
        Case {
            name: "gzip bomb (32 MiB in about 32 KiB)",
            registry: page(PageBody::GzipBomb(32 * MIB)),
            limits: |c| c.max_page_bytes = MIB,
            timeout: Duration::from_secs(30),
            kind: ScanErrorKind::Malformed,
            // Not inflated: the compressed bytes are not JSON.
            says: "not valid JSON",
            max_requests: 2,
        },
    ]
}

#[tokio::test]
async fn every_hostile_registry_ends_in_a_classified_error_within_the_scanners_limits() {
    let mut table = vec![
        "| hostile registry | scan ends in | requests |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let mut wrong = Vec::new();
    for case in cases() {
        let registry = StandIn::start(case.registry).await;
        let scanner = scanner_with(|c| {
            c.per_host_requests_per_second = 0.0;
            (case.limits)(c);
        });
        let mut req = request(&registry.host(), "org/app");
        req.timeout = case.timeout;
        let outcome = scanner.scan(&req).await;
        let requests = registry.requests();
        match &outcome {
            Err(e) if e.kind() == case.kind && e.to_string().contains(case.says) => {}
            other => wrong.push(format!(
                "{}: expected {:?} saying {:?}, got {:?}",
                case.name,
                case.kind,
                case.says,
                other.as_ref().map(|o| o.tag_count)
            )),
        }
        if requests > case.max_requests {
            wrong.push(format!(
                "{}: {requests} requests, at most {} expected",
                case.name, case.max_requests
            ));
        }
        let ended = match &outcome {
            Ok(o) => format!("{} tags", o.tag_count),
            Err(e) => format!("`{}`", e.kind().as_str()),
        };
        table.push(format!("| {} | {ended} | {requests} |", case.name));
    }
    println!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_redirect_loop_is_a_classified_error_after_five_redirects() {
    let mut opts = stand_in(tags("r", 3));
    // The stand-in's own address is known only once it listens: bind first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    opts.redirect_to = Some(format!("http://{addr}"));
    let registry = StandIn::serve_on(listener, opts);
    let err = scanner_with(|_| {})
        .scan(&request(&registry.host(), "org/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Malformed, "{err}");
    assert!(err.to_string().contains("more than 5 times"), "{err}");
    // The probe, the first request and five redirects.
    assert_eq!(registry.tag_requests(), 6);
}

#[tokio::test]
async fn a_redirect_to_another_host_or_port_carries_no_credentials() {
    let other = StandIn::start(stand_in(tags("elsewhere", 4))).await;
    let port = other.addr().port();
    for elsewhere in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let registry = StandIn::start(StandInOptions {
            basic: Some(("u".into(), "secret-pw".into())),
            redirect_to: Some(elsewhere.clone()),
            ..stand_in(tags("here", 3))
        })
        .await;
        let mut req = request(&registry.host(), "org/app");
        req.credentials = Credentials::Basic {
            username: "u".into(),
            password: "secret-pw".into(),
        };
        let before = other.authorizations().len();
        let out = scanner_with(|_| {}).scan(&req).await;
        let at_other = other.authorizations();
        assert!(
            at_other.len() > before,
            "{elsewhere}: the redirect was not followed"
        );
        assert!(
            at_other[before..].iter().all(Option::is_none),
            "{elsewhere} got credentials: {at_other:?}"
        );
        assert!(registry.authorizations().iter().any(Option::is_some));
        // The other registry answers without credentials: its tags are what the scan saw.
        assert_eq!(out.map(|o| o.tag_count).ok(), Some(4), "{elsewhere}");
    }
}
