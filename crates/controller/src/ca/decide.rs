//! The pure decision of the CA manager: given what the CA Secret holds, the CA settings and the
//! time, which step the pass takes (docs/behavior.md §9.2, §9.3, §9.6, §9.7).

use std::collections::BTreeMap;
use std::time::Duration;

use service_ca_pki::{CaConfig, PkiError, SigningCa};
use time::OffsetDateTime;

use crate::names;

/// Shortest and longest wait between two passes when nothing changes: the pass runs again when
/// the rotation becomes due, and at least hourly.
const CHECK_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// What the decision reads of the CA Secret; empty data values count as absent.
#[derive(Clone, Default)]
pub(crate) struct CaSecretView<'a> {
    /// `data["tls.crt"]`.
    pub(crate) tls_crt: Option<&'a [u8]>,
    /// `data["tls.key"]`.
    pub(crate) tls_key: Option<&'a [u8]>,
    /// `data["ca-bundle.crt"]`, written by a rotation.
    pub(crate) ca_bundle: Option<&'a [u8]>,
    /// `data["intermediate-ca.crt"]`, written by a rotation.
    pub(crate) intermediate: Option<&'a [u8]>,
    /// The Secret's annotations (forced-rotation request and record).
    pub(crate) annotations: Option<&'a BTreeMap<String, String>>,
}

/// Never prints the key.
impl std::fmt::Debug for CaSecretView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSecretView")
            .field("has_tls_crt", &self.tls_crt.is_some())
            .field("has_tls_key", &self.tls_key.is_some())
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

/// Why the CA is rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RotationReason {
    /// An administrator asked for it with a reason not yet recorded.
    Forced(String),
    /// Less validity than the rotation threshold remains.
    Due,
    /// The CA has expired (a cluster switched off for longer than the CA's life).
    Expired,
}

impl RotationReason {
    /// The cause, for the Event and the log.
    pub(crate) fn describe(&self, cfg: &CaConfig) -> String {
        match self {
            RotationReason::Forced(reason) if self.without_bridge() => format!(
                "forced rotation without a trust bridge, reason {reason:?}: the previous CA is no longer trusted"
            ),
            RotationReason::Forced(reason) => format!("forced rotation with reason {reason:?}"),
            RotationReason::Due => format!(
                "less than {} days of validity left",
                cfg.rotation_threshold.as_secs() / 86400
            ),
            RotationReason::Expired => "the CA had expired".into(),
        }
    }

    /// A forced rotation that must not keep trusting the old CA (reason prefixed with
    /// [`names::NO_BRIDGE_PREFIX`]): the old key may be compromised.
    pub(crate) fn without_bridge(&self) -> bool {
        matches!(self, RotationReason::Forced(reason) if reason.starts_with(names::NO_BRIDGE_PREFIX))
    }

    /// The forced-rotation reason to record on the Secret, if any.
    pub(crate) fn forced(&self) -> Option<&str> {
        match self {
            RotationReason::Forced(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The step one CA pass takes.
#[derive(Debug)]
pub(crate) enum CaStep {
    /// No CA Secret: create a CA and the Secret.
    Create,
    /// The Secret exists with an empty `tls.crt`: create a CA, keep the Secret's metadata.
    Refill,
    /// The Secret's content cannot be used; it is reported and left alone.
    Corrupt(PkiError),
    /// Rotate `current`.
    Rotate {
        /// The CA the Secret holds.
        current: Box<SigningCa>,
        /// Why.
        reason: RotationReason,
    },
    /// The CA is fine; look again after `next_check`.
    UpToDate {
        /// The CA the Secret holds.
        ca: Box<SigningCa>,
        /// When the pass should run again if nothing changes.
        next_check: Duration,
    },
}

/// Decides one CA pass from the Secret as read (`None`: it does not exist).
pub(crate) fn decide(
    secret: Option<&CaSecretView<'_>>,
    cfg: &CaConfig,
    now: OffsetDateTime,
) -> CaStep {
    let Some(secret) = secret else {
        return CaStep::Create;
    };
    let Some(tls_crt) = secret.tls_crt else {
        return CaStep::Refill;
    };
    let ca = match SigningCa::from_secret_data(
        tls_crt,
        secret.tls_key.unwrap_or_default(),
        secret.ca_bundle,
        secret.intermediate,
        now,
    ) {
        Ok(ca) => ca,
        Err(err) => return CaStep::Corrupt(err),
    };
    let reason = if let Some(requested) = pending_forced_rotation(secret.annotations) {
        Some(RotationReason::Forced(requested.to_string()))
    } else if ca.is_expired(now) {
        Some(RotationReason::Expired)
    } else if ca.needs_rotation(cfg, now) {
        Some(RotationReason::Due)
    } else {
        None
    };
    match reason {
        Some(reason) => CaStep::Rotate {
            current: Box::new(ca),
            reason,
        },
        None => {
            let next_check = next_check(&ca, cfg, now);
            CaStep::UpToDate {
                ca: Box::new(ca),
                next_check,
            }
        }
    }
}

/// A forced-rotation reason that is requested and differs from the one last acted on: each
/// distinct reason rotates once (docs/behavior.md §9.6).
fn pending_forced_rotation(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    let requested = names::first_non_empty(annotations, &[names::FORCE_ROTATION_REQUEST]);
    let recorded = names::first_non_empty(annotations, &[names::FORCED_ROTATION_REASON]);
    requested.filter(|r| Some(*r) != recorded)
}

/// When to look again: when the rotation becomes due, and at least hourly.
pub(crate) fn next_check(ca: &SigningCa, cfg: &CaConfig, now: OffsetDateTime) -> Duration {
    let due = ca.not_after() - cfg.rotation_threshold;
    let until = (due - now).max(time::Duration::ZERO);
    Duration::try_from(until)
        .unwrap_or(Duration::ZERO)
        .clamp(CHECK_BOUNDS.0, CHECK_BOUNDS.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    struct Fixture {
        crt: String,
        key: String,
        bundle: Option<String>,
        intermediate: Option<String>,
    }

    impl Fixture {
        fn of(ca: &SigningCa) -> Self {
            Self {
                crt: ca.tls_crt_pem(),
                key: ca.tls_key_pem().to_string(),
                bundle: ca.ca_bundle_pem(),
                intermediate: ca.intermediate_pem(),
            }
        }

        fn view<'a>(
            &'a self,
            annotations: Option<&'a BTreeMap<String, String>>,
        ) -> CaSecretView<'a> {
            CaSecretView {
                tls_crt: Some(self.crt.as_bytes()),
                tls_key: Some(self.key.as_bytes()),
                ca_bundle: self.bundle.as_deref().map(str::as_bytes),
                intermediate: self.intermediate.as_deref().map(str::as_bytes),
                annotations,
            }
        }
    }

    fn cfg() -> CaConfig {
        CaConfig {
            key_algorithm: service_ca_pki::KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The step's name, for table comparison.
    fn name(step: &CaStep) -> String {
        match step {
            CaStep::Create => "create".into(),
            CaStep::Refill => "refill".into(),
            CaStep::Corrupt(e) => format!("corrupt:{}", e.category()),
            CaStep::Rotate { reason, .. } => format!("rotate:{reason:?}"),
            CaStep::UpToDate { next_check, .. } => format!("up-to-date:{}s", next_check.as_secs()),
        }
    }

    #[test]
    fn every_step() {
        let cfg = cfg();
        let ca = SigningCa::create(&cfg, NOW).unwrap();
        let fresh = Fixture::of(&ca);
        let rotated = Fixture::of(&ca.rotate(&cfg, NOW).unwrap().ca);
        let other = Fixture::of(&SigningCa::create(&cfg, NOW).unwrap());
        let long_ago = NOW - cfg.lifetime - time::Duration::days(1);
        let expired = Fixture::of(&SigningCa::create(&cfg, long_ago).unwrap());
        let mismatched = Fixture {
            key: other.key.clone(),
            ..Fixture::of(&ca)
        };
        let due_at = ca.not_after() - cfg.rotation_threshold;
        let forced = annotations(&[(names::FORCE_ROTATION_REQUEST, "incident-42")]);
        let forced_done = annotations(&[
            (names::FORCE_ROTATION_REQUEST, "incident-42"),
            (names::FORCED_ROTATION_REASON, "incident-42"),
        ]);
        let forced_again = annotations(&[
            (names::FORCE_ROTATION_REQUEST, "incident-43"),
            (names::FORCED_ROTATION_REASON, "incident-42"),
        ]);
        let empty_request = annotations(&[(names::FORCE_ROTATION_REQUEST, "")]);
        let garbage = CaSecretView {
            tls_crt: Some(b"not a certificate"),
            tls_key: Some(fresh.key.as_bytes()),
            ..Default::default()
        };
        let no_key = CaSecretView {
            tls_key: None,
            ..fresh.view(None)
        };
        let empty_crt = CaSecretView {
            tls_crt: None,
            ..fresh.view(None)
        };
        let hour = "up-to-date:3600s".to_string();
        let rows: Vec<(&str, Option<CaSecretView<'_>>, OffsetDateTime, String)> = vec![
            ("no secret", None, NOW, "create".into()),
            ("empty tls.crt", Some(empty_crt), NOW, "refill".into()),
            ("fresh CA", Some(fresh.view(None)), NOW, hour.clone()),
            (
                "rotated CA (bundle, intermediate)",
                Some(rotated.view(None)),
                NOW,
                hour.clone(),
            ),
            (
                "ten minutes before due",
                Some(fresh.view(None)),
                due_at - time::Duration::minutes(10),
                "up-to-date:600s".into(),
            ),
            (
                "at the threshold: one more second",
                Some(fresh.view(None)),
                due_at,
                "up-to-date:1s".into(),
            ),
            (
                "expired",
                Some(expired.view(None)),
                NOW,
                "rotate:Expired".into(),
            ),
            (
                "due",
                Some(fresh.view(None)),
                due_at + time::Duration::minutes(1),
                "rotate:Due".into(),
            ),
            (
                "forced",
                Some(fresh.view(Some(&forced))),
                NOW,
                "rotate:Forced(\"incident-42\")".into(),
            ),
            (
                "forced, already done",
                Some(fresh.view(Some(&forced_done))),
                NOW,
                hour.clone(),
            ),
            (
                "forced with a new reason",
                Some(fresh.view(Some(&forced_again))),
                NOW,
                "rotate:Forced(\"incident-43\")".into(),
            ),
            (
                "empty force request",
                Some(fresh.view(Some(&empty_request))),
                NOW,
                hour,
            ),
            (
                "garbage tls.crt",
                Some(garbage),
                NOW,
                "corrupt:no_certificate".into(),
            ),
            (
                "no tls.key",
                Some(no_key),
                NOW,
                "corrupt:invalid_key".into(),
            ),
            (
                "key of another CA",
                Some(mismatched.view(None)),
                NOW,
                "corrupt:key_mismatch".into(),
            ),
        ];
        for (what, view, now, expected) in rows {
            assert_eq!(name(&decide(view.as_ref(), &cfg, now)), expected, "{what}");
        }
    }

    #[test]
    fn no_bridge_prefix() {
        assert!(RotationReason::Forced("no-bridge: key leaked".into()).without_bridge());
        assert!(!RotationReason::Forced("incident-42".into()).without_bridge());
        assert!(!RotationReason::Due.without_bridge());
    }

    #[test]
    fn forced_rotation_is_idempotent_once_recorded() {
        let cfg = cfg();
        let fixture = Fixture::of(&SigningCa::create(&cfg, NOW).unwrap());
        let requested = annotations(&[(names::FORCE_ROTATION_REQUEST, "r1")]);
        let CaStep::Rotate { reason, .. } =
            decide(Some(&fixture.view(Some(&requested))), &cfg, NOW)
        else {
            panic!("a new reason rotates");
        };
        // What execution records after the write; the next pass must not rotate again.
        let mut recorded = requested.clone();
        recorded.insert(
            names::FORCED_ROTATION_REASON.into(),
            reason.forced().unwrap_or_default().into(),
        );
        assert!(matches!(
            decide(Some(&fixture.view(Some(&recorded))), &cfg, NOW),
            CaStep::UpToDate { .. }
        ));
    }
}
