//! A Fetcher reads one Mailchimp page at a time, within the global
//! connection limit and with retries, and maps its members to contacts.

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use slog::{warn, Logger};

use super::messages::{FetchPage, FetchedPage, RecordFacts, StopWorker};
use crate::api::{Api, ApiError};
use crate::config::OmetriaApi;
use crate::limits::ConnectionLimit;
use crate::mailchimp::{raw_members, with_page, MailchimpClient};
use crate::mapping::Mapping;
use crate::ometria::{encode, ParsedFrom, MAX_RECORD_BYTES};
use crate::retry::{Outcomes, RetryPolicy};
use crate::sync::{PageRequest, Window};
use crate::telemetry::metrics::Metrics;
use crate::transform::{fit_mapped, map_member, SkipReason};

pub struct Fetcher {
    pub client: MailchimpClient,
    pub limit: Arc<ConnectionLimit>,
    pub retry: RetryPolicy,
    /// How Mailchimp answered this sync's requests so far, shared by its workers.
    pub outcomes: Outcomes,
    pub list_id: Rc<str>,
    /// The entry's mapping (issue 17).
    pub mapping: Arc<Mapping>,
    /// The `fields` projection its requests ask for ([`Mapping::projection`]).
    pub fields: Rc<str>,
    /// The record format the Writers send.
    pub api: OmetriaApi,
    pub metrics: Arc<Metrics>,
    pub log: Logger,
}

impl Actor for Fetcher {
    type Context = Context<Self>;
}

impl Handler<FetchPage> for Fetcher {
    type Result = ResponseActFuture<Self, Result<FetchedPage, ApiError>>;

    fn handle(&mut self, FetchPage { request, window }: FetchPage, _: &mut Context<Self>) -> Self::Result {
        let metrics = self.metrics.clone();
        let (mapping, fields) = (self.mapping.clone(), self.fields.clone());
        let (client, limit, retry, outcomes, list_id, window, api, log) = (
            self.client.clone(),
            self.limit.clone(),
            self.retry,
            self.outcomes.clone(),
            self.list_id.clone(),
            window,
            self.api,
            self.log.clone(),
        );
        let work = async move {
            retry
                .run(
                    &outcomes,
                    |attempt| {
                        let (client, limit, list_id, window) = (&client, &limit, &list_id, &window);
                        let (mapping, fields) = (&mapping, &fields);
                        async move {
                            let (body, server_time) = {
                                let _connection = limit.acquire().await;
                                client.members_page(list_id, window, request, fields, attempt).await?
                            };
                            // A page that does not parse is retried like a dropped connection.
                            let mut page = read_page(&body, request, list_id, mapping, *window, api)?;
                            page.server_time = server_time;
                            Ok(page)
                        }
                    },
                    |e, n, wait| {
                        metrics.retry(Api::Mailchimp);
                        warn!(
                            log,
                            "sync: reading {} of list \"{list_id}\" at offset {} failed: {e}; retry {n} in {:.1} s.",
                            request.pass.name(),
                            request.offset,
                            wait.as_secs_f64()
                        )
                    },
                )
                .await
        };
        Box::pin(work.into_actor(self))
    }
}

/// Parses a page, maps its members with the entry's `mapping` and encodes
/// the contacts, all into one buffer that the records are slices of.
pub fn read_page(
    body: &[u8],
    request: PageRequest,
    list_id: &str,
    mapping: &Mapping,
    window: Window,
    api: OmetriaApi,
) -> Result<FetchedPage, ApiError> {
    let now = window.before;
    with_page(body, |page, body, repairs| {
        // Read a second time, whole, only for what the typed reader leaves out.
        let raw = if mapping.reads_more() {
            raw_members(body)?
        } else {
            vec![]
        };
        let mut buffer = Vec::with_capacity(page.members.len() * 320);
        let mut ends: Vec<Result<usize, SkipReason>> = Vec::with_capacity(page.members.len());
        let mut keys = Vec::with_capacity(page.members.len());
        let mut dropped = vec![];
        let mut facts = Vec::with_capacity(page.members.len());
        for (position, member) in page.members.into_iter().enumerate() {
            keys.push(member.key());
            let raw = raw.get(position).and_then(Option::as_ref);
            match map_member(&member, raw, mapping, list_id, now) {
                Ok(mut mapped) => {
                    let start = buffer.len();
                    encode(&mapped.contact, api, ParsedFrom(body), &mut buffer);
                    if buffer.len() - start > MAX_RECORD_BYTES {
                        // Mapped values too large for Ometria's record are
                        // dropped, largest first, rather than the record.
                        buffer.truncate(start);
                        let fit = fit_mapped(&mut mapped.contact, mapping, MAX_RECORD_BYTES, |contact| {
                            let mut out = vec![];
                            encode(contact, api, ParsedFrom(body), &mut out);
                            out.len()
                        });
                        mapped.dropped.extend(fit);
                        encode(&mapped.contact, api, ParsedFrom(body), &mut buffer);
                    }
                    facts.push(RecordFacts {
                        email: mapped.contact.email.to_owned(),
                        status: mapped.contact.properties.mailchimp_status.to_owned(),
                    });
                    ends.push(Ok(buffer.len()));
                    dropped.extend(mapped.dropped.into_iter().map(|value| (position, value)));
                }
                Err(reason) => {
                    ends.push(Err(reason));
                    facts.push(RecordFacts::default());
                }
            }
        }
        let buffer = Bytes::from(buffer);
        let mut start = 0;
        let records = ends
            .into_iter()
            .map(|end| {
                end.map(|end| {
                    let record = buffer.slice(start..end);
                    start = end;
                    record
                })
            })
            .collect();
        Ok(FetchedPage {
            request,
            window,
            server_time: None,
            total_items: page.total_items,
            keys,
            records,
            facts,
            dropped,
            repairs: repairs.clone(),
        })
    })
}

impl Handler<StopWorker> for Fetcher {
    type Result = ();

    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Pass;
    use serde_json::{json, Value};

    fn mapping(value: Value) -> Mapping {
        let mut m = Mapping::default();
        m.overlay(value.as_object().unwrap()).unwrap();
        m
    }

    fn read(page: &Value, mapping: &Mapping) -> FetchedPage {
        read_bytes(&serde_json::to_vec(page).unwrap(), mapping)
    }

    fn read_bytes(body: &[u8], mapping: &Mapping) -> FetchedPage {
        let request = PageRequest {
            pass: Pass::Members,
            offset: 0,
            count: 100,
            since: None,
            before: None,
            keyed: false,
            recount: false,
        };
        let window = Window {
            since: None,
            before: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        read_page(body, request, "L", mapping, window, OmetriaApi::Push).unwrap()
    }

    fn member(id: &str, fields: Value) -> Value {
        json!({"unique_email_id": id, "email_address": format!("{id}@x.io"), "status": "subscribed",
               "merge_fields": fields, "last_changed": "2023-01-01T00:00:00+00:00"})
    }

    fn record(page: &FetchedPage, i: usize) -> Value {
        serde_json::from_slice(page.records[i].as_ref().unwrap()).unwrap()
    }

    /// The breaker's: a value nested deeper than serde_json reads whole
    /// costs that member its mapped values, never the page.
    #[test]
    fn a_member_too_deep_to_read_whole_loses_only_its_mapped_values() {
        // serde_json cannot build such a value: the page is written by hand.
        let body = format!(
            r#"{{"members": [{}, {{"unique_email_id": "u2", "email_address": "u2@x.io", "status": "subscribed",
                "merge_fields": {{"PHONE": "+44 20 7946 0958", "X": {}1{}}}, "last_changed": "2023-01-01T00:00:00+00:00"}}],
                "total_items": 2}}"#,
            member("u1", json!({"PHONE": "+44 20 7946 0958"})),
            "[".repeat(200),
            "]".repeat(200)
        );
        let m = mapping(json!({"fields": {"phone_number": "merge_fields.PHONE", "properties.x": "merge_fields.X"}}));
        let page = read_bytes(body.as_bytes(), &m);
        assert_eq!(record(&page, 0)["phone_number"], "+442079460958");
        let second = record(&page, 1);
        assert_eq!(second["id"], "u2");
        assert!(second.get("phone_number").is_none(), "{second}");
        let fields: Vec<(usize, String)> = page.dropped.iter().map(|(i, d)| (*i, d.field.to_string())).collect();
        assert_eq!(fields, [(1, "phone_number".to_owned()), (1, "properties.x".to_owned())]);
    }

    /// The breaker's: one mapped value too large for Ometria's 60 KB is
    /// dropped, largest first, and the record — an unsubscribe, say — sent.
    #[test]
    fn a_mapped_value_too_large_for_a_record_is_dropped_not_the_record() {
        let tags: Vec<Value> = (0..4000)
            .map(|i| json!({"id": i, "name": format!("tag number {i:05}")}))
            .collect();
        let mut big = member("u1", json!({"PHONE": "+44 20 7946 0958"}));
        big["tags"] = Value::Array(tags);
        big["status"] = json!("unsubscribed");
        let small = member("u2", json!({"PHONE": "+44 20 7946 0958"}));
        let page = json!({"members": [big, small], "total_items": 2});
        let m = mapping(json!({"fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"}}));
        let page = read(&page, &m);
        let first = record(&page, 0);
        assert!(page.records[0].as_ref().unwrap().len() <= MAX_RECORD_BYTES);
        assert_eq!(first["marketing_optin"], "EXPLICITLY_OPTEDOUT");
        assert_eq!(first["phone_number"], "+442079460958", "only the large value goes");
        assert!(first["properties"].get("tags").is_none(), "{first}");
        assert_eq!(page.dropped.len(), 1);
        assert_eq!(page.dropped[0].1.field, "properties.tags");
        assert!(page.dropped[0].1.value.contains("too large"), "{:?}", page.dropped);
        assert!(
            record(&page, 1)["properties"].get("tags").is_none(),
            "no tags read: nothing to send"
        );
    }
    /// The breaker's second round: the values taken are the mapping's own,
    /// one by one (a nested property, a mapped first name), and none when
    /// taking them all would not make the record fit.
    #[test]
    fn only_the_mapped_values_that_must_go_go() {
        let big = "x".repeat(70_000);
        let m = mapping(
            json!({"fields": {"properties.shop.a": "merge_fields.A", "properties.shop.b": "merge_fields.B",
            "firstname": "merge_fields.NICK"}}),
        );
        let members = json!({"members": [
            member("u1", json!({"A": big, "B": "small", "NICK": "Uri"})),
            member("u2", json!({"A": "a", "B": "small", "NICK": big})),
            member("u3", json!({"FNAME": big, "A": "a", "B": "b"}))
        ], "total_items": 3});
        let no_names =
            mapping(json!({"fields": {"properties.shop.a": "merge_fields.A", "properties.shop.b": "merge_fields.B"}}));
        let page = read(&members, &m);
        let first = record(&page, 0);
        assert_eq!(first["properties"]["shop"], json!({"b": "small"}), "only shop.a goes");
        assert_eq!(first["firstname"], "Uri");
        let second = record(&page, 1);
        assert!(second.get("firstname").is_none(), "the mapped name goes");
        assert_eq!(second["properties"]["shop"], json!({"a": "a", "b": "small"}));
        let fields: Vec<(usize, String)> = page.dropped.iter().map(|(i, d)| (*i, d.field.to_string())).collect();
        assert_eq!(
            fields,
            [(0, "properties.shop.a".to_owned()), (1, "firstname".to_owned())]
        );
        // A default FNAME too large: taking every mapped value would not
        // help, so none is taken (the record is kept aside as too large).
        let page = read(&members, &no_names);
        assert!(page.records[2].as_ref().unwrap().len() > MAX_RECORD_BYTES);
        assert!(page.dropped.iter().all(|(i, _)| *i != 2), "{:?}", page.dropped);
    }
}
