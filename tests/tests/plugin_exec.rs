//! `cniscope exec` running a real chain (bridge → cniscope-cni → an env-dumping plugin) the way
//! libcni does, against a netns made for the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cniscope_tests::plugin_chain::{Chain, plugin_bin};
use serde_json::{Value, json};

fn cniscope() -> PathBuf {
    let p = cniscope_tests::bin_dir().join("cniscope");
    let help = Command::new(&p).args(["exec", "--help"]).output();
    assert!(
        help.as_ref().is_ok_and(|o| o.status.success()),
        "{p:?} has no `exec` subcommand: build it with `cargo build -p cniscope` (userspace wires exec::ExecArgs)"
    );
    p
}

struct Setup {
    chain: Chain,
    bin: PathBuf,
    cache: PathBuf,
    env_dump: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let chain = Chain::new();
        let d = chain.dir.path().to_path_buf();
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for e in std::fs::read_dir(cniscope_tests::CNI_BIN)
            .unwrap()
            .flatten()
        {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(plugin_bin(), bin.join("cniscope-cni")).unwrap();
        // A chained plugin that records its environment and passes prevResult on.
        let env_dump = d.join("environ");
        let script = format!(
            "#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ > {}.$CNI_COMMAND\njq -c '.prevResult // empty'\n",
            env_dump.display()
        );
        std::fs::write(bin.join("envdump"), script).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(bin.join("envdump"))
            .status()
            .unwrap();
        Setup {
            cache: d.join("cache"),
            chain,
            bin,
            env_dump,
        }
    }

    fn conflist(&self, version: &str, plugins: Vec<Value>) -> PathBuf {
        let p = self
            .chain
            .dir
            .path()
            .join(format!("net-{version}.conflist"));
        let l = json!({"cniVersion": version, "name": "cniscope-exec-test", "plugins": plugins});
        std::fs::write(&p, l.to_string()).unwrap();
        p
    }

    fn exec(&self, cmd: &str, conflist: &Path, extra: &[&str]) -> Output {
        Command::new(cniscope())
            .arg("exec")
            .arg(cmd)
            .arg(conflist)
            .arg(self.chain.ns.path())
            .arg("--cni-path")
            .arg(&self.bin)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--container-id")
            .arg(&self.chain.container_id)
            .args(extra)
            .env("SOME_RUNTIME_VAR", "x")
            .output()
            .expect("running cniscope exec")
    }
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}: {} {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn exec_add_check_del_a_real_chain() {
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let s = Setup::new();
        let list = s.conflist(
            v,
            vec![
                s.chain.bridge_plugin(),
                s.chain
                    .cniscope_plugin(json!({"policy": {"allow": ["route add"]}})),
                json!({"type": "envdump"}),
            ],
        );
        let args = "IgnoreUnknown=1;CNISCOPE_COMMANDS=[\"ip route add 192.0.3.0/24 dev CURRENT_INTERFACE\",\"ip route\"]";
        let out = s.exec("add", &list, &["--args", args]);
        assert!(out.status.success(), "{v}: {}", show(&out));
        let result: Value = serde_json::from_slice(&out.stdout).expect("result JSON");
        assert_eq!(result["cniVersion"], v);
        assert!(
            result["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.255.")
        );
        assert!(
            s.chain.ns.ip(&["route"]).contains("192.0.3.0/24 dev eth0"),
            "{v}"
        );
        let tag = s.chain.tag().expect("tag");
        assert!(
            tag["attachments"][0]["commands"][1]["stdout"]
                .as_str()
                .unwrap()
                .contains("192.0.3.0/24")
        );
        // libcni's environment: the runtime's own variables, then CNI_* last, in libcni's order.
        let env = std::fs::read_to_string(format!("{}.ADD", s.env_dump.display())).unwrap();
        let lines: Vec<&str> = env.lines().collect();
        let tail: Vec<&str> = lines[lines.len() - 6..]
            .iter()
            .map(|l| l.split('=').next().unwrap())
            .collect();
        assert_eq!(
            tail,
            [
                "CNI_COMMAND",
                "CNI_CONTAINERID",
                "CNI_NETNS",
                "CNI_ARGS",
                "CNI_IFNAME",
                "CNI_PATH"
            ]
        );
        assert!(lines.contains(&"SOME_RUNTIME_VAR=x"));
        assert!(lines.contains(&format!("CNI_ARGS={args}").as_str()));
        // The result is cached where libcni caches it.
        let cache = s.cache.join(format!(
            "results/cniscope-exec-test-{}-eth0",
            s.chain.container_id
        ));
        let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        assert_eq!(cached["result"], result);
        assert_eq!(cached["kind"], "cniCacheV1");

        let check = s.exec("check", &list, &[]);
        if v == "0.3.1" {
            assert!(!check.status.success(), "CHECK is not in 0.3.1");
        } else {
            assert!(check.status.success(), "{v}: {}", show(&check));
            // CHECK got the cached result as prevResult.
            let env = std::fs::read_to_string(format!("{}.CHECK", s.env_dump.display())).unwrap();
            assert!(env.contains("CNI_COMMAND=CHECK"));
        }
        let del = s.exec("del", &list, &[]);
        assert!(del.status.success(), "{v}: {}", show(&del));
        assert!(!cache.exists(), "cache removed after DEL");
        assert!(s.chain.tag().is_none(), "tag removed by cniscope-cni's DEL");
        // DEL ran in reverse: envdump first, so its DEL environment exists.
        assert!(Path::new(&format!("{}.DEL", s.env_dump.display())).exists());
        // A second DEL (nothing cached) still succeeds.
        assert!(s.exec("del", &list, &[]).status.success());
    }
}

#[test]
fn exec_reports_a_plugin_error_as_cni_json() {
    let s = Setup::new();
    let list = s.conflist(
        "1.0.0",
        vec![
            s.chain.bridge_plugin(),
            s.chain.cniscope_plugin(
                json!({"policy": {"onError": "fail"}, "commands": ["ip -n x route"]}),
            ),
        ],
    );
    let out = s.exec("add", &list, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err: Value = serde_json::from_slice(&out.stdout).expect("error JSON on stdout");
    assert_eq!(err["code"], 100);
    let _ = s.exec("del", &list, &[]);
}

#[test]
fn exec_status_and_gc_with_1_1_0() {
    let s = Setup::new();
    // The Debian plugins stop at 1.0.0; a 1.1.0 list of cniscope-cni alone exercises STATUS/GC.
    let list = s.conflist("1.1.0", vec![s.chain.cniscope_plugin(json!({}))]);
    let out = s.exec("status", &list, &[]);
    assert!(out.status.success(), "{}", show(&out));
    // A stale tag of this network is collected: nothing in the cache is valid.
    let tags = s.chain.tag_dir();
    std::fs::create_dir_all(&tags).unwrap();
    let stale = json!({"netns_inode": 1, "netns_dev": 1, "attachments": [
        {"container_id": "gone", "ifname": "eth0", "network": "cniscope-exec-test"}]});
    std::fs::write(tags.join("1.json"), stale.to_string()).unwrap();
    let out = s.exec("gc", &list, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!tags.join("1.json").exists(), "GC removed the stale tag");
}
