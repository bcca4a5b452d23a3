//! One connection: send a message, read its reply, keep the buffers, know when it broke.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use brook_command::{ClientMetadata, Command, CommandBody, CommandError, Hello, HelloReply, Reply};
use brook_wire::{Compressor, DecodeLimits, EncodeOptions, Message, MsgFlags, SharedDoc};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, trace};

use crate::description::StreamDescription;
use crate::error::ConnError;
use crate::options::ConnectionOptions;
use crate::stream::{self, Stream};
use brook_command::ServerAddress;

/// Process-wide source of request ids.
static NEXT_REQUEST_ID: AtomicI32 = AtomicI32::new(1);
/// Process-wide source of connection ids.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The smallest read: enough for a header and a small reply in one go.
const MIN_READ: usize = 8 * 1024;
/// How far the read buffer may grow ahead of the bytes that have arrived. A frame's
/// declared length is only a claim: the buffer grows only when it is nearly full (less
/// than `MIN_READ` free), and then by at most the larger of `READ_STEP` and the bytes
/// already received of the frame, so it at most doubles per step, like a `Vec`, and never
/// holds much more than twice what arrived. A peer that declares 40 MB and sends 100
/// bytes costs `READ_STEP`; a legitimate large frame costs O(log(size / READ_STEP))
/// reallocations, each copying at most what has arrived: about one extra copy of the
/// frame in all (less where `realloc` can grow in place).
const READ_STEP: usize = 64 * 1024;
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
    /// The decode limit: the client's cap (`ConnectionOptions::max_message_size`), lowered
    /// to the server's `maxMessageSizeBytes` after the handshake.
    limits: DecodeLimits,
    /// The encode limit: the client's cap before the handshake, the server's
    /// `maxMessageSizeBytes` after it.
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
        if let Err(source) = encoded {
            self.write_buf.clear();
            return Err(ConnError::Encode {
                address: self.address.clone(),
                source,
                wire_version: self.wire_version,
            });
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

    /// Sends `msg` and reads the reply that answers it, the exchange bounded by `limit`
    /// (see [`Transport::timed`]).
    async fn round_trip(
        &mut self,
        msg: &Message,
        limit: Option<Duration>,
    ) -> Result<Message, ConnError> {
        self.prepare(msg)?;
        if limit.is_some_and(|l| l.is_zero()) {
            // An expired deadline: nothing was sent, the connection is as it was.
            return Err(self.timeout_error(Duration::ZERO));
        }
        // From here on, anything but a complete exchange leaves the connection broken.
        self.broken = true;
        let expected = msg.request_id;
        let exhaust_allowed = msg.flags.contains(MsgFlags::EXHAUST_ALLOWED);
        let limit = limit.or(self.socket_timeout);
        let reply = self
            .timed(limit, async |t: &mut Transport| {
                t.write_frame().await?;
                t.read_reply(expected, exhaust_allowed).await
            })
            .await?;
        self.broken = false;
        Ok(reply)
    }

    /// Sends `msg`; reads its reply unless it carries moreToCome.
    async fn send(&mut self, msg: &Message) -> Result<Option<Message>, ConnError> {
        if !msg.flags.contains(MsgFlags::MORE_TO_COME) {
            return self.round_trip(msg, None).await.map(Some);
        }
        self.prepare(msg)?;
        self.broken = true;
        self.timed(self.socket_timeout, async |t: &mut Transport| {
            t.write_frame().await
        })
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
        // The sequence was asked for: the request that started it allowed exhaust.
        let reply = self
            .timed(self.socket_timeout, async |t: &mut Transport| {
                t.read_reply(expected, true).await
            })
            .await?;
        self.broken = false;
        Ok(reply)
    }

    /// Runs one exchange (every read and write in it) under `limit`; `None` or zero: no
    /// limit. Nothing is allocated unless the limit is hit.
    async fn timed<T>(
        &mut self,
        limit: Option<Duration>,
        f: impl AsyncFnOnce(&mut Transport) -> Result<T, ConnError>,
    ) -> Result<T, ConnError> {
        match limit {
            Some(limit) if !limit.is_zero() => match tokio::time::timeout(limit, f(self)).await {
                Ok(result) => result,
                Err(_) => Err(self.timeout_error(limit)),
            },
            _ => f(self).await,
        }
    }

    fn timeout_error(&self, after: Duration) -> ConnError {
        ConnError::Timeout {
            address: self.address.clone(),
            operation: "operation",
            after,
            wire_version: self.wire_version,
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

    /// Reads one frame that must answer `expected`, and notes whether more follow. A reply
    /// flagged moreToCome is refused unless `exhaust_allowed` (the request asked for it).
    async fn read_reply(
        &mut self,
        expected: i32,
        exhaust_allowed: bool,
    ) -> Result<Message, ConnError> {
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
        let more_to_come = reply.flags.contains(MsgFlags::MORE_TO_COME);
        if more_to_come && !exhaust_allowed {
            // The server would keep streaming replies to a request that expects one: the
            // stream is of no use for anything else. `broken` stays set.
            return Err(ConnError::UnexpectedMoreToCome {
                address: self.address.clone(),
                response_to: reply.response_to,
                wire_version: self.wire_version,
            });
        }
        // In a moreToCome sequence each reply answers the one before it.
        self.more_to_come = more_to_come.then_some(reply.request_id);
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
            // `decode` has checked a declared length against the limit; even so the buffer
            // grows with the bytes that arrive, not with the claim (see `READ_STEP`). It
            // grows only once nearly full, so that each growth follows bytes received.
            let have = self.read_buf.len();
            if self.read_buf.capacity().saturating_sub(have) < MIN_READ {
                let wanted = brook_wire::peek_header(&self.read_buf)
                    .and_then(|h| usize::try_from(h.message_length).ok())
                    .map_or(MIN_READ, |len| {
                        len.saturating_sub(have)
                            .min(have.max(READ_STEP))
                            .max(MIN_READ)
                    });
                self.read_buf.reserve(wanted);
            }
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
            limits: DecodeLimits::new(opts.max_message_size),
            max_send_size: opts.max_message_size,
            compressor: None,
            // The hello is bounded by the connect timeout, not the socket timeout.
            socket_timeout: (!opts.connect_timeout.is_zero()).then_some(opts.connect_timeout),
            broken: false,
            more_to_come: None,
            wire_version: None,
        };

        let mut hello = handshake_command(opts);
        // Authentication: saslSupportedMechs and speculativeAuthenticate ride in the hello.
        let pending_auth = match &opts.credential {
            Some(credential) => Some(crate::auth::prepare(address, credential, &mut hello)?),
            None => None,
        };
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
        if opts.load_balanced && hello_reply.service_id.is_none() {
            // Load Balancer specification: without a serviceId the deployment is not
            // behind a load balancer that supports this mode.
            return Err(ConnError::Handshake {
                address: address.clone(),
                source: Box::new(brook_command::CommandError::MalformedReply {
                    command: "hello",
                    reason: "loadBalanced=true, but the reply has no serviceId: the \
                             deployment is not behind a load balancer that supports \
                             load-balanced mode"
                        .to_owned(),
                }),
            });
        }
        let speculative_reply = hello_reply
            .speculative_authenticate
            .as_ref()
            .and_then(|d| d.to_document().ok());
        let sasl_supported_mechs = hello_reply.sasl_supported_mechs.clone();
        let description =
            StreamDescription::from_hello(address.clone(), hello_reply, &opts.compressors);

        transport.wire_version = Some(description.max_wire_version);
        // The client's cap stays in force: a server advertising 2 GB does not make us
        // accept 2 GB frames.
        transport.limits = DecodeLimits::new(
            opts.max_message_size
                .min(description.max_message_size_bytes),
        );
        transport.max_send_size = description.max_message_size_bytes;
        transport.compressor = description.compressor;
        if let (Some(credential), Some(pending)) = (&opts.credential, pending_auth) {
            // Still bounded by the connect timeout, like the hello.
            let (mut auth, mut step) = crate::auth::start(
                address,
                credential,
                pending,
                speculative_reply,
                sasl_supported_mechs.as_deref(),
            )?;
            loop {
                match step {
                    brook_auth::Step::Done => break,
                    brook_auth::Step::Continue(mut command) => {
                        command.insert("$db", auth.source().to_owned());
                        let reply = auth_command(&mut transport, command).await?;
                        step = crate::auth::next(address, credential, &mut auth, &reply)?;
                    }
                }
            }
            debug!(connection = id, server = %address, "authenticated");
        }
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

    /// True once an IO or decode error, a timeout, a `responseTo` mismatch, an unasked-for
    /// moreToCome reply or a dropped send/receive future left the stream in an unknown
    /// state. A broken connection refuses every further operation with
    /// [`ConnError::Broken`] and must be discarded.
    pub fn is_broken(&self) -> bool {
        self.transport.broken
    }

    /// The read buffer's current capacity in bytes: for tests that check a peer declaring
    /// a large frame cannot make the connection allocate it before the bytes arrive.
    #[doc(hidden)]
    pub fn read_buffer_capacity(&self) -> usize {
        self.transport.read_buf.capacity()
    }

    /// The largest reply frame this connection accepts: the smaller of
    /// [`ConnectionOptions::max_message_size`] and the server's `maxMessageSizeBytes`.
    pub fn max_reply_size(&self) -> usize {
        self.transport.limits.max_message_size
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
        self.run_serialized_within(body, None).await
    }

    /// [`run_serialized`](Connection::run_serialized) with a limit of its own for this
    /// exchange (the write of the request and the read of its reply).
    ///
    /// * `Some(limit)` bounds the exchange **instead of** the socket timeout (longer or
    ///   shorter): e.g. a change stream's `getMore` waits `maxAwaitTimeMS` plus a grace
    ///   period, whatever `socketTimeoutMS` says.
    /// * `Some(Duration::ZERO)` is a deadline already passed: [`ConnError::Timeout`] at
    ///   once, nothing is sent and the connection is left as it was (not broken).
    /// * `None`: the socket timeout applies, as in `run_serialized`.
    ///
    /// When the limit expires mid-exchange the result is [`ConnError::Timeout`]
    /// (`operation: "operation"`, `after` the limit) and the connection is broken.
    pub fn run_serialized_within(
        &mut self,
        body: SharedDoc,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<Reply, ConnError>> + Send + '_ {
        // Not an `async fn` around the other: one future, not one inside another.
        self.run_serialized_as(next_request_id(), body, limit)
    }

    /// [`run_serialized_within`](Connection::run_serialized_within) under a request id the
    /// caller took from [`next_request_id`] (to name the command in its logs and
    /// monitoring events before it is sent).
    pub async fn run_serialized_as(
        &mut self,
        request_id: i32,
        body: SharedDoc,
        limit: Option<Duration>,
    ) -> Result<Reply, ConnError> {
        self.transport.check_usable()?;
        let message = Message::command(request_id, body);
        self.transport
            .round_trip(&message, limit)
            .await
            .map(Reply::from)
    }

    /// Sends a command body and returns its raw reply. `ok: 0` is **not** an error here:
    /// the caller inspects the reply (e.g. with [`brook_command::check_ok`]).
    pub async fn run_body(&mut self, body: CommandBody) -> Result<Reply, ConnError> {
        self.run_body_within(body, None).await
    }

    /// [`run_body`](Connection::run_body) with a limit of its own for this exchange,
    /// exactly as [`run_serialized_within`](Connection::run_serialized_within): `Some`
    /// replaces the socket timeout, `Some(Duration::ZERO)` fails at once with
    /// [`ConnError::Timeout`] without sending or breaking anything, `None` keeps the
    /// socket timeout.
    pub fn run_body_within(
        &mut self,
        body: CommandBody,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<Reply, ConnError>> + Send + '_ {
        // Not an `async fn` around the other: one future, not one inside another.
        self.run_body_as(next_request_id(), body, limit)
    }

    /// [`run_body_within`](Connection::run_body_within) under a request id the caller took
    /// from [`next_request_id`] (to name the command in its logs and monitoring events
    /// before it is sent).
    pub async fn run_body_as(
        &mut self,
        request_id: i32,
        body: CommandBody,
        limit: Option<Duration>,
    ) -> Result<Reply, ConnError> {
        self.transport.check_usable()?;
        let message = body
            .into_message(request_id)
            .map_err(|e| self.command_error(e))?;
        self.transport
            .round_trip(&message, limit)
            .await
            .map(Reply::from)
    }

    /// Sends a message (give it a fresh id from [`next_request_id`]) and reads the reply
    /// that answers it. A message flagged `MORE_TO_COME` gets no reply: `Ok(None)` once
    /// it is written.
    ///
    /// The message is compressed with the negotiated compressor unless
    /// [`brook_wire::may_compress`] says its command must not be. A reply may be flagged
    /// moreToCome only when the message set [`MsgFlags::EXHAUST_ALLOWED`]; then further
    /// replies follow: read them with [`receive_more`](Connection::receive_more) until one
    /// is not flagged. Without `EXHAUST_ALLOWED` such a reply is
    /// [`ConnError::UnexpectedMoreToCome`].
    ///
    /// Errors: a message too large to encode is [`ConnError::Encode`] and breaks nothing;
    /// IO, decode, timeout, `responseTo` mismatch, an unasked-for moreToCome reply and a
    /// closed peer break the connection.
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
    // The transport's socket timeout is the connect timeout until the handshake is done.
    let reply = match transport.round_trip(&message, None).await {
        Ok(reply) => reply,
        Err(ConnError::Timeout { after, .. }) => {
            return Err(ConnError::Timeout {
                address,
                operation: "handshake",
                after,
                wire_version: None,
            });
        }
        Err(ConnError::Wire { source, .. }) if text_instead_of_a_frame(&source).is_some() => {
            // The "length" of the first reply is text: an HTTP server, an SMTP banner...
            let text = text_instead_of_a_frame(&source).unwrap_or_default();
            return Err(failed(brook_command::CommandError::MalformedReply {
                command: "hello",
                reason: format!(
                    "the peer is not a MongoDB server: its reply starts with the text \
                     {text:?} (an HTTP server, or another protocol, on this port?)"
                ),
            }));
        }
        Err(e) => return Err(e),
    };
    // A hello reply flagged moreToCome was refused by `round_trip` (the hello does not
    // allow exhaust) as `UnexpectedMoreToCome`.
    hello.handle_reply(Reply::from(reply)).map_err(failed)
}

/// The first four bytes of a reply, when the decoder refused its declared length and
/// those bytes are printable text (`"HTTP"` reads as a length of 1,347,703,880): the peer
/// speaks another protocol.
fn text_instead_of_a_frame(error: &brook_wire::WireError) -> Option<String> {
    use brook_wire::WireError;
    let raw = match error {
        WireError::MessageTooLarge { len, .. } | WireError::MessageTooShort { len } => {
            u32::try_from(*len).ok()?
        }
        WireError::NegativeMessageLength { len } => u32::from_le_bytes(len.to_le_bytes()),
        _ => return None,
    };
    let bytes = raw.to_le_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ')
        .then(|| bytes.iter().map(|&b| char::from(b)).collect())
}

/// Sends one authentication command (body with `$db`) and returns its reply body; `ok: 0`
/// is for the conversation to judge.
async fn auth_command(
    transport: &mut Transport,
    body: bson::Document,
) -> Result<bson::Document, ConnError> {
    let address = transport.address.clone();
    let failed = |source| ConnError::Handshake {
        address: address.clone(),
        source: Box::new(source),
    };
    let message = brook_command::CommandBody::new(body)
        .into_message(next_request_id())
        .map_err(failed)?;
    let reply = transport.round_trip(&message, None).await?;
    reply.body.to_document().map_err(|e| {
        failed(CommandError::MalformedReply {
            command: "saslContinue",
            reason: e.to_string(),
        })
    })
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
