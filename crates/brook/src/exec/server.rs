//! One server as the executor sees it: its address, its CMAP pool, whether it is known to
//! be usable, and the check that makes it usable again after an error marked it unknown.
//!
//! This is the seed of SDAM for one server: the error handling follows the SDAM
//! specification's rules (a network error or a handshake failure marks the server unknown
//! and clears its pool; a "not primary" / "node is recovering" error marks it unknown and
//! clears the pool only for shutdown codes or servers before 4.2), and selection waits
//! until a check (a fresh handshake) found the server again. Replica sets and monitors
//! replace the check with per-server monitoring in the topology crate.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use brook_command::ServerError;
use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress, ServerKind};
use brook_pool::{ConnectErrorAction, Manager, Pool, PoolEvent, PoolOptions};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::monitoring::{CmapEvent, EventHandler};

/// The pause between two checks of a server marked unknown (SDAM's
/// `minHeartbeatFrequencyMS`).
pub(crate) const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Opens connections to one server for its pool, and reports failed handshakes to the
/// server (SDAM: a network error before the handshake completes marks the server
/// unknown and clears its pool — for checkouts and for the background minPoolSize fill
/// alike).
pub(crate) struct ConnManager {
    address: ServerAddress,
    options: ConnectionOptions,
    server: Weak<Server>,
}

impl fmt::Debug for ConnManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnManager")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Manager for ConnManager {
    type Connection = Connection;
    type Error = ConnError;

    fn connect(&self) -> impl Future<Output = Result<Connection, ConnError>> + Send {
        // Every step (resolve, TCP, TLS, hello) is bounded by connectTimeoutMS.
        Connection::connect(&self.address, &self.options)
    }

    fn is_broken(&self, conn: &Connection) -> bool {
        conn.is_broken() || conn.has_more_to_come()
    }

    fn on_connect_error(&self, error: &ConnError, generation: u64) -> ConnectErrorAction {
        if !error.is_network() {
            // A server that answered the hello with an error is up.
            return ConnectErrorAction::Keep;
        }
        if let Some(server) = self.server.upgrade() {
            if generation < server.pool.generation() {
                // The pool was cleared since the attempt started: a stale error.
                return ConnectErrorAction::Keep;
            }
            // Unknown, the pool cleared (here, before the pool reports the failed
            // connection closed, as CMAP's event order wants), then the check.
            server.mark_unknown(true, &error.to_string());
        }
        ConnectErrorAction::Keep
    }
}

/// A connection checked out of a server's pool.
pub(crate) type PooledConn = brook_pool::Pooled<ConnManager>;

/// What the last handshake with the server said.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) max_wire_version: i32,
    pub(crate) max_bson_object_size: usize,
    pub(crate) max_message_size_bytes: usize,
    pub(crate) max_write_batch_size: usize,
    pub(crate) logical_session_timeout: Option<Duration>,
    pub(crate) kind: ServerKind,
}

impl ServerInfo {
    pub(crate) fn of(conn: &Connection) -> ServerInfo {
        let d = conn.description();
        ServerInfo {
            max_wire_version: d.max_wire_version,
            max_bson_object_size: d.max_bson_object_size,
            max_message_size_bytes: d.max_message_size_bytes,
            max_write_batch_size: d.max_write_batch_size,
            logical_session_timeout: d.logical_session_timeout,
            kind: d.server_kind,
        }
    }
}

/// Whether the server may be selected.
#[derive(Debug, Clone)]
pub(crate) enum ServerState {
    /// The last check or operation found it usable.
    Known,
    /// An error marked it unknown; a check is under way. Holds that error's text.
    Unknown(Arc<str>),
    /// The client shut down.
    Closed,
}

/// One server: address, pool, state.
pub(crate) struct Server {
    address: ServerAddress,
    pool: Pool<ConnManager>,
    conn_options: ConnectionOptions,
    state: watch::Sender<ServerState>,
    info: Mutex<ServerInfo>,
    /// Bumped by every [`mark_unknown`](Self::mark_unknown): a check that started before
    /// the latest error cannot mark the server known.
    epoch: AtomicU64,
    checking: AtomicBool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("state", &*self.state.borrow())
            .field("generation", &self.pool.generation())
            .finish_non_exhaustive()
    }
}

/// SDAM's "node is shutting down" codes: the pool is cleared whatever the wire version.
const SHUTDOWN_CODES: [i32; 2] = [11600, 91];
/// SDAM's "not writable primary" codes.
const NOT_PRIMARY_CODES: [i32; 3] = [10107, 13435, 10058];
/// SDAM's "node is recovering" codes.
const RECOVERING_CODES: [i32; 5] = [11600, 11602, 13436, 189, 91];

/// What an error means for the server it happened on (SDAM "Error handling").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorImpact {
    /// Nothing beyond the connection (already discarded when broken).
    None,
    /// Mark the server unknown and check it again.
    MarkUnknown,
    /// Mark the server unknown, clear its pool and check it again.
    MarkUnknownAndClear,
}

/// The impact of a server error (an `ok: 0` reply) from a server of `wire_version`.
pub(crate) fn server_error_impact(err: &ServerError, wire_version: i32) -> ErrorImpact {
    let Some(code) = err.code else {
        return ErrorImpact::None;
    };
    let state_change = NOT_PRIMARY_CODES.contains(&code) || RECOVERING_CODES.contains(&code);
    if !state_change {
        return ErrorImpact::None;
    }
    if SHUTDOWN_CODES.contains(&code) || wire_version < 8 {
        ErrorImpact::MarkUnknownAndClear
    } else {
        ErrorImpact::MarkUnknown
    }
}

impl Server {
    /// A server found usable by the handshake that produced `info`; its pool is ready.
    pub(crate) fn new(
        address: ServerAddress,
        conn_options: ConnectionOptions,
        pool_options: PoolOptions,
        info: ServerInfo,
        handler: Option<EventHandler<CmapEvent>>,
    ) -> Arc<Server> {
        Arc::new_cyclic(|server| {
            let manager = ConnManager {
                address: address.clone(),
                options: conn_options.clone(),
                server: server.clone(),
            };
            let events = pool_event_sink(address.clone(), handler);
            let pool = Pool::new(manager, pool_options, Some(events));
            pool.ready();
            let (state, _) = watch::channel(ServerState::Known);
            Server {
                address,
                pool,
                conn_options,
                state,
                info: Mutex::new(info),
                epoch: AtomicU64::new(0),
                checking: AtomicBool::new(false),
            }
        })
    }

    pub(crate) fn address(&self) -> &ServerAddress {
        &self.address
    }

    pub(crate) fn pool(&self) -> &Pool<ConnManager> {
        &self.pool
    }

    pub(crate) fn info(&self) -> ServerInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ServerState> {
        self.state.subscribe()
    }

    /// Applies what an error on a connection of pool generation `generation` means. An
    /// error on a connection older than the pool's generation is ignored: the pool was
    /// cleared since that connection was made (SDAM: stale errors).
    pub(crate) fn handle_error(self: &Arc<Self>, impact: ErrorImpact, generation: u64, why: &str) {
        if impact == ErrorImpact::None || generation < self.pool.generation() {
            return;
        }
        self.mark_unknown(impact == ErrorImpact::MarkUnknownAndClear, why);
    }

    /// Marks the server unknown (selection waits), clears the pool if asked, and starts a
    /// check unless one runs.
    pub(crate) fn mark_unknown(self: &Arc<Self>, clear: bool, why: &str) {
        if !self.set_unknown(why) {
            return;
        }
        if clear {
            warn!(server = %self.address, reason = why, "server marked unknown; pool cleared");
            self.pool.clear(false);
        } else {
            info!(server = %self.address, reason = why, "server marked unknown");
        }
        // Only now: a check that finished before the clear would leave a paused pool
        // under a known server.
        self.start_check();
    }

    /// Marks the server unknown; false once closed. (Unknown before the pool is paused:
    /// a selection that still saw "known" and finds the pool paused selects again and
    /// then waits.)
    fn set_unknown(&self, why: &str) -> bool {
        if matches!(*self.state.borrow(), ServerState::Closed) {
            return false;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state
            .send_replace(ServerState::Unknown(Arc::from(why)));
        true
    }

    /// [`mark_unknown`](Self::mark_unknown) without clearing, unless the server is
    /// unknown (or closed) already.
    pub(crate) fn mark_unknown_if_known(self: &Arc<Self>, why: &str) {
        if matches!(*self.state.borrow(), ServerState::Known) {
            self.mark_unknown(false, why);
        }
    }

    fn start_check(self: &Arc<Self>) {
        if self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.checking.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        handle.spawn(check_until_known(weak));
    }

    /// Ends the server: selection fails, the pool closes.
    pub(crate) fn close(&self) {
        self.state.send_replace(ServerState::Closed);
        self.pool.close();
    }
}

/// Checks the server (a fresh handshake, bounded by connectTimeoutMS) every
/// [`MIN_CHECK_INTERVAL`] until one succeeds after the latest error; then the pool is made
/// ready and the server known. Ends when the server is dropped or closed.
async fn check_until_known(server: Weak<Server>) {
    loop {
        let Some(s) = server.upgrade() else { return };
        if matches!(*s.state.borrow(), ServerState::Closed) {
            s.checking.store(false, Ordering::Release);
            return;
        }
        let epoch = s.epoch.load(Ordering::Acquire);
        let (address, options) = (s.address.clone(), s.conn_options.clone());
        drop(s);
        let outcome = Connection::connect(&address, &options).await;
        let Some(s) = server.upgrade() else { return };
        match outcome {
            Ok(conn) if s.epoch.load(Ordering::Acquire) == epoch => {
                *s.info.lock().unwrap_or_else(|p| p.into_inner()) = ServerInfo::of(&conn);
                s.checking.store(false, Ordering::Release);
                if matches!(*s.state.borrow(), ServerState::Closed) {
                    return;
                }
                s.pool.ready();
                s.state.send_replace(ServerState::Known);
                debug!(server = %address, "server check succeeded; server known");
                conn.close().await;
                return;
            }
            Ok(conn) => {
                // Another error came in while this check ran: check again.
                drop(conn);
            }
            Err(e) => {
                debug!(server = %address, error = %e, "server check failed");
                s.state.send_if_modified(|state| match state {
                    ServerState::Unknown(why) => {
                        *why = Arc::from(e.to_string());
                        true
                    }
                    _ => false,
                });
            }
        }
        drop(s);
        tokio::time::sleep(MIN_CHECK_INTERVAL).await;
    }
}

/// The pool's event sink: a `tracing` event for each, and the user's handler with the
/// server's address.
fn pool_event_sink(
    address: ServerAddress,
    handler: Option<EventHandler<CmapEvent>>,
) -> brook_pool::EventHandler {
    Arc::new(move |event: &PoolEvent| {
        crate::monitoring::trace_pool_event(&address, event);
        if let Some(h) = &handler {
            h.call(&CmapEvent {
                address: address.clone(),
                event: event.clone(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> ServerError {
        ServerError {
            code: Some(code),
            code_name: None,
            message: String::new(),
            labels: Vec::new(),
            write_concern_error: false,
            raw: None,
        }
    }

    #[test]
    fn sdam_error_impacts() {
        assert_eq!(
            server_error_impact(&err(10107), 21),
            ErrorImpact::MarkUnknown
        );
        assert_eq!(
            server_error_impact(&err(10107), 7),
            ErrorImpact::MarkUnknownAndClear
        );
        assert_eq!(
            server_error_impact(&err(91), 21),
            ErrorImpact::MarkUnknownAndClear
        );
        assert_eq!(
            server_error_impact(&err(11600), 21),
            ErrorImpact::MarkUnknownAndClear
        );
        assert_eq!(
            server_error_impact(&err(13436), 21),
            ErrorImpact::MarkUnknown
        );
        assert_eq!(server_error_impact(&err(43), 21), ErrorImpact::None);
        assert_eq!(server_error_impact(&err(11000), 7), ErrorImpact::None);
    }
}
