//! The OCI image from `cargo xtask image`, run by podman exactly as the DaemonSet in deploy/
//! describes each container (command, capabilities, host mounts, env, read-only root, seccomp
//! default), against this host's real kernel and real CNI plugins:
//!
//! - the agent, with only the DaemonSet's capabilities, sees a plugin run on the host and prints
//!   it byte-exact on the container's stdout (what `kubectl logs` shows), then stops on SIGTERM;
//! - the install step puts cniscope-cni into a CNI bin dir by rename (a new inode, never a
//!   half-written file, while a loop keeps executing the old one), is idempotent, and writes the
//!   kubeconfig (0600) from a service account directory;
//! - the kubeconfig sidecar follows a rotated token and stops at once on SIGTERM.
//!
//! Host paths that would be written (CNI dirs, /run/cniscope) are replaced by temp dirs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cniscope_tests::agent::bytes;
use cniscope_tests::deploy::{
    Container, Podman, RunSpec, TempDir, deploy_dir, find, kustomized_docs, parse_file,
    podman_run_args, test_image,
};
use cniscope_tests::{bin_dir, require_root, unique};
use serde_json::Value;

fn daemonset() -> Value {
    find(&kustomized_docs(&deploy_dir()), "DaemonSet", "cniscope").clone()
}

fn install_script_dir() -> TempDir {
    let docs = kustomized_docs(&deploy_dir());
    let script = find(&docs, "ConfigMap", "cniscope-install")["data"]["install.sh"]
        .as_str()
        .expect("install.sh")
        .to_string();
    let d = TempDir::new("cns-scripts-");
    std::fs::write(d.path().join("install.sh"), script).unwrap();
    d
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
        child.stdin.take().unwrap().write_all(stdin).unwrap();
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

/// The fake service account a kubelet would project.
fn service_account(dir: &Path, token: &str) {
    std::fs::create_dir_all(dir).unwrap();
    write_atomic(&dir.join("token"), token.as_bytes());
    std::fs::write(
        dir.join("ca.crt"),
        "-----BEGIN CERTIFICATE-----\nTUlJQ2Zha2VjYQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
}

fn write_atomic(p: &Path, data: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

struct InstallEnv {
    bin: TempDir,
    net_d: TempDir,
    run: TempDir,
    sa: TempDir,
    scripts: TempDir,
}

impl InstallEnv {
    fn new() -> Self {
        let e = InstallEnv {
            bin: TempDir::new("cns-bin-"),
            net_d: TempDir::new("cns-netd-"),
            run: TempDir::new("cns-run-"),
            sa: TempDir::new("cns-sa-"),
            scripts: install_script_dir(),
        };
        service_account(e.sa.path(), "token-1");
        e
    }

    fn spec<'a>(&'a self, container: &'a str, env: Vec<(&'a str, String)>) -> RunSpec<'a> {
        RunSpec {
            container,
            remap: vec![
                ("/opt/cni/bin", self.bin.path().to_path_buf()),
                ("/etc/cni/net.d", self.net_d.path().to_path_buf()),
                ("/run/cniscope", self.run.path().to_path_buf()),
            ],
            config_maps: vec![("cniscope-install", self.scripts.path().to_path_buf())],
            extra_mounts: vec![(
                self.sa.path().to_path_buf(),
                "/var/run/secrets/kubernetes.io/serviceaccount",
            )],
            extra_env: env,
        }
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.net_d.path().join("cniscope.d/cniscope.kubeconfig")
    }

    fn api_env(host: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST", host.to_string()),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
        ]
    }
}

/// Runs a DaemonSet container to completion; returns (exit code, stderr).
fn run_to_end(podman: &Podman, ds: &Value, spec: &RunSpec) -> (Option<i32>, String) {
    let args = podman_run_args(ds, spec, &unique("cniscope-install-test-"), test_image());
    let mut c = Container::start(podman, &args);
    let code = c.wait(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(100));
    let err = c.stderr_text();
    (code, err)
}

fn kubeconfig_of(p: &Path) -> Value {
    let docs = parse_file(p);
    docs[0].value.clone()
}

#[test]
fn image_install_step_installs_the_plugin_by_rename_and_writes_the_kubeconfig() {
    require_root();
    let plugin_src = bin_dir().join("cniscope-cni");
    assert!(
        plugin_src.is_file(),
        "{} missing: the image would have no plugin to install",
        plugin_src.display()
    );
    let ds = daemonset();
    let env = InstallEnv::new();
    let podman = Podman::new();
    // An older plugin in place, executed in a loop all through the install, as a runtime would.
    let target = env.bin.path().join("cniscope-cni");
    std::fs::copy(format!("{}/loopback", cniscope_tests::CNI_BIN), &target).unwrap();
    let old_inode = std::fs::metadata(&target).unwrap().ino();
    let stop = Arc::new(AtomicBool::new(false));
    let (runs, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let looper = {
        let (stop, runs, failures, target) =
            (stop.clone(), runs.clone(), failures.clone(), target.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = cniscope_tests::plugin_chain::invoke(
                    &target,
                    &[("CNI_COMMAND", "VERSION")],
                    br#"{"cniVersion":"1.0.0"}"#,
                );
                runs.fetch_add(1, Ordering::Relaxed);
                if !out.ok() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
            errors
        })
    };
    let (code, err) = run_to_end(
        &podman,
        &ds,
        &env.spec("install", InstallEnv::api_env("10.96.0.1")),
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let errors = looper.join().unwrap();
    assert_eq!(code, Some(0), "install step failed:\n{err}");
    assert!(err.contains("installed"), "{err}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{errors:?}");
    assert!(runs.load(Ordering::Relaxed) > 0);

    let meta = std::fs::metadata(&target).unwrap();
    assert_ne!(meta.ino(), old_inode, "replaced in place, not by rename");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&plugin_src).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.bin.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "cniscope-cni")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let v = cniscope_tests::plugin_chain::invoke(
        &target,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(
        v.ok() && v.json()["supportedVersions"].is_array(),
        "installed plugin runs"
    );

    // The kubeconfig: 0600 in a 0700 directory, the in-cluster server, CA and token.
    let kc = env.kubeconfig();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&kc), 0o600);
    assert_eq!(mode(kc.parent().unwrap()), 0o700);
    let k = kubeconfig_of(&kc);
    assert_eq!(k["current-context"], "cniscope");
    assert_eq!(
        k["clusters"][0]["cluster"]["server"],
        "https://10.96.0.1:443"
    );
    assert_eq!(k["users"][0]["user"]["token"], "token-1");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            k["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(ca, std::fs::read(env.sa.path().join("ca.crt")).unwrap());
    assert_eq!(mode(&env.run.path().join("tags")), 0o700);

    // Again: nothing changes (same binary, same token).
    let inode = std::fs::metadata(&target).unwrap().ino();
    let kc_inode = std::fs::metadata(&kc).unwrap().ino();
    let (code, err) = run_to_end(
        &podman,
        &ds,
        &env.spec("install", InstallEnv::api_env("10.96.0.1")),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("already this version"), "{err}");
    assert_eq!(std::fs::metadata(&target).unwrap().ino(), inode);
    assert_eq!(std::fs::metadata(&kc).unwrap().ino(), kc_inode);

    // An IPv6 service address is bracketed.
    let (code, err) = run_to_end(
        &podman,
        &ds,
        &env.spec("install", InstallEnv::api_env("fd00:10:96::1")),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        kubeconfig_of(&kc)["clusters"][0]["cluster"]["server"],
        "https://[fd00:10:96::1]:443"
    );

    // No token: the step fails and leaves the last good kubeconfig alone.
    std::fs::remove_file(env.sa.path().join("token")).unwrap();
    let before = std::fs::read(&kc).unwrap();
    let (code, _) = run_to_end(
        &podman,
        &ds,
        &env.spec("install", InstallEnv::api_env("10.96.0.1")),
    );
    assert_ne!(code, Some(0), "install succeeded without a token");
    assert_eq!(std::fs::read(&kc).unwrap(), before);
}

#[test]
fn image_kubeconfig_sidecar_follows_token_rotation_and_stops_on_sigterm() {
    require_root();
    let ds = daemonset();
    let env = InstallEnv::new();
    let podman = Podman::new();
    let mut api = InstallEnv::api_env("10.96.0.1");
    api.push(("CNISCOPE_KUBECONFIG_REFRESH_SECONDS", "1".into()));
    let args = podman_run_args(
        &ds,
        &env.spec("kubeconfig", api),
        &unique("cniscope-kubeconfig-test-"),
        test_image(),
    );
    let mut side = Container::start(&podman, &args);
    let kc = env.kubeconfig();
    let wait_token = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if kc.exists() && kubeconfig_of(&kc)["users"][0]["user"]["token"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kubeconfig never got token {want}; stderr:\n{}",
                side.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_token("token-1");
    service_account(env.sa.path(), "token-2");
    wait_token("token-2");
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let (code, took) = side.stop(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the sidecar did not exit cleanly on SIGTERM");
    assert!(
        took < Duration::from_secs(5),
        "the sidecar took {took:?} to stop (it should exit on SIGTERM, not wait for SIGKILL)"
    );
}
