//! Delegated authentication and authorization of `/metrics`, as kube-rbac-proxy and the
//! original's `DelegatingAuthorizationOptions` do: the bearer token is sent to the API server in a
//! TokenReview (authentication.k8s.io/v1); the user it names is checked with a SubjectAccessReview
//! (authorization.k8s.io/v1) for `get` on the non-resource URL `/metrics`.
//!
//! Verdicts are cached for [`CACHE_TTL`], keyed by the SHA-256 of the token (the token itself is
//! never stored), at most [`CACHE_ENTRIES`] of them. API failures are not cached. At most
//! [`CONCURRENT_REVIEWS`] reviews run at once, each within [`REVIEW_TIMEOUT`], so a flood of
//! invented tokens costs the API server a bounded rate of requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The path, and the non-resource URL authorized.
pub(super) const METRICS_PATH: &str = "/metrics";
/// How long a verdict is reused for the same token.
pub(super) const CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most.
pub(super) const CACHE_ENTRIES: usize = 1024;
/// Reviews in flight at most.
const CONCURRENT_REVIEWS: usize = 8;
/// Time for the TokenReview and the SubjectAccessReview together.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer tokens are refused without asking the API server.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the API server said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Authenticated and allowed to `get /metrics`.
    Allowed,
    /// Authenticated as `user`, not allowed.
    Denied {
        /// The authenticated user name.
        user: String,
    },
    /// Not a valid token.
    Unauthenticated,
    /// The reviews failed (API server unreachable, timeout, refused): not cached.
    Unavailable,
}

/// The token of an `Authorization: Bearer <token>` header, if there is exactly one such header.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

type TokenHash = [u8; 32];

fn token_hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// A bounded map of verdicts that expire.
struct Cache {
    entries: HashMap<TokenHash, (Verdict, Instant)>,
}

impl Cache {
    fn get(&mut self, key: &TokenHash, now: Instant) -> Option<Verdict> {
        match self.entries.get(key) {
            Some((verdict, expires)) if *expires > now => Some(verdict.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: TokenHash, verdict: Verdict, now: Instant) {
        if self.entries.len() >= CACHE_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= CACHE_ENTRIES {
                // Still full of live entries: drop the one closest to expiry.
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| *k)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, (verdict, now + CACHE_TTL));
    }
}

/// Reviews tokens with the API server, through the cache.
pub(super) struct Authorizer {
    client: Client,
    cache: Mutex<Cache>,
    reviews: Semaphore,
}

impl Authorizer {
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
            }),
            reviews: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    /// May the bearer of `token` get `/metrics`?
    pub(super) async fn review(&self, token: &str) -> Verdict {
        if token.len() > MAX_TOKEN_BYTES {
            return Verdict::Unauthenticated;
        }
        let key = token_hash(token);
        if let Some(verdict) = self.cached(&key) {
            return verdict;
        }
        let Ok(_slot) = self.reviews.acquire().await else {
            return Verdict::Unavailable;
        };
        // Another request may have reviewed the same token while this one waited.
        if let Some(verdict) = self.cached(&key) {
            return verdict;
        }
        let verdict = match tokio::time::timeout(REVIEW_TIMEOUT, self.ask(token)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(err)) => {
                warn!(error = %err, "cannot review a /metrics token with the API server");
                return Verdict::Unavailable;
            }
            Err(_) => {
                warn!("reviewing a /metrics token took longer than {REVIEW_TIMEOUT:?}");
                return Verdict::Unavailable;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, verdict.clone(), Instant::now());
        }
        verdict
    }

    fn cached(&self, key: &TokenHash) -> Option<Verdict> {
        self.cache.lock().ok()?.get(key, Instant::now())
    }

    /// The TokenReview, then (if authenticated) the SubjectAccessReview.
    async fn ask(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => {
                user
            }
            _ => {
                debug!(error = ?status.error, "/metrics: token not authenticated");
                return Ok(Verdict::Unauthenticated);
            }
        };
        let username = user.username.clone().unwrap_or_default();
        let access = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access_review(user))
            .await?;
        let status = access.status.unwrap_or_default();
        if status.allowed && status.denied != Some(true) {
            Ok(Verdict::Allowed)
        } else {
            debug!(user = %username, reason = ?status.reason, evaluation_error = ?status.evaluation_error, "/metrics: access denied");
            Ok(Verdict::Denied { user: username })
        }
    }
}

/// May `user` `get` the non-resource URL `/metrics`?
fn access_review(user: UserInfo) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(METRICS_PATH.into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer_token(&headers(&["bearer  abc "])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[])), None);
        assert_eq!(bearer_token(&headers(&["Basic abc"])), None);
        assert_eq!(bearer_token(&headers(&["Bearer "])), None);
        assert_eq!(bearer_token(&headers(&["Bearer"])), None);
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])), None);
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = Cache {
            entries: HashMap::new(),
        };
        let t0 = Instant::now();
        cache.insert(token_hash("a"), Verdict::Allowed, t0);
        assert_eq!(cache.get(&token_hash("a"), t0), Some(Verdict::Allowed));
        assert_eq!(cache.get(&token_hash("a"), t0 + CACHE_TTL), None);
        assert!(cache.entries.is_empty(), "expired entries are dropped");
        for i in 0..CACHE_ENTRIES + 10 {
            let at = t0 + Duration::from_millis(i as u64);
            cache.insert(token_hash(&i.to_string()), Verdict::Unauthenticated, at);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        // The oldest went first.
        let now = t0 + Duration::from_millis(CACHE_ENTRIES as u64 + 10);
        assert_eq!(cache.get(&token_hash("0"), now), None);
        assert_eq!(
            cache.get(&token_hash(&(CACHE_ENTRIES + 9).to_string()), now),
            Some(Verdict::Unauthenticated)
        );
        // Expired entries make room before live ones are evicted.
        cache.insert(token_hash("late"), Verdict::Allowed, now + CACHE_TTL * 2);
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn token_hash_is_sha256() {
        assert_eq!(
            token_hash("")[..4],
            [0xe3, 0xb0, 0xc4, 0x42],
            "SHA-256 of the empty string"
        );
    }
}
