//! The state file under stress (SPEC §2), with the real binary: killed
//! with SIGKILL at random moments while it writes, and edited by hand
//! while syncs finish around the edits.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ometria_importer::sandbox::{Sandbox, SandboxConfig, DEFAULT_MAILCHIMP_KEY, DEFAULT_OMETRIA_KEY};
use support::{read_json, state_dir, wait_until};

const LISTS: usize = 24;

fn sandbox() -> Sandbox {
    let config = SandboxConfig {
        lists: (0..LISTS).map(|i| (format!("list-{i:02}"), 60)).collect(),
        mailchimp_max_connections: 0,
        workers: 2,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap()
}

/// The importer, syncing every list every second, writing results
/// `write_seconds` after they end (`IMPORTER_STATE_WRITE_SECONDS`).
fn importer(sandbox: &Sandbox, state_dir: &Path, write_seconds: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .env("IMPORTER_STATE_DIR", state_dir)
        .env("MAILCHIMP_APIKEY", DEFAULT_MAILCHIMP_KEY)
        .env("OMETRIA_APIKEY", DEFAULT_OMETRIA_KEY)
        .env("MAILCHIMP_BASE_URL", sandbox.mailchimp_url())
        .env("OMETRIA_BASE_URL", sandbox.ometria_url())
        .env("OMETRIA_MAX_REQUESTS_PER_SECOND", "0")
        .env("IMPORTER_TICK_SECONDS", "1")
        .env("IMPORTER_REFRESH_SECONDS", "1")
        .env("IMPORTER_MAX_CONCURRENT_LISTS", "8")
        .env("IMPORTER_STATE_WRITE_SECONDS", write_seconds.to_string())
        .arg("go")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A cursor a user sets by hand, with a refresh interval of a day: the
/// entry stays up to date and the value must survive exactly. An hour
/// ago, so that it is never one the importer writes.
fn users_cursor() -> &'static str {
    static CURSOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CURSOR.get_or_init(|| {
        (chrono::Utc::now() - chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    })
}

/// What the user wrote in an entry: everything but the importer's fields
/// (a cursor the user set is the user's).
fn users_part(entry: &Value) -> Value {
    let mut entry = entry.clone();
    if let Some(object) = entry.as_object_mut() {
        for owned in ["latest_timestamp", "elapsed_seconds", "total_updates"] {
            if !(owned == "latest_timestamp" && object.get(owned) == Some(&json!(users_cursor()))) {
                object.shift_remove(owned);
            }
        }
    }
    entry
}

#[actix_rt::test]
async fn sigkill_at_random_moments_never_tears_or_loses_the_state_file_nor_the_ledger() {
    let sandbox = sandbox();
    let entries: Vec<Value> = (0..LISTS)
        .map(|i| json!({"note": format!("mine {i}"), "list_id": format!("list-{i:02}"), "worker_count": 2}))
        .collect();
    let (dir, file) = state_dir(&serde_json::to_string_pretty(&entries).unwrap());
    let mut rng = fastrand::Rng::with_seed(7);
    let mut writes_seen = 0;
    let mut ledger_rows = 0;
    let kills = 60;
    for kill in 0..kills {
        let before = std::fs::read(&file).unwrap();
        // Results written as they end, so that the kills, all within the
        // first second, land on writes.
        let mut child = importer(&sandbox, dir.path(), 0);
        // The moment of the kill is the point of the test, not a wait for anything.
        actix_rt::time::sleep(Duration::from_millis(rng.u64(100..900))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let state: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("kill {kill}: torn state file: {e}\n{text}"));
        let users: Vec<Value> = state.as_array().unwrap().iter().map(users_part).collect();
        assert_eq!(
            users, entries,
            "kill {kill}: an entry the user wrote is gone or changed"
        );
        writes_seen += usize::from(text.as_bytes() != before.as_slice());
        // The ledger, written a push answer at a time, is whole too.
        let ledger = dir.path().join(ometria_importer::ledger::LEDGER_FILE_NAME);
        if ledger.exists() {
            let conn = rusqlite::Connection::open(&ledger).unwrap();
            let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(check, "ok", "kill {kill}: the ledger is damaged");
            let rows: i64 = conn
                .query_row("SELECT COUNT(*) FROM members", [], |r| r.get(0))
                .unwrap();
            ledger_rows = ledger_rows.max(rows);
        }
    }
    // No start ever found the ledger unreadable (it would be moved aside).
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".unreadable-"))
        .collect();
    assert!(aside.is_empty(), "{aside:?}");
    assert!(ledger_rows > 0, "no kill came after a push was recorded");
    // The kills landed while the importer was writing, again and again.
    eprintln!("{kills} SIGKILLs, {writes_seen} of them after writes: state file and ledger ({ledger_rows} members) intact every time");
    assert!(
        writes_seen >= kills / 4,
        "only {writes_seen} of {kills} runs wrote anything"
    );
    // What a killed write leaves behind is cleaned up by the next start.
    let mut child = importer(&sandbox, dir.path(), 0);
    wait_until(Duration::from_secs(10), "the next start", || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    sandbox.stop().await;
}

/// One edit a user makes by hand to their own view of the entries.
fn edit(model: &mut Vec<Value>, rng: &mut fastrand::Rng, next_id: &mut usize) {
    match rng.u8(0..5) {
        0 => {
            // Back comes a list removed earlier, or one Mailchimp does not know.
            let missing = (0..LISTS)
                .map(|i| format!("list-{i:02}"))
                .find(|id| !model.iter().any(|e| e["list_id"] == *id));
            let list_id = missing.unwrap_or_else(|| format!("extra-{next_id}"));
            model.push(json!({"list_id": list_id, "added": *next_id}));
            *next_id += 1;
        }
        1 if model.len() > 3 => {
            model.remove(rng.usize(0..model.len()));
        }
        2 => rng.shuffle(model),
        3 if !model.is_empty() => {
            let i = rng.usize(0..model.len());
            model[i]["latest_timestamp"] = json!(users_cursor());
            model[i]["refresh_seconds"] = json!(86_400);
        }
        _ if !model.is_empty() => {
            let i = rng.usize(0..model.len());
            model[i]["tag"] = json!(rng.u32(..));
        }
        _ => {}
    }
}

/// Saves the user's view as an editor would: what the file shows of the
/// importer's fields is kept, and the new file is renamed over the old.
fn save(file: &Path, model: &[Value], current: &Value) {
    let entries: Vec<Value> = model
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            let shown = current
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["list_id"] == entry["list_id"]);
            for owned in ["latest_timestamp", "elapsed_seconds", "total_updates"] {
                if let Some(value) = shown.and_then(|e| e.get(owned)) {
                    if entry.get(owned).is_none() {
                        entry[owned] = value.clone();
                    }
                }
            }
            entry
        })
        .collect();
    let saving = file.with_extension("swp");
    std::fs::write(&saving, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
    std::fs::rename(&saving, file).unwrap();
}

#[actix_rt::test]
async fn hand_edits_survive_syncs_finishing_all_around_them() {
    let sandbox = sandbox();
    // Each list once, so that an entry is known by its list id alone.
    let mut model: Vec<Value> = (0..LISTS).map(|i| json!({"list_id": format!("list-{i:02}")})).collect();
    let (dir, file) = state_dir(&serde_json::to_string(&model).unwrap());
    // The default window: results wait up to a second while the edits land.
    let mut child = importer(&sandbox, dir.path(), 1);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut next_id = 100;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut edits = 0;
    while Instant::now() < deadline {
        let current = read_json(&file);
        let users: Vec<Value> = current.as_array().unwrap().iter().map(users_part).collect();
        assert_eq!(users, model, "edit {edits} was lost: the file no longer shows it");
        edit(&mut model, &mut rng, &mut next_id);
        save(&file, &model, &current);
        edits += 1;
        // The pace of a very busy user, not a wait for anything.
        actix_rt::time::sleep(Duration::from_millis(rng.u64(2..20))).await;
    }
    std::fs::write(dir.path().join("controller.quit"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the importer did not stop");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let state = read_json(&file);
    let users: Vec<Value> = state.as_array().unwrap().iter().map(users_part).collect();
    assert_eq!(
        users, model,
        "after {edits} edits, the last one did not survive as written"
    );
    let synced = state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("total_updates").is_some())
        .count();
    assert!(synced > 0, "no entry synced during the edits");
    eprintln!("{edits} hand edits while syncs finished: none lost");
    sandbox.stop().await;
}
