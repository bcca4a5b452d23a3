//! One MongoDB connection for brook: a TCP or TLS stream, the hello handshake, and
//! OP_MSG requests and replies over it.
//!
//! This crate does IO (tokio, socket2, rustls); the frames come from `brook-wire` and the
//! commands from `brook-command`, which do none. It knows nothing of pools, server
//! selection or retries: it opens one connection, runs what it is given, and says clearly
//! when the connection must be thrown away.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), brook_conn::ConnError> {
//! use brook_command::Ping;
//! use brook_conn::{Connection, ConnectionOptions, ServerAddress};
//!
//! let address: ServerAddress = "localhost:27017".parse()?;
//! let mut conn = Connection::connect(&address, &ConnectionOptions::default()).await?;
//! println!("wire version {}", conn.description().max_wire_version);
//! conn.run("admin", &Ping).await?;
//! # Ok(()) }
//! ```
//!
//! [`Connection::connect`] resolves the address, tries each resolved socket address
//! (IPv4 and IPv6) until one accepts within the connect timeout, sets `TCP_NODELAY` and
//! keepalive, wraps the stream in TLS when asked, and runs the `hello` handshake with the
//! client metadata, the application name and the compressors offered. The reply becomes a
//! [`StreamDescription`]: wire versions, size limits, the negotiated compressor, the
//! server's kind and replica set view. From then on the server's `maxMessageSizeBytes` is
//! the limit for encoding requests, and the limit for decoding replies is the smaller of it
//! and the client's own cap, [`ConnectionOptions::max_message_size`] (48 MB by default):
//! a server that advertises 2 GB does not get to send 2 GB frames.
//!
//! Then, with `&mut self` (one operation at a time):
//!
//! * [`Connection::run`] builds a [`Command`](brook_command::Command), sends it and parses
//!   its reply into the command's output;
//! * [`Connection::run_body`] sends a prepared body and returns the raw reply;
//!   [`Connection::run_serialized`] does the same with a body serialised once (a cursor's
//!   `getMore`); their `_within` variants ([`Connection::run_body_within`],
//!   [`Connection::run_serialized_within`]) take a limit of their own for the exchange;
//! * [`Connection::send`] sends an OP_MSG [`Message`](brook_wire::Message) as given (with
//!   an id from [`next_request_id`]) and returns the reply that answers it, or `None` when
//!   the message was flagged moreToCome; [`Connection::receive_more`] reads the further
//!   replies of a reply flagged moreToCome.
//!
//! Each outgoing message is compressed with the negotiated compressor unless
//! [`brook_wire::may_compress`] forbids it for that command. Each reply's `responseTo` must
//! match the request's id, and a reply may be flagged moreToCome only when its request set
//! `exhaustAllowed` (only [`Connection::send`] can: the `run*` methods never do); any other
//! moreToCome reply is [`ConnError::UnexpectedMoreToCome`].
//!
//! The read and write buffers live in the connection and are reused; replies are split off
//! the read buffer without copying. The read buffer grows with the bytes that arrive, not
//! with the length a frame's header declares: per step at most by the larger of 64 KiB and
//! what has already arrived of the frame, so a peer that declares 40 MB and sends 100
//! bytes costs 64 KiB, while a large legitimate reply costs a handful of doublings.
//!
//! # Broken connections
//!
//! A connection *breaks* when its stream may be in an unknown state: an IO error, a
//! frame that does not decode (one over the size limit included), a `responseTo` that
//! answers another request, a moreToCome reply nobody asked for, the peer closing (even
//! mid-reply: [`ConnError::Closed`], never a hang), a timeout, or an operation future
//! dropped before it finished. A broken connection never touches its
//! socket again: every later operation fails at once with [`ConnError::Broken`].
//! [`Connection::is_broken`] tells a pool to discard it.
//!
//! What does **not** break it: a server error (`ok: 0`, returned as
//! [`ConnError::Command`] with the [`ServerError`](brook_command::ServerError) inside,
//! after the whole reply was read), a reply that does not parse as the command's output,
//! a command that cannot be built, a message too large to encode ([`ConnError::Encode`]:
//! nothing is sent), a `_within` call given a zero limit (nothing is sent), and calling
//! `send`/`receive_more` in the wrong state ([`ConnError::InvalidState`]).
//!
//! # Kinds of errors
//!
//! [`ConnError::is_network`]: IO, closed peer, timeout, TLS handshake, a connection broken
//! earlier. [`ConnError::is_timeout`]: the timeouts alone. [`ConnError::is_protocol`]: the
//! peer sent something unreadable or not answering the request (a reply that does not
//! decode, a `responseTo` mismatch, an unasked-for moreToCome).
//! [`ConnError::server_error`]: the server's `ok: 0`. `is_network` and `is_protocol` are
//! never both true, and neither is true of a server error.
//!
//! # Cancellation
//!
//! Every async method is cancel-safe in the sense that matters for a pool: dropping the
//! future (a `select!`, a timeout around it, a dropped task) never leaves a connection
//! that *looks* healthy but is not. The connection marks itself broken before its first
//! await and clears the mark only after a complete reply was read (or a moreToCome request
//! fully written), so a future dropped half way leaves it broken. The operation itself is
//! not resumable: its request may or may not have reached the server.
//!
//! # Timeouts
//!
//! [`ConnectionOptions::connect_timeout`] (10 s by default) bounds name resolution, each
//! TCP attempt, the TLS handshake and the hello. [`ConnectionOptions::socket_timeout`]
//! (none by default) bounds every exchange after the handshake: each send together with
//! the read of its reply (every write and read in it, a partial frame followed by silence
//! included), each moreToCome request's write, each [`Connection::receive_more`]; it can
//! be changed later with [`Connection::set_socket_timeout`]. The `_within` calls replace
//! it for one exchange with a limit of their own (longer or shorter; zero fails at once
//! without sending, and breaks nothing). A limit that expires during an exchange is
//! [`ConnError::Timeout`] ([`ConnError::is_timeout`]) and breaks the connection.
//!
//! # TLS
//!
//! [`TlsOptions`] maps the URI's `tls*` options onto rustls (ring provider): roots from a
//! PEM CA file or the bundled Mozilla roots, an optional client certificate, and the two
//! "allow invalid" switches.
//!
//! # Authentication
//!
//! With [`ConnectionOptions::credential`] set, [`Connection::connect`] authenticates
//! after the hello, per the MongoDB Authentication specification: without a mechanism the
//! hello asks for `saslSupportedMechs` and SCRAM-SHA-256 is used when the server lists
//! it (SCRAM-SHA-1 otherwise); SCRAM and MONGODB-X509 start speculatively inside the hello
//! (`speculativeAuthenticate`) and continue with `saslContinue` when the server answered,
//! or start over with `saslStart`/`authenticate` when it did not; PLAIN runs one
//! `saslStart`. The conversation is `brook-auth`'s (no IO); a SCRAM server that cannot
//! prove it knows the password is refused. GSSAPI, MONGODB-AWS and MONGODB-OIDC fail
//! before anything is sent. Every failure is [`ConnError::Auth`]
//! ([`ConnError::is_auth`]), naming the mechanism and the user, never the password.
//!
//! # Logging
//!
//! `tracing` events: `debug` for connecting, TLS and the handshake, `trace` for every
//! message sent and received.

#![forbid(unsafe_code)]

mod auth;
mod connection;
mod description;
mod error;
mod options;
mod stream;
mod tls;

#[cfg(test)]
mod tests;

pub use brook_auth::{AuthError, Credential, Mechanism};
pub use brook_command::{AddressError, DEFAULT_PORT, ServerAddress};
pub use connection::{Connection, next_request_id};
pub use description::{ServerKind, StreamDescription, negotiate_compressor};
pub use error::ConnError;
pub use options::{ConnectionOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, TlsOptions};
