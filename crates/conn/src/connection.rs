//! One connection: send a message, read its reply, keep the buffers, know when it broke.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use brook_command::{ClientMetadata, Command, CommandBody, CommandError, Hello, HelloReply, Reply};
use brook_wire::{Compressor, DecodeLimits, EncodeOptions, Message, MsgFlags, SharedDoc};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, trace};

use crate::address::ServerAddress;
use crate::description::StreamDescription;
use crate::error::ConnError;
use crate::options::ConnectionOptions;
use crate::stream::{self, Stream};

/// Process-wide source of request ids.
static NEXT_REQUEST_ID: AtomicI32 = AtomicI32::new(1);
/// Process-wide source of connection ids.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The smallest read: enough for a header and a small reply in one go.
const MIN_READ: usize = 8 * 1024;
/// Buffers that grew past this for one large message are released afterwards rather
/// than kept for the life of the connection.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

/// A fresh request id, unique in the process until the 32-bit counter wraps.
pub fn next_request_id() -> i32 {
    NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed)
}

/// The transport half of a connection: stream, buffers, limits and the broken flag.
/// It exists before the handshake (which fills in the description).
#[derive(Debug)]
struct Transport {
    id: u64,
    address: ServerAddress,
    stream: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    limits: DecodeLimits,
    max_send_size: usize,
    compressor: Option<Compressor>,
    socket_timeout: Option<Duration>,
    /// Set before the first await of a send or receive, cleared once a complete reply
    /// was read (or a moreToCome request fully written). Still set afterwards means the
    /// stream is in an unknown state: an error happened or the future was dropped.
    broken: bool,
    /// `responseTo` the next `receive_more` reply must carry, while a moreToCome reply
    /// sequence is under way.
    more_to_come: Option<i32>,
    wire_version: Option<i32>,
}

impl Transport {
    fn io_error(&self, source: io::Error) -> ConnError {
        ConnError::Io {
            address: self.address.clone(),
            source,
            wire_version: self.wire_version,
        }
    }

    fn wire_error(&self, source: brook_wire::WireError) -> ConnError {
        ConnError::Wire {
            address: self.address.clone(),
            source,
            wire_version: self.wire_version,
        }
    }

    fn check_usable(&self) -> Result<(), ConnError> {
        if self.broken {
            return Err(ConnError::Broken {
                address: self.address.clone(),
                connection_id: self.id,
                wire_version: self.wire_version,
            });
        }
        Ok(())
    }

    /// Encodes into the write buffer; nothing is sent, so failure breaks nothing.
    fn encode(&mut self, msg: &Message) -> Result<(), ConnError> {
        let compressor = match self.compressor {
            Some(c) if msg.may_compress() => Some(c),
            _ => None,
        };
        let opts = EncodeOptions {
            checksum: false,
            compressor,
            max_message_size: self.max_send_size,
        };
        self.write_buf.clear();
        let encoded = msg.encode(&mut self.write_buf, &opts);
        if let Err(e) = encoded {
            self.write_buf.clear();
            return Err(self.wire_error(e));
        }
        Ok(())
    }

    /// Checks the state and encodes `msg`; nothing has touched the socket yet, so an
    /// error here breaks nothing.
    fn prepare(&mut self, msg: &Message) -> Result<(), ConnError> {
        self.check_usable()?;
        if self.more_to_come.is_some() {
            return Err(ConnError::InvalidState {
                connection_id: self.id,
                reason: "replies of a moreToCome sequence are still due; read them with receive_more",
            });
        }
        self.encode(msg)?;
        trace!(
            connection = self.id,
            request_id = msg.request_id,
            command = msg.command_name().unwrap_or(""),
            bytes = self.write_buf.len(),
            more_to_come = msg.flags.contains(MsgFlags::MORE_TO_COME),
            "sending"
        );
        Ok(())
    }

    /// Sends `msg` and reads the reply that answers it.
    async fn round_trip(&mut self, msg: &Message) -> Result<Message, ConnError> {
        self.prepare(msg)?;
        // From here on, anything but a complete exchange leaves the connection broken.
        self.broken = true;
        let expected = msg.request_id;
        let reply = self
            .timed(async |t: &mut Transport| {
                t.write_frame().await?;
                t.read_reply(expected).await
            })
            .await?;
        self.broken = false;
        Ok(reply)
    }

    /// Sends `msg`; reads its reply unless it carries moreToCome.
    async fn send(&mut self, msg: &Message) -> Result<Option<Message>, ConnError> {
        if !msg.flags.contains(MsgFlags::MORE_TO_COME) {
            return self.round_trip(msg).await.map(Some);
        }
        self.prepare(msg)?;
        self.broken = true;
        self.timed(async |t: &mut Transport| t.write_frame().await)
            .await?;
        self.broken = false;
        Ok(None)
    }

    /// Reads the next reply of a moreToCome sequence.
    async fn receive_more(&mut self) -> Result<Message, ConnError> {
        self.check_usable()?;
        let Some(expected) = self.more_to_come else {
            return Err(ConnError::InvalidState {
                connection_id: self.id,
                reason: "no moreToCome reply sequence is under way",
            });
        };
        self.broken = true;
        let reply = self
            .timed(async |t: &mut Transport| t.read_reply(expected).await)
            .await?;
        self.broken = false;
        Ok(reply)
    }

    /// Runs one exchange under the socket timeout.
    async fn timed<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Transport) -> Result<T, ConnError>,
    ) -> Result<T, ConnError> {
        match self.socket_timeout {
            None => f(self).await,
            Some(limit) if limit.is_zero() => f(self).await,
            Some(limit) => {
                let (address, wire_version) = (self.address.clone(), self.wire_version);
                match tokio::time::timeout(limit, f(self)).await {
                    Ok(result) => result,
                    Err(_) => Err(ConnError::Timeout {
                        address,
                        operation: "operation",
                        after: limit,
                        wire_version,
                    }),
                }
            }
        }
    }

    async fn write_frame(&mut self) -> Result<(), ConnError> {
        let written = async {
            self.stream.write_all(&self.write_buf).await?;
            self.stream.flush().await
        }
        .await;
        written.map_err(|e| self.io_error(e))?;
        if self.write_buf.capacity() > KEEP_BUFFER {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Reads one frame that must answer `expected`, and notes whether more follow.
    async fn read_reply(&mut self, expected: i32) -> Result<Message, ConnError> {
        let decoded = self.read_frame().await?;
        let reply = decoded.message;
        if reply.response_to != expected {
            return Err(ConnError::ResponseToMismatch {
                address: self.address.clone(),
                expected,
                actual: reply.response_to,
                wire_version: self.wire_version,
            });
        }
        // In a moreToCome sequence each reply answers the one before it.
        self.more_to_come = reply
            .flags
            .contains(MsgFlags::MORE_TO_COME)
            .then_some(reply.request_id);
        trace!(
            connection = self.id,
            request_id = reply.request_id,
            response_to = reply.response_to,
            bytes = decoded.header.message_length,
            compressor = decoded.compressor.map(|c| c.name()),
            more_to_come = self.more_to_come.is_some(),
            "received"
        );
        Ok(reply)
    }

    async fn read_frame(&mut self) -> Result<brook_wire::Decoded, ConnError> {
        loop {
            match brook_wire::decode(&mut self.read_buf, &self.limits) {
                Ok(Some(decoded)) => {
                    if self.read_buf.is_empty() && self.read_buf.capacity() > KEEP_BUFFER {
                        self.read_buf = BytesMut::new();
                    }
                    return Ok(decoded);
                }
                Ok(None) => {}
                Err(e) => return Err(self.wire_error(e)),
            }
            // `decode` has checked a complete header's declared length against the
            // limit, so reserving the rest of the frame is bounded.
            let wanted = brook_wire::peek_header(&self.read_buf)
                .and_then(|h| usize::try_from(h.message_length).ok())
                .map_or(MIN_READ, |len| {
                    len.saturating_sub(self.read_buf.len()).max(MIN_READ)
                });
            self.read_buf.reserve(wanted);
            let n = match self.stream.read_buf(&mut self.read_buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(self.io_error(e)),
            };
            if n == 0 {
                return Err(ConnError::Closed {
                    address: self.address.clone(),
                    mid_message: !self.read_buf.is_empty(),
                    wire_version: self.wire_version,
                });
            }
        }
    }
}

/// One open connection to one server: a TCP or TLS stream, its read and write buffers,
/// and what the hello handshake told about the server.
///
/// See the [crate docs](crate) for how it is used, when it breaks, and what happens when a
/// future is dropped.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    description: StreamDescription,
}

impl Connection {
    /// Opens a connection: resolves the address, connects over TCP (then TLS), and runs
    /// the hello handshake, offering `opts.compressors`.
    ///
    /// Resolution, each TCP attempt, the TLS handshake and the hello are each bounded by
    /// `opts.connect_timeout`. A server that refuses the hello (`ok: 0`) or answers with a
    /// malformed reply yields [`ConnError::Handshake`].
    pub async fn connect(
        address: &ServerAddress,
        opts: &ConnectionOptions,
    ) -> Result<Connection, ConnError> {
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        debug!(connection = id, server = %address, tls = opts.tls.is_some(), "opening connection");
        let stream = stream::connect(address, opts).await?;
        let mut transport = Transport {
            id,
            address: address.clone(),
            stream,
            read_buf: BytesMut::with_capacity(MIN_READ),
            write_buf: BytesMut::with_capacity(MIN_READ),
            limits: DecodeLimits {
                max_message_size: opts.max_message_size,
            },
            max_send_size: opts.max_message_size,
            compressor: None,
            // The hello is bounded by the connect timeout, not the socket timeout.
            socket_timeout: (!opts.connect_timeout.is_zero()).then_some(opts.connect_timeout),
            broken: false,
            more_to_come: None,
            wire_version: None,
        };

        let mut hello = handshake_command(opts);
        let mut hello_reply = handshake(&mut transport, &hello).await;
        if let Err(ConnError::Handshake { source, .. }) = &hello_reply
            && source.code() == Some(COMMAND_NOT_FOUND)
        {
            // Servers before 4.4.2 do not know `hello`: ask again by the legacy name.
            debug!(connection = id, server = %address, "hello unknown, retrying as isMaster");
            hello.legacy_name = true;
            hello_reply = handshake(&mut transport, &hello).await;
        }
        let hello_reply = hello_reply?;
        let description =
            StreamDescription::from_hello(address.clone(), hello_reply, &opts.compressors);

        transport.wire_version = Some(description.max_wire_version);
        transport.limits = DecodeLimits {
            max_message_size: description.max_message_size_bytes,
        };
        transport.max_send_size = description.max_message_size_bytes;
        transport.compressor = description.compressor;
        transport.socket_timeout = opts.socket_timeout;
        debug!(
            connection = id,
            server = %address,
            kind = ?description.server_kind,
            min_wire_version = description.min_wire_version,
            max_wire_version = description.max_wire_version,
            compressor = description.compressor.map(|c| c.name()),
            "handshake done"
        );
        Ok(Connection {
            transport,
            description,
        })
    }

    /// What the handshake told about the server.
    pub fn description(&self) -> &StreamDescription {
        &self.description
    }

    /// The server this connection talks to.
    pub fn address(&self) -> &ServerAddress {
        &self.transport.address
    }

    /// This connection's id, unique within the process (for logs and pools).
    pub fn id(&self) -> u64 {
        self.transport.id
    }

    /// True once an IO or decode error, a timeout, a `responseTo` mismatch or a dropped
    /// send/receive future left the stream in an unknown state. A broken connection
    /// refuses every further operation with [`ConnError::Broken`] and must be discarded.
    pub fn is_broken(&self) -> bool {
        self.transport.broken
    }

    /// True while replies of a moreToCome sequence are still due: only
    /// [`receive_more`](Connection::receive_more) may be called (a pool must not hand the
    /// connection to another user in this state).
    pub fn has_more_to_come(&self) -> bool {
        self.transport.more_to_come.is_some()
    }

    /// True when the stream is TLS.
    pub fn is_tls(&self) -> bool {
        self.transport.stream.is_tls()
    }

    /// The limit for each later send-and-receive (`None`: none).
    pub fn socket_timeout(&self) -> Option<Duration> {
        self.transport.socket_timeout
    }

    /// Changes the limit for each later send-and-receive (`None` or zero: none).
    pub fn set_socket_timeout(&mut self, timeout: Option<Duration>) {
        self.transport.socket_timeout = timeout;
    }

    /// Runs a command on database `db` and parses its reply.
    ///
    /// A reply with `ok: 0` comes back as [`ConnError::Command`] holding
    /// [`CommandError::Server`]; the reply was read in full, so the connection stays
    /// usable. Network and protocol errors break it.
    pub async fn run<C: Command>(&mut self, db: &str, cmd: &C) -> Result<C::Output, ConnError> {
        self.transport.check_usable()?;
        let body = cmd.build(db).map_err(|e| self.command_error(e))?;
        let reply = self.run_body(body).await?;
        cmd.handle_reply(reply).map_err(|e| self.command_error(e))
    }

    /// Sends a command body already serialised (command name first, `$db` included) and
    /// returns its raw reply, like [`run_body`](Connection::run_body). For a command sent
    /// again and again unchanged (a cursor's `getMore`): the body is built once and only
    /// the frame is written per call.
    pub async fn run_serialized(&mut self, body: SharedDoc) -> Result<Reply, ConnError> {
        self.transport.check_usable()?;
        let message = Message::command(next_request_id(), body);
        self.transport.round_trip(&message).await.map(Reply::from)
    }

    /// Sends a command body and returns its raw reply. `ok: 0` is **not** an error here:
    /// the caller inspects the reply (e.g. with [`brook_command::check_ok`]).
    pub async fn run_body(&mut self, body: CommandBody) -> Result<Reply, ConnError> {
        self.transport.check_usable()?;
        let message = body
            .into_message(next_request_id())
            .map_err(|e| self.command_error(e))?;
        self.transport.round_trip(&message).await.map(Reply::from)
    }

    /// Sends a message (give it a fresh id from [`next_request_id`]) and reads the reply
    /// that answers it. A message flagged `MORE_TO_COME` gets no reply: `Ok(None)` once
    /// it is written.
    ///
    /// The message is compressed with the negotiated compressor unless
    /// [`brook_wire::may_compress`] says its command must not be. If the reply is flagged
    /// moreToCome, further replies follow: read them with
    /// [`receive_more`](Connection::receive_more) until one is not flagged.
    ///
    /// Errors: a message too large to encode is [`ConnError::Wire`] and breaks nothing;
    /// IO, decode, timeout, `responseTo` mismatch and a closed peer break the connection.
    pub async fn send(&mut self, msg: &Message) -> Result<Option<Message>, ConnError> {
        self.transport.send(msg).await
    }

    /// Reads the next reply of a moreToCome sequence (the previous reply was flagged
    /// moreToCome). Bounded by the socket timeout like [`send`](Connection::send).
    pub async fn receive_more(&mut self) -> Result<Message, ConnError> {
        self.transport.receive_more().await
    }

    /// Closes the stream politely (TLS close_notify, TCP FIN). Dropping the connection
    /// also closes it, only abruptly.
    pub async fn close(mut self) {
        let stream = &mut self.transport.stream;
        if let Err(e) = stream.shutdown().await {
            debug!(connection = self.transport.id, error = %e, "shutdown failed");
        }
    }

    fn command_error(&self, source: CommandError) -> ConnError {
        ConnError::Command {
            source: Box::new(source),
            wire_version: self.transport.wire_version,
        }
    }
}

/// The server's code for an unknown command.
const COMMAND_NOT_FOUND: i32 = 59;

/// Runs one handshake hello on a fresh transport.
async fn handshake(transport: &mut Transport, hello: &Hello) -> Result<HelloReply, ConnError> {
    let address = transport.address.clone();
    let failed = |source| ConnError::Handshake {
        address: address.clone(),
        source: Box::new(source),
    };
    let message = hello
        .build("admin")
        .and_then(|body| body.into_message(next_request_id()))
        .map_err(failed)?;
    let reply = match transport.round_trip(&message).await {
        Ok(reply) => reply,
        Err(ConnError::Timeout { after, .. }) => {
            return Err(ConnError::Timeout {
                address,
                operation: "handshake",
                after,
                wire_version: None,
            });
        }
        Err(e) => return Err(e),
    };
    if transport.more_to_come.is_some() {
        // Unasked-for streaming: the stream's state is not one we can continue from.
        transport.broken = true;
        return Err(failed(CommandError::Invalid(
            "the hello reply was flagged moreToCome".to_owned(),
        )));
    }
    hello.handle_reply(Reply::from(reply)).map_err(failed)
}

/// The hello that opens every connection.
fn handshake_command(opts: &ConnectionOptions) -> Hello {
    let mut metadata = ClientMetadata::new();
    metadata.application_name = opts.app_name.clone();
    let mut hello = Hello::new();
    hello.client_metadata = Some(metadata);
    hello.compression = opts
        .compressors
        .iter()
        .filter(|c| c.is_available())
        .map(|c| c.name().to_owned())
        .collect();
    hello.load_balanced = opts.load_balanced;
    hello
}
