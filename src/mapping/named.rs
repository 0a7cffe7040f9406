//! Named mappings: `<state dir>/mappings.json`, written once and named by
//! any number of entries (`"mapping": "shop"`), so that 500 lists sharing
//! one mapping do not repeat it (issue 17).
//!
//! ```json
//! {
//!   "shop": {
//!     "fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"},
//!     "collection": "mailchimp",
//!     "force_optin": false
//!   }
//! }
//! ```
//!
//! The file is optional, read with `state.json` (every tick and before
//! every write), and only read: the importer never writes it. An entry's
//! own `fields`, `collection` and `force_optin` go over the named
//! mapping's (`fields` target by target). A file that cannot be read, or
//! a named mapping that is wrong, skips only the entries that name it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::Value;

use super::{Mapping, MappingError, FIELD_COLLECTION, FIELD_FIELDS, FIELD_FORCE_OPTIN};

/// The named mappings' file, beside `state.json`.
pub const MAPPINGS_FILE_NAME: &str = "mappings.json";

/// The named mappings as last read: each valid one, or why it is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedMappings {
    /// Why the file could not be read as a whole (`None`: read, or absent).
    problem: Option<String>,
    mappings: BTreeMap<String, Result<Mapping, MappingError>>,
}

impl NamedMappings {
    /// Reads `mappings.json` in `dir`. An absent file is no named mapping;
    /// one that cannot be read or parsed is remembered as the reason
    /// entries naming a mapping are skipped.
    pub fn read(dir: &Path) -> NamedMappings {
        let path = dir.join(MAPPINGS_FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => NamedMappings::parse(&bytes).unwrap_or_else(|problem| NamedMappings {
                problem: Some(format!("{} {problem}", path.display())),
                mappings: BTreeMap::new(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => NamedMappings::default(),
            Err(e) => NamedMappings {
                problem: Some(format!("cannot read {}: {e}", path.display())),
                mappings: BTreeMap::new(),
            },
        }
    }

    /// Reads the file's bytes. Errors: not JSON (with line and column), or
    /// not an object of objects.
    pub fn parse(bytes: &[u8]) -> Result<NamedMappings, String> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("is not valid JSON (line {}, column {}): {e}", e.line(), e.column()))?;
        let Value::Object(named) = value else {
            return Err(format!(
                "must be an object of named mappings like {{\"shop\": {{\"fields\": {{…}}}}}}, found {}",
                crate::state::describe(&value)
            ));
        };
        let mut mappings = BTreeMap::new();
        for (name, value) in named {
            let mapping = match &value {
                Value::Object(object) => {
                    let unknown = object
                        .keys()
                        .find(|k| ![FIELD_FIELDS, FIELD_COLLECTION, FIELD_FORCE_OPTIN].contains(&k.as_str()));
                    match unknown {
                        Some(key) => Err(MappingError {
                            field: super::FIELD_MAPPING,
                            problem: format!("{key:?} is not a key of a mapping (fields, collection, force_optin)"),
                        }),
                        None => {
                            let mut mapping = Mapping::default();
                            mapping.overlay(object).map(|()| {
                                mapping.name = Some(name.clone());
                                mapping
                            })
                        }
                    }
                }
                other => Err(MappingError {
                    field: super::FIELD_MAPPING,
                    problem: format!(
                        "must be an object like {{\"fields\": {{…}}}}, found {}",
                        crate::state::describe(other)
                    ),
                }),
            };
            mappings.insert(name, mapping);
        }
        Ok(NamedMappings {
            problem: None,
            mappings,
        })
    }

    /// The mapping called `name`. Errors: what is wrong, for the warning of
    /// an entry that names it.
    pub fn get(&self, name: &str) -> Result<&Mapping, String> {
        if let Some(problem) = &self.problem {
            return Err(format!("the named mappings cannot be used: {problem}"));
        }
        match self.mappings.get(name) {
            Some(Ok(mapping)) => Ok(mapping),
            Some(Err(e)) => Err(format!("the mapping {name:?} in {MAPPINGS_FILE_NAME}{}", where_(e))),
            None => {
                let names: Vec<&str> = self.mappings.keys().map(String::as_str).collect();
                Err(if names.is_empty() {
                    format!("there is no mapping {name:?}: {MAPPINGS_FILE_NAME} beside state.json defines none")
                } else {
                    format!(
                        "there is no mapping {name:?} in {MAPPINGS_FILE_NAME} (it defines {})",
                        names.join(", ")
                    )
                })
            }
        }
    }

    /// Problems of the file or of its mappings, for `check` (each named
    /// mapping is checked even when no entry names it yet).
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.problem.iter().cloned().collect();
        for (name, mapping) in &self.mappings {
            if let Err(e) = mapping {
                problems.push(format!("{MAPPINGS_FILE_NAME}: the mapping {name:?}{}", where_(e)));
            }
        }
        problems
    }

    /// How many named mappings the file defines.
    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }
}

/// `, key "fields": <problem>`, or `: <problem>` for a problem with the
/// mapping as a whole (a key it does not know, not an object).
fn where_(e: &MappingError) -> String {
    if e.field == super::FIELD_MAPPING {
        format!(": {}", e.problem)
    } else {
        format!(", key {:?}: {}", e.field, e.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_mappings_are_read_and_checked_one_by_one() {
        let named = NamedMappings::parse(
            br#"{"shop": {"fields": {"phone_number": "merge_fields.PHONE"}, "collection": "mc"},
                 "bad": {"fields": {"phone": "merge_fields.PHONE"}},
                 "odd": {"fields": {}, "colection": "x"},
                 "text": "nope"}"#,
        )
        .unwrap();
        let shop = named.get("shop").unwrap();
        assert_eq!(shop.collection.as_deref(), Some("mc"));
        assert_eq!(shop.name.as_deref(), Some("shop"));
        let bad = named.get("bad").unwrap_err();
        assert!(
            bad.contains("\"bad\"") && bad.contains("\"phone\" is not an Ometria contact field"),
            "{bad}"
        );
        assert!(named
            .get("odd")
            .unwrap_err()
            .contains("\"colection\" is not a key of a mapping"));
        assert!(named.get("text").unwrap_err().contains("must be an object"));
        let missing = named.get("shops").unwrap_err();
        assert!(
            missing.contains("no mapping \"shops\"") && missing.contains("bad, odd, shop, text"),
            "{missing}"
        );
        assert_eq!(named.problems().len(), 3);
    }

    #[test]
    fn a_file_that_does_not_parse_names_the_place() {
        let problem = NamedMappings::parse(b"{\"shop\": {\"fields\": }").unwrap_err();
        assert!(problem.contains("line 1, column"), "{problem}");
        assert!(NamedMappings::parse(b"[]").unwrap_err().contains("found an array"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NamedMappings::read(dir.path()), NamedMappings::default());
        std::fs::write(dir.path().join(MAPPINGS_FILE_NAME), "{").unwrap();
        let read = NamedMappings::read(dir.path());
        let e = read.get("shop").unwrap_err();
        assert!(e.contains("mappings.json is not valid JSON"), "{e}");
    }
}
