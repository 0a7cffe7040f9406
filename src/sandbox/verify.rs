//! Does Ometria hold what Mailchimp holds? The expected contact is written
//! here from the contract (SPEC §5) on its own, not borrowed from the
//! importer's mapping, so that a mistake there shows up here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audience::{Member, Status};
use super::ometria::RunWrites;
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
                let expected = expected_contact(member, id);
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
