//! The executor: the one place where brook runs a command.
//!
//! Handles ([`Client`](crate::Client), [`Database`](crate::Database),
//! [`Collection`](crate::Collection), [`Cursor`](crate::Cursor),
//! [`ChangeStream`](crate::ChangeStream)) build commands and keep their own state; every
//! command of every operation goes through [`Executor`], which
//!
//! 1. selects the server through the topology the monitors keep (the primary, a mongos,
//!    the standalone, or a cursor's own server; it waits while none is suitable, up to
//!    `serverSelectionTimeoutMS`),
//! 2. checks a connection out of that server's CMAP pool (or runs on a connection the
//!    caller holds: a change stream's own connection),
//! 3. attaches the session's `lsid` and the highest `$clusterTime` seen,
//! 4. sends the command under its time bound, reads the reply,
//! 5. keeps the reply's `$clusterTime` if it is higher, applies the SDAM error rules (a
//!    network error clears the pool; a "not primary" / "recovering" error marks the
//!    server unknown), marks the session dirty after a network error or an abandoned
//!    command, and parses the reply.
//!
//! Background work (killCursors of dropped cursors and streams) is spawned here too, each
//! task bounded, and [`Executor::shutdown`] waits for it (bounded) before `endSessions`.

mod monitor;
mod server;
mod topology;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_command::{Command, CommandBody, EndSessions, GetMore, KillCursors, Reply, SharedDoc};
use brook_conn::ServerAddress;
use brook_pool::PoolError;
use brook_topology::{ApplicationError, ApplicationErrorKind, ErrorPhase};
use bson::raw::RawBsonRef;
use bson::{Document, RawDocument, Timestamp};
use bytes::{BufMut, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::error::{Error, ErrorKind};
use crate::options::{ClientOptions, ReadPreference};
use crate::session::{END_SESSIONS_BATCH, HeldSession, SessionGuard, SessionPool, SessionRef};

pub(crate) use server::{PooledConn, ServerInfo};
pub(crate) use topology::{OperationGuard, Selected, Target, Topology, TopologySettings};

/// The default `serverSelectionTimeoutMS`.
pub(crate) const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server waits on a getMore of an awaitData cursor without `maxTimeMS`.
const SERVER_DEFAULT_AWAIT: Duration = Duration::from_secs(1);

/// How long past its `maxAwaitTimeMS` a change stream's (or an awaitData cursor's)
/// getMore may go unanswered before brook treats it as a network timeout: the
/// connection is discarded and a change stream resumes. Ten seconds covers a loaded
/// server and a slow network; a dead peer is noticed within `maxAwaitTimeMS + 10 s`.
pub const GET_MORE_GRACE: Duration = Duration::from_secs(10);

/// A reply up to this size may be kept alive by the cluster time it carries.
const SHARE_REPLY_UP_TO: usize = 16 * 1024;

/// The pause before selecting again after a checkout found the pool cleared.
const CLEARED_PAUSE: Duration = Duration::from_millis(10);

/// The bound of a background `killCursors` (selection, checkout and round trip).
pub(crate) const KILL_CURSORS_BOUND: Duration = Duration::from_secs(10);

/// The bound of each `endSessions` at shutdown, and of the wait for background tasks.
pub(crate) const SHUTDOWN_STEP_BOUND: Duration = Duration::from_secs(5);

/// A command body: built by a [`Command`], or already serialised (a cursor's getMore, sent
/// again and again unchanged).
#[derive(Debug)]
pub(crate) enum Body {
    /// Built: the executor adds the lsid (unless present) and `$clusterTime`.
    Built(CommandBody),
    /// Serialised and complete (lsid and `$clusterTime` included, see [`GetMoreCache`]):
    /// sent as is.
    Serialized(SharedDoc),
}

/// How a connection is checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Counted against `maxPoolSize`, returned after the operation.
    Shared,
    /// Held by a change stream for its life, outside the `maxPoolSize` accounting (a long
    /// poll never makes another operation wait), in the pool's generations all the same.
    Dedicated,
}

/// Whether, and how, an operation is retried once after a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Never (commands, getMore, killCursors, unacknowledged writes).
    No,
    /// A retryable read (`retryReads`): find, aggregate without `$out`/`$merge`, a change
    /// stream's aggregate.
    Read,
    /// A retryable write (`retryWrites`): one with a `txnNumber` in its session.
    Write,
}

/// The session again, for one more command of the same operation.
fn reborrow<'a>(session: &'a mut Option<&mut dyn SessionRef>) -> Option<&'a mut dyn SessionRef> {
    match session {
        Some(s) => Some(&mut **s),
        None => None,
    }
}

/// `primaryPreferred`: where `endSessions` goes (any server will do, the primary first).
fn primary_preferred() -> &'static ReadPreference {
    static PREFERENCE: std::sync::OnceLock<ReadPreference> = std::sync::OnceLock::new();
    PREFERENCE
        .get_or_init(|| ReadPreference::new(crate::options::ReadPreferenceMode::PrimaryPreferred))
}

/// Whether the server behind `d` accepts a `txnNumber`: it supports sessions and is not
/// a standalone (Retryable Writes specification).
fn supports_retryable_writes(d: &brook_conn::StreamDescription) -> bool {
    d.logical_session_timeout.is_some() && d.server_kind != brook_conn::ServerKind::Standalone
}

/// The error a server without document-level locking (MMAPv1) gives a `txnNumber`.
fn is_unsupported_txn_number(err: &Error) -> bool {
    err.code() == Some(20)
        && err
            .server_message()
            .is_some_and(|m| m.starts_with("Transaction numbers"))
}

/// Where a background `killCursors` goes.
#[derive(Debug)]
pub(crate) enum KillAt {
    /// A pooled connection to the cursor's server.
    Server(ServerAddress),
    /// The connection the cursor is pinned to (behind a load balancer).
    Pinned(Box<PooledConn>),
}

/// A connection checked out for an operation, and what selection said about it.
#[derive(Debug)]
pub(crate) struct CheckedOut {
    pub(crate) conn: PooledConn,
    /// The `$readPreference` the operation's command carries, if any.
    pub(crate) read_preference: Option<Document>,
    /// Counts the operation against its server while it runs.
    pub(crate) operation: OperationGuard,
}

/// A command's output, and where it ran.
#[derive(Debug)]
pub(crate) struct Executed<T> {
    pub(crate) output: T,
    pub(crate) address: ServerAddress,
    pub(crate) wire_version: i32,
    /// The connection it ran on, kept for the cursor it opened behind a load balancer
    /// (see [`Executor::execute_pinned`]).
    pub(crate) pinned: Option<PooledConn>,
}

/// A cursor's `getMore`, serialised once (with the session's lsid) and sent again
/// unchanged while the command stays the same: one body per cursor rather than one per
/// round trip. The cluster time to gossip is spliced onto it, and that too is kept while
/// the cluster time does not change (an idle stream's round trips allocate no body).
/// Shared by cursors and change streams.
#[derive(Debug, Default)]
pub(crate) struct GetMoreCache {
    cached: Option<(String, GetMore, SharedDoc)>,
    /// The cluster time last spliced on, and the body with it.
    spliced: Option<(SharedDoc, SharedDoc)>,
}

impl GetMoreCache {
    /// The complete body of `cmd` on `db`: with `lsid` (the lsid of a cursor or a stream
    /// does not change during its life) and `cluster_time` (from
    /// [`Executor::cluster_time`]), ready for [`Body::Serialized`].
    pub(crate) fn body(
        &mut self,
        db: &str,
        cmd: &GetMore,
        lsid: Option<&Document>,
        cluster_time: Option<&SharedDoc>,
    ) -> Result<SharedDoc, Error> {
        let base = match &self.cached {
            Some((cached_db, cached, body)) if cached_db == db && cached == cmd => body.clone(),
            _ => {
                let mut built = cmd.build(db).map_err(Error::command)?;
                if let Some(lsid) = lsid
                    && !built.body.contains_key("lsid")
                {
                    built.body.insert("lsid", lsid.clone());
                }
                let body = SharedDoc::from_document(&built.body).map_err(Error::bson)?;
                self.cached = Some((db.to_owned(), cmd.clone(), body.clone()));
                self.spliced = None;
                body
            }
        };
        let Some(ct) = cluster_time else {
            return Ok(base);
        };
        if let Some((spliced_ct, body)) = &self.spliced
            && spliced_ct.as_bytes() == ct.as_bytes()
        {
            return Ok(body.clone());
        }
        let body = append_document(&base, "$clusterTime", ct.as_raw());
        self.spliced = Some((ct.clone(), body.clone()));
        Ok(body)
    }
}

/// Background tasks, so that shutdown can wait for them.
#[derive(Debug, Default)]
struct Tasks {
    running: AtomicUsize,
    idle: Notify,
}

/// The runner below the handles. One per client.
#[derive(Debug)]
pub(crate) struct Executor {
    options: ClientOptions,
    topology: Arc<Topology>,
    sessions: Arc<SessionPool>,
    /// The highest `$clusterTime` received, in a buffer of its own.
    cluster_time: Mutex<Option<(Timestamp, SharedDoc)>>,
    shut_down: AtomicBool,
    tasks: Tasks,
    selection_timeout: Duration,
    socket_timeout: Option<Duration>,
    /// The client's read preference (from the connection string), every handle's default.
    read_preference: ReadPreference,
}

/// Marks the session dirty if the command is dropped before its outcome is known.
struct AbandonGuard<'a> {
    session: Option<&'a mut dyn SessionRef>,
    armed: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(s) = self.session.as_deref_mut()
        {
            s.mark_dirty();
        }
    }
}

impl Executor {
    pub(crate) fn new(options: ClientOptions, topology: Arc<Topology>) -> Arc<Executor> {
        let selection_timeout = options
            .server_selection_timeout
            .unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT);
        let socket_timeout = options.socket_timeout.filter(|d| !d.is_zero());
        let read_preference = options.effective_read_preference();
        Arc::new(Executor {
            read_preference,
            options,
            topology,
            sessions: Arc::new(SessionPool::default()),
            cluster_time: Mutex::new(None),
            shut_down: AtomicBool::new(false),
            tasks: Tasks::default(),
            selection_timeout,
            socket_timeout,
        })
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Whether the deployment is reached through a load balancer.
    pub(crate) fn is_load_balanced(&self) -> bool {
        self.topology.is_load_balanced()
    }

    /// The client's default read preference.
    pub(crate) fn default_read_preference(&self) -> &ReadPreference {
        &self.read_preference
    }

    /// The primary's address (else the first server known): where operations go.
    pub(crate) fn address(&self) -> Option<ServerAddress> {
        self.topology.primary_info().map(|(address, _)| address)
    }

    /// What the last check of the primary (else of a known server) said.
    pub(crate) fn server_info(&self) -> ServerInfo {
        self.topology
            .primary_info()
            .map(|(_, info)| info)
            .unwrap_or_else(ServerInfo::unknown)
    }

    pub(crate) fn sessions(&self) -> &Arc<SessionPool> {
        &self.sessions
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        Ok(())
    }

    /// An implicit session, when the server supports sessions.
    pub(crate) fn implicit_session(&self) -> HeldSession {
        match self.server_info().logical_session_timeout {
            Some(timeout) => {
                HeldSession::Implicit(SessionGuard::new(Arc::clone(&self.sessions), timeout))
            }
            None => HeldSession::None,
        }
    }

    /// The bound of a getMore that may wait `max_await` on the server: `max_await` (the
    /// server's default when `None`) plus [`GET_MORE_GRACE`], or `socketTimeoutMS` when
    /// that is shorter.
    pub(crate) fn await_bound(&self, max_await: Option<Duration>) -> Duration {
        let bound = max_await
            .unwrap_or(SERVER_DEFAULT_AWAIT)
            .saturating_add(GET_MORE_GRACE);
        match self.socket_timeout {
            Some(socket) => socket.min(bound),
            None => bound,
        }
    }

    /// Selects a server for `target` (leaving out `deprioritized` servers while others
    /// are suitable), waiting up to `serverSelectionTimeoutMS`.
    pub(crate) async fn select(
        &self,
        target: Target<'_>,
        deprioritized: &[ServerAddress],
    ) -> Result<Selected, Error> {
        let deadline = Instant::now() + self.selection_timeout;
        self.topology.select(target, deprioritized, deadline).await
    }

    /// Selects the server for `target` (leaving out `deprioritized` servers while others
    /// are suitable) and checks a connection out of its pool. A pool cleared between
    /// selection and checkout sends the checkout back to selection, within the same
    /// `serverSelectionTimeoutMS`. A connection that fails to establish on the network
    /// marks the server unknown and clears its pool.
    pub(crate) async fn check_out(
        &self,
        target: Target<'_>,
        lease: Lease,
        deprioritized: &[ServerAddress],
    ) -> Result<CheckedOut, Error> {
        let deadline = Instant::now() + self.selection_timeout;
        loop {
            let selected = self
                .topology
                .select(target, deprioritized, deadline)
                .await?;
            let server = &selected.server;
            let pool = server.pool();
            let out = match lease {
                Lease::Shared => pool.check_out().await,
                Lease::Dedicated => pool.check_out_dedicated().await,
            };
            match out {
                Ok(conn) => {
                    return Ok(CheckedOut {
                        conn,
                        read_preference: selected.read_preference,
                        operation: selected.operation,
                    });
                }
                Err(PoolError::Cleared { .. }) if Instant::now() < deadline => {
                    // Cleared between selection and checkout: the error that cleared it
                    // has made the server unknown, or soon will; select again after a
                    // breath rather than spin.
                    server.request_check();
                    tokio::time::sleep(CLEARED_PAUSE).await;
                }
                // A failed handshake has been reported to the topology by the pool's
                // manager (SDAM: Unknown, pool cleared).
                Err(e) => return Err(Error::from_pool(e, server.address())),
            }
        }
    }

    /// Runs one command on `conn`: attaches the lsid and `$clusterTime`, sends it under
    /// `limit` (`None`: `socketTimeoutMS`), and applies what the outcome means (cluster
    /// time, SDAM error rules, dirty session). `ok: 0` is not an error here: the caller's
    /// command parses the reply.
    pub(crate) async fn run_on(
        &self,
        conn: &mut PooledConn,
        body: Body,
        session: Option<&mut dyn SessionRef>,
        limit: Option<Duration>,
    ) -> Result<Reply, Error> {
        let wire = conn.description().max_wire_version;
        let mut body = body;
        // Converted before anything is armed: a failure here sends nothing.
        let cluster_time = match &body {
            Body::Built(_) => self
                .cluster_time()
                .map(|ct| ct.to_document())
                .transpose()
                .map_err(Error::bson)?,
            // A serialised body carries its lsid and `$clusterTime` (see `GetMoreCache`).
            Body::Serialized(_) => None,
        };
        let mut guard = AbandonGuard {
            session,
            armed: true,
        };
        if let Body::Built(built) = &mut body {
            if let Some(lsid) = guard.session.as_deref().and_then(SessionRef::lsid)
                && !built.body.contains_key("lsid")
            {
                built.body.insert("lsid", lsid.clone());
            }
            if let Some(ct) = cluster_time {
                built.body.insert("$clusterTime", ct);
            }
        }
        if let Some(s) = guard.session.as_deref_mut() {
            s.touch();
        }
        let interrupted = conn.interrupted();
        let sent = tokio::select! {
            biased;
            sent = async {
                match body {
                    Body::Built(built) => conn.run_body_within(built, limit).await,
                    Body::Serialized(serialized) => {
                        conn.run_serialized_within(serialized, limit).await
                    }
                }
            } => sent,
            () = interrupted => Err(interrupted_error(conn, wire)),
        };
        guard.armed = false;
        match sent {
            Ok(reply) => {
                self.observe_reply(&reply, conn, wire);
                Ok(reply)
            }
            Err(e) => {
                let err = Error::conn(e).with_wire_version(Some(wire));
                if (err.is_network() || err.is_protocol())
                    && let Some(s) = guard.session.as_deref_mut()
                {
                    s.mark_dirty();
                }
                if err.is_network() {
                    let kind = if err.is_timeout() {
                        ApplicationErrorKind::Timeout
                    } else {
                        ApplicationErrorKind::Network
                    };
                    let error =
                        ApplicationError::new(kind, ErrorPhase::AfterHandshake, conn.generation())
                            .with_max_wire_version(wire);
                    self.topology
                        .handle_error_on(conn.address(), &error, conn.service_id());
                }
                Err(err)
            }
        }
    }

    /// Selects a server for `target`, checks out, runs `cmd` (in `session`) and parses
    /// its reply, retrying once as `retry` allows. Fails once the client is shut down.
    pub(crate) async fn execute<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
    ) -> Result<Executed<C::Output>, Error> {
        self.check_open()?;
        self.run_command(db, cmd, session, target, retry, false)
            .await
    }

    /// [`execute`](Self::execute) for a command that opens a cursor: behind a load
    /// balancer the connection is kept in [`Executed::pinned`], for the cursor's getMores
    /// and killCursors (Load Balancer specification: a cursor is pinned to its
    /// connection, since only that connection reaches the mongos that holds it).
    pub(crate) async fn execute_pinned<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
    ) -> Result<Executed<C::Output>, Error> {
        self.check_open()?;
        let pin = self.topology.is_load_balanced();
        self.run_command(db, cmd, session, target, retry, pin).await
    }

    /// Whether `retry` is on for this client (`retryReads` / `retryWrites`, both on by
    /// default).
    fn retry_enabled(&self, retry: Retry) -> bool {
        match retry {
            Retry::No => false,
            Retry::Read => self.options.retry_reads != Some(false),
            Retry::Write => {
                self.options.retry_writes != Some(false)
                    && self.options.w != Some(crate::options::Acknowledgment::Nodes(0))
            }
        }
    }

    /// [`execute`](Self::execute) without the shutdown check: for the client's own
    /// commands (background kills, which shutdown waits for).
    ///
    /// Retries (Retryable Reads and Writes specifications): a read or write whose first
    /// attempt fails with a retryable error ([`Error::is_retryable_read`],
    /// [`Error::is_retryable_write`]) runs once more on a server selected afresh, the
    /// failed one left out while another is suitable. A write carries a `txnNumber`
    /// (the same on both attempts) when the server supports retryable writes and the
    /// session has an lsid; otherwise it is not retried. If the retry cannot select a
    /// server, or a write's retry reports `NoWritesPerformed`, the first error is
    /// returned; otherwise the retry's.
    async fn run_command<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        mut session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
        pin: bool,
    ) -> Result<Executed<C::Output>, Error> {
        let retry = if self.retry_enabled(retry) {
            retry
        } else {
            Retry::No
        };
        let mut txn_number: Option<i64> = None;
        let mut first: Option<(Error, ServerAddress)> = None;
        loop {
            let deprioritized: Vec<ServerAddress> =
                first.iter().map(|(_, at)| at.clone()).collect();
            let checked = match self.check_out(target, Lease::Shared, &deprioritized).await {
                Ok(checked) => checked,
                Err(e) => return Err(first.map_or(e, |(original, _)| original)),
            };
            let CheckedOut {
                mut conn,
                read_preference,
                operation,
            } = checked;
            let address = conn.address().clone();
            let wire_version = conn.description().max_wire_version;
            let mut body = cmd.build(db).map_err(Error::command)?;
            if retry == Retry::Write {
                let supported = supports_retryable_writes(conn.description());
                match first.take() {
                    None if supported => {
                        txn_number = reborrow(&mut session).and_then(|s| s.next_txn_number());
                    }
                    None => {}
                    // The server selected for the retry cannot take the txnNumber.
                    Some((original, _)) if !supported => return Err(original),
                    Some(kept) => first = Some(kept),
                }
            }
            if let Some(n) = txn_number {
                body.body.insert("txnNumber", n);
            }
            if let Some(preference) = read_preference {
                body.body.insert("$readPreference", preference);
            }
            let outcome = self
                .run_on(&mut conn, Body::Built(body), reborrow(&mut session), None)
                .await;
            let pinned = (pin && outcome.is_ok() && !conn.is_broken()).then_some(conn);
            drop(operation);
            let outcome = outcome.and_then(|reply| {
                cmd.handle_reply(reply)
                    .map_err(|e| Error::command(e).with_wire_version(Some(wire_version)))
            });
            let err = match outcome {
                Ok(output) => {
                    return Ok(Executed {
                        output,
                        address,
                        wire_version,
                        pinned,
                    });
                }
                Err(err) => err,
            };
            if txn_number.is_some() && is_unsupported_txn_number(&err) {
                return Err(Error::unsupported(
                    "retryable writes on this deployment (its storage engine does not \
                     support them): add retryWrites=false to the connection string",
                ));
            }
            match first.take() {
                None => {
                    let retryable = match retry {
                        Retry::No => false,
                        Retry::Read => err.is_retryable_read(),
                        Retry::Write => txn_number.is_some() && err.is_retryable_write(),
                    };
                    if !retryable {
                        return Err(err);
                    }
                    debug!(server = %address, error = %err, ?retry, "retrying once");
                    first = Some((err, address));
                }
                Some((original, _)) => {
                    if retry == Retry::Write && err.has_label("NoWritesPerformed") {
                        return Err(original);
                    }
                    return Err(err);
                }
            }
        }
    }

    /// [`execute`](Self::execute) in an implicit session of its own.
    pub(crate) async fn execute_implicit<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        target: Target<'_>,
        retry: Retry,
    ) -> Result<C::Output, Error> {
        let mut session = self.implicit_session();
        self.execute(db, cmd, Some(&mut session), target, retry)
            .await
            .map(|e| e.output)
    }

    /// The highest cluster time seen, if any: what every command gossips.
    pub(crate) fn cluster_time(&self) -> Option<SharedDoc> {
        self.cluster_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, doc)| doc.clone())
    }

    /// Keeps a higher `$clusterTime`; applies the SDAM rules to an `ok: 0` reply. One pass
    /// over the reply's top-level fields.
    fn observe_reply(&self, reply: &Reply, conn: &PooledConn, wire: i32) {
        let mut ok = true;
        let mut cluster_time = None;
        for element in reply.body.as_raw().iter().flatten() {
            match (element.0.as_str(), element.1) {
                ("ok", RawBsonRef::Double(v)) => ok = v == 1.0,
                ("ok", RawBsonRef::Int32(v)) => ok = v == 1,
                ("ok", RawBsonRef::Int64(v)) => ok = v == 1,
                ("ok", RawBsonRef::Boolean(v)) => ok = v,
                ("$clusterTime", RawBsonRef::Document(d)) => cluster_time = Some(d),
                _ => {}
            }
        }
        if let Some(ct) = cluster_time {
            self.advance_cluster_time(&reply.body, ct);
        }
        if !ok
            && let Err(brook_command::CommandError::Server(e)) =
                brook_command::check_ok(reply.body.as_raw())
        {
            let topology_version = reply
                .body
                .as_raw()
                .get_document("topologyVersion")
                .ok()
                .and_then(|d| bson::Document::try_from(d).ok());
            let kind = ApplicationErrorKind::Server {
                code: e.code,
                message: e.message.clone(),
                topology_version,
            };
            let error = ApplicationError::new(kind, ErrorPhase::AfterHandshake, conn.generation())
                .with_max_wire_version(wire);
            self.topology
                .handle_error_on(conn.address(), &error, conn.service_id());
        }
    }

    /// Keeps `ct` (the `$clusterTime` of `reply`) if it is higher than the one held. A
    /// small reply's buffer is shared rather than copied (no allocation per getMore of a
    /// busy stream, whose every reply moves the cluster time); a large one is not kept
    /// alive for the sake of a hundred bytes.
    fn advance_cluster_time(&self, reply: &SharedDoc, ct: &RawDocument) {
        let Ok(time) = ct.get_timestamp("clusterTime") else {
            return;
        };
        let mut held = self.cluster_time.lock().unwrap_or_else(|p| p.into_inner());
        let newer = held
            .as_ref()
            .is_none_or(|(t, _)| (time.time, time.increment) > (t.time, t.increment));
        if newer {
            let kept = match reply.share(ct) {
                Some(shared) if reply.as_bytes().len() <= SHARE_REPLY_UP_TO => shared,
                _ => SharedDoc::from_raw(ct),
            };
            *held = Some((time, kept));
        }
    }

    /// Runs `fut` in the background (when a tokio runtime is running), tracked so that
    /// shutdown waits for it.
    pub(crate) fn spawn(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.tasks.running.fetch_add(1, Ordering::AcqRel);
        let exec = Arc::clone(self);
        handle.spawn(async move {
            fut.await;
            if exec.tasks.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                exec.tasks.idle.notify_waiters();
            }
        });
    }

    /// Runs `cmd` (a `killCursors`) on `db` on `server`, in `session`, on a pooled
    /// connection.
    pub(crate) async fn kill_cursors(
        &self,
        server: &ServerAddress,
        db: &str,
        cmd: &KillCursors,
        session: &mut dyn SessionRef,
    ) -> Result<(), Error> {
        self.run_command(db, cmd, Some(session), Target::At(server), Retry::No, false)
            .await
            .map(|_| ())
    }

    /// [`kill_cursors`](Self::kill_cursors) bounded by [`KILL_CURSORS_BOUND`], its outcome
    /// logged.
    pub(crate) async fn kill_cursors_bounded(
        &self,
        server: &ServerAddress,
        db: &str,
        cmd: &KillCursors,
        session: &mut dyn SessionRef,
    ) -> Result<(), Error> {
        let outcome = tokio::time::timeout(
            KILL_CURSORS_BOUND,
            self.kill_cursors(server, db, cmd, &mut *session),
        )
        .await
        .unwrap_or_else(|_| {
            session.mark_dirty();
            Err(Error::new(ErrorKind::Timeout {
                what: "killCursors",
                after: KILL_CURSORS_BOUND,
            }))
        });
        match &outcome {
            Ok(()) => debug!(%server, cursors = ?cmd.ids, "cursors killed"),
            Err(e) => debug!(%server, cursors = ?cmd.ids, error = %e, "killCursors failed"),
        }
        outcome
    }

    /// Runs `cmd` (a `killCursors`) on `db` on `conn`, the connection its cursor is pinned
    /// to (behind a load balancer), bounded by [`KILL_CURSORS_BOUND`]; the connection
    /// then goes back to the pool.
    pub(crate) async fn kill_cursors_pinned(
        &self,
        mut conn: PooledConn,
        db: &str,
        cmd: &KillCursors,
        session: &mut dyn SessionRef,
    ) -> Result<(), Error> {
        let outcome = async {
            let body = cmd.build(db).map_err(Error::command)?;
            let reply = self
                .run_on(
                    &mut conn,
                    Body::Built(body),
                    Some(session),
                    Some(KILL_CURSORS_BOUND),
                )
                .await?;
            cmd.handle_reply(reply).map(|_| ()).map_err(Error::command)
        }
        .await;
        match &outcome {
            Ok(()) => debug!(cursors = ?cmd.ids, "cursors killed on their pinned connection"),
            Err(e) => debug!(cursors = ?cmd.ids, error = %e, "killCursors failed"),
        }
        outcome
    }

    /// Kills cursors in the background (`cmd` on `db`, on the cursor's server or on the
    /// connection it is pinned to, in `session`, held until the kill is done), bounded by
    /// [`KILL_CURSORS_BOUND`]. Every background kill (a dropped cursor, a change stream's
    /// resume) goes through here.
    pub(crate) fn spawn_kill_cursors(
        self: &Arc<Self>,
        at: KillAt,
        db: String,
        cmd: KillCursors,
        mut session: impl SessionRef + 'static,
    ) {
        let exec = Arc::clone(self);
        self.spawn(async move {
            // Both log their outcome; a background kill has nobody to report to.
            let _ = match at {
                KillAt::Server(server) => {
                    exec.kill_cursors_bounded(&server, &db, &cmd, &mut session)
                        .await
                }
                KillAt::Pinned(conn) => {
                    exec.kill_cursors_pinned(*conn, &db, &cmd, &mut session)
                        .await
                }
            };
            drop(session);
        });
    }

    /// Ends the client: later operations fail; background kills get up to
    /// [`SHUTDOWN_STEP_BOUND`] to finish; `endSessions` with every pooled session id (in
    /// batches of 10,000, on pooled connections, each bounded, errors ignored as the spec
    /// says); then the pool closes. Returns at once when called again.
    pub(crate) async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let drained = async {
            loop {
                let idle = self.tasks.idle.notified();
                if self.tasks.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_STEP_BOUND, drained).await;
        let ids = self.sessions.drain_ids();
        for chunk in ids.chunks(END_SESSIONS_BATCH) {
            let cmd = EndSessions::new(chunk.to_vec());
            let run = self.run_command(
                "admin",
                &cmd,
                None,
                Target::Read(primary_preferred()),
                Retry::No,
                false,
            );
            if let Ok(Err(e)) = tokio::time::timeout(SHUTDOWN_STEP_BOUND, run).await {
                debug!(error = %e, "endSessions failed");
            }
        }
        self.topology.close();
    }
}

/// The error of an exchange cut short because the connection's pool was cleared with
/// `interrupt_in_use` (the server's monitor lost it): a network error, so a change
/// stream resumes at once on a server that is still there.
fn interrupted_error(conn: &PooledConn, wire: i32) -> brook_conn::ConnError {
    brook_conn::ConnError::Io {
        address: conn.address().clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "interrupted: the server's monitor lost it and its pool was cleared",
        ),
        wire_version: Some(wire),
    }
}

/// `body` with one more field, `key: value`, at its end. Splices the bytes (one buffer of
/// the final size, no re-serialisation): this is how a cached getMore gets the current
/// `$clusterTime` on every send, and it is on the getMore path.
fn append_document(body: &SharedDoc, key: &str, value: &RawDocument) -> SharedDoc {
    let bytes = body.as_bytes();
    // A SharedDoc is at least 5 bytes and ends with its terminating NUL.
    let elements = bytes
        .get(4..bytes.len().saturating_sub(1))
        .unwrap_or_default();
    let len = 4 + elements.len() + 1 + key.len() + 1 + value.as_bytes().len() + 1;
    let mut out = BytesMut::with_capacity(len);
    out.put_i32_le(i32::try_from(len).unwrap_or(i32::MAX));
    out.put_slice(elements);
    out.put_u8(0x03);
    out.put_slice(key.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
    match SharedDoc::from_bytes(out.freeze()) {
        Ok(doc) => doc,
        // Unreachable for a valid body; send the body without the field rather than fail.
        Err(_) => body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn appending_a_document_field() {
        let body =
            SharedDoc::from_document(&doc! { "getMore": 7i64, "collection": "c" }).expect("body");
        let ct = bson::rawdoc! { "clusterTime": Timestamp { time: 5, increment: 1 } };
        let out = append_document(&body, "$clusterTime", &ct);
        assert_eq!(
            out.to_document().expect("valid"),
            doc! {
                "getMore": 7i64,
                "collection": "c",
                "$clusterTime": { "clusterTime": Timestamp { time: 5, increment: 1 } },
            }
        );
    }
}
