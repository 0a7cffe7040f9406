//! Global limits shared by every Fetcher and Writer across lists: in-flight
//! Mailchimp requests per key, and Ometria requests per second per key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Added to each Ometria slot so that no 1-second window, however it is
/// aligned, sees more than the configured rate.
const PACING_MARGIN: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub struct Limits {
    pub mailchimp: Arc<ConnectionLimit>,
    pub ometria: Arc<Pacer>,
}

impl Limits {
    pub fn new(mailchimp_connections: usize, ometria_per_second: Option<f64>) -> Limits {
        Limits {
            mailchimp: Arc::new(ConnectionLimit::new(mailchimp_connections)),
            ometria: Arc::new(Pacer::new(ometria_per_second)),
        }
    }
}

/// At most N requests in flight.
pub struct ConnectionLimit(Semaphore);

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        ConnectionLimit(Semaphore::new(max.max(1)))
    }

    /// Waits for a free connection; it is given back when the permit drops.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        self.0.acquire().await.expect("the semaphore is never closed")
    }
}

/// Spaces request starts evenly at a given rate (no bursts), first come
/// first served. `None` = unlimited. When the API says to slow down, every
/// caller holds off together.
pub struct Pacer {
    interval: Option<Duration>,
    schedule: Mutex<Schedule>,
}

#[derive(Default)]
struct Schedule {
    /// The earliest start of the next request.
    next_slot: Option<Instant>,
    /// Holds so far: a caller that slept through one queues again.
    holds: u64,
}

impl Pacer {
    pub fn new(per_second: Option<f64>) -> Pacer {
        let interval = per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r) + PACING_MARGIN);
        Pacer {
            interval,
            schedule: Mutex::new(Schedule::default()),
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until this caller may start a request.
    pub async fn wait_turn(&self) {
        loop {
            let (slot, holds) = {
                let mut schedule = self.schedule();
                let now = Instant::now();
                let slot = schedule.next_slot.map_or(now, |n| n.max(now));
                if let Some(interval) = self.interval {
                    schedule.next_slot = Some(slot + interval);
                }
                ((slot > now).then_some(slot), schedule.holds)
            };
            // Sleeping until "now" would still cost a timer tick.
            let Some(slot) = slot else { return };
            tokio::time::sleep_until(slot).await;
            // A hold came while this caller slept on a slot it had taken
            // before: it queues again, behind the hold.
            if self.schedule().holds == holds {
                return;
            }
        }
    }

    /// The API answered 429: no caller starts a request before `wait` has
    /// passed, so that one throttled request does not become a burst of them.
    pub fn hold(&self, wait: Duration) {
        let mut schedule = self.schedule();
        let until = Instant::now() + wait;
        schedule.next_slot = Some(schedule.next_slot.map_or(until, |n| n.max(until)));
        schedule.holds += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_hold_delays_every_caller_paced_or_not() {
        tokio::time::pause();
        for pacer in [Pacer::new(Some(8.0)), Pacer::new(None)] {
            pacer.wait_turn().await;
            let t = Instant::now();
            pacer.hold(Duration::from_secs(2));
            // A shorter hold later does not cut the first one short.
            pacer.hold(Duration::from_millis(500));
            pacer.wait_turn().await;
            pacer.wait_turn().await;
            let waited = t.elapsed();
            assert!(waited >= Duration::from_secs(2), "{waited:?}");
            assert!(waited <= Duration::from_millis(2128), "{waited:?}");
        }
    }

    #[actix_rt::test]
    async fn the_pacer_spaces_starts_evenly() {
        tokio::time::pause();
        let pacer = Pacer::new(Some(8.0));
        let start = Instant::now();
        let mut starts = vec![];
        for _ in 0..17 {
            pacer.wait_turn().await;
            starts.push(start.elapsed());
        }
        // 17 starts span 16 intervals of 126 ms (plus at most the timer's
        // 1 ms granularity): never 9 within one second.
        assert_eq!(starts[0], Duration::ZERO);
        let span = starts[16] - Duration::from_millis(126 * 16);
        assert!(span <= Duration::from_millis(1), "{:?}", starts[16]);
        for w in starts.windows(9) {
            assert!(w[8] - w[0] > Duration::from_secs(1));
        }
    }

    #[actix_rt::test]
    async fn a_caller_asleep_on_an_earlier_slot_queues_again_behind_a_hold() {
        tokio::time::pause();
        let pacer = std::rc::Rc::new(Pacer::new(Some(8.0)));
        let start = Instant::now();
        pacer.wait_turn().await;
        let sleeper = {
            let pacer = pacer.clone();
            actix_rt::spawn(async move {
                pacer.wait_turn().await;
                start.elapsed()
            })
        };
        tokio::time::advance(Duration::from_millis(10)).await;
        pacer.hold(Duration::from_secs(1));
        let started = sleeper.await.unwrap();
        assert!(started >= Duration::from_millis(1010), "{started:?}");
    }

    #[actix_rt::test]
    async fn an_idle_pacer_does_not_bank_credit() {
        tokio::time::pause();
        let pacer = Pacer::new(Some(10.0));
        pacer.wait_turn().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let t = Instant::now();
        pacer.wait_turn().await;
        pacer.wait_turn().await;
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(101) && waited <= Duration::from_millis(102),
            "{waited:?}"
        );
    }

    #[actix_rt::test]
    async fn unlimited_never_waits() {
        tokio::time::pause();
        let pacer = Pacer::new(None);
        let t = Instant::now();
        for _ in 0..1000 {
            pacer.wait_turn().await;
        }
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[actix_rt::test]
    async fn the_connection_limit_holds() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await;
        let _b = limit.acquire().await;
        assert!(limit.0.try_acquire().is_err());
        drop(a);
        assert!(limit.0.try_acquire().is_ok());
    }
}
