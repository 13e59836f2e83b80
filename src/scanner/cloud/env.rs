//! The environment a controller-level login reads (Azure's and Google's variables and
//! files; AWS's are read by the AWS SDK itself), taken once when the scanner starts, so a
//! login never races a change of the process environment and tests can give one of
//! their own.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The variables cloud logins read, by name.
#[derive(Clone, Debug, Default)]
pub struct CloudEnv {
    vars: BTreeMap<String, String>,
}

/// Prefixes and names of the variables taken from the process environment.
const PREFIXES: [&str; 4] = ["AWS_", "AZURE_", "GOOGLE_", "GCE_"];
const NAMES: [&str; 3] = ["HOME", "CLOUDSDK_CONFIG", "APPDATA"];

impl CloudEnv {
    /// The process environment's cloud variables, as they are now.
    pub fn from_process() -> CloudEnv {
        CloudEnv {
            vars: std::env::vars()
                .filter(|(k, _)| {
                    PREFIXES.iter().any(|p| k.starts_with(p)) || NAMES.contains(&k.as_str())
                })
                .collect(),
        }
    }

    /// An environment of exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> CloudEnv {
        CloudEnv {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The variable's value, when set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Whether a boolean variable is set to true (`true`, `1`, any case).
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// A path-valued variable.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// `$HOME/rest`.
    pub fn home_path(&self, rest: &str) -> Option<PathBuf> {
        self.path("HOME").map(|h| h.join(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = CloudEnv::from_pairs([
            ("AZURE_CLIENT_ID", " "),
            ("AWS_EC2_METADATA_DISABLED", "TRUE"),
        ]);
        assert_eq!(env.get("AZURE_CLIENT_ID"), None);
        assert!(env.is_true("AWS_EC2_METADATA_DISABLED"));
        assert!(!env.is_true("NOPE"));
    }
}
