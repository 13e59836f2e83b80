//! Azure Container Registry webhooks: one distribution-shaped event per delivery,
//! without the envelope (`push`, `delete`; `ping` from "Ping" in the portal or `az acr
//! webhook ping`; Helm `chart_push`/`chart_delete` and `quarantine`, which we ignore).
//! The registry is `request.host` (`NAME.azurecr.io`).

use super::distribution::{Event, push_of};
use super::{Notification, PayloadError, Provider, json};

pub(super) fn parse(body: &[u8], registry: Option<&str>) -> Result<Notification, PayloadError> {
    let event: Event = json(Provider::Acr, body)?;
    Ok(match push_of(Provider::Acr, event, registry)? {
        Some(push) => Notification::one(push),
        None => Notification::ignored(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn a_push_names_the_azurecr_host_and_the_tag() {
        let n = parse(&testdata("acr-push.json"), None).unwrap();
        assert_eq!(n.pushes.len(), 1);
        assert_eq!(n.pushes[0].repository, "acmeprod.azurecr.io/team/web");
        assert_eq!(n.pushes[0].tag.as_deref(), Some("2.3.1"));
        assert_eq!(
            n.pushes[0].id.as_deref(),
            Some("cb8c3971-9adc-488b-a1b2-43cbb4974ff5")
        );
    }

    #[test]
    fn a_delete_by_digest_rescans_and_pings_and_charts_are_ignored() {
        let n = parse(&testdata("acr-delete.json"), None).unwrap();
        assert_eq!(n.pushes[0].tag, None);
        for file in ["acr-ping.json", "acr-chart-push.json"] {
            let n = parse(&testdata(file), None).unwrap();
            assert!(n.pushes.is_empty(), "{file}");
            assert_eq!(n.ignored, 1, "{file}");
        }
    }

    #[test]
    fn an_envelope_is_not_an_acr_event() {
        assert!(parse(&testdata("distribution-2.8-push-manifest.json"), None).is_err());
    }
}
