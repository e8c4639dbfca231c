//! `cargo xtask bench`: the numbers in BENCHMARKS.md, each a ratio against a baseline measured in
//! the same run, alternating so drift shows.
//!
//! - `dd`: the idle tax of a running agent on `dd if=/dev/zero of=/dev/null bs=1 count=1000000`
//!   (two million syscalls), and for contrast the tax while the stdio hooks are live.
//! - `addel`: a bridge+host-local ADD/DEL loop in a netns, with and without the agent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The agent writing its NDJSON to a file, as a container runtime's log does for a DaemonSet.
struct Agent {
    child: Child,
    pub log: PathBuf,
    socket: PathBuf,
    bin: PathBuf,
    stopped: bool,
}

impl Agent {
    fn start(bin: &Path) -> Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("cniscope-bench-{}-{n}.ndjson", std::process::id()));
        let file = std::fs::File::create(&log)?;
        let socket =
            std::env::temp_dir().join(format!("cniscope-bench-{}.sock", std::process::id()));
        let child = Command::new(bin.join("cniscope"))
            .args(["agent", "--stats-interval", "3600", "--quiet-ms", "200"])
            .arg("--socket")
            .arg(&socket)
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"ready\"") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            log,
            socket,
            bin: bin.to_path_buf(),
            stopped: false,
        })
    }

    /// Attaches (`on`) or detaches the agent's rtnetlink programs (`cniscope ctl netlink`),
    /// returning once the change has taken effect.
    fn capture(&self, on: bool) -> Result<()> {
        crate::run(
            Command::new(self.bin.join("cniscope"))
                .args(["ctl", "netlink", if on { "on" } else { "off" }, "--socket"])
                .arg(&self.socket)
                .stdout(Stdio::null()),
        )
    }

    fn signal(&mut self) {
        if !self.stopped {
            self.stopped = true;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }

    /// Stops the agent; returns how many `netlink` lines it printed and its last `stats` line.
    fn stop(mut self) -> (u64, serde_json::Value) {
        self.signal();
        let f = std::fs::File::open(&self.log).map(BufReader::new);
        let mut netlink = 0;
        let mut stats = serde_json::Value::Null;
        if let Ok(f) = f {
            for l in f.lines().map_while(Result::ok) {
                if l.starts_with("{\"type\":\"netlink\"") {
                    netlink += 1;
                } else if l.starts_with("{\"type\":\"stats\"") {
                    stats = serde_json::from_str(&l).unwrap_or_default();
                }
            }
        }
        (netlink, stats)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.signal();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn time_dd() -> Result<f64> {
    let t = Instant::now();
    let st = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"])
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("dd failed");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn dd(bin: &Path, rounds: usize) -> Result<()> {
    let mut base = Vec::new();
    let mut idle = Vec::new();
    let mut live = Vec::new();
    for round in 0..rounds {
        eprintln!("bench dd: round {}/{rounds}", round + 1);
        base.push(time_dd()?);
        {
            let _a = Agent::start(bin)?;
            std::thread::sleep(Duration::from_millis(300));
            idle.push(time_dd()?);
            // A long-lived "plugin" (CNI_COMMAND in its environment) keeps the hooks live.
            let mut plugin = Command::new("sleep")
                .arg("30")
                .env("CNI_COMMAND", "ADD")
                .spawn()?;
            std::thread::sleep(Duration::from_millis(300));
            live.push(time_dd()?);
            let _ = plugin.kill();
            let _ = plugin.wait();
        }
        base.push(time_dd()?);
    }
    let b = median(base);
    let i = median(idle);
    let l = median(live);
    println!("| dd bs=1 count=1000000 | no agent | {b:.3} s | 1.000 |");
    println!(
        "| | agent idle (no plugin running) | {i:.3} s | {:.3} |",
        i / b
    );
    println!(
        "| | agent with stdio hooks live (a plugin running) | {l:.3} s | {:.3} |",
        l / b
    );
    Ok(())
}

fn addel_loop(n: usize, tag: &str) -> Result<f64> {
    let ns = format!("cnsb-{}-{tag}", std::process::id());
    let br = format!("cnsb{}", std::process::id() % 100000);
    let dir = std::env::temp_dir().join(format!("cnsb-ipam-{}", std::process::id()));
    crate::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "cnsbench", "type": "bridge", "bridge": br,
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": dir, "ranges": [[{"subnet": "10.254.200.0/24"}]]}
    })
    .to_string();
    let one = |cmd: &str, i: usize| -> Result<()> {
        let mut c = Command::new("/usr/lib/cni/bridge");
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("bench{i}"))
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(conf.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "bridge {cmd} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    };
    let t = Instant::now();
    let mut res = Ok(());
    for i in 0..n {
        if let Err(e) = one("ADD", i).and_then(|_| one("DEL", i)) {
            res = Err(e);
            break;
        }
    }
    let el = t.elapsed().as_secs_f64();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let _ = Command::new("ip").args(["link", "del", &br]).status();
    let _ = std::fs::remove_dir_all(&dir);
    res.map(|_| el)
}

fn addel(bin: &Path, rounds: usize, n: usize) -> Result<()> {
    let mut base = Vec::new();
    let mut with = Vec::new();
    for round in 0..rounds {
        eprintln!(
            "bench addel: round {}/{rounds} ({n} ADD+DEL each)",
            round + 1
        );
        base.push(addel_loop(n, "b")?);
        {
            let _a = Agent::start(bin)?;
            with.push(addel_loop(n, "a")?);
        }
    }
    let b = median(base);
    let w = median(with);
    println!(
        "| bridge+host-local ADD+DEL ×{n} | no agent | {b:.3} s ({:.2} ms/cycle) | 1.000 |",
        b * 1000.0 / n as f64
    );
    println!(
        "| | agent capturing | {w:.3} s ({:.2} ms/cycle) | {:.3} |",
        w * 1000.0 / n as f64,
        w / b
    );
    Ok(())
}

/// 10 000 `ip route add` in one `ip -batch` inside a netns.
fn routes_once(n: usize) -> Result<f64> {
    let ns = format!("cnsr-{}", std::process::id());
    crate::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let res = (|| {
        crate::run(Command::new("ip").args([
            "-n", &ns, "link", "add", "r0", "type", "veth", "peer", "name", "r1",
        ]))?;
        crate::run(Command::new("ip").args(["-n", &ns, "link", "set", "r0", "up"]))?;
        let mut batch = String::new();
        for i in 0..n {
            batch.push_str(&format!(
                "route add 10.{}.{}.0/24 dev r0\n",
                100 + i / 256,
                i % 256
            ));
        }
        let file = std::env::temp_dir().join(format!("cnsr-batch-{}", std::process::id()));
        std::fs::write(&file, batch)?;
        let t = Instant::now();
        crate::run(Command::new("ip").args(["-n", &ns, "-batch"]).arg(&file))?;
        let el = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&file);
        Ok(el)
    })();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    res
}

/// Paired rounds of three runs per side, in alternating order so the host's drift (runs here
/// switch between a fast and a slow mode for seconds at a time, ±20 %) hits both sides alike:
/// each round times the batch without the agent, with it, and with it frozen (SIGSTOP: the
/// kernel programs still run and fill the ring buffer, the agent does nothing — the kernel
/// side's share of the cost). Many rounds (30 by default) and a confidence interval for the
/// median per-round ratio, because one round's ratio moves by more than the effect measured.
fn routes(bin: &Path, rounds: usize, n: usize) -> Result<()> {
    let mut base = Vec::new();
    let mut with = Vec::new();
    let mut frozen = Vec::new();
    let mut pair = Vec::new();
    let mut fastest = (f64::INFINITY, f64::INFINITY);
    let mut worst_missing = 0u64;
    let mut lost = 0u64;
    let prog_share = std::cell::RefCell::new(Vec::new());
    let prog_ns = std::cell::RefCell::new(Vec::new());
    for round in 0..rounds {
        eprintln!(
            "bench routes: round {}/{rounds} ({n} route adds)",
            round + 1
        );
        // Three runs per side and round, the median kept: one 10 000-change batch takes ~0.2 s.
        // Also their fastest: the host's fast mode, the closest to an undisturbed cost.
        let three = || -> Result<(f64, f64)> {
            let v = vec![routes_once(n)?, routes_once(n)?, routes_once(n)?];
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            Ok((median(v), min))
        };
        let agent_run = || -> Result<((f64, f64), f64, u64, u64)> {
            let a = Agent::start(bin)?;
            // Steady state: the agent is a daemon; its start-up is not what is measured.
            std::thread::sleep(Duration::from_secs(1));
            let w = three()?;
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(a.child.id() as i32, libc::SIGSTOP) };
            // The kernel times its programs only while bpf_stats is on (it costs a clock read
            // per run): on for the frozen run only, so it does not weigh on the others.
            let prev = BpfStats::enable();
            let f = routes_once(n);
            drop(prev);
            // SAFETY: as above.
            unsafe { libc::kill(a.child.id() as i32, libc::SIGCONT) };
            let f = f?;
            std::thread::sleep(Duration::from_millis(1500));
            let (seen, stats) = a.stop();
            let k = &stats["kernel"];
            if let (Some(runs), Some(ns)) = (
                k["netlink_prog_runs"].as_u64(),
                k["netlink_prog_ns"].as_u64(),
            ) && runs > 0
            {
                eprintln!(
                    "bench routes: netlink program {} ns per run ({runs} runs), {:.1}% of the frozen batch's time",
                    ns / runs,
                    100.0 * ns as f64 / 1e9 / f
                );
                prog_share.borrow_mut().push(ns as f64 / 1e9 / f);
                prog_ns.borrow_mut().push((ns / runs) as f64);
            }
            // Each run also reports the veth add and the link up; four runs were made.
            let expected = 4 * (n as u64 + 2);
            Ok((
                w,
                f,
                expected.saturating_sub(seen),
                stats["lost"].as_u64().unwrap_or(0),
            ))
        };
        let ((b, bmin), ((w, wmin), f, missing, l)) = if round % 2 == 0 {
            let b = three()?;
            (b, agent_run()?)
        } else {
            let r = agent_run()?;
            (three()?, r)
        };
        eprintln!(
            "bench routes: round {}/{rounds}: without {b:.3} s, with {w:.3} s ({:.3}), frozen {f:.3} s",
            round + 1,
            w / b
        );
        base.push(b);
        with.push(w);
        fastest.0 = fastest.0.min(bmin);
        fastest.1 = fastest.1.min(wmin);
        frozen.push(f);
        pair.push(w / b);
        worst_missing = worst_missing.max(missing);
        lost += l;
    }
    let b = median(base);
    let w = median(with);
    let f = median(frozen);
    let slower = pair.iter().filter(|&&r| r > 1.0).count();
    let (lo, hi) = median_ci95(&pair);
    let p = median(pair);
    println!(
        "| `ip -batch` with {n} route adds in a netns ({rounds} paired rounds) | no agent | {b:.3} s | 1.000 |"
    );
    println!(
        "| | agent reporting every change | {w:.3} s | {:.3} (lost records: {lost}, changes missing from the output: {worst_missing}) |",
        w / b
    );
    println!(
        "| | median of the {rounds} per-round ratios (95% CI of the median; rounds where the agent's side was slower) | | {p:.3} ({lo:.3}–{hi:.3}; {slower}/{rounds}) |"
    );
    println!(
        "| | agent frozen (kernel programs only) | {f:.3} s | {:.3} |",
        f / b
    );
    println!(
        "| | fastest batch of each side ({} each) | {:.3} s without, {:.3} s with | {:.3} |",
        3 * rounds,
        fastest.0,
        fastest.1,
        fastest.1 / fastest.0
    );
    let (share, ns) = (prog_share.into_inner(), prog_ns.into_inner());
    if !share.is_empty() {
        println!(
            "| | netlink program's own time (bpf_stats, frozen runs; independent of the host's drift) | {:.0} ns per change | {:.1}% of the batch |",
            median(ns),
            100.0 * median(share)
        );
    }
    Ok(())
}

/// The agent's cost on its own, without the host's drift: one agent runs throughout, and its
/// rtnetlink programs are detached and attached again (`cniscope ctl netlink off|on`) between
/// batches, so the two batches of a pair run a second apart, in the same host mode. With the
/// programs detached, an agent costs `ip` what no agent does (nothing else it attaches fires for
/// netlink sends; the classic rounds below check it against no agent at all). Pairs alternate
/// their order (off-on, on-off, on-off, off-on, …).
fn routes_paired(bin: &Path, pairs: usize, n: usize) -> Result<()> {
    let a = Agent::start(bin)?;
    std::thread::sleep(Duration::from_secs(1));
    let (mut off, mut on, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..pairs {
        let on_first = matches!(p % 4, 1 | 2);
        let mut t = [0.0; 2];
        for state in [on_first, !on_first] {
            a.capture(state)?;
            t[state as usize] = routes_once(n)?;
        }
        off.push(t[0]);
        on.push(t[1]);
        ratio.push(t[1] / t[0]);
        eprintln!(
            "bench routes: pair {}/{pairs}: capture off {:.3} s, on {:.3} s ({:.3}); running median {:.3}",
            p + 1,
            t[0],
            t[1],
            t[1] / t[0],
            median(ratio.clone())
        );
    }
    a.capture(true)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (seen, stats) = a.stop();
    // Each batch with capture on also reports its veth add and link up.
    let expected = pairs as u64 * (n as u64 + 2);
    let lost = stats["lost"].as_u64().unwrap_or(0);
    let slower = ratio.iter().filter(|&&r| r > 1.0).count();
    let (lo, hi) = median_ci95(&ratio);
    let (off, on) = (median(off), median(on));
    println!(
        "| `ip -batch` with {n} route adds in a netns, one agent, rtnetlink capture detached/attached between the batches of {pairs} pairs | capture off | {off:.3} s | 1.000 |"
    );
    println!(
        "| | capture on (pooled median) | {on:.3} s | {:.3} (lost records: {lost}, changes missing from the output: {}) |",
        on / off,
        expected.saturating_sub(seen)
    );
    println!(
        "| | **median of the {pairs} per-pair ratios** (95% CI of the median; pairs where the capturing side was slower) | | **{:.3}** ({lo:.3}–{hi:.3}; {slower}/{pairs}) |",
        median(ratio)
    );
    Ok(())
}

/// A distribution-free 95% confidence interval for the median of `v`: the order statistics
/// whose ranks a Binomial(n, 1/2) puts 1.96 standard deviations either side of n/2.
fn median_ci95(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len() as f64;
    let half = 0.98 * n.sqrt();
    let lo = ((n / 2.0 - half).floor().max(1.0) as usize).min(v.len()) - 1;
    let hi = ((n / 2.0 + 1.0 + half).ceil() as usize).clamp(1, v.len()) - 1;
    (v[lo], v[hi])
}

/// Repetitions for the paired benchmarks whose effect is near this host's drift: the number in
/// the environment variable `var` (`CNISCOPE_BENCH_PAIRS`, `CNISCOPE_BENCH_ROUNDS`), else
/// `default`.
fn count_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Turns `kernel.bpf_stats_enabled` on; the previous value comes back on drop.
struct BpfStats(Option<String>);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Self {
        let prev = std::fs::read_to_string(Self::PATH).ok();
        let _ = std::fs::write(Self::PATH, "1");
        Self(prev)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::write(Self::PATH, p.trim());
        }
    }
}

/// UDP on loopback: `n` 64-byte datagrams sent and received in one thread.
fn udp_once(n: usize) -> Result<f64> {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    let buf = [7u8; 64];
    let mut rbuf = [0u8; 128];
    let t = Instant::now();
    for _ in 0..n {
        tx.send(&buf)?;
        rx.recv(&mut rbuf)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn udp(bin: &Path, rounds: usize, n: usize) -> Result<()> {
    let mut base = Vec::new();
    let mut with = Vec::new();
    for round in 0..rounds {
        eprintln!("bench udp: round {}/{rounds}", round + 1);
        base.push(udp_once(n)?);
        let a = Agent::start(bin)?;
        with.push(udp_once(n)?);
        drop(a);
        base.push(udp_once(n)?);
    }
    let b = median(base);
    let w = median(with);
    println!("| UDP loopback send+recv ×{n} (64 B) | no agent | {b:.3} s | 1.000 |");
    println!(
        "| | agent (sock_send_length attached) | {w:.3} s | {:.3} |",
        w / b
    );
    Ok(())
}

/// 200 back-to-back ADD/DEL cycles of a 3-plugin chain run by `cniscope exec`, with and without
/// the agent; every invocation must be reported complete and nothing lost.
fn cycles(bin: &Path, n: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cnsc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let br = format!("cnsc{}", std::process::id() % 100000);
    let conf = serde_json::json!({
    "cniVersion": "1.0.0", "name": "cycles", "plugins": [
        {"type": "bridge", "bridge": br, "isGateway": true,
         "ipam": {"type": "host-local", "dataDir": dir.join("ipam"),
                  "ranges": [[{"subnet": "10.254.201.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "0"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
    ]});
    let list = dir.join("cycles.conflist");
    std::fs::write(&list, conf.to_string())?;
    let ns = format!("cnsc-{}", std::process::id());
    crate::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let run_all = || -> Result<f64> {
        let t = Instant::now();
        for i in 0..n {
            if i % 50 == 0 {
                eprintln!("bench cycles: {i}/{n}");
            }
            for cmd in ["add", "del"] {
                let st = Command::new(bin.join("cniscope"))
                    .args(["exec", cmd])
                    .arg(&list)
                    .arg(format!("/run/netns/{ns}"))
                    .args(["--container-id", &format!("cyc{i}"), "--cache-dir"])
                    .arg(dir.join("cache"))
                    .stdout(Stdio::null())
                    .status()?;
                if !st.success() {
                    bail!("cniscope exec {cmd} failed in cycle {i}");
                }
            }
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let res = (|| -> Result<()> {
        let base = run_all()?;
        let a = Agent::start(bin)?;
        let with = run_all()?;
        std::thread::sleep(Duration::from_millis(1500));
        let text = std::fs::read_to_string(&a.log).unwrap_or_default();
        let (_, stats) = a.stop();
        let invs: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| l.starts_with("{\"type\":\"invocation\""))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let ours = invs.iter().filter(|v| {
            v["container_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("cyc"))
        });
        let (mut total, mut complete) = (0, 0);
        for v in ours {
            total += 1;
            let steps_ok = v["steps"].as_array().is_some_and(|s| {
                s.len() == 3 && s.iter().all(|x| x["complete"] == true && x["ok"] == true)
            });
            if v["partial"] == false && v["verdict"]["ok"] == true && steps_ok {
                complete += 1;
            }
        }
        println!(
            "| {n} ADD+DEL cycles, bridge+tuning+portmap via `cniscope exec` | no agent | {base:.2} s | 1.000 |"
        );
        println!(
            "| | agent | {with:.2} s | {:.3} — invocations reported {total}/{} ({complete} complete with all 3 steps), lost records {} |",
            with / base,
            2 * n,
            stats["lost"]
        );
        Ok(())
    })();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let _ = Command::new("ip").args(["link", "del", &br]).status();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Agent memory with `n` retained invocations. The load: a stand-in plugin (`cat` with
/// CNI_COMMAND in its environment) that echoes the bridge ADD config and result of the
/// committed recording, so each invocation carries real-sized stdin and stdout.
fn rss(bin: &Path, n: usize) -> Result<()> {
    let a = Agent::start(bin)?;
    let pid = a.child.id();
    let rss_kb = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let before = rss_kb();
    // ~8 KB of real CNI JSON per invocation (stdin, echoed on stdout).
    let payload = serde_json::json!({
        "cniVersion": "1.0.0", "name": "rss", "type": "bridge", "bridge": "cni0", "isGateway": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": (0..12).map(|i| serde_json::json!({"name": format!("veth{i:08x}"), "mac": "aa:bb:cc:dd:ee:ff", "sandbox": format!("/var/run/netns/cni-{i:032x}")})).collect::<Vec<_>>(),
            "ips": (0..12).map(|i| serde_json::json!({"address": format!("10.88.0.{i}/16"), "gateway": "10.88.0.1", "interface": i})).collect::<Vec<_>>(),
            "routes": (0..20).map(|i| serde_json::json!({"dst": format!("10.{i}.0.0/16"), "gw": "10.88.0.1"})).collect::<Vec<_>>(),
            "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]}}
    })
    .to_string();
    let t = Instant::now();
    for i in 0..n {
        if i % 1000 == 0 {
            eprintln!("bench rss: {i}/{n} invocations");
        }
        let mut c = Command::new("cat")
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("rss{i}"))
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        use std::io::Write;
        c.stdin
            .take()
            .context("stdin")?
            .write_all(payload.as_bytes())?;
        c.wait()?;
    }
    // Let the last invocations complete and be retained.
    std::thread::sleep(Duration::from_millis(2500));
    let after = rss_kb();
    let (_, stats) = a.stop();
    println!(
        "| agent RSS with {n} retained invocations ({} B of stdin+stdout each) | at start | {:.1} MiB | |",
        2 * payload.len(),
        before as f64 / 1024.0
    );
    println!(
        "| | after the load | {:.1} MiB | retained {} ({:.1} MiB compressed), lost {}, {:.0} invocations/s generated |",
        after as f64 / 1024.0,
        stats["agent"]["retained"],
        stats["agent"]["retained_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        stats["lost"],
        n as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Instructions per replayed record, counted by cachegrind: the pipeline benchmark run for 1
/// and for 11 passes over the committed recordings, the difference divided by 10 passes. This
/// host's speed drifts by up to 1.6x from one minute to the next; instruction counts do not,
/// so changes to the pipeline are compared here and timed with `cargo bench`.
fn replay_instructions() -> Result<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        bail!("valgrind is missing: apt-get install valgrind");
    }
    let out = crate::cargo()
        .args(["bench", "-p", "cniscope", "--bench", "pipeline", "--no-run"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()?;
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "pipeline")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("no pipeline benchmark executable built")?;
    let count = |passes: u32, ndjson: bool| -> Result<(u64, u64)> {
        let o = Command::new("valgrind")
            .args([
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
            ])
            .arg(&exe)
            .env("CNISCOPE_BENCH_PASSES", passes.to_string())
            .env("CNISCOPE_BENCH_NDJSON", if ndjson { "1" } else { "0" })
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        let ir = err
            .lines()
            .find_map(|l| l.split("I   refs:").nth(1))
            .map(|n| n.trim().replace(',', ""))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no instruction count from cachegrind:\n{err}"))?;
        // "N passes of R records, …"
        let records = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(3)
            .and_then(|r| r.parse().ok())
            .context("no record count from the benchmark")?;
        Ok((ir, records))
    };
    for (ndjson, stage) in [
        (false, "decode + correlate"),
        (true, "decode + correlate + NDJSON"),
    ] {
        let (one, records) = count(1, ndjson)?;
        let (eleven, _) = count(11, ndjson)?;
        let per_pass = eleven.saturating_sub(one) / 10;
        println!(
            "| replay {stage}, instructions (cachegrind) | per record | {} | {per_pass} per pass of {records} records |",
            per_pass / records.max(1)
        );
    }
    Ok(())
}

pub fn bench(args: &[String]) -> Result<()> {
    let what = args.first().map(String::as_str).unwrap_or("all");
    if what == "replay-ir" {
        // Userspace only: no agent, no root, no setup.
        println!("| benchmark | variant | count | |\n|---|---|---|---|");
        return replay_instructions();
    }
    crate::setup::setup()?;
    crate::run(crate::cargo().args(["build", "--release", "-p", "cniscope"]))?;
    let bin: PathBuf = crate::workspace_root().join("target/release");
    println!("| benchmark | variant | median | ratio |\n|---|---|---|---|");
    if matches!(what, "dd" | "all") {
        dd(&bin, 5)?;
    }
    if matches!(what, "addel" | "all") {
        addel(&bin, 5, 40)?;
    }
    if matches!(what, "routes" | "routes-paired" | "all") {
        routes_paired(&bin, count_or("CNISCOPE_BENCH_PAIRS", 60), 10_000)?;
    }
    if matches!(what, "routes" | "all") {
        routes(&bin, count_or("CNISCOPE_BENCH_ROUNDS", 10), 10_000)?;
    }
    if matches!(what, "udp" | "all") {
        udp(&bin, 5, 200_000)?;
    }
    if matches!(what, "cycles" | "all") {
        cycles(&bin, 200)?;
    }
    if matches!(what, "rss" | "all") {
        rss(&bin, 10_000)?;
    }
    Ok(())
}
