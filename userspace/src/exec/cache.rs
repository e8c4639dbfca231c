//! The result cache: what ADD returned, kept for CHECK and DEL (libcni's
//! `<cacheDir>/results/<network>-<containerID>-<ifname>`, same JSON shape, so a cache written by
//! podman or cnitool can be read and the other way round).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{Value, json};

pub struct Key<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

pub fn path(dir: &Path, k: &Key<'_>) -> PathBuf {
    dir.join("results")
        .join(format!("{}-{}-{}", k.network, k.container_id, k.ifname))
}

#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    k: &Key<'_>,
    conf_bytes: &[u8],
    netns: &str,
    cni_args: &[(String, String)],
    caps: &serde_json::Map<String, Value>,
    result: &Value,
) -> Result<()> {
    let p = path(dir, k);
    let parent = p.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
    let doc = json!({
        "kind": "cniCacheV1",
        "containerId": k.container_id,
        "config": base64::engine::general_purpose::STANDARD.encode(conf_bytes),
        "ifName": k.ifname,
        "networkName": k.network,
        "netns": netns,
        "cniArgs": cni_args.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "capabilityArgs": caps,
        "result": result,
    });
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&doc)?).with_context(|| format!("writing {tmp:?}"))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {p:?}"))
}

/// The cached ADD result, or `None` when there is no cache entry.
pub fn read_result(dir: &Path, k: &Key<'_>) -> Result<Option<Value>> {
    let p = path(dir, k);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {p:?}")),
    };
    let v: Value = serde_json::from_slice(&bytes).with_context(|| format!("{p:?} is not JSON"))?;
    Ok(v.get("result").cloned())
}

pub fn remove(dir: &Path, k: &Key<'_>) {
    let _ = std::fs::remove_file(path(dir, k));
}

/// Every cached attachment of `network`: (container id, ifname), for GC's valid list.
pub fn attachments(dir: &Path, network: &str) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = rd
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|v| v.get("networkName").and_then(Value::as_str) == Some(network))
        .filter_map(|v| {
            Some((
                v.get("containerId")?.as_str()?.to_string(),
                v.get("ifName")?.as_str()?.to_string(),
            ))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("cniscope-exec-cache-{}", std::process::id()));
        let k = Key {
            network: "n",
            container_id: "c",
            ifname: "eth0",
        };
        assert!(read_result(&dir, &k).unwrap().is_none());
        let res = json!({"cniVersion": "1.0.0", "ips": []});
        write(
            &dir,
            &k,
            b"{}",
            "/run/netns/x",
            &[("A".into(), "1".into())],
            &Default::default(),
            &res,
        )
        .unwrap();
        assert_eq!(read_result(&dir, &k).unwrap().unwrap(), res);
        assert_eq!(
            attachments(&dir, "n"),
            [("c".to_string(), "eth0".to_string())]
        );
        assert!(attachments(&dir, "other").is_empty());
        remove(&dir, &k);
        assert!(read_result(&dir, &k).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
