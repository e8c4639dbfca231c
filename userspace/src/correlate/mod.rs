//! Turning typed events into what people read: per-process runs (a plugin's exec, its stdio,
//! its exit) now; invocations and timelines build on them.

pub mod runs;
