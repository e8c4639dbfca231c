//! cniscope's eBPF programs. Built for `bpfel-unknown-none` by `userspace/build.rs`; on the host
//! this binary is an empty stub so `cargo check --workspace` keeps working.
//!
//! Always attached (cheap, off the syscall path):
//! - `sched:sched_process_exec`: finds CNI plugins by `CNI_COMMAND=` in the new image's
//!   environment, records processes started by a plugin's tree, and stops (SIGSTOP) a new plugin
//!   while the stdio hooks are not attached, so that not one byte of its stdin is missed;
//! - `sched_process_fork` (raw tracepoint, for the child `task_struct`): follows a plugin's children;
//! - `sched:sched_process_exit`: exit status and byte totals of tracked processes.
//!
//! Attached by the agent only while plugins run: `syscalls:sys_{enter,exit}_{read,write}`, which copy
//! fd 0 reads and fd 1/2 writes of plugin processes into the ring buffer.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs;
