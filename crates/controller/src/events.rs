//! Kubernetes Events, published best-effort: a failure to record an Event is logged, never fatal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::debug;

/// Publishes Events as the `service-ca` controller.
#[derive(Clone)]
pub(crate) struct EventSink {
    recorder: Recorder,
}

impl EventSink {
    /// An Event publisher reporting as `service-ca` (instance: the pod name when known).
    pub(crate) fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: "service-ca".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes one Event about `object`.
    pub(crate) async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            // The API limits notes to 1 kB.
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, object).await {
            debug!(error = %err, reason, "could not record event");
        }
    }
}

/// Remembers the last Warning per object so a persistent problem is reported once per distinct
/// message and then at most once per `ceiling`, however often it is retried.
pub(crate) struct WarningLimiter {
    ceiling: Duration,
    last: Mutex<HashMap<String, (String, Instant)>>,
}

impl WarningLimiter {
    /// A limiter that lets the same message through again after `ceiling`.
    pub(crate) fn new(ceiling: Duration) -> Self {
        Self {
            ceiling,
            last: Mutex::default(),
        }
    }

    /// Whether `message` about `object` should be published now; if so, it is remembered.
    pub(crate) fn admit(&self, object: &str, message: &str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        if let Some((seen, at)) = last.get(object)
            && seen == message
            && now.duration_since(*at) < self.ceiling
        {
            return false;
        }
        // Entries for objects that stopped failing (or were deleted) age out here.
        let ceiling = self.ceiling;
        last.retain(|_, (_, at)| now.duration_since(*at) < ceiling);
        last.insert(object.to_string(), (message.to_string(), now));
        true
    }

    /// Forgets `object` (its problem is solved), so a recurrence is reported at once.
    pub(crate) fn forget(&self, object: &str) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(object);
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_once_per_message_per_ceiling() {
        let limiter = WarningLimiter::new(Duration::from_secs(600));
        assert!(limiter.admit("ns/a", "foreign"));
        assert!(!limiter.admit("ns/a", "foreign"));
        assert!(limiter.admit("ns/b", "foreign"));
        assert!(limiter.admit("ns/a", "another problem"));
        limiter.forget("ns/a");
        assert!(limiter.admit("ns/a", "another problem"));
        let zero = WarningLimiter::new(Duration::ZERO);
        assert!(zero.admit("x", "m"));
        assert!(zero.admit("x", "m"));
    }
}
