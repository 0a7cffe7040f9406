//! The member ledger (issue 16): per list and member, what Ometria last
//! accepted, and one row per sync of the run history, in
//! `<state dir>/ledger.sqlite3`.
//!
//! SQLite (bundled, so no system library is needed) in WAL mode with
//! `synchronous=NORMAL`: a transaction either happened or did not, whatever
//! moment the process is killed at, and `history` reads the file while the
//! daemon writes it. Only the `Ledger` actor writes it, on a thread of its
//! own; this module is the plain store it uses, and `history` opens it
//! read-only. A [`Checkpointer`] thread folds the write-ahead log into the
//! file, so that the Ledger's thread, which a sync's page look-ups wait
//! for, does not wait for the disk.
//!
//! The ledger is a cache of what Ometria holds, never the user's contract:
//! deleting the file is always safe (the next sync of each list pushes
//! every member once and fills it again), and an unreadable file is moved
//! aside and started afresh ([`LedgerStore::open`]).
//!
//! Tables:
//! - `members (list_id, member_id)` → `record_hash` (the xxh3-64 of the
//!   record Ometria last accepted, as a signed 64-bit integer), `email`,
//!   `status`, `accepted_at` and `last_seen` (unix seconds), and
//!   `seen_stamp` (the reconciliation that last saw it, 0 if none).
//! - `runs`: one row per sync ([`RunStart`], [`RunEnd`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use xxhash_rust::xxh3::xxh3_64;

/// What a path must escape in an SQLite URI (`file:…`): `?` and `#` end
/// the path, `%` starts an escape; the rest is taken as it is.
const URI_PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'?').add(b'#').add(b'%');

/// The ledger's file name in the state folder.
pub const LEDGER_FILE_NAME: &str = "ledger.sqlite3";

/// The schema this code writes (`PRAGMA user_version`). A file with
/// another version is moved aside and started afresh.
const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another process's lock (a `history` or
/// `ledger forget` while the daemon writes) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after a push whose answer was lost (a timeout, a dropped
/// connection, a 5xx) that push may still be applied by Ometria, over a
/// newer one: until a record of the member is accepted this long after
/// it, the member is not taken as unchanged (it is pushed again), as the
/// overlap every SYNC re-reads then repairs such late writes.
pub const LATE_WRITE_SECONDS: i64 = 15 * 60;

/// The SQL of whether a member's last accepted record is settled (over a
/// `members` row): no push answer of it was lost, or one was taken
/// [`LATE_WRITE_SECONDS`] after the lost one — the rule both
/// [`LedgerStore::unchanged`] and [`LedgerStore::previous`] apply.
fn settled() -> String {
    format!("(uncertain_since IS NULL OR accepted_at >= uncertain_since + {LATE_WRITE_SECONDS})")
}

/// How often the ledger's checkpointer folds the write-ahead log into the
/// file ([`Checkpointer`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The write-ahead log's length, in pages (4 KiB each), past which the
/// writing connection folds it in itself, after a commit: a bound for when
/// the checkpointer cannot keep up (SQLite's `wal_autocheckpoint`, whose
/// default of 1,000 would fold it in on the Ledger's thread every 4 MiB).
const WAL_BOUND_PAGES: i64 = 16_384;

/// Ids per statement when looking members up: well below SQLite's limit
/// of 32,766 bound parameters.
const IDS_PER_STATEMENT: usize = 500;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS members (
    list_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    record_hash INTEGER NOT NULL,
    email TEXT NOT NULL,
    status TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    seen_stamp INTEGER NOT NULL DEFAULT 0,
    uncertain_since INTEGER,
    PRIMARY KEY (list_id, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    list_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    t0 INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_seconds REAL,
    members_read INTEGER,
    pushed INTEGER,
    unchanged INTEGER,
    rejected INTEGER,
    skipped INTEGER,
    deleted INTEGER,
    result TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS members_by_email ON members (list_id, email COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS runs_by_list ON runs (list_id, id);
CREATE TABLE IF NOT EXISTS entry_mappings (
    list_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (list_id, rank)
) WITHOUT ROWID;
";

/// What went wrong with the ledger: the path and SQLite's message.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

impl LedgerError {
    /// Whether SQLite found the file damaged (`SQLITE_CORRUPT`) or not a
    /// database at all (`SQLITE_NOTADB`): what is in it can no longer be
    /// trusted, so it is moved aside ([`LedgerStore::start_afresh`]).
    pub fn is_damage(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }
}

/// The hash kept for a record: xxh3-64 of its bytes as sent to Ometria.
pub fn record_hash(record: &[u8]) -> u64 {
    xxh3_64(record)
}

/// A record Ometria accepted, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// `unique_email_id`: the contact's id in Ometria.
    pub member_id: String,
    /// [`record_hash`] of the record sent.
    pub hash: u64,
    pub email: String,
    /// Mailchimp's status as sent (`properties.mailchimp_status`).
    pub status: String,
}

/// What Ometria last accepted for a member, as `plan` compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    /// The record is the one Ometria last accepted: it would not be pushed.
    pub unchanged: bool,
    /// Mailchimp's status sent then (`properties.mailchimp_status`).
    pub status: String,
}

/// A member the ledger holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerMember {
    pub member_id: String,
    pub email: String,
    pub status: String,
}

/// The start of one sync, for the run history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStart {
    pub list_id: String,
    /// The entry's position among the state file's entries with this list id.
    pub rank: u32,
    /// `LOAD`, `SYNC` or `RECONCILE`.
    pub kind: String,
    /// The sync's start time `T0` (unix seconds).
    pub t0: i64,
    /// When it started (unix seconds).
    pub started_at: i64,
}

/// The end of one sync, for the run history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunEnd {
    pub duration_seconds: f64,
    pub members_read: u64,
    /// Records Ometria accepted.
    pub pushed: u64,
    /// Records not pushed: equal to what Ometria last accepted.
    pub unchanged: u64,
    pub rejected: u64,
    pub skipped: u64,
    /// Members opted out as deleted in Mailchimp.
    pub deleted: u64,
    /// `succeeded`, `failed` or `abandoned` (stopped before it ended).
    pub result: String,
    pub error: Option<String>,
}

/// One row of the run history.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub start: RunStart,
    /// `None` while the sync runs (or if the process died during it).
    pub end: Option<RunEnd>,
}

/// The ledger file, open.
pub struct LedgerStore {
    conn: Connection,
    path: PathBuf,
    /// Set when open to write by the Ledger ([`LedgerStore::open`]).
    checkpointer: Option<Checkpointer>,
}

impl Drop for LedgerStore {
    fn drop(&mut self) {
        // Its connection closes first, so that the writer's is the last:
        // SQLite then folds the log into the file and removes it.
        self.checkpointer.take();
    }
}

/// A thread with a connection of its own that folds the write-ahead log
/// into the ledger file every [`CHECKPOINT_EVERY`] (a `PASSIVE`
/// checkpoint, which never waits for the writer nor makes it wait). It
/// takes the checkpoints' writes and fsyncs off the Ledger's thread, so a
/// slow disk does not hold up the page look-ups a sync waits for.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts it on the ledger at `path`. Errors: the file cannot be opened
    /// a second time (then the writer's own checkpoints, past
    /// [`WAL_BOUND_PAGES`], still keep the log bounded).
    fn start(path: &Path) -> Result<Checkpointer, rusqlite::Error> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    // Busy or failed: the next one, or the writer's bound, folds it in.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LedgerStore {
    /// Opens (or creates) `<dir>/ledger.sqlite3` for writing. A file that
    /// is not a ledger this code can use (corrupt, not SQLite, another
    /// schema version) is renamed to `ledger.sqlite3.unreadable-<unix
    /// seconds>` and a new one created; the path moved to is returned so
    /// the caller can log it. Errors: the folder cannot hold a database.
    pub fn open(dir: &Path, now: i64) -> Result<(LedgerStore, Option<PathBuf>), LedgerError> {
        let path = dir.join(LEDGER_FILE_NAME);
        match Self::open_at(&path) {
            Ok(store) => Ok((store, None)),
            Err(_) if path.exists() => Self::start_afresh(dir, now).map(|(store, aside)| (store, Some(aside))),
            Err(e) => Err(e),
        }
    }

    /// Moves `<dir>/ledger.sqlite3` (with its `-wal` and `-shm`) aside, to
    /// `ledger.sqlite3.unreadable-<now>` (`-<now>-2`, `-3`… if taken, so
    /// that no file moved aside is ever replaced), and opens a new one.
    /// Returns it and where the old one went. Errors: the file cannot be
    /// moved, or the folder cannot hold a database.
    pub fn start_afresh(dir: &Path, now: i64) -> Result<(LedgerStore, PathBuf), LedgerError> {
        let path = dir.join(LEDGER_FILE_NAME);
        let taken = |name: &str| {
            ["", "-wal", "-shm"]
                .iter()
                .any(|s| dir.join(format!("{name}{s}")).exists())
        };
        let name = (1..)
            .map(|n| match n {
                1 => format!("{LEDGER_FILE_NAME}.unreadable-{now}"),
                n => format!("{LEDGER_FILE_NAME}.unreadable-{now}-{n}"),
            })
            .find(|name| !taken(name))
            .expect("some name is free");
        let aside = dir.join(&name);
        std::fs::rename(&path, &aside).map_err(|e| LedgerError {
            path: path.clone(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        for suffix in ["-wal", "-shm"] {
            let side = dir.join(format!("{LEDGER_FILE_NAME}{suffix}"));
            let _ = std::fs::rename(&side, dir.join(format!("{name}{suffix}")));
        }
        Ok((Self::open_at(&path)?, aside))
    }

    fn open_at(path: &Path) -> Result<LedgerStore, LedgerError> {
        let error = |source| LedgerError {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(error)?;
        // A page that cannot be read shows here, before anything is trusted.
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(error)?;
        if check != "ok" || (version != 0 && version != SCHEMA_VERSION) {
            return Err(error(rusqlite::Error::InvalidQuery));
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(error)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(error)?;
        conn.execute_batch(SCHEMA).map_err(error)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(error)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BOUND_PAGES)
            .map_err(error)?;
        let checkpointer = match Checkpointer::start(path) {
            Ok(checkpointer) => Some(checkpointer),
            // Without it, the writer folds the log in by the default rule.
            Err(_) => {
                conn.pragma_update(None, "wal_autocheckpoint", 1000).map_err(error)?;
                None
            }
        };
        Ok(LedgerStore {
            conn,
            path: path.to_owned(),
            checkpointer,
        })
    }

    /// Opens an existing ledger to read only (`history`, `plan`, `check`).
    /// A ledger with no write-ahead log beside it (no importer has it open)
    /// is opened immutable, so that not even SQLite's `-shm` index is
    /// created beside it; with one, SQLite must share the writer's index.
    /// Errors: no ledger there, or not one this code can read.
    pub fn open_read_only(dir: &Path) -> Result<LedgerStore, LedgerError> {
        let path = dir.join(LEDGER_FILE_NAME);
        let error = |source| LedgerError {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            return Err(error(rusqlite::Error::InvalidPath(path.clone())));
        }
        let wal = dir.join(format!("{LEDGER_FILE_NAME}-wal"));
        let conn = if wal.exists() {
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(error)?
        } else {
            let encoded = percent_encoding::utf8_percent_encode(&path.to_string_lossy(), URI_PATH).to_string();
            Connection::open_with_flags(
                format!("file:{encoded}?immutable=1"),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(error)?
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        Ok(LedgerStore {
            conn,
            path: path.clone(),
            checkpointer: None,
        })
    }

    /// Opens an existing ledger to write, without creating one or moving
    /// it aside (`forget`, while the daemon may hold it: SQLite's locks and
    /// the busy timeout take turns with it). Errors: no ledger there, or
    /// not one this code can use.
    pub fn open_existing(dir: &Path) -> Result<LedgerStore, LedgerError> {
        let path = dir.join(LEDGER_FILE_NAME);
        let error = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(error)?;
        if version != SCHEMA_VERSION {
            return Err(error(rusqlite::Error::InvalidQuery));
        }
        Ok(LedgerStore {
            conn,
            path: path.clone(),
            checkpointer: None,
        })
    }

    /// Marks the runs still `running` as `abandoned`: called when the
    /// importer starts, as only one importer runs on a state folder (its
    /// lock), so a run left `running` belongs to a process that died.
    /// Returns how many.
    pub fn close_unfinished_runs(&mut self) -> Result<u64, LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET result = 'abandoned', error = 'the importer stopped before this sync ended'
                 WHERE result = 'running'",
                [],
            )
            .map(|n| n as u64)
            .map_err(|e| error_at(&self.path, e))
    }

    /// Where the ledger is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For each `(member_id, hash)` of list `list_id`, whether the ledger
    /// holds that member with that hash: the record is what Ometria last
    /// accepted, and need not be pushed. One call per page: `records` is
    /// at most a page long. It only reads: a re-read of an unchanged list
    /// writes nothing (a member's `last_seen` is moved by a push Ometria
    /// accepts and by a reconciliation that finds it, [`Self::mark_seen`]).
    pub fn unchanged(&self, list_id: &str, records: &[(&str, u64)]) -> Result<Vec<bool>, LedgerError> {
        let mut known = std::collections::HashMap::with_capacity(records.len());
        for chunk in records.chunks(IDS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            // A member whose push answer was lost is not taken as known
            // until a push of it is taken long enough after.
            let select = format!(
                "SELECT member_id, record_hash FROM members WHERE list_id = ? AND member_id IN ({marks})
                 AND {}",
                settled()
            );
            let mut statement = self.conn.prepare_cached(&select).map_err(|e| error_at(&self.path, e))?;
            let ids = chunk.iter().map(|(id, _)| *id);
            let rows = statement
                .query_map(params_from_iter(std::iter::once(list_id).chain(ids)), |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(|e| error_at(&self.path, e))?;
            for row in rows {
                let (id, hash) = row.map_err(|e| error_at(&self.path, e))?;
                known.insert(id, hash as u64);
            }
        }
        Ok(records.iter().map(|(id, hash)| known.get(*id) == Some(hash)).collect())
    }

    /// For each `(member_id, hash)` of list `list_id`, what Ometria last
    /// accepted for that member: `None` for a member it has not taken from
    /// this list, or whether the record is unchanged (by the rule of
    /// [`Self::unchanged`]) and the Mailchimp status sent then. Reads only
    /// (`plan`, issue 17).
    pub fn previous(&self, list_id: &str, records: &[(&str, u64)]) -> Result<Vec<Option<Previous>>, LedgerError> {
        let mut known = std::collections::HashMap::with_capacity(records.len());
        for chunk in records.chunks(IDS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let select = format!(
                "SELECT member_id, record_hash, status, {}
                 FROM members WHERE list_id = ? AND member_id IN ({marks})",
                settled()
            );
            let mut statement = self.conn.prepare_cached(&select).map_err(|e| error_at(&self.path, e))?;
            let ids = chunk.iter().map(|(id, _)| *id);
            let rows = statement
                .query_map(params_from_iter(std::iter::once(list_id).chain(ids)), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, String>(2)?,
                        row.get::<_, bool>(3)?,
                    ))
                })
                .map_err(|e| error_at(&self.path, e))?;
            for row in rows {
                let (id, hash, status, settled) = row.map_err(|e| error_at(&self.path, e))?;
                known.insert(id, (hash, status, settled));
            }
        }
        Ok(records
            .iter()
            .map(|(id, hash)| {
                known.get(*id).map(|(known_hash, status, settled)| Previous {
                    unchanged: *settled && known_hash == hash,
                    status: status.clone(),
                })
            })
            .collect())
    }

    /// Records what Ometria accepted for list `list_id` at `now`: the
    /// members' hashes are replaced, their `last_seen` set. One call per
    /// push answer, so that a sync killed later keeps what was done.
    pub fn record_accepted(&mut self, list_id: &str, now: i64, records: &[Accepted]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction().map_err(|e| error_at(&self.path, e))?;
        {
            let mut statement = tx
                .prepare_cached(
                    "INSERT INTO members (list_id, member_id, record_hash, email, status, accepted_at, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (list_id, member_id) DO UPDATE SET record_hash = excluded.record_hash,
                        email = excluded.email, status = excluded.status,
                        accepted_at = excluded.accepted_at, last_seen = excluded.last_seen",
                )
                .map_err(|e| error_at(&self.path, e))?;
            for r in records {
                statement
                    .execute(params![list_id, r.member_id, r.hash as i64, r.email, r.status, now])
                    .map_err(|e| error_at(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| error_at(&self.path, e))
    }

    /// Marks the members `ids` of list `list_id` as maybe overwritten
    /// later by a push whose answer was lost at `now` (see
    /// [`LATE_WRITE_SECONDS`]). Ids the ledger does not hold are ignored:
    /// they are pushed anyway.
    pub fn mark_uncertain(&mut self, list_id: &str, now: i64, ids: &[&str]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction().map_err(|e| error_at(&self.path, e))?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let update = format!("UPDATE members SET uncertain_since = ? WHERE list_id = ? AND member_id IN ({marks})");
            let now_text = now.to_string();
            tx.prepare_cached(&update)
                .and_then(|mut s| {
                    s.execute(params_from_iter(
                        [now_text.as_str(), list_id].into_iter().chain(chunk.iter().copied()),
                    ))
                })
                .map_err(|e| error_at(&self.path, e))?;
        }
        tx.commit().map_err(|e| error_at(&self.path, e))
    }

    /// Forgets every member of list `list_id`, so that its next sync pushes
    /// them all again. Returns how many were forgotten.
    pub fn forget_list(&mut self, list_id: &str) -> Result<u64, LedgerError> {
        self.conn
            .execute(
                "DELETE FROM members WHERE list_id = ?1 OR substr(list_id, 1, length(?1) + 1) = ?1 || char(31)",
                params![list_id],
            )
            .map(|n| n as u64)
            .map_err(|e| error_at(&self.path, e))
    }

    /// Members of list `list_id` the ledger holds.
    pub fn count_members(&self, list_id: &str) -> Result<u64, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM members WHERE list_id = ?1",
                params![list_id],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| error_at(&self.path, e))
    }

    /// Marks the members `ids` of list `list_id` as seen by the
    /// reconciliation `stamp` (its `T0` in unix seconds, which no earlier
    /// reconciliation of the list used), which is also their `last_seen`.
    /// Ids the ledger does not hold are ignored.
    pub fn mark_seen(&mut self, list_id: &str, stamp: i64, ids: &[&str]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction().map_err(|e| error_at(&self.path, e))?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let update = format!(
                "UPDATE members SET seen_stamp = ?1, last_seen = ?1 WHERE list_id = ?2 AND member_id IN ({marks})"
            );
            let stamp_text = stamp.to_string();
            tx.prepare_cached(&update)
                .and_then(|mut s| {
                    s.execute(params_from_iter(
                        [stamp_text.as_str(), list_id].into_iter().chain(chunk.iter().copied()),
                    ))
                })
                .map_err(|e| error_at(&self.path, e))?;
        }
        tx.commit().map_err(|e| error_at(&self.path, e))
    }

    /// How many members of list `list_id` the reconciliation `stamp` did
    /// not see, of those accepted before `before` (members accepted during
    /// the reconciliation may have been added after its read).
    pub fn count_unseen(&self, list_id: &str, stamp: i64, before: i64) -> Result<u64, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM members WHERE list_id = ?1 AND seen_stamp != ?2 AND accepted_at < ?3",
                params![list_id, stamp, before],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| error_at(&self.path, e))
    }

    /// Up to `limit` members of list `list_id` the reconciliation `stamp`
    /// did not see (accepted before `before`), in id order after
    /// `after_id`: a page at a time, never the whole list in memory.
    pub fn unseen(
        &self,
        list_id: &str,
        stamp: i64,
        before: i64,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<LedgerMember>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT member_id, email, status FROM members
                 WHERE list_id = ?1 AND seen_stamp != ?2 AND accepted_at < ?3 AND member_id > ?4
                 ORDER BY member_id LIMIT ?5",
            )
            .map_err(|e| error_at(&self.path, e))?;
        let rows = statement
            .query_map(params![list_id, stamp, before, after_id, limit], |row| {
                Ok(LedgerMember {
                    member_id: row.get(0)?,
                    email: row.get(1)?,
                    status: row.get(2)?,
                })
            })
            .map_err(|e| error_at(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| error_at(&self.path, e))
    }

    /// Removes the members `ids` of list `list_id` (deleted in Mailchimp
    /// and opted out in Ometria).
    pub fn remove(&mut self, list_id: &str, ids: &[&str]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction().map_err(|e| error_at(&self.path, e))?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let marks = vec!["?"; chunk.len()].join(",");
            let delete = format!("DELETE FROM members WHERE list_id = ? AND member_id IN ({marks})");
            tx.prepare_cached(&delete)
                .and_then(|mut s| s.execute(params_from_iter(std::iter::once(list_id).chain(chunk.iter().copied()))))
                .map_err(|e| error_at(&self.path, e))?;
        }
        tx.commit().map_err(|e| error_at(&self.path, e))
    }

    /// The members of list `list_id` whose address is one of `emails`
    /// (ASCII case ignored, as Mailchimp folds it in its subscriber hash),
    /// each once, in the order of `emails`: how a webhook's `data[email]`
    /// finds the contact id Ometria holds, which the event does not carry
    /// (its `data[id]` is the subscriber hash, not the `unique_email_id`).
    /// One indexed lookup per address (`members_by_email`).
    pub fn members_by_email(&self, list_id: &str, emails: &[&str]) -> Result<Vec<LedgerMember>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT member_id, email, status FROM members
                 WHERE list_id = ?1 AND email = ?2 COLLATE NOCASE ORDER BY member_id",
            )
            .map_err(|e| error_at(&self.path, e))?;
        let mut found: Vec<LedgerMember> = vec![];
        for email in emails {
            let rows = statement
                .query_map(params![list_id, email], |row| {
                    Ok(LedgerMember {
                        member_id: row.get(0)?,
                        email: row.get(1)?,
                        status: row.get(2)?,
                    })
                })
                .map_err(|e| error_at(&self.path, e))?;
            for member in rows {
                let member = member.map_err(|e| error_at(&self.path, e))?;
                if !found.iter().any(|m| m.member_id == member.member_id) {
                    found.push(member);
                }
            }
        }
        Ok(found)
    }

    /// When the newest full read of the entry (`list_id`, `rank`) that
    /// succeeded started (unix seconds): its newest succeeded `RECONCILE` or `LOAD` row in
    /// `runs` — a LOAD reads every member, so the ledger it fills needs no
    /// reconciliation until `reconcile_seconds` after it. `None` if there
    /// is neither.
    pub fn last_reconciled(&self, list_id: &str, rank: u32) -> Result<Option<i64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT MAX(started_at) FROM runs
                 WHERE list_id = ?1 AND rank = ?2 AND kind IN ('RECONCILE', 'LOAD') AND result = 'succeeded'",
                params![list_id, rank],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map_err(|e| error_at(&self.path, e))
    }

    /// Keeps the mapping fingerprint of entry (`list_id`, `rank`) after a
    /// successful sync that read every member with it (issue 17).
    pub fn record_mapping(&mut self, list_id: &str, rank: u32, fingerprint: u64, now: i64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO entry_mappings (list_id, rank, fingerprint, read_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (list_id, rank) DO UPDATE SET fingerprint = excluded.fingerprint, read_at = excluded.read_at",
                params![list_id, rank, fingerprint as i64, now],
            )
            .map(|_| ())
            .map_err(|e| error_at(&self.path, e))
    }

    /// The mapping fingerprint of each entry's last full read, for the
    /// entries (`list_id`, `rank`) it has one for.
    pub fn mapping_fingerprints(&self, entries: &[(String, u32)]) -> Result<Vec<Option<u64>>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT fingerprint FROM entry_mappings WHERE list_id = ?1 AND rank = ?2")
            .map_err(|e| error_at(&self.path, e))?;
        entries
            .iter()
            .map(|(list_id, rank)| {
                statement
                    .query_row(params![list_id, rank], |row| row.get::<_, i64>(0))
                    .optional()
                    .map(|f| f.map(|f| f as u64))
                    .map_err(|e| error_at(&self.path, e))
            })
            .collect()
    }

    /// Whether the ledger holds any member of list `list_id` (one lookup
    /// of the primary key, however large the list).
    pub fn holds_members(&self, list_id: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM members WHERE list_id = ?1)",
                params![list_id],
                |row| row.get::<_, bool>(0),
            )
            .map_err(|e| error_at(&self.path, e))
    }

    /// Adds a run to the history; returns its id for [`Self::end_run`].
    pub fn start_run(&mut self, run: &RunStart) -> Result<i64, LedgerError> {
        self.conn
            .execute(
                "INSERT INTO runs (list_id, rank, kind, t0, started_at, result) VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                params![run.list_id, run.rank, run.kind, run.t0, run.started_at],
            )
            .map_err(|e| error_at(&self.path, e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Completes run `id` of the history.
    pub fn end_run(&mut self, id: i64, end: &RunEnd) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET duration_seconds = ?2, members_read = ?3, pushed = ?4, unchanged = ?5,
                    rejected = ?6, skipped = ?7, deleted = ?8, result = ?9, error = ?10 WHERE id = ?1",
                params![
                    id,
                    end.duration_seconds,
                    end.members_read as i64,
                    end.pushed as i64,
                    end.unchanged as i64,
                    end.rejected as i64,
                    end.skipped as i64,
                    end.deleted as i64,
                    end.result,
                    end.error
                ],
            )
            .map(|_| ())
            .map_err(|e| error_at(&self.path, e))
    }

    /// The newest `limit` runs, of list `list_id` only if given, newest first.
    pub fn history(&self, list_id: Option<&str>, limit: u32) -> Result<Vec<RunRow>, LedgerError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, list_id, rank, kind, t0, started_at, duration_seconds, members_read, pushed,
                    unchanged, rejected, skipped, deleted, result, error
                 FROM runs WHERE ?1 IS NULL OR list_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| error_at(&self.path, e))?;
        let rows = statement
            .query_map(params![list_id, limit], |row| {
                let result: String = row.get(13)?;
                let count = |i| row.get::<_, Option<i64>>(i).map(|n| n.unwrap_or(0) as u64);
                let end = match result.as_str() {
                    "running" => None,
                    _ => Some(RunEnd {
                        duration_seconds: row.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                        members_read: count(7)?,
                        pushed: count(8)?,
                        unchanged: count(9)?,
                        rejected: count(10)?,
                        skipped: count(11)?,
                        deleted: count(12)?,
                        result,
                        error: row.get(14)?,
                    }),
                };
                Ok(RunRow {
                    id: row.get(0)?,
                    start: RunStart {
                        list_id: row.get(1)?,
                        rank: row.get(2)?,
                        kind: row.get(3)?,
                        t0: row.get(4)?,
                        started_at: row.get(5)?,
                    },
                    end,
                })
            })
            .map_err(|e| error_at(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| error_at(&self.path, e))
    }

    /// The hash the ledger holds for one member, if any (tests, `plan`).
    pub fn hash_of(&self, list_id: &str, member_id: &str) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT record_hash FROM members WHERE list_id = ?1 AND member_id = ?2",
                params![list_id, member_id],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|h| h.map(|h| h as u64))
            .map_err(|e| error_at(&self.path, e))
    }
}

fn error_at(path: &Path, source: rusqlite::Error) -> LedgerError {
    LedgerError {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(id: &str, hash: u64) -> Accepted {
        Accepted {
            member_id: id.into(),
            hash,
            email: format!("{id}@example.com"),
            status: "subscribed".into(),
        }
    }

    #[test]
    fn a_member_whose_push_answer_was_lost_is_pushed_again_until_a_later_push_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        ledger
            .record_accepted("L", 100, &[accepted("a", 1), accepted("b", 2)])
            .unwrap();
        ledger.mark_uncertain("L", 100, &["a", "never"]).unwrap();
        assert_eq!(ledger.unchanged("L", &[("a", 1), ("b", 2)]).unwrap(), [false, true]);
        // Taken again soon after: the lost push may still land later.
        ledger.record_accepted("L", 200, &[accepted("a", 1)]).unwrap();
        assert_eq!(ledger.unchanged("L", &[("a", 1)]).unwrap(), [false]);
        // Taken once that push can no longer land over it.
        let later = 100 + LATE_WRITE_SECONDS;
        ledger.record_accepted("L", later, &[accepted("a", 1)]).unwrap();
        assert_eq!(ledger.unchanged("L", &[("a", 1)]).unwrap(), [true]);
    }

    #[test]
    fn members_are_found_by_address_whatever_its_ascii_case_in_their_list_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        let mut a = accepted("a", 1);
        a.email = "Ann.Lee@Example.com".into();
        ledger.record_accepted("L", 100, &[a, accepted("b", 2)]).unwrap();
        ledger.record_accepted("M", 100, &[accepted("c", 3)]).unwrap();
        let found = ledger
            .members_by_email(
                "L",
                &[
                    "ann.lee@example.COM",
                    "nobody@example.com",
                    "c@example.com",
                    "ANN.LEE@EXAMPLE.COM",
                ],
            )
            .unwrap();
        assert_eq!(
            found,
            [LedgerMember {
                member_id: "a".into(),
                email: "Ann.Lee@Example.com".into(),
                status: "subscribed".into()
            }]
        );
        assert_eq!(ledger.members_by_email("M", &["C@example.com"]).unwrap().len(), 1);
        // One indexed lookup, not a scan of the list.
        let plan: String = ledger
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT member_id FROM members WHERE list_id = 'L' AND email = 'x' COLLATE NOCASE",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("members_by_email"), "{plan}");
    }

    #[test]
    fn a_record_equal_to_what_ometria_accepted_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, aside) = LedgerStore::open(dir.path(), 100).unwrap();
        assert_eq!(aside, None);
        ledger
            .record_accepted("L", 100, &[accepted("a", 1), accepted("b", 2)])
            .unwrap();
        let seen = ledger.unchanged("L", &[("a", 1), ("b", 3), ("c", 1)]).unwrap();
        assert_eq!(seen, [true, false, false]);
        // Another list's member of the same id is another member.
        assert_eq!(ledger.unchanged("M", &[("a", 1)]).unwrap(), [false]);
        ledger.record_accepted("L", 300, &[accepted("b", 3)]).unwrap();
        assert_eq!(ledger.unchanged("L", &[("b", 3)]).unwrap(), [true]);
        assert_eq!(ledger.count_members("L").unwrap(), 2);
        assert_eq!(ledger.forget_list("L").unwrap(), 2);
        assert_eq!(ledger.unchanged("L", &[("a", 1)]).unwrap(), [false]);
    }

    #[test]
    fn lookups_of_more_ids_than_a_statement_takes_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        let many: Vec<Accepted> = (0..1200).map(|i| accepted(&format!("m{i}"), i)).collect();
        ledger.record_accepted("L", 1, &many).unwrap();
        let ids: Vec<String> = (0..1200).map(|i| format!("m{i}")).collect();
        let asked: Vec<(&str, u64)> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as u64)).collect();
        assert!(ledger.unchanged("L", &asked).unwrap().iter().all(|u| *u));
    }

    #[test]
    fn members_a_reconciliation_did_not_see_are_listed_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        let members: Vec<Accepted> = ["a", "b", "c", "d", "e"].iter().map(|id| accepted(id, 1)).collect();
        ledger.record_accepted("L", 10, &members).unwrap();
        ledger.record_accepted("L", 60, &[accepted("late", 1)]).unwrap();
        ledger.mark_seen("L", 50, &["a", "c", "zzz"]).unwrap();
        assert_eq!(ledger.count_unseen("L", 50, 50).unwrap(), 3);
        let first = ledger.unseen("L", 50, 50, "", 2).unwrap();
        let ids: Vec<&str> = first.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids, ["b", "d"]);
        let rest = ledger.unseen("L", 50, 50, "d", 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].member_id, "e");
        ledger.remove("L", &["b", "d", "e"]).unwrap();
        assert_eq!(ledger.count_members("L").unwrap(), 3);
    }

    fn last_seen(ledger: &LedgerStore, id: &str) -> i64 {
        ledger
            .conn
            .query_row("SELECT last_seen FROM members WHERE member_id = ?1", [id], |row| {
                row.get(0)
            })
            .unwrap()
    }

    #[test]
    fn a_look_up_writes_nothing_and_a_reconciliation_that_finds_a_member_moves_its_last_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        ledger
            .record_accepted("L", 10, &[accepted("a", 1), accepted("b", 2)])
            .unwrap();
        assert_eq!(last_seen(&ledger, "a"), 10);
        let changes = ledger.conn.total_changes();
        assert_eq!(ledger.unchanged("L", &[("a", 1), ("b", 2)]).unwrap(), [true, true]);
        assert_eq!(
            ledger.conn.total_changes(),
            changes,
            "a re-read of unchanged members wrote rows"
        );
        ledger.mark_seen("L", 50, &["a"]).unwrap();
        assert_eq!((last_seen(&ledger, "a"), last_seen(&ledger, "b")), (50, 10));
        ledger.record_accepted("L", 70, &[accepted("b", 3)]).unwrap();
        assert_eq!(last_seen(&ledger, "b"), 70);
    }

    #[test]
    fn writes_reach_the_ledger_file_itself_while_the_ledger_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        ledger.record_accepted("L", 10, &[accepted("a", 1)]).unwrap();
        // The file alone, without its write-ahead log: what a checkpoint
        // has folded in. Far below the writer's own bound, so only the
        // checkpointer's thread can have done it.
        let encoded = percent_encoding::utf8_percent_encode(&ledger.path().to_string_lossy(), URI_PATH).to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let file = Connection::open_with_flags(
                format!("file:{encoded}?immutable=1"),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
            .unwrap();
            let folded: Option<i64> = file
                .query_row("SELECT COUNT(*) FROM members WHERE member_id = 'a'", [], |row| {
                    row.get(0)
                })
                .ok();
            if folded == Some(1) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the write never reached the file");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            dir.path().join(format!("{LEDGER_FILE_NAME}-wal")).exists(),
            "the writer is still open"
        );
    }

    #[test]
    fn the_last_successful_reconciliation_of_a_list_is_its_newest_succeeded_reconcile_row() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        assert_eq!(ledger.last_reconciled("L", 0).unwrap(), None);
        assert!(!ledger.holds_members("L").unwrap());
        ledger.record_accepted("L", 1, &[accepted("a", 1)]).unwrap();
        assert!(ledger.holds_members("L").unwrap());
        assert!(!ledger.holds_members("M").unwrap());
        let run = |ledger: &mut LedgerStore, list: &str, kind: &str, at: i64, result: &str| {
            let id = ledger
                .start_run(&RunStart {
                    list_id: list.into(),
                    rank: 0,
                    kind: kind.into(),
                    t0: at,
                    started_at: at,
                })
                .unwrap();
            let end = RunEnd {
                result: result.into(),
                ..RunEnd::default()
            };
            ledger.end_run(id, &end).unwrap();
        };
        run(&mut ledger, "L", "RECONCILE", 100, "succeeded");
        run(&mut ledger, "L", "RECONCILE", 200, "failed");
        run(&mut ledger, "L", "SYNC", 300, "succeeded");
        run(&mut ledger, "M", "RECONCILE", 400, "succeeded");
        assert_eq!(ledger.last_reconciled("L", 0).unwrap(), Some(100));
        assert_eq!(ledger.last_reconciled("M", 0).unwrap(), Some(400));
        // A LOAD reads every member: as good a baseline as a reconciliation.
        run(&mut ledger, "L", "LOAD", 500, "succeeded");
        run(&mut ledger, "L", "LOAD", 600, "failed");
        assert_eq!(ledger.last_reconciled("L", 0).unwrap(), Some(500));
        assert_eq!(ledger.last_reconciled("N", 0).unwrap(), None);
    }

    #[test]
    fn the_history_lists_runs_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        let start = |list: &str, t0| RunStart {
            list_id: list.into(),
            rank: 0,
            kind: "LOAD".into(),
            t0,
            started_at: t0,
        };
        let first = ledger.start_run(&start("L", 1)).unwrap();
        let end = RunEnd {
            duration_seconds: 1.5,
            members_read: 10,
            pushed: 8,
            unchanged: 2,
            result: "succeeded".into(),
            ..RunEnd::default()
        };
        ledger.end_run(first, &end).unwrap();
        ledger.start_run(&start("M", 2)).unwrap();
        let rows = ledger.history(None, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].start.list_id.as_str(), rows[0].end.is_none()), ("M", true));
        assert_eq!(rows[1].end.as_ref(), Some(&end));
        // A run the process died in is abandoned when the next one opens the ledger.
        let mut again = LedgerStore::open_existing(dir.path()).unwrap();
        assert_eq!(again.close_unfinished_runs().unwrap(), 1);
        let rows = again.history(None, 10).unwrap();
        assert_eq!(rows[0].end.as_ref().map(|e| e.result.as_str()), Some("abandoned"));
        let only_l = LedgerStore::open_read_only(dir.path())
            .unwrap()
            .history(Some("L"), 10)
            .unwrap();
        assert_eq!(only_l.len(), 1);
    }

    #[test]
    fn an_unreadable_ledger_is_moved_aside_and_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEDGER_FILE_NAME),
            b"not a database at all, but long enough to look like one? no",
        )
        .unwrap();
        let (mut ledger, aside) = LedgerStore::open(dir.path(), 77).unwrap();
        let aside = aside.expect("moved aside");
        assert!(aside.ends_with("ledger.sqlite3.unreadable-77"));
        assert!(std::fs::read(&aside).unwrap().starts_with(b"not a database"));
        ledger.record_accepted("L", 1, &[accepted("a", 1)]).unwrap();
        assert_eq!(ledger.count_members("L").unwrap(), 1);
    }

    #[test]
    fn record_hashes_are_stable() {
        // Kept in the ledger across versions: never a per-process hash.
        assert_eq!(record_hash(b"{\"id\":\"a\"}"), record_hash(b"{\"id\":\"a\"}"));
        assert_eq!(record_hash(b""), 0x2d06_8005_38d3_94c2);
    }
}
