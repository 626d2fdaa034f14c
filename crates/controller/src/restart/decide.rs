//! Pure decisions of the restart controller (docs/behavior.md §17): what to do with one workload,
//! and when the cluster-wide pace lets its restart go out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::material::Desired;

/// What the restart controller does with one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// It does not carry `service-ca.dev/restart-on-change: "true"`: never written.
    NotOptedIn,
    /// It mounts nothing service-ca issued or injects: nothing to follow.
    NothingMounted,
    /// A required mount is missing (e.g. a serving Secret deleted for re-issue): its pods could
    /// not start, so the restart waits until the object is back (its event triggers a look).
    WaitFor(Vec<String>),
    /// The pod template already carries the hash of the current material.
    UpToDate,
    /// Write `hash` into the pod template: the workload's controller rolls the pods.
    Restart {
        /// The new `service-ca.dev/material-hash`.
        hash: String,
        /// Why: first sight or a change.
        reason: Reason,
    },
}

/// Why a workload is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Opted in, and no hash recorded yet: its pods may have started before the current material
    /// (nothing tells), so they are rolled once to be sure.
    OptedIn,
    /// The material its pods mount changed since the recorded hash.
    MaterialChanged,
}

impl Reason {
    /// For logs and Events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::OptedIn => "opted in",
            Reason::MaterialChanged => "mounted certificate or CA bundle changed",
        }
    }
}

/// Decides for a workload that is `opted_in` or not, whose pod template carries `recorded`, and
/// whose mounts hold `desired` now.
pub(crate) fn decide(opted_in: bool, recorded: Option<&str>, desired: &Desired) -> Step {
    if !opted_in {
        return Step::NotOptedIn;
    }
    match desired {
        Desired::Nothing => Step::NothingMounted,
        Desired::Missing(missing) => Step::WaitFor(missing.clone()),
        Desired::Hash(hash) if recorded == Some(hash.as_str()) => Step::UpToDate,
        Desired::Hash(hash) => Step::Restart {
            hash: hash.clone(),
            reason: match recorded {
                None | Some("") => Reason::OptedIn,
                Some(_) => Reason::MaterialChanged,
            },
        },
    }
}

/// At most `restarts` workload restarts in any window of `per`, cluster-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pace {
    pub(crate) restarts: u32,
    pub(crate) per: Duration,
}

/// How long a reservation nobody claimed is kept (its workload was deleted or no longer needs
/// a restart).
const UNCLAIMED: Duration = Duration::from_secs(600);

/// Hands out restart slots: each workload that needs a restart reserves the next free slot and
/// is requeued until then, so a CA rotation that changes every workload's material restarts them
/// in order, `restarts` per `per`, instead of all at once or in a herd of retries.
#[derive(Debug)]
pub(crate) struct Pacer {
    pace: Pace,
    /// Start times of reserved slots, ascending (past ones only while they still count).
    slots: VecDeque<Instant>,
    /// The slot each waiting workload holds.
    held: HashMap<String, Instant>,
}

impl Pacer {
    /// An empty schedule.
    pub(crate) fn new(pace: Pace) -> Self {
        Self {
            pace,
            slots: VecDeque::new(),
            held: HashMap::new(),
        }
    }

    /// When `workload` may restart: `Duration::ZERO` means now (the slot is used up), anything
    /// else is the wait until its reserved slot (asking again before then returns the same slot).
    pub(crate) fn admit(&mut self, workload: &str, now: Instant) -> Duration {
        self.forget_old(now);
        let at = match self.held.get(workload) {
            Some(at) => *at,
            None => {
                let at = self.next_slot(now);
                self.slots.push_back(at);
                self.held.insert(workload.to_string(), at);
                at
            }
        };
        if at <= now {
            self.held.remove(workload);
            Duration::ZERO
        } else {
            at - now
        }
    }

    /// `workload` no longer needs its reserved slot (if any); the slot stays counted (later
    /// reservations keep their place).
    pub(crate) fn release(&mut self, workload: &str) {
        self.held.remove(workload);
    }

    /// The earliest start such that no window of `per` holds more than `restarts` slots.
    fn next_slot(&self, now: Instant) -> Instant {
        let n = self.pace.restarts.max(1) as usize;
        let mut at = now;
        if let Some(last) = self.slots.back() {
            at = at.max(*last);
        }
        if self.slots.len() >= n {
            at = at.max(self.slots[self.slots.len() - n] + self.pace.per);
        }
        at
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .slots
            .front()
            .is_some_and(|s| *s + self.pace.per <= now)
        {
            self.slots.pop_front();
        }
        self.held.retain(|_, at| *at + UNCLAIMED > now);
    }

    /// Workloads waiting for their slot.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(h: &str) -> Desired {
        Desired::Hash(h.into())
    }

    #[test]
    fn decision_table() {
        let missing = Desired::Missing(vec!["secret web-tls".into()]);
        let restart = |h: &str, reason| Step::Restart {
            hash: h.into(),
            reason,
        };
        let rows: &[(&str, bool, Option<&str>, Desired, Step)] = &[
            (
                "not opted in, changed",
                false,
                Some("a"),
                hash("b"),
                Step::NotOptedIn,
            ),
            (
                "not opted in, never seen",
                false,
                None,
                hash("b"),
                Step::NotOptedIn,
            ),
            (
                "not opted in, mounts nothing",
                false,
                None,
                Desired::Nothing,
                Step::NotOptedIn,
            ),
            (
                "opted in, mounts nothing",
                true,
                None,
                Desired::Nothing,
                Step::NothingMounted,
            ),
            (
                "mounts nothing any more: the old hash is left",
                true,
                Some("a"),
                Desired::Nothing,
                Step::NothingMounted,
            ),
            (
                "a required mount is missing",
                true,
                Some("a"),
                missing.clone(),
                Step::WaitFor(vec!["secret web-tls".into()]),
            ),
            (
                "missing on first sight",
                true,
                None,
                missing,
                Step::WaitFor(vec!["secret web-tls".into()]),
            ),
            ("up to date", true, Some("a"), hash("a"), Step::UpToDate),
            (
                "first sight",
                true,
                None,
                hash("a"),
                restart("a", Reason::OptedIn),
            ),
            (
                "empty recorded hash",
                true,
                Some(""),
                hash("a"),
                restart("a", Reason::OptedIn),
            ),
            (
                "material changed",
                true,
                Some("a"),
                hash("b"),
                restart("b", Reason::MaterialChanged),
            ),
        ];
        for (name, opted_in, recorded, desired, expected) in rows {
            assert_eq!(decide(*opted_in, *recorded, desired), *expected, "{name}");
        }
    }

    fn pacer(restarts: u32, per_secs: u64) -> Pacer {
        Pacer::new(Pace {
            restarts,
            per: Duration::from_secs(per_secs),
        })
    }

    #[test]
    fn pace_admits_n_per_interval_and_schedules_the_rest() {
        let t0 = Instant::now();
        let mut p = pacer(2, 10);
        let waits: Vec<u64> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|w| p.admit(w, t0).as_secs())
            .collect();
        // Two now, two after 10 s, one after 20 s.
        assert_eq!(waits, [0, 0, 10, 10, 20]);
        assert_eq!(p.waiting(), 3);
        // Asking again keeps the slot.
        assert_eq!(p.admit("c", t0 + Duration::from_secs(4)).as_secs(), 6);
        // At its slot it goes.
        assert_eq!(p.admit("c", t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(p.admit("d", t0 + Duration::from_secs(11)), Duration::ZERO);
        // A newcomer queues behind the reserved slots.
        assert_eq!(p.admit("f", t0 + Duration::from_secs(11)).as_secs(), 9);
    }

    #[test]
    fn no_window_holds_more_than_n() {
        let t0 = Instant::now();
        let mut p = pacer(3, 5);
        let mut starts: Vec<Duration> = (0..20)
            .map(|i| {
                let now = t0 + Duration::from_millis(i * 700);
                now + p.admit(&format!("w{i}"), now) - t0
            })
            .collect();
        starts.sort();
        for window in starts.windows(4) {
            assert!(
                window[3] - window[0] >= Duration::from_secs(5),
                "{starts:?}"
            );
        }
    }

    #[test]
    fn a_quiet_pacer_admits_at_once_and_forgets() {
        let t0 = Instant::now();
        let mut p = pacer(1, 10);
        assert_eq!(p.admit("a", t0), Duration::ZERO);
        assert_eq!(p.admit("b", t0).as_secs(), 10);
        p.release("b");
        assert_eq!(p.waiting(), 0);
        // Long after, everything is free again (the released slot has passed too).
        assert_eq!(p.admit("c", t0 + Duration::from_secs(60)), Duration::ZERO);
        // Unclaimed reservations are dropped after a while.
        assert!(p.admit("d", t0 + Duration::from_secs(61)) > Duration::ZERO);
        p.admit("e", t0 + Duration::from_secs(61) + UNCLAIMED + UNCLAIMED);
        assert!(p.waiting() <= 1);
    }
}
