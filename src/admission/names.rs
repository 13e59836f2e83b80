//! Kubernetes name and label syntax (apimachinery's validation rules), returning the
//! reason a string fails so that admission messages can say how to fix it.

/// The first character of `s` that `allowed` refuses.
fn refused_char(s: &str, allowed: impl Fn(char) -> bool) -> Option<char> {
    s.chars().find(|&c| !allowed(c))
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// DNS-1123 label: at most 63 lower-case alphanumerics or `-`, starting and ending
/// alphanumeric (namespace names).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    if let Some(c) = refused_char(s, |c| lower_alnum(c) || c == '-') {
        return Err(format!(
            "contains {c:?}; use only lower-case letters, digits and '-'"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a lower-case letter or digit".into());
    }
    Ok(())
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels (the names
/// of Secrets, ServiceAccounts and custom resources).
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "is {} characters long; at most 253 are allowed",
            s.len()
        ));
    }
    if let Some(c) = refused_char(s, |c| lower_alnum(c) || c == '-' || c == '.') {
        return Err(format!(
            "contains {c:?}; use only lower-case letters, digits, '-' and '.'"
        ));
    }
    let bad_part = |part: &str| part.is_empty() || part.starts_with('-') || part.ends_with('-');
    if s.split('.').any(bad_part) {
        return Err(
            "each '.'-separated part must be non-empty and start and end with a lower-case letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn label_name_part(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > 63 {
        return Err(format!(
            "{what} is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    if let Some(c) = refused_char(s, |c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!(
            "{what} contains {c:?}; use only letters, digits, '-', '_' and '.'"
        ));
    }
    let alnum_at = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum_at(s.chars().next()) || !alnum_at(s.chars().last()) {
        return Err(format!("{what} must start and end with a letter or digit"));
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (letters, digits, `-`, `_`, `.`; alphanumeric at both ends).
pub fn label_key(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|e| format!("the prefix {prefix:?} {e}"))?;
            label_name_part(name, "the name after '/'")
        }
        None => label_name_part(s, "the key"),
    }
}

/// A label value: empty, or at most 63 characters with the syntax of a label name.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    label_name_part(s, "the value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        assert!(dns1123_label("flux-system").is_ok());
        assert!(dns1123_subdomain("regcred.v2").is_ok());
        assert!(label_key("kubernetes.io/metadata.name").is_ok());
        assert!(label_key("team").is_ok());
        assert!(label_value("").is_ok());
        assert!(label_value("Prod_1.x").is_ok());
    }

    #[test]
    fn refuses_invalid_names_saying_why() {
        assert!(dns1123_label("Flux").unwrap_err().contains("'F'"));
        assert!(dns1123_label(&"a".repeat(64)).unwrap_err().contains("63"));
        assert!(dns1123_subdomain("reg_cred").unwrap_err().contains("'_'"));
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(label_key("Bad_Prefix/x").unwrap_err().contains("prefix"));
        assert!(label_key("a/").is_err());
        assert!(label_key(&"k".repeat(64)).unwrap_err().contains("63"));
        assert!(label_value("-x").is_err());
        assert!(label_value("a b").unwrap_err().contains("' '"));
        // A character outside ASCII is named whole.
        assert!(
            dns1123_subdomain("r\u{e9}d")
                .unwrap_err()
                .contains("'\u{e9}'")
        );
        assert!(dns1123_label("caf\u{e9}").unwrap_err().contains("'\u{e9}'"));
        assert!(label_value("na\u{ef}ve").unwrap_err().contains("'\u{ef}'"));
        assert!(label_key("\u{e9}x.io/a").unwrap_err().contains("'\u{e9}'"));
    }
}
