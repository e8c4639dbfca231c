use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_user as uread,
        generated::{
            bpf_probe_read_kernel as raw_read_kernel, bpf_probe_read_kernel_str,
            bpf_probe_read_user, bpf_send_signal, bpf_task_pt_regs,
        },
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use cniscope_ebpf::*;

const SIGSTOP: u32 = 19;
/// Submit without waking the reader: the agent drains on exec/exit records and on a short timer,
/// which saves a wake-up per stdio chunk or netlink change.
const NO_WAKEUP: u64 = 1;
/// Exec and exit records always wake the reader: a held plugin waits for its exec record, and
/// the default adaptive wake-up is skipped when unread no-wake-up records precede it.
const FORCE_WAKEUP: u64 = 2;

#[unsafe(no_mangle)]
static OFFSETS: Global<Offsets> = Global::new(Offsets::ZERO);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map(name = "TRACKED")]
static TRACKED: LruHashMap<u32, Tracked> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "HELD")]
static HELD: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

#[map(name = "PENDING_IO")]
static PENDING_IO: LruHashMap<u64, PendingIo> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "CONTROL")]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(N_COUNTERS, 0);

/// Room to search the environment without touching the ring buffer for non-CNI execs. Twice
/// `MAX_ENV` so the verifier accepts "copy n bytes, then zero from n to MAX_ENV" with variable n.
const SCRATCH_LEN: usize = 2 * MAX_ENV + 16;
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Never written: a source of zeros.
#[map(name = "ZEROS")]
static ZEROS: Array<[u8; MAX_ENV]> = Array::with_max_entries(1, 0);

#[inline(always)]
fn count(idx: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for these tracepoints.
        unsafe { *p += n };
    }
}

/// Loads the `T` at `base + off`, where `base` is a BTF-typed pointer (from
/// `bpf_get_current_task_btf`, `bpf_task_pt_regs`, or a pointer member loaded through one) and
/// `off` a member's offset from the frozen read-only `OFFSETS`: the verifier knows both, checks
/// the load against the kernel's BTF and turns it into a plain load that reads zero if the
/// memory faults. No helper call.
///
/// # Safety
/// `base` must be such a pointer and `off` the offset of a `T`-sized member of its type; the
/// verifier refuses the program otherwise.
#[inline(always)]
unsafe fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: see above; the verifier checks the access.
    unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) }
}

/// Reads a `T` at `base + off` from kernel memory; zero when unreadable.
#[inline(always)]
unsafe fn kread<T: Copy + Default>(base: u64, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// The offsets, by reference: each field is loaded where a program uses it instead of all of
/// them being copied to its stack at entry. The pointer goes through a volatile read so that the
/// compiler cannot fold the object's all-zero initial value into the loads.
#[inline(always)]
fn offsets() -> Option<&'static Offsets> {
    let p = &OFFSETS as *const Global<Offsets> as *const Offsets;
    // SAFETY: reading a local; `Global<T>` is a transparent wrapper around the `T`.
    let o: &'static Offsets = unsafe { &*core::ptr::read_volatile(&p) };
    (o.magic == OFFSETS_MAGIC).then_some(o)
}

// ---------------------------------------------------------------------------------------------
// exec

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn cniscope_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

/// Searches the scratch window for a variable that starts with `CNI_COMMAND=`. Bytes past the
/// copied environment are zero. When `tail` is set the window starts in the middle of the block,
/// so offset 0 is not a variable start.
///
/// Written without data-dependent branches and over a constant length: the verifier walks every
/// iteration, and a branch per byte leaves it thousands of pending states ("sequence of jumps is
/// too complex") or minutes of work. Two shift registers hold the last 13 bytes of the stream.
#[inline(always)]
fn has_cni_command(buf: &[u8; SCRATCH_LEN], tail: bool) -> bool {
    // "COMMAND=" and "\0CNI_" as big-endian words of the stream.
    const LO: u64 = u64::from_be_bytes(*b"COMMAND=");
    const HI: u64 = u64::from_be_bytes([0, 0, 0, 0, b'C', b'N', b'I', b'_']);
    const HI_MASK: u64 = 0xff_ffff_ffff;
    let mut lo: u64 = if tail { u64::MAX } else { 0 };
    let mut hi: u64 = lo;
    let mut found: u64 = 0;
    let mut i = 0usize;
    while i < MAX_ENV {
        hi = (hi << 8) | (lo >> 56);
        lo = (lo << 8) | buf[i] as u64;
        let d = (lo ^ LO) | ((hi & HI_MASK) ^ HI);
        // 1 when d == 0, without a branch.
        found |= ((d | d.wrapping_neg()) >> 63) ^ 1;
        i += 1;
    }
    found != 0
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets().ok_or(0i64)?;
    count(C_EXEC_SEEN, 1);
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let pid = id as u32;
    // SAFETY: the helper returns the current task pointer; it is only dereferenced through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = unsafe { kread(task, off.task_mm) };
    if mm == 0 {
        return Ok(());
    }
    let env_start: u64 = unsafe { kread(mm, off.mm_env_start) };
    let env_end: u64 = unsafe { kread(mm, off.mm_env_end) };
    let env_total = env_end.saturating_sub(env_start);
    let tail = env_total > MAX_ENV as u64;
    let env_len = if tail { MAX_ENV as u64 } else { env_total };

    let scratch = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch owned by this program for its run.
    let scratch = unsafe { &mut *scratch };
    let mut found = false;
    if env_len >= 12 {
        let n = (env_len as u32) & (MAX_ENV as u32 * 2 - 1);
        if n as usize <= MAX_ENV {
            // SAFETY: n <= MAX_ENV < scratch size; the helper validates the user address.
            let r = unsafe {
                bpf_probe_read_user(
                    scratch.as_mut_ptr() as *mut c_void,
                    n,
                    (env_end - env_len) as *const c_void,
                )
            };
            let zeros = ZEROS.get_ptr(0);
            let z = (MAX_ENV as u32 - n) & (MAX_ENV as u32 * 2 - 1);
            if r == 0
                && let Some(zeros) = zeros
                && z as usize <= MAX_ENV
            {
                // SAFETY: zero the rest of the window so stale bytes of an earlier exec cannot
                // match; n + z == MAX_ENV < SCRATCH_LEN.
                let zr = unsafe {
                    raw_read_kernel(
                        scratch.as_mut_ptr().add(n as usize) as *mut c_void,
                        z,
                        zeros as *const c_void,
                    )
                };
                found = zr == 0 && has_cni_command(scratch, tail);
            } else {
                count(C_READ_FAULT, 1);
            }
        }
    }

    let prev = unsafe { TRACKED.get(&tgid) }.copied();
    if !found && prev.is_none() {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let role = if found { ROLE_PLUGIN } else { ROLE_CHILD };
    let t = Tracked {
        role,
        exec_ts_ns: now,
        ..Tracked::default()
    };
    if TRACKED.insert(&tgid, &t, 0).is_err() {
        count(C_TRACKED_FULL, 1);
    }

    let mut flags = 0u32;
    if found {
        count(C_CNI_EXEC, 1);
        if tail {
            flags |= EXEC_F_ENV_TAIL;
        }
        let ctl = CONTROL.get(0).copied().unwrap_or_default();
        if ctl.hooks_live == 0 {
            let fresh = now.saturating_sub(ctl.heartbeat_ns) < ctl.heartbeat_max_age_ns;
            if ctl.hold_enabled == 1 && fresh && HELD.insert(&tgid, &now, 0).is_ok() {
                // Stop before the submit: the agent may resume the process as soon as it reads
                // the event, and a SIGCONT must never overtake the SIGSTOP.
                // SAFETY: signals the current process, which is in exec and not a kernel thread.
                unsafe { bpf_send_signal(SIGSTOP) };
                flags |= EXEC_F_HELD;
                count(C_HELD, 1);
            } else {
                flags |= EXEC_F_UNHELD;
                count(C_UNHELD, 1);
            }
        }
    }

    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(C_LOST_EXEC, 1);
        return Ok(());
    };
    // SAFETY: the entry is a fresh ring-buffer reservation of size_of::<ExecEvent>(); every
    // field written below is plain data.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.hdr = Header {
        kind: EV_EXEC,
        flags,
        ts_ns: now,
        pid,
        tgid,
    };
    let parent: u64 = unsafe { kread(task, off.task_real_parent) };
    ev.ppid = unsafe { kread::<u32>(parent, off.task_tgid) };
    let nsproxy: u64 = unsafe { kread(task, off.task_nsproxy) };
    let net: u64 = unsafe { kread(nsproxy, off.nsproxy_net_ns) };
    ev.netns = unsafe { kread::<u32>(net, off.net_ns_inum) };
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.role = role;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev._pad0 = 0;
    ev.comm = bpf_get_current_comm().unwrap_or_default();

    // Executable path, from the tracepoint's __data_loc field.
    let loc: u32 = unsafe { ctx.read_at::<u32>(off.tp_exec_filename as usize) }.unwrap_or(0);
    let fname = (ctx_ptr(ctx) + (loc & 0xffff) as u64) as *const c_void;
    // SAFETY: the destination is the event's own array; the helper bounds the copy.
    let r = unsafe {
        bpf_probe_read_kernel_str(
            ev.filename.as_mut_ptr() as *mut c_void,
            MAX_FILENAME as u32,
            fname,
        )
    };
    ev.filename_len = if r > 0 { (r - 1) as u32 } else { 0 };

    let arg_start: u64 = unsafe { kread(mm, off.mm_arg_start) };
    let arg_end: u64 = unsafe { kread(mm, off.mm_arg_end) };
    let argv_total = arg_end.saturating_sub(arg_start);
    let mut argv_len = argv_total;
    if argv_len > MAX_ARGV as u64 {
        argv_len = MAX_ARGV as u64;
        ev.hdr.flags |= EXEC_F_ARGV_CUT;
    }
    ev.argv_total = argv_total as u32;
    let a = (argv_len as u32) & (MAX_ARGV as u32 * 2 - 1);
    if a > 0 && a as usize <= MAX_ARGV {
        // SAFETY: a <= MAX_ARGV, the size of the destination.
        let r = unsafe {
            bpf_probe_read_user(
                ev.argv.as_mut_ptr() as *mut c_void,
                a,
                arg_start as *const c_void,
            )
        };
        ev.argv_len = if r == 0 { a } else { 0 };
    } else {
        ev.argv_len = 0;
    }

    ev.env_total = env_total as u32;
    ev.env_len = 0;
    if found {
        let n = (env_len as u32) & (MAX_ENV as u32 * 2 - 1);
        if n as usize <= MAX_ENV {
            // SAFETY: copies the scratch window searched above; n <= MAX_ENV on both sides.
            let r = unsafe {
                raw_read_kernel(
                    ev.env.as_mut_ptr() as *mut c_void,
                    n,
                    scratch.as_ptr() as *const c_void,
                )
            };
            if r == 0 {
                ev.env_len = n;
            }
        }
    }
    entry.submit(FORCE_WAKEUP);
    Ok(())
}

#[inline(always)]
fn ctx_ptr(ctx: &TracePointContext) -> u64 {
    use aya_ebpf::EbpfContext;
    ctx.as_ptr() as u64
}

// ---------------------------------------------------------------------------------------------
// fork

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn cniscope_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if unsafe { TRACKED.get(&parent_tgid) }.is_none() {
        return Ok(());
    }
    let off = offsets().ok_or(0i64)?;
    let child: u64 = ctx.arg::<u64>(1);
    let child_pid: u32 = unsafe { kread(child, off.task_pid) };
    let child_tgid: u32 = unsafe { kread(child, off.task_tgid) };
    if child_pid != child_tgid || child_pid == 0 {
        return Ok(()); // a new thread, not a new process
    }
    let t = Tracked {
        role: ROLE_CHILD,
        ..Tracked::default()
    };
    if TRACKED.insert(&child_tgid, &t, 0).is_err() {
        count(C_TRACKED_FULL, 1);
    }
    let ev = ForkEvent {
        hdr: Header {
            kind: EV_FORK,
            flags: 0,
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid: child_pid,
            tgid: child_tgid,
        },
        parent_tgid,
        _pad0: 0,
    };
    if EVENTS.output::<ForkEvent>(&ev, NO_WAKEUP).is_err() {
        count(C_LOST_FORK, 1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// exit

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn cniscope_exit(_ctx: TracePointContext) -> u32 {
    let _ = try_exit();
    0
}

fn try_exit() -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(t) = (unsafe { TRACKED.get(&tgid) }).copied() else {
        return Ok(());
    };
    let off = offsets().ok_or(0i64)?;
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = unsafe { kread(task, off.task_signal) };
    let live: i32 = unsafe { kread(signal, off.signal_live) };
    if live != 0 {
        return Ok(()); // other threads of the process are still running
    }
    // Threads that exit together may all see live == 0: the one that removes the entry reports.
    if TRACKED.remove(&tgid).is_err() {
        return Ok(());
    }
    let _ = HELD.remove(&tgid);
    let ev = ExitEvent {
        hdr: Header {
            kind: EV_EXIT,
            flags: 0,
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid: id as u32,
            tgid,
        },
        exit_code: unsafe { kread::<u32>(task, off.task_exit_code) },
        role: t.role,
        exec_ts_ns: t.exec_ts_ns,
        captured: t.captured,
        cut: t.cut,
    };
    if EVENTS.output::<ExitEvent>(&ev, FORCE_WAKEUP).is_err() {
        count(C_LOST_EXIT, 1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// stdio (attached only while plugins run)

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn cniscope_read_enter(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, true);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn cniscope_write_enter(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn cniscope_read_exit(ctx: TracePointContext) -> u32 {
    io_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn cniscope_write_exit(ctx: TracePointContext) -> u32 {
    io_exit(&ctx);
    0
}

// The second copy (see `names::PROG_READ_ENTER_B`).
#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn cniscope_read_enter_b(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, true);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn cniscope_write_enter_b(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn cniscope_read_exit_b(ctx: TracePointContext) -> u32 {
    io_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn cniscope_write_exit_b(ctx: TracePointContext) -> u32 {
    io_exit(&ctx);
    0
}

#[inline(always)]
fn io_enter(ctx: &TracePointContext, read: bool) {
    let Some(off) = offsets() else { return };
    let fd = unsafe { ctx.read_at::<u64>(off.tp_enter_fd as usize) }.unwrap_or(u64::MAX);
    let wanted = if read { fd == 0 } else { fd == 1 || fd == 2 };
    if !wanted {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    match unsafe { TRACKED.get(&tgid) } {
        Some(t) if t.role == ROLE_PLUGIN => {}
        _ => return,
    }
    let buf = unsafe { ctx.read_at::<u64>(off.tp_enter_buf as usize) }.unwrap_or(0);
    let p = PendingIo {
        buf,
        fd: fd as u32,
        _pad0: 0,
    };
    let _ = PENDING_IO.insert(&id, &p, 0);
}

#[inline(always)]
fn io_exit(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = (unsafe { PENDING_IO.get(&id) }).copied() else {
        return;
    };
    let _ = PENDING_IO.remove(&id);
    let Some(off) = offsets() else { return };
    let ret = unsafe { ctx.read_at::<i64>(off.tp_exit_ret as usize) }.unwrap_or(0);
    if ret <= 0 {
        return;
    }
    emit_chunks(id, p.fd, p.buf, ret as u64);
}

#[inline(always)]
fn emit_chunks(id: u64, fd: u32, buf: u64, total: u64) {
    let tgid = (id >> 32) as u32;
    let fdi = (fd & 3) as usize;
    if fdi > 2 {
        return;
    }
    let Some(t) = TRACKED.get_ptr_mut(&tgid) else {
        return;
    };
    // SAFETY: map value pointer valid for this program run; concurrent writers to one stream
    // of one process are not expected (a plugin reads stdin and writes stdout from one thread at
    // a time), and a lost update only skews a counter.
    let t = unsafe { &mut *t };
    let mut done: u64 = 0;
    let mut i = 0;
    while i < MAX_CHUNKS_PER_CALL {
        i += 1;
        if done >= total {
            break;
        }
        let captured = t.captured[fdi];
        if captured >= STREAM_CAP {
            break;
        }
        let mut n = total - done;
        if n > CHUNK as u64 {
            n = CHUNK as u64;
        }
        if captured + n > STREAM_CAP {
            n = STREAM_CAP - captured;
        }
        let Some(mut entry) = EVENTS.reserve::<StdioEvent>(0) else {
            count(C_LOST_STDIO, 1);
            break;
        };
        // SAFETY: fresh reservation of size_of::<StdioEvent>().
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        let n32 = (n as u32) & (CHUNK as u32 * 2 - 1);
        if n32 == 0 || n32 as usize > CHUNK {
            entry.discard(0);
            break;
        }
        // SAFETY: n32 <= CHUNK, the size of `data`; the helper validates the user address.
        let r = unsafe {
            bpf_probe_read_user(
                ev.data.as_mut_ptr() as *mut c_void,
                n32,
                (buf + done) as *const c_void,
            )
        };
        if r != 0 {
            count(C_READ_FAULT, 1);
            entry.discard(0);
            break;
        }
        ev.hdr = Header {
            kind: EV_STDIO,
            flags: 0,
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid: id as u32,
            tgid,
        };
        ev.fd = fdi as u32;
        ev.len = n32;
        ev.offset = captured;
        entry.submit(NO_WAKEUP);
        t.captured[fdi] = captured + n32 as u64;
        done += n32 as u64;
        count(C_STDIO_BYTES, n32 as u64);
    }
    if done < total {
        t.cut[fdi] += total - done;
        count(C_CUT_BYTES, total - done);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// ---------------------------------------------------------------------------------------------
// rtnetlink (always attached): `sock:sock_send_length` fires after every socket send; only
// NETLINK_ROUTE sends that change state go further. rtnetlink handles a request synchronously
// inside the send, so the ACK or error is already queued on the socket when this runs.

const AF_NETLINK: u16 = 16;
const NETLINK_ROUTE: u16 = 0;

#[map(name = "NL_EVENT")]
static NL_EVENT: PerCpuArray<NetlinkEvent> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "NL_SCRATCH")]
static NL_SCRATCH: PerCpuArray<[u8; NL_MAX_EXTACK]> = PerCpuArray::with_max_entries(1, 0);

/// The last extack message set while a task's request was handled, keyed by pid_tgid.
#[map(name = "EXTACK")]
static EXTACK: LruHashMap<u64, [u8; NL_MAX_EXTACK]> = LruHashMap::with_max_entries(1024, 0);

#[tracepoint(category = "netlink", name = "netlink_extack")]
pub fn cniscope_nl_extack(ctx: TracePointContext) -> u32 {
    let _ = try_nl_extack(&ctx);
    0
}

fn try_nl_extack(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets().ok_or(0i64)?;
    let loc: u32 =
        unsafe { ctx.read_at::<u32>(off.tp_extack_msg as usize) }.map_err(|e| e as i64)?;
    let msg = (ctx_ptr(ctx) + (loc & 0xffff) as u64) as *const c_void;
    let buf = NL_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch; the helper bounds the copy to its size.
    let buf = unsafe { &mut *buf };
    let r = unsafe {
        bpf_probe_read_kernel_str(buf.as_mut_ptr() as *mut c_void, NL_MAX_EXTACK as u32, msg)
    };
    if r > 0 {
        let _ = EXTACK.insert(&bpf_get_current_pid_tgid(), buf, 0);
    }
    Ok(())
}

/// Message types that change state: RTM_{NEW,DEL,SET}{LINK,ADDR,ROUTE,NEIGH,RULE,NEXTHOP}.
/// In each group of four the third is GET.
#[inline(always)]
fn is_change(t: u16) -> bool {
    let group = (16..36).contains(&t) || (104..108).contains(&t);
    group && (t & 3) != 2
}

const IFLA_NET_NS_FD: u16 = 28;

const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

/// Finds attribute `want` among the attributes in `buf[start..end]` (user memory); returns the
/// offset and length of the whole attribute.
#[inline(always)]
fn find_attr(buf: u64, start: u64, end: u64, want: u16) -> Option<(u64, u64)> {
    let mut o = start;
    let mut i = 0;
    while i < 16 {
        i += 1;
        if o + 4 > end {
            return None;
        }
        // SAFETY: user memory read through the helper.
        let hdr: u32 = unsafe { uread((buf + o) as *const u32) }.ok()?;
        let alen = (hdr & 0xffff) as u64;
        let aty = ((hdr >> 16) & 0x3fff) as u16;
        if alen < 4 || o + alen > end {
            return None;
        }
        if aty == want {
            return Some((o, alen));
        }
        o += (alen + 3) & !3;
    }
    None
}

/// The namespace behind an `IFLA_NET_NS_FD` attribute in `buf[start..end]`.
#[inline(always)]
fn ns_fd_target(off: &Offsets, task: u64, buf: u64, start: u64, end: u64) -> u32 {
    match find_attr(buf, start, end, IFLA_NET_NS_FD) {
        Some((o, l)) if l >= 8 => {
            let fd: u32 = unsafe { uread((buf + o + 4) as *const u32) }.unwrap_or(u32::MAX);
            netns_of_fd(off, task, fd)
        }
        _ => 0,
    }
}

/// For RTM_NEWLINK/SETLINK: the namespaces behind `IFLA_NET_NS_FD` at the top level (a move)
/// and inside a veth peer (created elsewhere), looked up in the sender's fd table now — the
/// sender may close the fd or exit before userspace could look.
#[inline(always)]
fn link_move_targets(off: &Offsets, task: u64, buf: u64, len: u64) -> (u32, u32) {
    // nlmsghdr (16) + ifinfomsg (16), then attributes.
    let top = ns_fd_target(off, task, buf, 32, len);
    let Some((li, lil)) = find_attr(buf, 32, len, IFLA_LINKINFO) else {
        return (top, 0);
    };
    let Some((d, dl)) = find_attr(buf, li + 4, li + lil, IFLA_INFO_DATA) else {
        return (top, 0);
    };
    let Some((p, pl)) = find_attr(buf, d + 4, d + dl, VETH_INFO_PEER) else {
        return (top, 0);
    };
    // The peer is an ifinfomsg (16 bytes) followed by its own attributes.
    (top, ns_fd_target(off, task, buf, p + 4 + 16, p + pl))
}

#[inline(always)]
fn netns_of_fd(off: &Offsets, task: u64, fd: u32) -> u32 {
    let files: u64 = unsafe { kread(task, off.task_files) };
    let fdt: u64 = unsafe { kread(files, off.files_fdt) };
    let max: u32 = unsafe { kread(fdt, off.fdt_max_fds) };
    if fd >= max {
        return 0;
    }
    let arr: u64 = unsafe { kread(fdt, off.fdt_fd) };
    let file: u64 = unsafe { kread(arr + fd as u64 * 8, 0) };
    let inode: u64 = unsafe { kread(file, off.file_inode) };
    let ino: u64 = unsafe { kread(inode, off.inode_ino) };
    ino as u32
}

/// `sock_send_length(struct sock *sk, int ret, int flags)` as a raw tracepoint: the arguments
/// are loads from the context, and no trace record is built for each send on the node.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn cniscope_nl_send(ctx: RawTracePointContext) -> i32 {
    let _ = try_nl_send(&ctx);
    0
}

/// Words in the window read from one kernel struct (see `read_window`).
const WIN_WORDS: usize = NL_WINDOW / 8;

/// Room to read several fields of one kernel struct with one helper call (see `read_window`).
#[map(name = "NL_WIN")]
static NL_WIN: PerCpuArray<[u64; WIN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Copies the `span` bytes at `addr` into `win`: one helper call for several fields of one
/// struct (the loader checks that they lie within the window, 8-byte aligned to the first).
#[inline(always)]
fn read_window(win: &mut [u64; WIN_WORDS], addr: u64, span: u32) -> bool {
    let n = span & (WIN_WORDS as u32 * 8 - 1);
    n != 0
        && unsafe { raw_read_kernel(win.as_mut_ptr() as *mut c_void, n, addr as *const c_void) }
            == 0
}

/// The 8-byte word at struct offset `off` from a window read at struct offset `base`.
#[inline(always)]
fn word(win: &[u64; WIN_WORDS], base: u32, off: u32) -> u64 {
    win[(off.wrapping_sub(base) / 8) as usize & (WIN_WORDS - 1)]
}

/// The 2-byte value at struct offset `off` (2-byte aligned) from a window read at `base`.
#[inline(always)]
fn half(win: &[u64; WIN_WORDS], base: u32, off: u32) -> u16 {
    let d = off.wrapping_sub(base);
    (word(win, base, off) >> ((d & 6) * 8)) as u16
}

/// `struct user_msghdr` is 56 bytes.
const MSGHDR_LEN: u64 = 56;
const WIN_BYTES: u64 = NL_WINDOW as u64;

/// Where a request's bytes are to be copied from.
#[derive(Clone, Copy)]
enum ReqAt {
    /// In the sender's memory.
    User,
    /// Already in the window, at this byte offset.
    Window(u32),
}

/// For sendmsg: the first iovec's base and length, found through the sender's msghdr. The
/// msghdr is read with the 1 KiB above it, which on the stack of `ip` (and most callers, whose
/// iovec and request are locals of the frames above) also holds the iovec (128 bytes up) and the
/// request (560 bytes up for a route add): one user read then, instead of three. Anything not
/// in the window is followed through its pointer as before.
#[inline(always)]
fn sendmsg_iov(wv: &mut [u64; WIN_WORDS], off: &Offsets, msg: u64) -> (u64, u64, ReqAt) {
    let dst = wv.as_mut_ptr() as *mut c_void;
    // SAFETY: user memory read through the helper into the per-CPU window (WIN_BYTES).
    let mut span = WIN_BYTES;
    if unsafe { bpf_probe_read_user(dst, WIN_BYTES as u32, msg as *const c_void) } != 0 {
        // The window ran past mapped memory (the top of a stack): stay within the page.
        let room = 4096 - (msg & 4095);
        span = if room < MSGHDR_LEN {
            MSGHDR_LEN
        } else {
            room.min(WIN_BYTES)
        };
        let n = (span as u32) & (WIN_BYTES as u32 * 2 - 1);
        if n as u64 > WIN_BYTES || unsafe { bpf_probe_read_user(dst, n, msg as *const c_void) } != 0
        {
            return (0, 0, ReqAt::User);
        }
    }
    let iov = word(wv, 0, off.msghdr_iov);
    let d = iov.wrapping_sub(msg);
    // `d < span` first: an iovec just below the msghdr wraps `d` to near u64::MAX.
    let (base, len) = if d & 7 == 0 && d < span && d + 16 <= span {
        let d = d as u32;
        // iov_base and iov_len are adjacent (checked by the loader).
        (word(wv, 0, d), word(wv, 0, d + 8))
    } else {
        // SAFETY: user pointers are read with bpf_probe_read_user only.
        let bl: [u64; 2] =
            unsafe { uread((iov + off.iovec_base as u64) as *const [u64; 2]) }.unwrap_or([0, 0]);
        (bl[0], bl[1])
    };
    let r = base.wrapping_sub(msg);
    let want = if len > NL_MAX_REQ as u64 {
        NL_MAX_REQ as u64
    } else {
        len
    };
    let at = if r < span && r + want <= span {
        ReqAt::Window(r as u32)
    } else {
        ReqAt::User
    };
    (base, len, at)
}

fn try_nl_send(ctx: &RawTracePointContext) -> Result<(), i64> {
    // This runs for every send of every socket on the node: the cheap tests first. `ret` is
    // what the send returned; a netlink request is at least a 16-byte header.
    let ret = ctx.arg::<u64>(1) as i32;
    if ret < 16 {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    let off = offsets().ok_or(0i64)?;
    let family: u16 = unsafe { kread(sk, off.sock_family) };
    if family != AF_NETLINK {
        return Ok(());
    }
    // struct sock: protocol, namespace and receive queue in one read.
    let wp = NL_WIN.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch owned by this program for its run.
    let wv = unsafe { &mut *wp };
    let sbase = off.sock_win_base;
    if !read_window(wv, sk + sbase as u64, off.sock_win_len) {
        return Ok(());
    }
    if half(wv, sbase, off.sock_protocol) != NETLINK_ROUTE {
        return Ok(());
    }
    let net = word(wv, sbase, off.sock_net);
    let qlen = word(wv, sbase, off.sock_rcvq_qlen) as u32;
    let skb = word(wv, sbase, off.sock_rcvq_prev);

    // The sender's task_struct as a BTF pointer: its fields are plain loads (`btf_load`).
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: task_struct's pid and tgid (pid_t).
    let (pid, tgid): (u32, u32) =
        unsafe { (btf_load(task, off.task_pid), btf_load(task, off.task_tgid)) };
    let id = ((tgid as u64) << 32) | pid as u64;
    // Whether the sender is a plugin's is looked up here only when it decides; otherwise the
    // agent knows its plugin processes and a hash lookup per change is saved.
    let ctl = CONTROL.get(0).copied().unwrap_or_default();
    let tracked = ctl.nl_scope == NL_SCOPE_PLUGINS && unsafe { TRACKED.get(&tgid) }.is_some();
    if ctl.nl_scope == NL_SCOPE_PLUGINS && !tracked {
        return Ok(());
    }

    // The sender's registers: which syscall, and where its buffer is. `bpf_task_pt_regs` gives
    // them as a BTF pointer too, so the three fields are plain loads.
    // SAFETY: `task` is the BTF pointer from bpf_get_current_task_btf.
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    if regs.is_null() {
        return Ok(());
    }
    // SAFETY: pt_regs' orig_ax, si and dx (unsigned long).
    let (nr, si, dx): (u64, u64, u64) = unsafe {
        (
            btf_load(regs, off.regs_orig_ax),
            btf_load(regs, off.regs_si),
            btf_load(regs, off.regs_dx),
        )
    };
    let (buf, len, at, mut flags) = if nr == off.nr_sendto as u64 {
        (si, dx, ReqAt::User, NL_F_SENDTO)
    } else if nr == off.nr_sendmsg as u64 {
        let (b, l, at) = sendmsg_iov(wv, off, si);
        (b, l, at, 0)
    } else {
        count(C_NL_UNATTRIBUTED, 1);
        return Ok(());
    };
    if buf == 0 || len < 16 {
        return Ok(());
    }

    // Built in per-CPU scratch and sent with only the bytes used (see NetlinkEvent). The
    // request is copied first and its type read from the copy: one user read, not two.
    let ev = NL_EVENT.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch owned by this program for its run.
    let ev = unsafe { &mut *ev };
    let mut n = len;
    if n > NL_MAX_REQ as u64 {
        n = NL_MAX_REQ as u64;
        flags |= NL_F_REQ_CUT;
    }
    let n32 = (n as u32) & (NL_MAX_REQ as u32 * 2 - 1);
    if n32 < 16 || n32 as usize > NL_MAX_REQ {
        return Ok(());
    }
    let dst = ev.data.as_mut_ptr() as *mut c_void;
    // SAFETY: 16 <= n32 <= NL_MAX_REQ < size of `data`; a window copy stays within the window
    // (checked by `sendmsg_iov`).
    let r = match at {
        ReqAt::User => unsafe { bpf_probe_read_user(dst, n32, buf as *const c_void) },
        ReqAt::Window(o) => unsafe {
            raw_read_kernel(
                dst,
                n32,
                (wv.as_ptr() as *const u8).add((o & (WIN_BYTES as u32 - 1)) as usize)
                    as *const c_void,
            )
        },
    };
    if r != 0 {
        return Ok(());
    }
    // nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32.
    let ty = u16::from_ne_bytes([ev.data[4], ev.data[5]]);
    if !is_change(ty) {
        return Ok(());
    }
    ev.req_len = n32;
    count(C_NL_SEEN, 1);
    if tracked {
        flags |= NL_F_TRACKED;
    }

    ev.req_total = len as u32;
    ev.target_netns = 0;
    ev.peer_netns = 0;
    if ty == 16 || ty == 19 {
        (ev.target_netns, ev.peer_netns) = link_move_targets(off, task as u64, buf, len);
    }

    ev.sk = sk;
    // The sender's netns through BTF pointers (plain loads); the socket's is usually the same
    // one, and then costs no helper call either.
    ev.task_netns = 0;
    let mut tnet = 0u64;
    // SAFETY: task->nsproxy, nsproxy->net_ns (pointers to structs, so BTF pointers in turn),
    // net->ns.inum.
    unsafe {
        let nsproxy: *const u8 = btf_load(task, off.task_nsproxy);
        if !nsproxy.is_null() {
            let n: *const u8 = btf_load(nsproxy, off.nsproxy_net_ns);
            if !n.is_null() {
                ev.task_netns = btf_load(n, off.net_ns_inum);
                tnet = n as u64;
            }
        }
    }
    ev.netns = if net == tnet && tnet != 0 {
        ev.task_netns
    } else {
        unsafe { kread::<u32>(net, off.net_ns_inum) }
    };

    // The reply: the last skb on the socket's receive queue, placed right after the request.
    ev.ack_len = 0;
    let kbase = off.skb_data.min(off.skb_len);
    let kend = off.skb_data.max(off.skb_len) + 8;
    if qlen > 0 && read_window(wv, skb + kbase as u64, kend - kbase) {
        let data = word(wv, kbase, off.skb_data);
        let slen = word(wv, kbase, off.skb_len) as u32;
        let mut a = slen;
        if a > NL_MAX_ACK as u32 {
            a = NL_MAX_ACK as u32;
        }
        let a = a & (NL_MAX_ACK as u32 * 2 - 1);
        let at = (ev.req_len & (NL_MAX_REQ as u32 * 2 - 1)) as usize;
        if data != 0 && a > 0 && a as usize <= NL_MAX_ACK && at <= NL_MAX_REQ {
            // SAFETY: at + a <= NL_MAX_REQ + NL_MAX_ACK, the size of `data`.
            let r = unsafe {
                raw_read_kernel(
                    ev.data.as_mut_ptr().add(at) as *mut c_void,
                    a,
                    data as *const c_void,
                )
            };
            if r == 0 {
                ev.ack_len = a;
                flags |= NL_F_REPLY;
            }
        }
    }
    ev.extack_len = 0;
    // The extack text matters only for errors: look it up only when the reply is one.
    let at = (ev.req_len & (NL_MAX_REQ as u32 * 2 - 1)) as usize + 16;
    let is_error = ev.ack_len >= 20
        && at + 4 <= ev.data.len()
        && u32::from_ne_bytes([
            ev.data[at],
            ev.data[at + 1],
            ev.data[at + 2],
            ev.data[at + 3],
        ]) != 0;
    if (is_error || ev.ack_len == 0)
        && let Some(msg) = unsafe { EXTACK.get(&id) }
    {
        // After the request and the reply.
        let x = (ev.req_len & (NL_MAX_REQ as u32 * 2 - 1)) as usize
            + (ev.ack_len & (NL_MAX_ACK as u32 * 2 - 1)) as usize;
        if x + NL_MAX_EXTACK <= ev.data.len() {
            // SAFETY: x + NL_MAX_EXTACK <= size of `data`, checked above; `msg` is a map value
            // of NL_MAX_EXTACK bytes.
            let r = unsafe {
                raw_read_kernel(
                    ev.data.as_mut_ptr().add(x) as *mut c_void,
                    NL_MAX_EXTACK as u32,
                    msg.as_ptr() as *const c_void,
                )
            };
            if r == 0 {
                ev.extack_len = NL_MAX_EXTACK as u32;
                flags |= NL_F_EXTACK;
            }
        }
        let _ = EXTACK.remove(&id);
    }
    // SAFETY: task_struct's comm, char[16], as two 8-byte loads.
    let (c0, c1): (u64, u64) = unsafe {
        (
            btf_load(task, off.task_comm),
            btf_load(task, off.task_comm + 8),
        )
    };
    ev.comm[..8].copy_from_slice(&c0.to_ne_bytes());
    ev.comm[8..].copy_from_slice(&c1.to_ne_bytes());
    ev.hdr = Header {
        kind: EV_NETLINK,
        flags,
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: id as u32,
        tgid,
    };
    let used = (ev.req_len as usize & (NL_MAX_REQ * 2 - 1))
        + (ev.ack_len as usize & (NL_MAX_ACK * 2 - 1))
        + (ev.extack_len as usize & (NL_MAX_EXTACK * 2 - 1));
    let size = NL_FIXED + used;
    if size > core::mem::size_of::<NetlinkEvent>() {
        return Ok(());
    }
    // SAFETY: `size` bytes of the scratch struct, bounded by its size just above.
    let bytes =
        unsafe { core::slice::from_raw_parts(ev as *const NetlinkEvent as *const u8, size) };
    if EVENTS.output::<[u8]>(bytes, NO_WAKEUP).is_err() {
        count(C_NL_LOST, 1);
    }
    Ok(())
}
