//! `cniscope exec add|check|del|status|gc`: runs a CNI configuration list against a network
//! namespace the way libcni (and so containerd, CRI-O, podman's CNI backend and cnitool) does:
//! plugins in list order (DEL in reverse), `name`/`cniVersion` injected into each plugin's
//! config, each ADD result handed to the next plugin as `prevResult`, the final result cached and
//! given back as `prevResult` to CHECK and DEL, CNI_ARGS and capability arguments passed through,
//! and the `CNI_*` variables appended at the end of the plugin's environment.

mod cache;
mod conflist;
mod spawn;

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecCommand {
    Add,
    Check,
    Del,
    Status,
    Gc,
}

impl ExecCommand {
    fn cni(self) -> &'static str {
        match self {
            ExecCommand::Add => "ADD",
            ExecCommand::Check => "CHECK",
            ExecCommand::Del => "DEL",
            ExecCommand::Status => "STATUS",
            ExecCommand::Gc => "GC",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// What to do: add, check, del, status or gc.
    #[arg(value_enum)]
    pub command: ExecCommand,
    /// A .conflist (or single-plugin .conf) file, or the name of a network in --conf-dir.
    pub network: String,
    /// Path of the network namespace (e.g. /run/netns/NAME); needed for add and check.
    pub netns: Option<String>,
    /// Directory searched when NETWORK is a name.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// Plugin directories, `:`-separated [default: $CNI_PATH, else /opt/cni/bin:/usr/lib/cni].
    #[arg(long)]
    pub cni_path: Option<String>,
    /// Container id [default: derived from the netns path].
    #[arg(long)]
    pub container_id: Option<String>,
    /// Interface name inside the namespace.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// CNI_ARGS, as `K=V;K2=V2`.
    #[arg(long)]
    pub args: Option<String>,
    /// A capability argument, `KEY=JSON` (e.g. `portMappings=[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]`);
    /// given to plugins that declare the capability, under runtimeConfig. Repeatable.
    #[arg(long = "cap", value_name = "KEY=JSON")]
    pub caps: Vec<String>,
    /// Where results are cached (`<dir>/results/<network>-<container id>-<ifname>`).
    #[arg(long, default_value = "/var/lib/cni")]
    pub cache_dir: PathBuf,
}

/// Runs the command; the exit code is 0 on success and 1 when a plugin failed (its error JSON
/// is printed on stdout, as the runtime would see it).
pub fn run(args: &ExecArgs) -> Result<i32> {
    let list = conflist::load(&args.network, &args.conf_dir)?;
    let cni_path = args
        .cni_path
        .clone()
        .or_else(|| std::env::var("CNI_PATH").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "/opt/cni/bin:/usr/lib/cni".to_string());
    let netns = args.netns.clone().unwrap_or_default();
    if matches!(args.command, ExecCommand::Add | ExecCommand::Check) && netns.is_empty() {
        bail!("{} needs a network namespace path", args.command.cni());
    }
    let container_id = args
        .container_id
        .clone()
        .unwrap_or_else(|| derived_container_id(&netns, &list.name));
    let cni_args = parse_cni_args(args.args.as_deref().unwrap_or(""))?;
    let caps = parse_caps(&args.caps)?;
    let key = cache::Key {
        network: &list.name,
        container_id: &container_id,
        ifname: &args.ifname,
    };
    let run = Runner {
        list: &list,
        cni_path: &cni_path,
        container_id: &container_id,
        netns: &netns,
        ifname: &args.ifname,
        cni_args: args.args.clone().unwrap_or_default(),
        caps: &caps,
    };
    let v = list.cni_version.as_str();
    match args.command {
        ExecCommand::Add => {
            let mut prev: Option<Value> = None;
            for p in &list.plugins {
                match run.invoke("ADD", p, prev.as_ref(), &[])? {
                    Outcome::Ok(Some(r)) => prev = Some(r),
                    Outcome::Ok(None) => {
                        bail!("plugin {} returned no result on ADD", plugin_type(p))
                    }
                    Outcome::Failed(e) => return Ok(print_error(&e)),
                }
            }
            let result = prev.unwrap_or_else(|| json!({"cniVersion": v}));
            cache::write(
                &args.cache_dir,
                &key,
                &list.bytes,
                &netns,
                &cni_args,
                &caps,
                &result,
            )?;
            print_json(&result);
        }
        ExecCommand::Check => {
            if !at_least(v, "0.4.0") {
                bail!("configuration version {v:?} does not support the CHECK command");
            }
            if list.disable_check {
                return Ok(0);
            }
            let cached = cache::read_result(&args.cache_dir, &key)?.with_context(|| {
                format!(
                    "no cached result for {}: run add first (cache {:?})",
                    list.name,
                    cache::path(&args.cache_dir, &key)
                )
            })?;
            for p in &list.plugins {
                if let Outcome::Failed(e) = run.invoke("CHECK", p, Some(&cached), &[])? {
                    return Ok(print_error(&e));
                }
            }
        }
        ExecCommand::Del => {
            // Before 0.4.0 DEL gets no prevResult (libcni does the same).
            let cached = if at_least(v, "0.4.0") {
                cache::read_result(&args.cache_dir, &key)?
            } else {
                None
            };
            for p in list.plugins.iter().rev() {
                if let Outcome::Failed(e) = run.invoke("DEL", p, cached.as_ref(), &[])? {
                    return Ok(print_error(&e));
                }
            }
            cache::remove(&args.cache_dir, &key);
        }
        ExecCommand::Status => {
            if !at_least(v, "1.1.0") {
                eprintln!(
                    "cniscope exec: STATUS needs cniVersion 1.1.0 (list is {v}); nothing to ask"
                );
                return Ok(0);
            }
            for p in &list.plugins {
                if let Outcome::Failed(e) = run.invoke("STATUS", p, None, &[])? {
                    return Ok(print_error(&e));
                }
            }
        }
        ExecCommand::Gc => {
            if !at_least(v, "1.1.0") || list.disable_gc {
                eprintln!(
                    "cniscope exec: GC needs cniVersion 1.1.0 and disableGC unset; nothing to do"
                );
                return Ok(0);
            }
            let valid: Vec<Value> = cache::attachments(&args.cache_dir, &list.name)
                .into_iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            let extra = [
                ("cni.dev/valid-attachments", Value::Array(valid.clone())),
                ("cni.dev/attachments", Value::Array(valid)),
            ];
            for p in &list.plugins {
                if let Outcome::Failed(e) = run.invoke("GC", p, None, &extra)? {
                    return Ok(print_error(&e));
                }
            }
        }
    }
    Ok(0)
}

struct Runner<'a> {
    list: &'a conflist::ConfList,
    cni_path: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    cni_args: String,
    caps: &'a Map<String, Value>,
}

enum Outcome {
    /// Exit 0, with the parsed stdout when there was any.
    Ok(Option<Value>),
    /// Non-zero exit: the plugin's error JSON (or one made up when it printed none).
    Failed(Value),
}

impl Runner<'_> {
    fn invoke(
        &self,
        command: &str,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        extra: &[(&str, Value)],
    ) -> Result<Outcome> {
        let t = plugin_type(plugin);
        let path = conflist::find_plugin(t, self.cni_path)?;
        let stdin = conflist::plugin_stdin(self.list, plugin, prev, self.caps, extra);
        let env = spawn::plugin_env(
            std::env::vars_os(),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", self.container_id),
                ("CNI_NETNS", self.netns),
                ("CNI_ARGS", &self.cni_args),
                ("CNI_IFNAME", self.ifname),
                ("CNI_PATH", self.cni_path),
            ],
        );
        let mut child =
            spawn::spawn_ordered(&path, &env).with_context(|| format!("starting {path:?}"))?;
        let mut w = child.stdin.take().context("plugin stdin")?;
        // Written from a thread so a plugin that prints before reading all of stdin cannot
        // deadlock against us.
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&stdin);
        });
        let mut out = Vec::new();
        child
            .stdout
            .take()
            .context("plugin stdout")?
            .read_to_end(&mut out)
            .with_context(|| format!("reading {t}'s stdout"))?;
        let status = child.wait().with_context(|| format!("waiting for {t}"))?;
        let _ = writer.join();
        let parsed: Option<Value> = if out.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice(&out).ok()
        };
        if status.success() {
            if parsed.is_none() && !out.iter().all(u8::is_ascii_whitespace) {
                bail!(
                    "plugin {t} printed something that is not JSON: {}",
                    String::from_utf8_lossy(&out)
                );
            }
            return Ok(Outcome::Ok(parsed));
        }
        Ok(Outcome::Failed(match parsed {
            Some(e) if e.get("code").is_some() => e,
            _ => json!({
                "cniVersion": self.list.cni_version,
                "code": 999,
                "msg": format!("plugin {t} failed with no error message: {status}"),
                "details": String::from_utf8_lossy(&out),
            }),
        }))
    }
}

fn plugin_type(p: &Map<String, Value>) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or("")
}

fn print_json(v: &Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    let _ = std::io::stdout().write_all(s.as_bytes());
}

fn print_error(e: &Value) -> i32 {
    print_json(e);
    1
}

fn at_least(v: &str, min: &str) -> bool {
    let p = |s: &str| -> Vec<u32> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(v) >= p(min)
}

/// `cniscope-` and 16 hex digits of an FNV-1a hash of the netns path (or the network name when
/// there is no netns): stable, so `add` then `del` with the same path need no --container-id.
fn derived_container_id(netns: &str, network: &str) -> String {
    let seed = if netns.is_empty() { network } else { netns };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("cniscope-{h:016x}")
}

fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--args: {p:?} is not KEY=VALUE"),
        })
        .collect()
}

fn parse_caps(caps: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for c in caps {
        let (k, v) = c
            .split_once('=')
            .with_context(|| format!("--cap {c:?}: expected KEY=JSON"))?;
        let v: Value =
            serde_json::from_str(v).with_context(|| format!("--cap {k}: value is not JSON"))?;
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_args() {
        assert_eq!(
            derived_container_id("/run/netns/a", "n"),
            derived_container_id("/run/netns/a", "m")
        );
        assert_ne!(
            derived_container_id("/run/netns/a", "n"),
            derived_container_id("/run/netns/b", "n")
        );
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=p;X=a=b").unwrap(),
            [
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("K8S_POD_NAME".into(), "p".into()),
                ("X".into(), "a=b".into())
            ]
        );
        assert!(parse_cni_args("novalue").is_err());
        let c = parse_caps(&["portMappings=[{\"hostPort\":1}]".into()]).unwrap();
        assert_eq!(c["portMappings"][0]["hostPort"], 1);
        assert!(parse_caps(&["x=notjson".into()]).is_err());
        assert!(at_least("1.1.0", "0.4.0") && !at_least("0.3.1", "0.4.0"));
    }
}
