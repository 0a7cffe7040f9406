//! Members pages that are almost JSON: one member's text with a lone UTF-16
//! surrogate escape (`"\ud83d"`, what a system that cuts a string between
//! the two halves of an emoji writes), bytes that are not UTF-8, or raw
//! control characters inside a string. serde_json refuses such a page as a
//! whole, and since the server sends the same bytes again, retrying cannot
//! help: the list would be stuck on one member's name (issue 14).
//!
//! [`repair`] rewrites only those spots, the way lenient decoders do: a
//! lone surrogate escape and each byte that is not UTF-8 become U+FFFD, a
//! raw control character inside a string its `\u00XX` escape (which keeps
//! its value). Everything else is copied. No JSON library reads these
//! into Rust strings (which cannot hold lone surrogates), so this is done
//! here, and only for a page serde_json refused.

/// The page `body` with lone surrogate escapes, bytes that are not UTF-8
/// and raw control characters inside strings repaired, or `None` if there
/// was nothing of the kind (the page is broken in some other way).
pub fn repair(body: &[u8]) -> Option<Vec<u8>> {
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
        repair(body).map(|b| String::from_utf8(b).unwrap())
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
}
