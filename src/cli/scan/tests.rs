use super::*;

#[test]
fn proxy_urls_give_their_credentials_separately() {
    let Ok(p) = parse_proxy("http://user:p%40ss@proxy.example:3128") else {
        panic!("parses")
    };
    assert_eq!(p.address, "http://proxy.example:3128");
    assert_eq!(p.username.as_deref(), Some("user"));
    assert_eq!(p.password.as_deref(), Some("p@ss"));
    let Ok(p) = parse_proxy("proxy:8080") else {
        panic!("parses")
    };
    assert_eq!(p.address, "http://proxy:8080");
    let Ok(p) = parse_proxy("socks5h://user:pw@proxy.example:1080") else {
        panic!("parses")
    };
    assert_eq!(p.address, "socks5h://proxy.example:1080");
    assert_eq!(p.password.as_deref(), Some("pw"));
    let Err(e) = parse_proxy("ftp://x") else {
        panic!("ftp is refused")
    };
    assert!(e.to_string().starts_with("--proxy: scheme \"ftp\" is not supported; use http://, https://, socks5:// or socks5h://"), "{e}");
}

#[test]
fn the_endpoint_says_which_scheme_is_used() {
    let mut r = ScanRequest::new(ImageRef::parse("alpine").unwrap());
    assert_eq!(endpoint_description(&r), "https://registry-1.docker.io/v2/");
    r.insecure = true;
    assert!(endpoint_description(&r).starts_with("http://registry-1.docker.io/v2/"));
    let r = ScanRequest::new(ImageRef::parse("localhost:5000/x").unwrap());
    assert!(endpoint_description(&r).contains("plain HTTP if HTTPS fails"));
}

#[test]
fn registry_arg_ids_name_every_registry_flag() {
    use clap::Args as _;
    let cmd = RegistryArgs::augment_args(clap::Command::new("x"));
    let ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    assert_eq!(ids, REGISTRY_ARG_IDS);
}

#[test]
fn a_scan_without_exclude_flags_drops_flux_s_default_signature_tags() {
    let r = ScanRequest::new(ImageRef::parse("alpine").unwrap());
    assert_eq!(r.exclusion_list, vec!["^.*\\.sig$".to_string()]);
}
