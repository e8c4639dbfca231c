//! The Kubernetes manifests in deploy/, checked against what the code needs: every YAML document
//! parses; the DaemonSet grants exactly the documented capabilities and is not privileged; every
//! host path the agent, the plugin and the install step use is mounted; RBAC is pods read and
//! events create, nothing more; every NetworkAttachmentDefinition chains bridge into
//! cniscope-cni; kustomizations and the OpenShift overlay point at things that exist.
//! (deploy_example_chain runs the example NAD's chain with the real plugins.)

use std::collections::BTreeSet;
use std::process::Command;

use cniscope_tests::deploy::{
    AGENT_CAPABILITIES, Doc, container, deploy_dir, find, kustomized_docs, mounts, parse_file,
    strings, workspace_root, yaml_files,
};
use serde_json::{Value, json};

fn all_docs() -> Vec<Doc> {
    yaml_files(&deploy_dir())
        .iter()
        .flat_map(|f| parse_file(f))
        .collect()
}

fn base() -> Vec<Doc> {
    kustomized_docs(&deploy_dir())
}

fn daemonset() -> Value {
    find(&base(), "DaemonSet", "cniscope").clone()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_yaml_document_in_deploy_parses() {
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 8, "deploy/ has only {files:?}");
    for f in &files {
        let docs = parse_file(f);
        assert!(!docs.is_empty(), "{} has no document", f.display());
        for d in &docs {
            let is_kustomization = d.kind() == "Kustomization";
            assert!(
                d.value["apiVersion"].is_string() && !d.kind().is_empty(),
                "{} document {} has no apiVersion/kind",
                f.display(),
                d.index
            );
            if !is_kustomization {
                assert!(
                    !d.name().is_empty(),
                    "{} document {} has no metadata.name",
                    f.display(),
                    d.index
                );
            }
        }
    }
    // Everything the base installs is namespaced in cniscope (or cluster-scoped).
    for d in base() {
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&d.kind());
        if !cluster_scoped {
            assert_eq!(
                d.value["metadata"]["namespace"],
                "cniscope",
                "{} {}",
                d.kind(),
                d.name()
            );
        }
    }
}

#[test]
fn daemonset_capabilities_are_exactly_the_documented_set_and_not_privileged() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], "cniscope");
    let agent = container(&ds, "agent");
    let sc = &agent["securityContext"];
    assert_eq!(sc["privileged"], false, "the agent must not be privileged");
    assert_eq!(strings(&sc["capabilities"]["drop"]), set(&["ALL"]));
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        set(AGENT_CAPABILITIES),
        "the agent's capabilities differ from the documented set"
    );
    let cmd: Vec<&str> = agent["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        cmd[..2],
        ["/usr/bin/cniscope", "agent"],
        "the agent prints NDJSON on stdout, which is what kubectl logs shows"
    );
    // Metrics: the address the agent serves, the containerPort, the probe and the Service agree.
    let at = cmd
        .iter()
        .position(|w| *w == "--metrics-addr")
        .expect("--metrics-addr");
    assert_eq!(cmd[at + 1], "0.0.0.0:9731");
    assert_eq!(
        agent["ports"],
        json!([{"name": "metrics", "containerPort": 9731, "protocol": "TCP"}])
    );
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], "metrics");
    let svc = find(&base(), "Service", "cniscope-metrics").clone();
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9731);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let env: Vec<(String, Value)> = agent["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect();
    assert!(env.contains(&("CNISCOPE_TRACEFS".into(), json!("/sys/kernel/tracing"))));
    // The pod cache: the node from the downward API, the service account's token mounted.
    let node = agent["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME, for the pod cache's field selector");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_ne!(
        ds["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    // The helpers get no capabilities at all.
    for name in ["install", "kubeconfig"] {
        let sc = &container(&ds, name)["securityContext"];
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            set(&["ALL"]),
            "{name}"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name} adds capabilities"
        );
    }
    // No container anywhere in deploy/ is privileged.
    for d in all_docs() {
        let text = d.value.to_string();
        assert!(
            !text.contains("\"privileged\":true"),
            "{} {} asks for privileged",
            d.kind(),
            d.name()
        );
    }
    // The documentation names every capability the agent gets.
    let docs = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let security = docs
        .split("## Security")
        .nth(1)
        .expect("README.md has a Security section");
    for cap in AGENT_CAPABILITIES {
        assert!(
            security.contains(&format!("CAP_{cap}")),
            "README.md's Security section does not explain CAP_{cap}"
        );
    }
}

#[test]
fn daemonset_mounts_every_host_path_the_code_needs() {
    let ds = daemonset();
    let agent = mounts(&ds, "agent");
    let host = |m: &cniscope_tests::deploy::Mount| m.host_path.clone().unwrap_or_default();
    let agent_paths: Vec<(String, String)> = agent
        .iter()
        .filter(|m| m.host_path.is_some())
        .map(|m| (host(m), m.mount_path.clone()))
        .collect();
    // Where the agent's code looks (userspace/src/kernel, netlink/names.rs, the plugin's
    // DEFAULT_AGENT_SOCKET and DEFAULT_TAG_DIR), mounted at the same path inside.
    for p in [
        "/sys/fs/bpf",
        "/sys/kernel/tracing",
        "/sys/kernel/btf",
        "/run/netns",
        "/var/run/netns",
        "/run/cniscope",
    ] {
        assert!(
            agent_paths.contains(&(p.to_string(), p.to_string())),
            "the agent does not mount the host's {p} at {p}: {agent_paths:?}"
        );
    }
    let by_path = |p: &str| agent.iter().find(|m| m.mount_path == p).expect(p);
    assert!(
        by_path("/sys/kernel/btf").read_only,
        "BTF must be read-only"
    );
    for p in ["/run/netns", "/var/run/netns"] {
        assert_eq!(
            by_path(p).propagation.as_deref(),
            Some("HostToContainer"),
            "{p}: namespaces made after the agent started must show up"
        );
    }
    // The install step writes the plugin and the kubeconfig into the host's CNI dirs.
    let install = mounts(&ds, "install");
    let install_paths: Vec<(String, String)> = install
        .iter()
        .filter(|m| m.host_path.is_some())
        .map(|m| (host(m), m.mount_path.clone()))
        .collect();
    for (h, inside) in [
        ("/opt/cni/bin", "/host/opt/cni/bin"),
        ("/etc/cni/net.d", "/host/etc/cni/net.d"),
        ("/run/cniscope", "/host/run/cniscope"),
    ] {
        assert!(
            install_paths.contains(&(h.to_string(), inside.to_string())),
            "the install step does not mount {h} at {inside}: {install_paths:?}"
        );
    }
    // The kubeconfig sidecar sees only the kubeconfig's own directory.
    let side = mounts(&ds, "kubeconfig");
    let hp: Vec<_> = side.iter().filter(|m| m.host_path.is_some()).collect();
    assert_eq!(hp.len(), 1);
    assert_eq!(hp[0].host_path.as_deref(), Some("/etc/cni/net.d"));
    assert_eq!(hp[0].sub_path.as_deref(), Some("cniscope.d"));
    // The install script writes where the plugin and the NADs look.
    let script = install_script();
    for needle in [
        "/host/opt/cni/bin",
        "/host/etc/cni/net.d/cniscope.d",
        "cniscope.kubeconfig",
        "/host/run/cniscope",
        "/usr/bin/cniscope-cni",
    ] {
        assert!(
            script.contains(needle),
            "install.sh never mentions {needle}"
        );
    }
}

fn install_script() -> String {
    find(&base(), "ConfigMap", "cniscope-install")["data"]["install.sh"]
        .as_str()
        .expect("install.sh")
        .to_string()
}

#[test]
fn install_script_is_valid_sh() {
    let dir = cniscope_tests::deploy::TempDir::new("cns-script-");
    let p = dir.path().join("install.sh");
    std::fs::write(&p, install_script()).unwrap();
    let out = Command::new("dash")
        .arg("-n")
        .arg(&p)
        .output()
        .expect("dash");
    assert!(
        out.status.success(),
        "dash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rbac_grants_exactly_pods_read_and_events_create() {
    let docs = base();
    let role = find(&docs, "ClusterRole", "cniscope");
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    assert_ne!(v, "*", "wildcard verb");
                    assert_ne!(r, "*", "wildcard resource");
                    grants.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    let want: BTreeSet<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(grants, want);
    // Each rule says why, in a comment right above it.
    let text = std::fs::read_to_string(deploy_dir().join("rbac.yaml")).unwrap();
    for anchor in ["resources: [\"pods\"]", "resources: [\"events\"]"] {
        let at = text.find(anchor).expect(anchor);
        // The comment block right above the rule's `- apiGroups` line.
        let comment: Vec<&str> = text[..at]
            .lines()
            .rev()
            .skip_while(|l| !l.trim_start().starts_with("- apiGroups"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with('#'))
            .collect();
        assert!(
            comment.iter().any(|l| l.contains("Why:")),
            "no `Why:` comment right above {anchor}"
        );
    }
    // Bound to the DaemonSet's service account only, and nothing else is bound to it.
    let crb = find(&docs, "ClusterRoleBinding", "cniscope");
    assert_eq!(crb["roleRef"]["name"], "cniscope");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "cniscope", "namespace": "cniscope"}])
    );
    let bindings: Vec<_> = docs
        .iter()
        .filter(|d| d.kind().ends_with("RoleBinding"))
        .collect();
    assert_eq!(bindings.len(), 1, "the base binds exactly one role");
    // The optional namespace-label role adds namespaces get and nothing else.
    let opt = parse_file(&deploy_dir().join("optional/rbac-namespace-labels.yaml"));
    let r = find(&opt, "ClusterRole", "cniscope-namespace-labels");
    assert_eq!(
        r["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}])
    );
}

/// Every NetworkAttachmentDefinition's config, parsed.
fn nad_configs() -> Vec<(String, Value)> {
    all_docs()
        .iter()
        .filter(|d| d.kind() == "NetworkAttachmentDefinition")
        .map(|d| {
            let text = d.value["spec"]["config"].as_str().expect("spec.config");
            let conf: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("{} {}: config is not JSON: {e}", d.file.display(), d.name())
            });
            (d.name().to_string(), conf)
        })
        .collect()
}

#[test]
fn nads_chain_bridge_then_cniscope_cni() {
    let nads = nad_configs();
    assert!(nads.iter().any(|(n, _)| n == "test-chainsaw"));
    for (name, conf) in &nads {
        let plugins = conf["plugins"].as_array().expect("a chain (plugins list)");
        let types: Vec<&str> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "cniscope-cni"], "{name}");
        assert_eq!(plugins[0]["ipam"]["type"], "host-local", "{name}");
        assert!(conf["cniVersion"].is_string() && conf["name"].is_string());
        if let Some(kc) = plugins[1]["kubeconfig"].as_str() {
            assert_eq!(
                kc, "/etc/cni/net.d/cniscope.d/cniscope.kubeconfig",
                "{name}"
            );
        }
    }
    // The pod example carries chainsaw's annotation as a JSON list and uses the seed's NAD.
    let docs = parse_file(&deploy_dir().join("examples/pod-chainsaw.yaml"));
    let ann = &find(&docs, "Pod", "chainsawtestpod")["metadata"]["annotations"];
    assert_eq!(ann["k8s.v1.cni.cncf.io/networks"], "test-chainsaw");
    let cmds: Vec<String> =
        serde_json::from_str(ann["k8s.v1.cni.cncf.io/chainsaw"].as_str().unwrap()).unwrap();
    assert_eq!(
        cmds,
        [
            "ip route add 192.0.3.0/24 dev CURRENT_INTERFACE",
            "ip route"
        ]
    );
}

#[test]
fn kustomizations_name_existing_files_and_overlays_patch_existing_objects() {
    for dir in ["", "examples", "openshift"] {
        let d = deploy_dir().join(dir);
        let k = &parse_file(&d.join("kustomization.yaml"))[0].value;
        for r in k["resources"].as_array().expect("resources") {
            let p = d.join(r.as_str().unwrap());
            assert!(
                p.exists(),
                "{}: resource {} missing",
                d.display(),
                p.display()
            );
        }
    }
    // Every YAML file of the base directory is either in the kustomization or an example.
    let listed =
        strings(&parse_file(&deploy_dir().join("kustomization.yaml"))[0].value["resources"]);
    for f in std::fs::read_dir(deploy_dir()).unwrap() {
        let n = f.unwrap().file_name().to_string_lossy().into_owned();
        if n.ends_with(".yaml") && n != "kustomization.yaml" {
            let is_example = parse_file(&deploy_dir().join(&n))
                .iter()
                .any(|d| d.kind() == "NetworkAttachmentDefinition");
            assert!(
                listed.contains(&n) || is_example,
                "{n} is in no kustomization"
            );
        }
    }
    // The OpenShift patch names containers and volumes the base has, and its SCC allows
    // exactly the agent's capabilities.
    let os = deploy_dir().join("openshift");
    let ds = daemonset();
    let patch = &parse_file(&os.join("daemonset-paths.yaml"))[0].value;
    let spec = &patch["spec"]["template"]["spec"];
    for key in ["containers", "initContainers"] {
        for c in spec[key].as_array().into_iter().flatten() {
            container(&ds, c["name"].as_str().unwrap());
        }
    }
    let vols: BTreeSet<String> = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let mut patched = BTreeSet::new();
    for v in spec["volumes"].as_array().unwrap() {
        let n = v["name"].as_str().unwrap();
        assert!(vols.contains(n), "openshift patches unknown volume {n}");
        patched.insert((
            n.to_string(),
            v["hostPath"]["path"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert!(patched.contains(&("cni-bin".into(), "/var/lib/cni/bin".into())));
    assert!(patched.contains(&("cni-net-d".into(), "/etc/kubernetes/cni/net.d".into())));
    let scc = parse_file(&os.join("scc.yaml"));
    let scc = find(&scc, "SecurityContextConstraints", "cniscope");
    assert_eq!(
        strings(&scc["allowedCapabilities"]),
        set(AGENT_CAPABILITIES)
    );
    assert_eq!(scc["allowPrivilegedContainer"], false);
}
