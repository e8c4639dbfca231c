//! The agent's socket and its behaviour under stress: clients that come and go, a ring buffer
//! too small for the load, and a stop while a plugin is running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cniscope_tests::agent::Agent;
use cniscope_tests::netns::Netns;
use cniscope_tests::{require_root, unique};
use serde_json::Value;

/// A chain the tests can run quickly: `bridge` VERSION needs no state.
fn plugin_run(cid: &str) -> u32 {
    let mut c = Command::new("/usr/lib/cni/bridge")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.0.0"}"#)
        .unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn subscribe(agent: &Agent) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(&agent.socket).expect("connect to the agent socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    BufReader::new(s)
}

fn next_line(r: &mut BufReader<UnixStream>) -> Value {
    let mut l = String::new();
    r.read_line(&mut l).expect("read from the socket");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
}

fn read_until(r: &mut BufReader<UnixStream>, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = next_line(r);
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "nothing matched on the socket");
    }
}

#[test]
fn clients_get_history_then_live_lines_and_may_leave_at_any_time() {
    require_root();
    let agent = Agent::start(&["--quiet-ms", "200"]);
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the socket must be root-only");
    plugin_run("before");
    agent.wait_for("first invocation", Duration::from_secs(10), |v| {
        v["type"] == "invocation" && v["container_id"] == "before"
    });

    // History first, then the end of the snapshot.
    let mut a = subscribe(&agent);
    read_until(&mut a, |v| {
        v["type"] == "invocation" && v["container_id"] == "before"
    });
    read_until(&mut a, |v| v["type"] == "snapshot_end");

    // A client that leaves in the middle of its stream.
    for _ in 0..5 {
        let b = subscribe(&agent);
        drop(b);
    }
    // ... and one that never reads: the agent must not wait for it.
    let mut stalled = UnixStream::connect(&agent.socket).unwrap();
    stalled.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();

    for i in 0..50 {
        plugin_run(&format!("live{i}"));
    }
    read_until(&mut a, |v| {
        v["type"] == "invocation" && v["container_id"] == "live49"
    });
    // The agent's own output did not stall either.
    agent.wait_for("last invocation on stdout", Duration::from_secs(10), |v| {
        v["type"] == "invocation" && v["container_id"] == "live49"
    });

    // Pod lookups answer at once, even without a pod cache.
    let mut q = UnixStream::connect(&agent.socket).unwrap();
    q.write_all(b"{\"op\":\"pod\",\"namespace\":\"default\",\"name\":\"x\"}\n")
        .unwrap();
    let mut r = BufReader::new(q);
    assert!(next_line(&mut r)["error"].is_string());
    drop(stalled);
}

#[test]
fn a_ring_buffer_overflow_is_counted_and_the_agent_keeps_working() {
    require_root();
    // 16 KiB of ring buffer against a flood of rtnetlink changes.
    let agent = Agent::start(&["--ringbuf-bytes", "16384", "--quiet-ms", "200"]);
    let ns = Netns::new(&unique("cnsf"));
    ns.ip(&["link", "add", "f0", "type", "veth", "peer", "name", "f1"]);
    ns.ip(&["link", "set", "f0", "up"]);
    let batch: String = (0..3000)
        .map(|i| format!("route add 10.{}.{}.0/24 dev f0\n", 100 + i / 256, i % 256))
        .collect();
    let file = std::env::temp_dir().join(unique("cns-batch-"));
    std::fs::write(&file, batch).unwrap();
    let st = Command::new("ip")
        .args(["-n", &ns.name, "-batch"])
        .arg(&file)
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(st.success());
    // Still working afterwards, once it has drained what the flood left in the ring (a 16 KiB
    // ring has no room for an exec record until then).
    // How long that takes depends on the host: a fresh plugin run every 2 s, until one is seen.
    let seen = |a: &Agent| {
        a.lines().iter().any(|v| {
            v["type"] == "invocation"
                && v["container_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("after-flood-"))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        plugin_run(&format!("after-flood-{attempt}"));
        let tried = std::time::Instant::now();
        while !seen(&agent) && tried.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if seen(&agent) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no invocation after the flood in 30 s"
        );
    }
    let lines = agent.stop();
    let stats = lines.iter().rev().find(|v| v["type"] == "stats").unwrap();
    assert!(
        stats["kernel"]["lost_netlink"].as_u64().unwrap() > 0,
        "{stats}"
    );
    // Every lost record is counted by its kind: the flood's changes, and a plugin run's exec
    // when the ring was still full of them.
    let by_kind: u64 = stats["kernel"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("lost_"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(stats["lost"].as_u64(), Some(by_kind), "{stats}");
}

#[test]
fn stopping_while_a_plugin_runs_reports_it_partial_and_a_new_agent_copes() {
    require_root();
    let agent = Agent::start(&[]);
    // A shell plugin (CNI plugins may be scripts) that takes its time.
    let mut slow = Command::new("sh")
        .args(["-c", "cat >/dev/null"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "slowpoke")
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stdin stays open until the test closes it: the plugin is running, however slow the
    // host, until then.
    let mut stdin = slow.stdin.take().unwrap();
    stdin.write_all(b"{}").unwrap();
    agent.wait_for("the plugin's exec", Duration::from_secs(10), |v| {
        v["type"] == "exec" && v["tgid"] == slow.id()
    });
    let lines = agent.stop();
    let inv = lines
        .iter()
        .find(|v| v["type"] == "invocation" && v["container_id"] == "slowpoke")
        .expect("the running invocation is reported at stop");
    assert_eq!(inv["partial"], true);
    // A new agent while the plugin is still running: nothing breaks.
    let again = Agent::start(&[]);
    drop(stdin);
    assert!(slow.wait().unwrap().success());
    plugin_run("after-restart");
    again.wait_for("invocation after restart", Duration::from_secs(10), |v| {
        v["type"] == "invocation" && v["container_id"] == "after-restart"
    });
    assert!(!again.stderr.lock().unwrap().contains("panicked"));
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn prometheus_metrics_count_invocations_failures_and_netlink_outcomes() {
    require_root();
    let addr = format!("127.0.0.1:{}", 19000 + std::process::id() % 1000);
    let agent = Agent::start(&["--quiet-ms", "200", "--metrics-addr", &addr]);
    plugin_run("m-ok");
    // A failing plugin: bridge ADD with an IPAM type that does not exist.
    let ns = Netns::new(&unique("cnsm"));
    let mut c = Command::new("/usr/lib/cni/bridge")
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "m-fail")
        .env("CNI_NETNS", ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.0.0","name":"m","type":"bridge","bridge":"cnsmb0","ipam":{"type":"nope"}}"#)
        .unwrap();
    c.wait().unwrap();
    let _br = cniscope_tests::netns::LinkGuard("cnsmb0".into());
    // A kernel refusal: the same route twice.
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"]);
    ns.ip(&["link", "set", "m0", "up"]);
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "m0"]);
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "m0"]);
    agent.wait_for("the failed invocation", Duration::from_secs(10), |v| {
        v["type"] == "invocation" && v["container_id"] == "m-fail"
    });
    std::thread::sleep(Duration::from_millis(300));
    let body = http_get(&addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("cniscope_invocations_total{command=\"VERSION\",verdict=\"ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("cniscope_invocations_total{command=\"ADD\",verdict=\"failed\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(
            "cniscope_step_failures_total{plugin=\"bridge\",command=\"ADD\",reason=\"cni-error-"
        ),
        "{body}"
    );
    assert!(body.contains("cniscope_netlink_ops_total{object=\"route\",verb=\"add\",outcome=\"error\",errno=\"17\"} 1"), "{body}");
    assert!(
        body.contains("cniscope_step_duration_seconds_bucket{"),
        "{body}"
    );
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
}
