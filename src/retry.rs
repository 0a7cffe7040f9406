//! Retries of one request: which failures are worth another attempt, and
//! how long to wait (exponential backoff with full jitter, SPEC §6).

use std::future::Future;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// Attempts per request by default: at 30 % of requests failing, one in
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
    /// attempts. `on_retry` hears of each retry and its wait before it starts.
    pub async fn run<T, F, Fut>(
        &self,
        mut attempt: F,
        mut on_retry: impl FnMut(&ApiError, u32, Duration),
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut retry = 0;
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let after = match verdict(&error) {
                Verdict::Retry { after } if retry + 1 < self.attempts => after,
                _ => return Err(error),
            };
            let wait = self.delay(retry, after, fastrand::f64());
            on_retry(&error, retry + 1, wait);
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
}
