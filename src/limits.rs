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

/// Factor by which each 429 stretches the pacing interval, and its ceiling.
const THROTTLED_SLOWDOWN: f64 = 1.5;
const MAX_SLOWDOWN: f64 = 8.0;
/// Factor by which each accepted request shrinks it back towards the rate
/// configured (about 20 requests undo one 429).
const RECOVERY: f64 = 0.98;

/// Spaces request starts evenly at a given rate (no bursts), first come
/// first served. `None` = unlimited. When the API says to slow down (a
/// 429), every caller holds off together, and a paced rate drops below the
/// configured one until requests go through again: the API's real limit
/// may be lower than the one configured.
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
    /// How much longer than configured the interval is now (≥ 1).
    slowdown: f64,
}

impl Pacer {
    pub fn new(per_second: Option<f64>) -> Pacer {
        let interval = per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r) + PACING_MARGIN);
        Pacer {
            interval,
            schedule: Mutex::new(Schedule {
                slowdown: 1.0,
                ..Schedule::default()
            }),
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
                    schedule.next_slot = Some(slot + interval.mul_f64(schedule.slowdown));
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
}

impl Pacer {
    /// The API answered 429: no caller starts a request before `wait` has
    /// passed, so that one throttled request does not become a burst of them.
    pub fn hold(&self, wait: Duration) {
        let mut schedule = self.schedule();
        let until = Instant::now() + wait;
        schedule.next_slot = Some(schedule.next_slot.map_or(until, |n| n.max(until)));
        schedule.holds += 1;
        schedule.slowdown = (schedule.slowdown * THROTTLED_SLOWDOWN).min(MAX_SLOWDOWN);
    }

    /// A request went through: the pace creeps back towards the one configured.
    pub fn succeeded(&self) {
        let mut schedule = self.schedule();
        schedule.slowdown = (schedule.slowdown * RECOVERY).max(1.0);
    }

    /// Requests per second now, if paced.
    pub fn current_rate(&self) -> Option<f64> {
        let slowdown = self.schedule().slowdown;
        self.interval.map(|i| 1.0 / i.mul_f64(slowdown).as_secs_f64())
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
            // The second caller comes one (slowed) interval after the first.
            assert!(waited <= Duration::from_millis(2285), "{waited:?}");
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

    /// The time between two request starts.
    async fn gap(pacer: &Pacer) -> Duration {
        pacer.wait_turn().await;
        let t = Instant::now();
        pacer.wait_turn().await;
        t.elapsed()
    }

    #[actix_rt::test]
    async fn throttling_slows_the_pace_and_success_restores_it() {
        tokio::time::pause();
        let pacer = Pacer::new(Some(8.0));
        let near = |d: Duration, expected: Duration| d.abs_diff(expected) <= Duration::from_millis(1);
        assert!(near(gap(&pacer).await, Duration::from_millis(126)));
        for _ in 0..2 {
            pacer.hold(Duration::ZERO);
        }
        // 126 ms × 1.5²
        let slowed = gap(&pacer).await;
        assert!(near(slowed, Duration::from_micros(283_500)), "{slowed:?}");
        assert!((pacer.current_rate().unwrap() - 8.0 / 1.008 / 2.25).abs() < 0.01);
        for _ in 0..20 {
            pacer.hold(Duration::ZERO);
        }
        assert!(
            (pacer.current_rate().unwrap() - 8.0 / 1.008 / 8.0).abs() < 0.01,
            "capped"
        );
        for _ in 0..200 {
            pacer.succeeded();
        }
        assert_eq!(pacer.current_rate(), Some(1.0 / 0.126));
        assert!(near(gap(&pacer).await, Duration::from_millis(126)));
        assert_eq!(Pacer::new(None).current_rate(), None);
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
