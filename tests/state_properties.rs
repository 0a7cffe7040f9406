//! Property tests of the state file's parsing and patching: whatever the
//! document, no panic, and a write touches nothing but the importer's
//! fields of the one entry it is for.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use ometria_importer::state::{EntryKey, PatchOutcome, StateDocument, SyncRecord};

const OWNED: [&str; 3] = ["latest_timestamp", "elapsed_seconds", "total_updates"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "[a-z0-9 ._:-]{0,12}".prop_map(Value::from),
        Just(json!("2019-10-18T22:20:23")),
        Just(json!("2019-10-18T22:20:23+02:00")),
        Just(json!("")),
        Just(json!("  ")),
        Just(json!("Zoë 李 🚀")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Entries as people write them, mostly right, sometimes not at all.
fn entry() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("list_id"),
        Just("latest_timestamp"),
        Just("start_offset"),
        Just("items_per_request"),
        Just("worker_count"),
        Just("elapsed_seconds"),
        Just("total_updates"),
        Just("refresh_seconds"),
        Just("note"),
        Just("x"),
    ];
    let list_id = prop_oneof![Just(json!("a")), Just(json!("b")), Just(json!("c")), scalar()];
    prop_oneof![
        8 => (list_id, prop::collection::vec((key, prop_oneof![scalar(), value()]), 0..6)).prop_map(|(id, fields)| {
            let mut object = Map::new();
            object.insert("list_id".into(), id);
            for (k, v) in fields {
                object.insert(k.to_owned(), v);
            }
            Value::Object(object)
        }),
        1 => value(),
    ]
}

fn document() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(entry(), 0..8)
}

fn record(list_id: &str, rank: usize, at_start: Value) -> SyncRecord {
    SyncRecord {
        key: EntryKey {
            list_id: list_id.into(),
            rank,
        },
        cursor_at_start: at_start,
        t0: Utc.with_ymd_and_hms(2026, 11, 28, 7, 5, 9).unwrap(),
        elapsed: Duration::from_millis(1234),
        total_updates: 77,
    }
}

/// An entry without the importer's fields.
fn users_part(entry: &Value) -> Value {
    let mut entry = entry.clone();
    if let Some(object) = entry.as_object_mut() {
        for owned in OWNED {
            object.shift_remove(owned);
        }
    }
    entry
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_fails_cleanly(text in "[\\[\\]{}\":,0-9a-z_ .\\-\\n\\\\]{0,80}") {
        if let Err(e) = StateDocument::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        let file = ometria_importer::state::StateFile::in_dir(dir.path());
        std::fs::write(file.path(), &bytes).unwrap();
        let _ = file.load();
    }

    #[test]
    fn rendering_round_trips(entries in document()) {
        let text = serde_json::to_string(&entries).unwrap();
        let doc = StateDocument::parse(&text).unwrap();
        let rendered = doc.render();
        prop_assert!(rendered.ends_with('\n'));
        let again = StateDocument::parse(&rendered).unwrap();
        prop_assert_eq!(&again, &doc);
        prop_assert_eq!(again.render(), rendered);
    }

    #[test]
    fn a_write_touches_only_the_owned_fields_of_its_entry(
        entries in document(),
        list_id in prop_oneof![Just("a"), Just("b"), Just("c"), Just("z")],
        rank in 0usize..3,
        at_start in prop_oneof![Just(Value::Null), Just(json!("2019-10-18T22:20:23")), scalar()],
    ) {
        let text = serde_json::to_string(&entries).unwrap();
        let mut doc = StateDocument::parse(&text).unwrap();
        let scan = doc.entries();
        prop_assert!(scan.entries.len() + scan.warnings.iter().filter(|w| w.consequence == ometria_importer::state::Consequence::Skipped).count() <= entries.len());
        let outcome = doc.apply(&record(list_id, rank, at_start.clone()));
        let after: Vec<Value> = serde_json::from_str(&doc.render()).unwrap();
        prop_assert_eq!(after.len(), entries.len());
        // Which entry the key names: the rank-th with that list id.
        let target = entries.iter().enumerate().filter(|(_, e)| e.get("list_id").and_then(Value::as_str) == Some(list_id)).nth(rank).map(|(i, _)| i);
        for (i, (before, now)) in entries.iter().zip(&after).enumerate() {
            if Some(i) != target {
                prop_assert_eq!(before, now, "entry {} changed", i);
                continue;
            }
            // The user's part stays, in its order; owned fields come after it when new.
            prop_assert_eq!(users_part(before), users_part(now));
            let keys_before: Vec<&String> = before.as_object().unwrap().keys().filter(|k| !OWNED.contains(&k.as_str())).collect();
            let keys_now: Vec<&String> = now.as_object().unwrap().keys().filter(|k| !OWNED.contains(&k.as_str())).collect();
            prop_assert_eq!(keys_before, keys_now);
            prop_assert_eq!(&now["total_updates"], &json!(77));
            let cursor_before = before.get("latest_timestamp").cloned().unwrap_or(Value::Null);
            if cursor_before == at_start {
                prop_assert_eq!(&outcome, &PatchOutcome::Applied);
                prop_assert_eq!(&now["latest_timestamp"], &json!("2026-11-28T07:05:09"));
            } else {
                prop_assert_eq!(&outcome, &PatchOutcome::CursorEditedByUser { current: cursor_before.clone() });
                prop_assert_eq!(now.get("latest_timestamp").cloned().unwrap_or(Value::Null), cursor_before);
            }
        }
        if target.is_none() {
            prop_assert_eq!(outcome, PatchOutcome::EntryGone);
        }
    }
}
