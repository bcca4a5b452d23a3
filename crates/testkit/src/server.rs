//! The fake server: listener, connections, recording, scripting and default replies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brook_wire::{Compressor, DecodeLimits, Decoded, EncodeOptions, Message, MsgFlags, SharedDoc};
use bson::oid::ObjectId;
use bson::{Bson, Document, Timestamp, doc};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::TestkitError;
use crate::action::{Action, Fault, Handler};
use crate::frame::{self, FaultPlan};
use crate::listen::{Listening, lock};
use crate::record::{DecodeFailure, ReceivedCommand, ReceivedSequence};
use crate::replset::{AwaitHello, MemberLink};
use crate::shapes::{self, BatchKind, HelloOptions, Topology};
use crate::tls::TlsServer;

/// How a [`FakeServer`] presents itself and what it accepts.
///
/// The [`Default`] is a MongoDB 7.0 replica-set primary of the set `rs0`, with no
/// compression, no reply checksums, a 48,000,000-byte request limit and no handler.
#[derive(Clone)]
pub struct ServerConfig {
    /// What hello/isMaster replies say (topology, wire versions, sizes, compressors…).
    pub hello: HelloOptions,
    /// The largest request frame the server decodes; a larger declared length is recorded
    /// as a [`DecodeFailure`] and closes the connection.
    pub max_message_size: usize,
    /// Whether the server's replies carry a CRC-32C checksum.
    pub checksum_replies: bool,
    /// Longest wait of the default getMore on an open change-stream cursor (the server
    /// waits the request's `maxTimeMS`, capped by this, before its empty batch).
    pub max_await: Duration,
    /// The handler for requests no queued action claimed.
    pub handler: Option<Arc<dyn Handler>>,
    /// Serve TLS (the server's certificate, versions and client-certificate policy) instead
    /// of plain TCP; keep a clone to read its handshakes.
    pub tls: Option<Arc<TlsServer>>,
    /// Users and authentication behaviour; with it, commands other than the handshake
    /// and authentication are refused until the connection authenticated. Keep a clone
    /// to read which connections authenticated.
    pub auth: Option<Arc<crate::auth::AuthServer>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hello: HelloOptions::default(),
            max_message_size: brook_wire::DEFAULT_MAX_MESSAGE_SIZE,
            checksum_replies: false,
            max_await: Duration::from_millis(1000),
            handler: None,
            tls: None,
            auth: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("hello", &self.hello)
            .field("max_message_size", &self.max_message_size)
            .field("checksum_replies", &self.checksum_replies)
            .field("max_await", &self.max_await)
            .field("handler", &self.handler.as_ref().map(|_| "<handler>"))
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish()
    }
}

impl ServerConfig {
    /// A MongoDB 7.0 primary of the replica set `set_name`.
    pub fn replica_set(set_name: impl Into<String>) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.hello.topology = Topology::replica_set(set_name);
        config
    }

    /// A load balancer in front of `services` MongoDB 7.0 mongoses (at least one): a hello
    /// with `loadBalanced: true` gets a `serviceId`, a new one per connection in turn.
    pub fn load_balancer(services: usize) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.hello.topology = Topology::Mongos;
        config.hello.service_ids = (0..services.max(1)).map(|_| ObjectId::new()).collect();
        config
    }

    /// A MongoDB 7.0 standalone server.
    pub fn standalone() -> ServerConfig {
        let mut config = ServerConfig::default();
        config.hello.topology = Topology::Standalone;
        config
    }

    /// Set the topology.
    pub fn with_topology(mut self, topology: Topology) -> ServerConfig {
        self.hello.topology = topology;
        self
    }

    /// Set `maxWireVersion` (e.g. [`shapes::WIRE_VERSION_4_2`] = 8, 21, 25).
    pub fn with_max_wire_version(mut self, version: i32) -> ServerConfig {
        self.hello.max_wire_version = version;
        self
    }

    /// Set the compressors the server supports (`"snappy"`, `"zlib"`, `"zstd"`), in the
    /// server's order of preference.
    pub fn with_compression<I, S>(mut self, names: I) -> ServerConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hello.compression = names.into_iter().map(Into::into).collect();
        self
    }

    /// Make every reply carry a CRC-32C checksum.
    pub fn with_checksum_replies(mut self, on: bool) -> ServerConfig {
        self.checksum_replies = on;
        self
    }

    /// Set the request size limit.
    pub fn with_max_message_size(mut self, max: usize) -> ServerConfig {
        self.max_message_size = max;
        self
    }

    /// Set the handler.
    pub fn with_handler(mut self, handler: impl Handler) -> ServerConfig {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Require authentication with these users (see [`crate::AuthConfig`]).
    pub fn with_auth(mut self, auth: crate::auth::AuthConfig) -> ServerConfig {
        self.auth = Some(Arc::new(crate::auth::AuthServer::new(auth)));
        self
    }
}

/// State shared by the listener, the connections and the [`FakeServer`] handle.
struct Shared {
    config: ServerConfig,
    handler: Mutex<Option<Arc<dyn Handler>>>,
    queues: Mutex<HashMap<String, VecDeque<Action>>>,
    commands: Mutex<Vec<ReceivedCommand>>,
    failures: Mutex<Vec<DecodeFailure>>,
    open_cursors: Mutex<HashSet<i64>>,
    recorded: Notify,
    accepted: AtomicU64,
    open: AtomicUsize,
    next_reply_id: AtomicI32,
    next_cursor_id: AtomicI64,
    clock_base: u32,
    clock_increment: AtomicU32,
    /// The replica-set member this server plays, if it is one ([`crate::ReplicaSet`]).
    member: Option<MemberLink>,
}

impl Shared {
    fn tick(&self) -> Timestamp {
        let increment = self
            .clock_increment
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        Timestamp {
            time: self.clock_base,
            increment,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp {
            time: self.clock_base,
            increment: self.clock_increment.load(Ordering::Relaxed),
        }
    }

    fn reply_id(&self) -> i32 {
        self.next_reply_id.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, cmd: ReceivedCommand) {
        lock(&self.commands).push(cmd);
        self.recorded.notify_waiters();
    }

    fn fail(&self, connection_id: u64, message: String) {
        lock(&self.failures).push(DecodeFailure {
            connection_id,
            message,
        });
        self.recorded.notify_waiters();
    }

    fn choose(&self, cmd: &ReceivedCommand) -> Action {
        if let Some(action) = lock(&self.queues)
            .get_mut(&cmd.name)
            .and_then(VecDeque::pop_front)
        {
            return action;
        }
        let handler = lock(&self.handler).clone();
        match handler {
            Some(h) => h.handle(cmd),
            None => Action::Default,
        }
    }
}

/// An in-process fake MongoDB server on `127.0.0.1` (a port the OS picks).
///
/// It speaks OP_MSG (and OP_COMPRESSED with the compressors it is configured for), answers
/// with MongoDB 7/8 reply shapes, records every command it receives, and does what its
/// script says: see [`Action`] and [`Fault`]. Dropping it (or [`FakeServer::shutdown`])
/// stops the listener and closes every connection.
pub struct FakeServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// `None` while stopped (a replica-set member killed and not restarted yet).
    tasks: Mutex<Option<Listening>>,
}

impl fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .field("connections_accepted", &self.connections_accepted())
            .finish_non_exhaustive()
    }
}

impl FakeServer {
    /// Bind `127.0.0.1:0` and start serving. Must be called inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<FakeServer, TestkitError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(TestkitError::Bind)?;
        FakeServer::serve(listener, config, None)
    }

    /// Start serving `listener` as the replica-set member `member`.
    pub(crate) fn start_member(
        listener: TcpListener,
        config: ServerConfig,
        member: MemberLink,
    ) -> Result<FakeServer, TestkitError> {
        FakeServer::serve(listener, config, Some(member))
    }

    fn serve(
        listener: TcpListener,
        config: ServerConfig,
        member: Option<MemberLink>,
    ) -> Result<FakeServer, TestkitError> {
        let addr = listener.local_addr().map_err(TestkitError::Bind)?;
        let mut config = config;
        if config.hello.me.is_empty() {
            config.hello.me = addr.to_string();
        }
        let clock_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(1_700_000_000);
        let handler = config.handler.clone();
        let shared = Arc::new(Shared {
            config,
            handler: Mutex::new(handler),
            queues: Mutex::new(HashMap::new()),
            commands: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            open_cursors: Mutex::new(HashSet::new()),
            recorded: Notify::new(),
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            next_reply_id: AtomicI32::new(1),
            next_cursor_id: AtomicI64::new(0x0001_0000_0000_0001),
            clock_base,
            clock_increment: AtomicU32::new(1),
            member,
        });
        let tasks = listen(listener, &shared);
        Ok(FakeServer {
            shared,
            addr,
            tasks: Mutex::new(Some(tasks)),
        })
    }

    /// Listen again on the same address after [`FakeServer::shutdown`] (a replica-set
    /// member's restart): records, queues and the handler are kept. Does nothing if the
    /// server is listening.
    pub(crate) async fn relisten(&self) -> Result<(), TestkitError> {
        if lock(&self.tasks).is_some() {
            return Ok(());
        }
        let listener = crate::replset::bind_reusing(self.addr).await?;
        let tasks = listen(listener, &self.shared);
        *lock(&self.tasks) = Some(tasks);
        Ok(())
    }

    /// Whether the server is listening (not shut down).
    pub(crate) fn is_listening(&self) -> bool {
        lock(&self.tasks).is_some()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:<port>"`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `mongodb://127.0.0.1:<port>/`.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/", self.addr)
    }

    /// The configuration the server runs with (with `hello.me` filled in).
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Every command received so far, in the order received (across all connections).
    pub fn commands(&self) -> Vec<ReceivedCommand> {
        lock(&self.shared.commands).clone()
    }

    /// The commands received so far whose name is `name`.
    pub fn commands_named(&self, name: &str) -> Vec<ReceivedCommand> {
        lock(&self.shared.commands)
            .iter()
            .filter(|c| c.name == name)
            .cloned()
            .collect()
    }

    /// Forget the commands recorded so far.
    pub fn clear_commands(&self) {
        lock(&self.shared.commands).clear();
    }

    /// Every frame the server could not decode (each closed its connection).
    pub fn decode_failures(&self) -> Vec<DecodeFailure> {
        lock(&self.shared.failures).clone()
    }

    /// How many connections the server has accepted.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The server's latest cluster time (each reply of a replica set advances it).
    pub fn cluster_time(&self) -> Timestamp {
        self.shared.now()
    }

    /// Queue `action` for the next request named `name` (e.g. `"getMore"`). Queued actions
    /// are used in order, one per request, before the handler is asked.
    pub fn push_action(&self, name: &str, action: impl Into<Action>) {
        lock(&self.shared.queues)
            .entry(name.to_owned())
            .or_default()
            .push_back(action.into());
    }

    /// Queue several actions for the next requests named `name`, in order.
    pub fn push_actions<I>(&self, name: &str, actions: I)
    where
        I: IntoIterator,
        I::Item: Into<Action>,
    {
        lock(&self.shared.queues)
            .entry(name.to_owned())
            .or_default()
            .extend(actions.into_iter().map(Into::into));
    }

    /// How many queued actions for `name` are still unused.
    pub fn queued(&self, name: &str) -> usize {
        lock(&self.shared.queues).get(name).map_or(0, VecDeque::len)
    }

    /// Replace the handler.
    pub fn set_handler(&self, handler: impl Handler) {
        *lock(&self.shared.handler) = Some(Arc::new(handler));
    }

    /// Remove the handler (requests fall back to the defaults).
    pub fn clear_handler(&self) {
        *lock(&self.shared.handler) = None;
    }

    /// Wait until at least `count` commands have been recorded, or `timeout` passed; whether
    /// they were. Useful after a `moreToCome` request, which gets no reply to wait for.
    pub async fn wait_for_commands(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.shared.commands).len() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return lock(&self.shared.commands).len() >= count;
            }
        }
    }

    /// Stop accepting, close every connection, and wait until they are closed. The records
    /// stay readable. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        let tasks = lock(&self.tasks).take();
        if let Some(tasks) = tasks {
            tasks.shutdown().await;
        }
    }
}

fn listen(listener: TcpListener, shared: &Arc<Shared>) -> Listening {
    let serving = Arc::clone(shared);
    Listening::start(listener, move |stream| {
        let id = serving
            .accepted
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        serving.open.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&serving);
        async move {
            let _guard = OpenGuard(Arc::clone(&shared));
            match shared.config.tls.clone() {
                None => serve_connection(stream, id, shared).await,
                Some(tls) => {
                    tls.terminate(stream, |plain| serve_connection(plain, id, shared))
                        .await
                }
            }
        }
    })
}

/// Decrements the open-connection count however the connection task ends (even aborted).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether to go on serving a connection after a request.
enum Flow {
    Continue,
    Close,
}

async fn serve_connection(mut stream: TcpStream, id: u64, shared: Arc<Shared>) {
    // Nagle only delays small replies; failure to turn it off changes nothing else.
    let _nodelay = stream.set_nodelay(true);
    let limits = DecodeLimits {
        max_message_size: shared.config.max_message_size,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        if let Some(member) = &shared.member
            && member.blackholed()
        {
            // A blackholed member reads and drops everything, and never answers.
            member.swallow(&mut stream).await;
            return;
        }
        if let Some(len) = op_query_len(&buf) {
            if len > limits.max_message_size {
                shared.fail(id, format!("OP_QUERY of {len} bytes is over the limit"));
                return;
            }
            if buf.len() >= len {
                let frame = buf.split_to(len);
                if let Flow::Close = handle_op_query(&mut stream, id, &shared, &frame).await {
                    return;
                }
                continue;
            }
        }
        match brook_wire::decode(&mut buf, &limits) {
            Ok(Some(decoded)) => {
                if let Flow::Close = handle_frame(&mut stream, id, &shared, decoded).await {
                    return;
                }
            }
            Ok(None) => {
                if buf.capacity().saturating_sub(buf.len()) < 4096 {
                    buf.reserve(16 * 1024);
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            Err(e) => {
                shared.fail(id, e.to_string());
                return;
            }
        }
    }
}

/// The declared length of the OP_QUERY at the front of `buf`, if one is there.
fn op_query_len(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..16)?;
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_le_bytes)
    };
    if word(12)? != frame::OP_QUERY {
        return None;
    }
    usize::try_from(word(0)?).ok().filter(|&len| len >= 16)
}

/// Answers a legacy OP_QUERY as MongoDB 6+ does: the handshake (`isMaster`, `ismaster` or
/// `hello` on `<db>.$cmd`) gets its reply as an OP_REPLY, anything else error 352. The
/// handshake is recorded and scripted like any command (a queued reply or the default;
/// a queued fault closes the connection).
async fn handle_op_query(
    stream: &mut TcpStream,
    id: u64,
    shared: &Arc<Shared>,
    bytes: &[u8],
) -> Flow {
    let query = match frame::decode_op_query(bytes) {
        Ok(q) => q,
        Err(message) => {
            shared.fail(id, message);
            return Flow::Close;
        }
    };
    // Drivers may wrap the command: `{$query: {isMaster: 1}, $readPreference: ...}`.
    let body = match query.query.get_document("$query") {
        Ok(inner) => inner.clone(),
        Err(_) => query.query.clone(),
    };
    let name = body.keys().next().cloned().unwrap_or_default();
    let db = query
        .collection
        .strip_suffix(".$cmd")
        .unwrap_or_default()
        .to_owned();
    let handshake = !db.is_empty() && matches!(name.as_str(), "isMaster" | "ismaster" | "hello");
    let reply = if handshake {
        let cmd = ReceivedCommand {
            name,
            db,
            body,
            sequences: Vec::new(),
            connection_id: id,
            request_id: query.request_id,
            flags: MsgFlags::default(),
            compressor: None,
        };
        shared.record(cmd.clone());
        let mut action = shared.choose(&cmd);
        loop {
            match action {
                Action::Delay(wait, then) => {
                    tokio::time::sleep(wait).await;
                    action = *then;
                }
                Action::Default => break default_reply(shared, &cmd).await,
                Action::Reply(doc) => break doc,
                // Faults, raw bytes and streams are OP_MSG matters: the connection closes.
                _ => return Flow::Close,
            }
        }
    } else {
        doc! {
            "ok": 0.0,
            "errmsg": format!(
                "Unsupported OP_QUERY command: {name}. The client driver may require an upgrade."
            ),
            "code": 352,
            "codeName": "UnsupportedOpQueryCommand",
        }
    };
    let Ok(body) = reply.to_vec() else {
        shared.fail(id, "the OP_QUERY reply could not be serialised".to_owned());
        return Flow::Close;
    };
    let out = frame::encode_op_reply(shared.reply_id(), query.request_id, &body);
    if stream.write_all(&out).await.is_err() {
        return Flow::Close;
    }
    Flow::Continue
}

fn to_document(doc: &SharedDoc) -> Result<Document, String> {
    doc.to_document().map_err(|e| e.to_string())
}

fn receive(decoded: Decoded, id: u64) -> Result<ReceivedCommand, String> {
    let message = decoded.message;
    let body = to_document(&message.body)?;
    let name = body.keys().next().cloned().unwrap_or_default();
    let db = body.get_str("$db").unwrap_or_default().to_owned();
    let mut sequences = Vec::with_capacity(message.sequences.len());
    for seq in &message.sequences {
        let documents = seq
            .documents
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        sequences.push(ReceivedSequence {
            identifier: seq.identifier.clone(),
            documents,
        });
    }
    Ok(ReceivedCommand {
        name,
        db,
        body,
        sequences,
        connection_id: id,
        request_id: message.request_id,
        flags: message.flags,
        compressor: decoded.compressor,
    })
}

async fn handle_frame(
    stream: &mut TcpStream,
    id: u64,
    shared: &Arc<Shared>,
    decoded: Decoded,
) -> Flow {
    let cmd = match receive(decoded, id) {
        Ok(cmd) => cmd,
        Err(message) => {
            shared.fail(id, message);
            return Flow::Close;
        }
    };
    shared.record(cmd.clone());
    let action = shared.choose(&cmd);
    perform(stream, shared, &cmd, action).await
}

/// Everything needed to write replies to one request.
struct Replier<'a> {
    stream: &'a mut TcpStream,
    shared: &'a Arc<Shared>,
    cmd: &'a ReceivedCommand,
    /// The `responseTo` of the next reply: the request's id, then (in a moreToCome
    /// sequence) the id of the previous reply, as the exhaust protocol chains them.
    response_to: i32,
}

impl Replier<'_> {
    fn silent(&self) -> bool {
        self.cmd.more_to_come()
    }

    fn serialise(&self, doc: &Document) -> Option<Vec<u8>> {
        match doc.to_vec() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.shared.fail(
                    self.cmd.connection_id,
                    format!("the scripted reply could not be serialised: {e}"),
                );
                None
            }
        }
    }

    /// Encode one reply frame: compressed like the request was, else with the server's own
    /// encoder.
    fn frame(&mut self, body: Vec<u8>, flags: u32) -> Option<Vec<u8>> {
        let checksum = self.shared.config.checksum_replies;
        let reply_id = self.shared.reply_id();
        let response_to = std::mem::replace(&mut self.response_to, reply_id);
        match self.cmd.compressor {
            Some(compressor) => {
                self.compressed_frame(compressor, reply_id, response_to, body, flags, checksum)
            }
            None => Some(frame::encode_msg(
                reply_id,
                response_to,
                flags,
                &body,
                checksum,
            )),
        }
    }

    fn compressed_frame(
        &self,
        compressor: Compressor,
        reply_id: i32,
        response_to: i32,
        body: Vec<u8>,
        flags: u32,
        checksum: bool,
    ) -> Option<Vec<u8>> {
        let encoded = SharedDoc::from_bytes(body.into()).and_then(|doc| {
            let mut message = Message::command(reply_id, doc);
            message.response_to = response_to;
            message.flags = MsgFlags::from_bits_retain(flags);
            let opts = EncodeOptions {
                checksum,
                compressor: Some(compressor),
                max_message_size: usize::MAX,
            };
            let mut dst = BytesMut::new();
            message.encode(&mut dst, &opts).map(|()| dst.to_vec())
        });
        match encoded {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.shared.fail(
                    self.cmd.connection_id,
                    format!("the reply could not be compressed: {e}"),
                );
                None
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Flow {
        if let Some(member) = &self.shared.member
            && member.blackholed()
        {
            member.swallow(self.stream).await;
            return Flow::Close;
        }
        match self.stream.write_all(bytes).await {
            Ok(()) => match self.stream.flush().await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close,
            },
            Err(_) => Flow::Close,
        }
    }

    async fn reply(&mut self, doc: &Document, flags: u32) -> Flow {
        if self.silent() {
            return Flow::Continue;
        }
        let Some(body) = self.serialise(doc) else {
            return Flow::Close;
        };
        let Some(frame) = self.frame(body, flags) else {
            return Flow::Close;
        };
        self.write(&frame).await
    }

    /// Read and drop whatever the client sends until it closes.
    async fn hang(&mut self) -> Flow {
        let mut sink = [0u8; 1024];
        loop {
            match self.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return Flow::Close,
                Ok(_) => {}
            }
        }
    }

    async fn fault(&mut self, fault: &Fault) -> Flow {
        if self.silent() {
            return match fault {
                Fault::CloseWithoutReply => Flow::Close,
                Fault::Hang => self.hang().await,
                _ => Flow::Continue,
            };
        }
        let default = default_reply(self.shared, self.cmd).await;
        let Some(body) = self.serialise(&default) else {
            return Flow::Close;
        };
        let reply_id = self.shared.reply_id();
        match frame::plan_fault(fault, self.cmd.request_id, reply_id, &body) {
            FaultPlan::Close => Flow::Close,
            FaultPlan::Hang => self.hang().await,
            FaultPlan::SendAndContinue(bytes) => self.write(&bytes).await,
            FaultPlan::SendWaitClose(bytes, wait) => {
                if let Flow::Close = self.write(&bytes).await {
                    return Flow::Close;
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Flow::Close
            }
        }
    }
}

async fn perform(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    cmd: &ReceivedCommand,
    action: Action,
) -> Flow {
    let mut replier = Replier {
        stream,
        shared,
        cmd,
        response_to: cmd.request_id,
    };
    let mut action = action;
    loop {
        match action {
            Action::Delay(wait, then) => {
                tokio::time::sleep(wait).await;
                action = *then;
            }
            Action::Default => {
                if let Some(member) = &shared.member
                    && let Some(wait) = member.awaitable_hello(cmd)
                {
                    return stream_hello(&mut replier, member, wait).await;
                }
                let reply = default_reply(shared, cmd).await;
                return replier.reply(&reply, 0).await;
            }
            Action::Reply(doc) => return replier.reply(&doc, 0).await,
            Action::Raw(bytes) => {
                if replier.silent() {
                    return Flow::Continue;
                }
                return replier.write(&bytes).await;
            }
            Action::MoreToCome(docs) => {
                let count = docs.len();
                for (i, doc) in docs.iter().enumerate() {
                    let flags = if i + 1 < count {
                        frame::FLAG_MORE_TO_COME
                    } else {
                        0
                    };
                    if let Flow::Close = replier.reply(doc, flags).await {
                        return Flow::Close;
                    }
                }
                return Flow::Continue;
            }
            Action::Fault(fault) => return replier.fault(&fault).await,
        }
    }
}

fn id_list(value: Option<&Bson>) -> Vec<i64> {
    match value {
        Some(Bson::Array(items)) => items
            .iter()
            .filter_map(|b| match b {
                Bson::Int64(v) => Some(*v),
                Bson::Int32(v) => Some(i64::from(*v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn as_i64(value: Option<&Bson>) -> Option<i64> {
    match value {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) if v.is_finite() => Some(*v as i64),
        _ => None,
    }
}

fn opens_change_stream(body: &Document) -> bool {
    match body.get("pipeline") {
        Some(Bson::Array(stages)) => stages.first().is_some_and(
            |stage| matches!(stage, Bson::Document(d) if d.contains_key("$changeStream")),
        ),
        _ => false,
    }
}

/// A server version string matching the configured wire version.
fn version_for(wire: i32) -> (&'static str, [i32; 4]) {
    match wire {
        i32::MIN..=8 => ("4.2.25", [4, 2, 25, 0]),
        9..=13 => ("5.0.26", [5, 0, 26, 0]),
        14..=17 => ("6.0.16", [6, 0, 16, 0]),
        18..=21 => ("7.0.14", [7, 0, 14, 0]),
        _ => ("8.0.4", [8, 0, 4, 0]),
    }
}

/// Answers an awaitable hello as a replica-set member does: once when its topology
/// version changes or `maxAwaitTimeMS` passes, and (when the request allowed exhaust)
/// again after every later change or wait, each reply flagged `moreToCome`, until the
/// client goes away.
async fn stream_hello(replier: &mut Replier<'_>, member: &MemberLink, wait: AwaitHello) -> Flow {
    let exhaust = replier.cmd.exhaust_allowed();
    let mut wait = wait;
    loop {
        let base = hello_options(&replier.shared.config, replier.cmd);
        let Some(reply) = member.await_hello(&base, replier.cmd, &wait).await else {
            return Flow::Close;
        };
        // An error (a member shutting down) ends the stream.
        let more = exhaust && reply.get_f64("ok").is_ok_and(|ok| ok == 1.0);
        let flags = if more { frame::FLAG_MORE_TO_COME } else { 0 };
        if let Flow::Close = replier.reply(&reply, flags).await {
            return Flow::Close;
        }
        if !more || replier.silent() {
            return Flow::Continue;
        }
        wait = wait.after(&reply);
    }
}

/// The hello options of the server's configuration, with the compressors negotiated
/// with `cmd` and the legacy shape for `isMaster`.
pub(crate) fn hello_options(config: &ServerConfig, cmd: &ReceivedCommand) -> HelloOptions {
    let mut opts = config.hello.clone();
    opts.legacy = cmd.name != "hello";
    let asked: Vec<&str> = match cmd.body.get("compression") {
        Some(Bson::Array(list)) => list.iter().filter_map(Bson::as_str).collect(),
        _ => Vec::new(),
    };
    opts.compression = asked
        .into_iter()
        .filter(|c| config.hello.compression.iter().any(|s| s == c))
        .map(str::to_owned)
        .collect();
    // Behind a load balancer: the connection's service, taken in turn.
    let load_balanced = cmd.body.get_bool("loadBalanced").unwrap_or(false);
    let services = &config.hello.service_ids;
    opts.service_ids = match (load_balanced, services.len()) {
        (true, n) if n > 0 => {
            let turn = usize::try_from(cmd.connection_id.saturating_sub(1)).unwrap_or(0) % n;
            services.get(turn).copied().into_iter().collect()
        }
        _ => Vec::new(),
    };
    opts
}

/// The built-in reply to `cmd`.
async fn default_reply(shared: &Arc<Shared>, cmd: &ReceivedCommand) -> Document {
    let config = &shared.config;
    if let Some(member) = &shared.member
        && let Some(reply) = member.answer(config, cmd).await
    {
        return reply;
    }
    if let Some(auth) = &config.auth {
        if let Some(reply) = auth.answer(cmd.connection_id, &cmd.db, &cmd.body) {
            return reply;
        }
        if !auth.allows(cmd.connection_id, &cmd.name) {
            return crate::auth::AuthServer::unauthorized(&cmd.name);
        }
    }
    let ts = shared.tick();
    let gossip = config.hello.topology.has_cluster_time();
    let ns_of = |coll: &str| format!("{}.{}", cmd.db, coll);
    let reply = match cmd.name.as_str() {
        "hello" | "isMaster" | "ismaster" => {
            let opts = hello_options(config, cmd);
            let connection_id = i64::try_from(cmd.connection_id).unwrap_or(i64::MAX);
            // hello_reply already adds the cluster time where the topology has one.
            let mut reply = shapes::hello_reply(&opts, connection_id, ts);
            if let Some(auth) = &config.auth {
                auth.decorate_hello(cmd.connection_id, &cmd.body, &mut reply);
            }
            return reply;
        }
        "ping" | "endSessions" | "abortTransaction" | "commitTransaction" => shapes::ok_reply(),
        "buildInfo" | "buildinfo" => {
            let (version, parts) = version_for(config.hello.max_wire_version);
            doc! {
                "version": version,
                "versionArray": parts.to_vec(),
                "maxBsonObjectSize": config.hello.max_bson_object_size,
                "ok": 1.0,
            }
        }
        "killCursors" => {
            let ids = id_list(cmd.body.get("cursors"));
            let mut open = lock(&shared.open_cursors);
            let (killed, not_found): (Vec<i64>, Vec<i64>) =
                ids.into_iter().partition(|id| open.remove(id));
            shapes::kill_cursors_reply(&killed, &not_found)
        }
        "find" => {
            let coll = cmd.body.get_str("find").unwrap_or_default();
            shapes::cursor_reply(0, &ns_of(coll), BatchKind::First, Vec::new(), None, None)
        }
        "aggregate" => {
            let ns = match cmd.body.get_str("aggregate") {
                Ok(coll) => ns_of(coll),
                Err(_) => ns_of("$cmd.aggregate"),
            };
            if opens_change_stream(&cmd.body) {
                let id = shared.next_cursor_id.fetch_add(1, Ordering::Relaxed);
                lock(&shared.open_cursors).insert(id);
                shapes::cursor_reply(
                    id,
                    &ns,
                    BatchKind::First,
                    Vec::new(),
                    Some(shapes::post_batch_resume_token(ts)),
                    None,
                )
            } else {
                shapes::cursor_reply(0, &ns, BatchKind::First, Vec::new(), None, None)
            }
        }
        "getMore" => {
            let id = as_i64(cmd.body.get("getMore")).unwrap_or(0);
            let open = lock(&shared.open_cursors).contains(&id);
            if open {
                let asked = as_i64(cmd.body.get("maxTimeMS"))
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map_or(config.max_await, Duration::from_millis);
                tokio::time::sleep(asked.min(config.max_await)).await;
                let coll = cmd.body.get_str("collection").unwrap_or_default();
                let ts = shared.tick();
                shapes::cursor_reply(
                    id,
                    &ns_of(coll),
                    BatchKind::Next,
                    Vec::new(),
                    Some(shapes::post_batch_resume_token(ts)),
                    None,
                )
            } else {
                shapes::cursor_not_found(id)
            }
        }
        "insert" => {
            let n = cmd
                .sequence("documents")
                .map(<[Document]>::len)
                .or_else(|| cmd.body.get_array("documents").ok().map(Vec::len))
                .unwrap_or(0);
            shapes::WriteReply::new(i32::try_from(n).unwrap_or(i32::MAX)).to_document()
        }
        "update" => shapes::WriteReply::new(0).modified(0).to_document(),
        "delete" => shapes::WriteReply::new(0).to_document(),
        other => shapes::command_not_found(other),
    };
    if gossip {
        // A replica-set member gossips the set's clock, not its own.
        let now = shared
            .member
            .as_ref()
            .map_or_else(|| shared.now(), MemberLink::cluster_time);
        shapes::with_cluster_time(reply, now)
    } else {
        reply
    }
}
