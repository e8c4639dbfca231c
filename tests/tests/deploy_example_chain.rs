//! The example NetworkAttachmentDefinition and pod in deploy/examples, run for real: the NAD's
//! bridge config (with a bridge name and IPAM dir of the test's own) and then cniscope-cni with
//! the NAD's exact policy and the pod annotation's commands, in a real netns (root).

use std::path::Path;

use cniscope_tests::deploy::{deploy_dir, find, parse_file, yaml_files};
use cniscope_tests::plugin_chain::{Chain, invoke, plugin_bin};
use serde_json::{Value, json};

/// Every NetworkAttachmentDefinition's config, parsed.
fn nad_configs() -> Vec<(String, Value)> {
    yaml_files(&deploy_dir())
        .iter()
        .flat_map(|f| parse_file(f))
        .collect::<Vec<_>>()
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

/// The example NAD's chain with the real plugins: bridge (its config from the NAD, with a bridge
/// name and IPAM dir of the test's own) then cniscope-cni with the NAD's exact policy and the
/// pod example's commands. The route lands in the pod's netns, prevResult passes unchanged.
#[test]
fn example_nad_chain_runs_on_real_bridge_and_cniscope_cni() {
    cniscope_tests::require_root();
    let (_, conf) = nad_configs()
        .into_iter()
        .find(|(n, _)| n == "test-chainsaw")
        .expect("test-chainsaw");
    let version = conf["cniVersion"].as_str().unwrap().to_string();
    let chain = Chain::new();
    let mut bridge = conf["plugins"][0].clone();
    bridge["bridge"] = json!(chain.bridge);
    bridge["ipam"]["dataDir"] = json!(chain.dir.path().join("ipam"));
    let docs = parse_file(&deploy_dir().join("examples/pod-chainsaw.yaml"));
    let ann = find(&docs, "Pod", "chainsawtestpod")["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/chainsaw"]
        .as_str()
        .unwrap()
        .to_string();
    let commands: Value = serde_json::from_str(&ann).unwrap();
    let mut plugin = conf["plugins"][1].clone();
    plugin["tagDir"] = json!(chain.tag_dir());
    plugin["commands"] = commands;
    let with = |p: &Value, prev: Option<&Value>| {
        let mut c = p.clone();
        c["cniVersion"] = json!(version);
        c["name"] = conf["name"].clone();
        if let Some(prev) = prev {
            c["prevResult"] = prev.clone();
        }
        serde_json::to_vec(&c).unwrap()
    };
    let nspath = chain.ns.path();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", chain.container_id.as_str()),
            ("CNI_NETNS", nspath.as_str()),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", cniscope_tests::CNI_BIN),
        ]
    };
    let bridge_bin = Path::new(cniscope_tests::CNI_BIN).join("bridge");
    let add = invoke(&bridge_bin, &env("ADD"), &with(&bridge, None));
    assert!(
        add.ok(),
        "bridge ADD: {}",
        String::from_utf8_lossy(&add.stdout)
    );
    let prev = add.json();
    let out = invoke(&plugin_bin(), &env("ADD"), &with(&plugin, Some(&prev)));
    assert!(
        out.ok(),
        "cniscope-cni ADD with the example's policy failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.json(), prev, "prevResult must pass through unchanged");
    let routes = chain.ns.ip(&["route", "show", "192.0.3.0/24"]);
    assert!(
        routes.contains("192.0.3.0/24 dev net1"),
        "the annotated route is not in the pod netns: {routes:?}"
    );
    assert!(
        Chain::host_route("192.0.3.0/24").is_empty(),
        "route leaked to the host"
    );
    let tag = chain.tag().expect("a netns tag");
    let cmds = &tag["attachments"][0]["commands"];
    assert_eq!(cmds[0]["outcome"], "ran", "{tag}");
    assert!(
        cmds[1]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("192.0.3.0/24"),
        "{tag}"
    );
    let del = invoke(&plugin_bin(), &env("DEL"), &with(&plugin, Some(&prev)));
    assert!(del.ok(), "cniscope-cni DEL");
    let del = invoke(&bridge_bin, &env("DEL"), &with(&bridge, Some(&prev)));
    assert!(del.ok(), "bridge DEL");
}
