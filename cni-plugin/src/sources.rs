//! Where the commands come from, in this order (the first source that is present wins, and a
//! source that is present but unreadable stops the search — a transient API error must never
//! make a different, lower-priority command list run instead):
//!
//! 1. the pod's annotation, when CNI_ARGS names a pod (K8S_POD_NAMESPACE and K8S_POD_NAME):
//!    `cniscope.io/commands`, then chainsaw's `k8s.v1.cni.cncf.io/chainsaw`;
//! 2. `CNISCOPE_COMMANDS` in CNI_ARGS, then `args.cni.cniscope.commands` in the config, then
//!    `runtimeConfig.cniscopeCommands`;
//! 3. `commands` in the plugin's own config.

use serde_json::Value;

use crate::commands::Policy;
use crate::env::CniEnv;
use crate::k8s::PodLookup;

pub const ANNOTATION: &str = "cniscope.io/commands";
pub const CHAINSAW_ANNOTATION: &str = "k8s.v1.cni.cncf.io/chainsaw";
pub const CNI_ARGS_KEY: &str = "CNISCOPE_COMMANDS";

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The source exists but its content or the lookup failed.
    Unreadable(String),
    /// The source exists but may not be used (namespace not opted in).
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct Gathered {
    pub pod: Option<Pod>,
    /// e.g. `annotation cniscope.io/commands`, `CNI_ARGS CNISCOPE_COMMANDS`, `config commands`.
    pub source: Option<String>,
    pub commands: Result<Vec<String>, Problem>,
}

pub fn gather(raw_conf: &Value, env: &CniEnv, lookup: &dyn PodLookup, policy: &Policy) -> Gathered {
    let mut g = Gathered {
        pod: None,
        source: None,
        commands: Ok(Vec::new()),
    };
    // 1. The pod annotation.
    let ns = env
        .arg("K8S_POD_NAMESPACE")
        .ok()
        .flatten()
        .filter(|s| !s.is_empty());
    let name = env
        .arg("K8S_POD_NAME")
        .ok()
        .flatten()
        .filter(|s| !s.is_empty());
    if let (Some(ns), Some(name)) = (ns, name) {
        g.pod = Some(Pod {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: None,
        });
        match lookup.pod(ns, name) {
            Ok(None) => {}
            Err(e) => {
                g.source = Some("annotation (pod lookup)".into());
                g.commands = Err(Problem::Unreadable(format!("reading pod {ns}/{name}: {e}")));
                return g;
            }
            Ok(Some(pod)) => {
                let meta = pod.get("metadata");
                if let Some(p) = g.pod.as_mut() {
                    p.uid = meta
                        .and_then(|m| m.get("uid"))
                        .and_then(Value::as_str)
                        .map(String::from);
                }
                let ann = meta.and_then(|m| m.get("annotations"));
                for key in [ANNOTATION, CHAINSAW_ANNOTATION] {
                    let Some(v) = ann.and_then(|a| a.get(key)) else {
                        continue;
                    };
                    g.source = Some(format!("annotation {key}"));
                    let allowed = policy.namespace_allowed(ns, &mut || {
                        lookup
                            .namespace(ns)
                            .map(|o| o.and_then(|o| o.get("metadata")?.get("labels").cloned()))
                    });
                    g.commands = match (allowed, v.as_str()) {
                        (Err(why), _) => Err(Problem::Refused(why)),
                        (Ok(()), Some(text)) => parse_text(text).map_err(Problem::Unreadable),
                        (Ok(()), None) => Err(Problem::Unreadable(format!(
                            "annotation {key} is {}, not a string",
                            type_name(v)
                        ))),
                    };
                    return g;
                }
            }
        }
    }
    // 2. Runtime-provided arguments.
    match env.arg(CNI_ARGS_KEY) {
        Err(e) => return with(g, "CNI_ARGS CNISCOPE_COMMANDS", Err(e)),
        Ok(Some(text)) => {
            return with(g, "CNI_ARGS CNISCOPE_COMMANDS", parse_text(text));
        }
        Ok(None) => {}
    }
    let conf_args = raw_conf
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(|a| a.get("cniscope"))
        .and_then(|a| a.get("commands"));
    if let Some(v) = conf_args {
        return with(g, "args.cni.cniscope.commands", parse_list(v));
    }
    if let Some(v) = raw_conf
        .get("runtimeConfig")
        .and_then(|r| r.get("cniscopeCommands"))
    {
        return with(g, "runtimeConfig.cniscopeCommands", parse_list(v));
    }
    // 3. The plugin's own config.
    if let Some(v) = raw_conf.get("commands") {
        return with(g, "config commands", parse_list(v));
    }
    g
}

fn with(mut g: Gathered, source: &str, r: Result<Vec<String>, String>) -> Gathered {
    g.source = Some(source.to_string());
    g.commands = r.map_err(Problem::Unreadable);
    g
}

/// Text from an annotation or CNI_ARGS: a JSON list of strings, a JSON string, or (chainsaw's
/// single-command form) the command itself.
pub fn parse_text(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    if t.starts_with('[') || t.starts_with('"') || t.starts_with('{') {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("not valid JSON: {e}"))?;
        return parse_list(&v);
    }
    if t.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![t.to_string()])
}

/// A JSON list of strings, or one string.
pub fn parse_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "element {i} is {}, expected a string",
                    type_name(other)
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a list of strings, got {}",
            type_name(other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::parse_args;
    use serde_json::json;

    struct FakeApi(Result<Option<Value>, String>, Option<Value>);
    impl PodLookup for FakeApi {
        fn pod(&self, _: &str, _: &str) -> Result<Option<Value>, String> {
            self.0.clone()
        }
        fn namespace(&self, _: &str) -> Result<Option<Value>, String> {
            Ok(self.1.clone())
        }
    }

    fn env(args: &str) -> CniEnv {
        CniEnv {
            args: parse_args(args.as_bytes()),
            ..Default::default()
        }
    }
    const K8S: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=p";

    fn pod(ann: Value) -> FakeApi {
        FakeApi(
            Ok(Some(
                json!({"metadata":{"name":"p","uid":"u-1","annotations":ann}}),
            )),
            None,
        )
    }

    #[test]
    fn order_of_sources() {
        let conf = json!({"commands":["ip addr"],"runtimeConfig":{"cniscopeCommands":["ip link"]},
            "args":{"cni":{"cniscope":{"commands":["ip rule"]}}}});
        let p = Policy::default();
        let g = gather(
            &conf,
            &env(K8S),
            &pod(json!({CHAINSAW_ANNOTATION: "[\"ip route\"]"})),
            &p,
        );
        assert_eq!(
            g.source.as_deref(),
            Some("annotation k8s.v1.cni.cncf.io/chainsaw")
        );
        assert_eq!(g.commands.unwrap(), ["ip route"]);
        assert_eq!(g.pod.unwrap().uid.as_deref(), Some("u-1"));
        let both = json!({CHAINSAW_ANNOTATION: "[\"ip route\"]", ANNOTATION: "ip neigh"});
        assert_eq!(
            gather(&conf, &env(K8S), &pod(both), &p).commands.unwrap(),
            ["ip neigh"]
        );
        // The pod has no annotation: runtime arguments next.
        let g = gather(
            &conf,
            &env(&format!("{K8S};CNISCOPE_COMMANDS=[\"ip -j route\"]")),
            &pod(json!({})),
            &p,
        );
        assert_eq!(g.commands.unwrap(), ["ip -j route"]);
        let g = gather(&conf, &env(K8S), &pod(json!({})), &p);
        assert_eq!(g.commands.unwrap(), ["ip rule"]);
        let mut c2 = conf.clone();
        c2.as_object_mut().unwrap().remove("args");
        assert_eq!(
            gather(&c2, &env(""), &crate::k8s::NoLookup, &p)
                .commands
                .unwrap(),
            ["ip link"]
        );
        c2.as_object_mut().unwrap().remove("runtimeConfig");
        let g = gather(&c2, &env(""), &crate::k8s::NoLookup, &p);
        assert_eq!(
            (g.source.as_deref(), g.commands.unwrap()),
            (Some("config commands"), vec!["ip addr".to_string()])
        );
        let g = gather(&json!({}), &env(""), &crate::k8s::NoLookup, &p);
        assert_eq!((g.source, g.commands.unwrap().len()), (None, 0));
    }

    #[test]
    fn unreadable_sources_stop_the_search() {
        let conf = json!({"commands":["ip addr"]});
        let p = Policy::default();
        let g = gather(
            &conf,
            &env(K8S),
            &FakeApi(Err("connection refused".into()), None),
            &p,
        );
        assert!(
            matches!(g.commands, Err(Problem::Unreadable(ref s)) if s.contains("connection refused"))
        );
        let g = gather(&conf, &env(K8S), &pod(json!({ANNOTATION: 5})), &p);
        assert!(matches!(g.commands, Err(Problem::Unreadable(ref s)) if s.contains("a number")));
        let g = gather(
            &conf,
            &env("CNISCOPE_COMMANDS=\u{0}"),
            &crate::k8s::NoLookup,
            &p,
        );
        assert_eq!(g.commands.unwrap(), ["\u{0}"]); // refused later, by the splitter
    }

    #[test]
    fn namespace_opt_in() {
        let p = Policy {
            namespace_label: Some(("cniscope.io/enabled".into(), "true".into())),
            ..Default::default()
        };
        let ann = json!({ANNOTATION: "ip route"});
        let g = gather(&json!({}), &env(K8S), &pod(ann.clone()), &p);
        assert!(matches!(g.commands, Err(Problem::Refused(ref s)) if s.contains("opted in")));
        let mut api = pod(ann);
        api.1 = Some(json!({"metadata":{"labels":{"cniscope.io/enabled":"true"}}}));
        assert_eq!(
            gather(&json!({}), &env(K8S), &api, &p).commands.unwrap(),
            ["ip route"]
        );
    }

    #[test]
    fn text_forms() {
        assert_eq!(
            parse_text("[\"ip route\",\"ip addr\"]").unwrap(),
            ["ip route", "ip addr"]
        );
        assert_eq!(parse_text(" \"ip route\" ").unwrap(), ["ip route"]);
        assert_eq!(parse_text("ip route").unwrap(), ["ip route"]);
        assert!(parse_text("").unwrap().is_empty());
        assert!(
            parse_text("[\"ip route\"")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse_text("[1]")
                .unwrap_err()
                .contains("element 0 is a number")
        );
        assert!(parse_text("{\"a\":1}").unwrap_err().contains("an object"));
        assert!(parse_text("[[\"ip\"]]").unwrap_err().contains("a list"));
    }
}
