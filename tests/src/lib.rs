//! Shared pieces of the integration tests: they run as root against the real kernel, real
//! network namespaces and the real CNI plugins from Debian's containernetworking-plugins.

pub mod agent;
pub mod cni;
pub mod deploy;
pub mod k8s_fakeapi;
pub mod netns;
pub mod plugin_chain;
pub mod plugin_fakeapi;
pub mod plugin_tlsapi;
pub mod podman;
pub mod rtnl;

use std::path::PathBuf;

/// Where the built `cniscope` and `cniscope-cni` binaries are (`cargo xtask test` sets
/// CNISCOPE_BIN_DIR; the default is the workspace's debug target dir).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CNISCOPE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(|p| p.join("target/debug"))
                .unwrap_or_else(|| PathBuf::from("target/debug"))
        })
}

/// Directory of the Debian CNI plugins.
pub const CNI_BIN: &str = "/usr/lib/cni";

/// Panics with a clear message unless running as root (these tests need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "integration tests need root (CAP_BPF, CAP_SYS_ADMIN, netns): run `sudo cargo xtask test`"
    );
}

/// A name unique to this test process and call, short enough for an interface name.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// Waits (at most `timeout`) for threads reading a child's pipes to reach end of file, so
/// every line the child printed before it exited has been taken. A grandchild still holding a
/// pipe open would keep a reader going: the wait is bounded, and what was read is kept.
pub fn join_readers(readers: &mut Vec<std::thread::JoinHandle<()>>, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while readers.iter().any(|r| !r.is_finished()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for r in std::mem::take(readers) {
        if r.is_finished() {
            // A reader that panicked (the agent printed a line that is not JSON) fails the test.
            if let Err(p) = r.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}
