//! The HELD map pinned in bpffs, so that plugins held by an agent that died together with its
//! guardian (a container killed as a whole, e.g. by the OOM killer on cgroup v2) are resumed by
//! the next agent at start.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::MapData;

use super::guardian;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `dir`'s filesystem is a bpffs.
fn is_bpffs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs with a valid path and an out struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

pub fn held_pin(dir: &Path) -> PathBuf {
    dir.join("HELD")
}

/// Resumes everything a previous agent left in its pinned HELD map, and removes that pin.
/// Returns how many processes were resumed (None when there was no pin).
pub fn rescue_previous(dir: &Path) -> Option<usize> {
    let pin = held_pin(dir);
    if !pin.exists() {
        return None;
    }
    let n = match MapData::from_pin(&pin) {
        Ok(md) => guardian::resume_all(md.fd().as_fd().as_raw_fd()),
        Err(e) => {
            tracing::warn!(
                "cannot open the previous agent's HELD map at {}: {e}",
                pin.display()
            );
            0
        }
    };
    let _ = std::fs::remove_file(&pin);
    Some(n)
}

/// Pins this agent's HELD map at `dir/HELD` when `dir` is on a bpffs (its parent is checked
/// when `dir` does not exist yet). Returns whether it is pinned.
pub fn pin_held(held: &MapData, dir: &Path) -> bool {
    let fs_dir = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    if !is_bpffs(fs_dir) {
        tracing::debug!(dir = %dir.display(), "not a bpffs: the HELD map is not pinned");
        return false;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!("cannot create {}: {e}", dir.display());
        return false;
    }
    match held.pin(held_pin(dir)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot pin the HELD map in {}: {e}", dir.display());
            false
        }
    }
}

/// Removes this agent's pin at a clean stop (nothing is held any more).
pub fn unpin(dir: &Path) {
    let _ = std::fs::remove_file(held_pin(dir));
}
