//! The plugin's commands end to end through the library, for every supported version.

mod common;

use common::{Fake, TagDir, conf, parse, prev_result, tag_dir};
use serde_json::{Value, json};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn add_passes_prev_result_through_in_every_version() {
    let _tags = TagDir::new();
    for v in VERSIONS {
        let fake = Fake::new("ADD");
        let reply = fake.run(&conf(v, json!({"commands": ["ip route"]})));
        assert_eq!(reply.exit_code, 0, "{v}");
        assert_eq!(
            parse(&reply),
            prev_result(v),
            "{v}: result must equal prevResult"
        );
        // Field order is kept too (serde_json preserve_order).
        let keys: Vec<String> = parse(&reply).as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys[0], "cniVersion");
        assert_eq!(keys.last().unwrap(), "x-vendor-field");
        assert_eq!(fake.ran.borrow().len(), 1);
    }
}

#[test]
fn add_without_prev_result_is_a_config_error() {
    let _tags = TagDir::new();
    let fake = Fake::new("ADD");
    let mut c = conf("1.0.0", json!({}));
    c.as_object_mut().unwrap().remove("prevResult");
    let out = parse(&fake.run(&c));
    assert_eq!(out["code"], 7);
    assert!(out["details"].as_str().unwrap().contains("chained"));
}

#[test]
fn errors_use_spec_codes() {
    let _tags = TagDir::new();
    // Unknown version.
    let out = parse(&Fake::new("ADD").run(&conf("0.2.0", json!({}))));
    assert_eq!(out["code"], 1);
    // Missing CNI_NETNS on ADD.
    let mut f = Fake::new("ADD");
    f.env.remove("CNI_NETNS");
    let r = f.run(&conf("1.0.0", json!({})));
    assert_eq!((r.exit_code, parse(&r)["code"].clone()), (1, json!(4)));
    // Garbage on stdin.
    let f = Fake::new("ADD");
    let r = cniscope_cni::plugin::run(&f, b"{not json");
    assert_eq!(parse(&r)["code"], 6);
    // Bad policy.
    let r = Fake::new("ADD").run(&conf("1.0.0", json!({"policy": {"allow": ["netns exec"]}})));
    assert_eq!(parse(&r)["code"], 7);
    // CHECK before 0.4.0, STATUS and GC before 1.1.0.
    for (cmd, v) in [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "0.4.0")] {
        let r = Fake::new(cmd).run(&conf(v, json!({})));
        assert_eq!(parse(&r)["code"], 1, "{cmd} {v}");
    }
}

#[test]
fn fail_mode_reports_a_failed_command() {
    let _tags = TagDir::new();
    let mut f = Fake::new("ADD");
    f.exit_code = 2;
    let r = f.run(&conf(
        "1.0.0",
        json!({"policy": {"onError": "fail", "allow": ["route add"]},
               "commands": ["ip route add 10.9.0.0/16 dev CURRENT_INTERFACE", "ip route"]}),
    ));
    assert_eq!(parse(&r)["code"], 101);
    // The second command was not run after the first failed.
    assert_eq!(f.ran.borrow().len(), 1);
    let cmds = r.report.unwrap()["commands"].clone();
    assert_eq!(cmds[1]["outcome"], "skipped");
    // Passthrough: both run, ADD succeeds.
    let mut f = Fake::new("ADD");
    f.exit_code = 2;
    let r = f.run(&conf("1.0.0", json!({"commands": ["ip route", "ip addr"]})));
    assert_eq!(r.exit_code, 0);
    assert_eq!(f.ran.borrow().len(), 2);
}

#[test]
fn del_never_fails_for_missing_state() {
    let _tags = TagDir::new();
    for v in VERSIONS {
        let mut f = Fake::new("DEL");
        f.env.remove("CNI_NETNS");
        f.netns_ok = false;
        let r = f.run(&conf(v, json!({"tagDir": "/nonexistent/cniscope/tags"})));
        assert_eq!(
            r.exit_code,
            0,
            "{v}: {}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn add_then_del_writes_and_removes_the_tag() {
    let _tags = TagDir::new();
    let dir = tag_dir();
    let f = Fake::new("ADD");
    let with_dir = json!({"commands": ["ip route"], "tagDir": dir});
    assert_eq!(f.run(&conf("1.0.0", with_dir)).exit_code, 0);
    let path = std::path::Path::new(&dir).join("4026530000.json");
    let tag: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(tag["attachments"][0]["commands"][0]["stdout"], "ok\n");
    assert_eq!(tag["attachments"][0]["container_id"], "cid-1");
    let r = Fake::new("DEL").run(&conf("1.0.0", json!({"tagDir": dir})));
    assert_eq!(r.exit_code, 0);
    assert!(!path.exists());
}

#[test]
fn check_needs_prev_result_and_a_netns() {
    let _tags = TagDir::new();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        assert_eq!(
            Fake::new("CHECK").run(&conf(v, json!({}))).exit_code,
            0,
            "{v}"
        );
        let mut c = conf(v, json!({}));
        c.as_object_mut().unwrap().remove("prevResult");
        assert_eq!(parse(&Fake::new("CHECK").run(&c))["code"], 7);
        let mut f = Fake::new("CHECK");
        f.netns_ok = false;
        assert_eq!(parse(&f.run(&conf(v, json!({}))))["code"], 104);
    }
}

#[test]
fn status_gc_and_version() {
    let _tags = TagDir::new();
    let r = Fake::new("STATUS").run(&conf("1.1.0", json!({})));
    assert_eq!((r.exit_code, r.stdout.len()), (0, 0));
    let r = Fake::new("GC").run(&conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "x", "ifname": "eth0"}]}),
    ));
    assert_eq!(r.exit_code, 0);
    let r = Fake::new("GC").run(&conf("1.1.0", json!({"cni.dev/valid-attachments": 5})));
    assert_eq!(parse(&r)["code"], 6);
    let f = Fake::new("VERSION");
    let out = parse(&cniscope_cni::plugin::run(&f, b""));
    assert_eq!(out["supportedVersions"], json!(VERSIONS));
    let out = parse(&f.run(&json!({"cniVersion": "0.4.0"})));
    assert_eq!(out["cniVersion"], "0.4.0");
}
