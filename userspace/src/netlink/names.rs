//! Names for what the kernel reports as numbers: network namespace inodes (to `/run/netns/<name>`
//! or a plugin's CNI_NETNS) and interface indexes within a namespace (asked of the kernel from a
//! short-lived thread that enters the namespace: a netns belongs to one OS thread, never to the
//! agent's reader).

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::correlate::Map;
use crate::record::Fact;

/// Known namespaces and interface names, bounded.
#[derive(Default)]
pub struct Names {
    /// netns inode → a path that opens it.
    paths: Map<u32, PathBuf>,
    /// (netns, ifindex) → name.
    ifnames: Map<(u32, u32), String>,
    /// netns → display name, refreshed every few seconds (a namespace is rarely renamed, but
    /// an inode can be reused after its namespace is gone).
    shown: Map<u32, Option<String>>,
    shown_at: Option<std::time::Instant>,
    /// Replaying a recording: answer only from facts, never from this system.
    offline: bool,
    /// Facts learned from the system since the last `take_facts` (for recordings).
    journal: Vec<Fact>,
}

const MAX_ENTRIES: usize = 65536;

fn inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

impl Names {
    /// Names that answer only from facts (replay).
    pub fn offline() -> Self {
        Self {
            offline: true,
            ..Self::default()
        }
    }

    /// Facts learned from the system since the last call.
    pub fn take_facts(&mut self) -> Vec<Fact> {
        std::mem::take(&mut self.journal)
    }

    /// Applies a recorded fact.
    pub fn apply(&mut self, f: &Fact) {
        match f {
            Fact::Ifname { netns, index, name } => {
                self.ifnames.insert((*netns, *index), name.clone());
            }
            Fact::Display { ino, name } => {
                self.shown.insert(*ino, name.clone());
            }
            _ => {}
        }
    }

    /// Remembers that `path` opens a namespace (a plugin's CNI_NETNS, a /run/netns entry).
    pub fn learn_path(&mut self, path: &Path) -> Option<u32> {
        if self.offline {
            return None;
        }
        let ino = inode(path)?;
        if self.paths.len() >= MAX_ENTRIES {
            self.paths.clear();
        }
        self.paths.insert(ino, path.to_path_buf());
        Some(ino)
    }

    /// Remembers an interface name seen in a request (a link created with IFLA_IFNAME).
    pub fn learn_ifname(&mut self, netns: u32, index: u32, name: &str) {
        if self.ifnames.len() >= MAX_ENTRIES {
            self.ifnames.clear();
        }
        if self
            .ifnames
            .insert((netns, index), name.to_string())
            .as_deref()
            != Some(name)
        {
            self.journal.push(Fact::Ifname {
                netns,
                index,
                name: name.to_string(),
            });
        }
    }

    fn scan_run_netns(&mut self) {
        for dir in ["/run/netns", "/var/run/netns"] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    self.learn_path(&e.path());
                }
            }
        }
    }

    /// A path that opens namespace `ino`: known paths, /run/netns, then the given processes.
    pub fn path_of(&mut self, ino: u32, pids: &[u32]) -> Option<PathBuf> {
        if let Some(p) = self.paths.get(&ino)
            && inode(p) == Some(ino)
        {
            return Some(p.clone());
        }
        self.scan_run_netns();
        if let Some(p) = self.paths.get(&ino)
            && inode(p) == Some(ino)
        {
            return Some(p.clone());
        }
        let own = PathBuf::from("/proc/self/ns/net");
        if inode(&own) == Some(ino) {
            return Some(own);
        }
        for pid in pids {
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if inode(&p) == Some(ino) {
                return Some(p);
            }
        }
        None
    }

    /// A short name for a namespace: the /run/netns name, "host" for the agent's own, else None.
    pub fn display(&mut self, ino: u32) -> Option<String> {
        if self.offline {
            return self.shown.get(&ino).cloned().flatten();
        }
        let fresh = self
            .shown_at
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(5));
        if !fresh {
            self.shown.clear();
            self.shown_at = Some(std::time::Instant::now());
        }
        if let Some(v) = self.shown.get(&ino) {
            return v.clone();
        }
        let v = self.display_uncached(ino);
        self.shown.insert(ino, v.clone());
        self.journal.push(Fact::Display {
            ino,
            name: v.clone(),
        });
        v
    }

    fn display_uncached(&mut self, ino: u32) -> Option<String> {
        if inode(Path::new("/proc/self/ns/net")) == Some(ino) {
            return Some("host".into());
        }
        let p = self.path_of(ino, &[])?;
        let s = p.to_string_lossy();
        Some(
            s.strip_prefix("/run/netns/")
                .or_else(|| s.strip_prefix("/var/run/netns/"))
                .unwrap_or(&s)
                .to_string(),
        )
    }

    /// The name of interface `index` in namespace `ino`; `pids` are processes that may still be
    /// in that namespace (the sender).
    pub fn ifname(&mut self, ino: u32, index: u32, pids: &[u32]) -> Option<String> {
        if index == 0 {
            return None;
        }
        if let Some(n) = self.ifnames.get(&(ino, index)) {
            return Some(n.clone());
        }
        if self.offline {
            return None;
        }
        let path = self.path_of(ino, pids)?;
        let name = ifname_in(&path, index)?;
        self.learn_ifname(ino, index, &name);
        Some(name)
    }
}

impl Names {
    /// Looks up the index of a link just created by name, and remembers the pair.
    pub fn learn_index(&mut self, ino: u32, name: &str, pids: &[u32]) {
        if self.offline {
            return;
        }
        let Some(path) = self.path_of(ino, pids) else {
            return;
        };
        if let Some(i) = index_in(&path, name) {
            self.learn_ifname(ino, i, name);
        }
    }
}

/// Runs `f` on a short-lived thread inside the namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid netns fd; the thread exits afterwards.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f()
    })
    .join()
    .ok()
    .flatten()
}

fn index_in(path: &Path, name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    in_netns(path, move || {
        // SAFETY: a valid NUL-terminated name.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        (i != 0).then_some(i)
    })
}

/// Asks the kernel for the name of `index` inside the namespace at `path`, from a thread that
/// enters it (the thread ends with the lookup; the caller's namespace never changes).
pub fn ifname_in(path: &Path, index: u32) -> Option<String> {
    in_netns(path, move || {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
        let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        Some(s.to_string_lossy().into_owned())
    })
}

/// Namespace inode behind an fd of a process (`IFLA_NET_NS_FD` moves), while it is alive.
pub fn netns_of_fd(pid: u32, fd: i32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Namespace inode of a process (`IFLA_NET_NS_PID` moves).
pub fn netns_of_pid(pid: u32) -> Option<u32> {
    inode(Path::new(&format!("/proc/{pid}/ns/net")))
}
