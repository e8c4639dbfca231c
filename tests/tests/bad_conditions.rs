//! Bad conditions give one clear message and a non-zero exit, never a panic.

use std::process::Command;

use cniscope_tests::{bin_dir, require_root};

fn agent(env: &[(&str, &str)], wrapper: &[&str]) -> (Option<i32>, String) {
    let bin = bin_dir().join("cniscope");
    let mut c = if wrapper.is_empty() {
        Command::new(&bin)
    } else {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(&bin);
        c
    };
    c.args(["agent", "--stats-interval", "1"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output_with_timeout()
        .expect("the agent should exit by itself on a bad condition");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "the agent panicked:\n{err}");
    (out.status.code(), err)
}

trait WithTimeout {
    fn output_with_timeout(&mut self) -> Option<std::process::Output>;
}

impl WithTimeout for Command {
    fn output_with_timeout(&mut self) -> Option<std::process::Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(r) => r.ok(),
            Err(_) => {
                // SAFETY: killing our own child that hung.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                None
            }
        }
    }
}

#[test]
fn not_root_is_refused_with_a_clear_message() {
    require_root();
    let (code, err) = agent(
        &[],
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line, got:\n{err}");
}

#[test]
fn missing_btf_is_reported() {
    require_root();
    let (code, err) = agent(&[("CNISCOPE_BTF", "/nonexistent/vmlinux")], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("BTF") && err.contains("/nonexistent/vmlinux"),
        "{err}"
    );
}

#[test]
fn corrupt_btf_is_reported() {
    require_root();
    let f = std::env::temp_dir().join(format!("cniscope-bad-btf-{}", std::process::id()));
    std::fs::write(&f, b"\x9f\xeb\x01\x00garbage").unwrap();
    let (code, err) = agent(&[("CNISCOPE_BTF", f.to_str().unwrap())], &[]);
    let _ = std::fs::remove_file(&f);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("could not be parsed"), "{err}");
}

#[test]
fn tracefs_missing_and_not_mountable_is_reported() {
    require_root();
    let (code, err) = agent(&[("CNISCOPE_TRACEFS", "/nonexistent/tracing")], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("tracefs is not mounted") && err.contains("/nonexistent/tracing"),
        "{err}"
    );
}

#[test]
fn doctor_says_the_agent_can_run_here() {
    require_root();
    let out = Command::new(bin_dir().join("cniscope"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["can_run"], true, "{v:#}");
    assert!(out.status.success());
    let checks = v["checks"].as_array().unwrap();
    for name in [
        "privileges",
        "btf",
        "tracefs",
        "offsets",
        "ringbuf",
        "kprobes",
        "fentry",
    ] {
        assert!(
            checks.iter().any(|c| c["name"] == name),
            "doctor has no {name} check: {v:#}"
        );
    }
    // And it fails (exit 1) where the agent cannot run.
    let out = Command::new(bin_dir().join("cniscope"))
        .args(["doctor"])
        .env("CNISCOPE_BTF", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot run"));
}
