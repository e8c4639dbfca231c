//! End to end, as root: a live `cniscope agent`, `cniscope tui` in tmux, a real chain ADD
//! (bridge + host-local → tuning → portmap) run by `cniscope exec` in a netns made here, and
//! the screen read with `tmux capture-pane` until it shows the pod's invocation, its steps and
//! its namespace. Once through the agent's socket, once with the TUI running its own agent.
//! Everything made is removed by guards: the tmux server, the agent, the netns, the bridge and
//! the work directory.

mod tui_support;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use cniscope_tests::agent::Agent;
use cniscope_tests::netns::{LinkGuard, Netns};
use cniscope_tests::{require_root, unique};
use tui_support::{TempDir, Tmux, cniscope};

/// One at a time: each test loads the eBPF programs and runs a chain.
static SERIAL: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(30);

struct Chain {
    dir: TempDir,
    ns: Netns,
    _bridge: LinkGuard,
    pod: String,
}

impl Chain {
    fn new(subnet_octet: u8) -> Self {
        let dir = TempDir::new("cniscope-tui-e2e-");
        let ns = Netns::new(&unique("tuie"));
        let bridge = unique("tuibr");
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"tui-e2e","plugins":[
 {{"type":"bridge","bridge":"{bridge}","isGateway":true,
  "ipam":{{"type":"host-local","dataDir":"{dir}/ipam","ranges":[[{{"subnet":"10.254.{subnet_octet}.0/24"}}]]}}}},
 {{"type":"tuning","sysctl":{{"net.ipv4.conf.eth0.rp_filter":"2"}}}},
 {{"type":"portmap","capabilities":{{"portMappings":true}}}}
]}}"#,
            dir = dir.0.display()
        );
        std::fs::write(dir.0.join("net.conflist"), conflist).expect("writing the conflist");
        Self {
            ns,
            _bridge: LinkGuard(bridge),
            pod: unique("web-"),
            dir,
        }
    }

    fn exec(&self, cmd: &str) {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=tui-e2e;K8S_POD_NAME={}",
            self.pod
        );
        let out = Command::new(cniscope())
            .args(["exec", cmd])
            .arg(self.dir.0.join("net.conflist"))
            .arg(self.ns.path())
            .args(["--cni-path", cniscope_tests::CNI_BIN, "--args", &args])
            .arg("--cache-dir")
            .arg(self.dir.0.join("cache"))
            .output()
            .expect("running cniscope exec");
        assert!(
            out.status.success(),
            "cniscope exec {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        // DEL releases the IPAM lease and portmap's rules; the netns and bridge guards follow.
        let args = format!("K8S_POD_NAMESPACE=tui-e2e;K8S_POD_NAME={}", self.pod);
        let _ = Command::new(cniscope())
            .args(["exec", "del"])
            .arg(self.dir.0.join("net.conflist"))
            .arg(self.ns.path())
            .args(["--cni-path", cniscope_tests::CNI_BIN, "--args", &args])
            .arg("--cache-dir")
            .arg(self.dir.0.join("cache"))
            .output();
    }
}

/// Filters the list to the pod, checks its row, opens its timeline and its netns.
fn check_screens(t: &Tmux, c: &Chain) {
    let label = format!("tui-e2e/{}", c.pod);
    t.keys(&["/"]);
    t.type_text(&format!("pod:{}", c.pod));
    t.keys(&["Enter"]);
    let s = t.wait_for("the pod's ADD", WAIT, |s| {
        s.lines()
            .any(|l| l.contains(&label) && l.contains("ADD") && l.contains(" ok "))
    });
    assert!(s.contains("bridge›tuning›portm"), "{s}");
    t.keys(&["g", "Enter"]);
    // Every row named here must be on one settled screen (a capture can catch a frame half
    // written, header first); wait_for panics with the screen if they never all appear.
    let wants = [
        format!("ADD {label} tui-e2e eth0"),
        "bridge".into(),
        "host-local".into(),
        "tuning".into(),
        "portmap".into(),
        "✓ link add eth0 type veth".into(),
        "✓ addr add 10.254.".into(),
    ];
    t.wait_for("the timeline with every step", WAIT, |s| {
        wants.iter().all(|w| s.contains(w.as_str()))
    });
    // The bridge step's detail: its config as it read it on stdin.
    t.keys(&["Enter"]);
    t.wait_for("the bridge step's detail with its config", WAIT, |s| {
        s.contains("bridge ADD (step 0)") && s.contains("\"type\": \"bridge\"")
    });
    t.keys(&["n"]);
    t.wait_for("the netns view with the pod's netns", WAIT, |s| {
        s.contains("changes runs") && s.contains(&c.ns.name) && s.contains(&label)
    });
}

#[test]
fn tui_over_the_agent_socket_shows_a_live_chain() {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start(&[]);
    let c = Chain::new(151);
    let t = Tmux::tui(&["--socket", agent.socket.to_str().unwrap_or("")]);
    t.wait_for("the connection", WAIT, |s| {
        s.contains(&format!("agent {}", agent.socket.display())) && !s.contains("DISCONNECTED")
    });
    c.exec("add");
    check_screens(&t, &c);
    t.keys(&["q"]);
    t.wait_for("a clean exit", WAIT, |s| s.contains("EXITED 0"));
}

#[test]
fn tui_runs_its_own_agent_and_stops_it() {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Chain::new(152);
    let t = Tmux::tui(&["--spawn-agent"]);
    let s = t.wait_for("its agent ready", Duration::from_secs(90), |s| {
        s.contains("agent ready (pid ")
    });
    let pid: u32 = s
        .split("agent ready (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no agent pid on screen:\n{s}"));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    c.exec("add");
    check_screens(&t, &c);
    t.keys(&["q"]);
    t.wait_for("a clean exit", WAIT, |s| s.contains("EXITED 0"));
    // The TUI stopped its agent (SIGINT) before exiting.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the TUI's agent (pid {pid}) outlived it"
    );
}
