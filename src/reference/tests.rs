use super::*;

fn ok(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn err(s: &str) -> ReferenceError {
    match ImageRef::parse(s) {
        Ok(r) => panic!("{s:?} should be refused, parsed as {}", r.canonical()),
        Err(e) => e,
    }
}

#[test]
fn an_official_image_gets_docker_hub_and_library() {
    let r = ok("alpine");
    assert_eq!(r.registry(), "docker.io");
    assert_eq!(r.repository(), "library/alpine");
    assert_eq!(r.canonical(), "docker.io/library/alpine");
    assert_eq!(r.api_host(), "registry-1.docker.io");
    assert!(!r.is_local());
}

#[test]
fn a_user_image_gets_docker_hub_without_library() {
    assert_eq!(ok("foo/bar").canonical(), "docker.io/foo/bar");
    assert_eq!(ok("foo/bar/baz").canonical(), "docker.io/foo/bar/baz");
}

#[test]
fn docker_hub_spellings_normalise_to_docker_io() {
    assert_eq!(
        ok("docker.io/alpine").canonical(),
        "docker.io/library/alpine"
    );
    assert_eq!(
        ok("index.docker.io/alpine").canonical(),
        "docker.io/library/alpine"
    );
    assert_eq!(
        ok("docker.io/library/alpine").canonical(),
        "docker.io/library/alpine"
    );
    assert_eq!(
        ok("index.docker.io/foo/bar").api_host(),
        "registry-1.docker.io"
    );
}

#[test]
fn other_registries_are_kept_as_written() {
    let r = ok("ghcr.io/fluxcd/image-reflector-controller");
    assert_eq!(r.registry(), "ghcr.io");
    assert_eq!(r.repository(), "fluxcd/image-reflector-controller");
    assert_eq!(r.api_host(), "ghcr.io");
    assert_eq!(r.host(), "ghcr.io");
    assert_eq!(r.port(), None);
    assert_eq!(ok("quay.io/x").canonical(), "quay.io/x");
}

#[test]
fn localhost_with_and_without_port_is_a_local_registry() {
    let r = ok("localhost/x");
    assert_eq!(r.canonical(), "localhost/x");
    assert!(r.is_local());
    let r = ok("localhost:5000/team/app");
    assert_eq!(r.registry(), "localhost:5000");
    assert_eq!(r.repository(), "team/app");
    assert_eq!(r.host(), "localhost");
    assert_eq!(r.port(), Some(5000));
    assert_eq!(r.api_host(), "localhost:5000");
    assert!(r.is_local());
}

#[test]
fn host_and_port_registries_parse() {
    let r = ok("registry.example.com:8443/a/b");
    assert_eq!(r.registry(), "registry.example.com:8443");
    assert_eq!(r.port(), Some(8443));
    assert!(!r.is_local());
}

#[test]
fn ip_hosts_parse_and_private_ones_are_local() {
    assert!(ok("127.0.0.1:5000/x").is_local());
    assert!(ok("127.1.2.3/x").is_local());
    assert!(ok("10.1.2.3:5000/x").is_local());
    assert!(ok("172.16.0.1/x").is_local());
    assert!(ok("172.31.255.255/x").is_local());
    assert!(ok("192.168.1.10:5000/x").is_local());
    assert!(!ok("172.32.0.1/x").is_local());
    assert!(!ok("8.8.8.8/x").is_local());
}

#[test]
fn ipv6_hosts_in_brackets_parse() {
    let r = ok("[::1]:5000/x");
    assert_eq!(r.registry(), "[::1]:5000");
    assert_eq!(r.host(), "[::1]");
    assert_eq!(r.port(), Some(5000));
    assert_eq!(r.canonical(), "[::1]:5000/x");
    assert!(r.is_local());
    let r = ok("[2001:db8::1]/team/app");
    assert_eq!(r.registry(), "[2001:db8::1]");
    assert!(!r.is_local());
}

/// Distribution's grammar allows only `:port` after `]`; `[::1]x/app` was once
/// accepted by a shortcut of this check.
#[test]
fn only_a_port_may_follow_an_ipv6_host() {
    for name in ["[::1]x/app", "[::1]x:5000/app", "[::1]]/app"] {
        match err(name) {
            ReferenceError::InvalidRegistry { reason, .. } => {
                assert!(
                    reason.contains("only a port may follow"),
                    "{name}: {reason}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn separators_inside_path_components_are_accepted() {
    for name in [
        "a.b/c_d",
        "ghcr.io/a__b/c-d",
        "ghcr.io/a---b/c.d.e",
        "ghcr.io/0/9",
        "x/y_z.w-v__u",
    ] {
        ok(name);
    }
}

#[test]
fn refuses_an_empty_name() {
    assert_eq!(err(""), ReferenceError::Empty);
    assert!(err("").to_string().contains("empty"));
}

#[test]
fn refuses_a_url_scheme_and_suggests_the_name() {
    let e = err("https://ghcr.io/org/app");
    assert!(matches!(e, ReferenceError::HasScheme { .. }));
    assert!(e.to_string().contains("\"ghcr.io/org/app\""), "{e}");
    let e = err("http://localhost:5000/app:1.0");
    assert!(e.to_string().contains("\"localhost:5000/app\""), "{e}");
}

#[test]
fn refuses_a_tag_and_says_how_to_select_tags() {
    let e = err("alpine:3.1");
    assert_eq!(
        e.to_string(),
        "\"alpine:3.1\" names a tag; use \"alpine\" and select tags with an ImagePolicy"
    );
    let e = err("localhost:5000/app:latest");
    assert!(e.to_string().contains("use \"localhost:5000/app\""), "{e}");
    let e = err("[::1]:5000/app:v1");
    assert!(e.to_string().contains("use \"[::1]:5000/app\""), "{e}");
}

#[test]
fn refuses_a_digest() {
    let d = "sha256:".to_string() + &"a".repeat(64);
    let e = err(&format!("ghcr.io/org/app@{d}"));
    assert!(matches!(e, ReferenceError::NamesDigest { .. }));
    assert!(e.to_string().contains("use \"ghcr.io/org/app\""), "{e}");
    let e = err(&format!("alpine:3.1@{d}"));
    assert!(e.to_string().contains("use \"alpine\""), "{e}");
}

#[test]
fn refuses_a_registry_without_a_repository() {
    assert!(matches!(
        err("localhost:5000"),
        ReferenceError::MissingRepository { .. }
    ));
    assert!(matches!(
        err("registry.example.com:443"),
        ReferenceError::MissingRepository { .. }
    ));
    assert!(matches!(
        err("[::1]:5000"),
        ReferenceError::MissingRepository { .. }
    ));
}

#[test]
fn refuses_upper_case_and_suggests_lower_case() {
    let e = err("ghcr.io/Org/App");
    assert!(matches!(e, ReferenceError::Uppercase { .. }));
    assert!(e.to_string().contains("\"ghcr.io/org/app\""), "{e}");
    // An upper-case first part is a registry host, as in distribution.
    assert_eq!(
        ok("Registry.Example.com/app").registry(),
        "Registry.Example.com"
    );
}

#[test]
fn refuses_a_64_digit_hex_name_alone() {
    let hex = "0123456789abcdef".repeat(4);
    assert!(matches!(err(&hex), ReferenceError::HexIdentifier { .. }));
    // Under a namespace it is an ordinary name.
    ok(&format!("foo/{hex}"));
}

#[test]
fn refuses_bad_path_components() {
    for bad in [
        "ghcr.io/-app",
        "ghcr.io/app-",
        "ghcr.io/a..b",
        "ghcr.io/a___b",
        "ghcr.io/a._b",
        "ghcr.io//app",
        "ghcr.io/app/",
        "/app",
        "_app",
    ] {
        assert!(
            matches!(err(bad), ReferenceError::InvalidPathComponent { .. }),
            "{bad}"
        );
    }
}

#[test]
fn refuses_characters_outside_the_grammar() {
    assert!(matches!(
        err("ghcr.io/a b"),
        ReferenceError::InvalidCharacter { .. }
    ));
    assert!(matches!(
        err("ghcr.io/a+b"),
        ReferenceError::InvalidCharacter { .. }
    ));
    assert!(matches!(
        err("ghcr.io/é"),
        ReferenceError::InvalidCharacter { .. }
    ));
}

#[test]
fn refuses_bad_registry_hosts() {
    for bad in [
        "-bad.io/app",
        "bad-.io/app",
        "a..b/app",
        "host:99999/app",
        "host:/app",
        "host:x1/app",
        "[::g]:5000/app",
        "[::1:5000/app",
        "300.1.1.1/app",
    ] {
        assert!(
            matches!(err(bad), ReferenceError::InvalidRegistry { .. }),
            "{bad}: {:?}",
            ImageRef::parse(bad)
        );
    }
}

#[test]
fn refuses_names_longer_than_255_characters() {
    let long = format!("ghcr.io/{}", "a".repeat(250));
    assert!(matches!(err(&long), ReferenceError::TooLong { .. }));
    ok(&format!("ghcr.io/{}", "a".repeat(247)));
}

#[test]
fn display_and_from_str_round_trip_the_canonical_name() {
    let r: ImageRef = "alpine".parse().expect("parses");
    assert_eq!(r.to_string(), "docker.io/library/alpine");
    assert_eq!(ok(&r.to_string()), r);
}
