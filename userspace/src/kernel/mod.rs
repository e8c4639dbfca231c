//! What cniscope needs from the running kernel: BTF offsets, tracefs, and the checks `doctor` runs.

pub mod bpfsys;
pub mod btf;
pub mod doctor;
pub mod offsets;
pub mod tracefs;
