//! Plugins' stdin and stdout read as JSON, borrowed from the captured bytes.
//!
//! The correlator reads every ADD step's result and the `prevResult` it was handed, for the
//! diff and for the "unchanged" check. Parsing them into `serde_json::Value` built an ordered,
//! SipHash-keyed map and an owned string per key — a tenth of replay time. `Json` keeps an
//! object as a list of pairs in document order (results are small: a lookup is a short scan)
//! and borrows every string that has no escapes. Its comparisons follow `Value`'s: objects
//! compare as maps (order aside), a repeated key means its last value, numbers compare as
//! serde_json's `Number`.
//!
//! `Json::parse` reads the text itself (through serde's visitors the reading cost as much as
//! the rest of the correlator); what it accepts and refuses is tested against
//! `serde_json::from_slice::<Value>`, and the rare parts whose meaning is subtle (escapes,
//! floats, big integers) are handed to serde_json.

use std::borrow::Cow;

use serde_json::{Number, Value};

#[derive(Debug)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The member `k` of an object (its last occurrence, as serde_json keeps).
    pub fn get(&self, k: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(m) => m.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_u64(&self) -> bool {
        matches!(self, Json::Num(n) if n.is_u64())
    }

    /// Equal as `Value`s would be, ignoring the member `skip` of both top-level objects.
    pub fn same_except(&self, other: &Json<'_>, skip: &str) -> bool {
        self.same_skipping(other, Some(skip))
    }

    fn same_skipping(&self, other: &Json<'_>, skip: Option<&str>) -> bool {
        match (self, other) {
            (Json::Obj(a), Json::Obj(b)) => {
                let kept = |k: &str| Some(k) != skip;
                distinct(a).filter(|(k, _)| kept(k)).count()
                    == distinct(b).filter(|(k, _)| kept(k)).count()
                    && distinct(a)
                        .filter(|(k, _)| kept(k))
                        .all(|(k, v)| other.get(k).is_some_and(|w| v.same(w)))
            }
            _ => self.same(other),
        }
    }

    /// Equal as `Value`s would be.
    pub fn same(&self, other: &Json<'_>) -> bool {
        match (self, other) {
            (Json::Null, Json::Null) => true,
            (Json::Bool(a), Json::Bool(b)) => a == b,
            (Json::Num(a), Json::Num(b)) => a == b,
            (Json::Str(a), Json::Str(b)) => a == b,
            (Json::Arr(a), Json::Arr(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Json::Obj(_), Json::Obj(_)) => self.same_skipping(other, None),
            _ => false,
        }
    }

    /// The same document as a `Value` (for output: a CNI error is printed as it was read).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Num(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.to_string()),
            Json::Arr(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            Json::Obj(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Members with distinct keys: the last of a repeated key (the one `get` finds).
fn distinct<'s, 'a>(
    m: &'s [(Cow<'a, str>, Json<'a>)],
) -> impl Iterator<Item = &'s (Cow<'a, str>, Json<'a>)> {
    m.iter()
        .enumerate()
        .filter(|(i, (k, _))| !m[i + 1..].iter().any(|(k2, _)| k2 == k))
        .map(|(_, kv)| kv)
}

/// serde_json's nesting limit: 127 levels; deeper documents are refused, as `from_slice`
/// refuses them.
const MAX_DEPTH: u32 = 127;

impl<'a> Json<'a> {
    /// Parses one JSON document (surrounding whitespace allowed). Accepts and refuses what
    /// `serde_json::from_slice::<Value>` does (tested against it), borrowing every string
    /// without escapes. The rare parts — strings with escapes, numbers that are not plain
    /// unsigned integers — are handed to serde_json itself, so their meaning is its meaning.
    pub fn parse(b: &'a [u8]) -> Option<Json<'a>> {
        // Checked once as a whole: bytes that are not UTF-8 are refused by serde_json inside a
        // string and outside one alike, and every string is then a slice of valid text.
        let text = std::str::from_utf8(b).ok()?;
        let mut p = Parser {
            b,
            text,
            i: 0,
            depth: 0,
        };
        let v = p.value()?;
        p.ws();
        (p.i == b.len()).then_some(v)
    }
}

struct Parser<'a> {
    b: &'a [u8],
    /// `b`, as the text it was checked to be.
    text: &'a str,
    i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace and takes `c` if it comes next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn value(&mut self) -> Option<Json<'a>> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => self.string().map(Json::Str),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'n' => self.literal(b"null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Option<Json<'a>>) -> Option<Json<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Option<Json<'a>> {
        let mut m = Vec::new();
        if self.eat(b'}') {
            return Some(Json::Obj(m));
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let k = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            m.push((k, self.value()?));
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(Json::Obj(m));
        }
    }

    fn array(&mut self) -> Option<Json<'a>> {
        let mut v = Vec::new();
        if self.eat(b']') {
            return Some(Json::Arr(v));
        }
        loop {
            v.push(self.value()?);
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']').then_some(Json::Arr(v));
        }
    }

    fn literal(&mut self, word: &[u8], v: Json<'a>) -> Option<Json<'a>> {
        self.b[self.i..].starts_with(word).then(|| {
            self.i += word.len();
            v
        })
    }

    /// A string at `"`: borrowed when it has no escapes, else decoded by serde_json.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        // One pass, byte by byte: the strings of CNI configs and results are short (names,
        // addresses), where a search routine's set-up costs more than the bytes. A control
        // character is refused; an escape is skipped here and decoded below.
        loop {
            match *self.b.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                0..=0x1f => return None,
                _ => j += 1,
            }
        }
        self.i = j + 1;
        if escaped {
            serde_json::from_slice::<String>(&self.b[start - 1..=j])
                .ok()
                .map(Cow::Owned)
        } else {
            // Between two quotes (ASCII, so character boundaries) of checked text.
            Some(Cow::Borrowed(&self.text[start..j]))
        }
    }

    /// A number by JSON's grammar; a plain unsigned integer directly, the rest by serde_json
    /// (negative zero, floats, integers beyond u64, out-of-range exponents).
    fn number(&mut self) -> Option<Json<'a>> {
        let b = self.b;
        let start = self.i;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = start + usize::from(b[start] == b'-');
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return None,
        }
        let int_end = i;
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        self.i = i;
        let text = &b[start..i];
        if b[start] != b'-' && int_end == i {
            // At most 20 digits: u64 or, beyond it, serde_json's float.
            let mut n: u64 = 0;
            let fits = text.iter().all(|d| {
                n.checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(d - b'0')))
                    .map(|m| n = m)
                    .is_some()
            });
            if fits {
                return Some(Json::Num(n.into()));
            }
        }
        serde_json::from_slice::<Number>(text).ok().map(Json::Num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Json<'_>, Value) {
        (
            Json::parse(text.as_bytes()).unwrap(),
            serde_json::from_str(text).unwrap(),
        )
    }

    #[test]
    fn reads_what_value_reads_and_borrows_plain_strings() {
        let text = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","interface":2}],
            "dns":{},"esc":"a\"b","n":-3,"f":1.5,"t":true,"z":null}"#;
        let (j, v) = both(text);
        assert_eq!(j.to_value(), v);
        assert!(matches!(
            j.get("cniVersion"),
            Some(Json::Str(Cow::Borrowed(_)))
        ));
        assert_eq!(j.get("esc").and_then(Json::as_str), Some("a\"b"));
        assert!(
            j.get("ips").and_then(Json::as_array).unwrap()[0]
                .get("interface")
                .unwrap()
                .is_u64()
        );
        // Order kept for output.
        assert_eq!(
            serde_json::to_string(&j.to_value()).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }

    /// `Json::parse` must accept exactly what serde_json accepts, and read the same document.
    fn agrees_with_serde_json(b: &[u8]) {
        let ours = Json::parse(b).map(|j| j.to_value());
        let theirs = serde_json::from_slice::<Value>(b).ok();
        assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(b));
    }

    #[test]
    fn parses_as_serde_json_does_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"null",
            b" true ",
            b"false",
            b"nul",
            b"truex",
            b"0",
            b"-0",
            b"-",
            b"01",
            b"1.",
            b"1.5",
            b".5",
            b"1e5",
            b"1E+5",
            b"1e-5",
            b"1e",
            b"1e400",
            b"-1e400",
            b"18446744073709551615",
            b"18446744073709551616",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"123456789012345678901234567890",
            b"2.0e0",
            b"-0.0",
            br#""""#,
            br#""a"#,
            br#""\""#,
            br#""\u0041\n\/""#,
            br#""\ud83d\ude00""#,
            br#""\ud83d""#,
            br#""\ude00x""#,
            br#""\x""#,
            b"\"a\tb\"",
            b"\"a\x01\"",
            b"\"\xff\"",
            b"\"\xc3\xa9\"",
            br#""\"#,
            br#"[]"#,
            br#"[ ]"#,
            br#"[1,]"#,
            br#"[,1]"#,
            br#"[1 2]"#,
            br#"{}"#,
            br#"{ }"#,
            br#"{"a":1,}"#,
            br#"{"a" 1}"#,
            br#"{a:1}"#,
            br#"{"a":1 "b":2}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":{"b":[null]}} x"#,
            br#"{"a":1}}"#,
            b"[1]\n",
            b"\t[1]\r\n",
            b"[\x0c1]",
            br#"{"\u0061":1}"#,
        ];
        for c in cases {
            agrees_with_serde_json(c);
        }
        // Nesting up to and past serde_json's limit.
        for depth in 120..140 {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            agrees_with_serde_json(doc.as_bytes());
            let doc = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            agrees_with_serde_json(doc.as_bytes());
        }
    }

    #[test]
    fn parses_as_serde_json_does_on_damaged_cni_documents() {
        // A bridge result and a config with its prevResult, then every truncation and every
        // single-byte replacement by a byte that matters to a JSON reader.
        let docs: [&[u8]; 2] = [
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"veth1","mac":"12:34:56:78:9a:bc"},{"name":"eth0","mac":"de:ad:be:ef:00:01","sandbox":"/run/netns/cni-1"}],"ips":[{"interface":2,"address":"10.88.0.7/16","gateway":"10.88.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}],"dns":{"nameservers":["10.0.0.10"]}}"#,
            b"{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"podman\",\n  \"type\": \"tuning\",\n  \"sysctl\": {\"net.ipv4.conf.eth0.rp_filter\": \"2\"},\n  \"mtu\": 1450, \"ratio\": -0.25e1, \"esc\": \"tab\\tquote\\\"\",\n  \"prevResult\": {\"ips\": [{\"address\": \"10.88.0.7/16\"}], \"dns\": {}}\n}\n",
        ];
        let bytes = [
            b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'-', b'.', b'e', b'n',
            0x01, 0xff,
        ];
        for d in docs {
            agrees_with_serde_json(d);
            for cut in 0..d.len() {
                agrees_with_serde_json(&d[..cut]);
            }
            for at in 0..d.len() {
                for &x in &bytes {
                    let mut m = d.to_vec();
                    m[at] = x;
                    agrees_with_serde_json(&m);
                }
            }
        }
    }

    #[test]
    fn comparisons_follow_value() {
        let cases = [
            (r#"{"a":1,"b":[1,2]}"#, r#"{"b":[1,2],"a":1}"#),
            (r#"{"a":1}"#, r#"{"a":1.0}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":1}"#),
            (r#"[1,{"x":null}]"#, r#"[1,{"x":null}]"#),
            (r#"[1,2]"#, r#"[2,1]"#),
            (r#"{"a":{"b":"c"}}"#, r#"{"a":{"b":"d"}}"#),
            (r#"{"a":1}"#, r#"{"a":1,"b":2}"#),
        ];
        for (x, y) in cases {
            let ((jx, vx), (jy, vy)) = (both(x), both(y));
            assert_eq!(jx.same(&jy), vx == vy, "{x} vs {y}");
        }
        let (a, _) = both(r#"{"cniVersion":"0.4.0","ips":[]}"#);
        let (b, _) = both(r#"{"ips":[],"cniVersion":"1.0.0"}"#);
        let (c, _) = both(r#"{"ips":[1],"cniVersion":"1.0.0"}"#);
        assert!(a.same_except(&b, "cniVersion"));
        assert!(!a.same_except(&c, "cniVersion"));
        assert!(!a.same(&b));
    }
}
