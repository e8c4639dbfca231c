//! The event ABI shared by the eBPF programs (this crate's `cniscope-ebpf` binary, built for
//! `bpfel-unknown-none`) and userspace (`cniscope`, which depends on this library with the `user`
//! feature).
//!
//! Rules: `#[repr(C)]`, explicit padding, only fixed-size integers and byte arrays, a size assertion
//! for every struct so a layout change fails the build on both sides. Raw bytes are interpreted in
//! exactly one place in userspace (`userspace/src/events/decode.rs`).
#![no_std]

/// Names of maps and programs, shared so neither side spells them twice.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const TRACKED: &str = "TRACKED";
    pub const HELD: &str = "HELD";
    pub const PENDING_IO: &str = "PENDING_IO";
    pub const CONTROL: &str = "CONTROL";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SCRATCH: &str = "SCRATCH";
    pub const OFFSETS: &str = "OFFSETS";

    pub const PROG_EXEC: &str = "cniscope_exec";
    pub const PROG_FORK: &str = "cniscope_fork";
    pub const PROG_EXIT: &str = "cniscope_exit";
    pub const PROG_READ_ENTER: &str = "cniscope_read_enter";
    pub const PROG_READ_EXIT: &str = "cniscope_read_exit";
    pub const PROG_WRITE_ENTER: &str = "cniscope_write_enter";
    pub const PROG_WRITE_EXIT: &str = "cniscope_write_exit";
    // A second copy of the stdio programs. Detaching a tracepoint program removes every
    // instance of that program from the tracepoint, so re-attaching the same program while an
    // old link is still being torn down would silently lose the new attachment; the agent
    // alternates between the two copies instead.
    pub const PROG_READ_ENTER_B: &str = "cniscope_read_enter_b";
    pub const PROG_READ_EXIT_B: &str = "cniscope_read_exit_b";
    pub const PROG_WRITE_ENTER_B: &str = "cniscope_write_enter_b";
    pub const PROG_WRITE_EXIT_B: &str = "cniscope_write_exit_b";
    pub const PROG_NL_SEND: &str = "cniscope_nl_send";
    pub const PROG_NL_EXTACK: &str = "cniscope_nl_extack";
}

/// Bytes of the executable path kept per exec.
pub const MAX_FILENAME: usize = 256;
/// Bytes of the argv block kept per exec (NUL-separated, as the kernel lays it out).
pub const MAX_ARGV: usize = 2048;
/// Bytes of the environment block searched for `CNI_COMMAND=` and sent with a plugin's exec:
/// the *last* `MAX_ENV` bytes, because libcni appends the `CNI_*` variables after the
/// runtime's own environment.
pub const MAX_ENV: usize = 4096;
/// Payload bytes per stdio record.
pub const CHUNK: usize = 4096;
/// Records one read/write may produce; bytes beyond `CHUNK * MAX_CHUNKS_PER_CALL` in a single
/// syscall are counted as cut.
pub const MAX_CHUNKS_PER_CALL: usize = 32;
/// Bytes captured per stream (stdin, stdout, stderr) per plugin process; beyond it bytes are
/// counted, not copied.
pub const STREAM_CAP: u64 = 1 << 20;

/// The needle searched for in the environment, as one little-endian word plus the tail.
pub const CNI_COMMAND_HEAD: [u8; 8] = *b"CNI_COMM";
pub const CNI_COMMAND_TAIL: [u8; 4] = *b"AND=";

// Event kinds (`Header::kind`).
pub const EV_EXEC: u32 = 1;
pub const EV_FORK: u32 = 2;
pub const EV_EXIT: u32 = 3;
pub const EV_STDIO: u32 = 4;
/// The first netlink layout (the extack text in the fixed part): still decoded, for recordings
/// made by earlier agents.
pub const EV_NETLINK_V1: u32 = 5;
pub const EV_NETLINK: u32 = 6;

/// Request bytes kept per rtnetlink send (the first iovec of a sendmsg).
pub const NL_MAX_REQ: usize = 2048;
/// Bytes of the kernel's reply (NLMSG_ERROR with the extended ACK attributes) kept.
pub const NL_MAX_ACK: usize = 512;
/// Bytes of the `netlink:netlink_extack` message kept.
pub const NL_MAX_EXTACK: usize = 128;
/// Bytes the netlink program reads from one kernel struct (or around a sender's msghdr) with one
/// helper call; the loader checks that the fields it needs fit. A power of two (used as a mask).
pub const NL_WINDOW: usize = 1024;
const _: () = assert!(NL_WINDOW.is_power_of_two() && NL_WINDOW >= 8);

// `Header::flags` for netlink events.
/// The request was longer than `NL_MAX_REQ`.
pub const NL_F_REQ_CUT: u32 = 1 << 0;
/// The socket's receive queue ended with a reply; its bytes are in `ack`.
pub const NL_F_REPLY: u32 = 1 << 1;
/// The sender is part of a CNI plugin's process tree.
pub const NL_F_TRACKED: u32 = 1 << 2;
/// `extack` holds a message from the `netlink:netlink_extack` tracepoint.
pub const NL_F_EXTACK: u32 = 1 << 3;
/// The request came through sendto(2) (else sendmsg(2)).
pub const NL_F_SENDTO: u32 = 1 << 4;

/// `Control::nl_scope`: every process on the node.
pub const NL_SCOPE_ALL: u32 = 0;
/// `Control::nl_scope`: only processes of CNI plugin trees.
pub const NL_SCOPE_PLUGINS: u32 = 1;

// Roles of a tracked process.
/// The process's environment has `CNI_COMMAND`: a CNI plugin (or a delegated one).
pub const ROLE_PLUGIN: u32 = 1;
/// A process forked (and possibly exec'd) by a plugin's process tree, without `CNI_COMMAND`.
pub const ROLE_CHILD: u32 = 2;

// `Header::flags` for exec events.
/// The kernel stopped the process (SIGSTOP) until the agent resumes it.
pub const EXEC_F_HELD: u32 = 1 << 0;
/// The environment block was larger than `MAX_ENV`; only its tail was searched and sent.
pub const EXEC_F_ENV_TAIL: u32 = 1 << 1;
/// The argv block was larger than `MAX_ARGV`.
pub const EXEC_F_ARGV_CUT: u32 = 1 << 2;
/// Stdio hooks were not live and holding was not possible (no agent heartbeat or HELD full):
/// stdio may be incomplete.
pub const EXEC_F_UNHELD: u32 = 1 << 3;

// Stdio stream ids (the fd numbers).
pub const FD_STDIN: u32 = 0;
pub const FD_STDOUT: u32 = 1;
pub const FD_STDERR: u32 = 2;

// Indexes into the per-CPU `COUNTERS` array.
pub const C_EXEC_SEEN: u32 = 0;
pub const C_CNI_EXEC: u32 = 1;
pub const C_LOST_EXEC: u32 = 2;
pub const C_LOST_FORK: u32 = 3;
pub const C_LOST_EXIT: u32 = 4;
pub const C_LOST_STDIO: u32 = 5;
pub const C_TRACKED_FULL: u32 = 6;
pub const C_HELD: u32 = 7;
pub const C_UNHELD: u32 = 8;
pub const C_STDIO_BYTES: u32 = 9;
pub const C_CUT_BYTES: u32 = 10;
pub const C_READ_FAULT: u32 = 11;
pub const C_NL_SEEN: u32 = 12;
pub const C_NL_LOST: u32 = 13;
/// A netlink send whose syscall could not be identified (not sendto/sendmsg, e.g. io_uring).
pub const C_NL_UNATTRIBUTED: u32 = 14;
pub const N_COUNTERS: u32 = 15;

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so it keeps counting through suspend.
    pub ts_ns: u64,
    /// Thread id of the process the event is about.
    pub pid: u32,
    /// Process id (thread group id).
    pub tgid: u32,
}
const _: () = assert!(core::mem::size_of::<Header>() == 24);

/// A process started a new program (`sched:sched_process_exec`) and it is a CNI plugin or part
/// of a plugin's process tree.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub hdr: Header,
    /// Parent's tgid (`task->real_parent->tgid`).
    pub ppid: u32,
    /// Network namespace inode of the process (`task->nsproxy->net_ns->ns.inum`).
    pub netns: u32,
    pub cgroup_id: u64,
    pub role: u32,
    pub uid: u32,
    pub filename_len: u32,
    pub argv_len: u32,
    /// Size of the whole argv block (may exceed `argv_len`).
    pub argv_total: u32,
    pub env_len: u32,
    /// Size of the whole environment block.
    pub env_total: u32,
    pub _pad0: u32,
    pub comm: [u8; 16],
    pub filename: [u8; MAX_FILENAME],
    pub argv: [u8; MAX_ARGV],
    /// The last `env_len` bytes of the environment block.
    pub env: [u8; MAX_ENV],
}
const _: () =
    assert!(core::mem::size_of::<ExecEvent>() == 72 + 16 + MAX_FILENAME + MAX_ARGV + MAX_ENV);

/// A tracked process forked a new process (threads are not reported).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    /// `pid`/`tgid` are the child's.
    pub hdr: Header,
    pub parent_tgid: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 32);

/// The last thread of a tracked process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub hdr: Header,
    /// Wait status as `waitpid` reports it: `(code << 8) | signal`, `0x80` for a core dump.
    pub exit_code: u32,
    pub role: u32,
    /// Timestamp of the exec that made the process tracked (0 for a forked child that never
    /// exec'd).
    pub exec_ts_ns: u64,
    /// Bytes captured per stream (stdin, stdout, stderr).
    pub captured: [u64; 3],
    /// Bytes seen but not copied per stream (over `STREAM_CAP`, over the per-call limit, or lost
    /// to a full ring buffer).
    pub cut: [u64; 3],
}
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 88);

/// A chunk of a plugin's stdin (read from fd 0), stdout (written to fd 1) or stderr (fd 2).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StdioEvent {
    pub hdr: Header,
    pub fd: u32,
    pub len: u32,
    /// Offset of this chunk in the stream.
    pub offset: u64,
    pub data: [u8; CHUNK],
}
const _: () = assert!(core::mem::size_of::<StdioEvent>() == 40 + CHUNK);

/// An rtnetlink request that changes state (new/del/set of link, address, route, neighbour,
/// rule, nexthop), seen by `sock:sock_send_length` after the kernel handled it.
///
/// Variable length: the record is `NL_FIXED` bytes of this struct followed by `req_len` request
/// bytes, `ack_len` reply bytes and `extack_len` bytes of extack text (`data` is only the room
/// for them), so a 60-byte route add with its ACK costs ~180 bytes of ring buffer. Every byte
/// counts here: a busy node sends tens of thousands of these a second, and each one written is
/// one more the sender's caches lose.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetlinkEvent {
    pub hdr: Header,
    /// Network namespace of the socket: where the request applies.
    pub netns: u32,
    /// Network namespace of the sending task (may differ: Go plugins open sockets in the pod's
    /// netns and use them from the host's). 0 unless the agent asks for it (`--events`,
    /// recordings).
    pub task_netns: u32,
    pub req_len: u32,
    /// Length of the first iovec (may exceed `req_len`).
    pub req_total: u32,
    pub ack_len: u32,
    pub extack_len: u32,
    /// For a link moved with `IFLA_NET_NS_FD`: the namespace behind that fd, resolved in the
    /// sender's fd table at send time (0 when there is none).
    pub target_netns: u32,
    /// For a veth created with its peer in another namespace (`IFLA_NET_NS_FD` inside
    /// `VETH_INFO_PEER`, as the bridge plugin does): that namespace.
    pub peer_netns: u32,
    /// The socket's kernel address: identifies a socket across requests.
    pub sk: u64,
    pub comm: [u8; 16],
    /// `req_len` request bytes, then `ack_len` bytes of the last message queued on the socket
    /// when the send returned (the ACK or error), then the `netlink:netlink_extack` message
    /// (NUL-terminated, `extack_len` bytes) when there is one.
    pub data: [u8; NL_MAX_REQ + NL_MAX_ACK + NL_MAX_EXTACK],
}
/// Bytes of `NetlinkEvent` before `data`.
pub const NL_FIXED: usize = 80;
const _: () = assert!(
    core::mem::size_of::<NetlinkEvent>() == NL_FIXED + NL_MAX_REQ + NL_MAX_ACK + NL_MAX_EXTACK
);
const _: () = assert!(core::mem::offset_of!(NetlinkEvent, data) == NL_FIXED);
/// Bytes before the request in an `EV_NETLINK_V1` record (the fixed part above plus a
/// `NL_MAX_EXTACK`-byte extack field).
pub const NL_FIXED_V1: usize = NL_FIXED + NL_MAX_EXTACK;

/// Per-process state kept by the programs (`TRACKED` map, keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracked {
    pub role: u32,
    pub _pad0: u32,
    pub exec_ts_ns: u64,
    pub captured: [u64; 3],
    pub cut: [u64; 3],
}
const _: () = assert!(core::mem::size_of::<Tracked>() == 64);

/// A read/write in flight (`PENDING_IO`, keyed by pid_tgid): the user buffer seen at syscall entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingIo {
    pub buf: u64,
    pub fd: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<PendingIo>() == 16);

/// Written by the agent, read by the programs (`CONTROL`, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Control {
    /// 1 while the stdio tracepoints are attached.
    pub hooks_live: u32,
    /// 1 to stop a new plugin at exec (SIGSTOP) when the hooks are not live.
    pub hold_enabled: u32,
    /// Boot-time ns of the agent's last heartbeat; nothing is held when it is older than
    /// `heartbeat_max_age_ns`, so a dead agent never leaves plugins stopped.
    pub heartbeat_ns: u64,
    pub heartbeat_max_age_ns: u64,
    /// `NL_SCOPE_ALL` or `NL_SCOPE_PLUGINS`.
    pub nl_scope: u32,
    /// Unused; keeps the layout free of implicit padding.
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Control>() == 32);

/// Kernel struct offsets (from the running kernel's BTF) and tracepoint field offsets (from
/// tracefs `format` files), filled in by the loader as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// Must be `OFFSETS_MAGIC`; the programs do nothing otherwise.
    pub magic: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_nsproxy: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub nsproxy_net_ns: u32,
    pub net_ns_inum: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub signal_live: u32,
    /// `sched_process_exec`: offset of the `__data_loc char[] filename` field.
    pub tp_exec_filename: u32,
    /// `sys_enter_read`/`sys_enter_write`: offsets of `fd` and `buf`.
    pub tp_enter_fd: u32,
    pub tp_enter_buf: u32,
    /// `sys_exit_read`/`sys_exit_write`: offset of `ret`.
    pub tp_exit_ret: u32,
    /// `sock.__sk_common.skc_family` and `sock.sk_protocol`: the raw `sock_send_length`
    /// tracepoint passes the socket only.
    pub sock_family: u32,
    pub sock_protocol: u32,
    /// The window of struct sock read in one helper call for a netlink send: from
    /// `sock_win_base`, `sock_win_len` bytes, holding net, protocol and the receive queue.
    pub sock_win_base: u32,
    pub sock_win_len: u32,
    /// `netlink:netlink_extack`: the `__data_loc char[] msg` field.
    pub tp_extack_msg: u32,
    /// `task_struct.comm` (16 bytes).
    pub task_comm: u32,
    /// `struct pt_regs` of the sender (from `bpf_task_pt_regs`): syscall number and the
    /// second and third arguments.
    pub regs_orig_ax: u32,
    pub regs_si: u32,
    pub regs_dx: u32,
    /// `struct user_msghdr.msg_iov`, `struct iovec` members.
    pub msghdr_iov: u32,
    pub iovec_base: u32,
    pub iovec_len: u32,
    /// `sock.__sk_common.skc_net.net`, `sock.sk_receive_queue.{prev,qlen}`.
    pub sock_net: u32,
    pub sock_rcvq_prev: u32,
    pub sock_rcvq_qlen: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    /// Syscall numbers of sendto and sendmsg on this architecture.
    pub nr_sendto: u32,
    pub nr_sendmsg: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.{fd,max_fds}`, `file.f_inode`,
    /// `inode.i_ino`: from an fd number to the inode of an nsfs file.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
}
const _: () = assert!(core::mem::size_of::<Offsets>() == 176);

impl Offsets {
    /// All zero (magic unset): what the object carries until the loader fills it in.
    // SAFETY: all-zero is a valid value of a struct of integers.
    pub const ZERO: Offsets = unsafe { core::mem::zeroed() };
}

pub const OFFSETS_MAGIC: u32 = 0x6373_6f70; // "csop"

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and byte arrays with explicit
    // padding, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::PendingIo {}
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::Offsets {}
}
