//! Write-fight detection: when something else keeps undoing what the controller writes (the
//! original still running during a migration, a GitOps tool owning a webhook, a policy stripping
//! a label), both sides would rewrite the object forever, each round costing an RSA key for a
//! serving Secret. After `limit` writes to one object within `window`, the controller leaves it
//! alone for `pause` and says so once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use tokio::time::Instant;

use crate::names;

/// Writes to one object within the window that count as a fight.
const LIMIT: usize = 5;
/// The window those writes are counted in.
const WINDOW: Duration = Duration::from_secs(600);
/// How long a fought-over object is left alone.
const PAUSE: Duration = Duration::from_secs(1800);

#[derive(Default)]
struct History {
    writes: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// First retry after a write conflict; doubled per consecutive conflict on the same object.
const CONFLICT_BASE: Duration = Duration::from_millis(500);
/// Longest wait after repeated conflicts.
const CONFLICT_CAP: Duration = Duration::from_secs(60);

/// Per-object write history of one controller.
pub(crate) struct FightDetector {
    limit: usize,
    window: Duration,
    pause: Duration,
    objects: Mutex<HashMap<String, History>>,
    conflicts: Mutex<HashMap<String, u32>>,
}

impl Default for FightDetector {
    fn default() -> Self {
        Self::new(LIMIT, WINDOW, PAUSE)
    }
}

/// What recording a write found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An ordinary write.
    Fine,
    /// This write reached the limit: the object is left alone until then.
    FightStarted(Instant),
}

impl FightDetector {
    /// A detector with explicit limits.
    pub(crate) fn new(limit: usize, window: Duration, pause: Duration) -> Self {
        Self {
            limit,
            window,
            pause,
            objects: Mutex::default(),
            conflicts: Mutex::default(),
        }
    }

    /// How long to wait before retrying after a write conflict on `object`: 0.5 s, doubling
    /// with each consecutive conflict, capped at a minute (someone else keeps writing it).
    pub(crate) fn conflict_delay(&self, object: &str) -> Duration {
        let Ok(mut conflicts) = self.conflicts.lock() else {
            return CONFLICT_BASE;
        };
        let count = conflicts.entry(object.to_string()).or_insert(0);
        let delay = CONFLICT_BASE
            .checked_mul(1 << (*count).min(16))
            .unwrap_or(CONFLICT_CAP)
            .min(CONFLICT_CAP);
        *count = count.saturating_add(1);
        delay
    }

    /// A reconcile of `object` succeeded: its conflict streak is over.
    pub(crate) fn settled(&self, object: &str) {
        if let Ok(mut conflicts) = self.conflicts.lock() {
            conflicts.remove(object);
        }
    }

    /// When the object may be written again, if it is being left alone now.
    pub(crate) fn paused_until(&self, object: &str) -> Option<Instant> {
        let mut objects = self.objects.lock().ok()?;
        let history = objects.get_mut(object)?;
        match history.paused_until {
            Some(until) if until > Instant::now() => Some(until),
            Some(_) => {
                history.paused_until = None;
                history.writes.clear();
                None
            }
            None => None,
        }
    }

    /// Records a write to `object`.
    pub(crate) fn record(&self, object: &str) -> Verdict {
        let Ok(mut objects) = self.objects.lock() else {
            return Verdict::Fine;
        };
        let now = Instant::now();
        // Objects whose last write left the window are forgotten (memory follows activity).
        let window = self.window;
        objects.retain(|_, h| {
            h.paused_until.is_some_and(|u| u > now)
                || h.writes.back().is_some_and(|t| now - *t < window)
        });
        let history = objects.entry(object.to_string()).or_default();
        while history
            .writes
            .front()
            .is_some_and(|t| now - *t >= self.window)
        {
            history.writes.pop_front();
        }
        history.writes.push_back(now);
        if history.writes.len() >= self.limit {
            let until = now + self.pause;
            history.paused_until = Some(until);
            Verdict::FightStarted(until)
        } else {
            Verdict::Fine
        }
    }
}

/// The field manager other than service-ca that wrote the object most recently, from its
/// managedFields: who the controller is fighting with.
pub(crate) fn other_manager(managed: Option<&Vec<ManagedFieldsEntry>>) -> String {
    managed
        .into_iter()
        .flatten()
        .filter(|e| e.manager.as_deref() != Some(names::FIELD_MANAGER))
        .max_by_key(|e| e.time.as_ref().map(|t| t.0))
        .and_then(|e| e.manager.clone())
        .unwrap_or_else(|| "an unknown writer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[tokio::test(start_paused = true)]
    async fn a_fight_pauses_writes_then_ends() {
        let fights = FightDetector::new(3, Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(fights.record("ns/a"), Verdict::Fine);
        assert_eq!(fights.record("ns/a"), Verdict::Fine);
        assert_eq!(fights.record("ns/b"), Verdict::Fine);
        assert!(matches!(fights.record("ns/a"), Verdict::FightStarted(_)));
        assert!(fights.paused_until("ns/a").is_some());
        assert!(fights.paused_until("ns/b").is_none());
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(fights.paused_until("ns/a").is_none());
        assert_eq!(fights.record("ns/a"), Verdict::Fine);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_outside_the_window_do_not_count() {
        let fights = FightDetector::new(3, Duration::from_secs(60), Duration::from_secs(300));
        for _ in 0..10 {
            assert_eq!(fights.record("ns/a"), Verdict::Fine);
            tokio::time::advance(Duration::from_secs(31)).await;
        }
    }

    #[test]
    fn conflicts_back_off_exponentially_until_settled() {
        let fights = FightDetector::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| fights.conflict_delay("ns/a").as_millis() as u64)
            .collect();
        assert_eq!(delays[..4], [500, 1000, 2000, 4000]);
        assert_eq!(delays[9], 60_000);
        assert_eq!(fights.conflict_delay("ns/b").as_millis(), 500);
        fights.settled("ns/a");
        assert_eq!(fights.conflict_delay("ns/a").as_millis(), 500);
    }

    #[test]
    fn names_the_latest_other_manager() {
        let entry = |manager: &str, second: i64| ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(second).unwrap(),
            )),
            ..Default::default()
        };
        let managed = vec![
            entry("kubectl", 1),
            entry("argocd", 5),
            entry(names::FIELD_MANAGER, 9),
        ];
        assert_eq!(other_manager(Some(&managed)), "argocd");
        assert_eq!(other_manager(None), "an unknown writer");
    }
}
