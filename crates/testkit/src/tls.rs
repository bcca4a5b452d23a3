//! TLS for the fake server: certificates made on the spot with `rcgen` ([`TestCa`],
//! [`Identity`]) and a listener option ([`TlsServer`], set as [`ServerConfig::tls`]).
//!
//! A TLS [`FakeServer`] terminates TLS per connection in-process and relays the plaintext
//! over a loopback socket pair to the same code that serves plain connections, so every
//! script, fault and record works unchanged behind TLS. One difference: a connection the
//! server resets (a fault) reaches the client as a TLS close, not as a TCP reset.
//!
//! [`ServerConfig::tls`]: crate::ServerConfig::tls
//! [`FakeServer`]: crate::FakeServer

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::listen::lock;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test: it issues server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// What a certificate a [`TestCa`] issues says: its names and validity, and whether it is a
/// server's or a client's.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Subject alternative names: DNS names, or IP addresses written as such.
    pub names: Vec<String>,
    /// Expired (valid in the year 2000 only) rather than valid now.
    pub expired: bool,
    /// A client certificate (extended key usage `clientAuth`) rather than a server one.
    pub client: bool,
}

impl Leaf {
    /// A server certificate for `names`, valid now.
    pub fn server(names: &[&str]) -> Leaf {
        Leaf {
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            expired: false,
            client: false,
        }
    }

    /// A client certificate with the subject common name `name`, valid now.
    pub fn client(name: &str) -> Leaf {
        Leaf {
            names: vec![name.to_owned()],
            expired: false,
            client: true,
        }
    }

    /// The same certificate, expired.
    pub fn expired(mut self) -> Leaf {
        self.expired = true;
        self
    }
}

/// A certificate chain and its private key, as PEM and as rustls types.
#[derive(Clone)]
pub struct Identity {
    /// The certificate (issued by a [`TestCa`], or self-signed) in PEM.
    pub cert_pem: String,
    /// The unencrypted PKCS#8 private key in PEM.
    pub key_pem: String,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// A self-signed server certificate for `names` (no CA vouches for it).
    pub fn self_signed(names: &[&str]) -> Identity {
        let key = KeyPair::generate().expect("rcgen generates a key");
        let params = leaf_params(&Leaf::server(names));
        let cert = params.self_signed(&key).expect("rcgen self-signs");
        Identity::new(cert.pem(), cert.der().clone(), &key)
    }

    fn new(cert_pem: String, cert: CertificateDer<'static>, key: &KeyPair) -> Identity {
        Identity {
            cert_pem,
            key_pem: key.serialize_pem(),
            cert,
            key_der: key.serialize_der(),
        }
    }

    /// Certificate then key, as a `tlsCertificateKeyFile` holds them.
    pub fn pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn leaf_params(leaf: &Leaf) -> CertificateParams {
    let mut params = CertificateParams::new(leaf.names.clone()).expect("valid names");
    if let Some(first) = leaf.names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.extended_key_usages = vec![if leaf.client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if leaf.expired {
        // Valid through the year 2000 only (rcgen's default is 1975 to 4096).
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    params
}

impl TestCa {
    /// A new CA whose certificate's common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("rcgen generates a key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("rcgen self-signs");
        TestCa { issuer }
    }

    /// The CA's certificate in PEM, as a `tlsCAFile` holds it.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `leaf`, signed by this CA.
    pub fn issue(&self, leaf: &Leaf) -> Identity {
        let key = KeyPair::generate().expect("rcgen generates a key");
        let cert = leaf_params(leaf)
            .signed_by(&key, &self.issuer)
            .expect("rcgen signs");
        Identity::new(cert.pem(), cert.der().clone(), &key)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA certificate is a trust anchor");
        roots
    }
}

/// What the server saw of one TLS handshake.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsHandshake {
    /// The server name the client sent (SNI), if any.
    pub sni: Option<String>,
    /// The negotiated protocol version (`None` when the handshake failed).
    pub version: Option<ProtocolVersion>,
    /// Whether the client presented a certificate (one the server then verified).
    pub client_certificate: bool,
    /// Why the handshake failed, if it did.
    pub error: Option<String>,
}

/// The TLS side of a fake server: its rustls configuration and a record of every handshake.
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    handshakes: Mutex<Vec<TlsHandshake>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("handshakes", &*lock(&self.handshakes))
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// A server presenting `identity`, with TLS 1.2 and 1.3, asking no client certificate.
    pub fn new(identity: &Identity) -> Arc<TlsServer> {
        TlsServer::builder(identity).build()
    }

    /// A server presenting `identity`, to be configured further.
    pub fn builder(identity: &Identity) -> TlsServerBuilder {
        TlsServerBuilder {
            identity: identity.clone(),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            client_ca: None,
        }
    }

    /// A server with a rustls configuration made elsewhere.
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Arc<TlsServer> {
        Arc::new(TlsServer {
            config,
            handshakes: Mutex::new(Vec::new()),
        })
    }

    /// Every handshake so far, in order, failed ones included.
    pub fn handshakes(&self) -> Vec<TlsHandshake> {
        lock(&self.handshakes).clone()
    }

    /// Accepts TLS on `stream`, then lets `serve` serve the plaintext over a loopback pair
    /// while this relays bytes both ways. A failed handshake is recorded and `serve` is not
    /// called.
    pub(crate) async fn terminate<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()>,
    {
        // Nagle only delays small replies; failure to turn it off changes nothing else.
        let _nodelay = stream.set_nodelay(true);
        let mut tls = match TlsAcceptor::from(Arc::clone(&self.config))
            .accept(stream)
            .await
        {
            Ok(tls) => tls,
            Err(e) => {
                lock(&self.handshakes).push(TlsHandshake {
                    sni: None,
                    version: None,
                    client_certificate: false,
                    error: Some(e.to_string()),
                });
                return;
            }
        };
        let session = tls.get_ref().1;
        lock(&self.handshakes).push(TlsHandshake {
            sni: session.server_name().map(str::to_owned),
            version: session.protocol_version(),
            client_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
            error: None,
        });
        let Ok((mut relay_end, served_end)) = loopback_pair().await else {
            return;
        };
        let relay = async move {
            // Ends when either side closes or fails; nothing to report.
            let _ended = tokio::io::copy_bidirectional(&mut tls, &mut relay_end).await;
        };
        tokio::join!(serve(served_end), relay);
    }
}

/// Two ends of one loopback TCP connection.
async fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (connected, accepted) = tokio::try_join!(TcpStream::connect(addr), listener.accept())?;
    connected.set_nodelay(true)?;
    Ok((connected, accepted.0))
}

/// Configures a [`TlsServer`]: protocol versions, client certificates.
#[derive(Debug)]
pub struct TlsServerBuilder {
    identity: Identity,
    versions: Vec<&'static SupportedProtocolVersion>,
    client_ca: Option<RootCertStore>,
}

impl TlsServerBuilder {
    /// Only TLS 1.2.
    pub fn tls12_only(mut self) -> TlsServerBuilder {
        self.versions = vec![&rustls::version::TLS12];
        self
    }

    /// Only TLS 1.3.
    pub fn tls13_only(mut self) -> TlsServerBuilder {
        self.versions = vec![&rustls::version::TLS13];
        self
    }

    /// Require a client certificate issued by `ca` (as `mongod --tlsCAFile` without
    /// `--tlsAllowConnectionsWithoutCertificates`).
    pub fn require_client_certificate(mut self, ca: &TestCa) -> TlsServerBuilder {
        self.client_ca = Some(ca.roots());
        self
    }

    /// The server.
    pub fn build(self) -> Arc<TlsServer> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions)
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match self.client_ca {
            None => builder.with_no_client_auth(),
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .expect("a client verifier over one CA"),
            ),
        };
        let config = builder
            .with_single_cert(vec![self.identity.cert.clone()], self.identity.key())
            .expect("the identity's key matches its certificate");
        TlsServer::from_config(Arc::new(config))
    }
}
