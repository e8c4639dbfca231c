//! Replays of committed real recordings (tests/fixtures/make.sh says how they were made) through
//! the agent's pipeline: kernel-free, so these run with the unit tests.

use std::path::PathBuf;

use cniscope::replay::{ReplayArgs, replay_to};
use serde_json::Value;

fn replay(name: &str) -> Vec<Value> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let args = ReplayArgs {
        file,
        events: false,
        quiet_ms: 1000,
    };
    let mut out = Vec::new();
    replay_to(&args, &mut out).expect("replay");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

fn invocation<'a>(lines: &'a [Value], command: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["type"] == "invocation" && v["command"] == command)
        .unwrap_or_else(|| panic!("no {command} invocation in {lines:#?}"))
}

fn ops(step: &Value) -> Vec<String> {
    step["netlink"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn chain_add_is_one_invocation_with_steps_in_order_and_what_each_did() {
    let lines = replay("chain-add-del.rec");
    let add = invocation(&lines, "ADD");
    assert_eq!(
        add["chain"],
        serde_json::json!(["bridge", "tuning", "portmap", "cniscope-cni"])
    );
    assert_eq!(add["verdict"]["ok"], true, "{}", add["verdict"]);
    assert_eq!(add["pod"]["namespace"], "shop");
    assert_eq!(add["pod"]["name"], "web-7d4f9");
    assert_eq!(add["container_id"], "fixture1");
    assert_eq!(add["ifname"], "eth0");
    assert_eq!(add["network"], "fixture-net");
    assert_eq!(add["revision"], 1);
    assert_eq!(add["partial"], false);
    let steps = add["steps"].as_array().unwrap();
    let starts: Vec<u64> = steps
        .iter()
        .map(|s| s["start_ns"].as_u64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "steps out of order"
    );
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["index"], i);
        assert_eq!(s["exit"]["code"], 0, "{}", s["plugin"]);
        assert!(s["duration_ns"].as_u64().unwrap() > 0);
        assert_eq!(s["complete"], true, "{}", s["problems"]);
    }

    // bridge: host-local as its delegate, the veth made in the pod netns, the address there.
    let bridge = &steps[0];
    assert_eq!(bridge["delegates"][0]["plugin"], "host-local");
    let b = ops(bridge);
    assert!(
        b.iter()
            .any(|o| o.starts_with("link add eth0 type veth peer name veth")
                && o.ends_with("netns host")),
        "{b:#?}"
    );
    let addr = bridge["netlink"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "addr")
        .unwrap();
    assert_eq!(addr["netns"], add["netns_inode"]);
    assert_eq!(addr["outcome"]["status"], "ack");
    assert!(
        bridge["diff"]["added"]["interfaces"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    // tuning and portmap passed the result through unchanged.
    assert_eq!(steps[1]["diff"]["unchanged"], true);

    // cniscope-cni: its route, in the pod netns, acknowledged, made by the `ip` it ran.
    let cni = &steps[3];
    let route = cni["netlink"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| {
            o["op"]
                .as_str()
                .unwrap()
                .starts_with("route add 192.0.3.0/24 dev eth0")
        })
        .unwrap_or_else(|| panic!("{:#?}", ops(cni)));
    assert_eq!(route["outcome"]["status"], "ack");
    assert_eq!(route["comm"], "ip");
    assert_eq!(route["netns"], add["netns_inode"]);
    assert!(
        cni["spawned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["argv"][0] == "ip")
    );
    // ... and its tag: each command with its output.
    let cmds = add["tag"]["commands"].as_array().unwrap();
    let show = cmds.iter().find(|c| c["command"] == "ip route").unwrap();
    assert_eq!(show["outcome"], "ran");
    assert!(
        show["stdout"]
            .as_str()
            .unwrap()
            .contains("192.0.3.0/24 dev eth0")
    );

    // The hand-made change in the pod's netns afterwards carries the pod.
    let later = lines.iter().find(|v| v["type"] == "netlink").unwrap();
    assert_eq!(
        later["op"],
        "route add 198.51.100.0/24 dev eth0 proto boot scope link table main"
    );
    assert_eq!(later["pod"]["name"], "web-7d4f9");
    assert_eq!(later["netns"], add["netns_inode"]);

    // DEL runs the chain in reverse.
    let del = invocation(&lines, "DEL");
    assert_eq!(
        del["chain"],
        serde_json::json!(["cniscope-cni", "portmap", "tuning", "bridge"])
    );
    assert_eq!(del["verdict"]["ok"], true);
    assert!(
        ops(&del["steps"][3])
            .iter()
            .any(|o| o == "link del dev eth0")
    );
}

#[test]
fn a_failing_chain_names_the_plugin_and_its_error() {
    let lines = replay("chain-fail.rec");
    let add = invocation(&lines, "ADD");
    assert_eq!(
        add["chain"],
        serde_json::json!(["bridge", "tuning"]),
        "the runtime stops at the failure"
    );
    let v = &add["verdict"];
    assert_eq!(v["ok"], false);
    assert_eq!(v["failed_step"], 1);
    assert_eq!(v["plugin"], "tuning");
    assert!(
        v["error"]["msg"].as_str().unwrap().contains("rp_filter"),
        "{v}"
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("tuning (step 1) failed: CNI error"),
        "{v}"
    );
    assert_eq!(add["slowest"]["plugin"], "bridge");
    let del = invocation(&lines, "DEL");
    assert_eq!(del["verdict"]["ok"], true);
}

#[test]
fn replay_is_deterministic() {
    assert_eq!(replay("chain-add-del.rec"), replay("chain-add-del.rec"));
}

#[test]
fn a_truncated_recording_is_an_error_not_a_panic() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chain-fail.rec");
    let bytes = std::fs::read(&src).unwrap();
    let cut = std::env::temp_dir().join(format!("cniscope-cut-{}.rec", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let args = ReplayArgs {
        file: cut.clone(),
        events: false,
        quiet_ms: 1000,
    };
    let r = replay_to(&args, &mut Vec::new());
    let _ = std::fs::remove_file(&cut);
    let e = r.expect_err("a cut recording must be reported");
    assert!(
        format!("{e:#}").contains("recording ends inside a frame"),
        "{e:#}"
    );
}
