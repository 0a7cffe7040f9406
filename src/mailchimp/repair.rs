//! Members pages that are almost JSON, or JSON serde's derived readers
//! refuse, which the server sends the same way on every retry: retrying
//! cannot help, and the list would be stuck on one member (issue 14).
//!
//! - One member's text with a lone UTF-16 surrogate escape (`"\ud83d"`,
//!   what a system that cuts a string between the two halves of an emoji
//!   writes), bytes that are not UTF-8, or raw control characters inside a
//!   string. [`repair`] rewrites only those spots, the way lenient decoders
//!   do: a lone surrogate escape and each byte that is not UTF-8 become
//!   U+FFFD, a raw control character inside a string its `\u00XX` escape
//!   (which keeps its value). No JSON library reads these into Rust
//!   strings (which cannot hold lone surrogates), so this is done here.
//! - An object that repeats a name (`"FNAME": "A", "FNAME": "B"`, a
//!   repeated `unique_email_id`, `merge_fields`, or `total_items` of the
//!   page), as a proxy rewriting JSON may leave it. RFC 8259 §4 leaves the
//!   meaning of repeated names open; JavaScript's `JSON.parse` (ECMA-262
//!   §25.5.1, `CreateDataProperty` in order) and Python's `json` keep the
//!   last value, and so does [`repair`]: it reads the page as a
//!   `serde_json::Value` (whose maps keep the last value inserted) and
//!   writes it out again, every name once.
//!
//! A UTF-8 byte-order mark before the page is not for this module:
//! [`super::MemberPage::parse`] ignores it, as RFC 8259 §8.1 allows.
//!
//! Only a page serde_json refused comes here: a page read as it came is
//! never rewritten.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A page [`repair`] made readable, and what it did to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The page's JSON text, repaired.
    pub body: Vec<u8>,
    pub repairs: Repairs,
}

/// What [`repair`] did to a page; nothing, for a page read as it came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// A lone surrogate escape or bytes that are not UTF-8 were read as
    /// U+FFFD, or a raw control character in a string was escaped.
    pub text: bool,
    /// The first name found repeated within one object: every repeated
    /// name was read with its last value.
    pub repeated_name: Option<String>,
}

/// The page `body` made readable: its text repaired (see the module doc),
/// then, if an object in it repeats a name, written out again with every
/// name once, holding its last value. A byte-order mark before it is
/// dropped. `None` if there was nothing of the kind to repair (the page
/// is broken in some other way: the caller's error stands).
pub fn repair(body: &[u8]) -> Option<Repaired> {
    let body = super::without_bom(body);
    let text = repair_text(body);
    let read = text.as_deref().unwrap_or(body);
    let collapsed = collapse_repeated_names(read);
    let repairs = Repairs {
        text: text.is_some(),
        repeated_name: collapsed.as_ref().map(|(_, name)| name.clone()),
    };
    let body = collapsed.map(|(body, _)| body).or(text)?;
    Some(Repaired { body, repairs })
}

/// `text` written out again with every name of every object once, holding
/// its last value, and the first name found repeated; `None` if no name
/// repeats or `text` is not JSON. Key order is kept (the first place of a
/// repeated name) and numbers as written (serde_json's `preserve_order` and
/// `arbitrary_precision`).
fn collapse_repeated_names(text: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut repeated = None;
    let mut reader = serde_json::Deserializer::from_slice(text);
    Walk(&mut repeated).deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    let name = repeated?;
    let value: serde_json::Value = serde_json::from_slice(text).ok()?;
    Some((serde_json::to_vec(&value).ok()?, name))
}

/// Walks a JSON document, noting the first name repeated within an object.
struct Walk<'a>(&'a mut Option<String>);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if self.0.is_none() && names.contains(&name) {
                *self.0 = Some(name);
            } else {
                names.insert(name);
            }
            map.next_value_seed(Walk(&mut *self.0))?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The page `body` with lone surrogate escapes, bytes that are not UTF-8
/// and raw control characters inside strings repaired, or `None` if there
/// was nothing of the kind.
fn repair_text(body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(body);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.char_indices().peekable();
    let mut in_string = false;
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '\\' if in_string => match surrogate_at(&text, at) {
                Some(unit) if (0xD800..0xDC00).contains(&unit) && low_surrogate_at(&text, at + 6) => {
                    // A pair: both escapes copied as they are.
                    out.push_str(&text[at..at + 12]);
                    skip(&mut chars, 11);
                }
                Some(_) => {
                    out.push_str("\\ufffd");
                    changed = true;
                    skip(&mut chars, 5);
                }
                None => {
                    // Any other escape: the backslash and the character it escapes.
                    out.push(c);
                    if let Some((_, next)) = chars.next() {
                        out.push(next);
                    }
                }
            },
            c if in_string && c < ' ' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
                changed = true;
            }
            c => out.push(c),
        }
    }
    changed.then(|| out.into_bytes())
}

/// The UTF-16 unit of a `\uXXXX` escape at `at` if it is a surrogate.
fn surrogate_at(text: &str, at: usize) -> Option<u32> {
    let escape = text.get(at..at + 6)?;
    let hex = escape.strip_prefix("\\u")?;
    let unit = u32::from_str_radix(hex, 16).ok()?;
    (0xD800..0xE000).contains(&unit).then_some(unit)
}

fn low_surrogate_at(text: &str, at: usize) -> bool {
    surrogate_at(text, at).is_some_and(|unit| unit >= 0xDC00)
}

fn skip(chars: &mut impl Iterator<Item = (usize, char)>, n: usize) {
    for _ in 0..n {
        chars.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repaired(body: &[u8]) -> Option<String> {
        repair(body).map(|r| String::from_utf8(r.body).unwrap())
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay() {
        let cases = [
            (r#"{"n":"\ud800"}"#, Some(r#"{"n":"\ufffd"}"#)),
            (r#"{"n":"x\udfffy"}"#, Some(r#"{"n":"x\ufffdy"}"#)),
            (r#"{"n":"\ude80\ud83d"}"#, Some(r#"{"n":"\ufffd\ufffd"}"#)),
            (r#"{"n":"\ud83d\ud83d\ude80"}"#, Some(r#"{"n":"\ufffd\ud83d\ude80"}"#)),
            (r#"{"n":"\ud83d\ude80"}"#, None),
            (r#"{"n":"\\ud800"}"#, None),
            (r#"{"n":"\\\ud800"}"#, Some(r#"{"n":"\\\ufffd"}"#)),
            (r#"{"n":"\u00e9\n\""}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(repaired(body.as_bytes()).as_deref(), want, "{body}");
        }
        let fixed = repaired(br#"{"members":[{"n":"Zo\ud83d"}],"total_items":1}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["members"][0]["n"], "Zo\u{fffd}");
    }

    #[test]
    fn bytes_that_are_not_utf8_and_raw_control_characters_are_repaired() {
        let fixed = repaired(b"{\"n\":\"caf\xe9\",\"m\":\"a\x00b\tc\"}").unwrap();
        assert_eq!(fixed, "{\"n\":\"caf\u{fffd}\",\"m\":\"a\\u0000b\\u0009c\"}");
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["m"], "a\u{0}b\tc");
        // Whitespace between tokens is not inside a string: left alone.
        assert_eq!(repaired(b"{\n\t\"n\": \"a\"\r\n}"), None);
        // A page broken in another way is not this module's to mend.
        assert_eq!(repaired(br#"{"members": [{"n": "a"#), None);
    }

    #[test]
    fn repeated_names_keep_their_last_value_in_their_first_place() {
        let cases = [
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#, "a"),
            (r#"{"b":1,"a":2,"b":3}"#, r#"{"b":3,"a":2}"#, "b"),
            // An escaped name is the same name.
            (r#"{"FNAME":"A","\u0046NAME":"B"}"#, r#"{"FNAME":"B"}"#, "FNAME"),
            // A whole object repeated: the last one, as it is.
            (
                r#"{"m":{"FNAME":"Old","LNAME":"Old"},"m":{"FNAME":"New"}}"#,
                r#"{"m":{"FNAME":"New"}}"#,
                "m",
            ),
            // Deep in arrays; numbers kept as written; the first name found reported.
            (
                r#"{"members":[{"x":1.50,"x":12345678901234567890123,"y":"a","y":"b"}],"total_items":1}"#,
                r#"{"members":[{"x":12345678901234567890123,"y":"b"}],"total_items":1}"#,
                "x",
            ),
            // At the page's level.
            (
                r#"{"total_items":99,"members":[],"total_items":1}"#,
                r#"{"total_items":1,"members":[]}"#,
                "total_items",
            ),
            // The same name in two objects is not repeated; in one, it is.
            (
                r#"[{"a":1},{"a":2},{"c":[{"a":3,"a":4}]}]"#,
                r#"[{"a":1},{"a":2},{"c":[{"a":4}]}]"#,
                "a",
            ),
        ];
        for (body, want, name) in cases {
            let fixed = repair(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
            assert_eq!(String::from_utf8(fixed.body).unwrap(), want, "{body}");
            assert_eq!(
                fixed.repairs,
                Repairs {
                    text: false,
                    repeated_name: Some(name.into())
                },
                "{body}"
            );
        }
        // Names that differ, or a page that is not JSON: nothing to repair.
        assert_eq!(repair(br#"{"a":1,"A":2,"a ":3}"#), None);
        assert_eq!(repair(br#"{"a":1,"a":2"#), None);
    }

    #[test]
    fn text_and_repeated_names_are_repaired_together_after_a_byte_order_mark() {
        let fixed = repair(b"\xEF\xBB\xBF{\"n\":\"Zo\\ud83d\",\"e\":\"caf\xe9\",\"n\":\"Ann\xe9\"}").unwrap();
        assert_eq!(
            String::from_utf8(fixed.body).unwrap(),
            "{\"n\":\"Ann\u{fffd}\",\"e\":\"caf\u{fffd}\"}"
        );
        assert_eq!(
            fixed.repairs,
            Repairs {
                text: true,
                repeated_name: Some("n".into())
            }
        );
        // Text alone: no rewriting beyond its spots.
        let fixed = repair(br#"{"n":"\ud800","m":1.50}"#).unwrap();
        assert_eq!(String::from_utf8(fixed.body).unwrap(), r#"{"n":"\ufffd","m":1.50}"#);
        assert_eq!(fixed.repairs.repeated_name, None);
        // A byte-order mark alone is not this module's to mend (parse ignores it).
        assert_eq!(repair(b"\xEF\xBB\xBF{\"a\":1}"), None);
    }
}
