//! A real chain for the `cniscope-cni` tests: a netns, a bridge (with host-local IPAM in a
//! private /24 and a data dir of its own), a tag dir, and a way to call plugins as a runtime does.
//! Everything is removed when the `Chain` drops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::netns::{LinkGuard, Netns};

/// Removes a directory tree when dropped.
pub struct DirGuard(pub PathBuf);

impl DirGuard {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(crate::unique(prefix));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        DirGuard(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Out {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} (stderr {:?})",
                String::from_utf8_lossy(&self.stdout),
                String::from_utf8_lossy(&self.stderr)
            )
        })
    }
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs a plugin binary as a runtime would: a clean environment, config on stdin.
pub fn invoke(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut c = Command::new(bin);
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {bin:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writing stdin");
    let o = child.wait_with_output().expect("waiting for the plugin");
    Out {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: o.stderr,
    }
}

pub fn plugin_bin() -> PathBuf {
    let p = crate::bin_dir().join("cniscope-cni");
    assert!(
        p.is_file(),
        "{p:?} missing: run `cargo build -p cniscope-cni` first (or set CNISCOPE_BIN_DIR)"
    );
    p
}

pub const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One pod's worth of real networking.
pub struct Chain {
    pub ns: Netns,
    pub bridge: String,
    pub subnet: String,
    pub container_id: String,
    pub ifname: String,
    pub dir: DirGuard,
    _bridge_guard: LinkGuard,
}

impl Chain {
    pub fn new() -> Self {
        crate::require_root();
        use std::sync::atomic::{AtomicU32, Ordering};
        static NET: AtomicU32 = AtomicU32::new(0);
        let n = 100 + (std::process::id() + NET.fetch_add(1, Ordering::Relaxed) * 7) % 150;
        let bridge = crate::unique("csb");
        Chain {
            ns: Netns::new(&crate::unique("csn")),
            _bridge_guard: LinkGuard(bridge.clone()),
            bridge,
            subnet: format!("10.255.{n}.0/24"),
            container_id: crate::unique("cscid"),
            ifname: "eth0".into(),
            dir: DirGuard::new("cscdir"),
        }
    }

    pub fn tag_dir(&self) -> PathBuf {
        self.dir.path().join("tags")
    }

    pub fn bridge_plugin(&self) -> Value {
        json!({
            "type": "bridge",
            "bridge": self.bridge,
            "ipam": {
                "type": "host-local",
                "subnet": self.subnet,
                "dataDir": self.dir.path().join("ipam"),
            }
        })
    }

    /// A cniscope-cni plugin entry with the tag dir set and `extra` merged in.
    pub fn cniscope_plugin(&self, extra: Value) -> Value {
        let mut p = json!({"type": "cniscope-cni", "tagDir": self.tag_dir()});
        if let (Some(o), Value::Object(e)) = (p.as_object_mut(), extra) {
            o.extend(e);
        }
        p
    }

    /// `plugin` as the plugin's stdin for `version`, with an optional prevResult.
    pub fn stdin(&self, version: &str, plugin: &Value, prev: Option<&Value>) -> Vec<u8> {
        let mut c = plugin.clone();
        c["cniVersion"] = json!(version);
        c["name"] = json!("cniscope-plugin-test");
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        serde_json::to_vec(&c).expect("config")
    }

    pub fn env<'a>(&'a self, command: &'a str, args: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut e = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", self.container_id.as_str()),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", self.ifname.as_str()),
            ("CNI_PATH", crate::CNI_BIN),
        ];
        if let Some(a) = args {
            e.push(("CNI_ARGS", a));
        }
        e
    }

    /// Runs a Debian plugin (`bridge`, …) for `command`.
    pub fn run_debian(&self, name: &str, command: &str, stdin: &[u8]) -> Out {
        let path = self.ns.path();
        let mut env = self.env(command, None);
        env[2].1 = &path;
        invoke(&Path::new(crate::CNI_BIN).join(name), &env, stdin)
    }

    /// Runs cniscope-cni for `command` with optional CNI_ARGS.
    pub fn run_cniscope(&self, command: &str, args: Option<&str>, stdin: &[u8]) -> Out {
        let path = self.ns.path();
        let mut env = self.env(command, args);
        env[2].1 = &path;
        invoke(&plugin_bin(), &env, stdin)
    }

    /// bridge ADD in `version`; returns its result (the next plugin's prevResult).
    pub fn bridge_add(&self, version: &str) -> Value {
        let out = self.run_debian(
            "bridge",
            "ADD",
            &self.stdin(version, &self.bridge_plugin(), None),
        );
        assert!(
            out.ok(),
            "bridge ADD failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.json()
    }

    pub fn bridge_del(&self, version: &str, prev: Option<&Value>) {
        let _ = self.run_debian(
            "bridge",
            "DEL",
            &self.stdin(version, &self.bridge_plugin(), prev),
        );
    }

    /// The tag written for this chain's netns, if any.
    pub fn tag(&self) -> Option<Value> {
        let p = self.tag_dir().join(format!("{}.json", self.ns.inode()));
        let b = std::fs::read(p).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// `ip route show PREFIX` in the host namespace.
    pub fn host_route(prefix: &str) -> String {
        let o = Command::new("ip")
            .args(["route", "show", prefix])
            .output()
            .expect("ip route show");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}
