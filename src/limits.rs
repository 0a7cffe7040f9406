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
/// first served. `None` = unlimited.
pub struct Pacer {
    interval: Option<Duration>,
    next_slot: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(per_second: Option<f64>) -> Pacer {
        let interval = per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r) + PACING_MARGIN);
        Pacer {
            interval,
            next_slot: Mutex::new(None),
        }
    }

    /// Waits until this caller may start a request.
    pub async fn wait_turn(&self) {
        let Some(interval) = self.interval else { return };
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            (slot > now).then_some(slot)
        };
        // Sleeping until "now" would still cost a timer tick.
        if let Some(slot) = slot {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
