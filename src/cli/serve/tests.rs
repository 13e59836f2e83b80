use super::*;

fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
    use clap::Parser as _;
    let cli =
        crate::cli::Cli::try_parse_from(["image-reflector", "serve"].iter().chain(args.iter()))?;
    match cli.command {
        crate::cli::Command::Serve(args) => Ok(*args),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn every_flag_of_fluxs_controller_parses_with_go_syntax_and_defaults() {
    let d = parse(&[]).unwrap();
    assert!(d.controllers.watch_all_namespaces);
    assert!(!d.controllers.enable_leader_election);
    assert_eq!(d.controllers.requeue_dependency, Duration::from_secs(30));
    assert_eq!(d.flux.min_retry_delay, Duration::from_millis(750));
    assert_eq!(d.flux.max_retry_delay, Duration::from_secs(900));
    assert_eq!(
        d.flux.leader_election_lease_duration,
        Duration::from_secs(35)
    );
    assert_eq!(
        d.flux.leader_election_renew_deadline,
        Duration::from_secs(30)
    );
    assert_eq!(d.flux.leader_election_retry_period, Duration::from_secs(5));
    assert!(d.flux.leader_election_release_on_cancel);
    assert_eq!(d.flux.token_cache_max_size, 100);
    assert_eq!(d.flux.token_cache_max_duration, Duration::from_secs(3600));
    assert_eq!(
        d.flux.watch_configs_label_selector,
        "reconcile.fluxcd.io/watch=Enabled"
    );
    assert!(d.flux.notices().is_empty(), "{:?}", d.flux.notices());

    let a = parse(&[
        "--watch-all-namespaces=false",
        "--enable-leader-election",
        "--no-cross-namespace-refs=true",
        "--leader-election-release-on-cancel=false",
        "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
        "--feature-gates=FluxStorage=true",
        "--feature-gates=ObjectLevelWorkloadIdentity=true",
        "--min-retry-delay=1s",
        "--max-retry-delay=5m0s",
        "--leader-election-lease-duration=40s",
        "--requeue-dependency=10s",
        "--watch-configs-label-selector=team=a",
        "--token-cache-max-size=0",
        "--token-cache-max-duration=30m",
        "--gc-interval=5",
        "--storage-value-log-file-size=1024",
        "--storage-compression-threshold=32",
        "--kubeconfig=/tmp/kc",
        "--aws-autologin-for-ecr",
        "--concurrent=10",
        "--log-level=debug",
        "--log-level=info",
    ])
    .unwrap();
    assert!(!a.controllers.watch_all_namespaces);
    assert!(a.controllers.enable_leader_election);
    assert!(a.no_cross_namespace_refs);
    assert!(!a.flux.leader_election_release_on_cancel);
    assert!(a.flux.gates().enabled("FluxStorage"));
    assert!(a.flux.gates().enabled("ObjectLevelWorkloadIdentity"));
    assert_eq!(a.flux.min_retry_delay, Duration::from_secs(1));
    assert_eq!(a.flux.max_retry_delay, Duration::from_secs(300));
    assert_eq!(a.controllers.requeue_dependency, Duration::from_secs(10));
    assert_eq!(a.controllers.concurrent, 10);
    // One line for each flag or gate that changes nothing here; none for those that
    // take effect (the cloud logins' gate, flags and cache bounds).
    let notices = a.flux.notices();
    for needle in [
        "--gc-interval",
        "--storage-value-log-file-size",
        "--storage-compression-threshold",
        "FluxStorage",
    ] {
        assert_eq!(
            notices.iter().filter(|n| n.contains(needle)).count(),
            1,
            "{needle} in {notices:?}"
        );
    }
    for needle in ["ObjectLevelWorkloadIdentity", "autologin", "token-cache"] {
        assert!(
            !notices.iter().any(|n| n.contains(needle)),
            "{needle} in {notices:?}"
        );
    }
    assert_eq!(a.flux.autologin(), vec![crate::scanner::cloud::Cloud::Aws]);
    let capped = parse(&["--token-cache-max-duration=2h"]).unwrap();
    assert!(
        capped
            .flux
            .notices()
            .iter()
            .any(|n| n.contains("ceiling of an hour")),
        "{:?}",
        capped.flux.notices()
    );
}

#[test]
fn a_bad_flux_flag_value_is_refused_naming_the_flag() {
    let e = parse(&["--feature-gates=Unknown=true"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--feature-gates") && e.contains("\"Unknown\" is not supported"),
        "{e}"
    );
    let e = parse(&["--min-retry-delay=soon"]).unwrap_err().to_string();
    assert!(e.contains("--min-retry-delay"), "{e}");
    // A boolean takes its value after `=`, as in Go: `--enable-leader-election false`
    // leaves `false` as a stray argument.
    assert!(parse(&["--enable-leader-election", "false"]).is_err());
}

#[test]
fn the_lease_name_gets_flux_s_hash_of_the_watch_label_selector() {
    let base = "image-reflector-controller-leader-election";
    assert_eq!(leader_election_id(base, None), base);
    assert_eq!(leader_election_id(base, Some("")), base);
    // sha256("sharding.fluxcd.io/key=shard1") starts with these 8 hex digits, as in
    // fluxcd/pkg/runtime's leaderelection.GenerateID.
    let id = leader_election_id(base, Some("sharding.fluxcd.io/key=shard1"));
    let sum = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b"sharding.fluxcd.io/key=shard1"))
    };
    assert_eq!(id, format!("{base}-{}", &sum[..8]));
    assert_ne!(
        id,
        leader_election_id(base, Some("sharding.fluxcd.io/key=shard2"))
    );
}

#[test]
fn listen_addresses_accept_flux_style_ports() {
    assert_eq!(
        parse_listen_addr(":9440").unwrap(),
        "0.0.0.0:9440".parse().unwrap()
    );
    assert_eq!(
        parse_listen_addr("127.0.0.1:0").unwrap(),
        "127.0.0.1:0".parse().unwrap()
    );
    assert_eq!(
        parse_listen_addr("[::1]:8080").unwrap(),
        "[::1]:8080".parse().unwrap()
    );
    assert!(
        parse_listen_addr("localhost")
            .unwrap_err()
            .contains("HOST:PORT")
    );
}
