//! podman driven the way a kubelet would drive one of the DaemonSet's containers: the same
//! image, command, capabilities, host mounts, environment and security settings, read from the
//! YAML; and the test image, built once per test process with `cargo xtask image`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TEST_IMAGE, container, mounts, strings, workspace_root};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(crate::unique(prefix));
        std::fs::create_dir_all(&p).expect("creating temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// podman with a containers.conf that works on this kind of host: runc (crun 1.8 refuses the
/// hybrid cgroup layout) and ulimits no higher than this process's (podman's defaults exceed the
/// host's hard limits, and a container without CAP_SYS_RESOURCE may not raise one; RLIMIT_NPROC
/// does not apply to root's processes).
pub struct Podman {
    conf: TempDir,
}

impl Podman {
    pub fn new() -> Self {
        let conf = TempDir::new("cns-podman-");
        let limit = |r| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into a valid rlimit.
            unsafe { libc::getrlimit(r, &mut l) };
            l.rlim_cur.min(1024)
        };
        let (nofile, nproc) = (limit(libc::RLIMIT_NOFILE), limit(libc::RLIMIT_NPROC));
        std::fs::write(
            conf.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \
                 \"nproc={nproc}:{nproc}\"]\n[engine]\nruntime = \"runc\"\n"
            ),
        )
        .expect("writing containers.conf");
        Podman { conf }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    /// Runs podman to completion; panics with its output on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the test image once per test process with `cargo xtask image`, from the binaries
/// under test; returns the tag.
pub fn test_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let t = Instant::now();
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["xtask", "image", "--tag", TEST_IMAGE, "--bin-dir"])
            .arg(crate::bin_dir())
            .arg("--output")
            .arg(workspace_root().join("target/image/cniscope-test.oci.tar"))
            .output()
            .map_err(|e| format!("running cargo xtask image: {e}"))?;
        eprintln!("cargo xtask image took {:.1} s", t.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!(
                "cargo xtask image failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    TEST_IMAGE
}

/// How a test runs one of the DaemonSet's containers under podman.
pub struct RunSpec<'a> {
    pub container: &'a str,
    /// Host paths replaced by test directories (e.g. /opt/cni/bin → a temp dir).
    pub remap: Vec<(&'a str, PathBuf)>,
    /// configMap name → directory holding its files.
    pub config_maps: Vec<(&'a str, PathBuf)>,
    /// Extra `-v` mounts (e.g. the service account directory the kubelet would project).
    pub extra_mounts: Vec<(PathBuf, &'a str)>,
    pub extra_env: Vec<(&'a str, String)>,
}

/// `podman run` arguments (after `run`) that reproduce the container's spec.
pub fn podman_run_args(ds: &Value, spec: &RunSpec, name: &str, image: &str) -> Vec<String> {
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds, spec.container);
    let sc = &c["securityContext"];
    let mut a: Vec<String> = vec![
        "--rm".into(),
        "--pull=never".into(),
        "--name".into(),
        name.into(),
    ];
    if pod["hostPID"] == true {
        a.push("--pid=host".into());
    }
    if pod["hostNetwork"] == true {
        a.push("--network=host".into());
    }
    assert_ne!(sc["privileged"], true, "{} is privileged", spec.container);
    let drop = strings(&sc["capabilities"]["drop"]);
    if !drop.is_empty() {
        a.push(format!(
            "--cap-drop={}",
            drop.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    let add = strings(&sc["capabilities"]["add"]);
    if !add.is_empty() {
        a.push(format!(
            "--cap-add={}",
            add.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    if sc["readOnlyRootFilesystem"] == true {
        a.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        a.push("--security-opt=no-new-privileges".into());
    }
    if sc["seccompProfile"]["type"] == "Unconfined" {
        a.push("--security-opt=seccomp=unconfined".into());
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().expect("env name");
        let val = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(f)) if f == "spec.nodeName" => hostname(),
            other => panic!("env {key}: unsupported source {other:?}"),
        };
        a.push(format!("--env={key}={val}"));
    }
    for (k, v) in &spec.extra_env {
        a.push(format!("--env={k}={v}"));
    }
    for m in mounts(ds, spec.container) {
        let src = if let Some(hp) = &m.host_path {
            let base = spec
                .remap
                .iter()
                .find(|(from, _)| from == hp)
                .map(|(_, to)| to.clone())
                .unwrap_or_else(|| PathBuf::from(hp));
            match &m.sub_path {
                Some(s) => {
                    let p = base.join(s);
                    std::fs::create_dir_all(&p).expect("creating subPath dir");
                    p
                }
                None => base,
            }
        } else if let Some(cm) = &m.config_map {
            spec.config_maps
                .iter()
                .find(|(n, _)| n == cm)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| panic!("no directory given for configMap {cm}"))
        } else if m.empty_dir {
            a.push(format!("--tmpfs={}", m.mount_path));
            continue;
        } else {
            panic!("volume {} has a type this test does not emulate", m.volume);
        };
        let mut opts = Vec::new();
        if m.read_only {
            opts.push("ro");
        }
        match m.propagation.as_deref() {
            None | Some("None") => {}
            Some("HostToContainer") => opts.push("rslave"),
            Some("Bidirectional") => opts.push("rshared"),
            Some(p) => panic!("unknown mountPropagation {p}"),
        }
        let mut v = format!("--volume={}:{}", src.display(), m.mount_path);
        if !opts.is_empty() {
            v.push(':');
            v.push_str(&opts.join(","));
        }
        a.push(v);
    }
    for (src, dst) in &spec.extra_mounts {
        a.push(format!("--volume={}:{dst}:ro", src.display()));
    }
    let cmd: Vec<String> = c["command"]
        .as_array()
        .expect("the container has a command")
        .iter()
        .map(|s| s.as_str().expect("command word").to_string())
        .collect();
    a.push(format!("--entrypoint={}", cmd[0]));
    a.push(image.into());
    a.extend(cmd[1..].iter().cloned());
    a.extend(
        c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("arg").to_string()),
    );
    a
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

/// A panic elsewhere must not silence the output readers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A container started with `podman run` (attached), its stdout lines collected; removed with
/// `podman rm -f` when dropped.
pub struct Container<'p> {
    podman: &'p Podman,
    pub name: String,
    child: Option<Child>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<String>>,
    /// The threads reading `podman run`'s stdout and stderr, joined after it exits.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl<'p> Container<'p> {
    pub fn start(podman: &'p Podman, run_args: &[String]) -> Self {
        let name = run_args
            .iter()
            .position(|a| a == "--name")
            .map(|i| run_args[i + 1].clone())
            .expect("--name");
        let mut child = podman
            .cmd()
            .arg("run")
            .args(run_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting podman run");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (o, e) = (stdout.clone(), stderr.clone());
        let out = child.stdout.take().expect("stdout");
        let out_reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lock(&o).push(l);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let err_reader = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = lock(&e);
                s.push_str(&l);
                s.push('\n');
            }
        });
        Container {
            podman,
            name,
            child: Some(child),
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn stderr_text(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Stdout lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        lock(&self.stdout)
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.json_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                let stderr = self.stderr_text();
                let last: Vec<String> = lock(&self.stdout)
                    .iter()
                    .rev()
                    .take(10)
                    .map(|l| l.chars().take(300).collect())
                    .collect();
                panic!(
                    "timed out waiting for {what} from container {}; stderr:\n{stderr}\nlast stdout:\n{}",
                    self.name,
                    last.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace`) and waits for `podman run` to end;
    /// returns its exit code and how long the stop took.
    pub fn stop(&mut self, grace: Duration) -> (Option<i32>, Duration) {
        let t = Instant::now();
        let _ = self
            .podman
            .cmd()
            .args(["stop", "--time", &grace.as_secs().to_string(), &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let code = self.wait(grace + Duration::from_secs(20));
        (code, t.elapsed())
    }

    /// Waits for `podman run` to end by itself; its exit code. Everything it printed has been
    /// read when this returns.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        let code = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        crate::join_readers(&mut self.readers, Duration::from_secs(10));
        code
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["rm", "--force", "--time", "2", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
