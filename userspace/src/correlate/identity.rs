//! Who an invocation is for and what a plugin said: CNI_ARGS, the pod, plugin names and CNI
//! error replies.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::json::Json;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The pod's labels, from the agent's pod cache (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Pod {
    pub fn from_cni_args(args: &str) -> Option<Pod> {
        // `K=V;K2=V2` as the runtime passes CNI_ARGS; a later duplicate wins.
        let mut pod = Pod::default();
        for kv in args.split(';') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let slot = match k.trim() {
                "K8S_POD_NAMESPACE" => &mut pod.namespace,
                "K8S_POD_NAME" => &mut pod.name,
                "K8S_POD_UID" => &mut pod.uid,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        (pod.name.is_some() || pod.uid.is_some()).then_some(pod)
    }

    /// From a cniscope-cni netns tag attachment's `pod` object.
    pub fn from_tag(v: &Value) -> Option<Pod> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let pod = Pod {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
            labels: None,
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
        if self.labels.is_none() {
            self.labels.clone_from(&other.labels);
        }
    }

    /// Completes the pod from the agent's pod cache: the uid when the runtime did not pass
    /// one, and the labels. A cached pod with another uid (recreated under the same name) is
    /// another pod and is not used.
    pub fn enrich(&mut self, look: &mut dyn super::correlator::Lookups) {
        let (Some(ns), Some(name)) = (self.namespace.as_deref(), self.name.as_deref()) else {
            return;
        };
        let Some(p) = look.pod(ns, name, self.uid.as_deref()) else {
            return;
        };
        let meta = &p["metadata"];
        let uid = meta.get("uid").and_then(Value::as_str);
        if self.uid.is_some() && self.uid.as_deref() != uid {
            return;
        }
        if self.uid.is_none() {
            self.uid = uid.map(str::to_string);
        }
        let labels: BTreeMap<String, String> = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if !labels.is_empty() {
            self.labels = Some(labels);
        }
    }
}

/// The plugin's name: the executable's base name (a delegated IPAM plugin reads its parent's
/// config, whose `type` names the parent), else the config's `type` (`config_type`).
pub fn plugin_name(config_type: Option<&str>, filename: &str) -> String {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    if !base.is_empty() {
        return base.to_string();
    }
    config_type.unwrap_or("?").to_string()
}

/// A CNI error reply (`{"code": N, "msg": …}`) printed on stdout, if that is what the stdout,
/// as the correlator read it, is.
pub fn cni_error_in(v: &Json<'_>) -> Option<Value> {
    (v.get("code").is_some_and(Json::is_u64) && v.get("msg").is_some()).then(|| v.to_value())
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
    fn enriched_from_the_pod_cache_only_when_the_uid_agrees() {
        struct Cache;
        impl super::super::correlator::Lookups for Cache {
            fn netns_inode(&mut self, _: &str) -> Option<u32> {
                None
            }
            fn tag(&mut self, _: u32) -> Option<Value> {
                None
            }
            fn comm(&mut self, _: u32) -> Option<String> {
                None
            }
            fn pod(&mut self, ns: &str, name: &str, _: Option<&str>) -> Option<Value> {
                (ns == "shop" && name == "web").then(|| {
                    serde_json::json!({"metadata": {"uid": "u-1", "labels": {"app": "web", "tier": "front"}}})
                })
            }
        }
        let mut p = Pod::from_cni_args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web").unwrap();
        p.enrich(&mut Cache);
        assert_eq!(p.uid.as_deref(), Some("u-1"));
        assert_eq!(
            serde_json::to_value(&p).unwrap()["labels"],
            serde_json::json!({"app": "web", "tier": "front"})
        );
        // Another pod under the same name: left as it is.
        let mut other =
            Pod::from_cni_args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=u-2").unwrap();
        other.enrich(&mut Cache);
        assert_eq!(other.labels, None);
        // Unknown to the cache: no `labels` key at all.
        let mut unknown = Pod::from_cni_args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db").unwrap();
        unknown.enrich(&mut Cache);
        assert!(
            serde_json::to_value(&unknown)
                .unwrap()
                .get("labels")
                .is_none()
        );
    }

    /// As the correlator reads a step's stdout.
    fn cni_error(stdout: &[u8]) -> Option<Value> {
        Json::parse(stdout).as_ref().and_then(cni_error_in)
    }

    #[test]
    fn names_and_errors() {
        assert_eq!(
            plugin_name(Some("bridge"), "/usr/lib/cni/host-local"),
            "host-local"
        );
        assert_eq!(plugin_name(Some("bridge"), ""), "bridge");
        assert_eq!(plugin_name(None, "/usr/lib/cni/host-local"), "host-local");
        let e = cni_error(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#).unwrap();
        assert_eq!(e["code"], 7);
        assert!(cni_error(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
        assert!(cni_error(b"not json").is_none());
    }
}
