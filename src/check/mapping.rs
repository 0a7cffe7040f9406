//! What `check` says about the entries' mappings (issue 17): one line
//! describing each mapping, a warning when `OMETRIA_API=record` would not
//! send it, and — with `--online` — where it does not fit the list's merge
//! fields (Marketing API 3.0, List merge fields), so that a value that can
//! never be sent shows before the first sync rather than as drops after it.
//!
//! Pure functions: they take the entry's resolved [`Mapping`] and return
//! the text of the lines, without the `warning: ` in front.

use crate::mailchimp::{MergeField, MEMBER_FIELDS};
use crate::mapping::convert::ADDRESS_PARTS;
use crate::mapping::{ContactField, Mapping, SourcePath, Target};
use crate::state::EntryKey;

/// What an entry's (non-default) mapping does, in one line to follow
/// `list "a1": `: where it comes from (`mapping "shop"`, with how many
/// targets the entry sets differently, or `own mapping`), how many targets
/// it fills, the default names it takes out, `@collection`,
/// `@force_optin`, and what more it asks Mailchimp for than SPEC §5's
/// mapping does (the `fields` projection, [`Mapping::projection`]).
///
/// `named` is the named mapping the entry starts from, if any.
///
/// e.g. `mapping "shop" + 2 own fields: 7 fields, @collection "mailchimp",
/// @force_optin; asks Mailchimp also for members.merge_fields.PHONE,members.tags`
pub fn describe(mapping: &Mapping, named: Option<&Mapping>) -> String {
    let mut line = match (&mapping.name, named) {
        (Some(name), Some(named)) => {
            let own = mapping
                .fields
                .iter()
                .filter(|(target, source)| named.fields.get(target) != Some(source))
                .count();
            match own {
                0 => format!("mapping {name:?}"),
                1 => format!("mapping {name:?} + 1 own field"),
                n => format!("mapping {name:?} + {n} own fields"),
            }
        }
        (Some(name), None) => format!("mapping {name:?}"),
        (None, _) => "own mapping".to_owned(),
    };
    let filled = mapping.rules().count();
    line.push_str(&format!(": {filled} field{}", if filled == 1 { "" } else { "s" }));
    for field in [ContactField::Firstname, ContactField::Lastname] {
        if mapping.fields.get(&Target::Contact(field)) == Some(&None) {
            line.push_str(&format!(", no {}", field.name()));
        }
    }
    if let Some(collection) = &mapping.collection {
        line.push_str(&format!(", @collection {collection:?}"));
    }
    if mapping.force_optin {
        line.push_str(", @force_optin");
    }
    let default: Vec<&str> = MEMBER_FIELDS.split(',').collect();
    let projection = mapping.projection();
    let more: Vec<&str> = projection.split(',').filter(|p| !default.contains(p)).collect();
    if more.is_empty() {
        line.push_str("; asks Mailchimp for nothing more");
    } else {
        line.push_str(&format!("; asks Mailchimp also for {}", more.join(",")));
    }
    line
}

/// The warning for an entry with a mapping when `OMETRIA_API=record`: the
/// legacy endpoint's record has fixed fields (`{id, email, status,
/// firstname, lastname}`, see [`crate::ometria::encode`]), so the mapping
/// is not sent — and a `firstname` or `lastname` it reads from elsewhere
/// than `FNAME` or `LNAME` is not sent at all.
pub fn record_api_warning(key: &EntryKey, mapping: &Mapping) -> String {
    let mut line = format!(
        "list {key}: OMETRIA_API=record sends the legacy record {{id, email, status, firstname, lastname}}, \
         so this entry's mapping (its fields, @collection and @force_optin) is not sent"
    );
    // A name taken out is not sent either way; one read elsewhere is lost.
    let names: Vec<String> = [ContactField::Firstname, ContactField::Lastname]
        .into_iter()
        .filter_map(|f| match mapping.fields.get(&Target::Contact(f)) {
            Some(Some(source)) => Some(format!("{} (which it reads from {source})", f.name())),
            _ => None,
        })
        .collect();
    if !names.is_empty() {
        line.push_str(&format!(
            ", and {} {} not sent at all",
            names.join(" and "),
            if names.len() == 1 { "is" } else { "are" }
        ));
    }
    line.push_str("; unset OMETRIA_API (push is the default) to send it");
    line
}

/// Where the mapping of entry `key` reads a merge field that list's
/// `merge_fields` (as Mailchimp lists them) cannot fill its target with:
/// one warning per mapped target, for
/// - a merge tag the list does not have (tags are matched exactly, as
///   Mailchimp keys a member's `merge_fields`): the value is always empty;
/// - a part of a merge field that has none (`merge_fields.PHONE.x`, or an
///   address part other than those of [`ADDRESS_PARTS`]): always empty;
/// - a whole `address` into a contact field, which takes one text: every
///   value is dropped (map one part, `merge_fields.ADDRESS.country`);
/// - a `birthday` (`MM/DD`, no year) into `date_of_birth`, or a `date` or
///   `birthday` (no time of day) into `timestamp_acquired` or
///   `timestamp_unsubscribed`: every value is dropped (see
///   [`crate::mapping::convert`]);
/// - a `phone` field of format `US` into `phone_number`: its numbers carry
///   no country code, so none is E.164 and every one is dropped.
///
/// Any other type fits its target, or fits for some values (a `text`
/// field holds whatever subscribers typed); those are not warned about.
pub fn merge_field_warnings(key: &EntryKey, mapping: &Mapping, merge_fields: &[MergeField]) -> Vec<String> {
    let mut warnings = vec![];
    for (target, source) in mapping.rules() {
        let Some(tag) = source.merge_tag() else {
            continue;
        };
        let head = format!("list {key}: fields.{target} reads {source}");
        match merge_fields.iter().find(|f| f.tag == tag) {
            None => {
                let has = match merge_fields.iter().find(|f| f.tag.eq_ignore_ascii_case(tag)) {
                    Some(close) => format!("merge tags are matched exactly: it has {}", close.tag),
                    None if merge_fields.is_empty() => "it has none".to_owned(),
                    None => format!(
                        "it has {}",
                        merge_fields
                            .iter()
                            .map(|f| f.tag.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                warnings.push(format!(
                    "{head}, but the list has no merge field {tag} ({has}); the value will always be empty"
                ));
            }
            Some(field) => {
                if let Some(problem) = unfit(target, source, field) {
                    let kind = &field.field_type;
                    let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    warnings.push(format!("{head}, {a} {kind} merge field: {problem}"));
                }
            }
        }
    }
    warnings
}

/// Why `field`, read at `source`, can never fill `target`, if it cannot.
fn unfit(target: &Target, source: &SourcePath, field: &MergeField) -> Option<String> {
    use ContactField::*;
    let tag = &field.tag;
    let part = source.parts().get(2).map(String::as_str);
    let contact = match target {
        Target::Contact(f) => Some(*f),
        Target::Property(_) => None,
    };
    let kind = field.field_type.as_str();
    if kind == "address" {
        return match part {
            None => contact.map(|f| {
                format!(
                    "an address is an object of parts ({}) and {} takes one text, so every value will be dropped; \
                     map one part, e.g. merge_fields.{tag}.country",
                    ADDRESS_PARTS.join(", "),
                    f.name()
                )
            }),
            Some(part) if !ADDRESS_PARTS.contains(&part) => Some(format!(
                "an address has no part {part:?} (its parts are {}); the value will always be empty",
                ADDRESS_PARTS.join(", ")
            )),
            Some(part) if source.parts().len() > 3 => Some(format!(
                "the address part {part} is text, with no parts of its own; the value will always be empty"
            )),
            Some(_) => None,
        };
    }
    if let Some(part) = part {
        return Some(format!(
            "it holds one value, with no part {part:?}; the value will always be empty (read merge_fields.{tag})"
        ));
    }
    match (kind, contact?) {
        ("birthday", DateOfBirth) => Some(
            "a birthday has a month and a day but no year, and date_of_birth takes a full date, \
             so every value will be dropped; map it to a property (e.g. properties.birthday) instead"
                .to_owned(),
        ),
        ("date" | "birthday", f @ (TimestampAcquired | TimestampUnsubscribed)) => Some(format!(
            "a {kind} has no time of day, and {} takes an instant, so every value will be dropped; \
             map it to a property instead",
            f.name()
        )),
        ("phone", PhoneNumber)
            if field
                .options
                .phone_format
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case("US")) =>
        {
            Some(
                "its format is US, whose numbers carry no country code ((555) 123-4567), and phone_number \
                 takes E.164 (+15551234567), so they will be dropped; make the field international in \
                 Mailchimp, or map it to a property"
                    .to_owned(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailchimp::MergeFieldOptions;
    use crate::mapping::NamedMappings;
    use serde_json::{json, Value};

    fn mapping(value: Value) -> Mapping {
        let mut m = Mapping::default();
        m.overlay(value.as_object().unwrap()).unwrap();
        m
    }

    fn key(list_id: &str) -> EntryKey {
        EntryKey {
            list_id: list_id.into(),
            rank: 0,
        }
    }

    fn field(tag: &str, kind: &str) -> MergeField {
        MergeField {
            tag: tag.into(),
            field_type: kind.into(),
            options: MergeFieldOptions::default(),
        }
    }

    /// A list as Mailchimp creates one, with a US phone and a birthday.
    fn list() -> Vec<MergeField> {
        let mut phone = field("PHONE", "phone");
        phone.options.phone_format = Some("US".into());
        vec![
            field("FNAME", "text"),
            field("LNAME", "text"),
            field("ADDRESS", "address"),
            phone,
            field("BIRTHDAY", "birthday"),
            field("JOINED", "date"),
        ]
    }

    #[test]
    fn a_named_mapping_and_the_entrys_own_fields_are_described() {
        let named = NamedMappings::parse(
            br#"{"shop": {"fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags",
                 "country_id": "merge_fields.ADDRESS.country"}, "collection": "mailchimp"}}"#,
        )
        .unwrap();
        let shop = named.get("shop").unwrap();
        let mut entry = shop.clone();
        entry
            .overlay(
                json!({"fields": {"properties.birthday": "merge_fields.BIRTHDAY", "lastname": null,
                "phone_number": "merge_fields.PHONE"}, "force_optin": true})
                .as_object()
                .unwrap(),
            )
            .unwrap();
        assert_eq!(
            describe(&entry, Some(shop)),
            "mapping \"shop\" + 2 own fields: 4 fields, no lastname, @collection \"mailchimp\", @force_optin; \
             asks Mailchimp also for members.merge_fields.PHONE,members.merge_fields.ADDRESS.country,\
             members.merge_fields.BIRTHDAY,members.tags"
        );
        assert_eq!(
            describe(shop, Some(shop)),
            "mapping \"shop\": 3 fields, @collection \"mailchimp\"; asks Mailchimp also for \
             members.merge_fields.PHONE,members.merge_fields.ADDRESS.country,members.tags"
        );
        assert_eq!(
            describe(&mapping(json!({"collection": "uk"})), None),
            "own mapping: 0 fields, @collection \"uk\"; asks Mailchimp for nothing more"
        );
        // Restating the default name is the default mapping.
        assert_eq!(
            describe(&mapping(json!({"fields": {"firstname": "merge_fields.FNAME"}})), None),
            "own mapping: 0 fields; asks Mailchimp for nothing more"
        );
    }

    #[test]
    fn the_record_api_warning_names_the_names_it_loses() {
        assert_eq!(
            record_api_warning(&key("a1"), &mapping(json!({"collection": "uk"}))),
            "list \"a1\": OMETRIA_API=record sends the legacy record {id, email, status, firstname, lastname}, \
             so this entry's mapping (its fields, @collection and @force_optin) is not sent; unset OMETRIA_API \
             (push is the default) to send it"
        );
        let names = mapping(json!({"fields": {"firstname": "merge_fields.FIRST", "lastname": null}}));
        let warning = record_api_warning(&key("a1"), &names);
        assert!(
            warning.contains(", and firstname (which it reads from merge_fields.FIRST) is not sent at all;"),
            "{warning}"
        );
        let both = mapping(json!({"fields": {"firstname": "merge_fields.FIRST", "lastname": "merge_fields.LAST"}}));
        let warning = record_api_warning(&key("a1"), &both);
        assert!(warning.contains("merge_fields.LAST) are not sent at all;"), "{warning}");
    }

    #[test]
    fn a_merge_tag_the_list_lacks_is_named_with_those_it_has() {
        let m = mapping(
            json!({"fields": {"phone_number": "merge_fields.MOBILE", "properties.x": "merge_fields.fname",
            "properties.tags": "tags"}}),
        );
        let three = [
            field("FNAME", "text"),
            field("LNAME", "text"),
            field("ADDRESS", "address"),
        ];
        assert_eq!(
            merge_field_warnings(&key("a1"), &m, &three),
            [
                "list \"a1\": fields.phone_number reads merge_fields.MOBILE, but the list has no merge field MOBILE \
                 (it has FNAME, LNAME, ADDRESS); the value will always be empty",
                "list \"a1\": fields.properties.x reads merge_fields.fname, but the list has no merge field fname \
                 (merge tags are matched exactly: it has FNAME); the value will always be empty",
            ]
        );
        let none = merge_field_warnings(&key("a1"), &m, &[]);
        assert!(none[0].contains("(it has none)"), "{none:?}");
    }

    #[test]
    fn types_that_cannot_fill_their_target_are_warned_about() {
        let m = mapping(json!({"fields": {
            "date_of_birth": "merge_fields.BIRTHDAY",
            "country_id": "merge_fields.ADDRESS",
            "phone_number": "merge_fields.PHONE",
            "timestamp_acquired": "merge_fields.JOINED",
            "properties.county": "merge_fields.ADDRESS.county",
            "properties.ext": "merge_fields.PHONE.ext",
        }}));
        let warnings = merge_field_warnings(&key("a1"), &m, &list());
        let expected = [
            "fields.phone_number reads merge_fields.PHONE, a phone merge field: its format is US",
            "fields.date_of_birth reads merge_fields.BIRTHDAY, a birthday merge field: a birthday has a month and a day but no year",
            "fields.country_id reads merge_fields.ADDRESS, an address merge field: an address is an object of parts \
             (addr1, addr2, city, state, zip, country) and country_id takes one text, so every value will be dropped; \
             map one part, e.g. merge_fields.ADDRESS.country",
            "fields.timestamp_acquired reads merge_fields.JOINED, a date merge field: a date has no time of day",
            "fields.properties.county reads merge_fields.ADDRESS.county, an address merge field: an address has no part \"county\"",
            "fields.properties.ext reads merge_fields.PHONE.ext, a phone merge field: it holds one value, with no part \"ext\"",
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, start) in warnings.iter().zip(expected) {
            assert!(warning.starts_with(&format!("list \"a1\": {start}")), "{warning}");
        }
    }

    #[test]
    fn fields_that_fit_are_not_warned_about() {
        let m = mapping(json!({"fields": {
            "properties.birthday": "merge_fields.BIRTHDAY",
            "properties.address": "merge_fields.ADDRESS",
            "country_id": "merge_fields.ADDRESS.country",
            "date_of_birth": "merge_fields.JOINED",
            "customer_id": "merge_fields.JOINED",
            "properties.phone": "merge_fields.PHONE",
            "firstname": "merge_fields.FNAME",
        }}));
        assert_eq!(merge_field_warnings(&key("a1"), &m, &list()), Vec::<String>::new());
        // An international phone field fills phone_number.
        let mut fields = list();
        fields[3].options.phone_format = Some("none".into());
        let phone = mapping(json!({"fields": {"phone_number": "merge_fields.PHONE"}}));
        assert!(merge_field_warnings(&key("a1"), &phone, &fields).is_empty());
    }
}
