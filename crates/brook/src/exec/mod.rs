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
//!
//! Client Side Operations Timeout (`timeoutMS`): an operation computes one [`Deadline`]
//! when it starts (`Option<Deadline>`: `None` when `timeoutMS` is not set anywhere, and
//! the legacy bounds apply) and hands it to every step: [`Executor::select_within`]
//! (`min(serverSelectionTimeoutMS, time left)`), [`Executor::check_out_within`] (the same
//! bound for the checkout, `waitQueueTimeoutMS` ignored), [`Executor::run_on_within`]
//! with a [`Bound`] (the round trip ends at the deadline; `maxTimeMS` from
//! [`max_time_ms`] when asked; nothing sent when the time left is not more than the
//! server's minimum round trip), and [`Executor::execute`] with a [`Timing`] for the
//! whole select-checkout-run-retry loop. Each expiry is
//! [`Error::is_operation_timeout`]; after it nothing is retried.

mod monitor;
mod server;
mod topology;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_command::{Command, CommandBody, EndSessions, GetMore, KillCursors, Reply, SharedDoc};
use brook_conn::{ServerAddress, next_request_id};
use brook_pool::PoolError;
use brook_topology::{ApplicationError, ApplicationErrorKind, ErrorPhase};
use bson::raw::RawBsonRef;
use bson::{Document, RawDocument, Timestamp};
use bytes::{BufMut, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{Instrument, debug, trace};

use crate::error::{Error, ErrorKind};
use crate::monitoring::{
    CommandContext, CommandEvent, CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent,
    EventHandler, Shown, emit_command,
};
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

/// The deadline of one operation under `timeoutMS` (the Client Side Operations Timeout
/// specification): computed once, when the operation starts, it bounds every step of the
/// operation (server selection, connection checkout, each command's round trip, every
/// retry). `timeoutMS=0` gives a deadline with no instant: nothing is bounded, but the
/// specification's rules apply all the same (legacy options ignored, retries go on while
/// errors are retryable). An operation without `timeoutMS` has no `Deadline` at all
/// (`Option<Deadline>::None`) and keeps the legacy bounds (`socketTimeoutMS`,
/// `waitQueueTimeoutMS`, [`Executor::await_bound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    /// When the operation must be done; `None` for `timeoutMS=0`.
    at: Option<Instant>,
    /// The `timeoutMS` the deadline was computed from (for the error message).
    timeout: Duration,
}

impl Deadline {
    /// The deadline of an operation starting now with `timeoutMS` = `timeout` (zero: no
    /// limit).
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline::starting_at(Instant::now(), timeout)
    }

    /// The deadline of an operation starting at `now` with `timeoutMS` = `timeout`.
    pub(crate) fn starting_at(now: Instant, timeout: Duration) -> Deadline {
        let at = if timeout.is_zero() {
            None
        } else {
            // Beyond what an Instant can hold: no limit in practice.
            now.checked_add(timeout)
        };
        Deadline { at, timeout }
    }

    /// The deadline of an operation with the effective `timeoutMS` `timeout` (`None`: the
    /// option is not set anywhere, and the operation has no deadline).
    pub(crate) fn for_timeout(timeout: Option<Duration>) -> Option<Deadline> {
        timeout.map(Deadline::after)
    }

    /// The instant the operation must be done by; `None` for `timeoutMS=0`.
    pub(crate) fn at(&self) -> Option<Instant> {
        self.at
    }

    /// The `timeoutMS` this deadline was computed from.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time left at `now` (zero once expired); `None` without a limit.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.at.map(|at| at.saturating_duration_since(now))
    }

    /// Whether the deadline has passed at `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// The timeout error of this operation, detected `during` a step, `cause` being that
    /// step's own error if it had one.
    pub(crate) fn expired(&self, during: &'static str, cause: Option<Error>) -> Error {
        Error::operation_timeout(self.timeout, during, cause)
    }

    /// `min(deadline, now + bound)`: the instant a step bounded by both ends.
    pub(crate) fn min_with(deadline: Option<Deadline>, now: Instant, bound: Duration) -> Instant {
        let own = now.checked_add(bound);
        match (deadline.and_then(|d| d.at), own) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            // An Instant cannot hold either: as far as it can go.
            (None, None) => now,
        }
    }
}

/// The `maxTimeMS` of a command sent at `now` under `deadline` to a server whose minimum
/// round-trip time is `min_rtt` (Client Side Operations Timeout, "Command Execution"):
/// the time left minus `min_rtt`, in whole milliseconds. `Ok(None)` when the deadline
/// has no limit (`timeoutMS=0`: no `maxTimeMS`). A timeout error when the time left is
/// not more than `min_rtt`, or leaves less than one millisecond (`maxTimeMS: 0` would
/// mean "no limit" to the server): such a command is not sent.
pub(crate) fn max_time_ms(
    deadline: &Deadline,
    min_rtt: Duration,
    now: Instant,
) -> Result<Option<u64>, Error> {
    let Some(remaining) = deadline.remaining(now) else {
        return Ok(None);
    };
    let budget = remaining.saturating_sub(min_rtt);
    let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    if remaining <= min_rtt || ms == 0 {
        return Err(deadline.expired(
            "before the command was sent (less time left than the server's minimum round trip)",
            None,
        ));
    }
    Ok(Some(ms))
}

/// The bound of an exchange with no limit: `timeoutMS=0` ignores `socketTimeoutMS`.
/// (A century: an `Instant` holds it, and nothing waits that long.)
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How one command on a connection is bounded (see [`Executor::run_on_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// `timeoutMS` is not set: `None` bounds the exchange by `socketTimeoutMS`, `Some`
    /// by that limit instead (a getMore's [`Executor::await_bound`], a killCursors).
    Legacy(Option<Duration>),
    /// `timeoutMS` is set: the exchange ends at the deadline (`socketTimeoutMS` is
    /// ignored), and is not sent when the time left is not more than `min_rtt` (the
    /// server's minimum round trip, [`Executor::min_rtt`]). With `max_time` a built
    /// command carries `maxTimeMS` (see [`max_time_ms`]); a serialised body is sent as
    /// it is.
    Deadline {
        /// The operation's deadline.
        deadline: Deadline,
        /// Whether the command carries `maxTimeMS` derived from the deadline.
        max_time: bool,
        /// The server's minimum round-trip time.
        min_rtt: Duration,
    },
}

/// How the commands of one operation are bounded (see [`Executor::execute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Timing {
    /// The operation's deadline; `None` when `timeoutMS` is not set.
    pub(crate) deadline: Option<Deadline>,
    /// Whether its commands carry `maxTimeMS` derived from the deadline (not the
    /// initial command of an iteration-mode cursor, nor a getMore).
    pub(crate) max_time: bool,
}

impl Timing {
    /// No `timeoutMS`: the legacy bounds.
    pub(crate) const LEGACY: Timing = Timing {
        deadline: None,
        max_time: false,
    };

    /// The bounds of an operation with the effective `timeoutMS` `timeout`, starting
    /// now; its commands carry `maxTimeMS`.
    pub(crate) fn for_timeout(timeout: Option<Duration>) -> Timing {
        Timing {
            deadline: Deadline::for_timeout(timeout),
            max_time: true,
        }
    }

    /// The same deadline; commands without `maxTimeMS`.
    pub(crate) fn without_max_time(self) -> Timing {
        Timing {
            max_time: false,
            ..self
        }
    }

    /// The bound of one command of the operation on a server whose minimum round trip
    /// is `min_rtt`.
    pub(crate) fn bound(&self, min_rtt: Duration) -> Bound {
        match self.deadline {
            None => Bound::Legacy(None),
            Some(deadline) => Bound::Deadline {
                deadline,
                max_time: self.max_time,
                min_rtt,
            },
        }
    }
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
    /// The server's minimum round-trip time, as the description selection used said.
    pub(crate) min_rtt: Duration,
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
    /// are suitable), for an operation with `deadline` (`None`: no `timeoutMS`, up to
    /// `serverSelectionTimeoutMS`): selection waits up to
    /// `min(serverSelectionTimeoutMS, time left)`, and gives up with the operation's
    /// timeout error (the selection error as its cause) once the deadline is what
    /// stopped it. [`Selected::min_rtt`] is the server's minimum round trip, read from
    /// the description selection used.
    pub(crate) async fn select_within(
        &self,
        target: Target<'_>,
        deprioritized: &[ServerAddress],
        deadline: Option<Deadline>,
    ) -> Result<Selected, Error> {
        let until = Deadline::min_with(deadline, Instant::now(), self.selection_timeout);
        self.topology
            .select(target, deprioritized, until)
            .await
            .map_err(|e| selection_error(deadline, e))
    }

    /// The minimum round-trip time of the server at `address` as its monitor measured it
    /// (zero while fewer than two samples, or when the server is not known): what a
    /// command on a connection the caller already holds (a pinned or dedicated one)
    /// subtracts from the time left for its `maxTimeMS`.
    pub(crate) fn min_rtt(&self, address: &ServerAddress) -> Duration {
        self.topology.min_rtt(address)
    }

    /// Selects the server for `target` (leaving out `deprioritized` servers while others
    /// are suitable) and checks a connection out of its pool. A pool cleared between
    /// selection and checkout sends the checkout back to selection, within the same
    /// bound. A connection that fails to establish on the network marks the server
    /// unknown and clears its pool. `deadline`: the operation's (`None`: no
    /// `timeoutMS`, the legacy bounds). With a deadline, selection and checkout share
    /// `computedServerSelectionTimeout` = `min(serverSelectionTimeoutMS, time left)`:
    /// the checkout waits (for a free connection, or for one being established for it:
    /// TCP, TLS, handshake, authentication) until then, `waitQueueTimeoutMS` ignored,
    /// and fails with the operation's timeout error. A connection still being
    /// established when the checkout gives up joins the pool when ready.
    pub(crate) async fn check_out_within(
        &self,
        target: Target<'_>,
        lease: Lease,
        deprioritized: &[ServerAddress],
        deadline: Option<Deadline>,
    ) -> Result<CheckedOut, Error> {
        let until = Deadline::min_with(deadline, Instant::now(), self.selection_timeout);
        loop {
            let selected = self
                .topology
                .select(target, deprioritized, until)
                .await
                .map_err(|e| selection_error(deadline, e))?;
            let server = &selected.server;
            let pool = server.pool();
            let out = match (lease, deadline) {
                (Lease::Shared, None) => pool.check_out().await,
                (Lease::Dedicated, None) => pool.check_out_dedicated().await,
                (Lease::Shared, Some(_)) => pool.check_out_until(Some(until)).await,
                (Lease::Dedicated, Some(_)) => pool.check_out_dedicated_until(Some(until)).await,
            };
            match out {
                Ok(conn) => {
                    return Ok(CheckedOut {
                        conn,
                        read_preference: selected.read_preference,
                        operation: selected.operation,
                        min_rtt: selected.min_rtt,
                    });
                }
                Err(PoolError::Cleared { .. }) if Instant::now() < until => {
                    // Cleared between selection and checkout: the error that cleared it
                    // has made the server unknown, or soon will; select again after a
                    // breath rather than spin.
                    server.request_check();
                    tokio::time::sleep(CLEARED_PAUSE).await;
                }
                // A failed handshake has been reported to the topology by the pool's
                // manager (SDAM: Unknown, pool cleared).
                Err(e) => {
                    return Err(match (deadline, e) {
                        // The wait for a connection reached the operation's deadline
                        // (waitQueueTimeoutMS plays no part): no error of its own.
                        (Some(d), PoolError::Timeout { .. }) => d.expired(
                            "during connection checkout (no connection became available)",
                            None,
                        ),
                        (Some(d), e) if d.is_expired(Instant::now()) => d.expired(
                            "during connection checkout",
                            Some(Error::from_pool(e, server.address())),
                        ),
                        (_, e) => Error::from_pool(e, server.address()),
                    });
                }
            }
        }
    }

    /// Runs one command on `conn`: attaches the lsid and `$clusterTime`, sends it under
    /// `bound`, and applies what the outcome means (cluster time, SDAM error rules,
    /// dirty session). `ok: 0` is not an error here: the caller's command parses the
    /// reply. With [`Bound::Legacy`] the exchange is bounded by its limit, else
    /// `socketTimeoutMS`. With [`Bound::Deadline`]: nothing is sent
    /// (the operation's timeout error, the connection untouched) when the time left is
    /// not more than the server's minimum round trip; a built body gets `maxTimeMS`
    /// when asked (replacing one the caller put there); the round trip ends at the
    /// deadline, and a reply still awaited then is the operation's timeout error (the
    /// socket timeout as its cause), the connection discarded (a command cut mid-flight
    /// cannot be reused) but its pool not cleared (SDAM: a timeout changes nothing).
    ///
    /// Observed (see [`crate::monitoring`]): a `brook.command` span around the exchange,
    /// the command and its reply traced (redacted) when a subscriber wants them, command
    /// monitoring events when a handler is set, metrics with the `metrics` feature.
    /// When nothing listens, nothing is built and nothing is allocated: a disabled span,
    /// no clock read, no event (the getMore future is larger by the span and the
    /// observation state: about 130 bytes, measured with `brook-bench`).
    pub(crate) fn run_on_within<'a>(
        &'a self,
        conn: &'a mut PooledConn,
        body: Body,
        session: Option<&'a mut dyn SessionRef>,
        bound: Bound,
    ) -> impl Future<Output = Result<Reply, Error>> + 'a {
        // Not an `async fn` around the other: the getMore future holds one copy of its
        // arguments, not two.
        let request_id = next_request_id();
        self.run_on_as(conn, body, session, bound, request_id, request_id)
    }

    /// [`run_on_within`](Self::run_on_within) with the command's request id (from
    /// [`next_request_id`]) and its operation's id (the request id of the operation's
    /// first command).
    async fn run_on_as(
        &self,
        conn: &mut PooledConn,
        body: Body,
        session: Option<&mut dyn SessionRef>,
        bound: Bound,
        request_id: i32,
        operation_id: i32,
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
        let (limit, deadline) = match bound {
            Bound::Legacy(limit) => (limit, None),
            Bound::Deadline {
                deadline,
                max_time,
                min_rtt,
            } => {
                let now = Instant::now();
                let ms = max_time_ms(&deadline, min_rtt, now)?;
                if max_time && let (Some(ms), Body::Built(built)) = (ms, &mut body) {
                    built
                        .body
                        .insert("maxTimeMS", i64::try_from(ms).unwrap_or(i64::MAX));
                }
                let limit = deadline.remaining(now).unwrap_or(NO_LIMIT);
                (Some(limit), Some(deadline))
            }
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
        let (observed, span) = self.command_started(conn, &body, request_id, operation_id);
        let interrupted = conn.interrupted();
        let sent = tokio::select! {
            biased;
            sent = async {
                match body {
                    Body::Built(built) => conn.run_body_as(request_id, built, limit).await,
                    Body::Serialized(serialized) => {
                        conn.run_serialized_as(request_id, serialized, limit).await
                    }
                }
            }
            .instrument(span.clone()) => sent,
            () = interrupted => Err(interrupted_error(conn, wire)),
        };
        guard.armed = false;
        let _entered = span.enter();
        match sent {
            Ok(reply) => {
                let ok = self.observe_reply(&reply, conn, wire);
                observed.finish(&span, Finished::Reply { reply: &reply, ok });
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
                let err = match deadline {
                    Some(d) if err.is_timeout() => {
                        d.expired("while waiting for the reply", Some(err))
                    }
                    _ => err,
                };
                observed.finish(&span, Finished::Error(&err));
                Err(err)
            }
        }
    }

    /// What is observed of a command about to be sent on `conn`: its span (disabled when
    /// no subscriber wants it), the `command started` trace and monitoring event (each
    /// only when someone listens), and what [`Observed::finish`] needs. Builds nothing
    /// when nothing listens.
    fn command_started(
        &self,
        conn: &PooledConn,
        body: &Body,
        request_id: i32,
        operation_id: i32,
    ) -> (Observed, tracing::Span) {
        let name = match body {
            Body::Built(built) => built.command_name().unwrap_or_default(),
            Body::Serialized(doc) => doc
                .as_raw()
                .iter()
                .next()
                .and_then(Result::ok)
                .map(|(key, _)| key.as_str())
                .unwrap_or_default(),
        };
        let database = || match body {
            Body::Built(built) => built.body.get_str("$db").unwrap_or_default(),
            Body::Serialized(doc) => doc.as_raw().get_str("$db").unwrap_or_default(),
        };
        let get_more = name == GetMore::NAME;
        macro_rules! command_span {
            ($level:expr) => {
                tracing::span!(
                    target: "brook::command",
                    $level,
                    "brook.command",
                    command = name,
                    database = database(),
                    server = %conn.address(),
                    request_id,
                    operation_id,
                    connection_id = conn.id(),
                    duration_us = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                    code = tracing::field::Empty,
                )
            };
        }
        // A getMore's span only at TRACE: a subscriber at DEBUG pays nothing per getMore.
        let span = if get_more {
            command_span!(tracing::Level::TRACE)
        } else {
            command_span!(tracing::Level::DEBUG)
        };
        let handler = self.options.command_event_handler.as_ref();
        let show_bodies = tracing::enabled!(target: "brook::command", tracing::Level::TRACE);
        let sensitive = (handler.is_some() || show_bodies) && {
            let speculative = match body {
                Body::Built(built) => built.body.contains_key("speculativeAuthenticate"),
                Body::Serialized(doc) => {
                    matches!(doc.as_raw().get("speculativeAuthenticate"), Ok(Some(_)))
                }
            };
            crate::monitoring::is_sensitive(name, speculative)
        };
        if show_bodies {
            span.in_scope(|| match body {
                _ if sensitive => {
                    trace!(target: "brook::command", body = %Shown::Redacted, "command started");
                }
                Body::Built(built) => {
                    let full = command_document(built);
                    trace!(target: "brook::command", body = %Shown::Owned(&full), "command started");
                }
                Body::Serialized(doc) => {
                    trace!(target: "brook::command", body = %Shown::Raw(doc.as_raw()), "command started");
                }
            });
        }
        let event = handler.map(|handler| {
            let context = CommandContext {
                database_name: database().to_owned(),
                request_id,
                operation_id,
                connection_id: conn.id(),
                server_connection_id: conn.description().hello.connection_id,
                address: conn.address().clone(),
                service_id: conn.service_id().map(bson::oid::ObjectId::from_bytes),
            };
            let command = match body {
                _ if sensitive => Document::new(),
                Body::Built(built) => command_document(built),
                Body::Serialized(doc) => doc.to_document().unwrap_or_default(),
            };
            emit_command(
                handler,
                CommandEvent::Started(CommandStartedEvent {
                    command_name: name.to_owned(),
                    command,
                    context: context.clone(),
                }),
            );
            Box::new((handler.clone(), name.to_owned(), context))
        });
        let timed = event.is_some() || cfg!(feature = "metrics") || !span.is_disabled();
        let observed = Observed {
            get_more,
            sensitive,
            show_bodies,
            started: timed.then(Instant::now),
            event,
            #[cfg(feature = "metrics")]
            name: crate::metrics::command_label(name),
        };
        (observed, span)
    }

    /// Selects a server for `target`, checks out, runs `cmd` (in `session`) and parses
    /// its reply, retrying as `retry` allows, bounded as `timing` says. Fails once the
    /// client is shut down.
    pub(crate) async fn execute<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
        timing: Timing,
    ) -> Result<Executed<C::Output>, Error> {
        self.check_open()?;
        self.run_command(db, cmd, session, target, retry, false, timing)
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
        timing: Timing,
    ) -> Result<Executed<C::Output>, Error> {
        self.check_open()?;
        let pin = self.topology.is_load_balanced();
        self.run_command(db, cmd, session, target, retry, pin, timing)
            .await
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
    /// (the same on every attempt) when the server supports retryable writes and the
    /// session has an lsid; otherwise it is not retried. If the retry cannot select a
    /// server, or a write's retry reports `NoWritesPerformed`, the previous error is
    /// returned; otherwise the retry's.
    ///
    /// Under `timeoutMS` (Client Side Operations Timeout, "Retryability") an operation
    /// is retried as many times as its errors are retryable and time is left; once the
    /// deadline has passed the operation's timeout error is returned (the last error as
    /// its cause), and a timeout error is never retried. A reply with MaxTimeMSExpired
    /// (code 50) is the operation's timeout error too.
    ///
    /// The operation is a `brook.operation` span (target `brook::command`, `DEBUG`), its
    /// commands `brook.command` spans inside it; its id is the request id of its first
    /// command.
    #[allow(clippy::too_many_arguments)]
    async fn run_command<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
        pin: bool,
        timing: Timing,
    ) -> Result<Executed<C::Output>, Error> {
        let operation_id = next_request_id();
        let span = tracing::debug_span!(
            target: "brook::command",
            "brook.operation",
            command = C::NAME,
            database = db,
            operation_id,
        );
        self.run_operation(db, cmd, session, target, retry, pin, timing, operation_id)
            .instrument(span)
            .await
    }

    /// [`run_command`](Self::run_command)'s loop, its first command sent with the request
    /// id `operation_id`.
    #[allow(clippy::too_many_arguments)]
    async fn run_operation<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        mut session: Option<&mut dyn SessionRef>,
        target: Target<'_>,
        retry: Retry,
        pin: bool,
        timing: Timing,
        operation_id: i32,
    ) -> Result<Executed<C::Output>, Error> {
        let retry = if self.retry_enabled(retry) {
            retry
        } else {
            Retry::No
        };
        let deadline = timing.deadline;
        let mut txn_number: Option<i64> = None;
        // The error of the previous attempt and where it happened, once one failed.
        let mut previous: Option<(Error, ServerAddress)> = None;
        let mut attempts: u32 = 0;
        loop {
            if let Some(d) = deadline
                && attempts > 0
                && d.is_expired(Instant::now())
            {
                let cause = previous.take().map(|(e, _)| e);
                return Err(d.expired("before the operation could be retried", cause));
            }
            let deprioritized: Vec<ServerAddress> =
                previous.iter().map(|(_, at)| at.clone()).collect();
            let checked = match self
                .check_out_within(target, Lease::Shared, &deprioritized, deadline)
                .await
            {
                Ok(checked) => checked,
                Err(e) => {
                    return Err(match previous {
                        Some((original, _)) if !e.is_operation_timeout() => original,
                        _ => e,
                    });
                }
            };
            let CheckedOut {
                mut conn,
                read_preference,
                operation,
                min_rtt,
            } = checked;
            let address = conn.address().clone();
            let wire_version = conn.description().max_wire_version;
            let mut body = cmd.build(db).map_err(Error::command)?;
            if retry == Retry::Write {
                let supported = supports_retryable_writes(conn.description());
                match previous.take() {
                    None if supported => {
                        txn_number = reborrow(&mut session).and_then(|s| s.next_txn_number());
                    }
                    None => {}
                    // The server selected for the retry cannot take the txnNumber.
                    Some((original, _)) if !supported => return Err(original),
                    Some(kept) => previous = Some(kept),
                }
            }
            if let Some(n) = txn_number {
                body.body.insert("txnNumber", n);
            }
            if let Some(preference) = read_preference {
                body.body.insert("$readPreference", preference);
            }
            let request_id = if attempts == 0 {
                operation_id
            } else {
                next_request_id()
            };
            let outcome = self
                .run_on_as(
                    &mut conn,
                    Body::Built(body),
                    reborrow(&mut session),
                    timing.bound(min_rtt),
                    request_id,
                    operation_id,
                )
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
                Err(err) => match deadline {
                    Some(d) if err.code() == Some(MAX_TIME_MS_EXPIRED) => {
                        d.expired("on the server (MaxTimeMSExpired)", Some(err))
                    }
                    _ => err,
                },
            };
            if txn_number.is_some() && is_unsupported_txn_number(&err) {
                return Err(Error::unsupported(
                    "retryable writes on this deployment (its storage engine does not \
                     support them): add retryWrites=false to the connection string",
                ));
            }
            let retryable = match retry {
                Retry::No => false,
                Retry::Read => err.is_retryable_read(),
                Retry::Write => txn_number.is_some() && err.is_retryable_write(),
            };
            // A write's retry that reports NoWritesPerformed: the error to report stays
            // the previous one.
            let kept = match previous.take() {
                Some((original, _))
                    if retry == Retry::Write && err.has_label("NoWritesPerformed") =>
                {
                    original
                }
                _ => err,
            };
            // Without timeoutMS a retryable error is retried once; with it, while time
            // is left (checked at the top of the loop).
            if !retryable || (deadline.is_none() && attempts > 0) {
                return Err(kept);
            }
            debug!(server = %address, error = %kept, ?retry, attempt = attempts + 1, "retrying");
            previous = Some((kept, address));
            attempts += 1;
        }
    }

    /// [`execute`](Self::execute) in an implicit session of its own.
    pub(crate) async fn execute_implicit<C: Command>(
        &self,
        db: &str,
        cmd: &C,
        target: Target<'_>,
        retry: Retry,
        timing: Timing,
    ) -> Result<C::Output, Error> {
        let mut session = self.implicit_session();
        self.execute(db, cmd, Some(&mut session), target, retry, timing)
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
    /// over the reply's top-level fields. Returns whether the reply has `ok: 1`.
    fn observe_reply(&self, reply: &Reply, conn: &PooledConn, wire: i32) -> bool {
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
        ok
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
    /// connection, its outcome logged, under `deadline`: with a
    /// deadline that has a limit, selection, checkout and the round trip are bounded by
    /// it and the command carries `maxTimeMS` (Client Side Operations Timeout: a
    /// cursor's `close` gets a fresh `timeoutMS`); otherwise (`None`, or `timeoutMS=0`)
    /// by [`KILL_CURSORS_BOUND`].
    pub(crate) async fn kill_cursors_within(
        &self,
        server: &ServerAddress,
        db: &str,
        cmd: &KillCursors,
        session: &mut dyn SessionRef,
        deadline: Option<Deadline>,
    ) -> Result<(), Error> {
        let timing = Timing {
            deadline,
            max_time: true,
        };
        let run = self.run_command(
            db,
            cmd,
            Some(&mut *session),
            Target::At(server),
            Retry::No,
            false,
            timing,
        );
        let outcome = if deadline.and_then(|d| d.at()).is_some() {
            run.await.map(|_| ())
        } else {
            tokio::time::timeout(KILL_CURSORS_BOUND, run)
                .await
                .unwrap_or_else(|_| {
                    session.mark_dirty();
                    Err(Error::new(ErrorKind::Timeout {
                        what: "killCursors",
                        after: KILL_CURSORS_BOUND,
                    }))
                })
                .map(|_| ())
        };
        match &outcome {
            Ok(()) => debug!(%server, cursors = ?cmd.ids, "cursors killed"),
            Err(e) => debug!(%server, cursors = ?cmd.ids, error = %e, "killCursors failed"),
        }
        outcome
    }

    /// Runs `cmd` (a `killCursors`) on `db` on `conn`, the connection its cursor is pinned
    /// to (behind a load balancer); the connection then goes back to the pool. Bounded
    /// by `deadline` as [`kill_cursors_within`](Self::kill_cursors_within) is (else by
    /// [`KILL_CURSORS_BOUND`]).
    pub(crate) async fn kill_cursors_pinned_within(
        &self,
        mut conn: PooledConn,
        db: &str,
        cmd: &KillCursors,
        session: &mut dyn SessionRef,
        deadline: Option<Deadline>,
    ) -> Result<(), Error> {
        let bound = match deadline {
            Some(deadline) if deadline.at().is_some() => Bound::Deadline {
                deadline,
                max_time: true,
                min_rtt: self.min_rtt(conn.address()),
            },
            _ => Bound::Legacy(Some(KILL_CURSORS_BOUND)),
        };
        let outcome = async {
            let body = cmd.build(db).map_err(Error::command)?;
            let reply = self
                .run_on_within(&mut conn, Body::Built(body), Some(session), bound)
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
        session: impl SessionRef + 'static,
    ) {
        self.spawn_kill_cursors_within(at, db, cmd, session, None);
    }

    /// [`spawn_kill_cursors`](Self::spawn_kill_cursors) with a `timeoutMS` of its own
    /// (`None`: not set): the kill's deadline is computed when the task starts, as for
    /// [`kill_cursors_within`](Self::kill_cursors_within).
    pub(crate) fn spawn_kill_cursors_within(
        self: &Arc<Self>,
        at: KillAt,
        db: String,
        cmd: KillCursors,
        mut session: impl SessionRef + 'static,
        timeout: Option<Duration>,
    ) {
        let exec = Arc::clone(self);
        self.spawn(async move {
            let deadline = Deadline::for_timeout(timeout);
            // Both log their outcome; a background kill has nobody to report to.
            let _ = match at {
                KillAt::Server(server) => {
                    exec.kill_cursors_within(&server, &db, &cmd, &mut session, deadline)
                        .await
                }
                KillAt::Pinned(conn) => {
                    exec.kill_cursors_pinned_within(*conn, &db, &cmd, &mut session, deadline)
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
                Timing::LEGACY,
            );
            if let Ok(Err(e)) = tokio::time::timeout(SHUTDOWN_STEP_BOUND, run).await {
                debug!(error = %e, "endSessions failed");
            }
        }
        self.topology.close();
    }
}

/// The server's code for a command that ran out of its `maxTimeMS` (MaxTimeMSExpired).
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// A selection error of an operation with `deadline`: the operation's timeout error when
/// selection timed out because the deadline passed, the selection error as its cause.
/// A `serverSelectionTimeoutMS` shorter than the time left stays the selection error
/// (a timeout error as well: [`Error::is_timeout`]).
fn selection_error(deadline: Option<Deadline>, err: Error) -> Error {
    match deadline {
        Some(d) if err.is_timeout() && d.is_expired(Instant::now()) => {
            d.expired("during server selection", Some(err))
        }
        _ => err,
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

/// A command's body as its monitoring event shows it: the kind-0 body with each
/// document sequence (an insert's `documents`) as an array field.
fn command_document(built: &CommandBody) -> Document {
    let mut doc = built.body.clone();
    for (identifier, documents) in &built.sequences {
        let array = documents
            .iter()
            .filter_map(|d| d.to_document().ok())
            .map(bson::Bson::Document)
            .collect::<Vec<_>>();
        doc.insert(identifier.clone(), array);
    }
    doc
}

/// How a command ended, for [`Observed::finish`].
enum Finished<'a> {
    /// A reply came; `ok`: with `ok: 1`.
    Reply { reply: &'a Reply, ok: bool },
    /// No reply (or the operation's deadline passed).
    Error(&'a Error),
}

/// What [`Executor::command_started`] kept of a command for its end: all `Copy` or
/// `None` when nothing listens.
struct Observed {
    get_more: bool,
    sensitive: bool,
    show_bodies: bool,
    /// When it was sent, when something wants the duration.
    started: Option<Instant>,
    /// The user's handler, the command's name and its context, when a handler is set
    /// (boxed: the getMore future stays as small when no handler is set).
    event: Option<Box<(EventHandler<CommandEvent>, String, CommandContext)>>,
    /// The command's `command` label.
    #[cfg(feature = "metrics")]
    name: &'static str,
}

impl Observed {
    /// Records the end of the command on `span`, traces it, reports it to the handler and
    /// the metrics.
    fn finish(self, span: &tracing::Span, finished: Finished<'_>) {
        let duration = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let ok = matches!(finished, Finished::Reply { ok: true, .. });
        #[cfg(feature = "metrics")]
        crate::metrics::command(self.name, ok, duration);
        let failure = || -> (Option<i32>, String) {
            match &finished {
                Finished::Reply { reply, .. } => {
                    match brook_command::check_ok(reply.body.as_raw()) {
                        Err(brook_command::CommandError::Server(e)) => (e.code, e.message),
                        Err(e) => (None, e.to_string()),
                        Ok(_) => (None, String::new()),
                    }
                }
                Finished::Error(err) => (err.code(), err.to_string()),
            }
        };
        if !span.is_disabled() {
            span.record(
                "duration_us",
                u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            );
            span.record("outcome", if ok { "ok" } else { "error" });
        }
        if ok {
            let reply = match &finished {
                Finished::Reply { reply, .. } if self.show_bodies => Some(reply),
                _ => None,
            };
            let shown = reply.map(|r| {
                if self.sensitive {
                    Shown::Redacted
                } else {
                    Shown::Raw(r.body.as_raw())
                }
            });
            let shown = shown.as_ref().map(tracing::field::display);
            if self.get_more {
                trace!(target: "brook::command", reply = shown, "command succeeded");
            } else {
                debug!(target: "brook::command", reply = shown, "command succeeded");
            }
        } else if !span.is_disabled()
            || self.event.is_some()
            || tracing::enabled!(target: "brook::command", tracing::Level::DEBUG)
        {
            let (code, message) = failure();
            let message = if self.sensitive {
                "(redacted: a security-sensitive command)".to_owned()
            } else {
                message
            };
            if let Some(code) = code {
                span.record("code", code);
            }
            debug!(target: "brook::command", code, error = %message, "command failed");
            if let Some(event) = self.event {
                let (handler, command_name, context) = *event;
                emit_command(
                    &handler,
                    CommandEvent::Failed(CommandFailedEvent {
                        command_name,
                        failure: message,
                        code,
                        duration,
                        context,
                    }),
                );
            }
            return;
        }
        if let Some(event) = self.event {
            let (handler, command_name, context) = *event;
            let reply = match finished {
                Finished::Reply { reply, .. } if !self.sensitive => {
                    reply.body.to_document().unwrap_or_default()
                }
                _ => Document::new(),
            };
            emit_command(
                &handler,
                CommandEvent::Succeeded(CommandSucceededEvent {
                    command_name,
                    reply,
                    duration,
                    context,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn max_time_ms_is_the_time_left_minus_the_minimum_round_trip() {
        let now = Instant::now();
        let deadline = Deadline::starting_at(now, Duration::from_millis(500));
        let at = |ms| now + Duration::from_millis(ms);
        let rtt = |ms| Duration::from_millis(ms);
        assert_eq!(max_time_ms(&deadline, rtt(0), now).unwrap(), Some(500));
        assert_eq!(max_time_ms(&deadline, rtt(50), now).unwrap(), Some(450));
        assert_eq!(max_time_ms(&deadline, rtt(50), at(100)).unwrap(), Some(350));
        // Rounded down: 0.9 ms left after the round trip is less than one millisecond.
        let nearly = now + Duration::from_micros(499_100);
        assert_eq!(
            max_time_ms(&deadline, rtt(0), nearly - rtt(1)).unwrap(),
            Some(1)
        );
        let err = max_time_ms(&deadline, rtt(0), nearly).unwrap_err();
        assert!(err.is_timeout() && err.is_operation_timeout(), "{err}");
        // The round trip takes all the time left, or more: not sent.
        for (rtt_ms, now_ms) in [(500, 0), (600, 0), (100, 400), (0, 500), (0, 900)] {
            let err = max_time_ms(&deadline, rtt(rtt_ms), at(now_ms)).unwrap_err();
            assert!(err.is_operation_timeout(), "{err}");
            assert!(err.to_string().contains("timeoutMS (500ms)"), "{err}");
            assert!(!err.is_retryable_read() && !err.is_retryable_write());
        }
        // timeoutMS=0: no limit, no maxTimeMS.
        let unlimited = Deadline::starting_at(now, Duration::ZERO);
        assert_eq!(max_time_ms(&unlimited, rtt(900), at(10_000)).unwrap(), None);
    }

    #[test]
    fn a_deadline_and_its_bounds() {
        let now = Instant::now();
        let d = Deadline::starting_at(now, Duration::from_millis(300));
        assert_eq!(d.at(), Some(now + Duration::from_millis(300)));
        assert_eq!(d.timeout(), Duration::from_millis(300));
        assert_eq!(
            d.remaining(now + Duration::from_millis(100)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            d.remaining(now + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
        assert!(!d.is_expired(now) && d.is_expired(now + Duration::from_millis(300)));
        // Selection: the shorter of serverSelectionTimeoutMS and the time left.
        let thirty = Duration::from_secs(30);
        assert_eq!(
            Deadline::min_with(Some(d), now, thirty),
            now + Duration::from_millis(300)
        );
        assert_eq!(
            Deadline::min_with(Some(d), now, Duration::from_millis(100)),
            now + Duration::from_millis(100)
        );
        assert_eq!(Deadline::min_with(None, now, thirty), now + thirty);
        let unlimited = Deadline::starting_at(now, Duration::ZERO);
        assert_eq!(unlimited.at(), None);
        assert_eq!(unlimited.remaining(now), None);
        assert!(!unlimited.is_expired(now + thirty));
        assert_eq!(
            Deadline::min_with(Some(unlimited), now, thirty),
            now + thirty
        );
        assert_eq!(Deadline::for_timeout(None), None);
    }

    #[test]
    fn timing_bounds_each_command() {
        let rtt = Duration::from_millis(7);
        assert_eq!(Timing::LEGACY.bound(rtt), Bound::Legacy(None));
        assert_eq!(Timing::for_timeout(None).bound(rtt), Bound::Legacy(None));
        let timing = Timing::for_timeout(Some(Duration::from_secs(1)));
        let Some(deadline) = timing.deadline else {
            panic!("a deadline");
        };
        assert_eq!(
            timing.bound(rtt),
            Bound::Deadline {
                deadline,
                max_time: true,
                min_rtt: rtt
            }
        );
        assert_eq!(
            timing.without_max_time().bound(rtt),
            Bound::Deadline {
                deadline,
                max_time: false,
                min_rtt: rtt
            }
        );
    }

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
