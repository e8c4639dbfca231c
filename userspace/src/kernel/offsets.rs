//! The `Offsets` global handed to the programs: kernel struct member offsets from the running
//! kernel's BTF and tracepoint field offsets from tracefs. Nothing here is a constant.

use std::path::Path;

use anyhow::{Context, Result};
use cniscope_ebpf::{OFFSETS_MAGIC, Offsets};

use super::{btf::Btf, tracefs};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the kernel's BTF is read from: `CNISCOPE_BTF` overrides the default (for kernels whose
/// BTF ships as a separate file, and for tests of the missing-BTF path).
pub fn btf_path() -> std::path::PathBuf {
    std::env::var_os("CNISCOPE_BTF")
        .map(Into::into)
        .unwrap_or_else(|| VMLINUX_BTF.into())
}

/// Reads and parses the kernel's BTF.
pub fn load_btf() -> Result<Btf> {
    let path = btf_path();
    let data = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the kernel's BTF at {}: cniscope needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2020 are)",
            path.display()
        )
    })?;
    Btf::parse(&data).with_context(|| format!("the BTF at {} could not be parsed", path.display()))
}

/// Everything the programs need to know about this kernel.
pub fn resolve(btf: &Btf, tracefs: &Path) -> Result<Offsets> {
    let o = |s: &str, p: &str| {
        btf.offset_of(s, p)
            .with_context(|| format!("offset of {s}.{p} from BTF"))
    };
    Ok(Offsets {
        magic: OFFSETS_MAGIC,
        task_pid: o("task_struct", "pid")?,
        task_tgid: o("task_struct", "tgid")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_nsproxy: o("task_struct", "nsproxy")?,
        task_mm: o("task_struct", "mm")?,
        task_signal: o("task_struct", "signal")?,
        task_exit_code: o("task_struct", "exit_code")?,
        nsproxy_net_ns: o("nsproxy", "net_ns")?,
        net_ns_inum: o("net", "ns.inum")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        mm_env_start: o("mm_struct", "env_start")?,
        mm_env_end: o("mm_struct", "env_end")?,
        signal_live: o("signal_struct", "live.counter")?,
        tp_exec_filename: tracefs::field_offset(
            tracefs,
            "sched",
            "sched_process_exec",
            "filename",
        )?,
        tp_enter_fd: tracefs::field_offset(tracefs, "syscalls", "sys_enter_read", "fd")?,
        tp_enter_buf: tracefs::field_offset(tracefs, "syscalls", "sys_enter_read", "buf")?,
        tp_exit_ret: tracefs::field_offset(tracefs, "syscalls", "sys_exit_read", "ret")?,
        ..Offsets::ZERO
    })
}

/// Adds what the rtnetlink program needs; an error means netlink capture cannot run on this
/// kernel (the rest still can).
pub fn resolve_netlink(btf: &Btf, tracefs: &Path, o: &mut Offsets) -> Result<()> {
    let off = |s: &str, p: &str| {
        btf.offset_of(s, p)
            .with_context(|| format!("offset of {s}.{p} from BTF"))
    };
    let tp = |f: &str| tracefs::field_offset(tracefs, "sock", "sock_send_length", f);
    o.tp_send_sk = tp("sk")?;
    o.tp_send_family = tp("family")?;
    o.tp_send_protocol = tp("protocol")?;
    o.tp_send_ret = tp("ret")?;
    o.tp_extack_msg = tracefs::field_offset(tracefs, "netlink", "netlink_extack", "msg")?;
    o.task_stack = off("task_struct", "stack")?;
    // x86_64: THREAD_SIZE is 16 KiB, doubled under KASAN (whose functions are then in BTF).
    anyhow::ensure!(
        cfg!(target_arch = "x86_64"),
        "reading the sender's registers is implemented for x86_64 only"
    );
    let kasan = btf.func_id("kasan_check_range").is_some();
    o.thread_size = if kasan { 32 << 10 } else { 16 << 10 };
    o.pt_regs_size = btf.struct_size("pt_regs")?;
    o.regs_orig_ax = off("pt_regs", "orig_ax")?;
    o.regs_si = off("pt_regs", "si")?;
    o.regs_dx = off("pt_regs", "dx")?;
    o.msghdr_iov = off("user_msghdr", "msg_iov")?;
    o.iovec_base = off("iovec", "iov_base")?;
    o.iovec_len = off("iovec", "iov_len")?;
    let regs = [o.regs_dx, o.regs_si, o.regs_orig_ax];
    let (lo, hi) = (regs.iter().min(), regs.iter().max());
    anyhow::ensure!(
        matches!((lo, hi), (Some(l), Some(h)) if h - l <= 24 && regs.iter().all(|r| (r - l) % 8 == 0)),
        "pt_regs dx/si/orig_ax are not within one 32-byte window on this kernel"
    );
    anyhow::ensure!(
        o.iovec_len == o.iovec_base + 8,
        "struct iovec members are not adjacent on this kernel"
    );
    o.sock_net = off("sock", "__sk_common.skc_net.net")?;
    o.sock_rcvq_prev = off("sock", "sk_receive_queue.prev")?;
    o.sock_rcvq_qlen = off("sock", "sk_receive_queue.qlen")?;
    o.skb_data = off("sk_buff", "data")?;
    o.skb_len = off("sk_buff", "len")?;
    check_windows(o)?;
    o.task_files = off("task_struct", "files")?;
    o.files_fdt = off("files_struct", "fdt")?;
    o.fdt_fd = off("fdtable", "fd")?;
    o.fdt_max_fds = off("fdtable", "max_fds")?;
    o.file_inode = off("file", "f_inode")?;
    o.inode_ino = off("inode", "i_ino")?;
    o.nr_sendto = libc::SYS_sendto as u32;
    o.nr_sendmsg = libc::SYS_sendmsg as u32;
    Ok(())
}

/// The netlink program reads several fields with one helper call each from the tracepoint
/// record (sk, family, protocol, ret within 32 bytes of sk), struct sock (net, receive queue
/// head and length) and struct sk_buff (data, len): check that each group fits its window.
fn check_windows(o: &Offsets) -> Result<()> {
    let tp = [
        (o.tp_send_family, 2),
        (o.tp_send_protocol, 2),
        (o.tp_send_ret, 4),
    ];
    anyhow::ensure!(
        tp.iter()
            .all(|&(f, size)| f >= o.tp_send_sk + 8 && f + size <= o.tp_send_sk + 32),
        "sock_send_length's family/protocol/ret are not within 32 bytes after sk on this kernel"
    );
    for (what, fields) in [
        (
            "struct sock net/sk_receive_queue",
            &[o.sock_net, o.sock_rcvq_prev, o.sock_rcvq_qlen][..],
        ),
        ("struct sk_buff data/len", &[o.skb_data, o.skb_len][..]),
    ] {
        let lo = fields.iter().min().copied().unwrap_or(0);
        let hi = fields.iter().max().copied().unwrap_or(0);
        anyhow::ensure!(
            hi + 8 - lo <= 256 && fields.iter().all(|f| (f - lo) % 8 == 0),
            "{what} do not lie 8-byte aligned within 256 bytes on this kernel"
        );
    }
    Ok(())
}

/// The programs read `fd`/`buf` of read and write, and `ret` of both exits, at one set of
/// offsets: check that the kernel lays them out alike.
pub fn check_io_layout(tracefs: &Path, o: &Offsets) -> Result<()> {
    for (cat, name, field, want) in [
        ("syscalls", "sys_enter_write", "fd", o.tp_enter_fd),
        ("syscalls", "sys_enter_write", "buf", o.tp_enter_buf),
        ("syscalls", "sys_exit_write", "ret", o.tp_exit_ret),
    ] {
        let got = tracefs::field_offset(tracefs, cat, name, field)?;
        anyhow::ensure!(
            got == want,
            "{cat}:{name} has `{field}` at offset {got}, sys_*_read at {want}; this kernel's syscall \
             tracepoint layout is not supported"
        );
    }
    Ok(())
}
