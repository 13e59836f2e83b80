//! Image repository references: the distribution reference grammar, Docker Hub
//! normalisation and the registry API endpoint.
//!
//! An `ImageRepository`'s `spec.image` names a repository, never a tag or a digest, so
//! [`ImageRef::parse`] accepts exactly a repository name:
//!
//! ```text
//! name             := [registry '/'] path
//! registry         := host [':' port]
//! host             := domain-name | IPv4 | '[' IPv6 ']'
//! domain-name      := component ('.' component)*      component: [A-Za-z0-9] or [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
//! path             := path-component ('/' path-component)*
//! path-component   := alnum (separator alnum)*           alnum: [a-z0-9]+
//! separator        := '.' | '_' | '__' | '-'+
//! ```
//!
//! The first `/`-separated part is the registry when it contains `.` or `:`, is
//! `localhost`, or has an upper-case letter; otherwise the registry is Docker Hub
//! (`docker.io`) and a single-component path gets the `library/` prefix, so
//! `alpine` becomes `docker.io/library/alpine`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Docker Hub as it appears in canonical names.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API endpoint.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The longest repository name (registry and path) the grammar allows.
pub const NAME_MAX_LEN: usize = 255;

/// A parsed, normalised image repository name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
}

/// Why a string is not an image repository name. Each message says what is wrong and
/// how to fix it; callers add the field path (`spec.image: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image name is empty; give a repository such as \"ghcr.io/org/app\"")]
    Empty,
    #[error(
        "{input:?} includes a URL scheme; use {suggestion:?} (plain HTTP is chosen with `insecure: true`)"
    )]
    HasScheme { input: String, suggestion: String },
    #[error("{input:?} names a tag; use {suggestion:?} and select tags with an ImagePolicy")]
    NamesTag { input: String, suggestion: String },
    #[error(
        "{input:?} names a digest; use {suggestion:?} (the repository, without \"@sha256:...\")"
    )]
    NamesDigest { input: String, suggestion: String },
    #[error("{input:?} names only a registry; add the repository path, e.g. \"{input}/NAME\"")]
    MissingRepository { input: String },
    #[error("{input:?} has upper-case letters in the repository path; use {suggestion:?}")]
    Uppercase { input: String, suggestion: String },
    #[error(
        "{input:?} is a 64-digit hexadecimal identifier, not a repository name; give the repository (e.g. \"ghcr.io/org/app\")"
    )]
    HexIdentifier { input: String },
    #[error(
        "{input:?} is {len} characters long; a repository name may have at most {NAME_MAX_LEN}"
    )]
    TooLong { input: String, len: usize },
    #[error("{input:?} has an invalid registry host {host:?}: {reason}")]
    InvalidRegistry {
        input: String,
        host: String,
        reason: &'static str,
    },
    #[error(
        "{input:?} has an invalid path component {component:?}: components are lower-case letters and digits, separated by '.', '_', '__' or '-', and may not be empty or start or end with a separator"
    )]
    InvalidPathComponent { input: String, component: String },
    #[error(
        "{input:?} contains {character:?}, which no repository name may contain; use lower-case letters, digits, '.', '_', '-' and '/'"
    )]
    InvalidCharacter { input: String, character: char },
}

impl ImageRef {
    /// Parses and normalises a repository name (no tag, no digest).
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let (registry_part, path) = Self::split_checked(s)?;
        let registry = match registry_part {
            Some("index.docker.io") | None => DOCKER_HUB.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            registry,
            repository,
        })
    }

    /// Checks a repository name as [`ImageRef::parse`] does, without building anything
    /// (what the admission webhook needs on every request).
    pub fn check(s: &str) -> Result<(), ReferenceError> {
        Self::split_checked(s).map(|_| ())
    }

    /// Every rule of the grammar; on success the registry part (as written, if any) and
    /// the path. Nothing is allocated unless the name is refused.
    fn split_checked(s: &str) -> Result<(Option<&str>, &str), ReferenceError> {
        match Self::split_usual(s) {
            Some(split) => Ok(split),
            None => Self::split_judged(s),
        }
    }

    /// The names people write, accepted in one pass over the bytes: an optional registry
    /// (a first component that [`looks_like_registry`] and [`validate_registry`] accept)
    /// and a path of lower-case components. `None` for anything else, valid or not, which
    /// [`ImageRef::split_judged`] then judges rule by rule. Kept apart and small because
    /// the admission webhook runs it on every review, after TLS and HTTP have pushed its
    /// code out of the CPU's caches; whatever it accepts, `split_judged` accepts with the
    /// same split (tested).
    fn split_usual(s: &str) -> Option<(Option<&str>, &str)> {
        if s.is_empty() || s.len() > NAME_MAX_LEN {
            return None;
        }
        let (registry, path) = match s.bytes().position(|b| b == b'/') {
            Some(i) if looks_like_registry(&s[..i]) => (Some(&s[..i]), &s[i + 1..]),
            _ => (None, s),
        };
        // A 64-hex-digit name alone is refused; leave that case to the rules.
        if registry.is_none() && path.len() == 64 {
            return None;
        }
        if !path
            .as_bytes()
            .split(|&b| b == b'/')
            .all(valid_path_component)
        {
            return None;
        }
        if let Some(r) = registry
            && validate_registry(r).is_err()
        {
            return None;
        }
        Some((registry, path))
    }

    /// [`ImageRef::split_checked`] rule by rule, in the order that decides which error a
    /// name gets.
    #[cold]
    #[inline(never)]
    fn split_judged(s: &str) -> Result<(Option<&str>, &str), ReferenceError> {
        let input = || s.to_string();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // A byte window: a `str` pattern search costs more to set up than this takes.
        if let Some(pos) = s.as_bytes().windows(3).position(|w| w == b"://") {
            let rest = &s[pos + 3..];
            return Err(ReferenceError::HasScheme {
                input: input(),
                suggestion: strip_tag_and_digest(rest.trim_end_matches('/')).to_string(),
            });
        }
        // Outside printable ASCII every character is whitespace, a control or not ASCII.
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ReferenceError::InvalidCharacter {
                input: input(),
                character: c,
            });
        }
        if s.contains('@') {
            return Err(ReferenceError::NamesDigest {
                input: input(),
                suggestion: strip_tag_and_digest(s).to_string(),
            });
        }

        // Split off the registry exactly as distribution's splitDockerDomain does.
        let (registry_part, path) = match s.find('/') {
            Some(i) if looks_like_registry(&s[..i]) => (Some(&s[..i]), &s[i + 1..]),
            _ => (None, s),
        };

        // A ':' in the path can only be a tag (or a lone "host:port").
        if let Some(colon) = path.rfind(':') {
            let (name, after) = (&path[..colon], &path[colon + 1..]);
            if registry_part.is_none()
                && !path.contains('/')
                && looks_like_registry(path)
                && (after.chars().all(|c| c.is_ascii_digit()) || path.starts_with('['))
                && (name.contains('.')
                    || name.eq_ignore_ascii_case("localhost")
                    || name.starts_with('['))
            {
                return Err(ReferenceError::MissingRepository { input: input() });
            }
            let suggestion = match registry_part {
                Some(r) => format!("{r}/{name}"),
                None => name.to_string(),
            };
            return Err(ReferenceError::NamesTag {
                input: input(),
                suggestion,
            });
        }
        if registry_part.is_none() && path.starts_with('[') {
            return Err(ReferenceError::MissingRepository { input: input() });
        }

        if s.len() > NAME_MAX_LEN {
            return Err(ReferenceError::TooLong {
                input: input(),
                len: s.len(),
            });
        }

        if registry_part.is_none() && path.len() == 64 && path.bytes().all(is_lower_hex) {
            return Err(ReferenceError::HexIdentifier { input: input() });
        }

        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            let suggestion = match registry_part {
                Some(r) => format!("{r}/{}", path.to_ascii_lowercase()),
                None => path.to_ascii_lowercase(),
            };
            return Err(ReferenceError::Uppercase {
                input: input(),
                suggestion,
            });
        }

        if let Some(c) = path.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'))
        }) {
            return Err(ReferenceError::InvalidCharacter {
                input: input(),
                character: c,
            });
        }
        for component in path.split('/') {
            if !valid_path_component(component.as_bytes()) {
                return Err(ReferenceError::InvalidPathComponent {
                    input: input(),
                    component: component.to_string(),
                });
            }
        }

        if let Some(r) = registry_part {
            validate_registry(r).map_err(|reason| ReferenceError::InvalidRegistry {
                input: input(),
                host: r.to_string(),
                reason,
            })?;
        }
        Ok((registry_part, path))
    }

    /// The registry as it appears in the canonical name, with its port if any:
    /// `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The canonical name: `docker.io/library/alpine`.
    pub fn canonical(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host (and port) serving the registry API: `registry-1.docker.io` for Docker
    /// Hub, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The registry's host without its port (IPv6 keeps its brackets): `localhost`,
    /// `[::1]`, `ghcr.io`.
    pub fn host(&self) -> &str {
        split_port(&self.registry).0
    }

    /// The registry's port when it names one.
    pub fn port(&self) -> Option<u16> {
        split_port(&self.registry).1.and_then(|p| p.parse().ok())
    }

    /// True for registries on `localhost`, loopback (127.0.0.0/8, ::1) and RFC 1918
    /// addresses, where HTTPS is tried first and plain HTTP is the fallback, as Docker
    /// and go-containerregistry do.
    pub fn is_local(&self) -> bool {
        let host = self.host();
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_private(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback()
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_private())
            }
            Err(_) => false,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Whether the first `/`-separated part names a registry (distribution's rule).
fn looks_like_registry(first: &str) -> bool {
    first == "localhost"
        || first
            .bytes()
            .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase())
}

/// `name:tag@digest` -> `name`, keeping a `host:port/` prefix intact.
fn strip_tag_and_digest(s: &str) -> &str {
    let s = s.split('@').next().unwrap_or(s);
    let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[last_slash..].rfind(':') {
        Some(c) => &s[..last_slash + c],
        None => s,
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A path component: lower-case letters and digits, separated inside by '.', '_', '__'
/// or a run of '-'.
fn valid_path_component(bytes: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &bytes[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Splits `host:port`, `[v6]:port`, `host`, `[v6]` into host and optional port.
fn split_port(registry: &str) -> (&str, Option<&str>) {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(end) => {
                let host = &registry[..=end];
                let rest = &registry[end + 1..];
                (host, rest.strip_prefix(':'))
            }
            None => (registry, None),
        }
    } else {
        match registry.bytes().rposition(|b| b == b':') {
            Some(colon) => (&registry[..colon], Some(&registry[colon + 1..])),
            None => (registry, None),
        }
    }
}

fn validate_registry(r: &str) -> Result<(), &'static str> {
    let (host, port) = split_port(r);
    // split_port drops anything after "]" that is not ":port".
    if host.starts_with('[') && host.ends_with(']') && r.len() > host.len() && port.is_none() {
        return Err("only a port may follow an IPv6 address in brackets, as in \"[::1]:5000\"");
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the port must be a number, as in \"registry.example.com:5000\"");
        }
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            _ => return Err("the port must be between 1 and 65535"),
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err("an IPv6 address must be in brackets, as in \"[::1]:5000\"");
        };
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "the text in brackets is not an IPv6 address");
    }
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.bytes().any(|b| b == b':') {
        return Err("an IPv6 address must be in brackets, as in \"[::1]:5000\"");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        // Dotted digits that are not an IPv4 address are still legal domain names in the
        // grammar (e.g. "1.2.3"), so only a malformed four-part address is refused.
        if host.bytes().filter(|&b| b == b'.').count() == 3 {
            return Err("it is not a valid IPv4 address");
        }
    }
    for b in host.as_bytes().split(|&b| b == b'.') {
        let alnum = |c: u8| c.is_ascii_alphanumeric();
        let ok = !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-');
        if !ok {
            return Err(
                "host name parts are letters, digits and inner '-', separated by single dots",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    /// The one-pass check accepts the usual names, and whatever it accepts the rule-by-rule
    /// check accepts with the same split: on a set of names and on every one-byte
    /// replacement and insertion of characters that matter to the grammar.
    #[test]
    fn the_quick_check_accepts_only_what_the_rules_accept() {
        let usual = [
            "alpine",
            "library/alpine",
            "ghcr.io/stefanprodan/podinfo",
            "localhost/app",
            "localhost:5000/team/app",
            "registry.example.com:8443/a/b/c",
            "[::1]:5000/app",
            "127.0.0.1:5000/app",
            "quay.io/org/app_x__y-z--w.v",
            "Registry.Example.COM/app",
        ];
        for name in usual {
            assert_eq!(
                ImageRef::split_usual(name),
                Some(ImageRef::split_judged(name).unwrap()),
                "{name}"
            );
        }
        let mut names: Vec<String> = usual.iter().map(|n| n.to_string()).collect();
        names.extend(
            [
                "",
                "/app",
                "app/",
                "a//b",
                "https://ghcr.io/app",
                "ghcr.io/app:v1",
                "ghcr.io/app@sha256:00",
                "UPPER/app",
                "host:99999/app",
                "[::1/app",
                "1.2.3.4.5/app",
                "999.1.1.1/app",
                &"a".repeat(64),
                &"0123456789abcdef".repeat(4),
                &format!("ghcr.io/{}", "a".repeat(260)),
                "-app",
                "app-",
                "a..b",
                "a___b",
                "my_host/app",
                "my-host.io_/app",
            ]
            .map(String::from),
        );
        let specials = [
            "A", ":", "@", "/", ".", "_", "-", "[", "]", " ", "\u{e9}", "5", "://", "..",
        ];
        let bases = names.clone();
        for base in &bases {
            for (at, _) in base.char_indices().chain([(base.len(), ' ')]) {
                for special in specials {
                    names.push(format!("{}{special}{}", &base[..at], &base[at..]));
                    if let Some(c) = base[at..].chars().next() {
                        names.push(format!(
                            "{}{special}{}",
                            &base[..at],
                            &base[at + c.len_utf8()..]
                        ));
                    }
                }
            }
        }
        let (mut quick, mut judged) = (0, 0);
        for name in &names {
            match ImageRef::split_usual(name) {
                Some(split) => {
                    quick += 1;
                    assert_eq!(ImageRef::split_judged(name), Ok(split), "{name:?}");
                }
                None => judged += 1,
            }
        }
        assert!(
            quick > 500 && judged > 500,
            "{quick} quick, {judged} judged"
        );
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
        // Only a port may follow the brackets.
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
}
