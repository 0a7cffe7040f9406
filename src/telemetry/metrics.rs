//! Prometheus metrics (SPEC §12), every name prefixed `ometria_importer_`.
//!
//! Per entry (labels `list_id`, and `entry`: its rank among the entries of
//! that list, from 1): lag, last sync duration and records, behind (0/1),
//! syncs failed in a row.
//! Totals: records pushed, rejected and skipped; values dropped by field; HTTP requests by API and
//! status; retries by API; paging rules Mailchimp broke, by kind; syncs
//! by result; syncs running; the last tick; reads and writes of the state
//! file; Ometria's backlog as last reported. Webhooks (issue 18): events by
//! type and result, members said to be deleted by result, and per entry
//! the seconds since its list's last event.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::Api;

pub struct Metrics {
    registry: Registry,
    pub list_lag_seconds: GaugeVec,
    pub list_last_sync_duration_seconds: GaugeVec,
    pub list_last_sync_records: IntGaugeVec,
    pub list_behind: IntGaugeVec,
    pub list_sync_failures_in_a_row: IntGaugeVec,
    pub list_reconcile_failing: IntGaugeVec,
    pub list_deletions_held: IntGaugeVec,
    pub members_deleted: IntCounter,
    pub reconciliations: IntCounterVec,
    pub records_pushed: IntCounter,
    pub records_rejected: IntCounter,
    pub records_skipped: IntCounter,
    pub records_unchanged: IntCounter,
    pub values_dropped: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub retries: IntCounterVec,
    pub paging_faults: IntCounterVec,
    pub syncs: IntCounterVec,
    pub syncs_running: IntGauge,
    pub last_tick_timestamp_seconds: Gauge,
    pub state_file_reads: IntCounter,
    pub state_file_writes: IntCounter,
    pub ometria_backlog_remaining: IntGauge,
    pub ometria_backlog_limit: IntGauge,
    pub webhook_events: IntCounterVec,
    pub webhook_deletions: IntCounterVec,
    pub list_webhook_event_age_seconds: GaugeVec,
}

const PREFIX: &str = "ometria_importer";
const ENTRY_LABELS: [&str; 2] = ["list_id", "entry"];

fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge_vec = |short, help| GaugeVec::new(Opts::new(name(short), help), &ENTRY_LABELS).expect("valid metric");
        let metrics = Metrics {
            list_lag_seconds: gauge_vec(
                "list_lag_seconds",
                "Seconds since the entry's last successful sync started (or since it was first seen, if never).",
            ),
            list_last_sync_duration_seconds: gauge_vec(
                "list_last_sync_duration_seconds",
                "Duration of the entry's last successful sync.",
            ),
            list_last_sync_records: IntGaugeVec::new(
                Opts::new(
                    name("list_last_sync_records"),
                    "Records pushed by the entry's last successful sync.",
                ),
                &ENTRY_LABELS,
            )
            .expect("valid metric"),
            list_behind: IntGaugeVec::new(
                Opts::new(
                    name("list_behind"),
                    "1 while the entry is behind (lag above its alert threshold), else 0.",
                ),
                &ENTRY_LABELS,
            )
            .expect("valid metric"),
            list_sync_failures_in_a_row: IntGaugeVec::new(
                Opts::new(
                    name("list_sync_failures_in_a_row"),
                    "Syncs of the entry that failed in a row, each after its retries (0 once one succeeds).",
                ),
                &ENTRY_LABELS,
            )
            .expect("valid metric"),
            list_reconcile_failing: IntGaugeVec::new(
                Opts::new(
                    name("list_reconcile_failing"),
                    "1 while the entry's last reconciliation (the search for members deleted in Mailchimp) failed, else 0.",
                ),
                &ENTRY_LABELS,
            )
            .expect("valid metric"),
            list_deletions_held: IntGaugeVec::new(
                Opts::new(
                    name("list_deletions_held"),
                    "1 while the entry's last reconciliation found more members gone than IMPORTER_MAX_DELETE_FRACTION allows and did nothing, else 0.",
                ),
                &ENTRY_LABELS,
            )
            .expect("valid metric"),
            members_deleted: IntCounter::new(
                name("members_deleted_total"),
                "Members deleted in Mailchimp that reconciliations handled (opted out in Ometria, or only forgotten with on_delete \"ignore\").",
            )
            .expect("valid metric"),
            reconciliations: IntCounterVec::new(
                Opts::new(name("reconciliations_total"), "Reconciliations ended, by result."),
                &["result"],
            )
            .expect("valid metric"),
            records_pushed: IntCounter::new(name("records_pushed_total"), "Records Ometria accepted.")
                .expect("valid metric"),
            records_rejected: IntCounter::new(name("records_rejected_total"), "Records Ometria rejected.")
                .expect("valid metric"),
            records_skipped: IntCounter::new(
                name("records_skipped_total"),
                "Members not sent: no unique_email_id, or no email address Ometria takes.",
            )
            .expect("valid metric"),
            records_unchanged: IntCounter::new(
                name("records_unchanged_total"),
                "Records not pushed: equal to what Ometria last accepted (the member ledger).",
            )
            .expect("valid metric"),
            values_dropped: IntCounterVec::new(
                Opts::new(
                    name("values_dropped_total"),
                    "Values left out of the records sent because they do not meet Ometria's contract \
                     for their field (a timestamp that is not a real instant), by Ometria field.",
                ),
                &["field"],
            )
            .expect("valid metric"),
            http_requests: IntCounterVec::new(
                Opts::new(
                    name("http_requests_total"),
                    "HTTP requests by API and answer status (\"error\": no answer).",
                ),
                &["api", "status"],
            )
            .expect("valid metric"),
            retries: IntCounterVec::new(Opts::new(name("retries_total"), "Requests retried, by API."), &["api"])
                .expect("valid metric"),
            paging_faults: IntCounterVec::new(
                Opts::new(
                    name("paging_faults_total"),
                    "Sweeps of a list's members that Mailchimp's answers broke a paging rule in \
                     (a member read twice, out of order, outside the window, a page over count or \
                     short, a miscount), by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            syncs: IntCounterVec::new(Opts::new(name("syncs_total"), "Syncs ended, by result."), &["result"])
                .expect("valid metric"),
            syncs_running: IntGauge::new(name("syncs_running"), "Syncs running now.").expect("valid metric"),
            last_tick_timestamp_seconds: Gauge::new(
                name("last_tick_timestamp_seconds"),
                "When the controller last checked the lists (Unix time).",
            )
            .expect("valid metric"),
            state_file_reads: IntCounter::new(
                name("state_file_reads_total"),
                "Times the state keeper read state.json: at each tick, and once per write.",
            )
            .expect("valid metric"),
            state_file_writes: IntCounter::new(
                name("state_file_writes_total"),
                "Times sync results were written to state.json (one write takes every result that came in together).",
            )
            .expect("valid metric"),
            ometria_backlog_remaining: IntGauge::new(
                name("ometria_backlog_remaining"),
                "Records Ometria's backlog could still take, as its last answer said (X-QueueSize-Remaining); 0 with the limit 0 until an answer says.",
            )
            .expect("valid metric"),
            ometria_backlog_limit: IntGauge::new(
                name("ometria_backlog_limit"),
                "Records Ometria's backlog holds at most, as its last answer said (X-QueueSize-Limit); 0 until an answer says.",
            )
            .expect("valid metric"),
            webhook_events: IntCounterVec::new(
                Opts::new(
                    name("webhook_events_total"),
                    "Requests to the webhook receiver, by event type (\"unknown\" when it could not be \
                     read) and result: accepted, malformed, unknown_type, too_large, timeout, wrong_secret.",
                ),
                &["type", "result"],
            )
            .expect("valid metric"),
            webhook_deletions: IntCounterVec::new(
                Opts::new(
                    name("webhook_deletions_total"),
                    "Members a webhook said were deleted (unsubscribe with action=delete), by result; no list or \
                     entry label: a member counts once per ledger of its list (entries without a collection share \
                     one), and again when looked at once more after a sync that was running. Results: opted_out, \
                     not_in_ledger (never pushed, nothing to opt out), in_mailchimp (Mailchimp still holds the \
                     member: left to the SYNC), rejected (by Ometria), failed (left to the reconciliation), kept \
                     (on_delete is \"ignore\"; once per such entry), no_email (the event had no data[email]; once \
                     per event), overflow (10,000 wait already: left to the reconciliation).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            list_webhook_event_age_seconds: gauge_vec(
                "list_webhook_event_age_seconds",
                "Seconds since the last webhook event of the entry's list, as of the last tick (absent: none since the start).",
            ),
            registry,
        };
        for collector in metrics.collectors() {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    }

    /// Every metric, as the registry takes it.
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.list_lag_seconds.clone()) as Box<dyn Collector>,
            Box::new(self.list_last_sync_duration_seconds.clone()),
            Box::new(self.list_last_sync_records.clone()),
            Box::new(self.list_behind.clone()),
            Box::new(self.list_sync_failures_in_a_row.clone()),
            Box::new(self.list_reconcile_failing.clone()),
            Box::new(self.list_deletions_held.clone()),
            Box::new(self.members_deleted.clone()),
            Box::new(self.reconciliations.clone()),
            Box::new(self.records_pushed.clone()),
            Box::new(self.records_rejected.clone()),
            Box::new(self.records_skipped.clone()),
            Box::new(self.records_unchanged.clone()),
            Box::new(self.values_dropped.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.paging_faults.clone()),
            Box::new(self.syncs.clone()),
            Box::new(self.syncs_running.clone()),
            Box::new(self.last_tick_timestamp_seconds.clone()),
            Box::new(self.state_file_reads.clone()),
            Box::new(self.state_file_writes.clone()),
            Box::new(self.ometria_backlog_remaining.clone()),
            Box::new(self.ometria_backlog_limit.clone()),
            Box::new(self.webhook_events.clone()),
            Box::new(self.webhook_deletions.clone()),
            Box::new(self.list_webhook_event_age_seconds.clone()),
        ]
    }

    /// The name of every metric family, also of those `/metrics` does not
    /// show yet (a family with labels shows once it has a series).
    pub fn family_names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// Counts one request to `api` that got `status` (`None`: no answer).
    pub fn http_request(&self, api: Api, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.http_requests.with_label_values(&[api_label(api), &status]).inc();
    }

    /// Notes the room (records) left in Ometria's backlog of `limit`
    /// records, as an answer reported it (SPEC §6).
    pub fn ometria_backlog(&self, remaining: u64, limit: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.ometria_backlog_remaining.set(gauge(remaining));
        self.ometria_backlog_limit.set(gauge(limit));
    }

    pub fn retry(&self, api: Api) {
        self.retries.with_label_values(&[api_label(api)]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn api_label(api: Api) -> &'static str {
    match api {
        Api::Mailchimp => "mailchimp",
        Api::Ometria => "ometria",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.http_request(Api::Mailchimp, Some(200));
        m.http_request(Api::Ometria, None);
        m.retry(Api::Ometria);
        m.records_pushed.inc_by(3);
        m.records_unchanged.inc_by(2);
        m.values_dropped.with_label_values(&["timestamp_subscribed"]).inc();
        m.list_lag_seconds.with_label_values(&["a1", "1"]).set(12.5);
        m.syncs.with_label_values(&["succeeded"]).inc();
        m.ometria_backlog(1200, 50_000);
        m.webhook_events.with_label_values(&["unsubscribe", "accepted"]).inc();
        m.list_webhook_event_age_seconds
            .with_label_values(&["a1", "1"])
            .set(3.5);
        let text = m.render();
        for line in [
            "ometria_importer_http_requests_total{api=\"mailchimp\",status=\"200\"} 1",
            "ometria_importer_http_requests_total{api=\"ometria\",status=\"error\"} 1",
            "ometria_importer_retries_total{api=\"ometria\"} 1",
            "ometria_importer_records_pushed_total 3",
            "ometria_importer_records_unchanged_total 2",
            "ometria_importer_values_dropped_total{field=\"timestamp_subscribed\"} 1",
            "ometria_importer_list_lag_seconds{entry=\"1\",list_id=\"a1\"} 12.5",
            "ometria_importer_syncs_total{result=\"succeeded\"} 1",
            "# TYPE ometria_importer_syncs_running gauge",
            "ometria_importer_ometria_backlog_remaining 1200",
            "ometria_importer_ometria_backlog_limit 50000",
            "# TYPE ometria_importer_ometria_backlog_remaining gauge",
            "# TYPE ometria_importer_records_rejected_total counter",
            "ometria_importer_webhook_events_total{result=\"accepted\",type=\"unsubscribe\"} 1",
            "ometria_importer_list_webhook_event_age_seconds{entry=\"1\",list_id=\"a1\"} 3.5",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let families = m.family_names();
        for family in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = family["# TYPE ".len()..].split(' ').next().unwrap();
            assert!(name.starts_with("ometria_importer_"), "{family}");
            assert!(families.iter().any(|f| f == name), "{name} is not in family_names()");
        }
    }

    #[test]
    fn family_names_include_the_families_that_show_nothing_yet() {
        let m = Metrics::new();
        let families = m.family_names();
        assert_eq!(families.len(), m.collectors().len(), "one family per collector");
        let text = m.render();
        for name in [
            "ometria_importer_list_sync_failures_in_a_row",
            "ometria_importer_paging_faults_total",
            "ometria_importer_webhook_deletions_total",
        ] {
            assert!(families.iter().any(|f| f == name), "{name} missing from {families:?}");
            assert!(
                !text.contains(name),
                "{name} has no series yet: /metrics shows nothing of it"
            );
        }
        assert!(
            families.iter().all(|f| f.starts_with("ometria_importer_")),
            "{families:?}"
        );
    }
}
