//! The timeline live (issue: correlate plugin runs, netlink changes and tags into invocations):
//! a real runtime (podman 4 with its CNI backend) runs a real chain while the agent watches.

use std::time::Duration;

use cniscope_tests::agent::Agent;
use cniscope_tests::podman::{IMAGE, Podman, text};
use serde_json::{Value, json};

const ARGS: &str =
    "CNISCOPE_COMMANDS=[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\",\"ip route\"]";

fn invocation(agent: &Agent, command: &str, cid: &str) -> Value {
    agent.wait_for(
        &format!("{command} invocation of {cid}"),
        Duration::from_secs(30),
        |v| v["type"] == "invocation" && v["command"] == command && v["container_id"] == cid,
    )
}

fn ops(step: &Value) -> Vec<&Value> {
    step["netlink"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[test]
fn podman_add_and_del_are_invocations_with_the_chain_in_order() {
    let p = Podman::with_plugins(|_, _| {
        vec![
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall"}),
            json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "0"}}),
        ]
    });
    let tags = p.dir.path().join("tags");
    let agent = Agent::start(&["--quiet-ms", "300", "--tag-dir", tags.to_str().unwrap()]);
    let name = cniscope_tests::unique("csctl");
    let net = format!("--network={}", p.network);
    let out = p.podman(
        Some(ARGS),
        &[
            "run", "-d", "--name", &name, &net, "-p", "18091:80", IMAGE, "sleep", "60",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let add = invocation(&agent, "ADD", &cid);
    assert_eq!(
        add["chain"],
        json!(["bridge", "portmap", "firewall", "tuning", "cniscope-cni"]),
        "{add:#}"
    );
    assert_eq!(add["verdict"]["ok"], true, "{}", add["verdict"]);
    assert_eq!(add["runtime"]["comm"], "podman");
    assert_eq!(add["network"], p.network.as_str());
    let steps = add["steps"].as_array().unwrap();
    assert_eq!(steps[0]["delegates"][0]["plugin"], "host-local");
    let pod_ns = add["netns_inode"].as_u64().expect("pod netns inode");
    // bridge's changes in the pod's netns: the address and the default route.
    let bridge_in_pod: Vec<_> = ops(&steps[0])
        .into_iter()
        .filter(|o| o["netns"] == pod_ns)
        .collect();
    assert!(
        bridge_in_pod
            .iter()
            .any(|o| o["object"] == "addr" && o["verb"] == "add"),
        "{bridge_in_pod:#?}"
    );
    assert!(bridge_in_pod.iter().any(|o| {
        o["op"]
            .as_str()
            .unwrap()
            .starts_with("route add default via")
    }));
    assert!(
        bridge_in_pod
            .iter()
            .all(|o| o["outcome"]["status"] == "ack")
    );
    // portmap received the port mapping and added iptables rules (spawned processes).
    assert!(steps[1]["stdin"].as_str().unwrap().contains("18091"));
    // cniscope-cni's route in the pod netns, acknowledged.
    let route = ops(&steps[4])
        .into_iter()
        .find(|o| {
            o["op"]
                .as_str()
                .unwrap()
                .starts_with("route add 192.0.3.0/24 dev eth0")
        })
        .unwrap_or_else(|| panic!("{:#}", steps[4]));
    assert_eq!(route["outcome"]["status"], "ack");
    assert_eq!(route["netns"], pod_ns);
    assert_eq!(add["tag"]["source"], "CNI_ARGS CNISCOPE_COMMANDS");

    let out = p.podman(None, &["rm", "-f", "-t", "0", &name]);
    assert!(out.status.success(), "{}", text(&out));
    let del = invocation(&agent, "DEL", &cid);
    assert_eq!(
        del["chain"],
        json!(["cniscope-cni", "tuning", "firewall", "portmap", "bridge"]),
        "{del:#}"
    );
    assert_eq!(del["verdict"]["ok"], true, "{}", del["verdict"]);
}

#[test]
fn a_failing_plugin_is_named_in_the_verdict() {
    let p = Podman::with_plugins(|_, _| {
        vec![json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "nonsense"}})]
    });
    let agent = Agent::start(&["--quiet-ms", "300"]);
    let net = format!("--network={}", p.network);
    let out = p.podman(None, &["run", "--rm", &net, IMAGE, "true"]);
    assert!(
        !out.status.success(),
        "the chain should have failed: {}",
        text(&out)
    );
    let add = agent.wait_for("failed ADD", Duration::from_secs(30), |v| {
        v["type"] == "invocation" && v["command"] == "ADD" && v["network"] == p.network.as_str()
    });
    assert_eq!(add["chain"], json!(["bridge", "tuning"]));
    let v = &add["verdict"];
    assert_eq!(v["ok"], false);
    assert_eq!(v["plugin"], "tuning");
    assert_eq!(v["failed_step"], 1);
    assert!(v["summary"].as_str().unwrap().contains("rp_filter"), "{v}");
}
