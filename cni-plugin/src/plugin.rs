//! ADD, DEL, CHECK, STATUS, GC and VERSION. Each parses and validates first, does its side
//! effects last, and produces one reply that `main` prints once.

use serde_json::{Value, json};

use crate::commands::{self, OnError, Prepared};
use crate::config::{self, PluginConf};
use crate::env::{self, CniEnv, Command, Environment};
use crate::error::CniError;
use crate::k8s::PodLookup;
use crate::sandbox::{Execution, Sandbox};
use crate::sources::{self, Problem};
use crate::{logfile, tag, version};

/// What the plugin needs from the outside world.
pub trait Platform {
    fn env(&self) -> &dyn Environment;
    fn lookup(&self, conf: &PluginConf) -> Box<dyn PodLookup + '_>;
    fn sandbox(&self, conf: &PluginConf) -> Box<dyn Sandbox + '_>;
}

/// What to print on stdout and how to exit.
#[derive(Debug)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
    /// The ADD's report (also written to the tag), for tests and the log file.
    pub report: Option<Value>,
}

/// Runs one invocation end to end.
pub fn run(p: &dyn Platform, stdin: &[u8]) -> Reply {
    let mut report = None;
    let mut log_template = None;
    let reply = match dispatch(p, stdin, &mut report, &mut log_template) {
        Ok(out) => Reply {
            stdout: out.map(|v| pretty(&v)).unwrap_or_default(),
            exit_code: 0,
            report,
        },
        Err((e, v)) => Reply {
            stdout: pretty(&e.to_json(&v)),
            exit_code: 1,
            report,
        },
    };
    if let Some(t) = log_template {
        let extra = reply
            .report
            .as_ref()
            .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
            .unwrap_or_default();
        logfile::append(&t, p.env(), stdin, &reply.stdout, &extra);
    }
    reply
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

type Failure = (CniError, String);

fn dispatch(
    p: &dyn Platform,
    stdin: &[u8],
    report: &mut Option<Value>,
    log_template: &mut Option<String>,
) -> Result<Option<Value>, Failure> {
    let fallback_version =
        || config::peek_version(stdin).unwrap_or_else(|| version::LATEST.to_string());
    let cmd = env::command(p.env()).map_err(|e| (e, fallback_version()))?;
    if cmd == Command::Version {
        let requested = config::peek_version(stdin);
        return Ok(Some(version::version_info(requested.as_deref())));
    }
    let cenv = env::load(p.env(), cmd).map_err(|e| (e, fallback_version()))?;
    let conf = config::parse(stdin).map_err(|e| (e, fallback_version()))?;
    *log_template = conf.log_file.clone();
    let v = conf.cni_version.clone();
    let needs = |min: &str| {
        if version::at_least(&v, min) {
            Ok(())
        } else {
            Err((
                CniError::IncompatibleVersion {
                    details: format!("config version {v} does not allow {}", cmd.as_str()),
                },
                v.clone(),
            ))
        }
    };
    match cmd {
        Command::Add => add(p, &conf, &cenv, report).map(Some),
        Command::Del => {
            del(p, &conf, &cenv);
            Ok(None)
        }
        Command::Check => {
            needs("0.4.0")?;
            check(p, &conf, &cenv).map(|()| None)
        }
        Command::Status => {
            needs("1.1.0")?;
            Ok(None)
        }
        Command::Gc => {
            needs("1.1.0")?;
            gc(&conf).map(|()| None)
        }
        Command::Version => Ok(None),
    }
    .map_err(|(e, _): Failure| (e, v.clone()))
}

fn add(
    p: &dyn Platform,
    conf: &PluginConf,
    cenv: &CniEnv,
    report: &mut Option<Value>,
) -> Result<Value, Failure> {
    let v = conf.cni_version.clone();
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        (
            CniError::invalid_config(
                "no prevResult: cniscope-cni is a chained plugin and must follow a plugin that creates the interface",
            ),
            v.clone(),
        )
    })?;
    let result = version::result_in_version(prev, &v);
    let policy = &conf.policy;
    let lookup = p.lookup(conf);
    let gathered = sources::gather(&conf.raw, cenv, lookup.as_ref(), policy);
    let tokens = commands::Tokens::from_result(Some(prev), &cenv.netns, &cenv.ifname);
    let mut sandbox = p.sandbox(conf);
    let netns = sandbox.open(&cenv.netns);

    let mut entries: Vec<Value> = Vec::new();
    let mut problem: Option<CniError> = None;
    let texts = match &gathered.commands {
        Ok(t) => t.clone(),
        Err(Problem::Unreadable(why)) => {
            problem = Some(CniError::Source {
                details: format!(
                    "{}: {why}",
                    gathered.source.as_deref().unwrap_or("commands")
                ),
            });
            Vec::new()
        }
        Err(Problem::Refused(why)) => {
            problem = Some(CniError::Refused {
                details: why.clone(),
            });
            Vec::new()
        }
    };
    if texts.len() > policy.max_commands {
        let why = format!(
            "{} commands, over policy.maxCommands = {}: none was run",
            texts.len(),
            policy.max_commands
        );
        problem = Some(CniError::Refused {
            details: why.clone(),
        });
    } else if !texts.is_empty() {
        if let Err(why) = &netns {
            problem = Some(CniError::Io {
                details: why.clone(),
            });
        } else {
            let prepared: Vec<Result<Prepared, String>> = texts
                .iter()
                .map(|t| commands::prepare(t, policy, &tokens))
                .collect();
            let refused: Vec<String> = texts
                .iter()
                .zip(&prepared)
                .filter_map(|(t, r)| r.as_ref().err().map(|why| format!("{}: {why}", shorten(t))))
                .collect();
            let run_any = refused.is_empty() || policy.on_error == OnError::Passthrough;
            if !refused.is_empty() {
                problem = Some(CniError::Refused {
                    details: refused.join("; "),
                });
            }
            let mut stop: Option<String> = None;
            for (text, prep) in texts.iter().zip(&prepared) {
                let entry = match prep {
                    Err(why) => refused_entry(text, why),
                    Ok(_) if !run_any => {
                        skipped_entry(text, "another command was refused; nothing ran")
                    }
                    Ok(_) if stop.is_some() => {
                        skipped_entry(text, &format!("not run: {}", stop.as_deref().unwrap_or("")))
                    }
                    Ok(prep) => {
                        let ex = sandbox.run(&prep.argv, policy.timeout, policy.max_output_bytes);
                        if !ex.succeeded() {
                            let why = describe_failure(text, &ex);
                            if problem.is_none() {
                                problem = Some(if ex.outcome == "timeout" {
                                    CniError::Timeout {
                                        details: why.clone(),
                                    }
                                } else {
                                    CniError::CommandFailed {
                                        details: why.clone(),
                                    }
                                });
                            }
                            if policy.on_error == OnError::Fail {
                                stop = Some(format!("an earlier command failed ({why})"));
                            }
                        }
                        ran_entry(text, prep, ex)
                    }
                };
                entries.push(entry);
            }
        }
    }

    let rep = json!({
        "container_id": cenv.container_id,
        "ifname": cenv.ifname,
        "network": conf.name,
        "cni_version": v,
        "netns_path": cenv.netns,
        "pod": gathered.pod,
        "time": tag::now_rfc3339(),
        "source": gathered.source,
        "on_error": match policy.on_error { OnError::Fail => "fail", OnError::Passthrough => "passthrough" },
        "problem": problem.as_ref().map(|e| format!("{e}: {}", e.details())),
        "commands": entries,
    });
    if let Some(e) = &problem {
        eprintln!("cniscope-cni: {}: {e}: {}", cenv.container_id, e.details());
    }
    match &netns {
        Ok(id) => {
            if let Err(e) = tag::write(&conf.tag_dir, id.inode, id.dev, rep.clone()) {
                eprintln!("cniscope-cni: writing tag in {:?}: {e}", conf.tag_dir);
            }
        }
        Err(e) => eprintln!("cniscope-cni: no tag written: {e}"),
    }
    *report = Some(rep);
    match problem {
        Some(e) if policy.on_error == OnError::Fail => Err((e, v)),
        _ => Ok(result),
    }
}

fn shorten(t: &str) -> String {
    const MAX: usize = 200;
    if t.len() <= MAX {
        return format!("{t:?}");
    }
    let mut end = MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &t[..end], t.len())
}

fn command_text(t: &str) -> String {
    const MAX: usize = 1024;
    if t.len() <= MAX {
        return t.to_string();
    }
    let mut end = MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &t[..end], t.len())
}

fn refused_entry(text: &str, why: &str) -> Value {
    json!({"command": command_text(text), "outcome": "refused", "reason": why})
}

fn skipped_entry(text: &str, why: &str) -> Value {
    json!({"command": command_text(text), "outcome": "skipped", "reason": why})
}

fn ran_entry(text: &str, prep: &Prepared, ex: Execution) -> Value {
    let mut v = json!({"command": text, "argv": prep.argv, "action": prep.action});
    if let (Some(o), Ok(Value::Object(e))) = (v.as_object_mut(), serde_json::to_value(ex)) {
        o.extend(e);
    }
    v
}

fn describe_failure(text: &str, ex: &Execution) -> String {
    match (ex.outcome, ex.exit_code, ex.signal) {
        ("timeout", ..) => format!("{} timed out", shorten(text)),
        ("ran", Some(c), _) => format!(
            "{} exited with {c}: {}",
            shorten(text),
            ex.stderr.trim().lines().next().unwrap_or("")
        ),
        ("ran", None, Some(s)) => format!("{} was killed by signal {s}", shorten(text)),
        _ => format!(
            "{} could not run: {}",
            shorten(text),
            ex.reason.as_deref().unwrap_or("unknown error")
        ),
    }
}

fn del(p: &dyn Platform, conf: &PluginConf, cenv: &CniEnv) {
    let inode = if cenv.netns.is_empty() {
        None
    } else {
        p.sandbox(conf).open(&cenv.netns).ok().map(|id| id.inode)
    };
    let mut n = tag::remove(&conf.tag_dir, inode, &cenv.container_id, &cenv.ifname);
    if n == 0 && inode.is_some() {
        // The path may now name a different namespace; look everywhere.
        n = tag::remove(&conf.tag_dir, None, &cenv.container_id, &cenv.ifname);
    }
    let _ = n;
}

/// CHECK: the runtime must pass prevResult, and CNI_NETNS must still be a network namespace
/// (other than the host's). The commands' effects are not re-checked: they are one-time
/// changes the pod may legitimately undo, not state this plugin keeps.
fn check(p: &dyn Platform, conf: &PluginConf, cenv: &CniEnv) -> Result<(), Failure> {
    let v = conf.cni_version.clone();
    if conf.prev_result.is_none() {
        return Err((CniError::invalid_config("CHECK needs prevResult"), v));
    }
    p.sandbox(conf)
        .open(&cenv.netns)
        .map(|_| ())
        .map_err(|e| (CniError::Check { details: e }, v))
}

fn gc(conf: &PluginConf) -> Result<(), Failure> {
    let v = conf.cni_version.clone();
    let valid = match conf.raw.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|a| {
                Some((
                    a.get("containerID")?.as_str()?.to_string(),
                    a.get("ifname")?.as_str()?.to_string(),
                ))
            })
            .collect(),
        Some(_) => {
            return Err((
                CniError::decode("cni.dev/valid-attachments is not a list"),
                v,
            ));
        }
    };
    tag::gc(&conf.tag_dir, &conf.name, &valid);
    Ok(())
}
