//! The agent's pod cache against a local HTTP server speaking the Kubernetes API's JSON (no API
//! server can be installed here): list with the node's field selector, watch events that add,
//! update and delete pods, re-watching and relisting, namespaces on demand, and answers within
//! the plugin's deadline when the server stalls. Kernel-free: these run with the unit tests.

#[path = "../../tests/src/k8s_fakeapi.rs"]
#[allow(dead_code)]
mod k8s_fakeapi;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cniscope::correlate::correlator::Lookups;
use cniscope::k8s::{CacheConfig, PodCache};
use cniscope::pipeline::{LiveLookups, ReplayLookups};
use k8s_fakeapi::{FakeK8s, namespace, pod};
use serde_json::{Value, json};

const CHAINSAW: &str = "k8s.v1.cni.cncf.io/chainsaw";

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("cniscope-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(api: &FakeK8s, dir: &Dir) -> PodCache {
    PodCache::start(CacheConfig {
        disabled: false,
        kubeconfig: Some(api.kubeconfig(&dir.0)),
        node_name: Some("node-a".into()),
    })
    .await
    .expect("the cache starts")
    .expect("a kubeconfig means a cache")
}

/// Polls `f` (letting the cache's watch run) until it returns Some.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits, yielding to the cache's watcher task, until the fake server has an open watch.
/// (`FakeK8s::wait_for_watches` sleeps the thread: under `#[tokio::test]`'s single-threaded
/// runtime that starves the very task that would open the watch — CI caught it.)
async fn watching(api: &FakeK8s) {
    until("an open watch", || async {
        (api.open_watches() >= 1).then_some(())
    })
    .await;
}

fn web(name: &str, uid: &str, node: &str, commands: &str) -> Value {
    pod(
        "lab",
        name,
        uid,
        node,
        json!({"app": "web", "pod-template-hash": "7d4f9"}),
        json!({CHAINSAW: commands}),
    )
}

fn note(p: &Value) -> &str {
    p["metadata"]["annotations"][CHAINSAW]
        .as_str()
        .unwrap_or("")
}

async fn ask(c: &PodCache, ns: &str, name: &str) -> Value {
    c.answer(&json!({"op": "pod", "namespace": ns, "name": name}))
        .await
}

#[tokio::test]
async fn pod_cache_via_fake_apiserver_lists_then_follows_added_modified_deleted() {
    let api = FakeK8s::start();
    let dir = Dir::new("podcache-watch");
    api.add_pod(web("web-1", "uid-1", "node-a", "[\"ip route\"]"));
    api.add_pod(web("elsewhere", "uid-x", "node-b", "[]"));
    let c = start(&api, &dir).await;
    assert_eq!(c.node(), "node-a");

    // The list: this node's pods only, asked with the field selector.
    let p = until("the listed pod", || async { c.pod("lab", "web-1") }).await;
    assert!(c.synced());
    assert_eq!(note(&p), "[\"ip route\"]");
    assert_eq!(p["kind"], "Pod");
    assert_eq!(p["spec"]["nodeName"], "node-a");
    assert_eq!(p["metadata"]["uid"], "uid-1");
    assert!(p["metadata"].get("managedFields").is_none());
    assert!(c.pod("lab", "elsewhere").is_none());
    let reqs = api.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("/api/v1/pods?")
            && !r.contains("watch=")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{reqs:#?}"
    );
    watching(&api).await;
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{:#?}",
        api.requests()
    );

    // ADDED
    api.add_pod(web("web-2", "uid-2", "node-a", "[\"ip addr\"]"));
    let p = until("the added pod", || async { c.pod("lab", "web-2") }).await;
    assert_eq!(note(&p), "[\"ip addr\"]");
    assert_eq!(c.pod_by_uid("uid-2").unwrap()["metadata"]["name"], "web-2");
    assert_eq!(c.labels("lab", "web-2").unwrap()["app"], "web");
    // MODIFIED
    api.update_pod(web("web-2", "uid-2", "node-a", "[\"ip route show\"]"));
    until("the modified annotation", || async {
        c.pod("lab", "web-2")
            .filter(|p| note(p) == "[\"ip route show\"]")
    })
    .await;
    // The socket's answer is the same object.
    let a = ask(&c, "lab", "web-2").await;
    assert_eq!(note(&a), "[\"ip route show\"]");
    // DELETED
    api.delete_pod("lab", "web-2");
    until("the deletion", || async {
        c.pod("lab", "web-2").is_none().then_some(())
    })
    .await;
    assert!(c.pod_by_uid("uid-2").is_none());
    assert_eq!(ask(&c, "lab", "web-2").await, json!({"error": "not found"}));
    // A DEL after the deletion still gets the pod's identity (kept a while).
    let id = c.identity("lab", "web-2", None).unwrap();
    assert_eq!(
        id,
        json!({"metadata": {"namespace": "lab", "name": "web-2", "uid": "uid-2",
                            "labels": {"app": "web", "pod-template-hash": "7d4f9"}}})
    );
    // Names are checked before anything is asked.
    let bad = ask(&c, "lab", "../x").await;
    assert!(
        bad["error"].as_str().unwrap().contains("not a valid"),
        "{bad}"
    );
    assert_eq!(c.watch_errors(), 0);
}

#[tokio::test]
async fn pod_cache_via_fake_apiserver_rewatches_and_relists() {
    let api = FakeK8s::start();
    let dir = Dir::new("podcache-relist");
    // The first two lists fail: the watcher backs off and tries again.
    api.fail_lists(2);
    api.add_pod(web("a", "uid-a", "node-a", "1"));
    let c = start(&api, &dir).await;
    until("the list after two failures", || async {
        c.pod("lab", "a")
    })
    .await;
    assert!(c.watch_errors() >= 2, "{}", c.watch_errors());
    watching(&api).await;

    // The server ends the watch (its timeout): the cache watches again from where it was.
    let watches = |api: &FakeK8s| {
        api.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    };
    let before = watches(&api);
    api.end_watches();
    until("a new watch", || async {
        (watches(&api) > before).then_some(())
    })
    .await;
    api.add_pod(web("b", "uid-b", "node-a", "2"));
    until("a pod added after the re-watch", || async {
        c.pod("lab", "b")
    })
    .await;

    // A deletion the cache never sees as an event (the watch was down and the server compacted
    // its history): the next watch gets 410 Expired, the cache lists again, `a` is gone.
    let lists = |api: &FakeK8s| {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch="))
            .count()
    };
    let lists_before = lists(&api);
    api.delete_pod_unseen("lab", "a");
    until("the relist", || async {
        c.pod("lab", "a").is_none().then_some(())
    })
    .await;
    assert!(lists(&api) > lists_before);
    assert!(c.pod("lab", "b").is_some(), "b survives the relist");
    assert_eq!(
        c.identity("lab", "a", Some("uid-a")).unwrap()["metadata"]["uid"],
        "uid-a"
    );
}

#[tokio::test]
async fn pod_cache_via_fake_apiserver_namespaces_on_demand_and_pods_it_lacks() {
    let api = FakeK8s::start();
    let dir = Dir::new("podcache-ns");
    api.put_namespace(namespace(
        "lab",
        json!({"cniscope.io/commands-allowed": "true"}),
    ));
    api.add_pod(web("remote", "uid-r", "node-b", "x"));
    let c = start(&api, &dir).await;
    until("the first list", || async { c.synced().then_some(()) }).await;
    let ns_gets = |api: &FakeK8s| {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/namespaces/lab") && !r.contains("/pods"))
            .count()
    };
    assert_eq!(c.namespace("lab"), None, "not read before someone asks");
    let ns = c.answer(&json!({"op": "namespace", "name": "lab"})).await;
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["cniscope.io/commands-allowed"],
        "true"
    );
    // Kept briefly: asked again, the server is not.
    let again = c.answer(&json!({"op": "namespace", "name": "lab"})).await;
    assert_eq!(again, ns);
    assert_eq!(ns_gets(&api), 1);
    assert_eq!(c.namespace("lab").unwrap()["metadata"]["name"], "lab");
    assert_eq!(
        c.answer(&json!({"op": "namespace", "name": "nope"})).await,
        json!({"error": "not found"})
    );
    // A pod the watch does not have (another node's, or one seconds old): read once.
    let r = ask(&c, "lab", "remote").await;
    assert_eq!(r["metadata"]["uid"], "uid-r");
    assert!(
        c.pod("lab", "remote").is_none(),
        "not added to the node's cache"
    );
    assert_eq!(
        ask(&c, "lab", "nobody").await,
        json!({"error": "not found"})
    );
}

#[tokio::test]
async fn pod_cache_via_fake_apiserver_answers_within_the_plugins_deadline() {
    let api = FakeK8s::start();
    let dir = Dir::new("podcache-stall");
    api.add_pod(web("web-1", "uid-1", "node-a", "x"));
    let c = start(&api, &dir).await;
    until("the list", || async { c.pod("lab", "web-1") }).await;
    api.stall_gets(Some(Duration::from_secs(2)));
    // Cached: at once, whatever the server does.
    let t = Instant::now();
    assert_eq!(ask(&c, "lab", "web-1").await["metadata"]["uid"], "uid-1");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    // Not cached: the cache gives up on the server after 150 ms (the plugin waits 300 ms).
    for req in [
        json!({"op": "pod", "namespace": "lab", "name": "missing"}),
        json!({"op": "namespace", "name": "lab"}),
    ] {
        let t = Instant::now();
        let a = c.answer(&req).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(140) && took < Duration::from_millis(290),
            "{took:?}"
        );
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("did not answer within 150 ms"),
            "{a}"
        );
    }

    // No server at all: the cache starts (it does not wait), answers errors fast, and counts
    // the watch's failures.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let kc = dir.0.join("dead.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: http://{gone}\ncontexts:\n- name: x\n  context:\n    cluster: x\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let dead = PodCache::start(CacheConfig {
        disabled: false,
        kubeconfig: Some(kc),
        node_name: Some("node-a".into()),
    })
    .await
    .unwrap()
    .unwrap();
    let t = Instant::now();
    let a = ask(&dead, "lab", "web-1").await;
    assert!(a["error"].is_string(), "{a}");
    assert!(
        t.elapsed() < Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    until("a counted watch error", || async {
        (dead.watch_errors() > 0).then_some(())
    })
    .await;
    assert!(!dead.synced());
}

#[tokio::test]
async fn pod_cache_via_fake_apiserver_journaled_for_replay() {
    let api = FakeK8s::start();
    let dir = Dir::new("podcache-journal");
    api.add_pod(web("web-1", "uid-1", "node-a", "x"));
    let c = start(&api, &dir).await;
    until("the list", || async { c.pod("lab", "web-1") }).await;
    let mut live = LiveLookups {
        tag_dir: dir.0.clone(),
        journal: Vec::new(),
        pods: Some(c.clone()),
    };
    let got = live.pod("lab", "web-1", None);
    assert_eq!(got.as_ref().unwrap()["metadata"]["labels"]["app"], "web");
    assert_eq!(live.pod("lab", "web-1", Some("uid-other")), None);
    let facts = live.take_facts();
    assert_eq!(facts.len(), 2);
    // A replay answers the same from the recorded facts, including the misses.
    let mut replay = ReplayLookups::default();
    for f in &facts {
        let json = serde_json::to_string(f).unwrap();
        replay.apply(&serde_json::from_str(&json).unwrap());
    }
    assert_eq!(replay.pod("lab", "web-1", None), got);
    assert_eq!(replay.pod("lab", "web-1", Some("uid-other")), None);
    // Without a cache nothing is journaled (recordings stay as they were).
    let mut none = LiveLookups {
        tag_dir: dir.0.clone(),
        journal: Vec::new(),
        pods: None,
    };
    assert_eq!(none.pod("lab", "web-1", None), None);
    assert!(none.take_facts().is_empty());
}
