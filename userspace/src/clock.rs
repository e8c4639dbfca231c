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

    /// RFC 3339 with nanoseconds, UTC (`2023-11-14T22:13:20.000000005Z`). Every op and step
    /// carries one, so it is written digit by digit rather than through `fmt`.
    ///
    /// The events of a CNI chain come within the same few seconds, so the date and time of
    /// the last second written is kept (per thread) and only the nanoseconds are written anew.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        thread_local! {
            static LAST: std::cell::Cell<(u64, [u8; 20])> =
                const { std::cell::Cell::new((u64::MAX, [0; 20])) };
        }
        let ns = (boot_ns as i128 + self.offset_ns).max(0) as u64;
        let (secs, nanos) = (ns / 1_000_000_000, ns % 1_000_000_000);
        let mut b = *b"0000-00-00T00:00:00.000000000Z";
        let put = |b: &mut [u8; 30], at: usize, width: usize, v: u64| {
            crate::digits::write_padded(&mut b[at..at + width], v)
        };
        let (last_secs, head) = LAST.get();
        if last_secs == secs {
            b[..20].copy_from_slice(&head);
        } else {
            let (y, m, d) = civil_from_days(secs / 86_400);
            let sod = secs % 86_400;
            put(&mut b, 0, 4, y);
            put(&mut b, 5, 2, m);
            put(&mut b, 8, 2, d);
            put(&mut b, 11, 2, sod / 3600);
            put(&mut b, 14, 2, sod / 60 % 60);
            put(&mut b, 17, 2, sod % 60);
            let mut head = [0; 20];
            head.copy_from_slice(&b[..20]);
            LAST.set((secs, head));
        }
        put(&mut b, 20, 9, nanos);
        // SAFETY: digits and the ASCII separators of the template.
        unsafe { std::str::from_utf8_unchecked(&b) }.to_owned()
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_applied_once() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.rfc3339(5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn rfc3339_matches_humantime_across_calendar_edges() {
        let day = 86_400_000_000_000u64;
        // Epoch, leap days (2000 is a leap year, 2100 is not), year ends, and a spread of days.
        let mut at: Vec<u64> = vec![0, 1, 999_999_999, 1_000_000_000, 59 * day, 60 * day];
        for y in [1972u64, 1999, 2000, 2024, 2100, 2400] {
            let secs = humantime::parse_rfc3339(&format!("{y}-03-01T00:00:00Z")).unwrap();
            let ns = secs.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            at.extend([ns - 1, ns, ns - day, ns + 300 * day - 7]);
        }
        // Every ~41.7 days up to the year 2426, at a different time of day each.
        at.extend((0..4000u64).map(|i| i * 3_600_000_000_000_007 + i * 1_234_567));
        let c = Clock::with_offset(0);
        for ns in at {
            let want = humantime::format_rfc3339_nanos(c.wall(ns)).to_string();
            assert_eq!(c.rfc3339(ns), want, "{ns} ns");
        }
        // Before the epoch (a clock offset gone wrong) it clamps, as `wall` does.
        assert_eq!(
            Clock::with_offset(-10).rfc3339(5),
            "1970-01-01T00:00:00.000000000Z"
        );
    }
}
