//! Starting a plugin with an environment in exactly the order libcni gives it.
//!
//! `std::process::Command` keeps the variables it is given (and, once any is set or cleared,
//! the whole inherited environment) in a `BTreeMap`, so the child's envp comes out sorted by
//! name: `CNI_*` would sit near the front, not at the end where libcni appends them and where
//! cniscope's kernel side looks (the last 4 KiB of the block). `tests::command_sorts_the_environment`
//! shows it. So the envp is built here, in order, and the child calls `execve` itself from
//! `pre_exec` — after `Command` has set up stdin/stdout/stderr — with arrays prepared before the
//! fork (nothing is allocated in the child).

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// NUL-terminated argv/envp arrays and the strings they point into.
struct ExecImage {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`/`path`, owned by the same struct and never mutated
// after construction; the child only reads them.
unsafe impl Send for ExecImage {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for ExecImage {}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

impl ExecImage {
    fn new(path: &Path, env: &[(OsString, OsString)]) -> io::Result<Self> {
        let path_c = cstring(path.as_os_str().as_bytes())?;
        let mut strings = vec![path_c.clone()];
        for (k, v) in env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(cstring(&kv)?);
        }
        let argv = vec![strings[0].as_ptr(), std::ptr::null()];
        let mut envp: Vec<*const libc::c_char> = strings[1..].iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(ExecImage {
            path: path_c,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// Spawns `path` (argv = `[path]`) with exactly `env`, in that order, stdin/stdout piped and
/// stderr inherited (as libcni does).
pub fn spawn_ordered(path: &Path, env: &[(OsString, OsString)]) -> io::Result<Child> {
    let image = Arc::new(ExecImage::new(path, env)?);
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let img = Arc::clone(&image);
    // SAFETY: runs in the child after fork: execve is async-signal-safe and only reads the
    // arrays built above; if it returns, the error is handed back to the parent by std.
    unsafe {
        cmd.pre_exec(move || {
            libc::execve(img.path.as_ptr(), img.argv.as_ptr(), img.envp.as_ptr());
            Err(io::Error::last_os_error())
        });
    }
    let child = cmd.spawn();
    drop(image);
    child
}

/// The runtime's environment without any `CNI_*` variables, then the CNI variables in libcni's
/// order (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_ARGS`, `CNI_IFNAME`, `CNI_PATH`).
/// libcni appends them to `os.Environ()` and then drops earlier duplicates; dropping inherited
/// `CNI_*` first gives the same block.
pub fn plugin_env(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    cni: &[(&str, &str)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = inherited
        .into_iter()
        .filter(|(k, _)| !k.as_bytes().starts_with(b"CNI_"))
        .collect();
    env.extend(
        cni.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn environ_of(mut child: Child) -> Vec<String> {
        drop(child.stdin.take());
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        out.lines().map(String::from).collect()
    }

    #[test]
    fn cni_variables_come_last_in_order() {
        let env = plugin_env(
            vec![
                ("ZZZ".into(), "1".into()),
                ("CNI_COMMAND".into(), "stale".into()),
                ("AAA".into(), "2".into()),
            ],
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_ARGS", ""),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
        );
        let lines = environ_of(spawn_ordered(Path::new("/usr/bin/env"), &env).unwrap());
        assert_eq!(
            lines,
            [
                "ZZZ=1",
                "AAA=2",
                "CNI_COMMAND=ADD",
                "CNI_CONTAINERID=c",
                "CNI_NETNS=/run/netns/x",
                "CNI_ARGS=",
                "CNI_IFNAME=eth0",
                "CNI_PATH=/usr/lib/cni"
            ]
        );
    }

    /// Why `spawn_ordered` exists: `Command::env` does not keep insertion order.
    #[test]
    fn command_sorts_the_environment() {
        let mut c = Command::new("/usr/bin/env");
        c.env_clear()
            .env("ZZZ", "1")
            .env("CNI_COMMAND", "ADD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let lines = environ_of(c.spawn().unwrap());
        assert_eq!(lines, ["CNI_COMMAND=ADD", "ZZZ=1"]);
    }

    #[test]
    fn missing_binary_is_an_error_not_a_hang() {
        let e = spawn_ordered(Path::new("/nonexistent/plugin"), &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
