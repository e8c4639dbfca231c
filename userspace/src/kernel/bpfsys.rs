//! The few raw bpf(2) calls made outside aya: feature probes for `doctor`, and the guardian's
//! walk of the HELD map after the agent died (the guardian is a forked child that must not use
//! anything that allocates locks shared with the dead parent's threads).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;

pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;
pub const BPF_PROG_TYPE_TRACING: u32 = 26;
pub const BPF_TRACE_FENTRY: u32 = 24;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-padded 128-byte union as bpf(2) expects; the kernel reads at most
    // the size we pass.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Creates a BPF ring buffer map of `size` bytes (a probe: the fd is closed on drop).
pub fn create_ringbuf(size: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    // map_type u32, key_size u32, value_size u32, max_entries u32
    attr[0] = BPF_MAP_TYPE_RINGBUF as u64;
    attr[1] = (size as u64) << 32;
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Tries to load a two-instruction fentry program attached to BTF function `btf_id`.
pub fn probe_fentry(btf_id: u32) -> io::Result<()> {
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    // prog_type u32 | insn_cnt u32
    attr[0] = BPF_PROG_TYPE_TRACING as u64 | (2u64 << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // log_level, log_size, log_buf (8 bytes), kern_version u32 | prog_flags u32 at [5]
    // prog_name[16] at [6..8], prog_ifindex u32 | expected_attach_type u32 at [8]
    attr[8] = (BPF_TRACE_FENTRY as u64) << 32;
    // prog_btf_fd u32 | func_info_rec_size u32 at [9], func_info [10], func_info_cnt | line_info_rec_size [11],
    // line_info [12], line_info_cnt u32 | attach_btf_id u32 [13]
    attr[13] = (btf_id as u64) << 32;
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: close the program fd we just got.
    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(())
}

/// Next key of a u32-keyed hash map (`None` at the end).
pub fn next_u32_key(map_fd: RawFd, key: Option<u32>) -> io::Result<Option<u32>> {
    let cur = key.unwrap_or(0);
    let mut next: u32 = 0;
    let mut attr = [0u64; 16];
    attr[0] = map_fd as u32 as u64;
    attr[1] = if key.is_some() {
        &cur as *const u32 as u64
    } else {
        0
    };
    attr[2] = &mut next as *mut u32 as u64;
    match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `key` from a u32-keyed map; a missing key is not an error.
pub fn delete_u32_key(map_fd: RawFd, key: u32) -> io::Result<()> {
    let mut attr = [0u64; 16];
    attr[0] = map_fd as u32 as u64;
    attr[1] = &key as *const u32 as u64;
    match sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
