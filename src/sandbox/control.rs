//! `/_sandbox/…`: inspect and steer a running sandbox over HTTP (the
//! `bench` command and anyone trying configurations use these).
//!
//! - `GET  /_sandbox/health` → `{"ok": true}`
//! - `GET  /_sandbox/stats` → request counts, maxima, 429s, faults injected, and the webhooks sent (`webhooks_sent`, `webhooks_failed`, `webhooks_retried`, `webhooks_late`, `webhooks_duplicated`, `webhooks_without_action`, `webhooks_in_flight`, `webhooks_gone`)
//! - `GET  /_sandbox/latency` → how long changes took to reach Ometria, in seconds: `{"count", "pending", "pending_deleted", "untracked", "p50_seconds", "p95_seconds", "max_seconds", "oldest_pending_seconds"}` (the figures `null` until a change arrived). From each mutation (random, or by `/_sandbox/mutate`) to the first push of the member's contact showing it by SPEC §5's fields (a deleted member: opted out as deleted), once per member; a member changed again while it waits keeps the time of its first change (see [`super::latency`])
//! - `GET  /_sandbox/lists` → `[{"list_id", "members", "archived"}]`
//! - `GET  /_sandbox/verify[?list_id=a,b][&as_of=<unix seconds>][&deleted_before=<unix seconds>]` → does Ometria hold what Mailchimp holds? (members deleted before `deleted_before` must be absent or opted out as deleted)
//! - `POST /_sandbox/verify[?as_of=…][&deleted_before=…]` with a body `{"entries": [state entries], "mappings": {named mappings}}` → the same for the lists of `entries`, each with its entry's mapping resolved as the importer resolves it and its mapped fields checked by the sandbox's own oracle (one entry per list: the sandbox keeps one contact per id, whatever its collection)
//! - `GET  /_sandbox/contacts/{id}` → the contact Ometria holds, with its write count
//! - `POST /_sandbox/mutate?list_id=…&kind=change|archive|unarchive|unsubscribe|subscribe|delete|add&count=N` → `{"applied": ["changed <unique_email_id>", …]}`; each one Mailchimp announces is also posted as a webhook when they are sent ([`super::webhooks`])

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::audience::Mutation;
use super::{problem, World};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/_sandbox/health",
            web::get().to(|| async { HttpResponse::Ok().json(json!({"ok": true})) }),
        )
        .route("/_sandbox/stats", web::get().to(stats))
        .route("/_sandbox/latency", web::get().to(latency))
        .route("/_sandbox/lists", web::get().to(lists))
        .route("/_sandbox/verify", web::get().to(verify))
        .route("/_sandbox/verify", web::post().to(verify_mapped))
        .route("/_sandbox/contacts/{id}", web::get().to(contact))
        .route("/_sandbox/mutate", web::post().to(mutate));
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

async fn stats(world: web::Data<World>) -> HttpResponse {
    HttpResponse::Ok().json(world.stats())
}

async fn latency(world: web::Data<World>) -> HttpResponse {
    HttpResponse::Ok().json(world.latency())
}

async fn lists(world: web::Data<World>) -> HttpResponse {
    let sizes: Vec<_> = world
        .list_sizes()
        .into_iter()
        .map(|(id, members, archived)| json!({"list_id": id, "members": members, "archived": archived}))
        .collect();
    HttpResponse::Ok().json(sizes)
}

async fn verify(req: HttpRequest, world: web::Data<World>) -> HttpResponse {
    let q = query(&req);
    let ids: Vec<String> = q
        .get("list_id")
        .map(|l| l.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let as_of = q.get("as_of").and_then(|t| t.parse().ok());
    let deleted_before = q.get("deleted_before").and_then(|t| t.parse().ok());
    HttpResponse::Ok().json(world.verify_with_deletions(&ids, as_of, deleted_before))
}

async fn verify_mapped(req: HttpRequest, world: web::Data<World>, body: web::Bytes) -> HttpResponse {
    // Whatever its Content-Type says: a tool posting JSON as text is served.
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return problem(400, "Invalid Resource", &format!("the body is not JSON: {e}")),
    };
    let q = query(&req);
    let as_of = q.get("as_of").and_then(|t| t.parse().ok());
    let deleted_before = q.get("deleted_before").and_then(|t| t.parse().ok());
    let named = body.get("mappings").cloned().unwrap_or(json!({}));
    let mut mappings = std::collections::BTreeMap::new();
    for entry in body.get("entries").and_then(|e| e.as_array()).into_iter().flatten() {
        let Some(list_id) = entry.get("list_id").and_then(|l| l.as_str()) else {
            continue;
        };
        match super::verify::resolve_mapping(&named, entry) {
            Ok(mapping) => {
                mappings.insert(list_id.to_owned(), mapping);
            }
            Err(e) => return problem(400, "Invalid Resource", &e),
        }
    }
    HttpResponse::Ok().json(world.verify_mapped_with_deletions(&mappings, as_of, deleted_before))
}

async fn contact(world: web::Data<World>, id: web::Path<String>) -> HttpResponse {
    match world.ometria_contact(&id) {
        Some((record, writes)) => HttpResponse::Ok().json(json!({"record": record, "writes": writes})),
        None => problem(404, "Resource Not Found", "Ometria holds no contact with this id."),
    }
}

async fn mutate(req: HttpRequest, world: web::Data<World>) -> HttpResponse {
    let q = query(&req);
    let Some(list_id) = q.get("list_id") else {
        return problem(400, "Invalid Resource", "list_id is required");
    };
    let Some(kind) = q.get("kind").and_then(|k| Mutation::parse(k)) else {
        return problem(
            400,
            "Invalid Resource",
            "kind must be change, archive, unarchive, unsubscribe, subscribe, delete or add",
        );
    };
    let count = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(1);
    HttpResponse::Ok().json(json!({"applied": world.mutate(list_id, kind, count)}))
}
