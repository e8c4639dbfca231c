//! The control thread: owns the loaded programs and the small maps, attaches the stdio hooks
//! when a plugin appears and detaches them when plugins have been gone for a while, resumes held
//! plugins, keeps the heartbeat that lets the kernel hold them, and reports counters.
//!
//! Detaching a tracepoint waits for an RCU grace period (~200 ms here), so links are dropped on a
//! throw-away thread, never on this one or the ring-buffer reader.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{raw_trace_point::RawTracePointLink, trace_point::TracePointLink},
};
use cniscope_ebpf::{self as abi, Control, Tracked, names};

use super::{
    guardian,
    loader::{NETLINK, NETLINK_RAW, STDIO, take_raw, take_tracepoint},
};
use crate::clock;

pub enum Msg {
    /// A plugin exec was decoded (held or not).
    PluginSeen,
    /// Stop: resume everything, detach every program, and reply with the last counters.
    Shutdown(std::sync::mpsc::Sender<(KernelCounters, HookState)>),
    /// Attach (true) or detach (false) the rtnetlink programs; the reply comes once the change
    /// has taken effect (a detach has waited out its RCU grace period).
    Netlink(bool, tokio::sync::oneshot::Sender<Result<(), String>>),
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct KernelCounters {
    pub exec_seen: u64,
    pub cni_execs: u64,
    pub held: u64,
    pub unheld: u64,
    pub lost_exec: u64,
    pub lost_fork: u64,
    pub lost_exit: u64,
    pub lost_stdio: u64,
    pub tracked_full: u64,
    pub stdio_bytes: u64,
    pub cut_bytes: u64,
    pub read_faults: u64,
    pub netlink_seen: u64,
    pub lost_netlink: u64,
    pub netlink_unattributed: u64,
    /// Runs of the netlink program and the time they took, counted by the kernel while
    /// `kernel.bpf_stats_enabled` is 1 (0 otherwise): its cost on every socket send.
    pub netlink_prog_runs: u64,
    pub netlink_prog_ns: u64,
}

impl KernelCounters {
    pub fn lost(&self) -> u64 {
        self.lost_exec + self.lost_fork + self.lost_exit + self.lost_stdio + self.lost_netlink
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct HookState {
    pub hooks_live: bool,
    /// Whether the rtnetlink programs are attached (see `Msg::Netlink`).
    pub netlink_capture: bool,
    pub attaches: u64,
    pub detaches: u64,
    pub resumed: u64,
}

pub struct Hooks {
    ebpf: Ebpf,
    control: Array<MapData, Control>,
    held: HashMap<MapData, u32, u64>,
    held_fd: RawFd,
    tracked: HashMap<MapData, u32, Tracked>,
    counters: PerCpuArray<MapData, u64>,
    links: Vec<TracePointLink>,
    /// The rtnetlink programs' links while rtnetlink capture is on.
    nl_links: Option<(RawTracePointLink, Vec<TracePointLink>)>,
    /// The thread dropping the rtnetlink links of the last pause, if it may still run.
    nl_reaper: Option<std::thread::JoinHandle<()>>,
    pin_dir: Option<std::path::PathBuf>,
    /// Which copy of the stdio programs is (or was last) attached.
    slot: usize,
    /// Threads still tearing down a copy's old links, by copy.
    reapers: [Option<std::thread::JoinHandle<()>>; 2],
    hold_enabled: bool,
    nl_scope: u32,
    linger: Duration,
    last_plugin: Instant,
    pub state: HookState,
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let m = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} is missing from the object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

/// How long the kernel keeps holding plugins after the last heartbeat.
const HEARTBEAT_MAX_AGE: Duration = Duration::from_secs(2);

impl Hooks {
    pub fn new(
        mut ebpf: Ebpf,
        hold_enabled: bool,
        nl_scope: u32,
        linger: Duration,
        pin_dir: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let control = take(&mut ebpf, names::CONTROL)?;
        let held_map = ebpf
            .take_map(names::HELD)
            .context("map HELD is missing from the object")?;
        // The HELD map's fd number, for the guardian (which inherits it through fork) and for
        // resuming; it stays valid while `held` owns the map.
        let held_fd = match &held_map {
            Map::HashMap(md) => {
                if let Some(dir) = &pin_dir {
                    if let Some(n) = super::pin::rescue_previous(dir) {
                        tracing::info!(resumed = n, "resumed plugins a previous agent had held");
                    }
                    super::pin::pin_held(md, dir);
                }
                md.fd().as_fd().as_raw_fd()
            }
            _ => anyhow::bail!("map HELD is not a hash map"),
        };
        let held: HashMap<MapData, u32, u64> = HashMap::try_from(held_map)?;
        let tracked = take(&mut ebpf, names::TRACKED)?;
        let counters = take(&mut ebpf, names::COUNTERS)?;
        let mut h = Self {
            ebpf,
            control,
            held,
            held_fd,
            tracked,
            counters,
            links: Vec::new(),
            nl_links: None,
            nl_reaper: None,
            pin_dir,
            slot: 1,
            reapers: [None, None],
            hold_enabled,
            nl_scope,
            linger,
            last_plugin: Instant::now(),
            state: HookState::default(),
        };
        h.write_control(false)?;
        Ok(h)
    }

    pub fn held_map_fd(&self) -> RawFd {
        self.held_fd
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches the rtnetlink programs: the send first, so an error's extack text is never
    /// stored for a send that is not traced.
    pub fn attach_netlink(&mut self) -> Result<()> {
        if self.nl_links.is_some() {
            return Ok(());
        }
        // A pause still being torn down (another client asked for it): its links must be gone
        // first, or every send would be reported twice meanwhile.
        if let Some(r) = self.nl_reaper.take() {
            let _ = r.join();
        }
        let (name, tp) = NETLINK_RAW;
        let send = take_raw(&mut self.ebpf, name, tp)?;
        let mut rest = Vec::new();
        for (name, cat, tp) in NETLINK {
            rest.push(take_tracepoint(&mut self.ebpf, name, cat, tp)?);
        }
        self.nl_links = Some((send, rest));
        self.state.netlink_capture = true;
        Ok(())
    }

    /// Detaches the rtnetlink programs (the extack one first, so none of its entries is left
    /// behind for a send that is no longer traced) on a throw-away thread, which sends `done`
    /// once both are gone.
    fn detach_netlink(&mut self, done: tokio::sync::oneshot::Sender<Result<(), String>>) {
        self.state.netlink_capture = false;
        let Some((send, rest)) = self.nl_links.take() else {
            let _ = done.send(Ok(()));
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("cniscope-detach".into())
            .spawn(move || {
                drop(rest);
                drop(send);
                let _ = done.send(Ok(()));
            });
        match spawned {
            Ok(h) => self.nl_reaper = Some(h),
            Err(e) => {
                tracing::error!("cannot start a thread to detach the rtnetlink programs: {e}")
            }
        }
    }

    fn write_control(&mut self, live: bool) -> Result<()> {
        let c = Control {
            hooks_live: live as u32,
            hold_enabled: self.hold_enabled as u32,
            heartbeat_ns: clock::boot_ns(),
            heartbeat_max_age_ns: HEARTBEAT_MAX_AGE.as_nanos() as u64,
            nl_scope: self.nl_scope,
            _reserved: 0,
        };
        self.control
            .set(0, c, 0)
            .context("writing the CONTROL map")?;
        Ok(())
    }

    /// Attaches the stdio tracepoints if they are not attached.
    pub fn ensure_live(&mut self) -> Result<()> {
        if self.state.hooks_live {
            return Ok(());
        }
        let t0 = Instant::now();
        // Use the other copy than last time, so the old links' teardown (which removes every
        // instance of its program from the tracepoint) cannot touch the new ones; if that copy
        // is itself still being torn down, wait for it.
        self.slot ^= 1;
        if let Some(r) = self.reapers[self.slot].take() {
            let _ = r.join();
        }
        for (name, cat, tp) in STDIO[self.slot] {
            self.links
                .push(take_tracepoint(&mut self.ebpf, name, cat, tp)?);
        }
        self.state.hooks_live = true;
        self.state.attaches += 1;
        self.write_control(true)?;
        tracing::debug!(
            elapsed_us = t0.elapsed().as_micros() as u64,
            "stdio hooks attached"
        );
        Ok(())
    }

    /// Resumes every held plugin (the hooks must be live first).
    pub fn resume_held(&mut self) -> usize {
        let n = guardian::resume_all(self.held_fd);
        self.state.resumed += n as u64;
        n
    }

    fn any_held(&self) -> bool {
        self.held.keys().next().is_some()
    }

    /// True when a live plugin process is still tracked; removes entries of processes that no
    /// longer exist.
    fn plugin_alive(&mut self) -> bool {
        let plugins: Vec<u32> = self
            .tracked
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, t)| t.role == abi::ROLE_PLUGIN)
            .map(|(k, _)| k)
            .collect();
        let mut alive = false;
        for pid in plugins {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                alive = true;
            } else {
                let _ = self.tracked.remove(&pid);
            }
        }
        alive
    }

    /// Detaches the stdio hooks when no plugin has been seen for `linger` and none is alive.
    fn maybe_idle(&mut self) -> Result<()> {
        if !self.state.hooks_live || self.last_plugin.elapsed() < self.linger {
            return Ok(());
        }
        // Say "not live" first: an exec racing with this check is then held, not missed.
        self.write_control(false)?;
        if self.plugin_alive() {
            self.write_control(true)?;
            self.last_plugin = Instant::now();
            return Ok(());
        }
        self.detach_stdio();
        Ok(())
    }

    fn detach_stdio(&mut self) {
        let links = std::mem::take(&mut self.links);
        self.state.hooks_live = false;
        self.state.detaches += 1;
        // Dropping a perf link waits for an RCU grace period; do it elsewhere.
        self.reapers[self.slot] = std::thread::Builder::new()
            .name("cniscope-detach".into())
            .spawn(move || drop(links))
            .ok();
    }

    pub fn counters(&self) -> KernelCounters {
        let get = |i: u32| -> u64 {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        let (netlink_prog_runs, netlink_prog_ns) = self
            .ebpf
            .program(names::PROG_NL_SEND)
            .and_then(|p| p.info().ok())
            .map(|i| (i.run_count(), i.run_time().as_nanos() as u64))
            .unwrap_or((0, 0));
        KernelCounters {
            netlink_prog_runs,
            netlink_prog_ns,
            exec_seen: get(abi::C_EXEC_SEEN),
            cni_execs: get(abi::C_CNI_EXEC),
            held: get(abi::C_HELD),
            unheld: get(abi::C_UNHELD),
            lost_exec: get(abi::C_LOST_EXEC),
            lost_fork: get(abi::C_LOST_FORK),
            lost_exit: get(abi::C_LOST_EXIT),
            lost_stdio: get(abi::C_LOST_STDIO),
            tracked_full: get(abi::C_TRACKED_FULL),
            stdio_bytes: get(abi::C_STDIO_BYTES),
            cut_bytes: get(abi::C_CUT_BYTES),
            read_faults: get(abi::C_READ_FAULT),
            netlink_seen: get(abi::C_NL_SEEN),
            lost_netlink: get(abi::C_NL_LOST),
            netlink_unattributed: get(abi::C_NL_UNATTRIBUTED),
        }
    }

    /// One tick: heartbeat, rescue of held plugins whose exec event we did not see, idling.
    fn tick(&mut self) -> Result<()> {
        self.write_control(self.state.hooks_live)?;
        if self.any_held() {
            self.last_plugin = Instant::now();
            self.ensure_live()?;
            self.resume_held();
        }
        self.maybe_idle()
    }

    /// Runs the control loop until `Shutdown`; `report` is called with fresh counters every
    /// `stats_every`.
    pub fn run(
        mut self,
        rx: Receiver<Msg>,
        stats_every: Duration,
        mut report: impl FnMut(KernelCounters, HookState),
    ) {
        let tick = Duration::from_millis(100);
        let mut last_stats = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(Msg::PluginSeen) => {
                    self.last_plugin = Instant::now();
                    if let Err(e) = self.ensure_live() {
                        tracing::error!("cannot attach the stdio hooks: {e:#}");
                    }
                    self.resume_held();
                }
                Ok(Msg::Netlink(on, done)) => {
                    if on {
                        let r = self.attach_netlink().map_err(|e| format!("{e:#}"));
                        let _ = done.send(r);
                    } else {
                        self.detach_netlink(done);
                    }
                }
                Ok(Msg::Shutdown(done)) => {
                    self.shutdown();
                    let last = (self.counters(), self.state);
                    // Detach everything (dropping the programs) before replying, so the reader's
                    // final drain sees every record there will be.
                    drop(self);
                    let _ = done.send(last);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
            }
            if let Err(e) = self.tick() {
                tracing::error!("control loop: {e:#}");
            }
            if last_stats.elapsed() >= stats_every {
                last_stats = Instant::now();
                report(self.counters(), self.state);
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(dir) = &self.pin_dir {
            super::pin::unpin(dir);
        }
        self.hold_enabled = false;
        let _ = self.write_control(self.state.hooks_live);
        self.resume_held();
        let links = std::mem::take(&mut self.links);
        drop(links);
        self.state.hooks_live = false;
        self.resume_held();
    }
}
