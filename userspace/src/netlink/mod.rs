//! rtnetlink requests seen by the kernel side: the raw record (`NlRequest`), what each message
//! in it does (`describe`), how it ended (`reply`), and names for interface indexes and network
//! namespaces (`names`).

pub mod describe;
pub mod names;
pub mod reply;

use serde::Serialize;

/// One rtnetlink send that changes state, as the kernel side recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NlRequest {
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// The socket's network namespace: where the change applies.
    pub netns: u32,
    /// The sender's network namespace.
    pub task_netns: u32,
    /// For a link move by fd: the target namespace, resolved by the kernel side.
    pub target_netns: Option<u32>,
    /// For a veth created with its peer in another namespace: that namespace (kernel side).
    pub peer_netns: Option<u32>,
    /// Kernel address of the socket, to tell sockets apart.
    pub sk: u64,
    /// The sender belongs to a CNI plugin's process tree.
    pub plugin_tree: bool,
    /// sendto(2) rather than sendmsg(2).
    pub sendto: bool,
    #[serde(skip)]
    pub request: Vec<u8>,
    pub request_total: u32,
    pub request_cut: bool,
    #[serde(skip)]
    pub reply: Vec<u8>,
    /// Message from the `netlink:netlink_extack` tracepoint, when the kernel set one.
    pub extack: Option<String>,
}
