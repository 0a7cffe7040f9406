//! `state.json` on disk: read, and patch-then-replace atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::document::{DocumentError, StateDocument};
use crate::mapping::NamedMappings;

pub const STATE_FILE_NAME: &str = "state.json";

/// How often a write re-reads and re-patches when the file changes under it.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "state file {path} does not exist: create it with a JSON array of entries, \
         e.g. [{{\"list_id\": \"<your Mailchimp list id>\"}}]"
    )]
    Missing { path: PathBuf },
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is {source}")]
    Invalid { path: PathBuf, source: DocumentError },
    #[error("cannot write state file {path}: {source}{}", write_hint(source, path))]
    Write { path: PathBuf, source: io::Error },
    #[error("state file {path} kept changing while it was being written; the write will be retried")]
    Busy { path: PathBuf },
    #[error(
        "state file {path} is mounted on its own (a single-file bind mount), so it cannot be \
         replaced atomically: {MOUNT_THE_FOLDER}"
    )]
    MountedOnItsOwn { path: PathBuf },
    #[error(
        "another importer is running on state file {path}: stop it first, or give this one a state \
         folder of its own (IMPORTER_STATE_DIR)"
    )]
    Locked { path: PathBuf },
}

/// Held by a running importer so that a second one on the same state file
/// stops at its start (two would sync every list twice). Released when
/// dropped, or when the process dies however it dies.
#[derive(Debug)]
pub struct StateLock {
    _folder: Option<fs::File>,
}

/// How to fix a state file mounted on its own.
const MOUNT_THE_FOLDER: &str =
    "mount its folder instead (docker run -v \"$PWD/state:/opt/ometria/state\" …, as run.sh does)";

/// What to do about a write refused by the system.
fn write_hint(source: &io::Error, path: &Path) -> String {
    let dir = folder_of(path).display();
    match source.kind() {
        io::ErrorKind::PermissionDenied => format!(
            ". This process (uid {}) must be able to create files in {dir}: make the folder writable \
             for it, or in Docker run the image as the folder's owner \
             (--user \"$(id -u):$(id -g)\", as run.sh does)",
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        ),
        io::ErrorKind::ReadOnlyFilesystem => format!(". Mount {dir} writable"),
        // Renaming over a mount point: a file bind-mounted from the same
        // file system, which the start-up check cannot tell.
        io::ErrorKind::ResourceBusy => format!(". Is it mounted on its own? Then {MOUNT_THE_FOLDER}"),
        _ => String::new(),
    }
}

/// The folder a state file lives in.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// What a text of the state file was: its length and its xxh3-64 hash.
/// Tells whether the file still holds what this process last read or
/// wrote without parsing it again (issue 19: a write of a file of 50,000
/// entries is mostly parsing). Two texts of one length whose hashes agree
/// by chance are taken as one: about one chance in 2⁶⁴.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    len: usize,
    hash: u64,
}

impl Fingerprint {
    pub fn of(text: &[u8]) -> Fingerprint {
        Fingerprint {
            len: text.len(),
            hash: xxhash_rust::xxh3::xxh3_64(text),
        }
    }
}

/// What [`StateFile::patch`] did: what the patch answered, the document
/// as patched (and, if changed, written), and the file's text now.
#[derive(Debug)]
pub struct Patched<R> {
    pub result: R,
    pub document: StateDocument,
    pub text: Fingerprint,
}

#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    pub fn in_dir(dir: &Path) -> Self {
        StateFile::new(dir.join(STATE_FILE_NAME))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<StateDocument, StateFileError> {
        Ok(self.load_fingerprinted()?.0)
    }

    /// [`StateFile::load`], with the fingerprint of the text read.
    pub fn load_fingerprinted(&self) -> Result<(StateDocument, Fingerprint), StateFileError> {
        let bytes = self.read_bytes()?;
        Ok((self.parse(&bytes)?, Fingerprint::of(&bytes)))
    }

    /// Whether the file holds the text `known` fingerprints (read, not parsed).
    pub fn holds(&self, known: Fingerprint) -> Result<bool, StateFileError> {
        Ok(Fingerprint::of(&self.read_bytes()?) == known)
    }

    /// Replaces the file with `content` atomically if it still holds the
    /// text `known` fingerprints — `content` being that text's document
    /// patched, rendered — and answers the fingerprint of `content`; `None`
    /// if the file holds anything else (a hand edit: the caller patches
    /// the new text instead, [`StateFile::patch`]). The file is read, not
    /// parsed. Errors: it cannot be read or replaced.
    pub fn replace_known(&self, known: Fingerprint, content: &str) -> Result<Option<Fingerprint>, StateFileError> {
        let before = self.read_bytes()?;
        if Fingerprint::of(&before) != known {
            return Ok(None);
        }
        match self.replace_if_unchanged(content.as_bytes(), &before)? {
            true => Ok(Some(Fingerprint::of(content.as_bytes()))),
            false => Ok(None),
        }
    }

    /// Re-reads the file, applies `patch`, and replaces the file atomically
    /// if the patch changed a value (see [`Patched`]). If the file changes
    /// between the read and the rename (someone saved it meanwhile), the
    /// write starts over from the new content, so a hand edit is never
    /// overwritten by a stale view.
    ///
    /// Errors: the file cannot be read, parsed or replaced, or it kept
    /// changing for five attempts in a row ([`StateFileError::Busy`]).
    pub fn patch<R>(&self, mut patch: impl FnMut(&mut StateDocument) -> R) -> Result<Patched<R>, StateFileError> {
        for _ in 0..WRITE_ATTEMPTS {
            let before = self.read_bytes()?;
            let mut document = self.parse(&before)?;
            let result = patch(&mut document);
            if document.changes() == 0 {
                let text = Fingerprint::of(&before);
                return Ok(Patched { result, document, text });
            }
            let rendered = document.render();
            if self.replace_if_unchanged(rendered.as_bytes(), &before)? {
                let text = Fingerprint::of(rendered.as_bytes());
                return Ok(Patched { result, document, text });
            }
        }
        Err(StateFileError::Busy {
            path: self.path.clone(),
        })
    }

    fn read_bytes(&self) -> Result<Vec<u8>, StateFileError> {
        fs::read(&self.path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StateFileError::Missing {
                path: self.path.clone(),
            },
            _ => StateFileError::Read {
                path: self.path.clone(),
                source,
            },
        })
    }

    fn parse(&self, bytes: &[u8]) -> Result<StateDocument, StateFileError> {
        let invalid = |source| StateFileError::Invalid {
            path: self.path.clone(),
            source,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let (line, column) = position_of(bytes, e.valid_up_to());
            invalid(DocumentError::Json {
                line,
                column,
                message: "invalid UTF-8".into(),
            })
        })?;
        // Some editors start a UTF-8 file with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mappings = NamedMappings::read(folder_of(&self.path));
        Ok(StateDocument::parse(text).map_err(invalid)?.with_mappings(mappings))
    }

    /// Temp file in the same folder, flushed to disk, then swapped with
    /// the state file — unless the file no longer holds `expected`.
    ///
    /// On Linux the swap is `renameat2(RENAME_EXCHANGE)`: the file it
    /// displaces is checked afterwards, so an editor's save that lands
    /// between our read and the swap is never lost — it is swapped back and
    /// the caller patches it again. Elsewhere: a check, then a rename.
    fn replace_if_unchanged(&self, content: &[u8], expected: &[u8]) -> Result<bool, StateFileError> {
        self.replace_with_hook(content, expected, || {})
    }

    /// `replace_if_unchanged`, calling `before_swap` at the worst moment
    /// (tests use it to save the file just then).
    fn replace_with_hook(
        &self,
        content: &[u8],
        expected: &[u8],
        before_swap: impl FnOnce(),
    ) -> Result<bool, StateFileError> {
        let write_err = |source| StateFileError::Write {
            path: self.path.clone(),
            source,
        };
        let target = self.target();
        let dir = folder_of(&target);
        let mut temp = temp_file_for(&target).map_err(write_err)?;
        temp.write_all(content).map_err(write_err)?;
        if let Ok(meta) = fs::metadata(&target) {
            // Keep the user's permissions; a failure here is not worth failing the write.
            let _ = temp.as_file().set_permissions(meta.permissions());
        }
        temp.as_file().sync_all().map_err(write_err)?;
        if self.read_bytes()? != expected {
            return Ok(false); // the temp file is removed on drop
        }
        before_swap();
        match exchange(temp.path(), &target) {
            Ok(()) => {
                // `temp` now names what we displaced.
                if fs::read(temp.path()).map_err(write_err)? != expected {
                    exchange(temp.path(), &target).map_err(write_err)?;
                    return Ok(false);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) => {
                // No atomic exchange on this file system: a plain rename.
                temp.persist(&target).map_err(|e| write_err(e.error))?;
            }
            Err(e) => return Err(write_err(e)),
        }
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// The file a write replaces: the state file, or the file it is a
    /// symbolic link to. The link stays a link (state kept on another
    /// volume, say); replacing it with a plain file would leave the file it
    /// names stale, and the user's edits of that file unread.
    fn target(&self) -> PathBuf {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
            }
            _ => self.path.clone(),
        }
    }

    /// Whether a write could replace the state file: asked at start-up, so
    /// that a folder the importer may not write, or a state file mounted on
    /// its own, stops it before a LOAD whose result could not be kept.
    pub fn check_writable(&self) -> Result<(), StateFileError> {
        let target = self.target();
        temp_file_for(&target)
            .map(drop)
            .map_err(|source| StateFileError::Write {
                path: self.path.clone(),
                source,
            })?;
        // A rename over a mount point fails (EBUSY).
        if is_mount_root(&target) {
            return Err(StateFileError::MountedOnItsOwn {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Takes the state file's lock: an exclusive `flock` on the folder its
    /// writes go to (the file itself is replaced by every write, so a lock
    /// on it would not last). Where the file system has no such locks, the
    /// run goes on without one.
    pub fn lock(&self) -> Result<StateLock, StateFileError> {
        let Ok(folder) = fs::File::open(folder_of(&self.target())) else {
            return Ok(StateLock { _folder: None });
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own, kept open by the returned lock.
            if unsafe { libc::flock(folder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(StateFileError::Locked {
                        path: self.path.clone(),
                    });
                }
                return Ok(StateLock { _folder: None });
            }
        }
        Ok(StateLock { _folder: Some(folder) })
    }

    /// Removes temporary files a killed importer left beside the state
    /// file; returns how many. (One importer per state file.)
    pub fn remove_stale_temp_files(&self) -> usize {
        let target = self.target();
        let prefix = temp_prefix(&target);
        let Ok(entries) = fs::read_dir(folder_of(&target)) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(TEMP_SUFFIX)
            })
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }
}

const TEMP_SUFFIX: &str = ".tmp";

/// Temporary files for `target` are named `.<its name>.XXXXXX.tmp`, so
/// that state files of other importers sharing its folder are not taken
/// for its own.
fn temp_prefix(target: &Path) -> String {
    let name = target.file_name().unwrap_or_else(|| STATE_FILE_NAME.as_ref());
    format!(".{}.", name.to_string_lossy())
}

/// A new temporary file beside `target`, for a write that replaces it.
fn temp_file_for(target: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(folder_of(target))
}

/// Whether `path` is the root of a mount (a file bind-mounted on its
/// own, say): Linux `statx`'s STATX_ATTR_MOUNT_ROOT, where the kernel
/// reports it (5.8 and later).
#[cfg(target_os = "linux")]
fn is_mount_root(path: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut answer: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `answer` is ours to write.
    let failed = unsafe { libc::statx(libc::AT_FDCWD, path.as_ptr(), 0, 0, &mut answer) } != 0;
    let flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    !failed && answer.stx_attributes_mask & flag != 0 && answer.stx_attributes & flag != 0
}

#[cfg(not(target_os = "linux"))]
fn is_mount_root(_: &Path) -> bool {
    false
}

/// Atomically swaps two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// 1-based line and column of a byte offset, as serde_json reports them.
fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::document::{PatchOutcome, SyncRecord};
    use crate::state::entry::EntryKey;
    use chrono::{TimeZone, Utc};
    use serde_json::Value;
    use std::time::Duration;

    /// The names of the files in `dir`, sorted.
    fn files_in(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    }

    fn record(list_id: &str) -> SyncRecord {
        SyncRecord {
            key: EntryKey {
                list_id: list_id.into(),
                rank: 0,
            },
            cursor_at_start: Value::Null,
            t0: Utc.with_ymd_and_hms(2019, 10, 21, 10, 51, 16).unwrap(),
            elapsed: Duration::from_secs(2),
            total_updates: 5,
        }
    }

    #[test]
    fn the_named_mappings_beside_the_file_are_read_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        std::fs::write(file.path(), r#"[{"list_id": "a", "mapping": "shop"}]"#).unwrap();
        let doc = file.load().unwrap();
        assert!(doc.entries().entries.is_empty(), "no mappings.json yet");
        std::fs::write(
            dir.path().join(crate::mapping::MAPPINGS_FILE_NAME),
            r#"{"shop": {"collection": "mc"}}"#,
        )
        .unwrap();
        let doc = file.load().unwrap();
        assert_eq!(doc.entries().entries[0].mapping.collection.as_deref(), Some("mc"));
        // A write re-reads them, and never writes them.
        let patched = file.patch(|_| ()).unwrap().document;
        assert_eq!(patched.entries().entries.len(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(crate::mapping::MAPPINGS_FILE_NAME)).unwrap(),
            r#"{"shop": {"collection": "mc"}}"#
        );
    }

    #[test]
    fn a_known_text_is_replaced_without_a_parse_and_an_edited_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[{\"list_id\": \"a1\"}]").unwrap();
        let (mut doc, known) = file.load_fingerprinted().unwrap();
        assert!(file.holds(known).unwrap());
        doc.apply(&record("a1"));
        let text = doc.render();
        let written = file.replace_known(known, &text).unwrap().unwrap();
        assert_eq!(fs::read_to_string(file.path()).unwrap(), text);
        assert_eq!(written, Fingerprint::of(text.as_bytes()));
        assert!(!file.holds(known).unwrap());
        // Saved by hand since: nothing is written, the caller patches it.
        fs::write(file.path(), "[{\"list_id\": \"a1\", \"note\": 1}]").unwrap();
        assert_eq!(file.replace_known(written, &text).unwrap(), None);
        assert_eq!(
            fs::read_to_string(file.path()).unwrap(),
            "[{\"list_id\": \"a1\", \"note\": 1}]"
        );
        let patched = file.patch(|d| d.apply(&record("a1"))).unwrap();
        assert_eq!(patched.text, Fingerprint::of(&fs::read(file.path()).unwrap()));
        assert!(file.holds(patched.text).unwrap());
    }

    #[test]
    fn patch_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[{\"list_id\": \"a1\"}]").unwrap();
        assert_eq!(
            file.patch(|d| d.apply(&record("a1"))).unwrap().result,
            PatchOutcome::Applied
        );
        assert_eq!(
            fs::read_to_string(file.path()).unwrap(),
            "[\n  {\n    \"list_id\": \"a1\",\n    \"latest_timestamp\": \"2019-10-21T10:51:16\",\n    \"elapsed_seconds\": 2.0,\n    \"total_updates\": 5\n  }\n]\n"
        );
        assert_eq!(files_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_patch_that_changes_nothing_does_not_rewrite_the_users_formatting() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let text = "[ {\"list_id\":\"b\"} ]";
        fs::write(file.path(), text).unwrap();
        assert_eq!(
            file.patch(|d| d.apply(&record("a1"))).unwrap().result,
            PatchOutcome::EntryGone
        );
        assert_eq!(fs::read_to_string(file.path()).unwrap(), text);
    }

    #[test]
    fn an_unparseable_file_is_reported_with_position_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let text = "[\n  {\"list_id\": \"a1\",\n";
        fs::write(file.path(), text).unwrap();
        let err = file.patch(|d| d.apply(&record("a1"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state file {} is not valid JSON at line 3, column 0: EOF while parsing a value",
                file.path().display()
            )
        );
        assert_eq!(fs::read_to_string(file.path()).unwrap(), text);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), b"[\n {\"list_id\": \"a\xff\"}]").unwrap();
        assert!(file
            .load()
            .unwrap_err()
            .to_string()
            .ends_with("line 2, column 16: invalid UTF-8"));
    }

    #[test]
    fn a_missing_file_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("does not exist: create it with a JSON array"), "{err}");
        assert!(err.contains(&file.path().display().to_string()));
    }

    #[test]
    fn a_save_between_read_and_rename_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[{\"list_id\": \"a1\"}]").unwrap();
        let mut calls = 0;
        let outcome = file
            .patch(|d| {
                calls += 1;
                if calls == 1 {
                    // An editor saves while the first attempt is in flight.
                    fs::write(file.path(), "[{\"list_id\": \"a1\", \"note\": \"mine\"}]").unwrap();
                }
                d.apply(&record("a1"))
            })
            .unwrap()
            .result;
        assert_eq!((outcome, calls), (PatchOutcome::Applied, 2));
        let v: Value = serde_json::from_str(&fs::read_to_string(file.path()).unwrap()).unwrap();
        assert_eq!(v[0]["note"], "mine");
        assert_eq!(v[0]["total_updates"], 5);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_save_just_before_the_swap_is_swapped_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let old = b"[{\"list_id\": \"a1\"}]";
        fs::write(file.path(), old).unwrap();
        let saved = "[{\"list_id\": \"a1\", \"note\": \"saved by an editor\"}]";
        let written = file
            .replace_with_hook(b"[]\n", old, || {
                // An editor saves the way editors do: a new file renamed over.
                fs::write(dir.path().join("editor.swp"), saved).unwrap();
                fs::rename(dir.path().join("editor.swp"), file.path()).unwrap();
            })
            .unwrap();
        assert!(!written, "the write must report that it has to start over");
        assert_eq!(fs::read_to_string(file.path()).unwrap(), saved);
        assert_eq!(files_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "\u{feff}[{\"list_id\": \"a1\"}]").unwrap();
        assert_eq!(file.load().unwrap().len(), 1);
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[]").unwrap();
        fs::write(dir.path().join(".state.json.a1b2c3.tmp"), "[").unwrap();
        fs::write(dir.path().join("notes.tmp"), "mine").unwrap();
        assert_eq!(file.remove_stale_temp_files(), 1);
        assert_eq!(files_in(dir.path()), ["notes.tmp", "state.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_state_file_linked_elsewhere_stays_a_link_and_the_file_it_names_is_written() {
        let (linked, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let real = elsewhere.path().join("shard-1.json");
        fs::write(&real, "[{\"list_id\": \"a1\"}]").unwrap();
        fs::write(elsewhere.path().join(".shard-2.json.x1y2z3.tmp"), "another importer's").unwrap();
        fs::write(elsewhere.path().join(".shard-1.json.a1b2c3.tmp"), "[").unwrap();
        let file = StateFile::in_dir(linked.path());
        std::os::unix::fs::symlink(&real, file.path()).unwrap();

        assert_eq!(file.remove_stale_temp_files(), 1);
        file.check_writable().unwrap();
        assert_eq!(
            file.patch(|d| d.apply(&record("a1"))).unwrap().result,
            PatchOutcome::Applied
        );
        assert!(fs::symlink_metadata(file.path()).unwrap().file_type().is_symlink());
        assert!(fs::read_to_string(&real).unwrap().contains("\"total_updates\": 5"));
        assert_eq!(files_in(linked.path()), ["state.json"]);
        assert_eq!(files_in(elsewhere.path()), [".shard-2.json.x1y2z3.tmp", "shard-1.json"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mount_roots_are_told_from_plain_files() {
        assert!(is_mount_root(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        fs::write(&file, "[]").unwrap();
        assert!(!is_mount_root(&file));
        assert!(!is_mount_root(&dir.path().join("missing.json")));
    }

    #[cfg(unix)]
    #[test]
    fn one_importer_at_a_time_holds_a_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[]").unwrap();
        let held = file.lock().unwrap();
        let err = StateFile::in_dir(dir.path()).lock().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "another importer is running on state file {}: stop it first, or give this one a state \
                 folder of its own (IMPORTER_STATE_DIR)",
                file.path().display()
            )
        );
        // A write of the state file does not end the lock.
        file.patch(|d| d.apply(&record("a1"))).unwrap();
        assert!(file.lock().is_err());
        drop(held);
        file.lock().unwrap();
    }

    #[test]
    fn a_busy_rename_asks_whether_the_file_is_mounted_on_its_own() {
        let err = StateFileError::Write {
            path: "/opt/ometria/state/state.json".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(
            err.to_string().ends_with(
                "Is it mounted on its own? Then mount its folder instead \
                 (docker run -v \"$PWD/state:/opt/ometria/state\" …, as run.sh does)"
            ),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn permissions_survive_a_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        fs::write(file.path(), "[{\"list_id\": \"a1\"}]").unwrap();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o640)).unwrap();
        file.patch(|d| d.apply(&record("a1"))).unwrap();
        let mode = fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
