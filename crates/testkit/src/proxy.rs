//! A fault-injecting TCP proxy (see [`Proxy`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brook_wire::{DecodeLimits, MsgHeader};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::TestkitError;
use crate::listen::{Listening, lock};

/// The size of the chunks the proxy reads and forwards (per direction, per connection).
const CHUNK: usize = 16 * 1024;
/// A message header's size.
const HEADER_LEN: usize = MsgHeader::LEN;
/// The largest decompressed request the proxy decodes to learn a command's name.
const INSPECT_DECODE_MAX: usize = 1024 * 1024;
/// OP_MSG's opcode.
const OP_MSG: i32 = 2013;
/// OP_QUERY's opcode (legacy handshakes).
const OP_QUERY: i32 = 2004;
/// The environment variable that supplies a seed when the configuration has none.
const SEED_ENV: &str = "BROOK_PROXY_SEED";

// ---------------------------------------------------------------------------------------
// The PRNG

/// SplitMix64: a tiny, fast, deterministic pseudo-random generator (not cryptographic).
///
/// The proxy draws its cut points from it; tests may use it for their own reproducible
/// schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[lo, hi]` (the bounds may come in either order).
    pub fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let draw = self.next_u64();
        match (hi - lo).checked_add(1) {
            Some(count) => lo + draw % count,
            // The full u64 range: every draw is in it.
            None => draw,
        }
    }
}

/// The generator of connection `connection_id` under `seed`.
fn connection_rng(seed: u64, connection_id: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(connection_id);
    SplitMix64::new(seed ^ mix.next_u64())
}

// ---------------------------------------------------------------------------------------
// Configuration

/// Where a policy cut falls, relative to the matching replies a connection forwards.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutPoint {
    /// When the header of the next matching reply arrives, close without forwarding any of
    /// it: the server did the work (e.g. a getMore consumed a batch), the client never
    /// hears of it. The client's read sees a clean end of stream (or a reset).
    #[default]
    BeforeReply,
    /// Forward part of the next matching reply (between 1 byte and all but its last byte,
    /// drawn from the PRNG), then close: the client sees a truncated frame.
    MidReply,
    /// Close as soon as the N-th matching reply has been forwarded whole, while the client
    /// has nothing in flight: its next request is lost (never reaches the server) and the
    /// read that follows fails. With `N = 0` the connection is closed when it is accepted.
    AfterReply,
    /// One of the three others, drawn from the PRNG for each connection.
    Any,
}

/// How the proxy closes the two sockets of a connection it cuts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutStyle {
    /// Close the sockets: each peer reads an end of stream (FIN), or a reset when the proxy
    /// had unread bytes from it.
    #[default]
    Close,
    /// Set a zero linger, then close: each peer sees a connection reset (RST).
    Reset,
}

/// What a [`Proxy`] does to the traffic it forwards.
///
/// The [`Default`] forwards everything untouched (no cut policy, no delays, faults
/// enabled, a 5-second upstream connect timeout, 8 KiB inspected per request). The
/// policies combine: a seeded cut policy, delays per message, and the manual
/// [`Proxy::cut_all`] all apply together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Cut every connection after `N` matching replies, `N` drawn per connection in
    /// `[lo, hi]` (inclusive; the bounds may come in either order). `None`: no policy cuts.
    pub cut_after: Option<(u64, u64)>,
    /// Only replies to requests with this command name (the first key of the body, e.g.
    /// `"getMore"`; compared exactly) count towards `N` and are cut. `None`: every
    /// server→client message.
    pub cut_only_replies_to: Option<String>,
    /// Where a policy cut falls.
    pub cut_point: CutPoint,
    /// How cut sockets are closed (policy and manual cuts alike).
    pub cut_style: CutStyle,
    /// Wait this long before forwarding each server→client message (zero: no wait).
    pub reply_delay: Duration,
    /// Wait this long before forwarding each client→server message (zero: no wait).
    pub request_delay: Duration,
    /// The PRNG seed. `None`: `BROOK_PROXY_SEED` from the environment, else the clock.
    pub seed: Option<u64>,
    /// Whether policy cuts and delays start enabled (see [`Proxy::set_enabled`]).
    pub enabled: bool,
    /// How long to wait for the upstream connection of each accepted client.
    pub connect_timeout: Duration,
    /// How many leading bytes of each request are kept to learn its command name (for
    /// [`ProxyConfig::cut_only_replies_to`] and [`CutEvent::last_command`]); at least 16.
    pub inspect_limit: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            cut_after: None,
            cut_only_replies_to: None,
            cut_point: CutPoint::default(),
            cut_style: CutStyle::default(),
            reply_delay: Duration::ZERO,
            request_delay: Duration::ZERO,
            seed: None,
            enabled: true,
            connect_timeout: Duration::from_secs(5),
            inspect_limit: 8 * 1024,
        }
    }
}

impl ProxyConfig {
    /// Forward everything untouched (the [`Default`]).
    pub fn pass_through() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// Cut every connection after `N` matching replies, `N` drawn in `[lo, hi]`.
    pub fn cut_after(mut self, lo: u64, hi: u64) -> ProxyConfig {
        self.cut_after = Some((lo, hi));
        self
    }

    /// Count and cut only replies to requests named `command` (e.g. `"getMore"`).
    pub fn only_replies_to(mut self, command: impl Into<String>) -> ProxyConfig {
        self.cut_only_replies_to = Some(command.into());
        self
    }

    /// Set where policy cuts fall.
    pub fn with_cut_point(mut self, point: CutPoint) -> ProxyConfig {
        self.cut_point = point;
        self
    }

    /// Set how cut sockets are closed.
    pub fn with_cut_style(mut self, style: CutStyle) -> ProxyConfig {
        self.cut_style = style;
        self
    }

    /// Delay each server→client message by `delay`.
    pub fn with_reply_delay(mut self, delay: Duration) -> ProxyConfig {
        self.reply_delay = delay;
        self
    }

    /// Delay each client→server message by `delay`.
    pub fn with_request_delay(mut self, delay: Duration) -> ProxyConfig {
        self.request_delay = delay;
        self
    }

    /// Fix the PRNG seed.
    pub fn with_seed(mut self, seed: u64) -> ProxyConfig {
        self.seed = Some(seed);
        self
    }

    /// Start with policy cuts and delays enabled or paused.
    pub fn with_enabled(mut self, enabled: bool) -> ProxyConfig {
        self.enabled = enabled;
        self
    }

    /// Set the upstream connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> ProxyConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Set how many leading bytes of each request are inspected for its command name.
    pub fn with_inspect_limit(mut self, limit: usize) -> ProxyConfig {
        self.inspect_limit = limit;
        self
    }
}

// ---------------------------------------------------------------------------------------
// Records

/// Why a connection was cut.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// The seeded policy, at this point (never [`CutPoint::Any`]: the point drawn).
    Policy(CutPoint),
    /// [`Proxy::cut_all`].
    Manual,
}

/// One cut connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutEvent {
    /// The connection's number (1 for the first the proxy accepted).
    pub connection_id: u64,
    /// Why it was cut.
    pub reason: CutReason,
    /// The server→client messages it forwarded whole before the cut.
    pub messages_to_client: u64,
    /// The matching replies (see [`ProxyConfig::cut_only_replies_to`]) it forwarded whole.
    pub matching_replies: u64,
    /// The bytes of the cut reply forwarded before closing ([`CutPoint::MidReply`]; 0
    /// otherwise).
    pub partial_bytes: u64,
    /// The command name of the last request seen on the connection, if known.
    pub last_command: Option<String>,
}

/// A snapshot of a proxy's counters (all connections since it started).
///
/// Bytes and messages count what was handed to the receiving socket: a message counts once
/// its last byte was; the bytes of a cut reply's forwarded part count, the reply does not.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Connections open right now.
    pub connections_open: u64,
    /// Connections the proxy cut (policy or manual).
    pub connections_cut: u64,
    /// Accepted connections closed because the upstream connect failed or timed out.
    pub upstream_failures: u64,
    /// Bytes forwarded client→server.
    pub bytes_to_server: u64,
    /// Bytes forwarded server→client.
    pub bytes_to_client: u64,
    /// Whole messages forwarded client→server.
    pub messages_to_server: u64,
    /// Whole messages forwarded server→client.
    pub messages_to_client: u64,
}

// ---------------------------------------------------------------------------------------
// The proxy

/// State shared by the listener, the connections and the [`Proxy`] handle.
struct Shared {
    config: ProxyConfig,
    seed: u64,
    upstream: SocketAddr,
    enabled: AtomicBool,
    cut_signal: watch::Sender<u64>,
    cuts: Mutex<Vec<CutEvent>>,
    accepted: AtomicU64,
    open: AtomicUsize,
    cut: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_to_server: AtomicU64,
    bytes_to_client: AtomicU64,
    messages_to_server: AtomicU64,
    messages_to_client: AtomicU64,
}

impl Shared {
    fn faults_on(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    fn planned_cut(&self, connection_id: u64) -> Option<u64> {
        let (lo, hi) = self.config.cut_after?;
        Some(connection_rng(self.seed, connection_id).in_range(lo, hi))
    }
}

/// A fault-injecting TCP proxy on `127.0.0.1` (a port the OS picks) that sits between a
/// client and a server (the fake server or a real peer) and severs connections on a
/// deterministic, seeded schedule.
///
/// The proxy forwards bytes both ways in fixed-size chunks. It frames the stream as it goes,
/// keeping only the 16-byte header of the message in flight (never a whole message), so it
/// can count messages each way and cut at message granularity. For a per-command policy it
/// keeps the first [`ProxyConfig::inspect_limit`] bytes of each request to learn the
/// command's name (the first key of the OP_MSG body).
///
/// # Cuts
///
/// A cut closes both sockets of a connection: the client's and the upstream one. With
/// [`CutStyle::Close`] (the default) the proxy just closes them, so each peer sees an
/// orderly end of stream (a FIN; the kernel sends a reset instead when the proxy had unread
/// bytes from that peer). With [`CutStyle::Reset`] it sets a zero linger first, so each peer
/// sees a connection reset (an RST).
///
/// When a policy is set ([`ProxyConfig::cut_after`]), every connection draws a number `N`
/// in the configured range from a PRNG seeded with the proxy's seed and the connection's
/// number (1 for the first accepted, 2 for the next, …), so the same seed cuts the same
/// connections at the same points whatever the timing. `N` is how many matching replies the
/// connection forwards whole; what happens next is the [`CutPoint`]. A matching reply is
/// any server→client message, or with [`ProxyConfig::cut_only_replies_to`] only the replies
/// that follow a request with that command name (e.g. `getMore`).
///
/// The seed is [`ProxyConfig::seed`], else the environment variable `BROOK_PROXY_SEED`
/// (decimal or `0x` hex), else one derived from the clock; [`Proxy::seed`] tells which,
/// and the proxy prints it to stderr when it starts with a cut policy, so a failure can be
/// replayed.
///
/// # Going through the proxy to a replica set
///
/// A client that discovers a replica set connects to the hosts the server's hello lists,
/// which are the server's real addresses, and so would bypass the proxy: connect with
/// `directConnection=true` (e.g. `proxy.uri_with("directConnection=true")`).
///
/// Dropping it (or [`Proxy::shutdown`]) stops the listener and closes every connection.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Listening,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("seed", &format_args!("{:#x}", self.shared.seed))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn env_seed() -> Option<u64> {
    let raw = std::env::var(SEED_ENV).ok()?;
    let raw = raw.trim();
    match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => raw.parse().ok(),
    }
}

fn clock_seed(addr: SocketAddr) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Keep the low 64 bits of the clock and mix in the port, so proxies started in the
    // same instant still differ.
    let mut mix = SplitMix64::new((nanos as u64) ^ u64::from(addr.port()));
    mix.next_u64()
}

impl Proxy {
    /// Bind `127.0.0.1:0` and start forwarding every accepted connection to `upstream`.
    /// Must be called inside a tokio runtime. The upstream is connected per client, when
    /// the client connects; a client whose upstream connect fails is closed.
    pub async fn start(upstream: SocketAddr, config: ProxyConfig) -> Result<Proxy, TestkitError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(TestkitError::Bind)?;
        let addr = listener.local_addr().map_err(TestkitError::Bind)?;
        let seed = config
            .seed
            .or_else(env_seed)
            .unwrap_or_else(|| clock_seed(addr));
        if let Some((lo, hi)) = config.cut_after {
            eprintln!(
                "brook-testkit proxy {addr} -> {upstream}: cuts after [{lo}, {hi}] replies, \
                 seed {seed:#x} (replay with {SEED_ENV}={seed:#x})"
            );
        }
        let (cut_signal, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(config.enabled),
            config,
            seed,
            upstream,
            cut_signal,
            cuts: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            cut: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            bytes_to_server: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            messages_to_server: AtomicU64::new(0),
            messages_to_client: AtomicU64::new(0),
        });
        let serving = Arc::clone(&shared);
        let tasks = Listening::start(listener, move |client| {
            let id = serving
                .accepted
                .fetch_add(1, Ordering::SeqCst)
                .wrapping_add(1);
            serving.open.fetch_add(1, Ordering::SeqCst);
            // Subscribed before the task starts, so a cut_all from now on reaches it.
            let cut_rx = serving.cut_signal.subscribe();
            run_connection(client, id, Arc::clone(&serving), cut_rx)
        });
        Ok(Proxy {
            shared,
            addr,
            tasks,
        })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `"127.0.0.1:<port>"`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// `mongodb://127.0.0.1:<port>/`.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/", self.addr)
    }

    /// `mongodb://127.0.0.1:<port>/?<options>`, e.g.
    /// `uri_with("directConnection=true&socketTimeoutMS=500")`. A leading `/` or `?` in
    /// `options` is ignored; empty options give [`Proxy::uri`].
    pub fn uri_with(&self, options: &str) -> String {
        let options = options.trim_start_matches('/').trim_start_matches('?');
        if options.is_empty() {
            self.uri()
        } else {
            format!("mongodb://{}/?{options}", self.addr)
        }
    }

    /// `original` (a `mongodb://` or `mongodb+srv://` URI) with its host list replaced by
    /// the proxy's address, keeping its credentials, database and query options. The
    /// result is always a plain `mongodb://` URI (an SRV lookup would bypass the proxy; add
    /// `tls=true` yourself if the SRV URI relied on its implied TLS).
    pub fn rewrite_uri(&self, original: &str) -> String {
        let rest = original
            .strip_prefix("mongodb+srv://")
            .or_else(|| original.strip_prefix("mongodb://"))
            .unwrap_or(original);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at_checked(split).unwrap_or((rest, ""));
        let userinfo = authority
            .rfind('@')
            .and_then(|at| authority.get(..=at))
            .unwrap_or("");
        let tail = if tail.is_empty() {
            "/".to_owned()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        format!("mongodb://{userinfo}{}{tail}", self.addr)
    }

    /// The configuration the proxy runs with.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// The PRNG seed in use (see the module documentation for where it comes from).
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The `N` connection `connection_id` (1-based, in accept order) draws: how many
    /// matching replies it forwards whole before its policy cut. `None` without a policy.
    pub fn planned_cut(&self, connection_id: u64) -> Option<u64> {
        self.shared.planned_cut(connection_id)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections_accepted: s.accepted.load(Ordering::SeqCst),
            connections_open: u64::try_from(s.open.load(Ordering::SeqCst)).unwrap_or(u64::MAX),
            connections_cut: s.cut.load(Ordering::SeqCst),
            upstream_failures: s.upstream_failures.load(Ordering::SeqCst),
            bytes_to_server: s.bytes_to_server.load(Ordering::SeqCst),
            bytes_to_client: s.bytes_to_client.load(Ordering::SeqCst),
            messages_to_server: s.messages_to_server.load(Ordering::SeqCst),
            messages_to_client: s.messages_to_client.load(Ordering::SeqCst),
        }
    }

    /// How many connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Every cut so far, in the order they happened.
    pub fn cuts(&self) -> Vec<CutEvent> {
        lock(&self.shared.cuts).clone()
    }

    /// Resume (`true`) or pause (`false`) policy cuts and delays. Connections keep counting
    /// replies while paused; once resumed, a connection already past its `N` is cut at its
    /// next opportunity (the next matching reply).
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Whether policy cuts and delays are enabled.
    pub fn is_enabled(&self) -> bool {
        self.shared.faults_on()
    }

    /// Sever every live connection now (whatever [`Proxy::set_enabled`] says); connections
    /// accepted later are not affected. Returns how many connections were open. A client
    /// request sent after this returns is never forwarded.
    pub fn cut_all(&self) -> usize {
        let open = self.open_connections();
        self.shared
            .cut_signal
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        open
    }

    /// Stop accepting, close every connection, and wait until they are closed. The counters
    /// and records stay readable. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }
}

/// Decrements the open-connection count however the connection task ends (even aborted).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The per-connection state both directions share.
struct Conn<'s> {
    shared: &'s Shared,
    id: u64,
    /// The policy's `N` for this connection.
    plan: Option<u64>,
    /// Where its policy cut falls ([`CutPoint::Any`] resolved when the connection starts).
    point: CutPoint,
    /// The command name of the latest request (set before its last byte is forwarded).
    last_request: Mutex<Option<String>>,
    /// Server→client messages forwarded whole on this connection.
    replies: AtomicU64,
    /// Matching replies forwarded whole on this connection.
    matching: AtomicU64,
}

impl Conn<'_> {
    /// Whether a reply arriving now counts for the policy.
    fn reply_matches(&self) -> bool {
        match &self.shared.config.cut_only_replies_to {
            None => true,
            Some(name) => lock(&self.last_request).as_deref() == Some(name.as_str()),
        }
    }

    /// Whether the policy is due: enabled and `N` matching replies forwarded already.
    fn policy_due(&self) -> bool {
        match self.plan {
            Some(n) => self.shared.faults_on() && self.matching.load(Ordering::SeqCst) >= n,
            None => false,
        }
    }

    fn event(&self, reason: CutReason, partial_bytes: u64) -> CutEvent {
        CutEvent {
            connection_id: self.id,
            reason,
            messages_to_client: self.replies.load(Ordering::SeqCst),
            matching_replies: self.matching.load(Ordering::SeqCst),
            partial_bytes,
            last_command: lock(&self.last_request).clone(),
        }
    }
}

/// How one direction (or the connection) ended.
enum End {
    /// A peer closed, or a read or write failed: close the other side too.
    Closed,
    /// The proxy cuts the connection.
    Cut(CutEvent),
}

async fn run_connection(
    client: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    mut cut_rx: watch::Receiver<u64>,
) {
    let _guard = OpenGuard(shared.clone());
    let upstream = tokio::time::timeout(
        shared.config.connect_timeout,
        TcpStream::connect(shared.upstream),
    )
    .await;
    let Ok(Ok(upstream)) = upstream else {
        shared.upstream_failures.fetch_add(1, Ordering::SeqCst);
        return;
    };
    // Nagle only delays small messages; failing to turn it off changes nothing else.
    let _nodelay = client.set_nodelay(true);
    let _nodelay = upstream.set_nodelay(true);

    let mut rng = connection_rng(shared.seed, id);
    let plan = shared.config.cut_after.map(|(lo, hi)| rng.in_range(lo, hi));
    let point = match shared.config.cut_point {
        CutPoint::Any => match rng.next_u64() % 3 {
            0 => CutPoint::BeforeReply,
            1 => CutPoint::MidReply,
            _ => CutPoint::AfterReply,
        },
        point => point,
    };
    let conn = Conn {
        shared: &shared,
        id,
        plan,
        point,
        last_request: Mutex::new(None),
        replies: AtomicU64::new(0),
        matching: AtomicU64::new(0),
    };

    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();

    let end = if cut_rx.has_changed().unwrap_or(false) {
        // cut_all ran while the upstream connect was in progress (or the proxy is gone).
        End::Cut(conn.event(CutReason::Manual, 0))
    } else if conn.point == CutPoint::AfterReply && conn.policy_due() {
        End::Cut(conn.event(CutReason::Policy(CutPoint::AfterReply), 0))
    } else {
        tokio::select! {
            biased;
            changed = cut_rx.changed() => match changed {
                Ok(()) => End::Cut(conn.event(CutReason::Manual, 0)),
                // The proxy is gone: close quietly.
                Err(_) => End::Closed,
            },
            end = pump_replies(&conn, &mut rng, &mut upstream_read, &mut client_write) => end,
            end = pump_requests(&conn, &mut client_read, &mut upstream_write) => end,
        }
    };

    let reset = match end {
        End::Closed => false,
        End::Cut(event) => {
            // Recorded before the sockets close, so a client that sees the cut sees it
            // counted.
            lock(&shared.cuts).push(event);
            shared.cut.fetch_add(1, Ordering::SeqCst);
            shared.config.cut_style == CutStyle::Reset
        }
    };
    close(client_read, client_write, reset);
    close(upstream_read, upstream_write, reset);
}

/// Close a socket without a write-side shutdown first (so a reset is only a reset).
fn close(read: OwnedReadHalf, write: OwnedWriteHalf, reset: bool) {
    let Ok(stream) = read.reunite(write) else {
        // Halves of different sockets cannot happen here; dropping them closes both.
        return;
    };
    if reset {
        // A zero linger makes close() send an RST; it does not block (unlike a non-zero
        // linger, which is why the setter is deprecated). Failing to set it leaves a FIN.
        #[allow(deprecated)]
        let _linger = stream.set_linger(Some(Duration::ZERO));
    }
    drop(stream);
}

// ---------------------------------------------------------------------------------------
// Framing

/// Finds message boundaries in a byte stream, keeping only the current header.
#[derive(Default)]
struct Framer {
    header: [u8; HEADER_LEN],
    have: usize,
    body_left: usize,
    unframed: bool,
}

/// One piece of the stream, in order.
enum Step<'a> {
    /// A complete header (its bytes, to forward) of a message with `body` more bytes.
    Header {
        bytes: [u8; HEADER_LEN],
        body: usize,
    },
    /// A header with an impossible length: framing stops, everything is forwarded raw.
    Unframed([u8; HEADER_LEN]),
    /// Body bytes of the current message; `end`: the message ends with them.
    Body { bytes: &'a [u8], end: bool },
    /// Bytes after framing stopped.
    Raw(&'a [u8]),
}

impl Framer {
    /// The next piece of `input` (which is advanced past it); `None` once it is used up.
    fn next<'a>(&mut self, input: &mut &'a [u8]) -> Option<Step<'a>> {
        loop {
            if input.is_empty() {
                return None;
            }
            if self.unframed {
                let all = *input;
                *input = &[];
                return Some(Step::Raw(all));
            }
            if self.body_left > 0 {
                let take = self.body_left.min(input.len());
                let (bytes, rest) = input.split_at_checked(take)?;
                *input = rest;
                self.body_left -= take;
                return Some(Step::Body {
                    bytes,
                    end: self.body_left == 0,
                });
            }
            let take = HEADER_LEN.saturating_sub(self.have).min(input.len());
            let (bytes, rest) = input.split_at_checked(take)?;
            let slot = self
                .header
                .get_mut(self.have..self.have.saturating_add(take))?;
            slot.copy_from_slice(bytes);
            *input = rest;
            self.have = self.have.saturating_add(take);
            if self.have < HEADER_LEN {
                continue;
            }
            self.have = 0;
            let bytes = self.header;
            let body = brook_wire::peek_header(&bytes)
                .and_then(|h| usize::try_from(h.message_length).ok())
                .and_then(|len| len.checked_sub(HEADER_LEN));
            return Some(match body {
                Some(body) => {
                    self.body_left = body;
                    Step::Header { bytes, body }
                }
                None => {
                    self.unframed = true;
                    Step::Unframed(bytes)
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server → client

/// Per-reply state of the server→client direction.
struct ReplyState {
    /// The reply in flight counts for the policy.
    matches: bool,
    /// Bytes of the reply in flight still to forward before a mid-reply cut.
    budget: Option<u64>,
    /// The budget the mid-reply cut started with.
    partial: u64,
}

/// What forwarding a piece did.
enum Sent {
    /// Forwarded; go on.
    Ok,
    /// The mid-reply budget is used up: cut now.
    BudgetSpent,
    /// The write failed: the receiving peer is gone.
    Failed,
}

/// Write `bytes` (at most `budget` of them, which is decreased) and count them.
async fn forward(
    to: &mut OwnedWriteHalf,
    bytes: &[u8],
    budget: &mut Option<u64>,
    counter: &AtomicU64,
) -> Sent {
    let (bytes, spent) = match budget {
        Some(left) => {
            let k = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            *left = left.saturating_sub(u64::try_from(k).unwrap_or(u64::MAX));
            (bytes.get(..k).unwrap_or_default(), *left == 0)
        }
        None => (bytes, false),
    };
    if !bytes.is_empty() {
        counter.fetch_add(
            u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        if to.write_all(bytes).await.is_err() {
            return Sent::Failed;
        }
    }
    if spent { Sent::BudgetSpent } else { Sent::Ok }
}

async fn pump_replies(
    conn: &Conn<'_>,
    rng: &mut SplitMix64,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
) -> End {
    let shared = conn.shared;
    let mut buf = vec![0u8; CHUNK];
    let mut framer = Framer::default();
    let mut state = ReplyState {
        matches: false,
        budget: None,
        partial: 0,
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while let Some(step) = framer.next(&mut input) {
            let (sent, message_end) = match step {
                Step::Header { bytes, body } => {
                    state.matches = conn.reply_matches();
                    if state.matches && conn.policy_due() {
                        match conn.point {
                            CutPoint::MidReply => {
                                let total =
                                    u64::try_from(body).unwrap_or(u64::MAX).saturating_add(16);
                                let k = rng.in_range(1, total.saturating_sub(1).max(1));
                                state.budget = Some(k);
                                state.partial = k;
                            }
                            // Checked when the reply has been forwarded whole.
                            CutPoint::AfterReply => {}
                            _ => {
                                return End::Cut(
                                    conn.event(CutReason::Policy(CutPoint::BeforeReply), 0),
                                );
                            }
                        }
                    }
                    if shared.faults_on() && !shared.config.reply_delay.is_zero() {
                        tokio::time::sleep(shared.config.reply_delay).await;
                    }
                    if body == 0 && state.budget.is_none() {
                        count_reply(conn, &state);
                    }
                    let sent =
                        forward(to, &bytes, &mut state.budget, &shared.bytes_to_client).await;
                    (sent, body == 0)
                }
                Step::Body { bytes, end } => {
                    if end && state.budget.is_none() {
                        count_reply(conn, &state);
                    }
                    let sent = forward(to, bytes, &mut state.budget, &shared.bytes_to_client).await;
                    (sent, end)
                }
                Step::Unframed(bytes) => (
                    forward(to, &bytes, &mut None, &shared.bytes_to_client).await,
                    false,
                ),
                Step::Raw(bytes) => (
                    forward(to, bytes, &mut None, &shared.bytes_to_client).await,
                    false,
                ),
            };
            match sent {
                Sent::Failed => return End::Closed,
                Sent::BudgetSpent => {
                    return End::Cut(
                        conn.event(CutReason::Policy(CutPoint::MidReply), state.partial),
                    );
                }
                Sent::Ok => {}
            }
            let after_reply_due =
                conn.point == CutPoint::AfterReply && state.matches && conn.policy_due();
            if message_end && after_reply_due {
                return End::Cut(conn.event(CutReason::Policy(CutPoint::AfterReply), 0));
            }
        }
    }
}

/// Count a reply as forwarded whole (done just before its last byte is written, so a
/// client that has the reply sees it counted).
fn count_reply(conn: &Conn<'_>, state: &ReplyState) {
    conn.replies.fetch_add(1, Ordering::SeqCst);
    if state.matches {
        conn.matching.fetch_add(1, Ordering::SeqCst);
    }
    conn.shared
        .messages_to_client
        .fetch_add(1, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------
// Client → server

async fn pump_requests(conn: &Conn<'_>, from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) -> End {
    let shared = conn.shared;
    let limit = shared.config.inspect_limit.max(HEADER_LEN);
    let mut buf = vec![0u8; CHUNK];
    let mut framer = Framer::default();
    // The leading bytes of the request in flight, up to `target` of them.
    let mut capture: Vec<u8> = Vec::new();
    let mut target = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while let Some(step) = framer.next(&mut input) {
            let sent = match step {
                Step::Header { bytes, body } => {
                    if shared.faults_on() && !shared.config.request_delay.is_zero() {
                        tokio::time::sleep(shared.config.request_delay).await;
                    }
                    capture.clear();
                    target = body.saturating_add(HEADER_LEN).min(limit);
                    capture.extend_from_slice(&bytes);
                    inspect_request(conn, &mut capture, &mut target, body == 0);
                    if body == 0 {
                        shared.messages_to_server.fetch_add(1, Ordering::SeqCst);
                    }
                    forward(to, &bytes, &mut None, &shared.bytes_to_server).await
                }
                Step::Body { bytes, end } => {
                    if capture.len() < target {
                        let take = target.saturating_sub(capture.len()).min(bytes.len());
                        capture.extend_from_slice(bytes.get(..take).unwrap_or_default());
                        inspect_request(conn, &mut capture, &mut target, end);
                    }
                    if end {
                        shared.messages_to_server.fetch_add(1, Ordering::SeqCst);
                    }
                    forward(to, bytes, &mut None, &shared.bytes_to_server).await
                }
                Step::Unframed(bytes) => {
                    forward(to, &bytes, &mut None, &shared.bytes_to_server).await
                }
                Step::Raw(bytes) => forward(to, bytes, &mut None, &shared.bytes_to_server).await,
            };
            if let Sent::Failed = sent {
                return End::Closed;
            }
        }
    }
}

/// Once `capture` holds its `target` bytes, learn the request's command name, record it as
/// the connection's latest, and stop capturing. `complete`: the message ends here.
fn inspect_request(conn: &Conn<'_>, capture: &mut Vec<u8>, target: &mut usize, complete: bool) {
    if capture.len() < *target && !complete {
        return;
    }
    let whole = capture.len() >= capture_total(capture);
    let name = command_name(capture, whole);
    *lock(&conn.last_request) = name;
    capture.clear();
    *target = 0;
}

/// The declared length of the captured frame (0 if unknown).
fn capture_total(capture: &[u8]) -> usize {
    read_i32(capture, 0)
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0)
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes(raw.try_into().ok()?))
}

/// The command name (first body key) of a request, from its leading bytes. With the whole
/// frame, brook-wire decodes it (which also handles OP_COMPRESSED); otherwise, or if that
/// fails, the uncompressed OP_MSG or OP_QUERY layout is scanned.
fn command_name(frame: &[u8], whole: bool) -> Option<String> {
    if whole {
        let mut copy = BytesMut::from(frame);
        let limits = DecodeLimits {
            max_message_size: INSPECT_DECODE_MAX,
        };
        if let Ok(Some(decoded)) = brook_wire::decode(&mut copy, &limits) {
            return decoded.message.body.first_key().map(str::to_owned);
        }
    }
    match read_i32(frame, 12)? {
        OP_MSG => {
            // flags (4 bytes), then sections: kind 0 = the body, kind 1 = a sized sequence.
            let mut at = HEADER_LEN.checked_add(4)?;
            loop {
                let kind = *frame.get(at)?;
                let next = at.checked_add(1)?;
                match kind {
                    0 => return first_key_at(frame, next),
                    1 => {
                        let size = usize::try_from(read_i32(frame, next)?).ok()?;
                        at = next.checked_add(size.max(1))?;
                    }
                    _ => return None,
                }
            }
        }
        OP_QUERY => {
            // flags (4 bytes), the collection's C string, skip and return counts, the query.
            let name_at = HEADER_LEN.checked_add(4)?;
            let name_len = frame.get(name_at..)?.iter().position(|&b| b == 0)?;
            let doc = name_at.checked_add(name_len)?.checked_add(1 + 8)?;
            first_key_at(frame, doc)
        }
        _ => None,
    }
}

/// The first key of the BSON document starting at `doc`, if its bytes are there.
fn first_key_at(frame: &[u8], doc: usize) -> Option<String> {
    let element = doc.checked_add(4)?;
    if *frame.get(element)? == 0 {
        return None;
    }
    let key = frame.get(element.checked_add(1)?..)?;
    let end = key.iter().position(|&b| b == 0)?;
    std::str::from_utf8(key.get(..end)?).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The first outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn in_range_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = rng.in_range(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(rng.in_range(3, 3), 3);
        assert!((2..=9).contains(&rng.in_range(9, 2)));
        let _any = rng.in_range(0, u64::MAX);
    }

    #[test]
    fn framer_splits_messages_across_chunks() {
        let mut stream = Vec::new();
        for body in [5usize, 0, 40] {
            let len = (HEADER_LEN + body) as i32;
            stream.extend_from_slice(&len.to_le_bytes());
            stream.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
            stream.extend_from_slice(&2013i32.to_le_bytes());
            stream.extend(std::iter::repeat_n(0xAB, body));
        }
        for chunk_size in [1, 3, 16, 17, 1000] {
            let mut framer = Framer::default();
            let mut ends = 0;
            let mut headers = Vec::new();
            let mut forwarded = 0;
            for chunk in stream.chunks(chunk_size) {
                let mut input = chunk;
                while let Some(step) = framer.next(&mut input) {
                    match step {
                        Step::Header { body, .. } => {
                            forwarded += HEADER_LEN;
                            headers.push(body);
                            if body == 0 {
                                ends += 1;
                            }
                        }
                        Step::Body { bytes, end } => {
                            forwarded += bytes.len();
                            if end {
                                ends += 1;
                            }
                        }
                        Step::Unframed(_) | Step::Raw(_) => panic!("framing lost"),
                    }
                }
            }
            assert_eq!(headers, vec![5, 0, 40], "chunk size {chunk_size}");
            assert_eq!(ends, 3);
            assert_eq!(forwarded, stream.len());
        }
    }

    #[test]
    fn framer_gives_up_on_impossible_lengths() {
        let mut framer = Framer::default();
        let mut bytes = 8i32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 20]);
        let mut input = &bytes[..];
        assert!(matches!(framer.next(&mut input), Some(Step::Unframed(_))));
        assert!(matches!(framer.next(&mut input), Some(Step::Raw(r)) if r.len() == 8));
        assert!(framer.next(&mut input).is_none());
    }

    fn op_msg(sections: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&((HEADER_LEN + 4 + sections.len()) as i32).to_le_bytes());
        f.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&OP_MSG.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(sections);
        f
    }

    #[test]
    fn command_names_from_whole_frames_and_prefixes() {
        let body = bson::doc! { "getMore": 5i64, "collection": "c", "$db": "d" }
            .to_vec()
            .unwrap();
        let mut sections = vec![0u8];
        sections.extend_from_slice(&body);
        let frame = op_msg(&sections);
        assert_eq!(command_name(&frame, true).as_deref(), Some("getMore"));
        // A prefix is enough for the scan.
        assert_eq!(command_name(&frame[..33], false), None);
        assert_eq!(
            command_name(&frame[..34], false).as_deref(),
            Some("getMore")
        );

        // A sequence before the body is skipped.
        let doc = bson::doc! { "a": 1 }.to_vec().unwrap();
        let mut seq = vec![1u8];
        seq.extend_from_slice(&((4 + 10 + doc.len()) as i32).to_le_bytes());
        seq.extend_from_slice(b"documents\0");
        seq.extend_from_slice(&doc);
        let insert = bson::doc! { "insert": "c", "$db": "d" }.to_vec().unwrap();
        seq.push(0);
        seq.extend_from_slice(&insert);
        let frame = op_msg(&seq);
        assert_eq!(command_name(&frame, false).as_deref(), Some("insert"));
        assert_eq!(command_name(&frame, true).as_deref(), Some("insert"));

        // Garbage and truncation give None, never a panic.
        assert_eq!(command_name(&frame[..20], false), None);
        assert_eq!(command_name(&[0xff; 40], true), None);
        assert_eq!(command_name(&[], false), None);
        let empty = op_msg(&[0, 5, 0, 0, 0, 0]);
        assert_eq!(command_name(&empty, true), None);
    }
}
