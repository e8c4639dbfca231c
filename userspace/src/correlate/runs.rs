//! Assembles the events of one process into a `Run`: its exec, every stdio byte in order, its
//! exit. Kernel-free: fed typed events, it returns finished runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Map as HashMap;

use serde::Serialize;

use crate::events::{CniEnv, Event, Exec, Exit, Role, Text};

/// A finished (or evicted) process run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub tgid: u32,
    pub ppid: u32,
    pub role: Role,
    pub comm: String,
    pub filename: String,
    pub argv: Vec<String>,
    pub netns: u32,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniEnv>,
    pub start_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    pub held: bool,
    pub stdin: Text,
    pub stdout: Text,
    pub stderr: Text,
    /// Bytes the kernel saw but did not copy, per stream (over the cap, or lost).
    pub cut: Cut,
    /// Every byte of every stream is here, in order, and the process exited.
    pub complete: bool,
    /// Why the run is not complete, when it is not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Cut {
    pub stdin: u64,
    pub stdout: u64,
    pub stderr: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

struct Open {
    exec: Arc<Exec>,
    streams: [Vec<u8>; 3],
    gaps: Vec<String>,
    seq: u64,
}

/// Open runs keyed by tgid, bounded: beyond `max_open` the oldest is flushed as incomplete.
pub struct Runs {
    open: HashMap<u32, Open>,
    order: BTreeMap<u64, u32>,
    seq: u64,
    max_open: usize,
    /// Stdio for processes with no open run (exec lost, or started before the agent).
    pub orphan_chunks: u64,
}

impl Runs {
    pub fn new(max_open: usize) -> Self {
        Self {
            open: HashMap::default(),
            order: BTreeMap::new(),
            seq: 0,
            max_open,
            orphan_chunks: 0,
        }
    }

    /// Whether `tgid` is a process of a plugin's tree that has not exited.
    pub fn contains(&self, tgid: u32) -> bool {
        self.open.contains_key(&tgid)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Feeds one event; appends the runs it finished to `done` (a buffer the caller reuses:
    /// a run finishes on every exit, and a fresh vector for each would be an allocation).
    pub fn push_into(&mut self, ev: &Event, done: &mut Vec<Run>) {
        match ev {
            Event::Exec(e) => {
                // A second exec of the same process ends the previous image's run.
                if let Some(prev) = self.take(e.tgid) {
                    let mut r = finish(prev, None);
                    r.problems
                        .push(format!("replaced by exec of {}", e.filename));
                    done.push(r);
                }
                if self.open.len() >= self.max_open
                    && let Some((_, old)) = self.order.pop_first()
                    && let Some(o) = self.open.remove(&old)
                {
                    let mut r = finish(o, None);
                    r.problems.push("evicted: too many open runs".into());
                    done.push(r);
                }
                self.seq += 1;
                self.order.insert(self.seq, e.tgid);
                self.open.insert(
                    e.tgid,
                    Open {
                        exec: e.clone(),
                        streams: Default::default(),
                        gaps: Vec::new(),
                        seq: self.seq,
                    },
                );
            }
            Event::Stdio(s) => match self.open.get_mut(&s.tgid) {
                Some(o) => {
                    let buf = &mut o.streams[s.stream.index()];
                    if s.offset as usize != buf.len() {
                        o.gaps.push(format!(
                            "{:?} chunk at offset {} but {} bytes were captured before it",
                            s.stream,
                            s.offset,
                            buf.len()
                        ));
                    }
                    buf.extend_from_slice(&s.data);
                }
                None => self.orphan_chunks += 1,
            },
            Event::Exit(x) => {
                if let Some(o) = self.take(x.tgid) {
                    done.push(finish(o, Some(x)));
                }
            }
            Event::Fork(_) | Event::Netlink(_) | Event::Undecodable { .. } => {}
        }
    }

    fn take(&mut self, tgid: u32) -> Option<Open> {
        let o = self.open.remove(&tgid)?;
        self.order.remove(&o.seq);
        Some(o)
    }

    /// Flushes every open run (at shutdown), marked incomplete.
    pub fn drain(&mut self) -> Vec<Run> {
        self.order.clear();
        self.open
            .drain()
            .map(|(_, o)| {
                let mut r = finish(o, None);
                r.problems
                    .push("still running when the agent stopped".into());
                r
            })
            .collect()
    }
}

fn finish(o: Open, exit: Option<&Exit>) -> Run {
    let Open {
        exec,
        streams,
        mut gaps,
        ..
    } = o;
    // Nothing else holds the exec record by now (the correlator copies the three CNI fields it
    // keeps), so this takes it without a copy.
    let exec = Arc::unwrap_or_clone(exec);
    let [stdin, stdout, stderr] = streams;
    let mut cut = Cut::default();
    if let Some(x) = exit {
        cut = Cut {
            stdin: x.cut[0],
            stdout: x.cut[1],
            stderr: x.cut[2],
        };
        for (i, (got, name)) in [(&stdin, "stdin"), (&stdout, "stdout"), (&stderr, "stderr")]
            .into_iter()
            .enumerate()
        {
            if (got.len() as u64) < x.captured[i] {
                gaps.push(format!(
                    "{name}: the kernel captured {} bytes, {} arrived (ring buffer records lost)",
                    x.captured[i],
                    got.len()
                ));
            }
            if x.cut[i] > 0 {
                gaps.push(format!(
                    "{name}: {} bytes not copied (over the capture cap)",
                    x.cut[i]
                ));
            }
        }
    } else {
        gaps.push("no exit seen".into());
    }
    if exec.unheld {
        gaps.push("started while the stdio hooks were down and could not be held".into());
    }
    Run {
        tgid: exec.tgid,
        ppid: exec.ppid,
        role: exec.role,
        comm: exec.comm,
        filename: exec.filename,
        argv: exec.argv,
        netns: exec.netns,
        cgroup_id: exec.cgroup_id,
        cni: exec.cni,
        start_ns: exec.ts_ns,
        end_ns: exit.map(|x| x.ts_ns),
        duration_ns: exit.and_then(|x| x.duration_ns),
        exit: exit.map(|x| ExitInfo {
            code: x.code,
            signal: x.signal,
            core_dumped: x.core_dumped,
        }),
        held: exec.held,
        stdin: Text(stdin),
        stdout: Text(stdout),
        stderr: Text(stderr),
        cut,
        complete: gaps.is_empty(),
        problems: gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Stdio, Stream};

    /// One event in; the runs it finished out.
    fn push(r: &mut Runs, ev: &Event) -> Vec<Run> {
        let mut done = Vec::new();
        r.push_into(ev, &mut done);
        done
    }

    fn exec(tgid: u32) -> Event {
        Event::Exec(Arc::new(Exec {
            ts_ns: 100,
            pid: tgid,
            tgid,
            ppid: 1,
            role: Role::Plugin,
            netns: 4026531840,
            cgroup_id: 1,
            uid: 0,
            comm: "bridge".into(),
            filename: "/usr/lib/cni/bridge".into(),
            argv: vec!["bridge".into()],
            argv_cut: false,
            cni: Some(CniEnv::default()),
            held: true,
            unheld: false,
            env_tail: false,
        }))
    }

    fn chunk(tgid: u32, stream: Stream, offset: u64, data: &[u8]) -> Event {
        Event::Stdio(Stdio {
            ts_ns: 150,
            pid: tgid,
            tgid,
            stream,
            offset,
            data: data.to_vec(),
        })
    }

    fn exit(tgid: u32, captured: [u64; 3]) -> Event {
        Event::Exit(Exit {
            ts_ns: 300,
            tgid,
            role: Role::Plugin,
            code: Some(0),
            signal: None,
            core_dumped: false,
            status: 0,
            duration_ns: Some(200),
            captured,
            cut: [0; 3],
        })
    }

    #[test]
    fn chunks_assemble_in_order_and_the_run_is_complete() {
        let mut r = Runs::new(8);
        assert!(push(&mut r, &exec(7)).is_empty());
        push(&mut r, &chunk(7, Stream::Stdin, 0, b"{\"a\""));
        push(&mut r, &chunk(7, Stream::Stdin, 4, b":1}"));
        push(&mut r, &chunk(7, Stream::Stdout, 0, b"ok"));
        let done = push(&mut r, &exit(7, [7, 2, 0]));
        assert_eq!(done.len(), 1);
        let run = &done[0];
        assert_eq!(run.stdin.0, b"{\"a\":1}");
        assert_eq!(run.stdout.0, b"ok");
        assert!(run.complete, "{:?}", run.problems);
        assert_eq!(run.duration_ns, Some(200));
        assert_eq!(r.open_count(), 0);
    }

    #[test]
    fn a_lost_chunk_makes_the_run_incomplete_and_says_why() {
        let mut r = Runs::new(8);
        push(&mut r, &exec(7));
        push(&mut r, &chunk(7, Stream::Stdin, 4, b"xyz"));
        let run = push(&mut r, &exit(7, [7, 0, 0])).remove(0);
        assert!(!run.complete);
        assert_eq!(run.problems.len(), 2, "{:?}", run.problems);
    }

    #[test]
    fn open_runs_are_bounded() {
        let mut r = Runs::new(2);
        push(&mut r, &exec(1));
        push(&mut r, &exec(2));
        let evicted = push(&mut r, &exec(3));
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].tgid, 1);
        assert_eq!(r.open_count(), 2);
        assert_eq!(r.drain().len(), 2);
    }
}
