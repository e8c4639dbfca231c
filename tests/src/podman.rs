//! A podman 4 with its CNI backend, confined to a temp dir of the test's own: `--root`,
//! `--runroot`, `tmp_dir`, vfs storage, no events log, a CNI config dir and plugin dir (the
//! Debian plugins plus cniscope-cni), and an image made here from Debian's static busybox
//! (`podman import` of a one-binary root filesystem): no registry is needed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::netns::LinkGuard;
use crate::plugin_chain::{DirGuard, plugin_bin};

pub const IMAGE: &str = "localhost/cniscope-busybox:test";
const BUSYBOX: &str = "/bin/busybox";

pub struct Podman {
    pub dir: DirGuard,
    pub network: String,
    _bridge: LinkGuard,
    pub subnet: String,
}

impl Default for Podman {
    /// bridge (host-local IPAM) → cniscope-cni.
    fn default() -> Self {
        Self::with_plugins(|_, _| Vec::new())
    }
}

impl Podman {
    /// bridge (host-local IPAM) → cniscope-cni.
    pub fn new() -> Self {
        Self::default()
    }

    /// bridge (host-local IPAM), then the plugins `more(dir, bridge)` returns, then
    /// cniscope-cni.
    pub fn with_plugins(more: impl Fn(&Path, &str) -> Vec<Value>) -> Self {
        crate::require_root();
        for bin in ["/usr/bin/podman", "/usr/sbin/runc", BUSYBOX] {
            assert!(
                Path::new(bin).exists(),
                "{bin} missing: apt-get install podman runc busybox-static"
            );
        }
        let dir = DirGuard::new("cspodman");
        let d = dir.path();
        // Plugin dir: the Debian plugins plus cniscope-cni.
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for e in std::fs::read_dir(crate::CNI_BIN).unwrap().flatten() {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(plugin_bin(), bin.join("cniscope-cni")).unwrap();
        let network = crate::unique("csnet");
        let bridge = crate::unique("cspb");
        // A /24 per instance: tests in this file run in parallel, each with its own bridge.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = 150 + (std::process::id() + k * 13) % 100;
        let subnet = format!("10.255.{n}.0/24");
        let netd = d.join("net.d");
        std::fs::create_dir_all(&netd).unwrap();
        let conflist = json!({
            "cniVersion": "0.4.0",
            "name": network,
            "plugins": []
        });
        let mut plugins = vec![json!(
            {"type": "bridge", "bridge": bridge, "isGateway": true,
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": d.join("ipam"),
                      "routes": [{"dst": "0.0.0.0/0"}]}})];
        plugins.extend(more(d, &bridge));
        plugins.push(json!({"type": "cniscope-cni", "tagDir": d.join("tags"),
                            "policy": {"allow": ["route add"]}}));
        let mut conflist = conflist;
        conflist["plugins"] = Value::Array(plugins);
        std::fs::write(
            netd.join(format!("{network}.conflist")),
            conflist.to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\nruntime = \"runc\"\nevents_logger = \"none\"\ntmp_dir = \"{}\"\n",
            bin.display(),
            netd.display(),
            d.join("tmp").display()
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        let p = Podman {
            dir,
            network,
            _bridge: LinkGuard(bridge),
            subnet,
        };
        p.make_image();
        p
    }

    pub fn podman(&self, cni_args: Option<&str>, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        match cni_args {
            Some(a) => c.env("CNI_ARGS", a),
            None => c.env_remove("CNI_ARGS"),
        };
        c.output().expect("running podman")
    }

    fn make_image(&self) {
        let rootfs = self.dir.path().join("rootfs");
        let b = rootfs.join("bin");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::copy(BUSYBOX, b.join("busybox")).unwrap();
        for applet in ["sh", "ip", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", b.join(applet)).unwrap();
        }
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let out = self.podman(None, &["import", tar.to_str().unwrap(), IMAGE]);
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn tags(&self) -> Vec<Value> {
        let Ok(rd) = std::fs::read_dir(self.dir.path().join("tags")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(None, &["rm", "-af", "-t", "0"]);
        let _ = self.podman(None, &["rmi", "-af"]);
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
