//! `check` and `check --online` on entries with mappings (issue 17), run as
//! an operator runs them: the lines printed and the exit code, against
//! Mailchimp's members and merge fields served by wiremock.

mod support;

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use wiremock::matchers::{basic_auth, method, path};
use wiremock::{Mock, ResponseTemplate};

use support::*;

/// `check` (with `args`) on `entries`, and `mappings` as `mappings.json`
/// if given: its exit code and what it printed.
async fn check(entries: &str, mappings: Option<&str>, apis: Option<&Apis>, args: &[&str]) -> (Option<i32>, String) {
    let (dir, _) = state_dir(entries);
    if let Some(mappings) = mappings {
        std::fs::write(dir.path().join("mappings.json"), mappings).unwrap();
    }
    let child = importer_command(dir.path(), apis)
        .arg("check")
        .args(args)
        .spawn()
        .unwrap();
    let out = exit_within(child, Duration::from_secs(20)).await;
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

const SHOP: &str = r#"{"shop": {"fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"},
    "collection": "mailchimp"}}"#;

#[actix_rt::test]
async fn a_wrong_mapping_is_an_error_naming_the_entry_and_the_key() {
    let entries = r#"[
        {"list_id": "a", "fields": {"phone": "merge_fields.PHONE"}},
        {"list_id": "b", "fields": {"phone_number": "merge_fields..PHONE"}},
        {"list_id": "c", "force_optin": "yes"},
        {"list_id": "d", "mapping": "shops"},
        {"list_id": "e", "mapping": "shop"}
    ]"#;
    let (code, stdout) = check(entries, Some(SHOP), None, &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    for line in [
        "error: entry at index 0 (list_id \"a\"), field \"fields\": \"phone\" is not an Ometria contact field; \
         map to one of prefix, firstname",
        "error: entry at index 1 (list_id \"b\"), field \"fields\": phone_number: \"merge_fields..PHONE\" is not a member path",
        "error: entry at index 2 (list_id \"c\"), field \"force_optin\": must be true or false, found the text \"yes\"; \
         entry skipped until it is fixed\n",
        "error: entry at index 3 (list_id \"d\"), field \"mapping\": there is no mapping \"shops\" in mappings.json \
         (it defines shop); entry skipped until it is fixed\n",
        // The valid entry is described.
        "list \"e\": mapping \"shop\": 2 fields, @collection \"mailchimp\"; asks Mailchimp also for \
         members.merge_fields.PHONE,members.tags\n",
    ] {
        assert!(stdout.contains(line), "{line}\nnot in\n{stdout}");
    }
    assert!(stdout.contains("holds 5 entries, 1 valid"), "{stdout}");
    assert!(stdout.ends_with("4 problem(s) to fix.\n"), "{stdout}");
}

#[actix_rt::test]
async fn a_broken_mappings_file_is_an_error_even_when_no_entry_names_it() {
    // A wrong named mapping no entry uses.
    let mappings = r#"{"shop": {"fields": {"phone_number": "merge_fields.PHONE"}},
        "spare": {"fields": {"phone": "merge_fields.PHONE"}}}"#;
    let (code, stdout) = check(r#"[{"list_id": "a", "mapping": "shop"}]"#, Some(mappings), None, &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "error: mappings.json: the mapping \"spare\", key \"fields\": \"phone\" is not an Ometria contact field"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("list \"a\": mapping \"shop\": 1 field;"), "{stdout}");
    assert!(stdout.ends_with("1 problem(s) to fix.\n"), "{stdout}");

    // A file that does not parse, and no entry naming a mapping at all.
    let (code, stdout) = check(r#"[{"list_id": "a"}]"#, Some("{\"shop\": {\"fields\": }}"), None, &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("mappings.json is not valid JSON (line 1, column"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 problem(s) to fix.\n"), "{stdout}");
}

#[actix_rt::test]
async fn the_record_api_does_not_send_a_mapping_and_check_says_so() {
    let entries = r#"[{"list_id": "a", "collection": "uk"}, {"list_id": "b"}]"#;
    let (code, stdout) = check(entries, None, None, &[]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("list \"a\": own mapping: 0 fields, @collection \"uk\"; asks Mailchimp for nothing more\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("list \"b\": own mapping"), "{stdout}");
    assert!(stdout.ends_with("all good.\n"), "{stdout}");

    let (dir, _) = state_dir(entries);
    let out = importer_command(dir.path(), None)
        .env("OMETRIA_API", "record")
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("warning: list \"a\": OMETRIA_API=record sends the legacy record {id, email, status, firstname, lastname}, so this entry's mapping (its fields, @collection and @force_optin) is not sent"), "{stdout}");
    assert!(!stdout.contains("warning: list \"b\""), "{stdout}");
    assert!(stdout.ends_with("all good, but for 1 warning(s) above.\n"), "{stdout}");
}

/// Serves `fields` as the merge fields of `list_id`, as Mailchimp does.
async fn serve_merge_fields(apis: &Apis, list_id: &str, fields: Value) {
    let total = fields.as_array().unwrap().len();
    Mock::given(method("GET"))
        .and(path(format!("/3.0/lists/{list_id}/merge-fields")))
        .and(basic_auth("ometria-importer", MAILCHIMP_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"merge_fields": fields, "total_items": total})))
        .mount(&apis.mailchimp)
        .await;
}

/// Paths of the merge-fields requests Mailchimp received, with their query.
async fn merge_field_requests(apis: &Apis) -> Vec<String> {
    let requests = apis.mailchimp.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.url.path().ends_with("/merge-fields"))
        .map(|r| format!("{}?{}", r.url.path(), r.url.query().unwrap_or("")))
        .collect()
}

#[actix_rt::test]
async fn online_the_mapped_merge_fields_are_compared_with_the_lists() {
    let apis = Apis::start(
        FakeMailchimp::default()
            .with_list("L", generate_members(5, Utc::now()))
            .with_list("M", generate_members(3, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    serve_merge_fields(
        &apis,
        "L",
        json!([
            {"tag": "FNAME", "type": "text", "options": {"size": 25}},
            {"tag": "LNAME", "type": "text", "options": {"size": 25}},
            {"tag": "ADDRESS", "type": "address", "options": {"default_country": 164}},
            {"tag": "PHONE", "type": "phone", "options": {"phone_format": "US"}},
            {"tag": "BIRTHDAY", "type": "birthday", "options": {"date_format": "MM/DD"}}
        ]),
    )
    .await;
    // L's entries read merge fields; M's reads none (only tags), so its
    // merge fields are not asked for (none are served: asking would fail).
    let entries = r#"[
        {"list_id": "L", "mapping": "shop", "fields": {"date_of_birth": "merge_fields.BIRTHDAY",
         "properties.mobile": "merge_fields.MOBILE", "country_id": "merge_fields.ADDRESS.country"}},
        {"list_id": "L", "fields": {"properties.address": "merge_fields.ADDRESS", "properties.birthday": "merge_fields.BIRTHDAY"}},
        {"list_id": "M", "fields": {"properties.tags": "tags"}, "force_optin": true}
    ]"#;
    let (code, stdout) = check(entries, Some(SHOP), Some(&apis), &["--online"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    for line in [
        "list \"L\": mapping \"shop\" + 3 own fields: 5 fields, @collection \"mailchimp\"; asks Mailchimp also for \
         members.merge_fields.PHONE,members.merge_fields.BIRTHDAY,members.merge_fields.ADDRESS.country,\
         members.merge_fields.MOBILE,members.tags\n",
        "list \"M\": own mapping: 1 field, @force_optin; asks Mailchimp also for members.tags\n",
        "ok: Mailchimp lets the key read list \"L\"",
        "ok: list \"L\" has 5 merge field(s): FNAME, LNAME, ADDRESS, PHONE, BIRTHDAY\n",
        "warning: list \"L\": fields.phone_number reads merge_fields.PHONE, a phone merge field: its format is US, \
         whose numbers carry no country code",
        "warning: list \"L\": fields.date_of_birth reads merge_fields.BIRTHDAY, a birthday merge field: a birthday \
         has a month and a day but no year",
        "warning: list \"L\": fields.properties.mobile reads merge_fields.MOBILE, but the list has no merge field \
         MOBILE (it has FNAME, LNAME, ADDRESS, PHONE, BIRTHDAY); the value will always be empty\n",
        "ok: Mailchimp lets the key read list \"M\"",
    ] {
        assert!(stdout.contains(line), "{line}\nnot in\n{stdout}");
    }
    // The second entry of L reads what it can: no warning for it.
    assert!(!stdout.contains("list \"L\" (#2): fields"), "{stdout}");
    assert!(!stdout.contains("list \"M\" has"), "{stdout}");
    assert!(stdout.ends_with("all good, but for 3 warning(s) above.\n"), "{stdout}");
    // One merge-fields request, for L only, asking only for what is compared.
    assert_eq!(
        merge_field_requests(&apis).await,
        ["/3.0/lists/L/merge-fields?count=1000&fields=merge_fields.tag%2Cmerge_fields.type%2Cmerge_fields.options%2Ctotal_items"]
    );
}

#[actix_rt::test]
async fn online_merge_fields_mailchimp_refuses_are_an_error() {
    let apis = Apis::start(
        FakeMailchimp::default()
            .with_list("L", generate_members(5, Utc::now()))
            .with_list("F", generate_members(2, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    serve_merge_fields(
        &apis,
        "L",
        json!([{"tag": "PHONE", "type": "phone", "options": {"phone_format": "none"}}]),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/3.0/lists/F/merge-fields"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("content-type", "application/problem+json")
                .set_body_json(json!({"type": "x", "title": "Forbidden", "status": 403,
                    "detail": "You don't have permission to access this resource.", "instance": "i"})),
        )
        .mount(&apis.mailchimp)
        .await;
    let entries = r#"[{"list_id": "L", "fields": {"phone_number": "merge_fields.PHONE"}},
        {"list_id": "F", "fields": {"phone_number": "merge_fields.PHONE"}},
        {"list_id": "nope", "fields": {"phone_number": "merge_fields.PHONE"}}]"#;
    let (code, stdout) = check(entries, None, Some(&apis), &["--online"]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "error: list \"F\": reading its merge fields: Mailchimp refused the request with HTTP 403 (Forbidden: \
             You don't have permission to access this resource.): this key may not read the list"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: list \"L\" has 1 merge field(s): PHONE\n"),
        "{stdout}"
    );
    // A list whose members Mailchimp refused is one error, not two.
    assert!(
        stdout.contains("error: list \"nope\": Mailchimp refused the request with HTTP 404"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("error: list \"nope\"").count(), 1, "{stdout}");
    assert!(!stdout.contains("warning:"), "{stdout}");
    assert!(stdout.ends_with("2 problem(s) to fix.\n"), "{stdout}");
    let asked = merge_field_requests(&apis).await;
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(!asked.iter().any(|r| r.contains("/nope/")), "{asked:?}");
}

/// Two entries of one list mapping it differently into the same contacts
/// are warned about; in two collections, or mapped alike, they are not.
/// And an entry whose mapping changed since its last full read is said to
/// read every member next, as the daemon will.
#[actix_rt::test]
async fn entries_that_would_overwrite_each_other_are_warned_about() {
    let (code, out) = check(
        r#"[{"list_id": "T"}, {"list_id": "T", "fields": {"phone_number": "merge_fields.PHONE"}},
            {"list_id": "U", "collection": "a"}, {"list_id": "U", "collection": "b", "force_optin": true},
            {"list_id": "V", "fields": {"gender": "merge_fields.G"}}, {"list_id": "V", "fields": {"gender": "merge_fields.G"}}]"#,
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("map one list differently")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].starts_with("warning: entries \"T\" and \"T\" (#2) map one list differently"),
        "{out}"
    );

    // No ledger yet: an entry with a cursor and a mapping of its own reads every member.
    let cursor = cursor_now();
    let (_, out) = check(
        &format!(r#"[{{"list_id": "W", "latest_timestamp": "{cursor}", "collection": "c"}}, {{"list_id": "X", "latest_timestamp": "{cursor}"}}]"#),
        None,
        None,
        &[],
    )
    .await;
    assert!(
        out.contains("list \"W\": SYNC of every member (its mapping is not the one its last full read used"),
        "{out}"
    );
    assert!(out.contains("list \"X\": up to date"), "{out}");
}
