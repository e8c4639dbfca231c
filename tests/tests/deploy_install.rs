//! The DaemonSet's install step and kubeconfig sidecar, run by podman from the image of
//! `cargo xtask image` exactly as deploy/daemonset.yaml describes them, with the host's CNI dirs
//! and /run/cniscope replaced by temp dirs and a fake projected service account:
//!
//! - the install step puts cniscope-cni into the bin dir by rename (a new inode, never a
//!   half-written file, while a loop keeps executing the old one), is idempotent, brackets an
//!   IPv6 API address, writes the kubeconfig (0600 in 0700) and leaves the last good one alone
//!   when the token is missing;
//! - the sidecar follows a rotated token and exits at once on SIGTERM.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
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

/// Executes a plugin with CNI_COMMAND=VERSION as a runtime would; Err says how it failed
/// (could not exec, e.g. ETXTBSY or ENOEXEC on a half-written file, or a non-zero exit). A
/// plugin may exit before reading stdin, so a failed write to it is not an error.
fn version(plugin: &Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(br#"{"cniVersion":"1.0.0"}"#);
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
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
                runs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = version(&target) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(e);
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
    let v = version(&target).expect("the installed plugin runs");
    let v: Value = serde_json::from_slice(&v).expect("VERSION prints JSON");
    assert!(v["supportedVersions"].is_array(), "{v}");

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
        took < Duration::from_secs(9),
        "the sidecar took {took:?} to stop (it should exit on SIGTERM, not wait for SIGKILL)"
    );
}
