//! One server of the deployment: its address, its CMAP pool, what its last check said, and
//! its monitor (a task of its own, on a connection of its own, never from the pool).

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use brook_command::{Hello, HelloReply};
use brook_conn::{
    ConnError, Connection, ConnectionOptions, ServerAddress, ServerKind, StreamDescription,
};
use brook_pool::{ConnectErrorAction, Manager, Pool, PoolEvent, PoolOptions};
use brook_topology::{ApplicationError, ApplicationErrorKind, ErrorPhase, RttEstimator};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::debug;

use super::topology::Topology;
use crate::monitoring::{CmapEvent, EventHandler, SdamEvent};

/// The shortest pause between two checks of one server (SDAM's
/// `minHeartbeatFrequencyMS`).
pub(crate) const MIN_HEARTBEAT: Duration = Duration::from_millis(500);

/// Opens connections to one server for its pool, and reports failed handshakes to the
/// topology (SDAM: a network error before the handshake completes marks the server
/// unknown and clears its pool — for checkouts and for the background minPoolSize fill
/// alike).
pub(crate) struct ConnManager {
    address: ServerAddress,
    options: ConnectionOptions,
    topology: Weak<Topology>,
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
        let kind = if error.is_timeout() {
            ApplicationErrorKind::Timeout
        } else if error.is_network() {
            ApplicationErrorKind::Network
        } else {
            // A server that answered the hello with an error is up.
            return ConnectErrorAction::Keep;
        };
        if let Some(topology) = self.topology.upgrade() {
            let error = ApplicationError::new(kind, ErrorPhase::BeforeHandshake, generation);
            topology.handle_error(&self.address, &error);
        }
        ConnectErrorAction::Keep
    }
}

/// A connection checked out of a server's pool.
pub(crate) type PooledConn = brook_pool::Pooled<ConnManager>;

/// What the last handshake with a server said.
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
    /// Before any check: the defaults of a server that says nothing.
    pub(crate) fn unknown() -> ServerInfo {
        ServerInfo {
            max_wire_version: 0,
            max_bson_object_size: 16 * 1024 * 1024,
            max_message_size_bytes: 48_000_000,
            max_write_batch_size: 100_000,
            logical_session_timeout: None,
            // Never seen by a user: a client exists only once a server answered.
            kind: ServerKind::Standalone,
        }
    }

    fn of(d: &StreamDescription) -> ServerInfo {
        ServerInfo {
            max_wire_version: d.max_wire_version,
            max_bson_object_size: d.max_bson_object_size,
            max_message_size_bytes: d.max_message_size_bytes,
            max_write_batch_size: d.max_write_batch_size,
            logical_session_timeout: d.logical_session_timeout,
            kind: d.server_kind,
        }
    }

    fn from_hello(address: &ServerAddress, reply: &HelloReply) -> ServerInfo {
        ServerInfo::of(&StreamDescription::from_hello(
            address.clone(),
            reply.clone(),
            &[],
        ))
    }
}

/// One server: address, pool, monitor.
pub(crate) struct Server {
    address: ServerAddress,
    pool: Pool<ConnManager>,
    info: Mutex<Option<ServerInfo>>,
    /// Wakes the monitor for a check now (an error, or a selection that found nothing).
    check_now: Notify,
    monitor: Mutex<Option<AbortHandle>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("generation", &self.pool.generation())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with a paused pool (made ready by its first successful check) and a
    /// monitor checking it every `heartbeat`.
    pub(crate) fn start(
        topology: &Arc<Topology>,
        address: ServerAddress,
        conn_options: ConnectionOptions,
        pool_options: PoolOptions,
        heartbeat: Duration,
        handler: Option<EventHandler<CmapEvent>>,
    ) -> Arc<Server> {
        let manager = ConnManager {
            address: address.clone(),
            options: conn_options.clone(),
            topology: Arc::downgrade(topology),
        };
        let events = pool_event_sink(address.clone(), handler);
        let pool = Pool::new(manager, pool_options, Some(events));
        let server = Arc::new(Server {
            address: address.clone(),
            pool,
            info: Mutex::new(None),
            check_now: Notify::new(),
            monitor: Mutex::new(None),
        });
        // The monitor's reads are bounded by connectTimeoutMS (a heartbeat is quick).
        let mut monitor_options = conn_options;
        monitor_options.socket_timeout =
            Some(monitor_options.connect_timeout).filter(|d| !d.is_zero());
        let task = tokio::spawn(monitor(
            Arc::downgrade(topology),
            Arc::downgrade(&server),
            address,
            monitor_options,
            heartbeat,
        ));
        *server.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        server
    }

    pub(crate) fn address(&self) -> &ServerAddress {
        &self.address
    }

    pub(crate) fn pool(&self) -> &Pool<ConnManager> {
        &self.pool
    }

    pub(crate) fn info(&self) -> Option<ServerInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the monitor for a check now.
    pub(crate) fn request_check(&self) {
        self.check_now.notify_one();
    }

    /// Stops the monitor and closes the pool.
    pub(crate) fn close(&self) {
        if let Some(task) = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.pool.close();
    }
}

/// The monitor of one server: a hello on its own connection every `heartbeat` (sooner
/// when asked, never more often than every [`MIN_HEARTBEAT`]); each outcome goes to the
/// topology. A failed check of a server that was reachable is retried once at once on a
/// new connection (SDAM), then reported: the server becomes Unknown and its pool is
/// cleared, interrupting the connections in use.
async fn monitor(
    topology: Weak<Topology>,
    server: Weak<Server>,
    address: ServerAddress,
    options: ConnectionOptions,
    heartbeat: Duration,
) {
    let mut conn: Option<Connection> = None;
    let mut rtt = RttEstimator::new();
    let mut retried = false;
    loop {
        let started = std::time::Instant::now();
        let had_connection = conn.is_some();
        if let Some(top) = topology.upgrade() {
            top.heartbeat(SdamEvent::HeartbeatStarted {
                address: address.clone(),
            });
        }
        let outcome = match conn.as_mut() {
            Some(c) => c.run("admin", &Hello::new()).await,
            None => match Connection::connect(&address, &options).await {
                Ok(c) => {
                    let reply = c.description().hello.clone();
                    conn = Some(c);
                    Ok(reply)
                }
                Err(e) => Err(e),
            },
        };
        let elapsed = started.elapsed();
        let Some(top) = topology.upgrade() else {
            return;
        };
        let Some(me) = server.upgrade() else { return };
        match outcome {
            Ok(reply) => {
                top.heartbeat(SdamEvent::HeartbeatSucceeded {
                    address: address.clone(),
                    duration: elapsed,
                });
                retried = false;
                rtt.add_sample(elapsed);
                *me.info.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(ServerInfo::from_hello(&address, &reply));
                top.on_check(&address, Ok(&reply), Some(&rtt));
            }
            Err(e) if had_connection && !retried => {
                top.heartbeat(SdamEvent::HeartbeatFailed {
                    address: address.clone(),
                    duration: elapsed,
                    error: e.to_string(),
                });
                // One immediate retry on a new connection before the server is Unknown.
                debug!(server = %address, error = %e, "heartbeat failed; retrying once");
                conn = None;
                retried = true;
                continue;
            }
            Err(e) => {
                top.heartbeat(SdamEvent::HeartbeatFailed {
                    address: address.clone(),
                    duration: elapsed,
                    error: e.to_string(),
                });
                conn = None;
                retried = false;
                rtt.reset();
                me.pool.clear(true);
                top.on_check(&address, Err(e.to_string()), None);
            }
        }
        drop(top);
        tokio::time::sleep(MIN_HEARTBEAT).await;
        let wait = heartbeat.saturating_sub(MIN_HEARTBEAT);
        let _ = tokio::time::timeout(wait, me.check_now.notified()).await;
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
