//! Lease-based leader election (`coordination.k8s.io/v1`): exactly one replica runs the CA
//! manager and the controllers; the others wait and take over within the lease duration when
//! the leader stops renewing.
//!
//! Every write carries the resourceVersion that was read, so two candidates can never both
//! believe they acquired the same Lease.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the leader renews, and candidates retry.
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// A write refused because this replica may no longer be the leader (docs/reliability.md).
#[derive(Debug, thiserror::Error)]
#[error(
    "write skipped: not leading (leadership lost, or the Lease not renewed within the renew deadline by the local clock)"
)]
pub(crate) struct NotLeading;

/// Whether this replica may write now. The term token stops the controllers once the elector
/// has seen the Lease lost, but a process frozen past its lease (SIGSTOP, a paused VM, a
/// starved node) wakes with its term still open and in-flight writes ready to go, before its
/// elector has looked again. So each write is checked right before it is sent: the last
/// successful renewal must have *started* less than the renew deadline ago, by the local
/// monotonic clock (which keeps running while the process is stopped). Another replica judges
/// the Lease expired only after observing it unchanged for the whole lease duration, which
/// cannot end before that deadline.
#[derive(Clone, Debug)]
pub(crate) struct Leadership(Arc<LeadershipState>);

#[derive(Debug)]
struct LeadershipState {
    origin: std::time::Instant,
    /// Nanoseconds after `origin` until which writes are allowed; 0: not leading.
    valid_until: AtomicU64,
}

/// `valid_until` of a process without election ([`crate::start`]): always leading.
const ALWAYS: u64 = u64::MAX;

impl Leadership {
    /// Not leading until the elector says otherwise.
    pub(crate) fn elected() -> Self {
        Self(Arc::new(LeadershipState {
            origin: std::time::Instant::now(),
            valid_until: AtomicU64::new(0),
        }))
    }

    /// Always leading: controllers started without an election (tests, embedding).
    pub(crate) fn always() -> Self {
        let leadership = Self::elected();
        leadership.0.valid_until.store(ALWAYS, Ordering::SeqCst);
        leadership
    }

    /// Writes are allowed until `until` (a renewal that started at `until - renew deadline`
    /// succeeded).
    fn renewed(&self, until: std::time::Instant) {
        let nanos = until.saturating_duration_since(self.0.origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(ALWAYS - 1).max(1);
        self.0.valid_until.store(nanos, Ordering::SeqCst);
    }

    /// No more writes (leadership lost or given up).
    fn revoke(&self) {
        self.0.valid_until.store(0, Ordering::SeqCst);
    }

    /// Ok while this replica leads and its lease is valid by the local clock.
    pub(crate) fn check(&self) -> Result<(), NotLeading> {
        let until = self.0.valid_until.load(Ordering::SeqCst);
        if until == ALWAYS {
            return Ok(());
        }
        let now = std::time::Instant::now().saturating_duration_since(self.0.origin);
        if u128::from(until) > now.as_nanos() {
            Ok(())
        } else {
            Err(NotLeading)
        }
    }

    /// `client` with every write (any method but GET, HEAD, OPTIONS) checked against this
    /// leadership right before it is sent; a refused write fails with
    /// `kube::Error::Service(NotLeading)` (category `not_leading`). Reads pass.
    pub(crate) fn gate(&self, client: Client) -> Client {
        let namespace = client.default_namespace().to_string();
        Client::new(
            WriteGate {
                client,
                leadership: self.clone(),
            },
            namespace,
        )
    }
}

/// The tower service behind [`Leadership::gate`].
#[derive(Clone)]
struct WriteGate {
    client: Client,
    leadership: Leadership,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Request<kube::client::Body>> for WriteGate {
    type Response = Response<kube::client::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let (client, leadership) = (self.client.clone(), self.leadership.clone());
        Box::pin(async move {
            let write = !matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS
            );
            if write {
                leadership.check()?;
            }
            Ok(client.send(request).await?)
        })
    }
}

/// What a candidate should do with the Lease it read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeaseStep {
    /// Nobody holds it (or the holder's lease expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a valid lease.
    Follow,
}

/// Decides from the Lease as read, who we are, and for how long this exact record has been
/// observed unchanged by this replica (pure). As in client-go, a holder's lease is judged expired
/// by local observation time, never by comparing its remote timestamps with our clock.
pub(crate) fn lease_step(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseStep {
    let Some(spec) = spec else {
        return LeaseStep::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::Acquire;
    }
    let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15);
    if unchanged_for < Duration::from_secs(seconds) {
        LeaseStep::Follow
    } else {
        LeaseStep::Acquire
    }
}

/// The Lease record as last observed, and since when (local monotonic time).
#[derive(Default)]
struct Observation {
    record: Option<(Option<String>, Option<String>)>,
    since: Option<tokio::time::Instant>,
}

impl Observation {
    /// Records what was read; returns how long it has been unchanged.
    fn observe(&mut self, lease: Option<&Lease>) -> Duration {
        let record = lease.map(|l| {
            let spec = l.spec.as_ref();
            (
                spec.and_then(|s| s.holder_identity.clone()),
                l.resource_version(),
            )
        });
        let now = tokio::time::Instant::now();
        if self.record != record || self.since.is_none() {
            self.record = record;
            self.since = Some(now);
        }
        self.since.map_or(Duration::ZERO, |since| now - since)
    }
}

fn desired_spec(
    current: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    timing: &LeaseTiming,
) -> LeaseSpec {
    let keep_acquire = current.filter(|s| s.holder_identity.as_deref() == Some(me));
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(i32::try_from(timing.duration.as_secs()).unwrap_or(15)),
        acquire_time: Some(
            keep_acquire
                .and_then(|s| s.acquire_time.clone())
                .unwrap_or(MicroTime(now)),
        ),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if keep_acquire.is_some() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One election round: returns whether we hold the lease afterwards.
async fn round(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    timing: &LeaseTiming,
    observation: &mut Observation,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(name).await?;
    let unchanged_for = observation.observe(current.as_ref());
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    match lease_step(spec, me, unchanged_for) {
        LeaseStep::Follow => Ok(false),
        step => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    resource_version: current.as_ref().and_then(|l| l.resource_version()),
                    ..Default::default()
                },
                spec: Some(desired_spec(spec, me, now, timing)),
            };
            let pp = PostParams {
                field_manager: Some(crate::names::FIELD_MANAGER.into()),
                ..Default::default()
            };
            let result = match current {
                None => api.create(&pp, &lease).await.map(|_| ()),
                Some(_) => api.replace(name, &pp, &lease).await.map(|_| ()),
            };
            match result {
                Ok(()) => {
                    if step == LeaseStep::Acquire {
                        info!(lease = name, identity = me, "acquired leadership");
                    }
                    Ok(true)
                }
                // Someone else won the race: follow.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// One replica's candidacy for the Lease.
#[derive(Clone)]
pub(crate) struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl Elector {
    /// A candidate for the Lease named in `opts`.
    pub(crate) fn new(client: Client, opts: &crate::RunOptions) -> Self {
        Self {
            api: Api::namespaced(client, &opts.lease_namespace),
            name: opts.lease_name.clone(),
            identity: opts.identity.clone(),
            timing: opts.lease_timing.clone(),
        }
    }

    /// Runs the election until `root` is cancelled. Each leadership term is a child token of
    /// `root`, published on `terms`; the elector itself cancels it when leadership is lost (or
    /// renewal has failed for longer than the lease duration), so whatever runs under the term
    /// stops however many handles to it exist.
    pub(crate) async fn run(
        self,
        terms: watch::Sender<Option<CancellationToken>>,
        leadership: Leadership,
        root: CancellationToken,
    ) {
        let mut last_renewed = tokio::time::Instant::now();
        let mut observation = Observation::default();
        // The leader gives up once it could not renew for two thirds of the lease, so it stops
        // before any other replica can judge the lease expired (client-go's renew deadline).
        let renew_deadline = self.timing.duration * 2 / 3;
        let end_term = |why: &str| {
            leadership.revoke();
            if let Some(term) = terms.send_replace(None) {
                warn!(lease = %self.name, "{why}");
                term.cancel();
            }
        };
        loop {
            // Writes stay allowed for the renew deadline from the start of the round that renewed
            // (the request may have reached the API server at any moment after this).
            let started = std::time::Instant::now();
            let attempt = round(
                &self.api,
                &self.name,
                &self.identity,
                &self.timing,
                &mut observation,
            );
            // Each round is bounded: a hung request must not keep a leader past its deadline.
            let outcome = match tokio::time::timeout(renew_deadline, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(kube::Error::Service(
                    format!("leader election round took longer than {renew_deadline:?}").into(),
                )),
            };
            match outcome {
                Ok(true) => {
                    last_renewed = tokio::time::Instant::now();
                    leadership.renewed(started + renew_deadline);
                    if terms.borrow().is_none() {
                        terms.send_replace(Some(root.child_token()));
                    }
                }
                Ok(false) => end_term("lost leadership"),
                Err(err) => {
                    let missing_namespace = matches!(&err, kube::Error::Api(s)
                        if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces"));
                    let namespace = self.api.namespace().unwrap_or_default();
                    if missing_namespace {
                        tracing::error!(%namespace, "namespace does not exist: create it (kubectl create namespace {namespace}) or choose another with --namespace");
                    } else {
                        warn!(error = %crate::plumbing::api_message(&err), lease = %self.name, "leader election round failed");
                    }
                    if last_renewed.elapsed() > renew_deadline {
                        end_term("could not renew within the renew deadline; stepping down");
                    }
                }
            }
            tokio::select! {
                _ = root.cancelled() => break,
                _ = tokio::time::sleep(self.timing.retry) => {}
            }
        }
        leadership.revoke();
        if let Some(term) = terms.send_replace(None) {
            term.cancel();
        }
    }

    /// Releases the lease (best effort) so a successor need not wait for it to expire.
    pub(crate) async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let pp = PostParams {
            field_manager: Some(crate::names::FIELD_MANAGER.into()),
            ..Default::default()
        };
        if let Err(err) = self.api.replace(&self.name, &pp, &lease).await {
            warn!(error = %crate::plumbing::api_message(&err), lease = %self.name, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_holds_until_the_renew_deadline() {
        let now = std::time::Instant::now();
        assert!(Leadership::always().check().is_ok());
        let leadership = Leadership::elected();
        assert!(
            leadership.check().is_err(),
            "not leading before the first renewal"
        );
        leadership.renewed(now + Duration::from_secs(60));
        assert!(leadership.check().is_ok());
        // A renewal whose deadline has passed (the process was frozen): writes refused, although
        // nothing revoked the leadership yet.
        leadership.renewed(now);
        assert!(leadership.check().is_err());
        leadership.renewed(now + Duration::from_secs(60));
        leadership.revoke();
        assert!(leadership.check().is_err());
    }

    /// Answers every request with 200 and counts them.
    #[derive(Clone, Default)]
    struct Answer(Arc<AtomicU64>);

    impl tower_service::Service<Request<kube::client::Body>> for Answer {
        type Response = Response<kube::client::Body>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<kube::client::Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(kube::client::Body::from(Vec::new()))))
        }
    }

    #[tokio::test]
    async fn the_gate_refuses_writes_not_reads() {
        let sent = Answer::default();
        let leadership = Leadership::elected();
        let gated = leadership.gate(Client::new(sent.clone(), "default"));
        let request = |method: Method| {
            Request::builder()
                .method(method)
                .uri("/api/v1/namespaces/default/configmaps")
                .body(kube::client::Body::from(Vec::new()))
                .unwrap()
        };
        assert!(gated.send(request(Method::GET)).await.is_ok());
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let err = gated.send(request(method)).await.unwrap_err();
            assert_eq!(crate::plumbing::kube_category(&err), "not_leading");
        }
        assert_eq!(sent.0.load(Ordering::SeqCst), 1, "only the read was sent");
        leadership.renewed(std::time::Instant::now() + Duration::from_secs(60));
        assert!(gated.send(request(Method::PATCH)).await.is_ok());
        assert_eq!(sent.0.load(Ordering::SeqCst), 2);
    }

    fn spec(holder: &str, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }
    }

    #[test]
    fn steps() {
        let secs = Duration::from_secs;
        assert_eq!(lease_step(None, "a", secs(0)), LeaseStep::Acquire);
        assert_eq!(
            lease_step(Some(&spec("a", 15)), "a", secs(100)),
            LeaseStep::Renew
        );
        assert_eq!(
            lease_step(Some(&spec("b", 15)), "a", secs(1)),
            LeaseStep::Follow
        );
        assert_eq!(
            lease_step(Some(&spec("b", 15)), "a", secs(14)),
            LeaseStep::Follow
        );
        assert_eq!(
            lease_step(Some(&spec("b", 15)), "a", secs(15)),
            LeaseStep::Acquire
        );
        assert_eq!(
            lease_step(Some(&spec("", 15)), "a", secs(0)),
            LeaseStep::Acquire
        );
    }

    #[test]
    fn remote_timestamps_do_not_count() {
        // A holder whose clock is far behind ours: its renewTime looks ancient, but the record
        // was just observed to change, so it is followed.
        let mut skewed = spec("b", 15);
        skewed.renew_time = Some(MicroTime(Timestamp::from_second(0).unwrap()));
        assert_eq!(
            lease_step(Some(&skewed), "a", Duration::ZERO),
            LeaseStep::Follow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn observation_restarts_when_the_record_changes() {
        let lease = |holder: &str, rv: &str| Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(spec(holder, 15)),
        };
        let mut seen = Observation::default();
        assert_eq!(seen.observe(Some(&lease("b", "1"))), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            seen.observe(Some(&lease("b", "1"))),
            Duration::from_secs(10)
        );
        // Renewed (new resourceVersion): observed afresh.
        assert_eq!(seen.observe(Some(&lease("b", "2"))), Duration::ZERO);
    }

    #[test]
    fn transitions_count_only_changes_of_holder() {
        let now = Timestamp::now();
        let timing = LeaseTiming::default();
        let mut held = spec("a", 15);
        held.lease_transitions = Some(3);
        assert_eq!(
            desired_spec(Some(&held), "a", now, &timing).lease_transitions,
            Some(3)
        );
        assert_eq!(
            desired_spec(Some(&held), "b", now, &timing).lease_transitions,
            Some(4)
        );
    }
}
