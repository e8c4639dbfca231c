//! Reading the pod (and its namespace) for the annotation source: first from the cniscope
//! agent's socket when an agent runs on the node, otherwise from the API server named by the
//! plugin config's kubeconfig.

pub mod agent;
pub mod apiserver;
pub mod http;
pub mod tls;
pub mod yaml;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Where Kubernetes objects come from. `Ok(None)` means "no way to ask here" (no agent socket
/// and no kubeconfig): the annotation source is then skipped, not an error.
pub trait PodLookup {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Value>, String>;
    fn namespace(&self, name: &str) -> Result<Option<Value>, String>;
}

/// No Kubernetes at all (tests, hand-run chains).
pub struct NoLookup;

impl PodLookup for NoLookup {
    fn pod(&self, _: &str, _: &str) -> Result<Option<Value>, String> {
        Ok(None)
    }
    fn namespace(&self, _: &str) -> Result<Option<Value>, String> {
        Ok(None)
    }
}

/// The agent's socket if it exists, then the API server if a kubeconfig is configured.
pub struct K8sLookup {
    pub agent_socket: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub agent_timeout: Duration,
    pub api_timeout: Duration,
}

impl K8sLookup {
    fn get(&self, request: agent::Request<'_>) -> Result<Option<Value>, String> {
        let mut agent_err = None;
        if self.agent_socket.exists() {
            match agent::ask(&self.agent_socket, &request, self.agent_timeout) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => agent_err = Some(format!("agent: {e}")),
            }
        }
        match &self.kubeconfig {
            Some(kc) => {
                let path = request.api_path()?;
                apiserver::get(kc, &path, self.api_timeout)
                    .map(Some)
                    .map_err(|e| match &agent_err {
                        Some(a) => format!("{a}; API server: {e}"),
                        None => format!("API server: {e}"),
                    })
            }
            None => match agent_err {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }
}

impl PodLookup for K8sLookup {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Value>, String> {
        self.get(agent::Request::Pod { namespace, name })
    }
    fn namespace(&self, name: &str) -> Result<Option<Value>, String> {
        self.get(agent::Request::Namespace { name })
    }
}

/// Kubernetes object names (DNS-1123 subdomains): checked before they go into a URL path.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("kube-system"));
        assert!(valid_name("web-0.x"));
        for bad in ["", "A", "a/b", "..", "-a", "a b", "a%2f", "a?b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn nothing_configured_means_no_lookup() {
        let l = K8sLookup {
            agent_socket: "/nonexistent/agent.sock".into(),
            kubeconfig: None,
            agent_timeout: Duration::from_millis(10),
            api_timeout: Duration::from_millis(10),
        };
        assert_eq!(l.pod("default", "p").unwrap(), None);
    }
}
