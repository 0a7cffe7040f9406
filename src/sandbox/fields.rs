//! The typed profile of a generated member (issue 17): merge fields of
//! every Mailchimp type with their real empty forms, tags, interests,
//! marketing permissions, location and VIP flag, and the list's
//! merge-field definitions (`GET /lists/{id}/merge-fields`).
//!
//! Nothing here is stored per member: every value is drawn on demand from
//! the member's `serial` and `variant` (a counter a [`Mutation::Change`]
//! bumps), so a list of a million members costs no more memory than
//! before, and a changed member's mapped fields change with it. The
//! values are typed (a phone number is its country and national digits,
//! an address its parts), so the verifier can work out what Ometria must
//! hold from what was drawn rather than from the text Mailchimp shows.
//!
//! [`Mutation::Change`]: super::audience::Mutation::Change

use chrono::{Datelike, NaiveDate};
use serde_json::{json, Map, Value};

use super::audience::Member;

/// A country the sandbox's members live in, with what it takes to write
/// their phone numbers, addresses and locations.
#[derive(Debug, PartialEq)]
pub struct Country {
    /// ISO 3166-1 alpha-2, as Mailchimp writes `ADDRESS.country` and
    /// `location.country_code`.
    pub alpha2: &'static str,
    /// ISO 3166-1 alpha-3.
    pub alpha3: &'static str,
    /// The English short name.
    pub name: &'static str,
    /// The E.164 country calling code, digits only.
    pub calling_code: &'static str,
    /// How many digits its national significant numbers have.
    pub national_digits: usize,
    pub city: &'static str,
    /// `""` where addresses carry no state.
    pub state: &'static str,
    pub zip: &'static str,
    /// An IANA time zone of the country.
    pub timezone: &'static str,
    pub region: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub gmtoff: i32,
    pub dstoff: i32,
}

/// Every country members are drawn from.
pub static COUNTRIES: [Country; 9] = [
    country(
        "GB",
        "GBR",
        "United Kingdom",
        "44",
        10,
        "London",
        "",
        "SW1A 1AA",
        "Europe/London",
        "ENG",
        51.5074,
        -0.1278,
        0,
        1,
    ),
    country(
        "US",
        "USA",
        "United States",
        "1",
        10,
        "New York",
        "NY",
        "10001",
        "America/New_York",
        "NY",
        40.7128,
        -74.006,
        -5,
        -4,
    ),
    country(
        "FR",
        "FRA",
        "France",
        "33",
        9,
        "Paris",
        "",
        "75008",
        "Europe/Paris",
        "IDF",
        48.8566,
        2.3522,
        1,
        2,
    ),
    country(
        "DE",
        "DEU",
        "Germany",
        "49",
        11,
        "Berlin",
        "",
        "10117",
        "Europe/Berlin",
        "BE",
        52.52,
        13.405,
        1,
        2,
    ),
    country(
        "JP",
        "JPN",
        "Japan",
        "81",
        9,
        "東京",
        "東京都",
        "100-0001",
        "Asia/Tokyo",
        "13",
        35.6762,
        139.6503,
        9,
        9,
    ),
    country(
        "BR",
        "BRA",
        "Brazil",
        "55",
        11,
        "São Paulo",
        "SP",
        "01310-100",
        "America/Sao_Paulo",
        "SP",
        -23.5505,
        -46.6333,
        -3,
        -3,
    ),
    country(
        "IN",
        "IND",
        "India",
        "91",
        10,
        "Mumbai",
        "MH",
        "400001",
        "Asia/Kolkata",
        "MH",
        19.076,
        72.8777,
        5,
        5,
    ),
    country(
        "AU",
        "AUS",
        "Australia",
        "61",
        9,
        "Sydney",
        "NSW",
        "2000",
        "Australia/Sydney",
        "NSW",
        -33.8688,
        151.2093,
        10,
        11,
    ),
    country(
        "CH",
        "CHE",
        "Switzerland",
        "41",
        9,
        "Zürich",
        "ZH",
        "8001",
        "Europe/Zurich",
        "ZH",
        47.3769,
        8.5417,
        1,
        2,
    ),
];

#[allow(clippy::too_many_arguments)]
const fn country(
    alpha2: &'static str,
    alpha3: &'static str,
    name: &'static str,
    calling_code: &'static str,
    national_digits: usize,
    city: &'static str,
    state: &'static str,
    zip: &'static str,
    timezone: &'static str,
    region: &'static str,
    latitude: f64,
    longitude: f64,
    gmtoff: i32,
    dstoff: i32,
) -> Country {
    Country {
        alpha2,
        alpha3,
        name,
        calling_code,
        national_digits,
        city,
        state,
        zip,
        timezone,
        region,
        latitude,
        longitude,
        gmtoff,
        dstoff,
    }
}

/// How an international number is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneStyle {
    /// `+44 20 7946 0123`
    Spaced,
    /// `0044 20 7946 0123`
    DoubleZero,
    /// `+44-20-7946-0123`
    Dashes,
    /// `+44.20.7946.0123`
    Dots,
    /// `+44 (20) 7946-0123`
    AreaInParens,
    /// `+44 20/7946 0123`
    Slash,
}

/// The `PHONE` merge field (type `phone`).
#[derive(Clone, Debug, PartialEq)]
pub enum Phone {
    /// Unset: `""`.
    Empty,
    /// An international number: `+` (or `00`), the country's calling code
    /// and its national significant number (`national`, digits only).
    International {
        country: &'static Country,
        national: String,
        style: PhoneStyle,
    },
    /// An international number followed by an extension (`… ext. 12`):
    /// no E.164 number.
    WithExtension {
        country: &'static Country,
        national: String,
        extension: u16,
    },
    /// A US-format number without a country code: `(555) 123-4567`, or
    /// `555-123-4567` without `parens`; `digits` are its ten digits.
    UsLocal { digits: String, parens: bool },
}

impl Phone {
    /// The text Mailchimp holds.
    pub fn text(&self) -> String {
        fn groups(national: &str, area: usize) -> (&str, &str, &str) {
            let (a, rest) = national.split_at(area);
            let (b, c) = rest.split_at(rest.len() / 2);
            (a, b, c)
        }
        match self {
            Phone::Empty => String::new(),
            Phone::International {
                country,
                national,
                style,
            } => {
                let cc = country.calling_code;
                let (a, b, c) = groups(national, if cc == "1" { 3 } else { 2 });
                match style {
                    PhoneStyle::Spaced => format!("+{cc} {a} {b} {c}"),
                    PhoneStyle::DoubleZero => format!("00{cc} {a} {b} {c}"),
                    PhoneStyle::Dashes => format!("+{cc}-{a}-{b}-{c}"),
                    PhoneStyle::Dots => format!("+{cc}.{a}.{b}.{c}"),
                    PhoneStyle::AreaInParens => format!("+{cc} ({a}) {b}-{c}"),
                    PhoneStyle::Slash => format!("+{cc} {a}/{b} {c}"),
                }
            }
            Phone::WithExtension {
                country,
                national,
                extension,
            } => {
                let (a, b, c) = groups(national, 2);
                format!("+{} {a} {b} {c} ext. {extension}", country.calling_code)
            }
            Phone::UsLocal { digits, parens } => {
                let (a, rest) = digits.split_at(3);
                let (b, c) = rest.split_at(3);
                if *parens {
                    format!("({a}) {b}-{c}")
                } else {
                    format!("{a}-{b}-{c}")
                }
            }
        }
    }
}

/// A set `ADDRESS` merge field.
#[derive(Clone, Debug, PartialEq)]
pub struct Address {
    pub addr1: String,
    /// Often `""`.
    pub addr2: &'static str,
    pub city: &'static str,
    /// `""` in countries without states.
    pub state: &'static str,
    pub zip: &'static str,
    pub country: &'static Country,
}

impl Address {
    /// The parts by Mailchimp's names, in its order.
    pub fn parts(&self) -> [(&'static str, &str); 6] {
        [
            ("addr1", self.addr1.as_str()),
            ("addr2", self.addr2),
            ("city", self.city),
            ("state", self.state),
            ("zip", self.zip),
            ("country", self.country.alpha2),
        ]
    }
}

/// The `ADDRESS` merge field (type `address`).
#[derive(Clone, Debug, PartialEq)]
pub enum AddressField {
    /// Never set: `""`, as Mailchimp returns it.
    Unset,
    /// An address object whose parts are all `""` (cleared in a form).
    Blank,
    Set(Address),
}

/// The `LOYALTY` merge field (type `number`): `whole` and hundredths, as
/// Mailchimp writes the number (`42`, `12.5`, `7.25`, `-3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loyalty {
    pub whole: i64,
    pub hundredths: u8,
}

impl Loyalty {
    /// The number's JSON text.
    pub fn text(&self) -> String {
        let (w, h) = (self.whole, self.hundredths);
        match h {
            0 => format!("{w}"),
            h if h % 10 == 0 => format!("{w}.{}", h / 10),
            h => format!("{w}.{h:02}"),
        }
    }

    /// The JSON number, written exactly as [`Loyalty::text`].
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.text()).expect("a JSON number")
    }
}

/// A tag on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub id: u32,
    pub name: &'static str,
}

/// Every tag members are drawn with.
pub const TAGS: [Tag; 6] = [
    Tag {
        id: 101,
        name: "Customer",
    },
    Tag {
        id: 102,
        name: "VIP 🌟",
    },
    Tag {
        id: 103,
        name: "Newsletter",
    },
    Tag {
        id: 104,
        name: "Black Friday 2023",
    },
    Tag {
        id: 105,
        name: "Wholesale",
    },
    Tag {
        id: 106,
        name: "Überkunde",
    },
];

/// One of a member's GDPR marketing permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub id: &'static str,
    pub text: &'static str,
    pub enabled: bool,
}

/// The list's marketing permissions: id and text.
pub const PERMISSIONS: [(&str, &str); 3] = [
    ("a1b2c3d4e5", "Email"),
    ("f6a7b8c9d0", "Direct Mail"),
    ("0e1d2c3b4a", "Customized Online Advertising"),
];

/// Where Mailchimp places a member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Location {
    /// Mailchimp's empty form: zeros and `""`.
    Unknown,
    In(&'static Country),
}

impl Location {
    /// The `location` object Mailchimp returns.
    pub fn to_value(self) -> Value {
        match self {
            Location::Unknown => json!({"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0,
                                        "country_code": "", "timezone": "", "region": ""}),
            Location::In(c) => json!({"latitude": c.latitude, "longitude": c.longitude, "gmtoff": c.gmtoff,
                                      "dstoff": c.dstoff, "country_code": c.alpha2, "timezone": c.timezone,
                                      "region": c.region}),
        }
    }
}

/// The dropdown `PLAN`'s choices.
pub const PLANS: [&str; 3] = ["Free", "Pro", "Business"];
/// The radio `SIZE`'s choices.
pub const SIZES: [&str; 4] = ["S", "M", "L", "XL"];
const ZIPS: [&str; 10] = [
    "SW1A 1AA",
    "02139",
    "75008",
    "10117",
    "100-0001",
    "01310-100",
    "400001",
    "2000",
    "8001",
    "90210-1234",
];
const STREETS: [&str; 6] = [
    "High Street",
    "Rue de Rivoli",
    "Main St",
    "Unter den Linden",
    "Bahnhofstrasse",
    "Rua Augusta",
];
const SECOND_LINES: [&str; 5] = ["", "", "Flat 3", "Apt 12B", "2nd floor"];

/// One merge field of the list: tag, name, Mailchimp type and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeFieldDef {
    pub tag: &'static str,
    pub name: &'static str,
    /// Mailchimp's type: `text`, `number`, `address`, `phone`, `date`,
    /// `birthday`, `zip`, `url`, `dropdown` or `radio`.
    pub kind: &'static str,
}

/// Every merge field of every generated list, in `merge_id` order; a
/// member's `merge_fields` holds each of them, set or in its empty form.
pub const MERGE_FIELDS: [MergeFieldDef; 11] = [
    def("FNAME", "First Name", "text"),
    def("LNAME", "Last Name", "text"),
    def("ADDRESS", "Address", "address"),
    def("PHONE", "Phone Number", "phone"),
    def("BIRTHDAY", "Birthday", "birthday"),
    def("JOINED", "Joined", "date"),
    def("LOYALTY", "Loyalty Points", "number"),
    def("WEBSITE", "Website", "url"),
    def("ZIP", "Zip Code", "zip"),
    def("PLAN", "Plan", "dropdown"),
    def("SIZE", "Shirt Size", "radio"),
];

const fn def(tag: &'static str, name: &'static str, kind: &'static str) -> MergeFieldDef {
    MergeFieldDef { tag, name, kind }
}

impl MergeFieldDef {
    /// Mailchimp's `options` for the field's type.
    pub fn options(&self) -> Value {
        match self.kind {
            "text" => json!({"size": 25}),
            "address" => json!({"default_country": 164}),
            "phone" => json!({"phone_format": "none"}),
            "date" => json!({"date_format": "YYYY-MM-DD"}),
            "birthday" => json!({"date_format": "MM/DD"}),
            "dropdown" => json!({"choices": PLANS}),
            "radio" => json!({"choices": SIZES}),
            _ => json!({}),
        }
    }

    /// The definition as `GET /lists/{list_id}/merge-fields` returns it.
    pub fn to_value(&self, list_id: &str) -> Value {
        let merge_id = MERGE_FIELDS.iter().position(|d| d.tag == self.tag).unwrap_or(0) + 1;
        json!({
            "merge_id": merge_id,
            "tag": self.tag,
            "name": self.name,
            "type": self.kind,
            "required": false,
            "default_value": "",
            "public": true,
            "display_order": merge_id + 1,
            "options": self.options(),
            "help_text": "",
            "list_id": list_id,
        })
    }
}

/// SplitMix64's finaliser: a well-mixed word from any.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws for one field of one member.
mod field {
    pub const PHONE: u64 = 1;
    pub const ADDRESS: u64 = 2;
    pub const BIRTHDAY: u64 = 3;
    pub const JOINED: u64 = 4;
    pub const LOYALTY: u64 = 5;
    pub const WEBSITE: u64 = 6;
    pub const ZIP: u64 = 7;
    pub const PLAN: u64 = 8;
    pub const SIZE: u64 = 9;
    pub const TAGS: u64 = 10;
    pub const PERMISSIONS: u64 = 11;
    pub const LOCATION: u64 = 12;
    pub const VIP: u64 = 13;
}

fn digits(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|i| char::from(b'0' + if i == 0 { rng.u8(1..=9) } else { rng.u8(0..=9) }))
        .collect()
}

impl Member {
    /// The dice for `field` of this member as it is now.
    fn dice(&self, field: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(mix(mix(self.serial ^ field.rotate_left(40)) ^ u64::from(self.variant)))
    }

    /// `PHONE`: mostly international numbers written every way people do,
    /// some US-format numbers without a country code, some with an
    /// extension, some unset.
    pub fn phone(&self) -> Phone {
        let mut rng = self.dice(field::PHONE);
        let roll = rng.u8(0..100);
        let country = &COUNTRIES[rng.usize(0..COUNTRIES.len())];
        let national = digits(&mut rng, country.national_digits);
        match roll {
            0..=14 => Phone::Empty,
            15..=24 => Phone::UsLocal {
                digits: format!("555{}", digits(&mut rng, 7)),
                parens: roll < 21,
            },
            25..=27 => Phone::WithExtension {
                country,
                national,
                extension: rng.u16(1..1000),
            },
            _ => Phone::International {
                country,
                national,
                style: [
                    PhoneStyle::Spaced,
                    PhoneStyle::Spaced,
                    PhoneStyle::DoubleZero,
                    PhoneStyle::Dashes,
                    PhoneStyle::Dots,
                    PhoneStyle::AreaInParens,
                    PhoneStyle::Slash,
                ][rng.usize(0..7)],
            },
        }
    }

    /// `ADDRESS`: mostly unset (`""`), rarely an object of empty parts.
    pub fn address(&self) -> AddressField {
        let mut rng = self.dice(field::ADDRESS);
        match rng.u8(0..100) {
            0..=29 => AddressField::Unset,
            30..=32 => AddressField::Blank,
            _ => {
                let country = &COUNTRIES[rng.usize(0..COUNTRIES.len())];
                AddressField::Set(Address {
                    addr1: format!("{} {}", rng.u16(1..300), STREETS[rng.usize(0..STREETS.len())]),
                    addr2: SECOND_LINES[rng.usize(0..SECOND_LINES.len())],
                    city: country.city,
                    state: country.state,
                    zip: country.zip,
                    country,
                })
            }
        }
    }

    /// `BIRTHDAY` (type `birthday`): month and day, or `None` for `""`.
    pub fn birthday(&self) -> Option<(u32, u32)> {
        let mut rng = self.dice(field::BIRTHDAY);
        if rng.u8(0..100) < 25 {
            return None;
        }
        let month = rng.u32(1..=12);
        let days = match month {
            2 => 29,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        Some((month, rng.u32(1..=days)))
    }

    /// `JOINED` (type `date`), or `None` for `""`: mostly 2012–2022, rarely
    /// before 1900 or far in the future (Mailchimp takes any date).
    pub fn joined(&self) -> Option<NaiveDate> {
        let mut rng = self.dice(field::JOINED);
        let year = match rng.u8(0..100) {
            0..=29 => return None,
            30 => rng.i32(1880..1900),
            31 => rng.i32(2090..2100),
            _ => rng.i32(2012..=2022),
        };
        NaiveDate::from_yo_opt(year, rng.u32(1..=365))
    }

    /// `LOYALTY` (type `number`), or `None` for `""`.
    pub fn loyalty(&self) -> Option<Loyalty> {
        let mut rng = self.dice(field::LOYALTY);
        match rng.u8(0..100) {
            0..=29 => None,
            30..=34 => Some(Loyalty {
                whole: -rng.i64(1..50),
                hundredths: 0,
            }),
            35..=64 => Some(Loyalty {
                whole: rng.i64(0..5000),
                hundredths: rng.u8(1..100),
            }),
            _ => Some(Loyalty {
                whole: rng.i64(0..100_000),
                hundredths: 0,
            }),
        }
    }

    /// `WEBSITE` (type `url`), or `None` for `""`.
    pub fn website(&self) -> Option<String> {
        let mut rng = self.dice(field::WEBSITE);
        if rng.u8(0..100) < 40 {
            return None;
        }
        let serial = self.serial;
        Some(match rng.u8(0..3) {
            0 => format!("https://www.example.com/members/{serial}"),
            1 => format!("http://shop.example.org/~m{serial}"),
            _ => format!("https://example.net/u?id={serial}&ref=mc"),
        })
    }

    /// `ZIP` (type `zip`), or `None` for `""`.
    pub fn zip(&self) -> Option<&'static str> {
        let mut rng = self.dice(field::ZIP);
        (rng.u8(0..100) >= 35).then(|| ZIPS[rng.usize(0..ZIPS.len())])
    }

    /// `PLAN` (type `dropdown`), or `None` for `""`.
    pub fn plan(&self) -> Option<&'static str> {
        let mut rng = self.dice(field::PLAN);
        (rng.u8(0..100) >= 20).then(|| PLANS[rng.usize(0..PLANS.len())])
    }

    /// `SIZE` (type `radio`), or `None` for `""`.
    pub fn size(&self) -> Option<&'static str> {
        let mut rng = self.dice(field::SIZE);
        (rng.u8(0..100) >= 25).then(|| SIZES[rng.usize(0..SIZES.len())])
    }

    /// The member's tags, in [`TAGS`] order; none for about a third.
    pub fn tags(&self) -> Vec<Tag> {
        let mut rng = self.dice(field::TAGS);
        if rng.u8(0..100) < 35 {
            return vec![];
        }
        let bits = rng.u8(1..64);
        TAGS.iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, t)| *t)
            .collect()
    }

    /// The member's marketing permissions: none for a fifth (signed up
    /// without the GDPR form), else each of [`PERMISSIONS`].
    pub fn marketing_permissions(&self) -> Vec<Permission> {
        let mut rng = self.dice(field::PERMISSIONS);
        if rng.u8(0..100) < 20 {
            return vec![];
        }
        PERMISSIONS
            .iter()
            .map(|(id, text)| Permission {
                id,
                text,
                enabled: rng.bool(),
            })
            .collect()
    }

    /// Where Mailchimp places the member; unknown for some.
    pub fn location(&self) -> Location {
        let mut rng = self.dice(field::LOCATION);
        if rng.u8(0..100) < 15 {
            Location::Unknown
        } else {
            Location::In(&COUNTRIES[rng.usize(0..COUNTRIES.len())])
        }
    }

    /// Whether the member is a VIP.
    pub fn vip(&self) -> bool {
        self.dice(field::VIP).u8(0..10) == 0
    }

    /// The member's `language`.
    pub fn language(&self) -> &'static str {
        if self.serial % 3 == 0 {
            "fr"
        } else {
            "en"
        }
    }

    /// The member's `interests`: interest id → whether they have it.
    pub fn interests(&self) -> Value {
        json!({"9143cf3bd1": (self.serial + u64::from(self.variant)) % 2 == 0, "3a2a927344": false})
    }

    /// One merge field as Mailchimp returns it: its value, or its empty
    /// form; `None` for a tag the list has not.
    pub fn merge_field(&self, tag: &str) -> Option<Value> {
        let text = |t: Option<&str>| json!(t.unwrap_or(""));
        Some(match tag {
            "FNAME" => json!(self.fname),
            "LNAME" => json!(self.lname),
            "ADDRESS" => match self.address() {
                AddressField::Unset => json!(""),
                AddressField::Blank => {
                    json!({"addr1": "", "addr2": "", "city": "", "state": "", "zip": "", "country": ""})
                }
                AddressField::Set(a) => {
                    Value::Object(a.parts().iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
                }
            },
            "PHONE" => json!(self.phone().text()),
            "BIRTHDAY" => json!(self.birthday().map_or(String::new(), |(m, d)| format!("{m:02}/{d:02}"))),
            "JOINED" => json!(self.joined().map_or(String::new(), |d| format!(
                "{:04}-{:02}-{:02}",
                d.year(),
                d.month(),
                d.day()
            ))),
            "LOYALTY" => self.loyalty().map_or(json!(""), |l| l.to_value()),
            "WEBSITE" => json!(self.website().unwrap_or_default()),
            "ZIP" => text(self.zip()),
            "PLAN" => text(self.plan()),
            "SIZE" => text(self.size()),
            _ => return None,
        })
    }

    /// The whole `merge_fields` object.
    pub fn merge_fields(&self) -> Value {
        let map: Map<String, Value> = MERGE_FIELDS
            .iter()
            .filter_map(|d| Some((d.tag.to_owned(), self.merge_field(d.tag)?)))
            .collect();
        Value::Object(map)
    }

    /// `tags` as Mailchimp returns them: `[{"id", "name"}]`.
    pub fn tags_value(&self) -> Value {
        self.tags()
            .iter()
            .map(|t| json!({"id": t.id, "name": t.name}))
            .collect()
    }

    /// `marketing_permissions` as Mailchimp returns them.
    pub fn marketing_permissions_value(&self) -> Value {
        self.marketing_permissions()
            .iter()
            .map(|p| json!({"marketing_permission_id": p.id, "text": p.text, "enabled": p.enabled}))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::audience::Audience;

    fn members() -> Vec<Member> {
        Audience::generate("fields", 3000, 4, 1_700_000_000)
            .members()
            .cloned()
            .collect()
    }

    #[test]
    fn every_type_and_every_empty_form_is_generated() {
        let all = members();
        let any = |f: &dyn Fn(&Member) -> bool| all.iter().any(f);
        let mf = |m: &Member, tag: &str| m.merge_field(tag).unwrap();
        // Every merge field, with its empty form and a value of its type.
        for d in MERGE_FIELDS {
            assert!(any(&|m| mf(m, d.tag) == ""), "{} is never empty", d.tag);
            assert!(any(&|m| mf(m, d.tag) != ""), "{} is always empty", d.tag);
        }
        assert!(any(
            &|m| mf(m, "ADDRESS").is_object() && m.address() == AddressField::Blank
        ));
        assert!(any(
            &|m| mf(m, "ADDRESS")["country"] == "GB" && mf(m, "ADDRESS")["addr2"] == ""
        ));
        assert!(any(
            &|m| mf(m, "LOYALTY").is_number() && mf(m, "LOYALTY").to_string().contains('.')
        ));
        assert!(any(&|m| mf(m, "LOYALTY").to_string().starts_with('-')));
        for text in [
            "+44 ", "00", "(555) ", "555-", " ext. ", "+1-", "+33.", "/", "(", "+41 ",
        ] {
            assert!(
                any(&|m| mf(m, "PHONE").as_str().unwrap().contains(text)),
                "no phone with {text}"
            );
        }
        assert!(any(&|m| mf(m, "BIRTHDAY").as_str().unwrap().len() == 5));
        assert!(any(&|m| m.joined().is_some_and(|d| d.year() < 1900)));
        assert!(any(&|m| m.joined().is_some_and(|d| d.year() >= 2090)));
        for plan in PLANS {
            assert!(any(&|m| mf(m, "PLAN") == plan));
        }
        // Tags, permissions and location: none, some, all shapes.
        assert!(any(&|m| m.tags().is_empty()) && any(&|m| m.tags().len() > 2));
        assert!(any(&|m| m.marketing_permissions().is_empty()));
        assert!(any(&|m| m.marketing_permissions().iter().any(|p| p.enabled)));
        assert!(any(&|m| m.location() == Location::Unknown));
        assert!(any(&|m| m.location().to_value()["country_code"] == "JP"));
        assert!(any(&|m| m.vip()) && any(&|m| !m.vip()));
    }

    #[test]
    fn fields_are_deterministic_and_change_with_the_variant() {
        let (a, b) = (members(), members());
        assert_eq!(a, b);
        let json = |m: &Member| m.to_value("l");
        assert!(a.iter().zip(&b).all(|(x, y)| json(x) == json(y)));
        let changed = a
            .iter()
            .filter(|m| {
                let bumped = Member {
                    variant: m.variant + 1,
                    ..(*m).clone()
                };
                bumped.merge_fields() != m.merge_fields() && bumped.tags() != m.tags()
            })
            .count();
        assert!(changed > a.len() / 2, "only {changed} changed");
    }

    #[test]
    fn member_json_has_the_shapes_mailchimp_uses() {
        let all = members();
        let m = all.iter().find(|m| !m.tags().is_empty()).unwrap();
        let v = m.to_value("l");
        let names: Vec<&str> = MERGE_FIELDS.iter().map(|d| d.tag).collect();
        assert_eq!(v["merge_fields"].as_object().unwrap().keys().collect::<Vec<_>>(), names);
        assert_eq!(v["tags"][0]["name"], m.tags()[0].name);
        assert_eq!(v["tags_count"], m.tags().len());
        assert_eq!(
            v["location"].as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "latitude",
                "longitude",
                "gmtoff",
                "dstoff",
                "country_code",
                "timezone",
                "region"
            ]
        );
        let m = all.iter().find(|m| !m.marketing_permissions().is_empty()).unwrap();
        let p = &m.to_value("l")["marketing_permissions"][0];
        assert_eq!(p["text"], "Email");
        assert!(p["enabled"].is_boolean() && p["marketing_permission_id"].is_string());
    }

    #[test]
    fn loyalty_numbers_are_written_as_mailchimp_writes_them() {
        let l = |whole, hundredths| Loyalty { whole, hundredths }.to_value().to_string();
        assert_eq!(l(42, 0), "42");
        assert_eq!(l(12, 50), "12.5");
        assert_eq!(l(7, 5), "7.05");
        assert_eq!(l(-3, 0), "-3");
    }

    #[test]
    fn definitions_follow_mailchimps_shape() {
        let v = MERGE_FIELDS[3].to_value("l");
        assert_eq!(v["tag"], "PHONE");
        assert_eq!(v["type"], "phone");
        assert_eq!(v["merge_id"], 4);
        assert_eq!(v["options"]["phone_format"], "none");
        assert_eq!(MERGE_FIELDS[9].to_value("l")["options"]["choices"][2], "Business");
        assert_eq!(MERGE_FIELDS[4].options()["date_format"], "MM/DD");
    }

    #[test]
    fn a_member_costs_no_more_memory_than_before() {
        // Five strings, two words, the status and the variant.
        assert!(std::mem::size_of::<Member>() <= 5 * 24 + 2 * 8 + 8);
    }
}
