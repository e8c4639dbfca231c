//! The annotation source against a local HTTP server playing the Kubernetes API server (none
//! can be installed here), and against a unix socket playing the cniscope agent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use cniscope_tests::plugin_chain::Chain;
use cniscope_tests::plugin_fakeapi::{FakeApi, namespace, pod};
use serde_json::json;

const ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc";

#[test]
fn k8s_annotation_via_fake_apiserver() {
    let api = FakeApi::start();
    let chain = Chain::new();
    // chainsaw's own key and its exact example, for drop-in compatibility.
    api.put(
        "/api/v1/namespaces/lab/pods/web-1",
        pod("lab", "web-1", "6f1c7e52-3c1b-4a57-9a0e-000000000001", json!({
            "k8s.v1.cni.cncf.io/networks": "test-chainsaw",
            "k8s.v1.cni.cncf.io/chainsaw": "[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\", \"ip route\"]\n"
        })),
    );
    let kubeconfig = api.kubeconfig(chain.dir.path());
    let prev = chain.bridge_add("0.4.0");
    let plugin = chain.cniscope_plugin(json!({
        "kubeconfig": kubeconfig,
        "agentSocket": chain.dir.path().join("no-agent.sock"),
        "policy": {"allow": ["route add"]}
    }));
    let out = chain.run_cniscope(
        "ADD",
        Some(ARGS),
        &chain.stdin("0.4.0", &plugin, Some(&prev)),
    );
    assert!(out.ok(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.json(), prev);
    assert!(chain.ns.ip(&["route"]).contains("192.0.3.0/24 dev eth0"));
    let tag = chain.tag().expect("tag");
    let att = &tag["attachments"][0];
    assert_eq!(
        att["pod"],
        json!({"namespace": "lab", "name": "web-1", "uid": "6f1c7e52-3c1b-4a57-9a0e-000000000001"})
    );
    assert_eq!(att["source"], "annotation k8s.v1.cni.cncf.io/chainsaw");
    assert!(
        att["commands"][1]["stdout"]
            .as_str()
            .unwrap()
            .contains("192.0.3.0/24")
    );
    assert_eq!(
        *api.requests.lock().unwrap(),
        ["/api/v1/namespaces/lab/pods/web-1"]
    );
}

#[test]
fn k8s_namespace_label_opt_in_via_fake_apiserver() {
    let api = FakeApi::start();
    let chain = Chain::new();
    api.put(
        "/api/v1/namespaces/lab/pods/web-1",
        pod(
            "lab",
            "web-1",
            "uid-2",
            json!({"cniscope.io/commands": "[\"ip route\"]"}),
        ),
    );
    api.put(
        "/api/v1/namespaces/lab",
        namespace("lab", json!({"kubernetes.io/metadata.name": "lab"})),
    );
    let kubeconfig = api.kubeconfig(chain.dir.path());
    let prev = chain.bridge_add("1.0.0");
    let plugin = chain.cniscope_plugin(json!({
        "kubeconfig": kubeconfig,
        "policy": {"namespaceLabel": "cniscope.io/commands-allowed", "onError": "fail"}
    }));
    let stdin = chain.stdin("1.0.0", &plugin, Some(&prev));
    // Not labelled: refused (fail mode → CNI error 100), nothing ran.
    let out = chain.run_cniscope("ADD", Some(ARGS), &stdin);
    let err = out.json();
    assert_eq!(err["code"], 100, "{err}");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("has not opted in")
    );
    // Labelled: runs.
    api.put(
        "/api/v1/namespaces/lab",
        namespace("lab", json!({"cniscope.io/commands-allowed": "true"})),
    );
    let out = chain.run_cniscope("ADD", Some(ARGS), &stdin);
    assert!(out.ok(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        chain.tag().expect("tag")["attachments"][0]["commands"][0]["outcome"],
        "ran"
    );
}

#[test]
fn k8s_unreachable_apiserver_and_bad_token() {
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    // A server that is gone: passthrough succeeds and reports; fail mode says "could not read".
    let kubeconfig = {
        let api = FakeApi::start();
        api.kubeconfig(chain.dir.path())
    };
    for (mode, ok) in [("passthrough", true), ("fail", false)] {
        let plugin = chain.cniscope_plugin(json!({"kubeconfig": kubeconfig, "commands": ["ip route"], "policy": {"onError": mode}}));
        let t = std::time::Instant::now();
        let out = chain.run_cniscope(
            "ADD",
            Some(ARGS),
            &chain.stdin("1.0.0", &plugin, Some(&prev)),
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(4),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            out.ok(),
            ok,
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if !ok {
            assert_eq!(out.json()["code"], 103);
        }
        // The static commands were not used instead of the unreadable annotation.
        let tag = chain.tag().expect("tag");
        assert_eq!(
            tag["attachments"][0]["commands"].as_array().map(Vec::len),
            Some(0)
        );
    }
    // A wrong token: the server says 401, reported with the status.
    let api = FakeApi::start();
    let kc = api.kubeconfig(chain.dir.path());
    let text = std::fs::read_to_string(&kc)
        .unwrap()
        .replace("cniscope-test-token", "wrong");
    std::fs::write(&kc, text).unwrap();
    let plugin = chain.cniscope_plugin(json!({"kubeconfig": kc, "policy": {"onError": "fail"}}));
    let out = chain.run_cniscope(
        "ADD",
        Some(ARGS),
        &chain.stdin("1.0.0", &plugin, Some(&prev)),
    );
    assert!(
        out.json()["details"].as_str().unwrap().contains("HTTP 401"),
        "{}",
        out.json()
    );
}

#[test]
fn k8s_annotation_via_fake_agent_socket() {
    let chain = Chain::new();
    let sock = chain.dir.path().join("agent.sock");
    let l = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let mut line = String::new();
        BufReader::new(&mut c).read_line(&mut line).expect("read");
        let req: serde_json::Value = serde_json::from_str(&line).expect("request is JSON");
        let reply = pod(
            "lab",
            "web-1",
            "uid-agent",
            json!({"cniscope.io/commands": "ip -4 addr show dev CURRENT_INTERFACE"}),
        );
        c.write_all(format!("{reply}\n").as_bytes()).expect("write");
        req
    });
    let prev = chain.bridge_add("1.0.0");
    // The kubeconfig names a server that does not exist: the agent answers first.
    let plugin = chain
        .cniscope_plugin(json!({"agentSocket": sock, "kubeconfig": "/nonexistent/kubeconfig"}));
    let out = chain.run_cniscope(
        "ADD",
        Some(ARGS),
        &chain.stdin("1.0.0", &plugin, Some(&prev)),
    );
    assert!(out.ok(), "{}", String::from_utf8_lossy(&out.stdout));
    let req = server.join().expect("agent thread");
    assert_eq!(
        req,
        json!({"op": "pod", "namespace": "lab", "name": "web-1"})
    );
    let att = &chain.tag().expect("tag")["attachments"][0];
    assert_eq!(att["pod"]["uid"], "uid-agent");
    assert!(
        att["commands"][0]["stdout"]
            .as_str()
            .unwrap()
            .contains("inet 10.255.")
    );
}
