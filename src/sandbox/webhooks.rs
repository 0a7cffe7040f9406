//! The sandbox's Mailchimp sends audience webhooks (issue 18): each
//! mutation Mailchimp would announce is posted, as one event, to a URL
//! ([`WebhookSending`]), in Mailchimp's form encoding
//! (`application/x-www-form-urlencoded`, nested names in brackets: see
//! [`crate::webhook::WebhookEvent`] for the forms), sometimes late, twice
//! or without `data[action]`, as real deliveries are.
//!
//! Which mutation is which event ([`announced`]):
//!
//! | mutation | `type` | `data[action]` |
//! |---|---|---|
//! | change | `profile` | — |
//! | subscribe, add, unarchive | `subscribe` | — |
//! | unsubscribe | `unsubscribe` | `unsub` |
//! | delete | `unsubscribe` | `delete` |
//! | archive | `unsubscribe` | `unsub` |
//! | touch, quiet archive | none | — |
//!
//! Mailchimp documents no event for archiving a contact; the sandbox
//! sends the documented form closest to what happened — the member left
//! the audience's mailings but is still there to read (as archived), so
//! `unsub`, never `delete`, which would say no read can find it. A touch
//! changes nothing a member event tells, and a quiet archive is by
//! definition one nobody is told about.
//!
//! Delivery never holds up a mutation or an API answer: events go through
//! a queue to a task on the sandbox's own thread (`dispatch`), which
//! posts each with awc, waits for a late one, and retries a failed
//! attempt (an answer other than 2xx, a connection error, no answer
//! within [`WebhookSending::timeout`]) with doubling waits. Mailchimp
//! retries an event three times and stops sending to a URL that answers
//! 410 Gone ("Returning a 410 from an audience webhook will disable it",
//! its release notes of 2021-04-05); so does the sandbox, with waits
//! shortened from Mailchimp's (unpublished) ones to fit demos and tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::audience::{timestamp_text, Member, Mutation};
use super::World;

/// Where the sandbox posts its webhooks, and how it gets them wrong. The
/// fractions are in [0, 1]; which events are late, doubled or without
/// action is drawn from the sandbox's seed, so a run is repeatable.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSending {
    /// The receiver's whole URL, secret included, e.g.
    /// `http://127.0.0.1:9899/webhooks/mailchimp/<secret>`.
    pub url: String,
    /// Fraction of events sent late.
    pub late: f64,
    /// How late: a late event waits between half of this and all of it.
    pub late_by: Duration,
    /// Fraction of events sent twice (the second copy after the first's
    /// delivery ended).
    pub twice: f64,
    /// Fraction of `unsubscribe` events sent without `data[action]`.
    pub without_action: f64,
    /// Attempts at one delivery, the first included: Mailchimp's first and
    /// three retries.
    pub attempts: u32,
    /// The wait before the first retry; each further one is twice as long.
    pub retry_after: Duration,
    /// How long an attempt waits for the answer (Mailchimp's 10 s).
    pub timeout: Duration,
}

impl WebhookSending {
    /// Every event to `url`, on time, once and whole.
    pub fn to(url: &str) -> WebhookSending {
        WebhookSending {
            url: url.to_owned(),
            late: 0.0,
            late_by: Duration::from_secs(20),
            twice: 0.0,
            without_action: 0.0,
            attempts: 4,
            retry_after: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The event Mailchimp sends for a mutation: its `type` and, for an
/// `unsubscribe`, its `data[action]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub kind: &'static str,
    pub action: Option<&'static str>,
}

/// The event announcing `mutation`, or `None` for those Mailchimp would
/// not announce (see the table of the module's doc).
pub fn announced(mutation: Mutation) -> Option<Announcement> {
    let (kind, action) = match mutation {
        Mutation::Change => ("profile", None),
        Mutation::Subscribe | Mutation::Add | Mutation::Unarchive => ("subscribe", None),
        Mutation::Unsubscribe | Mutation::Archive => ("unsubscribe", Some("unsub")),
        Mutation::Delete => ("unsubscribe", Some("delete")),
        Mutation::Touch | Mutation::QuietArchive => return None,
    };
    Some(Announcement { kind, action })
}

/// `fired_at` as Mailchimp writes it: `2009-03-26 21:35:57`, UTC.
pub fn fired_at_text(unix: i64) -> String {
    // timestamp_text is `2009-03-26T21:35:57+00:00`.
    let iso = timestamp_text(unix);
    iso.get(..19).unwrap_or_default().replace('T', " ")
}

/// The form body of the event announcing `mutation` of `member` (as the
/// mutation left it) in `list_id`, fired at `fired_at` (unix seconds),
/// with its fields in the order of Mailchimp's samples; `without_action`
/// leaves `data[action]` out. `None` if the mutation is not announced.
pub fn event_form(
    mutation: Mutation,
    member: &Member,
    list_id: &str,
    fired_at: i64,
    without_action: bool,
) -> Option<String> {
    let announcement = announced(mutation)?;
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("type", announcement.kind)
        .append_pair("fired_at", &fired_at_text(fired_at));
    if let (Some(action), false) = (announcement.action, without_action) {
        form.append_pair("data[action]", action);
    }
    if announcement.action.is_some() {
        form.append_pair("data[reason]", "manual");
    }
    let ip_opt = member
        .field("ip_opt", list_id)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    form.append_pair("data[id]", &member.hash())
        .append_pair("data[list_id]", list_id)
        .append_pair("data[email]", &member.email)
        .append_pair("data[email_type]", "html")
        .append_pair("data[merges][EMAIL]", &member.email)
        .append_pair("data[merges][FNAME]", &member.fname)
        .append_pair("data[merges][LNAME]", &member.lname)
        .append_pair("data[ip_opt]", &ip_opt);
    if announcement.kind == "subscribe" {
        form.append_pair("data[ip_signup]", "");
    }
    Some(form.finish())
}

/// How one event goes wrong, if it does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delivery {
    /// Sent this late.
    pub late_by: Option<Duration>,
    /// Sent twice.
    pub twice: bool,
    /// An `unsubscribe` sent without `data[action]`.
    pub without_action: bool,
}

/// Draws how the next event goes wrong: four numbers from `rng` for
/// every event, so that the draws of later events do not depend on which
/// kinds came before. `without_action` only for an `unsubscribe`.
pub fn plan(rng: &mut fastrand::Rng, sending: &WebhookSending, unsubscribe: bool) -> Delivery {
    let (late, how_late, twice, without_action) = (rng.f64(), rng.f64(), rng.f64(), rng.f64());
    Delivery {
        late_by: (late < sending.late).then(|| sending.late_by.mul_f64(0.5 + how_late / 2.0)),
        twice: twice < sending.twice,
        without_action: unsubscribe && without_action < sending.without_action,
    }
}

/// One event on its way.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub body: String,
    pub sending: WebhookSending,
    pub delivery: Delivery,
}

/// Takes events off the queue and delivers each on a task of its own, on
/// the current actix thread (awc's client lives on one), until the queue
/// closes.
pub(super) async fn dispatch(mut events: UnboundedReceiver<Outgoing>, world: Arc<World>) {
    let client = awc::Client::builder()
        .disable_redirects()
        .add_default_header((awc::http::header::USER_AGENT, "MailChimp (ometria-importer sandbox)"))
        .finish();
    while let Some(event) = events.recv().await {
        actix_rt::spawn(deliver(client.clone(), event, world.clone()));
    }
}

/// Delivers one event: waits if it is late, posts it (twice if so
/// planned), each copy with its retries; counts what happened.
async fn deliver(client: awc::Client, event: Outgoing, world: Arc<World>) {
    if let Some(delay) = event.delivery.late_by {
        actix_rt::time::sleep(delay).await;
    }
    let copies = if event.delivery.twice { 2 } else { 1 };
    for _ in 0..copies {
        post(&client, &event, &world).await;
    }
    world.stats.webhooks_in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// What one attempt got.
enum Attempt {
    Taken,
    /// 410: the receiver asks for no more events.
    Gone,
    Failed,
}

async fn attempt(client: &awc::Client, event: &Outgoing) -> Attempt {
    let request = client
        .post(&event.sending.url)
        .timeout(event.sending.timeout)
        .content_type("application/x-www-form-urlencoded");
    match request.send_body(event.body.clone()).await {
        Ok(mut answer) => {
            // The body is read (and dropped) so that the connection can be reused.
            let _ = answer.body().limit(64 * 1024).await;
            match answer.status().as_u16() {
                200..=299 => Attempt::Taken,
                410 => Attempt::Gone,
                _ => Attempt::Failed,
            }
        }
        Err(_) => Attempt::Failed,
    }
}

/// Posts one copy with up to `attempts` attempts.
async fn post(client: &awc::Client, event: &Outgoing, world: &World) {
    let stats = &world.stats;
    let mut wait = event.sending.retry_after;
    for tried in 1..=event.sending.attempts.max(1) {
        if stats.webhooks_gone.load(Ordering::SeqCst) {
            stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match attempt(client, event).await {
            Attempt::Taken => {
                stats.webhooks_sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Attempt::Gone => {
                stats.webhooks_gone.store(true, Ordering::SeqCst);
                stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Attempt::Failed if tried < event.sending.attempts => {
                stats.webhooks_retried.fetch_add(1, Ordering::Relaxed);
                actix_rt::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            Attempt::Failed => {}
        }
    }
    stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::audience::{Audience, Status};
    use crate::webhook::{EventKind, UnsubscribeAction, WebhookEvent};

    const NOW: i64 = 1_700_000_000;

    /// One member of a generated list after `mutation`, and its event.
    fn mutated(mutation: Mutation, seed: u64) -> (Member, Option<String>) {
        let mut audience = Audience::generate("l1", 200, 3, NOW - 100);
        let mut rng = fastrand::Rng::with_seed(seed);
        let member = audience.apply(mutation, &mut rng, NOW).unwrap().member;
        let form = event_form(mutation, &member, "l1", NOW, false);
        (member, form)
    }

    #[test]
    fn each_announced_mutation_is_the_event_the_receiver_reads() {
        let unsub = EventKind::Unsubscribe {
            action: UnsubscribeAction::Unsub,
        };
        let delete = EventKind::Unsubscribe {
            action: UnsubscribeAction::Delete,
        };
        for (mutation, kind) in [
            (Mutation::Change, EventKind::Profile),
            (Mutation::Subscribe, EventKind::Subscribe),
            (Mutation::Add, EventKind::Subscribe),
            (Mutation::Unarchive, EventKind::Subscribe),
            (Mutation::Unsubscribe, unsub),
            (Mutation::Archive, unsub),
            (Mutation::Delete, delete),
        ] {
            let (member, form) = mutated(mutation, 9);
            let form = form.unwrap();
            let event = WebhookEvent::parse(form.as_bytes()).unwrap();
            assert_eq!(event.kind, kind, "{mutation:?}: {form}");
            assert_eq!(event.list_id, "l1");
            assert_eq!(event.fired_at.map(|t| t.timestamp()), Some(NOW));
            // data[id] is the member's id in Mailchimp's API.
            assert_eq!(event.member_id, Some(member.hash()));
            assert_eq!(Some(serde_json::json!(member.hash())), member.field("id", "l1"));
            assert_eq!(event.email.as_deref(), Some(member.email.as_str()));
            assert_eq!(event.merges["EMAIL"], member.email);
            assert_eq!(event.merges["FNAME"], member.fname);
            assert_eq!(event.merges["LNAME"], member.lname);
            assert_eq!(
                event.reason.as_deref(),
                matches!(kind, EventKind::Unsubscribe { .. }).then_some("manual")
            );
        }
        for quiet in [Mutation::Touch, Mutation::QuietArchive] {
            assert_eq!(mutated(quiet, 9).1, None, "{quiet:?}");
            assert_eq!(announced(quiet), None);
        }
        // Every kind the sandbox draws at random is announced.
        assert!(Mutation::ALL.iter().all(|m| announced(*m).is_some()));
    }

    #[test]
    fn the_form_is_mailchimps_encoding_byte_for_byte() {
        let member = Member {
            unique_email_id: "0a1b2c3d4e".into(),
            email: "Zoë.Ñúñez+news@example.com".into(),
            status: Status::Unsubscribed,
            fname: "Zoë Ann".into(),
            lname: "O'Brien".into(),
            timestamp_opt: String::new(),
            last_changed: NOW,
            serial: 7,
            variant: 0,
        };
        let form = event_form(Mutation::Unsubscribe, &member, "a6b5da1054", 1_238_103_657, false).unwrap();
        assert_eq!(
            form,
            format!(
                "type=unsubscribe&fired_at=2009-03-26+21%3A40%3A57&data%5Baction%5D=unsub&data%5Breason%5D=manual\
                 &data%5Bid%5D={}&data%5Blist_id%5D=a6b5da1054\
                 &data%5Bemail%5D=Zo%C3%AB.%C3%91%C3%BA%C3%B1ez%2Bnews%40example.com&data%5Bemail_type%5D=html\
                 &data%5Bmerges%5D%5BEMAIL%5D=Zo%C3%AB.%C3%91%C3%BA%C3%B1ez%2Bnews%40example.com\
                 &data%5Bmerges%5D%5BFNAME%5D=Zo%C3%AB+Ann&data%5Bmerges%5D%5BLNAME%5D=O%27Brien\
                 &data%5Bip_opt%5D=198.51.100.7",
                crate::mailchimp::subscriber_hash("zoë.ñúñez+news@example.com")
            )
        );
        let bare = event_form(Mutation::Delete, &member, "a6b5da1054", 1_238_103_657, true).unwrap();
        assert!(!bare.contains("action"), "{bare}");
        assert_eq!(
            WebhookEvent::parse(bare.as_bytes()).unwrap().kind,
            EventKind::Unsubscribe {
                action: UnsubscribeAction::Unsub
            },
            "a delete without its action is read as an unsubscribe"
        );
        let subscribe = event_form(Mutation::Add, &member, "a6b5da1054", 1_238_103_657, true).unwrap();
        assert!(subscribe.starts_with("type=subscribe&fired_at=2009-03-26+21%3A40%3A57&data%5Bid%5D="));
        assert!(subscribe.ends_with("&data%5Bip_signup%5D="), "{subscribe}");
    }

    #[test]
    fn faults_come_at_their_fractions_and_repeat_with_the_seed() {
        let sending = WebhookSending {
            late: 0.1,
            late_by: Duration::from_secs(20),
            twice: 0.05,
            without_action: 0.3,
            ..WebhookSending::to("http://127.0.0.1:1/")
        };
        let draw = |seed: u64| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..20_000)
                .map(|i| plan(&mut rng, &sending, i % 2 == 0))
                .collect::<Vec<Delivery>>()
        };
        let plans = draw(42);
        assert_eq!(plans, draw(42), "the same seed, the same faults");
        assert_ne!(plans, draw(43));
        let fraction = |n: usize, of: usize| n as f64 / of as f64;
        let late: Vec<Duration> = plans.iter().filter_map(|p| p.late_by).collect();
        let twice = plans.iter().filter(|p| p.twice).count();
        let without = plans.iter().filter(|p| p.without_action).count();
        assert!((fraction(late.len(), 20_000) - 0.1).abs() < 0.01, "{}", late.len());
        assert!((fraction(twice, 20_000) - 0.05).abs() < 0.01, "{twice}");
        // Only unsubscribes (every other event) lose their action.
        assert!((fraction(without, 10_000) - 0.3).abs() < 0.02, "{without}");
        assert!(plans.iter().skip(1).step_by(2).all(|p| !p.without_action));
        let (s10, s20) = (Duration::from_secs(10), Duration::from_secs(20));
        assert!(late.iter().all(|d| (s10..=s20).contains(d)));
        assert!(late.iter().any(|d| *d < Duration::from_secs(12)) && late.iter().any(|d| *d > Duration::from_secs(18)));
        // No faults asked for, none drawn.
        let mut rng = fastrand::Rng::with_seed(42);
        let clean = WebhookSending::to("http://127.0.0.1:1/");
        assert!((0..1000).all(|_| plan(&mut rng, &clean, true) == Delivery::default()));
    }

    #[test]
    fn fired_at_is_mailchimps_utc_text() {
        assert_eq!(fired_at_text(1_238_103_657), "2009-03-26 21:40:57");
    }
}
