//! From command text to something safe to run: split into argv, tokens substituted, judged by
//! the policy. Nothing here runs anything.

pub mod argv;
pub mod policy;
pub mod tokens;

use std::time::Duration;

use serde::Deserialize;

use crate::error::CniError;
pub use policy::VerbPolicy;
pub use tokens::Tokens;

/// What happens when a command is refused, fails or times out, or the commands can not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The ADD fails with a CNI error; when a command is refused nothing runs at all.
    Fail,
    /// prevResult is passed through as if nothing went wrong; the tag and log say what did.
    Passthrough,
}

/// `policy` in the plugin config, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConf {
    #[serde(default)]
    pub allow: Vec<String>,
    pub max_commands: Option<usize>,
    pub max_command_length: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub max_output_bytes: Option<usize>,
    pub on_error: Option<OnError>,
    /// Kubernetes namespaces whose pod annotations are honoured.
    pub namespaces: Option<Vec<String>>,
    /// A namespace label (`key` or `key=value`; `key` alone means `key=true`) that opts a
    /// namespace in.
    pub namespace_label: Option<String>,
}

/// The policy in force.
#[derive(Debug, Clone)]
pub struct Policy {
    pub verbs: VerbPolicy,
    pub max_commands: usize,
    pub max_command_length: usize,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    pub on_error: OnError,
    pub namespaces: Option<Vec<String>>,
    pub namespace_label: Option<(String, String)>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            verbs: VerbPolicy::default(),
            max_commands: 16,
            max_command_length: 512,
            timeout: Duration::from_secs(5),
            max_output_bytes: 64 * 1024,
            on_error: OnError::Passthrough,
            namespaces: None,
            namespace_label: None,
        }
    }
}

impl Policy {
    pub fn from_conf(c: &PolicyConf) -> Result<Self, CniError> {
        let d = Policy::default();
        let verbs = VerbPolicy::with_allow(&c.allow).map_err(CniError::invalid_config)?;
        let bounded = |name: &str, v: Option<usize>, def: usize, max: usize| match v {
            None => Ok(def),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(CniError::invalid_config(format!(
                "policy.{name} = {n}: must be between 1 and {max}"
            ))),
        };
        let timeout_ms = bounded(
            "timeoutMs",
            c.timeout_ms.map(|t| t.min(usize::MAX as u64) as usize),
            5000,
            120_000,
        )?;
        let namespace_label = c
            .namespace_label
            .as_deref()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.to_string(), "true".to_string()),
            });
        Ok(Policy {
            verbs,
            max_commands: bounded("maxCommands", c.max_commands, d.max_commands, 256)?,
            max_command_length: bounded(
                "maxCommandLength",
                c.max_command_length,
                d.max_command_length,
                4096,
            )?,
            timeout: Duration::from_millis(timeout_ms as u64),
            max_output_bytes: bounded(
                "maxOutputBytes",
                c.max_output_bytes,
                d.max_output_bytes,
                16 << 20,
            )?,
            on_error: c.on_error.unwrap_or(d.on_error),
            namespaces: c.namespaces.clone(),
            namespace_label,
        })
    }

    /// Whether annotations of pods in `ns` are honoured; `ns_labels` is asked only when a label
    /// rule exists. `Err` is the reason for refusing.
    pub fn namespace_allowed(
        &self,
        ns: &str,
        ns_labels: &mut dyn FnMut() -> Result<Option<serde_json::Value>, String>,
    ) -> Result<(), String> {
        if self.namespaces.is_none() && self.namespace_label.is_none() {
            return Ok(());
        }
        if let Some(list) = &self.namespaces
            && list.iter().any(|n| n == ns)
        {
            return Ok(());
        }
        if let Some((k, v)) = &self.namespace_label {
            match ns_labels() {
                Ok(Some(labels)) if labels.get(k).and_then(|x| x.as_str()) == Some(v) => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "namespace {ns:?}: could not read its labels to check {k}={v}: {e}"
                    ));
                }
            }
            return Err(format!(
                "namespace {ns:?} has not opted in (needs label {k}={v}{})",
                if self.namespaces.is_some() {
                    " or to be listed in policy.namespaces"
                } else {
                    ""
                }
            ));
        }
        Err(format!("namespace {ns:?} is not in policy.namespaces"))
    }
}

/// A command that passed every check, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// argv after token substitution; argv[0] is "ip".
    pub argv: Vec<String>,
    /// e.g. "route add".
    pub action: String,
}

/// Splits, substitutes and judges one command. `Err` is the reason it is refused.
pub fn prepare(text: &str, policy: &Policy, tokens: &Tokens) -> Result<Prepared, String> {
    let words = argv::split(text, policy.max_command_length)?;
    if words[0] != "ip" {
        // Judge before substituting so the reason names what was written.
        policy.verbs.check(&words)?;
    }
    let argv = tokens.substitute(&words)?;
    let (obj, verb) = policy.verbs.check(&argv)?;
    Ok(Prepared {
        argv,
        action: format!("{} {verb}", obj.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prepare_chainsaw_example() {
        let conf: PolicyConf = serde_json::from_value(json!({"allow": ["route add"]})).unwrap();
        let p = Policy::from_conf(&conf).unwrap();
        let prev = json!({"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}]});
        let t = Tokens::from_result(Some(&prev), "/run/netns/x", "eth0");
        let got = prepare("ip route add 192.0.3.0/24 dev CURRENT_INTERFACE", &p, &t).unwrap();
        assert_eq!(got.argv.join(" "), "ip route add 192.0.3.0/24 dev eth0");
        assert_eq!(got.action, "route add");
        assert_eq!(prepare("ip route", &p, &t).unwrap().action, "route show");
    }

    #[test]
    fn policy_conf_validation() {
        let bad = [
            json!({"maxCommands": 0}),
            json!({"maxCommands": 100000}),
            json!({"timeoutMs": 0}),
            json!({"onError": "explode"}),
            json!({"allow": ["netns exec"]}),
            json!({"alow": ["route add"]}),
        ];
        for b in bad {
            let r = serde_json::from_value::<PolicyConf>(b.clone())
                .map_err(|e| CniError::invalid_config(e.to_string()))
                .and_then(|c| Policy::from_conf(&c));
            assert_eq!(r.unwrap_err().code(), 7, "{b}");
        }
        let p = Policy::from_conf(&PolicyConf::default()).unwrap();
        assert_eq!(p.on_error, OnError::Passthrough);
        assert_eq!(p.max_commands, 16);
    }

    #[test]
    fn namespace_rules() {
        let mut p = Policy::default();
        let mut no_labels = || Ok(None);
        assert!(p.namespace_allowed("any", &mut no_labels).is_ok());
        p.namespaces = Some(vec!["lab".into()]);
        assert!(p.namespace_allowed("lab", &mut no_labels).is_ok());
        assert!(
            p.namespace_allowed("prod", &mut no_labels)
                .unwrap_err()
                .contains("not in")
        );
        p.namespace_label = Some(("cniscope.io/commands".into(), "true".into()));
        let mut labelled = || Ok(Some(json!({"cniscope.io/commands": "true"})));
        assert!(p.namespace_allowed("prod", &mut labelled).is_ok());
        assert!(
            p.namespace_allowed("prod", &mut no_labels)
                .unwrap_err()
                .contains("opted in")
        );
        let mut broken = || Err("api down".to_string());
        assert!(
            p.namespace_allowed("prod", &mut broken)
                .unwrap_err()
                .contains("api down")
        );
    }
}
