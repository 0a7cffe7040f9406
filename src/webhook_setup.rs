//! `webhooks register|list|remove` (issue 18): the Mailchimp webhook of
//! each list of the state file, which sends member changes to the daemon's
//! receiver at `<public base URL>/webhooks/mailchimp/<IMPORTER_WEBHOOK_SECRET>`.
//!
//! Every distinct `list_id` of the valid entries is handled once, through
//! the List webhooks endpoints ([`crate::mailchimp::webhooks`]), at most
//! `MAILCHIMP_MAX_CONNECTIONS` lists at a time, with one output line per
//! list in the state file's order. `register` is idempotent: a webhook
//! with the URL already there ([`same_url`]: the host's case aside) is
//! left as it is, or updated when its events or sources are not the
//! importer's. `remove` deletes the webhooks with the URL, and nothing
//! else. The secret and the API key are never printed: every line has the
//! secret replaced by `<secret>`, and every URL in it is shown as
//! [`redact_url`] does, without passwords or query values (another
//! service's webhook may carry its token there).

use std::io::{self, Write};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use crate::api::{http_client, ApiError};
use crate::config::{Settings, WebhookSecret, WebhooksAction, WebhooksArgs};
use crate::mailchimp::webhooks::{Webhook, WANTED_EVENTS, WANTED_SOURCES};
use crate::mailchimp::MailchimpClient;
use crate::retry::{Outcomes, RetryPolicy};
use crate::state::StateFile;
use crate::telemetry::metrics::Metrics;

/// Exit code for settings or a state file to fix first.
pub const EXIT_FIX_FIRST: u8 = 2;

/// The path of the webhook receiver, before its secret.
pub const WEBHOOK_PATH: &str = "/webhooks/mailchimp/";

/// What the secret is replaced with in everything printed.
const REDACTED: &str = "<secret>";

/// `webhooks`: does `args.action` on every list of the state file and
/// prints one line per list. Returns the exit code: 0 when every list
/// succeeded (or the state file has none), 1 when one failed,
/// [`EXIT_FIX_FIRST`] for settings (the Mailchimp key, the secret, the
/// `--url`) or a state file that must be fixed first.
pub fn run(settings: &Settings, args: &WebhooksArgs, out: &mut dyn Write) -> io::Result<u8> {
    let mut problems: Vec<String> = vec![];
    let checked = settings.checked_webhook_secret();
    let secret = checked.as_ref().ok().and_then(Option::as_ref);
    // Only Mailchimp is called.
    let mut settings = settings.clone();
    if settings.ometria_apikey.is_none() {
        settings.ometria_apikey = Some("webhooks-call-only-mailchimp".parse().expect("any text is a key"));
    }
    let config = settings
        .resolve()
        .map_err(|errors| problems.extend(errors.iter().map(ToString::to_string)))
        .ok();
    let target = match &args.action {
        WebhooksAction::List => None,
        WebhooksAction::Register(url) | WebhooksAction::Remove(url) => {
            let base = check_base_url(&url.url, secret).map_err(|e| problems.push(e)).ok();
            match &checked {
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
                Ok(None) => {
                    problems.push(format!(
                        "IMPORTER_WEBHOOK_SECRET is not set: export it (or pass --webhook-secret) with the secret the daemon's receiver uses, at least {} characters from A-Z a-z 0-9 - . _ ~ (e.g. from `openssl rand -hex 16`)",
                        crate::webhook::MIN_SECRET_CHARS
                    ));
                    None
                }
                Ok(Some(secret)) => base.map(|base| webhook_url(&base, secret)),
            }
        }
    };
    let say = |out: &mut dyn Write, line: &str| writeln!(out, "{}", redact(line, secret));
    let file = StateFile::in_dir(&settings.state_dir);
    let document = match file.load() {
        Ok(document) => Some(document),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let (Some(config), Some(document), true) = (config, document, problems.is_empty()) else {
        for p in &problems {
            say(out, &format!("error: {p}"))?;
        }
        return Ok(EXIT_FIX_FIRST);
    };
    // `list` needs no secret: one that is not usable only leaves the
    // importer's webhooks unmarked.
    if let (Err(e), WebhooksAction::List) = (&checked, &args.action) {
        say(
            out,
            &format!("note: {e}; the webhooks are listed without marking this importer's"),
        )?;
    }
    let scan = document.entries();
    for w in scan.warnings.iter().filter(|w| w.skips_entry()) {
        say(out, &format!("skipped: {w}"))?;
    }
    let mut list_ids: Vec<&str> = vec![];
    for entry in &scan.entries {
        if !list_ids.contains(&entry.key.list_id.as_str()) {
            list_ids.push(&entry.key.list_id);
        }
    }
    if list_ids.is_empty() {
        say(
            out,
            "webhooks: state.json has no valid entry, so no list to do this for.",
        )?;
        return Ok(0);
    }
    let client = MailchimpClient::new(
        http_client(config.http_timeout),
        &config.mailchimp_base_url,
        config.mailchimp_key.clone(),
        config.http_timeout,
        Arc::new(Metrics::new()),
    );
    let policy = RetryPolicy {
        attempts: config.retry.attempts.min(3),
        ..config.retry
    };
    let job = Job {
        client: &client,
        policy: &policy,
        outcomes: &Outcomes::default(),
        secret,
    };
    let connections = config.mailchimp_max_connections.max(1);
    let lines: Vec<Result<String, String>> = actix_rt::System::new().block_on(
        stream::iter(list_ids.iter().map(|list_id| {
            let job = &job;
            let target = target.as_deref();
            async move {
                match (&args.action, target) {
                    (WebhooksAction::List, _) => job.list(list_id).await,
                    (WebhooksAction::Register(_), Some(url)) => job.register(list_id, url).await,
                    (WebhooksAction::Remove(_), Some(url)) => job.remove(list_id, url).await,
                    _ => unreachable!("register and remove have a URL"),
                }
            }
        }))
        .buffered(connections)
        .collect(),
    );
    let mut failed = false;
    for (list_id, line) in list_ids.iter().zip(lines) {
        match line {
            Ok(line) => say(out, &format!("list \"{list_id}\": {line}"))?,
            Err(e) => {
                failed = true;
                say(out, &format!("error: list \"{list_id}\": {e}"))?;
            }
        }
    }
    Ok(u8::from(failed))
}

/// `<base>/webhooks/mailchimp/<secret>`: where Mailchimp sends a list's
/// events for the daemon's receiver (issue 18).
pub fn webhook_url(base: &str, secret: &WebhookSecret) -> String {
    format!("{}{WEBHOOK_PATH}{}", base.trim_end_matches('/'), secret.expose())
}

/// The public base URL given to `--url`, without its trailing `/`: an
/// absolute `https://` URL (Mailchimp calls it from the internet), or
/// `http://` for 127.0.0.1 or localhost (a local test), with a host, and
/// no user, query or fragment (the webhook path goes after it). Errors
/// say what to change, showing the URL as [`redact_url`] does: never a
/// password, a query's values or a path that could hold the secret.
pub fn check_base_url(text: &str, secret: Option<&WebhookSecret>) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    // All before the last `@` is a user and password: one holding a `/`
    // would not parse as one.
    let shown = match (url.rfind('@'), url.find("://").map_or(0, |i| i + 3)) {
        (Some(at), start) if at >= start => format!(
            "{}{}{}",
            &url[..start],
            redact_userinfo(&url[start..at]),
            redact_url(&url[at + 1..])
        ),
        _ => redact_url(url),
    };
    let shown = redact(&shown, secret);
    let bad = |reason: &str| format!("--url \"{shown}\" is not usable: {reason}");
    if url.contains("/webhooks/mailchimp") {
        return Err(format!(
            "--url is not usable: give the daemon's public base URL (e.g. https://importer.example.com); the importer adds {WEBHOOK_PATH}<IMPORTER_WEBHOOK_SECRET> to it"
        ));
    }
    if url.contains('@') {
        return Err(bad("it must not carry a user or password"));
    }
    let uri: awc::http::Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(bad("it has no host"));
    };
    let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if local => {}
        _ => {
            return Err(bad(
                "it must start with https:// (Mailchimp sends events from the internet; http:// only for 127.0.0.1 or localhost)",
            ))
        }
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("it must not carry a query or fragment"));
    }
    Ok(url.to_owned())
}

/// What a redacted part of a URL shows.
const STARS: &str = "***";

/// `url` fit to print: its scheme, host, port and path as they are, but
/// a user alone as `***@` (often a token), a user and password as
/// `user:***@`, each query value as `***` (`?token=***`;
/// a part without `=` all `***`) and a fragment as `#***`, and whatever
/// follows `/webhooks/mailchimp/` in the path (a receiver's secret) as
/// `<secret>`. A URL without `scheme://` is read as starting with its
/// host. Redacting what is redacted changes nothing.
pub fn redact_url(url: &str) -> String {
    let parts = UrlParts::of(url);
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = parts.scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    if let Some(info) = parts.userinfo {
        shown.push_str(&redact_userinfo(info));
    }
    shown.push_str(parts.host_port);
    shown.push_str(&redact_paths(parts.path));
    if let Some(query) = parts.query {
        let values: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={STARS}"),
                None if pair.is_empty() => String::new(),
                None => STARS.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&values.join("&"));
    }
    if let Some(fragment) = parts.fragment {
        shown.push('#');
        if !fragment.is_empty() {
            shown.push_str(STARS);
        }
    }
    shown
}

/// A URL's `user:password` as `user:***@`, a user alone (often a token) as
/// `***@`.
fn redact_userinfo(info: &str) -> String {
    match info.split_once(':') {
        Some((user, _)) if !user.is_empty() => format!("{user}:{STARS}@"),
        _ => format!("{STARS}@"),
    }
}

/// `text` fit to print: every `scheme://…` URL in it (up to a blank, a
/// quote, `<`, `>` or a backtick, which no URL holds) as [`redact_url`]
/// shows it, every occurrence of the secret replaced by `<secret>`, and
/// the URL-safe characters that follow `/webhooks/mailchimp/` anywhere
/// (another importer's secret) too.
pub fn redact(text: &str, secret: Option<&WebhookSecret>) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "\"<>`".contains(c))
            .map_or(rest.len(), |n| at + n);
        shown.push_str(&rest[..start]);
        shown.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    shown.push_str(rest);
    if let Some(s) = secret {
        shown = shown.replace(s.expose(), REDACTED);
    }
    redact_paths(&shown)
}

/// `text` with the URL-safe characters that follow each
/// `/webhooks/mailchimp/` replaced by `<secret>`.
fn redact_paths(text: &str) -> String {
    let mut text = text.to_owned();
    let mut from = 0;
    while let Some(at) = text[from..].find(WEBHOOK_PATH) {
        let start = from + at + WEBHOOK_PATH.len();
        // A secret is URL-safe; `<secret>` itself is not, and stays.
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~%".contains(c)))
            .map_or(text.len(), |n| start + n);
        if end > start {
            text.replace_range(start..end, REDACTED);
        }
        from = start;
    }
    text
}

/// A URL cut into its parts, as RFC 3986 reads it, without checking them.
#[derive(Debug, PartialEq)]
struct UrlParts<'a> {
    /// `https`; `None` without `://`.
    scheme: Option<&'a str>,
    /// What comes before the host's `@`.
    userinfo: Option<&'a str>,
    /// `example.com:8443`, `[::1]`.
    host_port: &'a str,
    /// From the first `/` after the host to the query or fragment.
    path: &'a str,
    /// After `?`, before `#`.
    query: Option<&'a str>,
    /// After `#`.
    fragment: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> UrlParts<'a> {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority),
        };
        UrlParts {
            scheme,
            userinfo,
            host_port,
            path,
            query,
            fragment,
        }
    }

    /// The host in lower case, and the port (the scheme's own when none is
    /// written: 443 for https, 80 for http).
    fn host_and_port(&self) -> (String, Option<u16>) {
        let scheme = self.scheme.map(str::to_ascii_lowercase);
        let default = match scheme.as_deref() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        };
        // `[::1]:8443`, `example.com:8443`: a port is digits after the last `:` outside brackets.
        let (host, port) = match self.host_port.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, port),
            _ => (self.host_port, ""),
        };
        let port = if port.is_empty() { default } else { port.parse().ok() };
        (host.to_ascii_lowercase(), port)
    }
}

/// `events subscribe, …; sources user, admin`: what the importer's webhook sends.
fn wanted() -> String {
    let on = |flags: &[(&str, bool)]| -> String {
        let names: Vec<&str> = flags.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        names.join(", ")
    };
    format!("events {}; sources {}", on(&WANTED_EVENTS), on(&WANTED_SOURCES))
}

/// What each list's work shares.
struct Job<'a> {
    client: &'a MailchimpClient,
    policy: &'a RetryPolicy,
    outcomes: &'a Outcomes,
    secret: Option<&'a WebhookSecret>,
}

impl Job<'_> {
    /// The list's webhooks, read with the usual retries.
    async fn webhooks(&self, list_id: &str) -> Result<Vec<Webhook>, String> {
        let attempt = |attempt| self.client.webhooks(list_id, attempt);
        self.policy
            .run(self.outcomes, attempt, |_, _, _| {})
            .await
            .map_err(|e| format!("reading its webhooks: {e}"))
    }

    /// `list`: `2 webhooks: <id> <url> (…); <id> …`, or `no webhook`.
    async fn list(&self, list_id: &str) -> Result<String, String> {
        let hooks = self.webhooks(list_id).await?;
        if hooks.is_empty() {
            return Ok("no webhook".to_owned());
        }
        let described: Vec<String> = hooks
            .iter()
            .map(|h| {
                let ours = match self.secret {
                    Some(s)
                        if h.url
                            .trim_end_matches('/')
                            .ends_with(&format!("{WEBHOOK_PATH}{}", s.expose())) =>
                    {
                        if h.is_as_wanted() {
                            "this importer's; "
                        } else {
                            "this importer's, events or sources not as `register` sets them; "
                        }
                    }
                    _ => "",
                };
                format!("{} {} ({ours}{})", h.id, redact_url(&h.url), h.describe())
            })
            .collect();
        let count = if hooks.len() == 1 {
            "1 webhook".to_owned()
        } else {
            format!("{} webhooks", hooks.len())
        };
        Ok(format!("{count}: {}", described.join("; ")))
    }

    /// `register`: leaves, updates or creates the webhook to `url`.
    async fn register(&self, list_id: &str, url: &str) -> Result<String, String> {
        let hooks = self.webhooks(list_id).await?;
        let (same, others): (Vec<&Webhook>, Vec<&Webhook>) = hooks.iter().partition(|h| same_url(&h.url, url));
        // The secret at another base URL: an earlier registration, most likely.
        let stale: Vec<String> = others
            .iter()
            .filter(|h| self.secret.is_some_and(|s| h.url.contains(s.expose())))
            .map(|h| format!("; note: webhook {} at {} also carries the secret (remove it with `webhooks remove --url` and its base URL if it is no longer used)", h.id, redact_url(&h.url)))
            .collect();
        let stale = stale.concat();
        let line = match same.first() {
            Some(hook) if hook.is_as_wanted() => {
                format!(
                    "webhook {} for {url} already registered ({}): left as it is",
                    hook.id,
                    hook.describe()
                )
            }
            Some(hook) => {
                let attempt = |attempt| self.client.update_webhook(list_id, &hook.id, url, attempt);
                let updated = self
                    .policy
                    .run(self.outcomes, attempt, |_, _, _| {})
                    .await
                    .map_err(|e| format!("updating webhook {}: {e}", hook.id))?;
                format!(
                    "webhook {} for {url} updated: it had {}, now {}",
                    hook.id,
                    hook.describe(),
                    updated.describe()
                )
            }
            None => {
                let created = self.client.create_webhook(list_id, url, 1).await.map_err(|e| {
                    let again = if e.may_have_landed() {
                        " (it may have been created all the same: run `webhooks register` again, which leaves a webhook already there as it is)"
                    } else {
                        ""
                    };
                    format!("creating the webhook for {url}: {e}{again}")
                })?;
                format!("webhook {} for {url} created ({})", created.id, wanted())
            }
        };
        Ok(format!("{line}{stale}"))
    }

    /// `remove`: deletes the webhooks to `url`.
    async fn remove(&self, list_id: &str, url: &str) -> Result<String, String> {
        let hooks = self.webhooks(list_id).await?;
        let ids: Vec<&str> = hooks
            .iter()
            .filter(|h| same_url(&h.url, url))
            .map(|h| h.id.as_str())
            .collect();
        if ids.is_empty() {
            return Ok(format!("no webhook for {url}: nothing to remove"));
        }
        for id in &ids {
            let attempt = |attempt| self.client.delete_webhook(list_id, id, attempt);
            match self.policy.run(self.outcomes, attempt, |_, _, _| {}).await {
                // Gone already: an earlier attempt whose answer was lost, or someone else.
                Ok(()) | Err(ApiError::Refused { status: 404, .. }) => {}
                Err(e) => return Err(format!("removing webhook {id} for {url}: {e}")),
            }
        }
        Ok(format!("webhook {} for {url} removed", ids.join(", ")))
    }
}

/// Whether two webhook URLs send to the same place: the scheme and host
/// equal but for the case of their letters (as DNS and RFC 3986 compare
/// them), the port equal once a missing one is the scheme's (443 for
/// https, 80 for http), and the user, path, query and fragment exactly
/// equal, a trailing `/` of the path aside.
pub fn same_url(a: &str, b: &str) -> bool {
    let (a, b) = (UrlParts::of(a.trim()), UrlParts::of(b.trim()));
    let scheme = |p: &UrlParts| p.scheme.map(str::to_ascii_lowercase);
    scheme(&a) == scheme(&b)
        && a.userinfo == b.userinfo
        && a.host_and_port() == b.host_and_port()
        && a.path.trim_end_matches('/') == b.path.trim_end_matches('/')
        && a.query == b.query
        && a.fragment == b.fragment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        "s3cret-0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn the_webhook_url_is_the_base_then_the_path_then_the_secret() {
        assert_eq!(
            webhook_url("https://h.example.com/importer/", &secret()),
            "https://h.example.com/importer/webhooks/mailchimp/s3cret-0123456789abcdef"
        );
    }

    #[test]
    fn base_urls_must_be_public_https_or_local() {
        let s = secret();
        let ok = |u: &str| check_base_url(u, Some(&s)).unwrap();
        assert_eq!(ok(" https://h.example.com/ "), "https://h.example.com");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost:8080/x"), "http://localhost:8080/x");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        let refused = |u: &str| check_base_url(u, Some(&s)).unwrap_err();
        assert!(refused("http://h.example.com").contains("must start with https://"));
        assert!(refused("ftp://h.example.com").contains("must start with https://"));
        assert!(refused("h.example.com").contains("must start with https://"));
        assert!(refused("https://").contains("not"));
        // A password is never repeated, whatever else is wrong.
        for with_password in [
            "https://u:pa55word@h.example.com",
            "http://u:pa55word@h.example.com",
            "u:pa55word@h.example.com",
            "https://u:pa/55word@h.example.com",
        ] {
            let e = refused(with_password);
            assert!(e.contains("user or password"), "{e}");
            assert!(!e.contains("pa55word") && !e.contains("55word"), "{e}");
        }
        assert_eq!(
            refused("https://u:pa55word@h.example.com"),
            "--url \"https://u:***@h.example.com\" is not usable: it must not carry a user or password"
        );
        let e = refused("https://h.example.com/?token=t0ken");
        assert!(e.contains("\"https://h.example.com/?token=***\""), "{e}");
        assert!(refused("https://h.example.com/?a=1").contains("query or fragment"));
        // A whole webhook URL: refused without repeating its secret.
        let whole = refused("https://h.example.com/webhooks/mailchimp/other-secret-123456");
        assert!(whole.contains("give the daemon's public base URL"), "{whole}");
        assert!(!whole.contains("other-secret"), "{whole}");
        let e = refused("http://h/s3cret-0123456789abcdef");
        assert!(!e.contains(s.expose()) && e.contains("<secret>"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let s = secret();
        assert_eq!(
            redact("a https://h/webhooks/mailchimp/s3cret-0123456789abcdef (x)", Some(&s)),
            "a https://h/webhooks/mailchimp/<secret> (x)"
        );
        assert_eq!(
            redact(
                "https://h/webhooks/mailchimp/another; https://i/webhooks/mailchimp/third/x",
                None
            ),
            "https://h/webhooks/mailchimp/<secret>; https://i/webhooks/mailchimp/<secret>/x"
        );
        assert_eq!(
            redact("the detail: s3cret-0123456789abcdef", Some(&s)),
            "the detail: <secret>"
        );
        assert_eq!(
            redact("https://h/webhooks/mailchimp/s3cret-0123456789abcdef: x", Some(&s)),
            "https://h/webhooks/mailchimp/<secret>: x"
        );
        assert_eq!(
            redact("https://h/webhooks/mailchimp/other%2Dsecret: x", None),
            "https://h/webhooks/mailchimp/<secret>: x"
        );
        assert_eq!(redact("https://h/hooks/x", Some(&s)), "https://h/hooks/x");
    }

    #[test]
    fn urls_are_printed_without_passwords_query_values_or_secrets() {
        // Another service's token in the query.
        assert_eq!(
            redact_url("https://zapier.example/hook?token=abc"),
            "https://zapier.example/hook?token=***"
        );
        assert_eq!(
            redact_url("https://h.example/p/a?x=1&token=abc&flag&=v&#frag"),
            "https://h.example/p/a?x=***&token=***&***&=***&#***"
        );
        // A password; a user alone, often a token itself.
        assert_eq!(
            redact_url("https://user:password@h.example:8443/x"),
            "https://user:***@h.example:8443/x"
        );
        assert_eq!(redact_url("https://t0ken@h.example/x"), "https://***@h.example/x");
        assert_eq!(redact_url("https://:password@h.example/x"), "https://***@h.example/x");
        // A receiver's secret in the path: this importer's or another's.
        assert_eq!(
            redact_url("https://h.example/webhooks/mailchimp/s3cret-0123456789abcdef/"),
            "https://h.example/webhooks/mailchimp/<secret>/"
        );
        // Nothing to hide: as it is; no scheme: the host first.
        for plain in [
            "https://h.example/hooks/mailchimp",
            "http://[::1]:9899/x/",
            "https://h.example",
            "h.example.com/x",
            "",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
        assert_eq!(redact_url("u:pw@h.example.com/x?a=b"), "u:***@h.example.com/x?a=***");
        // Redacted twice, as once.
        for url in [
            "https://user:password@h/x?token=abc#f",
            "https://t@h/webhooks/mailchimp/abc0123456789def?x",
        ] {
            let once = redact_url(url);
            assert_eq!(redact_url(&once), once, "{url}");
            assert!(!once.contains("password") && !once.contains("abc"), "{once}");
        }
    }

    #[test]
    fn every_url_in_a_line_is_redacted() {
        let s = secret();
        assert_eq!(
            redact(
                "list \"a\": 2 webhooks: w1 https://zapier.example/hook?token=abc (events subscribe); \
                 w2 https://u:pw@h/webhooks/mailchimp/s3cret-0123456789abcdef (x)",
                Some(&s)
            ),
            "list \"a\": 2 webhooks: w1 https://zapier.example/hook?token=*** (events subscribe); \
             w2 https://u:***@h/webhooks/mailchimp/<secret> (x)"
        );
        assert_eq!(
            redact("error: --url \"https://user:password@h\" is not usable", None),
            "error: --url \"https://user:***@h\" is not usable"
        );
        // The URL ends at a blank, a quote or <>: the rest of the line is kept.
        assert_eq!(
            redact("at <http://a:b@h/?q=1>, then `https://h/?k=v` and x://y", None),
            "at <http://a:***@h/?q=***>, then `https://h/?k=***` and x://y"
        );
    }

    #[test]
    fn urls_are_the_same_whatever_the_case_of_scheme_and_host_and_the_default_port() {
        let ours = "https://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef";
        for same in [
            ours,
            "https://Importer.Example.COM/webhooks/mailchimp/s3cret-0123456789abcdef",
            "HTTPS://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://importer.example.com:443/webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef/",
            " https://IMPORTER.example.com/webhooks/mailchimp/s3cret-0123456789abcdef ",
        ] {
            assert!(same_url(ours, same), "{same}");
            assert!(same_url(same, ours), "{same}");
        }
        for other in [
            // The path (and so the secret) is compared exactly.
            "https://importer.example.com/webhooks/mailchimp/S3CRET-0123456789abcdef",
            "https://importer.example.com/Webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://importer.example.com:8443/webhooks/mailchimp/s3cret-0123456789abcdef",
            "http://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://importer.example.org/webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://u@importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef",
            "https://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef?x=1",
            "https://importer.example.com/webhooks/mailchimp/s3cret-0123456789abcdef#x",
        ] {
            assert!(!same_url(ours, other), "{other}");
        }
        assert!(same_url("http://LOCALHOST:80/x", "http://localhost/x"));
        assert!(same_url("http://[::1]:9899/x", "http://[::1]:9899/x/"));
        assert!(!same_url("http://[::1]:9899/x", "http://[::1]/x"));
    }

    #[test]
    fn the_wanted_webhook_is_described() {
        assert_eq!(
            wanted(),
            "events subscribe, unsubscribe, profile, upemail, cleaned; sources user, admin"
        );
    }
}
