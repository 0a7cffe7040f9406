//! `webhooks register|list|remove` (issue 18), run as an operator runs
//! them: the requests a wiremock double of Mailchimp's List webhooks API
//! received, the lines printed and the exit code. The secret and the API
//! key never show.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{basic_auth, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use support::*;

const SECRET: &str = "wh-Secret_0123456789.abc~";
const BASE: &str = "https://importer.example.com";

/// The webhook URL `register` must create for [`BASE`] and [`SECRET`].
fn our_url() -> String {
    format!("{BASE}/webhooks/mailchimp/{SECRET}")
}

/// What the printed lines show of [`our_url`].
fn our_url_shown() -> String {
    format!("{BASE}/webhooks/mailchimp/<secret>")
}

/// Mailchimp's webhooks of each list it knows, served as the List
/// webhooks endpoints do: GET lists them, POST adds one (id `wh-N`),
/// PATCH changes one, DELETE removes one (204); an unknown list or
/// webhook is a 404 problem.
#[derive(Clone, Default)]
struct FakeWebhooks {
    lists: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    created: Arc<Mutex<usize>>,
}

impl FakeWebhooks {
    fn with_list(self, list_id: &str, hooks: Vec<Value>) -> Self {
        self.lists.lock().unwrap().insert(list_id.into(), hooks);
        self
    }

    fn hooks(&self, list_id: &str) -> Vec<Value> {
        self.lists.lock().unwrap()[list_id].clone()
    }
}

fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404)
        .insert_header("content-type", "application/problem+json")
        .set_body_json(json!({"type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": "Resource Not Found", "status": 404,
            "detail": "The requested resource could not be found.", "instance": "x"}))
}

impl Respond for FakeWebhooks {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let segments: Vec<String> = request.url.path_segments().unwrap().map(String::from).collect();
        // ["3.0", "lists", list_id, "webhooks", webhook_id?]
        let list_id = &segments[2];
        let mut lists = self.lists.lock().unwrap();
        let Some(hooks) = lists.get_mut(list_id) else {
            return not_found();
        };
        let body = || serde_json::from_slice::<Value>(&request.body).unwrap();
        match (request.method.as_str(), segments.get(4)) {
            ("GET", None) => ResponseTemplate::new(200).set_body_json(
                json!({"webhooks": hooks, "list_id": list_id, "total_items": hooks.len(), "_links": []}),
            ),
            ("POST", None) => {
                let mut created = self.created.lock().unwrap();
                *created += 1;
                let mut hook = body();
                hook["id"] = json!(format!("wh-{created}"));
                hook["list_id"] = json!(list_id);
                hooks.push(hook.clone());
                ResponseTemplate::new(200).set_body_json(hook)
            }
            ("PATCH", Some(id)) => match hooks.iter_mut().find(|h| h["id"] == id.as_str()) {
                Some(hook) => {
                    for (k, v) in body().as_object().unwrap() {
                        hook[k] = v.clone();
                    }
                    ResponseTemplate::new(200).set_body_json(hook.clone())
                }
                None => not_found(),
            },
            ("DELETE", Some(id)) => match hooks.iter().position(|h| h["id"] == id.as_str()) {
                Some(at) => {
                    hooks.remove(at);
                    ResponseTemplate::new(204)
                }
                None => not_found(),
            },
            _ => ResponseTemplate::new(405),
        }
    }
}

async fn serve(fake: &FakeWebhooks) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex(r"^/3\.0/lists/[^/]+/webhooks(/[^/]+)?$"))
        .and(basic_auth("ometria-importer", MAILCHIMP_KEY))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

/// A webhook as Mailchimp lists it.
fn hook(id: &str, url: &str, events: Value, sources: Value) -> Value {
    json!({"id": id, "url": url, "events": events, "sources": sources, "list_id": "x", "_links": []})
}

fn wanted_events() -> Value {
    json!({"subscribe": true, "unsubscribe": true, "profile": true, "upemail": true, "cleaned": true, "campaign": false})
}

fn wanted_sources() -> Value {
    json!({"user": true, "admin": true, "api": false})
}

/// `ometria-importer webhooks <args>` on `entries`, against `server`
/// (none: Mailchimp unreachable), with `env`: exit code, stdout, stderr.
async fn webhooks(
    entries: &str,
    server: Option<&MockServer>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let (dir, _) = state_dir(entries);
    let mut command = importer_command(dir.path(), None);
    command
        .env(
            "MAILCHIMP_BASE_URL",
            server.map_or("http://127.0.0.1:9/3.0".into(), |s| format!("{}/3.0", s.uri())),
        )
        .envs(env.iter().copied())
        .arg("webhooks")
        .args(args);
    let out = exit_within(command.spawn().unwrap(), Duration::from_secs(20)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for printed in [&stdout, &stderr] {
        assert!(!printed.contains(SECRET), "the secret was printed:\n{printed}");
        assert!(!printed.contains(MAILCHIMP_KEY), "the key was printed:\n{printed}");
    }
    (out.status.code(), stdout, stderr)
}

/// Every request the double received with `method`: path and JSON body.
async fn received(server: &MockServer, method: &str) -> Vec<(String, Value)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == method)
        .map(|r| {
            let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (r.url.path().to_owned(), body)
        })
        .collect()
}

const TWO_LISTS: &str = r#"[{"list_id": "a"}, {"list_id": "b"}, {"list_id": "a", "items_per_request": 50}]"#;

#[actix_rt::test]
async fn register_creates_each_lists_webhook_once_and_a_second_register_creates_nothing() {
    let fake = FakeWebhooks::default().with_list("a", vec![]).with_list("b", vec![]);
    let server = serve(&fake).await;
    let secret = [("IMPORTER_WEBHOOK_SECRET", SECRET)];
    let (code, stdout, stderr) = webhooks(TWO_LISTS, Some(&server), &["register", "--url", BASE], &secret).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // One per list, though "a" has two entries; the member events, from subscribers and admins.
    let wanted = json!({"url": our_url(), "events": wanted_events(), "sources": wanted_sources()});
    // The lists are registered concurrently: their requests come in any order.
    let mut posts = received(&server, "POST").await;
    posts.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        posts,
        [
            ("/3.0/lists/a/webhooks".to_owned(), wanted.clone()),
            ("/3.0/lists/b/webhooks".to_owned(), wanted)
        ]
    );
    let (a, b) = (fake.hooks("a"), fake.hooks("b"));
    assert_eq!((a.len(), b.len()), (1, 1));
    let id = |hooks: &[Value]| hooks[0]["id"].as_str().unwrap().to_owned();
    let shown = our_url_shown();
    let made = "(events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin)";
    // One line per list, in the state file's order, each with its webhook's id.
    assert_eq!(
        stdout,
        format!(
            "list \"a\": webhook {} for {shown} created {made}\nlist \"b\": webhook {} for {shown} created {made}\n",
            id(&a),
            id(&b)
        )
    );

    // Again: each is found as wanted and left alone.
    let (code, stdout, _) = webhooks(
        TWO_LISTS,
        Some(&server),
        &["register", "--url", &format!("{BASE}/")],
        &secret,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(received(&server, "POST").await.len(), 2, "nothing more created");
    assert!(received(&server, "PATCH").await.is_empty());
    assert!(
        stdout.contains(&format!(
            "list \"a\": webhook {} for {shown} already registered (events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin): left as it is\n",
            id(&a)
        )),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

#[actix_rt::test]
async fn register_is_idempotent_across_host_case() {
    // Registered at the host in lower case, the default port written out.
    let registered = format!("https://importer.example.com:443/webhooks/mailchimp/{SECRET}");
    let fake = FakeWebhooks::default().with_list("a", vec![hook("w1", &registered, wanted_events(), wanted_sources())]);
    let server = serve(&fake).await;
    let secret = [("IMPORTER_WEBHOOK_SECRET", SECRET)];
    for url in ["https://Importer.Example.COM", "HTTPS://IMPORTER.example.com/"] {
        let (code, stdout, _) = webhooks(
            r#"[{"list_id": "a"}]"#,
            Some(&server),
            &["register", "--url", url],
            &secret,
        )
        .await;
        assert_eq!(code, Some(0), "{stdout}");
        assert!(
            stdout.contains("webhook w1 for ") && stdout.contains("already registered"),
            "{stdout}"
        );
    }
    assert!(received(&server, "POST").await.is_empty(), "no second webhook");
    assert!(received(&server, "PATCH").await.is_empty());
    assert_eq!(fake.hooks("a").len(), 1);
    // `remove` with the host in another case removes it.
    let (code, stdout, _) = webhooks(
        r#"[{"list_id": "a"}]"#,
        Some(&server),
        &["remove", "--url", "https://IMPORTER.EXAMPLE.COM"],
        &secret,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        received(&server, "DELETE").await,
        [("/3.0/lists/a/webhooks/w1".to_owned(), Value::Null)]
    );
}

#[actix_rt::test]
async fn register_updates_a_webhook_whose_events_or_sources_differ_and_says_so() {
    let all = json!({"subscribe": true, "unsubscribe": true, "profile": true, "upemail": true, "cleaned": true, "campaign": true});
    let every_source = json!({"user": true, "admin": true, "api": true});
    // And the same secret at an earlier base URL: pointed out, left alone.
    let earlier = format!("https://earlier.example.com/webhooks/mailchimp/{SECRET}");
    let fake = FakeWebhooks::default().with_list(
        "a",
        vec![
            hook("old", &our_url(), all, every_source),
            hook("earlier", &earlier, wanted_events(), wanted_sources()),
        ],
    );
    let server = serve(&fake).await;
    let (code, stdout, _) = webhooks(
        r#"[{"list_id": "a"}]"#,
        Some(&server),
        &["register", "--url", BASE],
        &[("IMPORTER_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(received(&server, "POST").await.is_empty(), "not created twice");
    assert_eq!(
        received(&server, "PATCH").await,
        [(
            "/3.0/lists/a/webhooks/old".to_owned(),
            json!({"url": our_url(), "events": wanted_events(), "sources": wanted_sources()})
        )]
    );
    assert_eq!(
        stdout,
        format!(
            "list \"a\": webhook old for {} updated: it had events subscribe, unsubscribe, profile, upemail, cleaned, campaign; sources user, admin, api, now events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin\
             ; note: webhook earlier at https://earlier.example.com/webhooks/mailchimp/<secret> also carries the secret \
             (remove it with `webhooks remove --url` and its base URL if it is no longer used)\n",
            our_url_shown()
        )
    );
    assert!(received(&server, "DELETE").await.is_empty());
    assert_eq!(fake.hooks("a")[0]["sources"], wanted_sources());
}

#[actix_rt::test]
async fn list_prints_every_webhook_of_each_list_with_secrets_redacted() {
    let other = "https://crm.example.org/hooks/mailchimp";
    let another_importer = "https://old.example.com/webhooks/mailchimp/an0ther-importers-secret";
    // Other services' tokens, in a query and as a password.
    let zapier = "https://zapier.example/hook?token=zap-t0ken&id=7";
    let with_password = "https://user:pa55word@crm.example.net/in";
    let fake = FakeWebhooks::default()
        .with_list(
            "a",
            vec![
                hook("w1", &our_url(), wanted_events(), wanted_sources()),
                hook("w2", other, json!({"campaign": true}), json!({"api": true})),
                hook("w3", another_importer, wanted_events(), wanted_sources()),
            ],
        )
        .with_list(
            "b",
            vec![
                hook("z1", zapier, wanted_events(), wanted_sources()),
                hook("z2", with_password, wanted_events(), wanted_sources()),
            ],
        );
    let server = serve(&fake).await;
    let (code, stdout, _) = webhooks(
        TWO_LISTS,
        Some(&server),
        &["list"],
        &[("IMPORTER_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stdout,
        format!(
            "list \"a\": 3 webhooks: w1 {} (this importer's; events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin); \
             w2 {other} (events campaign; sources api); \
             w3 https://old.example.com/webhooks/mailchimp/<secret> (events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin)\n\
             list \"b\": 2 webhooks: z1 https://zapier.example/hook?token=***&id=*** (events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin); \
             z2 https://user:***@crm.example.net/in (events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin)\n",
            our_url_shown()
        )
    );
    for hidden in ["an0ther", "zap-t0ken", "pa55word"] {
        assert!(!stdout.contains(hidden), "{hidden}: {stdout}");
    }
    // Without the secret, or with it empty (unset): listed all the same, still redacted.
    for env in [&[][..], &[("IMPORTER_WEBHOOK_SECRET", "")][..]] {
        let (code, stdout, _) = webhooks(TWO_LISTS, Some(&server), &["list"], env).await;
        assert_eq!(code, Some(0), "{stdout}");
        assert!(
            stdout.starts_with(&format!("list \"a\": 3 webhooks: w1 {} (events", our_url_shown())),
            "{stdout}"
        );
        assert!(
            !stdout.contains("zap-t0ken") && !stdout.contains("pa55word"),
            "{stdout}"
        );
    }
    // With one that is not a secret (a placeholder): a note first, then the list.
    let (code, stdout, stderr) = webhooks(
        TWO_LISTS,
        Some(&server),
        &["list"],
        &[("IMPORTER_WEBHOOK_SECRET", "<your webhook secret>")],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("note: IMPORTER_WEBHOOK_SECRET is not valid: character 1 is not one of A-Z a-z 0-9 - . _ ~ (the secret stands in a URL as it is); the webhooks are listed without marking this importer's")
    );
    assert!(lines
        .next()
        .unwrap()
        .starts_with(&format!("list \"a\": 3 webhooks: w1 {} (events", our_url_shown())));
    // Nothing but reads.
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"), "{requests:?}");
}

#[actix_rt::test]
async fn remove_deletes_the_webhook_with_that_url_by_its_id_and_nothing_else() {
    let other = "https://crm.example.org/hooks/mailchimp";
    let fake = FakeWebhooks::default()
        .with_list(
            "a",
            vec![
                hook("w-other", other, wanted_events(), wanted_sources()),
                hook("w-ours", &our_url(), wanted_events(), wanted_sources()),
            ],
        )
        .with_list("b", vec![hook("w-b", other, wanted_events(), wanted_sources())]);
    let server = serve(&fake).await;
    let (code, stdout, _) = webhooks(
        TWO_LISTS,
        Some(&server),
        &["remove", "--url", BASE],
        &[("IMPORTER_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        received(&server, "DELETE").await,
        [("/3.0/lists/a/webhooks/w-ours".to_owned(), Value::Null)]
    );
    let shown = our_url_shown();
    assert_eq!(
        stdout,
        format!(
            "list \"a\": webhook w-ours for {shown} removed\nlist \"b\": no webhook for {shown}: nothing to remove\n"
        )
    );
    assert_eq!(fake.hooks("a").len(), 1);
    assert_eq!(fake.hooks("a")[0]["id"], "w-other");
    assert_eq!(fake.hooks("b").len(), 1);
}

#[actix_rt::test]
async fn a_list_mailchimp_refuses_is_an_error_line_and_exit_1_the_others_are_done() {
    let fake = FakeWebhooks::default().with_list("a", vec![]);
    let server = serve(&fake).await;
    let (code, stdout, _) = webhooks(
        r#"[{"list_id": "gone"}, {"list_id": "a"}]"#,
        Some(&server),
        &["register", "--url", BASE],
        &[("IMPORTER_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        stdout,
        format!(
            "error: list \"gone\": reading its webhooks: Mailchimp refused the request with HTTP 404 (Resource Not Found: The requested resource could not be found.): check the entry's list_id in state.json: Mailchimp has no such list (or webhook) for this key\n\
             list \"a\": webhook wh-1 for {} created (events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin)\n",
            our_url_shown()
        )
    );
    // A 404 is not retried.
    let gets = received(&server, "GET").await;
    assert_eq!(gets.iter().filter(|(p, _)| p == "/3.0/lists/gone/webhooks").count(), 1);
}

#[actix_rt::test]
async fn settings_to_fix_exit_2_before_any_request() {
    let server = serve(&FakeWebhooks::default().with_list("a", vec![])).await;
    let entries = r#"[{"list_id": "a"}]"#;
    // No secret, or an empty one: register and remove cannot build the URL.
    for action in ["register", "remove"] {
        for env in [
            &[][..],
            &[("IMPORTER_WEBHOOK_SECRET", "")][..],
            &[("IMPORTER_WEBHOOK_SECRET", " ")][..],
        ] {
            let (code, stdout, _) = webhooks(entries, Some(&server), &[action, "--url", BASE], env).await;
            assert_eq!(code, Some(2), "{stdout}");
            assert!(
                stdout.starts_with("error: IMPORTER_WEBHOOK_SECRET is not set: export it (or pass --webhook-secret)"),
                "{stdout}"
            );
        }
    }
    // A URL Mailchimp could not call, a whole webhook URL, no key: each said at once.
    let secret = [("IMPORTER_WEBHOOK_SECRET", SECRET)];
    let (code, stdout, _) = webhooks(
        entries,
        Some(&server),
        &["register", "--url", "http://importer.example.com"],
        &secret,
    )
    .await;
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("error: --url \"http://importer.example.com\" is not usable: it must start with https://"),
        "{stdout}"
    );
    let whole = format!("{BASE}/webhooks/mailchimp/{SECRET}");
    let (code, stdout, _) = webhooks(entries, Some(&server), &["register", "--url", &whole], &secret).await;
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("give the daemon's public base URL"), "{stdout}");
    let (code, stdout, stderr) = webhooks(entries, Some(&server), &["list"], &[("MAILCHIMP_APIKEY", "")]).await;
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("MAILCHIMP_APIKEY"),
        "{stdout}{stderr}"
    );
    // A secret too short: named, never repeated.
    for action in ["register", "remove"] {
        let (code, stdout, stderr) = webhooks(
            entries,
            Some(&server),
            &[action, "--url", BASE],
            &[("IMPORTER_WEBHOOK_SECRET", "tooShort")],
        )
        .await;
        assert_eq!(code, Some(2), "{stdout}{stderr}");
        assert_eq!(
            stdout,
            "error: IMPORTER_WEBHOOK_SECRET is not valid: it has 8 characters, fewer than 16 (e.g. `openssl rand -hex 16`)\n"
        );
        assert!(!format!("{stdout}{stderr}").contains("tooShort"), "{stdout}{stderr}");
    }
    // A user and password in --url: refused, the password never shown.
    let (code, stdout, stderr) = webhooks(
        entries,
        Some(&server),
        &["register", "--url", "https://user:pa55word@importer.example.com"],
        &secret,
    )
    .await;
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "error: --url \"https://user:***@importer.example.com\" is not usable: it must not carry a user or password\n"
    );
    assert!(!format!("{stdout}{stderr}").contains("pa55word"));
    assert!(server.received_requests().await.unwrap().is_empty());
}
