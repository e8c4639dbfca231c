//! What the TUI keeps, bounded: the newest `retain` invocations as one-line rows (the full line
//! kept LZ4-compressed and decoded only when opened), and per network namespace its pod, tag and
//! change history. Lines are turned into [`Prepared`] items on the source threads, so the UI
//! thread only inserts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::filter::Filter;
use super::model::{self, AgentEvent, Invocation, Line, Op, Stats, Step};

/// Lower-cased fields the filter looks at.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    pub command: String,
    pub plugins: Vec<String>,
    pub verdict: String,
}

/// One invocation as the list shows it.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub seq: u64,
    pub id: String,
    pub revision: u32,
    pub time: String,
    /// `namespace/name`, else the container id.
    pub who: String,
    pub command: String,
    pub chain: String,
    pub ok: bool,
    pub partial: bool,
    /// `ok`, or `FAIL <plugin>`.
    pub verdict: String,
    pub duration_ns: Option<u64>,
    pub search: Search,
    pub(crate) packed: Arc<[u8]>,
}

impl Row {
    /// The full invocation (decompressed and parsed now).
    pub fn invocation(&self) -> Option<Invocation> {
        let raw = lz4_flex::decompress_size_prepended(&self.packed).ok()?;
        match model::parse(std::str::from_utf8(&raw).ok()?) {
            Line::Invocation(i) => Some(*i),
            _ => None,
        }
    }
}

/// One change in a namespace's history.
#[derive(Debug, Clone)]
pub struct Change {
    pub ts_ns: u64,
    /// Who made it: `bridge ADD`, `ip[1234]`.
    pub source: String,
    /// Made by a plugin run (else: a netns-level change outside any run).
    pub in_cni: bool,
    pub op: Arc<Op>,
}

#[derive(Debug, Clone, Default)]
pub struct Netns {
    pub inode: u32,
    pub name: String,
    pub pod: Option<String>,
    /// cniscope-cni's tag, from the newest invocation that had one.
    pub tag: Option<Arc<Value>>,
    pub history: VecDeque<Change>,
    pub last_ns: u64,
    pub cni_runs: u32,
    seen: HashSet<(u64, u32, u32, String)>,
}

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

/// Namespaces kept, and changes kept per namespace.
pub const MAX_NETNS: usize = 1024;
pub const MAX_HISTORY: usize = 500;

#[derive(Debug, Default)]
pub struct Store {
    retain: usize,
    rows: VecDeque<Row>,
    /// seq of `rows[0]`.
    base: u64,
    next_seq: u64,
    by_id: HashMap<String, u64>,
    filter: Filter,
    /// seqs of rows that match the filter, oldest first.
    visible: VecDeque<u64>,
    pub netns: HashMap<u32, Netns>,
    /// Namespace inodes, most recently changed first.
    pub netns_order: Vec<u32>,
    pub evicted: u64,
}

/// What inserting an invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New(u64),
    /// A later revision replaced the row with this seq.
    Replaced(u64),
    /// Already had this revision (a reconnect's history).
    Duplicate,
}

impl Store {
    pub fn new(retain: usize) -> Self {
        Self {
            retain: retain.max(1),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn row(&self, seq: u64) -> Option<&Row> {
        let i = seq.checked_sub(self.base)?;
        self.rows.get(usize::try_from(i).ok()?)
    }

    /// The visible row at `pos`, counted from the newest (0).
    pub fn visible_row(&self, pos: usize) -> Option<&Row> {
        let n = self.visible.len();
        let seq = *self.visible.get(n.checked_sub(pos + 1)?)?;
        self.row(seq)
    }

    /// Position (from the newest) of a visible row.
    pub fn position(&self, seq: u64) -> Option<usize> {
        let i = self.visible.binary_search(&seq).ok()?;
        Some(self.visible.len() - 1 - i)
    }

    pub fn set_filter(&mut self, f: Filter) {
        self.filter = f;
        self.visible = self
            .rows
            .iter()
            .filter(|r| self.filter.matches(r))
            .map(|r| r.seq)
            .collect();
    }

    pub fn insert_invocation(&mut self, mut row: Row) -> Inserted {
        if let Some(&seq) = self.by_id.get(&row.id) {
            let filter = &self.filter;
            let Some(i) = seq
                .checked_sub(self.base)
                .and_then(|i| usize::try_from(i).ok())
            else {
                return Inserted::Duplicate;
            };
            let Some(old) = self.rows.get_mut(i) else {
                return Inserted::Duplicate;
            };
            if row.revision <= old.revision {
                return Inserted::Duplicate;
            }
            row.seq = seq;
            let was = filter.matches(old);
            let now = filter.matches(&row);
            *old = row;
            match (was, now) {
                (true, false) => {
                    if let Ok(p) = self.visible.binary_search(&seq) {
                        self.visible.remove(p);
                    }
                }
                (false, true) => {
                    if let Err(p) = self.visible.binary_search(&seq) {
                        self.visible.insert(p, seq);
                    }
                }
                _ => {}
            }
            return Inserted::Replaced(seq);
        }
        let seq = self.next_seq;
        row.seq = seq;
        self.next_seq += 1;
        if self.filter.matches(&row) {
            self.visible.push_back(row.seq);
        }
        self.by_id.insert(row.id.clone(), row.seq);
        self.rows.push_back(row);
        while self.rows.len() > self.retain {
            if let Some(old) = self.rows.pop_front() {
                self.by_id.remove(&old.id);
                self.evicted += 1;
            }
            self.base += 1;
        }
        while self.visible.front().is_some_and(|&s| s < self.base) {
            self.visible.pop_front();
        }
        Inserted::New(seq)
    }

    /// Learns a namespace's name, pod and tag.
    pub fn netns_facts(&mut self, f: NetnsFacts) {
        let e = self.netns.entry(f.inode).or_insert_with(|| Netns {
            inode: f.inode,
            name: format!("netns:{}", f.inode),
            ..Default::default()
        });
        if let Some(n) = f.name {
            e.name = n;
        }
        if f.pod.is_some() {
            e.pod = f.pod;
        }
        if f.tag.is_some() {
            e.tag = f.tag;
        }
        if f.cni_run {
            e.cni_runs += 1;
        }
        let new = !self.netns_order.contains(&f.inode);
        if new {
            self.touch(f.inode);
        }
    }

    /// Adds a change to its namespace's history (once: a reconnect resends history).
    pub fn netns_change(&mut self, c: Change) {
        let inode = c.op.netns;
        let e = self.netns.entry(inode).or_insert_with(|| Netns {
            inode,
            name: c
                .op
                .netns_name
                .clone()
                .unwrap_or_else(|| format!("netns:{inode}")),
            ..Default::default()
        });
        let key = (c.ts_ns, c.op.pid, c.op.seq, c.op.op.clone());
        if !e.seen.insert(key) {
            return;
        }
        e.last_ns = e.last_ns.max(c.ts_ns);
        // Changes arrive nearly in order (a plugin's come with its invocation, after the quiet
        // period): insert by time.
        let at = e.history.partition_point(|h| h.ts_ns <= c.ts_ns);
        e.history.insert(at, c);
        while e.history.len() > MAX_HISTORY {
            if let Some(old) = e.history.pop_front() {
                e.seen
                    .remove(&(old.ts_ns, old.op.pid, old.op.seq, old.op.op.clone()));
            }
        }
        self.touch(inode);
    }

    /// Moves `inode` to its place in `netns_order` (most recently changed first) and drops the
    /// least recently changed namespace beyond the bound.
    fn touch(&mut self, inode: u32) {
        if let Some(p) = self.netns_order.iter().position(|&i| i == inode) {
            self.netns_order.remove(p);
        }
        let last = |i: &u32| self.netns.get(i).map_or(0, |n| n.last_ns);
        let mine = last(&inode);
        let at = self.netns_order.partition_point(|i| last(i) >= mine);
        self.netns_order.insert(at, inode);
        while self.netns_order.len() > MAX_NETNS {
            if let Some(gone) = self.netns_order.pop() {
                self.netns.remove(&gone);
            }
        }
    }

    pub fn retain(&self) -> usize {
        self.retain
    }
}
