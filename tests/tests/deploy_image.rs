//! The OCI image from `cargo xtask image`, run by podman exactly as the DaemonSet in deploy/
//! describes each container (command, capabilities, host mounts, env, read-only root, seccomp
//! default), against this host's real kernel and real CNI plugins:
//!
//! the agent, with only the DaemonSet's capabilities, sees a plugin run on the host and prints
//! it byte-exact on the container's stdout (what `kubectl logs` shows), then stops on SIGTERM.
//! (deploy_install covers the install step and the kubeconfig sidecar.) /run/cniscope is
//! replaced by a temp dir.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cniscope_tests::agent::bytes;
use cniscope_tests::deploy::{
    Container, Podman, RunSpec, TempDir, deploy_dir, find, kustomized_docs, podman_run_args,
    test_image,
};
use cniscope_tests::{require_root, unique};
use serde_json::Value;

fn daemonset() -> Value {
    find(&kustomized_docs(&deploy_dir()), "DaemonSet", "cniscope").clone()
}

/// Mounts the host's tracefs at /sys/kernel/tracing if nothing is there (the DaemonSet
/// bind-mounts the host's), and unmounts it again when dropped if it did.
struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    fn ensure() -> Self {
        let p = Path::new("/sys/kernel/tracing/events");
        if p.is_dir() {
            return Tracefs {
                mounted_here: false,
            };
        }
        let st = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .expect("mount");
        assert!(st.success(), "mounting tracefs failed");
        Tracefs { mounted_here: true }
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
        }
    }
}

/// /run/netns must exist for the bind mount (as the kubelet's DirectoryOrCreate would make it).
struct RunNetns {
    made: bool,
}

impl RunNetns {
    fn ensure() -> Self {
        let made = !Path::new("/run/netns").exists();
        std::fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
        RunNetns { made }
    }
}

impl Drop for RunNetns {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_dir("/run/netns");
        }
    }
}

/// One request line to the agent's socket; the first line back.
fn ask_socket(path: &Path, request: &str) -> Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// One HTTP/1.0 GET over loopback; the whole response as text.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The record of process `pid` in an agent line: a `run` line itself, or the step of an
/// `invocation` (or of one of its nested steps) with that pid.
fn run_of(v: &Value, pid: u32) -> Option<Value> {
    match v["type"].as_str()? {
        "run" if v["tgid"] == pid => Some(v.clone()),
        "invocation" => find_step(&v["steps"], pid),
        _ => None,
    }
}

fn find_step(steps: &Value, pid: u32) -> Option<Value> {
    for s in steps.as_array()? {
        if s["pid"] == pid {
            return Some(s.clone());
        }
        if let Some(found) = find_step(&s["delegates"], pid) {
            return Some(found);
        }
        for inv in s["invocations"].as_array().into_iter().flatten() {
            if let Some(found) = find_step(&inv["steps"], pid) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn image_agent_with_daemonset_capabilities_sees_a_host_plugin_run() {
    require_root();
    assert!(
        std::net::TcpListener::bind("0.0.0.0:9731").is_ok(),
        "port 9731 is in use on this host: the DaemonSet's agent serves metrics there"
    );
    let t0 = Instant::now();
    let image = test_image();
    let built = t0.elapsed();
    let _tracefs = Tracefs::ensure();
    let _netns = RunNetns::ensure();
    let ds = daemonset();
    let run_dir = TempDir::new("cns-run-");
    let podman = Podman::new();
    let spec = RunSpec {
        container: "agent",
        remap: vec![("/run/cniscope", run_dir.path().to_path_buf())],
        config_maps: vec![],
        extra_mounts: vec![],
        extra_env: vec![],
    };
    let name = unique("cniscope-agent-test-");
    let args = podman_run_args(&ds, &spec, &name, image);
    let t1 = Instant::now();
    let mut agent = Container::start(&podman, &args);
    let ready = agent.wait_for("the agent's ready line", Duration::from_secs(90), |v| {
        v["type"] == "agent" && v["event"] == "ready"
    });
    let to_ready = t1.elapsed();
    assert_eq!(ready["tracefs"], "/sys/kernel/tracing", "{ready}");

    // A real plugin run on the host, as a runtime runs it.
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    let bridge = format!("{}/bridge", cniscope_tests::CNI_BIN);
    let mut child = Command::new(&bridge)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running bridge");
    let pid = child.id();
    {
        use std::io::Write;
        // bridge does not read stdin for VERSION and may already have exited: ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(stdin);
    }
    let out = child.wait_with_output().expect("bridge");
    assert!(out.status.success());
    // Today's agent prints each plugin process as a `run` line with --events and, by default,
    // inside the `invocation` its chain call belongs to (as a step); either carries the run.
    let run = agent.wait_for(
        &format!("the run of bridge (pid {pid})"),
        Duration::from_secs(30),
        |v| run_of(v, pid).is_some(),
    );
    let run = run_of(&run, pid).expect("matched");
    let path = run.get("filename").or_else(|| run.get("path"));
    assert_eq!(path, Some(&Value::from(bridge.as_str())), "{run}");
    assert_eq!(
        bytes(&run["stdout"]),
        out.stdout,
        "stdout differs from what bridge printed: {run}"
    );
    // What the plugin read, which for VERSION may be nothing (bridge does not read stdin then).
    assert!(stdin.starts_with(&bytes(&run["stdin"])), "{run}");
    assert_eq!(run["exit"]["code"], 0, "{run}");
    assert_eq!(run["complete"], true, "{run}");
    // The agent's socket, made inside the container, answers from the host side of the mount
    // (where cniscope-cni runs), root only.
    let sock = run_dir.path().join("agent.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock)
            .unwrap_or_else(|e| panic!("{}: {e}", sock.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "agent.sock mode {mode:o}");
    }
    let answer = ask_socket(&sock, r#"{"op":"pod","namespace":"default","name":"x"}"#);
    assert!(answer.is_object(), "{answer}");

    // The metrics endpoint the Service and the readiness probe point at (loopback only).
    let metrics = http_get("127.0.0.1:9731", "/metrics");
    assert!(
        metrics.starts_with("HTTP/1.1 200") || metrics.starts_with("HTTP/1.0 200"),
        "GET /metrics: {metrics:.300}"
    );
    assert!(metrics.contains("cniscope_"), "{metrics:.2000}");

    // SIGTERM (podman stop, as the kubelet does): the agent says goodbye and exits cleanly.
    let (code, took) = agent.stop(Duration::from_secs(10));
    assert!(
        agent
            .json_lines()
            .iter()
            .any(|v| v["type"] == "agent" && v["event"] == "stopped"),
        "no `agent stopped` line after SIGTERM; stderr:\n{}",
        agent.stderr_text()
    );
    assert_eq!(code, Some(0), "podman run exit code");
    eprintln!(
        "image build {:.1} s, container start to ready {:.1} s, stop {:.1} s",
        built.as_secs_f64(),
        to_ready.as_secs_f64(),
        took.as_secs_f64()
    );
}
