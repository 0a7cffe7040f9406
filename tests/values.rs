//! Values as Mailchimp's answers may hold them, end to end: pages that
//! only a repair makes readable (a name repeated in an object, a
//! byte-order mark, text that is not UTF-8), and emails and ids that must
//! not reach Ometria as they came. Each asserts what the wiremock double
//! of Ometria received.

mod support;

use std::collections::HashMap;

use chrono::Utc;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, Request, ResponseTemplate};

use ometria_importer::RunSummary;
use support::*;

/// `members` as one page of JSON text, as Mailchimp writes it (compact).
fn page_text(members: &[FakeMember]) -> String {
    json!({
        "members": members.iter().map(FakeMember::to_json).collect::<Vec<_>>(),
        "total_items": members.len(),
    })
    .to_string()
}

/// `text` with the first `from` replaced by `to`; `from` must be there.
fn mangle(text: &[u8], from: &str, to: &[u8]) -> Vec<u8> {
    let at = text
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} is not in the page"));
    let mut out = text.to_vec();
    out.splice(at..at + from.len(), to.iter().copied());
    out
}

/// What one `once` over list "L" did when Mailchimp answers its first
/// page with `body` (as bytes, unchecked) and every other request with no
/// members: the window holds `total` members, the archived pass none.
struct Run {
    summary: RunSummary,
    /// The records Ometria received, by id.
    pushed: HashMap<String, Value>,
    log: String,
}

async fn once_with_first_page(body: Vec<u8>, total: usize) -> Run {
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    Mock::given(method("GET"))
        .respond_with(move |r: &Request| {
            let q = r.url.query().unwrap_or("");
            let archived = q.contains("status=archived");
            if archived || !q.split('&').any(|p| p == "offset=0") {
                let total = if archived { 0 } else { total };
                ResponseTemplate::new(200).set_body_json(json!({"members": [], "total_items": total}))
            } else {
                ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json")
            }
        })
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    let (dir, _file) = state_dir(r#"[{"list_id": "L", "items_per_request": 1000}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let mut pushed = HashMap::new();
    for record in apis.pushed() {
        let id = record["id"].as_str().unwrap().to_owned();
        assert!(pushed.insert(id.clone(), record).is_none(), "{id} was pushed twice");
    }
    Run {
        summary,
        pushed,
        log: buffer.contents(),
    }
}

/// A member whose object repeats `unique_email_id` (breaker 3) is valid
/// JSON that serde's derived reader refuses on every retry ("duplicate
/// field"): the list would be stuck for good. The page is read as
/// JSON.parse reads it, with a WARNING naming the list, the offset and the
/// name, and every member is sent once.
#[actix_rt::test]
async fn a_member_with_a_repeated_key_does_not_block_its_list() {
    let members = subscribed(20);
    let target = format!("\"unique_email_id\":\"{}\"", members[3].id);
    let page = page_text(&members).replacen(&target, &format!("{target},{target}"), 1);
    assert!(page.contains(&format!("{target},{target}")));
    let run = once_with_first_page(page.into_bytes(), 20).await;
    assert_eq!(run.summary, ok_once(), "{}", run.log);
    assert_eq!(run.pushed.len(), 20, "{}", run.log);
    for m in &members {
        assert_eq!(run.pushed[&m.id], m.expected_contact("L"));
    }
    assert!(
        run.log.contains(
            "the page of list \"L\" at offset 0 repeats the name \"unique_email_id\" within one object; \
             each repeated name was read with its last value"
        ),
        "{}",
        run.log
    );
}

/// The relatives: a name repeated with another value holds its last one
/// (`FNAME`, `status`, a whole `merge_fields`), and so do the page's own
/// `members` and `total_items`.
#[actix_rt::test]
async fn every_repeated_name_is_read_with_its_last_value_as_json_parse_reads_it() {
    let members = subscribed(10);
    let page = page_text(&members);
    // members[3]: FNAME "Old", then its own.
    assert_eq!(members[3].fname, "Ana María");
    let fname = format!("\"FNAME\":\"{}\"", members[3].fname);
    let m3 = format!("\"unique_email_id\":\"{}\"", members[3].id);
    let at = page.find(&m3).unwrap();
    let fname_at = at + page[at..].find(&fname).unwrap();
    let page = format!("{}\"FNAME\":\"Old\",{}", &page[..fname_at], &page[fname_at..]);
    // members[2]: status "subscribed", then "unsubscribed".
    let m2 = format!("\"unique_email_id\":\"{}\",\"status\":\"subscribed\"", members[2].id);
    let page = page.replacen(&m2, &format!("{m2},\"status\":\"unsubscribed\""), 1);
    // members[4]: a second merge_fields, with a new FNAME and no LNAME.
    let m4 = format!("\"unique_email_id\":\"{}\",", members[4].id);
    let page = page.replacen(&m4, &format!("{m4}\"merge_fields\":{{\"FNAME\":\"Early\"}},"), 1);
    let page = page.replacen(
        &format!("\"last_changed\":\"{}\"", members[4].last_changed.to_rfc3339()),
        &format!(
            "\"last_changed\":\"{}\",\"merge_fields\":{{\"FNAME\":\"Late\"}}",
            members[4].last_changed.to_rfc3339()
        ),
        1,
    );
    // The page: `members` empty first, `total_items` 99 first.
    let page = format!("{{\"members\":[],\"total_items\":99,{}", &page[1..]);
    assert_eq!(page.matches("\"members\":").count(), 2, "{page}");
    let run = once_with_first_page(page.into_bytes(), 10).await;
    assert_eq!(run.summary, ok_once(), "{}", run.log);
    assert_eq!(run.pushed.len(), 10, "{}", run.log);
    assert_eq!(run.pushed[&members[3].id], members[3].expected_contact("L"));
    let mut unsubscribed = members[2].clone();
    unsubscribed.status = "unsubscribed";
    assert_eq!(run.pushed[&members[2].id], unsubscribed.expected_contact("L"));
    let mut late = members[4].clone();
    late.fname = "Late".into();
    late.lname = String::new();
    assert_eq!(run.pushed[&members[4].id], late.expected_contact("L"));
    assert!(run.log.contains("repeats the name \"members\""), "{}", run.log);
}

/// A UTF-8 byte-order mark before the page (a proxy re-encoding it) is
/// ignored, as RFC 8259 §8.1 allows, also before a page that needs repair.
#[actix_rt::test]
async fn a_page_that_starts_with_a_byte_order_mark_is_read() {
    let mut members = subscribed(10);
    members[8].lname = "LNAME8".into();
    let mut page = b"\xEF\xBB\xBF".to_vec();
    page.extend_from_slice(page_text(&members).as_bytes());
    let run = once_with_first_page(page.clone(), 10).await;
    assert_eq!(run.summary, ok_once(), "{}", run.log);
    assert_eq!(run.pushed.len(), 10, "{}", run.log);
    assert!(
        !run.log.contains("the page of list"),
        "no repair to report: {}",
        run.log
    );
    // With a name repeated and a name that is not UTF-8 after it.
    let target = format!("\"unique_email_id\":\"{}\"", members[6].id);
    let page = mangle(&page, &target, format!("{target},{target}").as_bytes());
    let page = mangle(&page, &format!("\"{}\"", members[8].lname), b"\"Andr\xe9\"");
    let run = once_with_first_page(page, 10).await;
    assert_eq!(run.summary, ok_once(), "{}", run.log);
    assert_eq!(run.pushed.len(), 10, "{}", run.log);
    assert_eq!(run.pushed[&members[8].id]["lastname"], "Andr\u{fffd}");
    assert!(run.log.contains("was not valid JSON text"), "{}", run.log);
    assert!(run.log.contains("repeats the name \"unique_email_id\""), "{}", run.log);
}

/// Addresses that are not addresses (breaker 3 and the tester's list): an
/// empty domain label, a label starting or ending with a hyphen, an
/// invisible ZERO WIDTH SPACE, `_` in the domain, dots doubled, first or
/// last in the local part. None is sent; each is skipped and counted, and
/// the valid relatives beside them are sent as they are.
#[actix_rt::test]
async fn emails_with_an_empty_domain_label_or_an_invisible_character_are_not_sent() {
    let bad = [
        "member0@example..com",
        "member1@-example.com",
        "member2@example.com\u{200b}",
        "a@b_c.com",
        "a@b.c-",
        "a..b@c.com",
        ".a@b.com",
        "a.@b.com",
    ];
    let good = [
        "o'brien+tag@sub.example.co.uk",
        "First.Last@Example.COM",
        "a-b9@x-y.example",
        "zoë.李@例え.jp",
    ];
    let mut members = generate_members(bad.len() + good.len(), Utc::now());
    for m in members.iter_mut() {
        m.status = "subscribed";
    }
    for (member, email) in members.iter_mut().zip(bad.iter().chain(&good)) {
        member.email = (*email).into();
    }
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let log = buffer.contents();
    assert_eq!(summary, ok_once(), "{log}");
    let sent: HashMap<String, String> = apis
        .pushed()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["email"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let malformed: Vec<&String> = sent.values().filter(|e| bad.contains(&e.as_str())).collect();
    assert!(
        malformed.is_empty(),
        "malformed emails sent to Ometria: {malformed:?}\n{log}"
    );
    for m in &members[bad.len()..] {
        assert_eq!(sent.get(&m.id), Some(&m.email), "{log}");
    }
    assert_eq!(sent.len(), good.len(), "{log}");
    assert!(log.contains("skipped=8"), "{log}");
    assert_eq!(
        log.matches("skipped: its email address is not one Ometria takes.")
            .count(),
        8,
        "{log}"
    );
}

/// A lone surrogate escape or a byte that is not UTF-8 is read as U+FFFD:
/// right for a name, but an email or a `unique_email_id` so read is a
/// guess — the email is not the member's, the id another contact's.
/// Their members are skipped and counted with a reason that says so,
/// never sent; a name so read is still sent.
#[actix_rt::test]
async fn an_email_address_read_repaired_is_not_sent_as_a_guess() {
    let mut members = subscribed(10);
    members[9].lname = "LNAME9".into();
    let page = page_text(&members).into_bytes();
    let page = mangle(&page, "\"member3@example.com\"", b"\"member3\\ud83d@example.com\"");
    let page = mangle(&page, "\"member5@example.com\"", b"\"member5\xe9@example.com\"");
    let page = mangle(&page, &format!("\"{}\"", members[7].id), b"\"u\\ud83dx\"");
    let page = mangle(&page, &format!("\"{}\"", members[8].id), b"\"u\xff000008\"");
    let page = mangle(&page, &format!("\"{}\"", members[9].lname), b"\"Zo\\ud83d\"");
    let run = once_with_first_page(page, 10).await;
    assert_eq!(run.summary, ok_once(), "{}", run.log);
    let guessed: Vec<&str> = run
        .pushed
        .values()
        .filter_map(|r| Some(r["email"].as_str()?).filter(|e| e.contains('\u{fffd}')))
        .chain(
            run.pushed
                .keys()
                .map(String::as_str)
                .filter(|id| id.contains('\u{fffd}')),
        )
        .collect();
    assert!(
        guessed.is_empty(),
        "emails or ids repaired with U+FFFD sent to Ometria: {guessed:?}\n{}",
        run.log
    );
    let mut expected: Vec<&str> = [0, 1, 2, 4, 6, 9].iter().map(|&i| members[i].id.as_str()).collect();
    let mut sent: Vec<&str> = run.pushed.keys().map(String::as_str).collect();
    expected.sort();
    sent.sort();
    assert_eq!(sent, expected, "{}", run.log);
    assert_eq!(run.pushed[&members[9].id]["lastname"], "Zo\u{fffd}");
    assert!(run.log.contains("skipped=4"), "{}", run.log);
    assert_eq!(
        run.log.matches("skipped: its email address could not be read").count(),
        2,
        "{}",
        run.log
    );
    assert_eq!(
        run.log
            .matches("skipped: its unique_email_id could not be read")
            .count(),
        2,
        "{}",
        run.log
    );
}
