//! Kubernetes name and label syntax (apimachinery's validation rules), returning the
//! reason a string fails so that admission messages can say how to fix it.

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
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
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
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "contains {c:?}; use only lower-case letters, digits, '-' and '.'"
        ));
    }
    for part in s.split('.') {
        if part.is_empty() || part.starts_with('-') || part.ends_with('-') {
            return Err(
                "each '.'-separated part must be non-empty and start and end with a lower-case letter or digit"
                    .into(),
            );
        }
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
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "{what} contains {c:?}; use only letters, digits, '-', '_' and '.'"
        ));
    }
    let first = s.chars().next().unwrap_or('-');
    let last = s.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
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
    }
}
