//! `cniscope-cni`: a chained CNI plugin that passes prevResult through unchanged, runs `ip`
//! commands (from a pod annotation, CNI args or its config) inside the pod's network namespace
//! under an operator's policy, and tags the namespace for the cniscope agent.

pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod k8s;
pub mod logfile;
pub mod plugin;
pub mod sandbox;
pub mod sources;
pub mod tag;
pub mod version;

use std::time::Duration;

/// The real environment, Kubernetes lookups and netns sandbox.
pub struct ProcessPlatform;

impl plugin::Platform for ProcessPlatform {
    fn env(&self) -> &dyn env::Environment {
        &env::ProcessEnv
    }
    fn lookup(&self, conf: &config::PluginConf) -> Box<dyn k8s::PodLookup + '_> {
        Box::new(k8s::K8sLookup {
            agent_socket: conf.agent_socket.clone(),
            kubeconfig: conf.kubeconfig.clone(),
            agent_timeout: Duration::from_millis(300),
            api_timeout: Duration::from_secs(3),
        })
    }
    fn sandbox(&self, conf: &config::PluginConf) -> Box<dyn sandbox::Sandbox + '_> {
        Box::new(sandbox::NetnsSandbox::new(conf.ip_path.clone()))
    }
}
