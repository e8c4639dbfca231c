//! cniscope-cni in a real chain: bridge (+ host-local) → cniscope-cni, invoked exactly as a
//! runtime does, in a netns made for the test, for every CNI version the plugin supports.

use cniscope_tests::plugin_chain::{Chain, VERSIONS};
use serde_json::{Value, json};

const COMMANDS: [&str; 2] = [
    "ip route add 192.0.3.0/24 dev CURRENT_INTERFACE",
    "ip route",
];

fn cniscope(chain: &Chain, extra: Value) -> Value {
    let mut e = json!({"policy": {"allow": ["route add"]}, "commands": COMMANDS});
    if let (Some(o), Value::Object(x)) = (e.as_object_mut(), extra) {
        o.extend(x);
    }
    chain.cniscope_plugin(e)
}

#[test]
fn chain_add_check_del_every_version() {
    for v in VERSIONS {
        let chain = Chain::new();
        let prev = bridge_prev(&chain, v);
        let plugin = cniscope(&chain, json!({}));
        let out = chain.run_cniscope("ADD", None, &chain.stdin(v, &plugin, Some(&prev)));
        assert!(
            out.ok(),
            "{v}: ADD failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The result is prevResult, unchanged (same version, every field, same order).
        assert_eq!(out.json(), prev, "{v}: result differs from prevResult");
        let keys = |x: &Value| x.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&out.json()), keys(&prev));
        // The route is in the pod's netns and not in the host's.
        let pod_route = chain.ns.ip(&["route", "show", "192.0.3.0/24"]);
        assert!(
            pod_route.contains("192.0.3.0/24 dev eth0"),
            "{v}: pod routes: {pod_route:?}"
        );
        assert_eq!(
            Chain::host_route("192.0.3.0/24").trim(),
            "",
            "{v}: route leaked into the host"
        );
        // The tag holds the pod's `ip route` output and the netns identity.
        let tag = chain.tag().unwrap_or_else(|| panic!("{v}: no tag written"));
        assert_eq!(tag["netns_inode"], chain.ns.inode());
        let att = &tag["attachments"][0];
        assert_eq!(att["container_id"], chain.container_id.as_str());
        assert_eq!(att["cni_version"], *v);
        assert_eq!(att["commands"][0]["outcome"], "ran");
        assert_eq!(att["commands"][0]["argv"][5], "eth0", "CURRENT_INTERFACE");
        let shown = att["commands"][1]["stdout"].as_str().unwrap_or("");
        assert!(
            shown.contains("192.0.3.0/24 dev eth0"),
            "{v}: ip route output: {shown:?}"
        );
        assert!(
            shown.contains(&chain.subnet),
            "{v}: ip route output: {shown:?}"
        );

        // CHECK (0.4.0 and later): prevResult present and the netns exists → success.
        if v != &"0.3.0" && v != &"0.3.1" {
            let out = chain.run_cniscope("CHECK", None, &chain.stdin(v, &plugin, Some(&prev)));
            assert!(
                out.ok(),
                "{v}: CHECK failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            // CHECK without prevResult is a config error.
            let out = chain.run_cniscope("CHECK", None, &chain.stdin(v, &plugin, None));
            assert_eq!(out.json()["code"], 7, "{v}");
        } else {
            let out = chain.run_cniscope("CHECK", None, &chain.stdin(v, &plugin, Some(&prev)));
            assert_eq!(out.json()["code"], 1, "{v}: CHECK is not in {v}");
        }

        // DEL removes the tag; a second DEL (state gone) still succeeds, and so does a DEL
        // after the netns itself is gone.
        let del = chain.stdin(v, &plugin, Some(&prev));
        let out = chain.run_cniscope("DEL", None, &del);
        assert!(
            out.ok() && out.stdout.is_empty(),
            "{v}: DEL: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(chain.tag().is_none(), "{v}: tag left after DEL");
        assert!(
            chain.run_cniscope("DEL", None, &del).ok(),
            "{v}: second DEL"
        );
        chain.bridge_del(bridge_version(v), None);
    }
}

/// Debian's bridge (plugins 1.1.1) speaks up to 1.0.0; a 1.1.0 result has the same schema, so
/// for 1.1.0 the bridge runs as 1.0.0 and its result is handed on as a 1.1.0 prevResult.
fn bridge_version(v: &str) -> &str {
    if v == "1.1.0" { "1.0.0" } else { v }
}

fn bridge_prev(chain: &Chain, v: &str) -> Value {
    let mut prev = chain.bridge_add(bridge_version(v));
    prev["cniVersion"] = json!(v);
    prev
}

#[test]
fn del_after_the_netns_is_gone_succeeds_and_finds_the_tag() {
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    let plugin = cniscope(&chain, json!({}));
    assert!(
        chain
            .run_cniscope("ADD", None, &chain.stdin("1.0.0", &plugin, Some(&prev)))
            .ok()
    );
    let tag_file = chain.tag_dir().join(format!("{}.json", chain.ns.inode()));
    assert!(tag_file.exists());
    let st = std::process::Command::new("ip")
        .args(["netns", "del", &chain.ns.name])
        .status()
        .expect("ip netns del");
    assert!(st.success());
    let out = chain.run_cniscope("DEL", None, &chain.stdin("1.0.0", &plugin, Some(&prev)));
    assert!(out.ok(), "DEL: {}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !tag_file.exists(),
        "the tag is found by container id when the netns is gone"
    );
}

#[test]
fn commands_from_cni_args_and_refusals_in_a_real_netns() {
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    let plugin = chain.cniscope_plugin(json!({"policy": {"allow": ["route add"]}}));
    let args = "IgnoreUnknown=1;CNISCOPE_COMMANDS=[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\",\"ip -n other route\",\"ip -j addr show dev CURRENT_INTERFACE\"]";
    let out = chain.run_cniscope(
        "ADD",
        Some(args),
        &chain.stdin("1.0.0", &plugin, Some(&prev)),
    );
    assert!(
        out.ok(),
        "passthrough mode: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.json(), prev);
    let tag = chain.tag().expect("tag");
    let cmds = &tag["attachments"][0]["commands"];
    assert_eq!(
        tag["attachments"][0]["source"],
        "CNI_ARGS CNISCOPE_COMMANDS"
    );
    assert_eq!(cmds[0]["outcome"], "ran");
    assert_eq!(cmds[1]["outcome"], "refused");
    assert!(
        cmds[1]["reason"]
            .as_str()
            .unwrap()
            .contains("network namespace")
    );
    let addr: Value =
        serde_json::from_str(cmds[2]["stdout"].as_str().unwrap()).expect("ip -j output");
    assert_eq!(addr[0]["ifname"], "eth0");
    assert!(chain.ns.ip(&["route"]).contains("192.0.3.0/24"));

    // Fail mode: the refused command stops everything before anything runs.
    let chain2 = Chain::new();
    let prev2 = chain2.bridge_add("1.0.0");
    let plugin2 =
        chain2.cniscope_plugin(json!({"policy": {"allow": ["route add"], "onError": "fail"}}));
    let out = chain2.run_cniscope(
        "ADD",
        Some(args),
        &chain2.stdin("1.0.0", &plugin2, Some(&prev2)),
    );
    assert_eq!(out.code, Some(1));
    let err = out.json();
    assert_eq!(err["code"], 100);
    assert_eq!(err["cniVersion"], "1.0.0");
    assert!(
        !chain2.ns.ip(&["route"]).contains("192.0.3.0/24"),
        "nothing may run in fail mode"
    );
}

#[test]
fn a_failing_and_a_hanging_command() {
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    // `ip route get` of an unreachable address fails; the fail mode turns it into a CNI error.
    let plugin = chain.cniscope_plugin(json!({
        "policy": {"onError": "fail", "allow": ["route add"]},
        "commands": ["ip route add 192.0.3.0/24 via 203.0.113.1", "ip route"]
    }));
    let out = chain.run_cniscope("ADD", None, &chain.stdin("1.0.0", &plugin, Some(&prev)));
    let err = out.json();
    assert_eq!(err["code"], 101, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("exited with 2"),
        "{err}"
    );
    let tag = chain.tag().expect("tag");
    assert_eq!(tag["attachments"][0]["commands"][1]["outcome"], "skipped");

    // A command that outlives the timeout is killed: a fake ip that sleeps.
    let fake_ip = chain.dir.path().join("slow-ip");
    std::fs::write(&fake_ip, "#!/bin/sh\nexec sleep 30\n").expect("write fake ip");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake_ip)
        .status()
        .expect("chmod");
    let plugin = chain.cniscope_plugin(json!({
        "ipPath": fake_ip, "policy": {"timeoutMs": 300}, "commands": ["ip route"]
    }));
    let t = std::time::Instant::now();
    let out = chain.run_cniscope("ADD", None, &chain.stdin("1.0.0", &plugin, Some(&prev)));
    assert!(out.ok(), "passthrough on timeout");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "timeout not enforced: {:?}",
        t.elapsed()
    );
    let tag = chain.tag().expect("tag");
    assert_eq!(tag["attachments"][0]["commands"][0]["outcome"], "timeout");
}

#[test]
fn the_child_runs_in_the_pod_netns_only() {
    // A fake ip that reports which netns it is in: proves setns happened before exec.
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    let fake_ip = chain.dir.path().join("whereami-ip");
    std::fs::write(
        &fake_ip,
        "#!/bin/sh\nexec stat -L -c %i /proc/self/ns/net\n",
    )
    .expect("write");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake_ip)
        .status()
        .expect("chmod");
    let plugin = chain.cniscope_plugin(json!({"ipPath": fake_ip, "commands": ["ip route"]}));
    let out = chain.run_cniscope("ADD", None, &chain.stdin("1.0.0", &plugin, Some(&prev)));
    assert!(out.ok());
    let tag = chain.tag().expect("tag");
    let seen = tag["attachments"][0]["commands"][0]["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(seen, chain.ns.inode().to_string());
    // The host's own netns as CNI_NETNS is refused, whatever the commands (`self` is the
    // plugin process, which runs in the runtime's — the host's — namespace).
    let host = "/proc/self/ns/net";
    let env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "host-test"),
        ("CNI_NETNS", host),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let plugin = chain.cniscope_plugin(
        json!({"ipPath": fake_ip, "commands": ["ip route"], "policy": {"onError": "fail"}}),
    );
    let out = cniscope_tests::plugin_chain::invoke(
        &cniscope_tests::plugin_chain::plugin_bin(),
        &env,
        &chain.stdin("1.0.0", &plugin, Some(&prev)),
    );
    let err = out.json();
    assert_eq!(err["code"], 5, "{err}");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("host's network namespace")
    );
}

#[test]
fn log_file_is_env_expanded() {
    let chain = Chain::new();
    let prev = chain.bridge_add("0.4.0");
    let template = format!(
        "{}/debug_${{CNI_CONTAINERID}}_${{CNI_COMMAND}}.log",
        chain.dir.path().display()
    );
    let plugin = chain.cniscope_plugin(json!({"logFile": template, "commands": ["ip route"]}));
    assert!(
        chain
            .run_cniscope("ADD", None, &chain.stdin("0.4.0", &plugin, Some(&prev)))
            .ok()
    );
    let f = chain
        .dir
        .path()
        .join(format!("debug_{}_ADD.log", chain.container_id));
    let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
    assert!(text.contains("CNI_COMMAND=ADD"));
    assert!(text.contains("---- stdin ----"));
    assert!(
        text.contains(&chain.subnet),
        "stdout and the ip route output are logged"
    );
}
