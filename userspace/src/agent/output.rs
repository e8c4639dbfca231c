//! NDJSON out: one JSON object per line on stdout (what `kubectl logs` shows), written by its own
//! thread behind a bounded queue so a slow reader of stdout never stalls the ring-buffer reader.
//! Lines that do not fit are counted and reported in the next `stats` line, never silently lost.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::correlate::runs::Run;
use crate::events::{Event, Text};

#[derive(Clone)]
pub struct Output {
    tx: SyncSender<String>,
    pub dropped: Arc<AtomicU64>,
    /// The socket's history and live subscribers, when the socket is on.
    pub hub: Option<Arc<super::server::Hub>>,
}

impl Output {
    /// Starts the writer thread over `w`.
    pub fn start<W: Write + Send + 'static>(
        mut w: W,
        capacity: usize,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel::<String>(capacity);
        let handle = std::thread::Builder::new()
            .name("cniscope-out".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    if w.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    // Flush when the queue is empty, so lines appear promptly but in batches
                    // under load.
                    while let Ok(more) = rx.try_recv() {
                        if w.write_all(more.as_bytes()).is_err() {
                            return;
                        }
                    }
                    if w.flush().is_err() {
                        return;
                    }
                }
            })?;
        Ok((
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                hub: None,
            },
            handle,
        ))
    }

    pub fn emit(&self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.send(line, 1);
    }

    /// Sends a batch of `lines` complete lines at once (one wake-up of the writer).
    pub fn send(&self, batch: String, lines: u64) {
        if batch.is_empty() {
            return;
        }
        if let Some(h) = &self.hub {
            h.publish(&batch);
        }
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }
}

/// Lines collected while draining the ring buffer, sent as one batch.
#[derive(Default)]
pub struct Batch {
    pub buf: String,
    pub lines: u64,
}

impl Batch {
    pub fn push_value(&mut self, v: &Value) {
        self.push(v);
    }

    /// Appends `v` as one JSON line.
    pub fn push<T: Serialize + ?Sized>(&mut self, v: &T) {
        let start = self.buf.len();
        // SAFETY: serde_json writes only valid UTF-8; on an error the partial line is cut off
        // at `start`, a char boundary, so the String stays valid.
        let bytes = unsafe { self.buf.as_mut_vec() };
        if serde_json::to_writer(&mut *bytes, v).is_ok() {
            bytes.push(b'\n');
            self.lines += 1;
        } else {
            bytes.truncate(start);
        }
    }

    pub fn flush_to(&mut self, out: &Output) {
        out.send(
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.lines),
        );
    }
}

fn with_type(kind: &str, ts: String, v: Value) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), json!(kind));
    obj.insert("ts".into(), json!(ts));
    if let Value::Object(m) = v {
        obj.extend(m);
    }
    Value::Object(obj)
}

/// The `--events` line for a raw event.
pub fn event_json(ev: &Event, clock: &Clock) -> Value {
    let ts = clock.rfc3339(ev.ts_ns());
    match ev {
        Event::Exec(e) => with_type("exec", ts, json!(&**e)),
        Event::Fork(e) => with_type("fork", ts, json!(e)),
        Event::Exit(e) => with_type("exit", ts, json!(e)),
        Event::Stdio(s) => {
            let mut v = json!(s);
            if let Value::Object(m) = &mut v {
                m.insert("len".into(), json!(s.data.len()));
                m.insert("data".into(), json!(Text(s.data.clone())));
            }
            with_type("stdio", ts, v)
        }
        Event::Netlink(n) => {
            let mut v = json!(n);
            if let Value::Object(m) = &mut v {
                m.insert("request".into(), json!(base64_of(&n.request)));
                m.insert("reply".into(), json!(base64_of(&n.reply)));
            }
            with_type("netlink_raw", ts, v)
        }
        Event::Undecodable { kind, len, reason } => with_type(
            "undecodable",
            ts,
            json!({"kind": kind, "len": len, "reason": reason}),
        ),
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A `netlink` line: the request's process and namespaces, then the change.
#[derive(Serialize)]
struct NetlinkLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: &'a str,
    pid: u32,
    tgid: u32,
    comm: &'a str,
    netns: u32,
    netns_name: Option<&'a str>,
    task_netns: u32,
    plugin_tree: bool,
    #[serde(flatten)]
    change: &'a crate::netlink::describe::Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}

/// One `netlink` line per state-changing message of a request (an `undecodable` line for what
/// does not parse) appended to `batch`. With `raw`, the request bytes are included (base64).
pub fn netlink_lines(
    req: &crate::netlink::NlRequest,
    described: &[crate::netlink::describe::Described],
    ts: &str,
    netns_name: Option<&str>,
    raw: bool,
    batch: &mut Batch,
) {
    use crate::netlink::describe::Described;
    for d in described {
        match d {
            Described::Change(c) => batch.push(&NetlinkLine {
                kind: "netlink",
                ts,
                pid: req.pid,
                tgid: req.tgid,
                comm: &req.comm,
                netns: req.netns,
                netns_name,
                task_netns: req.task_netns,
                plugin_tree: req.plugin_tree,
                change: c,
                request: raw.then(|| base64_of(&req.request)),
            }),
            Described::Undecodable(u) => undecodable_line(req, u, ts, batch),
        }
    }
}

/// The `undecodable` line for a message of `req` that does not parse, with its raw bytes.
pub fn undecodable_line(
    req: &crate::netlink::NlRequest,
    u: &crate::netlink::describe::Undecodable,
    ts: &str,
    batch: &mut Batch,
) {
    batch.push_value(&with_type(
        "undecodable",
        ts.to_string(),
        json!({
            "what": "netlink", "pid": req.pid, "comm": req.comm, "netns": req.netns,
            "msg_type": u.msg_type, "reason": u.reason,
            "request": base64_of(&req.request),
        }),
    ));
}

/// The line for a finished process run.
pub fn run_json(r: &Run, clock: &Clock) -> Value {
    let mut v = with_type("run", clock.rfc3339(r.start_ns), json!(r));
    if let (Value::Object(m), Some(end)) = (&mut v, r.end_ns) {
        m.insert("end".into(), json!(clock.rfc3339(end)));
    }
    v
}
