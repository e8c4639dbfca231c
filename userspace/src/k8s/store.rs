//! The pods of this node, as the watch delivered them: kept by (namespace, name) with an index
//! by uid, and the recently deleted ones kept a little longer so that a DEL that runs after its
//! pod left the API server still gets the pod's labels.
//!
//! Pure: fed `watcher::Event`s (by the watch task, or by hand in tests), no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::{Map, Value};

/// (namespace, name).
pub type Key = (String, String);

/// Pods kept at most (a node runs 110 by default, a few hundred at most): beyond it new pods
/// are refused and counted, so a wrong field selector cannot fill the agent's memory.
pub const MAX_PODS: usize = 5000;
/// Deleted pods remembered for enrichment, at most this many ...
pub const MAX_GONE: usize = 256;
/// ... for at most this long.
pub const GONE_TTL: Duration = Duration::from_secs(600);

/// Counters, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Added or updated pods.
    pub applied: u64,
    pub deleted: u64,
    /// Complete lists received (the first one, then one per relist).
    pub lists: u64,
    /// Pods not kept because the store was full, or objects without a namespace or name.
    pub refused: u64,
}

struct Gone {
    at: Instant,
    key: Key,
    uid: String,
    pod: Arc<Value>,
}

pub struct Store {
    pods: HashMap<Key, Arc<Value>>,
    by_uid: HashMap<String, Key>,
    /// A relist in progress: filled by `InitApply`, swapped in at `InitDone`. Until then,
    /// lookups are answered from the previous list.
    building: Option<HashMap<Key, Arc<Value>>>,
    gone: VecDeque<Gone>,
    max_pods: usize,
    /// A complete list has been received.
    pub synced: bool,
    pub stats: StoreStats,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(MAX_PODS)
    }
}

impl Store {
    pub fn new(max_pods: usize) -> Self {
        Self {
            pods: HashMap::new(),
            by_uid: HashMap::new(),
            building: None,
            gone: VecDeque::new(),
            max_pods,
            synced: false,
            stats: StoreStats::default(),
        }
    }

    /// Applies one watch event.
    pub fn apply(&mut self, ev: Event<DynamicObject>, now: Instant) {
        match ev {
            Event::Apply(obj) => match to_value(obj, "Pod") {
                Some((key, uid, pod)) => self.upsert(key, uid, pod),
                None => self.stats.refused += 1,
            },
            Event::Delete(obj) => match to_value(obj, "Pod") {
                Some((key, _, _)) => self.remove(&key, now),
                None => self.stats.refused += 1,
            },
            Event::Init => self.building = Some(HashMap::new()),
            Event::InitApply(obj) => {
                let b = self.building.get_or_insert_with(HashMap::new);
                match to_value(obj, "Pod") {
                    Some((key, _, pod)) if b.len() < self.max_pods || b.contains_key(&key) => {
                        b.insert(key, pod);
                    }
                    _ => self.stats.refused += 1,
                }
            }
            Event::InitDone => {
                let new = self.building.take().unwrap_or_default();
                // Pods the new list no longer has were deleted while the watch was down.
                let old = std::mem::take(&mut self.pods);
                for (key, pod) in old {
                    if !new.contains_key(&key) {
                        self.bury(key, pod, now);
                    }
                }
                self.by_uid = new
                    .iter()
                    .filter_map(|(k, p)| Some((uid_of(p)?.to_string(), k.clone())))
                    .collect();
                self.pods = new;
                self.synced = true;
                self.stats.lists += 1;
            }
        }
        self.prune(now);
    }

    fn upsert(&mut self, key: Key, uid: String, pod: Arc<Value>) {
        if self.pods.len() >= self.max_pods && !self.pods.contains_key(&key) {
            self.stats.refused += 1;
            return;
        }
        if let Some(old) = self.pods.get(&key)
            && let Some(old_uid) = uid_of(old)
            && old_uid != uid
        {
            // Same name, new pod (a missed delete): the old uid no longer points here.
            self.by_uid.remove(old_uid);
        }
        if !uid.is_empty() {
            self.by_uid.insert(uid, key.clone());
        }
        self.pods.insert(key, pod);
        self.stats.applied += 1;
    }

    fn remove(&mut self, key: &Key, now: Instant) {
        if let Some(pod) = self.pods.remove(key) {
            if let Some(uid) = uid_of(&pod) {
                self.by_uid.remove(uid);
            }
            self.bury(key.clone(), pod, now);
            self.stats.deleted += 1;
        }
    }

    fn bury(&mut self, key: Key, pod: Arc<Value>, now: Instant) {
        let uid = uid_of(&pod).unwrap_or_default().to_string();
        self.gone.push_back(Gone {
            at: now,
            key,
            uid,
            pod,
        });
        while self.gone.len() > MAX_GONE {
            self.gone.pop_front();
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .gone
            .front()
            .is_some_and(|g| now.saturating_duration_since(g.at) > GONE_TTL)
        {
            self.gone.pop_front();
        }
    }

    /// A pod on this node now.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        // Keyed by owned strings; the lookup builds the key once (two short allocations).
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A pod on this node now, by uid.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<Value>> {
        self.by_uid.get(uid).and_then(|k| self.pods.get(k)).cloned()
    }

    /// The pod an invocation is for: by uid when the runtime passed one (a pod recreated under
    /// the same name has another), else by name; the current pod first, then a recently
    /// deleted one (a DEL often runs after the pod left the API server).
    pub fn for_invocation(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Option<Arc<Value>> {
        match uid.filter(|u| !u.is_empty()) {
            Some(uid) => self.by_uid(uid).or_else(|| {
                self.gone
                    .iter()
                    .rev()
                    .find(|g| g.uid == uid)
                    .map(|g| g.pod.clone())
            }),
            None => self.get(namespace, name).or_else(|| {
                self.gone
                    .iter()
                    .rev()
                    .find(|g| g.key.0 == namespace && g.key.1 == name)
                    .map(|g| g.pod.clone())
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Deleted pods still remembered.
    pub fn gone_len(&self) -> usize {
        self.gone.len()
    }
}

pub fn uid_of(pod: &Value) -> Option<&str> {
    pod.get("metadata")?.get("uid")?.as_str()
}

/// The object as the API server sent it, minus `managedFields` (often the largest part, and
/// of no use here), with `apiVersion` and `kind` first (list items lack them). `None` for an
/// object without a name (or, for a namespaced kind, without a namespace).
pub fn to_value(mut obj: DynamicObject, kind: &str) -> Option<(Key, String, Arc<Value>)> {
    let namespace = match kind {
        "Namespace" => String::new(),
        _ => obj.metadata.namespace.clone()?,
    };
    let key = (namespace, obj.metadata.name.clone()?);
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    obj.metadata.managed_fields = None;
    let Value::Object(body) = serde_json::to_value(&obj).ok()? else {
        return None;
    };
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::from("v1"));
    m.insert("kind".into(), Value::from(kind));
    for (k, v) in body {
        m.insert(k, v);
    }
    Some((key, uid, Arc::new(Value::Object(m))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, uid: &str, note: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": uid, "resourceVersion": "1",
                         "labels": {"app": name}, "annotations": {"cniscope.io/commands": note},
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn note(s: &Store, ns: &str, name: &str) -> Option<String> {
        s.get(ns, name).map(|p| {
            p["metadata"]["annotations"]["cniscope.io/commands"]
                .as_str()
                .unwrap()
                .to_string()
        })
    }

    #[test]
    fn add_update_delete() {
        let now = Instant::now();
        let mut s = Store::default();
        s.apply(Event::Apply(pod("lab", "web", "u1", "a")), now);
        let p = s.get("lab", "web").unwrap();
        assert_eq!(p["kind"], "Pod");
        assert_eq!(p["apiVersion"], "v1");
        assert_eq!(p["spec"]["nodeName"], "node-a");
        assert!(p["metadata"].get("managedFields").is_none());
        s.apply(Event::Apply(pod("lab", "web", "u1", "b")), now);
        assert_eq!(note(&s, "lab", "web").as_deref(), Some("b"));
        assert_eq!(s.by_uid("u1").unwrap()["metadata"]["name"], "web");
        s.apply(Event::Delete(pod("lab", "web", "u1", "b")), now);
        assert!(s.get("lab", "web").is_none());
        assert!(s.by_uid("u1").is_none());
        // Still there for the DEL that follows, by name and by uid.
        assert_eq!(
            s.for_invocation("lab", "web", None).unwrap()["metadata"]["uid"],
            "u1"
        );
        assert!(s.for_invocation("lab", "web", Some("u1")).is_some());
        assert!(s.for_invocation("lab", "web", Some("other")).is_none());
        // ... but not after GONE_TTL.
        s.apply(Event::Init, now + GONE_TTL + Duration::from_secs(1));
        assert!(s.for_invocation("lab", "web", None).is_none());
        assert_eq!(s.stats.applied, 2);
        assert_eq!(s.stats.deleted, 1);
    }

    #[test]
    fn a_relist_replaces_the_store_at_init_done_only() {
        let now = Instant::now();
        let mut s = Store::default();
        s.apply(Event::Init, now);
        s.apply(Event::InitApply(pod("lab", "a", "ua", "1")), now);
        assert!(!s.synced);
        assert!(s.get("lab", "a").is_none(), "not before InitDone");
        s.apply(Event::InitDone, now);
        assert!(s.synced);
        assert_eq!(note(&s, "lab", "a").as_deref(), Some("1"));
        // The watch broke; meanwhile `a` was deleted and `b` created.
        s.apply(Event::Init, now);
        s.apply(Event::InitApply(pod("lab", "b", "ub", "2")), now);
        assert!(
            s.get("lab", "a").is_some(),
            "old list answers until InitDone"
        );
        s.apply(Event::InitDone, now);
        assert!(s.get("lab", "a").is_none());
        assert!(s.by_uid("ua").is_none());
        assert_eq!(s.by_uid("ub").unwrap()["metadata"]["name"], "b");
        assert_eq!(
            s.for_invocation("lab", "a", Some("ua")).unwrap()["metadata"]["name"],
            "a"
        );
        assert_eq!(s.stats.lists, 2);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_pod_recreated_under_its_name_is_found_by_uid() {
        let now = Instant::now();
        let mut s = Store::default();
        s.apply(Event::Apply(pod("lab", "db-0", "old", "x")), now);
        s.apply(Event::Delete(pod("lab", "db-0", "old", "x")), now);
        s.apply(Event::Apply(pod("lab", "db-0", "new", "y")), now);
        let f = |uid| s.for_invocation("lab", "db-0", uid).unwrap()["metadata"]["uid"].clone();
        assert_eq!(f(Some("old")), "old");
        assert_eq!(f(Some("new")), "new");
        assert_eq!(f(None), "new");
        // A missed delete: the newer pod replaces the older one under its name.
        s.apply(Event::Apply(pod("lab", "db-0", "newer", "z")), now);
        assert!(s.by_uid("new").is_none());
        assert_eq!(s.by_uid("newer").unwrap()["metadata"]["name"], "db-0");
    }

    #[test]
    fn bounded() {
        let now = Instant::now();
        let mut s = Store::new(3);
        for i in 0..5 {
            s.apply(
                Event::Apply(pod("lab", &format!("p{i}"), &format!("u{i}"), "")),
                now,
            );
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.stats.refused, 2);
        // Updates of kept pods still apply when full.
        s.apply(Event::Apply(pod("lab", "p0", "u0", "new")), now);
        assert_eq!(note(&s, "lab", "p0").as_deref(), Some("new"));
        s.apply(Event::Init, now);
        for i in 0..5 {
            s.apply(
                Event::InitApply(pod("lab", &format!("q{i}"), &format!("v{i}"), "")),
                now,
            );
        }
        s.apply(Event::InitDone, now);
        assert_eq!(s.len(), 3);
        for i in 0..(MAX_GONE + 10) {
            let name = format!("g{i}");
            s.apply(Event::Init, now);
            s.apply(Event::InitApply(pod("lab", &name, &name, "")), now);
            s.apply(Event::InitDone, now);
        }
        assert_eq!(s.gone_len(), MAX_GONE);
        // Objects without a name are refused, not kept.
        let nameless: DynamicObject =
            serde_json::from_value(json!({"metadata": {"namespace": "lab"}})).unwrap();
        let before = s.stats.refused;
        s.apply(Event::Apply(nameless), now);
        assert_eq!(s.stats.refused, before + 1);
    }
}
