//! The agent's node-scoped pod cache: a list+watch of the pods whose `spec.nodeName` is this
//! node (kube's watcher: relists after a broken watch, backs off on errors), and namespaces
//! read on demand and kept briefly. It answers cniscope-cni's lookups over the agent socket
//! and gives invocations their pod's uid and labels.
//!
//! Off (one log line, `start` returns `None`) with `--no-kubernetes`, or when there is neither a
//! `--kubeconfig` nor an in-cluster service account, or without a node name. Lookups are
//! synchronous reads of in-memory maps, usable from any thread; only a socket request for
//! something not in the cache goes to the API server, for at most `FETCH_TIMEOUT`.

pub mod namespaces;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::{Value, json};

use namespaces::{Answer, NsCache};
use store::Store;

/// The longest a socket request waits for the API server (the plugin gives up after 300 ms).
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(150);

/// How the cache reaches the API server, from the agent's flags.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// `--no-kubernetes`.
    pub disabled: bool,
    /// `--kubeconfig`; without it, the in-cluster service account if there is one.
    pub kubeconfig: Option<PathBuf>,
    /// `--node-name`, else env `NODE_NAME` (the DaemonSet sets it from `spec.nodeName`).
    pub node_name: Option<String>,
}

impl CacheConfig {
    pub fn from_flags(
        no_kubernetes: bool,
        kubeconfig: Option<PathBuf>,
        node_name: Option<String>,
    ) -> Self {
        Self {
            disabled: no_kubernetes,
            kubeconfig,
            node_name: node_name.or_else(|| std::env::var("NODE_NAME").ok()),
        }
    }
}

/// A handle on the cache; clones share it.
#[derive(Clone)]
pub struct PodCache {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    server: String,
    client: Client,
    store: RwLock<Store>,
    namespaces: Mutex<NsCache>,
    watch_errors: AtomicU64,
    watch: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watch.lock()
            && let Some(h) = w.take()
        {
            h.abort();
        }
    }
}

impl PodCache {
    /// Connects (without waiting for the API server) and starts the watch on the current tokio
    /// runtime. `Ok(None)`: no Kubernetes here, said in one log line. `Err`: a `--kubeconfig`
    /// that cannot be used, or a node name that is not one.
    pub async fn start(cfg: CacheConfig) -> Result<Option<PodCache>> {
        if cfg.disabled {
            tracing::info!("Kubernetes pod cache off (--no-kubernetes)");
            return Ok(None);
        }
        let config = match &cfg.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            None => match Config::incluster() {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(
                        "Kubernetes pod cache off: no --kubeconfig and not in a cluster ({e})"
                    );
                    return Ok(None);
                }
            },
        };
        let Some(node) = cfg.node_name.filter(|n| !n.is_empty()) else {
            tracing::warn!(
                "Kubernetes pod cache off: this node's name is unknown (set --node-name or NODE_NAME)"
            );
            return Ok(None);
        };
        if !valid_name(&node) {
            bail!("node name {node:?} is not a valid Kubernetes name");
        }
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).context("Kubernetes client")?;
        let cache = PodCache {
            inner: Arc::new(Inner {
                node: node.clone(),
                server: server.clone(),
                client: client.clone(),
                store: RwLock::new(Store::default()),
                namespaces: Mutex::new(NsCache::default()),
                watch_errors: AtomicU64::new(0),
                watch: Mutex::new(None),
            }),
        };
        let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<Pod>(&()));
        // resourceVersion=0 lists: served from the API server's watch cache, which is what a
        // DaemonSet on every node should ask for.
        let wc = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            .any_semantic();
        // The task holds only a weak reference: dropping the last handle stops it.
        let weak = Arc::downgrade(&cache.inner);
        let task = tokio::spawn(watch(weak, api, wc));
        if let Ok(mut w) = cache.inner.watch.lock() {
            *w = Some(task.abort_handle());
        }
        tracing::info!("Kubernetes pod cache: watching the pods of node {node} at {server}");
        Ok(Some(cache))
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// A complete list has arrived.
    pub fn synced(&self) -> bool {
        self.inner.store.read().map(|s| s.synced).unwrap_or(false)
    }

    /// Pods held now.
    pub fn len(&self) -> usize {
        self.inner.store.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Watch errors so far (each retried with backoff).
    pub fn watch_errors(&self) -> u64 {
        self.inner.watch_errors.load(Ordering::Relaxed)
    }

    /// The pod as the API server returns it (without `managedFields`), if it is on this node.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.pod_arc(namespace, name).map(|p| (*p).clone())
    }

    fn pod_arc(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.inner.store.read().ok()?.get(namespace, name)
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<Value> {
        let p = self.inner.store.read().ok()?.by_uid(uid)?;
        Some((*p).clone())
    }

    pub fn labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let p = self.pod_arc(namespace, name)?;
        labels_of(&p)
    }

    /// A namespace read in the last few seconds (see `namespaces`); `answer` reads it from the
    /// API server when it is not.
    pub fn namespace(&self, name: &str) -> Option<Value> {
        match self
            .inner
            .namespaces
            .lock()
            .ok()?
            .get(name, Instant::now())?
        {
            Answer::Found(v) => Some((*v).clone()),
            _ => None,
        }
    }

    /// What an invocation needs of its pod: `{"metadata": {namespace, name, uid, labels}}`,
    /// from the pod on this node now or one deleted in the last minutes (see
    /// `Store::for_invocation`). Small, because it is journaled in recordings.
    pub fn identity(&self, namespace: &str, name: &str, uid: Option<&str>) -> Option<Value> {
        let p = self
            .inner
            .store
            .read()
            .ok()?
            .for_invocation(namespace, name, uid)?;
        let m = &p["metadata"];
        Some(json!({"metadata": {
            "namespace": m["namespace"],
            "name": m["name"],
            "uid": m["uid"],
            "labels": m.get("labels").cloned().unwrap_or_else(|| json!({})),
        }}))
    }

    /// The agent socket's `pod` and `namespace` requests: the object, `{"error":"not found"}`, or
    /// another `{"error":…}`. Never waits for the API server longer than `FETCH_TIMEOUT`.
    pub async fn answer(&self, req: &Value) -> Value {
        let s = |k: &str| req.get(k).and_then(Value::as_str);
        match s("op") {
            Some("pod") => {
                let (Some(ns), Some(name)) = (s("namespace"), s("name")) else {
                    return json!({"error": "a pod request needs namespace and name"});
                };
                if !valid_name(ns) || !valid_name(name) {
                    return json!({"error": format!("{ns:?}/{name:?} is not a valid Kubernetes name")});
                }
                if let Some(p) = self.pod_arc(ns, name) {
                    return (*p).clone();
                }
                // Not (yet) seen by the watch: the pod may be seconds old. Ask once.
                let api = Api::namespaced_with(
                    self.inner.client.clone(),
                    ns,
                    &ApiResource::erase::<Pod>(&()),
                );
                match fetch(&api, name, "Pod").await {
                    Ok(Some(p)) => (*p).clone(),
                    Ok(None) => not_found(),
                    Err(e) => json!({"error": format!("not in the pod cache; {}", e.text())}),
                }
            }
            Some("namespace") => {
                let Some(name) = s("name") else {
                    return json!({"error": "a namespace request needs a name"});
                };
                if !valid_name(name) {
                    return json!({"error": format!("{name:?} is not a valid Kubernetes name")});
                }
                let cached = self
                    .inner
                    .namespaces
                    .lock()
                    .ok()
                    .and_then(|c| c.get(name, Instant::now()));
                let a = match cached {
                    Some(a) => a,
                    None => {
                        let api = Api::all_with(
                            self.inner.client.clone(),
                            &ApiResource::erase::<Namespace>(&()),
                        );
                        let a = match fetch(&api, name, "Namespace").await {
                            Ok(Some(v)) => Answer::Found(v),
                            Ok(None) => Answer::NotFound,
                            Err(FetchError::Refused(e)) => Answer::Refused(e),
                            // Not kept: the next request tries again.
                            Err(e) => return json!({"error": e.text()}),
                        };
                        if let Ok(mut c) = self.inner.namespaces.lock() {
                            c.put(name, a.clone(), Instant::now());
                        }
                        a
                    }
                };
                match a {
                    Answer::Found(v) => (*v).clone(),
                    Answer::NotFound => not_found(),
                    Answer::Refused(e) => json!({"error": e}),
                }
            }
            other => json!({"error": format!("unknown op {other:?}; use pod or namespace")}),
        }
    }
}

fn not_found() -> Value {
    json!({"error": "not found"})
}

pub fn labels_of(pod: &Value) -> Option<BTreeMap<String, String>> {
    let m = pod.get("metadata")?.get("labels")?.as_object()?;
    Some(
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

enum FetchError {
    /// The API server answered with an error status (401, 403, …).
    Refused(String),
    /// Timeout, connection refused, a body that is not an object.
    Failed(String),
}

impl FetchError {
    fn text(self) -> String {
        match self {
            FetchError::Refused(s) | FetchError::Failed(s) => s,
        }
    }
}

async fn fetch(
    api: &Api<DynamicObject>,
    name: &str,
    kind: &str,
) -> Result<Option<Arc<Value>>, FetchError> {
    match tokio::time::timeout(FETCH_TIMEOUT, api.get_opt(name)).await {
        Err(_) => Err(FetchError::Failed(format!(
            "the API server did not answer within {} ms",
            FETCH_TIMEOUT.as_millis()
        ))),
        Ok(Err(kube::Error::Api(st))) => Err(FetchError::Refused(format!(
            "API server: HTTP {} {}: {}",
            st.code, st.reason, st.message
        ))),
        Ok(Err(e)) => Err(FetchError::Failed(format!("API server: {e}"))),
        Ok(Ok(None)) => Ok(None),
        Ok(Ok(Some(o))) => match store::to_value(o, kind) {
            Some((_, _, v)) => Ok(Some(v)),
            None => Err(FetchError::Failed(format!(
                "API server: a {kind} without a name"
            ))),
        },
    }
}

/// The watch: events into the store until the cache is dropped. kube's watcher lists, then
/// watches from the list's resourceVersion, re-watches when a watch ends, relists when the
/// version is too old (410), and with `default_backoff` waits 0.8 s doubling to 30 s between
/// failed attempts.
async fn watch(inner: std::sync::Weak<Inner>, api: Api<DynamicObject>, wc: watcher::Config) {
    let mut stream = std::pin::pin!(watcher(api, wc).default_backoff());
    let mut failing = false;
    while let Some(item) = stream.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match item {
            Ok(ev) => {
                // `Init` starts every (re)list attempt; only what follows says the server answered.
                if failing && !matches!(ev, watcher::Event::Init) {
                    failing = false;
                    tracing::info!("Kubernetes pod cache: the API server answers again");
                }
                let done = matches!(ev, watcher::Event::InitDone);
                let Ok(mut s) = inner.store.write() else {
                    return;
                };
                s.apply(ev, Instant::now());
                if done {
                    let (n, lists) = (s.len(), s.stats.lists);
                    drop(s);
                    if lists == 1 {
                        tracing::info!(
                            "Kubernetes pod cache: {n} pods on node {} (listed)",
                            inner.node
                        );
                    } else {
                        tracing::debug!("Kubernetes pod cache: relisted, {n} pods");
                    }
                }
            }
            Err(e) => {
                let n = inner.watch_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if !failing || n.is_multiple_of(30) {
                    tracing::warn!(
                        "Kubernetes pod cache: {e} (error {n}; retrying with backoff, lookups use what is cached)"
                    );
                } else {
                    tracing::debug!("Kubernetes pod cache: {e}");
                }
                failing = true;
            }
        }
    }
}

/// Kubernetes object and node names (DNS-1123 subdomains): checked before a name goes into a
/// URL path or a field selector.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("kube-system"));
        assert!(valid_name("ip-10-0-1-5.ec2.internal"));
        for bad in [
            "", "A", "a/b", "..", "-a", "a-", "a b", "a%2f", "a?b", "a,b", "a=b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn node_name_from_the_flag_else_the_environment() {
        let c = CacheConfig::from_flags(false, None, Some("n1".into()));
        assert_eq!(c.node_name.as_deref(), Some("n1"));
    }

    #[tokio::test]
    async fn off_without_kubernetes() {
        let off = PodCache::start(CacheConfig {
            disabled: true,
            kubeconfig: Some("/nonexistent".into()),
            node_name: Some("n".into()),
        })
        .await
        .unwrap();
        assert!(off.is_none());
        // An explicit kubeconfig that cannot be read is an error, not silence.
        let bad = PodCache::start(CacheConfig {
            disabled: false,
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            node_name: Some("n".into()),
        })
        .await;
        assert!(bad.is_err());
    }
}
