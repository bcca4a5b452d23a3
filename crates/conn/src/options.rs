//! How to open a connection.

use std::path::PathBuf;
use std::time::Duration;

use brook_wire::{Compressor, DEFAULT_MAX_MESSAGE_SIZE};

/// Default limit for resolving, connecting (each address) and the TLS and hello handshakes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default idle time before TCP keepalive probes start.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(120);

/// Options for [`Connection::connect`](crate::Connection::connect).
///
/// Build it from [`Default`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use brook_conn::ConnectionOptions;
/// let opts = ConnectionOptions {
///     app_name: Some("indexer".into()),
///     socket_timeout: Some(Duration::from_secs(30)),
///     ..ConnectionOptions::default()
/// };
/// assert_eq!(opts.connect_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionOptions {
    /// Limit for each of: name resolution, the TCP connect to each resolved address, the TLS
    /// handshake and the hello handshake. `Duration::ZERO` means no limit (as
    /// `connectTimeoutMS=0` in a URI). Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for each send and the read of its reply (and for each
    /// [`receive_more`](crate::Connection::receive_more)). `None` (or zero, as
    /// `socketTimeoutMS=0`): no limit. Default `None`.
    pub socket_timeout: Option<Duration>,
    /// `appName`, sent in the handshake's client metadata.
    pub app_name: Option<String>,
    /// Compressors to offer, in order of preference. The first of them that the server
    /// also lists is used for every later message except the ones
    /// [`brook_wire::may_compress`] refuses. Default: none.
    pub compressors: Vec<Compressor>,
    /// TLS, or `None` for plain TCP. Default `None`.
    pub tls: Option<TlsOptions>,
    /// Idle time before TCP keepalive probes start; `None` leaves keepalive off.
    /// Default 120 s.
    pub keepalive: Option<Duration>,
    /// The client's own cap, in bytes (header included), on the largest frame it accepts
    /// from the server. It holds for the whole life of the connection: after the
    /// handshake the limit is the smaller of this and the server's `maxMessageSizeBytes`
    /// ([`Connection::max_reply_size`](crate::Connection::max_reply_size)), so a server
    /// advertising 2 GB does not make the client accept 2 GB frames. A reply declaring
    /// more is refused as soon as its length is read, before any memory is set aside for
    /// it: [`ConnError::Wire`](crate::ConnError::Wire) with
    /// [`WireError::MessageTooLarge`](brook_wire::WireError::MessageTooLarge), and the
    /// connection breaks. OP_COMPRESSED replies are held to it once uncompressed too.
    ///
    /// It also bounds the hello request; later requests are bounded by the server's
    /// `maxMessageSizeBytes` alone. Default [`DEFAULT_MAX_MESSAGE_SIZE`] (48,000,000, the
    /// value every MongoDB server advertises).
    pub max_message_size: usize,
    /// Announce a load-balanced connection in the handshake (`loadBalanced: true`).
    /// Default `false`.
    pub load_balanced: bool,
    /// Authenticate as this after the hello (see the [crate docs](crate#authentication));
    /// `None` (the default)
    /// for no authentication, as monitoring connections always do. Its `Debug` never
    /// shows the password.
    pub credential: Option<brook_auth::Credential>,
}

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            socket_timeout: None,
            app_name: None,
            compressors: Vec::new(),
            tls: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            load_balanced: false,
            credential: None,
        }
    }
}

/// TLS settings (the URI's `tls*` options).
///
/// Without a CA file the server's certificate is checked against the operating system's
/// root store (read once per process), plus the Mozilla roots bundled by `webpki-roots`
/// when brook-conn's `webpki-roots` feature is on; with one, against that file's
/// certificates only. TLS uses rustls with the `ring` provider, TLS 1.3 and 1.2; SNI is
/// sent for a host name, never for an IP address. No revocation check (OCSP or CRL) is
/// made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust instead of the default roots (`tlsCAFile`).
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain and its private key
    /// (`tlsCertificateKeyFile`), for servers that ask for one. The key must not be
    /// encrypted: an encrypted one is refused with an error that says so.
    pub cert_key_file: Option<PathBuf>,
    /// Accept any server certificate (`tlsAllowInvalidCertificates`). The handshake
    /// signatures are still checked, but the peer is not authenticated: for tests only.
    pub allow_invalid_certificates: bool,
    /// Accept a trusted certificate whose names do not match the host
    /// (`tlsAllowInvalidHostnames`).
    pub allow_invalid_hostnames: bool,
    /// Name to check the certificate against (and send as SNI) instead of the address's
    /// host.
    pub server_name: Option<String>,
}
