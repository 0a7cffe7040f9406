//! A Fetcher reads one Mailchimp page at a time, within the global
//! connection limit and with retries, and maps its members to contacts.

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use slog::{warn, Logger};

use super::messages::{FetchPage, FetchedPage, StopWorker};
use crate::api::ApiError;
use crate::limits::ConnectionLimit;
use crate::mailchimp::MailchimpClient;
use crate::retry::RetryPolicy;
use crate::sync::{Pass, Window};
use crate::transform::member_to_contact;

pub struct Fetcher {
    pub client: MailchimpClient,
    pub limit: Arc<ConnectionLimit>,
    pub retry: RetryPolicy,
    pub list_id: Rc<str>,
    pub window: Window,
    pub log: Logger,
}

impl Actor for Fetcher {
    type Context = Context<Self>;
}

impl Handler<FetchPage> for Fetcher {
    type Result = ResponseActFuture<Self, Result<FetchedPage, ApiError>>;

    fn handle(&mut self, FetchPage(request): FetchPage, _: &mut Context<Self>) -> Self::Result {
        let (client, limit, retry, list_id, window, log) = (
            self.client.clone(),
            self.limit.clone(),
            self.retry,
            self.list_id.clone(),
            self.window,
            self.log.clone(),
        );
        let work = async move {
            let page = retry
                .run(
                    || async {
                        let _connection = limit.acquire().await;
                        client.members_page(&list_id, &window, request).await
                    },
                    |e, n, wait| {
                        warn!(
                            log,
                            "sync: reading {} of list \"{list_id}\" at offset {} failed: {e}; retry {n} in {:.1} s.",
                            request.pass.name(),
                            request.offset,
                            wait.as_secs_f64()
                        )
                    },
                )
                .await?;
            let returned = page.members.len() as u64;
            let mut contacts = Vec::with_capacity(page.members.len());
            let mut skipped = 0;
            for (position, mut member) in page.members.into_iter().enumerate() {
                if request.pass == Pass::Archived && member.status.is_none() {
                    member.status = Some("archived".into());
                }
                let id = member.unique_email_id.clone().filter(|id| !id.is_empty());
                match member_to_contact(member, &list_id) {
                    Ok(contact) => contacts.push(contact),
                    Err(reason) => {
                        skipped += 1;
                        warn!(
                            log,
                            "sync: member at offset {} of list \"{list_id}\" ({}) skipped: {reason}.",
                            request.offset + position as u64,
                            id.map_or("no unique_email_id".into(), |id| format!("unique_email_id \"{id}\""))
                        );
                    }
                }
            }
            Ok(FetchedPage {
                request,
                total_items: page.total_items,
                returned,
                contacts,
                skipped,
            })
        };
        Box::pin(work.into_actor(self))
    }
}

impl Handler<StopWorker> for Fetcher {
    type Result = ();

    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
