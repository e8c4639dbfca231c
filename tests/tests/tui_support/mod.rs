//! Shared by the `tui_*` tests: `cniscope tui` in a tmux server of its own (one per test, so
//! tests never see each other's panes), read with `capture-pane -p`, typed at with `send-keys`.
//! The server is killed when the guard drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
    /// The server's socket file, removed after `kill-server` (tmux leaves it behind).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Starts `argv` in a `w`×`h` pane. When the program exits the pane stays, showing
    /// `EXITED <code>` under whatever it printed.
    /// `cniscope tui ARGS` in an 80×24 window, the size of a plain terminal.
    pub fn tui(args: &[&str]) -> Self {
        let bin = cniscope();
        let mut argv = vec![bin.to_str().unwrap_or("cniscope"), "tui"];
        argv.extend_from_slice(args);
        Self::start(80, 24, &argv, &[])
    }

    pub fn start(w: u16, h: u16, argv: &[&str], env: &[(&str, &str)]) -> Self {
        let socket = cniscope_tests::unique("cniscope-tui-");
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
        let cmd = format!(
            "env {} {}; echo EXITED $?; sleep 600",
            envs.join(" "),
            quoted.join(" ")
        );
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", &w.to_string(), "-y", &h.to_string(), &cmd])
            .status()
            .expect("running tmux");
        assert!(st.success(), "tmux new-session failed");
        let socket_path = Command::new("tmux")
            .args(["-L", &socket, "display-message", "-p", "#{socket_path}"])
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_absolute());
        Self {
            socket,
            socket_path,
        }
    }

    pub fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `send-keys` with tmux key names (`Enter`, `Escape`, `q`, `C-c`) or literal text.
    pub fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "-l", text])
            .status()
            .expect("tmux send-keys -l");
        assert!(st.success());
    }

    pub fn resize(&self, w: u16, h: u16) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "resize-window", "-t", "t"])
            .args(["-x", &w.to_string(), "-y", &h.to_string()])
            .status()
            .expect("tmux resize-window");
        assert!(st.success());
    }

    /// The screen once `pred` holds for it; panics with the last screen after `timeout`.
    ///
    /// tmux may be captured while the TUI is still writing a frame (CI once caught a timeline
    /// whose header was drawn and whose rows were not), so `pred` must hold for two captures
    /// 150 ms apart, and the later one is returned.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.capture();
            if pred(&s) {
                std::thread::sleep(Duration::from_millis(150));
                let again = self.capture();
                if pred(&again) {
                    return again;
                }
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn cniscope() -> PathBuf {
    cniscope_tests::bin_dir().join("cniscope")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(cniscope_tests::unique(prefix));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
