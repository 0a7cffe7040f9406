//! Fault injection: each request may draw a fault, deterministically for
//! a given seed.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::StreamExt;

/// How often each fault strikes, as a probability per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// A 503 with a problem body.
    pub server_error: f64,
    /// Starts a burst of `throttle_burst` 429 answers.
    pub throttle: f64,
    pub throttle_burst: u32,
    /// No answer for `hang_for` (then a 504): the client must time out.
    pub hang: f64,
    pub hang_for: Duration,
    /// The connection closes right after the answer's head.
    pub drop: f64,
    /// The answer's body is cut in half.
    pub truncate: f64,
    /// Mailchimp's other way to throttle: a 403 with no body (Ometria
    /// answers these with a 429).
    pub forbidden: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            server_error: 0.0,
            throttle: 0.0,
            throttle_burst: 5,
            hang: 0.0,
            hang_for: Duration::from_secs(150),
            drop: 0.0,
            truncate: 0.0,
            forbidden: 0.0,
        }
    }
}

impl Faults {
    /// Every fault at the same rate.
    pub fn all(rate: f64) -> Faults {
        Faults {
            server_error: rate,
            throttle: rate,
            hang: rate,
            drop: rate,
            truncate: rate,
            forbidden: rate,
            ..Faults::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    ServerError,
    Throttle,
    Hang,
    Drop,
    Truncate,
    Forbidden,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::ServerError,
        Fault::Throttle,
        Fault::Hang,
        Fault::Drop,
        Fault::Truncate,
        Fault::Forbidden,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerError => "server_error",
            Fault::Throttle => "throttle",
            Fault::Hang => "hang",
            Fault::Drop => "drop",
            Fault::Truncate => "truncate",
            Fault::Forbidden => "forbidden",
        }
    }
}

/// The dice of one API.
pub struct FaultDice {
    rng: fastrand::Rng,
    burst_left: u32,
}

impl FaultDice {
    pub fn new(seed: u64) -> FaultDice {
        FaultDice {
            rng: fastrand::Rng::with_seed(seed),
            burst_left: 0,
        }
    }

    pub fn roll(&mut self, faults: &Faults) -> Option<Fault> {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            return Some(Fault::Throttle);
        }
        let draw = self.rng.f64();
        let mut edge = 0.0;
        for (fault, p) in [
            (Fault::ServerError, faults.server_error),
            (Fault::Throttle, faults.throttle),
            (Fault::Hang, faults.hang),
            (Fault::Drop, faults.drop),
            (Fault::Truncate, faults.truncate),
            (Fault::Forbidden, faults.forbidden),
        ] {
            edge += p;
            if draw < edge {
                if fault == Fault::Throttle {
                    self.burst_left = faults.throttle_burst.saturating_sub(1);
                }
                return Some(fault);
            }
        }
        None
    }

    /// A uniform draw in `[base - jitter, base + jitter]`.
    pub fn latency(&mut self, base: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return base;
        }
        let spread = jitter.as_secs_f64() * (2.0 * self.rng.f64() - 1.0);
        Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0))
    }
}

/// `body` with its full length announced, but only its first `keep`
/// bytes sent before the connection closes. `keep` = 0 closes it before
/// even the answer's head goes out: a dropped connection.
pub fn cut_short(content_type: &'static str, body: Vec<u8>, keep: usize) -> HttpResponse {
    let length = body.len() as u64;
    let head = Bytes::from(body).slice(..keep.min(length as usize));
    let abort = || std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "sandbox fault");
    let sent = futures_util::stream::iter((!head.is_empty()).then_some(Ok(head)));
    // A pause lets the server flush what was sent before the connection drops.
    let broken = futures_util::stream::once(async move {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        Err::<Bytes, _>(abort())
    });
    HttpResponse::Ok()
        .content_type(content_type)
        .no_chunking(length)
        .streaming(sent.chain(broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_honoured_and_bursts_continue() {
        let mut dice = FaultDice::new(1);
        let faults = Faults {
            server_error: 0.1,
            throttle: 0.02,
            throttle_burst: 3,
            ..Faults::default()
        };
        let draws: Vec<_> = (0..10_000).map(|_| dice.roll(&faults)).collect();
        let errors = draws.iter().filter(|d| **d == Some(Fault::ServerError)).count();
        assert!((800..1200).contains(&errors), "{errors}");
        // Every throttle starts a run of three.
        let runs = draws.split(|d| *d != Some(Fault::Throttle)).filter(|r| !r.is_empty());
        assert!(runs.clone().count() > 100);
        assert!(runs.into_iter().all(|r| r.len() % 3 == 0), "bursts of three");
        assert_eq!(FaultDice::new(5).roll(&Faults::default()), None);
    }

    #[test]
    fn latency_jitters_within_bounds() {
        let mut dice = FaultDice::new(2);
        for _ in 0..1000 {
            let d = dice.latency(Duration::from_millis(50), Duration::from_millis(20));
            assert!(d >= Duration::from_millis(30) && d <= Duration::from_millis(70));
        }
        assert_eq!(
            dice.latency(Duration::from_millis(50), Duration::ZERO),
            Duration::from_millis(50)
        );
    }
}
