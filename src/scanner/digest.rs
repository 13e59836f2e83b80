//! A tag's manifest digest: `HEAD /v2/NAME/manifests/TAG` accepting the OCI index and
//! manifest and the Docker manifest list and v2 manifest, read from
//! `Docker-Content-Digest` (a HEAD does not count against Docker Hub's pull limit); when a
//! registry sends no such header, the manifest is fetched and hashed.

use super::error::status_error;
use super::request::read_limited;
use super::{ScanContext, ScanError, ScanErrorKind, Scanner};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

/// The manifest media types asked for when resolving a digest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

impl Scanner {
    /// The digest of `tag` (checked by the caller against the tag grammar).
    pub(super) async fn digest_inner(
        &self,
        ctx: &ScanContext<'_>,
        tag: &str,
    ) -> Result<String, ScanError> {
        let mut endpoint = self.endpoint(ctx).await?;
        let url = endpoint
            .base
            .join(&format!(
                "v2/{}/manifests/{tag}",
                ctx.req.image.repository()
            ))
            .map_err(|e| {
                ctx.err(
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the URL: {e}"),
                )
            })?;
        let resp = self
            .registry_request(
                ctx,
                &mut endpoint,
                Method::HEAD,
                &url,
                Some(MANIFEST_ACCEPT),
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ctx.err(
                ScanErrorKind::NotFound,
                format!("tag {tag:?} has no manifest (HTTP 404)"),
            ));
        }
        if !status.is_success() {
            return Err(status_error(ctx, resp, "resolving a digest").await);
        }
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| valid_digest(d))
        {
            return Ok(d.to_string());
        }
        // No digest header: GET the manifest and hash it.
        let resp = self
            .registry_request(ctx, &mut endpoint, Method::GET, &url, Some(MANIFEST_ACCEPT))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(ctx, resp, "resolving a digest").await);
        }
        let body = read_limited(ctx, resp, 4 << 20).await?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
    }
}

/// `algorithm:hex`, as the distribution spec has digests (at least 32 hex digits).
fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty()
                && alg
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c))
                && hex.len() >= 32
                && hex.bytes().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_algorithm_colon_hex() {
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(valid_digest(&format!("sha512:{}", "0".repeat(128))));
        assert!(!valid_digest("sha256:short"));
        assert!(!valid_digest(&format!("SHA256:{}", "a".repeat(64))));
        assert!(!valid_digest(&"a".repeat(64)));
        assert!(!valid_digest(&format!("sha256:{}", "g".repeat(64))));
    }
}
