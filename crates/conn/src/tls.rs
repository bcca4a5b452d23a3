//! TLS configuration from [`TlsOptions`] (rustls, `ring` provider).
//!
//! What is trusted: with a CA file, only its certificates (as the URI options
//! specification says of `tlsCAFile`); otherwise the operating system's root store, read
//! once per process by `rustls-native-certs` (on Linux the usual bundle files and
//! directories, `SSL_CERT_FILE` / `SSL_CERT_DIR` when set; the keychain on macOS; the
//! system store on Windows), plus the Mozilla roots bundled by `webpki-roots` when the
//! `webpki-roots` cargo feature is on.
//!
//! Protocols: TLS 1.3 and TLS 1.2 (nothing older). SNI: rustls sends the server name for a
//! host name and never for an IP address (RFC 6066 forbids a literal address there), and
//! checks the certificate's IP address entries for the latter.
//!
//! Revocation: rustls neither fetches OCSP responses nor checks CRLs it is not given, so
//! no revocation check is made; the facade documents what that means for
//! `tlsDisableOCSPEndpointCheck` and `tlsDisableCertificateRevocationCheck`.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    SignatureScheme,
};

use crate::error::ConnError;
use crate::options::TlsOptions;
use brook_command::ServerAddress;

/// The protocol versions brook offers: TLS 1.3 first, then TLS 1.2.
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Builds the rustls client configuration the options describe.
///
/// Reads the CA and certificate/key files; a missing, unreadable or empty file, an
/// encrypted private key, or no trusted root at all is a [`ConnError::TlsConfig`].
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| ConnError::TlsConfig(format!("protocol versions: {e}")))?;

    let algorithms = provider.signature_verification_algorithms;
    let builder = if opts.allow_invalid_certificates {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { algorithms }))
    } else {
        let roots = root_store(opts)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| ConnError::TlsConfig(format!("certificate verifier: {e}")))?;
        if opts.allow_invalid_hostnames {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(IgnoreHostname { inner: webpki }))
        } else {
            builder.with_webpki_verifier(webpki)
        }
    };

    let config = match &opts.cert_key_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| ConnError::TlsConfig(format!("reading {shown}: {e}")))?;
            let (certs, key) = certificate_and_key(&pem)
                .map_err(|e| ConnError::TlsConfig(format!("tlsCertificateKeyFile {shown}: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ConnError::TlsConfig(format!("client certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// The certificate chain and the private key of a `tlsCertificateKeyFile`'s PEM text.
///
/// rustls reads unencrypted PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys; an encrypted key
/// (PKCS#8 `ENCRYPTED PRIVATE KEY`, or an OpenSSL `Proc-Type: 4,ENCRYPTED` block) is
/// recognised and refused with an error that says so, since brook does not decrypt keys
/// (`tlsCertificateKeyFilePassword` is not supported).
fn certificate_and_key(
    pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    // First: an encrypted block's headers would otherwise fail the PEM parse obscurely.
    if is_encrypted_key(pem) {
        return Err("the private key is encrypted, and brook cannot decrypt it \
             (tlsCertificateKeyFilePassword is not supported): store the key unencrypted \
             (e.g. `openssl pkey -in key.pem -out plain.pem`), with permissions that keep \
             it private"
            .to_owned());
    }
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing the certificates: {e}"))?;
    if certs.is_empty() {
        return Err("the file holds no certificate (PEM `CERTIFICATE` block)".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "the file holds no private key (PEM \
             `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
            .to_owned(),
        other => format!("parsing the private key: {other}"),
    })?;
    Ok((certs, key))
}

/// Whether the PEM text holds an encrypted private key: a PKCS#8 `ENCRYPTED PRIVATE KEY`
/// block, or a traditional OpenSSL block with a `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.lines().any(|line| {
            line.strip_prefix("Proc-Type:")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("4,ENCRYPTED"))
        })
}

/// The name the server's certificate is checked against: the override, else the host.
pub(crate) fn server_name(
    opts: &TlsOptions,
    address: &ServerAddress,
) -> Result<ServerName<'static>, ConnError> {
    let name = opts.server_name.as_deref().unwrap_or(&address.host);
    ServerName::try_from(name.to_owned())
        .map_err(|e| ConnError::TlsConfig(format!("invalid TLS server name {name:?}: {e}")))
}

/// The roots to verify the server's chain against: the CA file's alone when given, else
/// the default roots (see the module docs).
fn root_store(opts: &TlsOptions) -> Result<Arc<RootCertStore>, ConnError> {
    let Some(path) = &opts.ca_file else {
        return default_roots().map_err(ConnError::TlsConfig);
    };
    let shown = path.display();
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConnError::TlsConfig(format!("reading CA file {shown}: {e}")))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| ConnError::TlsConfig(format!("parsing CA file {shown}: {e}")))?;
        store
            .add(cert)
            .map_err(|e| ConnError::TlsConfig(format!("CA certificate in {shown}: {e}")))?;
    }
    if store.is_empty() {
        return Err(ConnError::TlsConfig(format!(
            "CA file {shown} holds no certificate"
        )));
    }
    Ok(Arc::new(store))
}

/// The operating system's roots (plus the bundled ones with the `webpki-roots` feature),
/// loaded on first use and kept for the life of the process: reading and parsing the
/// store takes milliseconds, too long to repeat for every connection.
fn default_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let store = os_roots(rustls_native_certs::load_native_certs())?;
            #[cfg(feature = "webpki-roots")]
            let store = {
                let mut store = store;
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                store
            };
            if store.is_empty() {
                return Err("no trusted root certificate: the operating system's store \
                     holds none; install the system CA certificates (e.g. the \
                     `ca-certificates` package), give tlsCAFile, or build brook with the \
                     `webpki-roots` cargo feature"
                    .to_owned());
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// The usable roots of what `rustls-native-certs` loaded. Certificates that do not parse
/// as trust anchors are skipped (stores carry a few odd ones); the store's load errors
/// only fail the whole when nothing at all was loaded and the bundled roots are not built
/// in.
fn os_roots(loaded: rustls_native_certs::CertificateResult) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let (added, _unparsable) = store.add_parsable_certificates(loaded.certs);
    if added == 0 && !loaded.errors.is_empty() && !cfg!(feature = "webpki-roots") {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no trusted root certificate: loading the operating system's store failed \
             ({}); give tlsCAFile, or build brook with the `webpki-roots` cargo feature",
            errors.join("; ")
        ));
    }
    Ok(store)
}

/// `allow_invalid_certificates`: any chain and name are accepted, but the handshake
/// signatures must still be made by the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `allow_invalid_hostnames`: the chain must be trusted, but a name mismatch is accepted.
#[derive(Debug)]
struct IgnoreHostname {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, both as PEM.
    fn cert_and_key() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
        MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIc2FsdHNhbHQCAggA\n\
        -----END ENCRYPTED PRIVATE KEY-----\n";

    const ENCRYPTED_TRADITIONAL: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
        Proc-Type: 4,ENCRYPTED\n\
        DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\
        \n\
        MIIEpAIBAAKCAQEAs2FsdHNhbHRzYWx0c2FsdA==\n\
        -----END RSA PRIVATE KEY-----\n";

    #[test]
    fn reads_a_certificate_and_its_key() {
        let (cert, key) = cert_and_key();
        let (certs, _key) = certificate_and_key(format!("{cert}{key}").as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        // The key may come first too.
        certificate_and_key(format!("{key}{cert}").as_bytes()).unwrap();
    }

    #[test]
    fn an_encrypted_key_is_named_as_such() {
        let (cert, _key) = cert_and_key();
        for encrypted in [ENCRYPTED_PKCS8, ENCRYPTED_TRADITIONAL] {
            let err = certificate_and_key(format!("{cert}{encrypted}").as_bytes()).unwrap_err();
            assert!(err.contains("encrypted"), "{err}");
            assert!(err.contains("tlsCertificateKeyFilePassword"), "{err}");
        }
        assert!(!is_encrypted_key(cert_and_key().1.as_bytes()));
    }

    #[test]
    fn a_missing_key_or_certificate_is_named() {
        let (cert, key) = cert_and_key();
        let err = certificate_and_key(cert.as_bytes()).unwrap_err();
        assert!(err.contains("no private key"), "{err}");
        let err = certificate_and_key(key.as_bytes()).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
    }

    #[test]
    fn an_unloadable_os_store_is_a_clear_error() {
        let mut loaded = rustls_native_certs::CertificateResult::default();
        loaded.errors.push(rustls_native_certs::Error {
            context: "failed to read PEM from file",
            kind: rustls_native_certs::ErrorKind::Io {
                inner: std::io::Error::from(std::io::ErrorKind::NotFound),
                path: "/nowhere/ca.pem".into(),
            },
        });
        let result = os_roots(loaded);
        if cfg!(feature = "webpki-roots") {
            // The bundled roots stand in for it.
            assert!(result.unwrap().is_empty());
        } else {
            let err = result.unwrap_err();
            assert!(err.contains("operating system's store"), "{err}");
            assert!(err.contains("/nowhere/ca.pem"), "{err}");
            assert!(err.contains("webpki-roots"), "{err}");
        }
        // Nothing loaded and nothing failed (an empty store): no error here; the caller
        // refuses an empty store.
        assert!(
            os_roots(rustls_native_certs::CertificateResult::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_default_roots_load_or_say_why_not() {
        // This machine's store may be empty (a bare container): either way the answer is
        // a usable store or an error that names the remedies.
        match default_roots() {
            Ok(store) => assert!(!store.is_empty()),
            Err(e) => assert!(e.contains("tlsCAFile") && e.contains("webpki-roots"), "{e}"),
        }
    }

    #[test]
    fn host_names_and_ip_addresses_become_the_right_server_names() {
        let opts = TlsOptions::default();
        let name = server_name(&opts, &ServerAddress::new("db.example.com", 27017)).unwrap();
        assert!(matches!(name, ServerName::DnsName(_)), "{name:?}");
        // rustls sends SNI (on by default) only for a DnsName: these get none.
        let config = client_config(&TlsOptions {
            allow_invalid_certificates: true,
            ..TlsOptions::default()
        })
        .unwrap();
        assert!(config.enable_sni);
        for ip in ["127.0.0.1", "::1"] {
            let name = server_name(&opts, &ServerAddress::new(ip, 27017)).unwrap();
            assert!(matches!(name, ServerName::IpAddress(_)), "{name:?}");
        }
    }
}
