//! One entry of `state.json` as the importer understands it, and the
//! validation that turns raw JSON into entries plus warnings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::timestamp::parse_timestamp;
use crate::mapping::{Mapping, NamedMappings, FIELD_MAPPING};

pub const DEFAULT_START_OFFSET: u64 = 0;
pub const DEFAULT_ITEMS_PER_REQUEST: u32 = 100;
/// Mailchimp's own maximum for `count`.
pub const MAX_ITEMS_PER_REQUEST: u32 = 1000;
pub const DEFAULT_WORKER_COUNT: u32 = 8;
/// More workers than this per entry only queue behind the global limits.
pub const MAX_WORKER_COUNT: u32 = 64;

pub const FIELD_LIST_ID: &str = "list_id";
pub const FIELD_LATEST_TIMESTAMP: &str = "latest_timestamp";
pub const FIELD_START_OFFSET: &str = "start_offset";
pub const FIELD_ITEMS_PER_REQUEST: &str = "items_per_request";
pub const FIELD_WORKER_COUNT: &str = "worker_count";
pub const FIELD_ELAPSED_SECONDS: &str = "elapsed_seconds";
pub const FIELD_TOTAL_UPDATES: &str = "total_updates";
pub const FIELD_REFRESH_SECONDS: &str = "refresh_seconds";
pub const FIELD_ALERT_AFTER_SECONDS: &str = "alert_after_seconds";
pub const FIELD_RECONCILE_SECONDS: &str = "reconcile_seconds";
pub const FIELD_ON_DELETE: &str = "on_delete";

/// How often an entry is reconciled by default (issue 16): once a day.
pub const DEFAULT_RECONCILE_SECONDS: u64 = 86_400;
/// The longest `reconcile_seconds`: a year keeps date arithmetic far from overflow.
pub const MAX_RECONCILE_SECONDS: u64 = 366 * 24 * 3600;

/// What a member deleted in Mailchimp becomes (`on_delete`, issue 16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDelete {
    /// `"optout"`: pushed as an opted-out contact with
    /// `properties.mailchimp_status: "deleted"`, then forgotten by the ledger.
    #[default]
    OptOut,
    /// `"ignore"`: only forgotten by the ledger; Ometria keeps the contact
    /// as last pushed.
    Ignore,
}

impl OnDelete {
    /// The value as written in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::OptOut => "optout",
            OnDelete::Ignore => "ignore",
        }
    }
}

/// Identifies an entry across re-reads of a hand-edited file: its list id
/// and its rank among the entries that share that list id (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    pub list_id: String,
    pub rank: usize,
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escaped: a list id read from the file never writes a log line of its own.
        let id = self.list_id.escape_debug();
        if self.rank == 0 {
            write!(f, "\"{id}\"")
        } else {
            write!(f, "\"{id}\" (#{})", self.rank + 1)
        }
    }
}

/// A valid entry with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: EntryKey,
    /// Position in the file when it was read (0-based).
    pub index: usize,
    /// The parsed cursor; `None` means "never synced": a full LOAD.
    pub cursor: Option<DateTime<Utc>>,
    /// `latest_timestamp` exactly as read (`Null` when absent), so that a
    /// hand edit made while the entry syncs can be recognised at write time.
    pub cursor_raw: Value,
    pub start_offset: u64,
    pub items_per_request: u32,
    pub worker_count: u32,
    pub refresh: Option<Duration>,
    /// How long without a successful sync before the entry is behind.
    pub alert_after: Option<Duration>,
    /// How often the entry's list is reconciled with the ledger
    /// (`reconcile_seconds`, default a day); `None` when 0 turned it off.
    pub reconcile: Option<Duration>,
    /// What a member deleted in Mailchimp becomes (`on_delete`).
    pub on_delete: OnDelete,
    /// The entry's mapping (issue 17): its named `mapping` with its own
    /// `fields`, `collection` and `force_optin` over it; SPEC §5's alone
    /// ([`Mapping::default`]) without them.
    pub mapping: Arc<Mapping>,
    /// `elapsed_seconds` and `total_updates` of the last sync, as written.
    pub last_elapsed_seconds: Option<f64>,
    pub last_total_updates: Option<u64>,
}

/// Between a list id and a collection in a ledger key: no list id holds
/// it, and no collection may (see [`Entry::ledger_key`]).
pub const LEDGER_KEY_SEPARATOR: char = '\u{1f}';

impl Entry {
    /// Whose members the ledger keeps for this entry (issue 17): its
    /// list's, or, for an entry with a `collection`, its list's in that
    /// collection — Ometria keeps each collection's contacts apart, so
    /// two entries of one list sending to two collections each have their
    /// own (`<list_id>` U+001F `<collection>`). Entries without a
    /// collection share the list's, as before collections existed.
    pub fn ledger_key(&self) -> String {
        match &self.mapping.collection {
            None => self.key.list_id.clone(),
            Some(collection) => format!("{}{LEDGER_KEY_SEPARATOR}{collection}", self.key.list_id),
        }
    }
}

/// Something wrong with one entry, naming its position and field.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryWarning {
    pub index: usize,
    pub list_id: Option<String>,
    pub field: Option<&'static str>,
    pub problem: String,
    /// What the importer does about it.
    pub consequence: Consequence,
}

impl EntryWarning {
    /// Whether the entry is skipped until it is fixed (an invalid entry).
    pub fn skips_entry(&self) -> bool {
        self.consequence == Consequence::Skipped
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consequence {
    /// The entry is not synced until it is fixed.
    Skipped,
    /// `latest_timestamp` is ignored: the entry gets a full LOAD.
    FullLoad,
    /// Informational field only; it is overwritten after the next sync.
    Overwritten,
}

impl fmt::Display for EntryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry at index {}", self.index)?;
        if let Some(list_id) = &self.list_id {
            write!(f, " (list_id \"{}\")", list_id.escape_debug())?;
        }
        if let Some(field) = self.field {
            write!(f, ", field \"{field}\"")?;
        }
        write!(f, ": {}; ", self.problem)?;
        f.write_str(match self.consequence {
            Consequence::Skipped => "entry skipped until it is fixed",
            Consequence::FullLoad => "treated as null (full LOAD)",
            Consequence::Overwritten => "it will be overwritten by the next successful sync",
        })
    }
}

/// The outcome of reading every entry of a document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntryScan {
    pub entries: Vec<Entry>,
    pub warnings: Vec<EntryWarning>,
}

/// Validates every entry, without named mappings (see [`scan_entries_with`]).
pub fn scan_entries(values: &[Value]) -> EntryScan {
    scan_entries_with(values, &NamedMappings::default())
}

/// Validates every entry; an entry's `mapping` names one of `named`.
/// Ranks count every entry carrying a given list id, valid or not, so
/// fixing one entry does not change the identity of the others.
pub fn scan_entries_with(values: &[Value], named: &NamedMappings) -> EntryScan {
    let mut scan = EntryScan::default();
    let mut ranks: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, value) in values.iter().enumerate() {
        let rank = list_id_of(value).map(|id| {
            let next = ranks.entry(id).or_insert(0);
            *next += 1;
            *next - 1
        });
        match read_entry(index, value, rank, named, &mut scan.warnings) {
            Ok(entry) => scan.entries.push(entry),
            Err(warning) => scan.warnings.push(warning),
        }
    }
    scan
}

/// The string under `list_id`, if there is one: what entry identity uses.
pub fn list_id_of(value: &Value) -> Option<&str> {
    value.get(FIELD_LIST_ID).and_then(Value::as_str)
}

/// Validates the entry at `index` of the file, of rank `rank` among the
/// entries with its list id; warnings that do not skip it go to `warnings`.
pub(super) fn read_entry(
    index: usize,
    value: &Value,
    rank: Option<usize>,
    named: &NamedMappings,
    warnings: &mut Vec<EntryWarning>,
) -> Result<Entry, EntryWarning> {
    let skip = |list_id: Option<&str>, field: Option<&'static str>, problem: String| EntryWarning {
        index,
        list_id: list_id.map(str::to_owned),
        field,
        problem,
        consequence: Consequence::Skipped,
    };
    let Some(object) = value.as_object() else {
        return Err(skip(
            None,
            None,
            format!(
                "must be an object like {{\"list_id\": \"…\"}}, found {}",
                describe(value)
            ),
        ));
    };
    let list_id = match object.get(FIELD_LIST_ID) {
        None => {
            return Err(skip(None, Some(FIELD_LIST_ID), "is missing (it is required)".into()));
        }
        Some(Value::String(id)) if id.trim().is_empty() => {
            return Err(skip(None, Some(FIELD_LIST_ID), "must not be empty".into()));
        }
        Some(Value::String(id)) if id.trim() != id => {
            return Err(skip(
                Some(id),
                Some(FIELD_LIST_ID),
                "has spaces around it; remove them".into(),
            ));
        }
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            return Err(skip(
                Some(id),
                Some(FIELD_LIST_ID),
                "holds a control character; a Mailchimp list id is letters and digits".into(),
            ));
        }
        Some(Value::String(id)) => id.as_str(),
        Some(other) => {
            return Err(skip(
                None,
                Some(FIELD_LIST_ID),
                format!("must be a string, found {}", describe(other)),
            ));
        }
    };
    let field = |name: &'static str, lo: u64, hi: u64| -> Result<Option<u64>, EntryWarning> {
        bounded_integer(object, name, lo, hi).map_err(|problem| skip(Some(list_id), Some(name), problem))
    };
    let start_offset = field(FIELD_START_OFFSET, 0, u64::MAX)?.unwrap_or(DEFAULT_START_OFFSET);
    let items_per_request = field(FIELD_ITEMS_PER_REQUEST, 1, MAX_ITEMS_PER_REQUEST.into())?
        .map_or(DEFAULT_ITEMS_PER_REQUEST, |n| n as u32);
    let worker_count =
        field(FIELD_WORKER_COUNT, 1, MAX_WORKER_COUNT.into())?.map_or(DEFAULT_WORKER_COUNT, |n| n as u32);
    // One second at least; a year at most keeps date arithmetic far from overflow.
    let refresh = field(FIELD_REFRESH_SECONDS, 1, 366 * 24 * 3600)?.map(Duration::from_secs);
    let alert_after = field(FIELD_ALERT_AFTER_SECONDS, 1, 3 * 366 * 24 * 3600)?.map(Duration::from_secs);
    let reconcile_seconds =
        field(FIELD_RECONCILE_SECONDS, 0, MAX_RECONCILE_SECONDS)?.unwrap_or(DEFAULT_RECONCILE_SECONDS);
    let reconcile = match reconcile_seconds {
        0 => None,
        seconds => Some(Duration::from_secs(seconds)),
    };
    let on_delete = match object.get(FIELD_ON_DELETE) {
        None | Some(Value::Null) => OnDelete::default(),
        Some(Value::String(s)) if s == "optout" => OnDelete::OptOut,
        Some(Value::String(s)) if s == "ignore" => OnDelete::Ignore,
        Some(other) => {
            return Err(skip(
                Some(list_id),
                Some(FIELD_ON_DELETE),
                format!("must be \"optout\" or \"ignore\", found {}", describe(other)),
            ))
        }
    };
    let mapping = read_mapping(object, named).map_err(|(field, problem)| skip(Some(list_id), Some(field), problem))?;

    let warn = |field: &'static str, problem: String, consequence| EntryWarning {
        index,
        list_id: Some(list_id.to_owned()),
        field: Some(field),
        problem,
        consequence,
    };
    let cursor_raw = object.get(FIELD_LATEST_TIMESTAMP).cloned().unwrap_or(Value::Null);
    let cursor = match &cursor_raw {
        Value::Null => None,
        Value::String(text) => {
            let parsed = parse_timestamp(text);
            if parsed.is_none() {
                warnings.push(warn(
                    FIELD_LATEST_TIMESTAMP,
                    format!("\"{text}\" is not a timestamp like \"2019-10-18T22:20:23\""),
                    Consequence::FullLoad,
                ));
            }
            parsed
        }
        other => {
            warnings.push(warn(
                FIELD_LATEST_TIMESTAMP,
                format!(
                    "must be a timestamp string like \"2019-10-18T22:20:23\" or null, found {}",
                    describe(other)
                ),
                Consequence::FullLoad,
            ));
            None
        }
    };
    for name in [FIELD_ELAPSED_SECONDS, FIELD_TOTAL_UPDATES] {
        match object.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|x| x >= 0.0) => {}
            Some(other) => warnings.push(warn(
                name,
                format!("must be a non-negative number, found {}", describe(other)),
                Consequence::Overwritten,
            )),
        }
    }

    Ok(Entry {
        key: EntryKey {
            list_id: list_id.to_owned(),
            rank: rank.unwrap_or(0),
        },
        index,
        cursor,
        cursor_raw,
        start_offset,
        items_per_request,
        worker_count,
        refresh,
        alert_after,
        reconcile,
        on_delete,
        mapping: Arc::new(mapping),
        last_elapsed_seconds: object
            .get(FIELD_ELAPSED_SECONDS)
            .and_then(Value::as_f64)
            .filter(|s| *s >= 0.0),
        last_total_updates: object.get(FIELD_TOTAL_UPDATES).and_then(Value::as_u64),
    })
}

/// The entry's mapping: the named one, then its own keys over it.
/// Errors: the key and what is wrong with it.
fn read_mapping(object: &Map<String, Value>, named: &NamedMappings) -> Result<Mapping, (&'static str, String)> {
    let mut mapping = match object.get(FIELD_MAPPING) {
        None | Some(Value::Null) => Mapping::default(),
        Some(Value::String(name)) => named.get(name).map_err(|p| (FIELD_MAPPING, p))?.clone(),
        Some(other) => {
            return Err((
                FIELD_MAPPING,
                format!(
                    "must be the name of a mapping in mappings.json (a string), found {}",
                    describe(other)
                ),
            ))
        }
    };
    mapping.overlay(object).map_err(|e| (e.field, e.problem))?;
    Ok(mapping)
}

/// `Ok(None)` when absent or null (the default applies).
fn bounded_integer(object: &Map<String, Value>, name: &str, lo: u64, hi: u64) -> Result<Option<u64>, String> {
    // Spelled out only for a message: every entry of every read comes here.
    let range = || {
        if hi == u64::MAX {
            format!("a whole number ≥ {lo}")
        } else {
            format!("a whole number from {lo} to {hi}")
        }
    };
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
            _ => Err(format!("must be {}, found {n}", range())),
        },
        Some(other) => Err(format!("must be {}, found {}", range(), describe(other))),
    }
}

/// A short description of a JSON value for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("the text \"{}…\"", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("the text \"{s}\""),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(value: Value) -> EntryScan {
        scan_entries(value.as_array().unwrap())
    }

    #[test]
    fn defaults_fill_a_minimal_entry() {
        let s = scan(json!([{"list_id": "a1"}]));
        assert!(s.warnings.is_empty());
        let e = &s.entries[0];
        assert_eq!(
            e.key,
            EntryKey {
                list_id: "a1".into(),
                rank: 0
            }
        );
        assert_eq!((e.start_offset, e.items_per_request, e.worker_count), (0, 100, 8));
        assert_eq!((e.cursor, &e.cursor_raw, e.refresh), (None, &Value::Null, None));
        assert_eq!(e.reconcile, Some(Duration::from_secs(86_400)));
        assert_eq!(e.on_delete, OnDelete::OptOut);
    }

    #[test]
    fn reconciliation_can_be_set_turned_off_or_told_to_ignore_deletions() {
        let s = scan(json!([
            {"list_id": "a", "reconcile_seconds": 600, "on_delete": "ignore"},
            {"list_id": "b", "reconcile_seconds": 0, "on_delete": "optout"},
            {"list_id": "c", "reconcile_seconds": null, "on_delete": null}
        ]));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let read: Vec<_> = s.entries.iter().map(|e| (e.reconcile, e.on_delete)).collect();
        assert_eq!(
            read,
            [
                (Some(Duration::from_secs(600)), OnDelete::Ignore),
                (None, OnDelete::OptOut),
                (Some(Duration::from_secs(86_400)), OnDelete::OptOut)
            ]
        );
    }

    #[test]
    fn reads_every_field() {
        let s = scan(json!([{
            "list_id": "a1", "latest_timestamp": "2019-10-18T22:20:23", "start_offset": 10000,
            "items_per_request": 250, "worker_count": 4, "elapsed_seconds": 1.6,
            "total_updates": 10133, "refresh_seconds": 600, "note": "kept"
        }]));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let e = &s.entries[0];
        assert_eq!(e.cursor.unwrap().to_rfc3339(), "2019-10-18T22:20:23+00:00");
        assert_eq!((e.start_offset, e.items_per_request, e.worker_count), (10000, 250, 4));
        assert_eq!(e.refresh, Some(Duration::from_secs(600)));
    }

    #[test]
    fn ranks_count_entries_sharing_a_list_id() {
        let s = scan(json!([
            {"list_id": "a"}, {"list_id": "b"}, {"list_id": "a", "worker_count": 0},
            {"list_id": "a"}
        ]));
        let keys: Vec<_> = s.entries.iter().map(|e| (e.key.to_string(), e.index)).collect();
        // The invalid third entry keeps rank 1, so the fourth is rank 2.
        assert_eq!(
            keys,
            [("\"a\"".to_string(), 0), ("\"b\"".into(), 1), ("\"a\" (#3)".into(), 3)]
        );
    }

    /// Every validation case with its exact message.
    #[test]
    fn every_invalid_entry_is_named_with_its_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!("a1"), "entry at index 0: must be an object like {\"list_id\": \"…\"}, found the text \"a1\"; entry skipped until it is fixed"),
            (json!({}), "entry at index 0, field \"list_id\": is missing (it is required); entry skipped until it is fixed"),
            (json!({"list_id": ""}), "entry at index 0, field \"list_id\": must not be empty; entry skipped until it is fixed"),
            (json!({"list_id": "  "}), "entry at index 0, field \"list_id\": must not be empty; entry skipped until it is fixed"),
            (json!({"list_id": " a1"}), "entry at index 0 (list_id \" a1\"), field \"list_id\": has spaces around it; remove them; entry skipped until it is fixed"),
            (json!({"list_id": 12}), "entry at index 0, field \"list_id\": must be a string, found 12; entry skipped until it is fixed"),
            (json!({"list_id": "a1\n2026-12-02 ERROR x"}), "entry at index 0 (list_id \"a1\\n2026-12-02 ERROR x\"), field \"list_id\": holds a control character; a Mailchimp list id is letters and digits; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "start_offset": -1}), "entry at index 0 (list_id \"a1\"), field \"start_offset\": must be a whole number ≥ 0, found -1; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "items_per_request": 0}), "entry at index 0 (list_id \"a1\"), field \"items_per_request\": must be a whole number from 1 to 1000, found 0; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "items_per_request": 1001}), "entry at index 0 (list_id \"a1\"), field \"items_per_request\": must be a whole number from 1 to 1000, found 1001; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "items_per_request": 2.5}), "entry at index 0 (list_id \"a1\"), field \"items_per_request\": must be a whole number from 1 to 1000, found 2.5; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "worker_count": "8"}), "entry at index 0 (list_id \"a1\"), field \"worker_count\": must be a whole number from 1 to 64, found the text \"8\"; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "worker_count": 65}), "entry at index 0 (list_id \"a1\"), field \"worker_count\": must be a whole number from 1 to 64, found 65; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "refresh_seconds": 0}), "entry at index 0 (list_id \"a1\"), field \"refresh_seconds\": must be a whole number from 1 to 31622400, found 0; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "refresh_seconds": true}), "entry at index 0 (list_id \"a1\"), field \"refresh_seconds\": must be a whole number from 1 to 31622400, found true; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "alert_after_seconds": 0}), "entry at index 0 (list_id \"a1\"), field \"alert_after_seconds\": must be a whole number from 1 to 94867200, found 0; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "reconcile_seconds": -1}), "entry at index 0 (list_id \"a1\"), field \"reconcile_seconds\": must be a whole number from 0 to 31622400, found -1; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "reconcile_seconds": "daily"}), "entry at index 0 (list_id \"a1\"), field \"reconcile_seconds\": must be a whole number from 0 to 31622400, found the text \"daily\"; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "on_delete": "delete"}), "entry at index 0 (list_id \"a1\"), field \"on_delete\": must be \"optout\" or \"ignore\", found the text \"delete\"; entry skipped until it is fixed"),
            (json!({"list_id": "a1", "on_delete": false}), "entry at index 0 (list_id \"a1\"), field \"on_delete\": must be \"optout\" or \"ignore\", found false; entry skipped until it is fixed"),
        ];
        for (entry, message) in cases {
            let s = scan(json!([entry]));
            assert!(s.entries.is_empty(), "{entry} should be skipped");
            assert_eq!(s.warnings.len(), 1);
            assert_eq!(s.warnings[0].to_string(), message);
        }
    }

    #[test]
    fn bad_timestamps_mean_full_load_with_a_warning() {
        let cases = [
            (json!("last tuesday"), "entry at index 0 (list_id \"a1\"), field \"latest_timestamp\": \"last tuesday\" is not a timestamp like \"2019-10-18T22:20:23\"; treated as null (full LOAD)"),
            (json!(1571437223), "entry at index 0 (list_id \"a1\"), field \"latest_timestamp\": must be a timestamp string like \"2019-10-18T22:20:23\" or null, found 1571437223; treated as null (full LOAD)"),
        ];
        for (ts, message) in cases {
            let s = scan(json!([{"list_id": "a1", "latest_timestamp": ts}]));
            assert_eq!(s.entries.len(), 1);
            assert_eq!(s.entries[0].cursor, None);
            assert_eq!(s.entries[0].cursor_raw, ts);
            assert_eq!(s.warnings[0].to_string(), message);
        }
    }

    #[test]
    fn bad_informational_fields_only_warn() {
        let s = scan(json!([{"list_id": "a1", "elapsed_seconds": "slow", "total_updates": -3}]));
        assert_eq!(s.entries.len(), 1);
        let messages: Vec<_> = s.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(messages, [
            "entry at index 0 (list_id \"a1\"), field \"elapsed_seconds\": must be a non-negative number, found the text \"slow\"; it will be overwritten by the next successful sync",
            "entry at index 0 (list_id \"a1\"), field \"total_updates\": must be a non-negative number, found -3; it will be overwritten by the next successful sync",
        ]);
    }

    /// Issue 17: an entry's mapping is its named one with its own keys
    /// over it; one naming a mapping that is missing or wrong is skipped
    /// with the key and the reason; the others go on.
    #[test]
    fn mappings_are_named_shared_and_overridden_per_entry() {
        use crate::mapping::{ContactField, Target};
        let named = NamedMappings::parse(
            br#"{"shop": {"fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"},
                          "collection": "mailchimp", "force_optin": true},
                 "broken": {"fields": {"phone": "merge_fields.PHONE"}}}"#,
        )
        .unwrap();
        let values = json!([
            {"list_id": "a", "mapping": "shop"},
            {"list_id": "b", "mapping": "shop", "collection": "uk", "force_optin": false,
             "fields": {"properties.tags": null, "gender": "merge_fields.GENDER"}},
            {"list_id": "c"},
            {"list_id": "d", "mapping": "shops"},
            {"list_id": "e", "mapping": "broken"},
            {"list_id": "f", "mapping": 3},
            {"list_id": "g", "fields": {"properties.x": "merge_fields.X"}, "collection": ""}
        ]);
        let s = scan_entries_with(values.as_array().unwrap(), &named);
        let ids: Vec<_> = s.entries.iter().map(|e| e.key.list_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let (a, b, c) = (&s.entries[0].mapping, &s.entries[1].mapping, &s.entries[2].mapping);
        assert_eq!(a.name.as_deref(), Some("shop"));
        assert_eq!(
            (a.collection.as_deref(), a.force_optin, a.rules().count()),
            (Some("mailchimp"), true, 2)
        );
        assert_eq!((b.collection.as_deref(), b.force_optin), (Some("uk"), false));
        let b_targets: Vec<String> = b.rules().map(|(t, _)| t.to_string()).collect();
        assert_eq!(b_targets, ["phone_number", "gender"]);
        assert!(b.fields.contains_key(&Target::Contact(ContactField::Gender)));
        assert!(c.is_default());
        let warnings: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        assert!(warnings[0].starts_with("entry at index 3 (list_id \"d\"), field \"mapping\": there is no mapping \"shops\" in mappings.json (it defines broken, shop)"), "{}", warnings[0]);
        assert!(warnings[1].contains("field \"mapping\": the mapping \"broken\" in mappings.json, key \"fields\": \"phone\" is not an Ometria contact field"), "{}", warnings[1]);
        assert!(
            warnings[2]
                .contains("field \"mapping\": must be the name of a mapping in mappings.json (a string), found 3"),
            "{}",
            warnings[2]
        );
        assert!(
            warnings[3]
                .starts_with("entry at index 6 (list_id \"g\"), field \"collection\": must be a collection name"),
            "{}",
            warnings[3]
        );
        assert!(warnings.iter().all(|w| w.ends_with("entry skipped until it is fixed")));
        // Without named mappings, naming one skips the entry, saying so.
        let s = scan(json!([{"list_id": "a", "mapping": "shop"}]));
        assert!(
            s.warnings[0]
                .to_string()
                .contains("mappings.json beside state.json defines none"),
            "{}",
            s.warnings[0]
        );
    }

    #[test]
    fn one_bad_entry_leaves_the_others_alone() {
        let s = scan(json!([{"list_id": "a"}, {"worker_count": 2}, {"list_id": "c"}]));
        let ids: Vec<_> = s.entries.iter().map(|e| e.key.list_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(s.warnings[0].index, 1);
    }
}
