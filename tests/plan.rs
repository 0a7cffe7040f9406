//! `plan` (issue 17): what the next sync would send, read as the sync
//! reads, compared with the ledger — and nothing pushed or written.

mod support;

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use serde_json::Value;
use support::*;

fn plan(state_dir: &Path, apis: &Apis, args: &[&str]) -> Output {
    importer_command(state_dir, Some(apis))
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

/// Every file of the state folder with its bytes: what "writes nothing" means.
fn folder(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

fn json_plan(out: &Output) -> Vec<Value> {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
        .as_array()
        .unwrap()
        .clone()
}

/// A first LOAD, planned: every member read, every record new, the opt-ins
/// and opt-outs it would make, samples as they would be sent — and no
/// push, no state-file change, no ledger, no rejected file.
#[actix_rt::test]
async fn a_plan_counts_what_a_load_would_push_and_writes_nothing() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(120, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _) = state_dir(r#"[{"list_id": "L", "collection": "mailchimp_uk", "items_per_request": 50}]"#);
    let before = folder(dir.path());

    let out = plan(dir.path(), &apis, &["--limit", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("list \"L\": LOAD of the members before"), "{report}");
    assert!(report.contains("members read:   120\n"), "{report}");
    assert!(
        report.contains("would push:     120 (120 new, 0 changed) (no ledger to compare with"),
        "{report}"
    );
    // 40 subscribed; 20 each unsubscribed, cleaned and archived.
    assert!(report.contains("would opt in:   40\n"), "{report}");
    assert!(report.contains("would opt out:  60\n"), "{report}");
    let samples: Vec<Value> = report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("record "))
        .map(|l| serde_json::from_str(l.split_once(": ").unwrap().1).unwrap())
        .collect();
    assert_eq!(samples.len(), 2, "{report}");
    for sample in &samples {
        assert_eq!(sample["@collection"], "mailchimp_uk", "{sample}");
    }
    assert!(report.ends_with(
        "plan: 1 entry planned, 120 members read, 120 records would be pushed; nothing was pushed or written.\n"
    ));

    assert!(apis.pushes().is_empty(), "plan pushed {:?}", apis.pushes().len());
    assert_eq!(folder(dir.path()), before, "plan wrote into the state folder");
    // It read as the sync would: its projection, its sort.
    let queries = apis.mailchimp_queries().await;
    assert!(!queries.is_empty());
    for q in &queries {
        assert_eq!(q["fields"], ometria_importer::mailchimp::MEMBER_FIELDS);
        assert_eq!(q["sort_field"], "last_changed");
    }
}

/// After a sync, the plan compares with the ledger: nothing to push; a
/// changed mapping changes every record, and one member opted out in
/// Mailchimp since is the one opt-out — still nothing written.
#[actix_rt::test]
async fn a_plan_compares_with_the_ledger() {
    let fake = FakeMailchimp::default().with_list("L", generate_members(60, Utc::now()));
    let lists = fake.lists.clone();
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let out = importer_command(dir.path(), Some(&apis)).arg("once").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pushes = apis.pushes().len();

    // Up to date: nothing is due, and --list plans its next SYNC anyway.
    let out = plan(dir.path(), &apis, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("no entry is due now"),
        "{}",
        text(&out.stdout)
    );
    let plans = json_plan(&plan(dir.path(), &apis, &["--list", "L", "--json"]));
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0]["kind"], "SYNC");
    assert_eq!(plans[0]["members_read"], 0, "nothing changed since the sync");

    // A LOAD forced by hand: every member read, none pushed again. With no
    // importer running the ledger has no write-ahead log beside it, and
    // the plan creates none (nor SQLite's -shm index).
    force_load(&file);
    let names = |dir: &Path| -> Vec<String> { folder(dir).into_iter().map(|(name, _)| name).collect() };
    assert!(
        !names(dir.path())
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{:?}",
        names(dir.path())
    );
    let before = folder(dir.path());
    let plans = json_plan(&plan(dir.path(), &apis, &["--json"]));
    let p = &plans[0];
    assert_eq!(
        (
            &p["kind"],
            &p["members_read"],
            &p["would_push"],
            &p["unchanged"],
            &p["ledger"]
        ),
        (&"LOAD".into(), &60.into(), &0.into(), &60.into(), &true.into()),
        "{p}"
    );

    // One subscribed member unsubscribes in Mailchimp: one record changed, one opt-out.
    {
        let mut lists = lists.lock().unwrap();
        let member = lists
            .get_mut("L")
            .unwrap()
            .iter_mut()
            .find(|m| m.status == "subscribed")
            .unwrap();
        member.status = "unsubscribed";
    }
    let p = &json_plan(&plan(dir.path(), &apis, &["--json", "--limit", "1"]))[0];
    assert_eq!(
        (
            &p["would_push"],
            &p["changed"],
            &p["new"],
            &p["would_opt_out"],
            &p["would_opt_in"]
        ),
        (&1.into(), &1.into(), &0.into(), &1.into(), &0.into()),
        "{p}"
    );
    assert_eq!(p["samples"][0]["marketing_optin"], "EXPLICITLY_OPTEDOUT", "{p}");

    // A new mapping changes every record: all would be pushed again.
    let mut state = read_json(&file);
    state[0]["force_optin"] = true.into();
    std::fs::write(&file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    let before_mapping = folder(dir.path());
    let p = &json_plan(&plan(dir.path(), &apis, &["--json", "--limit", "0"]))[0];
    assert_eq!(
        (&p["would_push"], &p["changed"], &p["unchanged"]),
        (&60.into(), &60.into(), &0.into()),
        "{p}"
    );
    assert_eq!(p["samples"], Value::Array(vec![]));

    assert_eq!(apis.pushes().len(), pushes, "plan pushed");
    assert_eq!(folder(dir.path()), before_mapping, "plan wrote into the state folder");
    assert_ne!(before, before_mapping, "only the hand edit changed the folder");
}

/// Sets every entry's cursor to null: the next sync is a LOAD.
fn force_load(file: &Path) {
    let mut state = read_json(file);
    for entry in state.as_array_mut().unwrap() {
        entry["latest_timestamp"] = Value::Null;
    }
    std::fs::write(file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}

/// Exit codes: 1 for a list Mailchimp refuses (the others still planned),
/// and for a `--list` with no entry; 2 for settings to fix first. The
/// Ometria key is not needed: a plan pushes nothing.
#[actix_rt::test]
async fn a_plan_says_what_it_could_not_read() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(10, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _) = state_dir(
        r#"[{"list_id": "nope"}, {"list_id": "L"}, {"list_id": "bad", "fields": {"phone": "merge_fields.PHONE"}}]"#,
    );
    let out = importer_command(dir.path(), Some(&apis))
        .env_remove("OMETRIA_APIKEY")
        .arg("plan")
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}\n{}", text(&out.stderr));
    assert!(report.contains("list \"nope\": could not be read: "), "{report}");
    assert!(report.contains("list \"L\": LOAD"), "{report}");
    assert!(
        report.contains(
            "skipped: entry at index 2 (list_id \"bad\"), field \"fields\": \"phone\" is not an Ometria contact field"
        ),
        "{report}"
    );
    assert!(report.contains(", 1 could not be read;"), "{report}");

    let out = plan(dir.path(), &apis, &["--list", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("no valid entry for list \"other\""));
    // With --json, stdout holds JSON or nothing.
    let out = plan(dir.path(), &apis, &["--list", "other", "--json"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(1), "[]\n".to_owned()));
    assert!(text(&out.stderr).contains("no valid entry for list \"other\""));
    let out = plan(dir.path(), &apis, &["--json"]);
    let plans: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plans.as_array().unwrap().len(), 2, "{plans}");
    assert!(plans[0]["error"].as_str().is_some(), "{plans}");

    let out = importer_command(dir.path(), Some(&apis))
        .env_remove("MAILCHIMP_APIKEY")
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("MAILCHIMP_APIKEY"), "{}", text(&out.stdout));
}
