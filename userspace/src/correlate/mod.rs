//! Turning typed events into what people read: per-process runs (a plugin's exec, its stdio,
//! its exit) now; invocations and timelines build on them.

pub mod correlator;
pub mod diff;
pub mod identity;
pub mod invocation;
pub mod runs;
