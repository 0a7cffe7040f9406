//! The state file's content as a JSON document: parsed keeping key order
//! and numbers verbatim, patched field by field, rendered back.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

use super::entry::{
    list_id_of, read_entry, scan_entries_with, Entry, EntryKey, EntryScan, FIELD_ELAPSED_SECONDS,
    FIELD_LATEST_TIMESTAMP, FIELD_TOTAL_UPDATES,
};
use super::timestamp::format_timestamp;
use crate::mapping::NamedMappings;

/// Why a text is not a state document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("not a JSON array of entries like [{{\"list_id\": \"…\"}}]: it holds {found}")]
    NotAnArray { found: String },
}

/// The result of one successful sync, to be written into its entry.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRecord {
    pub key: EntryKey,
    /// `latest_timestamp` as it was when the sync started (`Null` if absent).
    pub cursor_at_start: Value,
    /// The sync's start time: the new cursor.
    pub t0: DateTime<Utc>,
    pub elapsed: Duration,
    pub total_updates: u64,
}

/// What applying a [`SyncRecord`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchOutcome {
    /// All three owned fields were written.
    Applied,
    /// The user changed `latest_timestamp` during the sync: their value is
    /// kept, only `elapsed_seconds` and `total_updates` were written.
    CursorEditedByUser { current: Value },
    /// No entry with that key any more (removed by hand): nothing written.
    EntryGone,
}

/// The file's entries as JSON values, with what finds one entry at once.
///
/// Equality is that of the entries and the named mappings.
#[derive(Clone, Debug)]
pub struct StateDocument {
    entries: Vec<Value>,
    /// `mappings.json` as read with the file (issue 17): what the entries'
    /// `mapping` names. Never written.
    mappings: NamedMappings,
    /// Per list id, the positions of the entries carrying it, in file
    /// order: the entry of rank `r` is at `positions[list_id][r]`. A patch
    /// never changes a `list_id` or the order, so it stays right.
    positions: HashMap<String, Vec<usize>>,
    /// Owned fields [`StateDocument::apply`] changed so far: a document
    /// whose count did not move needs no write.
    changes: u64,
}

impl PartialEq for StateDocument {
    fn eq(&self, other: &StateDocument) -> bool {
        self.entries == other.entries && self.mappings == other.mappings
    }
}

impl StateDocument {
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::Json {
            line: e.line(),
            column: e.column(),
            message: json_error_message(&e),
        })?;
        match value {
            Value::Array(entries) => {
                let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
                for (index, value) in entries.iter().enumerate() {
                    if let Some(list_id) = list_id_of(value) {
                        positions.entry(list_id.to_owned()).or_default().push(index);
                    }
                }
                Ok(StateDocument {
                    entries,
                    mappings: NamedMappings::default(),
                    positions,
                    changes: 0,
                })
            }
            other => Err(DocumentError::NotAnArray {
                found: super::entry::describe(&other),
            }),
        }
    }

    /// Every entry, validated (the whole file: a tick's work).
    pub fn entries(&self) -> EntryScan {
        scan_entries_with(&self.entries, &self.mappings)
    }

    /// The entry `key` names, if it is in the document and valid; found
    /// without reading the others.
    pub fn entry(&self, key: &EntryKey) -> Option<Entry> {
        let &index = self.positions.get(&key.list_id)?.get(key.rank)?;
        read_entry(index, &self.entries[index], Some(key.rank), &self.mappings, &mut vec![]).ok()
    }

    /// The valid entries of one list, in file order.
    pub fn entries_of_list(&self, list_id: &str) -> Vec<Entry> {
        let Some(positions) = self.positions.get(list_id) else {
            return vec![];
        };
        positions
            .iter()
            .enumerate()
            .filter_map(|(rank, &index)| {
                read_entry(index, &self.entries[index], Some(rank), &self.mappings, &mut vec![]).ok()
            })
            .collect()
    }

    /// How many owned fields [`StateDocument::apply`] changed in this
    /// document (not only in the file it was read from).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The document with the named mappings its entries may name.
    pub fn with_mappings(mut self, mappings: NamedMappings) -> StateDocument {
        self.mappings = mappings;
        self
    }

    /// The named mappings read with the document.
    pub fn mappings(&self) -> &NamedMappings {
        &self.mappings
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the importer-owned fields of the entry `record.key` names and
    /// nothing else. New fields go at the end of the entry; existing ones
    /// keep their place. Finds the entry at once, whatever the file's size.
    pub fn apply(&mut self, record: &SyncRecord) -> PatchOutcome {
        let Some(entry) = self.find_mut(&record.key) else {
            return PatchOutcome::EntryGone;
        };
        let Some(object) = entry.as_object_mut() else {
            return PatchOutcome::EntryGone;
        };
        let current = object.get(FIELD_LATEST_TIMESTAMP).cloned().unwrap_or(Value::Null);
        let mut changed = 0;
        let outcome = if current == record.cursor_at_start {
            changed += set(
                object,
                FIELD_LATEST_TIMESTAMP,
                Value::String(format_timestamp(record.t0)),
            );
            PatchOutcome::Applied
        } else {
            PatchOutcome::CursorEditedByUser { current }
        };
        changed += set(object, FIELD_ELAPSED_SECONDS, tenths_of_seconds(record.elapsed));
        changed += set(object, FIELD_TOTAL_UPDATES, Value::from(record.total_updates));
        self.changes += changed;
        outcome
    }

    fn find_mut(&mut self, key: &EntryKey) -> Option<&mut Value> {
        let &index = self.positions.get(&key.list_id)?.get(key.rank)?;
        self.entries.get_mut(index)
    }

    /// Two-space indented JSON with a trailing newline.
    pub fn render(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.entries).expect("a JSON value always serialises");
        text.push('\n');
        text
    }
}

/// Sets `field` of `object` to `value`; 1 if that changed it, else 0.
fn set(object: &mut Map<String, Value>, field: &str, value: Value) -> u64 {
    if object.get(field) == Some(&value) {
        return 0;
    }
    object.insert(field.into(), value);
    1
}

/// `elapsed_seconds` at 0.1 s precision, written as e.g. `8.7`.
fn tenths_of_seconds(elapsed: Duration) -> Value {
    let tenths = (elapsed.as_secs_f64() * 10.0).round() as u64;
    let text = format!("{}.{}", tenths / 10, tenths % 10);
    // A decimal literal of this shape always parses as a JSON number.
    Value::Number(text.parse::<Number>().expect("decimal literal"))
}

/// serde_json appends " at line L column C" to its messages; the caller
/// reports the position itself.
fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_owned(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(list_id: &str, rank: usize, at_start: Value) -> SyncRecord {
        SyncRecord {
            key: EntryKey {
                list_id: list_id.into(),
                rank,
            },
            cursor_at_start: at_start,
            t0: Utc.with_ymd_and_hms(2019, 10, 21, 10, 51, 16).unwrap(),
            elapsed: Duration::from_millis(8_660),
            total_updates: 46134,
        }
    }

    #[test]
    fn defaults_are_not_written_and_unknown_keys_keep_their_place() {
        // Numbers keep their digits (1.50 stays 1.50, big integers stay exact);
        // only an exponent is spelled out with its sign.
        let text = r#"[
  {
    "zeta": 1,
    "list_id": "a1",
    "note": {"b": 2, "a": [1.50, 1e3, 123456789012345678901234567890]}
  }
]
"#;
        let mut doc = StateDocument::parse(text).unwrap();
        assert_eq!(doc.apply(&record("a1", 0, Value::Null)), PatchOutcome::Applied);
        assert_eq!(
            doc.render(),
            r#"[
  {
    "zeta": 1,
    "list_id": "a1",
    "note": {
      "b": 2,
      "a": [
        1.50,
        1e+3,
        123456789012345678901234567890
      ]
    },
    "latest_timestamp": "2019-10-21T10:51:16",
    "elapsed_seconds": 8.7,
    "total_updates": 46134
  }
]
"#
        );
    }

    #[test]
    fn owned_fields_are_replaced_in_place() {
        let text = r#"[{"latest_timestamp": "2019-01-01T00:00:00", "elapsed_seconds": 1, "list_id": "a1", "total_updates": 3, "worker_count": 8}]"#;
        let mut doc = StateDocument::parse(text).unwrap();
        doc.apply(&record("a1", 0, Value::String("2019-01-01T00:00:00".into())));
        assert_eq!(
            doc.render(),
            "[\n  {\n    \"latest_timestamp\": \"2019-10-21T10:51:16\",\n    \"elapsed_seconds\": 8.7,\n    \"list_id\": \"a1\",\n    \"total_updates\": 46134,\n    \"worker_count\": 8\n  }\n]\n"
        );
    }

    #[test]
    fn same_list_id_entries_are_patched_separately() {
        let text = r#"[{"list_id": "a"}, {"list_id": "b"}, {"list_id": "a", "worker_count": 2}]"#;
        let mut doc = StateDocument::parse(text).unwrap();
        doc.apply(&record("a", 1, Value::Null));
        let v: Value = serde_json::from_str(&doc.render()).unwrap();
        assert_eq!(v[0], serde_json::json!({"list_id": "a"}));
        assert_eq!(v[2]["latest_timestamp"], "2019-10-21T10:51:16");
        assert_eq!(v[2]["worker_count"], 2);
    }

    #[test]
    fn a_cursor_edited_by_hand_wins() {
        let text = r#"[{"list_id": "a1", "latest_timestamp": null}]"#;
        let mut doc = StateDocument::parse(text).unwrap();
        // The sync started when the entry had a cursor; the user nulled it since.
        let outcome = doc.apply(&record("a1", 0, Value::String("2019-10-01T00:00:00".into())));
        assert_eq!(outcome, PatchOutcome::CursorEditedByUser { current: Value::Null });
        let v: Value = serde_json::from_str(&doc.render()).unwrap();
        assert_eq!(v[0]["latest_timestamp"], Value::Null);
        assert_eq!(v[0]["total_updates"], 46134);
    }

    #[test]
    fn absent_and_null_cursors_are_the_same() {
        let mut doc = StateDocument::parse(r#"[{"list_id": "a1", "latest_timestamp": null}]"#).unwrap();
        assert_eq!(doc.apply(&record("a1", 0, Value::Null)), PatchOutcome::Applied);
    }

    #[test]
    fn a_removed_entry_is_not_resurrected() {
        let text = r#"[{"list_id": "b"}]"#;
        let mut doc = StateDocument::parse(text).unwrap();
        assert_eq!(doc.apply(&record("a", 0, Value::Null)), PatchOutcome::EntryGone);
        assert_eq!(doc.apply(&record("b", 1, Value::Null)), PatchOutcome::EntryGone);
        assert_eq!(doc.render(), "[\n  {\n    \"list_id\": \"b\"\n  }\n]\n");
    }

    #[test]
    fn entries_are_found_by_key_and_by_list_without_a_scan() {
        let text = r#"[{"list_id": "a"}, {"list_id": "b", "worker_count": 0}, {"list_id": "a", "worker_count": 2}, 7]"#;
        let mut doc = StateDocument::parse(text).unwrap();
        let key = |list_id: &str, rank| EntryKey {
            list_id: list_id.into(),
            rank,
        };
        let second = doc.entry(&key("a", 1)).unwrap();
        assert_eq!((second.index, second.worker_count), (2, 2));
        assert_eq!(doc.entry(&key("b", 0)), None, "invalid: skipped as a scan skips it");
        assert_eq!(doc.entry(&key("a", 2)), None);
        assert_eq!(doc.entry(&key("z", 0)), None);
        let of_a: Vec<usize> = doc.entries_of_list("a").iter().map(|e| e.index).collect();
        assert_eq!(of_a, [0, 2]);
        // What a scan reads, entry by entry.
        assert_eq!(doc.entries().entries, [doc.entry(&key("a", 0)).unwrap(), second]);
        // A result shows at once.
        doc.apply(&record("a", 1, Value::Null));
        assert_eq!(doc.entry(&key("a", 1)).unwrap().last_total_updates, Some(46134));
    }

    #[test]
    fn only_a_patch_that_changes_a_value_counts_as_a_change() {
        let mut doc = StateDocument::parse(r#"[{"list_id": "a1"}]"#).unwrap();
        assert_eq!(doc.changes(), 0);
        doc.apply(&record("a1", 0, Value::Null));
        assert_eq!(doc.changes(), 3);
        // The same result again, and one for an entry not there: nothing changes.
        let written = doc.clone();
        doc.apply(&record("a1", 0, Value::Null));
        doc.apply(&record("zz", 0, Value::Null));
        assert_eq!(doc.changes(), 3);
        assert_eq!(doc, written);
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let err = StateDocument::parse("[\n  {\"list_id\": \"a\"},\n  {\"list_id\" \"b\"}\n]").unwrap_err();
        assert_eq!(err.to_string(), "not valid JSON at line 3, column 14: expected `:`");
        assert_eq!(
            StateDocument::parse("").unwrap_err().to_string(),
            "not valid JSON at line 1, column 0: EOF while parsing a value"
        );
        assert_eq!(
            StateDocument::parse("{\"list_id\": \"a\"}").unwrap_err().to_string(),
            "not a JSON array of entries like [{\"list_id\": \"…\"}]: it holds an object"
        );
    }

    #[test]
    fn elapsed_is_rounded_to_tenths() {
        for (millis, text) in [
            (0, "0.0"),
            (49, "0.0"),
            (50, "0.1"),
            (1_600, "1.6"),
            (12_000, "12.0"),
            (8_660, "8.7"),
        ] {
            assert_eq!(tenths_of_seconds(Duration::from_millis(millis)).to_string(), text);
        }
    }
}
