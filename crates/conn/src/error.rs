//! The one error type of this crate.

use std::io;
use std::time::Duration;

use brook_command::{CommandError, ServerError};

use brook_wire::WireError;

use brook_command::ServerAddress;

/// Everything that can go wrong on one connection.
///
/// Variants that carry `wire_version` know the `maxWireVersion` the server announced in the
/// handshake (`None` when the error happened before the handshake finished); read it with
/// [`wire_version`](ConnError::wire_version). Which errors break the connection is told on
/// each variant and in the [crate docs](crate#broken-connections).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The address could not be parsed. Breaks nothing (no connection exists yet).
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress {
        /// The text as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A socket error: name resolution, connect, read or write. Breaks the connection.
    #[error("I/O error talking to {address}: {source}")]
    Io {
        /// The server.
        address: ServerAddress,
        /// The error from the operating system or the TLS layer.
        #[source]
        source: io::Error,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// Connecting (resolution, TCP, TLS or the hello handshake) or one send-and-receive
    /// took longer than its limit. Breaks the connection.
    #[error("{operation} with {address} timed out after {after:?}")]
    Timeout {
        /// The server.
        address: ServerAddress,
        /// What was being done: `"connect"` (resolve + TCP + TLS), `"handshake"` (hello)
        /// or `"operation"` (a send and its reply).
        operation: &'static str,
        /// The limit that was exceeded.
        after: Duration,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// The peer closed the connection (end of stream), possibly in the middle of a reply.
    /// Breaks the connection.
    #[error(
        "{address} closed the connection{}",
        if *.mid_message { " in the middle of a reply" } else { "" }
    )]
    Closed {
        /// The server.
        address: ServerAddress,
        /// True when part of a reply had already arrived.
        mid_message: bool,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// A reply that could not be decoded: a declared length over the limit (see
    /// [`ConnectionOptions::max_message_size`](crate::ConnectionOptions::max_message_size)),
    /// a malformed header, flags, section or document, a checksum mismatch, a corrupt
    /// compressed payload... A protocol error ([`is_protocol`](ConnError::is_protocol)).
    /// Breaks the connection.
    #[error("wire protocol error in a reply from {address}: {source}")]
    Wire {
        /// The server.
        address: ServerAddress,
        /// What the decoder refused.
        #[source]
        source: WireError,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// Our own request could not be encoded (e.g. it is larger than the server's
    /// `maxMessageSizeBytes`: [`WireError::MessageTooLarge`]). Nothing was sent, so this
    /// does **not** break the connection, and it is not a protocol error.
    #[error("request to {address} could not be encoded: {source}")]
    Encode {
        /// The server.
        address: ServerAddress,
        /// What the encoder refused.
        #[source]
        source: WireError,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// The command failed: the server answered `ok: 0` ([`CommandError::Server`]), the
    /// reply did not have the expected shape, or the command could not be built. The
    /// reply was read completely, so this does **not** break the connection.
    #[error("{source}")]
    Command {
        /// The command's error (boxed: it can be large).
        #[source]
        source: Box<CommandError>,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// A reply answered another request than the one sent. Breaks the connection.
    #[error("reply from {address} answers request {actual}, expected {expected}")]
    ResponseToMismatch {
        /// The server.
        address: ServerAddress,
        /// The request id the reply should have answered.
        expected: i32,
        /// The `responseTo` it carried.
        actual: i32,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// A reply flagged `moreToCome` answered a request that did not set `exhaustAllowed`:
    /// the server would go on streaming replies nobody asked for, so the stream cannot be
    /// used for anything else. A protocol error ([`is_protocol`](ConnError::is_protocol)).
    /// Breaks the connection.
    #[error("{address} flagged a reply moreToCome although the request did not allow exhaust")]
    UnexpectedMoreToCome {
        /// The server.
        address: ServerAddress,
        /// The request id the reply answered.
        response_to: i32,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// The connection broke earlier (an error, a timeout or a cancelled operation) and was
    /// used again; the socket was not touched.
    #[error("connection {connection_id} to {address} is broken and cannot be used")]
    Broken {
        /// The server.
        address: ServerAddress,
        /// [`Connection::id`](crate::Connection::id) of the broken connection.
        connection_id: u64,
        /// The server's max wire version, if the handshake had finished.
        wire_version: Option<i32>,
    },

    /// The call does not fit the connection's state: `send` while replies of a
    /// `moreToCome` sequence are still due, or `receive_more` when none are. Nothing was
    /// sent or read, and the connection is left as it was.
    #[error("invalid use of connection {connection_id}: {reason}")]
    InvalidState {
        /// [`Connection::id`](crate::Connection::id).
        connection_id: u64,
        /// What was wrong.
        reason: &'static str,
    },

    /// The TLS options could not be turned into a TLS configuration (an unreadable or
    /// empty CA file, a certificate/key file without a key, an invalid server name).
    #[error("TLS configuration error: {0}")]
    TlsConfig(String),

    /// The TLS handshake with the server failed (e.g. an untrusted certificate).
    /// Breaks the connection.
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
        /// The server.
        address: ServerAddress,
        /// The error of the TLS layer.
        #[source]
        source: io::Error,
    },

    /// The hello handshake was refused (`ok: 0`) or its reply was malformed; the connection
    /// is dropped.
    #[error("hello handshake with {address} failed: {source}")]
    Handshake {
        /// The server.
        address: ServerAddress,
        /// Why (boxed: it can be large).
        #[source]
        source: Box<CommandError>,
    },

    /// Authentication failed after the hello: the server refused the credential, could
    /// not prove it knows the password, answered out of protocol, or the mechanism is not
    /// supported. Names the mechanism and the user, never the password. Not retryable;
    /// the connection is dropped.
    #[error("authentication to {address} failed ({mechanism}, user {user:?}): {source}")]
    Auth {
        /// The server.
        address: ServerAddress,
        /// The mechanism (`SCRAM-SHA-256`, `MONGODB-X509`…).
        mechanism: &'static str,
        /// The user name, if the credential has one.
        user: Option<String>,
        /// Why.
        #[source]
        source: brook_auth::AuthError,
    },
}

impl From<brook_command::AddressError> for ConnError {
    fn from(e: brook_command::AddressError) -> ConnError {
        ConnError::InvalidAddress {
            address: e.address,
            reason: e.reason,
        }
    }
}

impl ConnError {
    /// A network-level failure: IO, timeout, peer closed, TLS handshake, or use of a
    /// connection that broke earlier. Retry and resume logic treats these as transient.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            ConnError::Io { .. }
                | ConnError::Timeout { .. }
                | ConnError::Closed { .. }
                | ConnError::Tls { .. }
                | ConnError::Broken { .. }
        )
    }

    /// Authentication failed ([`Auth`](ConnError::Auth)).
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnError::Auth { .. })
    }

    /// A connect or operation timeout (client side).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnError::Timeout { .. })
    }

    /// The peer sent something unreadable, or something that does not answer our request:
    ///
    /// * [`Wire`](ConnError::Wire): any [`WireError`] met while decoding a reply (a
    ///   declared length over the limit or under 16, an unknown opcode, unknown required
    ///   flag bits, a checksum mismatch, a malformed section or BSON length, a failed
    ///   decompression...);
    /// * [`ResponseToMismatch`](ConnError::ResponseToMismatch): a reply to another request;
    /// * [`UnexpectedMoreToCome`](ConnError::UnexpectedMoreToCome): a streamed reply the
    ///   request did not allow.
    ///
    /// All of them break the connection. False for everything else, in particular for IO
    /// errors, a closed peer and timeouts (see [`is_network`](ConnError::is_network) and
    /// [`is_timeout`](ConnError::is_timeout)), for `ok: 0` server errors and replies that
    /// do not parse as the command's output ([`Command`](ConnError::Command)), for a
    /// request of ours that cannot be encoded ([`Encode`](ConnError::Encode)), and for a
    /// refused or malformed hello ([`Handshake`](ConnError::Handshake)).
    ///
    /// `is_protocol` and `is_network` are never both true. The change-stream spec resumes
    /// after any error that is not a server error, so a protocol error on a `getMore` is
    /// resumable (on a new connection).
    pub fn is_protocol(&self) -> bool {
        match self {
            ConnError::Wire { .. }
            | ConnError::ResponseToMismatch { .. }
            | ConnError::UnexpectedMoreToCome { .. } => true,
            ConnError::InvalidAddress { .. }
            | ConnError::Io { .. }
            | ConnError::Timeout { .. }
            | ConnError::Closed { .. }
            | ConnError::Encode { .. }
            | ConnError::Command { .. }
            | ConnError::Broken { .. }
            | ConnError::InvalidState { .. }
            | ConnError::TlsConfig(_)
            | ConnError::Tls { .. }
            | ConnError::Handshake { .. }
            | ConnError::Auth { .. } => false,
        }
    }

    /// The server's error when the server answered `ok: 0` (during a command or the
    /// handshake).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ConnError::Command { source, .. } | ConnError::Handshake { source, .. } => {
                source.server_error()
            }
            _ => None,
        }
    }

    /// The `maxWireVersion` of the connection the error happened on, where known.
    pub fn wire_version(&self) -> Option<i32> {
        match self {
            ConnError::Io { wire_version, .. }
            | ConnError::Timeout { wire_version, .. }
            | ConnError::Closed { wire_version, .. }
            | ConnError::Wire { wire_version, .. }
            | ConnError::Encode { wire_version, .. }
            | ConnError::Command { wire_version, .. }
            | ConnError::ResponseToMismatch { wire_version, .. }
            | ConnError::UnexpectedMoreToCome { wire_version, .. }
            | ConnError::Broken { wire_version, .. } => *wire_version,
            ConnError::InvalidAddress { .. }
            | ConnError::InvalidState { .. }
            | ConnError::TlsConfig(_)
            | ConnError::Tls { .. }
            | ConnError::Handshake { .. }
            | ConnError::Auth { .. } => None,
        }
    }

    /// The server address the error is about, where there is one.
    pub fn address(&self) -> Option<&ServerAddress> {
        match self {
            ConnError::Io { address, .. }
            | ConnError::Timeout { address, .. }
            | ConnError::Closed { address, .. }
            | ConnError::Wire { address, .. }
            | ConnError::Encode { address, .. }
            | ConnError::ResponseToMismatch { address, .. }
            | ConnError::UnexpectedMoreToCome { address, .. }
            | ConnError::Broken { address, .. }
            | ConnError::Tls { address, .. }
            | ConnError::Handshake { address, .. }
            | ConnError::Auth { address, .. } => Some(address),
            ConnError::InvalidAddress { .. }
            | ConnError::Command { .. }
            | ConnError::InvalidState { .. }
            | ConnError::TlsConfig(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> ServerAddress {
        ServerAddress::new("db.example.com", 27017)
    }

    fn server_error() -> CommandError {
        let reply = bson::rawdoc! { "ok": 0, "code": 11600, "codeName": "InterruptedAtShutdown", "errmsg": "bye" };
        match brook_command::check_ok(&reply) {
            Err(e) => e,
            Ok(()) => panic!("an ok: 0 reply must be an error"),
        }
    }

    /// Every `WireError` a reply can fail to decode with.
    fn decode_errors() -> Vec<WireError> {
        vec![
            WireError::NegativeMessageLength { len: -1 },
            WireError::MessageTooShort { len: 8 },
            WireError::MessageTooLarge {
                len: 48_000_001,
                max: 48_000_000,
            },
            WireError::UnsupportedOpCode(1),
            WireError::TruncatedFlags,
            WireError::UnknownRequiredFlags(8),
            WireError::ChecksumMissingBytes,
            WireError::ChecksumMismatch {
                expected: 1,
                actual: 2,
            },
            WireError::SectionKindUnknown(7),
            WireError::MissingBody,
            WireError::DuplicateBody,
            WireError::InvalidSectionSize { size: 2 },
            WireError::SectionOverrun {
                size: 100,
                available: 10,
            },
            WireError::BadCString,
            WireError::IdentifierNotUtf8,
            WireError::TruncatedDocumentLength { available: 2 },
            WireError::InvalidDocumentLength { len: 3 },
            WireError::DocumentOverrunsSection {
                len: 100,
                available: 10,
            },
            WireError::MissingDocumentTerminator,
            WireError::TrailingBytes { count: 3 },
            WireError::CompressedFrameTooShort { len: 20 },
            WireError::CompressedOpCodeInvalid(2004),
            WireError::UnknownCompressor(9),
            WireError::CompressorDisabled("zstd"),
            WireError::UncompressedSizeNegative(-5),
            WireError::UncompressedSizeTooLarge {
                size: 60_000_000,
                max: 48_000_000,
            },
            WireError::UncompressedSizeMismatch {
                declared: 10,
                actual: 11,
            },
            WireError::Decompression("corrupt".into()),
            WireError::Bson("bad".into()),
        ]
    }

    /// (error, is_protocol, is_network, is_timeout) for every variant.
    fn cases() -> Vec<(ConnError, bool, bool, bool)> {
        let io = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let mut cases = vec![
            (
                ConnError::InvalidAddress {
                    address: "::".into(),
                    reason: "bad",
                },
                false,
                false,
                false,
            ),
            (
                ConnError::Io {
                    address: address(),
                    source: io(),
                    wire_version: Some(21),
                },
                false,
                true,
                false,
            ),
            (
                ConnError::Timeout {
                    address: address(),
                    operation: "operation",
                    after: Duration::from_secs(1),
                    wire_version: Some(21),
                },
                false,
                true,
                true,
            ),
            (
                ConnError::Closed {
                    address: address(),
                    mid_message: true,
                    wire_version: Some(21),
                },
                false,
                true,
                false,
            ),
            (
                ConnError::Encode {
                    address: address(),
                    source: WireError::MessageTooLarge {
                        len: 50_000_000,
                        max: 48_000_000,
                    },
                    wire_version: Some(21),
                },
                false,
                false,
                false,
            ),
            (
                ConnError::Command {
                    source: Box::new(server_error()),
                    wire_version: Some(21),
                },
                false,
                false,
                false,
            ),
            (
                ConnError::Command {
                    source: Box::new(CommandError::Invalid("no cursor".into())),
                    wire_version: Some(21),
                },
                false,
                false,
                false,
            ),
            (
                ConnError::ResponseToMismatch {
                    address: address(),
                    expected: 1,
                    actual: 2,
                    wire_version: Some(21),
                },
                true,
                false,
                false,
            ),
            (
                ConnError::UnexpectedMoreToCome {
                    address: address(),
                    response_to: 1,
                    wire_version: Some(21),
                },
                true,
                false,
                false,
            ),
            (
                ConnError::Broken {
                    address: address(),
                    connection_id: 3,
                    wire_version: Some(21),
                },
                false,
                true,
                false,
            ),
            (
                ConnError::InvalidState {
                    connection_id: 3,
                    reason: "no",
                },
                false,
                false,
                false,
            ),
            (ConnError::TlsConfig("no CA".into()), false, false, false),
            (
                ConnError::Tls {
                    address: address(),
                    source: io(),
                },
                false,
                true,
                false,
            ),
            (
                ConnError::Handshake {
                    address: address(),
                    source: Box::new(server_error()),
                },
                false,
                false,
                false,
            ),
        ];
        for source in decode_errors() {
            cases.push((
                ConnError::Wire {
                    address: address(),
                    source,
                    wire_version: Some(21),
                },
                true,
                false,
                false,
            ));
        }
        cases
    }

    #[test]
    fn predicates_of_every_variant() {
        for (err, protocol, network, timeout) in cases() {
            assert_eq!(err.is_protocol(), protocol, "is_protocol of {err:?}");
            assert_eq!(err.is_network(), network, "is_network of {err:?}");
            assert_eq!(err.is_timeout(), timeout, "is_timeout of {err:?}");
            assert!(!(err.is_protocol() && err.is_network()), "{err:?}");
            if err.is_protocol() {
                assert!(err.server_error().is_none(), "{err:?}");
            }
        }
    }

    #[test]
    fn the_new_variants_carry_address_and_wire_version() {
        let unexpected = ConnError::UnexpectedMoreToCome {
            address: address(),
            response_to: 5,
            wire_version: Some(25),
        };
        assert_eq!(unexpected.address(), Some(&address()));
        assert_eq!(unexpected.wire_version(), Some(25));
        assert!(
            unexpected.to_string().contains("moreToCome"),
            "{unexpected}"
        );
        let encode = ConnError::Encode {
            address: address(),
            source: WireError::MessageTooLarge { len: 2, max: 1 },
            wire_version: Some(21),
        };
        assert_eq!(encode.address(), Some(&address()));
        assert_eq!(encode.wire_version(), Some(21));
        assert!(
            encode.to_string().contains("could not be encoded"),
            "{encode}"
        );
    }
}
