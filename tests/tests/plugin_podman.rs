//! cniscope-cni driven by a real runtime: podman 4 with its CNI backend, a conflist
//! bridge → cniscope-cni in a config dir of the test's own, and the commands passed the way
//! podman passes extra CNI arguments (it appends its own environment's `CNI_ARGS` pairs to the
//! ones it sets, in containers/common's `getRuntimeConfig`).
//!
//! Everything podman keeps is redirected into the test's temp dir (`--root`, `--runroot`,
//! `tmp_dir`, vfs storage, no events log), and the image is made here from Debian's static
//! busybox (`podman import` of a one-binary root filesystem): no registry is needed.

use std::path::PathBuf;

use cniscope_tests::plugin_chain::Chain;
use cniscope_tests::podman::{IMAGE, Podman, text};

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
