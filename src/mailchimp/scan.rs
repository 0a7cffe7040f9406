//! A reader for members pages as Mailchimp writes them. It reads a page in
//! 60–75 % of the time serde_json takes (whose reading was half of the
//! importer's instructions), into the same [`MemberPage`], borrowing every
//! string that holds no escape sequence and decoding those that do.
//!
//! It answers only when it is sure: anything else — a number where text
//! is expected, an escaped key, a duplicate field, an escape JSON does not
//! have, a syntax error, a truncated body — gives `None`, and the caller
//! reads the page with serde_json, which decides and names the error. So
//! it never accepts what serde_json refuses, and what it returns is what
//! serde_json would return (a property test holds it to that).

use std::borrow::Cow;

use super::{Member, MemberPage, MergeFields};

/// Containers nested deeper than this inside a skipped value go to
/// serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 32;

/// Reads `text` if it is sure to read it as serde_json would.
pub fn read(text: &str) -> Option<MemberPage<'_>> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let page = scanner.page()?;
    scanner.whitespace();
    (scanner.pos == scanner.bytes.len()).then_some(page)
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH_BITS: u64 = ONES * 0x80;

/// Where the first quote, backslash or control character of `bytes` is,
/// eight bytes at a time.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    // The high bit of each byte of `word` below `n` (≤ 128) — exact for the
    // lowest such byte; a borrow may mark bytes above it too.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS;
    let mut at = 0;
    while let Some(&chunk) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
        let word = u64::from_le_bytes(chunk);
        let found =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    Some(at + rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.whitespace();
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.whitespace();
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// Where the string that starts here begins, and where its end or its
    /// first escape sequence (or a control character) is.
    #[inline]
    fn string_start(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.pos;
        Some((start, start + special_byte(self.bytes.get(start..)?)?))
    }

    /// A key: escape sequences in keys (which Mailchimp does not write) are
    /// left to serde_json.
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        let (start, end) = self.string_start()?;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.pos = end + 1;
        // Both ends are next to an ASCII quote: character boundaries.
        self.text.get(start..end)
    }

    /// A string: borrowed from the text, or decoded if it holds escape
    /// sequences.
    #[inline]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (start, end) = self.string_start()?;
        match self.bytes[end] {
            b'"' => {
                self.pos = end + 1;
                self.text.get(start..end).map(Cow::Borrowed)
            }
            b'\\' => self.decode(start, end).map(Cow::Owned),
            _ => None, // a control character
        }
    }

    /// The rest of a string from its first escape sequence at `at`.
    fn decode(&mut self, start: usize, mut at: usize) -> Option<String> {
        let mut text = String::with_capacity(at - start + 16);
        text.push_str(self.text.get(start..at)?);
        loop {
            let escaped = *self.bytes.get(at + 1)?;
            at += 2;
            let decoded = match escaped {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let unit = self.hex(at)?;
                    at += 4;
                    let code = match unit {
                        // A surrogate pair, or serde_json's error.
                        0xd800..=0xdbff => {
                            let low = (self.bytes.get(at..at + 2)? == b"\\u")
                                .then(|| self.hex(at + 2))
                                .flatten()?;
                            if !(0xdc00..=0xdfff).contains(&low) {
                                return None;
                            }
                            at += 6;
                            0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                        }
                        0xdc00..=0xdfff => return None,
                        _ => unit,
                    };
                    char::from_u32(code)?
                }
                _ => return None,
            };
            text.push(decoded);
            let run = special_byte(self.bytes.get(at..)?)?;
            text.push_str(self.text.get(at..at + run)?);
            at += run;
            match self.bytes[at] {
                b'"' => {
                    self.pos = at + 1;
                    return Some(text);
                }
                b'\\' => {}
                _ => return None,
            }
        }
    }

    /// The four hexadecimal digits at `at`.
    fn hex(&self, at: usize) -> Option<u32> {
        let digits = self.text.get(at..at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None; // u32::from_str_radix would take a sign
        }
        u32::from_str_radix(digits, 16).ok()
    }

    /// A number, by JSON's grammar: its text.
    fn number(&mut self) -> Option<&'a str> {
        self.whitespace();
        let start = self.pos;
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match *self.bytes.get(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            self.digits()?;
        }
        self.text.get(start..self.pos)
    }

    /// One digit or more.
    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// An object, each value read by `field` given its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.items(b'{', b'}', |s| {
            let key = s.key()?;
            s.eat(b':')?;
            field(s, key)
        })
    }

    /// An array, each element read by `element`.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(b'[', b']', element)
    }

    /// Items between `open` and `close`, separated by commas.
    fn items(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.pos += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                byte if byte == close => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any value, checked and passed over; `depth` containers around it.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' if depth < MAX_DEPTH => self.object(|s, _| s.skip(depth + 1)),
            b'[' if depth < MAX_DEPTH => self.array(|s| s.skip(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    /// A text field as `lenient_text` reads it; numbers (their text) are
    /// left to serde_json.
    #[inline]
    fn text(&mut self, depth: u32) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'"' => Some(Some(self.string()?)),
            b'n' | b't' | b'f' | b'{' | b'[' => self.skip(depth).map(|()| None),
            _ => None,
        }
    }

    /// `merge_fields` as `lenient_merge_fields` reads it.
    fn merge_fields(&mut self) -> Option<MergeFields<'a>> {
        let mut fields = MergeFields::default();
        match self.peek()? {
            b'{' => {
                let (mut fname, mut lname) = (false, false);
                self.object(|s, key| {
                    let (seen, value) = match key {
                        "FNAME" => (&mut fname, &mut fields.FNAME),
                        "LNAME" => (&mut lname, &mut fields.LNAME),
                        _ => return s.skip(3),
                    };
                    // A field twice is an error serde_json names.
                    if std::mem::replace(seen, true) {
                        return None;
                    }
                    *value = s.text(3)?;
                    Some(())
                })?;
            }
            b'"' | b'n' | b't' | b'f' | b'[' => self.skip(2)?,
            _ => return None,
        }
        Some(fields)
    }

    fn member(&mut self) -> Option<Member<'a>> {
        let mut member = Member::default();
        let mut seen = 0u8;
        self.object(|s, key| {
            let bit = match key {
                "unique_email_id" => 1,
                "email_address" => 2,
                "status" => 4,
                "merge_fields" => 8,
                "timestamp_opt" => 16,
                "last_changed" => 32,
                _ => return s.skip(2),
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            let text = match bit {
                1 => &mut member.unique_email_id,
                2 => &mut member.email_address,
                4 => &mut member.status,
                16 => &mut member.timestamp_opt,
                32 => &mut member.last_changed,
                _ => {
                    member.merge_fields = s.merge_fields()?;
                    return Some(());
                }
            };
            *text = s.text(2)?;
            Some(())
        })?;
        Some(member)
    }

    fn page(&mut self) -> Option<MemberPage<'a>> {
        let (mut members, mut total_items) = (None, None);
        self.object(|s, key| match key {
            "members" if members.is_none() => {
                let mut read = Vec::new();
                s.array(|s| {
                    read.push(s.member()?);
                    Some(())
                })?;
                members = Some(read);
                Some(())
            }
            "total_items" if total_items.is_none() => {
                total_items = Some(s.number()?.parse::<u64>().ok()?);
                Some(())
            }
            "members" | "total_items" => None,
            _ => s.skip(1),
        })?;
        Some(MemberPage {
            members: members.unwrap_or_default(),
            total_items: total_items?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the importer does with a page: serde_json's reading.
    fn by_serde(text: &str) -> Result<MemberPage<'_>, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn a_page_as_mailchimp_writes_it_is_read_here_as_serde_json_reads_it() {
        let text = r#"{"members":[{"email_address":"zoe@example.org","last_changed":"2026-10-29T21:17:30+00:00","merge_fields":{"FNAME":"Zoë","LNAME":"李 🚀"},"status":"subscribed","timestamp_opt":"2026-10-28T21:17:30+00:00","unique_email_id":"0eebdcddb5"},{"email_address":"","merge_fields":{"FNAME":"","LNAME":null},"status":"archived","unique_email_id":"9fa4b000a8"},{"unique_email_id":"x"}],"total_items":1234}"#;
        let page = read(text).expect("read here");
        assert_eq!(page, by_serde(text).unwrap());
        assert_eq!(page.total_items, 1234);
        assert_eq!(page.members.len(), 3);
        assert_eq!(page.members[0].merge_fields.LNAME.as_deref(), Some("李 🚀"));
        assert_eq!(page.members[1].merge_fields.LNAME, None);
        assert!(matches!(page.members[0].email_address, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn an_unprojected_pretty_printed_page_is_read_here_too() {
        let text = r#"
        {
          "members": [
            {
              "id": "852aaa9532cb36adfb5e9fef7a4206a9",
              "email_address": "a@example.org",
              "unique_email_id": "fab20fa03d",
              "status": "unsubscribed",
              "merge_fields": {"FNAME": "Ann", "LNAME": "Lee", "ADDRESS": {"addr1": "1 Road", "zip": 12345}, "BIRTHDAY": ""},
              "stats": {"avg_open_rate": 0.5, "avg_click_rate": -1.25e-3, "ecommerce_data": {"total_revenue": 0}},
              "vip": false, "marketing_permissions": [], "tags": [{"id": 1, "name": "x"}],
              "last_note": null, "_links": [{"rel": "self", "href": "https://us9.api.mailchimp.com/3.0/lists/1/members/8"}]
            }
          ],
          "list_id": "1a2d7ebf82",
          "total_items": 1,
          "_links": []
        }
        "#;
        let page = read(text).expect("read here");
        assert_eq!(page, by_serde(text).unwrap());
        assert_eq!(page.members[0].merge_fields.FNAME.as_deref(), Some("Ann"));
    }

    #[test]
    fn escape_sequences_are_decoded_as_serde_json_decodes_them() {
        let text = r#"{"members":[{"email_address":"a\u0040b.org","merge_fields":{"FNAME":"Zo\u00EB \ud83d\ude80","LNAME":"O\"Brien \\ \/ \b\f\n\r\t"},"status":"subscribed"}],"total_items":1}"#;
        let page = read(text).expect("read here");
        assert_eq!(page, by_serde(text).unwrap());
        let member = &page.members[0];
        assert_eq!(member.email_address.as_deref(), Some("a@b.org"));
        assert_eq!(member.merge_fields.FNAME.as_deref(), Some("Zoë 🚀"));
        assert_eq!(
            member.merge_fields.LNAME.as_deref(),
            Some("O\"Brien \\ / \u{8}\u{c}\n\r\t")
        );
        assert_eq!(member.status.as_deref(), Some("subscribed"));
        assert!(matches!(member.email_address, Some(Cow::Owned(_))));
    }

    #[test]
    fn what_it_is_not_sure_of_is_left_to_serde_json() {
        for text in [
            // Escapes JSON does not have, and lone surrogates: serde_json's errors.
            r#"{"members":[{"status":"\x41"}],"total_items":1}"#,
            r#"{"members":[{"status":"\u12"}],"total_items":1}"#,
            r#"{"members":[{"status":"\u+123"}],"total_items":1}"#,
            r#"{"members":[{"status":"\ud83d"}],"total_items":1}"#,
            r#"{"members":[{"status":"\ud83d\u0041"}],"total_items":1}"#,
            r#"{"members":[{"status":"\ude80"}],"total_items":1}"#,
            // An escaped key (serde_json decodes it).
            r#"{"members":[{"st\u0061tus":"subscribed"}],"total_items":1}"#,
            // Text given as a number: serde_json has its text.
            r#"{"members":[{"unique_email_id":12345}],"total_items":1}"#,
            // A field twice: serde_json's error.
            r#"{"members":[{"status":"a","status":"b"}],"total_items":1}"#,
            r#"{"members":[{"merge_fields":{"FNAME":"a","FNAME":"b"}}],"total_items":1}"#,
            r#"{"members":[],"members":[],"total_items":1}"#,
            // A member that is not an object; a total that is not a count.
            r#"{"members":[["a"]],"total_items":1}"#,
            r#"{"members":[],"total_items":1.0}"#,
            r#"{"members":[],"total_items":-1}"#,
            r#"{"members":[],"total_items":18446744073709551616}"#,
            // Missing total, truncated, trailing bytes, bad syntax.
            r#"{"members":[]}"#,
            r#"{"members":[{"unique_email_id":"a"#,
            r#"{"members":[],"total_items":1} x"#,
            r#"{"members":[],"total_items":01}"#,
            r#"{"members":[,],"total_items":1}"#,
            r#"{"members":[],"total_items":1,}"#,
            "{\"members\":[{\"status\":\"a\tb\"}],\"total_items\":1}",
        ] {
            assert_eq!(read(text), None, "{text}");
        }
    }

    /// A JSON text, written token by token so that it may be wrong.
    #[derive(Clone, Debug)]
    enum Json {
        Raw(&'static str),
        /// Written as is, escaped by serde_json, or escaped to ASCII.
        Text(String, Escape),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        fn write(&self, spaces: &mut impl Iterator<Item = &'static str>, out: &mut String) {
            out.push_str(spaces.next().unwrap_or(""));
            match self {
                Json::Raw(raw) => out.push_str(raw),
                // Escaped as JSON, or quoted as is (control characters and all).
                Json::Text(text, Escape::None) => out.push_str(&format!("\"{text}\"")),
                Json::Text(text, Escape::Serde) => out.push_str(&serde_json::to_string(text).unwrap()),
                Json::Text(text, Escape::Ascii) => {
                    // As Python's json.dumps does by default.
                    out.push('"');
                    for c in text.chars() {
                        match c {
                            '"' => out.push_str("\\\""),
                            '\\' => out.push_str("\\\\"),
                            ' '..='~' => out.push(c),
                            _ => {
                                let mut units = [0u16; 2];
                                for unit in c.encode_utf16(&mut units) {
                                    out.push_str(&format!("\\u{unit:04x}"));
                                }
                            }
                        }
                    }
                    out.push('"');
                }
                Json::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        item.write(spaces, out);
                    }
                    out.push(']');
                }
                Json::Object(fields) => {
                    out.push('{');
                    for (i, (key, value)) in fields.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!(
                            "{}\"{key}\"{}:",
                            spaces.next().unwrap_or(""),
                            spaces.next().unwrap_or("")
                        ));
                        value.write(spaces, out);
                    }
                    out.push_str(spaces.next().unwrap_or(""));
                    out.push('}');
                }
            }
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Escape {
        None,
        Serde,
        Ascii,
    }

    /// Text, escaped right when `plain`.
    fn text(plain: bool) -> impl Strategy<Value = Json> {
        let chars = "[a-z0-9 .@:+éü李🚀'\"\\\\/\u{0}\u{1}\u{1f}\u{7f}\n-]{0,12}";
        let plain_chars = "[a-z0-9 .@:+éü李🚀'/-]{0,12}";
        let escapes = if plain {
            vec![Escape::Serde, Escape::Ascii]
        } else {
            vec![Escape::None, Escape::Serde, Escape::Ascii]
        };
        let unescaped = (plain_chars, Just(Escape::None)).boxed();
        let escaped = (chars, prop::sample::select(escapes)).boxed();
        prop_oneof![unescaped, escaped].prop_map(|(text, escape)| Json::Text(text, escape))
    }

    fn scalar(plain: bool) -> impl Strategy<Value = Json> {
        let numbers = if plain {
            vec!["0", "1"]
        } else {
            vec![
                "0",
                "-0",
                "12",
                "1.5",
                "-3e2",
                "1E+2",
                "01",
                "1.",
                "-",
                "18446744073709551615",
            ]
        };
        let literals = if plain {
            vec!["null", "true", "false"]
        } else {
            vec!["null", "true", "false", "nul", "tru", "[", "}", ""]
        };
        prop_oneof![
            3 => text(plain),
            1 => prop::sample::select(numbers).prop_map(Json::Raw),
            1 => prop::sample::select(literals).prop_map(Json::Raw),
        ]
    }

    fn value(plain: bool) -> impl Strategy<Value = Json> {
        scalar(plain).prop_recursive(3, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::vec(("[a-zA-Z_]{1,8}", inner), 0..4).prop_map(Json::Object),
            ]
        })
    }

    /// A text field's value: mostly text when `plain`.
    fn field_value(plain: bool) -> impl Strategy<Value = Json> {
        if plain {
            prop_oneof![4 => text(true), 1 => Just(Json::Raw("null"))].boxed()
        } else {
            prop_oneof![3 => text(false), 1 => value(false)].boxed()
        }
    }

    fn merge_fields(plain: bool) -> impl Strategy<Value = Json> {
        let keys = if plain {
            vec!["FNAME", "LNAME", "ADDRESS"]
        } else {
            vec!["FNAME", "LNAME", "ADDRESS", "FNAME"]
        };
        let fields =
            prop::collection::vec((prop::sample::select(keys), field_value(plain)), 0..4).prop_map(move |fields| {
                // Plain: each field once.
                let mut seen = vec![];
                let fields = fields.into_iter().filter(|(k, _)| {
                    !plain
                        || !seen.contains(k) && {
                            seen.push(*k);
                            true
                        }
                });
                Json::Object(fields.map(|(k, v)| (k.to_string(), v)).collect())
            });
        if plain {
            fields.boxed()
        } else {
            prop_oneof![3 => fields, 1 => value(false)].boxed()
        }
    }

    const MEMBER_KEYS: [&str; 8] = [
        "unique_email_id",
        "email_address",
        "status",
        "timestamp_opt",
        "last_changed",
        "merge_fields",
        "stats",
        "id",
    ];

    fn member(plain: bool) -> impl Strategy<Value = Json> {
        let field = (
            0..MEMBER_KEYS.len(),
            field_value(plain),
            merge_fields(plain),
            value(plain),
        )
            .prop_map(|(k, text, merge, other)| {
                let key = MEMBER_KEYS[k];
                let value = match key {
                    "merge_fields" => merge,
                    "stats" | "id" => other,
                    _ => text,
                };
                (key.to_string(), value)
            });
        prop::collection::vec(field, 0..9).prop_map(move |fields| {
            let mut seen: Vec<String> = vec![];
            Json::Object(
                fields
                    .into_iter()
                    .filter(|(k, _)| {
                        let again = seen.contains(k);
                        seen.push(k.clone());
                        !plain || !again
                    })
                    .collect(),
            )
        })
    }

    fn page(plain: bool) -> impl Strategy<Value = Json> {
        let members = prop::collection::vec(member(plain), 0..5).prop_map(Json::Array);
        let total = if plain {
            vec!["0", "7", "18446744073709551615"]
        } else {
            vec!["0", "7", "-1", "1.0", "1e3", "18446744073709551616", "null", "\"7\""]
        };
        // Plain pages have each field once.
        let shapes = if plain { 0..3u8 } else { 0..4u8 };
        (members, prop::sample::select(total), value(plain), shapes).prop_map(|(members, total, other, shape)| {
            let mut fields = vec![
                ("members".to_string(), members),
                ("total_items".to_string(), Json::Raw(total)),
            ];
            match shape {
                0 => {}
                1 => fields.reverse(),
                2 => fields.insert(1, ("_links".to_string(), other)),
                _ => fields.push(("members".to_string(), Json::Array(vec![]))),
            }
            Json::Object(fields)
        })
    }

    fn spaces() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(vec!["", "", "", " ", "\n  ", "\t", "\r\n"]), 0..64)
    }

    fn render(json: &Json, spaces: Vec<&'static str>) -> String {
        let mut out = String::new();
        json.write(&mut spaces.into_iter().cycle(), &mut out);
        out
    }

    /// The borrowed text the encoder copies without a scan (`ParsedFrom`)
    /// must need no escaping (decoded text it scans).
    fn borrowed_text_is_plain(page: &MemberPage) -> bool {
        let texts = page.members.iter().flat_map(|m| {
            [
                &m.unique_email_id,
                &m.email_address,
                &m.status,
                &m.timestamp_opt,
                &m.last_changed,
                &m.merge_fields.FNAME,
                &m.merge_fields.LNAME,
            ]
        });
        texts.flatten().all(|text| match text {
            Cow::Borrowed(text) => !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
            Cow::Owned(_) => true,
        })
    }

    /// If the page is read here, serde_json reads it too, and the same.
    fn read_as_serde_json_reads(text: &str) -> Result<(), TestCaseError> {
        if let Some(page) = read(text) {
            let expected = by_serde(text);
            prop_assert!(
                expected.is_ok(),
                "read here, refused by serde_json ({:?}): {text}",
                expected.err()
            );
            prop_assert_eq!(&page, &expected.unwrap());
            prop_assert!(borrowed_text_is_plain(&page));
        }
        Ok(())
    }

    /// The start of the character at byte `at` (or `at` itself at the end).
    fn char_start(text: &str, at: usize) -> usize {
        (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn special_byte_is_found_as_a_byte_by_byte_search_finds_it(bytes in prop::collection::vec(prop::sample::select(vec![b'a', b' ', b'"', b'\\', 0, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff]), 0..40)) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(special_byte(&bytes), naive);
        }

        /// Whatever the text — odd values, escapes, duplicates, bad syntax,
        /// cut anywhere — what is read here is what serde_json reads.
        #[test]
        fn never_other_than_serde_json(json in page(false), spaces in spaces(), cut in any::<prop::sample::Index>(), cutting in any::<bool>()) {
            let mut text = render(&json, spaces);
            if cutting {
                let at = cut.index(text.len() + 1);
                text.truncate(char_start(&text, at));
            }
            read_as_serde_json_reads(&text)?;
        }

        /// A page read here, with a few odd bytes put in anywhere: what is
        /// read here is still what serde_json reads.
        #[test]
        fn odd_bytes_in_a_page_read_here(json in page(true), spaces in spaces(), odd in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![
            "0", "01", "1.", "-", ".5", "e5", "E-", "-0", "\\", "\\n", "\"", ",", ":", "]", "}", "{", "[", "\u{1}", "\u{7f}", "n", "nul", "true", "é", "\"k\":1,", "\"x\"", "\\u00e9", "\\ud800", "\\udc00", "\\u12", "\\x", "\\/",
        ]), any::<bool>()), 1..3)) {
            let mut text = render(&json, spaces);
            for (at, bytes, next_to_a_value) in odd {
                let at = at.index(text.len() + 1);
                let at = if next_to_a_value {
                    // Where a value starts or ends, most of the time.
                    let edge = |i: usize| {
                        let after = i > 0 && b":,[{".contains(&text.as_bytes()[i - 1]);
                        let before = b",]}".contains(&text.as_bytes()[i]);
                        after || before
                    };
                    (at..text.len()).find(|&i| edge(i)).unwrap_or(0)
                } else {
                    char_start(&text, at)
                };
                text.insert_str(at, bytes);
            }
            read_as_serde_json_reads(&text)?;
        }

        /// Pages whose text fields hold text (escaped or not) and whose
        /// fields are each there once are all read here.
        #[test]
        fn plain_pages_are_read_here(json in page(true), spaces in spaces()) {
            let text = render(&json, spaces);
            let page = read(&text);
            prop_assert!(page.is_some(), "not read here: {text}");
            prop_assert_eq!(page.unwrap(), by_serde(&text).unwrap());
        }
    }
}
