//! `cniscope doctor`: what this kernel and this process offer, in plain words, and whether the
//! agent can run.

use std::path::Path;

use serde::Serialize;

use super::{bpfsys, offsets, tracefs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Not needed, or an optional accelerator that is missing.
    Info,
    /// The agent cannot run without it.
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

/// Tracepoints the agent attaches: (category, name, needed).
pub const TRACEPOINTS: &[(&str, &str, bool)] = &[
    ("sched", "sched_process_exec", true),
    ("sched", "sched_process_fork", true),
    ("sched", "sched_process_exit", true),
    ("syscalls", "sys_enter_read", true),
    ("syscalls", "sys_exit_read", true),
    ("syscalls", "sys_enter_write", true),
    ("syscalls", "sys_exit_write", true),
    ("sock", "sock_send_length", false),
    ("netlink", "netlink_extack", false),
];

fn cap_effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

pub fn run_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |name, status, detail: String| {
        out.push(Check {
            name,
            status,
            detail,
        })
    };

    // Privileges.
    let caps = cap_effective().unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    const CAP_KILL: u32 = 5;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let bpf_ok = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    push(
        "privileges",
        if bpf_ok && has(CAP_KILL) {
            Status::Ok
        } else {
            Status::Fail
        },
        format!(
            "euid {}, CAP_BPF {}, CAP_PERFMON {}, CAP_SYS_ADMIN {}, CAP_KILL {}{}",
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            has(CAP_BPF),
            has(CAP_PERFMON),
            has(CAP_SYS_ADMIN),
            has(CAP_KILL),
            if bpf_ok {
                ""
            } else {
                " — run as root (sudo) or grant CAP_BPF+CAP_PERFMON+CAP_KILL"
            }
        ),
    );

    // BTF and the offsets the programs need.
    let btf = offsets::load_btf();
    match &btf {
        Ok(_) => push(
            "btf",
            Status::Ok,
            format!("{} parsed", offsets::btf_path().display()),
        ),
        Err(e) => push("btf", Status::Fail, format!("{e:#}")),
    }

    // tracefs.
    let tfs = match tracefs::find() {
        Some(p) => {
            push("tracefs", Status::Ok, format!("mounted at {}", p.display()));
            Some(p)
        }
        // The agent mounts it when it starts; doing the same here tells whether it can.
        None => match tracefs::ensure_mounted() {
            Ok(p) => {
                push(
                    "tracefs",
                    Status::Ok,
                    format!(
                        "was not mounted; mounted it at {} (as the agent does)",
                        p.display()
                    ),
                );
                Some(p)
            }
            Err(e) => {
                push("tracefs", Status::Fail, format!("{e:#}"));
                None
            }
        },
    };

    if let (Ok(btf), Some(tfs)) = (&btf, &tfs) {
        match offsets::resolve(btf, tfs) {
            Ok(_) => push(
                "offsets",
                Status::Ok,
                "task/mm/netns/signal offsets and tracepoint fields resolved".into(),
            ),
            Err(e) => push("offsets", Status::Fail, format!("{e:#}")),
        }
        for (cat, name, needed) in TRACEPOINTS {
            let ok = tracefs::has_tracepoint(tfs, cat, name);
            let status = match (ok, needed) {
                (true, _) => Status::Ok,
                (false, true) => Status::Fail,
                (false, false) => Status::Info,
            };
            push(
                "tracepoint",
                status,
                format!("{cat}:{name} {}", if ok { "available" } else { "missing" }),
            );
        }
    }

    // Ring buffer maps.
    match bpfsys::create_ringbuf(4096) {
        Ok(_) => push(
            "ringbuf",
            Status::Ok,
            "BPF ring buffer maps can be created".into(),
        ),
        Err(e) => push(
            "ringbuf",
            Status::Fail,
            format!("creating a BPF ring buffer failed: {e}"),
        ),
    }

    // Optional accelerators.
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    push(
        "kprobes",
        Status::Info,
        if kprobes {
            "available (not needed: cniscope uses tracepoints only)".into()
        } else {
            "not available in this kernel (not needed: cniscope uses tracepoints only)".into()
        },
    );
    let fentry = match &btf {
        Ok(btf) => match btf.func_id("do_exit") {
            Some(id) => match bpfsys::probe_fentry(id) {
                Ok(()) => "fentry programs load (not needed)".to_string(),
                Err(e) => format!("fentry programs do not load here ({e}); not needed"),
            },
            None => "no do_exit in BTF to probe fentry with; not needed".into(),
        },
        Err(_) => "cannot probe without BTF".into(),
    };
    push("fentry", Status::Info, fentry);
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    if lockdown.contains("[confidentiality]") {
        push(
            "lockdown",
            Status::Fail,
            "kernel lockdown=confidentiality forbids reading kernel memory from BPF".into(),
        );
    }
    out
}

/// Whether the agent can run given these checks.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

pub fn print(checks: &[Check]) {
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Info => "info",
            Status::Fail => "FAIL",
        };
        println!("{tag}  {:<11} {}", c.name, c.detail);
    }
    if can_run(checks) {
        println!("\nThe agent can run here: `cniscope agent` or `cniscope tui`.");
    } else {
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect();
        println!("\nThe agent cannot run here; fix: {}.", failed.join(", "));
    }
}
