//! Lines into what the store inserts, on the source threads (so the UI thread only inserts):
//! an invocation becomes its list row (with the line LZ4-packed, decoded again only when
//! opened), the facts it gives about namespaces (name, pod, cniscope-cni's tag) and the netlink
//! changes its steps made, per namespace.

use std::sync::Arc;

use serde_json::Value;

use super::model::{self, AgentEvent, Invocation, Line, Stats, Step};
use super::store::{Change, Row, Search};

/// Facts about one namespace learned from a line.
#[derive(Debug, Clone, Default)]
pub struct NetnsFacts {
    pub inode: u32,
    pub name: Option<String>,
    pub pod: Option<String>,
    pub tag: Option<Arc<Value>>,
    pub cni_run: bool,
}

/// A line, ready to insert.
#[derive(Debug, Clone)]
pub enum Prepared {
    Invocation {
        row: Box<Row>,
        facts: Vec<NetnsFacts>,
        changes: Vec<Change>,
    },
    Netlink {
        facts: NetnsFacts,
        change: Change,
    },
    Stats(Stats),
    Agent(AgentEvent),
    SnapshotEnd,
    Lagged(u64),
    Ignored,
    Bad(String),
}

fn netns_basename(path: &str) -> Option<String> {
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn collect_ops(steps: &[Step], cmd: &str, via: Option<&str>, out: &mut Vec<Change>) {
    for s in steps {
        for op in &s.netlink {
            let mut source = format!("{} {cmd}", s.plugin);
            if let Some(v) = via {
                source.push_str(&format!(" (via {v})"));
            }
            if op.comm != s.plugin && !op.comm.is_empty() {
                source.push_str(&format!(" · {}", op.comm));
            }
            out.push(Change {
                ts_ns: op.ts_ns,
                source,
                in_cni: true,
                op: Arc::new(op.clone()),
            });
        }
        collect_ops(&s.delegates, cmd, Some(&s.plugin), out);
        for inv in &s.invocations {
            collect_ops(&inv.steps, &inv.command, Some(&s.plugin), out);
        }
    }
}

fn all_plugins(steps: &[Step], out: &mut Vec<String>) {
    for s in steps {
        let p = s.plugin.to_lowercase();
        if !out.contains(&p) {
            out.push(p);
        }
        all_plugins(&s.delegates, out);
        for inv in &s.invocations {
            all_plugins(&inv.steps, out);
        }
    }
}

/// Builds the row and netns facts of an invocation line.
pub fn prepare_invocation(line: &str, inv: &Invocation) -> Prepared {
    let pod = inv.pod.as_ref().and_then(model::Pod::label);
    let who = pod.clone().unwrap_or_else(|| {
        let c = &inv.container_id;
        c.get(..12).unwrap_or(c).to_string()
    });
    let verdict = if inv.verdict.ok {
        if inv.partial { "partial" } else { "ok" }.to_string()
    } else {
        match &inv.verdict.plugin {
            Some(p) => format!("FAIL {p}"),
            None => "FAIL".into(),
        }
    };
    let mut plugins = Vec::new();
    all_plugins(&inv.steps, &mut plugins);
    let row = Row {
        seq: 0,
        id: inv.id.clone(),
        revision: inv.revision,
        time: model::clock(&inv.ts).to_string(),
        who,
        command: inv.command.clone(),
        chain: inv.chain.join("›"),
        ok: inv.verdict.ok,
        partial: inv.partial,
        verdict,
        duration_ns: inv.duration_ns,
        search: Search {
            pod: pod.clone().unwrap_or_default().to_lowercase(),
            namespace: inv
                .pod
                .as_ref()
                .and_then(|p| p.namespace.clone())
                .unwrap_or_default()
                .to_lowercase(),
            container: inv.container_id.to_lowercase(),
            command: inv.command.to_lowercase(),
            plugins,
            verdict: inv.verdict.summary.to_lowercase(),
        },
        packed: lz4_flex::compress_prepend_size(line.as_bytes()).into(),
    };
    let mut changes = Vec::new();
    collect_ops(&inv.steps, &inv.command, None, &mut changes);
    let mut facts = Vec::new();
    if let Some(inode) = inv.netns_inode {
        facts.push(NetnsFacts {
            inode,
            name: inv.netns.as_deref().and_then(netns_basename),
            pod,
            tag: inv.tag.clone().map(Arc::new),
            cni_run: true,
        });
    }
    for c in &changes {
        if !facts.iter().any(|f| f.inode == c.op.netns) {
            facts.push(NetnsFacts {
                inode: c.op.netns,
                name: c.op.netns_name.clone(),
                ..Default::default()
            });
        }
    }
    Prepared::Invocation {
        row: Box::new(row),
        facts,
        changes,
    }
}

/// Parses and prepares one NDJSON line (on a source thread).
pub fn prepare(line: &str) -> Prepared {
    match model::parse(line) {
        Line::Invocation(inv) => prepare_invocation(line, &inv),
        Line::Netlink(n) => {
            let source = format!("{}[{}]", n.op.comm, n.op.pid);
            Prepared::Netlink {
                facts: NetnsFacts {
                    inode: n.op.netns,
                    name: n.op.netns_name.clone(),
                    pod: n.pod.as_ref().and_then(model::Pod::label),
                    tag: None,
                    cni_run: false,
                },
                change: Change {
                    ts_ns: n.op.ts_ns,
                    source,
                    in_cni: false,
                    op: Arc::new(n.op),
                },
            }
        }
        Line::Stats(s) => Prepared::Stats(s),
        Line::Agent(a) => Prepared::Agent(a),
        Line::SnapshotEnd => Prepared::SnapshotEnd,
        Line::Lagged(n) => Prepared::Lagged(n),
        Line::Other(_) => Prepared::Ignored,
        Line::Bad(e) => Prepared::Bad(e),
    }
}
