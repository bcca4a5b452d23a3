//! The monitors of one server (SDAM "Server Monitoring"), each a task on a connection of
//! its own.
//!
//! * The **monitor** checks the server and hands each outcome to the topology. With the
//!   streaming protocol (a server whose hello carries `topologyVersion`, MongoDB 4.4+, and
//!   `serverMonitoringMode` not `poll`) it sends an awaitable hello (`topologyVersion`,
//!   `maxAwaitTimeMS` = heartbeatFrequencyMS) with the OP_MSG `exhaustAllowed` flag and
//!   then reads the replies the server streams (`moreToCome`), one per state change or
//!   per heartbeatFrequencyMS, with no pause between checks; each read is bounded by
//!   connectTimeoutMS + heartbeatFrequencyMS. Otherwise it polls: a hello every
//!   heartbeatFrequencyMS (sooner when asked, never more often than every
//!   [`MIN_HEARTBEAT`]).
//! * The **RTT monitor**, in the streaming protocol only: a plain hello every
//!   heartbeatFrequencyMS on its own connection, whose durations feed the round-trip
//!   estimator the monitor reports with each streamed reply (the duration of an awaited
//!   reply says nothing about the network). Its failures change nothing in the topology.
//!
//! A failed check (network or command error) closes the monitor's connection, marks the
//! server Unknown, clears its pool (interrupting the connections in use when the check
//! timed out) and forgets the round-trip times; a network error on a server that was known
//! is checked again at once, on a new connection. A clear of the pool by someone else (an
//! application's network error marked the server Unknown) cancels a streaming check in
//! progress: its connection is closed and the next check waits as after a failure.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use brook_command::{Command, CommandError, Hello, HelloReply, Reply};
use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress, next_request_id};
use brook_topology::RttEstimator;
use brook_wire::MsgFlags;
use bson::Document;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::debug;

use super::server::{MIN_HEARTBEAT, Server, ServerInfo};
use super::topology::Topology;
use crate::monitoring::SdamEvent;

/// What a server's monitors need to know.
#[derive(Debug, Clone)]
pub(super) struct MonitorSettings {
    pub(super) address: ServerAddress,
    /// The options of the monitors' connections: the socket timeout is connectTimeoutMS.
    pub(super) options: ConnectionOptions,
    /// heartbeatFrequencyMS.
    pub(super) heartbeat: Duration,
    /// Whether the streaming protocol may be used (`serverMonitoringMode` resolved).
    pub(super) streaming: bool,
}

impl MonitorSettings {
    /// The bound of an awaited read: connectTimeoutMS + heartbeatFrequencyMS, none when
    /// connectTimeoutMS is 0 (unlimited).
    fn awaited_timeout(&self) -> Option<Duration> {
        let connect = self.options.connect_timeout;
        (!connect.is_zero()).then(|| connect.saturating_add(self.heartbeat))
    }

    /// The bound of a plain hello: connectTimeoutMS (none when 0).
    fn check_timeout(&self) -> Option<Duration> {
        Some(self.options.connect_timeout).filter(|d| !d.is_zero())
    }
}

/// The round-trip estimator of one server, shared by its monitor and its RTT monitor.
type SharedRtt = Arc<Mutex<RttEstimator>>;

fn lock_rtt(rtt: &SharedRtt) -> MutexGuard<'_, RttEstimator> {
    rtt.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which kind of check comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    /// No connection: open one; its handshake is the check.
    Handshake,
    /// A plain hello (polling protocol).
    Poll,
    /// Send an awaitable hello allowing exhaust (streaming protocol).
    Await,
    /// Read the next streamed reply.
    More,
}

impl CheckKind {
    fn awaited(self) -> bool {
        matches!(self, CheckKind::Await | CheckKind::More)
    }
}

/// Why a check failed.
#[derive(Debug)]
enum CheckError {
    Conn(ConnError),
    /// The reply is not a successful hello (`ok: 0`, e.g. a server shutting down).
    Command(CommandError),
    /// The pool was cleared after an application error while the check waited.
    Cancelled,
}

impl CheckError {
    fn is_network(&self) -> bool {
        matches!(self, CheckError::Conn(e) if e.is_network())
    }

    fn is_timeout(&self) -> bool {
        matches!(self, CheckError::Conn(e) if e.is_timeout())
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Conn(e) => e.fmt(f),
            CheckError::Command(e) => e.fmt(f),
            CheckError::Cancelled => f.write_str(
                "check cancelled: the pool was cleared after an application's network error",
            ),
        }
    }
}

/// Aborts a task when dropped: the RTT monitor dies with the monitor that started it,
/// however that one ends.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The monitor of one server (see the [module docs](self)). Ends when the topology or
/// the server is gone, or when aborted ([`Server::close`]).
pub(super) async fn monitor(
    topology: Weak<Topology>,
    server: Weak<Server>,
    mut settings: MonitorSettings,
) {
    // Monitoring connections never authenticate (Authentication spec); the RTT monitor
    // gets these settings too.
    settings.options.credential = None;
    let address = &settings.address;
    let rtt: SharedRtt = Arc::new(Mutex::new(RttEstimator::new()));
    let mut rtt_monitor: Option<AbortOnDrop> = None;
    let mut conn: Option<Connection> = None;
    // The `topologyVersion` of the last successful reply on `conn`.
    let mut topology_version: Option<Document> = None;
    // Whether the last check succeeded (the description it reported was known).
    let mut known = false;
    let Some(pool_cleared) = server.upgrade().map(|s| s.pool_cleared()) else {
        return;
    };
    loop {
        let kind = match &conn {
            None => CheckKind::Handshake,
            Some(c) if c.has_more_to_come() => CheckKind::More,
            Some(_) if settings.streaming && topology_version.is_some() => CheckKind::Await,
            Some(_) => CheckKind::Poll,
        };
        let awaited = kind.awaited();
        let Some(generation) = server.upgrade().map(|s| s.pool().generation()) else {
            return;
        };
        match topology.upgrade() {
            Some(top) => top.heartbeat(SdamEvent::HeartbeatStarted {
                address: address.clone(),
                awaited,
            }),
            None => return,
        }
        let started = Instant::now();
        let outcome = if awaited {
            // A streaming check waits long: cancel it when an application error clears
            // the pool (the server is Unknown by now; SDAM "hello Cancellation").
            let cancelled = cancelled(&server, &pool_cleared, generation);
            tokio::select! {
                outcome = check(&mut conn, kind, &settings, topology_version.as_ref()) => outcome,
                () = cancelled => Err(CheckError::Cancelled),
            }
        } else {
            check(&mut conn, kind, &settings, None).await
        };
        let duration = started.elapsed();
        let Some(top) = topology.upgrade() else {
            return;
        };
        let Some(me) = server.upgrade() else { return };
        match outcome {
            Ok(reply) => {
                top.heartbeat(SdamEvent::HeartbeatSucceeded {
                    address: address.clone(),
                    duration,
                    awaited,
                });
                known = true;
                if !awaited {
                    // The handshake's or the polled hello's round trip (never an awaited
                    // reply's: the server's wait is in it).
                    lock_rtt(&rtt).add_sample(duration);
                }
                let reply_version = reply
                    .topology_version
                    .as_ref()
                    .and_then(|tv| tv.to_document().ok());
                // A server that answers an awaitable hello at once, with nothing changed
                // and nothing more to come, did not wait (not a MongoDB server: a proxy
                // or a fake): the next check waits as in the polling protocol rather than
                // spin.
                let did_not_wait = kind == CheckKind::Await
                    && !conn.as_ref().is_some_and(Connection::has_more_to_come)
                    && reply_version.is_some()
                    && reply_version == topology_version
                    && duration < settings.heartbeat / 2;
                topology_version = reply_version;
                me.set_info(ServerInfo::from_hello(address, &reply));
                let estimate = lock_rtt(&rtt).clone();
                top.on_check(address, Ok(&reply), Some(&estimate));
                let streaming = settings.streaming
                    && (topology_version.is_some()
                        || conn.as_ref().is_some_and(Connection::has_more_to_come));
                if streaming {
                    if rtt_monitor.is_none() {
                        let task = tokio::spawn(rtt_monitor_task(
                            topology.clone(),
                            settings.clone(),
                            Arc::clone(&rtt),
                        ));
                        me.set_rtt_monitor(task.abort_handle());
                        rtt_monitor = Some(AbortOnDrop(task.abort_handle()));
                        debug!(server = %address, "streaming protocol: RTT monitor started");
                    }
                    if !did_not_wait {
                        // Streaming: the next check starts at once (the server waits).
                        continue;
                    }
                }
            }
            Err(CheckError::Cancelled) => {
                top.heartbeat(SdamEvent::HeartbeatFailed {
                    address: address.clone(),
                    duration,
                    error: CheckError::Cancelled.to_string(),
                    awaited,
                });
                debug!(server = %address, "streaming check cancelled by a pool clear");
                conn = None;
                topology_version = None;
                known = false;
                lock_rtt(&rtt).reset();
            }
            Err(e) => {
                top.heartbeat(SdamEvent::HeartbeatFailed {
                    address: address.clone(),
                    duration,
                    error: e.to_string(),
                    awaited,
                });
                debug!(server = %address, error = %e, awaited, "heartbeat failed");
                conn = None;
                topology_version = None;
                lock_rtt(&rtt).reset();
                top.on_check(address, Err(e.to_string()), None);
                // After the server is Unknown (SDAM: synchronized with the topology
                // update); in-use connections are interrupted on a timeout only (CMAP).
                me.pool().clear(e.is_timeout());
                let retry = known && e.is_network();
                known = false;
                if retry {
                    // One check at once, on a new connection, of a server that was known.
                    continue;
                }
            }
        }
        drop(top);
        tokio::time::sleep(MIN_HEARTBEAT).await;
        let wait = settings.heartbeat.saturating_sub(MIN_HEARTBEAT);
        let _ = tokio::time::timeout(wait, me.check_requested()).await;
    }
}

/// Resolves once the pool of `server` is past `generation` (cleared since the check
/// began), or once the server is gone.
async fn cancelled(server: &Weak<Server>, pool_cleared: &Notify, generation: u64) {
    loop {
        let notified = pool_cleared.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match server.upgrade() {
            Some(s) if s.pool().generation() == generation => {}
            _ => return,
        }
        notified.await;
    }
}

/// One check, of `kind`, on `conn` (opened here for a handshake, dropped by the caller
/// on failure).
async fn check(
    conn: &mut Option<Connection>,
    kind: CheckKind,
    settings: &MonitorSettings,
    topology_version: Option<&Document>,
) -> Result<HelloReply, CheckError> {
    let c = match (kind, conn.as_mut()) {
        (CheckKind::Handshake, _) | (_, None) => {
            let c = Connection::connect(&settings.address, &settings.options)
                .await
                .map_err(CheckError::Conn)?;
            let reply = c.description().hello.clone();
            *conn = Some(c);
            return Ok(reply);
        }
        (_, Some(c)) => c,
    };
    match kind {
        CheckKind::Handshake | CheckKind::Poll => {
            c.set_socket_timeout(settings.check_timeout());
            c.run("admin", &Hello::new()).await.map_err(|e| match e {
                ConnError::Command { source, .. } => CheckError::Command(*source),
                e => CheckError::Conn(e),
            })
        }
        CheckKind::Await => {
            let Some(tv) = topology_version else {
                return Err(CheckError::Command(CommandError::Invalid(
                    "an awaitable hello needs a topologyVersion".into(),
                )));
            };
            let hello = Hello::awaitable(tv.clone(), settings.heartbeat);
            let mut message = hello
                .build("admin")
                .and_then(|body| body.into_message(next_request_id()))
                .map_err(CheckError::Command)?;
            message.flags |= MsgFlags::EXHAUST_ALLOWED;
            c.set_socket_timeout(settings.awaited_timeout());
            let reply = c.send(&message).await.map_err(CheckError::Conn)?;
            let Some(reply) = reply else {
                return Err(CheckError::Command(CommandError::MalformedReply {
                    command: "hello",
                    reason: "no reply to the awaitable hello".into(),
                }));
            };
            hello
                .handle_reply(Reply::from(reply))
                .map_err(CheckError::Command)
        }
        CheckKind::More => {
            c.set_socket_timeout(settings.awaited_timeout());
            let reply = c.receive_more().await.map_err(CheckError::Conn)?;
            HelloReply::parse(&Reply::from(reply).body).map_err(CheckError::Command)
        }
    }
}

/// The RTT monitor of one server (streaming protocol): a plain hello every
/// heartbeatFrequencyMS on a connection of its own (a new connection's handshake is a
/// sample too), each duration a sample of `rtt`. The first comes one heartbeatFrequencyMS
/// after the start: the monitor's handshake has just given a sample, and a client starting
/// up opens one connection per server fewer at once. A failure closes the connection and
/// changes nothing else (SDAM: the RTT connection has no pool generation to judge an
/// error by; the monitor learns of a lost server by itself). Publishes no events.
async fn rtt_monitor_task(topology: Weak<Topology>, settings: MonitorSettings, rtt: SharedRtt) {
    let mut conn: Option<Connection> = None;
    loop {
        tokio::time::sleep(settings.heartbeat).await;
        if topology.strong_count() == 0 {
            return;
        }
        let started = Instant::now();
        let outcome = match conn.as_mut() {
            Some(c) => c.run("admin", &Hello::new()).await.map(drop),
            None => Connection::connect(&settings.address, &settings.options)
                .await
                .map(|c| conn = Some(c)),
        };
        match outcome {
            Ok(()) => lock_rtt(&rtt).add_sample(started.elapsed()),
            Err(e) => {
                debug!(server = %settings.address, error = %e, "RTT check failed");
                conn = None;
            }
        }
    }
}
