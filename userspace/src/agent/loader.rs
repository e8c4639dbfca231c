//! Loading the programs: checks with clear messages, globals from BTF, the verifier's log when a
//! program is rejected, and attaching the always-on tracepoints.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Program, ProgramError, RawTracePoint, TracePoint,
        raw_trace_point::{RawTracePointLink, RawTracePointLinkId},
        trace_point::{TracePointLink, TracePointLinkId},
    },
};
use cniscope_ebpf::{Offsets, names};

use crate::kernel::{doctor, offsets, tracefs};

/// The compiled programs, built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cniscope-ebpf"));

/// Tracepoint programs: (program name, category, tracepoint).
pub const ALWAYS_ON: &[(&str, &str, &str)] = &[
    (names::PROG_EXEC, "sched", "sched_process_exec"),
    (names::PROG_EXIT, "sched", "sched_process_exit"),
];
pub const NETLINK: &[(&str, &str, &str)] = &[(names::PROG_NL_EXTACK, "netlink", "netlink_extack")];
/// Raw tracepoint programs: (program name, tracepoint). A raw tracepoint hands the program the
/// tracepoint's arguments as they are; no trace record is built for each event.
pub const RAW: &[(&str, &str)] = &[(names::PROG_FORK, "sched_process_fork")];
/// The rtnetlink send program: (program name, raw tracepoint).
pub const NETLINK_RAW: (&str, &str) = (names::PROG_NL_SEND, "sock_send_length");
/// The stdio programs, in two interchangeable copies (see `names::PROG_READ_ENTER_B`).
pub const STDIO: [&[(&str, &str, &str)]; 2] = [
    &[
        (names::PROG_READ_EXIT, "syscalls", "sys_exit_read"),
        (names::PROG_WRITE_EXIT, "syscalls", "sys_exit_write"),
        (names::PROG_READ_ENTER, "syscalls", "sys_enter_read"),
        (names::PROG_WRITE_ENTER, "syscalls", "sys_enter_write"),
    ],
    &[
        (names::PROG_READ_EXIT_B, "syscalls", "sys_exit_read"),
        (names::PROG_WRITE_EXIT_B, "syscalls", "sys_exit_write"),
        (names::PROG_READ_ENTER_B, "syscalls", "sys_enter_read"),
        (names::PROG_WRITE_ENTER_B, "syscalls", "sys_enter_write"),
    ],
];

/// Everything checked before loading: privileges, BTF, tracefs (mounted when missing), offsets.
/// The last value says whether rtnetlink capture can run here (else why not).
pub fn preflight() -> Result<(PathBuf, Offsets, Result<()>)> {
    let checks = doctor::run_checks();
    if let Some(c) = checks
        .iter()
        .find(|c| c.name == "privileges" && c.status == doctor::Status::Fail)
    {
        bail!("cniscope agent needs root: {}", c.detail);
    }
    // Optional accelerators, probed once and said in one line: everything works without them.
    let detail = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .map(|c| c.detail.clone())
            .unwrap_or_default()
    };
    tracing::info!(
        "using tracepoints only; kprobes: {}; fentry: {}",
        detail("kprobes"),
        detail("fentry")
    );
    let btf = offsets::load_btf()?;
    let tfs = tracefs::ensure_mounted()?;
    let mut offs = offsets::resolve(&btf, &tfs)?;
    offsets::check_io_layout(&tfs, &offs)?;
    let nl = offsets::resolve_netlink(&btf, &tfs, &mut offs);
    Ok((tfs, offs, nl))
}

/// How much of the verifier's log the error for a refused program carries.
#[derive(Clone, Copy)]
enum Refusal {
    /// All of it: the agent cannot run without the program.
    WholeLog,
    /// One line, the reason; the whole log goes to the debug log (`CNISCOPE_LOG=debug`). For
    /// programs the agent runs without, whose refusal becomes a warning.
    Reason,
}

fn explain(name: &str, e: ProgramError, refusal: Refusal) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match refusal {
            Refusal::WholeLog => anyhow::anyhow!(
                "the kernel's verifier rejected program {name} ({io_error}). Verifier log:\n{verifier_log}"
            ),
            Refusal::Reason => {
                let log = verifier_log.to_string();
                tracing::debug!("verifier log of {name}:\n{log}");
                anyhow::anyhow!(
                    "the kernel's verifier rejected program {name} ({io_error}): {} \
                     (CNISCOPE_LOG=debug shows its whole log)",
                    verifier_reason(&log)
                )
            }
        },
        other => anyhow::Error::new(other).context(format!("loading program {name}")),
    }
}

/// Loads the object and every program (running the verifier on each). The rtnetlink programs
/// are loaded only when `netlink` says so, and apart: they read the sender's `task_struct` and
/// registers through BTF pointers (`bpf_get_current_task_btf`, `bpf_task_pt_regs`), which older
/// kernels' verifiers refuse. That refusal (the second value) turns rtnetlink capture off; the
/// rest of the agent runs as before.
pub fn load(
    offs: &Offsets,
    ringbuf_bytes: u32,
    netlink: bool,
) -> Result<(Ebpf, Option<anyhow::Error>)> {
    let mut ebpf = EbpfLoader::new()
        .override_global(names::OFFSETS, offs, true)
        .map_max_entries(names::EVENTS, ringbuf_bytes)
        .load(PROGRAMS)
        .context("loading cniscope's eBPF object (maps and BTF)")?;
    for (name, _, _) in ALWAYS_ON.iter().chain(STDIO[0]).chain(STDIO[1]) {
        let p: &mut TracePoint = program(&mut ebpf, name)?;
        p.load().map_err(|e| explain(name, e, Refusal::WholeLog))?;
    }
    for (name, _) in RAW {
        let p: &mut RawTracePoint = program(&mut ebpf, name)?;
        p.load().map_err(|e| explain(name, e, Refusal::WholeLog))?;
    }
    let refused = if netlink {
        load_netlink(&mut ebpf).err()
    } else {
        None
    };
    Ok((ebpf, refused))
}

/// Loads the rtnetlink programs. A refusal comes back as one line, the verifier's reason.
fn load_netlink(ebpf: &mut Ebpf) -> Result<()> {
    for (name, _, _) in NETLINK {
        let p: &mut TracePoint = program(ebpf, name)?;
        p.load().map_err(|e| explain(name, e, Refusal::Reason))?;
    }
    let name = NETLINK_RAW.0;
    let p: &mut RawTracePoint = program(ebpf, name)?;
    p.load().map_err(|e| explain(name, e, Refusal::Reason))
}

/// The verifier's reason for refusing a program: the last line of its log before the statistics
/// it appends (verification time, stack depth, instructions processed).
fn verifier_reason(log: &str) -> &str {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && ![
                    "verification time",
                    "stack depth",
                    "processed ",
                    "max_states",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .unwrap_or("(no verifier log)")
}

/// Attaches exec, fork and exit (cheap scheduler tracepoints, off the syscall path). The
/// rtnetlink programs (`sock:sock_send_length` is not a syscall tracepoint either) are attached
/// by `Hooks::attach_netlink`, which can also detach them while the agent runs.
pub fn attach_always_on(ebpf: &mut Ebpf) -> Result<()> {
    // Fork first, so a plugin's children are followed from its first exec on.
    // The programs keep these links (dropped with the object).
    for (name, tp) in RAW {
        attach_raw(ebpf, name, tp)?;
    }
    for (name, cat, tp) in ALWAYS_ON {
        attach_tracepoint(ebpf, name, cat, tp)?;
    }
    Ok(())
}

/// The loaded program `name` as its type (`TracePoint`, `RawTracePoint`).
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} is missing from the object"))?
        .try_into()?)
}

/// Attaches tracepoint program `name` to `cat:tp`; the program keeps the link unless the
/// caller takes it (see `take_tracepoint`).
fn attach_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    cat: &str,
    tp: &str,
) -> Result<(&'a mut TracePoint, TracePointLinkId)> {
    let p: &mut TracePoint = program(ebpf, name)?;
    let id = p
        .attach(cat, tp)
        .with_context(|| format!("attaching {name} to {cat}:{tp}"))?;
    Ok((p, id))
}

/// Attaches raw tracepoint program `name` to `tp` (see `attach_tracepoint`).
fn attach_raw<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    tp: &str,
) -> Result<(&'a mut RawTracePoint, RawTracePointLinkId)> {
    let p: &mut RawTracePoint = program(ebpf, name)?;
    let id = p
        .attach(tp)
        .with_context(|| format!("attaching {name} to raw tracepoint {tp}"))?;
    Ok((p, id))
}

/// Attaches tracepoint program `name` to `cat:tp` and hands the link to the caller: dropping
/// it detaches the program.
pub fn take_tracepoint(ebpf: &mut Ebpf, name: &str, cat: &str, tp: &str) -> Result<TracePointLink> {
    let (p, id) = attach_tracepoint(ebpf, name, cat, tp)?;
    Ok(p.take_link(id)?)
}

/// Attaches raw tracepoint program `name` to `tp` and hands the link to the caller.
pub fn take_raw(ebpf: &mut Ebpf, name: &str, tp: &str) -> Result<RawTracePointLink> {
    let (p, id) = attach_raw(ebpf, name, tp)?;
    Ok(p.take_link(id)?)
}

#[cfg(test)]
mod tests {
    use super::verifier_reason;

    #[test]
    fn the_verifier_reason_is_its_last_line_before_the_statistics() {
        let log = "0: R1=ctx() R10=fp0\n\
                   5: (79) r6 = *(u64 *)(r1 +0)          ; R1=ctx() R6=scalar()\n\
                   access beyond the end of member comm (mend:1768) in struct task_struct with off 1764 size 8\n\
                   verification time 10513 usec\n\
                   stack depth 152\n\
                   processed 1600 insns (limit 1000000) max_states_per_insn 3 total_states 62\n\n";
        assert_eq!(
            verifier_reason(log),
            "access beyond the end of member comm (mend:1768) in struct task_struct with off 1764 size 8"
        );
        assert_eq!(verifier_reason(""), "(no verifier log)");
        assert_eq!(
            verifier_reason("R1 invalid mem access 'scalar'\n"),
            "R1 invalid mem access 'scalar'"
        );
    }
}
