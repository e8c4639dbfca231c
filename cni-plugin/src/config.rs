//! The plugin's network configuration (stdin), parsed and validated before anything happens.

use std::path::PathBuf;

use serde_json::Value;

use crate::commands::{Policy, PolicyConf};
use crate::error::CniError;
use crate::version;

pub const DEFAULT_AGENT_SOCKET: &str = "/run/cniscope/agent.sock";
pub const DEFAULT_TAG_DIR: &str = "/run/cniscope/tags";

#[derive(Debug, Clone)]
pub struct PluginConf {
    pub cni_version: String,
    pub name: String,
    /// The whole config as received, for the raw command sources and the log.
    pub raw: Value,
    pub prev_result: Option<Value>,
    pub policy: Policy,
    pub kubeconfig: Option<PathBuf>,
    pub agent_socket: PathBuf,
    pub tag_dir: PathBuf,
    pub log_file: Option<String>,
    pub ip_path: Option<PathBuf>,
}

/// Only the version, for error replies: readable even from a config that fails validation.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    Some(v.get("cniVersion")?.as_str()?.to_string())
}

pub fn parse(stdin: &[u8]) -> Result<PluginConf, CniError> {
    let raw: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::decode(format!("network config is not JSON: {e}")))?;
    let obj = raw
        .as_object()
        .ok_or_else(|| CniError::decode("network config is not a JSON object"))?;
    let cni_version = version::check_supported(match obj.get("cniVersion") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(CniError::decode("cniVersion is not a string")),
    })?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        None => String::new(),
        Some(_) => return Err(CniError::invalid_config("name is not a string")),
    };
    let policy_conf: PolicyConf = match obj.get("policy") {
        None | Some(Value::Null) => PolicyConf::default(),
        Some(p) => serde_json::from_value(p.clone())
            .map_err(|e| CniError::invalid_config(format!("policy: {e}")))?,
    };
    let policy = Policy::from_conf(&policy_conf)?;
    let path = |key: &str| -> Result<Option<PathBuf>, CniError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
            Some(_) => Err(CniError::invalid_config(format!(
                "{key} must be a non-empty string"
            ))),
        }
    };
    let ip_path = path("ipPath")?;
    if let Some(p) = &ip_path
        && !p.is_absolute()
    {
        return Err(CniError::invalid_config("ipPath must be an absolute path"));
    }
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(CniError::decode("prevResult is not a JSON object")),
    };
    Ok(PluginConf {
        cni_version,
        name,
        prev_result,
        policy,
        kubeconfig: path("kubeconfig")?,
        agent_socket: path("agentSocket")?.unwrap_or_else(|| DEFAULT_AGENT_SOCKET.into()),
        tag_dir: path("tagDir")?.unwrap_or_else(|| DEFAULT_TAG_DIR.into()),
        log_file: path("logFile")?.map(|p| p.to_string_lossy().into_owned()),
        ip_path,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_full() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"cniscope-cni"}"#).unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert!(c.prev_result.is_none());
        let c = parse(
            br#"{"cniVersion":"0.4.0","name":"n","type":"cniscope-cni","tagDir":"/tmp/t",
                "policy":{"allow":["route add"],"onError":"fail"},"ipPath":"/usr/sbin/ip",
                "prevResult":{"cniVersion":"0.4.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.tag_dir, PathBuf::from("/tmp/t"));
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn errors_have_the_right_codes() {
        for (input, code) in [
            (&b"not json"[..], 6),
            (b"\xff\xfe", 6),
            (b"[1,2]", 6),
            (br#"{"name":"n"}"#, 1),
            (br#"{"cniVersion":"0.2.0"}"#, 1),
            (br#"{"cniVersion":1}"#, 6),
            (br#"{"cniVersion":"1.0.0","policy":{"maxCommands":"x"}}"#, 7),
            (br#"{"cniVersion":"1.0.0","ipPath":"ip"}"#, 7),
            (br#"{"cniVersion":"1.0.0","tagDir":5}"#, 7),
            (br#"{"cniVersion":"1.0.0","prevResult":"x"}"#, 6),
        ] {
            let e = parse(input).unwrap_err();
            assert_eq!(
                e.code(),
                code,
                "{}: {e} {}",
                String::from_utf8_lossy(input),
                e.details()
            );
        }
    }
}
