//! The Ledger: the only code that touches `ledger.sqlite3` (issue 16),
//! on a thread of its own, as the StateKeeper owns `state.json`.
//!
//! It answers one message at a time from [`crate::ledger::LedgerStore`]:
//! lookups of a page of records, the records of one push answer, the
//! reconciliation's marks and its pages of unseen members, the run
//! history. A ledger that cannot be opened (the folder cannot hold a
//! database) leaves the importer working without one: every message
//! answers `Err`, so every record is pushed and nothing is skipped. One
//! that SQLite finds damaged while it runs is moved aside and started
//! afresh, as at start-up.

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
    /// Where the ledger is, and the log, for one that is found damaged
    /// while the importer runs: it is moved aside and started afresh. `None`
    /// for one that only reads (`plan`).
    heals: Option<(PathBuf, Logger)>,
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
        Ledger {
            store,
            heals: Some((state_dir, log.clone())),
        }
    }

    /// `result`, as it is; but if it says the file is damaged (a disk
    /// fault, a file written over while open), the ledger is moved aside
    /// and started afresh, with an ERROR line, as at start-up: the next
    /// syncs push everything once more instead of failing their look-ups.
    fn heal<T>(&mut self, result: Result<T, LedgerError>) -> Result<T, LedgerError> {
        let (Err(e), Some((dir, log))) = (&result, &self.heals) else {
            return result;
        };
        if !e.is_damage() {
            return result;
        }
        // Closed first: its checkpointer and connection let go of the file.
        drop(std::mem::replace(&mut self.store, Err(closed())));
        self.store = match LedgerStore::start_afresh(dir, chrono::Utc::now().timestamp()) {
            Ok((store, aside)) => {
                error!(log, "ledger: {e}; moved it to {} and started a new one: every list's next sync pushes all its members once.",
                    aside.display());
                Ok(store)
            }
            Err(again) => {
                error!(log, "ledger: {e}, and it could not be replaced: {again}; syncing without one: every record is pushed, and deleted members are not reconciled.");
                Err(again)
            }
        };
        result
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
            heals: None,
        })
    }

    /// `f` on the store, healed ([`Self::heal`]) if it finds the file damaged.
    fn with_store<T>(&mut self, f: impl FnOnce(&mut LedgerStore) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let result = self.store().and_then(f);
        self.heal(result)
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
        self.with_store(|store| store.unchanged(&m.list_id, &records))
    }
}

impl Handler<LookUpPrevious> for Ledger {
    type Result = Result<Vec<Option<Previous>>, LedgerError>;
    fn handle(&mut self, m: LookUpPrevious, _: &mut Self::Context) -> Self::Result {
        let records: Vec<(&str, u64)> = m.records.iter().map(|(id, hash)| (id.as_str(), *hash)).collect();
        self.with_store(|store| store.previous(&m.list_id, &records))
    }
}

impl Handler<RecordAccepted> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: RecordAccepted, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.record_accepted(&m.list_id, m.now, &m.records))
    }
}

impl Handler<MarkUncertain> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: MarkUncertain, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.with_store(|store| store.mark_uncertain(&m.list_id, m.now, &ids))
    }
}

impl Handler<ForgetList> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: ForgetList, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.forget_list(&m.list_id))
    }
}

impl Handler<MarkSeen> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: MarkSeen, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.with_store(|store| store.mark_seen(&m.list_id, m.stamp, &ids))
    }
}

impl Handler<CountMembers> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: CountMembers, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.count_members(&m.list_id))
    }
}

impl Handler<CountUnseen> for Ledger {
    type Result = Result<u64, LedgerError>;
    fn handle(&mut self, m: CountUnseen, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.count_unseen(&m.list_id, m.stamp, m.before))
    }
}

impl Handler<Unseen> for Ledger {
    type Result = Result<Vec<crate::ledger::LedgerMember>, LedgerError>;
    fn handle(&mut self, m: Unseen, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.unseen(&m.list_id, m.stamp, m.before, &m.after_id, m.limit))
    }
}

impl Handler<FindMembersByEmail> for Ledger {
    type Result = Result<Vec<LedgerMember>, LedgerError>;
    fn handle(&mut self, m: FindMembersByEmail, _: &mut Self::Context) -> Self::Result {
        let emails: Vec<&str> = m.emails.iter().map(String::as_str).collect();
        self.with_store(|store| store.members_by_email(&m.list_id, &emails))
    }
}

impl Handler<RemoveMembers> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: RemoveMembers, _: &mut Self::Context) -> Self::Result {
        let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
        self.with_store(|store| store.remove(&m.list_id, &ids))
    }
}

impl Handler<RecordMapping> for Ledger {
    type Result = ();
    fn handle(&mut self, m: RecordMapping, _: &mut Self::Context) {
        // A fingerprint not kept only means one more full read later.
        let _ = self.with_store(|store| store.record_mapping(&m.list_id, m.rank, m.fingerprint, m.now));
    }
}

impl Handler<AskMappings> for Ledger {
    type Result = Result<Vec<Option<u64>>, LedgerError>;
    fn handle(&mut self, m: AskMappings, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.mapping_fingerprints(&m.entries))
    }
}

impl Handler<AskReconcileStatus> for Ledger {
    type Result = Result<Vec<ReconcileStatus>, LedgerError>;
    fn handle(&mut self, m: AskReconcileStatus, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| {
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
        })
    }
}

impl Handler<StartRun> for Ledger {
    type Result = Result<i64, LedgerError>;
    fn handle(&mut self, m: StartRun, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.start_run(&m.0))
    }
}

impl Handler<EndRun> for Ledger {
    type Result = Result<(), LedgerError>;
    fn handle(&mut self, m: EndRun, _: &mut Self::Context) -> Self::Result {
        self.with_store(|store| store.end_run(m.id, &m.end))
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

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use slog::{o, Discard, Logger};

    use super::*;
    use crate::ledger::Accepted;

    #[test]
    fn a_ledger_found_damaged_while_running_is_moved_aside_and_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::root(Discard, o!());
        let ids: Vec<String> = (0..40_000).map(|i| format!("m{i:05}")).collect();
        {
            let mut ledger = Ledger::open(dir.path().into(), 1, &log);
            let accepted: Vec<Accepted> = ids
                .iter()
                .map(|id| Accepted {
                    member_id: id.clone(),
                    hash: 7,
                    email: format!("{id}@example.com"),
                    status: "subscribed".into(),
                })
                .collect();
            ledger
                .with_store(|store| store.record_accepted("L", 1, &accepted))
                .unwrap();
        }
        // Open (it checks the file), then written over while open, past the
        // header and the tables' first pages: a disk fault, say.
        let mut ledger = Ledger::open(dir.path().into(), 2, &log);
        let path = dir.path().join(LEDGER_FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(16 * 4096)).unwrap();
        file.write_all(&vec![0x55; (len - 16 * 4096) as usize]).unwrap();
        drop(file);

        let damaged = ids
            .chunks(500)
            .map(|chunk| {
                let records: Vec<(&str, u64)> = chunk.iter().map(|id| (id.as_str(), 7)).collect();
                ledger.with_store(|store| store.unchanged("L", &records))
            })
            .find_map(Result::err)
            .expect("a look-up meets the damage");
        assert!(damaged.is_damage(), "{damaged}");
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ledger.sqlite3.unreadable-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // A new, working ledger in its place.
        assert_eq!(ledger.with_store(|store| store.count_members("L")).unwrap(), 0);
        assert_eq!(
            ledger
                .with_store(|store| store.unchanged("L", &[("m00001", 7)]))
                .unwrap(),
            [false]
        );
    }

    #[test]
    fn ledgers_moved_aside_in_one_second_keep_a_name_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = vec![];
        for _ in 0..3 {
            std::fs::write(dir.path().join(LEDGER_FILE_NAME), b"not a ledger").unwrap();
            let (_, aside) = LedgerStore::open(dir.path(), 100).unwrap();
            names.push(aside.unwrap().file_name().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "ledger.sqlite3.unreadable-100",
                "ledger.sqlite3.unreadable-100-2",
                "ledger.sqlite3.unreadable-100-3"
            ]
        );
    }
}
