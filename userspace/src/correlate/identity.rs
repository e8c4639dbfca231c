//! Who an invocation is for and what a plugin said: CNI_ARGS, the pod, plugin names and CNI
//! error replies.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// `K=V;K2=V2` as the runtime passes CNI_ARGS.
pub fn parse_cni_args(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Pod {
    pub fn from_cni_args(args: &str) -> Option<Pod> {
        let m = parse_cni_args(args);
        let pod = Pod {
            namespace: m.get("K8S_POD_NAMESPACE").cloned(),
            name: m.get("K8S_POD_NAME").cloned(),
            uid: m.get("K8S_POD_UID").cloned(),
        };
        (pod.name.is_some() || pod.uid.is_some()).then_some(pod)
    }

    /// From a cniscope-cni netns tag attachment's `pod` object.
    pub fn from_tag(v: &Value) -> Option<Pod> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let pod = Pod {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
        };
        (pod.name.is_some() || pod.uid.is_some()).then_some(pod)
    }

    /// Fills fields this one lacks from `other`.
    pub fn merge(&mut self, other: &Pod) {
        if self.namespace.is_none() {
            self.namespace.clone_from(&other.namespace);
        }
        if self.name.is_none() {
            self.name.clone_from(&other.name);
        }
        if self.uid.is_none() {
            self.uid.clone_from(&other.uid);
        }
    }
}

/// The plugin's name: the executable's base name (a delegated IPAM plugin reads its parent's
/// config, whose `type` names the parent), else the config's `type`.
pub fn plugin_name(config: Option<&Value>, filename: &str) -> String {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    if !base.is_empty() {
        return base.to_string();
    }
    config
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// A CNI error reply (`{"code": N, "msg": …}`) printed on stdout, if that is what it is.
pub fn cni_error(stdout: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    cni_error_value(&v)
}

/// The same, for stdout already parsed.
pub fn cni_error_value(v: &Value) -> Option<Value> {
    (v.get("code").is_some_and(Value::is_u64) && v.get("msg").is_some()).then(|| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_from_kubelet_args() {
        let p = Pod::from_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web-0"));
        assert_eq!(p.uid.as_deref(), Some("u-1"));
        assert!(Pod::from_cni_args("IgnoreUnknown=1").is_none());
        assert!(Pod::from_cni_args("").is_none());
    }

    #[test]
    fn names_and_errors() {
        let c: Value = serde_json::json!({"type": "bridge"});
        assert_eq!(
            plugin_name(Some(&c), "/usr/lib/cni/host-local"),
            "host-local"
        );
        assert_eq!(plugin_name(Some(&c), ""), "bridge");
        assert_eq!(plugin_name(None, "/usr/lib/cni/host-local"), "host-local");
        let e = cni_error(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#).unwrap();
        assert_eq!(e["code"], 7);
        assert!(cni_error(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
        assert!(cni_error(b"not json").is_none());
    }
}
