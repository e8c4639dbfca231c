//! TLS to the API server with rustls (the `ring` provider): the server is verified against the
//! kubeconfig's CA only (no system roots), by IP address SAN or DNS name (or `tls-server-name`),
//! and a client certificate is offered when the kubeconfig has one.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// PEM bytes and what they are, for messages: e.g. `certificate-authority-data of cluster "c"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pem {
    pub what: String,
    pub bytes: Vec<u8>,
}

/// What the kubeconfig gives for TLS, loaded (see `apiserver::TlsFields::load`).
#[derive(Debug, Clone, PartialEq)]
pub struct Material {
    /// The CA bundle; `None` only when `insecure`.
    pub ca: Option<Pem>,
    /// `insecure-skip-tls-verify: true`: no verification of the server's certificate.
    pub insecure: bool,
    /// `tls-server-name`: the name to verify (and send as SNI) instead of the URL's host.
    pub server_name: Option<String>,
    /// Client certificate chain and key.
    pub identity: Option<(Pem, Pem)>,
}

/// A ready client configuration and the name the server's certificate must carry.
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// `host` is the URL's host (a DNS name or an IP address), used unless `tls-server-name` is set.
    pub fn new(m: &Material, host: &str) -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = match (&m.ca, m.insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(
                    provider.signature_verification_algorithms,
                ))),
            (Some(ca), false) => builder.with_root_certificates(roots(ca)?),
            (None, false) => {
                return Err(
                    "no certificate-authority to verify the API server with (and not insecure)"
                        .into(),
                );
            }
        };
        let config = match &m.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let k = PrivateKeyDer::from_pem_slice(&key.bytes).map_err(|e| {
                    format!(
                        "{}: no usable PEM private key (PKCS#8, RSA or EC): {e}",
                        key.what
                    )
                })?;
                builder.with_client_auth_cert(chain, k).map_err(|e| {
                    format!(
                        "{} and {} do not make a client identity: {e}",
                        cert.what, key.what
                    )
                })?
            }
        };
        let (name_text, origin) = match &m.server_name {
            Some(n) => (n.as_str(), "tls-server-name"),
            None => (host, "the server URL's host"),
        };
        let name = ServerName::try_from(name_text.to_string())
            .map_err(|_| format!("{origin} {name_text:?} is not a DNS name or an IP address"))?;
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// The handshake, completed (so that its failures are told apart from HTTP ones).
    pub fn handshake<S: Read + Write>(
        &self,
        mut sock: S,
        peer: &SocketAddr,
        timeout: Duration,
    ) -> Result<StreamOwned<ClientConnection, S>, String> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| format!("TLS setup: {e}"))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(format!(
                    "TLS handshake with {peer} (as {}) failed: {}",
                    self.name.to_str(),
                    describe_io(&e, timeout)
                ));
            }
        }
        Ok(StreamOwned::new(conn, sock))
    }
}

fn certificates(p: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&p.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", p.what))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM CERTIFICATE block", p.what));
    }
    Ok(certs)
}

fn roots(ca: &Pem) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certificates(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.what))?;
    }
    Ok(roots)
}

/// An I/O error from a TLS or plain stream, with rustls's reason when there is one.
pub fn describe_io(e: &io::Error, timeout: Duration) -> String {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return format!("timed out (the whole request may take {timeout:?})");
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => describe_tls(t),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection (is it an https:// server?)".into()
        }
        None => e.to_string(),
    }
}

pub fn describe_tls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let hint = match c {
                CertificateError::UnknownIssuer => {
                    ": it is not signed by the kubeconfig's certificate-authority"
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    ": the name or IP address the server is reached by is not among its \
                     certificate's names (tls-server-name sets another name to check)"
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    ": outside its validity period (or this node's clock is wrong)"
                }
                _ => "",
            };
            format!("certificate verification failed: {c:?}{hint}")
        }
        rustls::Error::AlertReceived(a) => {
            format!("the server refused the handshake (TLS alert {a:?})")
        }
        rustls::Error::InvalidMessage(m) => {
            format!("the server did not speak TLS ({m:?}; is it an http:// server?)")
        }
        other => other.to_string(),
    }
}

/// `insecure-skip-tls-verify: true`: any server certificate is accepted, the handshake's own
/// signatures are still checked (as Go's InsecureSkipVerify does).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(what: &str, text: &str) -> Pem {
        Pem {
            what: what.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn bad_material_is_named() {
        let m = Material {
            ca: Some(pem(
                "certificate-authority-data of cluster \"c\"",
                "not pem",
            )),
            insecure: false,
            server_name: None,
            identity: None,
        };
        let e = Client::new(&m, "10.96.0.1").err().unwrap();
        assert!(
            e.contains("certificate-authority-data of cluster \"c\": no PEM"),
            "{e}"
        );
        let m = Material {
            ca: Some(pem(
                "certificate-authority \"/x\"",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )),
            ..m
        };
        let e = Client::new(&m, "10.96.0.1").err().unwrap();
        assert!(e.contains("not a usable CA certificate"), "{e}");
        // Insecure needs no CA; a bad tls-server-name is named.
        let m = Material {
            ca: None,
            insecure: true,
            server_name: Some("not a name!".into()),
            identity: None,
        };
        let e = Client::new(&m, "10.96.0.1").err().unwrap();
        assert!(e.contains("tls-server-name \"not a name!\""), "{e}");
        let m = Material {
            server_name: None,
            identity: Some((
                pem("client-certificate-data", ""),
                pem("client-key-data", ""),
            )),
            ..m
        };
        let e = Client::new(&m, "10.96.0.1").err().unwrap();
        assert!(
            e.contains("client-certificate-data: no PEM CERTIFICATE"),
            "{e}"
        );
        // IP addresses and DNS names are both server names.
        let m = Material {
            identity: None,
            ..m
        };
        assert!(Client::new(&m, "10.96.0.1").is_ok());
        assert!(Client::new(&m, "fd00::1").is_ok());
        assert!(Client::new(&m, "kubernetes.default.svc").is_ok());
    }

    #[test]
    fn errors_are_described() {
        let e = describe_tls(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(e.contains("not signed by the kubeconfig's certificate-authority"));
        let io = io::Error::new(io::ErrorKind::WouldBlock, "x");
        assert!(describe_io(&io, Duration::from_secs(3)).contains("timed out"));
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert!(describe_io(&io, Duration::from_secs(3)).contains("CertificateRequired"));
    }
}
