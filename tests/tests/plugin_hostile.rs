//! The hostile-annotation corpus (cni-plugin/tests/hostile.json) through the real
//! `cniscope-cni` binary, in a real pod netns behind a real bridge, with annotations served by
//! a local HTTP server playing the API server. `ipPath` points at a wrapper that logs the netns
//! it runs in and its argv before exec'ing the real ip: the log is the proof of what ran.

use std::path::Path;

use cniscope_tests::plugin_chain::Chain;
use cniscope_tests::plugin_fakeapi::{FakeApi, pod};
use serde_json::{Value, json};

fn corpus() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cni-plugin/tests/hostile.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("hostile.json")).expect("JSON")
}

fn value(case: &Value) -> Value {
    let v = &case["value"];
    let n = case["count"].as_u64().unwrap_or(0) as usize;
    match case["generate"].as_str() {
        Some("repeat") => Value::Array(vec![v.clone(); n]),
        Some("pad") => json!([format!("{}{}", v.as_str().unwrap(), "a".repeat(n))]),
        _ => v.clone(),
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const K8S: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=pod-1";
const POD_PATH: &str = "/api/v1/namespaces/lab/pods/pod-1";

#[test]
fn hostile_corpus_through_the_real_binary() {
    let c = corpus();
    let chain = Chain::new();
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(chain.dir.path());
    let prev = chain.bridge_add("1.0.0");
    let log = chain.dir.path().join("ip.log");
    let wrapper = chain.dir.path().join("ip-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$(stat -L -c %i /proc/self/ns/net) $*\" >> {}\nexec /usr/sbin/ip \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let inode = chain.ns.inode();
    let cases = c["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let reason = case["reason"].as_str().unwrap();
        let may_run: Vec<String> = case["may_run"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some(s.as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        for mode in ["passthrough", "fail"] {
            let _ = std::fs::remove_file(&log);
            let mut policy = c["policy"].clone();
            policy["onError"] = json!(mode);
            let mut extra = json!({"policy": policy, "ipPath": wrapper, "kubeconfig": kubeconfig,
                                   "agentSocket": chain.dir.path().join("no-agent.sock")});
            let v = value(case);
            let mut args: Vec<u8> = b"IgnoreUnknown=1".to_vec();
            match case["via"].as_str().unwrap_or("annotation") {
                via @ ("annotation" | "annotation_raw" | "chainsaw") => {
                    args = K8S.as_bytes().to_vec();
                    let key = if via == "chainsaw" {
                        "k8s.v1.cni.cncf.io/chainsaw"
                    } else {
                        "cniscope.io/commands"
                    };
                    let ann = if via == "annotation_raw" {
                        v
                    } else {
                        json!(as_text(&v))
                    };
                    api.put(POD_PATH, pod("lab", "pod-1", "uid-h", json!({key: ann})));
                }
                "cni_args" => {
                    args.extend_from_slice(b";CNISCOPE_COMMANDS=");
                    match case["value_hex"].as_str() {
                        Some(h) => args.extend(
                            (0..h.len())
                                .step_by(2)
                                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()),
                        ),
                        None => args.extend(as_text(&v).into_bytes()),
                    }
                }
                "conf_args" => extra["args"] = json!({"cni": {"cniscope": {"commands": v}}}),
                "runtime_config" => extra["runtimeConfig"] = json!({"cniscopeCommands": v}),
                "conf" => extra["commands"] = v,
                other => panic!("unknown via {other}"),
            }
            let plugin = chain.cniscope_plugin(extra);
            let out = run_with_raw_args(&chain, &args, &chain.stdin("1.0.0", &plugin, Some(&prev)));
            let ran: Vec<String> = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            for r in &ran {
                let (ino, argv) = r.split_once(' ').unwrap_or((r, ""));
                assert_eq!(
                    ino,
                    inode.to_string(),
                    "{name} [{mode}]: ran outside the pod netns: {r}"
                );
                let shown = format!("ip {argv}");
                assert!(
                    mode == "passthrough" && may_run.contains(&shown),
                    "{name} [{mode}]: {shown:?} ran"
                );
            }
            if mode == "passthrough" {
                let shown: Vec<String> = ran
                    .iter()
                    .map(|r| format!("ip {}", r.split_once(' ').map_or("", |x| x.1)))
                    .collect();
                assert_eq!(
                    shown, may_run,
                    "{name}: exactly the allowed commands run, in order"
                );
            }
            let tag = chain.tag().expect("tag");
            let t = tag["attachments"][0].to_string();
            assert!(
                t.contains(reason),
                "{name} [{mode}]: {reason:?} not in tag {t:.500}"
            );
            if mode == "passthrough" {
                assert!(out.ok(), "{name}: {}", String::from_utf8_lossy(&out.stdout));
                assert_eq!(out.json(), prev, "{name}: prevResult must pass through");
            } else {
                let want = if case["kind"] == "source" { 103 } else { 100 };
                assert_eq!(out.code, Some(1), "{name}");
                assert_eq!(out.json()["code"], want, "{name}: {}", out.json());
            }
        }
    }
    // The corpus ran; the pod netns is as the bridge left it (no route was added by it).
    assert!(!chain.ns.ip(&["route"]).contains("10.9.0.0/16"));
}

/// Like `Chain::run_cniscope`, with CNI_ARGS given as bytes (they may be non-UTF-8).
fn run_with_raw_args(
    chain: &Chain,
    args: &[u8],
    stdin: &[u8],
) -> cniscope_tests::plugin_chain::Out {
    use std::ffi::OsStr;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(cniscope_tests::plugin_chain::plugin_bin())
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &chain.container_id)
        .env("CNI_NETNS", chain.ns.path())
        .env("CNI_IFNAME", &chain.ifname)
        .env("CNI_PATH", cniscope_tests::CNI_BIN)
        .env("CNI_ARGS", OsStr::from_bytes(args))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cniscope-cni");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    cniscope_tests::plugin_chain::Out {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: o.stderr,
    }
}
