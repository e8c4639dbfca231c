//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, …) behind a trait, so the plugin's
//! logic runs in unit tests without a process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::error::CniError;

/// Where the plugin reads its environment variables from.
pub trait Environment {
    fn var_os(&self, key: &str) -> Option<OsString>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var_os(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }
}

/// A fixed environment for tests.
impl Environment for BTreeMap<String, OsString> {
    fn var_os(&self, key: &str) -> Option<OsString> {
        self.get(key).cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The `CNI_*` variables, validated for the command at hand.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub path: String,
    /// `CNI_ARGS` as raw key/value byte strings: values are only decoded when read, so a
    /// non-UTF-8 value in someone else's key does not break this plugin.
    pub args: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CniEnv {
    /// A `CNI_ARGS` value as UTF-8 (`Err` carries the key when the bytes are not UTF-8).
    pub fn arg(&self, key: &str) -> Result<Option<&str>, String> {
        match self.args.iter().find(|(k, _)| k == key.as_bytes()) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| format!("CNI_ARGS value of {key} is not UTF-8")),
        }
    }
}

/// Reads `CNI_COMMAND` alone (so that VERSION works with nothing else set).
pub fn command(env: &dyn Environment) -> Result<Command, CniError> {
    let raw = env
        .var_os("CNI_COMMAND")
        .ok_or_else(|| CniError::invalid_env("CNI_COMMAND is not set"))?;
    let s = raw
        .to_str()
        .ok_or_else(|| CniError::invalid_env("CNI_COMMAND is not UTF-8"))?;
    Command::parse(s).ok_or_else(|| CniError::invalid_env(format!("unknown CNI_COMMAND {s:?}")))
}

/// Reads and checks the variables the spec requires for `cmd` (the reference plugins' skel does
/// the same: CONTAINERID/IFNAME/PATH for ADD, DEL, CHECK; NETNS for ADD and CHECK).
pub fn load(env: &dyn Environment, cmd: Command) -> Result<CniEnv, CniError> {
    let needs_attachment = matches!(cmd, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(cmd, Command::Add | Command::Check);
    let get = |key: &str, required: bool| -> Result<String, CniError> {
        match env.var_os(key) {
            None if required => Err(CniError::invalid_env(format!("{key} is not set"))),
            None => Ok(String::new()),
            Some(v) => match v.into_string() {
                Ok(s) if required && s.is_empty() => {
                    Err(CniError::invalid_env(format!("{key} is empty")))
                }
                Ok(s) => Ok(s),
                Err(_) => Err(CniError::invalid_env(format!("{key} is not UTF-8"))),
            },
        }
    };
    let args = env
        .var_os("CNI_ARGS")
        .map(|v| parse_args(v.as_bytes()))
        .unwrap_or_default();
    Ok(CniEnv {
        container_id: get("CNI_CONTAINERID", needs_attachment)?,
        netns: get("CNI_NETNS", needs_netns)?,
        ifname: get("CNI_IFNAME", needs_attachment)?,
        path: get("CNI_PATH", needs_attachment)?,
        args,
    })
}

/// `K=V;K2=V2`. Pairs without `=` are skipped: they belong to whoever set them, and libcni's
/// `IgnoreUnknown` convention means a plugin should not fail on keys it does not own.
pub fn parse_args(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split(|b| *b == b';')
        .filter_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((pair[..eq].to_vec(), pair[eq + 1..].to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn env(pairs: &[(&str, &[u8])]) -> BTreeMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from_vec(v.to_vec())))
            .collect()
    }

    #[test]
    fn add_requires_netns_but_del_does_not() {
        let e = env(&[
            ("CNI_COMMAND", b"ADD"),
            ("CNI_CONTAINERID", b"c1"),
            ("CNI_IFNAME", b"eth0"),
            ("CNI_PATH", b"/opt/cni/bin"),
        ]);
        let err = load(&e, Command::Add).unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.details().contains("CNI_NETNS"));
        let ok = load(&e, Command::Del).unwrap();
        assert_eq!(ok.container_id, "c1");
        assert_eq!(ok.netns, "");
    }

    #[test]
    fn version_needs_only_the_command() {
        let e = env(&[("CNI_COMMAND", b"VERSION")]);
        assert_eq!(command(&e).unwrap(), Command::Version);
        assert!(load(&e, Command::Version).is_ok());
    }

    #[test]
    fn bad_command_is_invalid_env() {
        for v in [&b"add"[..], b"", b"\xff"] {
            let e = env(&[("CNI_COMMAND", v)]);
            assert_eq!(command(&e).unwrap_err().code(), 4);
        }
        assert_eq!(command(&env(&[])).unwrap_err().code(), 4);
    }

    #[test]
    fn cni_args_are_split_and_decoded_lazily() {
        let a = parse_args(
            b"IgnoreUnknown=1;K8S_POD_NAME=p;junk;X=\xff;CNISCOPE_COMMANDS=[\"ip route\"]",
        );
        assert_eq!(a.len(), 4);
        let e = CniEnv {
            args: a,
            ..Default::default()
        };
        assert_eq!(e.arg("K8S_POD_NAME").unwrap(), Some("p"));
        assert_eq!(e.arg("CNISCOPE_COMMANDS").unwrap(), Some("[\"ip route\"]"));
        assert!(e.arg("X").is_err());
        assert_eq!(e.arg("missing").unwrap(), None);
    }
}
