//! CNI versions this plugin speaks, and the one conversion a pass-through needs: printing
//! prevResult in the configuration's version.

use serde_json::{Map, Value};

use crate::error::CniError;

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// What VERSION answers with when stdin names no version.
pub const LATEST: &str = "1.1.0";

/// `(major, minor, patch)`; `None` for anything that is not three dot-separated numbers.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.');
    let t = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    if it.next().is_some() {
        return None;
    }
    Some(t)
}

/// `a >= b`; unparsable versions compare as the oldest.
pub fn at_least(a: &str, b: &str) -> bool {
    parse(a).unwrap_or((0, 0, 0)) >= parse(b).unwrap_or((0, 0, 0))
}

/// The config's `cniVersion`, checked. A config without one is version 0.1.0 (as libcni reads
/// it), which this plugin does not speak: chaining needs 0.3.0 or later.
pub fn check_supported(v: Option<&str>) -> Result<String, CniError> {
    let v = v.unwrap_or("0.1.0");
    if SUPPORTED.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(CniError::IncompatibleVersion {
            details: format!(
                "config version {v:?} is not supported; supported versions: {}",
                SUPPORTED.join(", ")
            ),
        })
    }
}

/// The VERSION reply.
pub fn version_info(requested: Option<&str>) -> Value {
    let v = requested
        .filter(|v| SUPPORTED.contains(v))
        .unwrap_or(LATEST);
    serde_json::json!({"cniVersion": v, "supportedVersions": SUPPORTED})
}

/// prevResult as this plugin must print it: unchanged, except that the result carries the
/// config's `cniVersion` (the spec requires a result in the version of the request). Within the
/// 0.3.x/0.4.0 family and within 1.x the result schema is the same, so only the version string
/// changes; across 0.x and 1.x the one schema difference (the per-IP `version` field, dropped in
/// 1.0.0) is converted like the reference libraries do. Unknown fields are kept as they are.
pub fn result_in_version(prev: &Value, version: &str) -> Value {
    let mut out = prev.clone();
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    let from = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(version)
        .to_string();
    let from_1x = at_least(&from, "1.0.0");
    let to_1x = at_least(version, "1.0.0");
    if from_1x != to_1x
        && let Some(Value::Array(ips)) = obj.get_mut("ips")
    {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            if to_1x {
                ip.remove("version");
            } else if !ip.contains_key("version") {
                let fam = ip_family(ip);
                ip.insert("version".into(), Value::String(fam.into()));
            }
        }
    }
    match obj.get_mut("cniVersion") {
        Some(v) => *v = Value::String(version.to_string()),
        None => {
            // Keep the key first, as every reference plugin prints it.
            let mut m = Map::new();
            m.insert("cniVersion".into(), Value::String(version.to_string()));
            m.extend(std::mem::take(obj));
            *obj = m;
        }
    }
    out
}

fn ip_family(ip: &Map<String, Value>) -> &'static str {
    match ip.get("address").and_then(Value::as_str) {
        Some(a) if a.contains(':') => "6",
        _ => "4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn supported_and_unsupported() {
        for v in SUPPORTED {
            assert_eq!(check_supported(Some(v)).unwrap(), *v);
        }
        for v in [None, Some("0.2.0"), Some("1.2.0"), Some("banana"), Some("")] {
            let e = check_supported(v).unwrap_err();
            assert_eq!(e.code(), 1, "{v:?}");
        }
    }

    #[test]
    fn ordering() {
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.3.0"));
    }

    #[test]
    fn version_reply() {
        let v = version_info(None);
        assert_eq!(v["cniVersion"], LATEST);
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        assert_eq!(version_info(Some("0.4.0"))["cniVersion"], "0.4.0");
        assert_eq!(version_info(Some("9.9.9"))["cniVersion"], LATEST);
    }

    #[test]
    fn same_family_is_byte_for_byte_apart_from_nothing() {
        let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
            "ips":[{"address":"10.0.0.2/24","interface":0}],"x-unknown":{"keep":[1,2]},"dns":{}});
        let out = result_in_version(&prev, "1.0.0");
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            serde_json::to_string(&prev).unwrap()
        );
    }

    #[test]
    fn cross_family_converts_ip_version() {
        let prev = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]});
        let out = result_in_version(&prev, "1.0.0");
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(out["ips"][0].get("version").is_none());
        let back = result_in_version(&out, "0.3.1");
        assert_eq!(back["ips"][0]["version"], "4");
        let v6 = result_in_version(
            &json!({"ips":[{"address":"fd00::2/64"}], "cniVersion":"1.0.0"}),
            "0.4.0",
        );
        assert_eq!(v6["ips"][0]["version"], "6");
    }

    #[test]
    fn missing_version_is_inserted_first() {
        let out = result_in_version(&json!({"ips":[]}), "0.3.1");
        let s = serde_json::to_string(&out).unwrap();
        assert!(s.starts_with("{\"cniVersion\":\"0.3.1\""), "{s}");
    }
}
