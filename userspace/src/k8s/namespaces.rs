//! Namespace objects, fetched when the plugin asks (its `namespaceLabel` opt-in reads the
//! namespace's labels) and kept briefly: a label an admin adds or removes takes effect within
//! `FOUND_TTL`. Bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a namespace read from the API server is reused.
pub const FOUND_TTL: Duration = Duration::from_secs(10);
/// How long "no such namespace" or "forbidden" is reused.
pub const MISSING_TTL: Duration = Duration::from_secs(5);
/// Namespaces kept at most.
pub const MAX_NAMESPACES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Found(Arc<Value>),
    NotFound,
    /// A definite refusal by the API server (e.g. 403 without the optional RBAC rule).
    Refused(String),
}

#[derive(Default)]
pub struct NsCache {
    map: HashMap<String, (Instant, Answer)>,
}

impl NsCache {
    /// The answer for `name` if it is still fresh at `now`.
    pub fn get(&self, name: &str, now: Instant) -> Option<Answer> {
        let (at, a) = self.map.get(name)?;
        let ttl = match a {
            Answer::Found(_) => FOUND_TTL,
            _ => MISSING_TTL,
        };
        (now.saturating_duration_since(*at) < ttl).then(|| a.clone())
    }

    pub fn put(&mut self, name: &str, a: Answer, now: Instant) {
        if self.map.len() >= MAX_NAMESPACES && !self.map.contains_key(name) {
            self.map
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < FOUND_TTL);
            if self.map.len() >= MAX_NAMESPACES
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(name.to_string(), (now, a));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_cache_is_bounded() {
        let t = Instant::now();
        let mut c = NsCache::default();
        let ns = Arc::new(serde_json::json!({"metadata": {"name": "lab"}}));
        c.put("lab", Answer::Found(ns.clone()), t);
        c.put("gone", Answer::NotFound, t);
        assert_eq!(
            c.get("lab", t + Duration::from_secs(1)),
            Some(Answer::Found(ns))
        );
        assert_eq!(
            c.get("gone", t + Duration::from_secs(1)),
            Some(Answer::NotFound)
        );
        assert_eq!(c.get("gone", t + MISSING_TTL), None);
        assert_eq!(c.get("lab", t + FOUND_TTL), None);
        assert_eq!(c.get("other", t), None);
        for i in 0..(MAX_NAMESPACES + 5) {
            c.put(
                &format!("n{i}"),
                Answer::NotFound,
                t + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(c.len(), MAX_NAMESPACES);
        assert!(c.get(&format!("n{}", MAX_NAMESPACES + 4), t).is_some());
    }
}
