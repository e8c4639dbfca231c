//! Bytes shown as JSON: a string when they are UTF-8 (CNI configs and results are), an object
//! with base64 otherwise, so nothing is lost or mangled.

use base64::Engine as _;
use serde::{Serialize, Serializer, ser::SerializeMap};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub Vec<u8>);

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                m.end()
            }
        }
    }
}

/// Decodes what `Text` wrote (for tests, replay and clients).
pub fn from_json(v: &serde_json::Value) -> Option<Vec<u8>> {
    match v {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        serde_json::Value::Object(m) => base64::engine::general_purpose::STANDARD
            .decode(m.get("base64")?.as_str()?)
            .ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_a_string_and_binary_round_trips() {
        let t = Text(b"{\"a\":1}\n".to_vec());
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""{\"a\":1}\n""#);
        let bin = Text(vec![0xff, 0x00, b'x']);
        let v = serde_json::to_value(&bin).unwrap();
        assert!(v.get("base64").is_some());
        assert_eq!(from_json(&v).unwrap(), vec![0xff, 0x00, b'x']);
    }
}
