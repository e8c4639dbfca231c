//! Loading a network configuration list and building each plugin's stdin, as libcni does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    /// The bytes the list was read from (kept in the result cache, like libcni).
    pub bytes: Vec<u8>,
}

/// `network` is a file (`.conflist`, or a single-plugin `.conf`), or a network name searched for
/// in `conf_dir` (`*.conf`, `*.conflist`, `*.json`, in name order, the first whose `name`
/// matches).
pub fn load(network: &str, conf_dir: &Path) -> Result<ConfList> {
    let p = Path::new(network);
    if p.is_file() {
        return from_file(p);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .with_context(|| format!("{network:?} is not a file, and reading {conf_dir:?} failed"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"))
        })
        .collect();
    files.sort();
    for f in files {
        if let Ok(l) = from_file(&f)
            && l.name == network
        {
            return Ok(l);
        }
    }
    bail!("no network named {network:?} in {conf_dir:?}")
}

pub fn from_file(path: &Path) -> Result<ConfList> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path:?}"))?;
    from_bytes(&bytes, path)
}

pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<ConfList> {
    let v: Value =
        serde_json::from_slice(bytes).with_context(|| format!("{path:?} is not JSON"))?;
    let obj = v
        .as_object()
        .with_context(|| format!("{path:?} is not a JSON object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .with_context(|| format!("{path:?} has no name"))?
        .to_string();
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .with_context(|| format!("{path:?} has no cniVersion"))?
        .to_string();
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let plugins = match obj.get("plugins") {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.as_object()
                    .cloned()
                    .with_context(|| format!("{path:?}: plugins[{i}] is not an object"))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(_) => bail!("{path:?}: plugins is not a list"),
        // A single-plugin .conf becomes a list of one (libcni's ConfListFromConf).
        None if obj.contains_key("type") => vec![obj.clone()],
        None => bail!("{path:?} has neither plugins nor type"),
    };
    if plugins.is_empty() {
        bail!("{path:?}: plugins is empty");
    }
    for (i, p) in plugins.iter().enumerate() {
        let t = p
            .get("type")
            .and_then(Value::as_str)
            .with_context(|| format!("{path:?}: plugins[{i}] has no type"))?;
        if t.is_empty() || t.contains('/') || t == "." || t == ".." {
            bail!("{path:?}: plugins[{i}] type {t:?} is not a plugin name");
        }
    }
    Ok(ConfList {
        name,
        cni_version,
        disable_check: flag("disableCheck"),
        disable_gc: flag("disableGC"),
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// One plugin's stdin: its config with the list's `name` and `cniVersion`, the previous result
/// when there is one, and `runtimeConfig` holding the capability arguments it declares in
/// `capabilities` (libcni's `buildOneConfig`/`injectRuntimeConfig`).
pub fn plugin_stdin(
    list: &ConfList,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    caps: &Map<String, Value>,
    extra: &[(&str, Value)],
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let mut rc = Map::new();
    for (k, v) in caps {
        if declared.and_then(|d| d.get(k)).and_then(Value::as_bool) == Some(true) {
            rc.insert(k.clone(), v.clone());
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    for (k, v) in extra {
        conf.insert((*k).into(), v.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// Finds a plugin binary in the CNI_PATH directories.
pub fn find_plugin(plugin_type: &str, cni_path: &str) -> Result<PathBuf> {
    for dir in cni_path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(plugin_type);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("failed to find plugin {plugin_type:?} in path [{cni_path}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_conf_becomes_a_list() {
        let l = from_bytes(
            br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","bridge":"b"}"#,
            Path::new("x.conf"),
        )
        .unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["bridge"], "b");
    }

    #[test]
    fn bad_lists() {
        for b in [
            &br#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#[..],
            br#"{"name":"n","plugins":[{"type":"x"}]}"#,
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]}"#,
            br#"{"cniVersion":"1.0.0","name":"n"}"#,
            b"[]",
        ] {
            assert!(
                from_bytes(b, Path::new("x")).is_err(),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn stdin_injection() {
        let l = from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"bridge","name":"ignored"},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("x"),
        )
        .unwrap();
        let caps: Map<String, Value> = [
            ("portMappings".to_string(), json!([{"hostPort": 8080}])),
            ("bandwidth".to_string(), json!({})),
        ]
        .into_iter()
        .collect();
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let a: Value =
            serde_json::from_slice(&plugin_stdin(&l, &l.plugins[0], None, &caps, &[])).unwrap();
        assert_eq!(a["name"], "net");
        assert_eq!(a["cniVersion"], "1.0.0");
        assert!(a.get("prevResult").is_none());
        assert!(
            a.get("runtimeConfig").is_none(),
            "bridge declares no capabilities"
        );
        let b: Value =
            serde_json::from_slice(&plugin_stdin(&l, &l.plugins[1], Some(&prev), &caps, &[]))
                .unwrap();
        assert_eq!(b["prevResult"], prev);
        assert_eq!(
            b["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080}]})
        );
    }

    #[test]
    fn plugin_lookup() {
        assert!(find_plugin("env", "/nonexistent:/usr/bin").is_ok());
        assert!(find_plugin("no-such-plugin", "/usr/bin").is_err());
    }
}
