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
        _pad0: 0,
    })
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
