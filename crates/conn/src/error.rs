//! The one error type of this crate.

use std::io;
use std::time::Duration;

use brook_command::{CommandError, ServerError};

use brook_wire::WireError;

use crate::address::ServerAddress;

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

    /// A frame that could not be encoded (e.g. too large: nothing is sent and the connection
    /// stays usable) or a reply that could not be decoded (the connection breaks).
    #[error("wire protocol error with {address}: {source}")]
    Wire {
        /// The server.
        address: ServerAddress,
        /// What the codec refused.
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

    /// A connect or operation timeout (client side).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnError::Timeout { .. })
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
            | ConnError::Command { wire_version, .. }
            | ConnError::ResponseToMismatch { wire_version, .. }
            | ConnError::Broken { wire_version, .. } => *wire_version,
            ConnError::InvalidAddress { .. }
            | ConnError::InvalidState { .. }
            | ConnError::TlsConfig(_)
            | ConnError::Tls { .. }
            | ConnError::Handshake { .. } => None,
        }
    }

    /// The server address the error is about, where there is one.
    pub fn address(&self) -> Option<&ServerAddress> {
        match self {
            ConnError::Io { address, .. }
            | ConnError::Timeout { address, .. }
            | ConnError::Closed { address, .. }
            | ConnError::Wire { address, .. }
            | ConnError::ResponseToMismatch { address, .. }
            | ConnError::Broken { address, .. }
            | ConnError::Tls { address, .. }
            | ConnError::Handshake { address, .. } => Some(address),
            ConnError::InvalidAddress { .. }
            | ConnError::Command { .. }
            | ConnError::InvalidState { .. }
            | ConnError::TlsConfig(_) => None,
        }
    }
}
