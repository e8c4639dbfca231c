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
    o.tp_extack_msg = tracefs::field_offset(tracefs, "netlink", "netlink_extack", "msg")?;
    o.task_comm = off("task_struct", "comm")?;
    // The syscall number and argument registers by their x86_64 names.
    anyhow::ensure!(
        cfg!(target_arch = "x86_64"),
        "reading the sender's registers is implemented for x86_64 only"
    );
    o.regs_orig_ax = off("pt_regs", "orig_ax")?;
    o.regs_si = off("pt_regs", "si")?;
    o.regs_dx = off("pt_regs", "dx")?;
    o.msghdr_iov = off("user_msghdr", "msg_iov")?;
    o.iovec_base = off("iovec", "iov_base")?;
    o.iovec_len = off("iovec", "iov_len")?;
    anyhow::ensure!(
        o.iovec_len == o.iovec_base + 8,
        "struct iovec members are not adjacent on this kernel"
    );
    o.sock_family = off("sock", "__sk_common.skc_family")?;
    o.sock_protocol = off("sock", "sk_protocol")?;
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

/// Bytes the netlink program reads from one kernel struct with one helper call (its window).
const WINDOW: u32 = cniscope_ebpf::NL_WINDOW as u32;

/// The netlink program reads several fields with one helper call per struct: struct sock (net,
/// receive queue head and length, protocol) and struct sk_buff (data, len). Checks that each
/// group fits the window, 8-byte aligned to its first field, and sets the sock window.
fn check_windows(o: &mut Offsets) -> Result<()> {
    // (first, end) of the bytes each group needs; every 8-byte field aligned to the first.
    let fits = |words: &[u32], extra: &[(u32, u32)]| -> Option<(u32, u32)> {
        let lo = words.iter().copied().min()?;
        let hi = words
            .iter()
            .map(|w| w + 8)
            .chain(extra.iter().map(|&(f, size)| f + size))
            .max()?;
        let aligned = words.iter().all(|w| (w - lo).is_multiple_of(8));
        let inside = extra
            .iter()
            .all(|&(f, size)| f >= lo && f.is_multiple_of(size));
        (aligned && inside && hi - lo <= WINDOW).then_some((lo, hi))
    };
    let (lo, hi) = fits(
        &[o.sock_net, o.sock_rcvq_prev, o.sock_rcvq_qlen],
        &[(o.sock_protocol, 2)],
    )
    .with_context(|| {
        format!(
            "struct sock's net, sk_receive_queue and sk_protocol do not lie within {WINDOW} \
             bytes (8-byte aligned) on this kernel"
        )
    })?;
    o.sock_win_base = lo;
    o.sock_win_len = hi - lo;
    fits(&[o.skb_data, o.skb_len], &[]).with_context(|| {
        format!(
            "struct sk_buff data/len do not lie 8-byte aligned within {WINDOW} bytes on this kernel"
        )
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(net: u32, prev: u32, qlen: u32, protocol: u32) -> Offsets {
        Offsets {
            sock_net: net,
            sock_rcvq_prev: prev,
            sock_rcvq_qlen: qlen,
            sock_protocol: protocol,
            skb_data: 200,
            skb_len: 112,
            ..Offsets::ZERO
        }
    }

    #[test]
    fn the_sock_window_covers_net_receive_queue_and_protocol() {
        // This kernel's layout: net at 48, the receive queue at 176/184, sk_protocol at 532.
        let mut o = sock(48, 176, 184, 532);
        check_windows(&mut o).unwrap();
        assert_eq!((o.sock_win_base, o.sock_win_len), (48, 486));
        // A protocol below the other fields is refused: the window starts at the first word.
        let mut o = sock(48, 176, 184, 40);
        assert!(
            check_windows(&mut o).is_err(),
            "protocol before the first word"
        );
    }

    #[test]
    fn layouts_the_program_cannot_read_in_one_go_are_refused_clearly() {
        let too_far = check_windows(&mut sock(48, 176, 184, 48 + 1100)).unwrap_err();
        assert!(
            too_far.to_string().contains("within 1024 bytes"),
            "{too_far}"
        );
        assert!(
            check_windows(&mut sock(48, 180, 188, 532)).is_err(),
            "misaligned"
        );
        assert!(
            check_windows(&mut sock(48, 176, 184, 533)).is_err(),
            "odd protocol"
        );
        let mut o = sock(48, 176, 184, 532);
        o.skb_len = 2000;
        let skb = check_windows(&mut o).unwrap_err();
        assert!(skb.to_string().contains("sk_buff"), "{skb}");
    }
}
