//! The agent's unix socket: clients (the TUI first) get the retained history, then live lines;
//! cniscope-cni asks it for a pod's annotations.
//!
//! Protocol: one JSON request line, then JSON lines back.
//! - `{"op":"subscribe"}` → every retained line (invocations, netns-level changes, the latest
//!   `stats`), then `{"type":"snapshot_end"}`, then live lines as they are printed. A client that
//!   reads too slowly misses lines and is told so with `{"type":"lagged","missed":N}`; the agent
//!   never waits for it.
//! - `{"op":"pod","namespace":NS,"name":NAME}` / `{"op":"namespace","name":NS}` → one line: the
//!   object from the agent's pod cache, or `{"error":…}`.
//! - `{"op":"netlink","capture":false}` / `true` → detaches (attaches) the rtnetlink programs,
//!   then one line: `{"netlink_capture":false}` once that has taken effect, or `{"error":…}`. The
//!   agent's output says so too (`{"type":"agent","event":"netlink_capture",…}`), so a log never
//!   hides a stretch in which changes were not captured.
//!
//! The socket is created mode 0600 (root only): the lines carry every plugin's stdin, which can
//! hold credentials.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::hooks::Msg;
use super::output::Output;
use crate::clock::Clock;

/// Bounds on what is kept for new clients.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_items: usize,
    pub max_age: Duration,
}

/// Retained lines: an ADD invocation's line is ~25 KB of JSON that compresses several times
/// over, and 10 000 of them must fit in a small agent, so large lines are kept LZ4-compressed.
/// A netns-level change is ~500 bytes: compressing it alone gains little and would cost more CPU
/// than everything else the agent does for it, so small lines are kept as they are.
struct Retained {
    items: VecDeque<(Instant, Stored)>,
    bytes: usize,
    stats: Option<Arc<str>>,
}

/// Lines from this size up are compressed.
const COMPRESS_FROM: usize = 2048;

enum Stored {
    Plain(Box<str>),
    Lz4(Box<[u8]>),
}

impl Stored {
    fn new(line: &str) -> Self {
        if line.len() >= COMPRESS_FROM {
            Stored::Lz4(lz4_flex::compress_prepend_size(line.as_bytes()).into_boxed_slice())
        } else {
            Stored::Plain(line.into())
        }
    }

    fn len(&self) -> usize {
        match self {
            Stored::Plain(s) => s.len(),
            Stored::Lz4(b) => b.len(),
        }
    }

    fn line(&self) -> Option<Arc<str>> {
        match self {
            Stored::Plain(s) => Some(Arc::from(&**s)),
            Stored::Lz4(b) => {
                let raw = lz4_flex::decompress_size_prepended(b).ok()?;
                String::from_utf8(raw).ok().map(Arc::from)
            }
        }
    }
}

/// Where printed lines go besides stdout: the retained history and live subscribers.
pub struct Hub {
    retained: Mutex<Retained>,
    live: broadcast::Sender<Arc<str>>,
    retention: Retention,
}

impl Hub {
    pub fn new(retention: Retention) -> Arc<Self> {
        let (live, _) = broadcast::channel(8192);
        Arc::new(Self {
            retained: Mutex::new(Retained {
                items: VecDeque::new(),
                bytes: 0,
                stats: None,
            }),
            live,
            retention,
        })
    }

    /// Publishes a batch of complete lines.
    pub fn publish(&self, batch: &str) {
        let now = Instant::now();
        let Ok(mut r) = self.retained.lock() else {
            return;
        };
        // Live lines are shared copies; with nobody subscribed none are made.
        let watched = self.live.receiver_count() > 0;
        for line in batch.lines().filter(|l| !l.is_empty()) {
            if line.starts_with("{\"type\":\"stats\"") {
                r.stats = Some(Arc::from(line));
            } else if line.starts_with("{\"type\":\"invocation\"")
                || line.starts_with("{\"type\":\"netlink\"")
            {
                let stored = Stored::new(line);
                r.bytes += stored.len();
                r.items.push_back((now, stored));
            }
            if watched {
                // A receiver leaving meanwhile is not an error.
                let _ = self.live.send(Arc::from(line));
            }
        }
        let Retention { max_items, max_age } = self.retention;
        while r.items.len() > max_items
            || r.items.front().is_some_and(|(t, _)| t.elapsed() > max_age)
        {
            if let Some((_, b)) = r.items.pop_front() {
                r.bytes -= b.len();
            }
        }
    }

    /// The retained lines, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<str>> {
        match self.retained.lock() {
            Ok(r) => r
                .items
                .iter()
                .filter_map(|(_, b)| b.line())
                .chain(r.stats.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn retained_items(&self) -> usize {
        self.retained.lock().map(|r| r.items.len()).unwrap_or(0)
    }

    /// Bytes held for retained lines (large ones compressed).
    pub fn retained_bytes(&self) -> usize {
        self.retained.lock().map(|r| r.bytes).unwrap_or(0)
    }
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    // SAFETY: umask only affects this process's file creation mode, set around bind.
    let old = unsafe { libc::umask(0o177) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: restoring the previous umask.
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("listening on {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// What clients may change in the running agent.
#[derive(Clone)]
pub struct Ctl {
    /// The control thread, which owns the programs.
    pub hooks: std::sync::mpsc::Sender<Msg>,
    pub out: Output,
    pub clock: Clock,
    /// Whether rtnetlink capture can run in this agent (not `--netlink off`, and the kernel
    /// allows it).
    pub netlink: bool,
}

impl Ctl {
    /// Turns rtnetlink capture on or off; the reply line for the client.
    async fn netlink(&self, capture: Option<bool>) -> serde_json::Value {
        let Some(on) = capture else {
            return serde_json::json!({"error": "op netlink needs \"capture\": true or false"});
        };
        if !self.netlink {
            return serde_json::json!({"error": "rtnetlink capture is off in this agent (--netlink off, or this kernel cannot run it)"});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.hooks.send(Msg::Netlink(on, tx)).is_err() {
            return serde_json::json!({"error": "the agent is stopping"});
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(()))) => {
                self.out.emit(&serde_json::json!({
                    "type": "agent",
                    "event": "netlink_capture",
                    "ts": self.clock.rfc3339(crate::clock::boot_ns()),
                    "capture": on,
                }));
                tracing::info!(capture = on, "rtnetlink capture switched by a client");
                serde_json::json!({"netlink_capture": on})
            }
            Ok(Ok(Err(e))) => serde_json::json!({"error": e}),
            Ok(Err(_)) => serde_json::json!({"error": "the agent is stopping"}),
            Err(_) => serde_json::json!({"error": "the agent did not answer within 10 s"}),
        }
    }
}

/// Serves clients until the runtime stops. `pods`: the Kubernetes pod cache, if the agent has
/// one, for `pod` and `namespace` requests.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    hub: Arc<Hub>,
    path: PathBuf,
    pods: Option<crate::k8s::PodCache>,
    ctl: Ctl,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("socket {}: {e}", path.display());
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let hub = hub.clone();
                let pods = pods.clone();
                let ctl = ctl.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, hub, pods, ctl).await {
                        tracing::debug!("client: {e:#}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept on {}: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(
    stream: UnixStream,
    hub: Arc<Hub>,
    pods: Option<crate::k8s::PodCache>,
    ctl: Ctl,
) -> Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut req = String::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut req))
        .await
        .context("no request within 10 s")??;
    let req: serde_json::Value = match serde_json::from_str(req.trim()) {
        Ok(v) => v,
        Err(e) => {
            let msg = serde_json::json!({"error": format!("request is not JSON: {e}")});
            wr.write_all(format!("{msg}\n").as_bytes()).await?;
            return Ok(());
        }
    };
    match req["op"].as_str() {
        Some("subscribe") => {
            // Subscribe before taking the snapshot so no line falls between them.
            let mut live = hub.live.subscribe();
            let mut buf = String::new();
            for l in hub.snapshot() {
                buf.push_str(&l);
                buf.push('\n');
            }
            buf.push_str("{\"type\":\"snapshot_end\"}\n");
            wr.write_all(buf.as_bytes()).await?;
            loop {
                match live.recv().await {
                    Ok(l) => {
                        wr.write_all(l.as_bytes()).await?;
                        wr.write_all(b"\n").await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        wr.write_all(
                            format!("{{\"type\":\"lagged\",\"missed\":{n}}}\n").as_bytes(),
                        )
                        .await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        Some("pod") | Some("namespace") => {
            // From the pod cache (the API server only for what it lacks, within 150 ms); without
            // one, say so at once so the plugin falls back to the API server without waiting.
            let reply = match &pods {
                Some(c) => c.answer(&req).await,
                None => serde_json::json!({"error": "this agent has no Kubernetes pod cache"}),
            };
            wr.write_all(format!("{reply}\n").as_bytes()).await?;
            Ok(())
        }
        Some("netlink") => {
            let reply = ctl.netlink(req["capture"].as_bool()).await;
            wr.write_all(format!("{reply}\n").as_bytes()).await?;
            Ok(())
        }
        other => {
            let msg = serde_json::json!({"error": format!("unknown op {other:?}; use subscribe, pod, namespace or netlink")});
            wr.write_all(format!("{msg}\n").as_bytes()).await?;
            Ok(())
        }
    }
}

/// `cniscope ctl`: change a running agent through its socket.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub what: CtlCmd,
    /// The agent's socket.
    #[arg(long, default_value = crate::ui::DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCmd {
    /// Pause (`off`) or resume (`on`) rtnetlink capture: the programs are detached, not just
    /// muted, so a paused agent costs netlink senders nothing.
    Netlink {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// Sends one request line to the agent at `socket` and returns its one-line reply.
pub fn request(socket: &Path, req: &serde_json::Value) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to the agent at {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .context("reading the agent's reply")?;
    serde_json::from_str(line.trim())
        .with_context(|| format!("the agent's reply is not JSON: {line:?}"))
}

/// `cniscope ctl …`: prints the agent's reply; an `error` reply is this command's error.
pub fn ctl(args: &CtlArgs) -> Result<()> {
    let req = match &args.what {
        CtlCmd::Netlink { state } => serde_json::json!({"op": "netlink", "capture": state == "on"}),
    };
    let reply = request(&args.socket, &req)?;
    if let Some(e) = reply["error"].as_str() {
        anyhow::bail!("{e}");
    }
    println!("{reply}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_bounds_and_keeps_the_latest_stats() {
        let hub = Hub::new(Retention {
            max_items: 3,
            max_age: Duration::from_secs(60),
        });
        for i in 0..5 {
            hub.publish(&format!(
                "{{\"type\":\"invocation\",\"id\":\"{i}\"}}\n{{\"type\":\"stats\",\"n\":{i}}}\n"
            ));
        }
        hub.publish("{\"type\":\"exec\"}\n");
        let snap = hub.snapshot();
        assert_eq!(snap.len(), 4, "{snap:?}");
        assert!(snap[0].contains("\"id\":\"2\""));
        assert!(snap[3].contains("\"n\":4"));
        // A large line is stored compressed and comes back byte for byte.
        let big = format!(
            "{{\"type\":\"invocation\",\"stdin\":\"{}\"}}",
            "x".repeat(50_000)
        );
        hub.publish(&format!("{big}\n"));
        assert!(hub.retained_bytes() < 10_000, "{}", hub.retained_bytes());
        assert_eq!(&*hub.snapshot()[2], big.as_str());
    }
}
