//! A stand-in for the Kubernetes API server as the agent's pod cache uses it (no real one can be
//! installed here), on 127.0.0.1 over plain HTTP:
//!
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName%3DNODE…` → a `PodList` with the list's
//!   `resourceVersion`, only the pods the field selector matches;
//! - the same with `watch=true&resourceVersion=N` → a chunked stream of `{"type":"ADDED"|
//!   "MODIFIED"|"DELETED","object":…}` lines, one JSON object per chunk, for every change after
//!   N and then live ones, until the test ends it; a version older than the server keeps gives
//!   the `ERROR` event with a 410 `Expired` status, as the real server does after compaction;
//! - `GET /api/v1/namespaces/NS/pods/NAME` and `GET /api/v1/namespaces/NS` → the object or a
//!   404 `Status`.
//!
//! Every request needs the bearer token; each is recorded. Std and serde_json only, so the
//! library's own tests can include this file too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "cniscope-cache-token";

/// A Pod as the API server returns it, trimmed to what matters here.
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    labels: Value,
    annotations: Value,
) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "creationTimestamp": "2026-11-23T08:00:00Z",
            "labels": labels,
            "annotations": annotations,
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]
        },
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {}}],
            "restartPolicy": "Always",
            "nodeName": node
        },
        "status": {"phase": "Running", "podIP": "10.244.1.7", "qosClass": "BestEffort"}
    })
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("ns-{name}"), "resourceVersion": "1", "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

#[derive(Default)]
struct State {
    /// The last resourceVersion handed out.
    rv: u64,
    pods: BTreeMap<(String, String), Value>,
    namespaces: BTreeMap<String, Value>,
    /// Every change: (resourceVersion, type, object).
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from an older version get 410 Expired.
    oldest_rv: u64,
    /// Bumped to end every open watch.
    watch_gen: u64,
    open_watches: usize,
    fail_lists: u32,
    /// Pod and namespace GETs answer only after this long.
    stall_gets: Option<Duration>,
    requests: Vec<String>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

pub struct FakeK8s {
    pub addr: String,
    shared: Shared,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeK8s {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let shared: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (sh, st) = (sh.clone(), st.clone());
                        // One thread per connection: watches stay open.
                        std::thread::spawn(move || connection(c, &sh, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeK8s {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.0.lock().expect("fake API server state")
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state());
        self.shared.1.notify_all();
    }

    fn record(s: &mut State, kind: &'static str, mut obj: Value) -> Value {
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        s.events.push((s.rv, kind, obj.clone()));
        obj
    }

    /// Creates a pod (an `ADDED` event).
    pub fn add_pod(&self, pod: Value) {
        self.change(|s| {
            let key = key_of(&pod);
            let obj = Self::record(s, "ADDED", pod);
            s.pods.insert(key, obj);
        });
    }

    /// Replaces a pod (a `MODIFIED` event).
    pub fn update_pod(&self, pod: Value) {
        self.change(|s| {
            let key = key_of(&pod);
            let obj = Self::record(s, "MODIFIED", pod);
            s.pods.insert(key, obj);
        });
    }

    /// Deletes a pod (a `DELETED` event carrying its last state).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.change(|s| {
            if let Some(old) = s.pods.remove(&(namespace.to_string(), name.to_string())) {
                Self::record(s, "DELETED", old);
            }
        });
    }

    /// Deletes a pod while the client's watch is down, and compacts the history so that it
    /// never sees the event: its next watch gets 410 Expired, and it must list again.
    pub fn delete_pod_unseen(&self, namespace: &str, name: &str) {
        self.change(|s| {
            if let Some(old) = s.pods.remove(&(namespace.to_string(), name.to_string())) {
                Self::record(s, "DELETED", old);
            }
            s.oldest_rv = s.rv;
            s.watch_gen += 1;
        });
    }

    pub fn put_namespace(&self, ns: Value) {
        self.change(|s| {
            let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
            s.namespaces.insert(name, ns);
        });
    }

    /// Ends every open watch cleanly (as the server does at `timeoutSeconds`): a client
    /// watches again from the last version it saw.
    pub fn end_watches(&self) {
        self.change(|s| s.watch_gen += 1);
    }

    /// Forgets the history (compaction) and ends the watches: a client's next watch gets 410
    /// and it must list again.
    pub fn expire_watches(&self) {
        self.change(|s| {
            s.oldest_rv = s.rv;
            s.watch_gen += 1;
        });
    }

    /// The next `n` lists fail with 500.
    pub fn fail_lists(&self, n: u32) {
        self.change(|s| s.fail_lists = n);
    }

    /// Pod and namespace GETs answer only after `d` (None: at once).
    pub fn stall_gets(&self, d: Option<Duration>) {
        self.change(|s| s.stall_gets = d);
    }

    /// Paths (with query) asked so far.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    pub fn open_watches(&self) -> usize {
        self.state().open_watches
    }

    /// Waits until `n` watches are open (the client listed and is watching). It sleeps the
    /// calling thread: for a client in another process or on another runtime thread, not from
    /// inside a single-threaded tokio test whose own task must open the watch.
    pub fn wait_for_watches(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.open_watches() < n {
            assert!(
                Instant::now() < deadline,
                "no watch opened within {timeout:?}; requests: {:#?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A YAML kubeconfig for this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("cache.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\ncurrent-context: fake\nusers:\n- name: agent\n  user:\n    token: {TOKEN}\n",
            self.addr
        );
        std::fs::write(&p, text).expect("writing kubeconfig");
        p
    }
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key_of(pod: &Value) -> (String, String) {
    let s = |k: &str| pod["metadata"][k].as_str().unwrap_or("").to_string();
    (s("namespace"), s("name"))
}

/// `%XX` and `+` decoding of one query value.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(kv), String::new()),
        })
        .collect()
}

/// `spec.nodeName=X` (or `==`): the node a pod must be on; None: every pod.
fn node_selector(q: &BTreeMap<String, String>) -> Option<String> {
    let sel = q.get("fieldSelector")?;
    let v = sel
        .strip_prefix("spec.nodeName==")
        .or_else(|| sel.strip_prefix("spec.nodeName="))?;
    Some(v.to_string())
}

fn matches(node: &Option<String>, pod: &Value) -> bool {
    node.as_deref()
        .is_none_or(|n| pod["spec"]["nodeName"].as_str() == Some(n))
}

fn respond(mut c: &TcpStream, code: u16, body: &Value) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        c,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(&body);
    let _ = c.flush();
}

/// Reads a request's line and headers (up to the blank line): its target, and whether it
/// carried `Authorization: Bearer <token>`. None when the request line cannot be read. Shared
/// with the other fake servers (this file is also compiled alone, by userspace's tests).
pub fn read_request(r: &mut impl BufRead, token: &str) -> Option<(String, bool)> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let target = line.split(' ').nth(1).unwrap_or("").to_string();
    let bearer = format!("Bearer {token}");
    let mut auth_ok = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if h.to_ascii_lowercase().starts_with("authorization:") && h.trim_end().ends_with(&bearer) {
            auth_ok = true;
        }
    }
    Some((target, auth_ok))
}

fn connection(c: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let Some((target, auth_ok)) = read_request(&mut BufReader::new(&c), TOKEN) else {
        return;
    };
    let (path, q) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let q = query(q);
    let lock = &shared.0;
    let stall = {
        let mut s = lock.lock().expect("state");
        s.requests.push(target.clone());
        s.stall_gets
    };
    if !auth_ok {
        return respond(&c, 401, &status(401, "Unauthorized", "Unauthorized"));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "pods"]
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch(&c, &q, shared, stop)
        }
        ["api", "v1", "pods"] => {
            let mut s = lock.lock().expect("state");
            if s.fail_lists > 0 {
                s.fail_lists -= 1;
                drop(s);
                return respond(&c, 500, &status(500, "InternalError", "etcd is unhappy"));
            }
            let node = node_selector(&q);
            let items: Vec<Value> = s
                .pods
                .values()
                .filter(|p| matches(&node, p))
                .cloned()
                .map(|mut p| {
                    // List items carry no kind or apiVersion.
                    if let Some(m) = p.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    p
                })
                .collect();
            let body = json!({"kind": "PodList", "apiVersion": "v1",
                              "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
            drop(s);
            respond(&c, 200, &body)
        }
        ["api", "v1", "namespaces", ns, "pods", name] => {
            if let Some(d) = stall {
                std::thread::sleep(d);
            }
            let found = lock
                .lock()
                .expect("state")
                .pods
                .get(&(ns.to_string(), name.to_string()))
                .cloned();
            match found {
                Some(p) => respond(&c, 200, &p),
                None => respond(
                    &c,
                    404,
                    &status(404, "NotFound", &format!("pods \"{name}\" not found")),
                ),
            }
        }
        ["api", "v1", "namespaces", ns] => {
            if let Some(d) = stall {
                std::thread::sleep(d);
            }
            let found = lock.lock().expect("state").namespaces.get(*ns).cloned();
            match found {
                Some(n) => respond(&c, 200, &n),
                None => respond(
                    &c,
                    404,
                    &status(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
                ),
            }
        }
        _ => respond(
            &c,
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

fn chunk(mut c: &TcpStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    write!(c, "{:x}\r\n", line.len())?;
    c.write_all(&line)?;
    c.write_all(b"\r\n")?;
    c.flush()
}

fn watch(mut c: &TcpStream, q: &BTreeMap<String, String>, shared: &Shared, stop: &AtomicBool) {
    let (lock, cv) = &**shared;
    let node = node_selector(q);
    let mut cursor: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let deadline = Instant::now() + timeout;
    if write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .and_then(|()| c.flush())
    .is_err()
    {
        return;
    }
    let mut s = lock.lock().expect("state");
    if cursor < s.oldest_rv {
        drop(s);
        let gone = status(
            410,
            "Expired",
            &format!("too old resource version: {cursor}"),
        );
        let _ = chunk(c, &json!({"type": "ERROR", "object": gone}));
        let _ = c.write_all(b"0\r\n\r\n");
        return;
    }
    let gen_at_start = s.watch_gen;
    s.open_watches += 1;
    loop {
        // Ended by the test: what happened since is not sent (the connection "broke").
        let cut = s.watch_gen != gen_at_start;
        let due: Vec<Value> = s
            .events
            .iter()
            .filter(|(rv, _, obj)| !cut && *rv > cursor && matches(&node, obj))
            .map(|(_, t, obj)| json!({"type": t, "object": obj}))
            .collect();
        cursor = s.rv;
        let end = cut || stop.load(Ordering::Relaxed) || Instant::now() > deadline;
        drop(s);
        let mut broken = false;
        for ev in &due {
            if chunk(c, ev).is_err() {
                broken = true;
                break;
            }
        }
        if broken || end {
            if !broken {
                let _ = c.write_all(b"0\r\n\r\n");
            }
            break;
        }
        let g = lock.lock().expect("state");
        s = cv
            .wait_timeout(g, Duration::from_millis(100))
            .expect("state")
            .0;
    }
    lock.lock().expect("state").open_watches -= 1;
}
