//! The timeline's shape: an invocation (one runtime call of a chain for one container id,
//! interface and command) made of steps (plugin runs in chain order), each with what it read,
//! printed and changed, the processes it spawned, its delegates (IPAM) and nested invocations
//! (Multus delegates).

use serde::Serialize;
use serde_json::Value;

use super::diff::ResultDiff;
use super::identity::Pod;
use super::runs::ExitInfo;
use crate::events::Text;
use crate::netlink::describe::Change;

/// One rtnetlink change, with who made it and where.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub ts: String,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub netns: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    #[serde(flatten)]
    pub change: Change,
}

/// A non-plugin process a step started (`iptables`, `ip`, a helper).
#[derive(Debug, Clone, Serialize)]
pub struct Spawned {
    pub tgid: u32,
    pub ppid: u32,
    pub filename: String,
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Position in chain order (start time) within its invocation or parent step.
    pub index: usize,
    /// The plugin's CNI environment (shown by the invocation, not repeated per step).
    #[serde(skip)]
    pub cni: Option<crate::events::CniEnv>,
    /// The network's `name` from its stdin, when the correlator read the stdin anyway (the
    /// invocation shows its first step's).
    #[serde(skip)]
    pub network: Option<String>,
    /// Inode of the namespace CNI_NETNS named when the plugin started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u32>,
    pub plugin: String,
    pub path: String,
    pub pid: u32,
    pub ppid: u32,
    pub start: String,
    pub start_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    pub ok: bool,
    /// The CNI error the plugin printed, when it failed with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub held: bool,
    pub stdin: Text,
    pub stdout: Text,
    pub stderr: Text,
    /// prevResult → result, for ADD steps that printed a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResultDiff>,
    pub netlink: Vec<Op>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spawned: Vec<Spawned>,
    /// Plugins this step ran for itself (IPAM), same container and interface.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<Step>,
    /// Chains this step ran for other interfaces (Multus delegates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invocations: Vec<Invocation>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetlinkFailure {
    pub plugin: String,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extack: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub ok: bool,
    /// One line a person reads first: "ok", or which step failed and why.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Kernel refusals inside the chain, even when a plugin tolerated them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub netlink_errors: Vec<NetlinkFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slowest {
    pub plugin: String,
    pub index: usize,
    pub duration_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    pub start_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    pub command: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    pub runtime: Runtime,
    /// Plugin names in chain order.
    pub chain: Vec<String>,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest: Option<Slowest>,
    pub steps: Vec<Step>,
    /// What cniscope-cni recorded for this container and interface (commands and outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Value>,
    /// 1, then 2… when steps arrived after the invocation was first reported.
    pub revision: u32,
    /// Reported before it was known to be over (agent stopping, restarted mid-chain).
    pub partial: bool,
}

/// A change made outside any plugin run, with the pod its netns belongs to when known.
#[derive(Debug, Clone, Serialize)]
pub struct NetnsChange {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(flatten)]
    pub op: Op,
}
