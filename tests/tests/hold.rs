//! Holding a plugin at exec (SIGSTOP until the stdio hooks are live) must never outlive the
//! agent: a frozen agent stops holding once its heartbeat is stale, and a killed agent's guardian
//! resumes whatever the kernel stopped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cniscope_tests::agent::Agent;
use cniscope_tests::{CNI_BIN, require_root};

fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised comm.
    s.rsplit_once(") ")?.1.chars().next()
}

fn plugin() -> Child {
    let mut c = Command::new(format!("{CNI_BIN}/bridge"));
    c.env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c.spawn().unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_killed_agent_never_leaves_a_plugin_stopped() {
    require_root();
    let agent = Agent::start(&["--linger-ms", "50"]);
    let pid = agent.lines()[0]["pid"].as_u64().unwrap() as i32;
    // Let the hooks detach, so the next plugin is held at exec.
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut p = plugin();
    let deadline = Instant::now() + Duration::from_secs(2);
    while state(p.id()) != Some('T') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state(p.id()), Some('T'), "the plugin was not held at exec");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_exit(&mut p, Duration::from_secs(5)),
        "the held plugin was not resumed after the agent died (state {:?})",
        state(p.id())
    );
    drop(agent);
}

#[test]
fn a_frozen_agent_stops_holding_once_its_heartbeat_is_stale() {
    require_root();
    let agent = Agent::start(&["--linger-ms", "50"]);
    let pid = agent.lines()[0]["pid"].as_u64().unwrap() as i32;
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(2500));
    let mut p = plugin();
    let ok = wait_exit(&mut p, Duration::from_secs(2));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        ok,
        "a plugin was held although the agent's heartbeat was stale"
    );
    // Once thawed, the agent reports the run and that it could not be held.
    let r = agent.run_of(p.id());
    assert_eq!(r["held"], false);
    assert_eq!(r["complete"], false, "{r}");
}

/// When the agent and its guardian die together (a container killed as a whole), the next agent
/// resumes what they held, from the HELD map pinned in bpffs.
#[test]
fn the_next_agent_resumes_what_a_dead_agent_and_guardian_held() {
    require_root();
    let bpffs = std::env::temp_dir().join(cniscope_tests::unique("cnsbpffs"));
    std::fs::create_dir_all(&bpffs).unwrap();
    let st = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpffs)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a bpffs for the test");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _um = Umount(bpffs.clone());
    let pin_dir = bpffs.join("cniscope");
    let pin = pin_dir.to_str().unwrap().to_string();

    let agent = Agent::start(&["--linger-ms", "50", "--pin-dir", &pin]);
    let ready = agent.lines()[0].clone();
    let pid = ready["pid"].as_u64().unwrap() as i32;
    let guardian = ready["guardian_pid"].as_u64().unwrap() as i32;
    assert!(pin_dir.join("HELD").exists(), "the HELD map is pinned");
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling processes this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut p = plugin();
    let deadline = Instant::now() + Duration::from_secs(2);
    while state(p.id()) != Some('T') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state(p.id()), Some('T'), "the plugin was not held at exec");
    // Both die at once.
    // SAFETY: as above.
    unsafe {
        libc::kill(guardian, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    drop(agent);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        state(p.id()),
        Some('T'),
        "nothing should have resumed it yet"
    );
    let next = Agent::start(&["--pin-dir", &pin]);
    assert!(
        wait_exit(&mut p, Duration::from_secs(5)),
        "the next agent did not resume the plugin (state {:?})",
        state(p.id())
    );
    drop(next);
    assert!(
        !pin_dir.join("HELD").exists(),
        "a clean stop removes the pin"
    );
}
