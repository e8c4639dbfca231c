//! An HTTPS stand-in for the Kubernetes API server: the same answers as `plugin_fakeapi` (real
//! Pod JSON, chunked, a bearer token checked) over rustls on 127.0.0.1, with a CA and
//! certificates made in the test (rcgen), optionally requiring a client certificate. Also a
//! kubeconfig (YAML, as Multus and chainsaw generate) with the TLS fields the test chooses.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;

use crate::k8s_fakeapi::read_request;
pub use crate::plugin_fakeapi::TOKEN;
use crate::plugin_fakeapi::{answer, write_chunked};

/// A certificate authority made for one test.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy)]
pub enum Usage {
    Server,
    Client,
}

impl Pki {
    pub fn new(common_name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate signed by this CA for `names` (IP addresses become IP SANs, anything else
    /// DNS SANs), and its key (PKCS#8), both PEM.
    pub fn leaf(&self, common_name: &str, names: &[&str], usage: Usage) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// How a request was authenticated, as the server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Token,
    ClientCert,
    None,
}

pub struct TlsApi {
    pub addr: String,
    /// Objects by API path.
    pub objects: Arc<Mutex<Vec<(String, Value)>>>,
    /// Paths asked, with how each request was authenticated.
    pub requests: Arc<Mutex<Vec<(String, Auth)>>>,
    /// Failed handshakes, as the server's rustls reported them.
    pub handshake_errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    config: Arc<ServerConfig>,
    objects: Arc<Mutex<Vec<(String, Value)>>>,
    requests: Arc<Mutex<Vec<(String, Auth)>>>,
    handshake_errors: Arc<Mutex<Vec<String>>>,
}

impl TlsApi {
    /// Serves with `cert_pem`/`key_pem`; with `client_ca_pem`, a client certificate signed by it
    /// is required (and authenticates the request without a token).
    pub fn start(cert_pem: &str, key_pem: &str, client_ca_pem: Option<&str>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key PEM");
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.expect("client CA PEM")).expect("client CA");
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(v)
            }
        };
        let config = Arc::new(
            builder
                .with_single_cert(chain, key)
                .expect("server certificate and key"),
        );
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let shared = Shared {
            config,
            objects: Arc::default(),
            requests: Arc::default(),
            handshake_errors: Arc::default(),
        };
        let (objects, requests, handshake_errors) = (
            shared.objects.clone(),
            shared.requests.clone(),
            shared.handshake_errors.clone(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: the loop ends when the test drops the server.
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => serve(c, &shared),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TlsApi {
            addr,
            objects,
            requests,
            handshake_errors,
            stop,
            thread: Some(thread),
        }
    }

    pub fn put(&self, path: &str, v: Value) {
        let mut o = self.objects.lock().expect("lock");
        o.retain(|(p, _)| p != path);
        o.push((path.to_string(), v));
    }

    pub fn requests(&self) -> Vec<(String, Auth)> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn handshake_errors(&self) -> Vec<String> {
        self.handshake_errors.lock().expect("lock").clone()
    }

    /// The failed handshakes once there are at least `n`, or what there is after `timeout`.
    /// The server records a refused handshake after the client has gone (the client's alert
    /// ends its run before the server's accept loop has read it), so a test that counts
    /// them right after the client exits must wait.
    pub fn wait_handshake_errors(&self, n: usize, timeout: Duration) -> Vec<String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let seen = self.handshake_errors();
            if seen.len() >= n || std::time::Instant::now() >= until {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A YAML kubeconfig for `https://ADDR`, written into `dir` as `name`: `cluster` and `user`
    /// are (key, YAML scalar) pairs added to the cluster and the user.
    pub fn kubeconfig(
        &self,
        dir: &Path,
        name: &str,
        cluster: &[(&str, &str)],
        user: &[(&str, &str)],
    ) -> PathBuf {
        let lines = |fields: &[(&str, &str)]| -> String {
            fields
                .iter()
                .map(|(k, v)| format!("    {k}: {v}\n"))
                .collect()
        };
        let p = dir.join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://{}\n{}contexts:\n- name: cniscope-context\n  context:\n    cluster: local\n    user: cniscope\ncurrent-context: cniscope-context\nusers:\n- name: cniscope\n  user:\n{}",
            self.addr,
            lines(cluster),
            if user.is_empty() {
                "    {}\n".to_string()
            } else {
                lines(user)
            }
        );
        std::fs::write(&p, text).expect("writing kubeconfig");
        p
    }
}

fn serve(c: TcpStream, shared: &Shared) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
    let conn = match ServerConnection::new(shared.config.clone()) {
        Ok(conn) => conn,
        Err(e) => {
            shared
                .handshake_errors
                .lock()
                .expect("lock")
                .push(e.to_string());
            return;
        }
    };
    let mut tls = StreamOwned::new(conn, c);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            shared
                .handshake_errors
                .lock()
                .expect("lock")
                .push(e.to_string());
            return;
        }
    }
    let client_cert = tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let Some((path, token_ok)) = read_request(&mut BufReader::new(&mut tls), TOKEN) else {
        return;
    };
    let auth = match (token_ok, client_cert) {
        (true, _) => Auth::Token,
        (false, true) => Auth::ClientCert,
        (false, false) => Auth::None,
    };
    shared
        .requests
        .lock()
        .expect("lock")
        .push((path.clone(), auth));
    let (code, body) = answer(
        auth != Auth::None,
        &shared.objects.lock().expect("lock"),
        &path,
    );
    // Then close_notify, as Go does.
    write_chunked(&mut tls, code, &body);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

impl Drop for TlsApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
