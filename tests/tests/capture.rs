//! Kernel capture of CNI plugin runs (issue: exec, stdin/stdout/stderr, exit), asserted from the
//! agent's NDJSON against real plugins, a real netns and the real kernel.

use std::time::Duration;

use cniscope_tests::agent::{Agent, bytes};
use cniscope_tests::cni::{Invocation, invoke, version};
use cniscope_tests::netns::{LinkGuard, Netns};
use cniscope_tests::{require_root, unique};
use serde_json::{Value, json};

struct Chain {
    ns: Netns,
    _bridge: LinkGuard,
    ipam_dir: tempdir::Dir,
    conf: Value,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn chain(subnet_octet: u8) -> Chain {
    let ns = Netns::new(&unique("cnst"));
    let bridge = unique("cnsbr");
    let ipam_dir = tempdir::Dir(std::env::temp_dir().join(unique("cns-ipam-")));
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "cniscope-test",
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": ipam_dir.0,
            "ranges": [[{"subnet": format!("10.254.{subnet_octet}.0/24")}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    });
    Chain {
        ns,
        _bridge: LinkGuard(bridge),
        ipam_dir,
        conf,
    }
}

fn runs_of(lines: &[Value], f: impl Fn(&Value) -> bool) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "run" && f(v))
        .cloned()
        .collect()
}

#[test]
fn bridge_host_local_add_check_del_are_captured_byte_exact() {
    require_root();
    let agent = Agent::start(&[]);
    let c = chain(101);
    let netns = c.ns.path();
    let cid = unique("cid");
    let inv = |command| Invocation {
        command,
        containerid: &cid,
        netns: &netns,
        ifname: "eth0",
        args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=demo"),
    };

    let add_in = serde_json::to_vec(&c.conf).unwrap();
    let add = invoke("bridge", &inv("ADD"), &add_in);
    assert_eq!(
        add.code,
        Some(0),
        "ADD failed: {}",
        String::from_utf8_lossy(&add.stdout)
    );
    let result: Value = serde_json::from_slice(&add.stdout).unwrap();
    // CHECK and DEL get the ADD result as prevResult, as a runtime sends it.
    let mut check_conf = c.conf.clone();
    check_conf["prevResult"] = result.clone();
    let check_in = serde_json::to_vec(&check_conf).unwrap();
    let check = invoke("bridge", &inv("CHECK"), &check_in);
    assert_eq!(
        check.code,
        Some(0),
        "CHECK failed: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let del = invoke("bridge", &inv("DEL"), &check_in);
    assert_eq!(
        del.code,
        Some(0),
        "DEL failed: {}",
        String::from_utf8_lossy(&del.stdout)
    );

    for (cmd, run) in [("ADD", &add), ("CHECK", &check), ("DEL", &del)] {
        let r = agent.run_of(run.pid);
        assert_eq!(r["role"], "plugin");
        assert_eq!(r["filename"], "/usr/lib/cni/bridge");
        assert_eq!(r["cni"]["command"], cmd);
        assert_eq!(r["cni"]["containerid"], cid.as_str());
        assert_eq!(r["cni"]["ifname"], "eth0");
        assert_eq!(r["cni"]["netns"], netns.as_str());
        assert_eq!(bytes(&r["stdin"]), run.stdin, "{cmd}: stdin differs");
        assert_eq!(bytes(&r["stdout"]), run.stdout, "{cmd}: stdout differs");
        assert_eq!(bytes(&r["stderr"]), run.stderr, "{cmd}: stderr differs");
        assert_eq!(r["exit"]["code"], 0, "{cmd}");
        assert!(r["duration_ns"].as_u64().unwrap() > 0, "{cmd}: no duration");
        assert_eq!(r["complete"], true, "{cmd}: {}", r["problems"]);

        // host-local ran as bridge's child, with its own stdin (bridge's delegated config).
        let ipam = agent.wait_for(&format!("{cmd} host-local"), Duration::from_secs(10), |v| {
            v["type"] == "run" && v["ppid"] == run.pid && v["filename"] == "/usr/lib/cni/host-local"
        });
        assert_eq!(ipam["role"], "plugin");
        assert_eq!(ipam["cni"]["command"], cmd);
        assert_eq!(ipam["exit"]["code"], 0);
        let ipam_in: Value = serde_json::from_slice(&bytes(&ipam["stdin"])).unwrap();
        assert_eq!(ipam_in["ipam"]["type"], "host-local");
    }

    // Exactly one exec per plugin run: no duplicates for the three bridge pids.
    let lines = agent.stop();
    for run in [&add, &check, &del] {
        let execs = lines
            .iter()
            .filter(|v| v["type"] == "exec" && v["tgid"] == run.pid)
            .count();
        assert_eq!(execs, 1, "pid {} has {execs} exec events", run.pid);
    }
    let ipam_runs = runs_of(&lines, |v| v["filename"] == "/usr/lib/cni/host-local");
    assert_eq!(ipam_runs.len(), 3, "one host-local per command");
    drop(c.ipam_dir);
}

#[test]
fn broken_config_shows_nonzero_exit_and_error_json() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsx"));
    let netns = ns.path();
    let inv = Invocation {
        command: "ADD",
        containerid: "broken",
        netns: &netns,
        ifname: "eth0",
        args: None,
    };
    // An IPAM type that does not exist: bridge fails and prints CNI error JSON.
    let conf = br#"{"cniVersion":"1.0.0","name":"broken","type":"bridge","bridge":"cnsbad0","ipam":{"type":"no-such-ipam"}}"#;
    let _bridge = LinkGuard("cnsbad0".into());
    let run = invoke("bridge", &inv, conf);
    assert_ne!(run.code, Some(0));
    let r = agent.run_of(run.pid);
    assert_eq!(r["exit"]["code"], run.code.unwrap());
    assert_eq!(bytes(&r["stdin"]), conf.to_vec());
    assert_eq!(bytes(&r["stdout"]), run.stdout);
    let err: Value = serde_json::from_slice(&bytes(&r["stdout"])).expect("error JSON on stdout");
    assert!(
        err["code"].as_u64().is_some(),
        "CNI error has a code: {err}"
    );
    assert!(
        err["msg"].as_str().unwrap().contains("no-such-ipam"),
        "{err}"
    );

    // Not even valid JSON.
    let run = invoke("bridge", &inv, b"{not json");
    assert_ne!(run.code, Some(0));
    let r = agent.run_of(run.pid);
    assert_eq!(bytes(&r["stdin"]), b"{not json");
    assert_eq!(bytes(&r["stdout"]), run.stdout);
    assert!(!run.stdout.is_empty());
}

#[test]
fn a_process_that_is_not_a_cni_plugin_is_not_captured() {
    require_root();
    let agent = Agent::start(&[]);
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("cat")
        .env("NOT_CNI_COMMAND", "ADD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"secret payload")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"secret payload");
    // A plugin afterwards proves the agent was watching.
    let ns = Netns::new(&unique("cnsn"));
    let p = version("bridge", &ns.path());
    agent.run_of(p.pid);
    let lines = agent.stop();
    let about_cat: Vec<_> = lines
        .iter()
        .filter(|v| v["tgid"] == pid || v["pid"] == pid)
        .collect();
    assert!(about_cat.is_empty(), "cat was captured: {about_cat:?}");
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "stdio" && bytes(&v["data"]) == b"secret payload"),
        "bytes of a non-plugin process reached the ring buffer"
    );
}

/// Many back-to-back plugin runs with stdin sizes from a few bytes to 300 KB, some started while
/// the stdio hooks are attached and some after they were detached (so the plugin is held at
/// exec): every byte of every stdin and stdout must arrive, in order.
#[test]
fn back_to_back_runs_capture_every_byte() {
    require_root();
    let agent = Agent::start(&["--linger-ms", "100"]);
    let ns = Netns::new(&unique("cnsb"));
    let netns = ns.path();
    let mut runs = Vec::new();
    let n = 120;
    for i in 0..n {
        // host-local ADD reads all of stdin, then fails (no ranges): a real Go plugin reading
        // a real pipe, and an error JSON on stdout.
        let pad = "x".repeat((i * 2503) % 300_000);
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"bulk{i}","type":"host-local","pad":"{pad}","ipam":{{"type":"host-local"}}}}"#
        );
        let inv = Invocation {
            command: "ADD",
            containerid: "bulk",
            netns: &netns,
            ifname: "eth0",
            args: None,
        };
        runs.push(invoke("host-local", &inv, conf.as_bytes()));
        if i % 20 == 19 {
            // Longer than the linger: the hooks detach and the next plugin is held at exec.
            std::thread::sleep(Duration::from_millis(600));
        }
    }
    let mut held = 0;
    for run in &runs {
        let r = agent.run_of(run.pid);
        assert_eq!(bytes(&r["stdin"]).len(), run.stdin.len(), "pid {}", run.pid);
        assert!(
            bytes(&r["stdin"]) == run.stdin,
            "stdin of pid {} differs",
            run.pid
        );
        assert_eq!(r["complete"], true, "{}", r["problems"]);
        assert_eq!(
            bytes(&r["stdout"]),
            run.stdout,
            "stdout of pid {}: {r}",
            run.pid
        );
        if r["held"] == true {
            held += 1;
        }
    }
    let stats = agent.stop();
    let last = stats
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .expect("a stats line");
    assert_eq!(last["lost"], 0, "{last}");
    assert!(
        held >= 3,
        "only {held} runs were held at exec; the hold path was not exercised"
    );
}
