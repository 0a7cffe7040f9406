//! The operator's kit (issue 20) names only metrics the importer exports:
//! every `ometria_importer_*` name in the Grafana dashboard
//! (deploy/grafana/importer.json, which must be valid JSON), the alert
//! rules (deploy/prometheus/alerts.yaml, and their copy in
//! deploy/kubernetes/prometheusrule.yaml) and the series their tests feed
//! (deploy/prometheus/alerts_test.yaml) is a family of a real `/metrics`
//! scrape of a daemon that synced, failed, reconciled and took webhooks,
//! and every label a selector there names is one that family has. A
//! metric renamed in the code and not in the kit fails here.
//!
//! The PromQL itself is checked by promtool, and the rules' other
//! properties by scripts/check-operator-kit.py, both in .ci/run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use ometria_importer::config::WebhookListen;
use ometria_importer::telemetry::metrics::Metrics;
use ometria_importer::RunMode;
use support::{
    capture_log, loopback, quit, spawn_run, state_dir, subscribed, wait_until, Apis, FakeMailchimp, FakeOmetria,
};

const PREFIX: &str = "ometria_importer_";
const SECRET: &str = "wh-0123456789abcdef";

/// Families this run does not make show (a labelled family shows once it
/// has a series): their names are checked against the registry only.
const NOT_SHOWN_HERE: [&str; 3] = [
    "ometria_importer_retries_total",
    "ometria_importer_paging_faults_total",
    "ometria_importer_values_dropped_total",
];

/// Labels Prometheus adds to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// The kit's files that name metrics, from the repository root.
const KIT: [&str; 4] = [
    "deploy/grafana/importer.json",
    "deploy/prometheus/alerts.yaml",
    "deploy/prometheus/alerts_test.yaml",
    "deploy/kubernetes/prometheusrule.yaml",
];

/// One use of a metric in the kit: its name, and the label names of the
/// selector that follows it (`name{a="b"}`), if any.
#[derive(Debug)]
struct Use {
    name: String,
    labels: Vec<String>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every metric name with the importer's prefix in `text`, with the label
/// names of its selector.
fn uses(text: &str) -> Vec<Use> {
    let mut found = vec![];
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let starts_a_name = rest[..at].chars().next_back().is_none_or(|c| !is_name_char(c));
        let tail = &rest[at..];
        let end = tail.find(|c| !is_name_char(c)).unwrap_or(tail.len());
        if starts_a_name {
            let labels = tail[end..]
                .strip_prefix('{')
                .map(|selector| label_names(selector).unwrap_or_else(|| panic!("a selector not understood: {tail}")))
                .unwrap_or_default();
            found.push(Use {
                name: tail[..end].to_owned(),
                labels,
            });
        }
        rest = &tail[end..];
    }
    found
}

/// The label names of a selector, from after its `{` to its `}`:
/// `a="x", b=~"y"}` gives a and b.
fn label_names(selector: &str) -> Option<Vec<String>> {
    let mut names = vec![];
    let mut rest = selector.trim_start();
    loop {
        if rest.starts_with('}') {
            return Some(names);
        }
        let end = rest.find(|c: char| !is_name_char(c))?;
        names.push(rest[..end].to_owned());
        rest = rest[end..].trim_start();
        rest = ["=~", "!~", "!=", "="].iter().find_map(|op| rest.strip_prefix(op))?;
        rest = rest.trim_start().strip_prefix('"')?;
        // The quoted value, escapes included.
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next()? {
                (_, '\\') => {
                    chars.next()?;
                }
                (i, '"') => break i,
                _ => {}
            }
        };
        rest = rest[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

/// Every string in a JSON document.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The families of a `/metrics` page, with the label names of their series.
fn families(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            families
                .entry(family.split(' ').next().unwrap().to_owned())
                .or_default();
        }
    }
    for sample in page.lines().filter(|l| !l.starts_with('#')).flat_map(uses) {
        families.entry(sample.name).or_default().extend(sample.labels);
    }
    families
}

async fn get(url: &str) -> String {
    let mut answer = awc::Client::default().get(url).send().await.unwrap();
    String::from_utf8_lossy(&answer.body().await.unwrap()).into_owned()
}

async fn post(url: &str, body: &str) -> u16 {
    awc::Client::default()
        .post(url)
        .content_type("application/x-www-form-urlencoded")
        .send_body(body.to_owned())
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The address after `http://` on the first log line containing `marker`.
fn address_after(log: &str, marker: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = line.split(marker).nth(1)?;
    Some(rest.split('/').next()?.trim_end_matches('.').to_owned())
}

/// A `/metrics` page of a daemon that has synced a list, failed another,
/// reconciled the first and taken webhook requests: every family the
/// registry has but those of [`NOT_SHOWN_HERE`] has a series.
async fn a_full_scrape() -> String {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("good", subscribed(30)),
        FakeOmetria {
            backlog_headers: Some((45_000, 50_000)),
            ..FakeOmetria::default()
        },
    )
    .await;
    // "nope" is no list of Mailchimp's: its LOAD fails. "good" LOADs, and is
    // reconciled a second later.
    let (dir, _) = state_dir(r#"[{"list_id": "good", "reconcile_seconds": 1}, {"list_id": "nope"}]"#);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    config.metrics_addr = Some(loopback());
    config.webhooks = Some(WebhookListen {
        addr: loopback(),
        secret: SECRET.parse().unwrap(),
    });
    // No SYNC for the webhook events within the test.
    config.webhook_debounce = Duration::from_secs(3600);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let (metrics, webhooks) = (
        "serving /metrics and /healthz on http://",
        "receiving Mailchimp webhooks on http://",
    );
    wait_until(Duration::from_secs(10), "the addresses", || {
        let log = buffer.contents();
        address_after(&log, metrics).is_some() && address_after(&log, webhooks).is_some()
    })
    .await;
    let log = buffer.contents();
    let metrics = format!("http://{}/metrics", address_after(&log, metrics).unwrap());
    let webhooks = format!("http://{}/webhooks/mailchimp", address_after(&log, webhooks).unwrap());
    // A wrong secret (404), and a deletion without an address.
    let deletion = "type=unsubscribe&fired_at=2024-05-01+10%3A00%3A00&data%5Blist_id%5D=good&data%5Baction%5D=delete";
    assert_eq!(
        post(&format!("{webhooks}/wh-not-the-secret-at-all"), deletion).await,
        404
    );
    assert_eq!(post(&format!("{webhooks}/{SECRET}"), deletion).await, 200);

    let expected: BTreeSet<String> = Metrics::new()
        .family_names()
        .into_iter()
        .filter(|name| !NOT_SHOWN_HERE.contains(&name.as_str()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = get(&metrics).await;
        let shown: BTreeSet<String> = families(&page).into_keys().collect();
        let missing: Vec<_> = expected.difference(&shown).collect();
        if missing.is_empty() {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "families never shown: {missing:?} (make this run show them, or list them in NOT_SHOWN_HERE)\n{}",
            buffer.contents()
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    quit(dir.path(), daemon).await;
    page
}

#[actix_rt::test]
async fn the_dashboard_and_the_alert_rules_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = a_full_scrape().await;
    let scraped = families(&page);
    let registered: BTreeSet<String> = Metrics::new().family_names().into_iter().collect();
    for name in scraped.keys() {
        assert!(registered.contains(name), "{name} is scraped but not in family_names()");
    }
    for name in NOT_SHOWN_HERE {
        assert!(registered.contains(name), "{name} is no metric (NOT_SHOWN_HERE)");
    }

    let mut problems = BTreeSet::new();
    let mut named = BTreeSet::new();
    for file in KIT {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let texts = if file.ends_with(".json") {
            let dashboard: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            let mut out = vec![];
            strings(&dashboard, &mut out);
            out
        } else {
            vec![text]
        };
        let found: Vec<Use> = texts.iter().flat_map(|t| uses(t)).collect();
        assert!(!found.is_empty(), "{file} names no metric of the importer");
        for metric in found {
            named.insert(metric.name.clone());
            match scraped.get(&metric.name) {
                Some(labels) => {
                    for label in &metric.labels {
                        if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                            problems.insert(format!(
                                "{file}: {} has no label {label} (it has {labels:?})",
                                metric.name
                            ));
                        }
                    }
                }
                None if NOT_SHOWN_HERE.contains(&metric.name.as_str()) => {}
                None => {
                    problems.insert(format!("{file}: {} is not a metric the importer exports", metric.name));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexported: {:?}",
        problems.into_iter().collect::<Vec<_>>().join("\n"),
        scraped.keys().collect::<Vec<_>>()
    );

    // The dashboard's variables are the ones its queries use.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/importer.json")).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    assert_eq!(variable("datasource").unwrap()["query"], "prometheus");
    assert_eq!(
        variable("list_id").unwrap()["definition"],
        "label_values(ometria_importer_list_lag_seconds, list_id)"
    );
    // What an operator looks at first is there.
    for name in [
        "ometria_importer_list_lag_seconds",
        "ometria_importer_list_behind",
        "ometria_importer_list_sync_failures_in_a_row",
        "ometria_importer_records_pushed_total",
        "ometria_importer_http_requests_total",
        "ometria_importer_ometria_backlog_remaining",
        "ometria_importer_last_tick_timestamp_seconds",
    ] {
        assert!(named.contains(name), "the kit does not use {name}");
    }
}

#[test]
fn names_and_selector_labels_are_read_from_queries() {
    let found = uses(
        r#"sum by (result) (rate(ometria_importer_syncs_total{result="failed", api=~"a,\"b}"}[5m])) / foo_ometria_importer_x + ometria_importer_up"#,
    );
    let read: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|u| (u.name.as_str(), u.labels.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        read,
        [
            ("ometria_importer_syncs_total", vec!["result", "api"]),
            ("ometria_importer_up", vec![])
        ]
    );
    let page = "# HELP ometria_importer_a_total A.\n# TYPE ometria_importer_a_total counter\n\
                ometria_importer_a_total{list_id=\"x\",entry=\"1\"} 3\n# TYPE ometria_importer_b gauge\n";
    let families = families(page);
    assert_eq!(
        families["ometria_importer_a_total"],
        BTreeSet::from(["entry".to_owned(), "list_id".to_owned()])
    );
    assert!(families["ometria_importer_b"].is_empty());
}
