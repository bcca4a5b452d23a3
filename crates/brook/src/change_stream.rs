//! Change streams: [`WatchBuilder`] and [`ChangeStream`], the IO driver of the sans-IO
//! [`ChangeStreamMachine`].
//!
//! The machine decides every command and every resume; this module runs the commands
//! it hands out on the stream's own connection and feeds the outcomes back. See the
//! [crate docs](crate#change-streams) for the user's view.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Outgoing, Target};
use brook_command::{Command, Reply, SharedDoc};
use brook_conn::ServerAddress;
use bson::{Bson, Document, Timestamp};
use futures_core::Stream;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};
use crate::event::split::Reassembler;
use crate::event::{ChangeStreamEvent, RawChangeEvent, ResumeToken};
use crate::exec::{
    Body, Bound, Deadline, Executor, GetMoreCache, KillAt, Lease, PooledConn,
    Target as ServerTarget,
};
use crate::options::ReadPreference;
use crate::resume::{
    HistoryGap, HistoryLost, ResumeCause, ResumeEvent, ResumeHandler, ResumeOutcome, ResumePolicy,
};
use crate::session::{ClientSession, ExplicitSession, HeldSession, LsidOnly, SessionRef};
use crate::stats::{Counters, StreamStats};
use tracing::{debug, info, warn};

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// The `fullDocument` option of a change stream: which post-image `update` events carry.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FullDocument {
    /// `"default"`: only inserts and replaces carry the document.
    Default,
    /// `"updateLookup"`: updates carry the document as it is when the event is read.
    UpdateLookup,
    /// `"whenAvailable"`: the stored post-image when there is one (pre- and post-images
    /// enabled on the collection).
    WhenAvailable,
    /// `"required"`: the stored post-image, or the server fails the stream.
    Required,
    /// Any other value, sent as is (for options of servers newer than brook).
    Other(String),
}

impl FullDocument {
    /// The value sent to the server.
    pub fn as_str(&self) -> &str {
        match self {
            FullDocument::Default => "default",
            FullDocument::UpdateLookup => "updateLookup",
            FullDocument::WhenAvailable => "whenAvailable",
            FullDocument::Required => "required",
            FullDocument::Other(s) => s,
        }
    }
}

impl From<&str> for FullDocument {
    /// The known values by their server names; anything else is [`FullDocument::Other`].
    fn from(s: &str) -> Self {
        match s {
            "default" => FullDocument::Default,
            "updateLookup" => FullDocument::UpdateLookup,
            "whenAvailable" => FullDocument::WhenAvailable,
            "required" => FullDocument::Required,
            other => FullDocument::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for FullDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `fullDocumentBeforeChange` option of a change stream: which pre-image events
/// carry.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FullDocumentBeforeChange {
    /// `"off"`: no pre-image.
    Off,
    /// `"whenAvailable"`: the stored pre-image when there is one.
    WhenAvailable,
    /// `"required"`: the stored pre-image, or the server fails the stream.
    Required,
    /// Any other value, sent as is.
    Other(String),
}

impl FullDocumentBeforeChange {
    /// The value sent to the server.
    pub fn as_str(&self) -> &str {
        match self {
            FullDocumentBeforeChange::Off => "off",
            FullDocumentBeforeChange::WhenAvailable => "whenAvailable",
            FullDocumentBeforeChange::Required => "required",
            FullDocumentBeforeChange::Other(s) => s,
        }
    }
}

impl From<&str> for FullDocumentBeforeChange {
    /// The known values by their server names; anything else is
    /// [`FullDocumentBeforeChange::Other`].
    fn from(s: &str) -> Self {
        match s {
            "off" => FullDocumentBeforeChange::Off,
            "whenAvailable" => FullDocumentBeforeChange::WhenAvailable,
            "required" => FullDocumentBeforeChange::Required,
            other => FullDocumentBeforeChange::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for FullDocumentBeforeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------------------

/// What a [`ChangeStream`] yields: made from each event document as the server sent it.
///
/// Implemented for [`ChangeStreamEvent<T>`] (decoded in one pass, images as `T`) and
/// [`RawChangeEvent`] (no decoding at all: the event shares the reply's buffer).
/// Implement it for a type of your own to decode events another way.
pub trait ChangeStreamItem: Sized {
    /// Makes an item from one event. An error here is returned by the stream for that
    /// event only: the stream's resume token has already moved past it, and the stream
    /// stays usable.
    fn from_event(event: RawChangeEvent) -> Result<Self, Error>;
}

impl<T: DeserializeOwned> ChangeStreamItem for ChangeStreamEvent<T> {
    fn from_event(event: RawChangeEvent) -> Result<Self, Error> {
        ChangeStreamEvent::from_slice(event.as_bytes())
    }
}

impl ChangeStreamItem for RawChangeEvent {
    fn from_event(event: RawChangeEvent) -> Result<Self, Error> {
        Ok(event)
    }
}

// ---------------------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------------------

/// What a stream watches, as the facade's handles know it.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    Collection { db: String, coll: String },
    Database(String),
    Cluster,
}

impl Scope {
    fn target(self) -> Target {
        match self {
            Scope::Collection { db, coll } => Target::collection(db, coll),
            Scope::Database(db) => Target::database(db),
            Scope::Cluster => Target::Cluster,
        }
    }
}

/// A change stream waiting to be opened: set options, then `.await` it for a
/// [`ChangeStream`]. Made by [`Collection::watch`](crate::Collection::watch),
/// [`Database::watch`](crate::Database::watch) and [`Client::watch`](crate::Client::watch).
///
/// Awaiting it runs the initial `aggregate`; its errors are returned as they are (the
/// initial `aggregate` is never resumed). Nothing is validated on the client: unknown
/// `fullDocument` values and several start options at once go to the server, which
/// judges them.
///
/// ```
/// use std::time::Duration;
/// use bson::doc;
/// use brook::{ChangeStreamEvent, FullDocument, RawChangeEvent};
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// struct Order { sku: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use brook_testkit::{ReplicaSet, ReplicaSetConfig};
/// # let set = ReplicaSet::start(ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(100))).await?;
/// # let client = brook::Client::connect(&set.uri()).await?;
/// let shop = client.database("shop");
/// let orders = shop.collection::<Order>("orders");
///
/// // Typed: `ChangeStreamEvent<Order>`, filtered on the server.
/// let mut typed = orders
///     .watch()
///     .pipeline(vec![doc! { "$match": { "operationType": "insert" } }])
///     .full_document(FullDocument::UpdateLookup)
///     .max_await_time(Duration::from_millis(500))
///     .batch_size(100)
///     .await?;
/// // Undecoded events of the whole database, read in place.
/// let mut raw = shop.watch().raw().await?;
/// # set.insert_event("shop.orders", doc! { "_id": 1, "sku": "apple" });
///
/// let event: ChangeStreamEvent<Order> = typed.next().await.expect("open")?;
/// assert_eq!(event.full_document.map(|o| o.sku).as_deref(), Some("apple"));
/// let event: RawChangeEvent = raw.next().await.expect("open")?;
/// assert_eq!(event.as_document().get_str("operationType")?, "insert");
///
/// // Later (another process): continue right after that event.
/// let token = event.resume_token().expect("every event has an _id");
/// let mut resumed = orders.watch().resume_after(token).await?;
/// # set.insert_event("shop.orders", doc! { "_id": 2, "sku": "pear" });
/// let next = resumed.next().await.expect("open")?;
/// assert_eq!(next.full_document.map(|o| o.sku).as_deref(), Some("pear"));
/// # for stream in [typed, resumed] { stream.close().await?; }
/// # raw.close().await?;
/// # client.shutdown().await;
/// # set.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a change stream is opened only when the builder is awaited"]
pub struct WatchBuilder<E> {
    exec: Arc<Executor>,
    scope: Scope,
    options: ChangeStreamOptions,
    session: Option<Arc<ExplicitSession>>,
    read_preference: ReadPreference,
    policy: StreamPolicy,
    /// `timeoutMS`: the handle's, or set on the builder.
    timeout: Option<Duration>,
    /// Whether `$changeStreamSplitLargeEvent` ends the pipeline.
    split_large_events: bool,
    _marker: PhantomData<fn() -> E>,
}

/// What a stream does when resumes fail or its history is lost, and whom it tells.
#[derive(Clone, Default)]
struct StreamPolicy {
    resume: ResumePolicy,
    history_lost: HistoryLost,
    on_resume: Option<ResumeHandler>,
}

impl<E> fmt::Debug for WatchBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchBuilder")
            .field("scope", &self.scope)
            .field("options", &self.options)
            .field("explicit_session", &self.session.is_some())
            .field("resume_policy", &self.policy.resume)
            .field("history_lost", &self.policy.history_lost)
            .finish_non_exhaustive()
    }
}

impl<E> WatchBuilder<E> {
    pub(crate) fn new(exec: Arc<Executor>, scope: Scope, read_preference: ReadPreference) -> Self {
        WatchBuilder {
            exec,
            scope,
            options: ChangeStreamOptions::default(),
            session: None,
            read_preference,
            policy: StreamPolicy::default(),
            timeout: None,
            split_large_events: false,
            _marker: PhantomData,
        }
    }

    /// The `timeoutMS` of the handle the stream was made from.
    pub(crate) fn inherit_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// `timeoutMS` for this stream (the collection's, database's or client's by
    /// default), as the Client Side Operations Timeout specification says for change
    /// streams: it bounds the opening `aggregate` (which carries `maxTimeMS` = the time
    /// left minus the server's round trip) and then each call —
    /// [`next`](ChangeStream::next), [`next_if_any`](ChangeStream::next_if_any),
    /// [`next_batch`](ChangeStream::next_batch), each item of the `Stream` — with
    /// everything the call does (getMores, a whole resume). It never becomes a
    /// getMore's `maxTimeMS`: that is [`max_await_time`](Self::max_await_time), which
    /// must then be less than the timeout (else opening fails, nothing sent). A call
    /// that times out returns an error whose `is_timeout()` is true and leaves the
    /// stream alive, its token intact: the command in flight is abandoned with its
    /// connection, and the next call resumes. `Duration::ZERO`: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Stages appended after `$changeStream` (e.g. a `$match`). A stage that removes or
    /// changes `_id` makes the stream fail: the server refuses it (280), or brook reports
    /// the missing resume token.
    pub fn pipeline(mut self, stages: impl IntoIterator<Item = Document>) -> Self {
        self.options.pipeline = stages.into_iter().collect();
        self
    }

    /// `fullDocument`.
    pub fn full_document(mut self, value: FullDocument) -> Self {
        self.options.full_document = Some(value.as_str().to_owned());
        self
    }

    /// `fullDocumentBeforeChange`.
    pub fn full_document_before_change(mut self, value: FullDocumentBeforeChange) -> Self {
        self.options.full_document_before_change = Some(value.as_str().to_owned());
        self
    }

    /// `resumeAfter`: start after the event with this token.
    pub fn resume_after(mut self, token: ResumeToken) -> Self {
        self.options.resume_after = Some(token.into_shared());
        self
    }

    /// `startAfter`: like `resumeAfter`, and it may be an `invalidate` event's token.
    pub fn start_after(mut self, token: ResumeToken) -> Self {
        self.options.start_after = Some(token.into_shared());
        self
    }

    /// `startAtOperationTime`.
    pub fn start_at_operation_time(mut self, time: Timestamp) -> Self {
        self.options.start_at_operation_time = Some(time);
        self
    }

    /// How long each `getMore` waits on the server for new events (its `maxTimeMS`; never
    /// sent on the `aggregate`). The server's default is one second.
    pub fn max_await_time(mut self, wait: Duration) -> Self {
        self.options.max_await_time = Some(wait);
        self
    }

    /// Events per batch: `cursor.batchSize` of the `aggregate` and `batchSize` of each
    /// `getMore`.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.options.batch_size = Some(n);
        self
    }

    /// `collation` of the `aggregate`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.options.collation = Some(collation);
        self
    }

    /// `comment` of the `aggregate`, and of each `getMore` on servers of wire version 9
    /// (4.4) or more.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.options.comment = Some(comment.into());
        self
    }

    /// `showExpandedEvents` (DDL events such as `create`, `createIndexes`...).
    pub fn show_expanded_events(mut self, show: bool) -> Self {
        self.options.show_expanded_events = Some(show);
        self
    }

    /// The read preference that selects the server of the stream's `aggregate` (the
    /// first and every resume's): the collection's, database's or client's by default
    /// (primary unless the connection string says otherwise). Its `getMore`s follow the
    /// cursor to that server.
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = read_preference;
        self
    }

    /// Run every command of the stream in this session: the `aggregate`, each `getMore`
    /// and `killCursors`, and the `aggregate` of every resume carry its `lsid`. Without
    /// it the stream takes an implicit session for its whole life. The stream keeps a
    /// handle to the session, so it may outlive the `ClientSession` value.
    pub fn session(mut self, session: &ClientSession) -> Self {
        self.session = Some(Arc::clone(&session.inner));
        self
    }

    /// Events over 16 MiB (a document near the limit with its pre- and post-image, a
    /// large update description): a server fails the stream with 10334
    /// `BSONObjectTooLarge` on such an event, unless the pipeline ends with
    /// `$changeStreamSplitLargeEvent` (MongoDB 7.0 and 6.0.9), which makes it send the
    /// event in fragments. `true` adds that stage (after your own) and hands out each
    /// such event whole: the fragments put back together, with the last fragment's
    /// `_id`. Until the last fragment arrived the stream's
    /// [`resume_token`](ChangeStream::resume_token) stays the one before the event; a
    /// resume in the middle continues from the last fragment received, as the server
    /// allows. An event that is too large in one field cannot be split: the server's
    /// error ends the stream.
    pub fn split_large_events(mut self, split: bool) -> Self {
        self.split_large_events = split;
        self
    }

    /// What the stream does when a resume fails: [`ResumePolicy::once`] (the
    /// specification's, the default) ends the stream with the error;
    /// [`ResumePolicy::backoff`] tries again with a growing, jittered delay, within its
    /// caps. See [`ResumePolicy`].
    pub fn resume_policy(mut self, policy: ResumePolicy) -> Self {
        self.policy.resume = policy;
        self
    }

    /// What the stream does when its token has fallen off the oplog (286
    /// `ChangeStreamHistoryLost`): [`HistoryLost::Fail`] (the default) or
    /// [`HistoryLost::RestartFromNow`].
    pub fn on_history_lost(mut self, action: HistoryLost) -> Self {
        self.policy.history_lost = action;
        self
    }

    /// Called after every resume attempt of the stream (successful or not) with what
    /// caused it, the token it resumed from and the server it went to. Every resume is
    /// also logged (`tracing`, target `brook::change_stream`), and the last one is kept
    /// as [`ChangeStream::last_resume`].
    pub fn on_resume(mut self, handler: impl Fn(&ResumeEvent) + Send + Sync + 'static) -> Self {
        self.policy.on_resume = Some(Arc::new(handler));
        self
    }

    /// Yield events whose `fullDocument` / `fullDocumentBeforeChange` decode as `U`.
    pub fn with_type<U>(self) -> WatchBuilder<ChangeStreamEvent<U>> {
        self.cast()
    }

    /// Yield [`RawChangeEvent`]s: the documents as the server sent them, not decoded.
    pub fn raw(self) -> WatchBuilder<RawChangeEvent> {
        self.cast()
    }

    fn cast<F>(self) -> WatchBuilder<F> {
        WatchBuilder {
            exec: self.exec,
            scope: self.scope,
            options: self.options,
            session: self.session,
            read_preference: self.read_preference,
            policy: self.policy,
            timeout: self.timeout,
            split_large_events: self.split_large_events,
            _marker: PhantomData,
        }
    }

    async fn open(self) -> Result<ChangeStream<E>, Error> {
        let exec = self.exec;
        exec.check_open()?;
        if let (Some(timeout), Some(wait)) = (self.timeout, self.options.max_await_time)
            && !timeout.is_zero()
            && wait >= timeout
        {
            return Err(Error::invalid_argument(format!(
                "maxAwaitTimeMS ({} ms) must be less than timeoutMS ({} ms): each call of a \
                 change stream would time out before its getMore is answered",
                wait.as_millis(),
                timeout.as_millis()
            )));
        }
        let session = match self.session {
            Some(explicit) => {
                if !Arc::ptr_eq(&explicit.pool, exec.sessions()) {
                    return Err(Error::invalid_argument(
                        "the session was started by another client",
                    ));
                }
                HeldSession::Explicit(explicit)
            }
            None => exec.implicit_session(),
        };
        let mut options = self.options;
        if self.split_large_events {
            let mut stage = Document::new();
            stage.insert("$changeStreamSplitLargeEvent", Document::new());
            options.pipeline.push(stage);
        }
        let mut machine = ChangeStreamMachine::new(self.scope.target(), options);
        // The facade decides what a failure that would end the stream means (resume
        // policy, history lost); without a policy it gives up, as the machine would.
        machine.hold_failures(true);
        let mut core = Core {
            lsid: session.lsid().cloned(),
            exec,
            machine,
            conn: None,
            session: Some(session),
            in_flight: None,
            last_error: None,
            get_mores: 0,
            get_more_cache: GetMoreCache::default(),
            read_preference: Arc::new(self.read_preference),
            policy: self.policy,
            counters: Counters::default(),
            attempt: None,
            resume_cause: None,
            consecutive_failed: 0,
            first_failed_at: None,
            backoff: None,
            restarting: None,
            pending_error: None,
            last_resume: None,
            timeout: self.timeout,
            call: None,
            call_timer: None,
            split: self.split_large_events.then(Reassembler::new),
            token_before_split: None,
        };
        // Run the initial aggregate (and nothing else) to completion here, restarting
        // it from now if its token's history is lost and the stream was told to. If this
        // future is dropped meanwhile, the stream's Drop finishes the aggregate in the
        // background and kills the cursor it opened.
        std::future::poll_fn(|cx| core.poll_open(cx)).await;
        if core.machine.cursor_id().is_none()
            && let Some(err) = core.pending_error.take()
        {
            // The opening aggregate ran out of time.
            return Err(err);
        }
        if core.machine.is_closed()
            && let Some(Err(err)) = core.machine.poll_event()
        {
            return Err(core.take_error(err));
        }
        Ok(ChangeStream {
            core,
            _marker: PhantomData,
        })
    }
}

impl<E: ChangeStreamItem + 'static> IntoFuture for WatchBuilder<E> {
    type Output = Result<ChangeStream<E>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}

// ---------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------

/// The outcome of one command, with the connection it ran on (when still usable) and
/// the stream's session, which the command held while it ran.
struct Done {
    /// The reply, and the server it came from.
    outcome: Result<(ServerAddress, Reply), Error>,
    conn: Option<PooledConn>,
    wire_version: Option<i32>,
    session: HeldSession,
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Runs one `aggregate` or `getMore` of the machine. A getMore goes to its cursor's
/// server (`at`); an aggregate to the server selected now by the stream's read
/// preference (the primary after a failover, never the old one), and is retried once on
/// a retryable error (`retryReads`, on by default), on a server selected afresh. On
/// `conn` (the stream's own connection) when it is healthy, of its pool's current
/// generation and on that server; else on a new dedicated connection.
#[allow(clippy::too_many_arguments)]
async fn run_command(
    exec: Arc<Executor>,
    conn: Option<PooledConn>,
    at: Option<ServerAddress>,
    body: Result<Body, Error>,
    mut session: HeldSession,
    bound: Bound,
    preference: Arc<ReadPreference>,
    deadline: Option<Deadline>,
) -> Done {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return Done {
                wire_version: e.wire_version(),
                outcome: Err(e),
                conn,
                session,
            };
        }
    };
    let Some(at) = at else {
        // Boxed: the aggregate's selection, checkout and retry stay out of the future
        // every getMore allocates.
        return Box::pin(run_aggregate(
            exec, conn, body, session, preference, deadline,
        ))
        .await;
    };
    // A getMore on the stream's own healthy connection to the cursor's server goes out
    // at once, without selection: a monitor may already have marked that server Unknown
    // (an election seen through the streaming protocol), and the getMore's own outcome
    // is what decides whether the stream resumes. (The hot path: nothing allocated here.)
    if let Some(mut c) = conn.filter(|c| healthy(c, &at)) {
        let wire = c.description().max_wire_version;
        let outcome = exec
            .run_on_within(&mut c, body, Some(&mut session), bound)
            .await
            .map(|reply| (at, reply));
        // A broken connection goes back to the pool, which closes it.
        return Done {
            outcome,
            conn: (!c.is_broken()).then_some(c),
            wire_version: Some(wire),
            session,
        };
    }
    // Rare (the connection was lost or is stale): boxed, for the same reason.
    let attempt = Box::pin(run_once(
        &exec,
        None,
        ServerTarget::At(&at),
        &[],
        body,
        &mut session,
        bound,
        deadline,
    ))
    .await;
    Done {
        outcome: attempt.outcome,
        conn: attempt.conn,
        wire_version: attempt.wire_version,
        session,
    }
}

/// The stream's aggregate, with the Retryable Reads specification's one retry.
async fn run_aggregate(
    exec: Arc<Executor>,
    conn: Option<PooledConn>,
    body: Body,
    mut session: HeldSession,
    preference: Arc<ReadPreference>,
    deadline: Option<Deadline>,
) -> Done {
    let retry_body = match (&body, exec.options().retry_reads) {
        (_, Some(false)) => None,
        (Body::Built(built), _) => Some(built.clone()),
        (Body::Serialized(_), _) => None,
    };
    let target = ServerTarget::Read(&preference);
    let bound = Bound::Legacy(None);
    let attempt = run_once(
        &exec,
        conn,
        target,
        &[],
        body,
        &mut session,
        bound,
        deadline,
    )
    .await;
    let retry_body = retry_body.filter(|_| is_retryable_read(&attempt.outcome));
    let Some(retry_body) = retry_body else {
        return Done {
            outcome: attempt.outcome,
            conn: attempt.conn,
            wire_version: attempt.wire_version,
            session,
        };
    };
    debug!(server = ?attempt.server, "change stream aggregate failed; retrying once");
    let deprioritized: Vec<ServerAddress> = attempt.server.iter().cloned().collect();
    let retry = run_once(
        &exec,
        attempt.conn,
        target,
        &deprioritized,
        Body::Built(retry_body),
        &mut session,
        bound,
        deadline,
    )
    .await;
    // No server for the retry: the first outcome is the one to report.
    let (outcome, wire_version) = if retry.server.is_none() {
        (attempt.outcome, attempt.wire_version)
    } else {
        (retry.outcome, retry.wire_version)
    };
    Done {
        outcome,
        conn: retry.conn,
        wire_version,
        session,
    }
}

/// Whether an aggregate's outcome is a retryable read error: a failure
/// ([`Error::is_retryable_read`]) or an `ok: 0` reply with a retryable code.
fn is_retryable_read(outcome: &Result<(ServerAddress, Reply), Error>) -> bool {
    match outcome {
        Err(e) => e.is_retryable_read(),
        Ok((_, reply)) => match brook_command::check_ok(reply.body.as_raw()) {
            Err(e @ brook_command::CommandError::Server(_)) => {
                Error::command(e).is_retryable_read()
            }
            _ => false,
        },
    }
}

/// Whether the stream's connection can carry its next command to `at`.
fn healthy(c: &PooledConn, at: &ServerAddress) -> bool {
    !c.is_broken() && !c.is_stale() && c.address() == at
}

/// The outcome of one attempt of a stream's command.
struct Attempt {
    outcome: Result<(ServerAddress, Reply), Error>,
    /// The connection, when still usable.
    conn: Option<PooledConn>,
    /// The wire version of the connection the command ran on.
    wire_version: Option<i32>,
    /// The server selected (`None`: selection failed).
    server: Option<ServerAddress>,
}

/// One attempt: selects for `target` (leaving out `deprioritized` while others are
/// suitable), reuses `conn` when it is on the selected server and healthy, adds the
/// selection's `$readPreference` to a built body, runs it. Under `deadline` (an
/// aggregate under `timeoutMS`) selection and checkout end at the deadline and the
/// command carries `maxTimeMS` (the time left minus the server's round trip).
#[allow(clippy::too_many_arguments)]
async fn run_once(
    exec: &Executor,
    conn: Option<PooledConn>,
    target: ServerTarget<'_>,
    deprioritized: &[ServerAddress],
    mut body: Body,
    session: &mut HeldSession,
    bound: Bound,
    deadline: Option<Deadline>,
) -> Attempt {
    let (address, mut conn, _operation) = match (target, conn) {
        (ServerTarget::At(at), Some(c)) if healthy(&c, at) => (at.clone(), c, None),
        (target, conn) => {
            let selected = match exec.select_within(target, deprioritized, deadline).await {
                Ok(selected) => selected,
                Err(e) => {
                    return Attempt {
                        outcome: Err(e),
                        conn,
                        wire_version: None,
                        server: None,
                    };
                }
            };
            let address = selected.server.address().clone();
            let usable = conn.filter(|c| healthy(c, &address));
            if usable.is_none() && matches!(target, ServerTarget::At(_)) && exec.is_load_balanced()
            {
                // Behind a load balancer the cursor lives on the mongos behind its own
                // connection: a getMore cannot go on another one. A network error: the
                // stream resumes with a new aggregate.
                let lost = brook_conn::ConnError::Io {
                    address: address.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "the change stream's pinned connection was lost",
                    ),
                    wire_version: None,
                };
                return Attempt {
                    outcome: Err(Error::conn(lost)),
                    conn: None,
                    wire_version: None,
                    server: Some(address),
                };
            }
            let (conn, operation) = match usable {
                Some(c) => (c, selected.operation),
                None => match exec
                    .check_out_within(ServerTarget::At(&address), Lease::Dedicated, &[], deadline)
                    .await
                {
                    Ok(checked) => (checked.conn, checked.operation),
                    Err(e) => {
                        return Attempt {
                            outcome: Err(e),
                            conn: None,
                            wire_version: None,
                            server: Some(address),
                        };
                    }
                },
            };
            if let (Body::Built(built), Some(preference)) = (&mut body, selected.read_preference) {
                built.body.insert("$readPreference", preference);
            }
            (address, conn, Some(operation))
        }
    };
    let wire = conn.description().max_wire_version;
    // An aggregate under a deadline carries maxTimeMS; a getMore keeps the bound its
    // caller chose.
    let bound = match (deadline, &body) {
        (Some(deadline), Body::Built(_)) => Bound::Deadline {
            deadline,
            max_time: true,
            min_rtt: exec.min_rtt(&address),
        },
        _ => bound,
    };
    let outcome = exec
        .run_on_within(&mut conn, body, Some(session), bound)
        .await
        .map(|reply| (address.clone(), reply));
    // A broken connection goes back to the pool, which closes it.
    let conn = (!conn.is_broken()).then_some(conn);
    Attempt {
        outcome,
        conn,
        wire_version: Some(wire),
        server: Some(address),
    }
}

/// How far one call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Until an event arrives or the stream ends.
    Blocking,
    /// At most one `getMore`; `true` once it was sent.
    AtMostOneGetMore(bool),
}

/// How long a closed or dropped stream waits for the reply of an `aggregate` it had in
/// flight, to kill the cursor that aggregate opens.
const ORPHAN_AGGREGATE_BOUND: Duration = Duration::from_secs(30);

/// Everything of a stream but its item type.
struct Core {
    exec: Arc<Executor>,
    machine: ChangeStreamMachine<ServerAddress>,
    /// The stream's own connection, while no command runs on it.
    conn: Option<PooledConn>,
    /// The stream's session, while no command runs (the command holds it meanwhile).
    session: Option<HeldSession>,
    /// A copy of the session's lsid, for the `killCursors` sent while the stream holds
    /// its session.
    lsid: Option<Document>,
    /// The command running now, holding the connection and the session.
    in_flight: Option<InFlight>,
    /// The error of the last failed command, reported instead of the machine's summary
    /// of it when the machine closes the stream because of it.
    last_error: Option<Error>,
    get_mores: u64,
    /// The cursor's `getMore`, serialised once per cursor with the lsid.
    get_more_cache: GetMoreCache,
    /// Selects the server of each `aggregate` (the first and every resume's).
    read_preference: Arc<ReadPreference>,
    policy: StreamPolicy,
    counters: Counters,
    /// The resume `aggregate` in flight: the token it resumes from.
    attempt: Option<Option<SharedDoc>>,
    /// The error that started the resume in progress.
    resume_cause: Option<ResumeCause>,
    /// Failed resumes since the last successful one, and when the first of them failed.
    consecutive_failed: u32,
    first_failed_at: Option<std::time::Instant>,
    /// The back-off before the next resume attempt.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A restart from now in progress (history lost): the gap to report once it opened.
    restarting: Option<HistoryGap>,
    /// An error to hand out by the next call, the stream going on after it (a history
    /// gap; a batch's undecodable event).
    pending_error: Option<Error>,
    last_resume: Option<ResumeEvent>,
    /// `timeoutMS` of each call (`None`: not set).
    timeout: Option<Duration>,
    /// The deadline of the call under way, under `timeoutMS`.
    call: Option<Deadline>,
    /// Fires at the call's deadline (kept across calls: reset, not reallocated).
    call_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Puts split events together (`split_large_events`).
    split: Option<Reassembler>,
    /// While an event's fragments arrive: the token before it, the one to show.
    token_before_split: Option<Option<SharedDoc>>,
}

impl Core {
    /// Starts `out`: a `killCursors` goes to the background at once (fire and forget,
    /// bounded; it never delays the resume that follows), an `aggregate` or a `getMore`
    /// becomes the command in flight.
    fn start(&mut self, out: Outgoing<ServerAddress>) {
        let (at, body, bound) = match out {
            Outgoing::KillCursors {
                server,
                db,
                command,
            } => {
                let lsid = LsidOnly(self.lsid.clone());
                self.exec
                    .spawn_kill_cursors(KillAt::Server(server), db, command, lsid);
                return;
            }
            Outgoing::Aggregate {
                db,
                command,
                resume,
            } => {
                self.attempt = resume.then(|| self.machine.resume_token().cloned());
                let body = command.build(&db).map(Body::Built).map_err(Error::command);
                (None, body, Bound::Legacy(None))
            }
            Outgoing::GetMore {
                server,
                db,
                command,
            } => {
                self.get_mores = self.get_mores.saturating_add(1);
                let cluster_time = self.exec.cluster_time();
                let body = self
                    .get_more_cache
                    .body(&db, &command, self.lsid.as_ref(), cluster_time.as_ref())
                    .map(Body::Serialized);
                // Under timeoutMS the call's deadline ends the round trip (the getMore
                // still carries maxAwaitTimeMS, never a maxTimeMS from the timeout);
                // otherwise maxAwaitTimeMS plus a grace.
                let bound = match self.call.filter(|d| d.at().is_some()) {
                    Some(deadline) => Bound::Deadline {
                        deadline,
                        max_time: false,
                        min_rtt: self.exec.min_rtt(&server),
                    },
                    None => Bound::Legacy(Some(
                        self.exec.await_bound(self.machine.options().max_await_time),
                    )),
                };
                (Some(server), body, bound)
            }
        };
        let session = self.session.take().unwrap_or_default();
        // An aggregate under timeoutMS carries maxTimeMS from the call's deadline; a
        // getMore never does (its maxTimeMS is maxAwaitTimeMS) and is bounded by the
        // call's timer.
        let deadline = if at.is_none() { self.call } else { None };
        self.in_flight = Some(Box::pin(run_command(
            Arc::clone(&self.exec),
            self.conn.take(),
            at,
            body,
            session,
            bound,
            Arc::clone(&self.read_preference),
            deadline,
        )));
    }

    /// Polls the command in flight, if any, and feeds its outcome to the machine.
    fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(fut) = self.in_flight.as_mut() {
            let done = match fut.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => return Poll::Pending,
            };
            self.in_flight = None;
            self.apply(done);
        }
        Poll::Ready(())
    }

    /// Feeds a finished command back to the machine.
    fn apply(&mut self, done: Done) {
        self.session = Some(done.session);
        if let Some(conn) = done.conn
            && self.conn.is_none()
        {
            self.conn = Some(conn);
        }
        let resumes = self.machine.resume_count();
        let attempt = self.attempt.take();
        match done.outcome {
            Ok((server, reply)) => {
                let operation_time = match reply.body.as_raw().get("operationTime") {
                    Ok(Some(bson::raw::RawBsonRef::Timestamp(t))) => Some(t),
                    _ => None,
                };
                self.machine
                    .handle_reply(server, done.wire_version.unwrap_or(0), reply);
                let with_events = self.machine.has_buffered_events();
                self.counters.reply(operation_time, with_events);
                if tracing::enabled!(target: "brook::change_stream", tracing::Level::TRACE) {
                    self.trace_stats(with_events);
                }
                if self.machine.resume_count() != resumes
                    && let Some(cause) = self.machine.resume_cause()
                {
                    self.resume_cause = Some(cause_of_stream_error(cause));
                }
            }
            Err(err) if err.is_operation_timeout() => {
                // The call's timeoutMS ran out inside the command: as when the call's
                // timer fires, the command is abandoned (its connection is gone), the
                // stream stays alive, and the next call resumes.
                self.abandon_on_timeout(err);
            }
            Err(err) => {
                self.machine
                    .handle_failure(err.to_failure(), done.wire_version);
                if self.machine.resume_count() != resumes {
                    self.resume_cause = Some(cause_of(&err));
                }
                let ends = self.machine.is_closed() || self.machine.held_failure().is_some();
                self.last_error = ends.then_some(err);
            }
        }
        let opened = self.machine.held_failure().is_none() && self.machine.cursor_id().is_some();
        if opened && let Some(from) = attempt {
            // The resume opened its cursor.
            let event = ResumeEvent {
                cause: self.resume_cause.clone().unwrap_or_else(unknown_cause),
                resumed_from: from.map(ResumeToken::from),
                server: self.machine.cursor_server().cloned(),
                attempt: self.consecutive_failed.saturating_add(1),
                outcome: ResumeOutcome::Resumed,
            };
            self.consecutive_failed = 0;
            self.first_failed_at = None;
            self.report_resume(event);
        } else if let Some(from) = attempt {
            // Failed: `decide` reports it, with what the policy does next.
            self.attempt = Some(from);
        }
        if opened && let Some(mut gap) = self.restarting.take() {
            gap.restarted_at = self
                .counters
                .operation_time
                .or(self.machine.saved_operation_time());
            warn!(
                target: "brook::change_stream",
                gap = %gap,
                "change stream restarted from now after losing its history"
            );
            self.pending_error = Some(Error::new(ErrorKind::HistoryLost { gap: Box::new(gap) }));
        }
    }

    /// Starts a call's deadline, under `timeoutMS`, unless a call is under way (a
    /// `Stream` poll after `Pending`).
    fn begin_call(&mut self) {
        let Some(timeout) = self.timeout else {
            return;
        };
        if self.call.is_some() {
            return;
        }
        let deadline = Deadline::after(timeout);
        self.call = Some(deadline);
        if let Some(at) = deadline.at() {
            let at = tokio::time::Instant::from_std(at.into_std());
            match self.call_timer.as_mut() {
                Some(timer) => timer.as_mut().reset(at),
                None => self.call_timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }

    /// The call returned.
    fn end_call(&mut self) {
        self.call = None;
    }

    /// Whether the call's deadline has passed (its timer registered with `cx` if not).
    fn call_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.call else {
            return false;
        };
        if deadline.at().is_none() {
            return false;
        }
        match self.call_timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// The call ran out of time while no command was in flight (a resume policy's
    /// back-off: commands end at the deadline by themselves, see `abandon_on_timeout`).
    /// The stream stays alive with its token. Returns the timeout error.
    fn time_out(&mut self) -> Error {
        let err = self
            .call
            .map(|d| d.expired("while the change stream waited to resume", None))
            .unwrap_or_else(|| Error::invalid_argument("no timeoutMS"));
        self.end_call();
        err
    }

    /// A command of the stream ran out of the call's `timeoutMS`: it is abandoned (its
    /// connection is gone: a command cut mid-flight cannot be reused), the stream stays
    /// alive with its token, and the next call resumes (a getMore's) or sends the
    /// aggregate again (a resume's). The error is the call's.
    fn abandon_on_timeout(&mut self, err: Error) {
        let resumes = self.machine.resume_count();
        self.machine.handle_abandoned();
        if self.machine.resume_count() != resumes {
            self.resume_cause = Some(cause_of(&err));
        }
        self.pending_error = Some(err);
    }

    /// Logs a resume attempt, keeps it, and hands it to the stream's handler.
    fn report_resume(&mut self, event: ResumeEvent) {
        #[cfg(feature = "metrics")]
        crate::metrics::resume(&event.outcome);
        info!(
            target: "brook::change_stream",
            attempt = event.attempt,
            cause = %event.cause,
            resumed_from = ?event.resumed_from,
            server = ?event.server,
            outcome = ?event.outcome,
            resumes = self.machine.resume_count(),
            failed_resumes = self.counters.failed_resumes,
            events = self.counters.events,
            get_mores = self.get_mores,
            "change stream resume"
        );
        if let Some(handler) = &self.policy.on_resume {
            handler(&event);
        }
        self.last_resume = Some(event);
    }

    /// Answers the failure the machine holds: restart from now (history lost, when the
    /// stream was told to), try the resume again after the policy's back-off, or give
    /// up (the error is handed out and the stream ends).
    fn decide(&mut self) {
        let Some(held) = self.machine.held_failure() else {
            return;
        };
        let during_resume = held.during_resume;
        let from_stream = Error::new(ErrorKind::ChangeStream(held.error.clone()));
        let error = self.last_error.as_ref().unwrap_or(&from_stream);
        if error.is_history_lost() && self.policy.history_lost == HistoryLost::RestartFromNow {
            let token = self.machine.resume_token().cloned();
            let gap = HistoryGap {
                last_delivered: self
                    .counters
                    .last_event_time(token.as_ref().and_then(token_time))
                    .or_else(|| token.as_ref().and_then(token_time)),
                lost_token: token.map(ResumeToken::from),
                restarted_at: None,
            };
            warn!(
                target: "brook::change_stream",
                error = %error,
                "the change stream's token fell off the oplog; restarting from now"
            );
            self.restarting = Some(gap);
            self.last_error = None;
            self.attempt = None;
            if let Some(split) = self.split.as_mut() {
                split.reset();
            }
            self.token_before_split = None;
            self.machine.restart_from_now();
            return;
        }
        let from = self.attempt.take();
        if !during_resume {
            self.machine.give_up();
            return;
        }
        let now = std::time::Instant::now();
        let failed = self.consecutive_failed.saturating_add(1);
        self.consecutive_failed = failed;
        self.counters.failed_resumes = self.counters.failed_resumes.saturating_add(1);
        let first = *self.first_failed_at.get_or_insert(now);
        let retry_in = (retryable_by_policy(error)
            && self
                .policy
                .resume
                .allows(failed, now.saturating_duration_since(first)))
        .then(|| self.policy.resume.delay_after(failed));
        let event = ResumeEvent {
            cause: self.resume_cause.clone().unwrap_or_else(unknown_cause),
            resumed_from: from.flatten().map(ResumeToken::from),
            server: None,
            attempt: failed,
            outcome: ResumeOutcome::Failed {
                error: error.to_string(),
                retry_in,
            },
        };
        self.report_resume(event);
        match retry_in {
            Some(delay) => {
                self.last_error = None;
                self.backoff = Some(Box::pin(tokio::time::sleep(delay)));
            }
            None => self.machine.give_up(),
        }
    }

    /// Waits out a back-off and answers a held failure; `Pending` while the back-off
    /// runs.
    fn poll_policy(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(sleep) = self.backoff.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.backoff = None;
            self.machine.retry_resume();
        }
        if self.machine.held_failure().is_some() {
            self.decide();
            // A back-off just set is polled once now, to register its timer.
            if let Some(sleep) = self.backoff.as_mut()
                && sleep.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            if self.backoff.take().is_some() {
                self.machine.retry_resume();
            }
        }
        Poll::Ready(())
    }

    /// Drives the initial `aggregate` (and a restart from now when its token's history
    /// is lost) to its outcome.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.begin_call();
        if self.poll_open_inner(cx).is_pending() {
            if self.in_flight.is_none() && self.call_timed_out(cx) {
                self.pending_error = Some(self.time_out());
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        self.end_call();
        Poll::Ready(())
    }

    fn poll_open_inner(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.poll_in_flight(cx).is_pending() || self.poll_policy(cx).is_pending() {
                return Poll::Pending;
            }
            if self.pending_error.is_some() {
                // The opening aggregate ran out of timeoutMS.
                return Poll::Ready(());
            }
            if self.in_flight.is_none()
                && self.machine.wants_command()
                && self.machine.cursor_id().is_none()
                && let Some(out) = self.machine.poll_command()
            {
                self.start(out);
                continue;
            }
            return Poll::Ready(());
        }
    }

    /// The stream's statistics as `tracing` fields, after each reply.
    fn trace_stats(&self, with_events: bool) {
        let s = self.stats();
        let millis =
            |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        tracing::trace!(
            target: "brook::change_stream",
            with_events,
            events = s.events,
            events_per_second = s.events_per_second,
            get_mores = s.get_mores,
            resumes = s.resumes,
            failed_resumes = s.failed_resumes,
            lag_ms = millis(s.lag),
            server_lag_ms = millis(s.server_lag),
            server = ?s.server,
            "change stream reply"
        );
    }

    /// The stream's statistics now.
    fn stats(&self) -> StreamStats {
        let token_time = self.machine.resume_token().and_then(token_time);
        let server = self
            .machine
            .cursor_server()
            .filter(|_| self.machine.is_alive())
            .cloned();
        self.counters.snapshot(
            self.get_mores,
            self.machine.resume_count(),
            token_time,
            server,
        )
    }

    /// Maps an error the machine hands out to the facade's error.
    fn take_error(&mut self, err: brook_changestream::ChangeStreamError) -> Error {
        if err.server_error().is_none()
            && err.command().is_some()
            && let Some(original) = self.last_error.take()
        {
            return original;
        }
        Error::new(ErrorKind::ChangeStream(err))
    }

    /// Whether the machine's next command is a `getMore`.
    fn next_is_get_more(&self) -> bool {
        self.machine.wants_command() && self.machine.cursor_id().is_some()
    }

    /// Whether the command in flight is an `aggregate` (whose cursor must be killed if
    /// the stream is closed before its reply).
    fn aggregate_in_flight(&self) -> bool {
        self.in_flight.is_some()
            && self.machine.command_in_flight()
            && self.machine.cursor_server().is_none()
    }

    /// Drives the machine until it yields an event, an error, or nothing more (the stream
    /// ended, or `mode` allows no further `getMore`).
    fn poll_doc(
        &mut self,
        cx: &mut Context<'_>,
        mode: &mut Mode,
    ) -> Poll<Option<Result<SharedDoc, Error>>> {
        self.begin_call();
        match self.poll_doc_inner(cx, mode) {
            Poll::Pending => {
                if self.in_flight.is_none() && self.call_timed_out(cx) {
                    return Poll::Ready(Some(Err(self.time_out())));
                }
                Poll::Pending
            }
            Poll::Ready(out) => {
                self.end_call();
                Poll::Ready(out)
            }
        }
    }

    fn poll_doc_inner(
        &mut self,
        cx: &mut Context<'_>,
        mode: &mut Mode,
    ) -> Poll<Option<Result<SharedDoc, Error>>> {
        loop {
            if self.poll_in_flight(cx).is_pending() || self.poll_policy(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(err) = self.pending_error.take() {
                return Poll::Ready(Some(Err(err)));
            }
            // The token before an event that may turn out to be a first fragment.
            let before = match &self.split {
                Some(split) if !split.in_progress() => Some(self.machine.resume_token().cloned()),
                _ => None,
            };
            if let Some(event) = self.machine.poll_event() {
                let doc = match event {
                    Ok(doc) => doc,
                    Err(e) => return Poll::Ready(Some(Err(self.take_error(e)))),
                };
                let doc = match self.split.as_mut() {
                    None => doc,
                    Some(split) => match split.push(doc) {
                        Ok(Some(whole)) => {
                            self.token_before_split = None;
                            whole
                        }
                        Ok(None) => {
                            // A fragment: more to come.
                            if self.token_before_split.is_none() {
                                self.token_before_split = before;
                            }
                            continue;
                        }
                        Err(e) => {
                            self.token_before_split = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    },
                };
                let last_of_batch = !self.machine.has_buffered_events();
                self.counters.event(&doc, last_of_batch);
                #[cfg(feature = "metrics")]
                crate::metrics::change_event(&doc, last_of_batch);
                return Poll::Ready(Some(Ok(doc)));
            }
            if *mode == Mode::AtMostOneGetMore(true) && self.next_is_get_more() {
                return Poll::Ready(None);
            }
            let Some(out) = self.machine.poll_command() else {
                return Poll::Ready(None);
            };
            if matches!(out, Outgoing::GetMore { .. })
                && let Mode::AtMostOneGetMore(sent) = mode
            {
                *sent = true;
            }
            self.start(out);
        }
    }

    /// Closes the machine: an `aggregate` in flight is kept (returned, to be finished so
    /// that its cursor can be killed), a `getMore` in flight is abandoned with its
    /// connection, and the stream's own connection goes back to the pool.
    fn close_machine(&mut self) -> Option<InFlight> {
        let pending = if self.aggregate_in_flight() {
            self.in_flight.take()
        } else {
            None
        };
        self.in_flight = None;
        self.conn = None;
        self.backoff = None;
        self.machine.close();
        pending
    }
}

/// The cause of a resume, from the facade's error.
fn cause_of(err: &Error) -> ResumeCause {
    ResumeCause {
        message: err.to_string(),
        code: err.code(),
        labels: err.labels().to_vec(),
    }
}

/// The cause of a resume, from the machine's record of it (a server's `ok: 0` reply).
fn cause_of_stream_error(err: &brook_changestream::ChangeStreamError) -> ResumeCause {
    let server = err.server_error();
    ResumeCause {
        message: err.to_string(),
        code: server.and_then(|e| e.code),
        labels: server.map(|e| e.labels.clone()).unwrap_or_default(),
    }
}

/// For a resume whose cause went unrecorded (cannot happen: every resume starts from a
/// failure the facade saw).
fn unknown_cause() -> ResumeCause {
    ResumeCause {
        message: "unknown".to_owned(),
        code: None,
        labels: Vec::new(),
    }
}

/// Whether a failed resume may be tried again under a resume policy: an error a later
/// attempt can cure (the network, a timeout — no primary yet —, an election, a
/// shutdown, a resumable or retryable server error); never history lost, a fatal
/// stream error, an authentication failure or a client-side error.
fn retryable_by_policy(err: &Error) -> bool {
    if err.is_history_lost() || err.is_change_stream_fatal() || err.is_auth() {
        return false;
    }
    err.is_resumable_change_stream_error()
        || err.is_retryable_read()
        || err.is_timeout()
        || err.is_network()
        || err.is_pool_cleared()
}

/// The cluster time a resume token stands for.
fn token_time(token: &SharedDoc) -> Option<Timestamp> {
    brook_changestream::decode_resume_token(token.as_raw()).map(|info| info.cluster_time)
}

/// Finishes an `aggregate` left in flight by a closed stream (bounded) and feeds its
/// reply to the closed machine, which then hands out the `killCursors` of the cursor it
/// opened. Returns the stream's session, which the command held.
async fn finish_orphan(
    machine: &mut ChangeStreamMachine<ServerAddress>,
    pending: Option<InFlight>,
) -> Option<HeldSession> {
    let pending = pending?;
    let done = tokio::time::timeout(ORPHAN_AGGREGATE_BOUND, pending)
        .await
        .ok()?;
    if let Ok((server, reply)) = done.outcome {
        machine.handle_reply(server, done.wire_version.unwrap_or(0), reply);
    }
    Some(done.session)
}

/// After the machine was closed: finishes an `aggregate` left in flight (bounded), then
/// runs every `killCursors` the machine hands out (`initial`, taken out earlier, first),
/// each bounded, in the stream's session. Returns the first kill's error and the session
/// the `aggregate` held.
async fn kill_after_close(
    exec: &Executor,
    machine: &mut ChangeStreamMachine<ServerAddress>,
    pending: Option<InFlight>,
    initial: Vec<Outgoing<ServerAddress>>,
    lsid: Option<Document>,
    deadline: Option<Deadline>,
) -> (Result<(), Error>, Option<HeldSession>) {
    let returned = finish_orphan(machine, pending).await;
    let mut lsid = LsidOnly(lsid);
    let mut result = Ok(());
    let later: Vec<_> = std::iter::from_fn(|| machine.poll_command()).collect();
    for out in initial.into_iter().chain(later) {
        if let Outgoing::KillCursors {
            server,
            db,
            command,
        } = out
        {
            let outcome = exec
                .kill_cursors_within(&server, &db, &command, &mut lsid, deadline)
                .await;
            if let Err(e) = outcome
                && result.is_ok()
            {
                result = Err(e);
            }
        }
    }
    (result, returned)
}

impl Drop for Core {
    fn drop(&mut self) {
        let pending = self.close_machine();
        let kills: Vec<_> = std::iter::from_fn(|| self.machine.poll_command()).collect();
        if pending.is_none() && kills.is_empty() {
            return;
        }
        let mut machine = self.machine.clone();
        let exec = Arc::clone(&self.exec);
        let lsid = self.lsid.clone();
        let session = self.session.take();
        self.exec.spawn(async move {
            let (_, returned) =
                kill_after_close(&exec, &mut machine, pending, kills, lsid, None).await;
            drop((session, returned));
        });
    }
}

/// An open change stream: yields the events of the watched collection, database or
/// deployment as `E` ([`ChangeStreamEvent<T>`] or [`RawChangeEvent`]), and resumes by
/// itself after the errors the specification calls resumable.
///
/// * [`next`](Self::next) (and the [`Stream`] implementation) waits until an event
///   arrives, sending `getMore`s as long as batches come back empty;
///   [`next_if_any`](Self::next_if_any) sends at most one `getMore`.
/// * [`resume_token`](Self::resume_token) is the token to persist: up to date after
///   every event and every empty batch (its `postBatchResumeToken`).
/// * [`close`](Self::close) kills the server cursor and reports the outcome; dropping an
///   open stream kills it in the background.
///
/// ```
/// use std::time::Duration;
/// use bson::{Document, doc};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use brook_testkit::{ReplicaSet, ReplicaSetConfig};
/// # let set = ReplicaSet::start(ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(100))).await?;
/// # let client = brook::Client::connect(&set.uri()).await?;
/// let items = client.database("app").collection::<Document>("items");
/// let mut stream = items.watch().max_await_time(Duration::from_millis(200)).await?;
/// # for n in 1..=3 { set.insert_event("app.items", doc! { "_id": n }); }
///
/// // `next` waits as long as it takes (bound it with a timeout if you need to).
/// let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
///     .await?
///     .expect("the stream is open")?;
/// assert_eq!(first.operation_type, brook::OperationType::Insert);
/// // The token to persist is now just past that event.
/// assert_eq!(stream.resume_token(), Some(first.id.clone()));
///
/// // `next_if_any` sends at most one getMore: `Ok(None)` in a quiet period.
/// let mut rest = Vec::new();
/// while let Some(event) = stream.next_if_any().await? {
///     rest.push(event.document_key.expect("a document event").get_i32("_id")?);
/// }
/// assert_eq!(rest, [2, 3]);
/// assert!(stream.resume_token().is_some(), "still moving forward while quiet");
/// assert!(stream.is_alive());
/// stream.close().await?;
/// # client.shutdown().await;
/// # set.shutdown().await;
/// # Ok(()) }
/// ```
///
/// # Cancellation
///
/// Every way of waiting — [`next`](Self::next), [`next_if_any`](Self::next_if_any) and
/// the [`Stream`] implementation (`StreamExt::next`, `TryStreamExt::try_next`) — is
/// cancellation safe: the command in flight belongs to the stream, not to the future
/// that awaits it. Dropping that future (a timeout, a lost `select!` branch) leaves the
/// `getMore` running on the stream's connection, and the next call picks up its reply:
/// no event is lost or repeated, no resume is needed, and
/// [`resume_token`](Self::resume_token) and [`is_alive`](Self::is_alive) are right in
/// between. [`close`](Self::close) (or dropping the stream) abandons a command still in
/// flight together with its connection.
pub struct ChangeStream<E> {
    core: Core,
    _marker: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for ChangeStream<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStream")
            .field("target", self.core.machine.target())
            .field("cursor_id", &self.core.machine.cursor_id())
            .field("alive", &self.core.machine.is_alive())
            .field("resume_count", &self.core.machine.resume_count())
            .field("get_more_count", &self.core.get_mores)
            .finish_non_exhaustive()
    }
}

impl<E> ChangeStream<E> {
    /// The cached resume token: persist it and pass it to
    /// [`WatchBuilder::resume_after`] (or [`WatchBuilder::start_after`] after an
    /// `invalidate`) to continue later. It is the `startAfter`/`resumeAfter` token the
    /// stream was opened with until something newer arrives; then the `_id` of the last
    /// event returned, or the batch's `postBatchResumeToken` after its last event and
    /// after every empty batch. `None` if the stream started from "now" and nothing came
    /// back yet.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        let token = match &self.core.token_before_split {
            // Part of a split event was received: the token before it until it is whole.
            Some(before) => before.as_ref(),
            None => self.core.machine.resume_token(),
        };
        token.cloned().map(ResumeToken::from)
    }

    /// Whether the stream may still yield events: false once it ended — a fatal error
    /// was returned, an `invalidate` event (or an exhausted cursor's last event) was
    /// handed out. True while a resume is pending, also after a call was dropped
    /// mid-command. Never panics.
    pub fn is_alive(&self) -> bool {
        self.core.machine.is_alive()
    }

    /// How many times the stream resumed (after resumable errors or abandoned
    /// `getMore`s).
    pub fn resume_count(&self) -> u64 {
        self.core.machine.resume_count()
    }

    /// How many `getMore`s the stream sent.
    pub fn get_more_count(&self) -> u64 {
        self.core.get_mores
    }

    /// How many resume attempts failed (each is followed by another attempt or ends the
    /// stream, as its [`ResumePolicy`] says).
    pub fn failed_resume_count(&self) -> u64 {
        self.core.counters.failed_resumes
    }

    /// The last resume attempt: what caused it, the token it resumed from, the server it
    /// went to and how it ended. `None` until the stream first resumed.
    pub fn last_resume(&self) -> Option<&ResumeEvent> {
        self.core.last_resume.as_ref()
    }

    /// The stream's health now: events and their rate, round trips, resumes, and how
    /// far behind the writes it is (see [`StreamStats`]).
    pub fn stats(&self) -> StreamStats {
        self.core.stats()
    }

    /// The server the stream's cursor is on (its getMores and killCursors go there);
    /// `None` while a resume is opening a new cursor, and once the stream ended.
    pub fn server_address(&self) -> Option<&ServerAddress> {
        self.core
            .machine
            .cursor_server()
            .filter(|_| self.core.machine.is_alive())
    }

    /// Kills the server cursor (`killCursors` on the server that owns it, in the stream's
    /// session) and reports the outcome. A command in flight is abandoned. Closing a
    /// stream that already ended (exhausted, invalidated, failed) sends nothing and
    /// returns `Ok(())`.
    pub async fn close(mut self) -> Result<(), Error> {
        let core = &mut self.core;
        let pending = core.close_machine();
        let lsid = core.lsid.clone();
        // Closing is an operation of its own: a fresh timeoutMS (the Client Side
        // Operations Timeout specification).
        let deadline = Deadline::for_timeout(core.timeout);
        let (result, returned) = kill_after_close(
            &core.exec,
            &mut core.machine,
            pending,
            Vec::new(),
            lsid,
            deadline,
        )
        .await;
        if let Some(session) = returned {
            core.session = Some(session);
        }
        result
    }
}

impl<E: ChangeStreamItem> ChangeStream<E> {
    fn item(doc: Option<Result<SharedDoc, Error>>) -> Option<Result<E, Error>> {
        doc.map(|r| r.and_then(|d| E::from_event(RawChangeEvent::from(d))))
    }

    /// The next event, waiting as long as it takes (`getMore` after `getMore`, resuming
    /// after resumable errors). `None` once the stream ended: after an `invalidate`
    /// event, after an error (returned once), after close. See
    /// [Cancellation](Self#cancellation) for what dropping the future does.
    pub async fn next(&mut self) -> Option<Result<E, Error>> {
        let doc = std::future::poll_fn(|cx| self.core.poll_doc(cx, &mut Mode::Blocking)).await;
        Self::item(doc)
    }

    /// The non-blocking call: a buffered event if there is one; else at most one
    /// `getMore` (and, if it fails resumably, the resume's `aggregate`), returning its
    /// first event, or `Ok(None)` if its batch was empty — the resume token then holds
    /// the batch's `postBatchResumeToken`. `Ok(None)` also once the stream ended.
    pub async fn next_if_any(&mut self) -> Result<Option<E>, Error> {
        // A command left in flight by an earlier, dropped call counts as this call's one.
        let mut mode = Mode::AtMostOneGetMore(self.core.in_flight.is_some());
        let doc = std::future::poll_fn(|cx| self.core.poll_doc(cx, &mut mode)).await;
        Self::item(doc).transpose()
    }
}

/// What [`ChangeStream::next_batch`] hands out: events, and the token to store after
/// them.
#[derive(Debug)]
pub struct Batch<E> {
    events: Vec<E>,
    resume_token: Option<ResumeToken>,
    invalidated: bool,
}

impl<E> Batch<E> {
    /// The events, in order.
    pub fn events(&self) -> &[E] {
        &self.events
    }

    /// The events, by value.
    pub fn into_events(self) -> Vec<E> {
        self.events
    }

    /// The token to store once the events are processed: the stream's resume token
    /// after the last of them (the batch's `postBatchResumeToken` after a whole server
    /// batch, so that an empty batch moves it too); after an `invalidate`, that event's
    /// `_id` (to restart with `start_after`). `None` if the stream started from "now"
    /// and no token came back yet.
    pub fn resume_token(&self) -> Option<&ResumeToken> {
        self.resume_token.as_ref()
    }

    /// Whether the batch ends with an `invalidate` event: store its token to restart
    /// with `start_after`, not `resume_after`.
    pub fn invalidated(&self) -> bool {
        self.invalidated
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none (a quiet period: the token may still have moved).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl<E: ChangeStreamItem> ChangeStream<E> {
    /// Every event already received — the rest of the server's batch — or, when none
    /// is, the events of at most one `getMore` (none in a quiet period), with the resume
    /// token to store after them: a sink writes the batch, then commits the token once.
    /// Resumes like [`next`](Self::next). An event that fails to decode ends the batch
    /// before it and is returned (as an error) by the next call; a stream that ended
    /// returns empty batches (see [`is_alive`](Self::is_alive)). Cancellation safe, as
    /// every call.
    ///
    /// A sink that commits once per batch (see [`crate::checkpoint`] for a store); here
    /// a fake server is scripted to send two events, then a quiet batch:
    ///
    /// ```
    /// use bson::{Document, doc};
    /// use brook::checkpoint::Checkpoint;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use brook_testkit::shapes::{self, BatchKind};
    /// # use brook_testkit::{Action, FakeServer, ServerConfig};
    /// # let server = FakeServer::start(ServerConfig::replica_set("rs0")).await?;
    /// # let at = |i| bson::Timestamp { time: 1_700_000_000, increment: i };
    /// # let event = |i: u32| shapes::insert_event(at(i), "app.items", doc! { "_id": i });
    /// # server.push_action("aggregate",
    /// #     Action::cursor(7, "app.items", BatchKind::First, vec![event(1), event(2)], Some(shapes::post_batch_resume_token(at(2))), None));
    /// # server.push_action("getMore",
    /// #     Action::cursor(7, "app.items", BatchKind::Next, vec![], Some(shapes::post_batch_resume_token(at(3))), None));
    /// # let client = brook::Client::connect(&format!("mongodb://{}/?replicaSet=rs0", server.host_port())).await?;
    /// let items = client.database("app").collection::<Document>("items");
    /// let mut stream = items.watch().await?;
    ///
    /// let batch = stream.next_batch().await?;
    /// assert_eq!(batch.len(), 2);
    /// for event in batch.events() {
    ///     println!("{:?} {:?}", event.operation_type, event.document_key); // write them out
    /// }
    /// let after_events = Checkpoint::of_batch(&batch).expect("a token"); // then save it, once
    ///
    /// // A quiet batch has no event, but its token moved on: save that one too.
    /// let quiet = stream.next_batch().await?;
    /// assert!(quiet.is_empty());
    /// let after_quiet = Checkpoint::of_batch(&quiet).expect("a token");
    /// assert_ne!(after_quiet, after_events);
    /// # assert_eq!(after_quiet.token.to_document()?, shapes::post_batch_resume_token(at(3)));
    /// stream.close().await?;
    /// # client.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn next_batch(&mut self) -> Result<Batch<E>, Error> {
        let mut mode = Mode::AtMostOneGetMore(self.core.in_flight.is_some());
        let mut events = Vec::new();
        let mut last: Option<SharedDoc> = None;
        // The token after the last event taken (the machine's moves past an event that
        // fails to decode, which this batch leaves out).
        let mut token_after: Option<Option<ResumeToken>> = None;
        let outcome = std::future::poll_fn(|cx| {
            loop {
                if last.is_some() && !self.core.machine.has_buffered_events() {
                    return Poll::Ready(Ok(()));
                }
                match self.core.poll_doc(cx, &mut mode) {
                    Poll::Pending if last.is_some() => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Ready(Some(Err(e))) if last.is_some() => {
                        self.core.pending_error = Some(e);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(Some(Ok(doc))) => {
                        match E::from_event(RawChangeEvent::from(doc.clone())) {
                            Ok(item) => {
                                events.push(item);
                                token_after = Some(self.resume_token());
                            }
                            Err(e) if last.is_some() => {
                                self.core.pending_error = Some(e);
                                return Poll::Ready(Ok(()));
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                        last = Some(doc);
                    }
                }
            }
        })
        .await;
        outcome?;
        let invalidate = last.map(RawChangeEvent::from).filter(|event| {
            event.operation_type() == Some(crate::event::OperationType::Invalidate)
        });
        let resume_token = match &invalidate {
            // Restarting after an invalidate takes its own _id (with startAfter), whatever
            // postBatchResumeToken came with it.
            Some(event) => event.resume_token(),
            None => token_after.unwrap_or_else(|| self.resume_token()),
        };
        Ok(Batch {
            events,
            resume_token,
            invalidated: invalidate.is_some(),
        })
    }
}

impl<E: ChangeStreamItem> Stream for ChangeStream<E> {
    type Item = Result<E, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.core.poll_doc(cx, &mut Mode::Blocking).map(Self::item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_round_trip() {
        for v in [
            "default",
            "updateLookup",
            "whenAvailable",
            "required",
            "later",
        ] {
            assert_eq!(FullDocument::from(v).as_str(), v);
        }
        assert_eq!(
            FullDocument::from("later"),
            FullDocument::Other("later".into())
        );
        assert_eq!(FullDocument::UpdateLookup.to_string(), "updateLookup");
        for v in ["off", "whenAvailable", "required", "someday"] {
            assert_eq!(FullDocumentBeforeChange::from(v).as_str(), v);
        }
        assert_eq!(
            FullDocumentBeforeChange::from("off"),
            FullDocumentBeforeChange::Off
        );
    }
}
