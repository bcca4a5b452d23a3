//! One server of the deployment: its address, its CMAP pool, what its last check said, and
//! its monitors (tasks of their own, on connections of their own, never from the pool; see
//! [`super::monitor`]).

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use brook_command::HelloReply;
use brook_conn::{
    ConnError, Connection, ConnectionOptions, ServerAddress, ServerKind, StreamDescription,
};
use brook_pool::{ConnectErrorAction, Manager, Pool, PoolEvent, PoolOptions};
use brook_topology::{ApplicationError, ApplicationErrorKind, ErrorPhase};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::monitor::{self, MonitorSettings};
use super::topology::Topology;
use crate::monitoring::{CmapEvent, EventHandler};
use crate::options::ServerMonitoringMode;

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
        if error.is_auth() {
            // SDAM: a failed authentication marks the server Unknown and clears its pool
            // (outside load-balanced mode), as a network error before the handshake does;
            // the pool clears itself after handing the error to the checkout that
            // started the attempt, which reports it (rather than a cleared pool).
            let Some(topology) = self.topology.upgrade() else {
                return ConnectErrorAction::Keep;
            };
            let as_unknown = ApplicationError::new(
                ApplicationErrorKind::Network,
                ErrorPhase::BeforeHandshake,
                generation,
            );
            let clear = topology.handle_error_with(&self.address, &as_unknown, None, false);
            return if clear {
                ConnectErrorAction::Clear
            } else {
                ConnectErrorAction::Keep
            };
        }
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

    fn service_id(&self, conn: &Connection) -> Option<brook_pool::ServiceId> {
        // Behind a load balancer: the service of the handshake (checked to be there).
        conn.description().hello.service_id.map(|id| id.bytes())
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

    pub(super) fn from_hello(address: &ServerAddress, reply: &HelloReply) -> ServerInfo {
        ServerInfo::of(&StreamDescription::from_hello(
            address.clone(),
            reply.clone(),
            &[],
        ))
    }
}

/// One server: address, pool, monitors.
pub(crate) struct Server {
    address: ServerAddress,
    pool: Pool<ConnManager>,
    info: Mutex<Option<ServerInfo>>,
    /// Wakes the monitor for a check now (an error, or a selection that found nothing).
    check_now: Notify,
    /// Woken (`notify_waiters`) on every clear of the pool: a streaming check in progress
    /// is cancelled when someone else (an application error) cleared the pool.
    pool_cleared: Arc<Notify>,
    monitor: Mutex<Option<AbortHandle>>,
    /// The RTT monitor, in the streaming protocol only.
    rtt_monitor: Mutex<Option<AbortHandle>>,
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
    /// monitor checking it every `heartbeat`, by the streaming protocol or by polling as
    /// `monitoring_mode` says (see [`resolve_monitoring_mode`]).
    pub(crate) fn start(
        topology: &Arc<Topology>,
        address: ServerAddress,
        conn_options: ConnectionOptions,
        pool_options: PoolOptions,
        heartbeat: Duration,
        handler: Option<EventHandler<CmapEvent>>,
        monitoring_mode: ServerMonitoringMode,
    ) -> Arc<Server> {
        let manager = ConnManager {
            address: address.clone(),
            options: conn_options.clone(),
            topology: Arc::downgrade(topology),
        };
        let pool_cleared = Arc::new(Notify::new());
        let events = pool_event_sink(address.clone(), handler, Arc::clone(&pool_cleared));
        let pool = Pool::new(manager, pool_options, Some(events));
        let server = Arc::new(Server {
            address: address.clone(),
            pool,
            info: Mutex::new(None),
            check_now: Notify::new(),
            pool_cleared,
            monitor: Mutex::new(None),
            rtt_monitor: Mutex::new(None),
        });
        if conn_options.load_balanced {
            // Load Balancer specification: nothing monitors a load balancer.
            return server;
        }
        // The monitors' connections are bounded by connectTimeoutMS (a heartbeat is
        // quick); an awaited reply by connectTimeoutMS + heartbeatFrequencyMS.
        let mut monitor_options = conn_options;
        monitor_options.socket_timeout =
            Some(monitor_options.connect_timeout).filter(|d| !d.is_zero());
        let settings = MonitorSettings {
            address,
            options: monitor_options,
            heartbeat,
            streaming: resolve_monitoring_mode(Some(monitoring_mode))
                == ServerMonitoringMode::Stream,
        };
        let task = tokio::spawn(monitor::monitor(
            Arc::downgrade(topology),
            Arc::downgrade(&server),
            settings,
        ));
        *lock(&server.monitor) = Some(task.abort_handle());
        server
    }

    pub(crate) fn address(&self) -> &ServerAddress {
        &self.address
    }

    pub(crate) fn pool(&self) -> &Pool<ConnManager> {
        &self.pool
    }

    pub(crate) fn info(&self) -> Option<ServerInfo> {
        lock(&self.info).clone()
    }

    pub(super) fn set_info(&self, info: ServerInfo) {
        *lock(&self.info) = Some(info);
    }

    /// Asks the monitor for a check now. A monitor sleeping between checks wakes (no
    /// sooner than [`MIN_HEARTBEAT`] after its last check); one in a check, which in the
    /// streaming protocol is all the time the server is reachable, ignores it (SDAM) —
    /// the server streams what changes anyway.
    pub(crate) fn request_check(&self) {
        self.check_now.notify_one();
    }

    /// Resolves when a check is requested.
    pub(super) fn check_requested(&self) -> tokio::sync::futures::Notified<'_> {
        self.check_now.notified()
    }

    /// Woken on every clear of the pool.
    pub(super) fn pool_cleared(&self) -> Arc<Notify> {
        Arc::clone(&self.pool_cleared)
    }

    /// Keeps the RTT monitor's handle, for [`Server::close`].
    pub(super) fn set_rtt_monitor(&self, task: AbortHandle) {
        if let Some(old) = lock(&self.rtt_monitor).replace(task) {
            old.abort();
        }
    }

    /// Stops the monitors (a check in progress, an awaited hello included, is cancelled
    /// at once) and closes the pool.
    pub(crate) fn close(&self) {
        for task in [lock(&self.monitor).take(), lock(&self.rtt_monitor).take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.pool.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `serverMonitoringMode` as it applies here: `Stream` (the streaming protocol where the
/// server supports it) or `Poll`. `auto` (and no option) is `Stream` unless the process
/// runs on a FaaS platform (AWS Lambda, Azure Functions, Google Cloud Functions or Cloud
/// Run, Vercel), detected by the handshake specification's `client.env` rules: there the
/// long-lived streaming connections would keep a frozen function's connections busy and
/// its server's connection count high.
pub(crate) fn resolve_monitoring_mode(mode: Option<ServerMonitoringMode>) -> ServerMonitoringMode {
    match mode.unwrap_or(ServerMonitoringMode::Auto) {
        ServerMonitoringMode::Stream => ServerMonitoringMode::Stream,
        ServerMonitoringMode::Poll => ServerMonitoringMode::Poll,
        ServerMonitoringMode::Auto => {
            if faas_platform(|name| std::env::var_os(name)).is_some() {
                ServerMonitoringMode::Poll
            } else {
                ServerMonitoringMode::Stream
            }
        }
    }
}

/// The FaaS platform the environment (read through `var`) names, by the handshake
/// specification's rules (`client.env.name`): none when no variable or variables of two
/// platforms are set, except that Vercel (which runs on AWS Lambda) wins over AWS.
fn faas_platform(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<&'static str> {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    let aws = var("AWS_EXECUTION_ENV")
        .is_some_and(|v| v.to_string_lossy().starts_with("AWS_Lambda_"))
        || set("AWS_LAMBDA_RUNTIME_API");
    let azure = set("FUNCTIONS_WORKER_RUNTIME");
    let gcp = set("K_SERVICE") || set("FUNCTION_NAME");
    let vercel = set("VERCEL");
    match (aws, azure, gcp, vercel) {
        (_, false, false, true) => Some("vercel"),
        (true, false, false, false) => Some("aws.lambda"),
        (false, true, false, false) => Some("azure.func"),
        (false, false, true, false) => Some("gcp.func"),
        _ => None,
    }
}

/// The pool's event sink: a `tracing` event for each, and the user's handler with the
/// server's address; a clear also wakes the monitor's streaming check (see
/// [`Server::pool_cleared`]).
fn pool_event_sink(
    address: ServerAddress,
    handler: Option<EventHandler<CmapEvent>>,
    pool_cleared: Arc<Notify>,
) -> brook_pool::EventHandler {
    Arc::new(move |event: &PoolEvent| {
        crate::monitoring::trace_pool_event(&address, event);
        if let PoolEvent::PoolCleared { .. } = event {
            pool_cleared.notify_waiters();
        }
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
    use std::ffi::OsString;

    use super::faas_platform;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn faas_platforms_are_detected_as_the_handshake_spec_says() {
        assert_eq!(faas_platform(env(&[])), None);
        assert_eq!(
            faas_platform(env(&[("AWS_EXECUTION_ENV", "AWS_Lambda_java8")])),
            Some("aws.lambda")
        );
        assert_eq!(
            faas_platform(env(&[("AWS_EXECUTION_ENV", "EC2")])),
            None,
            "only a Lambda execution environment counts"
        );
        assert_eq!(
            faas_platform(env(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")])),
            Some("aws.lambda")
        );
        assert_eq!(
            faas_platform(env(&[("FUNCTIONS_WORKER_RUNTIME", "node")])),
            Some("azure.func")
        );
        assert_eq!(
            faas_platform(env(&[("K_SERVICE", "svc")])),
            Some("gcp.func")
        );
        assert_eq!(
            faas_platform(env(&[("FUNCTION_NAME", "f")])),
            Some("gcp.func")
        );
        assert_eq!(
            faas_platform(env(&[("VERCEL", "1"), ("AWS_LAMBDA_RUNTIME_API", "x")])),
            Some("vercel")
        );
        assert_eq!(
            faas_platform(env(&[
                ("FUNCTIONS_WORKER_RUNTIME", "node"),
                ("K_SERVICE", "s")
            ])),
            None,
            "two platforms at once: none"
        );
    }
}
