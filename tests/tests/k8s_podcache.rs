//! The agent's pod cache end to end: a real `cniscope agent --kubeconfig …` watching a local HTTP
//! server that speaks the Kubernetes API's JSON (no API server can be installed here), its socket
//! answering pod lookups from the cache as watch events add, update and delete the pod, its
//! invocations carrying the pod's uid and labels, and cniscope-cni reading its annotation
//! through the agent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cniscope_tests::agent::Agent;
use cniscope_tests::k8s_fakeapi::{FakeK8s, namespace, pod};
use cniscope_tests::plugin_chain::{Chain, DirGuard};
use cniscope_tests::plugin_tlsapi::{Pki, TOKEN, TlsApi, Usage};
use cniscope_tests::{require_root, unique};
use serde_json::{Value, json};

const CHAINSAW: &str = "k8s.v1.cni.cncf.io/chainsaw";

fn agent_with_cache(api: &FakeK8s, dir: &DirGuard) -> Agent {
    let kc = api.kubeconfig(dir.path());
    let agent = Agent::start(&[
        "--kubeconfig",
        kc.to_str().expect("utf-8 path"),
        "--node-name",
        "node-a",
        "--quiet-ms",
        "200",
    ]);
    // Listed and watching: from here on the cache answers.
    api.wait_for_watches(1, Duration::from_secs(20));
    agent
}

fn ask(agent: &Agent, req: &Value) -> Value {
    let mut s = UnixStream::connect(&agent.socket).expect("connect to the agent socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("a reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line}"))
}

/// Asks until `pred` holds for the reply.
fn ask_until(agent: &Agent, req: &Value, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = ask(agent, req);
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last reply {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pod GETs the agent made (reads that did not come from its cache).
fn pod_gets(api: &FakeK8s) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.starts_with("/api/v1/namespaces/") && r.contains("/pods/"))
        .collect()
}

/// `bridge` VERSION as a runtime would call it for a pod: quick, needs no state.
fn plugin_run(cid: &str, args: &str) {
    let mut c = Command::new("/usr/lib/cni/bridge")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("running bridge");
    // bridge may exit before it reads stdin.
    let _ = c
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"cniVersion":"1.0.0"}"#);
    c.wait().expect("bridge");
}

fn invocation(agent: &Agent, cid: &str) -> Value {
    agent.wait_for(
        &format!("the invocation of {cid}"),
        Duration::from_secs(20),
        |v| v["type"] == "invocation" && v["container_id"] == cid,
    )
}

#[test]
fn pod_cache_via_fake_apiserver_agent_socket_follows_the_watch_and_enriches_invocations() {
    require_root();
    let api = FakeK8s::start();
    let dir = DirGuard::new("k8spc");
    let (ns, name, uid) = ("shop", "web-7d4f9", "6b1c2a40-0000-4000-8000-00000000c0de");
    let labels = json!({"app": "web", "tier": "front"});
    let mk = |commands: &str| {
        pod(
            ns,
            name,
            uid,
            "node-a",
            labels.clone(),
            json!({CHAINSAW: commands}),
        )
    };
    api.add_pod(mk("[\"ip route\"]"));
    api.add_pod(pod(
        "shop",
        "elsewhere",
        "uid-b",
        "node-b",
        json!({}),
        json!({}),
    ));
    let agent = agent_with_cache(&api, &dir);
    let req = json!({"op": "pod", "namespace": ns, "name": name});

    // (a) the pod, with its annotation, from the cache.
    let p = ask(&agent, &req);
    assert_eq!(
        p["metadata"]["annotations"][CHAINSAW], "[\"ip route\"]",
        "{p}"
    );
    assert_eq!(p["metadata"]["uid"], uid);
    assert_eq!(p["spec"]["nodeName"], "node-a");
    assert!(pod_gets(&api).is_empty(), "{:?}", pod_gets(&api));

    // (b) MODIFIED: the new annotation, still without asking the API server.
    api.update_pod(mk("[\"ip route show table main\"]"));
    ask_until(&agent, &req, "the modified annotation", |v| {
        v["metadata"]["annotations"][CHAINSAW] == "[\"ip route show table main\"]"
    });
    assert!(pod_gets(&api).is_empty(), "{:?}", pod_gets(&api));

    // (d) a plugin run for the pod: the invocation has the uid (not in CNI_ARGS) and labels.
    let cid = unique("k8spc");
    plugin_run(
        &cid,
        &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
    );
    let inv = invocation(&agent, &cid);
    assert_eq!(
        inv["pod"],
        json!({"namespace": ns, "name": name, "uid": uid, "labels": labels}),
        "{inv}"
    );

    // (c) DELETED: not found.
    api.delete_pod(ns, name);
    ask_until(&agent, &req, "not found after the deletion", |v| {
        *v == json!({"error": "not found"})
    });
    // A DEL right after the pod left the API server still gets its labels.
    let del = unique("k8spcdel");
    plugin_run(
        &del,
        &format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_UID={uid}"),
    );
    assert_eq!(invocation(&agent, &del)["pod"]["labels"], labels);
    // A pod the cache does not know: no labels, the runtime's identity as it was.
    let other = unique("k8spcnone");
    plugin_run(&other, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=nobody");
    assert_eq!(
        invocation(&agent, &other)["pod"],
        json!({"namespace": "shop", "name": "nobody"})
    );
    // The other node's pod was never listed: asked for, it is read once.
    let remote = ask(
        &agent,
        &json!({"op": "pod", "namespace": "shop", "name": "elsewhere"}),
    );
    assert_eq!(remote["spec"]["nodeName"], "node-b");
    let lines = agent.stop();
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "agent" && v["event"] == "stopped"),
        "the agent stops cleanly with a cache"
    );
}

#[test]
fn pod_cache_via_fake_apiserver_plugin_reads_the_annotation_from_the_agent() {
    require_root();
    let api = FakeK8s::start();
    let chain = Chain::new();
    api.add_pod(pod(
        "lab",
        "web-1",
        "uid-from-cache",
        "node-a",
        json!({"app": "web-1"}),
        json!({"cniscope.io/commands": "ip -4 addr show dev CURRENT_INTERFACE"}),
    ));
    api.put_namespace(namespace(
        "lab",
        json!({"cniscope.io/commands-allowed": "true"}),
    ));
    let agent = agent_with_cache(&api, &chain.dir);
    // The namespace is read on demand (within the agent's 150 ms fetch limit) and kept 10 s:
    // read it once before the plugin asks, so a slow first read cannot fail the plugin's 300 ms.
    ask_until(
        &agent,
        &json!({"op": "namespace", "name": "lab"}),
        "the namespace",
        |ns| ns["metadata"]["labels"]["cniscope.io/commands-allowed"] == "true",
    );
    let ns_gets = || {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/namespaces/lab") && !r.contains("/pods"))
            .count()
    };
    let ns_gets_before = ns_gets();
    let prev = chain.bridge_add("1.0.0");
    // The plugin's own kubeconfig leads nowhere: only the agent can answer.
    let plugin = chain.cniscope_plugin(json!({
        "agentSocket": agent.socket,
        "kubeconfig": "/nonexistent/kubeconfig",
        "policy": {"namespaceLabel": "cniscope.io/commands-allowed", "onError": "fail"}
    }));
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=web-1";
    let out = chain.run_cniscope(
        "ADD",
        Some(args),
        &chain.stdin("1.0.0", &plugin, Some(&prev)),
    );
    assert!(
        out.ok(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.json(), prev);
    let att = &chain.tag().expect("tag")["attachments"][0];
    assert_eq!(att["pod"]["uid"], "uid-from-cache", "{att}");
    assert_eq!(att["source"], "annotation cniscope.io/commands", "{att}");
    assert!(
        att["commands"][0]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("inet 10.255."),
        "{att}"
    );
    // The pod came from the watch; the namespace (label opt-in) from the agent's cache: the
    // plugin's ADD made the API server read neither.
    assert!(pod_gets(&api).is_empty(), "{:?}", pod_gets(&api));
    assert!(ns_gets_before >= 1);
    assert_eq!(ns_gets(), ns_gets_before, "{:?}", api.requests());
    // The chain's invocation as the agent reports it: the pod with uid and labels.
    let inv = agent.wait_for("the chain's invocation", Duration::from_secs(20), |v| {
        v["type"] == "invocation"
            && v["container_id"] == chain.container_id.as_str()
            && v["chain"]
                .as_array()
                .is_some_and(|c| c.iter().any(|p| p == "cniscope-cni"))
    });
    assert_eq!(inv["pod"]["uid"], "uid-from-cache", "{inv}");
    assert_eq!(inv["pod"]["labels"], json!({"app": "web-1"}));
    chain.bridge_del("1.0.0", Some(&prev));
}

/// The in-cluster shape over TLS (kube with rustls and ring): `https://127.0.0.1:PORT` with the
/// CA as certificate-authority-data and a bearer token. The stand-in serves single objects only,
/// so the watch fails (and is retried) while on-demand reads go through.
#[test]
fn pod_cache_via_fake_apiserver_over_https() {
    use base64::Engine as _;
    require_root();
    let pki = Pki::new("cniscope-cache-ca");
    let (cert, key) = pki.leaf("kube-apiserver", &["127.0.0.1"], Usage::Server);
    let api = TlsApi::start(&cert, &key, None);
    api.put(
        "/api/v1/namespaces/lab/pods/web-1",
        pod(
            "lab",
            "web-1",
            "uid-tls",
            "node-a",
            json!({"app": "web-1"}),
            json!({}),
        ),
    );
    api.put(
        "/api/v1/namespaces/lab",
        namespace("lab", json!({"cniscope.io/commands-allowed": "true"})),
    );
    let dir = DirGuard::new("k8spctls");
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem());
    let kc = api.kubeconfig(
        dir.path(),
        "cache.kubeconfig",
        &[("certificate-authority-data", &ca)],
        &[("token", TOKEN)],
    );
    let agent = Agent::start(&[
        "--kubeconfig",
        kc.to_str().expect("utf-8 path"),
        "--node-name",
        "node-a",
    ]);
    // Asked until answered: the agent's first reads race its own watch's handshakes, and a
    // read that overruns the 150 ms fetch limit is answered with an error.
    ask_until(
        &agent,
        &json!({"op": "pod", "namespace": "lab", "name": "web-1"}),
        "the pod over TLS",
        |p| p["metadata"]["uid"] == "uid-tls",
    );
    ask_until(
        &agent,
        &json!({"op": "namespace", "name": "lab"}),
        "the namespace over TLS",
        |ns| ns["metadata"]["labels"]["cniscope.io/commands-allowed"] == "true",
    );
    assert!(
        api.handshake_errors().is_empty(),
        "{:?}",
        api.handshake_errors()
    );
    // Another CA: a TLS error, answered within the plugin's deadline, nothing sent in clear.
    let other = Pki::new("someone-else");
    let bad = api.kubeconfig(
        dir.path(),
        "bad.kubeconfig",
        &[(
            "certificate-authority-data",
            &base64::engine::general_purpose::STANDARD.encode(other.ca_pem()),
        )],
        &[("token", TOKEN)],
    );
    drop(agent);
    let before = api.requests().len();
    let agent = Agent::start(&[
        "--kubeconfig",
        bad.to_str().expect("utf-8 path"),
        "--node-name",
        "node-a",
    ]);
    // The first answer also waits for the rest of the agent's start-up; the second is timed.
    let req = json!({"op": "pod", "namespace": "lab", "name": "web-1"});
    assert!(ask(&agent, &req)["error"].is_string());
    let t = Instant::now();
    let e = ask(&agent, &req);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(e["error"].is_string(), "{e}");
    assert_eq!(api.requests().len(), before, "no request got through");
}
