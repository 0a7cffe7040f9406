//! The binary as an operator runs it: exit codes, output, signals, the quit file.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use wiremock::matchers::{method, query_param};
use wiremock::{Mock, ResponseTemplate};

use support::*;

/// Sends `signal` to the child (no `kill` program needed).
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

async fn apis_with_list(n: usize) -> Apis {
    Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(n, Utc::now())),
        FakeOmetria::default(),
    )
    .await
}

#[actix_rt::test]
async fn once_syncs_writes_the_state_and_exits_0() {
    let apis = apis_with_list(250).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let child = importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap();
    let out = exit_within(child, Duration::from_secs(20)).await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(apis.pushed().len(), 250);
    let state = read_json(&file);
    assert_eq!(state[0]["total_updates"], 250);
    assert!(state[0]["latest_timestamp"].is_string());
    assert!(log.contains("INFO |controller| controller: starting..."), "{log}");
    assert!(log.trim_end().ends_with("INFO |controller| controller: done."), "{log}");
    for secret in [MAILCHIMP_KEY, OMETRIA_KEY] {
        assert!(!log.contains(secret) && !std::fs::read_to_string(&file).unwrap().contains(secret));
    }
}

/// Logs that cannot be written (a full disk, a log collector gone) are
/// lost, not fatal: the syncs go on and are recorded.
#[actix_rt::test]
async fn a_log_that_cannot_be_written_does_not_stop_the_syncs() {
    let apis = apis_with_list(250).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let child = importer_command(dir.path(), Some(&apis))
        .arg("once")
        .stderr(full)
        .spawn()
        .unwrap();
    let out = exit_within(child, Duration::from_secs(20)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(apis.pushed().len(), 250);
    assert_eq!(read_json(&file)[0]["total_updates"], 250);
}

#[actix_rt::test]
async fn once_exits_1_when_a_sync_fails() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(5, Utc::now())),
        FakeOmetria {
            fail_with: Some(401),
            ..Default::default()
        },
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let out = exit_within(
        importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("Ometria refused the request with HTTP 401"), "{log}");
    assert!(log.contains("check OMETRIA_APIKEY"), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"[{"list_id": "L"}]"#);
}

#[actix_rt::test]
async fn once_exits_1_when_a_result_could_not_be_written() {
    let apis = Apis::start(
        FakeMailchimp::slow(Duration::from_millis(300)).with_list("L", generate_members(40, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let child = importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap();
    apis.first_mailchimp_request().await;
    // Half-saved by an editor, and left so: the sync's result cannot go in.
    let half_saved = "[{\"list_id\": \"L\",";
    std::fs::write(&file, half_saved).unwrap();
    let out = exit_within(child, Duration::from_secs(20)).await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("sync: completed in"), "{log}");
    assert!(
        log.contains(
            "controller: 1 sync result(s) could not be written to the state file; those lists will sync again."
        ),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), half_saved);
}

/// Runs `command` without root's right to write anywhere, so that a
/// folder's permissions hold for it as for any other user.
fn without_root_override(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
            for capability in [1, 2] {
                // Fails without CAP_SETPCAP: then the process is no root and
                // has no override to drop.
                libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
            }
            Ok(())
        })
    }
}

#[actix_rt::test]
async fn a_state_folder_it_cannot_write_stops_the_start_with_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let apis = apis_with_list(5).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let folder_hint = format!("must be able to create files in {}", dir.path().display());
    for command in ["once", "check"] {
        let out = without_root_override(importer_command(dir.path(), Some(&apis)).arg(command))
            .output()
            .unwrap();
        let output = text(&out.stderr) + &text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{command}: {output}");
        assert!(
            output.contains(&format!(
                "cannot write state file {}: Permission denied",
                file.display()
            )),
            "{command}: {output}"
        );
        assert!(output.contains(&folder_hint), "{command}: {output}");
    }
    assert!(apis.pushed().is_empty(), "nothing synced");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"[{"list_id": "L"}]"#);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn go_until_stopped(stop: impl FnOnce(&Child, &Path)) {
    let apis = apis_with_list(30).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let child = importer_command(dir.path(), Some(&apis)).arg("go").spawn().unwrap();
    wait_until(Duration::from_secs(20), "the first sync", || {
        std::fs::read_to_string(&file).unwrap().contains("latest_timestamp")
    })
    .await;
    stop(&child, dir.path());
    let out = exit_within(child, Duration::from_secs(10)).await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.trim_end().ends_with("INFO |controller| controller: done."), "{log}");
    assert!(!dir.path().join("controller.quit").exists());
    assert_eq!(read_json(&file)[0]["total_updates"], 30);
}

#[actix_rt::test]
async fn a_second_importer_on_the_same_state_file_stops_at_its_start() {
    let apis = apis_with_list(30).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let first = importer_command(dir.path(), Some(&apis)).arg("go").spawn().unwrap();
    wait_until(Duration::from_secs(20), "the first sync", || {
        std::fs::read_to_string(&file).unwrap().contains("latest_timestamp")
    })
    .await;
    let second = exit_within(
        importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    let log = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("another importer is running on state file {}", file.display())),
        "{log}"
    );
    // check only reads: it runs beside the daemon.
    let check = importer_command(dir.path(), None).arg("check").output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));

    std::fs::write(dir.path().join("controller.quit"), "").unwrap();
    assert_eq!(exit_within(first, Duration::from_secs(10)).await.status.code(), Some(0));
    let after = exit_within(
        importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(after.status.code(), Some(0), "{}", text(&after.stderr));
}

#[actix_rt::test]
async fn go_stops_on_the_quit_file() {
    go_until_stopped(|_, dir| std::fs::write(dir.join("controller.quit"), "").unwrap()).await;
}

#[actix_rt::test]
async fn go_stops_on_sigterm() {
    go_until_stopped(|child, _| {
        signal(child, libc::SIGTERM);
    })
    .await;
}

#[actix_rt::test]
async fn go_stops_on_sigint() {
    go_until_stopped(|child, _| {
        signal(child, libc::SIGINT);
    })
    .await;
}

#[actix_rt::test]
async fn a_broken_state_file_stops_the_start_with_exit_2_and_its_position() {
    let (dir, file) = state_dir("[\n  {\"list_id\": \"L\"},\n  {\"list_id\" \"M\"}\n]\n");
    for command in ["go", "once"] {
        let out = importer_command(dir.path(), None).arg(command).output().unwrap();
        let log = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{log}");
        assert!(
            log.contains(&format!(
                "state file {} is not valid JSON at line 3, column 14: expected `:`",
                file.display()
            )),
            "{log}"
        );
    }
    let missing = tempfile::tempdir().unwrap();
    let out = importer_command(missing.path(), None).arg("go").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("state.json does not exist: create it with a JSON array of entries"));
}

#[actix_rt::test]
async fn check_reports_a_broken_state_file() {
    let (dir, file) = state_dir("[{\"list_id\": \"L\",}]");
    let out = importer_command(dir.path(), None).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains(&format!(
        "error: state file {} is not valid JSON at line 1, column 18",
        file.display()
    )));
}

#[actix_rt::test]
async fn check_prints_what_the_next_tick_would_do() {
    let recent = cursor_minutes_ago(5);
    let (dir, _) = state_dir(&format!(
        r#"[{{"list_id": "a"}}, {{"list_id": "b", "latest_timestamp": "2001-01-01T00:00:00"}}, {{"list_id": "c", "latest_timestamp": "{recent}"}}, {{"list_id": "d", "worker_count": 0}}, {{"list_id": "e", "latest_timestamp": "2999-01-01T00:00:00"}}]"#
    ));
    let out = importer_command(dir.path(), None).arg("check").output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok: Mailchimp at https://us9.api.mailchimp.com/3.0"),
        "{stdout}"
    );
    assert!(stdout.contains("holds 5 entries, 4 valid"), "{stdout}");
    assert!(stdout.contains("list \"a\": LOAD"), "{stdout}");
    assert!(
        stdout.contains("list \"b\": SYNC (members changed since \"2000-12-31 23:55:00\""),
        "{stdout}"
    );
    assert!(stdout.contains("list \"c\": up to date (last updated on"), "{stdout}");
    assert!(stdout.contains("warning: list \"e\": latest_timestamp \"2999-01-01 00:00:00\" is in the future by more than the 300 s overlap"), "{stdout}");
    assert!(
        stdout.contains("list \"e\": LOAD (latest_timestamp in the future: the whole list)"),
        "{stdout}"
    );
    assert!(stdout.contains("error: entry at index 3 (list_id \"d\"), field \"worker_count\": must be a whole number from 1 to 64, found 0"), "{stdout}");
    assert!(!stdout.contains(MAILCHIMP_KEY));

    let (dir, _) = state_dir(r#"[{"list_id": "a"}]"#);
    let out = importer_command(dir.path(), None).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("holds 1 entry, 1 valid"));
    assert!(text(&out.stdout).ends_with("all good.\n"));

    let (dir, _) = state_dir(r#"[{"list_id": "a", "latest_timestamp": "soon"}]"#);
    let out = importer_command(dir.path(), None).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).ends_with("all good, but for 1 warning(s) above.\n"),
        "{}",
        text(&out.stdout)
    );
}

#[actix_rt::test]
async fn check_online_asks_mailchimp_about_each_list_once() {
    let apis = apis_with_list(30).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}, {"list_id": "nope"}, {"list_id": "L", "items_per_request": 10}]"#);
    // Offline, check calls nobody and sees nothing wrong.
    let offline = exit_within(
        importer_command(dir.path(), Some(&apis)).arg("check").spawn().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(offline.status.code(), Some(0), "{}", text(&offline.stdout));
    assert!(apis.mailchimp.received_requests().await.unwrap().is_empty());

    let online = exit_within(
        importer_command(dir.path(), Some(&apis))
            .args(["check", "--online"])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let stdout = text(&online.stdout);
    assert_eq!(online.status.code(), Some(1), "{stdout}");
    let unarchived = apis.fake_mailchimp.lists.lock().unwrap()["L"]
        .iter()
        .filter(|m| m.status != "archived")
        .count();
    assert!(unarchived < 30);
    assert!(
        stdout.contains(&format!(
            "ok: Mailchimp lets the key read list \"L\": {unarchived} member(s), archived ones aside\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("error: list \"nope\": Mailchimp refused the request with HTTP 404 (Resource Not Found: The requested resource could not be found.): check the entry's list_id in state.json"), "{stdout}");
    assert!(stdout.contains("note: Ometria was not called"), "{stdout}");
    assert!(stdout.ends_with("1 problem(s) to fix.\n"), "{stdout}");
    // One request per list, not per entry: one member each.
    let requests = apis.mailchimp.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.url.query().unwrap_or("").contains("count=1&")));
    assert!(apis.ometria.received_requests().await.unwrap().is_empty());

    // A key Mailchimp refuses.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).insert_header("content-type", "application/problem+json").set_body_string(
            r#"{"type": "x", "title": "API Key Invalid", "status": 401, "detail": "Your API key may be invalid.", "instance": "i"}"#,
        ))
        .with_priority(10)
        .mount(&apis.mailchimp)
        .await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let refused = exit_within(
        importer_command(dir.path(), Some(&apis))
            .env("MAILCHIMP_APIKEY", "wrong0key-us9")
            .args(["check", "--online"])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let stdout = text(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("error: list \"L\": Mailchimp refused the request with HTTP 401 (API Key Invalid: Your API key may be invalid.): check MAILCHIMP_APIKEY"), "{stdout}");
    assert!(!stdout.contains("wrong0key"), "{stdout}");
}

#[actix_rt::test]
async fn missing_keys_and_bad_values_are_named_with_exit_2() {
    let (dir, _) = state_dir(r#"[{"list_id": "a"}]"#);
    let out = importer_command(dir.path(), None)
        .env_remove("MAILCHIMP_APIKEY")
        .env_remove("OMETRIA_APIKEY")
        .arg("go")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let log = text(&out.stderr);
    assert!(
        log.contains("MAILCHIMP_APIKEY is not set: export it (or pass --mailchimp-apikey)"),
        "{log}"
    );
    assert!(log.contains("OMETRIA_APIKEY is not set"), "{log}");

    let out = importer_command(dir.path(), None)
        .env("IMPORTER_TICK_SECONDS", "0")
        .arg("go")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: IMPORTER_TICK_SECONDS=\"0\" is not valid: 0 is not in 1..=86400\n"
    );
}

#[actix_rt::test]
async fn version_and_help() {
    let (dir, _) = state_dir("[]");
    let out = importer_command(dir.path(), None).arg("version").output().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("ometria-importer {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = importer_command(dir.path(), None).arg("--help").output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("MAILCHIMP_APIKEY") && help.contains("IMPORTER_MAX_CONCURRENT_LISTS"),
        "{help}"
    );
    assert!(!help.contains(MAILCHIMP_KEY), "the help must not show the key: {help}");
}

#[actix_rt::test]
async fn json_logs_are_one_object_per_line() {
    let apis = apis_with_list(20).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let child = importer_command(dir.path(), Some(&apis))
        .env("IMPORTER_LOG_FORMAT", "json")
        .arg("once")
        .spawn()
        .unwrap();
    let out = exit_within(child, Duration::from_secs(20)).await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let completed = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("sync: completed"))
        .expect("a completion line");
    assert_eq!(completed["level"], "INFO");
    assert_eq!(completed["module"], "list_sync");
    assert_eq!(completed["list_id"], "L");
    assert_eq!(completed["records"], 20);
    assert_eq!(lines.last().unwrap()["message"], "controller: done.");
    // The controller's lines about one list carry its id too.
    let fired = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().ends_with("firing..."))
        .unwrap();
    assert_eq!(
        (fired["module"].as_str(), fired["list_id"].as_str()),
        (Some("controller"), Some("L"))
    );
}

#[actix_rt::test]
async fn demo_syncs_generated_lists_and_verifies_them_without_keys() {
    let child = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .args(["demo", "--lists", "2", "--members", "900"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exit_within(child, Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    let row = |list: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(list))
            .unwrap_or_default();
        line.split_whitespace().take(2).map(str::to_owned).collect()
    };
    assert_eq!(row("demo-list-1 "), ["demo-list-1", "900"], "{stdout}");
    assert_eq!(row("demo-list-2 "), ["demo-list-2", "450"], "{stdout}");
    assert!(
        stdout.contains("demo: 1350 of 1350 Mailchimp members (archived included) are in Ometria exactly: verified"),
        "{stdout}"
    );

    // The second round: a few members changed, touched and deleted, then a
    // SYNC and a reconciliation of each list, figures from the run history.
    // e.g. `  demo-list-1          9       8       4 |     17      9         8       0         4`
    let second: Vec<(String, Vec<u64>)> = stdout
        .lines()
        .skip_while(|l| !l.contains("changed touched deleted |"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace().filter(|w| *w != "|");
            let name = words.next().unwrap().to_owned();
            (name, words.map(|w| w.parse().expect(l)).collect())
        })
        .collect();
    let names: Vec<&str> = second.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["demo-list-1", "demo-list-2", "total"], "{stdout}");
    for (name, figures) in &second {
        let [changed, touched, deleted, read, pushed, unchanged, skipped, opted_out] = figures[..] else {
            panic!("{name}: {figures:?}\n{stdout}");
        };
        // Changed members are pushed (or skipped, as in the LOAD); touched
        // ones are read and not pushed; deleted ones are opted out.
        assert_eq!(pushed + skipped, changed, "{name}\n{stdout}");
        assert_eq!(unchanged, touched, "{name}\n{stdout}");
        assert!(unchanged > 0 && deleted > 0, "{name}\n{stdout}");
        assert!(read >= changed + touched, "{name}\n{stdout}");
        assert_eq!(opted_out, deleted, "{name}\n{stdout}");
    }
    let column = |i: usize| second[..2].iter().map(|(_, f)| f[i]).sum::<u64>();
    assert_eq!(second[2].1, (0..8).map(column).collect::<Vec<_>>(), "{stdout}");
    let [_, _, deleted, _, pushed, unchanged, skipped, opted_out] = second[2].1[..] else {
        unreachable!()
    };
    assert!(
        stdout.contains(&format!(
            "pushed {pushed} ({unchanged} unchanged since Ometria accepted them, {skipped} skipped, 0 rejected); \
             the reconciliations opted out {opted_out} of the {deleted} deleted members"
        )),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with(&format!(
            "demo: 1350 of 1350 right in Ometria — the {} Mailchimp members (archived included) exactly, \
             the {deleted} deleted ones opted out: verified",
            1350 - deleted
        )),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.trim_end().ends_with("controller: done."));
    assert!(!stderr.contains(" ERROR "), "{stderr}");
}

#[actix_rt::test]
async fn the_standalone_sandbox_serves_an_importer_in_another_process() {
    use std::io::{BufRead, BufReader};
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .args(["sandbox", "--port", "0", "--lists", "solo:700", "--ometria-rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first
        .strip_prefix("sandbox: serving on http://")
        .expect(&first)
        .to_owned();
    let described: Vec<String> = lines.take(5).map(Result::unwrap).collect();
    assert!(
        described.contains(&format!("MAILCHIMP_BASE_URL=http://{address}/3.0")),
        "{described:?}"
    );

    let (dir, file) = state_dir(r#"[{"list_id": "solo"}]"#);
    let out = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .env("IMPORTER_STATE_DIR", dir.path())
        .env("MAILCHIMP_APIKEY", ometria_importer::sandbox::DEFAULT_MAILCHIMP_KEY)
        .env("OMETRIA_APIKEY", ometria_importer::sandbox::DEFAULT_OMETRIA_KEY)
        .env("MAILCHIMP_BASE_URL", format!("http://{address}/3.0"))
        .env("OMETRIA_BASE_URL", format!("http://{address}"))
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_json(&file)[0]["total_updates"], 700);
    let mut answer = awc::Client::default()
        .get(format!("http://{address}/_sandbox/verify"))
        .send()
        .await
        .unwrap();
    let verification: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(verification["ok"], true, "{verification}");
    signal(&sandbox, libc::SIGINT);
    let stopped = exit_within(sandbox, Duration::from_secs(10)).await;
    assert_eq!(stopped.status.code(), Some(0));
}

#[actix_rt::test]
async fn demo_follow_shows_incremental_syncs_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .args(["demo", "--follow", "--lists", "1", "--members", "300", "--every", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read lines on a thread; the test polls what arrived.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let synced = |n: usize| seen.lock().unwrap().iter().filter(|l| l.contains(": SYNC of ")).count() >= n;
    wait_until(Duration::from_secs(30), "two incremental syncs", || synced(2)).await;
    signal(&child, libc::SIGINT);
    let out = exit_within(child, Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), Some(0));
    let lines = seen.lock().unwrap().clone();
    let syncs: Vec<&String> = lines.iter().filter(|l| l.contains(": SYNC of ")).collect();
    // e.g. `demo: demo-list-1: SYNC of 12 records in 0.1 s; members changed before 2026-…: 301 of 301 match`
    for line in &syncs {
        assert!(!line.contains("MISMATCH"), "{lines:?}");
        let (matching, members) = line.rsplit_once(": ").unwrap().1.split_once(" of ").unwrap();
        assert_eq!(matching, members.trim_end_matches(" match"), "{line}");
    }
}

#[actix_rt::test]
async fn demo_follow_with_webhooks_shows_how_long_changes_take_to_reach_ometria() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .args(["demo", "--follow", "--webhooks", "--lists", "1", "--members", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_lines.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    // e.g. `demo: change → Ometria: 10 changes arrived, p50 2.8 s, p95 5.1 s, max 5.1 s; 21 waiting (…)`
    let arrived = || {
        seen.lock().unwrap().iter().any(|l| {
            l.strip_prefix("demo: change → Ometria: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    };
    wait_until(Duration::from_secs(90), "a change in Ometria", arrived).await;
    signal(&child, libc::SIGINT);
    let out = exit_within(child, Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), Some(0));
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the fake Mailchimp posts a webhook for each to the importer")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("MISMATCH")), "{lines:?}");
    // The SYNCs came from webhooks (polling every hour would not have run yet).
    let log = log.lock().unwrap().clone();
    assert!(log.contains("changed in Mailchimp ("), "{log}");
    assert!(log.contains("/webhooks/mailchimp/<IMPORTER_WEBHOOK_SECRET>"), "{log}");
}

#[actix_rt::test]
async fn the_health_command_asks_the_running_importer() {
    let apis = apis_with_list(20).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let health = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
            .env_clear()
            .env("IMPORTER_METRICS_ADDR", addr)
            .arg("health")
            .output()
            .unwrap()
    };
    // Nothing listens yet.
    assert_eq!(health(&format!("127.0.0.1:{port}")).status.code(), Some(1));
    let unset = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .arg("health")
        .output()
        .unwrap();
    assert_eq!(unset.status.code(), Some(2));
    assert!(text(&unset.stderr).contains("IMPORTER_METRICS_ADDR is not set"));

    let child = importer_command(dir.path(), Some(&apis))
        .env("IMPORTER_METRICS_ADDR", format!("0.0.0.0:{port}"))
        .arg("go")
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "a healthy answer", || {
        health(&format!("0.0.0.0:{port}")).status.code() == Some(0)
    })
    .await;
    let out = health(&format!("0.0.0.0:{port}"));
    assert_eq!(text(&out.stdout).trim(), r#"{"status":"ok"}"#);
    std::fs::write(dir.path().join("controller.quit"), "").unwrap();
    assert_eq!(exit_within(child, Duration::from_secs(10)).await.status.code(), Some(0));
}

/// The failing input of issue 14: a proxy that drops `offset`, so every
/// page holds the same 100 members while `total_items` says 5,000. `once`
/// must not report a sync it did not do: exit 1, the state file untouched,
/// and the log says what Mailchimp did.
#[actix_rt::test]
async fn once_exits_1_when_mailchimp_pages_do_not_add_up() {
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    let first_hundred: Vec<_> = generate_members(100, Utc::now())
        .iter()
        .map(FakeMember::to_json)
        .collect();
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"members": first_hundred, "total_items": 5000})),
        )
        .with_priority(2)
        .mount(&apis.mailchimp)
        .await;
    // It keeps `status=archived`: this list has no archived members.
    Mock::given(method("GET"))
        .and(query_param("status", "archived"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"members": [], "total_items": 0})))
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    // One reader, so that pages are read in order: a sweep that shows it
    // cannot be trusted sends nothing more.
    let entries = r#"[{"list_id": "L", "worker_count": 1}]"#;
    let (dir, file) = state_dir(entries);
    let out = exit_within(
        importer_command(dir.path(), Some(&apis)).arg("once").spawn().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), entries);
    assert!(
        log.contains("Mailchimp returned member \"u000000\" at two offsets of one sweep"),
        "{log}"
    );
    assert!(log.contains("latest_timestamp stays null (full LOAD)"), "{log}");
    // A member is pushed at most once per sweep — two offset sweeps and a
    // keyset sweep — not once per page (50 times).
    let pushed = apis.pushed();
    let most = pushed
        .iter()
        .map(|r| pushed.iter().filter(|o| o["id"] == r["id"]).count())
        .max()
        .unwrap_or(0);
    assert!(most <= 3, "a member was pushed {most} times");
}

/// `IMPORTER_WEBHOOK_SECRET` is looked at only by what uses it: a
/// placeholder left in a Kubernetes Secret, a short one or an empty one
/// (`IMPORTER_WEBHOOK_SECRET=` in an env file: unset) stops neither
/// `once` (which never receives webhooks, IMPORTER_WEBHOOK_ADDR or not),
/// nor `plan`, nor `check` without IMPORTER_WEBHOOK_ADDR. `go` and `check`
/// with IMPORTER_WEBHOOK_ADDR refuse it, naming the variable and never
/// repeating its value.
#[actix_rt::test]
async fn a_placeholder_or_empty_webhook_secret_stops_only_the_receiver() {
    let apis = apis_with_list(20).await;
    let placeholder = "<your webhook secret>";
    for secret in [placeholder, "tooShort", "", "  "] {
        for addr in [None, Some("127.0.0.1:0")] {
            let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
            let mut once = importer_command(dir.path(), Some(&apis));
            once.env("IMPORTER_WEBHOOK_SECRET", secret).arg("once");
            if let Some(addr) = addr {
                once.env("IMPORTER_WEBHOOK_ADDR", addr);
            }
            let out = exit_within(once.spawn().unwrap(), Duration::from_secs(20)).await;
            let log = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{secret:?} {addr:?}: {log}");
            assert_eq!(read_json(&file)[0]["total_updates"], 20, "{log}");
            assert!(!log.contains("webhook"), "{log}");
        }
        let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
        let plan = importer_command(dir.path(), Some(&apis))
            .env("IMPORTER_WEBHOOK_SECRET", secret)
            .arg("plan")
            .output()
            .unwrap();
        assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
        let check = importer_command(dir.path(), None)
            .env("IMPORTER_WEBHOOK_SECRET", secret)
            .arg("check")
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    }
    // With the receiver on: refused before anything starts.
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    for (secret, why) in [
        (
            placeholder,
            "IMPORTER_WEBHOOK_SECRET is not valid: character 1 is not one of A-Z a-z 0-9 - . _ ~",
        ),
        ("", "IMPORTER_WEBHOOK_ADDR is set but IMPORTER_WEBHOOK_SECRET is not"),
    ] {
        let go = importer_command(dir.path(), Some(&apis))
            .env("IMPORTER_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("IMPORTER_WEBHOOK_SECRET", secret)
            .arg("go")
            .spawn()
            .unwrap();
        let out = exit_within(go, Duration::from_secs(10)).await;
        let log = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{log}");
        assert!(log.contains(&format!("controller: {why}")), "{log}");
        assert!(!log.contains(placeholder), "{log}");
        let check = importer_command(dir.path(), None)
            .env("IMPORTER_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("IMPORTER_WEBHOOK_SECRET", secret)
            .arg("check")
            .output()
            .unwrap();
        let said = text(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{said}");
        assert!(said.contains(&format!("error: {why}")), "{said}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"[{"list_id": "L"}]"#);
}
