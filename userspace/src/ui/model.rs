//! The agent's lines as the TUI reads them: tolerant view structs (every field defaulted, unknown
//! fields ignored) so a newer or older agent still shows, and the producer types stay free to
//! change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bytes as the agent writes them: a string when UTF-8, `{"base64": …}` otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text {
    pub text: String,
    /// The bytes were not UTF-8; `text` holds their base64.
    pub binary: bool,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            B64 { base64: String },
            Other(Value),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Str(text) => Text {
                text,
                binary: false,
            },
            Raw::B64 { base64 } => Text {
                text: base64,
                binary: true,
            },
            Raw::Other(v) if v.is_null() => Text::default(),
            Raw::Other(v) => Text {
                text: v.to_string(),
                binary: false,
            },
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Pod {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

impl Pod {
    /// `namespace/name`, or whichever part is known.
    pub fn label(&self) -> Option<String> {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n.clone()),
            (Some(ns), None) => Some(format!("{ns}/?")),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Runtime {
    pub pid: u32,
    pub comm: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl Exit {
    pub fn label(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(s)) => format!(
                "signal {s}{}",
                if self.core_dumped { " (core)" } else { "" }
            ),
            (Some(c), None) => format!("exit {c}"),
            (None, None) => "exit ?".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Outcome {
    /// ack, error, no-ack-requested, unknown.
    pub status: String,
    pub errno: Option<i32>,
    pub error: Option<String>,
    pub extack: Option<String>,
}

impl Outcome {
    pub fn is_error(&self) -> bool {
        self.status == "error"
    }

    /// `ack`, or `EEXIST File exists: extack` style text for a refusal.
    pub fn label(&self) -> String {
        if !self.is_error() {
            return self.status.clone();
        }
        let mut s = match (&self.error, self.errno) {
            (Some(e), Some(n)) => format!("error {n} {e}"),
            (Some(e), None) => format!("error {e}"),
            (None, Some(n)) => format!("error {n}"),
            (None, None) => "error".into(),
        };
        if let Some(x) = &self.extack {
            s.push_str(": ");
            s.push_str(x);
        }
        s
    }
}

/// One rtnetlink change (inside a step, or a netns-level `netlink` line).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Op {
    pub ts: String,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub netns: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    pub seq: u32,
    pub object: String,
    pub verb: String,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_netns: Option<u32>,
    pub outcome: Outcome,
    pub detail: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Spawned {
    pub tgid: u32,
    pub ppid: u32,
    pub filename: String,
    pub argv: Vec<String>,
    pub exit: Option<Exit>,
    pub duration_ns: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Side {
    pub interfaces: Vec<String>,
    pub ips: Vec<String>,
    pub routes: Vec<String>,
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Diff {
    pub added: Side,
    pub removed: Side,
    pub unchanged: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Step {
    pub index: usize,
    pub plugin: String,
    pub path: String,
    pub pid: u32,
    pub ppid: u32,
    pub start: String,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    pub exit: Option<Exit>,
    pub ok: bool,
    pub error: Option<Value>,
    pub held: bool,
    pub stdin: Text,
    pub stdout: Text,
    pub stderr: Text,
    pub diff: Option<Diff>,
    pub netlink: Vec<Op>,
    pub spawned: Vec<Spawned>,
    pub delegates: Vec<Step>,
    pub invocations: Vec<Invocation>,
    pub complete: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetlinkFailure {
    pub plugin: String,
    pub op: String,
    pub errno: Option<i32>,
    pub error: Option<String>,
    pub extack: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Verdict {
    pub ok: bool,
    pub summary: String,
    pub failed_step: Option<usize>,
    pub plugin: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<Value>,
    pub netlink_errors: Vec<NetlinkFailure>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Slowest {
    pub plugin: String,
    pub index: usize,
    pub duration_ns: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Invocation {
    pub id: String,
    pub ts: String,
    pub end: Option<String>,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    pub command: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<String>,
    pub netns_inode: Option<u32>,
    pub network: Option<String>,
    pub pod: Option<Pod>,
    pub runtime: Runtime,
    pub chain: Vec<String>,
    pub verdict: Verdict,
    pub slowest: Option<Slowest>,
    pub steps: Vec<Step>,
    pub tag: Option<Value>,
    pub revision: u32,
    pub partial: bool,
}

/// A `netlink` line: a change outside any plugin run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetnsChange {
    pub pod: Option<Pod>,
    #[serde(flatten)]
    pub op: Op,
}

/// The parts of a `stats` line the status bar shows.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    pub lost: u64,
    pub agent: AgentStats,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentStats {
    pub records: u64,
    pub undecodable: u64,
    pub output_dropped: u64,
}

/// An `agent` line: `ready` (with pids), `stopped`, or `netlink_capture` (with `capture`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentEvent {
    pub event: String,
    pub pid: Option<u32>,
    pub capture: Option<bool>,
}

/// One line of the agent's output, as far as the TUI cares.
#[derive(Debug, Clone)]
pub enum Line {
    Invocation(Box<Invocation>),
    Netlink(Box<NetnsChange>),
    Stats(Stats),
    Agent(AgentEvent),
    SnapshotEnd,
    Lagged(u64),
    /// A line of a type the TUI does not show (`run`, `exec`… with `--events`).
    Other(String),
    /// Not JSON, or not an object with a `type`.
    Bad(String),
}

/// Parses one NDJSON line.
pub fn parse(line: &str) -> Line {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let head: Head = match serde_json::from_str(line) {
        Ok(h) => h,
        Err(e) => return Line::Bad(e.to_string()),
    };
    let r = match head.kind.as_ref() {
        "invocation" => serde_json::from_str(line).map(|i| Line::Invocation(Box::new(i))),
        "netlink" => serde_json::from_str(line).map(|n| Line::Netlink(Box::new(n))),
        "stats" => serde_json::from_str(line).map(Line::Stats),
        "agent" => serde_json::from_str(line).map(Line::Agent),
        "snapshot_end" => Ok(Line::SnapshotEnd),
        "lagged" => Ok(Line::Lagged(
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("missed").and_then(Value::as_u64))
                .unwrap_or(0),
        )),
        other => Ok(Line::Other(other.to_string())),
    };
    r.unwrap_or_else(|e| Line::Bad(format!("{} line: {e}", head.kind)))
}

/// `HH:MM:SS.mmm` of an RFC 3339 time, as written by the agent (UTC).
pub fn clock(ts: &str) -> &str {
    ts.get(11..23).unwrap_or(ts)
}

/// A duration in the unit a person reads fastest.
pub fn dur(ns: u64) -> String {
    if ns >= 10_000_000_000 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 10_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{}µs", ns / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_parsing() {
        let l = parse(
            r#"{"type":"invocation","id":"x","new_field":[1,2],"steps":[{"plugin":"bridge","stdin":{"base64":"/w=="}}]}"#,
        );
        let Line::Invocation(i) = l else {
            panic!("not an invocation: {l:?}")
        };
        assert_eq!(i.id, "x");
        assert!(i.steps[0].stdin.binary);
        assert_eq!(i.steps[0].stdin.text, "/w==");
        assert!(matches!(parse("{\"type\":\"run\"}"), Line::Other(k) if k == "run"));
        assert!(matches!(parse("not json"), Line::Bad(_)));
        assert!(matches!(
            parse(r#"{"type":"lagged","missed":7}"#),
            Line::Lagged(7)
        ));
        assert!(matches!(
            parse(r#"{"type":"invocation","steps":3}"#),
            Line::Bad(_)
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(clock("2026-11-23T08:57:08.809929139Z"), "08:57:08.809");
        assert_eq!(dur(180_509_289), "180ms");
        assert_eq!(dur(6_463_961), "6.5ms");
        assert_eq!(dur(2_500_000_000), "2.50s");
        assert_eq!(dur(999), "0µs");
    }
}
