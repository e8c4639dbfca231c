//! Turning typed events into what people read: per-process runs (a plugin's exec, its stdio,
//! its exit) now; invocations and timelines build on them.

pub mod correlator;
pub mod diff;
pub mod identity;
pub mod invocation;
pub mod json;
pub mod runs;

/// The correlator's maps are keyed by pids and by container id + interface + command, several
/// lookups per event: SipHash was a visible share of replay time. foldhash is seeded per process
/// (no fixed collisions to aim at) and several times faster on short keys.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
