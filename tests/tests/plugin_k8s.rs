//! The annotation source against a local HTTP server playing the Kubernetes API server (none
//! can be installed here), and against a unix socket playing the cniscope agent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use base64::Engine;
use cniscope_tests::plugin_chain::{Chain, Out};
use cniscope_tests::plugin_fakeapi::{FakeApi, namespace, pod};
use cniscope_tests::plugin_tlsapi::{Auth, Pki, TOKEN, TlsApi, Usage};
use serde_json::{Value, json};

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

const POD_PATH: &str = "/api/v1/namespaces/lab/pods/web-1";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The chainsaw-annotated pod the HTTPS tests serve.
fn chainsaw_pod(uid: &str) -> Value {
    pod(
        "lab",
        "web-1",
        uid,
        json!({"k8s.v1.cni.cncf.io/chainsaw": "[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\", \"ip route\"]"}),
    )
}

fn add(chain: &Chain, prev: &Value, kubeconfig: &std::path::Path, on_error: &str) -> Out {
    let plugin = chain.cniscope_plugin(json!({
        "kubeconfig": kubeconfig,
        "agentSocket": chain.dir.path().join("no-agent.sock"),
        "policy": {"allow": ["route add"], "onError": on_error}
    }));
    chain.run_cniscope(
        "ADD",
        Some(ARGS),
        &chain.stdin("1.0.0", &plugin, Some(prev)),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The in-cluster shape: `https://IP:PORT`, the CA as certificate-authority-data, a bearer token;
/// the server's certificate has the IP address as a SAN.
#[test]
fn k8s_annotation_via_fake_apiserver_over_https() {
    let pki = Pki::new("cniscope-test-ca");
    let (cert, key) = pki.leaf(
        "kube-apiserver",
        &["127.0.0.1", "kubernetes.default.svc"],
        Usage::Server,
    );
    let api = TlsApi::start(&cert, &key, None);
    api.put(
        POD_PATH,
        chainsaw_pod("6f1c7e52-3c1b-4a57-9a0e-0000000000a1"),
    );
    let chain = Chain::new();
    let kubeconfig = api.kubeconfig(
        chain.dir.path(),
        "cniscope.kubeconfig",
        &[("certificate-authority-data", &b64(pki.ca_pem()))],
        &[("token", TOKEN)],
    );
    let prev = chain.bridge_add("1.0.0");
    let out = add(&chain, &prev, &kubeconfig, "fail");
    assert!(out.ok(), "{} {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.json(), prev);
    assert!(chain.ns.ip(&["route"]).contains("192.0.3.0/24 dev eth0"));
    let tag = chain.tag().expect("tag");
    let att = &tag["attachments"][0];
    assert_eq!(att["pod"]["uid"], "6f1c7e52-3c1b-4a57-9a0e-0000000000a1");
    assert_eq!(att["source"], "annotation k8s.v1.cni.cncf.io/chainsaw");
    assert_eq!(att["problem"], Value::Null, "{att}");
    assert!(
        att["commands"][1]["stdout"]
            .as_str()
            .unwrap()
            .contains("192.0.3.0/24")
    );
    assert_eq!(api.requests(), [(POD_PATH.to_string(), Auth::Token)]);
    assert!(
        api.handshake_errors().is_empty(),
        "{:?}",
        api.handshake_errors()
    );
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

/// A CA that did not sign the server's certificate: a clear verification error, no request sent
/// (so no token leaked), prevResult returned in passthrough and error 103 in fail mode; a server
/// that never answers the handshake gives "timed out" within the plugin's 3 s.
#[test]
fn k8s_https_wrong_ca_is_a_clear_tls_error() {
    let pki = Pki::new("cniscope-test-ca");
    let other = Pki::new("someone-elses-ca");
    let (cert, key) = pki.leaf("kube-apiserver", &["127.0.0.1"], Usage::Server);
    let api = TlsApi::start(&cert, &key, None);
    api.put(POD_PATH, chainsaw_pod("uid-wrong-ca"));
    let chain = Chain::new();
    let kubeconfig = api.kubeconfig(
        chain.dir.path(),
        "wrong-ca.kubeconfig",
        &[("certificate-authority-data", &b64(other.ca_pem()))],
        &[("token", TOKEN)],
    );
    let prev = chain.bridge_add("1.0.0");
    let want = "certificate verification failed: UnknownIssuer: it is not signed by the kubeconfig's certificate-authority";

    let t = std::time::Instant::now();
    let out = add(&chain, &prev, &kubeconfig, "passthrough");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    assert!(out.ok(), "{} {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.json(), prev);
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    let att = &chain.tag().expect("tag")["attachments"][0];
    let problem = att["problem"].as_str().expect("problem in the tag");
    assert!(
        problem.contains("TLS handshake with 127.0.0.1:") && problem.contains(want),
        "{problem}"
    );
    assert_eq!(att["commands"].as_array().map(Vec::len), Some(0));
    assert!(!chain.ns.ip(&["route"]).contains("192.0.3.0/24"));

    let out = add(&chain, &prev, &kubeconfig, "fail");
    let err = out.json();
    assert_eq!(err["code"], 103, "{err}");
    assert!(err["details"].as_str().unwrap().contains(want), "{err}");

    // The server saw the client refuse its certificate, and never a request.
    // (Waited for: the server records a refusal after the client has already exited.)
    let seen = api.wait_handshake_errors(2, std::time::Duration::from_secs(5));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert!(seen[0].contains("UnknownCA"), "{seen:?}");

    // A server that accepts the connection and never speaks: bounded by the plugin's timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let kc = chain.dir.path().join("silent.kubeconfig");
    let text_kc = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(&api.addr, &silent.local_addr().unwrap().to_string());
    std::fs::write(&kc, text_kc).unwrap();
    let t = std::time::Instant::now();
    let out = add(&chain, &prev, &kc, "passthrough");
    let took = t.elapsed();
    assert!(out.ok(), "{}", text(&out.stdout));
    assert!(
        took >= std::time::Duration::from_millis(2900) && took < std::time::Duration::from_secs(8),
        "{took:?}"
    );
    let att = &chain.tag().expect("tag")["attachments"][0];
    let problem = att["problem"].as_str().expect("problem");
    assert!(
        problem.contains("TLS handshake") && problem.contains("timed out"),
        "{problem}"
    );
}

/// kubectl's other fields: the CA and a client certificate and key as files, relative to the
/// kubeconfig's directory, and `tls-server-name` for a certificate that names the service but
/// not the IP address it is reached by. The server requires the client certificate.
#[test]
fn k8s_https_client_certificate_and_tls_server_name() {
    let pki = Pki::new("cniscope-test-ca");
    let (cert, key) = pki.leaf("kube-apiserver", &["kubernetes.default.svc"], Usage::Server);
    let (client_cert, client_key) = pki.leaf("system:node:node-1", &[], Usage::Client);
    let api = TlsApi::start(&cert, &key, Some(pki.ca_pem()));
    api.put(POD_PATH, chainsaw_pod("uid-client-cert"));
    let chain = Chain::new();
    let dir = chain.dir.path().join("kc");
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    std::fs::write(dir.join("pki/ca.crt"), pki.ca_pem()).unwrap();
    std::fs::write(dir.join("pki/client.crt"), &client_cert).unwrap();
    std::fs::write(dir.join("pki/client.key"), &client_key).unwrap();
    let ca = [("certificate-authority", "pki/ca.crt")];
    let named = [
        ("certificate-authority", "pki/ca.crt"),
        ("tls-server-name", "kubernetes.default.svc"),
    ];
    let identity = [
        ("client-certificate", "pki/client.crt"),
        ("client-key", "pki/client.key"),
    ];
    let prev = chain.bridge_add("1.0.0");

    // Without tls-server-name the IP address is checked, and the certificate does not have it.
    let kc = api.kubeconfig(&dir, "no-name.kubeconfig", &ca, &identity);
    let err = add(&chain, &prev, &kc, "fail").json();
    let details = err["details"].as_str().unwrap();
    assert!(
        details.contains("NotValidForName") && details.contains("tls-server-name"),
        "{err}"
    );

    // A token but no client certificate: the server refuses the handshake.
    let kc = api.kubeconfig(&dir, "no-cert.kubeconfig", &named, &[("token", TOKEN)]);
    let err = add(&chain, &prev, &kc, "fail").json();
    assert!(
        err["details"].as_str().unwrap().contains("TLS alert"),
        "{err}"
    );
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    // Everything right.
    let kc = api.kubeconfig(&dir, "cniscope.kubeconfig", &named, &identity);
    let out = add(&chain, &prev, &kc, "fail");
    assert!(out.ok(), "{} {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.json(), prev);
    assert!(chain.ns.ip(&["route"]).contains("192.0.3.0/24 dev eth0"));
    assert_eq!(
        chain.tag().expect("tag")["attachments"][0]["pod"]["uid"],
        "uid-client-cert"
    );
    assert_eq!(api.requests(), [(POD_PATH.to_string(), Auth::ClientCert)]);
}

/// `insecure-skip-tls-verify: true` (no CA): works, with a warning on stderr.
#[test]
fn k8s_https_insecure_skip_tls_verify_warns() {
    let pki = Pki::new("cniscope-test-ca");
    let (cert, key) = pki.leaf("kube-apiserver", &["10.96.0.1"], Usage::Server);
    let api = TlsApi::start(&cert, &key, None);
    api.put(POD_PATH, chainsaw_pod("uid-insecure"));
    let chain = Chain::new();
    let prev = chain.bridge_add("1.0.0");
    let kc = api.kubeconfig(
        chain.dir.path(),
        "insecure.kubeconfig",
        &[("insecure-skip-tls-verify", "true")],
        &[("token", TOKEN)],
    );
    let out = add(&chain, &prev, &kc, "fail");
    assert!(out.ok(), "{} {}", text(&out.stdout), text(&out.stderr));
    assert!(chain.ns.ip(&["route"]).contains("192.0.3.0/24 dev eth0"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("insecure-skip-tls-verify: true"),
        "{stderr}"
    );
    assert_eq!(api.requests(), [(POD_PATH.to_string(), Auth::Token)]);

    // An https:// cluster with neither a CA nor insecure: the missing field is named.
    let kc = api.kubeconfig(
        chain.dir.path(),
        "no-ca.kubeconfig",
        &[],
        &[("token", TOKEN)],
    );
    let err = add(&chain, &prev, &kc, "fail").json();
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("has neither certificate-authority-data nor certificate-authority"),
        "{err}"
    );
}
