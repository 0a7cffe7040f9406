//! The Ledger: the only code that touches `ledger.sqlite3` (issue 16),
//! on a thread of its own, as the StateKeeper owns `state.json`.
//!
//! It answers one message at a time from [`crate::ledger::LedgerStore`]:
//! lookups of a page of records, the records of one push answer, the
//! reconciliation's marks and its pages of unseen members, the run
//! history. A ledger that cannot be opened (the folder cannot hold a
//! database) leaves the importer working without one: every message
//! answers `Err`, so every record is pushed and nothing is skipped.

use std::path::PathBuf;

use actix::prelude::*;
use slog::{error, Logger};

use super::messages::{
    AskMappings, AskReconcileStatus, CountMembers, CountUnseen, Drain, EndRun, FindMembersByEmail, ForgetList,
    LookUpPrevious, LookUpUnchanged, MarkSeen, MarkUncertain, ReconcileStatus, RecordAccepted, RecordMapping,
    RemoveMembers, StartRun, Unseen,
};
use crate::ledger::{LedgerError, LedgerMember, LedgerStore, Previous, LEDGER_FILE_NAME};

pub struct Ledger {
    store: Result<LedgerStore, LedgerError>,
}

impl Ledger {
    /// Opens the ledger in `state_dir`; one that cannot be read is moved
    /// aside (an ERROR line says where) and started afresh.
    pub fn open(state_dir: PathBuf, now: i64, log: &Logger) -> Ledger {
        let mut store = match LedgerStore::open(&state_dir, now) {
            Ok((store, None)) => Ok(store),
            Ok((store, Some(aside))) => {
                error!(log, "ledger: {} could not be read; moved it to {} and started a new one: every list's next sync pushes all its members once.",
                    store.path().display(), aside.display());
                Ok(store)
            }
            Err(e) => {
                error!(
                    log,
                    "ledger: {e}; syncing without one: every record is pushed, and deleted members are not reconciled."
                );
                Err(e)
            }
        };
        if let Ok(store) = &mut store {
            // The runs a process that died left `running` (one importer per folder).
            if let Err(e) = store.close_unfinished_runs() {
                error!(log, "ledger: {e}");
            }
        }
        Ledger { store }
    }

    /// Starts it on a thread of its own.
    pub fn start_on_own_thread(state_dir: PathBuf, now: i64, log: Logger) -> Addr<Ledger> {
        SyncArbiter::start(1, move || Ledger::open(state_dir.clone(), now, &log))
    }

    /// Starts one that only reads the ledger in `state_dir`, on a thread
    /// of its own (`plan`, which writes nothing): without a ledger there,
    /// every message answers `Err`, and every record counts as new.
    pub fn start_read_only(state_dir: PathBuf) -> Addr<Ledger> {
        SyncArbiter::start(1, move || Ledger {
            store: LedgerStore::open_read_only(&state_dir),
        })
    }

    fn store(&mut self) -> Result<&mut LedgerStore, LedgerError> {
        match &mut self.store {
            Ok(store) => Ok(store),
            Err(e) => Err(LedgerError {
                path: e.path.clone(),
                source: rusqlite::Error::InvalidPath(e.path.clone()),
            }),
        }
    }
}

/// What a Ledger answers once closed at exit.
fn closed() -> LedgerError {
    LedgerError {
        path: LEDGER_FILE_NAME.into(),
        source: rusqlite::Error::InvalidQuery,
    }
}

impl Actor for Ledger {
    type Context = SyncContext<Self>;
}

impl Handler<LookUpUnchanged> for Ledger {
    type Result = Result<Vec<bool>, LedgerError>;
    fn handle(&mut self, m: LookUpUnchanged, _: &mut Self::Context) -> Self::Result {
        let records: Vec<(&str, u64)> = m.records.iter().map(|(id, hash)| (id.as_str(), *hash)).collect();
        self.store()?.unchanged(&m.list_id, &records)
    }
}

impl Handler<LookUpPrevious> for Ledger {
    type Result = Result<Vec<Option<Previous>>, LedgerError>;
    fn handle(&mut self, m: LookUpPrevious, _: &mut Self::Context) -> Self::Result {
        let records: Vec<(&str, u64)> = m.records.iter().map(|(id, hash)| (id.as_str(), *hash)).collect();
        self.store()?.previous(&m.list_id, &records)
    }
}

impl Handler<RecordAccepted> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: RecordAccepted, _: &mut Self::Context) -> Self::Result {
        self.store()?.record_accepted(&m.list_id, m.now, &m.records)
    }
}

impl Handler<MarkUncertain> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: MarkUncertain, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.store()?.mark_uncertain(&m.list_id, m.now, &ids)
    }
}

impl Handler<ForgetList> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: ForgetList, _: &mut Self::Context) -> Self::Result {
        self.store()?.forget_list(&m.list_id)
    }
}

impl Handler<MarkSeen> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: MarkSeen, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.store()?.mark_seen(&m.list_id, m.stamp, &ids)
    }
}

impl Handler<CountMembers> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: CountMembers, _: &mut Self::Context) -> Self::Result {
        self.store()?.count_members(&m.list_id)
    }
}

impl Handler<CountUnseen> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: CountUnseen, _: &mut Self::Context) -> Self::Result {
        self.store()?.count_unseen(&m.list_id, m.stamp, m.before)
    }
}

impl Handler<Unseen> for Ledger {
    type Result = Result<Vec<crate::ledger::LedgerMember>, LedgerError>;
    fn handle(&mut self, m: Unseen, _: &mut Self::Context) -> Self::Result {
        self.store()?
            .unseen(&m.list_id, m.stamp, m.before, &m.after_id, m.limit)
    }
}

impl Handler<FindMembersByEmail> for Ledger {
    type Result = Result<Vec<LedgerMember>, LedgerError>;
    fn handle(&mut self, m: FindMembersByEmail, _: &mut Self::Context) -> Self::Result {
        let emails: Vec<&str> = m.emails.iter().map(String::as_str).collect();
        self.store()?.members_by_email(&m.list_id, &emails)
    }
}

impl Handler<RemoveMembers> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: RemoveMembers, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.store()?.remove(&m.list_id, &ids)
    }
}

impl Handler<RecordMapping> for Ledger {
    type Result = ();
    fn handle(&mut self, m: RecordMapping, _: &mut Self::Context) {
        // A fingerprint not kept only means one more full read later.
        if let Ok(store) = self.store() {
            let _ = store.record_mapping(&m.list_id, m.rank, m.fingerprint, m.now);
        }
    }
}

impl Handler<AskMappings> for Ledger {
    type Result = Result<Vec<Option<u64>>, LedgerError>;
    fn handle(&mut self, m: AskMappings, _: &mut Self::Context) -> Self::Result {
        self.store()?.mapping_fingerprints(&m.entries)
    }
}

impl Handler<AskReconcileStatus> for Ledger {
    type Result = Result<Vec<ReconcileStatus>, LedgerError>;
    fn handle(&mut self, m: AskReconcileStatus, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        m.entries
            .into_iter()
            .map(|(list_id, rank, ledger_key)| {
                Ok(ReconcileStatus {
                    last_reconciled: store.last_reconciled(&list_id, rank)?,
                    holds_members: store.holds_members(&ledger_key)?,
                    list_id,
                    rank,
                })
            })
            .collect()
    }
}

impl Handler<StartRun> for Ledger {
    type Result = Result<i64, LedgerError>;
    fn handle(&mut self, m: StartRun, _: &mut Self::Context) -> Self::Result {
        self.store()?.start_run(&m.0)
    }
}

impl Handler<EndRun> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: EndRun, _: &mut Self::Context) -> Self::Result {
        self.store()?.end_run(m.id, &m.end)
    }
}

impl Handler<Drain> for Ledger {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        if let Ok(store) = std::mem::replace(&mut self.store, Err(closed())) {
            drop(store); // the last connection: SQLite checkpoints and removes the log
        }
    }
}
