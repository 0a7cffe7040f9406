//! Every message the actors exchange, with its result type.

use std::time::Duration;

use actix::Message;

use crate::api::ApiError;
use crate::mailchimp::Repairs;
use bytes::Bytes;

use super::writer::WriteError;
use crate::ometria::PushOutcome;
use crate::state::{Entry, EntryKey, SyncRecord};
use crate::sync::{MemberKey, PageRequest};
use crate::transform::{DroppedValue, SkipReason};

/// Controller → itself, every tick: re-read the state file, start what is due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Signal, quit file or caller → Controller: start no more syncs and stop.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// What asked for it, for the log.
    pub reason: String,
    /// Skip the grace period (a second signal).
    pub immediate: bool,
}

/// Controller → StateKeeper: answer the valid entries of `state.json`.
/// With `reread` (each tick), the file is read again (results waiting in
/// memory written first); without (when a slot frees up), or if the file
/// cannot be read just now, the last good view answers, with the results
/// not yet written applied.
#[derive(Message)]
#[rtype(result = "Vec<Entry>")]
pub struct LoadEntries {
    pub reread: bool,
}

/// ListSync → StateKeeper and Controller: one sync of one entry ended.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct SyncFinished {
    pub key: EntryKey,
    /// On success, what the StateKeeper writes; on failure, why.
    pub result: Result<SyncRecord, String>,
}

/// Controller → StateKeeper before exit: write what can be written; the
/// answer is the number of results that could not be.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Flush;

/// Controller → ListSync: abandon the sync; nothing is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelSync;

/// ListSync → Fetcher: read one page and map its members.
#[derive(Message)]
#[rtype(result = "Result<FetchedPage, ApiError>")]
pub struct FetchPage(pub PageRequest);

/// One page, read and mapped.
#[derive(Debug)]
pub struct FetchedPage {
    pub request: PageRequest,
    pub total_items: u64,
    /// Every member on the page, in the order it came: when it last
    /// changed and its id, for the paging plan's checks.
    pub keys: Vec<MemberKey>,
    /// Beside each key, the member's contact encoded as the JSON record
    /// Ometria takes, or why the mapping could not send the member.
    pub records: Vec<Result<Bytes, SkipReason>>,
    /// Values left out of the records because Ometria would not take
    /// them, each with the position on the page of the member it is from.
    pub dropped: Vec<(usize, DroppedValue)>,
    /// What was repaired for the page to be read (a lone surrogate, bytes
    /// that are not UTF-8, a raw control character in a string, a name
    /// repeated in an object); nothing for a page read as it came.
    pub repairs: Repairs,
}

/// ListSync → Writer: push one batch of encoded records, as an
/// [`crate::ometria::Batcher`] makes them (≤ 100 records, ≤ 1 MiB).
#[derive(Message)]
#[rtype(result = "Result<PushOutcome, WriteError>")]
pub struct PushBatch(pub Vec<Bytes>);

/// ListSync → Fetcher or Writer: stop now, dropping any request in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWorker;

/// How long a run waits for the StateKeeper's last writes at exit.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
