//! cniscope-cni driven by a real runtime: podman 4 with its CNI backend, a conflist
//! bridge → cniscope-cni in a config dir of the test's own, and the commands passed the way
//! podman passes extra CNI arguments (it appends its own environment's `CNI_ARGS` pairs to the
//! ones it sets, in containers/common's `getRuntimeConfig`).
//!
//! Everything podman keeps is redirected into the test's temp dir (`--root`, `--runroot`,
//! `tmp_dir`, vfs storage, no events log), and the image is made here from Debian's static
//! busybox (`podman import` of a one-binary root filesystem): no registry is needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cniscope_tests::netns::LinkGuard;
use cniscope_tests::plugin_chain::{Chain, DirGuard, plugin_bin};
use serde_json::{Value, json};

const IMAGE: &str = "localhost/cniscope-busybox:test";
const BUSYBOX: &str = "/bin/busybox";

struct Podman {
    dir: DirGuard,
    network: String,
    _bridge: LinkGuard,
    subnet: String,
}

impl Podman {
    fn new() -> Self {
        cniscope_tests::require_root();
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
        for e in std::fs::read_dir(cniscope_tests::CNI_BIN)
            .unwrap()
            .flatten()
        {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(plugin_bin(), bin.join("cniscope-cni")).unwrap();
        let network = cniscope_tests::unique("csnet");
        let bridge = cniscope_tests::unique("cspb");
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
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true,
                 "ipam": {"type": "host-local", "subnet": subnet, "dataDir": d.join("ipam"),
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "cniscope-cni", "tagDir": d.join("tags"),
                 "policy": {"allow": ["route add"]}}
            ]
        });
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

    fn podman(&self, cni_args: Option<&str>, args: &[&str]) -> Output {
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

    fn tags(&self) -> Vec<Value> {
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

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const ARGS: &str =
    "CNISCOPE_COMMANDS=[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\",\"ip route\"]";

#[test]
fn podman_cni_backend_runs_commands_from_cni_args() {
    let p = Podman::new();
    let net = format!("--network={}", p.network);
    // The container itself sees the route the plugin added.
    let out = p.podman(
        Some(ARGS),
        &["run", "--rm", &net, IMAGE, "/bin/ip", "route"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(routes.contains("192.0.3.0/24 dev eth0"), "{}", text(&out));
    assert!(routes.contains(&p.subnet[..p.subnet.len() - 3]), "{routes}");
    assert_eq!(
        Chain::host_route("192.0.3.0/24").trim(),
        "",
        "route leaked into the host"
    );
    // --rm ran DEL: the tag is gone.
    assert!(
        p.tags().is_empty(),
        "tag left after podman rm: {:?}",
        p.tags()
    );

    // A long-running container: its tag is there while it runs, keyed by its netns inode.
    let name = cniscope_tests::unique("csctr");
    let out = p.podman(
        Some(ARGS),
        &["run", "-d", "--name", &name, &net, IMAGE, "sleep", "60"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tags = p.tags();
    assert_eq!(tags.len(), 1, "{tags:?}");
    let att = &tags[0]["attachments"][0];
    assert_eq!(att["source"], "CNI_ARGS CNISCOPE_COMMANDS");
    assert_eq!(att["network"], p.network.as_str());
    assert_eq!(att["commands"][0]["outcome"], "ran");
    assert!(
        att["commands"][1]["stdout"]
            .as_str()
            .unwrap()
            .contains("192.0.3.0/24")
    );
    let netns_path = PathBuf::from(att["netns_path"].as_str().unwrap());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        Some(tags[0]["netns_inode"].as_u64().unwrap()),
        std::fs::metadata(&netns_path).ok().map(|m| m.ino()),
        "tag keyed by the container's netns inode"
    );
    let out = p.podman(None, &["rm", "-f", "-t", "0", &name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(p.tags().is_empty(), "DEL through podman removes the tag");
}

#[test]
fn podman_refused_command_does_not_break_the_container() {
    let p = Podman::new();
    let net = format!("--network={}", p.network);
    // Passthrough (the default): the container starts, the refusal is in the tag.
    let name = cniscope_tests::unique("csctr");
    let out = p.podman(
        Some("CNISCOPE_COMMANDS=[\"ip -n other route\",\"ip route\"]"),
        &["run", "-d", "--name", &name, &net, IMAGE, "sleep", "60"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tags = p.tags();
    let cmds = &tags[0]["attachments"][0]["commands"];
    assert_eq!(cmds[0]["outcome"], "refused", "{cmds}");
    assert!(
        cmds[0]["reason"]
            .as_str()
            .unwrap()
            .contains("network namespace")
    );
    assert_eq!(cmds[1]["outcome"], "ran");
}
