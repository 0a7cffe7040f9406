//! Retries of one request: which failures are worth another attempt, and
//! how long to wait (exponential backoff with full jitter, SPEC §6).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use crate::api::{ApiError, MAX_RETRY_AFTER};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, after at least `after` if the server said so.
    Retry { after: Option<Duration> },
    /// Retrying cannot help: fail the entry.
    GiveUp,
}

/// 429, Mailchimp's body-less 403, 5xx, 408, timeouts, dropped connections,
/// unreadable answers and push answers that do not add up (the push is
/// sent again: writes are idempotent by id) are passing; refusals are not.
pub fn verdict(error: &ApiError) -> Verdict {
    match error {
        ApiError::Throttled { retry_after, .. } => match retry_after {
            Some(after) if *after > MAX_RETRY_AFTER => Verdict::GiveUp,
            after => Verdict::Retry { after: *after },
        },
        ApiError::Unavailable { .. }
        | ApiError::Timeout { .. }
        | ApiError::Connection { .. }
        | ApiError::Malformed { .. }
        | ApiError::Unaccounted { .. } => Verdict::Retry { after: None },
        ApiError::Refused { .. } | ApiError::BacklogFull { .. } => Verdict::GiveUp,
    }
}

/// How one API answered the requests of one sync so far, shared by the
/// sync's workers for that API. Once at least one request in five got
/// through, the API is flaky rather than down, and a request that keeps
/// failing is unlucky: it gets `FLAKY_ROUNDS` times the attempts, because
/// failing it would throw the whole sync away.
#[derive(Clone, Debug, Default)]
pub struct Outcomes(Rc<Cell<Counts>>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    succeeded: u64,
    failed: u64,
}

impl Outcomes {
    fn record(&self, ok: bool) {
        let mut o = self.0.get();
        if ok {
            o.succeeded += 1;
        } else {
            o.failed += 1;
        }
        self.0.set(o);
    }

    fn succeeded(&self) -> u64 {
        self.0.get().succeeded
    }

    /// Whether any request to the API succeeded in this sync so far.
    pub fn any_succeeded(&self) -> bool {
        self.succeeded() > 0
    }

    fn api_works(&self) -> bool {
        let o = self.0.get();
        o.succeeded > 0 && o.succeeded.saturating_mul(4) >= o.failed
    }
}

/// How many times `attempts` a request gets while its API works.
const FLAKY_ROUNDS: u32 = 4;

/// While its API works, a request's backoff doubles at most this many
/// times (0.5 s → 4 s by default): waits of tens of seconds spare an API
/// that is down, not one that answers most requests, and the global
/// limits already bound how hard the importer presses it.
const FLAKY_DOUBLINGS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of a request, the first included, while its sync has not
    /// shown that the API works; `FLAKY_ROUNDS` times as many once it has.
    /// 1 turns retries off.
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// Attempts by default: at 30 % of requests failing, one request in
/// 15,000 would fail all 8 (all 32 once the sync has shown the API works:
/// one in 10^16); 8 waits add up to about a minute at most.
pub const DEFAULT_ATTEMPTS: u32 = 8;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 = the first retry): a
    /// uniformly random share `unit` ∈ [0, 1) of `min(cap, base·2^retry)`,
    /// and never less than the server's `Retry-After`.
    pub fn delay(&self, retry: u32, after: Option<Duration>, unit: f64) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << retry.min(16)).min(self.cap);
        let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
        after.map_or(jittered, |a| a.max(jittered))
    }

    /// Attempts a request gets, given whether its sync has shown that the
    /// API works.
    fn limit(&self, api_works: bool) -> u32 {
        if api_works && self.attempts > 1 {
            self.attempts.saturating_mul(FLAKY_ROUNDS)
        } else {
            self.attempts
        }
    }

    /// Runs `attempt` (given its number, from 1) until it succeeds, fails
    /// for good, or runs out of attempts (see `limit`), recording each
    /// outcome in `outcomes`. The backoff grows with the request's failures
    /// since another request to the API succeeded: while others get
    /// through, the waits stay short.
    /// `on_retry` hears of each retry (numbered from 1) and its wait
    /// before it starts.
    pub async fn run<T, F, Fut>(
        &self,
        outcomes: &Outcomes,
        mut attempt: F,
        mut on_retry: impl FnMut(&ApiError, u32, Duration),
    ) -> Result<T, ApiError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        // Attempts made; failures since the API last answered this sync well.
        let (mut made, mut unanswered) = (0, 0);
        let mut seen = outcomes.succeeded();
        loop {
            made += 1;
            let error = match attempt(made).await {
                Ok(value) => {
                    outcomes.record(true);
                    return Ok(value);
                }
                Err(e) => e,
            };
            outcomes.record(false);
            if outcomes.succeeded() != seen {
                seen = outcomes.succeeded();
                unanswered = 0;
            }
            let works = outcomes.api_works();
            let after = match verdict(&error) {
                Verdict::Retry { after } if made < self.limit(works) => after,
                _ => return Err(error),
            };
            let doublings = if works {
                unanswered.min(FLAKY_DOUBLINGS)
            } else {
                unanswered
            };
            let wait = self.delay(doublings, after, fastrand::f64());
            unanswered += 1;
            on_retry(&error, made, wait);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;
    use std::cell::Cell;

    fn throttled(after: Option<u64>) -> ApiError {
        ApiError::Throttled {
            api: Api::Ometria,
            status: 429,
            retry_after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&throttled(None)), Verdict::Retry { after: None });
        assert_eq!(
            verdict(&throttled(Some(2))),
            Verdict::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(verdict(&throttled(Some(3600))), Verdict::GiveUp);
        let unavailable = ApiError::Unavailable {
            api: Api::Mailchimp,
            status: 503,
            problem: None,
        };
        assert_eq!(verdict(&unavailable), Verdict::Retry { after: None });
        let timeout = ApiError::Timeout {
            api: Api::Mailchimp,
            after: Duration::from_secs(1),
        };
        assert_eq!(verdict(&timeout), Verdict::Retry { after: None });
        let refused = ApiError::Refused {
            api: Api::Mailchimp,
            status: 404,
            problem: None,
            hint: "",
        };
        assert_eq!(verdict(&refused), Verdict::GiveUp);
        assert_eq!(
            verdict(&ApiError::Unaccounted {
                sent: 2,
                accepted: 1,
                rejected: 0
            }),
            Verdict::Retry { after: None }
        );
    }

    #[test]
    fn full_jitter_under_a_doubling_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let top: Vec<_> = (0..6).map(|r| p.delay(r, None, 0.999_999).as_millis()).collect();
        assert_eq!(top, [99, 199, 399, 799, 999, 999]);
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(0, Some(Duration::from_secs(5)), 0.5), Duration::from_secs(5));
    }

    #[actix_rt::test]
    async fn retries_until_success_within_the_attempts() {
        tokio::time::pause();
        let calls = Cell::new(0);
        let policy = RetryPolicy::default();
        let mut retries = vec![];
        let result = policy
            .run(
                &Outcomes::default(),
                |attempt| {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    assert_eq!(attempt, n, "attempts are numbered from 1");
                    async move {
                        if n < 3 {
                            Err(throttled(Some(1)))
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_, retry, wait| retries.push((retry, wait >= Duration::from_secs(1))),
            )
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries, [(1, true), (2, true)]);
    }

    #[actix_rt::test]
    async fn gives_up_on_refusals_at_once_and_on_passing_errors_after_the_attempts() {
        tokio::time::pause();
        let calls = Cell::new(0);
        let policy = RetryPolicy {
            attempts: 4,
            ..RetryPolicy::default()
        };
        let refused = policy
            .run(
                &Outcomes::default(),
                |_| {
                    calls.set(calls.get() + 1);
                    async {
                        Err::<(), _>(ApiError::Refused {
                            api: Api::Ometria,
                            status: 401,
                            problem: None,
                            hint: "",
                        })
                    }
                },
                |_, _, _| {},
            )
            .await;
        assert!(refused.is_err());
        assert_eq!(calls.get(), 1);
        calls.set(0);
        let passing = policy
            .run(
                &Outcomes::default(),
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err::<(), _>(throttled(None)) }
                },
                |_, _, _| {},
            )
            .await;
        assert!(matches!(passing, Err(ApiError::Throttled { .. })));
        assert_eq!(calls.get(), 4);
    }

    /// With `attempts` 3, a request that fails `failures` times in a sync
    /// whose other requests met `before` so far; returns how many attempts
    /// it made, whether it succeeded, and the retries' numbers.
    async fn unlucky(attempts: u32, failures: u32, before: Counts) -> (u32, bool, Vec<u32>) {
        let policy = RetryPolicy {
            attempts,
            ..RetryPolicy::default()
        };
        let outcomes = Outcomes::default();
        outcomes.0.set(before);
        let (calls, mut numbers) = (Cell::new(0), vec![]);
        let result = policy
            .run(
                &outcomes,
                |_| {
                    calls.set(calls.get() + 1);
                    let fail = calls.get() <= failures;
                    async move {
                        if fail {
                            Err(throttled(None))
                        } else {
                            Ok(())
                        }
                    }
                },
                |_, n, _| numbers.push(n),
            )
            .await;
        (calls.get(), result.is_ok(), numbers)
    }

    fn counts(succeeded: u64, failed: u64) -> Counts {
        Counts { succeeded, failed }
    }

    #[actix_rt::test]
    async fn a_request_gets_four_times_the_attempts_once_the_api_showed_it_works() {
        tokio::time::pause();
        // Nothing got through yet, or less than one request in five: 3.
        assert_eq!(unlucky(3, 6, counts(0, 0)).await, (3, false, vec![1, 2]));
        assert_eq!(unlucky(3, 6, counts(2, 20)).await.0, 3);
        // One in three got through (one in five after this request's own
        // failures): 6 failures are no reason to stop.
        assert_eq!(unlucky(3, 6, counts(10, 20)).await, (7, true, (1..=6).collect()));
        // At most 4 × 3 attempts, however well the others do.
        assert_eq!(unlucky(3, 100, counts(1000, 0)).await.0, 12);
        // And 1 attempt means no retries at all.
        assert_eq!(unlucky(1, 6, counts(1000, 0)).await, (1, false, vec![]));
    }

    /// The waits before the retries of a request (7 attempts) whose every
    /// attempt fails, in a sync whose other requests met `before`, while
    /// another request to the API succeeds during each attempt when
    /// `others_succeed`.
    async fn waits(before: Counts, others_succeed: bool) -> Vec<Duration> {
        let policy = RetryPolicy {
            attempts: 7,
            ..RetryPolicy::default()
        };
        let outcomes = Outcomes::default();
        outcomes.0.set(before);
        let mut waits = vec![];
        let _ = policy
            .run(
                &outcomes,
                |_| {
                    if others_succeed {
                        outcomes.record(true);
                    }
                    async { Err::<(), _>(throttled(None)) }
                },
                |_, _, wait| waits.push(wait),
            )
            .await;
        waits
    }

    #[actix_rt::test]
    async fn the_backoff_stays_short_while_other_requests_get_through() {
        tokio::time::pause();
        // Each wait is drawn below the first retry's ceiling (0.5 s), where
        // alone the ceiling doubles with every retry (up to 30 s).
        let busy = waits(counts(0, 0), true).await;
        assert_eq!(busy.len(), 4 * 7 - 1, "the API works: 4 × the attempts");
        assert!(busy.iter().all(|w| *w < Duration::from_millis(500)), "{busy:?}");
        let alone = waits(counts(0, 0), false).await;
        assert_eq!(alone.len(), 6);
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000].map(Duration::from_millis);
        assert!(alone.iter().zip(ceilings).all(|(w, c)| *w < c), "{alone:?}");
    }

    #[actix_rt::test]
    async fn the_backoff_of_a_lone_request_stops_doubling_at_4_s_while_the_api_works() {
        tokio::time::pause();
        // The sync met 100 successes: 27 retries (failures ≤ 4 × 127),
        // none of them waiting 4 s or more, where the plain doubling
        // would reach 30 s.
        let lone = waits(counts(100, 0), false).await;
        assert_eq!(lone.len(), 27);
        assert!(lone.iter().all(|w| *w < Duration::from_secs(4)), "{lone:?}");
    }

    #[actix_rt::test]
    async fn every_outcome_is_recorded_for_the_sync() {
        tokio::time::pause();
        let policy = RetryPolicy::default();
        let outcomes = Outcomes::default();
        let calls = Cell::new(0);
        let done = policy.run(
            &outcomes,
            |_| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(throttled(None))
                    } else {
                        Ok(())
                    }
                }
            },
            |_, _, _| {},
        );
        assert!(!outcomes.any_succeeded());
        assert!(done.await.is_ok());
        assert_eq!(outcomes.0.get(), counts(1, 2));
        assert!(outcomes.any_succeeded());
    }
}
