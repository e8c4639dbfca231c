//! The `/` filter: space-separated terms, all of which must match (case-insensitive substring).
//!
//! - `word`: the pod (namespace/name), container id, command, a plugin, or the verdict
//! - `pod:web`, `ns:shop` (or `namespace:`), `plugin:tuning`, `cmd:add` (or `command:`)
//! - `fail` (or `failed`, `!ok`): failed invocations only (also `x`, kept separately)

use super::store::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Any(String),
    Pod(String),
    Ns(String),
    Plugin(String),
    Cmd(String),
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
    /// The `x` toggle, independent of the typed text.
    pub failures_only: bool,
}

impl Filter {
    pub fn parse(text: &str, failures_only: bool) -> Self {
        let terms = text
            .split_whitespace()
            .map(|w| {
                let lw = w.to_lowercase();
                match lw.split_once(':') {
                    Some(("pod", v)) => Term::Pod(v.into()),
                    Some(("ns" | "namespace", v)) => Term::Ns(v.into()),
                    Some(("plugin", v)) => Term::Plugin(v.into()),
                    Some(("cmd" | "command", v)) => Term::Cmd(v.into()),
                    _ if matches!(lw.as_str(), "fail" | "failed" | "failure" | "!ok") => {
                        Term::Failed
                    }
                    _ => Term::Any(lw),
                }
            })
            .collect();
        Self {
            terms,
            failures_only,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && !self.failures_only
    }

    pub fn matches(&self, r: &Row) -> bool {
        if self.failures_only && r.ok {
            return false;
        }
        self.terms.iter().all(|t| match t {
            Term::Failed => !r.ok,
            Term::Pod(v) => r.search.pod.contains(v.as_str()),
            Term::Ns(v) => r.search.namespace.contains(v.as_str()),
            Term::Plugin(v) => r.search.plugins.iter().any(|p| p.contains(v.as_str())),
            Term::Cmd(v) => r.search.command.contains(v.as_str()),
            Term::Any(v) => {
                let v = v.as_str();
                r.search.pod.contains(v)
                    || r.search.container.contains(v)
                    || r.search.command.contains(v)
                    || r.search.verdict.contains(v)
                    || r.search.plugins.iter().any(|p| p.contains(v))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::store::Search;

    fn row(pod: &str, cmd: &str, plugins: &[&str], ok: bool) -> Row {
        Row {
            ok,
            search: Search {
                pod: pod.into(),
                namespace: pod.split('/').next().unwrap_or("").into(),
                container: "c0ffee".into(),
                command: cmd.to_lowercase(),
                plugins: plugins.iter().map(|p| p.to_string()).collect(),
                verdict: if ok {
                    "ok".into()
                } else {
                    "tuning failed".into()
                },
            },
            ..Row::default()
        }
    }

    #[test]
    fn terms() {
        let web = row(
            "shop/web-1",
            "ADD",
            &["bridge", "host-local", "tuning"],
            true,
        );
        let api = row("shop/api-2", "ADD", &["bridge", "tuning"], false);
        let del = row("kube-system/dns", "DEL", &["bridge"], true);
        let m = |f: &str, r: &Row| Filter::parse(f, false).matches(r);
        assert!(m("", &web) && m("", &del));
        assert!(m("ns:shop", &web) && m("ns:shop", &api) && !m("ns:shop", &del));
        assert!(m("pod:web", &web) && !m("pod:web", &api));
        assert!(m("plugin:host", &web) && !m("plugin:host", &api));
        assert!(m("cmd:del", &del) && !m("cmd:del", &web));
        assert!(m("fail", &api) && !m("fail", &web));
        assert!(m("SHOP Tuning", &api) && !m("shop dns", &web));
        assert!(m("c0ffee", &web));
        let f = Filter::parse("ns:shop", true);
        assert!(f.matches(&api) && !f.matches(&web));
        assert!(Filter::parse("  ", false).is_empty());
        assert!(!Filter::parse("", true).is_empty());
    }
}
