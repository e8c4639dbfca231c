//! The stages between a decoded event and the lines people read, in one place so the live agent
//! and `cniscope replay` run exactly the same code: runs (per process) → correlator
//! (invocations) → NDJSON lines.

use std::path::PathBuf;

use serde_json::Value;

use crate::agent::output::{self, Batch};
use crate::clock::Clock;
use crate::correlate::correlator::{self, Correlator, Lookups, Output};
use crate::correlate::invocation::Op;
use crate::correlate::runs::Runs;
use crate::events::{Event, Role};
use crate::netlink::describe::{Described, describe};
use crate::netlink::names::Names;

/// Lookups answered from the running system.
pub struct LiveLookups {
    pub tag_dir: PathBuf,
}

impl Lookups for LiveLookups {
    fn netns_inode(&mut self, path: &str) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.ino() as u32)
    }
    fn tag(&mut self, inode: u32) -> Option<Value> {
        let b = std::fs::read(self.tag_dir.join(format!("{inode}.json"))).ok()?;
        serde_json::from_slice(&b).ok()
    }
    fn comm(&mut self, pid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
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
        }
    }

    fn emit(&mut self, outs: Vec<Output>, out: &mut Batch) {
        for o in outs {
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
                let mut req = req.clone();
                // The kernel side looks this up only for `--netlink plugins`.
                req.plugin_tree |= self.runs.contains(req.tgid);
                if self.events {
                    output::netlink_lines(&req, &mut self.names, &self.clock, true, out);
                }
                let ts = self.clock.rfc3339(req.ts_ns);
                let netns_name = self.names.display(req.netns);
                for d in describe(&req, &mut self.names) {
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
                        Described::Undecodable(_) if self.events => {}
                        Described::Undecodable(_) => {
                            // Reported with the raw bytes, never dropped.
                            output::netlink_lines(&req, &mut self.names, &self.clock, false, out);
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
        if self.events {
            out.push_value(&output::event_json(ev, &self.clock));
        }
        for r in self.runs.push(ev) {
            if self.events {
                out.push_value(&output::run_json(&r, &self.clock));
            }
            let outs = self.correlator.on_run(r, self.lookups.as_mut());
            self.emit(outs, out);
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
