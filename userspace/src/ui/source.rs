//! Where lines come from, each on its own thread so the UI never waits on it: the agent's socket
//! (reconnecting with backoff), an NDJSON file (followed as it grows) or stdin, or a child
//! process's stdout (`cniscope replay FILE`, or `cniscope agent` run by the TUI itself). Lines are
//! parsed and prepared here and sent to the UI loop as `Msg::Data` on the one channel.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::app::{Msg, SourceMsg};
use super::prepare::prepare;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The agent's unix socket.
    Socket(PathBuf),
    /// An NDJSON file (`-`: stdin).
    File(PathBuf),
    /// A child whose stdout is NDJSON; stopped with SIGINT when the TUI exits.
    Command {
        label: String,
        program: PathBuf,
        args: Vec<String>,
    },
}

impl Source {
    pub fn label(&self) -> String {
        match self {
            Source::Socket(p) => format!("agent {}", p.display()),
            Source::File(p) if p.as_os_str() == "-" => "stdin".into(),
            Source::File(p) => format!("file {}", p.display()),
            Source::Command { label, .. } => label.clone(),
        }
    }
}

/// A started source. `stop` ends a child process (SIGINT, then SIGKILL after 5 s).
pub struct Handle {
    /// The child, until it is reaped (reaping happens under this lock, so a pid read under it
    /// is never one the kernel has reused).
    child: Arc<Mutex<Option<Child>>>,
    done: Receiver<()>,
}

impl Handle {
    pub fn child_pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(Child::id))
    }

    fn signal(&self, sig: libc::c_int) -> bool {
        let Ok(g) = self.child.lock() else {
            return false;
        };
        let Some(pid) = g.as_ref().and_then(|c| libc::pid_t::try_from(c.id()).ok()) else {
            return false;
        };
        // SAFETY: kill(2) on our own child, not yet reaped (we hold the lock reaping takes).
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// Ends the child, if any: SIGINT (the agent stops cleanly), SIGKILL after 5 s.
    pub fn stop(self) {
        if !self.signal(libc::SIGINT) {
            return;
        }
        if let Err(RecvTimeoutError::Timeout) = self.done.recv_timeout(Duration::from_secs(5)) {
            self.signal(libc::SIGKILL);
            let _ = self.done.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// Waits for the child by polling under the lock, so `Handle::signal` never races the reaping.
fn reap(slot: &Mutex<Option<Child>>) -> Option<std::io::Result<ExitStatus>> {
    loop {
        {
            let mut g = slot.lock().ok()?;
            let c = g.as_mut()?;
            match c.try_wait() {
                Ok(Some(st)) => {
                    *g = None;
                    return Some(Ok(st));
                }
                Ok(None) => {}
                Err(e) => {
                    *g = None;
                    return Some(Err(e));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An I/O error without its "(os error N)" tail: the status bar is narrow.
fn short(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn status(tx: &SyncSender<Msg>, m: SourceMsg) -> bool {
    tx.send(Msg::Source(m)).is_ok()
}

/// Reads lines until EOF. `Ok(false)`: the UI is gone. A partial last line is kept in `buf`
/// for the next call (a file still being written).
fn pump<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, tx: &SyncSender<Msg>) -> std::io::Result<bool> {
    loop {
        let n = r.read_until(b'\n', buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(true);
        }
        let line = String::from_utf8_lossy(buf);
        let line = line.trim_end();
        if !line.is_empty() && tx.send(Msg::Data(prepare(line))).is_err() {
            return Ok(false);
        }
        buf.clear();
    }
}

pub fn start(src: Source, tx: SyncSender<Msg>) -> std::io::Result<Handle> {
    let child = Arc::new(Mutex::new(None));
    let (done_tx, done) = sync_channel(1);
    let c2 = child.clone();
    std::thread::Builder::new()
        .name("cniscope-tui-src".into())
        .spawn(move || {
            match src {
                Source::Socket(p) => socket(&p, &tx),
                Source::File(p) => file(&p, &tx),
                Source::Command {
                    label,
                    program,
                    args,
                } => command(&label, &program, &args, &tx, &c2),
            }
            let _ = done_tx.send(());
        })?;
    Ok(Handle { child, done })
}

const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 5000;

fn socket(path: &std::path::Path, tx: &SyncSender<Msg>) {
    let target = format!("agent {}", path.display());
    let mut backoff = BACKOFF_MIN_MS;
    loop {
        if !status(tx, SourceMsg::Connecting(target.clone())) {
            return;
        }
        let reason = match UnixStream::connect(path) {
            Ok(mut stream) => match stream.write_all(b"{\"op\":\"subscribe\"}\n") {
                Ok(()) => {
                    let snapshot = true;
                    if !status(
                        tx,
                        SourceMsg::Connected {
                            target: target.clone(),
                            snapshot,
                        },
                    ) {
                        return;
                    }
                    backoff = BACKOFF_MIN_MS;
                    let mut buf = Vec::new();
                    match pump(&mut BufReader::new(stream), &mut buf, tx) {
                        Ok(false) => return,
                        Ok(true) => "the agent closed the connection".to_string(),
                        Err(e) => short(&e),
                    }
                }
                Err(e) => short(&e),
            },
            Err(e) => short(&e),
        };
        if !status(
            tx,
            SourceMsg::Disconnected {
                reason,
                retry_ms: backoff,
            },
        ) {
            return;
        }
        std::thread::sleep(Duration::from_millis(backoff));
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
    }
}

fn file(path: &std::path::Path, tx: &SyncSender<Msg>) {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        if !status(
            tx,
            SourceMsg::Connected {
                target: "stdin".into(),
                snapshot: false,
            },
        ) {
            return;
        }
        let r = pump(&mut std::io::stdin().lock(), &mut buf, tx);
        let msg = match r {
            Ok(_) => "stdin: end".to_string(),
            Err(e) => format!("stdin: {e}"),
        };
        status(tx, SourceMsg::Ended(msg));
        return;
    }
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            status(tx, SourceMsg::Ended(format!("{}: {e}", path.display())));
            return;
        }
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let target = format!("file {name} (following)");
    if !status(
        tx,
        SourceMsg::Connected {
            target,
            snapshot: false,
        },
    ) {
        return;
    }
    let mut r = BufReader::new(f);
    // Follow the file as `cniscope agent > FILE` appends to it.
    loop {
        match pump(&mut r, &mut buf, tx) {
            Ok(true) => std::thread::sleep(Duration::from_millis(300)),
            Ok(false) => return,
            Err(e) => {
                status(tx, SourceMsg::Ended(format!("{}: {e}", path.display())));
                return;
            }
        }
    }
}

/// Drops terminal escape sequences (the child's logs are coloured).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn command(
    label: &str,
    program: &std::path::Path,
    args: &[String],
    tx: &SyncSender<Msg>,
    slot: &Arc<Mutex<Option<Child>>>,
) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; between fork and exec it only sets the child's
    // parent-death signal, so a TUI that dies (even by SIGKILL) never leaves the child running.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            status(tx, SourceMsg::Ended(format!("{label}: {e}")));
            return;
        }
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let target = format!("{label} (pid {})", child.id());
    status(
        tx,
        SourceMsg::Connected {
            target,
            snapshot: false,
        },
    );
    if let Ok(mut g) = slot.lock() {
        *g = Some(child);
    }
    if let Some(err) = stderr {
        let tx = tx.clone();
        let _ = std::thread::Builder::new()
            .name("cniscope-tui-log".into())
            .spawn(move || {
                for l in BufReader::new(err).lines() {
                    let Ok(l) = l else { break };
                    let l = strip_ansi(&l);
                    let l = l.trim();
                    // Progress lines would hide what matters: warnings, errors, why it exited.
                    if l.is_empty() || l.contains(" INFO ") || l.contains(" DEBUG ") {
                        continue;
                    }
                    if !status(&tx, SourceMsg::Log(l.to_string())) {
                        break;
                    }
                }
            });
    }
    let mut buf = Vec::new();
    let alive = match stdout {
        Some(out) => {
            let mut r = BufReader::new(out);
            let alive = pump(&mut r, &mut buf, tx).unwrap_or(true);
            // Drain without parsing if the UI went away, so the child never blocks on a pipe.
            if !alive {
                let _ = std::io::copy(&mut r.take(u64::MAX), &mut std::io::sink());
            }
            alive
        }
        None => true,
    };
    let st = reap(slot);
    if alive {
        let msg = match st {
            Some(Ok(s)) if s.success() => format!("{label} ended"),
            Some(Ok(s)) => format!("{label} ended ({s})"),
            Some(Err(e)) => format!("{label}: {e}"),
            None => format!("{label} ended"),
        };
        status(tx, SourceMsg::Ended(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready"),
            "2026  INFO ready"
        );
    }

    #[test]
    fn pump_keeps_a_partial_line() {
        let (tx, rx) = sync_channel(16);
        let mut buf = Vec::new();
        let mut r = std::io::Cursor::new(b"{\"type\":\"snapshot_end\"}\n{\"type\":\"lag".to_vec());
        assert!(pump(&mut r, &mut buf, &tx).is_ok_and(|alive| alive));
        assert!(matches!(
            rx.try_recv(),
            Ok(Msg::Data(super::super::prepare::Prepared::SnapshotEnd))
        ));
        assert!(rx.try_recv().is_err());
        assert_eq!(buf, b"{\"type\":\"lag");
    }
}
