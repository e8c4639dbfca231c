//! Plugins' stdin and stdout read as JSON, borrowed from the captured bytes.
//!
//! The correlator reads every ADD step's result and the `prevResult` it was handed, for the
//! diff and for the "unchanged" check. Parsing them into `serde_json::Value` built an ordered,
//! SipHash-keyed map and an owned string per key — a tenth of replay time. `Json` keeps an
//! object as a list of pairs in document order (results are small: a lookup is a short scan)
//! and borrows every string that has no escapes. Its comparisons follow `Value`'s: objects
//! compare as maps (order aside), a repeated key means its last value, numbers compare as
//! serde_json's `Number`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
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

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<Json<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Json<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'a>, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json<'a>, E> {
                Ok(Json::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json<'a>, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Json<'a>, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Json<'a>, E> {
                // As serde_json's Value: a non-finite float is null.
                Ok(Number::from_f64(n).map_or(Json::Null, Json::Num))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'a>, E> {
                Ok(Json::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json<'a>, E> {
                Ok(Json::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Json<'a>, E> {
                Ok(Json::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json<'a>, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json<'a>, A::Error> {
                let mut m = Vec::new();
                // A key is read as any value: serde_json's keys arrive as strings, borrowed
                // when they have no escapes, like every other string here.
                while let Some(k) = a.next_key::<Json<'a>>()? {
                    let Json::Str(k) = k else {
                        return Err(de::Error::custom("an object key that is not a string"));
                    };
                    m.push((k, a.next_value()?));
                }
                Ok(Json::Obj(m))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Json<'_>, Value) {
        (
            serde_json::from_str(text).unwrap(),
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
