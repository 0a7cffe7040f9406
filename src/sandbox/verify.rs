//! Does Ometria hold what Mailchimp holds? The expected contact is written
//! here from the contract (SPEC §5) on its own, not borrowed from the
//! importer's mapping, so that a mistake there shows up here. Lists whose
//! entries map more fields (issue 17) are checked with the fields worked
//! out by [`super::oracle`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audience::{Member, Status};
use super::ometria::RunWrites;
use super::oracle::expected_field;
use super::World;

/// The contact SPEC §5 asks for.
pub fn expected_contact(member: &Member, list_id: &str) -> Value {
    let optin = match member.status {
        Status::Subscribed => "EXPLICITLY_OPTEDIN",
        Status::Unsubscribed | Status::Cleaned | Status::Archived => "EXPLICITLY_OPTEDOUT",
        Status::Pending | Status::Transactional => "NOT_SPECIFIED",
    };
    let mut contact = json!({
        "@type": "contact",
        "id": member.unique_email_id,
        "email": member.email,
        "marketing_optin": optin,
        "properties": {"mailchimp_status": member.status.as_str(), "mailchimp_list_id": list_id},
    });
    if !member.fname.is_empty() {
        contact["firstname"] = json!(member.fname);
    }
    if !member.lname.is_empty() {
        contact["lastname"] = json!(member.lname);
    }
    if member.status == Status::Subscribed && !member.timestamp_opt.is_empty() {
        contact["timestamp_subscribed"] = json!(member.timestamp_opt);
    }
    contact
}

/// Targets a mapping cannot change: the record's identity and the fields
/// SPEC §5 fixes (only `firstname` and `lastname` may be mapped anew).
const FIXED_TARGETS: [&str; 6] = [
    "id",
    "email",
    "marketing_optin",
    "timestamp_subscribed",
    "properties.mailchimp_status",
    "properties.mailchimp_list_id",
];

/// The mapping an entry of the state file asks for (issue 17), resolved:
/// the named mapping of `named` (the `mappings.json` document) that
/// `entry["mapping"]` names, if any, with the entry's own `fields` merged
/// in per target (an entry's `null` stays, removing the target) and its
/// own `collection` and `force_optin` over the named ones. `Err` names a
/// mapping `named` does not hold.
pub fn resolve_mapping(named: &Value, entry: &Value) -> Result<Value, String> {
    let mut resolved = match entry.get("mapping").and_then(Value::as_str) {
        Some(name) => named
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no mapping named \"{name}\""))?,
        None => json!({}),
    };
    if !resolved.is_object() {
        resolved = json!({});
    }
    if !resolved["fields"].is_object() {
        resolved["fields"] = json!({});
    }
    if let Some(fields) = entry.get("fields").and_then(Value::as_object) {
        for (target, path) in fields {
            resolved["fields"][target] = path.clone();
        }
    }
    for key in ["collection", "force_optin"] {
        if let Some(v) = entry.get(key) {
            resolved[key] = v.clone();
        }
    }
    Ok(resolved)
}

/// Sets (or, for `None`, removes) `target` of `contact`: a top-level
/// field, or `properties.<name>` nested with dots.
fn put(contact: &mut Value, target: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = target.split('.').collect();
    let leaf = parts.pop().unwrap_or_default();
    let mut node = contact;
    for part in parts {
        if !node[part].is_object() {
            if value.is_none() {
                return;
            }
            node[part] = json!({});
        }
        node = &mut node[part];
    }
    let Some(map) = node.as_object_mut() else {
        return;
    };
    match value {
        Some(v) => {
            map.insert(leaf.to_owned(), v);
        }
        None => {
            map.shift_remove(leaf);
        }
    }
}

/// The contact SPEC §5 asks for, with the fields of `mapping` (a resolved
/// mapping, `{"fields", "collection", "force_optin"}`) as the oracle
/// works them out at `now` (unix seconds): each mapped target set, or left
/// out when its value is empty or cannot be converted (a mapped
/// `firstname`/`lastname` replaces SPEC §5's, and a `null` one removes
/// it); `@collection` when a collection is named; `@force_optin: true`
/// when asked. Targets SPEC §5 fixes (`id`, `email`, `marketing_optin`,
/// `timestamp_subscribed`, `properties.mailchimp_status`/`_list_id`) are
/// not the mapping's to change, and stay.
pub fn expected_mapped_contact(member: &Member, list_id: &str, mapping: &Value, now: i64) -> Value {
    let mut contact = expected_contact(member, list_id);
    if let Some(fields) = mapping.get("fields").and_then(Value::as_object) {
        for (target, path) in fields {
            if FIXED_TARGETS.contains(&target.as_str()) || target.starts_with('@') {
                continue;
            }
            let value = path
                .as_str()
                .and_then(|path| expected_field(member, list_id, target, path, now));
            put(&mut contact, target, value);
        }
    }
    if let Some(collection) = mapping.get("collection").and_then(Value::as_str) {
        contact["@collection"] = json!(collection);
    }
    if mapping.get("force_optin") == Some(&Value::Bool(true)) {
        contact["@force_optin"] = json!(true);
    }
    contact
}

/// A difference, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    pub id: String,
    pub expected: Value,
    pub found: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListVerification {
    pub list_id: String,
    /// Members checked (archived included).
    pub members: usize,
    pub matching: usize,
    pub missing_count: usize,
    pub mismatched_count: usize,
    /// The first few of each, to look at.
    pub missing: Vec<String>,
    pub mismatched: Vec<Mismatch>,
    /// Members deleted in Mailchimp that were checked (see
    /// [`World::verify_with_deletions`]); counted in `members` too.
    #[serde(default)]
    pub deleted: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub lists: Vec<ListVerification>,
}

const SHOWN: usize = 5;

/// What [`World::ometria_writes_by_run`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WritesByRun {
    /// Contacts Ometria holds.
    pub contacts: usize,
    /// Writes that made them (every push counts once per record it stored).
    pub writes: u64,
    /// By run, the pushes sent for it; legacy `/record` posts included.
    pub runs: BTreeMap<String, RunWrites>,
}

/// What Ometria must hold, if anything, for a member deleted in Mailchimp
/// (issue 16): the contact opted out, with `mailchimp_status: "deleted"`.
pub fn deleted_contact_is_right(found: &Value) -> bool {
    found["marketing_optin"] == "EXPLICITLY_OPTEDOUT" && found["properties"]["mailchimp_status"] == "deleted"
}

impl World {
    /// Compares every member of `list_ids` (every list if empty) changed
    /// before `as_of` (unix seconds; every member if `None`) with the
    /// contact Ometria holds for it. Members deleted in Mailchimp are not
    /// checked: Ometria may hold them as last pushed, or opted out as
    /// deleted ([`World::verify_with_deletions`] checks them).
    pub fn verify(&self, list_ids: &[String], as_of: Option<i64>) -> Verification {
        self.verify_with_deletions(list_ids, as_of, None)
    }

    /// [`World::verify`], and every member deleted before `deleted_before`
    /// (unix seconds; a reconciliation that started after it must have
    /// seen it go) is checked too: right when Ometria holds no contact for
    /// it, or holds it opted out with `mailchimp_status: "deleted"`; a
    /// contact still opted in (or anything else) is a mismatch.
    pub fn verify_with_deletions(
        &self,
        list_ids: &[String],
        as_of: Option<i64>,
        deleted_before: Option<i64>,
    ) -> Verification {
        self.verify_lists(list_ids, as_of, deleted_before, &BTreeMap::new())
    }

    /// [`World::verify`] for lists whose entries map more fields (issue
    /// 17): `mappings` holds, by list id, the entry's resolved mapping
    /// (`{"fields", "collection", "force_optin"}`, see [`resolve_mapping`]),
    /// and each member's expected contact is [`expected_mapped_contact`].
    /// Only the lists of `mappings` are checked (every list, by SPEC §5's
    /// mapping alone, when it is empty).
    pub fn verify_mapped(&self, mappings: &BTreeMap<String, Value>, as_of: Option<i64>) -> Verification {
        self.verify_mapped_with_deletions(mappings, as_of, None)
    }

    /// [`World::verify_mapped`], checking members deleted before
    /// `deleted_before` as [`World::verify_with_deletions`] does.
    pub fn verify_mapped_with_deletions(
        &self,
        mappings: &BTreeMap<String, Value>,
        as_of: Option<i64>,
        deleted_before: Option<i64>,
    ) -> Verification {
        let ids: Vec<String> = mappings.keys().cloned().collect();
        self.verify_lists(&ids, as_of, deleted_before, mappings)
    }

    /// The check behind every `verify*`: lists without a mapping in
    /// `mappings` are held to SPEC §5's contact.
    fn verify_lists(
        &self,
        list_ids: &[String],
        as_of: Option<i64>,
        deleted_before: Option<i64>,
        mappings: &BTreeMap<String, Value>,
    ) -> Verification {
        let now = super::now_seconds();
        let lists = self.lists();
        let store = self.store();
        let mut ids: Vec<&String> = lists
            .keys()
            .filter(|id| list_ids.is_empty() || list_ids.contains(id))
            .collect();
        ids.sort();
        let mut report = Verification {
            ok: true,
            lists: vec![],
        };
        for id in ids {
            let audience = &lists[id];
            let mut v = ListVerification {
                list_id: id.clone(),
                members: 0,
                matching: 0,
                missing_count: 0,
                mismatched_count: 0,
                missing: vec![],
                mismatched: vec![],
                deleted: 0,
            };
            let gone = audience
                .deleted()
                .filter(|m| deleted_before.is_some_and(|t| m.last_changed < t));
            for member in gone {
                v.members += 1;
                v.deleted += 1;
                let found = store
                    .contacts
                    .get(&member.unique_email_id)
                    .map(|stored| serde_json::from_str(&stored.json).unwrap_or(Value::Null));
                match found {
                    None => v.matching += 1,
                    Some(found) if deleted_contact_is_right(&found) => v.matching += 1,
                    Some(found) => {
                        v.mismatched_count += 1;
                        if v.mismatched.len() < SHOWN {
                            v.mismatched.push(Mismatch {
                                id: member.unique_email_id.clone(),
                                expected: json!({"@type": "contact", "id": member.unique_email_id,
                                    "email": member.email, "marketing_optin": "EXPLICITLY_OPTEDOUT",
                                    "properties": {"mailchimp_status": "deleted", "mailchimp_list_id": id}}),
                                found,
                            });
                        }
                    }
                }
            }
            for member in audience.members().filter(|m| as_of.is_none_or(|t| m.last_changed < t)) {
                v.members += 1;
                let expected = match mappings.get(id) {
                    Some(mapping) => expected_mapped_contact(member, id, mapping, now),
                    None => expected_contact(member, id),
                };
                match store.contacts.get(&member.unique_email_id) {
                    None => {
                        v.missing_count += 1;
                        if v.missing.len() < SHOWN {
                            v.missing.push(member.unique_email_id.clone());
                        }
                    }
                    Some(stored) => {
                        let found: Value = serde_json::from_str(&stored.json).unwrap_or(Value::Null);
                        if found == expected {
                            v.matching += 1;
                        } else {
                            v.mismatched_count += 1;
                            if v.mismatched.len() < SHOWN {
                                v.mismatched.push(Mismatch {
                                    id: member.unique_email_id.clone(),
                                    expected,
                                    found,
                                });
                            }
                        }
                    }
                }
            }
            report.ok &= v.matching == v.members;
            report.lists.push(v);
        }
        report
    }

    /// The contact Ometria holds under `id`, and how often it was written.
    pub fn ometria_contact(&self, id: &str) -> Option<(Value, u32)> {
        let store = self.store();
        let stored = store.contacts.get(id)?;
        Some((serde_json::from_str(&stored.json).unwrap_or(Value::Null), stored.writes))
    }

    /// How many contacts Ometria holds, and how many writes made them.
    pub fn ometria_writes(&self) -> (usize, u64) {
        let store = self.store();
        (
            store.contacts.len(),
            store.contacts.values().map(|s| u64::from(s.writes)).sum(),
        )
    }

    /// [`World::ometria_writes`], with what the pushes of each run did
    /// (`/_run/{run}/v2/push`), both from one look at the store.
    pub fn ometria_writes_by_run(&self) -> WritesByRun {
        let store = self.store();
        WritesByRun {
            contacts: store.contacts.len(),
            writes: store.contacts.values().map(|s| u64::from(s.writes)).sum(),
            runs: store.runs.iter().map(|(run, w)| (run.clone(), *w)).collect(),
        }
    }

    /// Every contact Ometria holds.
    pub fn ometria_contacts(&self) -> Vec<Value> {
        self.store()
            .contacts
            .values()
            .filter_map(|s| serde_json::from_str(&s.json).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailchimp::MemberPage;
    use crate::sandbox::audience::{Audience, StatusFilter};
    use crate::transform::member_to_contact;

    #[test]
    fn a_deleted_member_is_right_opted_out_as_deleted_and_wrong_still_opted_in() {
        use crate::sandbox::audience::Mutation;
        use crate::sandbox::ometria::Stored;
        use crate::sandbox::SandboxConfig;
        let world = World::new(SandboxConfig {
            lists: vec![("L".into(), 50)],
            ..SandboxConfig::default()
        });
        // Ometria holds every member as pushed.
        let store_contact = |contact: &Value| {
            world.store().contacts.insert(
                contact["id"].as_str().unwrap().to_owned(),
                Stored {
                    json: contact.to_string().into(),
                    writes: 1,
                },
            );
        };
        let all: Vec<Value> = world.lists()["L"].members().map(|m| expected_contact(m, "L")).collect();
        all.iter().for_each(store_contact);
        let gone = world.mutate("L", Mutation::Delete, 2);
        assert_eq!(gone.len(), 2);
        let ids: Vec<String> = world.lists()["L"]
            .deleted()
            .map(|m| m.unique_email_id.clone())
            .collect();
        let after = super::super::now_seconds() + 1;
        // Deletions are not verify's business; with a cut-off, both count.
        assert!(world.verify(&[], None).ok);
        let check = world.verify_with_deletions(&[], None, Some(after));
        assert!(!check.ok);
        assert_eq!((check.lists[0].deleted, check.lists[0].mismatched_count), (2, 2));
        // One opted out as deleted is right; the other still opted in is not.
        let mut opted_out = all.iter().find(|c| c["id"] == ids[0].as_str()).unwrap().clone();
        opted_out["marketing_optin"] = json!("EXPLICITLY_OPTEDOUT");
        opted_out["properties"]["mailchimp_status"] = json!("deleted");
        store_contact(&opted_out);
        let check = world.verify_with_deletions(&[], None, Some(after));
        assert_eq!(check.lists[0].mismatched_count, 1);
        assert_eq!(check.lists[0].mismatched[0].id, ids[1]);
        assert_eq!(
            check.lists[0].mismatched[0].found["marketing_optin"],
            "EXPLICITLY_OPTEDIN"
        );
        // Deleted before a cut-off that predates them: not checked.
        assert!(world.verify_with_deletions(&[], None, Some(0)).ok);
    }

    /// The mapping of the example, resolved from a named mapping
    /// and the entry's own keys.
    fn example_mapping() -> Value {
        let named = json!({"shop": {
            "fields": {"phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country",
                       "properties.tags": "tags", "middlename": "merge_fields.ZIP"},
            "collection": "shop-a", "force_optin": false}});
        let entry = json!({"mapping": "shop", "force_optin": true, "fields": {
            "properties.birthday": "merge_fields.BIRTHDAY", "properties.loyalty": "merge_fields.LOYALTY",
            "properties.home.address": "merge_fields.ADDRESS", "date_of_birth": "merge_fields.JOINED",
            "timezone": "location.timezone", "lastname": "merge_fields.PLAN", "middlename": null}});
        resolve_mapping(&named, &entry).unwrap()
    }

    #[test]
    fn mappings_resolve_named_then_the_entrys_own_keys() {
        let m = example_mapping();
        assert_eq!(m["collection"], "shop-a");
        assert_eq!(m["force_optin"], true);
        assert_eq!(m["fields"]["phone_number"], "merge_fields.PHONE");
        assert_eq!(m["fields"]["properties.birthday"], "merge_fields.BIRTHDAY");
        assert_eq!(m["fields"]["middlename"], Value::Null, "the entry's null removes it");
        assert!(resolve_mapping(&json!({}), &json!({"mapping": "nope"}))
            .unwrap_err()
            .contains("nope"));
        assert_eq!(
            resolve_mapping(&json!({}), &json!({"fields": {"gender": "merge_fields.G"}})).unwrap(),
            json!({"fields": {"gender": "merge_fields.G"}})
        );
    }

    #[test]
    fn a_mapped_contact_is_the_default_one_plus_each_mapped_field() {
        use crate::sandbox::fields::{AddressField, Location, Phone};
        let audience = Audience::generate("L", 400, 3, 1_700_000_000);
        let mapping = example_mapping();
        let now = super::super::now_seconds();
        let (mut phones, mut no_phones) = (0, 0);
        for m in audience.members() {
            let c = expected_mapped_contact(m, "L", &mapping, now);
            let default = expected_contact(m, "L");
            for key in [
                "@type",
                "id",
                "email",
                "marketing_optin",
                "firstname",
                "timestamp_subscribed",
            ] {
                assert_eq!(c.get(key), default.get(key), "{key}");
            }
            assert_eq!(c["properties"]["mailchimp_status"], m.status.as_str());
            assert_eq!(c["properties"]["mailchimp_list_id"], "L");
            assert_eq!(c["@collection"], "shop-a");
            assert_eq!(c["@force_optin"], true);
            assert!(c.get("middlename").is_none());
            assert_eq!(
                c.get("lastname").and_then(Value::as_str),
                m.plan(),
                "the mapping replaces LNAME"
            );
            match m.phone() {
                Phone::International { country, national, .. } => {
                    phones += 1;
                    assert_eq!(c["phone_number"], format!("+{}{national}", country.calling_code));
                }
                _ => {
                    no_phones += 1;
                    assert!(c.get("phone_number").is_none());
                }
            }
            match m.address() {
                AddressField::Set(a) => {
                    assert_eq!(c["country_id"], a.country.alpha2);
                    assert_eq!(c["properties"]["home"]["address"]["city"], a.city);
                }
                _ => {
                    assert!(c.get("country_id").is_none());
                    assert!(c["properties"].get("home").is_none());
                }
            }
            let tags: Vec<&str> = m.tags().iter().map(|t| t.name).collect();
            assert_eq!(c["properties"]["tags"], json!(tags));
            assert_eq!(c["properties"].get("birthday").is_some(), m.birthday().is_some());
            assert_eq!(c["properties"].get("loyalty").is_some(), m.loyalty().is_some());
            assert_eq!(c.get("timezone").is_some(), m.location() != Location::Unknown);
            assert!(c.get("date_of_birth").is_none_or(|d| d.as_str().unwrap() < "2023"));
        }
        assert!(phones > 0 && no_phones > 0);
        // Without a mapping, or an empty one, the contact is SPEC §5's.
        let m = audience.members().next().unwrap();
        assert_eq!(
            expected_mapped_contact(m, "L", &json!({}), now),
            expected_contact(m, "L")
        );
        // A null firstname removes SPEC §5's; fixed targets stay.
        let c = expected_mapped_contact(
            m,
            "L",
            &json!({"fields": {"firstname": null, "email": "merge_fields.ZIP"}, "force_optin": false}),
            now,
        );
        assert!(c.get("firstname").is_none() && c.get("@force_optin").is_none());
        assert_eq!(c["email"], m.email.as_str());
    }

    #[test]
    fn verify_mapped_holds_ometria_to_the_mapped_contacts() {
        use crate::sandbox::audience::Mutation;
        use crate::sandbox::ometria::Stored;
        use crate::sandbox::SandboxConfig;
        let world = World::new(SandboxConfig {
            lists: vec![("L".into(), 60), ("M".into(), 40)],
            ..SandboxConfig::default()
        });
        let mapping = example_mapping();
        let mappings = BTreeMap::from([("L".to_owned(), mapping.clone()), ("M".to_owned(), json!({}))]);
        let store_all = || {
            let now = super::super::now_seconds();
            let lists = world.lists();
            let contacts: Vec<Value> = lists["L"]
                .members()
                .map(|m| expected_mapped_contact(m, "L", &mapping, now))
                .chain(lists["M"].members().map(|m| expected_contact(m, "M")))
                .collect();
            drop(lists);
            for contact in contacts {
                world.store().contacts.insert(
                    contact["id"].as_str().unwrap().to_owned(),
                    Stored {
                        json: contact.to_string().into(),
                        writes: 1,
                    },
                );
            }
        };
        store_all();
        let check = world.verify_mapped(&mappings, None);
        assert!(check.ok, "{check:?}");
        assert_eq!(check.lists.len(), 2);
        // SPEC §5's contact alone is not what a mapped list must hold.
        let plain = world.verify(&["L".to_owned()], None);
        assert!(!plain.ok);
        assert!(world.verify(&["M".to_owned()], None).ok);
        // A changed member's mapped fields change with it.
        let changed = world.mutate("L", Mutation::Change, 5);
        assert_eq!(changed.len(), 5);
        let check = world.verify_mapped(&mappings, None);
        assert_eq!(check.lists[0].mismatched_count, 5);
        let id = &check.lists[0].mismatched[0].id;
        let m = world.lists()["L"]
            .members()
            .find(|m| &m.unique_email_id == id)
            .unwrap()
            .clone();
        assert_eq!(m.variant, 1);
        store_all();
        assert!(world.verify_mapped(&mappings, None).ok);
        // A contact with the phone number as Mailchimp shows it is wrong.
        let m = world.lists()["L"]
            .members()
            .find(|m| matches!(m.phone(), crate::sandbox::fields::Phone::International { .. }))
            .unwrap()
            .clone();
        let mut wrong = expected_mapped_contact(&m, "L", &mapping, super::super::now_seconds());
        wrong["phone_number"] = json!(m.phone().text());
        world.store().contacts.get_mut(&m.unique_email_id).unwrap().json = wrong.to_string().into();
        let check = world.verify_mapped(&mappings, None);
        assert_eq!((check.ok, check.lists[0].mismatched_count), (false, 1));
        assert_eq!(check.lists[0].mismatched[0].found["phone_number"], m.phone().text());
    }

    /// The importer reads and maps every generated member (its full,
    /// unprojected JSON) to exactly the contact the contract asks for.
    #[test]
    fn the_importers_mapping_agrees_with_the_contract() {
        let audience = Audience::generate("list-x", 3000, 9, 1_700_000_000);
        let mut checked = 0;
        for status in [StatusFilter::Default, StatusFilter::Only(Status::Archived)] {
            let members = audience.window(status, None, None);
            let body = serde_json::to_vec(&json!({
                "members": members.iter().map(|m| m.to_value("list-x")).collect::<Vec<_>>(),
                "total_items": members.len(),
            }))
            .unwrap();
            let page = MemberPage::parse(&body).unwrap();
            for (read, m) in page.members.iter().zip(&members) {
                let mapped = member_to_contact(read, "list-x", chrono::Utc::now()).unwrap();
                assert_eq!(mapped.dropped, []);
                let contact = serde_json::to_value(mapped.contact).unwrap();
                assert_eq!(contact, expected_contact(m, "list-x"));
                checked += 1;
            }
        }
        assert_eq!(checked, 3000);
    }
}
