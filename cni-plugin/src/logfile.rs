//! The optional `logFile` (as CNI-passthrough has): stdin, the CNI environment and what the
//! plugin printed, appended to a file whose path may name environment variables.

use std::io::Write;

use crate::env::Environment;

/// Expands `${NAME}` and `$NAME` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) from `env`; unset variables
/// expand to nothing. Nothing else is interpreted: no commands, no globbing, no `~`. A `/` in a
/// value becomes `_`, so a container id can never climb out of the directory the operator chose.
pub fn expand(template: &str, env: &dyn Environment) -> String {
    let b = template.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let is_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] == b'$' {
            let (name_start, braced) = if b.get(i + 1) == Some(&b'{') {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            if b.get(name_start).copied().is_some_and(is_start) {
                let end = (name_start..b.len())
                    .find(|&j| !is_name(b[j]))
                    .unwrap_or(b.len());
                if !braced || b.get(end) == Some(&b'}') {
                    let name = &template[name_start..end];
                    let v = env
                        .var_os(name)
                        .map(|v| v.to_string_lossy().replace('/', "_"))
                        .unwrap_or_default();
                    out.push_str(&v);
                    i = if braced { end + 1 } else { end };
                    continue;
                }
            }
        }
        // Copy one UTF-8 character.
        let ch_len = template[i..]
            .chars()
            .next()
            .map(char::len_utf8)
            .unwrap_or(1);
        out.push_str(&template[i..i + ch_len]);
        i += ch_len;
    }
    out
}

const CNI_VARS: &[&str] = &[
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Appends one record. Failures are reported on stderr and otherwise ignored: the log must
/// never change the plugin's answer.
pub fn append(template: &str, env: &dyn Environment, stdin: &[u8], stdout: &[u8], extra: &str) {
    let path = expand(template, env);
    let mut rec = format!("==== cniscope-cni {} ====\n", crate::tag::now_rfc3339());
    for k in CNI_VARS {
        if let Some(v) = env.var_os(k) {
            rec.push_str(&format!("{k}={}\n", v.to_string_lossy()));
        }
    }
    rec.push_str("---- stdin ----\n");
    rec.push_str(&String::from_utf8_lossy(stdin));
    rec.push_str("\n---- stdout ----\n");
    rec.push_str(&String::from_utf8_lossy(stdout));
    if !extra.is_empty() {
        rec.push_str("\n---- commands ----\n");
        rec.push_str(extra);
    }
    rec.push('\n');
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(rec.as_bytes()));
    if let Err(e) = r {
        eprintln!("cniscope-cni: logFile {path:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    #[test]
    fn expansion_is_plain() {
        let env: BTreeMap<String, OsString> = [
            ("CNI_CONTAINERID".to_string(), OsString::from("abc")),
            ("CNI_COMMAND".to_string(), OsString::from("ADD")),
            ("EVIL".to_string(), OsString::from("../../etc/passwd")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            expand("/tmp/debug_${CNI_CONTAINERID}_${CNI_COMMAND}.log", &env),
            "/tmp/debug_abc_ADD.log"
        );
        assert_eq!(expand("/tmp/$CNI_COMMAND-x", &env), "/tmp/ADD-x");
        assert_eq!(expand("/tmp/${EVIL}", &env), "/tmp/.._.._etc_passwd");
        assert_eq!(expand("/tmp/$(id)`id`${UNSET}$", &env), "/tmp/$(id)`id`$");
        assert_eq!(expand("/tmp/${CNI_COMMAND", &env), "/tmp/${CNI_COMMAND");
        assert_eq!(expand("/tmp/é$1", &env), "/tmp/é$1");
    }
}
