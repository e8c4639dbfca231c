//! Boot-time nanoseconds (what the programs stamp) to wall-clock time, converted with one offset
//! taken at start so every event of a run uses the same mapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME now, in the programs' time base.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix-epoch ns minus boot ns.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as i128;
        Self {
            offset_ns: real - boot,
        }
    }

    /// A clock with a fixed offset (replays and tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = (boot_ns as i128 + self.offset_ns).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// RFC 3339 with nanoseconds, UTC.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.wall(boot_ns)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_applied_once() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.rfc3339(5), "2023-11-14T22:13:20.000000005Z");
    }
}
