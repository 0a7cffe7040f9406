//! Every message the actors exchange, with its result type.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};

use crate::api::ApiError;
use crate::ledger::{Accepted, LedgerError, LedgerMember, Previous, RunEnd, RunStart};
use crate::mailchimp::Repairs;
use bytes::Bytes;

use super::writer::WriteError;
use crate::ometria::PushOutcome;
use crate::state::{Entry, EntryKey, SyncRecord};
use crate::sync::{EntryPlan, MemberKey, PageRequest, Window};
use crate::transform::{DroppedValue, SkipReason};
use crate::webhook::WebhookEvent;

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

/// Controller → StateKeeper, each tick: read `state.json` again (results
/// waiting in memory written first) and answer its valid entries; if the
/// file cannot be read just now, the last good view answers, with the
/// results not yet written applied. Costs a read and a scan of the whole
/// file: once a tick, never once a sync (issue 19).
#[derive(Message)]
#[rtype(result = "LoadedEntries")]
pub struct LoadEntries;

/// What [`LoadEntries`] answers.
#[derive(Debug, Default)]
pub struct LoadedEntries {
    /// The valid entries, in file order.
    pub entries: Vec<Entry>,
    /// Entries skipped as invalid (each has its WARNING; SPEC §2).
    pub invalid: usize,
}

/// Controller → StateKeeper: the valid entries a selection names, from the
/// last good view with the results not yet written applied (the file is
/// not read). Costs what the selection holds, whatever the file's size:
/// what a sync that ends, or a webhook burst, has planned (issue 19).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Vec<Entry>")]
pub enum FindEntries {
    /// These entries, those still in the file and valid, in the order given.
    Keys(Vec<EntryKey>),
    /// Every valid entry of one list, in file order.
    List(String),
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
pub struct FetchPage {
    pub request: PageRequest,
    /// The sync's window as it stands (it may end earlier than when the
    /// sync started: see ListSync on Mailchimp's clock).
    pub window: Window,
}

/// One page, read and mapped.
#[derive(Debug)]
pub struct FetchedPage {
    pub request: PageRequest,
    /// The window it was read in.
    pub window: Window,
    /// Mailchimp's clock when it answered (its `Date` header), if given.
    pub server_time: Option<DateTime<Utc>>,
    pub total_items: u64,
    /// Every member on the page, in the order it came: when it last
    /// changed and its id, for the paging plan's checks.
    pub keys: Vec<MemberKey>,
    /// Beside each key, the member's contact encoded as the JSON record
    /// Ometria takes, or why the mapping could not send the member.
    pub records: Vec<Result<Bytes, SkipReason>>,
    /// Beside each record, what the member ledger keeps of it besides its
    /// hash (empty for a member not sent).
    pub facts: Vec<RecordFacts>,
    /// Values left out of the records because Ometria would not take
    /// them, each with the position on the page of the member it is from.
    pub dropped: Vec<(usize, DroppedValue)>,
    /// What was repaired for the page to be read (a lone surrogate, bytes
    /// that are not UTF-8, a raw control character in a string, a name
    /// repeated in an object); nothing for a page read as it came.
    pub repairs: Repairs,
}

/// What the member ledger keeps of a record besides its hash: the
/// contact's email and Mailchimp status, as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordFacts {
    /// The address sent (trimmed, as [`crate::transform::ometria_email`] takes it).
    pub email: String,
    /// Mailchimp's status (`properties.mailchimp_status`; empty if none).
    pub status: String,
}

/// ListSync → Writer: push one batch of encoded records, as an
/// [`crate::ometria::Batcher`] makes them (≤ 100 records, ≤ 1 MiB).
#[derive(Message)]
#[rtype(result = "Result<Pushed, WriteError>")]
pub struct PushBatch(pub Vec<Bytes>);

/// How Ometria answered one batch, in the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Ometria's counts (records refused alone count as rejected).
    pub outcome: PushOutcome,
    /// Beside each record of the batch, whether Ometria accepted it: the
    /// batch minus the records rejected or refused ([`crate::rejected::Delivery::accepted`]).
    pub accepted: Vec<bool>,
    /// An attempt's answer was lost (a timeout, a dropped connection, a
    /// 5xx): that attempt may still be applied by Ometria later.
    pub answer_lost: bool,
}

/// ListSync → Fetcher or Writer: stop now, dropping any request in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWorker;

/// How long a run waits for the StateKeeper's last writes at exit.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

// ---- The Ledger (src/actors/ledger.rs) ------------------------------------
//
// Every message answers `Err` when the ledger could not do it (a disk
// full, the file gone); callers go on as if the ledger held nothing:
// records are pushed, nothing is skipped.

/// ListSync → Ledger: for each `(member_id, hash)` of one page, whether
/// it equals what Ometria last accepted (then it is not pushed).
#[derive(Message)]
#[rtype(result = "Result<Vec<bool>, LedgerError>")]
pub struct LookUpUnchanged {
    pub list_id: String,
    pub records: Vec<(String, u64)>,
}

/// ListSync (planning, issue 17) → Ledger: what Ometria last accepted for
/// each `(member_id, hash)` of one page, read only.
#[derive(Message)]
#[rtype(result = "Result<Vec<Option<Previous>>, LedgerError>")]
pub struct LookUpPrevious {
    pub list_id: String,
    pub records: Vec<(String, u64)>,
}

/// ListSync (planning) → Planner: what the next sync of one entry would
/// send, or why its reads failed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PlanFinished {
    pub key: EntryKey,
    pub result: Result<EntryPlan, String>,
}

/// ListSync → Ledger: a successful sync read every member of the entry
/// with the mapping of this fingerprint (issue 17).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordMapping {
    pub list_id: String,
    pub rank: u32,
    pub fingerprint: u64,
    pub now: i64,
}

/// Controller → Ledger: the mapping fingerprint of each entry's last full
/// read (`None` for an entry it holds none for), in the order asked.
#[derive(Message)]
#[rtype(result = "Result<Vec<Option<u64>>, LedgerError>")]
pub struct AskMappings {
    pub entries: Vec<(String, u32)>,
}

/// ListSync → Ledger: records of one push answer that Ometria accepted.
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct RecordAccepted {
    pub list_id: String,
    pub now: i64,
    pub records: Vec<Accepted>,
}

/// ListSync → Ledger: members of a push whose answer was lost (it may
/// still be applied later, over a newer push): pushed again until a push
/// of theirs is taken [`crate::ledger::LATE_WRITE_SECONDS`] later.
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct MarkUncertain {
    pub list_id: String,
    pub now: i64,
    pub ids: Vec<String>,
}

/// `forget` → Ledger: forget every member of a list (push all again).
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct ForgetList {
    pub list_id: String,
}

/// Reconciliation → Ledger: members of one page of ids, seen by `stamp`.
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct MarkSeen {
    pub list_id: String,
    pub stamp: i64,
    pub ids: Vec<String>,
}

/// Reconciliation → Ledger: how many members the ledger holds for a list.
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct CountMembers {
    pub list_id: String,
}

/// Reconciliation → Ledger: how many members `stamp` did not see, of
/// those accepted before `before` (unix seconds).
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct CountUnseen {
    pub list_id: String,
    pub stamp: i64,
    pub before: i64,
}

/// Reconciliation → Ledger: the next `limit` members `stamp` did not see,
/// after `after_id` in id order.
#[derive(Message)]
#[rtype(result = "Result<Vec<LedgerMember>, LedgerError>")]
pub struct Unseen {
    pub list_id: String,
    pub stamp: i64,
    pub before: i64,
    pub after_id: String,
    pub limit: u32,
}

/// Deletion → Ledger: the members of a ledger key whose address is one
/// of `emails` (ASCII case ignored), each once.
#[derive(Message)]
#[rtype(result = "Result<Vec<LedgerMember>, LedgerError>")]
pub struct FindMembersByEmail {
    pub list_id: String,
    pub emails: Vec<String>,
}

/// Reconciliation, Deletion → Ledger: members opted out as deleted leave the ledger.
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct RemoveMembers {
    pub list_id: String,
    pub ids: Vec<String>,
}

/// Controller → Ledger: for each entry (`list_id`, rank, ledger key),
/// when its last successful reconciliation (or LOAD) started (unix
/// seconds) and whether the ledger holds any member under its ledger key —
/// what decides whether a reconciliation is due.
#[derive(Message)]
#[rtype(result = "Result<Vec<ReconcileStatus>, LedgerError>")]
pub struct AskReconcileStatus {
    pub entries: Vec<(String, u32, String)>,
}

/// One entry's answer to [`AskReconcileStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileStatus {
    pub list_id: String,
    pub rank: u32,
    /// `started_at` of its newest `succeeded` RECONCILE or LOAD run, if any.
    pub last_reconciled: Option<i64>,
    pub holds_members: bool,
}

/// Reconciliation → Controller: one reconciliation of one entry ended.
/// It never moves the entry's cursor: the StateKeeper is not told.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct ReconcileFinished {
    pub key: EntryKey,
    /// On success, the members found deleted and handled; on failure, why.
    pub result: Result<u64, ReconcileFailure>,
}

/// Why a reconciliation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileFailure {
    pub error: String,
    /// The fraction guard tripped: more members vanished than
    /// `IMPORTER_MAX_DELETE_FRACTION` allows, and nothing was done.
    pub held: bool,
}

/// Importer → Ledger at exit: answered once every message sent to the
/// Ledger before it was handled (the ledger's mailbox is first in, first
/// out), so that `once` exits with its syncs' rows written. The ledger is
/// then closed: SQLite moves its write-ahead log into the file and removes
/// it, leaving `ledger.sqlite3` whole on its own (and `plan` or `history`
/// able to read it without creating anything beside it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// ListSync → Ledger: a sync starts; answers its run id in the history.
#[derive(Message)]
#[rtype(result = "Result<i64, LedgerError>")]
pub struct StartRun(pub RunStart);

/// ListSync → Ledger: a sync ended.
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct EndRun {
    pub id: i64,
    pub end: RunEnd,
}

// ---- Webhooks (src/webhook/receiver.rs) -----------------------------------

/// Webhook receiver → Controller: Mailchimp told of an event of a list
/// (issue 18). An event that may change a member makes the list's entries
/// due for a SYNC within the debounce; every one is the list's last event
/// in the metrics.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct ListChanged {
    pub event: WebhookEvent,
    /// When the receiver took it (our clock, not Mailchimp's `fired_at`).
    pub received_at: DateTime<Utc>,
}

/// Deletion → Controller: a Deletion of members a webhook said were
/// deleted from the entry's list ended. The Controller starts the next
/// one of the same ledger key, if addresses came meanwhile.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct DeletionFinished {
    pub entry: Entry,
    /// The addresses it was given.
    pub emails: Vec<String>,
    /// What became of them, or why they are left to the reconciliation.
    pub result: Result<DeletionTally, String>,
}

/// What a Deletion did with its addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletionTally {
    /// Contacts Ometria took opted out (and the ledger forgot).
    pub opted_out: u64,
    /// Contacts Ometria rejected (kept in the ledger for the reconciliation).
    pub rejected: u64,
    /// Addresses the ledger holds no member of: nothing to opt out.
    pub not_in_ledger: u64,
    /// Members Mailchimp still holds (a late or foreign event): left to the SYNC.
    pub in_mailchimp: u64,
}
