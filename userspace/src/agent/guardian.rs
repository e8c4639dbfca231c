//! The guardian: a small forked process that outlives the agent just long enough to resume every
//! plugin the kernel stopped at exec. Without it, an agent killed with SIGKILL between a plugin's
//! SIGSTOP and its SIGCONT would leave that plugin (and the pod's creation) hanging forever.
//!
//! It is forked right after the programs are loaded and before anything is attached or any thread
//! exists, keeps only the HELD map's fd and a pipe, and waits for EOF on the pipe (the agent's
//! end closes when the agent dies, however it dies).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::kernel::bpfsys;

/// The agent's end of the pipe: keep it open for the agent's lifetime.
pub struct Guardian {
    _pipe: OwnedFd,
    pub pid: libc::pid_t,
}

/// Resumes every process in the HELD map; returns how many were resumed.
pub fn resume_all(held_fd: RawFd) -> usize {
    let mut n = 0;
    // Collect first: deleting while walking can restart the walk.
    let mut keys = Vec::new();
    let mut cur = None;
    while let Ok(Some(k)) = bpfsys::next_u32_key(held_fd, cur) {
        keys.push(k);
        cur = Some(k);
        if keys.len() > 65536 {
            break;
        }
    }
    for k in keys {
        // SAFETY: kill(2) with a pid from the map; SIGCONT on a vanished pid fails harmlessly.
        unsafe { libc::kill(k as libc::pid_t, libc::SIGCONT) };
        let _ = bpfsys::delete_u32_key(held_fd, k);
        n += 1;
    }
    n
}

pub fn spawn(held_fd: RawFd) -> Result<Guardian> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the agent is still single-threaded here (no runtime, no helper threads), so the
    // child may run arbitrary code; it only makes raw syscalls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        guardian_main(rd, wr, held_fd);
    }
    // SAFETY: we own both pipe ends; the read end belongs to the child now.
    unsafe { libc::close(rd) };
    Ok(Guardian {
        // SAFETY: wr is a fresh fd owned by nobody else.
        _pipe: unsafe { OwnedFd::from_raw_fd(wr) },
        pid,
    })
}

fn guardian_main(rd: RawFd, wr: RawFd, held_fd: RawFd) -> ! {
    // SAFETY: only async-signal-safe syscalls from here on.
    unsafe {
        libc::close(wr);
        // Ctrl-C in a terminal reaches the whole process group; the guardian must outlive the
        // agent's own shutdown, so it ignores the usual stop signals and leaves on pipe EOF.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::prctl(
            libc::PR_SET_NAME,
            c"cniscope-guard".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // Drop every inherited fd except the pipe, the HELD map and stdio: the guardian must not keep
    // the ring buffer or programs alive.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            if fd > 2 && fd != rd && fd != held_fd {
                // SAFETY: closing inherited fds in the single-threaded child.
                unsafe { libc::close(fd) };
            }
        }
    }
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading into a local buffer.
        let r = unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
        if r == 0 {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // The agent is gone. Programs detach as its fds close, which can lag a little behind the
    // pipe's EOF, so sweep a few times.
    for _ in 0..20 {
        resume_all(held_fd);
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: leave without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(0) }
}
