//! One GET from the API server named by a kubeconfig.
//!
//! The kubeconfig is read as JSON (a valid YAML document too, and what `kubectl config view -o
//! json` prints) or as the YAML that Multus and chainsaw generate, through `yaml`. What is used:
//! `current-context` → its context's `cluster` and `user`; the cluster's `server`; the user's
//! `token` or `tokenFile`. Only `http://` servers are reachable: this plugin carries no TLS stack
//! (an `https://` server gives a clear error). On a node, run the cniscope agent (its socket is
//! asked first) or an `http://127.0.0.1` `kubectl proxy`-style endpoint.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::http;

pub fn get(kubeconfig: &Path, path: &str, timeout: Duration) -> Result<Value, String> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| format!("kubeconfig {kubeconfig:?}: {e}"))?;
    let kc = super::yaml::parse(&text).map_err(|e| format!("kubeconfig {kubeconfig:?}: {e}"))?;
    let target = resolve(&kc)?;
    let (host, port, prefix) = http::parse_http_url(&target.server)?;
    let mut headers = Vec::new();
    if let Some(t) = target.token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let resp = http::get(&host, port, &format!("{prefix}{path}"), &headers, timeout)?;
    match resp.status {
        200 => serde_json::from_slice(&resp.body).map_err(|e| format!("reply is not JSON: {e}")),
        404 => Err(format!("{path}: not found")),
        s => Err(format!(
            "{path}: HTTP {s}: {}",
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
        )),
    }
}

#[derive(Debug, PartialEq)]
pub struct Target {
    pub server: String,
    pub token: Option<String>,
}

/// The server and credentials of the current context.
pub fn resolve(kc: &Value) -> Result<Target, String> {
    let named = |list: &str, name: &str, inner: &str| -> Result<Value, String> {
        kc.get(list)
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|e| e.get(inner))
            .cloned()
            .ok_or_else(|| format!("no {list} entry named {name:?}"))
    };
    let ctx_name = kc
        .get("current-context")
        .and_then(Value::as_str)
        .ok_or("no current-context")?;
    let ctx = named("contexts", ctx_name, "context")?;
    let cluster_name = ctx
        .get("cluster")
        .and_then(Value::as_str)
        .ok_or("context has no cluster")?;
    let cluster = named("clusters", cluster_name, "cluster")?;
    let server = cluster
        .get("server")
        .and_then(Value::as_str)
        .ok_or("cluster has no server")?
        .to_string();
    let token = match ctx.get("user").and_then(Value::as_str) {
        None => None,
        Some(u) => {
            let user = named("users", u, "user")?;
            match (
                user.get("token").and_then(Value::as_str),
                user.get("tokenFile").and_then(Value::as_str),
            ) {
                (Some(t), _) => Some(t.to_string()),
                (None, Some(f)) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("tokenFile {f:?}: {e}"))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            }
        }
    };
    Ok(Target { server, token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn current_context_is_followed() {
        let kc = json!({
            "current-context": "b",
            "contexts": [
                {"name": "a", "context": {"cluster": "ca", "user": "ua"}},
                {"name": "b", "context": {"cluster": "cb", "user": "ub"}}
            ],
            "clusters": [
                {"name": "ca", "cluster": {"server": "http://a"}},
                {"name": "cb", "cluster": {"server": "http://127.0.0.1:9"}}
            ],
            "users": [
                {"name": "ua", "user": {"token": "ta"}},
                {"name": "ub", "user": {"token": "tb"}}
            ]
        });
        assert_eq!(
            resolve(&kc).unwrap(),
            Target {
                server: "http://127.0.0.1:9".into(),
                token: Some("tb".into())
            }
        );
        assert!(resolve(&json!({})).unwrap_err().contains("current-context"));
    }
}
