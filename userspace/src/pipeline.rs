//! The stages between a decoded event and the lines people read, in one place so the live agent
//! and `cniscope replay` run exactly the same code: runs (per process) → correlator
//! (invocations) → NDJSON lines.

use std::path::PathBuf;

use serde_json::Value;

use crate::agent::output::{self, Batch};
use crate::clock::Clock;
use crate::correlate::Map;
use crate::correlate::correlator::{self, Correlator, Lookups, Output};
use crate::correlate::invocation::Op;
use crate::correlate::runs::{Run, Runs};
use crate::events::{Event, Role};
use crate::netlink::describe::{Described, describe};
use crate::netlink::names::Names;
use crate::record::Fact;

/// Lookups answered from the running system, remembered as facts for recordings.
pub struct LiveLookups {
    pub tag_dir: PathBuf,
    pub journal: Vec<Fact>,
    /// The agent's Kubernetes pod cache, when it has one.
    pub pods: Option<crate::k8s::PodCache>,
}

impl Lookups for LiveLookups {
    fn netns_inode(&mut self, path: &str) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(path).ok().map(|m| m.ino() as u32);
        self.journal.push(Fact::NetnsInode {
            path: path.to_string(),
            ino,
        });
        ino
    }
    fn tag(&mut self, inode: u32) -> Option<Value> {
        let tag = std::fs::read(self.tag_dir.join(format!("{inode}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        self.journal.push(Fact::Tag {
            inode,
            tag: tag.clone(),
        });
        tag
    }
    fn comm(&mut self, pid: u32) -> Option<String> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string());
        self.journal.push(Fact::Comm {
            pid,
            comm: comm.clone(),
        });
        comm
    }
    fn pod(&mut self, namespace: &str, name: &str, uid: Option<&str>) -> Option<Value> {
        // Without a cache there is nothing to journal: replays answer None just the same.
        let pod = self.pods.as_ref()?.identity(namespace, name, uid);
        self.journal.push(Fact::Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.map(str::to_string),
            pod: pod.clone(),
        });
        pod
    }
    fn take_facts(&mut self) -> Vec<Fact> {
        std::mem::take(&mut self.journal)
    }
}

/// Lookups answered from a recording's facts.
#[derive(Default)]
pub struct ReplayLookups {
    inodes: Map<String, Option<u32>>,
    tags: Map<u32, Option<Value>>,
    comms: Map<u32, Option<String>>,
    pods: Map<(String, String, Option<String>), Option<Value>>,
}

impl Lookups for ReplayLookups {
    fn netns_inode(&mut self, path: &str) -> Option<u32> {
        self.inodes.get(path).copied().flatten()
    }
    fn tag(&mut self, inode: u32) -> Option<Value> {
        self.tags.get(&inode).cloned().flatten()
    }
    fn comm(&mut self, pid: u32) -> Option<String> {
        self.comms.get(&pid).cloned().flatten()
    }
    fn pod(&mut self, namespace: &str, name: &str, uid: Option<&str>) -> Option<Value> {
        let key = (
            namespace.to_string(),
            name.to_string(),
            uid.map(str::to_string),
        );
        self.pods.get(&key).cloned().flatten()
    }
    fn apply(&mut self, f: &Fact) {
        match f {
            Fact::NetnsInode { path, ino } => {
                self.inodes.insert(path.clone(), *ino);
            }
            Fact::Tag { inode, tag } => {
                self.tags.insert(*inode, tag.clone());
            }
            Fact::Comm { pid, comm } => {
                self.comms.insert(*pid, comm.clone());
            }
            Fact::Pod {
                namespace,
                name,
                uid,
                pod,
            } => {
                let key = (namespace.clone(), name.clone(), uid.clone());
                self.pods.insert(key, pod.clone());
            }
            _ => {}
        }
    }
}

pub struct Pipeline {
    pub runs: Runs,
    pub names: Names,
    pub correlator: Correlator,
    pub lookups: Box<dyn Lookups + Send>,
    pub clock: Clock,
    /// `--events`: raw events, every run and every netlink change get lines of their own.
    pub events: bool,
    /// Prometheus counters, when `--metrics-addr` is on.
    pub metrics: Option<std::sync::Arc<crate::agent::metrics::Metrics>>,
    /// When set, finished invocations and netns-level changes are handed over here as values
    /// instead of being written as NDJSON lines (for callers that read the structures: the
    /// pipeline benchmark's decode+correlate stage).
    pub collect: Option<Vec<Output>>,
    /// Runs finished by the event being pushed (kept between events for its capacity).
    finished: Vec<Run>,
}

impl Pipeline {
    pub fn new(
        clock: Clock,
        events: bool,
        max_open_runs: usize,
        cfg: correlator::Config,
        lookups: Box<dyn Lookups + Send>,
    ) -> Self {
        Self {
            runs: Runs::new(max_open_runs),
            names: Names::default(),
            correlator: Correlator::new(cfg, clock),
            lookups,
            clock,
            events,
            metrics: None,
            collect: None,
            finished: Vec::new(),
        }
    }

    /// The pipeline of a replay: every lookup answered from the recording's facts, never from
    /// this system (`cniscope replay` and the pipeline benchmark).
    pub fn replay(clock: Clock, events: bool, cfg: correlator::Config) -> Self {
        let mut p = Self::new(clock, events, 4096, cfg, Box::new(ReplayLookups::default()));
        p.names = Names::offline();
        p
    }

    fn emit(&mut self, outs: Vec<Output>, out: &mut Batch) {
        for o in outs {
            if let Some(m) = &self.metrics {
                match &o {
                    Output::Invocation(inv) => m.invocation(inv),
                    Output::Netns(n) => m.netns_op(&n.op),
                }
            }
            if let Some(c) = &mut self.collect {
                c.push(o);
                continue;
            }
            match o {
                Output::Invocation(inv) => out.push(&*inv),
                // In --events mode every change already has its line.
                Output::Netns(n) if !self.events => out.push(&*n),
                Output::Netns(_) => {}
            }
        }
    }

    pub fn push(&mut self, ev: &Event, out: &mut Batch) {
        match ev {
            Event::Exec(e) => {
                if e.role == Role::Plugin
                    && let Some(ns) = e.cni.as_ref().and_then(|c| c.netns.as_deref())
                {
                    self.names.learn_path(std::path::Path::new(ns));
                }
                self.correlator.on_exec(e, self.lookups.as_mut());
            }
            Event::Fork(f) => self.correlator.on_fork(f.pid, f.parent_tgid),
            Event::Netlink(req) => {
                // The kernel side looks this up only for `--netlink plugins`; only the --events
                // lines show it, so only they pay for a copy.
                let marked;
                let req = if self.events && !req.plugin_tree && self.runs.contains(req.tgid) {
                    marked = crate::netlink::NlRequest {
                        plugin_tree: true,
                        ..req.clone()
                    };
                    &marked
                } else {
                    req
                };
                // Described once: the --events lines and the correlator share the result.
                let ts = self.clock.rfc3339(req.ts_ns);
                let netns_name = self.names.display(req.netns);
                let described = describe(req, &mut self.names);
                if self.events {
                    output::netlink_lines(req, &described, &ts, netns_name.as_deref(), true, out);
                }
                for d in described {
                    match d {
                        Described::Change(c) => {
                            let op = Op {
                                ts: ts.clone(),
                                ts_ns: req.ts_ns,
                                pid: req.pid,
                                tgid: req.tgid,
                                comm: req.comm.clone(),
                                netns: req.netns,
                                netns_name: netns_name.clone(),
                                change: *c,
                            };
                            if let Some(o) = self.correlator.on_op(op) {
                                self.emit(vec![o], out);
                            }
                        }
                        // Reported with the raw bytes, never dropped (already, with --events).
                        Described::Undecodable(u) if !self.events => {
                            output::undecodable_line(req, &u, &ts, out)
                        }
                        Described::Undecodable(_) => {}
                    }
                }
            }
            _ => {}
        }
        if self.events {
            out.push_value(&output::event_json(ev, &self.clock));
        }
        let mut finished = std::mem::take(&mut self.finished);
        self.runs.push_into(ev, &mut finished);
        for r in finished.drain(..) {
            if self.events {
                out.push_value(&output::run_json(&r, &self.clock));
            }
            let outs = self.correlator.on_run(r, self.lookups.as_mut());
            self.emit(outs, out);
        }
        self.finished = finished;
    }

    /// Facts looked up on the system since the last call (for a recording).
    pub fn take_facts(&mut self) -> Vec<Fact> {
        let mut f = self.names.take_facts();
        f.extend(self.lookups.take_facts());
        f
    }

    /// Applies recorded facts before replaying the record they were learned for.
    pub fn apply_facts(&mut self, facts: &[Fact]) {
        for f in facts {
            self.names.apply(f);
            self.lookups.apply(f);
        }
    }

    /// Completes invocations that are due at boot-time `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Batch) {
        let outs = self.correlator.tick(now_ns, self.lookups.as_mut());
        self.emit(outs, out);
    }

    /// At the end: flush open runs and invocations (marked partial/incomplete).
    pub fn drain(&mut self, out: &mut Batch) {
        for r in self.runs.drain() {
            if self.events {
                out.push_value(&output::run_json(&r, &self.clock));
            }
            let outs = self.correlator.on_run(r, self.lookups.as_mut());
            self.emit(outs, out);
        }
        let outs = self.correlator.drain(self.lookups.as_mut());
        self.emit(outs, out);
    }
}
