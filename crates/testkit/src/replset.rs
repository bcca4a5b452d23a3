//! A replica set of fake members: elections, step-downs, kills, restarts, blackholes, and
//! one change-event log every primary serves change streams from.
//!
//! Each member is a [`FakeServer`] (so it records commands and takes queued actions and a
//! handler like any fake server); what a member does by default comes from the set's state,
//! held here and shared by all members.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bson::oid::ObjectId;
use bson::{Bson, Document, Timestamp, doc};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

use crate::TestkitError;
use crate::listen::lock;
use crate::record::ReceivedCommand;
use crate::server::{FakeServer, ServerConfig};
use crate::shapes::{self, BatchKind, HelloOptions, Topology, codes};

/// The default `batchSize` of a change-stream cursor, as a server's.
const DEFAULT_BATCH_SIZE: usize = 101;
/// How long [`ReplicaSet::stop`] lets in-flight operations take their shutdown errors
/// before the member closes its connections.
const STOP_GRACE: Duration = Duration::from_millis(50);

/// How a [`ReplicaSet`] is made.
///
/// The [`Default`] is three MongoDB 7.0 members of the set `rs0`.
///
/// ```
/// use brook_testkit::ReplicaSetConfig;
/// let config = ReplicaSetConfig { members: 5, ..ReplicaSetConfig::new("rs1") };
/// assert_eq!(config.set_name, "rs1");
/// ```
#[derive(Debug, Clone)]
pub struct ReplicaSetConfig {
    /// How many members (at least one; 0 is taken as 1).
    pub members: usize,
    /// The set's name (`setName`, and `replicaSet` in [`ReplicaSet::uri`]).
    pub set_name: String,
    /// What every member starts from: wire version, compressors, checksums, the longest
    /// wait of a change-stream getMore (`max_await`), a handler. Its hello topology, `me`
    /// and `hosts` are replaced by each member's own.
    pub member: ServerConfig,
    /// Each member's `tags` in its hello (by index; a member without an entry, or with
    /// an empty document, reports none), for read preferences with tag sets.
    pub tags: Vec<Document>,
}

impl Default for ReplicaSetConfig {
    fn default() -> Self {
        ReplicaSetConfig::new("rs0")
    }
}

impl ReplicaSetConfig {
    /// Three MongoDB 7.0 members of the set `set_name`.
    pub fn new(set_name: impl Into<String>) -> ReplicaSetConfig {
        let set_name = set_name.into();
        ReplicaSetConfig {
            members: 3,
            member: ServerConfig::replica_set(set_name.clone()),
            set_name,
            tags: Vec::new(),
        }
    }

    /// Give the members these `tags` (by index), as `members[].tags` of a real set's
    /// configuration shows in each member's hello.
    pub fn with_tags(mut self, tags: Vec<Document>) -> ReplicaSetConfig {
        self.tags = tags;
        self
    }

    /// Set `maxWireVersion` of every member (21 for 7.0, 25 for 8.0).
    pub fn with_max_wire_version(mut self, version: i32) -> ReplicaSetConfig {
        self.member.hello.max_wire_version = version;
        self
    }

    /// Set the longest wait of a change-stream getMore (the request's `maxTimeMS` is
    /// capped by it; 1 s by default).
    pub fn with_max_await(mut self, max_await: Duration) -> ReplicaSetConfig {
        self.member.max_await = max_await;
        self
    }
}

/// A member's `topologyVersion`: which process answers, and how many times its hello has
/// changed since that process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyVersion {
    /// `processId`: a new ObjectId each time the member (re)starts.
    pub process_id: ObjectId,
    /// `counter`: bumped on every change of the member's state or view of the set.
    pub counter: i64,
}

/// One change-stream cursor a member opened.
#[derive(Debug, Clone)]
struct StreamCursor {
    /// Index into the event log of the next event to return.
    position: usize,
    /// How many fragments of the event at `position` were returned already (a stream
    /// ending with `$changeStreamSplitLargeEvent` returns a large event in fragments).
    fragment: usize,
    /// The pipeline ends with `$changeStreamSplitLargeEvent`.
    split: bool,
    ns: String,
    /// Opened with a read preference other than `primary` (a secondary may serve it).
    secondary_ok: bool,
}

#[derive(Debug)]
struct MemberState {
    up: bool,
    blackholed: bool,
    stopping: bool,
    version: TopologyVersion,
    cursors: HashMap<i64, StreamCursor>,
}

impl MemberState {
    fn new() -> MemberState {
        MemberState {
            up: true,
            blackholed: false,
            stopping: false,
            version: TopologyVersion {
                process_id: ObjectId::new(),
                counter: 0,
            },
            cursors: HashMap::new(),
        }
    }
}

#[derive(Debug)]
struct LoggedEvent {
    data: String,
    ts: Timestamp,
    event: Document,
    /// The event's BSON size.
    size: usize,
}

/// Where a change stream reads next: an event of the log, and how many of its fragments
/// were returned already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    index: usize,
    fragment: usize,
}

impl Position {
    fn at(index: usize) -> Position {
        Position { index, fragment: 0 }
    }
}

#[derive(Debug)]
struct SetInner {
    members: Vec<MemberState>,
    primary: Option<usize>,
    term: i64,
    set_version: i32,
    clock_base: u32,
    clock_increment: u32,
    events: Vec<LoggedEvent>,
    /// Events before this index rolled off the oplog ([`ReplicaSet::truncate_history`]);
    /// their entries stay (without their documents) so that indices and tokens stay put.
    history_start: usize,
    /// The time of the oldest entry left in the oplog, once history was truncated: a
    /// resume from an earlier point fails with 286 ChangeStreamHistoryLost.
    oldest: Option<Timestamp>,
    next_cursor_id: i64,
}

impl SetInner {
    fn tick(&mut self) -> Timestamp {
        self.clock_increment = self.clock_increment.wrapping_add(1);
        self.now()
    }

    fn now(&self) -> Timestamp {
        Timestamp {
            time: self.clock_base,
            increment: self.clock_increment,
        }
    }

    fn member(&mut self, index: usize) -> Result<&mut MemberState, TestkitError> {
        let members = self.members.len();
        self.members
            .get_mut(index)
            .ok_or(TestkitError::NoSuchMember { index, members })
    }

    /// Bump the topology counter of every member that is up (each one's hello changed).
    fn bump_all(&mut self) {
        for m in self.members.iter_mut().filter(|m| m.up) {
            m.version.counter += 1;
        }
    }

    /// Where a stream resumed after resume token `data` reads next: after the event of
    /// the token, or after the fragment of a split event it names.
    fn position_after(&self, data: &str) -> Position {
        if let Some(i) = self.events.iter().position(|e| e.data == data) {
            return Position::at(i + 1);
        }
        let fragment = self.events.iter().enumerate().find_map(|(i, e)| {
            shapes::fragment_of(&e.data, data).map(|k| Position {
                index: i,
                fragment: usize::try_from(k).unwrap_or(usize::MAX),
            })
        });
        match fragment {
            Some(position) => position,
            // A high-water-mark token (or an unknown one): tokens sort like their times.
            None => Position::at(
                self.events
                    .iter()
                    .take_while(|e| e.data.as_str() <= data)
                    .count(),
            ),
        }
    }

    /// The `postBatchResumeToken` of a cursor at `position` after a batch.
    fn post_batch_token(&mut self, position: Position) -> Document {
        if position.fragment > 0
            && let Some(e) = self.events.get(position.index)
        {
            let k = u32::try_from(position.fragment).unwrap_or(u32::MAX);
            if let Some(token) = shapes::fragment_resume_token(&doc! { "_data": &e.data }, k) {
                return token;
            }
        }
        if position.index >= self.events.len() {
            let ts = self.tick();
            return shapes::post_batch_resume_token(ts);
        }
        match position
            .index
            .checked_sub(1)
            .and_then(|i| self.events.get(i))
        {
            Some(e) => doc! { "_data": e.data.clone() },
            None => shapes::post_batch_resume_token(Timestamp {
                time: self.clock_base,
                increment: 0,
            }),
        }
    }

    /// Take up to `batch_size` events (or fragments, for a `split` stream) from
    /// `position`, within the 16 MiB a reply's batch may carry (at least one document);
    /// the batch and where the cursor stands after it. An event over 16 MiB fails the
    /// batch with 10334 BSONObjectTooLarge unless the stream splits it, and an event with
    /// a single field too large to split fails it too.
    fn batch(
        &self,
        mut position: Position,
        batch_size: usize,
        split: bool,
    ) -> Result<(Vec<Document>, Position), Document> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < batch_size {
            let Some(e) = self.events.get(position.index) else {
                break;
            };
            if e.size <= shapes::MAX_BSON_OBJECT_SIZE && position.fragment == 0 {
                if !batch.is_empty() && bytes + e.size > shapes::MAX_BSON_OBJECT_SIZE {
                    break;
                }
                batch.push(e.event.clone());
                bytes += e.size;
                position = Position::at(position.index + 1);
                continue;
            }
            if !split {
                return Err(too_large(e));
            }
            let fragments = shapes::split_event(&e.event, shapes::MAX_BSON_OBJECT_SIZE)
                .map_err(|field| unsplittable(e, &field))?;
            let Some(fragment) = fragments.get(position.fragment) else {
                // Resumed after the last fragment: the next event.
                position = Position::at(position.index + 1);
                continue;
            };
            let size = shapes::bson_size(fragment);
            if !batch.is_empty() && bytes + size > shapes::MAX_BSON_OBJECT_SIZE {
                break;
            }
            batch.push(fragment.clone());
            bytes += size;
            position.fragment += 1;
            if position.fragment == fragments.len() {
                position = Position::at(position.index + 1);
            }
        }
        Ok((batch, position))
    }

    /// The 286 ChangeStreamHistoryLost of a resume from `from`, if the oplog no longer
    /// goes back that far.
    fn history_lost(&self, from: Timestamp) -> Option<Document> {
        let oldest = self.oldest?;
        (from < oldest).then(|| {
            let (code, name) = codes::CHANGE_STREAM_HISTORY_LOST;
            shapes::error_reply(
                code,
                name,
                "Resume of change stream was not possible, as the resume point may no longer \
                 be in the oplog.",
                &[],
            )
        })
    }
}

/// The cluster time a resume token `_data` of the testkit's starts with (`82`, then the
/// seconds and the increment as 8 hex digits each).
fn token_time(data: &str) -> Option<Timestamp> {
    let rest = data.strip_prefix("82")?;
    let time = u32::from_str_radix(rest.get(..8)?, 16).ok()?;
    let increment = u32::from_str_radix(rest.get(8..16)?, 16).ok()?;
    Some(Timestamp { time, increment })
}

/// 10334 BSONObjectTooLarge for an event over 16 MiB, worded as a server's.
fn too_large(e: &LoggedEvent) -> Document {
    let (code, name) = codes::BSON_OBJECT_TOO_LARGE;
    let message = format!(
        "Executor error during getMore :: caused by :: BSONObj size: {size} (0x{size:X}) is \
         invalid. Size must be between 0 and 16793600(16MB) First element: _id: {{ _data: \
         \"{data}\" }}",
        size = e.size,
        data = e.data,
    );
    shapes::error_reply(code, name, &message, &[])
}

/// 10334 BSONObjectTooLarge for an event `$changeStreamSplitLargeEvent` cannot split.
fn unsplittable(e: &LoggedEvent, field: &shapes::UnsplittableField) -> Document {
    let (code, name) = codes::BSON_OBJECT_TOO_LARGE;
    let message = format!(
        "Could not split a change event of {} bytes into fragments: its field '{}' alone \
         takes {} bytes",
        e.size, field.field, field.size,
    );
    shapes::error_reply(code, name, &message, &[])
}

/// 136 CappedPositionLost for a getMore whose next event rolled off the oplog.
fn capped_position_lost(position: Position) -> Document {
    let (code, name) = codes::CAPPED_POSITION_LOST;
    let message = format!(
        "CollectionScan died due to position in capped collection being deleted. Last seen \
         record id: RecordId({})",
        position.index
    );
    shapes::error_reply(code, name, &message, &[])
}

/// Whether an aggregate's pipeline ends with `$changeStreamSplitLargeEvent`.
fn splits_large_events(body: &Document) -> bool {
    body.get_array("pipeline")
        .ok()
        .and_then(|p| p.last())
        .and_then(Bson::as_document)
        .is_some_and(|stage| stage.contains_key("$changeStreamSplitLargeEvent"))
}

/// State every member of one set shares.
#[derive(Debug)]
struct SetState {
    set_name: String,
    hosts: Vec<String>,
    tags: Vec<Document>,
    inner: Mutex<SetInner>,
    /// Woken on every change: an election, a step-down, a kill, an event, a blackhole lifted.
    changed: Notify,
}

impl SetState {
    fn changed(&self) {
        self.changed.notify_waiters();
    }
}

/// What an awaitable hello waits for: a topology version other than the one it names,
/// or the end of its `maxAwaitTimeMS`.
#[derive(Debug, Clone)]
pub(crate) struct AwaitHello {
    seen: TopologyVersion,
    max_await: Duration,
}

impl AwaitHello {
    /// The wait of the next reply of an exhaust stream, after `reply` was sent.
    pub(crate) fn after(&self, reply: &Document) -> AwaitHello {
        AwaitHello {
            seen: topology_version_of(reply).unwrap_or(self.seen),
            max_await: self.max_await,
        }
    }
}

fn topology_version_of(doc: &Document) -> Option<TopologyVersion> {
    let tv = doc.get_document("topologyVersion").ok()?;
    Some(TopologyVersion {
        process_id: tv.get_object_id("processId").ok()?,
        counter: as_i64(tv.get("counter"))?,
    })
}

fn as_i64(value: Option<&Bson>) -> Option<i64> {
    match value {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) if v.is_finite() => Some(*v as i64),
        _ => None,
    }
}

fn as_usize(value: Option<&Bson>) -> Option<usize> {
    as_i64(value).and_then(|v| usize::try_from(v).ok())
}

/// A fake server's link to the member it plays.
#[derive(Debug, Clone)]
pub(crate) struct MemberLink {
    set: Arc<SetState>,
    index: usize,
}

/// The `$changeStream` stage of an aggregate, if its pipeline opens with one.
fn change_stream_stage(body: &Document) -> Option<&Document> {
    match body.get_array("pipeline").ok()?.first()? {
        Bson::Document(stage) => stage.get_document("$changeStream").ok(),
        _ => None,
    }
}

/// Whether a command's `$readPreference` lets a secondary serve it.
fn secondary_ok(body: &Document) -> bool {
    body.get_document("$readPreference")
        .ok()
        .and_then(|rp| rp.get_str("mode").ok())
        .is_some_and(|mode| mode != "primary")
}

fn is_write(name: &str) -> bool {
    matches!(name, "insert" | "update" | "delete" | "findAndModify")
}

impl MemberLink {
    /// The set's cluster time.
    pub(crate) fn cluster_time(&self) -> Timestamp {
        lock(&self.set.inner).now()
    }

    pub(crate) fn blackholed(&self) -> bool {
        lock(&self.set.inner)
            .members
            .get(self.index)
            .is_some_and(|m| m.blackholed)
    }

    /// Read and drop whatever the client sends until it closes the connection or the
    /// blackhole is lifted (then the connection is closed: what it carried is lost).
    pub(crate) async fn swallow(&self, stream: &mut TcpStream) {
        let mut sink = [0u8; 1024];
        loop {
            let notified = self.set.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.blackholed() {
                return;
            }
            tokio::select! {
                read = stream.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = &mut notified => {}
            }
        }
    }

    /// The wait of `cmd`, if it is an awaitable hello (`topologyVersion` and
    /// `maxAwaitTimeMS`).
    pub(crate) fn awaitable_hello(&self, cmd: &ReceivedCommand) -> Option<AwaitHello> {
        if !matches!(cmd.name.as_str(), "hello" | "isMaster" | "ismaster") {
            return None;
        }
        let seen = topology_version_of(&cmd.body)?;
        let ms = as_i64(cmd.body.get("maxAwaitTimeMS")).and_then(|v| u64::try_from(v).ok())?;
        Some(AwaitHello {
            seen,
            max_await: Duration::from_millis(ms),
        })
    }

    /// The reply to an awaitable hello: at once if the member's topology version is not
    /// the one the client saw, else when it changes or the wait ends.
    pub(crate) async fn await_hello(
        &self,
        base: &HelloOptions,
        cmd: &ReceivedCommand,
        wait: &AwaitHello,
    ) -> Option<Document> {
        let deadline = tokio::time::Instant::now() + wait.max_await;
        loop {
            let notified = self.set.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = lock(&self.set.inner);
                let member = inner.members.get(self.index)?;
                if member.stopping {
                    return Some(shutdown_in_progress(&[]));
                }
                if member.version != wait.seen {
                    return Some(self.hello(&mut inner, base, cmd));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut inner = lock(&self.set.inner);
                return Some(self.hello(&mut inner, base, cmd));
            }
        }
    }

    /// This member's hello reply.
    fn hello(&self, inner: &mut SetInner, base: &HelloOptions, cmd: &ReceivedCommand) -> Document {
        let ts = inner.tick();
        let mut opts = base.clone();
        let set_name = self.set.set_name.clone();
        let is_primary = inner.primary == Some(self.index);
        opts.topology = if is_primary {
            Topology::ReplicaSetPrimary { set_name }
        } else {
            Topology::ReplicaSetSecondary { set_name }
        };
        opts.hosts = self.set.hosts.clone();
        opts.me = self.set.hosts.get(self.index).cloned().unwrap_or_default();
        if let Some(member) = inner.members.get(self.index) {
            opts.process_id = member.version.process_id;
            opts.topology_counter = member.version.counter;
        }
        opts.election_id = election_id(inner.term);
        opts.set_version = inner.set_version;
        let connection_id = i64::try_from(cmd.connection_id).unwrap_or(i64::MAX);
        let mut reply = shapes::hello_reply(&opts, connection_id, ts);
        if let Some(tags) = self.set.tags.get(self.index).filter(|t| !t.is_empty()) {
            reply.insert("tags", tags.clone());
        }
        let primary = inner
            .primary
            .filter(|_| !is_primary)
            .and_then(|p| self.set.hosts.get(p));
        match primary {
            // A secondary names the primary it knows, right after `secondary`.
            Some(primary) => {
                let mut out = Document::new();
                for (key, value) in reply {
                    let after = key == "secondary";
                    out.insert(key, value);
                    if after {
                        out.insert("primary", primary.as_str());
                    }
                }
                out
            }
            None => reply,
        }
    }

    /// The member's own answer to `cmd`, or `None` for the fake server's default.
    pub(crate) async fn answer(
        &self,
        config: &ServerConfig,
        cmd: &ReceivedCommand,
    ) -> Option<Document> {
        let name = cmd.name.as_str();
        if matches!(name, "hello" | "isMaster" | "ismaster") {
            let base = crate::server::hello_options(config, cmd);
            let mut inner = lock(&self.set.inner);
            return Some(self.hello(&mut inner, &base, cmd));
        }
        if name == "getMore" {
            return Some(self.get_more(config, cmd).await);
        }
        let stream = name == "aggregate" && change_stream_stage(&cmd.body).is_some();
        let retryable_write = is_write(name) && cmd.body.contains_key("txnNumber");
        let mut inner = lock(&self.set.inner);
        let now = inner.now();
        let member = inner.members.get(self.index)?;
        if member.stopping {
            let labels: &[&str] = if stream {
                &[shapes::RESUMABLE_CHANGE_STREAM_ERROR]
            } else if retryable_write {
                &[shapes::RETRYABLE_WRITE_ERROR]
            } else {
                &[]
            };
            return Some(shapes::with_cluster_time(shutdown_in_progress(labels), now));
        }
        let is_primary = inner.primary == Some(self.index);
        match name {
            "aggregate" if stream => Some(self.open_stream(&mut inner, cmd, is_primary)),
            "killCursors" => {
                let ids: Vec<i64> = match cmd.body.get("cursors") {
                    Some(Bson::Array(items)) => {
                        items.iter().filter_map(|b| as_i64(Some(b))).collect()
                    }
                    _ => Vec::new(),
                };
                let cursors = &mut inner.members.get_mut(self.index)?.cursors;
                let (killed, not_found): (Vec<i64>, Vec<i64>) =
                    ids.into_iter().partition(|id| cursors.remove(id).is_some());
                Some(shapes::with_cluster_time(
                    shapes::kill_cursors_reply(&killed, &not_found),
                    now,
                ))
            }
            _ if is_write(name) && !is_primary => {
                let labels: &[&str] = if retryable_write {
                    &[shapes::RETRYABLE_WRITE_ERROR]
                } else {
                    &[]
                };
                Some(shapes::with_cluster_time(not_writable_primary(labels), now))
            }
            "insert" => {
                let ns = format!(
                    "{}.{}",
                    cmd.db,
                    cmd.body.get_str("insert").unwrap_or_default()
                );
                let documents: Vec<Document> = match cmd.sequence("documents") {
                    Some(docs) => docs.to_vec(),
                    None => cmd
                        .body
                        .get_array("documents")
                        .map(|docs| {
                            docs.iter()
                                .filter_map(|d| d.as_document().cloned())
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let n = i32::try_from(documents.len()).unwrap_or(i32::MAX);
                let mut last = now;
                for document in documents {
                    let (_event, ts) = append(&mut inner, shapes::insert_event(now, &ns, document));
                    last = ts;
                }
                drop(inner);
                self.set.changed();
                Some(shapes::WriteReply::new(n).at(last).to_document())
            }
            _ => None,
        }
    }

    fn open_stream(
        &self,
        inner: &mut SetInner,
        cmd: &ReceivedCommand,
        is_primary: bool,
    ) -> Document {
        let secondary_ok = secondary_ok(&cmd.body);
        if !is_primary && !secondary_ok {
            let now = inner.now();
            return shapes::with_cluster_time(
                not_writable_primary(&[shapes::RESUMABLE_CHANGE_STREAM_ERROR]),
                now,
            );
        }
        let stage = change_stream_stage(&cmd.body).cloned().unwrap_or_default();
        let token = stage
            .get_document("startAfter")
            .or_else(|_| stage.get_document("resumeAfter"))
            .ok()
            .and_then(|t| t.get_str("_data").ok());
        let at = stage.get_timestamp("startAtOperationTime").ok();
        let from = match token {
            Some(data) => token_time(data),
            None => at,
        };
        if let Some(lost) = from.and_then(|from| inner.history_lost(from)) {
            let now = inner.now();
            return shapes::with_cluster_time(lost, now);
        }
        let position = match (token, at) {
            (Some(data), _) => inner.position_after(data),
            (None, Some(at)) => Position::at(inner.events.iter().take_while(|e| e.ts < at).count()),
            (None, None) => Position::at(inner.events.len()),
        };
        let split = splits_large_events(&cmd.body);
        let batch_size = cmd
            .body
            .get_document("cursor")
            .ok()
            .and_then(|c| as_usize(c.get("batchSize")))
            .unwrap_or(DEFAULT_BATCH_SIZE);
        let (batch, position) = match inner.batch(position, batch_size, split) {
            Ok(served) => served,
            Err(error) => {
                let now = inner.now();
                return shapes::with_cluster_time(error, now);
            }
        };
        let ns = match cmd.body.get_str("aggregate") {
            Ok(coll) => format!("{}.{coll}", cmd.db),
            Err(_) => format!("{}.$cmd.aggregate", cmd.db),
        };
        let id = inner.next_cursor_id;
        inner.next_cursor_id += 1;
        if let Some(member) = inner.members.get_mut(self.index) {
            member.cursors.insert(
                id,
                StreamCursor {
                    position: position.index,
                    fragment: position.fragment,
                    split,
                    ns: ns.clone(),
                    secondary_ok,
                },
            );
        }
        let token = inner.post_batch_token(position);
        let now = inner.now();
        shapes::cursor_reply(id, &ns, BatchKind::First, batch, Some(token), Some(now))
    }

    async fn get_more(&self, config: &ServerConfig, cmd: &ReceivedCommand) -> Document {
        let id = as_i64(cmd.body.get("getMore")).unwrap_or(0);
        let wait = as_i64(cmd.body.get("maxTimeMS"))
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(config.max_await, Duration::from_millis)
            .min(config.max_await);
        let batch_size = as_usize(cmd.body.get("batchSize")).unwrap_or(DEFAULT_BATCH_SIZE);
        let deadline = tokio::time::Instant::now() + wait;
        let mut timed_out = false;
        let mut waited = false;
        loop {
            let notified = self.set.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = lock(&self.set.inner);
                let now = inner.now();
                let is_primary = inner.primary == Some(self.index);
                let Some(member) = inner.members.get_mut(self.index) else {
                    return shapes::cursor_not_found(id);
                };
                if member.stopping {
                    // A new getMore finds the member shutting down; a waiting one is
                    // interrupted.
                    let labels = &[shapes::RESUMABLE_CHANGE_STREAM_ERROR];
                    let reply = if waited {
                        member.cursors.remove(&id);
                        let (code, name) = codes::INTERRUPTED_AT_SHUTDOWN;
                        shapes::error_reply(code, name, "interrupted at shutdown", labels)
                    } else {
                        shutdown_in_progress(labels)
                    };
                    return shapes::with_cluster_time(reply, now);
                }
                let Some(cursor) = member.cursors.get(&id).cloned() else {
                    return shapes::with_cluster_time(shapes::cursor_not_found(id), now);
                };
                if !is_primary && !cursor.secondary_ok {
                    return shapes::with_cluster_time(
                        not_writable_primary(&[shapes::RESUMABLE_CHANGE_STREAM_ERROR]),
                        now,
                    );
                }
                let from = Position {
                    index: cursor.position,
                    fragment: cursor.fragment,
                };
                let served = if from.index < inner.history_start {
                    Err(capped_position_lost(from))
                } else {
                    inner.batch(from, batch_size, cursor.split)
                };
                let (batch, position) = match served {
                    Ok(served) => served,
                    Err(error) => {
                        // The cursor dies with its error, as a server's does.
                        if let Some(m) = inner.members.get_mut(self.index) {
                            m.cursors.remove(&id);
                        }
                        return shapes::with_cluster_time(error, now);
                    }
                };
                if !batch.is_empty() || timed_out {
                    if let Some(c) = inner
                        .members
                        .get_mut(self.index)
                        .and_then(|m| m.cursors.get_mut(&id))
                    {
                        c.position = position.index;
                        c.fragment = position.fragment;
                    }
                    let token = inner.post_batch_token(position);
                    let now = inner.now();
                    return shapes::cursor_reply(
                        id,
                        &cursor.ns,
                        BatchKind::Next,
                        batch,
                        Some(token),
                        Some(now),
                    );
                }
            }
            waited = true;
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                timed_out = true;
            }
        }
    }
}

/// Append `event` to the log with the next cluster time and resume token; the event as
/// logged and its time.
fn append(inner: &mut SetInner, event: Document) -> (Document, Timestamp) {
    let ts = inner.tick();
    let seq = u32::try_from(inner.events.len()).unwrap_or(u32::MAX);
    let token = shapes::resume_token(ts, seq);
    let data = token.get_str("_data").unwrap_or_default().to_owned();
    let mut logged = doc! { "_id": token };
    for (key, value) in event {
        match key.as_str() {
            "_id" => {}
            "clusterTime" => {
                logged.insert(key, ts);
            }
            "wallTime" => {
                let millis = i64::from(ts.time).saturating_mul(1000);
                logged.insert(key, bson::DateTime::from_millis(millis));
            }
            _ => {
                logged.insert(key, value);
            }
        }
    }
    if !logged.contains_key("clusterTime") {
        logged.insert("clusterTime", ts);
    }
    inner.events.push(LoggedEvent {
        data,
        ts,
        size: shapes::bson_size(&logged),
        event: logged.clone(),
    });
    (logged, ts)
}

/// The electionId of `term`, as a server makes it: the largest timestamp, then the term.
fn election_id(term: i64) -> ObjectId {
    let mut bytes = [0u8; 12];
    let (head, tail) = bytes.split_at_mut(4);
    head.copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    tail.copy_from_slice(&term.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

fn not_writable_primary(labels: &[&str]) -> Document {
    let (code, name) = codes::NOT_WRITABLE_PRIMARY;
    shapes::error_reply(code, name, "not primary", labels)
}

fn shutdown_in_progress(labels: &[&str]) -> Document {
    let (code, name) = codes::SHUTDOWN_IN_PROGRESS;
    shapes::error_reply(
        code,
        name,
        "The server is in quiesce mode and will shut down",
        labels,
    )
}

/// Bind `addr` with `SO_REUSEADDR`, so that a member can listen again on its port while
/// its old connections linger in TIME_WAIT.
pub(crate) async fn bind_reusing(addr: SocketAddr) -> Result<TcpListener, TestkitError> {
    let rebind = |source| TestkitError::Rebind { addr, source };
    let socket = TcpSocket::new_v4().map_err(rebind)?;
    socket.set_reuseaddr(true).map_err(rebind)?;
    socket.bind(addr).map_err(rebind)?;
    socket.listen(1024).map_err(rebind)
}

/// A replica set of fake members on `127.0.0.1`, scripted from the test: elect, step down,
/// kill, restart, blackhole, and feed change events that any primary serves.
///
/// Every member answers hello as a MongoDB 7.0/8.0 member does (`setName`, `hosts`, `me`,
/// `primary`, `isWritablePrimary`/`secondary`, `setVersion`, `electionId`,
/// `topologyVersion`, `lastWrite`, `logicalSessionTimeoutMinutes`…), and an awaitable
/// hello (`topologyVersion` + `maxAwaitTimeMS`) waits for the member's next state change,
/// streaming one `moreToCome` reply per change or wait when the request allowed exhaust.
///
/// The set keeps one change-event log ([`ReplicaSet::insert_event`],
/// [`ReplicaSet::append_event`]; inserts sent to the primary are logged too). A
/// change-stream aggregate on the primary opens a cursor at the end of the log, or right
/// after the event of its `resumeAfter`/`startAfter` token, or at its
/// `startAtOperationTime`; getMores return the next events (up to `batchSize`, 101 by
/// default) or, after the request's `maxTimeMS` (capped by the member's
/// [`ServerConfig::max_await`]), an empty batch with a `postBatchResumeToken`. So a stream
/// resumed on a new primary after a failover continues exactly after its token.
///
/// The log is the set's oplog: [`ReplicaSet::truncate_history`] rolls it over, after which
/// a resume from a point no longer in it fails with 286 ChangeStreamHistoryLost. Events
/// are served as a MongoDB 7/8 primary serves them: a batch stays within 16 MiB (at least
/// one document); an event over 16 MiB fails the aggregate or getMore with 10334
/// BSONObjectTooLarge, unless the pipeline ends with `{$changeStreamSplitLargeEvent: {}}`:
/// then it comes as fragments ([`shapes::split_event`]), each with its own resume token,
/// and resuming after fragment k continues with fragment k + 1. Members accept requests
/// up to 48,000,000 bytes ([`ServerConfig::max_message_size`]), and frame replies of any
/// size (a reply carrying a fragment of nearly 16 MiB is a little over it).
///
/// A member that is not primary answers writes with 10107 NotWritablePrimary (labelled
/// `RetryableWriteError` when the write carries a `txnNumber`), and change-stream
/// aggregates and getMores of cursors opened with the primary read preference with 10107
/// labelled `ResumableChangeStreamError` (an aggregate whose `$readPreference` is not
/// `primary` is served). A getMore of a cursor another member opened (or one lost in a
/// restart) gets 43 CursorNotFound.
///
/// Each member is scripted like any [`FakeServer`] ([`ReplicaSet::member`]): its queued
/// actions, then its handler, come before the set's behaviour, which replaces the fake
/// server's defaults ([`crate::Action::Default`]); commands the set does not care about
/// (ping, find, buildInfo…) get the fake server's default replies, gossiping the set's
/// cluster time. Change a member's state through the set, not through
/// [`FakeServer::shutdown`].
///
/// Dropping the set (or [`ReplicaSet::shutdown`]) closes everything.
///
/// # Example
///
/// ```
/// use bson::doc;
/// use brook_testkit::{ReplicaSet, ReplicaSetConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), brook_testkit::TestkitError> {
/// let set = ReplicaSet::start(ReplicaSetConfig { members: 3, ..ReplicaSetConfig::new("rs0") }).await?;
/// assert!(set.uri().ends_with("/?replicaSet=rs0"));
/// assert_eq!(set.primary(), Some(0));
/// set.insert_event("shop.orders", doc! { "_id": 1 });
/// set.step_down().await;
/// set.elect(2).await?;
/// assert_eq!(set.primary(), Some(2));
/// set.kill(0).await?;
/// set.restart(0).await?;
/// set.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReplicaSet {
    set: Arc<SetState>,
    members: Vec<FakeServer>,
}

impl ReplicaSet {
    /// Start the members on ports the OS picks, member 0 primary (term 1). Must be called
    /// inside a tokio runtime.
    pub async fn start(config: ReplicaSetConfig) -> Result<ReplicaSet, TestkitError> {
        let count = config.members.max(1);
        let mut listeners = Vec::with_capacity(count);
        for _ in 0..count {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(TestkitError::Bind)?;
            listeners.push(listener);
        }
        let mut hosts = Vec::with_capacity(count);
        for listener in &listeners {
            hosts.push(
                listener
                    .local_addr()
                    .map_err(TestkitError::Bind)?
                    .to_string(),
            );
        }
        let clock_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(1_700_000_000);
        let set = Arc::new(SetState {
            set_name: config.set_name.clone(),
            hosts: hosts.clone(),
            tags: config.tags.clone(),
            inner: Mutex::new(SetInner {
                members: (0..count).map(|_| MemberState::new()).collect(),
                primary: Some(0),
                term: 1,
                set_version: 1,
                clock_base,
                clock_increment: 1,
                events: Vec::new(),
                history_start: 0,
                oldest: None,
                next_cursor_id: 0x0002_0000_0000_0001,
            }),
            changed: Notify::new(),
        });
        let mut members = Vec::with_capacity(count);
        for (index, (listener, me)) in listeners.into_iter().zip(hosts.iter()).enumerate() {
            let mut member = config.member.clone();
            member.hello.topology = Topology::replica_set(config.set_name.clone());
            member.hello.me = me.clone();
            member.hello.hosts = hosts.clone();
            let link = MemberLink {
                set: Arc::clone(&set),
                index,
            };
            members.push(FakeServer::start_member(listener, member, link)?);
        }
        Ok(ReplicaSet { set, members })
    }

    /// `mongodb://127.0.0.1:<p1>,127.0.0.1:<p2>,…/?replicaSet=<name>`: point any driver
    /// at it.
    pub fn uri(&self) -> String {
        format!(
            "mongodb://{}/?replicaSet={}",
            self.set.hosts.join(","),
            self.set.set_name
        )
    }

    /// The set's name.
    pub fn set_name(&self) -> &str {
        &self.set.set_name
    }

    /// Every member's `127.0.0.1:<port>`, in member order (the `hosts` of hello).
    pub fn hosts(&self) -> &[String] {
        &self.set.hosts
    }

    /// How many members the set has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Member `index`: its address, port, recorded commands, queued actions and handler.
    ///
    /// # Panics
    ///
    /// If the set has no member `index` (like indexing a slice).
    pub fn member(&self, index: usize) -> &FakeServer {
        match self.members.get(index) {
            Some(member) => member,
            None => panic!(
                "the replica set has {} members: there is no member {index}",
                self.members.len()
            ),
        }
    }

    /// Every member, in order.
    pub fn members(&self) -> &[FakeServer] {
        &self.members
    }

    /// The index of the primary, if there is one.
    pub fn primary(&self) -> Option<usize> {
        lock(&self.set.inner).primary
    }

    /// The `electionId` of the latest election (the primary's, while there is one).
    pub fn election_id(&self) -> ObjectId {
        election_id(lock(&self.set.inner).term)
    }

    /// The set's `setVersion`.
    pub fn set_version(&self) -> i32 {
        lock(&self.set.inner).set_version
    }

    /// Member `index`'s current `topologyVersion`.
    pub fn topology_version(&self, index: usize) -> Result<TopologyVersion, TestkitError> {
        Ok(lock(&self.set.inner).member(index)?.version)
    }

    /// Whether member `index` is up (not killed or stopped).
    pub fn is_up(&self, index: usize) -> Result<bool, TestkitError> {
        Ok(lock(&self.set.inner).member(index)?.up)
    }

    /// The set's latest cluster time (each event and each member reply advances it).
    pub fn cluster_time(&self) -> Timestamp {
        lock(&self.set.inner).now()
    }

    fn update<T>(
        &self,
        f: impl FnOnce(&mut SetInner) -> Result<T, TestkitError>,
    ) -> Result<T, TestkitError> {
        let out = f(&mut lock(&self.set.inner));
        self.set.changed();
        out
    }

    /// The primary steps down: it becomes a secondary and the set has no primary until
    /// [`ReplicaSet::elect`]. Every live member's topology counter is bumped. Without a
    /// primary, nothing happens.
    pub async fn step_down(&self) {
        let _ = self.update(|inner| {
            if inner.primary.take().is_some() {
                inner.bump_all();
            }
            Ok(())
        });
    }

    /// Member `index` wins an election: it becomes primary with a new, larger `electionId`
    /// (the term grows by one), the former primary (if another) becomes a secondary, and
    /// every live member's topology counter is bumped. The member must be up.
    pub async fn elect(&self, index: usize) -> Result<(), TestkitError> {
        self.update(|inner| {
            if !inner.member(index)?.up {
                return Err(TestkitError::MemberDown(index));
            }
            inner.primary = Some(index);
            inner.term += 1;
            inner.bump_all();
            Ok(())
        })
    }

    /// A reconfiguration: `setVersion` grows by one and every live member's topology
    /// counter is bumped.
    pub async fn reconfig(&self) {
        let _ = self.update(|inner| {
            inner.set_version += 1;
            inner.bump_all();
            Ok(())
        });
    }

    /// Kill member `index` at once (as SIGKILL would): its listener and every connection
    /// close without a reply, its cursors are lost, and if it was primary the set has no
    /// primary until [`ReplicaSet::elect`] (the others' topology counters are bumped). Its
    /// port stays reserved for [`ReplicaSet::restart`]. Killing a dead member does nothing.
    pub async fn kill(&self, index: usize) -> Result<(), TestkitError> {
        self.update(|inner| {
            let member = inner.member(index)?;
            member.up = false;
            member.stopping = false;
            member.blackholed = false;
            member.cursors.clear();
            if inner.primary == Some(index) {
                inner.primary = None;
                inner.bump_all();
            }
            Ok(())
        })?;
        self.member(index).shutdown().await;
        Ok(())
    }

    /// Shut member `index` down cleanly: for a moment (50 ms) it answers every new command
    /// but hello with 91 ShutdownInProgress (labelled `ResumableChangeStreamError` for
    /// change-stream commands, `RetryableWriteError` for retryable writes), a waiting change-stream
    /// getMore with 11600 InterruptedAtShutdown and a waiting awaitable hello with 91;
    /// then it goes down as [`ReplicaSet::kill`] does.
    pub async fn stop(&self, index: usize) -> Result<(), TestkitError> {
        self.update(|inner| {
            let member = inner.member(index)?;
            if !member.up {
                return Ok(());
            }
            member.stopping = true;
            member.version.counter += 1;
            if inner.primary == Some(index) {
                inner.primary = None;
                inner.bump_all();
            }
            Ok(())
        })?;
        tokio::time::sleep(STOP_GRACE).await;
        self.kill(index).await
    }

    /// Bring member `index` back on the same port, as a new process: a new
    /// `topologyVersion.processId` with counter 0, as a secondary, without cursors.
    /// Restarting a member that is up kills it first.
    pub async fn restart(&self, index: usize) -> Result<(), TestkitError> {
        if self.member(index).is_listening() || self.is_up(index)? {
            self.kill(index).await?;
        }
        self.update(|inner| {
            *inner.member(index)? = MemberState::new();
            Ok(())
        })?;
        self.member(index).relisten().await
    }

    /// Member `index` still accepts connections and reads requests, but never answers
    /// anything (nor records what it reads) until [`ReplicaSet::unblackhole`]: a client sees
    /// its requests time out. Replies already being prepared are swallowed too.
    pub async fn blackhole(&self, index: usize) -> Result<(), TestkitError> {
        self.update(|inner| {
            inner.member(index)?.blackholed = true;
            Ok(())
        })
    }

    /// Lift the blackhole of member `index`: connections that were swallowed close (what
    /// they carried is lost); new requests are answered again.
    pub async fn unblackhole(&self, index: usize) -> Result<(), TestkitError> {
        self.update(|inner| {
            inner.member(index)?.blackholed = false;
            Ok(())
        })
    }

    /// Cut member `index` off the network: for clients, the same as
    /// [`ReplicaSet::blackhole`] (the other members' views do not change).
    pub async fn partition(&self, index: usize) -> Result<(), TestkitError> {
        self.blackhole(index).await
    }

    /// Heal the partition of member `index` ([`ReplicaSet::unblackhole`]).
    pub async fn heal(&self, index: usize) -> Result<(), TestkitError> {
        self.unblackhole(index).await
    }

    /// Append a change event to the set's log. Its `_id` becomes the next resume token
    /// `{_data}` (larger than every earlier one), its `clusterTime` (and `wallTime`, if it
    /// has one) the next cluster time; everything else is kept. Returns the event as
    /// logged, as a change stream will return it.
    pub fn append_event(&self, event: Document) -> Document {
        let (logged, _ts) = append(&mut lock(&self.set.inner), event);
        self.set.changed();
        logged
    }

    /// Append an `insert` event of `full_document` into `ns` (`"db.coll"`); see
    /// [`ReplicaSet::append_event`].
    pub fn insert_event(&self, ns: &str, full_document: Document) -> Document {
        let placeholder = Timestamp {
            time: 0,
            increment: 0,
        };
        self.append_event(shapes::insert_event(placeholder, ns, full_document))
    }

    /// Every event of the log still in the oplog (see [`ReplicaSet::truncate_history`]),
    /// in order.
    pub fn events(&self) -> Vec<Document> {
        let inner = lock(&self.set.inner);
        inner
            .events
            .iter()
            .skip(inner.history_start)
            .map(|e| e.event.clone())
            .collect()
    }

    /// The oplog rolls over: every event but the newest `keep_last` is dropped (keeping
    /// more than are left changes nothing). As on a real replica set:
    ///
    /// * a change-stream aggregate that resumes from an earlier point than the oldest
    ///   entry left — `resumeAfter`/`startAfter` a token, or `startAtOperationTime`, older
    ///   than that entry — fails with 286 ChangeStreamHistoryLost (no error label: a
    ///   driver must not resume); a resume from a point still in the oplog (an event kept,
    ///   a high-water-mark token at or after the oldest entry) works as before;
    /// * a getMore of an open cursor whose next event was dropped fails with 136
    ///   CappedPositionLost, and the cursor is gone.
    ///
    /// When every event is dropped, the oldest entry is a no-op written now: only points
    /// from now on can be resumed from.
    pub fn truncate_history(&self, keep_last: usize) {
        let _ = self.update(|inner| {
            let start = inner.events.len().saturating_sub(keep_last);
            if start <= inner.history_start {
                return Ok(());
            }
            let old = inner.history_start;
            for e in inner.events.iter_mut().take(start).skip(old) {
                e.event = Document::new();
            }
            inner.history_start = start;
            let oldest = match inner.events.get(start) {
                Some(e) => e.ts,
                None => inner.tick(),
            };
            inner.oldest = Some(oldest);
            Ok(())
        });
    }

    /// Stop every member and close every connection.
    pub async fn shutdown(&self) {
        for member in &self.members {
            member.shutdown().await;
        }
    }
}
