//! `cniscope agent`: load, attach, read the ring buffer, decode, assemble, print.

pub mod guardian;
pub mod hooks;
pub mod loader;
pub mod metrics;
pub mod output;
pub mod pin;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use cniscope_ebpf::names;
use serde_json::json;
use tokio::io::unix::AsyncFd;

use crate::clock::Clock;
use crate::correlate::correlator;
use crate::pipeline::{LiveLookups, Pipeline};

/// How often the reader drains records submitted without a wake-up.
const DRAIN_MS: u64 = 25;

/// What the reader keeps between records.
type State = Pipeline;
use crate::events::{Event, Role, decode::decode};
use hooks::{Hooks, Msg};
use output::Output;

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Print every raw kernel event (exec, fork, stdio chunk, exit) as NDJSON, besides the runs.
    #[arg(long)]
    pub events: bool,
    /// Never stop a new plugin at exec; its first stdin bytes may then be missed when the stdio
    /// hooks are not attached yet.
    #[arg(long)]
    pub no_hold: bool,
    /// Keep the stdio hooks attached this long after the last plugin was seen (ms).
    #[arg(long, default_value_t = 3000)]
    pub linger_ms: u64,
    /// Seconds between `stats` lines.
    #[arg(long, default_value_t = 10)]
    pub stats_interval: u64,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    #[arg(long, default_value_t = 8 << 20)]
    pub ringbuf_bytes: u32,
    /// Which processes' rtnetlink changes to report: every process on the node, only CNI plugin
    /// process trees, or none.
    #[arg(long, value_enum, default_value_t = NetlinkScope::All)]
    pub netlink: NetlinkScope,
    /// An invocation is reported once none of its plugins has run for this long (ms).
    #[arg(long, default_value_t = 1000)]
    pub quiet_ms: u64,
    /// Write every raw ring-buffer record (and the facts looked up while handling it) to FILE,
    /// for `cniscope replay FILE`.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
    /// The unix socket for clients (`cniscope tui`) and cniscope-cni's pod lookups.
    #[arg(long, default_value = crate::ui::DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// Do not open the socket.
    #[arg(long)]
    pub no_socket: bool,
    /// Invocations and netns changes kept for new clients.
    #[arg(long, default_value_t = 10_000)]
    pub retain: usize,
    /// ... and for at most this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub retain_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9731). Off by default.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A bpffs directory where the HELD map is pinned, so that the next agent resumes plugins this
    /// one held if it dies together with its guardian ("" to not pin).
    #[arg(long, default_value = "/sys/fs/bpf/cniscope")]
    pub pin_dir: String,
    /// Where cniscope-cni writes its netns tags.
    #[arg(long, default_value = "/run/cniscope/tags")]
    pub tag_dir: std::path::PathBuf,
    /// Runs kept open at once (processes between exec and exit); beyond it the oldest is flushed.
    #[arg(long, default_value_t = 4096)]
    pub max_open_runs: usize,
    /// Kubeconfig for the pod cache (a watch of this node's pods). Default: the pod's service
    /// account when running in a cluster; otherwise there is no pod cache.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// This node's name, for the pod cache's `spec.nodeName` field selector (default: env
    /// NODE_NAME, which the DaemonSet sets).
    #[arg(long)]
    pub node_name: Option<String>,
    /// No Kubernetes pod cache, even in a cluster.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub no_kubernetes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetlinkScope {
    All,
    Plugins,
    Off,
}

/// Counters kept by the reader, reported with the kernel's.
#[derive(Default)]
struct ReaderStats {
    records: AtomicU64,
    undecodable: AtomicU64,
    orphan_chunks: AtomicU64,
    open_runs: AtomicU64,
}

pub fn run(args: AgentArgs) -> Result<()> {
    let (tfs, offs, nl_ok) = loader::preflight()?;
    let wanted = !matches!(args.netlink, NetlinkScope::Off);
    let (mut ebpf, nl_refused) = loader::load(&offs, args.ringbuf_bytes, wanted && nl_ok.is_ok())?;
    // Why rtnetlink capture cannot run here, if it cannot: offsets this kernel's BTF does not
    // give, or programs its verifier refused. One warning either way.
    let nl_off = if wanted {
        nl_ok.err().or(nl_refused)
    } else {
        None
    };
    if let Some(e) = &nl_off {
        tracing::warn!("rtnetlink capture is off on this kernel: {e:#}");
    }
    let netlink = wanted && nl_off.is_none();
    let ring: RingBuf<MapData> = RingBuf::try_from(
        ebpf.take_map(names::EVENTS)
            .context("map EVENTS is missing from the object")?,
    )?;
    let nl_scope = match args.netlink {
        NetlinkScope::Plugins => cniscope_ebpf::NL_SCOPE_PLUGINS,
        _ => cniscope_ebpf::NL_SCOPE_ALL,
    };
    let mut hooks = Hooks::new(
        ebpf,
        !args.no_hold,
        nl_scope,
        Duration::from_millis(args.linger_ms),
        (!args.pin_dir.is_empty()).then(|| std::path::PathBuf::from(&args.pin_dir)),
    )?;
    // Before any thread exists and before anything is attached (see guardian.rs).
    let guard = guardian::spawn(hooks.held_map_fd())?;
    loader::attach_always_on(hooks.ebpf_mut())?;
    if netlink {
        hooks.attach_netlink()?;
    }

    let clock = Clock::now();
    let (mut out, out_thread) = Output::start(std::io::stdout(), 65536)?;
    let hub = (!args.no_socket).then(|| {
        server::Hub::new(server::Retention {
            max_items: args.retain,
            max_age: Duration::from_secs(args.retain_secs),
        })
    });
    out.hub = hub.clone();
    let listener = match &hub {
        Some(_) => Some(server::bind(&args.socket)?),
        None => None,
    };
    let metrics = args.metrics_addr.map(|_| metrics::Metrics::new());
    let metrics_listener = match args.metrics_addr {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("metrics address {addr}"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let stats = Arc::new(ReaderStats::default());
    let (tx, rx) = mpsc::channel::<Msg>();

    let out2 = out.clone();
    let stats2 = stats.clone();
    let metrics2 = metrics.clone();
    let hub2 = hub.clone();
    let stats_every = Duration::from_secs(args.stats_interval.max(1));
    let control = std::thread::Builder::new()
        .name("cniscope-ctl".into())
        .spawn(move || {
            hooks.run(rx, stats_every, |k, h| {
                if let Some(m) = &metrics2 {
                    m.kernel(&k, hub2.as_ref().map_or(0, |h| h.retained_items()));
                }
                out2.emit(&stats_json(&clock, k, h, &stats2, &out2));
            })
        })?;

    out.emit(&json!({
        "type": "agent",
        "event": "ready",
        "ts": clock.rfc3339(crate::clock::boot_ns()),
        "pid": std::process::id(),
        "guardian_pid": guard.pid,
        "tracefs": tfs,
        "hold": !args.no_hold,
        "netlink": netlink,
        "socket": (!args.no_socket).then_some(&args.socket),
    }));
    tracing::info!("attached; watching for CNI plugins (Ctrl-C to stop)");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The pod cache's watch runs on this runtime (it makes progress in the block_on below);
    // starting it does not wait for the API server.
    let pods = rt
        .block_on(crate::k8s::PodCache::start(
            crate::k8s::CacheConfig::from_flags(
                args.no_kubernetes,
                args.kubeconfig.clone(),
                args.node_name.clone(),
            ),
        ))
        .unwrap_or_else(|e| {
            tracing::error!("Kubernetes pod cache off: {e:#}");
            None
        });
    let mut st = Pipeline::new(
        clock,
        args.events,
        args.max_open_runs,
        correlator::Config {
            quiet_ns: args.quiet_ms * 1_000_000,
            ..Default::default()
        },
        Box::new(LiveLookups {
            tag_dir: args.tag_dir.clone(),
            journal: Vec::new(),
            pods: pods.clone(),
        }),
    );
    let mut rec = match &args.record {
        Some(path) => Some(crate::record::Recorder::create(
            path,
            clock.offset_ns(),
            clock.rfc3339(crate::clock::boot_ns()),
        )?),
        None => None,
    };
    st.metrics = metrics.clone();
    let mut ring = Some(ring);
    let result = rt.block_on(async {
        if let (Some(hub), Some(listener)) = (hub.clone(), listener) {
            let ctl = server::Ctl {
                hooks: tx.clone(),
                out: out.clone(),
                clock,
                netlink,
            };
            tokio::spawn(server::serve(
                listener,
                hub,
                args.socket.clone(),
                pods.clone(),
                ctl,
            ));
        }
        if let (Some(m), Some(l)) = (metrics.clone(), metrics_listener) {
            tokio::spawn(metrics::serve(l, m));
        }
        read_loop(&mut ring, &out, &tx, &stats, &mut st, &mut rec).await
    });
    // Ends the socket's and the metrics' tasks, and with them their handles on the output (the
    // writer thread below stops once every handle is gone) and on the control thread.
    drop(rt);
    if !args.no_socket {
        let _ = std::fs::remove_file(&args.socket);
    }

    // Shutdown: resume held plugins and detach every program, then drain what the kernel
    // wrote until then, then flush runs still open and report the final counters.
    let (done_tx, done_rx) = mpsc::channel();
    let _ = tx.send(Msg::Shutdown(done_tx));
    let last = done_rx.recv_timeout(Duration::from_secs(10)).ok();
    if let Some(mut ring) = ring {
        let mut batch = output::Batch::default();
        while let Some(item) = ring.next() {
            handle(&item, &tx, &stats, &mut st, &mut batch, &mut rec);
        }
        batch.flush_to(&out);
    }
    let mut batch = output::Batch::default();
    st.drain(&mut batch);
    batch.flush_to(&out);
    if let Some(r) = rec.as_mut() {
        if let Err(e) = r.flush() {
            tracing::error!("writing the recording: {e}");
        }
        tracing::info!(frames = r.frames, "recording closed");
    }
    if let Some((k, h)) = last {
        out.emit(&stats_json(&clock, k, h, &stats, &out));
    }
    out.emit(
        &json!({"type": "agent", "event": "stopped", "ts": clock.rfc3339(crate::clock::boot_ns())}),
    );
    let _ = control.join();
    drop(out);
    let _ = out_thread.join();
    drop(guard);
    result
}

fn stats_json(
    clock: &Clock,
    k: hooks::KernelCounters,
    h: hooks::HookState,
    stats: &ReaderStats,
    out: &Output,
) -> serde_json::Value {
    json!({
        "type": "stats",
        "ts": clock.rfc3339(crate::clock::boot_ns()),
        "lost": k.lost(),
        "kernel": k,
        "hooks": h,
        "agent": {
            "records": stats.records.load(Ordering::Relaxed),
            "undecodable": stats.undecodable.load(Ordering::Relaxed),
            "orphan_chunks": stats.orphan_chunks.load(Ordering::Relaxed),
            "open_runs": stats.open_runs.load(Ordering::Relaxed),
            "output_dropped": out.dropped.load(Ordering::Relaxed),
            "retained": out.hub.as_ref().map_or(0, |h| h.retained_items()),
            "retained_bytes": out.hub.as_ref().map_or(0, |h| h.retained_bytes()),
        },
    })
}

/// Reads until SIGINT/SIGTERM; leaves the ring buffer in `ring` for the final drain.
async fn read_loop(
    ring: &mut Option<RingBuf<MapData>>,
    out: &Output,
    tx: &mpsc::Sender<Msg>,
    stats: &ReaderStats,
    st: &mut State,
    rec: &mut Option<crate::record::Recorder>,
) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd holds it.
    let inner = ring.take().context("ring buffer already taken")?;
    let mut afd = unsafe { AsyncFd::register(inner) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    // Signal streams made once, before the loop: a `ctrl_c()` future made per iteration could
    // miss a signal that arrives between iterations (and the default action no longer applies).
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    // Stdio chunks, forks and netlink changes are submitted without a wake-up; drain on a timer.
    let mut tick = tokio::time::interval(Duration::from_millis(DRAIN_MS));
    let mut batch = output::Batch::default();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                let ring = afd.get_mut();
                while let Some(item) = ring.next() {
                    handle(&item, tx, stats, st, &mut batch, rec);
                }
                let (now, before) = (crate::clock::boot_ns(), batch.lines);
                st.tick(now, &mut batch);
                // What completing invocations looked up (tags, names) goes before the tick.
                let facts = st.take_facts();
                if batch.lines > before
                    && let Some(r) = rec.as_mut()
                    && (r.facts(&facts).is_err()
                        || r.frame(crate::record::KIND_TICK, &now.to_le_bytes()).is_err())
                {
                    *rec = None;
                }
                batch.flush_to(out);
                if let Some(r) = rec.as_mut()
                    && let Err(e) = r.flush()
                {
                    tracing::error!("writing the recording failed, recording stops: {e}");
                    *rec = None;
                }
            }
            guard = afd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    handle(&item, tx, stats, st, &mut batch, rec);
                }
                batch.flush_to(out);
                guard.clear_ready();
            }
        }
    }
    *ring = Some(afd.into_inner());
    Ok(())
}

fn handle(
    raw: &[u8],
    tx: &mpsc::Sender<Msg>,
    stats: &ReaderStats,
    st: &mut State,
    out: &mut output::Batch,
    rec: &mut Option<crate::record::Recorder>,
) {
    stats.records.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = rec.as_mut()
        && r.frame(crate::record::KIND_RECORD, raw).is_err()
    {
        tracing::error!("writing the recording failed, recording stops");
        *rec = None;
    }
    let ev = &decode(raw);
    match ev {
        Event::Exec(e) if e.role == Role::Plugin => {
            let _ = tx.send(Msg::PluginSeen);
        }
        Event::Undecodable { .. } => {
            stats.undecodable.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    st.push(ev, out);
    if let Some(r) = rec.as_mut() {
        let facts = st.take_facts();
        if r.facts(&facts).is_err() {
            tracing::error!("writing the recording failed, recording stops");
            *rec = None;
        }
    } else {
        // Nobody wants them: do not let them pile up.
        let _ = st.take_facts();
    }
    stats
        .orphan_chunks
        .store(st.runs.orphan_chunks, Ordering::Relaxed);
    stats
        .open_runs
        .store(st.runs.open_count() as u64, Ordering::Relaxed);
}
