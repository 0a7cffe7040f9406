//! Global limits shared by every Fetcher and Writer across lists: in-flight
//! Mailchimp requests per key, and Ometria requests per second per key,
//! slowed down as Ometria's backlog fills; and, beside them, when Ometria
//! last took a record from this process ([`LastTaken`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use slog::{info, o, warn, Logger};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::api::ApiError;

/// Added to each Ometria slot so that no 1-second window, however it is
/// aligned, sees more than the configured rate.
const PACING_MARGIN: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub struct Limits {
    pub mailchimp: Arc<ConnectionLimit>,
    pub ometria: Arc<Pacer>,
    /// When Ometria last took a record from any list of this process.
    pub ometria_took: LastTaken,
}

impl Limits {
    /// The limits of one run; the Ometria pacer logs how the backlog slows
    /// it down to `log`.
    pub fn new(mailchimp_connections: usize, ometria_per_second: Option<f64>, log: &Logger) -> Limits {
        Limits {
            mailchimp: Arc::new(ConnectionLimit::new(mailchimp_connections)),
            ometria: Arc::new(Pacer::new(ometria_per_second).logging_to(log.clone())),
            ometria_took: LastTaken::default(),
        }
    }
}

/// When Ometria last took a record from this process: the time (UTC,
/// whole seconds since the Unix epoch; 0 = never) of the latest push
/// answer that counted at least one record as accepted. Every Writer of
/// every list sets it on such an answer; clones share it.
///
/// It is the evidence that Ometria takes records at all, which tells a
/// record refused for its content (kept as rejected) from a request
/// Ometria cannot read whatever it holds — a wrong `OMETRIA_BASE_URL` or
/// `OMETRIA_API`, a proxy in the way — which fails the sync (see
/// [`crate::rejected::deliver`]). Wall-clock time, since it is compared
/// across syncs and lists.
#[derive(Clone, Debug, Default)]
pub struct LastTaken(Arc<AtomicI64>);

impl LastTaken {
    /// Ometria took a record at `at`. An earlier time than the one held
    /// changes nothing.
    pub fn note(&self, at: DateTime<Utc>) {
        self.0.fetch_max(at.timestamp(), Ordering::Relaxed);
    }

    /// Whether Ometria took a record within `window` before `now`.
    pub fn within(&self, window: Duration, now: DateTime<Utc>) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        last > 0 && now.timestamp().saturating_sub(last) <= window
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
///
/// It also slows down before Ometria's backlog fills (SPEC §6: pushes wait
/// in a backlog of at most 50,000 records, answers carry
/// `X-QueueSize-Limit` and `X-QueueSize-Remaining`, and a full backlog
/// answers 429 to everything). With `R` records of room left in a backlog
/// of `L`, as the last answer said ([`Pacer::answered`]):
///
/// - `R ≥ L/2`: the configured pace.
/// - `R < L/2`: the pace times `R / (L/2)` (an unlimited pacer slows down
///   from Ometria's documented 8 per second), starts at most 30 s apart.
///   The inflow falls with the room and settles where it matches what
///   Ometria drains: at 8 per second, a backlog draining `D` records/s
///   settles with about `D × L / 1600` records of room, enough for a push
///   of 100 whenever `D × L ≥ 160,000` (3.2 records/s for 50,000), so a
///   steady sync meets no 429; slower drains meet one now and then.
/// - `R < 100`, no room for a push, said by a 429: nobody starts one for
///   1 s, then 2 s, 4 s … up to 30 s for each hold that ends with a 429
///   saying the backlog is still full (or for the spacing at 100 records of
///   room, when that is longer: 30 s for 50,000 at 8 per second). Other
///   failures saying so repeat the last hold.
/// - `R < 100` said by an answer that took the push: the push fit, which is
///   evidence of room whatever the header says. The pace is the one the
///   last answer with room set (the configured one if none had room), and
///   the hold is the last one again, not longer (1 s if no 429 came yet).
///   A server whose header always says 0 while it takes every push gets
///   about one push a second, not one every 30 s; a backlog really full
///   answers a push with a 429, and the holds grow.
///
/// The rule is applied afresh whenever an answer comes, so an answer with
/// room ends a hold and restores the pace at once (the next hold is then a
/// step shorter than the last: 16 s after 30 s, … down to 1 s). Without those headers
/// the pace is exactly the configured one. The pacer logs one WARNING when
/// the backlog starts slowing it down (`R < L/2`) and one INFO when it has
/// room again (`R ≥ 60 %` of `L`, a margin so that a backlog hovering at
/// half logs no pair per push).
///
/// Once Ometria's answers have said for [`BACKLOG_GIVE_UP`] (10 minutes)
/// without a break that the backlog is full — 429s, or no room for a push,
/// and no push taken — retries give up ([`Pacer::may_retry`]), failing
/// their syncs: a backlog that never drains would otherwise hold them for
/// hours, a retry every 30 s.
pub struct Pacer {
    interval: Option<Duration>,
    schedule: Mutex<Schedule>,
    /// Callers queue here in order of arrival (tokio's mutex is fair); the
    /// one holding it waits for its start.
    turn: tokio::sync::Mutex<()>,
    /// Wakes the caller waiting for its start when a hold or an answer may
    /// have moved it.
    changed: Notify,
    log: Logger,
}

/// How Ometria answered a request, as far as the pacer is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the push was taken (into the backlog).
    Took,
    /// 429: too many requests, or no room in the backlog.
    Throttled,
    /// Any other status.
    Other,
}

impl Answer {
    /// The answer an HTTP status makes.
    pub fn from_status(status: u16) -> Answer {
        match status {
            200..=299 => Answer::Took,
            429 => Answer::Throttled,
            _ => Answer::Other,
        }
    }
}

/// Records one push adds to Ometria's backlog, at most (SPEC §6).
const PUSH_RECORDS: u64 = crate::ometria::MAX_BATCH as u64;

/// Ometria's documented rate (SPEC §6: 8 per second at present), which an
/// unlimited pacer slows down from when the backlog fills.
const DOCUMENTED_OMETRIA_RATE: f64 = 8.0;

/// The first hold when the backlog has no room for a push; it doubles for
/// each hold that ends with a 429 saying it is still full.
const BACKLOG_HOLD: Duration = Duration::from_secs(1);

/// The longest the backlog makes anyone wait: a hold, or the spacing of
/// starts. Pushes then go out to learn whether there is room again.
const BACKLOG_MAX_WAIT: Duration = Duration::from_secs(30);

/// How long Ometria's answers may say its backlog is full, without a
/// break, before retries give up (see [`Pacer::may_retry`]).
pub const BACKLOG_GIVE_UP: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Schedule {
    /// When the last request started.
    last_start: Option<Instant>,
    /// No start before this: the API said `Retry-After`.
    held_until: Option<Instant>,
    /// The backlog as the last answer gave it: records it can still take,
    /// and its size.
    backlog: Option<(u64, u64)>,
    /// No start before this: the backlog had no room for a push.
    full_until: Option<Instant>,
    /// How long the next hold for a full backlog is, in doublings of 1 s:
    /// one more for each 429 that ends a hold, one less for each answer
    /// with room.
    full_holds: u32,
    /// The last answer with a backlog took its push though it reported no
    /// room for one.
    took_without_room: bool,
    /// The last backlog an answer reported with room for a push.
    last_room: Option<(u64, u64)>,
    /// Since when every answer has said the backlog is full (a 429, or no
    /// room for a push), none taking a push.
    full_since: Option<Instant>,
    /// The WARNING that the backlog slows the pace was logged, and not yet
    /// the INFO that it has room again.
    warned: bool,
}

impl Pacer {
    pub fn new(per_second: Option<f64>) -> Pacer {
        Pacer {
            interval: per_second.and_then(interval),
            schedule: Mutex::new(Schedule::default()),
            turn: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            log: Logger::root(slog::Discard, o!()),
        }
    }

    /// Logs how the backlog slows the pace down to `log` (by default nowhere).
    pub fn logging_to(mut self, log: Logger) -> Pacer {
        self.log = log;
        self
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The least time between two starts now (`None`: none).
    fn spacing(&self, schedule: &Schedule) -> Option<Duration> {
        // A push taken though its answer said there was no room for it
        // contradicts that answer: the last one with room sets the pace.
        let report = if schedule.took_without_room {
            schedule.last_room
        } else {
            schedule.backlog
        };
        let Some((remaining, limit)) = report else {
            return self.interval;
        };
        let half = limit / 2;
        if remaining >= half {
            return self.interval;
        }
        let pace = self
            .interval
            .or_else(|| interval(DOCUMENTED_OMETRIA_RATE))
            .expect("the documented rate is a rate");
        // Below one push's room, as at one push's room: the hold adds to it.
        let ratio = half as f64 / remaining.max(PUSH_RECORDS) as f64;
        let slowed = Duration::try_from_secs_f64(pace.as_secs_f64() * ratio).unwrap_or(Duration::MAX);
        Some(slowed.clamp(pace, BACKLOG_MAX_WAIT.max(pace)))
    }

    /// The earliest start allowed now, if later than nothing.
    fn next_start(&self, schedule: &Schedule) -> Option<Instant> {
        let paced = schedule.last_start.zip(self.spacing(schedule)).map(|(t, s)| t + s);
        [paced, schedule.held_until, schedule.full_until]
            .into_iter()
            .flatten()
            .max()
    }

    /// Waits until this caller may start a request.
    pub async fn wait_turn(&self) {
        let _turn = self.turn.lock().await;
        // The slot this caller slept until, to start exactly there: the
        // timer's lateness must not push every later start back.
        let mut slept_until = None;
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let slot = {
                let mut schedule = self.schedule();
                let now = Instant::now();
                match self.next_start(&schedule) {
                    Some(slot) if slot > now => slot,
                    slot => {
                        schedule.last_start = Some(slot.filter(|s| slept_until == Some(*s)).unwrap_or(now));
                        return;
                    }
                }
            };
            slept_until = tokio::time::timeout_at(slot, changed).await.err().map(|_| slot);
        }
    }

    /// The API answered 429: no caller starts a request before `wait` has
    /// passed, so that one throttled request does not become a burst of them.
    pub fn hold(&self, wait: Duration) {
        {
            let mut schedule = self.schedule();
            let until = Instant::now() + wait;
            schedule.held_until = Some(schedule.held_until.map_or(until, |h| h.max(until)));
        }
        self.changed.notify_waiters();
    }

    /// Ometria answered a request with `answer`, saying its backlog can
    /// take `remaining` more records of `limit` if it said so: the pace
    /// follows the rule above from now on.
    pub fn answered(&self, answer: Answer, backlog: Option<(u64, u64)>) {
        let news = {
            let mut schedule = self.schedule();
            let now = Instant::now();
            // Room for a push, as the answer says (`None`: it does not).
            let room = backlog.map(|(remaining, limit)| remaining >= PUSH_RECORDS.min(limit));
            match (answer, room) {
                (Answer::Took, _) | (Answer::Other, Some(true)) => schedule.full_since = None,
                (Answer::Throttled, _) | (Answer::Other, Some(false)) => {
                    schedule.full_since.get_or_insert(now);
                }
                (Answer::Other, None) => {}
            }
            if let Some(backlog) = backlog {
                schedule.backlog = Some(backlog);
                schedule.took_without_room = answer == Answer::Took && room == Some(false);
                if room == Some(true) {
                    schedule.last_room = Some(backlog);
                }
                let held = schedule.full_until.is_some_and(|until| until > now);
                if room == Some(true) {
                    // Room ends a hold, and the next is a step shorter: a
                    // backlog draining slowly lets a push in now and then,
                    // and starting over at 1 s would meet a 429 each time.
                    schedule.full_until = None;
                    schedule.full_holds = schedule.full_holds.saturating_sub(1);
                } else if answer == Answer::Throttled {
                    // Answers to pushes already under way say the same again:
                    // only one that comes after the hold makes it longer.
                    if !held {
                        schedule.full_until = Some(now + backlog_hold(schedule.full_holds));
                        schedule.full_holds += 1;
                    }
                } else if !held {
                    // No room said by an answer that took its push (evidence
                    // of room) or by another failure: the last hold again,
                    // no longer.
                    schedule.full_until = Some(now + backlog_hold(schedule.full_holds.saturating_sub(1)));
                }
            }
            Self::episode(&mut schedule, backlog)
        };
        self.changed.notify_waiters();
        match news {
            Some((true, remaining, limit)) => warn!(self.log,
                "ometria: Ometria's backlog is filling: {remaining} of {limit} records of room left; pushes of every list slow down until it drains.";
                "backlog_remaining" => remaining, "backlog_limit" => limit),
            Some((false, remaining, limit)) => info!(self.log,
                "ometria: Ometria's backlog has room again ({remaining} of {limit} records): pushes are back to the configured pace.";
                "backlog_remaining" => remaining, "backlog_limit" => limit),
            None => {}
        }
    }

    /// Whether `backlog` starts (`true`) or ends (`false`) an episode of
    /// the backlog slowing the pace down, with its room and size.
    fn episode(schedule: &mut Schedule, backlog: Option<(u64, u64)>) -> Option<(bool, u64, u64)> {
        let (remaining, limit) = backlog?;
        if !schedule.warned && remaining < limit / 2 {
            schedule.warned = true;
            return Some((true, remaining, limit));
        }
        if schedule.warned && remaining >= limit / 2 + limit / 10 {
            schedule.warned = false;
            return Some((false, remaining, limit));
        }
        None
    }

    /// Whether a retry of a push may go now: not once Ometria's answers
    /// have said for [`BACKLOG_GIVE_UP`], without a break, that its backlog
    /// is full. A first attempt always goes, to learn whether it still is.
    ///
    /// Errors: [`ApiError::BacklogFull`], which retries give up on.
    pub fn may_retry(&self) -> Result<(), ApiError> {
        match self.schedule().full_since {
            Some(since) if since.elapsed() >= BACKLOG_GIVE_UP => Err(ApiError::BacklogFull {
                full_for: since.elapsed(),
            }),
            _ => Ok(()),
        }
    }
}

/// The hold for a full backlog after `holds` holds in a row: 1 s, doubling
/// up to [`BACKLOG_MAX_WAIT`].
fn backlog_hold(holds: u32) -> Duration {
    BACKLOG_HOLD.saturating_mul(1 << holds.min(16)).min(BACKLOG_MAX_WAIT)
}

/// The spacing of starts at `per_second`, if that is a rate.
fn interval(per_second: f64) -> Option<Duration> {
    (per_second.is_finite() && per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second) + PACING_MARGIN)
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

    /// Whether `d` is `expected`, or up to the timer's 1 ms granularity more.
    fn near(d: Duration, expected: Duration) -> bool {
        d >= expected && d <= expected + Duration::from_millis(1)
    }

    /// Time from one start to the next, with an answer that took the push
    /// reporting the backlog as `report` says.
    async fn spacing_with(pacer: &Pacer, report: Option<(u64, u64)>) -> Duration {
        spacing_after(pacer, Answer::Took, report).await
    }

    /// Time from one start to the next, with `answer` reporting the backlog
    /// as `report` says.
    async fn spacing_after(pacer: &Pacer, answer: Answer, report: Option<(u64, u64)>) -> Duration {
        pacer.wait_turn().await;
        pacer.answered(answer, report);
        let t = Instant::now();
        pacer.wait_turn().await;
        t.elapsed()
    }

    #[actix_rt::test]
    async fn starts_spread_out_as_the_backlog_fills_and_recover_as_it_drains() {
        tokio::time::pause();
        let pacer = Pacer::new(Some(8.0));
        let ms = Duration::from_millis;
        // Half the backlog or more free: the configured pace.
        for report in [None, Some((50_000, 50_000)), Some((25_000, 50_000))] {
            let d = spacing_with(&pacer, report).await;
            assert!(near(d, ms(126)), "{report:?}: {d:?}");
        }
        // Below half: slower in proportion.
        let d = spacing_with(&pacer, Some((12_500, 50_000))).await;
        assert!(near(d, ms(252)), "{d:?}");
        let d = spacing_with(&pacer, Some((1_000, 50_000))).await;
        assert!(near(d, ms(3150)), "{d:?}");
        // Never slower than BACKLOG_MAX_WAIT.
        let d = spacing_with(&pacer, Some((100, 50_000_000))).await;
        assert!(near(d, BACKLOG_MAX_WAIT), "{d:?}");
        // Room again: the configured pace at once.
        let d = spacing_with(&pacer, Some((40_000, 50_000))).await;
        assert!(near(d, ms(126)), "{d:?}");

        // Unlimited slows down from Ometria's documented 8 per second.
        let pacer = Pacer::new(None);
        assert_eq!(spacing_with(&pacer, Some((25_000, 50_000))).await, Duration::ZERO);
        let d = spacing_with(&pacer, Some((12_500, 50_000))).await;
        assert!(near(d, ms(252)), "{d:?}");
        assert_eq!(spacing_with(&pacer, Some((30_000, 50_000))).await, Duration::ZERO);
    }

    #[actix_rt::test]
    async fn a_full_backlog_holds_every_caller_longer_while_429s_say_it_stays_full() {
        tokio::time::pause();
        let secs = Duration::from_secs;
        let full = Some((0, 1_000));
        // A backlog of 1,000: at one push's room starts are 630 ms apart,
        // so the holds show (in a bigger one that spacing is longer).
        for pacer in [Pacer::new(Some(8.0)), Pacer::new(None)] {
            // Answers to pushes already under way do not make the hold longer.
            pacer.wait_turn().await;
            pacer.answered(Answer::Throttled, full);
            pacer.answered(Answer::Throttled, Some((40, 1_000)));
            let t = Instant::now();
            pacer.wait_turn().await;
            assert!(near(t.elapsed(), secs(1)), "{:?}", t.elapsed());
            // Still full after the hold: twice as long, and so on.
            for hold in [2, 4, 8, 16, 30, 30] {
                let d = spacing_after(&pacer, Answer::Throttled, full).await;
                assert!(near(d, secs(hold)), "{d:?}");
            }
            // Room for a push: no hold, and each answer with room takes the
            // next hold a step back, down to 1 s.
            let d = spacing_with(&pacer, Some((100, 1_000))).await;
            assert!(near(d, Duration::from_millis(630)), "{d:?}");
            let d = spacing_after(&pacer, Answer::Throttled, full).await;
            assert!(near(d, secs(30)), "{d:?}");
            for _ in 0..8 {
                spacing_with(&pacer, Some((500, 1_000))).await;
            }
            let d = spacing_after(&pacer, Answer::Throttled, full).await;
            assert!(near(d, secs(1)), "{d:?}");
            // Other failures repeat the last hold without making it longer.
            for _ in 0..3 {
                let d = spacing_after(&pacer, Answer::Other, full).await;
                assert!(near(d, secs(1)), "{d:?}");
            }
        }
    }

    #[actix_rt::test]
    async fn a_push_taken_while_no_room_is_reported_is_evidence_of_room() {
        tokio::time::pause();
        let secs = Duration::from_secs;
        // Issue 14, F10: a server whose header always says 0 while it takes
        // every push. Before, one push every 30 s; now one a second.
        for pacer in [Pacer::new(Some(8.0)), Pacer::new(None)] {
            for _ in 0..20 {
                let d = spacing_with(&pacer, Some((0, 50_000))).await;
                assert!(near(d, secs(1)), "{d:?}");
            }
            pacer.may_retry().unwrap();
            // A backlog really full answers a push with a 429, and the
            // holds grow (in a backlog of 1,000, where they show).
            let full = Some((0, 1_000));
            for hold in [1, 2, 4] {
                let d = spacing_after(&pacer, Answer::Throttled, full).await;
                assert!(near(d, secs(hold)), "{d:?}");
            }
            // A push taken: the last hold again, not longer; then 429s go on
            // from there, until an answer has room.
            for _ in 0..3 {
                assert!(near(spacing_with(&pacer, full).await, secs(4)));
            }
            let d = spacing_after(&pacer, Answer::Throttled, full).await;
            assert!(near(d, secs(8)), "{d:?}");
            // Answers with room step the holds back down to 1 s.
            for _ in 0..4 {
                let d = spacing_with(&pacer, Some((500, 1_000))).await;
                assert!(d < secs(1), "{d:?}");
            }
            assert!(near(spacing_with(&pacer, full).await, secs(1)));
        }
        // A configured pace slower than that is kept.
        let slow = Pacer::new(Some(0.5));
        let d = spacing_with(&slow, Some((0, 50_000))).await;
        assert!(near(d, Duration::from_millis(2001)), "{d:?}");
    }

    #[actix_rt::test]
    async fn an_answer_with_room_lets_a_held_caller_go_at_once() {
        tokio::time::pause();
        let pacer = std::rc::Rc::new(Pacer::new(Some(8.0)));
        let start = Instant::now();
        pacer.wait_turn().await;
        pacer.answered(Answer::Throttled, Some((0, 50_000)));
        let held = {
            let pacer = pacer.clone();
            actix_rt::spawn(async move {
                pacer.wait_turn().await;
                start.elapsed()
            })
        };
        // Held: without the hold it would start 126 ms after the first.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(300)).await;
        tokio::task::yield_now().await;
        assert!(!held.is_finished(), "the full backlog did not hold it");
        pacer.answered(Answer::Took, Some((30_000, 50_000)));
        let started = held.await.unwrap();
        assert!(near(started, Duration::from_millis(300)), "{started:?}");
    }

    #[test]
    fn odd_reports_neither_stall_nor_panic() {
        let slow = Pacer::new(Some(0.001));
        slow.answered(Answer::Throttled, Some((0, u64::MAX)));
        assert_eq!(slow.spacing(&slow.schedule()), slow.interval);
        slow.answered(Answer::Took, Some((0, u64::MAX)));
        assert_eq!(slow.spacing(&slow.schedule()), slow.interval);
        let pacer = Pacer::new(Some(8.0));
        pacer.answered(Answer::Throttled, Some((5, 0)));
        let schedule = pacer.schedule();
        assert_eq!(pacer.spacing(&schedule), pacer.interval);
        assert!(schedule.full_until.is_none());
    }

    /// A push into a backlog that never drains, retried as a Writer does:
    /// each attempt waits its turn, asks [`Pacer::may_retry`] from the
    /// second on, and meets a 429 saying the backlog is full.
    async fn push_into_a_stuck_backlog(pacer: &Pacer, attempts: u32) -> Result<(), ApiError> {
        let policy = crate::retry::RetryPolicy {
            attempts,
            ..crate::retry::RetryPolicy::default()
        };
        policy
            .run(
                &crate::retry::Outcomes::default(),
                |attempt| async move {
                    pacer.wait_turn().await;
                    if attempt > 1 {
                        pacer.may_retry()?;
                    }
                    pacer.answered(Answer::Throttled, Some((0, 50_000)));
                    Err::<(), _>(ApiError::Throttled {
                        api: crate::api::Api::Ometria,
                        status: 429,
                        retry_after: None,
                    })
                },
                |_, _, _| {},
            )
            .await
    }

    #[actix_rt::test]
    async fn retries_give_up_once_the_backlog_has_been_full_for_10_minutes() {
        tokio::time::pause();
        let pacer = Pacer::new(Some(8.0));
        let start = Instant::now();
        // Enough attempts for hours at one every 30 s.
        let e = push_into_a_stuck_backlog(&pacer, 1000).await.unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, ApiError::BacklogFull { .. }), "{e}");
        assert_eq!(crate::retry::verdict(&e), crate::retry::Verdict::GiveUp);
        assert!(
            e.to_string().starts_with("Ometria's backlog has been full for 10 min"),
            "{e}"
        );
        // The 10 minutes, then at most a start's spacing (30 s) and a backoff wait (30 s).
        assert!(
            took >= BACKLOG_GIVE_UP && took <= BACKLOG_GIVE_UP + Duration::from_secs(61),
            "{took:?}"
        );
        // A new push still goes once, to learn whether there is room, and
        // gives up at its first retry while the backlog stays full.
        let t = Instant::now();
        assert!(matches!(
            push_into_a_stuck_backlog(&pacer, 1000).await,
            Err(ApiError::BacklogFull { .. })
        ));
        assert!(t.elapsed() <= Duration::from_secs(61), "{:?}", t.elapsed());
        // A push taken ends it: the clock starts over.
        pacer.answered(Answer::Took, Some((0, 50_000)));
        pacer.may_retry().unwrap();
        pacer.answered(Answer::Throttled, None);
        tokio::time::advance(BACKLOG_GIVE_UP - Duration::from_secs(1)).await;
        pacer.may_retry().unwrap();
        // Answers reporting room end it too; failures saying nothing do not.
        pacer.answered(Answer::Other, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(pacer.may_retry().is_err());
        pacer.answered(Answer::Other, Some((5_000, 50_000)));
        pacer.may_retry().unwrap();
    }

    #[actix_rt::test]
    async fn the_backlog_slowing_the_pace_is_logged_once_and_its_end_once() {
        tokio::time::pause();
        let buffer = crate::telemetry::log::SharedBuffer::default();
        let log = crate::telemetry::log::logger(crate::config::LogFormat::Text, buffer.clone());
        let pacer = Pacer::new(Some(8.0)).logging_to(log);
        let reports = [
            40_000, 30_000, 24_000, 26_000, 24_000, 10_000, 0, 0, 0, 26_000, 24_000, 29_999, 30_000, 31_000, 20_000,
        ];
        for remaining in reports {
            pacer.answered(Answer::Took, Some((remaining, 50_000)));
            pacer.answered(Answer::Throttled, None);
        }
        let text = buffer.contents();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("ometria: Ometria's backlog is filling: 24000 of 50000 records of room left; pushes of every list slow down until it drains."),
            "{text}"
        );
        assert!(
            lines[1].contains("INFO") && lines[1].contains("ometria: Ometria's backlog has room again (30000 of 50000 records): pushes are back to the configured pace."),
            "{text}"
        );
        assert!(
            lines[2].contains("WARN") && lines[2].contains(" 20000 of 50000 "),
            "{text}"
        );
    }

    /// The pacer against a model of Ometria's backlog: `pushes` pushes of
    /// 100 records one after the other, each answer reporting the room left.
    /// Returns the pushes that did not fit and how long it took.
    async fn push_into_a_backlog(pacer: &Pacer, pushes: u32, limit: u64, drain_per_second: f64) -> (u32, Duration) {
        let start = Instant::now();
        let (mut queued, mut last, mut refused, mut pushed) = (0.0f64, start, 0, 0);
        while pushed < pushes {
            pacer.wait_turn().await;
            let now = Instant::now();
            queued = (queued - (now - last).as_secs_f64() * drain_per_second).max(0.0);
            last = now;
            if limit as f64 - queued >= 100.0 {
                queued += 100.0;
                pushed += 1;
                pacer.answered(Answer::Took, Some((limit - queued.ceil() as u64, limit)));
            } else {
                refused += 1;
                pacer.answered(Answer::Throttled, Some((limit - queued.ceil() as u64, limit)));
            }
        }
        (refused, start.elapsed())
    }

    /// The rule's promise, at 8 per second or unlimited: against a backlog
    /// of `L` records draining `D` per second, no push meets a full one
    /// when `D × L ≥ 160,000`, and once full the sync goes at the drain's
    /// pace, losing only the time to drain the room it keeps (`L / 1600`
    /// seconds); below that, a push that does not fit is rare.
    #[actix_rt::test]
    async fn a_steady_push_into_a_draining_backlog_meets_at_most_an_occasional_429() {
        tokio::time::pause();
        for rate in [Some(8.0), None] {
            for limit in [50_000, 5_000] {
                for drain in [5.0, 20.0, 100.0, 500.0, 5_000.0] {
                    let pacer = Pacer::new(rate);
                    let pushes = (3 * limit / 100) as u32;
                    let (refused, took) = push_into_a_backlog(&pacer, pushes, limit, drain).await;
                    let case = format!("{rate:?}/s, {limit} records draining {drain}/s: {refused} refused in {took:?}");
                    if drain * limit as f64 >= 160_000.0 {
                        assert_eq!(refused, 0, "{case}");
                        let floor = ((pushes as f64 * 100.0 - limit as f64) / drain)
                            .max(rate.map_or(0.0, |r| pushes as f64 / r));
                        let kept = limit as f64 / 1600.0;
                        assert!(took.as_secs_f64() <= floor + kept + 1.0, "{case}");
                    } else {
                        assert!(refused as f64 <= took.as_secs_f64() / 20.0, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn ometria_took_a_record_within_a_window() {
        let at = |secs: i64| DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        let hour = Duration::from_secs(3600);
        let took = LastTaken::default();
        assert!(!took.within(hour, at(0)), "never");
        took.clone().note(at(0));
        assert!(took.within(hour, at(0)));
        assert!(took.within(hour, at(3600)));
        assert!(!took.within(hour, at(3601)));
        // An older answer does not move it back.
        took.note(at(-100));
        assert!(took.within(hour, at(3600)));
        took.note(at(3000));
        assert!(took.within(hour, at(6600)));
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
