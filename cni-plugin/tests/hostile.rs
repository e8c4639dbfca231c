//! The hostile-annotation corpus (hostile.json) through the plugin's library with a recording
//! sandbox: every case gets a clear reason, nothing outside policy is asked to run, and the
//! reply is what the failure mode says (passthrough: prevResult unchanged; fail: error code).
//! `tests/tests/plugin_hostile.rs` runs the same corpus through the real binary in a real netns.

mod common;

use common::{Fake, TagDir, conf, parse, prev_result};
use serde_json::{Value, json};

fn corpus() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile.json"))
        .expect("reading hostile.json");
    serde_json::from_str(&text).expect("hostile.json is JSON")
}

/// The case's value after `generate`.
fn value(case: &Value) -> Value {
    let v = &case["value"];
    match case["generate"].as_str() {
        Some("repeat") => {
            let n = case["count"].as_u64().unwrap() as usize;
            Value::Array(vec![v.clone(); n])
        }
        Some("pad") => {
            let n = case["count"].as_u64().unwrap() as usize;
            json!([format!("{}{}", v.as_str().unwrap(), "a".repeat(n))])
        }
        _ => v.clone(),
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets up `fake` and the config so the commands come from the case's source.
fn place(case: &Value, fake: &mut Fake, policy: &Value, mode: &str) -> Value {
    let mut policy = policy.clone();
    policy["onError"] = json!(mode);
    let mut extra = json!({"policy": policy});
    let v = value(case);
    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=pod-1";
    let pod = |key: &str, ann: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "pod-1", "namespace": "lab", "uid": "0b7e-1", "annotations": {key: ann}}})
    };
    match case["via"].as_str().unwrap_or("annotation") {
        "annotation" => {
            fake.set_env_bytes("CNI_ARGS", k8s.as_bytes());
            fake.pod = Some(pod("cniscope.io/commands", json!(as_text(&v))));
        }
        "annotation_raw" => {
            fake.set_env_bytes("CNI_ARGS", k8s.as_bytes());
            fake.pod = Some(pod("cniscope.io/commands", v));
        }
        "chainsaw" => {
            fake.set_env_bytes("CNI_ARGS", k8s.as_bytes());
            fake.pod = Some(pod("k8s.v1.cni.cncf.io/chainsaw", json!(as_text(&v))));
        }
        "cni_args" => {
            let bytes = match case["value_hex"].as_str() {
                Some(h) => (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect(),
                None => as_text(&v).into_bytes(),
            };
            let mut args = b"IgnoreUnknown=1;CNISCOPE_COMMANDS=".to_vec();
            args.extend(bytes);
            fake.set_env_bytes("CNI_ARGS", &args);
        }
        "conf_args" => extra["args"] = json!({"cni": {"cniscope": {"commands": v}}}),
        "runtime_config" => extra["runtimeConfig"] = json!({"cniscopeCommands": v}),
        "conf" => extra["commands"] = v,
        other => panic!("unknown via {other}"),
    }
    conf("1.0.0", extra)
}

#[test]
fn hostile_corpus_both_failure_modes() {
    let _tags = TagDir::new();
    let c = corpus();
    let cases = c["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "the corpus must keep at least 50 cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let reason = case["reason"].as_str().unwrap();
        let may_run: Vec<&str> = case["may_run"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for mode in ["passthrough", "fail"] {
            let mut fake = Fake::new("ADD");
            let input = place(case, &mut fake, &c["policy"], mode);
            let reply = fake.run(&input);
            let ran: Vec<String> = fake.ran.borrow().iter().map(|a| a.join(" ")).collect();
            let report = reply.report.clone().unwrap_or(Value::Null);
            let report_text = report.to_string();
            assert!(
                report_text.contains(reason),
                "{name} [{mode}]: reason {reason:?} not in report {report_text:.600}"
            );
            // Every command that was not run carries a reason.
            for e in report["commands"].as_array().into_iter().flatten() {
                if e["outcome"] != "ran" {
                    assert!(
                        e["reason"].as_str().is_some_and(|r| !r.is_empty()),
                        "{name}: {e}"
                    );
                }
            }
            if mode == "passthrough" {
                assert_eq!(reply.exit_code, 0, "{name}: passthrough must succeed");
                assert_eq!(
                    parse(&reply),
                    prev_result("1.0.0"),
                    "{name}: prevResult must pass through"
                );
                for r in &ran {
                    assert!(
                        may_run.contains(&r.as_str()),
                        "{name}: ran {r:?} outside policy"
                    );
                }
            } else {
                let want = if case["kind"] == "source" { 103 } else { 100 };
                let out = parse(&reply);
                assert_ne!(reply.exit_code, 0, "{name}: fail mode must fail");
                assert_eq!(out["code"], want, "{name}: {out}");
                assert_eq!(out["cniVersion"], "1.0.0");
                assert!(
                    out["details"].as_str().is_some_and(|d| !d.is_empty()),
                    "{name}"
                );
                assert!(ran.is_empty(), "{name}: fail mode ran {ran:?}");
            }
        }
    }
}

#[test]
fn a_benign_list_runs_in_order() {
    let _tags = TagDir::new();
    let fake = Fake::new("ADD");
    let input = conf(
        "1.0.0",
        json!({"policy": {"allow": ["route add"]},
               "commands": ["ip route add 192.0.3.0/24 dev CURRENT_INTERFACE", "ip -j route", "ip addr show dev CURRENT_INTERFACE"]}),
    );
    let reply = fake.run(&input);
    assert_eq!(reply.exit_code, 0);
    assert_eq!(
        *fake.ran.borrow(),
        vec![
            vec!["ip", "route", "add", "192.0.3.0/24", "dev", "eth0"],
            vec!["ip", "-j", "route"],
            vec!["ip", "addr", "show", "dev", "eth0"],
        ]
    );
    fake.ran.borrow_mut().clear();
    // The namespace restriction applies to annotations.
    let mut fake2 = Fake::new("ADD");
    fake2.set_env_bytes("CNI_ARGS", b"K8S_POD_NAMESPACE=prod;K8S_POD_NAME=p");
    fake2.pod =
        Some(json!({"metadata": {"annotations": {"cniscope.io/commands": "[\"ip route\"]"}}}));
    let reply = fake2.run(&conf(
        "1.0.0",
        json!({"policy": {"namespaces": ["lab"], "onError": "fail"}}),
    ));
    assert_eq!(parse(&reply)["code"], 100);
    assert!(
        parse(&reply)["details"]
            .as_str()
            .unwrap()
            .contains("not in policy.namespaces")
    );
    assert!(fake2.ran.borrow().is_empty());
}
