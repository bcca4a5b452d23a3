//! TLS configuration from [`TlsOptions`] (rustls, `ring` provider).

use std::sync::Arc;

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

/// Builds the rustls client configuration the options describe.
///
/// Reads the CA and certificate/key files; a missing, unreadable or empty file is a
/// [`ConnError::TlsConfig`].
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnError::TlsConfig(format!("protocol versions: {e}")))?;

    let algorithms = provider.signature_verification_algorithms;
    let builder = if opts.allow_invalid_certificates {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { algorithms }))
    } else {
        let roots = Arc::new(root_store(opts)?);
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
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ConnError::TlsConfig(format!("reading {shown}: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConnError::TlsConfig(format!("parsing {shown}: {e}")))?;
            if certs.is_empty() {
                return Err(ConnError::TlsConfig(format!(
                    "{shown} holds no certificate"
                )));
            }
            let key = PrivateKeyDer::from_pem_file(path)
                .map_err(|e| ConnError::TlsConfig(format!("private key in {shown}: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ConnError::TlsConfig(format!("client certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
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

fn root_store(opts: &TlsOptions) -> Result<RootCertStore, ConnError> {
    let Some(path) = &opts.ca_file else {
        return Ok(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ));
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
