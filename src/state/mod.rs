//! The state file (SPEC §2): entries, validation, patching, atomic writes.
//!
//! Everything here is plain functions and types; the `StateKeeper` actor is
//! the only caller that writes.

mod document;
mod entry;
mod file;
mod timestamp;

pub use document::{DocumentError, PatchOutcome, StateDocument, SyncRecord};
pub use entry::{
    describe, scan_entries, scan_entries_with, Consequence, Entry, EntryKey, EntryScan, EntryWarning, OnDelete,
    DEFAULT_ITEMS_PER_REQUEST, DEFAULT_RECONCILE_SECONDS, DEFAULT_WORKER_COUNT, MAX_ITEMS_PER_REQUEST,
    MAX_WORKER_COUNT,
};
pub use file::{Fingerprint, Patched, StateFile, StateFileError, StateLock, STATE_FILE_NAME};
pub use timestamp::{format_for_log, format_for_mailchimp, format_timestamp, parse_timestamp};
