//! A `cniscope agent --events` for one test: started, waited for, its NDJSON collected, and
//! stopped with SIGINT when the guard drops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Agent {
    child: Option<Child>,
    /// The agent's own socket (unique per agent, so agents of concurrent tests never clash).
    pub socket: std::path::PathBuf,
    lines: Arc<Mutex<Vec<Value>>>,
    pub stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr, joined after the agent exits.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts the agent with `--events` plus `extra` args and waits for its `ready` line.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(&[], extra)
    }

    /// `start`, with `env` added to the agent's environment.
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> Self {
        let bin = crate::bin_dir().join("cniscope");
        let socket =
            std::env::temp_dir().join(format!("{}.sock", crate::unique("cniscope-agent-")));
        let mut child = Command::new(&bin)
            .args(["agent", "--events", "--stats-interval", "1"])
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let l2 = lines.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l2.lock().expect("lines").push(v),
                    Err(e) => panic!("agent printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e2 = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = e2.lock().expect("stderr");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let agent = Self {
            child: Some(child),
            socket,
            lines,
            stderr,
            readers: vec![out_reader, err_reader],
        };
        agent.wait_for("agent ready", Duration::from_secs(60), |v| {
            v["type"] == "agent" && v["event"] == "ready"
        });
        agent
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits until a line matches `pred`; panics with the agent's output after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; agent stderr:\n{}\nlast lines:\n{:#?}",
                    self.stderr.lock().expect("stderr"),
                    self.lines().iter().rev().take(10).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The finished `run` line of process `pid`.
    pub fn run_of(&self, pid: u32) -> Value {
        self.wait_for(&format!("run of pid {pid}"), Duration::from_secs(20), |v| {
            v["type"] == "run" && v["tgid"] == pid
        })
    }

    /// Stops the agent (SIGINT) and returns every line it printed.
    pub fn stop(mut self) -> Vec<Value> {
        self.shutdown();
        self.lines()
    }

    fn shutdown(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
            // Every line printed before the exit (the last stats line, partial invocations,
            // `stopped`) is read before anyone looks.
            crate::join_readers(&mut self.readers, Duration::from_secs(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The bytes of a `Text` field: a JSON string, or `{"base64": ...}` for non-UTF-8 bytes.
pub fn bytes(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(m) => base64::engine::general_purpose::STANDARD
            .decode(m["base64"].as_str().expect("base64 string"))
            .expect("valid base64"),
        other => panic!("not a Text value: {other}"),
    }
}
