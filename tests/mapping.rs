//! An entry's typed field mapping (issue 17) end to end: `fields`,
//! `collection`, `force_optin` and the named mappings of `mappings.json`,
//! as the records Ometria received, the `fields` projection Mailchimp was
//! asked for, the values left out and counted, the ledger's view of a
//! changed mapping, and an entry whose mapping is wrong.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use ometria_importer::ledger::{LedgerStore, RunEnd};
use ometria_importer::mailchimp::MEMBER_FIELDS;
use ometria_importer::mapping::MAPPINGS_FILE_NAME;
use ometria_importer::{RunMode, RunSummary};
use support::*;

/// The issue's example mapping.
fn issue_fields() -> Value {
    json!({"phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country",
           "properties.birthday": "merge_fields.BIRTHDAY", "properties.tags": "tags",
           "properties.loyalty": "merge_fields.LOYALTY"})
}

/// A number as Mailchimp wrote it (`1200.50`, not `1200.5`).
fn number(text: &str) -> Value {
    let n: Value = serde_json::from_str(text).unwrap();
    assert!(n.is_number(), "{text}");
    assert_eq!(n.to_string(), text, "the number is kept as written");
    n
}

/// Mailchimp answering only what each request's `fields` names.
fn projecting(lists: &[(&str, Vec<FakeMember>)]) -> FakeMailchimp {
    let fake = FakeMailchimp {
        applies_fields: true,
        ..FakeMailchimp::default()
    };
    lists
        .iter()
        .fold(fake, |fake, (id, members)| fake.with_list(id, members.clone()))
}

/// A state folder whose `state.json` holds `entries`, as a person writes it.
fn state_of(entries: Value) -> (tempfile::TempDir, std::path::PathBuf) {
    state_dir(&serde_json::to_string_pretty(&entries).unwrap())
}

/// Writes `state` over the state file.
fn write_state(file: &Path, state: &Value) {
    std::fs::write(file, serde_json::to_string_pretty(state).unwrap()).unwrap();
}

/// The record of `member` of `list` under a mapping: SPEC §5's contact
/// with `mapped`'s fields over it (its `properties` added to the
/// importer's own).
fn record(member: &FakeMember, list: &str, mapped: Value) -> Value {
    let mut contact = member.expected_contact(list);
    for (key, value) in mapped.as_object().unwrap() {
        match (key.as_str(), value) {
            ("properties", Value::Object(properties)) => contact["properties"]
                .as_object_mut()
                .unwrap()
                .extend(properties.clone()),
            (_, Value::Null) => {
                contact.as_object_mut().unwrap().shift_remove(key);
            }
            _ => contact[key] = value.clone(),
        }
    }
    contact
}

/// Records by id; each id at most once.
fn by_id(records: &[Value]) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    for r in records {
        let id = r["id"].as_str().unwrap().to_owned();
        assert!(map.insert(id.clone(), r.clone()).is_none(), "{id} was pushed twice");
    }
    map
}

/// The ids of `records`, sorted.
fn ids(records: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = records.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    ids.sort_unstable();
    ids
}

/// The figure `name=N` of the last completion line of list `list`.
fn completion_figure(log: &str, list: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("sync: completed in") && l.contains(&format!("for list \"{list}\".")))
        .unwrap_or_else(|| panic!("no completion line for {list}\n{log}"));
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .parse()
        .unwrap()
}

/// The `fields` parameter of every members request, by list.
async fn fields_asked(apis: &Apis) -> HashMap<String, Vec<String>> {
    let mut asked: HashMap<String, Vec<String>> = HashMap::new();
    for request in apis.mailchimp.received_requests().await.unwrap_or_default() {
        let list = request.url.path_segments().unwrap().nth(2).unwrap().to_owned();
        let fields = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "fields")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        asked.entry(list).or_default().push(fields);
    }
    asked
}

/// The end of each run of `list`, newest first, with its kind.
fn history(dir: &Path, list: &str) -> Vec<(String, RunEnd)> {
    LedgerStore::open_read_only(dir)
        .unwrap()
        .history(Some(list), 100)
        .unwrap()
        .into_iter()
        .map(|row| (row.start.kind, row.end.expect("the run ended")))
        .collect()
}

/// 1. The issue's example, with every form each value takes: exact
///    records, `@collection` and `@force_optin` on each, the sync a
///    success and its cursor written beside the mapping, untouched.
#[actix_rt::test]
async fn the_issue_example_sends_each_value_as_its_field_takes_it() {
    let m = subscribed(5);
    let members = vec![
        m[0].clone()
            .with_merge_field("PHONE", json!("+44 7911 123456"))
            .with_merge_field(
                "ADDRESS",
                json!({"addr1": "1 High St", "addr2": "", "city": "Leeds", "state": "", "zip": "LS1 1AA", "country": "GB"}),
            )
            .with_merge_field("BIRTHDAY", json!("04/22"))
            .with_merge_field("LOYALTY", number("1200.50"))
            .with("tags", json!([{"id": 1, "name": "VIP"}, {"id": 2, "name": "2024"}])),
        // A US phone field: no country code, so no E.164 number.
        m[1].clone()
            .with_merge_field("PHONE", json!("(555) 123-4567"))
            .with_merge_field("ADDRESS", json!(""))
            .with_merge_field("BIRTHDAY", json!(""))
            .with_merge_field("LOYALTY", json!(""))
            .with("tags", json!([])),
        m[2].clone()
            .with_merge_field("PHONE", json!("0044 20 7946 0018"))
            .with_merge_field(
                "ADDRESS",
                json!({"addr1": "", "addr2": "", "city": "Austin", "state": "TX", "zip": "", "country": "US"}),
            )
            .with_merge_field("BIRTHDAY", json!("12/31"))
            .with_merge_field("LOYALTY", json!(0))
            .with("tags", json!([{"id": 3, "name": "Gold"}])),
        // An address with every part empty; no BIRTHDAY merge field at all.
        m[3].clone()
            .with_merge_field("PHONE", json!("+44 (0)20 7946 0958"))
            .with_merge_field(
                "ADDRESS",
                json!({"addr1": "", "addr2": "", "city": "", "state": "", "zip": "", "country": ""}),
            )
            .with_merge_field("LOYALTY", number("42")),
        // Nothing but the defaults (PHONE "", ADDRESS "", tags []).
        m[4].clone(),
    ];
    let apis = Apis::start(projecting(&[("L", members.clone())]), FakeOmetria::default()).await;
    let entry = json!({"list_id": "L", "fields": issue_fields(), "collection": "mailchimp_uk", "force_optin": true});
    let (dir, file) = state_of(json!([entry]));
    let (log, buffer) = capture_log();

    assert_eq!(
        run_once(&apis.config(dir.path()), log).await,
        ok_once(),
        "{}",
        buffer.contents()
    );

    let on_every = json!({"@collection": "mailchimp_uk", "@force_optin": true});
    let with = |member: &FakeMember, mapped: Value| {
        let mut mapped = mapped;
        mapped
            .as_object_mut()
            .unwrap()
            .extend(on_every.as_object().unwrap().clone());
        record(member, "L", mapped)
    };
    let expected: HashMap<String, Value> = [
        with(
            &members[0],
            json!({"phone_number": "+447911123456", "country_id": "GB",
                   "properties": {"birthday": "04/22", "loyalty": number("1200.50"), "tags": ["VIP", "2024"]}}),
        ),
        with(&members[1], json!({"properties": {"tags": []}})),
        with(
            &members[2],
            json!({"phone_number": "+442079460018", "country_id": "US",
                   "properties": {"birthday": "12/31", "loyalty": 0, "tags": ["Gold"]}}),
        ),
        with(
            &members[3],
            json!({"phone_number": "+442079460958", "properties": {"loyalty": 42, "tags": []}}),
        ),
        with(&members[4], json!({"properties": {"tags": []}})),
    ]
    .into_iter()
    .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
    .collect();
    assert_eq!(by_id(&apis.pushed()), expected);
    // The loyalty figure went out as Mailchimp wrote it, byte for byte.
    let bodies: Vec<String> = apis
        .ometria
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert!(bodies.iter().any(|b| b.contains(r#""loyalty":1200.50"#)), "{bodies:?}");

    // Only the US phone number was left out, and counted.
    let text = buffer.contents();
    assert_eq!(completion_figure(&text, "L", "dropped"), 1, "{text}");
    assert_eq!(completion_figure(&text, "L", "records"), 5);
    assert!(
        text.contains(
            "sync: 1 values of list \"L\" were left out of its records, Ometria would not take them: \
             phone_number 1 (the first: \"(555) 123-4567\" of member \"u000001\")."
        ),
        "{text}"
    );

    // The cursor moved to the sync's T0; the mapping stays as written.
    let t0 = apis.mailchimp_queries().await[0]["before_last_changed"]
        .trim_end_matches("+00:00")
        .to_owned();
    let state = read_json(&file);
    let mut want = entry.clone();
    let object = want.as_object_mut().unwrap();
    object.insert("latest_timestamp".into(), json!(t0));
    object.insert("elapsed_seconds".into(), state[0]["elapsed_seconds"].clone());
    object.insert("total_updates".into(), json!(5));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        serde_json::to_string_pretty(&json!([want])).unwrap() + "\n"
    );
}

/// 2. Mailchimp is asked for the default fields and each mapped path, no
///    more: not every merge field, not the fields no mapping reads. An
///    entry without a mapping asks exactly what it always did.
#[actix_rt::test]
async fn mailchimp_is_asked_for_the_mapped_paths_and_no_more() {
    let apis = Apis::start(
        projecting(&[("M", subscribed(30)), ("D", subscribed(30))]),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _file) = state_of(json!([
        {"list_id": "M", "items_per_request": 10, "fields": issue_fields()},
        {"list_id": "D", "items_per_request": 10}
    ]));
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(
        summary,
        RunSummary {
            succeeded: 2,
            ..RunSummary::default()
        },
        "{}",
        buffer.contents()
    );
    assert_eq!(apis.pushed().len(), 60);

    let asked = fields_asked(&apis).await;
    // Pages of members and of the archived pass, each.
    assert!(asked["M"].len() >= 4 && asked["D"].len() >= 4, "{asked:?}");
    assert!(asked["D"].iter().all(|f| f == MEMBER_FIELDS), "{asked:?}");

    let mapped = [
        "members.merge_fields.PHONE",
        "members.merge_fields.ADDRESS.country",
        "members.merge_fields.BIRTHDAY",
        "members.tags",
        "members.merge_fields.LOYALTY",
    ];
    let want: HashSet<&str> = MEMBER_FIELDS.split(',').chain(mapped).collect();
    for fields in &asked["M"] {
        let paths: Vec<&str> = fields.split(',').collect();
        let set: HashSet<&str> = paths.iter().copied().collect();
        assert_eq!(set.len(), paths.len(), "a path asked twice: {fields}");
        assert_eq!(set, want, "{fields}");
        for unread in ["members.merge_fields", "members.stats", "members.list_id", "members.id"] {
            assert!(!set.contains(unread), "{unread} asked: {fields}");
        }
    }
}

/// 3. Values their field cannot take are left out and counted by field —
///    in the sync's log lines and in `values_dropped_total` — while their
///    records are pushed and the sync succeeds.
#[actix_rt::test]
async fn values_a_field_cannot_take_are_dropped_and_counted_never_failing_the_record() {
    let m = subscribed(3);
    let members = vec![
        m[0].clone()
            .with_merge_field("BIRTHDAY", json!("04/22"))
            .with_merge_field("COUNTRY", json!("Atlantis"))
            .with_merge_field("GENDER", json!("x"))
            .with("marketing_permissions", json!("yes")),
        m[1].clone()
            .with_merge_field("BIRTHDAY", json!("1984-04-22"))
            .with_merge_field("COUNTRY", json!("United Kingdom"))
            .with_merge_field("GENDER", json!("Female"))
            .with(
                "marketing_permissions",
                json!([{"marketing_permission_id": "a1", "text": "Email", "enabled": true}]),
            ),
        m[2].clone()
            .with_merge_field("BIRTHDAY", json!("11/05"))
            .with_merge_field("GENDER", json!("")),
    ];
    let apis = Apis::start(projecting(&[("L", members.clone())]), FakeOmetria::default()).await;
    let (dir, file) = state_of(json!([{"list_id": "L", "fields": {
        "date_of_birth": "merge_fields.BIRTHDAY", "country_id": "merge_fields.COUNTRY",
        "gender": "merge_fields.GENDER", "properties.consent": "marketing_permissions"}}]));
    let mut config = apis.config(dir.path());
    config.metrics_addr = Some(loopback());
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(20), "the sync's cursor", || {
        every_entry_synced(&read_json(&file))
    })
    .await;

    let expected: HashMap<String, Value> = [
        record(&members[0], "L", json!({})),
        record(
            &members[1],
            "L",
            json!({"date_of_birth": "1984-04-22", "country_id": "GB", "gender": "f",
                   "properties": {"consent": {"Email": true}}}),
        ),
        record(&members[2], "L", json!({})),
    ]
    .into_iter()
    .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
    .collect();
    assert_eq!(by_id(&apis.pushed()), expected);

    let metrics = metrics_page(&buffer.contents()).await;
    for (field, n) in [
        ("date_of_birth", 2),
        ("country_id", 1),
        ("gender", 1),
        ("properties.consent", 1),
    ] {
        let sample = format!("ometria_importer_values_dropped_total{{field=\"{field}\"}} {n}");
        assert!(metrics.lines().any(|l| l == sample), "no {sample:?} in\n{metrics}");
    }
    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary, ok_once());

    let text = buffer.contents();
    assert_eq!(completion_figure(&text, "L", "dropped"), 5, "{text}");
    assert_eq!(completion_figure(&text, "L", "records"), 3);
    assert_eq!(completion_figure(&text, "L", "skipped"), 0);
    assert!(
        text.contains(
            "sync: 5 values of list \"L\" were left out of its records, Ometria would not take them: \
             country_id 1 (the first: \"Atlantis\" of member \"u000000\"), \
             date_of_birth 2 (the first: \"04/22\" of member \"u000000\"), \
             gender 1 (the first: \"x\" of member \"u000000\"), \
             properties.consent 1 (the first: \"yes\" of member \"u000000\")."
        ),
        "{text}"
    );
    let runs = history(dir.path(), "L");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].1.result.as_str(), runs[0].1.pushed, runs[0].1.skipped),
        ("succeeded", 3, 0)
    );
}

/// `/metrics` of the run whose log is `log`, once it says where it serves.
async fn metrics_page(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics and /healthz on http://"))
        .unwrap_or_else(|| panic!("no metrics address in\n{log}"));
    let address = line.rsplit("http://").next().unwrap().trim_end_matches('.');
    let mut answer = awc::Client::default()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    String::from_utf8(answer.body().await.unwrap().to_vec()).unwrap()
}

/// 4. One named mapping for three lists: as it is, with a field and the
///    collection taken over, and with fields taken out by `null`.
#[actix_rt::test]
async fn one_named_mapping_serves_three_lists_each_with_its_own_keys_over_it() {
    let phones = |prefix: &str| -> Vec<FakeMember> {
        subscribed(3)
            .into_iter()
            .enumerate()
            .map(|(i, m)| FakeMember {
                id: format!("{prefix}{i}"),
                email: format!("{prefix}{i}@example.com"),
                ..m
            })
            .map(|m| {
                m.with_merge_field("PHONE", json!("+44 7700 900123"))
                    .with_merge_field("MOBILE", json!("+33 6 12 34 56 78"))
                    .with("tags", json!([{"id": 7, "name": "shop"}]))
            })
            .collect()
    };
    let (a, b, c) = (phones("a"), phones("b"), phones("c"));
    let apis = Apis::start(
        projecting(&[("A", a.clone()), ("B", b.clone()), ("C", c.clone())]),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _file) = state_of(json!([
        {"list_id": "A", "mapping": "shop"},
        {"list_id": "B", "mapping": "shop", "fields": {"phone_number": "merge_fields.MOBILE"},
         "collection": "mailchimp_fr"},
        {"list_id": "C", "mapping": "shop", "fields": {"properties.tags": null, "lastname": null},
         "force_optin": false}
    ]));
    std::fs::write(
        dir.path().join(MAPPINGS_FILE_NAME),
        serde_json::to_string_pretty(&json!({"shop": {
            "fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"},
            "collection": "mailchimp", "force_optin": true}}))
        .unwrap(),
    )
    .unwrap();
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(
        summary,
        RunSummary {
            succeeded: 3,
            ..RunSummary::default()
        },
        "{}",
        buffer.contents()
    );

    let mut expected = HashMap::new();
    for m in &a {
        let r = record(
            m,
            "A",
            json!({"phone_number": "+447700900123", "@collection": "mailchimp", "@force_optin": true,
                   "properties": {"tags": ["shop"]}}),
        );
        expected.insert(m.id.clone(), r);
    }
    for m in &b {
        let r = record(
            m,
            "B",
            json!({"phone_number": "+33612345678", "@collection": "mailchimp_fr", "@force_optin": true,
                   "properties": {"tags": ["shop"]}}),
        );
        expected.insert(m.id.clone(), r);
    }
    for m in &c {
        let r = record(
            m,
            "C",
            json!({"phone_number": "+447700900123", "@collection": "mailchimp", "lastname": null}),
        );
        expected.insert(m.id.clone(), r);
    }
    // The members' last names are there to be left out.
    assert!(c.iter().any(|m| !m.lname.is_empty()));
    assert_eq!(by_id(&apis.pushed()), expected);

    // Each list asked for what its own mapping reads.
    let asked = fields_asked(&apis).await;
    let has = |list: &str, path: &str| asked[list].iter().all(|f| f.split(',').any(|p| p == path));
    let lacks = |list: &str, path: &str| asked[list].iter().all(|f| !f.split(',').any(|p| p == path));
    assert!(has("A", "members.merge_fields.PHONE") && has("A", "members.tags"));
    assert!(has("B", "members.merge_fields.MOBILE") && lacks("B", "members.merge_fields.PHONE"));
    assert!(lacks("C", "members.tags") && lacks("C", "members.merge_fields.LNAME"));
}

/// The list of the ledger tests: six members, the even ones with a phone
/// number and an address.
fn half_with_phones() -> Vec<FakeMember> {
    subscribed(6)
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if i % 2 == 0 {
                m.with_merge_field("PHONE", json!(format!("+44 7911 12345{i}")))
                    .with_merge_field(
                        "ADDRESS",
                        json!({"addr1": "1 Main St", "city": "Leeds", "country": "GB"}),
                    )
            } else {
                m
            }
        })
        .collect()
}

/// Sets the entry's `fields` to `fields` and its cursor far back: the
/// next run is a SYNC of every member.
fn remap_and_sync_all(file: &Path, fields: Value) {
    let mut state = read_json(file);
    state[0]["fields"] = fields;
    state[0]["latest_timestamp"] = json!("2001-01-01T00:00:00");
    write_state(file, &state);
}

/// 5. With the ledger, a new mapping re-pushes only the members whose
///    record it changes; the same mapping written in another order pushes
///    nobody.
#[actix_rt::test]
async fn a_changed_mapping_pushes_only_the_members_whose_records_it_changes() {
    let members = half_with_phones();
    let apis = Apis::start(projecting(&[("L", members.clone())]), FakeOmetria::default()).await;
    let (dir, file) = state_of(json!([{"list_id": "L"}]));
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    assert_eq!(apis.pushed().len(), 6);

    remap_and_sync_all(
        &file,
        json!({"phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country"}),
    );
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    let text = buffer.contents();
    assert!(
        text.contains("controller: list \"L\" requires \"SYNC\", firing..."),
        "{text}"
    );
    let again = apis.pushed()[6..].to_vec();
    assert_eq!(ids(&again), ["u000000", "u000002", "u000004"]);
    let expected: HashMap<String, Value> = members
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(k, m)| {
            let phone = format!("+44791112345{}", 2 * k);
            (
                m.id.clone(),
                record(m, "L", json!({"phone_number": phone, "country_id": "GB"})),
            )
        })
        .collect();
    assert_eq!(by_id(&again), expected);
    assert_eq!(completion_figure(&text, "L", "read"), 6);
    assert_eq!(completion_figure(&text, "L", "records"), 3);
    assert_eq!(completion_figure(&text, "L", "unchanged"), 3);

    // The same mapping, its keys in the other order: the same records.
    remap_and_sync_all(
        &file,
        json!({"country_id": "merge_fields.ADDRESS.country", "phone_number": "merge_fields.PHONE"}),
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.find("\"country_id\"") < written.find("\"phone_number\""),
        "{written}"
    );
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    assert_eq!(apis.pushed().len(), 9, "the reordered mapping pushed records");
    let text = buffer.contents();
    assert_eq!(completion_figure(&text, "L", "records"), 0);
    assert_eq!(completion_figure(&text, "L", "unchanged"), 6);

    let runs: Vec<(String, u64, u64, u64)> = history(dir.path(), "L")
        .into_iter()
        .map(|(kind, end)| (kind, end.members_read, end.pushed, end.unchanged))
        .collect();
    assert_eq!(
        runs,
        [
            ("SYNC".to_owned(), 6, 0, 6),
            ("SYNC".to_owned(), 6, 3, 3),
            ("LOAD".to_owned(), 6, 6, 0)
        ]
    );
}

/// 6. Members deleted in Mailchimp are opted out in the entry's
///    `@collection` and with its `@force_optin`, so that the opt-out lands
///    where its syncs wrote.
#[actix_rt::test]
async fn a_reconciliation_opts_out_deleted_members_in_the_entrys_collection() {
    // Three of a hundred: within IMPORTER_MAX_DELETE_FRACTION.
    let all = subscribed(100);
    let (kept, gone) = all.split_at(97);
    let apis = Apis::start(projecting(&[("L", kept.to_vec())]), FakeOmetria::default()).await;
    let (dir, file) = state_of(json!([{"list_id": "L", "latest_timestamp": cursor_now(),
        "fields": {"phone_number": "merge_fields.PHONE"}, "collection": "mailchimp_uk", "force_optin": true}]));
    // The ledger holds every member, as a LOAD a minute ago left it (an
    // entry with a collection has the list's members in that collection)…
    seed_ledger(dir.path(), "L\u{1f}mailchimp_uk", &all);
    let now = Utc::now().timestamp();
    let (mut ledger, _) = LedgerStore::open(dir.path(), now).unwrap();
    // …and read every member with this mapping.
    let mut mapping = ometria_importer::mapping::Mapping::default();
    let entry = read_json(&file)[0].clone();
    mapping.overlay(entry.as_object().unwrap()).unwrap();
    ledger.record_mapping("L", 0, mapping.fingerprint(), now - 60).unwrap();
    drop(ledger);
    let before = std::fs::read(&file).unwrap();
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!(
        (
            summary.succeeded,
            summary.reconciled,
            summary.reconcile_failed,
            summary.deleted
        ),
        (0, 1, 0, 3),
        "{}",
        buffer.contents()
    );
    let expected: HashMap<String, Value> = gone
        .iter()
        .map(|m| {
            let r = json!({"@type": "contact", "@collection": "mailchimp_uk", "@force_optin": true,
                "id": m.id, "email": m.email, "marketing_optin": "EXPLICITLY_OPTEDOUT",
                "properties": {"mailchimp_status": "deleted", "mailchimp_list_id": "L"}});
            (m.id.clone(), r)
        })
        .collect();
    assert_eq!(by_id(&apis.pushed()), expected);
    assert_eq!(
        LedgerStore::open_read_only(dir.path())
            .unwrap()
            .count_members("L\u{1f}mailchimp_uk")
            .unwrap(),
        97
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "a reconciliation moves no cursor"
    );
}

/// Runs `once` to its end (at most `limit`), polling.
async fn once_exits(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.arg("once").spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "once did not end within {limit:?}: {:?}",
                child.wait_with_output().unwrap()
            );
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap()
}

/// 7. A mapping that is wrong (a field Ometria does not have, a named
///    mapping that does not exist) skips its entry alone, with a warning
///    naming it; the other lists sync. A skipped entry is no failed sync:
///    `once` exits 0, as it does for any invalid entry today.
#[actix_rt::test]
async fn an_invalid_mapping_skips_only_its_entry() {
    let apis = Apis::start(
        projecting(&[
            ("BAD", subscribed(4)),
            ("NONE", subscribed(4)),
            ("GOOD", half_with_phones()),
        ]),
        FakeOmetria::default(),
    )
    .await;
    let bad = json!({"list_id": "BAD", "fields": {"phone": "merge_fields.PHONE"}});
    let none = json!({"list_id": "NONE", "mapping": "shop"});
    let (dir, file) =
        state_of(json!([bad, none, {"list_id": "GOOD", "fields": {"phone_number": "merge_fields.PHONE"}}]));

    let out = once_exits(importer_command(dir.path(), Some(&apis)), Duration::from_secs(30)).await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    // GOOD synced, but a cron job must hear of the two skipped.
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("ERROR |ometria_importer| controller: 2 entries of the state file were skipped as invalid (the WARNING lines above say what to fix): `once` exits 1 until they are fixed."),
        "{log}"
    );
    assert!(
        log.contains(
            "state: entry at index 0 (list_id \"BAD\"), field \"fields\": \"phone\" is not an Ometria contact field; \
             map to one of prefix, firstname, middlename, lastname, phone_number, date_of_birth, gender, country_id, \
             timezone, customer_id, store_ids, timestamp_acquired, timestamp_unsubscribed or to properties.<name>; \
             entry skipped until it is fixed"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "state: entry at index 1 (list_id \"NONE\"), field \"mapping\": there is no mapping \"shop\": \
             mappings.json beside state.json defines none; entry skipped until it is fixed"
        ),
        "{log}"
    );

    // Only GOOD was read and pushed, with its mapping.
    let asked = fields_asked(&apis).await;
    assert_eq!(asked.keys().collect::<Vec<_>>(), ["GOOD"]);
    let pushed = apis.pushed();
    assert_eq!(pushed.len(), 6);
    assert!(pushed.iter().all(|r| r["properties"]["mailchimp_list_id"] == "GOOD"));
    assert_eq!(pushed.iter().filter(|r| r.get("phone_number").is_some()).count(), 3);

    // The skipped entries stay as written; GOOD has its cursor.
    let state = read_json(&file);
    assert_eq!((&state[0], &state[1]), (&bad, &none));
    assert!(state[2]["latest_timestamp"].is_string(), "{state}");
    assert_eq!(state[2]["total_updates"], 6);
}

/// A property inside one the importer writes (`mailchimp_status`) would
/// be written twice in a record, the mapped value over the importer's: it
/// cannot be mapped, and its entry is skipped as any invalid mapping is.
#[actix_rt::test]
async fn a_property_inside_one_the_importer_writes_cannot_be_mapped() {
    let apis = Apis::start(projecting(&[("L", subscribed(3))]), FakeOmetria::default()).await;
    let (dir, file) = state_of(json!([{"list_id": "L", "fields": {"properties.mailchimp_status.code": "status"}}]));
    let before = std::fs::read(&file).unwrap();
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!(
        summary,
        RunSummary {
            invalid: 1,
            ..RunSummary::default()
        },
        "{text}"
    );
    assert_eq!(apis.pushed(), Vec::<Value>::new(), "{text}");
    assert!(apis.mailchimp_queries().await.is_empty());
    assert!(
        text.contains(
            "state: entry at index 0 (list_id \"L\"), field \"fields\": \"properties.mailchimp_status.code\" \
             is written by the importer itself (docs/sync.md#mapping) and cannot be mapped; send the value under \
             another field or a properties.<name> of your own; entry skipped until it is fixed"
        ),
        "{text}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// A whole merge field and a part of it, both mapped: Mailchimp is asked
/// for the whole only (asked for both, the fake answers the part alone;
/// Mailchimp does not document which), and each target gets its value.
#[actix_rt::test]
async fn a_whole_value_and_a_part_of_it_can_both_be_mapped() {
    let members = vec![subscribed(1)[0].clone().with_merge_field(
        "ADDRESS",
        json!({"addr1": "1 High St", "addr2": "", "city": "Leeds", "state": "", "zip": "LS1 1AA", "country": "GB"}),
    )];
    let apis = Apis::start(projecting(&[("L", members.clone())]), FakeOmetria::default()).await;
    let (dir, _file) = state_of(json!([{"list_id": "L", "fields": {
        "country_id": "merge_fields.ADDRESS.country", "properties.address": "merge_fields.ADDRESS"}}]));
    let (log, buffer) = capture_log();
    assert_eq!(
        run_once(&apis.config(dir.path()), log).await,
        ok_once(),
        "{}",
        buffer.contents()
    );

    let want = record(
        &members[0],
        "L",
        json!({"country_id": "GB",
               "properties": {"address": {"addr1": "1 High St", "city": "Leeds", "zip": "LS1 1AA", "country": "GB"}}}),
    );
    assert_eq!(apis.pushed(), [want]);
    for fields in &fields_asked(&apis).await["L"] {
        let paths: Vec<&str> = fields.split(',').collect();
        assert!(paths.contains(&"members.merge_fields.ADDRESS"), "{fields}");
        assert!(!paths.contains(&"members.merge_fields.ADDRESS.country"), "{fields}");
    }
}

/// The breaker's: two entries of one list sending to two collections are
/// two sets of Ometria contacts. Each has its own members in the ledger —
/// a re-LOAD of both pushes nothing, where they used to push each other's
/// members again — and each is reconciled, a deleted member opted out in
/// both collections.
#[actix_rt::test]
async fn two_entries_of_one_list_in_two_collections_keep_their_own_ledger() {
    let all = subscribed(40);
    let (kept, gone) = all.split_at(39);
    let fake = projecting(&[("T", kept.to_vec())]);
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_of(json!([
        {"list_id": "T", "latest_timestamp": cursor_now(), "collection": "a"},
        {"list_id": "T", "latest_timestamp": cursor_now(), "collection": "b", "force_optin": true}
    ]));
    // The ledger holds every member of both, as their LOADs left it.
    let now = Utc::now().timestamp();
    for (rank, collection) in [(0, "a"), (1, "b")] {
        seed_ledger(dir.path(), &format!("T\u{1f}{collection}"), &all);
        let (mut ledger, _) = LedgerStore::open(dir.path(), now).unwrap();
        let mut mapping = ometria_importer::mapping::Mapping::default();
        mapping.overlay(read_json(&file)[rank].as_object().unwrap()).unwrap();
        ledger
            .record_mapping("T", rank as u32, mapping.fingerprint(), now - 60)
            .unwrap();
    }
    let (log, buffer) = capture_log();
    let config = apis.config(dir.path());

    let summary = run_once(&config, log.clone()).await;
    assert_eq!(
        (summary.reconciled, summary.deleted, summary.reconcile_failed),
        (2, 2, 0),
        "{}",
        buffer.contents()
    );
    let mut opt_outs: Vec<(String, String, bool)> = apis
        .pushed()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["@collection"].as_str().unwrap().to_owned(),
                r.get("@force_optin").is_some(),
            )
        })
        .collect();
    opt_outs.sort();
    let id = gone[0].id.clone();
    assert_eq!(opt_outs, [(id.clone(), "a".into(), false), (id, "b".into(), true)]);

    // A LOAD of both pushes each collection's records once…
    let two = RunSummary {
        succeeded: 2,
        ..RunSummary::default()
    };
    let pushed = apis.pushed().len();
    force_load(&file);
    assert_eq!(run_once(&config, log.clone()).await, two, "{}", buffer.contents());
    assert_eq!(apis.pushed().len() - pushed, 2 * 39);
    // …and, the list unchanged, never again.
    let pushed = apis.pushed().len();
    force_load(&file);
    assert_eq!(run_once(&config, log).await, two, "{}", buffer.contents());
    assert_eq!(
        apis.pushed().len(),
        pushed,
        "the entries pushed each other's members again"
    );
}

/// Sets every entry's cursor to null: the next sync is a LOAD.
fn force_load(file: &Path) {
    let mut state = read_json(file);
    for entry in state.as_array_mut().unwrap() {
        entry["latest_timestamp"] = Value::Null;
    }
    std::fs::write(file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}
