//! Turns plugin runs and netlink changes into invocations.
//!
//! Rules (documented in the README):
//! - A plugin started by a process that is not itself a plugin opens or joins the invocation
//!   keyed by (that parent, CNI_CONTAINERID, CNI_IFNAME, CNI_COMMAND): a runtime runs a chain's
//!   plugins one after the other from one process.
//! - A plugin started by a plugin is its delegate (IPAM) when container, interface and command
//!   match, and a nested invocation (a Multus delegate) otherwise.
//! - A netlink change belongs to the step whose process tree made it; others are netns-level.
//! - An invocation is complete when none of its plugins runs and either one of them failed
//!   (runtimes stop at the first error) or `quiet` has passed since the last one ended. A step
//!   that arrives within `late_window` after that reopens it, and it is reported again with the
//!   next revision: a late step is never lost.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Map as HashMap;

use serde_json::Value;

use super::diff::diff;
use super::identity::{Pod, cni_error_in, plugin_name};
use super::invocation::*;
use super::json::Json;
use super::runs::Run;
use crate::clock::Clock;
use crate::digits::push_decimal;
use crate::events::{Exec, Role};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub quiet_ns: u64,
    pub late_window_ns: u64,
    /// Processes remembered for parentage.
    pub max_procs: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quiet_ns: 1_000_000_000,
            late_window_ns: 10_000_000_000,
            max_procs: 65_536,
        }
    }
}

/// Reported invocations kept for late steps to reopen (each with its steps' stdin/stdout).
const MAX_DONE: usize = 1024;

/// Runtime pid (or parent step pid for nested), container id, ifname, command.
type Key = (u32, String, String, String);

#[derive(Debug, Clone)]
enum Parent {
    /// Top-level or nested invocation.
    Invocation(Key),
    /// Delegate of the plugin with this tgid.
    Step(u32),
}

struct OpenStep {
    /// Its CNI_CONTAINERID, CNI_IFNAME and CNI_COMMAND (a plugin it runs for the same three is
    /// its delegate). Copied rather than holding the exec record, which the run table then
    /// hands over without a copy when the process exits.
    ident: Option<(Option<String>, Option<String>, Option<String>)>,
    parent: Parent,
    netns_inode: Option<u32>,
    ops: Vec<Op>,
    spawned: Vec<Spawned>,
    delegates: Vec<Step>,
    nested: Vec<Key>,
}

struct OpenInv {
    key: Key,
    steps: Vec<Step>,
    running: usize,
    last_ns: u64,
    revision: u32,
    id: String,
    nested_in: Option<u32>,
    failed: bool,
    /// The runtime's command name, read while it ran.
    runtime_comm: Option<String>,
}

/// What the correlator has to say.
pub enum Output {
    /// Shared with the correlator, which keeps it for a while in case a late step reopens it.
    Invocation(Arc<Invocation>),
    Netns(Box<NetnsChange>),
}

pub struct Correlator {
    cfg: Config,
    clock: Clock,
    /// tgid → parent tgid.
    parents: HashMap<u32, u32>,
    parent_order: VecDeque<u32>,
    steps: HashMap<u32, OpenStep>,
    invs: HashMap<Key, OpenInv>,
    /// Reported invocations that a late step may still reopen: key → (reported at, invocation).
    done: HashMap<Key, (u64, Arc<Invocation>)>,
    /// Pods of namespaces, for changes made later in them.
    pub netns_pods: HashMap<u32, Pod>,
    /// Finished nested invocations waiting for their parent step.
    nested_done: HashMap<Key, Invocation>,
}

impl Correlator {
    pub fn new(cfg: Config, clock: Clock) -> Self {
        Self {
            cfg,
            clock,
            parents: HashMap::default(),
            parent_order: VecDeque::new(),
            steps: HashMap::default(),
            invs: HashMap::default(),
            done: HashMap::default(),
            netns_pods: HashMap::default(),
            nested_done: HashMap::default(),
        }
    }

    pub fn open_invocations(&self) -> usize {
        self.invs.len()
    }

    fn remember_parent(&mut self, tgid: u32, parent: u32) {
        if self.parents.insert(tgid, parent).is_none() {
            self.parent_order.push_back(tgid);
            while self.parent_order.len() > self.cfg.max_procs {
                if let Some(old) = self.parent_order.pop_front() {
                    self.parents.remove(&old);
                }
            }
        }
    }

    /// The nearest plugin step at or above `tgid` in the process tree.
    fn owner(&self, mut tgid: u32) -> Option<u32> {
        for _ in 0..16 {
            if self.steps.contains_key(&tgid) {
                return Some(tgid);
            }
            tgid = *self.parents.get(&tgid)?;
        }
        None
    }

    pub fn on_fork(&mut self, child: u32, parent: u32) {
        self.remember_parent(child, parent);
    }

    pub fn on_exec(&mut self, e: &Arc<Exec>, look: &mut dyn Lookups) {
        self.remember_parent(e.tgid, e.ppid);
        if e.role != Role::Plugin {
            return;
        }
        let netns_inode = e
            .cni
            .as_ref()
            .and_then(|c| c.netns.as_deref())
            .filter(|p| !p.is_empty())
            .and_then(|p| look.netns_inode(p));
        // Changes made in this namespace from now on carry the pod's name (the first plugin
        // that names it wins; the others' CNI_ARGS are not read again).
        if let Some(i) = netns_inode
            && let std::collections::hash_map::Entry::Vacant(slot) = self.netns_pods.entry(i)
            && let Some(pod) = e
                .cni
                .as_ref()
                .and_then(|c| c.args.as_deref())
                .and_then(Pod::from_cni_args)
        {
            slot.insert(pod);
        }
        let cni = e.cni.as_ref();
        let (cid, ifname, cmd) = (
            cni.and_then(|c| c.containerid.clone()).unwrap_or_default(),
            cni.and_then(|c| c.ifname.clone()).unwrap_or_default(),
            cni.and_then(|c| c.command.clone()).unwrap_or_default(),
        );
        let parent_step = self.owner(e.ppid);
        // A process a plugin starts inherits CNI_COMMAND (portmap's iptables, for one): it is a
        // delegate plugin only if it runs from one of CNI_PATH's directories; otherwise it is
        // listed under the step's spawned processes like any other child.
        if parent_step.is_some() && !in_cni_path(e) {
            return;
        }
        let parent = match parent_step {
            Some(p) => {
                let pc = self.steps[&p].ident.as_ref();
                if pc.is_some_and(|(c, i, m)| {
                    c.as_deref() == Some(&cid)
                        && i.as_deref() == Some(&ifname)
                        && m.as_deref() == Some(&cmd)
                }) {
                    Parent::Step(p)
                } else {
                    let key = (p, cid, ifname, cmd);
                    if let Some(s) = self.steps.get_mut(&p)
                        && !s.nested.contains(&key)
                    {
                        s.nested.push(key.clone());
                    }
                    self.join(key.clone(), e.ts_ns, Some(p));
                    Parent::Invocation(key)
                }
            }
            None => {
                let key = (e.ppid, cid, ifname, cmd);
                self.join(key.clone(), e.ts_ns, None);
                if let Some(inv) = self.invs.get_mut(&key)
                    && inv.runtime_comm.is_none()
                {
                    inv.runtime_comm = look.comm(e.ppid);
                }
                Parent::Invocation(key)
            }
        };
        self.steps.insert(
            e.tgid,
            OpenStep {
                ident: e
                    .cni
                    .as_ref()
                    .map(|c| (c.containerid.clone(), c.ifname.clone(), c.command.clone())),
                parent,
                netns_inode,
                ops: Vec::new(),
                spawned: Vec::new(),
                delegates: Vec::new(),
                nested: Vec::new(),
            },
        );
    }

    /// Opens the invocation `key` for a new step, or joins it, or reopens a reported one.
    fn join(&mut self, key: Key, ts: u64, nested_in: Option<u32>) {
        if let Some(inv) = self.invs.get_mut(&key) {
            inv.running += 1;
            inv.last_ns = ts;
            return;
        }
        let (steps, revision, id) = match self.done.remove(&key) {
            Some((at, inv)) if ts.saturating_sub(at) <= self.cfg.late_window_ns => {
                // Reported lines have been written by now: this is the only holder left.
                let inv = Arc::unwrap_or_clone(inv);
                (inv.steps, inv.revision + 1, inv.id)
            }
            _ => {
                // `<runtime pid>-<ifname>-<first exec ns>`.
                let mut id = String::with_capacity(key.2.len() + 32);
                push_decimal(&mut id, u64::from(key.0));
                id.push('-');
                id.push_str(&key.2);
                id.push('-');
                push_decimal(&mut id, ts);
                (Vec::new(), 1, id)
            }
        };
        let failed = steps.iter().any(|s| !s.ok);
        self.invs.insert(
            key.clone(),
            OpenInv {
                key,
                steps,
                running: 1,
                last_ns: ts,
                revision,
                id,
                nested_in,
                failed,
                runtime_comm: None,
            },
        );
    }

    /// A netlink change: attached to the step whose tree made it, or reported at netns level.
    pub fn on_op(&mut self, op: Op) -> Option<Output> {
        match self.owner(op.tgid) {
            Some(s) => {
                if let Some(step) = self.steps.get_mut(&s) {
                    step.ops.push(op);
                }
                None
            }
            None => Some(Output::Netns(Box::new(NetnsChange {
                kind: "netlink",
                pod: self.netns_pods.get(&op.netns).cloned(),
                op,
            }))),
        }
    }

    /// A process of a plugin tree finished.
    pub fn on_run(&mut self, run: Run, look: &mut dyn Lookups) -> Vec<Output> {
        if run.role == Role::Child || !self.steps.contains_key(&run.tgid) {
            if let Some(owner) = self.owner(run.ppid)
                && let Some(s) = self.steps.get_mut(&owner)
            {
                s.spawned.push(Spawned {
                    tgid: run.tgid,
                    ppid: run.ppid,
                    filename: run.filename,
                    argv: run.argv,
                    exit: run.exit,
                    duration_ns: run.duration_ns,
                });
            }
            return Vec::new();
        }
        let Some(open) = self.steps.remove(&run.tgid) else {
            return Vec::new();
        };
        let mut step = self.build_step(run, open.ops, open.spawned, open.delegates);
        step.netns_inode = open.netns_inode;
        for key in &open.nested {
            if let Some(inv) = self.invs.remove(key) {
                step.invocations.push(self.finish(inv, false, look));
            }
            if let Some(inv) = self.nested_done.remove(key) {
                step.invocations.push(inv);
            }
        }
        match open.parent {
            Parent::Step(p) => {
                // A delegate whose parent is already gone has nothing to attach to.
                if let Some(ps) = self.steps.get_mut(&p) {
                    step.index = ps.delegates.len();
                    ps.delegates.push(step);
                }
                Vec::new()
            }
            Parent::Invocation(key) => {
                if let Some(inv) = self.invs.get_mut(&key) {
                    inv.running = inv.running.saturating_sub(1);
                    inv.last_ns = step.end_ns.unwrap_or(step.start_ns);
                    inv.failed |= !step.ok;
                    inv.steps.push(step);
                }
                Vec::new()
            }
        }
    }

    fn build_step(
        &mut self,
        run: Run,
        ops: Vec<Op>,
        spawned: Vec<Spawned>,
        delegates: Vec<Step>,
    ) -> Step {
        // Parse stdout once (a result or a CNI error); stdin (the network configuration, for
        // its `type` and `prevResult`) only when something needs it.
        let result = Json::parse(&run.stdout.0);
        let error = result.as_ref().and_then(cni_error_in);
        let code = run.exit.as_ref().and_then(|x| x.code);
        let ok = code == Some(0) && error.is_none();
        let is_add = run.cni.as_ref().and_then(|c| c.command.as_deref()) == Some("ADD");
        let config = if (is_add && ok && result.is_some()) || run.filename.is_empty() {
            Json::parse(&run.stdin.0)
        } else {
            None
        };
        let diff = (is_add && ok && result.is_some()).then(|| {
            diff(
                config.as_ref().and_then(|c| c.get("prevResult")),
                result.as_ref(),
            )
        });
        Step {
            index: 0,
            cni: run.cni,
            network: config
                .as_ref()
                .and_then(|c| c.get("name"))
                .and_then(Json::as_str)
                .map(str::to_string),
            netns_inode: None,
            plugin: plugin_name(
                config
                    .as_ref()
                    .and_then(|c| c.get("type"))
                    .and_then(Json::as_str),
                &run.filename,
            ),
            path: run.filename,
            pid: run.tgid,
            ppid: run.ppid,
            start: self.clock.rfc3339(run.start_ns),
            start_ns: run.start_ns,
            end_ns: run.end_ns,
            duration_ns: run.duration_ns,
            exit: run.exit,
            ok,
            error,
            held: run.held,
            stdin: run.stdin,
            stdout: run.stdout,
            stderr: run.stderr,
            diff,
            netlink: ops,
            spawned,
            delegates,
            invocations: Vec::new(),
            complete: run.complete,
            problems: run.problems,
        }
    }

    fn finish(&mut self, inv: OpenInv, partial: bool, look: &mut dyn Lookups) -> Invocation {
        let OpenInv {
            key,
            mut steps,
            revision,
            id,
            runtime_comm,
            ..
        } = inv;
        steps.sort_by_key(|s| s.start_ns);
        for (i, s) in steps.iter_mut().enumerate() {
            s.index = i;
        }
        let first = steps.first();
        // The network's name: read with the first step's stdin, or read now.
        let network = first.and_then(|s| {
            s.network.clone().or_else(|| {
                Json::parse(&s.stdin.0)?
                    .get("name")?
                    .as_str()
                    .map(str::to_string)
            })
        });
        let cni = first.and_then(|s| s.cni.clone()).unwrap_or_default();
        let mut pod = cni.args.as_deref().and_then(Pod::from_cni_args);
        let netns_inode = first.and_then(|s| s.netns_inode);
        let start_ns = first.map(|s| s.start_ns).unwrap_or(0);
        let end_ns = steps.iter().filter_map(|s| s.end_ns).max();
        // What cniscope-cni recorded for this container and interface in the pod's netns.
        let tag = netns_inode.and_then(|i| look.tag(i)).and_then(|mut t| {
            let Value::Array(atts) = t.get_mut("attachments")?.take() else {
                return None;
            };
            atts.into_iter().find(|a| {
                a.get("container_id").and_then(Value::as_str) == Some(key.1.as_str())
                    && a.get("ifname").and_then(Value::as_str) == Some(key.2.as_str())
            })
        });
        if let Some(tp) = tag
            .as_ref()
            .and_then(|t| t.get("pod"))
            .and_then(Pod::from_tag)
        {
            match &mut pod {
                Some(p) => p.merge(&tp),
                None => pod = Some(tp),
            }
        }
        match (netns_inode, &pod) {
            (Some(i), Some(p)) => {
                self.netns_pods.insert(i, p.clone());
            }
            // A DEL carries no pod arguments from some runtimes; the namespace remembers.
            (Some(i), None) => pod = self.netns_pods.get(&i).cloned(),
            _ => {}
        }
        // The agent's pod cache: the uid when the runtime did not pass it, and the labels.
        if let Some(p) = pod.as_mut() {
            p.enrich(look);
        }
        let verdict = verdict(&steps);
        let slowest = steps
            .iter()
            .filter_map(|s| Some((s, s.duration_ns?)))
            .max_by_key(|(_, d)| *d)
            .map(|(s, d)| Slowest {
                plugin: s.plugin.clone(),
                index: s.index,
                duration_ns: d,
            });
        Invocation {
            kind: "invocation",
            id,
            ts: self.clock.rfc3339(start_ns),
            end: end_ns.map(|e| self.clock.rfc3339(e)),
            start_ns,
            end_ns,
            duration_ns: end_ns.map(|e| e.saturating_sub(start_ns)),
            command: key.3.clone(),
            container_id: key.1.clone(),
            ifname: key.2.clone(),
            netns: cni.netns,
            netns_inode,
            network,
            pod,
            runtime: Runtime {
                pid: key.0,
                comm: runtime_comm.or_else(|| look.comm(key.0)),
            },
            chain: steps.iter().map(|s| s.plugin.clone()).collect(),
            verdict,
            slowest,
            steps,
            tag,
            revision,
            partial,
        }
    }

    /// Completes what is due: invocations with nothing running that failed or went quiet.
    pub fn tick(&mut self, now_ns: u64, look: &mut dyn Lookups) -> Vec<Output> {
        let due: Vec<Key> = self
            .invs
            .values()
            .filter(|i| {
                i.nested_in.is_none()
                    && i.running == 0
                    && (i.failed || now_ns.saturating_sub(i.last_ns) >= self.cfg.quiet_ns)
            })
            .map(|i| i.key.clone())
            .collect();
        let mut out = Vec::new();
        for key in due {
            if let Some(inv) = self.invs.remove(&key) {
                let done = Arc::new(self.finish(inv, false, look));
                self.remember_done(key, now_ns, Arc::clone(&done));
                out.push(Output::Invocation(done));
            }
        }
        // Forget reported invocations no late step can reopen any more.
        let window = self.cfg.late_window_ns;
        self.done
            .retain(|_, (at, _)| now_ns.saturating_sub(*at) <= window);
        out
    }

    fn remember_done(&mut self, key: Key, now_ns: u64, inv: Arc<Invocation>) {
        // Each entry holds its steps' stdin and stdout, so the table is bounded: past the cap
        // the oldest quarter goes (a late step for one of those starts an invocation of its
        // own, never lost). Under a flood (the RSS benchmark's ~900 invocations/s) this is what
        // keeps 10 s of them from pinning tens of MiB.
        if self.done.len() >= MAX_DONE {
            let mut ats: Vec<u64> = self.done.values().map(|(at, _)| *at).collect();
            let (_, cut, _) = ats.select_nth_unstable(MAX_DONE / 4);
            let cut = *cut;
            self.done.retain(|_, (at, _)| *at > cut);
        }
        self.done.insert(key, (now_ns, inv));
    }

    /// Reports everything still open, marked partial (the agent is stopping).
    pub fn drain(&mut self, look: &mut dyn Lookups) -> Vec<Output> {
        // Steps still running: close their invocations without them.
        let keys: Vec<Key> = self.invs.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            if let Some(inv) = self.invs.remove(&key)
                && inv.nested_in.is_none()
            {
                out.push(Output::Invocation(Arc::new(self.finish(inv, true, look))));
            }
        }
        self.steps.clear();
        out
    }
}

/// Whether the executable lies in one of the directories of the process's CNI_PATH (true when
/// there is no CNI_PATH to judge by).
fn in_cni_path(e: &Exec) -> bool {
    let Some(path) = e.cni.as_ref().and_then(|c| c.path.as_deref()) else {
        return true;
    };
    if path.is_empty() {
        return true;
    }
    let dir = e.filename.rsplit_once('/').map_or("", |(d, _)| d);
    path.split(':')
        .any(|p| !p.is_empty() && p.trim_end_matches('/') == dir)
}

/// System facts the correlator asks for; the live agent answers from the system (and records
/// the answers), a replay from the recording.
pub trait Lookups {
    /// Inode of the network namespace at `path`.
    fn netns_inode(&mut self, path: &str) -> Option<u32>;
    /// The cniscope-cni tag of a namespace.
    fn tag(&mut self, inode: u32) -> Option<Value>;
    /// A process's command name.
    fn comm(&mut self, pid: u32) -> Option<String>;
    /// The pod from the agent's pod cache, `{"metadata": {namespace, name, uid, labels}}`: by
    /// `uid` when given, else by name.
    fn pod(&mut self, _namespace: &str, _name: &str, _uid: Option<&str>) -> Option<Value> {
        None
    }
    /// Facts looked up since the last call (recordings).
    fn take_facts(&mut self) -> Vec<crate::record::Fact> {
        Vec::new()
    }
    /// Applies a recorded fact (replay).
    fn apply(&mut self, _fact: &crate::record::Fact) {}
}

fn verdict(steps: &[Step]) -> Verdict {
    let netlink_errors: Vec<NetlinkFailure> = steps
        .iter()
        .flat_map(|s| {
            s.netlink
                .iter()
                .chain(s.delegates.iter().flat_map(|d| d.netlink.iter()))
                .filter(|o| o.change.outcome.errno.is_some())
                .map(move |o| NetlinkFailure {
                    plugin: s.plugin.clone(),
                    op: o.change.op.clone(),
                    errno: o.change.outcome.errno,
                    error: o.change.outcome.error.clone(),
                    extack: o.change.outcome.extack.clone(),
                })
        })
        .collect();
    match steps.iter().find(|s| !s.ok) {
        None if steps.is_empty() => Verdict {
            ok: false,
            summary: "no plugin finished".into(),
            failed_step: None,
            plugin: None,
            exit_code: None,
            error: None,
            netlink_errors,
        },
        None => Verdict {
            ok: true,
            summary: "ok".into(),
            failed_step: None,
            plugin: None,
            exit_code: None,
            error: None,
            netlink_errors,
        },
        Some(s) => {
            let code = s.exit.as_ref().and_then(|x| x.code);
            let mut summary = format!("{} (step {}) failed", s.plugin, s.index);
            if let Some(e) = &s.error {
                summary.push_str(&format!(
                    ": CNI error {} {}",
                    e.get("code").unwrap_or(&Value::Null),
                    e.get("msg").and_then(Value::as_str).unwrap_or("")
                ));
            } else if let Some(x) = &s.exit {
                match (x.code, x.signal) {
                    (_, Some(sig)) => summary.push_str(&format!(": killed by signal {sig}")),
                    (Some(c), _) => summary.push_str(&format!(": exit code {c}")),
                    _ => {}
                }
            } else {
                summary.push_str(": no exit seen");
            }
            if let Some(f) = netlink_errors.iter().find(|f| f.plugin == s.plugin) {
                summary.push_str(&format!(
                    " (kernel: {} → {})",
                    f.op,
                    f.error.as_deref().unwrap_or("error")
                ));
            }
            Verdict {
                ok: false,
                summary,
                failed_step: Some(s.index),
                plugin: Some(s.plugin.clone()),
                exit_code: code,
                error: s.error.clone(),
                netlink_errors,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::runs::{Cut, ExitInfo};
    use crate::events::{CniEnv, Text};

    struct NoLookups;
    impl Lookups for NoLookups {
        fn netns_inode(&mut self, _: &str) -> Option<u32> {
            Some(7)
        }
        fn tag(&mut self, _: u32) -> Option<Value> {
            None
        }
        fn comm(&mut self, _: u32) -> Option<String> {
            Some("runtime".into())
        }
    }

    const MS: u64 = 1_000_000;

    fn exec(
        tgid: u32,
        ppid: u32,
        cid: &str,
        ifname: &str,
        cmd: &str,
        file: &str,
        ts: u64,
    ) -> Arc<Exec> {
        Arc::new(Exec {
            ts_ns: ts,
            pid: tgid,
            tgid,
            ppid,
            role: Role::Plugin,
            netns: 1,
            cgroup_id: 1,
            uid: 0,
            comm: file.into(),
            filename: format!("/opt/cni/bin/{file}"),
            argv: vec![],
            argv_cut: false,
            cni: Some(CniEnv {
                command: Some(cmd.into()),
                containerid: Some(cid.into()),
                netns: Some("/run/netns/p".into()),
                ifname: Some(ifname.into()),
                args: Some("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod".into()),
                path: None,
            }),
            held: false,
            unheld: false,
            env_tail: false,
        })
    }

    fn run(e: &Exec, end: u64, code: i32, stdout: &str) -> Run {
        Run {
            tgid: e.tgid,
            ppid: e.ppid,
            role: Role::Plugin,
            comm: e.comm.clone(),
            filename: e.filename.clone(),
            argv: vec![],
            netns: 1,
            cgroup_id: 1,
            cni: e.cni.clone(),
            start_ns: e.ts_ns,
            end_ns: Some(end),
            duration_ns: Some(end - e.ts_ns),
            exit: Some(ExitInfo {
                code: Some(code),
                signal: None,
                core_dumped: false,
            }),
            held: false,
            stdin: Text(b"{}".to_vec()),
            stdout: Text(stdout.as_bytes().to_vec()),
            stderr: Text(vec![]),
            cut: Cut::default(),
            complete: true,
            problems: vec![],
        }
    }

    fn invs(outs: Vec<Output>) -> Vec<Invocation> {
        outs.into_iter()
            .filter_map(|o| match o {
                Output::Invocation(i) => Some(Arc::unwrap_or_clone(i)),
                Output::Netns(_) => None,
            })
            .collect()
    }

    #[test]
    fn steps_join_by_runtime_and_complete_after_the_quiet_period() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let a = exec(10, 1, "c1", "eth0", "ADD", "bridge", 100 * MS);
        c.on_exec(&a, l);
        // IPAM delegate, run by bridge.
        let d = exec(11, 10, "c1", "eth0", "ADD", "host-local", 105 * MS);
        c.on_exec(&d, l);
        c.on_run(run(&d, 110 * MS, 0, "{}"), l);
        c.on_run(run(&a, 120 * MS, 0, "{}"), l);
        let b = exec(12, 1, "c1", "eth0", "ADD", "tuning", 125 * MS);
        c.on_exec(&b, l);
        c.on_run(run(&b, 130 * MS, 0, "{}"), l);
        assert!(invs(c.tick(600 * MS, l)).is_empty(), "not quiet yet");
        let done = invs(c.tick(1200 * MS, l));
        assert_eq!(done.len(), 1);
        let i = &done[0];
        assert_eq!(i.chain, ["bridge", "tuning"]);
        assert_eq!(i.steps[0].delegates[0].plugin, "host-local");
        assert!(i.verdict.ok);
        assert_eq!(i.pod.as_ref().and_then(|p| p.name.as_deref()), Some("pod"));
        assert_eq!(i.runtime.comm.as_deref(), Some("runtime"));
        assert_eq!(i.revision, 1);
    }

    #[test]
    fn the_late_step_table_is_bounded_and_keeps_the_newest() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let n = MAX_DONE as u32 + 100;
        // n failing one-step invocations, each reported at once.
        for i in 0..n {
            let t = (1_000 + u64::from(i)) * MS;
            let e = exec(1_000 + i, 2, &format!("c{i}"), "eth0", "ADD", "bridge", t);
            c.on_exec(&e, l);
            c.on_run(run(&e, t + 1, 1, r#"{"code":11,"msg":"x"}"#), l);
            assert_eq!(invs(c.tick(t + 2, l)).len(), 1);
        }
        assert!(c.done.len() <= MAX_DONE, "{}", c.done.len());
        // Late steps, still inside the window: the newest reopens, the oldest was let go and
        // is an invocation of its own (reported, not lost).
        let t = (1_000 + u64::from(n)) * MS;
        for (i, revision, steps) in [(n - 1, 2, 2), (0, 1, 1)] {
            let e = exec(9_000 + i, 2, &format!("c{i}"), "eth0", "ADD", "tuning", t);
            c.on_exec(&e, l);
            c.on_run(run(&e, t + 1, 0, "{}"), l);
            let out = invs(c.drain(l));
            assert_eq!(out.len(), 1);
            assert_eq!(
                (out[0].revision, out[0].steps.len()),
                (revision, steps),
                "c{i}"
            );
        }
    }

    #[test]
    fn a_failure_completes_at_once_and_a_late_step_is_a_new_revision() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let a = exec(20, 2, "c2", "eth0", "ADD", "bridge", 100 * MS);
        c.on_exec(&a, l);
        c.on_run(run(&a, 110 * MS, 1, r#"{"code":11,"msg":"try later"}"#), l);
        let done = invs(c.tick(111 * MS, l));
        assert_eq!(
            done.len(),
            1,
            "a failed step ends the invocation without waiting"
        );
        assert!(!done[0].verdict.ok);
        assert_eq!(done[0].verdict.failed_step, Some(0));
        assert!(done[0].verdict.summary.contains("CNI error 11 try later"));
        // The same runtime, container, interface and command 2 s later: a late step.
        let b = exec(21, 2, "c2", "eth0", "ADD", "tuning", 2_000 * MS);
        c.on_exec(&b, l);
        c.on_run(run(&b, 2_010 * MS, 0, "{}"), l);
        let again = invs(c.tick(3_100 * MS, l));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].revision, 2);
        assert_eq!(again[0].id, done[0].id);
        assert_eq!(again[0].chain, ["bridge", "tuning"]);
    }

    #[test]
    fn a_delegate_for_another_interface_is_a_nested_invocation() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let mut m = exec(30, 3, "c3", "eth0", "ADD", "multus", 100 * MS);
        Arc::make_mut(&mut m).cni.as_mut().unwrap().path = Some("/opt/cni/bin".into());
        c.on_exec(&m, l);
        let d = exec(31, 30, "c3", "net1", "ADD", "macvlan", 105 * MS);
        c.on_exec(&d, l);
        c.on_run(run(&d, 110 * MS, 0, "{}"), l);
        c.on_run(run(&m, 120 * MS, 0, "{}"), l);
        let done = invs(c.tick(2_000 * MS, l));
        assert_eq!(done.len(), 1, "the nested chain is inside its parent step");
        let nested = &done[0].steps[0].invocations;
        assert_eq!(nested.len(), 1);
        assert_eq!(nested[0].ifname, "net1");
        assert_eq!(nested[0].chain, ["macvlan"]);
    }

    #[test]
    fn a_child_outside_cni_path_is_spawned_not_a_delegate() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let mut p = exec(50, 5, "c5", "eth0", "ADD", "portmap", 100 * MS);
        Arc::make_mut(&mut p).cni.as_mut().unwrap().path = Some("/opt/cni/bin:/usr/lib/cni".into());
        c.on_exec(&p, l);
        // iptables inherits the whole CNI environment.
        let mut ipt = (*p).clone();
        ipt.tgid = 51;
        ipt.pid = 51;
        ipt.ppid = 50;
        ipt.filename = "/usr/sbin/iptables".into();
        let ipt = Arc::new(ipt);
        c.on_exec(&ipt, l);
        c.on_run(run(&ipt, 102 * MS, 0, ""), l);
        c.on_run(run(&p, 110 * MS, 0, "{}"), l);
        let done = invs(c.tick(2_000 * MS, l));
        let step = &done[0].steps[0];
        assert!(step.delegates.is_empty(), "{:?}", step.delegates.len());
        assert_eq!(step.spawned.len(), 1);
        assert_eq!(step.spawned[0].filename, "/usr/sbin/iptables");
    }

    #[test]
    fn draining_marks_open_invocations_partial() {
        let mut c = Correlator::new(Config::default(), Clock::with_offset(0));
        let l = &mut NoLookups;
        let a = exec(40, 4, "c4", "eth0", "DEL", "bridge", 100 * MS);
        c.on_exec(&a, l);
        c.on_run(run(&a, 110 * MS, 0, ""), l);
        let done = invs(c.drain(l));
        assert_eq!(done.len(), 1);
        assert!(done[0].partial);
    }
}
