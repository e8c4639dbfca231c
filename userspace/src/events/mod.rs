//! Typed kernel events: what `decode` makes of ring-buffer records, and what the rest of the
//! pipeline (and `--events` NDJSON) sees.

pub mod decode;
pub mod text;

use serde::Serialize;

pub use text::Text;

/// Which stdio stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

impl Stream {
    pub fn from_fd(fd: u32) -> Option<Self> {
        match fd {
            0 => Some(Self::Stdin),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Its environment had `CNI_COMMAND`.
    Plugin,
    /// Started by a plugin's process tree (IPAM helpers that are not plugins, `ip`, `iptables`).
    Child,
}

/// The `CNI_*` variables of a plugin run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CniEnv {
    pub command: Option<String>,
    pub containerid: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exec {
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub role: Role,
    pub netns: u32,
    pub cgroup_id: u64,
    pub uid: u32,
    pub comm: String,
    pub filename: String,
    pub argv: Vec<String>,
    /// The argv block was longer than what the kernel side keeps.
    pub argv_cut: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniEnv>,
    /// Stopped at exec until the stdio hooks were live.
    pub held: bool,
    /// Could not be held while the hooks were down: stdio may be incomplete.
    pub unheld: bool,
    /// Only the tail of a large environment was searched.
    pub env_tail: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fork {
    pub ts_ns: u64,
    pub pid: u32,
    pub parent_tgid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exit {
    pub ts_ns: u64,
    pub tgid: u32,
    pub role: Role,
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when a signal killed it.
    pub signal: Option<i32>,
    pub core_dumped: bool,
    /// Raw wait status.
    pub status: u32,
    /// Nanoseconds from exec to exit (absent for a child that never exec'd).
    pub duration_ns: Option<u64>,
    pub captured: [u64; 3],
    pub cut: [u64; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stdio {
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub stream: Stream,
    pub offset: u64,
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Exec(std::sync::Arc<Exec>),
    Fork(Fork),
    Exit(Exit),
    Stdio(Stdio),
    /// An rtnetlink request that changes state.
    Netlink(crate::netlink::NlRequest),
    /// A record that could not be decoded, with the reason; never dropped silently.
    Undecodable {
        kind: u32,
        len: usize,
        reason: String,
    },
}

impl Event {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Exec(e) => e.ts_ns,
            Event::Fork(e) => e.ts_ns,
            Event::Exit(e) => e.ts_ns,
            Event::Stdio(e) => e.ts_ns,
            Event::Netlink(e) => e.ts_ns,
            Event::Undecodable { .. } => 0,
        }
    }
}
