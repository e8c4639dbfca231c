//! The plugin's error type and its mapping to the CNI spec's error codes.
//!
//! Every failure that reaches the runtime goes through [`CniError`]: it is printed once, as
//! `{"cniVersion":…,"code":N,"msg":…,"details":…}` on stdout, and the process exits non-zero.

use serde_json::{Value, json};

/// Codes 1–99 are the spec's well-known ones; 100+ are this plugin's own.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version")]
    IncompatibleVersion { details: String },
    #[error("invalid environment variables")]
    InvalidEnv { details: String },
    #[error("I/O failure")]
    Io { details: String },
    #[error("failed to decode content")]
    Decode { details: String },
    #[error("invalid network config")]
    InvalidConfig { details: String },
    #[error("try again later")]
    TryAgain { details: String },
    /// A command was refused by policy and the failure mode is `fail`.
    #[error("command refused by policy")]
    Refused { details: String },
    /// A command ran and exited non-zero (or could not be started) with failure mode `fail`.
    #[error("command failed")]
    CommandFailed { details: String },
    /// A command ran past its timeout and was killed, with failure mode `fail`.
    #[error("command timed out")]
    Timeout { details: String },
    /// The commands could not be read from their source (bad annotation, unreachable API).
    #[error("could not read commands")]
    Source { details: String },
    /// CHECK found the attachment not in the state ADD left it in.
    #[error("check failed")]
    Check { details: String },
}

impl CniError {
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } => 1,
            CniError::InvalidEnv { .. } => 4,
            CniError::Io { .. } => 5,
            CniError::Decode { .. } => 6,
            CniError::InvalidConfig { .. } => 7,
            CniError::TryAgain { .. } => 11,
            CniError::Refused { .. } => 100,
            CniError::CommandFailed { .. } => 101,
            CniError::Timeout { .. } => 102,
            CniError::Source { .. } => 103,
            CniError::Check { .. } => 104,
        }
    }

    pub fn details(&self) -> &str {
        match self {
            CniError::IncompatibleVersion { details }
            | CniError::InvalidEnv { details }
            | CniError::Io { details }
            | CniError::Decode { details }
            | CniError::InvalidConfig { details }
            | CniError::TryAgain { details }
            | CniError::Refused { details }
            | CniError::CommandFailed { details }
            | CniError::Timeout { details }
            | CniError::Source { details }
            | CniError::Check { details } => details,
        }
    }

    /// The spec's error object, in the version the caller asked for (or the newest we speak when
    /// the request could not be read far enough to know it).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.to_string(),
            "details": self.details(),
        })
    }

    pub fn invalid_env(d: impl Into<String>) -> Self {
        CniError::InvalidEnv { details: d.into() }
    }
    pub fn invalid_config(d: impl Into<String>) -> Self {
        CniError::InvalidConfig { details: d.into() }
    }
    pub fn decode(d: impl Into<String>) -> Self {
        CniError::Decode { details: d.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let d = || String::from("x");
        assert_eq!(CniError::IncompatibleVersion { details: d() }.code(), 1);
        assert_eq!(CniError::InvalidEnv { details: d() }.code(), 4);
        assert_eq!(CniError::Io { details: d() }.code(), 5);
        assert_eq!(CniError::Decode { details: d() }.code(), 6);
        assert_eq!(CniError::InvalidConfig { details: d() }.code(), 7);
        assert_eq!(CniError::TryAgain { details: d() }.code(), 11);
        for e in [
            CniError::Refused { details: d() },
            CniError::CommandFailed { details: d() },
            CniError::Timeout { details: d() },
            CniError::Source { details: d() },
            CniError::Check { details: d() },
        ] {
            assert!(e.code() >= 100, "{e}: plugin-specific codes start at 100");
        }
    }

    #[test]
    fn error_json_has_every_field() {
        let e = CniError::invalid_config("no name");
        let j = e.to_json("1.0.0");
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(j["code"], 7);
        assert_eq!(j["msg"], "invalid network config");
        assert_eq!(j["details"], "no name");
    }
}
