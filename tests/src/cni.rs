//! Invoking a CNI plugin exactly as a runtime does: a clean environment with the CNI_*
//! variables last (libcni appends them), the config on stdin, the result on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

pub struct PluginRun {
    pub stdin: Vec<u8>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
    pub pid: u32,
}

pub struct Invocation<'a> {
    pub command: &'a str,
    pub containerid: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: Option<&'a str>,
}

pub fn invoke(plugin: &str, inv: &Invocation, stdin: &[u8]) -> PluginRun {
    let mut c = Command::new(format!("{}/{plugin}", crate::CNI_BIN));
    // Command keeps variables sorted (a BTreeMap), so order is by key; a clean environment keeps
    // the block small, and the kernel side searches its whole tail either way.
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.containerid)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", crate::CNI_BIN);
    if let Some(a) = inv.args {
        c.env("CNI_ARGS", a);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning plugin");
    let pid = child.id();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for plugin");
    PluginRun {
        stdin: stdin.to_vec(),
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code(),
        pid,
    }
}

/// `plugin` asked for its versions (`CNI_COMMAND=VERSION`, config `{"cniVersion":"1.0.0"}`): a
/// real plugin run that changes nothing, with `netns` as its `CNI_NETNS`.
pub fn version(plugin: &str, netns: &str) -> PluginRun {
    invoke(
        plugin,
        &Invocation {
            command: "VERSION",
            containerid: "",
            netns,
            ifname: "",
            args: None,
        },
        br#"{"cniVersion":"1.0.0"}"#,
    )
}
