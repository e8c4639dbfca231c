//! One GET from the API server named by a kubeconfig, over `https://` (or `http://`).
//!
//! The kubeconfig is read as JSON (a valid YAML document too, and what `kubectl config view -o
//! json` prints) or as the YAML that Multus and chainsaw generate, through `yaml`. What is used,
//! with kubectl's meaning:
//!
//! - `current-context` → its context's `cluster` and `user`;
//! - the cluster's `server`, `certificate-authority-data` (base64 PEM) or `certificate-authority`
//!   (a PEM file; the data wins when both are set, and the file is then not read),
//!   `insecure-skip-tls-verify` and `tls-server-name`;
//! - the user's `token` and `tokenFile` (the file's token wins when it can be read, as in
//!   client-go; sent as a bearer token), and `client-certificate(-data)` with
//!   `client-key(-data)` (data wins over file).
//!
//! Relative file paths are relative to the kubeconfig's directory, as kubectl resolves them.
//! Unlike kubectl there are no system roots: an `https://` cluster needs its CA in the kubeconfig
//! (the in-cluster kubeconfigs always carry it) or `insecure-skip-tls-verify: true` (a warning is
//! printed to stderr at every use). A CA together with `insecure-skip-tls-verify: true` is refused,
//! as kubectl refuses it. For `http://` servers the TLS fields are not looked at.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::{http, tls};

/// Larger files named by a kubeconfig (CA bundle, client certificate, key, token) are refused.
const MAX_FILE: u64 = 1 << 20;

pub fn get(kubeconfig: &Path, path: &str, timeout: Duration) -> Result<Value, String> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| format!("kubeconfig {kubeconfig:?}: {e}"))?;
    let kc = super::yaml::parse(&text).map_err(|e| format!("kubeconfig {kubeconfig:?}: {e}"))?;
    let base = kubeconfig.parent().unwrap_or(Path::new("/"));
    let target = resolve(&kc, base)?;
    let url = http::parse_url(&target.server)?;
    let client = match url.scheme {
        http::Scheme::Http => None,
        http::Scheme::Https => {
            let m = target.tls.load(&target.server)?;
            if m.insecure {
                eprintln!(
                    "cniscope-cni: warning: cluster {:?} in {kubeconfig:?} has insecure-skip-tls-verify: true: the API server's certificate is not verified",
                    target.tls.cluster
                );
            }
            Some(tls::Client::new(&m, &url.host)?)
        }
    };
    let mut headers = Vec::new();
    if let Some(t) = target.token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let resp = http::get(&url, path, &headers, timeout, client.as_ref())?;
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
    pub tls: TlsFields,
}

/// The TLS fields of the current context's cluster and user, as written (file paths made
/// absolute); `load` reads and checks them.
#[derive(Debug, Default, PartialEq)]
pub struct TlsFields {
    pub cluster: String,
    pub user: Option<String>,
    pub ca_data: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub server_name: Option<String>,
    pub cert_data: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_data: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// A string field; empty counts as absent (as in client-go).
fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn path_field(obj: &Value, key: &str, base: &Path) -> Option<PathBuf> {
    field(obj, key).map(|p| base.join(p))
}

/// The server and credentials of the current context; `base` is the kubeconfig's directory.
pub fn resolve(kc: &Value, base: &Path) -> Result<Target, String> {
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
    let server = field(&cluster, "server")
        .ok_or_else(|| format!("cluster {cluster_name:?} has no server"))?
        .to_string();
    let insecure = match cluster.get("insecure-skip-tls-verify") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(format!(
                "cluster {cluster_name:?}: insecure-skip-tls-verify must be true or false"
            ));
        }
    };
    let mut tls = TlsFields {
        cluster: cluster_name.to_string(),
        ca_data: field(&cluster, "certificate-authority-data").map(String::from),
        ca_file: path_field(&cluster, "certificate-authority", base),
        insecure,
        server_name: field(&cluster, "tls-server-name").map(String::from),
        ..TlsFields::default()
    };
    let mut token = None;
    if let Some(u) = ctx.get("user").and_then(Value::as_str) {
        let user = named("users", u, "user")?;
        tls.user = Some(u.to_string());
        tls.cert_data = field(&user, "client-certificate-data").map(String::from);
        tls.cert_file = path_field(&user, "client-certificate", base);
        tls.key_data = field(&user, "client-key-data").map(String::from);
        tls.key_file = path_field(&user, "client-key", base);
        // client-go: a readable tokenFile wins over token; token is the fallback.
        let inline = field(&user, "token").map(String::from);
        token = match (path_field(&user, "tokenFile", base), inline) {
            (None, t) => t,
            (Some(f), t) => match read_limited(&f) {
                Ok(b) => Some(String::from_utf8_lossy(&b).trim().to_string()),
                Err(_) if t.is_some() => t,
                Err(e) => return Err(format!("user {u:?}: tokenFile {f:?}: {e}")),
            },
        };
    }
    Ok(Target { server, token, tls })
}

fn read_limited(p: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut b = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut b)
        .map_err(|e| e.to_string())?;
    if b.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    Ok(b)
}

impl TlsFields {
    /// Reads and checks what an `https://` server needs: the CA (data, else file) unless
    /// insecure, and the client identity if any. `server` is for messages.
    pub fn load(&self, server: &str) -> Result<tls::Material, String> {
        let cluster = format!("cluster {:?}", self.cluster);
        let user = format!("user {:?}", self.user.as_deref().unwrap_or(""));
        let has_ca = self.ca_data.is_some() || self.ca_file.is_some();
        if self.insecure && has_ca {
            return Err(format!(
                "{cluster} has both insecure-skip-tls-verify: true and a certificate-authority: \
                 kubectl refuses this too (\"specifying a root certificates file with the \
                 insecure flag is not allowed\"); remove one of them"
            ));
        }
        if !self.insecure && !has_ca {
            return Err(format!(
                "{cluster} has neither certificate-authority-data nor certificate-authority, so \
                 the certificate of {server} cannot be verified (system roots are not used); add \
                 the cluster's CA (in a pod: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)"
            ));
        }
        let has_cert = self.cert_data.is_some() || self.cert_file.is_some();
        let has_key = self.key_data.is_some() || self.key_file.is_some();
        if has_cert && !has_key {
            return Err(format!(
                "{user} has a client-certificate but neither client-key-data nor client-key"
            ));
        }
        if has_key && !has_cert {
            return Err(format!(
                "{user} has a client-key but neither client-certificate-data nor client-certificate"
            ));
        }
        let ca = self.pem(
            &cluster,
            ("certificate-authority-data", self.ca_data.as_deref()),
            ("certificate-authority", self.ca_file.as_deref()),
        )?;
        let cert = self.pem(
            &user,
            ("client-certificate-data", self.cert_data.as_deref()),
            ("client-certificate", self.cert_file.as_deref()),
        )?;
        let key = self.pem(
            &user,
            ("client-key-data", self.key_data.as_deref()),
            ("client-key", self.key_file.as_deref()),
        )?;
        Ok(tls::Material {
            ca,
            insecure: self.insecure,
            server_name: self.server_name.clone(),
            identity: cert.zip(key),
        })
    }

    /// `NAME-data` (base64 of PEM) if set, else the file `NAME`, else nothing.
    fn pem(
        &self,
        owner: &str,
        (data_key, data): (&str, Option<&str>),
        (file_key, file): (&str, Option<&Path>),
    ) -> Result<Option<tls::Pem>, String> {
        if let Some(d) = data {
            let what = format!("{data_key} of {owner}");
            // Go's base64 decoder (which kubectl's []byte fields use) skips line breaks.
            let compact: String = d.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| {
                    format!("{what} is not base64 ({e}); it holds the base64 of a PEM file")
                })?;
            return Ok(Some(tls::Pem { what, bytes }));
        }
        if let Some(f) = file {
            let what = format!("{file_key} {f:?} of {owner}");
            let bytes = read_limited(f).map_err(|e| format!("{what}: {e}"))?;
            return Ok(Some(tls::Pem { what, bytes }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kubeconfig(cluster: Value, user: Value) -> Value {
        json!({
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": cluster}],
            "users": [{"name": "u", "user": user}]
        })
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!(
                "cniscope-kc-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

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
        let t = resolve(&kc, Path::new("/")).unwrap();
        assert_eq!(
            (
                t.server.as_str(),
                t.token.as_deref(),
                t.tls.cluster.as_str()
            ),
            ("http://127.0.0.1:9", Some("tb"), "cb")
        );
        assert!(
            resolve(&json!({}), Path::new("/"))
                .unwrap_err()
                .contains("current-context")
        );
    }

    /// The in-cluster kubeconfig Multus and chainsaw write: server by IP, CA file, token file.
    #[test]
    fn multus_style_kubeconfig() {
        let y = "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://10.96.0.1:443\n    certificate-authority-data: QUJD\ncontexts:\n- name: multus-context\n  context:\n    cluster: local\n    user: multus\ncurrent-context: multus-context\nusers:\n- name: multus\n  user:\n    token: \"eyJh.b.c\"\n";
        let kc = crate::k8s::yaml::parse(y).unwrap();
        let t = resolve(&kc, Path::new("/etc/cni/net.d/multus.d")).unwrap();
        assert_eq!(t.server, "https://10.96.0.1:443");
        assert_eq!(t.token.as_deref(), Some("eyJh.b.c"));
        assert_eq!(t.tls.ca_data.as_deref(), Some("QUJD"));
        let m = t.tls.load(&t.server).unwrap();
        assert_eq!(
            m.ca,
            Some(tls::Pem {
                what: "certificate-authority-data of cluster \"local\"".into(),
                bytes: b"ABC".to_vec()
            })
        );
        assert!(!m.insecure && m.identity.is_none() && m.server_name.is_none());
    }

    #[test]
    fn files_are_relative_to_the_kubeconfig_and_data_wins() {
        let d = TempDir::new("files");
        std::fs::write(d.0.join("ca.crt"), "CA FROM FILE").unwrap();
        std::fs::write(d.0.join("tls.crt"), "CERT FROM FILE").unwrap();
        std::fs::write(d.0.join("tls.key"), "KEY FROM FILE").unwrap();
        std::fs::write(d.0.join("token"), "  file-token\n").unwrap();
        // Files only.
        let kc = kubeconfig(
            json!({"server": "https://k:6443", "certificate-authority": "ca.crt", "tls-server-name": "kubernetes"}),
            json!({"client-certificate": "tls.crt", "client-key": d.0.join("tls.key"), "tokenFile": "token"}),
        );
        let t = resolve(&kc, &d.0).unwrap();
        assert_eq!(t.tls.ca_file, Some(d.0.join("ca.crt")));
        assert_eq!(t.token.as_deref(), Some("file-token"));
        let m = t.tls.load(&t.server).unwrap();
        assert_eq!(m.ca.as_ref().unwrap().bytes, b"CA FROM FILE");
        assert!(m.ca.unwrap().what.starts_with("certificate-authority \""));
        let (c, k) = m.identity.unwrap();
        assert_eq!(
            (&c.bytes[..], &k.bytes[..]),
            (&b"CERT FROM FILE"[..], &b"KEY FROM FILE"[..])
        );
        assert_eq!(m.server_name.as_deref(), Some("kubernetes"));
        // Data wins over files, each field on its own; a data field makes its file unread (so a
        // missing file is no error).
        let kc = kubeconfig(
            json!({"server": "https://k", "certificate-authority": "missing.crt",
                   "certificate-authority-data": b64("CA DATA")}),
            json!({"client-certificate": "tls.crt", "client-key": "missing.key",
                   "client-key-data": b64("KEY DATA")}),
        );
        let t = resolve(&kc, &d.0).unwrap();
        let m = t.tls.load(&t.server).unwrap();
        assert_eq!(m.ca.unwrap().bytes, b"CA DATA");
        let (c, k) = m.identity.unwrap();
        assert_eq!(
            (&c.bytes[..], &k.bytes[..]),
            (&b"CERT FROM FILE"[..], &b"KEY DATA"[..])
        );
        assert_eq!(k.what, "client-key-data of user \"u\"");
        // Empty strings are absent; line breaks inside base64 are allowed (Go skips them).
        let wrapped = format!("{}\n{}", &b64("CA DATA")[..4], &b64("CA DATA")[4..]);
        let kc = kubeconfig(
            json!({"server": "https://k", "certificate-authority-data": wrapped, "tls-server-name": ""}),
            json!({"token": ""}),
        );
        let t = resolve(&kc, &d.0).unwrap();
        assert_eq!(t.token, None);
        let m = t.tls.load(&t.server).unwrap();
        assert_eq!(
            (m.ca.unwrap().bytes, m.server_name),
            (b"CA DATA".to_vec(), None)
        );
    }

    #[test]
    fn token_file_wins_when_readable() {
        let d = TempDir::new("token");
        std::fs::write(d.0.join("t"), "from-file\n").unwrap();
        let t = |user: Value| resolve(&kubeconfig(json!({"server": "http://k"}), user), &d.0);
        assert_eq!(
            t(json!({"token": "inline", "tokenFile": "t"}))
                .unwrap()
                .token
                .as_deref(),
            Some("from-file")
        );
        assert_eq!(
            t(json!({"token": "inline", "tokenFile": "gone"}))
                .unwrap()
                .token
                .as_deref(),
            Some("inline")
        );
        let e = t(json!({"tokenFile": "gone"})).unwrap_err();
        assert!(e.contains("tokenFile") && e.contains("gone"), "{e}");
        assert_eq!(t(json!({})).unwrap().token, None);
    }

    #[test]
    fn insecure_and_missing_ca() {
        let d = Path::new("/");
        let load = |cluster: Value, user: Value| {
            let t = resolve(&kubeconfig(cluster, user), d)?;
            t.tls.load(&t.server)
        };
        // Insecure alone: allowed, no CA.
        let m = load(
            json!({"server": "https://k", "insecure-skip-tls-verify": true}),
            json!({}),
        )
        .unwrap();
        assert!(m.insecure && m.ca.is_none());
        // Insecure false is the default.
        let e = load(
            json!({"server": "https://k", "insecure-skip-tls-verify": false}),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.contains(
                "cluster \"k\" has neither certificate-authority-data nor certificate-authority"
            ) && e.contains("https://k"),
            "{e}"
        );
        // With a CA: refused, as kubectl does.
        for ca in [
            json!({"certificate-authority-data": b64("x")}),
            json!({"certificate-authority": "/ca.crt"}),
        ] {
            let mut c = json!({"server": "https://k", "insecure-skip-tls-verify": true});
            c.as_object_mut()
                .unwrap()
                .extend(ca.as_object().unwrap().clone());
            let e = load(c, json!({})).unwrap_err();
            assert!(e.contains("insecure flag is not allowed"), "{e}");
        }
        // Not a boolean.
        let e = resolve(
            &kubeconfig(
                json!({"server": "https://k", "insecure-skip-tls-verify": "yes"}),
                json!({}),
            ),
            d,
        )
        .unwrap_err();
        assert!(e.contains("must be true or false"), "{e}");
    }

    #[test]
    fn unreadable_fields_are_named() {
        let d = TempDir::new("bad");
        let load = |cluster: Value, user: Value| {
            let t = resolve(&kubeconfig(cluster, user), &d.0)?;
            t.tls.load(&t.server)
        };
        let e = load(
            json!({"server": "https://k", "certificate-authority": "nope.crt"}),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.contains("certificate-authority \"") && e.contains("nope.crt\" of cluster \"k\""),
            "{e}"
        );
        let e = load(
            json!({"server": "https://k", "certificate-authority-data": "-----BEGIN CERTIFICATE-----"}),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.contains("certificate-authority-data of cluster \"k\" is not base64"),
            "{e}"
        );
        let ca = json!({"server": "https://k", "certificate-authority-data": b64("x")});
        let e = load(ca.clone(), json!({"client-certificate-data": b64("c")})).unwrap_err();
        assert!(
            e.contains("user \"u\" has a client-certificate but neither client-key-data"),
            "{e}"
        );
        let e = load(ca.clone(), json!({"client-key": "k.pem"})).unwrap_err();
        assert!(e.contains("has a client-key but neither"), "{e}");
        let e = load(
            ca,
            json!({"client-certificate": "c.pem", "client-key": "k.pem"}),
        )
        .unwrap_err();
        assert!(
            e.contains("client-certificate \"") && e.contains("of user \"u\""),
            "{e}"
        );
        // http:// servers: the TLS fields are not looked at.
        let t = resolve(
            &kubeconfig(
                json!({"server": "http://k", "certificate-authority": "nope.crt"}),
                json!({"client-key": "k.pem"}),
            ),
            &d.0,
        );
        assert!(t.is_ok());
    }
}
