//! A stand-in for the Kubernetes API server (no real one can be installed here): answers
//! `GET /api/v1/namespaces/NS/pods/NAME` and `GET /api/v1/namespaces/NS` on 127.0.0.1 with the
//! JSON shapes the real server returns, checks the bearer token, and records the paths asked.
//! Also a kubeconfig (YAML, as Multus and chainsaw generate) pointing at it.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{Value, json};

use crate::k8s_fakeapi::read_request;

pub const TOKEN: &str = "cniscope-test-token";

pub struct FakeApi {
    pub addr: String,
    /// Objects by API path.
    pub objects: Arc<Mutex<Vec<(String, Value)>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A Pod as `kubectl get pod -o json` shows it, trimmed to what matters here.
pub fn pod(namespace: &str, name: &str, uid: &str, annotations: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-23T08:00:00Z",
            "labels": {"app": name},
            "annotations": annotations
        },
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {}}],
            "restartPolicy": "Always",
            "nodeName": "node-1"
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"}
    })
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": "ns-uid-1", "resourceVersion": "1", "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

fn status_404(path: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{path} not found"), "reason": "NotFound", "code": 404})
}

impl FakeApi {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let objects: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, r, s) = (objects.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the loop ends when the test drops the server.
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        serve(c, &o, &r);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        });
        FakeApi {
            addr,
            objects,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn put(&self, path: &str, v: Value) {
        let mut o = self.objects.lock().expect("lock");
        o.retain(|(p, _)| p != path);
        o.push((path.to_string(), v));
    }

    /// A YAML kubeconfig for this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("cniscope.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: http://{}\ncontexts:\n- name: cniscope-context\n  context:\n    cluster: local\n    user: cniscope\ncurrent-context: cniscope-context\nusers:\n- name: cniscope\n  user:\n    token: {TOKEN}\n",
            self.addr
        );
        std::fs::write(&p, text).expect("writing kubeconfig");
        p
    }
}

fn serve(
    c: std::net::TcpStream,
    objects: &Mutex<Vec<(String, Value)>>,
    requests: &Mutex<Vec<String>>,
) {
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let Some((path, auth_ok)) = read_request(&mut BufReader::new(&c), TOKEN) else {
        return;
    };
    requests.lock().expect("lock").push(path.clone());
    let (code, body) = answer(auth_ok, &objects.lock().expect("lock"), &path);
    write_chunked(&mut &c, code, &body);
}

/// What the API server answers for a GET of `path`: 401 without credentials, else the object
/// stored at that path or a 404 Status.
pub(crate) fn answer(authorized: bool, objects: &[(String, Value)], path: &str) -> (u16, Value) {
    if !authorized {
        return (
            401,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}),
        );
    }
    match objects.iter().find(|(p, _)| p == path) {
        Some((_, v)) => (200, v.clone()),
        None => (404, status_404(path)),
    }
}

/// Writes the response in one chunk, as the real API server answers larger objects.
pub(crate) fn write_chunked(w: &mut impl Write, code: u16, body: &Value) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let _ = write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    );
    let _ = w.write_all(&body);
    let _ = w.write_all(b"\r\n0\r\n\r\n");
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
