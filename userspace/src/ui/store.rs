//! What the TUI keeps, bounded: the newest `retain` invocations as one-line rows (the full line
//! kept LZ4-compressed and decoded only when opened), and per network namespace its pod, tag and
//! change history. Lines are turned into rows and changes on the source threads
//! ([`super::prepare`]), so the UI thread only inserts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::filter::Filter;
use super::model::{self, Invocation, Line, Op};
use super::prepare::NetnsFacts;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::model::Outcome;

    fn row(id: &str, rev: u32, ok: bool) -> Row {
        Row {
            id: id.into(),
            revision: rev,
            ok,
            ..Row::default()
        }
    }

    fn change(netns: u32, ts_ns: u64, text: &str) -> Change {
        Change {
            ts_ns,
            source: "ip[1]".into(),
            in_cni: false,
            op: Arc::new(Op {
                ts_ns,
                netns,
                op: text.into(),
                outcome: Outcome::default(),
                ..Op::default()
            }),
        }
    }

    #[test]
    fn retention_drops_the_oldest() {
        let mut s = Store::new(3);
        for i in 0..5 {
            assert_eq!(
                s.insert_invocation(row(&format!("i{i}"), 1, true)),
                Inserted::New(i)
            );
        }
        assert_eq!((s.len(), s.visible_len(), s.evicted), (3, 3, 2));
        assert_eq!(s.visible_row(0).map(|r| r.id.as_str()), Some("i4"));
        assert_eq!(s.visible_row(2).map(|r| r.id.as_str()), Some("i2"));
        assert!(s.visible_row(3).is_none() && s.row(1).is_none());
        // An evicted id is new again.
        assert_eq!(s.insert_invocation(row("i0", 1, true)), Inserted::New(5));
    }

    #[test]
    fn revisions_replace_in_place_and_refilter() {
        let mut s = Store::new(10);
        s.insert_invocation(row("a", 1, true));
        s.insert_invocation(row("b", 1, true));
        s.set_filter(Filter::parse("", true));
        assert_eq!(s.visible_len(), 0);
        // A later revision that failed now matches "failures only", at its old place.
        assert_eq!(
            s.insert_invocation(row("a", 2, false)),
            Inserted::Replaced(0)
        );
        assert_eq!(s.visible_len(), 1);
        assert_eq!(s.position(0), Some(0));
        // The same or an older revision (a reconnect's history) changes nothing.
        assert_eq!(s.insert_invocation(row("a", 2, true)), Inserted::Duplicate);
        assert_eq!(s.insert_invocation(row("a", 1, true)), Inserted::Duplicate);
        assert_eq!(
            s.insert_invocation(row("a", 3, true)),
            Inserted::Replaced(0)
        );
        assert_eq!(s.visible_len(), 0);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn netns_history_is_ordered_deduplicated_and_bounded() {
        let mut s = Store::new(10);
        s.netns_change(change(7, 30, "link set dev eth0 up"));
        s.netns_change(change(7, 10, "link add eth0"));
        s.netns_change(change(7, 10, "link add eth0"));
        s.netns_change(change(9, 20, "route add 10.0.0.0/8"));
        let h: Vec<u64> = s.netns[&7].history.iter().map(|c| c.ts_ns).collect();
        assert_eq!(h, vec![10, 30]);
        assert_eq!(s.netns_order, vec![7, 9]);
        s.netns_change(change(9, 40, "route del 10.0.0.0/8"));
        assert_eq!(s.netns_order, vec![9, 7]);
        for i in 0..(MAX_HISTORY as u64 + 5) {
            s.netns_change(change(7, 100 + i, "x"));
        }
        assert_eq!(s.netns[&7].history.len(), MAX_HISTORY);
        for n in 0..(MAX_NETNS as u32 + 3) {
            s.netns_change(change(1000 + n, 1_000_000 + u64::from(n), "y"));
        }
        assert_eq!(s.netns.len(), MAX_NETNS);
        assert_eq!(s.netns_order.len(), MAX_NETNS);
        assert!(
            !s.netns.contains_key(&9),
            "the least recently changed goes first"
        );
    }
}
