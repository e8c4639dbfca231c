//! A platform for driving the plugin's library without a process, a netns or a cluster: a fixed
//! environment, pods served from memory, and a sandbox that records what it was asked to run.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use cniscope_cni::config::PluginConf;
use cniscope_cni::env::Environment;
use cniscope_cni::k8s::PodLookup;
use cniscope_cni::plugin::{self, Platform, Reply};
use cniscope_cni::sandbox::{Execution, NetnsId, Sandbox};
use serde_json::{Value, json};

pub struct Fake {
    pub env: BTreeMap<String, OsString>,
    pub pod: Option<Value>,
    pub namespace: Option<Value>,
    /// Every argv the sandbox was asked to run.
    pub ran: RefCell<Vec<Vec<String>>>,
    pub netns_ok: bool,
    /// Exit code the fake ip returns.
    pub exit_code: i32,
}

impl Fake {
    pub fn new(command: &str) -> Self {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "cid-1"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ] {
            env.insert(k.to_string(), OsString::from(v));
        }
        Fake {
            env,
            pod: None,
            namespace: None,
            ran: RefCell::new(Vec::new()),
            netns_ok: true,
            exit_code: 0,
        }
    }

    pub fn set_env_bytes(&mut self, k: &str, v: &[u8]) {
        self.env.insert(k.into(), OsString::from_vec(v.to_vec()));
    }

    pub fn run(&self, stdin: &Value) -> Reply {
        plugin::run(self, stdin.to_string().as_bytes())
    }
}

struct Api<'a>(&'a Fake);

impl PodLookup for Api<'_> {
    fn pod(&self, _: &str, _: &str) -> Result<Option<Value>, String> {
        Ok(self.0.pod.clone())
    }
    fn namespace(&self, _: &str) -> Result<Option<Value>, String> {
        Ok(self.0.namespace.clone())
    }
}

struct Recorder<'a>(&'a Fake);

impl Sandbox for Recorder<'_> {
    fn open(&mut self, _: &str) -> Result<NetnsId, String> {
        if self.0.netns_ok {
            Ok(NetnsId {
                inode: 4026530000,
                dev: 4,
            })
        } else {
            Err("not a network namespace".into())
        }
    }
    fn run(&mut self, argv: &[String], _: Duration, _: usize) -> Execution {
        self.0.ran.borrow_mut().push(argv.to_vec());
        Execution {
            outcome: "ran",
            exit_code: Some(self.0.exit_code),
            stdout: "ok\n".into(),
            ..Default::default()
        }
    }
}

impl Platform for Fake {
    fn env(&self) -> &dyn Environment {
        &self.env
    }
    fn lookup(&self, _: &PluginConf) -> Box<dyn PodLookup + '_> {
        Box::new(Api(self))
    }
    fn sandbox(&self, _: &PluginConf) -> Box<dyn Sandbox + '_> {
        Box::new(Recorder(self))
    }
}

/// A bridge-like prevResult for `version`, IPv4 only.
pub fn prev_result(version: &str) -> Value {
    let mut ip = json!({"address": "10.255.1.2/24", "gateway": "10.255.1.1", "interface": 2});
    if !version.starts_with('1') {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni-br0", "mac": "02:00:00:00:00:01"},
            {"name": "veth1234", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/pod"}
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.255.1.1"}],
        "dns": {"nameservers": ["10.255.1.1"]},
        "x-vendor-field": {"kept": [1, "two", null]}
    })
}

pub fn conf(version: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": "testnet",
        "type": "cniscope-cni",
        "tagDir": tag_dir(),
        "prevResult": prev_result(version),
    });
    if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
        o.extend(e);
    }
    c
}

thread_local! {
    static TAG_DIR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A tag directory for the current test (each test runs on its own thread), removed on drop.
pub struct TagDir(pub String);

impl TagDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir()
            .join(format!(
                "cniscope-cni-libtest-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ))
            .to_string_lossy()
            .into_owned();
        TAG_DIR.with(|t| *t.borrow_mut() = Some(d.clone()));
        TagDir(d)
    }
}

impl Drop for TagDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The current test's tag directory (see [`TagDir`]).
pub fn tag_dir() -> String {
    TAG_DIR
        .with(|t| t.borrow().clone())
        .expect("create a common::TagDir first")
}

pub fn parse(r: &Reply) -> Value {
    serde_json::from_slice(&r.stdout).unwrap_or(Value::Null)
}
