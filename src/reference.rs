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

    /// Checks a repository name as [`ImageRef::parse`] does, for callers that need only
    /// the verdict (the admission webhook).
    pub fn check(s: &str) -> Result<(), ReferenceError> {
        Self::split_checked(s).map(|_| ())
    }

    /// Every rule of the grammar, in the order that decides which error a name gets; on
    /// success the registry part (as written, if any) and the path.
    fn split_checked(s: &str) -> Result<(Option<&str>, &str), ReferenceError> {
        let input = || s.to_string();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(pos) = s.find("://") {
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
mod tests;
