//! Running `ip` inside the pod's network namespace, and nowhere else.
//!
//! The namespace is opened once (`CNI_NETNS`), checked to be a network namespace that is not
//! this process's own nor init's, and entered by the child between fork and exec (`setns` in
//! `pre_exec`), which then checks `/proc/self/ns/net` is that namespace before it execs. The
//! plugin's own thread never changes namespace.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where `ip` is looked for when the config names no `ipPath`; never the caller's PATH.
pub const IP_CANDIDATES: &[&str] = &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

/// A namespace's identity: the nsfs inode (what cniscope calls the netns) and device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetnsId {
    pub inode: u64,
    pub dev: u64,
}

/// What happened to one command that was allowed to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Execution {
    /// `ran` (it exited, whatever the code), `timeout` (killed), `error` (could not start).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Execution {
    pub fn succeeded(&self) -> bool {
        self.outcome == "ran" && self.exit_code == Some(0)
    }
}

/// Opens the netns and runs commands in it; a trait so the plugin's flow is tested without one.
pub trait Sandbox {
    fn open(&mut self, netns_path: &str) -> Result<NetnsId, String>;
    fn run(&mut self, argv: &[String], timeout: Duration, max_output: usize) -> Execution;
}

/// The real thing.
pub struct NetnsSandbox {
    ip_path: Option<PathBuf>,
    ns: Option<(OwnedFd, NetnsId)>,
}

impl NetnsSandbox {
    pub fn new(ip_path: Option<PathBuf>) -> Self {
        NetnsSandbox { ip_path, ns: None }
    }

    fn ip(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.ip_path {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(format!("ipPath {p:?} is not a file"))
            };
        }
        IP_CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("no ip binary in {IP_CANDIDATES:?}; set ipPath"))
    }
}

fn ns_id(path: &str) -> Option<NetnsId> {
    let m = std::fs::metadata(path).ok()?;
    Some(NetnsId {
        inode: m.ino(),
        dev: m.dev(),
    })
}

/// Opens `path` and checks it is a network namespace other than ours and init's.
pub fn open_netns(path: &str) -> Result<(OwnedFd, NetnsId), String> {
    let f = std::fs::File::options()
        .read(true)
        .open(path)
        .map_err(|e| format!("open CNI_NETNS {path:?}: {e}"))?;
    let m = f.metadata().map_err(|e| format!("stat {path:?}: {e}"))?;
    let id = NetnsId {
        inode: m.ino(),
        dev: m.dev(),
    };
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: ioctl on an fd we own; NS_GET_NSTYPE takes no argument and only returns a value.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t < 0 {
        return Err(format!("CNI_NETNS {path:?} is not a namespace file"));
    }
    if t != libc::CLONE_NEWNET {
        return Err(format!("CNI_NETNS {path:?} is not a network namespace"));
    }
    for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        if ns_id(own) == Some(id) {
            return Err(format!(
                "CNI_NETNS {path:?} is the host's network namespace ({own}): refusing to run commands there"
            ));
        }
    }
    Ok((OwnedFd::from(f), id))
}

impl Sandbox for NetnsSandbox {
    fn open(&mut self, netns_path: &str) -> Result<NetnsId, String> {
        let (fd, id) = open_netns(netns_path)?;
        self.ns = Some((fd, id));
        Ok(id)
    }

    fn run(&mut self, argv: &[String], timeout: Duration, max_output: usize) -> Execution {
        let start = Instant::now();
        let fail = |reason: String| Execution {
            outcome: "error",
            reason: Some(reason),
            duration_ms: start.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        };
        let Some((fd, id)) = self.ns.as_ref() else {
            return fail("network namespace not open".into());
        };
        let ip = match self.ip() {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let (raw_fd, want) = (fd.as_raw_fd(), *id);
        let mut cmd = Command::new(&ip);
        cmd.arg0("ip")
            .args(argv.iter().skip(1))
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls (setns, stat) on values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(c"/proc/self/ns/net".as_ptr(), &mut st) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if st.st_ino != want.inode || st.st_dev != want.dev {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return fail(format!("could not start {ip:?} in the pod netns: {e}")),
        };
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .map(|r| std::thread::spawn(move || read_bounded(r, max_output)))
        .collect();
        let status = match wait_timeout(&mut child, timeout) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!("waiting for ip: {e}"));
            }
        };
        let mut outs = readers.into_iter().map(|h| h.join().unwrap_or_default());
        let (stdout, t1) = outs.next().unwrap_or_default();
        let (stderr, t2) = outs.next().unwrap_or_default();
        let mut ex = Execution {
            outcome: if status.is_some() { "ran" } else { "timeout" },
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout,
            stderr,
            output_truncated: t1 || t2,
            duration_ms: start.elapsed().as_secs_f64() * 1e3,
            reason: None,
        };
        if status.is_none() {
            ex.reason = Some(format!("killed after {} ms", timeout.as_millis()));
        }
        ex
    }
}

/// Reads everything (so the child never blocks on a full pipe) and keeps `max` bytes.
fn read_bounded(r: Option<Box<dyn Read + Send>>, max: usize) -> (String, bool) {
    let Some(mut r) = r else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// Waits up to `timeout`; `Ok(None)` when it is still running. Uses a pidfd (no polling loop)
/// and falls back to short sleeps on kernels without one.
fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; the child is not
    // reaped yet, so its pid can not have been reused.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd_open returned a fresh fd that nothing else owns.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r > 0 {
                return child.wait().map(Some);
            }
            if r == 0 {
                return child.try_wait();
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_netns_is_refused() {
        let e = open_netns("/proc/self/ns/net").unwrap_err();
        assert!(e.contains("host's network namespace"), "{e}");
    }

    #[test]
    fn non_namespace_files_are_refused() {
        assert!(
            open_netns("/etc/hostname")
                .unwrap_err()
                .contains("not a namespace")
        );
        assert!(
            open_netns("/proc/self/ns/uts")
                .unwrap_err()
                .contains("not a network")
        );
        assert!(
            open_netns("/nonexistent")
                .unwrap_err()
                .contains("open CNI_NETNS")
        );
    }

    #[test]
    fn bounded_reads() {
        let data = vec![b'x'; 100];
        let (s, t) = read_bounded(Some(Box::new(std::io::Cursor::new(data))), 10);
        assert_eq!((s.len(), t), (10, true));
    }

    #[test]
    fn without_an_open_netns_nothing_runs() {
        let mut s = NetnsSandbox::new(None);
        let ex = s.run(&["ip".into(), "route".into()], Duration::from_secs(1), 100);
        assert_eq!(ex.outcome, "error");
    }
}
