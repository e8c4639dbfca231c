//! The Kubernetes manifests in `deploy/` as data (every YAML document parsed), and (in
//! `container`) podman driven the way a kubelet would drive the DaemonSet's containers.

mod container;

pub use container::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The capabilities the agent is granted, as docs/kubernetes.md documents them.
pub const AGENT_CAPABILITIES: &[&str] = &[
    "BPF",
    "PERFMON",
    "SYS_ADMIN",
    "NET_ADMIN",
    "SYS_PTRACE",
    "KILL",
    "SYS_RESOURCE",
];

/// The image tag the tests build and reuse (never the user's `localhost/cniscope:dev`).
pub const TEST_IMAGE: &str = "localhost/cniscope:test";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// One YAML document of one file.
#[derive(Debug, Clone)]
pub struct Doc {
    pub file: PathBuf,
    pub index: usize,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every non-empty document of one file; panics naming the file and document on a parse error.
pub fn parse_file(path: &Path) -> Vec<Doc> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut docs = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(de).unwrap_or_else(|e| {
            panic!("{} document {index} is not valid YAML: {e}", path.display())
        });
        if !value.is_null() {
            docs.push(Doc {
                file: path.to_path_buf(),
                index,
                value,
            });
        }
    }
    docs
}

/// The documents of the files a kustomization directory lists under `resources` (files only;
/// directories are followed).
pub fn kustomized_docs(dir: &Path) -> Vec<Doc> {
    let k = parse_file(&dir.join("kustomization.yaml"));
    let mut docs = Vec::new();
    for r in k[0].value["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().expect("resource is a string"));
        if p.is_dir() {
            docs.extend(kustomized_docs(&p));
        } else {
            docs.extend(parse_file(&p));
        }
    }
    docs
}

pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
        .value
}

/// The DaemonSet's container (or init container) called `name`.
pub fn container<'a>(ds: &'a Value, name: &str) -> &'a Value {
    let spec = &ds["spec"]["template"]["spec"];
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

pub fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// One volumeMount of a container, resolved to its volume.
#[derive(Debug, Clone)]
pub struct Mount {
    pub volume: String,
    /// The host path for hostPath volumes.
    pub host_path: Option<String>,
    pub config_map: Option<String>,
    pub empty_dir: bool,
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
    pub propagation: Option<String>,
}

pub fn mounts(ds: &Value, container_name: &str) -> Vec<Mount> {
    let volumes = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    container(ds, container_name)["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["name"].as_str().expect("mount name");
            let vol = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{container_name} mounts undeclared volume {name}"));
            Mount {
                volume: name.to_string(),
                host_path: vol["hostPath"]["path"].as_str().map(String::from),
                config_map: vol["configMap"]["name"].as_str().map(String::from),
                empty_dir: vol.get("emptyDir").is_some(),
                mount_path: m["mountPath"].as_str().expect("mountPath").to_string(),
                sub_path: m["subPath"].as_str().map(String::from),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                propagation: m["mountPropagation"].as_str().map(String::from),
            }
        })
        .collect()
}
