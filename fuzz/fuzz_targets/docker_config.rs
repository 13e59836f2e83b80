//! `.dockerconfigjson` / `.dockercfg` of a pull Secret: any bytes are refused with a
//! reason or parsed; every host found has a credential; and neither a refusal nor the
//! parsed config's debug form repeats a secret value of the input.
#![no_main]

use image_reflector::scanner::{Credentials, CredentialsError, DockerConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// String values of the credential fields anywhere in the input, and every object key
/// (registry hosts, which messages may quote).
fn secrets(v: &Value, keys: &mut Vec<String>, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                keys.push(k.clone());
                if let ("auth" | "password" | "identitytoken" | "registrytoken", Value::String(s)) =
                    (k.as_str(), v)
                {
                    out.push(s.clone());
                }
                secrets(v, keys, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secrets(v, keys, out)),
        _ => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    if let Ok(v) = serde_json::from_slice::<Value>(input) {
        secrets(&v, &mut keys, &mut values);
    }
    // Hosts are lower-cased when read: compare without case. A value that is a word of the
    // messages themselves ("password", "base64") says nothing either.
    let wording: String = [
        CredentialsError::NoAuths,
        CredentialsError::BadAuthField {
            host: String::new(),
        },
        CredentialsError::EmptyEntry {
            host: String::new(),
        },
    ]
    .iter()
    .map(|e| e.to_string().to_ascii_lowercase())
    .collect();
    values.retain(|s| {
        let s = s.to_ascii_lowercase();
        s.len() >= 6
            && !wording.contains(&s)
            && !keys.iter().any(|k| k.to_ascii_lowercase().contains(&s))
    });
    let said = match DockerConfig::from_json(input) {
        Ok(config) => {
            let hosts: Vec<String> = config.hosts().map(str::to_string).collect();
            for host in &hosts {
                assert!(config.lookup(host).is_some(), "{host:?}");
                let creds = Credentials::DockerConfig(config.clone());
                let cred = creds
                    .for_registry(host)
                    .expect("a listed host has a credential");
                let _ = cred.describe();
            }
            format!("{config:?}")
        }
        Err(e) => e.to_string(),
    };
    for secret in &values {
        assert!(
            !said.contains(secret.as_str()),
            "{said:?} repeats {secret:?}"
        );
    }
});
