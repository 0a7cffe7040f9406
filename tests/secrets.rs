//! API keys never show: not in logs (text or JSON), errors, help, `check`,
//! the state file or the rejected file — whatever the run does. And the
//! default endpoints are HTTPS.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;

use ometria_importer::api::ApiKey;
use ometria_importer::config::DEFAULT_OMETRIA_BASE_URL;
use ometria_importer::sandbox::faults::Faults;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig};
use support::state_dir;

const MAILCHIMP_KEY: &str = "MCSECRET8a7f6e5d4c3b2a19f0e1d2c3-us7";
const OMETRIA_KEY: &str = "OMSECRETf00dbabe12345678deadbeef";

/// A name, the arguments, and environment variables to set.
type Scenario<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Every form a key could leak in.
fn leaks(text: &str) -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ometria-importer:{MAILCHIMP_KEY}"));
    [MAILCHIMP_KEY, OMETRIA_KEY, "MCSECRET", "OMSECRET", basic.as_str()]
        .iter()
        .filter(|secret| text.contains(*secret))
        .map(|s| s.to_string())
        .collect()
}

/// Runs the binary to its end without blocking this thread, which serves
/// the sandbox.
async fn run(args: &[&str], dir: &Path, sandbox: &Sandbox, env: &[(&str, &str)]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ometria-importer"))
        .env_clear()
        .env("IMPORTER_STATE_DIR", dir)
        .env("MAILCHIMP_APIKEY", MAILCHIMP_KEY)
        .env("OMETRIA_APIKEY", OMETRIA_KEY)
        .env("MAILCHIMP_BASE_URL", sandbox.mailchimp_url())
        .env("OMETRIA_BASE_URL", sandbox.ometria_url())
        .env("IMPORTER_HTTP_TIMEOUT_SECONDS", "2")
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !reader.is_finished() {
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    reader.join().unwrap()
}

/// Everything a run left: its output and every file in the state folder.
fn everything(out: &Output, dir: &Path) -> String {
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap().flatten() {
            if entry.path().is_dir() {
                folders.push(entry.path());
            } else {
                all += &String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap());
            }
        }
    }
    all
}

#[actix_rt::test]
async fn keys_never_appear_in_anything_a_run_leaves() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 300)],
        mailchimp_key: MAILCHIMP_KEY.into(),
        ometria_key: OMETRIA_KEY.into(),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let wrong_ometria = "OMSECRETwrongwrongwrongwrong0000";
    let wrong_mailchimp = "MCSECRETwrongwrongwrongwrong0000-us7";
    let scenarios: Vec<Scenario> = vec![
        ("a successful sync", vec!["once"], vec![]),
        ("JSON logs", vec!["once"], vec![("IMPORTER_LOG_FORMAT", "json")]),
        (
            "Ometria refuses the key",
            vec!["once"],
            vec![("OMETRIA_APIKEY", wrong_ometria)],
        ),
        (
            "Mailchimp refuses the key",
            vec!["once"],
            vec![("MAILCHIMP_APIKEY", wrong_mailchimp)],
        ),
        ("check", vec!["check"], vec![]),
        ("check --online", vec!["check", "--online"], vec![]),
        (
            "check --online, a key Mailchimp refuses",
            vec!["check", "--online"],
            vec![("MAILCHIMP_APIKEY", wrong_mailchimp)],
        ),
        ("help", vec!["--help"], vec![]),
        ("a usage error", vec!["go", "--tick-seconds", "zero"], vec![]),
    ];
    let mut checked = 0;
    for (name, args, env) in scenarios {
        let (dir, _) = state_dir(r#"[{"list_id": "l"}, {"list_id": "unknown"}]"#);
        let out = run(&args, dir.path(), &sandbox, &env).await;
        let all = everything(&out, dir.path());
        assert!(!all.is_empty(), "{name}: nothing to search");
        // The fragments catch the wrong keys of a scenario too: keys all the same.
        let found = leaks(&all);
        assert!(found.is_empty(), "{name}: a key leaked ({found:?}):\n{all}");
        checked += all.len();
    }
    // Faults make errors of every kind; none of them carries a key either.
    sandbox.world().set_behaviour(
        ometria_importer::api::Api::Ometria,
        Behaviour {
            faults: Faults {
                server_error: 0.2,
                drop: 0.2,
                truncate: 0.2,
                ..Faults::default()
            },
            ..Behaviour::default()
        },
    );
    let (dir, _) = state_dir(r#"[{"list_id": "l", "items_per_request": 30}]"#);
    let out = run(&["once"], dir.path(), &sandbox, &[]).await;
    let all = everything(&out, dir.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retry"),
        "no fault was hit"
    );
    assert!(leaks(&all).is_empty(), "a key leaked in an error:\n{all}");
    assert!(checked > 5_000);
    sandbox.stop().await;
}

#[test]
fn the_default_endpoints_are_https() {
    assert!(DEFAULT_OMETRIA_BASE_URL.starts_with("https://"));
    let key: ApiKey = "abc-us9".parse().unwrap();
    assert!(ometria_importer::mailchimp::base_url_for_key(&key)
        .unwrap()
        .starts_with("https://"));
}
