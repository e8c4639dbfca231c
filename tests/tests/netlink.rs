//! rtnetlink changes per network namespace (issue: who changed which link, address, route or
//! neighbour, where, and did it work), asserted from the agent's NDJSON against real `ip`
//! commands, a raw rtnetlink request and a real bridge+host-local ADD.

use std::process::Command;
use std::time::Duration;

use cniscope_tests::agent::Agent;
use cniscope_tests::cni::{Invocation, invoke, version};
use cniscope_tests::netns::{LinkGuard, Netns};
use cniscope_tests::{require_root, rtnl, unique};
use serde_json::{Value, json};

fn ip(args: &[&str]) -> (bool, u32) {
    let child = Command::new("ip").args(args).spawn().expect("ip");
    let pid = child.id();
    let out = child.wait_with_output().expect("ip");
    (out.status.success(), pid)
}

fn host_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

/// The change sent by thread `tid` (the raw requests of `rtnl` come from a thread of their own).
fn change_from_thread(agent: &Agent, tid: u32) -> Value {
    agent.wait_for(
        &format!("the change by thread {tid}"),
        Duration::from_secs(10),
        |v| v["type"] == "netlink" && v["pid"] == tid,
    )
}

fn change_by(agent: &Agent, pid: u32, op_prefix: &str) -> Value {
    agent.wait_for(
        &format!("{op_prefix} by pid {pid}"),
        Duration::from_secs(10),
        |v| {
            v["type"] == "netlink"
                && v["tgid"] == pid
                && v["op"].as_str().is_some_and(|o| o.starts_with(op_prefix))
        },
    )
}

#[test]
fn ip_commands_are_captured_with_netns_process_and_outcome() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsl"));
    let (a, b) = (unique("cnva"), unique("cnvb"));
    let _veth = LinkGuard(a.clone());

    let (ok, pid) = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    assert!(ok);
    let v = change_by(&agent, pid, "link add");
    assert_eq!(v["op"], format!("link add {a} type veth peer name {b}"));
    assert_eq!(v["netns"], host_netns());
    assert_eq!(v["task_netns"], host_netns());
    assert_eq!(v["comm"], "ip");
    assert_eq!(v["outcome"]["status"], "ack");

    let (ok, pid) = ip(&["link", "set", &b, "netns", &ns.name]);
    assert!(ok);
    let v = change_by(&agent, pid, "link set");
    assert_eq!(
        v["netns"],
        host_netns(),
        "a move is requested in the namespace the link is in"
    );
    assert_eq!(v["target_netns"], ns.inode(), "{v}");
    assert!(
        v["op"]
            .as_str()
            .unwrap()
            .ends_with(&format!("netns {}", ns.name)),
        "{v}"
    );
    assert_eq!(v["outcome"]["status"], "ack");

    let (ok, pid) = ip(&["-n", &ns.name, "addr", "add", "10.253.7.2/24", "dev", &b]);
    assert!(ok);
    let v = change_by(&agent, pid, "addr add");
    assert_eq!(v["op"], format!("addr add 10.253.7.2/24 dev {b}"));
    assert_eq!(v["netns"], ns.inode());
    assert_eq!(v["netns_name"], ns.name.as_str());
    assert_eq!(
        v["task_netns"],
        ns.inode(),
        "ip -n sends from inside the netns"
    );
    assert_eq!(v["outcome"]["status"], "ack");

    ip(&["-n", &ns.name, "link", "set", &b, "up"]);
    let (ok, pid) = ip(&["-n", &ns.name, "route", "add", "192.0.3.0/24", "dev", &b]);
    assert!(ok);
    let v = change_by(&agent, pid, "route add");
    assert_eq!(
        v["op"],
        format!("route add 192.0.3.0/24 dev {b} proto boot scope link table main")
    );
    assert_eq!(v["netns"], ns.inode());
    assert_eq!(v["outcome"]["status"], "ack");

    // The same route again: the kernel says EEXIST.
    let (ok, pid) = ip(&["-n", &ns.name, "route", "add", "192.0.3.0/24", "dev", &b]);
    assert!(!ok);
    let v = change_by(&agent, pid, "route add");
    assert_eq!(v["outcome"]["status"], "error");
    assert_eq!(v["outcome"]["errno"], 17);
    assert_eq!(v["outcome"]["error"], "File exists");

    // A gateway no interface reaches: ENETUNREACH with the kernel's extack text.
    let (ok, pid) = ip(&[
        "-n",
        &ns.name,
        "route",
        "add",
        "10.9.0.0/16",
        "via",
        "10.77.0.1",
    ]);
    assert!(!ok);
    let v = change_by(&agent, pid, "route add 10.9.0.0/16 via 10.77.0.1");
    assert_eq!(v["outcome"]["errno"], 101, "{v}");
    assert!(
        !v["outcome"]["extack"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
}

#[test]
fn a_route_via_a_missing_device_reports_the_kernels_errno() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsm"));
    // `ip` refuses unknown device names itself; a raw request reaches the kernel.
    let (err, tid) = rtnl::add_route_oif(&ns.path(), [192, 0, 2, 0], 24, 987_654);
    assert_eq!(err, -libc::ENODEV);
    let v = change_from_thread(&agent, tid);
    assert_eq!(
        v["op"],
        "route add 192.0.2.0/24 dev if987654 proto static table main"
    );
    assert_eq!(v["netns"], ns.inode());
    assert_eq!(v["outcome"]["status"], "error");
    assert_eq!(v["outcome"]["errno"], libc::ENODEV);
    assert_eq!(v["outcome"]["error"], "No such device");
}

/// sendmsg's request is found through the msghdr and its iovec wherever they are: all within
/// the 1 KiB the program reads above the msghdr; the iovec right below the msghdr (its offset
/// from the msghdr wraps around); or scattered below a msghdr that ends at the edge of readable
/// memory (every fallback: the window read fails, the iovec and the request are read through
/// their pointers). The decoded request proves the bytes are the ones sent.
#[test]
fn sendmsg_requests_are_read_wherever_the_msghdr_iovec_and_request_lie() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsg"));
    for (i, via) in [
        rtnl::Via::SendmsgAdjacent,
        rtnl::Via::SendmsgIovecBelow,
        rtnl::Via::SendmsgScattered,
    ]
    .into_iter()
    .enumerate()
    {
        let oif = 987_000 + i as u32;
        let (err, tid) = rtnl::add_route_oif_via(&ns.path(), [192, 0, 2, 0], 24, oif, via);
        assert_eq!(err, -libc::ENODEV, "{via:?}");
        let v = change_from_thread(&agent, tid);
        assert_eq!(
            v["op"],
            format!("route add 192.0.2.0/24 dev if{oif} proto static table main"),
            "{via:?}: {v}"
        );
        assert_eq!(v["netns"], ns.inode(), "{via:?}");
        assert_eq!(v["task_netns"], ns.inode(), "{via:?}");
        assert_eq!(v["outcome"]["errno"], libc::ENODEV, "{via:?}");
    }
}

/// Go plugins open a netlink socket inside the pod's netns and send on it from the host's: the
/// change applies where the socket is (`netns`), the sender is elsewhere (`task_netns`). The
/// program reads the socket's netns on its own only when the two differ.
#[test]
fn a_socket_opened_in_another_netns_reports_both_namespaces() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnso"));
    let (err, tid) = rtnl::add_route_oif_from_outside(&ns.path(), [192, 0, 2, 0], 24, 986_999);
    assert_eq!(err, -libc::ENODEV);
    let v = change_from_thread(&agent, tid);
    assert_eq!(v["netns"], ns.inode(), "{v}");
    assert_eq!(v["netns_name"], ns.name.as_str(), "{v}");
    assert_eq!(v["task_netns"], host_netns(), "{v}");
    assert_eq!(
        v["op"],
        "route add 192.0.2.0/24 dev if986999 proto static table main"
    );
}

#[test]
fn bridge_add_changes_are_attributed_to_the_bridge_process_and_the_right_netns() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsp"));
    let bridge = unique("cnsbr");
    let _br = LinkGuard(bridge.clone());
    let dir = std::env::temp_dir().join(unique("cns-ipam-"));
    let conf = json!({
        "cniVersion": "1.0.0", "name": "nltest", "type": "bridge", "bridge": bridge,
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": dir,
                 "ranges": [[{"subnet": "10.254.150.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    });
    // Noise the test does not own: another namespace changed by another process meanwhile.
    let other = Netns::new(&unique("cnso"));
    let noise = std::thread::spawn({
        let name = other.name.clone();
        move || {
            for i in 0..20 {
                let _ = Command::new("ip")
                    .args([
                        "-n",
                        &name,
                        "link",
                        "add",
                        &format!("na{i}"),
                        "type",
                        "veth",
                        "peer",
                        "name",
                        &format!("nb{i}"),
                    ])
                    .status();
            }
        }
    });
    let netns = ns.path();
    let run = invoke(
        "bridge",
        &Invocation {
            command: "ADD",
            containerid: "nl1",
            netns: &netns,
            ifname: "eth0",
            args: None,
        },
        conf.to_string().as_bytes(),
    );
    noise.join().unwrap();
    assert_eq!(
        run.code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    let ip4 = result["ips"][0]["address"].as_str().unwrap().to_string();

    // Everything bridge (and its threads) did, as the agent saw it.
    agent.run_of(run.pid);
    std::thread::sleep(Duration::from_millis(300));
    let mine: Vec<Value> = agent
        .lines()
        .into_iter()
        .filter(|v| v["type"] == "netlink" && v["tgid"] == run.pid)
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| -> Value {
        mine.iter()
            .find(|v| pred(v))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} in {mine:#?}"))
    };
    for v in &mine {
        assert_eq!(v["plugin_tree"], true);
        assert!(
            v["netns"] == host_netns() || v["netns"] == ns.inode(),
            "change in a foreign netns: {v}"
        );
    }
    let veth = find(
        &|v| v["object"] == "link" && v["verb"] == "add" && v["detail"]["kind"] == "veth",
        "veth add",
    );
    assert_eq!(veth["outcome"]["status"], "ack");
    // The Go plugin creates the veth from inside the pod's netns with eth0 there.
    assert_eq!(veth["netns"], ns.inode(), "{veth}");
    // ...and puts the peer in the host's netns at creation (IFLA_NET_NS_FD inside the peer).
    assert_eq!(veth["detail"]["peer_netns"], host_netns(), "{veth}");
    assert!(
        veth["op"]
            .as_str()
            .unwrap()
            .starts_with("link add eth0 type veth peer name veth"),
        "{veth}"
    );
    assert!(
        veth["op"].as_str().unwrap().ends_with("netns host"),
        "{veth}"
    );
    let addr = find(&|v| v["object"] == "addr" && v["verb"] == "add", "addr add");
    assert_eq!(addr["netns"], ns.inode());
    assert_eq!(addr["op"], format!("addr add {ip4} dev eth0"));
    let route = find(
        &|v| v["object"] == "route" && v["verb"] == "add" && v["netns"] == ns.inode(),
        "pod route",
    );
    assert!(
        route["op"].as_str().unwrap().contains("dev eth0"),
        "{route}"
    );
    let br = find(
        &|v| v["op"] == format!("link add {bridge} type bridge"),
        "bridge add",
    );
    assert_eq!(br["netns"], host_netns());
    // The other namespace's changes were captured too, but never under bridge's pid.
    let lines = agent.stop();
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "netlink" && v["netns"] == other.inode())
    );
    assert!(!mine.iter().any(|v| v["netns"] == other.inode()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scope_plugins_reports_only_plugin_trees() {
    require_root();
    let agent = Agent::start(&["--netlink", "plugins"]);
    let ns = Netns::new(&unique("cnss"));
    let (a, b) = (unique("cnsa"), unique("cnsb"));
    let _veth = LinkGuard(a.clone());
    let (ok, ip_pid) = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    assert!(ok);
    // A plugin's changes are still reported.
    let bridge = unique("cnsbr");
    let _br = LinkGuard(bridge.clone());
    let dir = std::env::temp_dir().join(unique("cns-ipam-"));
    let conf = json!({
        "cniVersion": "1.0.0", "name": "scope", "type": "bridge", "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": dir, "ranges": [[{"subnet": "10.254.151.0/24"}]]}
    });
    let netns = ns.path();
    let run = invoke(
        "bridge",
        &Invocation {
            command: "ADD",
            containerid: "sc1",
            netns: &netns,
            ifname: "eth0",
            args: None,
        },
        conf.to_string().as_bytes(),
    );
    assert_eq!(run.code, Some(0));
    change_by(&agent, run.pid, "link add eth0 type veth");
    let lines = agent.stop();
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "netlink" && v["tgid"] == ip_pid),
        "a change by `ip` (not a plugin) was reported with --netlink plugins"
    );
    assert!(
        lines
            .iter()
            .filter(|v| v["type"] == "netlink")
            .all(|v| v["plugin_tree"] == true)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cniscope ctl netlink off|on` against `agent`'s socket: (success, stdout, stderr).
fn ctl_netlink(agent: &Agent, state: &str) -> (bool, String, String) {
    let out = Command::new(cniscope_tests::bin_dir().join("cniscope"))
        .args(["ctl", "netlink", state, "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("cniscope ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn capture_is_paused_and_resumed_through_the_socket() {
    require_root();
    let agent = Agent::start(&[]);
    let ns = Netns::new(&unique("cnsp"));
    assert!(ip(&["-n", &ns.name, "link", "set", "lo", "up"]).0);

    let switch = |state: &str, reply: &str| {
        let (ok, out, err) = ctl_netlink(&agent, state);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), reply);
    };
    let route_add = |dst: &str| ip(&["-n", &ns.name, "route", "add", dst, "dev", "lo"]);

    switch("off", r#"{"netlink_capture":false}"#);
    let (ok, paused) = route_add("10.254.152.0/24");
    assert!(ok, "the change itself is not affected by the pause");
    switch("on", r#"{"netlink_capture":true}"#);
    let (ok, resumed) = route_add("10.254.153.0/24");
    assert!(ok);
    let v = change_by(&agent, resumed, "route add 10.254.153.0/24 dev lo");
    assert_eq!(v["netns"], ns.inode());
    // Both routes are in the namespace; only the second was reported.
    let routes = Command::new("ip")
        .args(["-n", &ns.name, "route", "show", "dev", "lo"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("10.254.152.0/24") && routes.contains("10.254.153.0/24"),
        "{routes}"
    );

    let lines = agent.stop();
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "netlink" && v["tgid"] == paused),
        "a change made while capture was paused was reported"
    );
    // The log says when capture was off, in order, before the change that followed.
    let at = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred).expect("line");
    let off = at(&|v| v["event"] == "netlink_capture" && v["capture"] == false);
    let on = at(&|v| v["event"] == "netlink_capture" && v["capture"] == true);
    let change = at(&|v| v["type"] == "netlink" && v["tgid"] == resumed);
    assert!(off < on && on < change, "{off} {on} {change}");
    let last_stats = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .expect("stats");
    assert_eq!(last_stats["hooks"]["netlink_capture"], true);
}

#[test]
fn capture_cannot_be_resumed_in_an_agent_started_without_it() {
    require_root();
    let agent = Agent::start(&["--netlink", "off"]);
    let (ok, out, err) = ctl_netlink(&agent, "on");
    assert!(!ok, "{out}");
    assert!(
        err.contains("rtnetlink capture is off in this agent"),
        "{err}"
    );
    let lines = agent.stop();
    assert!(!lines.iter().any(|v| v["event"] == "netlink_capture"));
    let stats = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .expect("stats");
    assert_eq!(stats["hooks"]["netlink_capture"], false);
}

/// `btf` with member `member` of every struct named `strukt` moved `by` bytes further (a BTF
/// that lies about one offset, for the test below). Walks the type section as the BTF format
/// lays it out: a 12-byte header per type, then kind-specific data.
fn shift_member(btf: &[u8], strukt: &str, member: &str, by: u32) -> Vec<u8> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(&btf[..2], &0xeb9fu16.to_le_bytes(), "not little-endian BTF");
    let hdr = u32_at(btf, 4) as usize;
    let (types, types_len) = (hdr + u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let strings = hdr + u32_at(btf, 16) as usize;
    let name = |off: u32| {
        let s = &btf[strings + off as usize..];
        &s[..s.iter().position(|&c| c == 0).unwrap()]
    };
    let mut out = btf.to_vec();
    let (mut at, mut patched) = (types, 0);
    while at < types + types_len {
        let info = u32_at(btf, at + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = match kind {
            1 | 14 | 17 => 4,     // int, var, decl_tag
            3 => 12,              // array
            4 | 5 => 12 * vlen,   // struct, union: name, type, offset per member
            6 | 13 => 8 * vlen,   // enum, func_proto
            15 | 19 => 12 * vlen, // datasec, enum64
            _ => 0,
        };
        if kind == 4 && name(u32_at(btf, at)) == strukt.as_bytes() {
            for m in 0..vlen {
                let m_at = at + 12 + 12 * m;
                if name(u32_at(btf, m_at)) == member.as_bytes() {
                    let off = u32_at(btf, m_at + 8) + by * 8;
                    out[m_at + 8..m_at + 12].copy_from_slice(&off.to_le_bytes());
                    patched += 1;
                }
            }
        }
        at += 12 + extra;
    }
    assert!(patched > 0, "no {strukt}.{member} in the BTF");
    out
}

/// On a kernel whose verifier refuses the rtnetlink program (kernels before 5.15 refuse its loads
/// through BTF pointers), the agent runs with rtnetlink capture off, says why, and captures plugin
/// runs as before. Made to happen here with a BTF that puts `task_struct.comm` 12 bytes late: the
/// loader takes that offset, and the verifier, which checks the program's 8-byte `comm` loads
/// against the kernel's real BTF, refuses loads that now run past the end of the member.
#[test]
fn a_refused_rtnetlink_program_turns_capture_off_and_nothing_else() {
    require_root();
    let real = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let path = std::env::temp_dir().join(unique("cniscope-btf-"));
    std::fs::write(&path, shift_member(&real, "task_struct", "comm", 12)).unwrap();
    let agent = Agent::start_with_env(&[("CNISCOPE_BTF", path.to_str().unwrap())], &[]);
    let _ = std::fs::remove_file(&path);
    let ready = agent.wait_for("ready", Duration::from_secs(5), |v| v["event"] == "ready");
    assert_eq!(ready["netlink"], false, "{ready}");
    let err = agent.stderr.lock().unwrap().clone();
    let warning = err
        .lines()
        .find(|l| l.contains("rtnetlink capture is off"))
        .unwrap_or_else(|| panic!("no warning in:\n{err}"));
    // One line, with the verifier's reason, not its whole log.
    assert!(
        warning.contains("verifier rejected program cniscope_nl_send")
            && warning.contains("access beyond the end of member comm"),
        "{warning}"
    );
    assert!(
        !err.contains("R10=fp0"),
        "the verifier's log is in the warning:\n{err}"
    );
    // Plugin runs: captured byte for byte.
    let ns = Netns::new(&unique("cnrf"));
    let p = version("bridge", &ns.path());
    assert!(!p.stdout.is_empty());
    let r = agent.run_of(p.pid);
    assert_eq!(cniscope_tests::agent::bytes(&r["stdout"]), p.stdout, "{r}");
    // rtnetlink changes: none reported, none refused at run time either.
    let (ok, pid) = ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    assert!(ok);
    let lines = agent.stop();
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "netlink" && v["tgid"] == pid),
        "a change was reported with capture off"
    );
}
