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

/// 429, Mailchimp's body-less 403, 5xx, timeouts, dropped connections and
/// unreadable answers are passing; refusals and miscounts are not.
pub fn verdict(error: &ApiError) -> Verdict {
    match error {
        ApiError::Throttled { retry_after, .. } => match retry_after {
            Some(after) if *after > MAX_RETRY_AFTER => Verdict::GiveUp,
            after => Verdict::Retry { after: *after },
        },
        ApiError::Unavailable { .. }
        | ApiError::Timeout { .. }
        | ApiError::Connection { .. }
        | ApiError::Malformed { .. } => Verdict::Retry { after: None },
        ApiError::Refused { .. } | ApiError::Unaccounted { .. } => Verdict::GiveUp,
    }
}

/// The requests of one sync that succeeded, shared by its Fetchers and
/// Writers. A request that keeps failing while the others get through is
/// unlucky, not facing an API that is down: its attempts count again from
/// the last success of another request.
#[derive(Clone, Debug, Default)]
pub struct Progress(Rc<Cell<u64>>);

impl Progress {
    fn made(&self) {
        self.0.set(self.0.get() + 1);
    }

    fn so_far(&self) -> u64 {
        self.0.get()
    }
}

/// However the sync progresses, a request gets at most this many times
/// `attempts` in all.
const MOST_ROUNDS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row while no other request of the sync succeeds, the
    /// first included (and at most `MOST_ROUNDS` times as many in all).
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// Attempts in a row by default: at 30 % of requests failing, one in
/// 15,000 requests fails all of them; waits add up to a minute at most.
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

    /// Runs `attempt` until it succeeds, fails for good, or runs out of
    /// attempts: `attempts` in a row without `progress` from other
    /// requests, or `MOST_ROUNDS` × `attempts` in all. `on_retry` hears of
    /// each retry (numbered from 1) and its wait before it starts.
    pub async fn run<T, F, Fut>(
        &self,
        progress: &Progress,
        mut attempt: F,
        mut on_retry: impl FnMut(&ApiError, u32, Duration),
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        // Retries since another request last succeeded, and in all.
        let (mut retry, mut retries) = (0, 0);
        let mut seen = progress.so_far();
        loop {
            let error = match attempt().await {
                Ok(value) => {
                    progress.made();
                    return Ok(value);
                }
                Err(e) => e,
            };
            if progress.so_far() != seen {
                seen = progress.so_far();
                retry = 0;
            }
            let more = retry + 1 < self.attempts && retries + 1 < self.attempts.saturating_mul(MOST_ROUNDS);
            let after = match verdict(&error) {
                Verdict::Retry { after } if more => after,
                _ => return Err(error),
            };
            let wait = self.delay(retry, after, fastrand::f64());
            retries += 1;
            on_retry(&error, retries, wait);
            tokio::time::sleep(wait).await;
            retry += 1;
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
            Verdict::GiveUp
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
                &Progress::default(),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
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
                &Progress::default(),
                || {
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
                &Progress::default(),
                || {
                    calls.set(calls.get() + 1);
                    async { Err::<(), _>(throttled(None)) }
                },
                |_, _, _| {},
            )
            .await;
        assert!(matches!(passing, Err(ApiError::Throttled { .. })));
        assert_eq!(calls.get(), 4);
    }

    /// Fails `failures` times, while other requests of the sync succeed
    /// between the failures when `others_succeed`; returns how many
    /// attempts it made, whether it succeeded, and the retries' numbers.
    async fn unlucky(failures: u32, others_succeed: bool) -> (u32, bool, Vec<u32>) {
        let policy = RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        };
        let (progress, calls, mut numbers) = (Progress::default(), Cell::new(0), vec![]);
        let result = policy
            .run(
                &progress,
                || {
                    calls.set(calls.get() + 1);
                    if others_succeed {
                        progress.made();
                    }
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

    #[actix_rt::test]
    async fn attempts_count_again_while_the_other_requests_get_through() {
        tokio::time::pause();
        // Alone, 3 attempts; with the others succeeding, 6 failures in a
        // row are no reason to stop, and the retries are numbered on.
        assert_eq!(unlucky(6, false).await, (3, false, vec![1, 2]));
        assert_eq!(unlucky(6, true).await, (7, true, (1..=6).collect()));
        // However the others do, at most 4 × 3 attempts in all.
        let (calls, ok, _) = unlucky(100, true).await;
        assert_eq!((calls, ok), (12, false));
    }

    #[actix_rt::test]
    async fn a_success_counts_as_progress_for_the_others() {
        tokio::time::pause();
        let policy = RetryPolicy::default();
        let progress = Progress::default();
        let done = policy.run(&progress, || async { Ok::<_, ApiError>(()) }, |_, _, _| {});
        assert!(done.await.is_ok());
        assert_eq!(progress.so_far(), 1);
    }
}
