//! A replay server for benchmarks: answers the commands of a change-stream consumer with
//! replies encoded once, at start, so that serving a request costs a frame decode, a
//! first-key lookup and one `writev`, and the client under test dominates what is measured.
//!
//! [`ReplayServer::start`] binds `127.0.0.1:0` and answers, on every connection:
//!
//! | command | reply |
//! |---|---|
//! | `hello` / `isMaster` (any case) | a MongoDB 7.0 replica-set primary ([`HelloOptions`]), with `helloOk: true` and `logicalSessionTimeoutMinutes`; an awaitable hello (with `maxAwaitTimeMS`) is answered after that wait (capped by [`ReplayConfig::max_await`]), as a server without topology changes does |
//! | `ping`, `endSessions` | `{ok: 1}` |
//! | `aggregate` | a cursor (id [`ReplayConfig::cursor_id`]) with an empty `firstBatch` and a `postBatchResumeToken` |
//! | `getMore` | `nextBatch` = [`ReplayConfig::batch`] (the same events every time; empty for idle round trips), after [`ReplayConfig::get_more_delay`] if set, for **any** cursor id: the reply carries the id the request named |
//! | `killCursors` | `cursorsKilled: [id]` |
//! | anything else | `59 CommandNotFound` |
//!
//! Per request only the reply's `requestID`, `responseTo` and (for getMore) the 8 bytes of
//! the cursor id are written afresh; the rest of the frame is shared. Requests sent with
//! `moreToCome` get no reply. A frame that does not decode closes its connection.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brook_wire::{DecodeLimits, MsgFlags, decode};
use bson::{Document, RawBsonRef, Timestamp, doc};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::frame::encode_msg;
use crate::shapes::{self, HelloOptions};

/// The cluster time every reply of a replay server carries.
const REPLAY_TIME: Timestamp = Timestamp {
    time: 1_732_560_000,
    increment: 1,
};

/// A cursor id written into the getMore reply template to find where the id lives.
const ID_SENTINEL: i64 = 0x5EA7_C0DE_1D5E_7A11;

/// What a [`ReplayServer`] answers.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The events of every getMore reply, in order; empty for idle round trips.
    pub batch: Vec<Document>,
    /// The cursor id the change-stream `aggregate` opens.
    pub cursor_id: i64,
    /// The cursor namespace, `"db.coll"`.
    pub ns: String,
    /// A wait before each getMore reply (a server holding an awaitData getMore); `None`
    /// replies at once.
    pub get_more_delay: Option<Duration>,
    /// What hello replies say; `me`, `primary` and `hosts` are filled in with the
    /// server's own address when empty.
    pub hello: HelloOptions,
    /// The longest wait of an awaitable hello (one with `maxAwaitTimeMS`).
    pub max_await: Duration,
}

impl ReplayConfig {
    /// A 7.0 primary whose getMores all return `batch`, on the cursor `1` of `shop.orders`.
    pub fn new(batch: Vec<Document>) -> ReplayConfig {
        ReplayConfig {
            batch,
            cursor_id: 1,
            ns: "shop.orders".to_owned(),
            get_more_delay: None,
            hello: HelloOptions::default(),
            max_await: Duration::from_secs(10),
        }
    }

    /// Sets the cursor id the `aggregate` opens.
    pub fn with_cursor_id(mut self, id: i64) -> ReplayConfig {
        self.cursor_id = id;
        self
    }

    /// Sets the cursor namespace (`"db.coll"`).
    pub fn with_namespace(mut self, ns: impl Into<String>) -> ReplayConfig {
        self.ns = ns.into();
        self
    }

    /// Waits `delay` before every getMore reply.
    pub fn with_get_more_delay(mut self, delay: Duration) -> ReplayConfig {
        self.get_more_delay = Some(delay);
        self
    }
}

/// `count` insert change events on `ns`, each about `size` bytes of BSON (at least the
/// ~250 bytes of an event whose `fullDocument` holds only an `_id` and a string), with
/// distinct resume tokens and cluster times.
pub fn insert_events(count: usize, ns: &str, size: usize) -> Vec<Document> {
    (0..count)
        .map(|i| {
            let seq = u32::try_from(i).unwrap_or(u32::MAX);
            let ts = Timestamp {
                time: REPLAY_TIME.time,
                increment: seq.saturating_add(1),
            };
            let mut full = doc! { "_id": i64::from(seq), "note": "" };
            let base = shapes::insert_event(ts, ns, full.clone());
            let base_len = bson::serialize_to_vec(&base).map_or(0, |b| b.len());
            full.insert("note", "x".repeat(size.saturating_sub(base_len)));
            shapes::insert_event(ts, ns, full)
        })
        .collect()
}

/// How many requests a [`ReplayServer`] has answered, by kind.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    get_mores: AtomicU64,
    requests: AtomicU64,
}

/// A pre-encoded reply frame.
#[derive(Debug, Clone)]
struct Template {
    frame: Bytes,
    /// Where the 8 bytes of the cursor id are, for replies that echo the request's id.
    cursor_id_at: Option<usize>,
}

impl Template {
    fn new(body: &Document, cursor_id: Option<i64>) -> io::Result<Template> {
        let bytes = bson::serialize_to_vec(body).map_err(invalid)?;
        let frame = encode_msg(0, 0, 0, &bytes, false);
        let cursor_id_at = match cursor_id {
            Some(id) => Some(find_i64(&frame, id).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the cursor id is not in the reply",
                )
            })?),
            None => None,
        };
        Ok(Template {
            frame: Bytes::from(frame),
            cursor_id_at,
        })
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The offset of the only occurrence of `id`'s little-endian bytes in `frame`.
fn find_i64(frame: &[u8], id: i64) -> Option<usize> {
    let needle = id.to_le_bytes();
    let mut hits = frame
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// Every reply a replay server sends, encoded once.
#[derive(Debug)]
struct Replies {
    hello: Template,
    is_master: Template,
    ok: Template,
    aggregate: Template,
    get_more: Template,
    kill_cursors: Template,
    not_found: Template,
    get_more_delay: Option<Duration>,
    max_await: Duration,
}

impl Replies {
    fn new(config: &ReplayConfig, addr: SocketAddr) -> io::Result<Replies> {
        let mut hello = config.hello.clone();
        if hello.me.is_empty() {
            hello.me = addr.to_string();
        }
        let with_hello_ok = |mut d: Document| -> Document {
            d.insert("helloOk", true);
            d
        };
        let hello_doc = with_hello_ok(shapes::hello_reply(&hello, 1, REPLAY_TIME));
        let legacy = HelloOptions {
            legacy: true,
            ..hello
        };
        let is_master_doc = with_hello_ok(shapes::hello_reply(&legacy, 1, REPLAY_TIME));
        let token = shapes::post_batch_resume_token(REPLAY_TIME);
        let cursor = |kind: shapes::BatchKind, batch: Vec<Document>, id: i64| {
            shapes::cursor_reply(
                id,
                &config.ns,
                kind,
                batch,
                Some(token.clone()),
                Some(REPLAY_TIME),
            )
        };
        let aggregate = cursor(shapes::BatchKind::First, Vec::new(), config.cursor_id);
        let get_more = cursor(shapes::BatchKind::Next, config.batch.clone(), ID_SENTINEL);
        let kill = shapes::with_cluster_time(
            shapes::kill_cursors_reply(&[config.cursor_id], &[]),
            REPLAY_TIME,
        );
        let not_found = shapes::command_not_found("unknown");
        let mut get_more = Template::new(&get_more, Some(ID_SENTINEL))?;
        // The template answers the aggregate's cursor unless a request names another.
        if let Some(at) = get_more.cursor_id_at {
            let mut frame = get_more.frame.to_vec();
            if let Some(slot) = frame.get_mut(at..at + 8) {
                slot.copy_from_slice(&config.cursor_id.to_le_bytes());
            }
            get_more.frame = Bytes::from(frame);
        }
        Ok(Replies {
            hello: Template::new(&hello_doc, None)?,
            is_master: Template::new(&is_master_doc, None)?,
            ok: Template::new(&shapes::ok_reply(), None)?,
            aggregate: Template::new(&aggregate, None)?,
            get_more,
            kill_cursors: Template::new(&kill, None)?,
            not_found: Template::new(&not_found, None)?,
            get_more_delay: config.get_more_delay,
            max_await: config.max_await,
        })
    }
}

/// A running replay server. Dropping it (or [`shutdown`](Self::shutdown)) stops the
/// listener and closes every connection.
#[derive(Debug)]
pub struct ReplayServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    get_more_len: usize,
    task: Option<JoinHandle<()>>,
}

impl ReplayServer {
    /// Encodes every reply of `config` and starts serving on `127.0.0.1:0`.
    ///
    /// Fails when the listener cannot bind, or when a reply cannot be encoded (an event
    /// with a key BSON cannot hold): both reported as [`io::Error`]s.
    pub async fn start(config: ReplayConfig) -> io::Result<ReplayServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let replies = Arc::new(Replies::new(&config, addr)?);
        let get_more_len = replies.get_more.frame.len();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, replies, Arc::clone(&counters)));
        Ok(ReplayServer {
            addr,
            counters,
            get_more_len,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mongodb://127.0.0.1:<port>/?directConnection=true`.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.addr)
    }

    /// The length in bytes of every getMore reply frame.
    pub fn get_more_reply_len(&self) -> usize {
        self.get_more_len
    }

    /// How many getMores were answered so far.
    pub fn get_mores(&self) -> u64 {
        self.counters.get_mores.load(Ordering::Relaxed)
    }

    /// How many requests of any kind were answered so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Stops the listener and closes every connection, and waits until they are gone.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _aborted = task.await;
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, replies: Arc<Replies>, counters: Arc<Counters>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(stream, Arc::clone(&replies), Arc::clone(&counters)));
                }
                // Out of file descriptors and the like: wait a little and go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_done) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What to do with one request.
enum Answer<'a> {
    /// Send this template, with the cursor id patched when given.
    Send(&'a Template, Option<i64>),
    /// Wait, then send (with the cursor id patched when given).
    After(Duration, &'a Template, Option<i64>),
}

fn answer<'a>(replies: &'a Replies, body: &bson::RawDocument, counters: &Counters) -> Answer<'a> {
    let Some(Ok((name, value))) = body.iter().next() else {
        return Answer::Send(&replies.not_found, None);
    };
    match name.as_str() {
        "getMore" => {
            counters.get_mores.fetch_add(1, Ordering::Relaxed);
            let id = match value {
                RawBsonRef::Int64(id) => Some(id),
                RawBsonRef::Int32(id) => Some(i64::from(id)),
                _ => None,
            };
            match replies.get_more_delay {
                Some(delay) if !delay.is_zero() => Answer::After(delay, &replies.get_more, id),
                _ => Answer::Send(&replies.get_more, id),
            }
        }
        "hello" | "isMaster" | "ismaster" => {
            let template = if name.as_str() == "hello" {
                &replies.hello
            } else {
                &replies.is_master
            };
            let wait = match body.get("maxAwaitTimeMS") {
                Ok(Some(RawBsonRef::Int64(ms))) => u64::try_from(ms).ok(),
                Ok(Some(RawBsonRef::Int32(ms))) => u64::try_from(ms).ok(),
                _ => None,
            };
            match wait {
                Some(ms) => Answer::After(
                    Duration::from_millis(ms).min(replies.max_await),
                    template,
                    None,
                ),
                None => Answer::Send(template, None),
            }
        }
        "ping" | "endSessions" => Answer::Send(&replies.ok, None),
        "aggregate" => Answer::Send(&replies.aggregate, None),
        "killCursors" => Answer::Send(&replies.kill_cursors, None),
        _ => Answer::Send(&replies.not_found, None),
    }
}

async fn serve(mut stream: TcpStream, replies: Arc<Replies>, counters: Arc<Counters>) {
    let _nodelay = stream.set_nodelay(true);
    let limits = DecodeLimits::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut reply_id: i32 = 0;
    loop {
        loop {
            let decoded = match decode(&mut buf, &limits) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(_) => return,
            };
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let request = decoded.message;
            let (template, id) = match answer(&replies, request.body.as_raw(), &counters) {
                Answer::Send(t, id) => (t, id),
                Answer::After(wait, t, id) => {
                    tokio::time::sleep(wait).await;
                    (t, id)
                }
            };
            if request.flags.contains(MsgFlags::MORE_TO_COME) {
                continue;
            }
            reply_id = reply_id.wrapping_add(1);
            if write_reply(&mut stream, template, reply_id, request.request_id, id)
                .await
                .is_err()
            {
                return;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes `template` with a fresh header (and cursor id) in one vectored write.
async fn write_reply<W: AsyncWrite + Unpin>(
    out: &mut W,
    template: &Template,
    request_id: i32,
    response_to: i32,
    cursor_id: Option<i64>,
) -> io::Result<()> {
    let frame = &template.frame[..];
    let mut header = [0u8; 16];
    let Some(head) = frame.get(..16) else {
        return Err(invalid("a reply template is shorter than a header"));
    };
    header.copy_from_slice(head);
    header[4..8].copy_from_slice(&request_id.to_le_bytes());
    header[8..12].copy_from_slice(&response_to.to_le_bytes());
    let id_bytes = cursor_id.map(i64::to_le_bytes);
    let (a, b) = match (template.cursor_id_at, &id_bytes) {
        (Some(at), Some(_)) => (
            frame.get(16..at).unwrap_or_default(),
            frame.get(at + 8..).unwrap_or_default(),
        ),
        _ => (frame.get(16..).unwrap_or_default(), &[][..]),
    };
    let id_slice: &[u8] = match &id_bytes {
        Some(bytes) if template.cursor_id_at.is_some() => bytes,
        _ => &[],
    };
    let mut slices = [
        IoSlice::new(&header),
        IoSlice::new(a),
        IoSlice::new(id_slice),
        IoSlice::new(b),
    ];
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = out.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn request(id: i32, body: &Document) -> Vec<u8> {
        let bytes = bson::serialize_to_vec(body).expect("serialises");
        encode_msg(id, 0, 0, &bytes, false)
    }

    async fn round_trip(stream: &mut TcpStream, id: i32, body: &Document) -> (i32, Document) {
        stream.write_all(&request(id, body)).await.expect("write");
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.expect("length");
        let len = usize::try_from(i32::from_le_bytes(head)).expect("positive");
        let mut rest = vec![0u8; len - 4];
        stream.read_exact(&mut rest).await.expect("frame");
        let response_to = i32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let doc = bson::deserialize_from_slice(&rest[17..]).expect("a document");
        (response_to, doc)
    }

    #[test]
    fn events_have_the_asked_size() {
        for size in [300, 2048] {
            let events = insert_events(3, "shop.orders", size);
            assert_eq!(events.len(), 3);
            for e in &events {
                let len = bson::serialize_to_vec(e).expect("serialises").len();
                assert!(len.abs_diff(size) <= 8, "{len} vs {size}");
                assert_eq!(e.get_str("operationType").expect("op"), "insert");
            }
            assert_ne!(events[0].get("_id"), events[1].get("_id"));
        }
    }

    #[test]
    fn a_unique_id_is_found_and_a_repeated_one_is_not() {
        let mut frame = vec![0u8; 40];
        frame[10..18].copy_from_slice(&7i64.to_le_bytes());
        assert_eq!(find_i64(&frame, 7), Some(10));
        frame[20..28].copy_from_slice(&7i64.to_le_bytes());
        assert_eq!(find_i64(&frame, 7), None);
        assert_eq!(find_i64(&frame, 9), None);
    }

    #[tokio::test]
    async fn answers_the_commands_of_a_change_stream() {
        let batch = insert_events(2, "shop.orders", 300);
        let server = ReplayServer::start(ReplayConfig::new(batch.clone()).with_cursor_id(42))
            .await
            .expect("starts");
        let mut s = TcpStream::connect(server.addr()).await.expect("connects");

        let (to, hello) = round_trip(&mut s, 5, &doc! { "hello": 1, "$db": "admin" }).await;
        assert_eq!(to, 5);
        assert_eq!(hello.get_bool("isWritablePrimary").ok(), Some(true));
        assert_eq!(hello.get_bool("helloOk").ok(), Some(true));
        assert_eq!(hello.get_i32("logicalSessionTimeoutMinutes").ok(), Some(30));
        assert_eq!(
            hello.get_str("me").ok(),
            Some(server.addr().to_string().as_str())
        );
        let (_, legacy) = round_trip(&mut s, 6, &doc! { "isMaster": 1, "$db": "admin" }).await;
        assert_eq!(legacy.get_bool("ismaster").ok(), Some(true));

        let agg = doc! { "aggregate": "orders", "pipeline": [{ "$changeStream": {} }], "cursor": {}, "$db": "shop" };
        let (_, reply) = round_trip(&mut s, 7, &agg).await;
        let cursor = reply.get_document("cursor").expect("cursor");
        assert_eq!(cursor.get_i64("id").ok(), Some(42));
        assert!(
            cursor
                .get_array("firstBatch")
                .expect("firstBatch")
                .is_empty()
        );
        assert!(cursor.get_document("postBatchResumeToken").is_ok());

        for (req, id) in [(8, 42i64), (9, 77), (10, -3)] {
            let gm = doc! { "getMore": id, "collection": "orders", "$db": "shop" };
            let (to, reply) = round_trip(&mut s, req, &gm).await;
            assert_eq!(to, req);
            let cursor = reply.get_document("cursor").expect("cursor");
            assert_eq!(cursor.get_i64("id").ok(), Some(id));
            let next: Vec<Document> = cursor
                .get_array("nextBatch")
                .expect("nextBatch")
                .iter()
                .filter_map(|b| b.as_document().cloned())
                .collect();
            assert_eq!(next, batch);
        }
        let (_, kill) = round_trip(
            &mut s,
            11,
            &doc! { "killCursors": "orders", "cursors": [42i64], "$db": "shop" },
        )
        .await;
        assert_eq!(kill.get_array("cursorsKilled").expect("killed").len(), 1);
        let (_, ping) = round_trip(&mut s, 12, &doc! { "ping": 1, "$db": "admin" }).await;
        assert_eq!(ping.get_f64("ok").ok(), Some(1.0));
        let (_, other) = round_trip(&mut s, 13, &doc! { "find": "x", "$db": "shop" }).await;
        assert_eq!(other.get_i32("code").ok(), Some(59));

        assert_eq!(server.get_mores(), 3);
        assert_eq!(server.requests(), 9);
        assert_eq!(server.connections(), 1);
        assert!(server.get_more_reply_len() > 600);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn delays_getmores_and_awaitable_hellos_and_closes_on_garbage() {
        let config = ReplayConfig::new(Vec::new()).with_get_more_delay(Duration::from_millis(50));
        let server = ReplayServer::start(config).await.expect("starts");
        let mut s = TcpStream::connect(server.addr()).await.expect("connects");
        let started = std::time::Instant::now();
        let (_, reply) = round_trip(
            &mut s,
            1,
            &doc! { "getMore": 1i64, "collection": "orders", "$db": "shop" },
        )
        .await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        let cursor = reply.get_document("cursor").expect("cursor");
        assert!(cursor.get_array("nextBatch").expect("nextBatch").is_empty());
        let started = std::time::Instant::now();
        let awaitable = doc! { "hello": 1, "topologyVersion": { "counter": 6i64 }, "maxAwaitTimeMS": 40i64, "$db": "admin" };
        let _ = round_trip(&mut s, 2, &awaitable).await;
        assert!(started.elapsed() >= Duration::from_millis(40));

        s.write_all(&[8, 0, 0, 0, 1, 2, 3, 4]).await.expect("write");
        let mut byte = [0u8; 1];
        let n = s.read(&mut byte).await.expect("read");
        assert_eq!(n, 0, "a frame shorter than a header closes the connection");
        drop(server);
    }
}
