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
use crate::ometria::{encode, ParsedFrom};
use crate::retry::{Outcomes, RetryPolicy};
use crate::sync::{PageRequest, Window};
use crate::telemetry::metrics::Metrics;
use crate::transform::{map_member, SkipReason};

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
            match map_member(&member, raw.get(position), mapping, list_id, now) {
                Ok(mapped) => {
                    encode(&mapped.contact, api, ParsedFrom(body), &mut buffer);
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
