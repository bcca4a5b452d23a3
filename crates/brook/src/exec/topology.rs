//! The deployment as the client follows it: brook-topology's [`TopologyDescription`],
//! fed by one monitor per server, and the servers (pool and monitor) its events open and
//! close. Selection waits here for a suitable server.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use brook_command::HelloReply;
use brook_conn::{ConnectionOptions, ServerAddress};
use brook_pool::PoolOptions;
use brook_topology::selection::{self, describe_topology};
use brook_topology::{
    ApplicationError, Operation, ReadPreference, RttEstimator, SdamEvent as DescriptionEvent,
    ServerType, TopologyDescription, TopologyOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use super::server::{Server, ServerInfo};
use crate::error::{Error, ErrorKind};
use crate::monitoring::{CmapEvent, EventHandler, SdamEvent, emit_sdam};

/// How the topology's servers are made.
#[derive(Debug, Clone)]
pub(crate) struct TopologySettings {
    pub(crate) conn_options: ConnectionOptions,
    pub(crate) pool_options: PoolOptions,
    pub(crate) heartbeat: Duration,
    pub(crate) local_threshold: Duration,
    pub(crate) selection_timeout: Duration,
    /// `serverMonitoringMode` (auto when the URI says nothing).
    pub(crate) monitoring_mode: crate::options::ServerMonitoringMode,
}

/// The deployment: its description and its servers.
pub(crate) struct Topology {
    description: Mutex<TopologyDescription>,
    servers: Mutex<BTreeMap<ServerAddress, Arc<Server>>>,
    /// Operations in progress per server (see [`OperationGuard`]).
    operations: Mutex<BTreeMap<ServerAddress, Arc<AtomicU64>>>,
    /// Bumped on every change of the description: selection waits on it.
    changed: watch::Sender<u64>,
    settings: TopologySettings,
    handler: Option<EventHandler<CmapEvent>>,
    sdam_handler: Option<EventHandler<SdamEvent>>,
    closed: AtomicBool,
    random: AtomicU64,
    /// `loadBalanced=true`: one LoadBalancer server, no monitoring, service-scoped
    /// clears.
    load_balanced: bool,
    /// Behind a load balancer: what the first connection's handshake said.
    load_balancer_info: Mutex<Option<(ServerAddress, ServerInfo)>>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("type", &self.lock_description().topology_type)
            .finish_non_exhaustive()
    }
}

/// Where an operation runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A cursor's own server (its `getMore`s and `killCursors`), once it is known again.
    At(&'a ServerAddress),
    /// A read: a server its read preference allows, within the latency window.
    Read(&'a ReadPreference),
    /// The primary (or the mongos, standalone, or the one server of a direct
    /// connection): writes and commands.
    Primary,
}

/// A selected server, and the `$readPreference` its command carries, if any.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) server: Arc<Server>,
    pub(crate) read_preference: Option<bson::Document>,
    /// Counts the operation against the server while it runs.
    pub(crate) operation: OperationGuard,
    /// The server's minimum round-trip time (zero until its monitor has two samples),
    /// read from the description selection used (Client Side Operations Timeout: what
    /// `maxTimeMS` leaves for the network).
    pub(crate) min_rtt: Duration,
}

/// One operation in progress on a server (Server Selection's `operationCount`, which
/// breaks ties between the two random choices of the latency window); counted from
/// selection until dropped.
#[derive(Debug)]
pub(crate) struct OperationGuard(Arc<AtomicU64>);

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Mode primary, with no tags: what writes and commands select with.
fn primary() -> &'static ReadPreference {
    static PRIMARY: std::sync::OnceLock<ReadPreference> = std::sync::OnceLock::new();
    PRIMARY.get_or_init(ReadPreference::primary)
}

impl Topology {
    /// Starts following the deployment from `seeds`: one server (pool and monitor) per
    /// seed.
    pub(crate) fn start(
        seeds: Vec<ServerAddress>,
        options: TopologyOptions,
        settings: TopologySettings,
        handler: Option<EventHandler<CmapEvent>>,
        sdam_handler: Option<EventHandler<SdamEvent>>,
    ) -> Arc<Topology> {
        let load_balanced = options.load_balanced;
        let description = TopologyDescription::new(seeds, options);
        for event in description.opening_events() {
            emit_sdam(sdam_handler.as_ref(), SdamEvent::Description(event));
        }
        let addresses: Vec<ServerAddress> = description.servers.keys().cloned().collect();
        let (changed, _) = watch::channel(0);
        let topology = Arc::new(Topology {
            description: Mutex::new(description),
            servers: Mutex::new(BTreeMap::new()),
            operations: Mutex::new(BTreeMap::new()),
            changed,
            settings,
            handler,
            sdam_handler,
            closed: AtomicBool::new(false),
            random: AtomicU64::new(RandomState::new().hash_one(0u8)),
            load_balanced,
            load_balancer_info: Mutex::new(None),
        });
        for address in addresses {
            topology.open_server(address);
        }
        if topology.load_balanced {
            // The load balancer is a LoadBalancer server from the start (nothing monitors
            // it): its pool is ready at once.
            for server in topology.lock_servers().values() {
                server.pool().ready();
            }
        }
        topology
    }

    /// Whether the deployment is reached through a load balancer.
    pub(crate) fn is_load_balanced(&self) -> bool {
        self.load_balanced
    }

    /// Behind a load balancer nothing monitors the server: one connection's handshake
    /// (which must carry a `serviceId`) tells what the server behind it supports
    /// (wire version, sessions, limits). Bounded by `deadline`.
    pub(crate) async fn learn_load_balancer(&self, deadline: Instant) -> Result<(), Error> {
        let server = self.lock_servers().values().next().cloned();
        let Some(server) = server else {
            return Err(Error::new(ErrorKind::Shutdown));
        };
        let conn = match tokio::time::timeout_at(deadline, server.pool().check_out()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Error::from_pool(e, server.address())),
            Err(_) => {
                return Err(Error::new(ErrorKind::ServerSelection {
                    message: format!(
                        "no connection to the load balancer {} within {:?}",
                        server.address(),
                        self.settings.selection_timeout
                    ),
                    timed_out: true,
                }));
            }
        };
        let d = conn.description();
        let info = ServerInfo {
            max_wire_version: d.max_wire_version,
            max_bson_object_size: d.max_bson_object_size,
            max_message_size_bytes: d.max_message_size_bytes,
            max_write_batch_size: d.max_write_batch_size,
            logical_session_timeout: d.logical_session_timeout,
            kind: d.server_kind,
        };
        *self
            .load_balancer_info
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((server.address().clone(), info));
        Ok(())
    }

    fn lock_description(&self) -> MutexGuard<'_, TopologyDescription> {
        self.description.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_servers(&self) -> MutexGuard<'_, BTreeMap<ServerAddress, Arc<Server>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_server(self: &Arc<Self>, address: ServerAddress) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut servers = self.lock_servers();
        if servers.contains_key(&address) {
            return;
        }
        let s = &self.settings;
        let server = Server::start(
            self,
            address.clone(),
            s.conn_options.clone(),
            s.pool_options.clone(),
            s.heartbeat,
            self.handler.clone(),
            s.monitoring_mode,
        );
        servers.insert(address, server);
    }

    pub(crate) fn server(&self, address: &ServerAddress) -> Option<Arc<Server>> {
        self.lock_servers().get(address).cloned()
    }

    /// A monitor's outcome.
    pub(crate) fn on_check(
        self: &Arc<Self>,
        address: &ServerAddress,
        reply: Result<&HelloReply, String>,
        rtt: Option<&RttEstimator>,
    ) {
        let events =
            self.lock_description()
                .handle_hello(address, reply, rtt, std::time::Instant::now());
        self.apply(events);
    }

    /// An application error on a connection to `address` (SDAM "error handling").
    pub(crate) fn handle_error(
        self: &Arc<Self>,
        address: &ServerAddress,
        error: &ApplicationError,
    ) {
        self.handle_error_on(address, error, None);
    }

    /// [`handle_error`](Self::handle_error) for a connection of `service` (behind a load
    /// balancer, where a pool clear is for that service only, and the server is never
    /// marked Unknown).
    pub(crate) fn handle_error_on(
        self: &Arc<Self>,
        address: &ServerAddress,
        error: &ApplicationError,
        service: Option<brook_pool::ServiceId>,
    ) {
        self.handle_error_with(address, error, service, true);
    }

    /// [`handle_error_on`](Self::handle_error_on); with `clear_here` false the caller
    /// clears the pool itself (the pool's manager, so that the failed checkout sees its
    /// own error first). Returns whether the pool is to be cleared.
    pub(crate) fn handle_error_with(
        self: &Arc<Self>,
        address: &ServerAddress,
        error: &ApplicationError,
        service: Option<brook_pool::ServiceId>,
        clear_here: bool,
    ) -> bool {
        let Some(server) = self.server(address) else {
            return false;
        };
        let generation = server.pool().generation();
        let decision = self
            .lock_description()
            .handle_application_error(address, error, generation);
        let clear = decision.clear_pool;
        if decision.clear_pool && clear_here {
            if self.load_balanced {
                if let Some(service) = service {
                    info!(server = %address, ?error, "a service's connections cleared after an error");
                    server.pool().clear_service(service, false);
                }
            } else {
                info!(server = %address, ?error, "pool cleared after an error");
                server.pool().clear(false);
            }
        }
        if decision.request_check {
            server.request_check();
        }
        self.apply(decision.events);
        clear
    }

    /// Opens and closes servers as the events say, readies a server's pool once it is
    /// known, and wakes selection.
    fn apply(self: &Arc<Self>, events: Vec<DescriptionEvent>) {
        if events.is_empty() {
            return;
        }
        for event in events {
            emit_sdam(
                self.sdam_handler.as_ref(),
                SdamEvent::Description(event.clone()),
            );
            match event {
                DescriptionEvent::ServerOpening { address } => self.open_server(address),
                DescriptionEvent::ServerClosed { address } => {
                    self.operations
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&address);
                    let removed = self.lock_servers().remove(&address);
                    if let Some(server) = removed {
                        debug!(server = %address, "server left the topology");
                        server.close();
                    }
                }
                DescriptionEvent::ServerDescriptionChanged { address, new, .. } => {
                    if new.server_type != ServerType::Unknown
                        && let Some(server) = self.server(&address)
                    {
                        server.pool().ready();
                    }
                }
                _ => {}
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn operation_count(&self, address: &ServerAddress) -> u64 {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    fn start_operation(&self, address: &ServerAddress) -> OperationGuard {
        let mut operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        // No allocation once the server has a counter (every operation after its first).
        let counter = match operations.get(address) {
            Some(counter) => Arc::clone(counter),
            None => Arc::clone(operations.entry(address.clone()).or_default()),
        };
        counter.fetch_add(1, Ordering::AcqRel);
        OperationGuard(counter)
    }

    fn next_random(&self, n: usize) -> usize {
        // xorshift64: enough to spread load between two servers.
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        usize::try_from(x % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// A server for an operation (see [`Target`]), and the `$readPreference` to send
    /// with its command, if any. Servers in `deprioritized` (where a retried operation
    /// failed) are picked only when nothing else is suitable. Waits for a topology change
    /// while none is suitable, asking every monitor for a check, up to `deadline`.
    pub(crate) async fn select(
        &self,
        target: Target<'_>,
        deprioritized: &[ServerAddress],
        deadline: Instant,
    ) -> Result<Selected, Error> {
        let mut changes = self.changed.subscribe();
        let started = Instant::now();
        loop {
            changes.borrow_and_update();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Shutdown));
            }
            let found = {
                let description = self.lock_description();
                match target {
                    Target::At(at) => match description.servers.get(at) {
                        Some(s) if s.server_type != ServerType::Unknown => {
                            Some((at.clone(), None, s.min_round_trip_time))
                        }
                        Some(_) => None,
                        None => {
                            return Err(Error::new(ErrorKind::ServerSelection {
                                message: format!("server {at} is no longer part of the deployment"),
                                timed_out: false,
                            }));
                        }
                    },
                    Target::Read(_) | Target::Primary => {
                        let (operation, preference) = match target {
                            Target::Read(preference) => (Operation::Read(preference), preference),
                            _ => (Operation::Write, primary()),
                        };
                        let picked = selection::select_server(
                            &description,
                            operation,
                            deprioritized,
                            self.settings.heartbeat,
                            self.settings.local_threshold,
                            |a| self.operation_count(a),
                            |n| self.next_random(n),
                        );
                        match picked {
                            Ok(server) => server.map(|s| {
                                let field = selection::read_preference_field(
                                    description.topology_type,
                                    s.server_type,
                                    preference,
                                );
                                (s.address.clone(), field, s.min_round_trip_time)
                            }),
                            Err(e) => {
                                return Err(Error::new(ErrorKind::ServerSelection {
                                    message: e.to_string(),
                                    timed_out: false,
                                }));
                            }
                        }
                    }
                }
            };
            if let Some((address, read_preference, min_rtt)) = found
                && let Some(server) = self.server(&address)
            {
                let operation = self.start_operation(&address);
                return Ok(Selected {
                    server,
                    read_preference,
                    operation,
                    min_rtt: min_rtt.unwrap_or(Duration::ZERO),
                });
            }
            for server in self.lock_servers().values() {
                server.request_check();
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::new(ErrorKind::Shutdown)),
                Err(_) => {
                    let seen = describe_topology(&self.lock_description());
                    let wanted = match target {
                        Target::At(at) => at.to_string(),
                        Target::Primary => "the primary".to_owned(),
                        Target::Read(preference) => Operation::Read(preference).to_string(),
                    };
                    return Err(Error::new(ErrorKind::ServerSelection {
                        message: format!(
                            "no server for {wanted} within {:?}; the deployment as seen: {seen}",
                            // serverSelectionTimeoutMS, or less under timeoutMS.
                            deadline.saturating_duration_since(started)
                        ),
                        timed_out: true,
                    }));
                }
            }
        }
    }

    /// The minimum round-trip time the description holds for `address` (zero when
    /// unknown, or with fewer than two samples).
    pub(crate) fn min_rtt(&self, address: &ServerAddress) -> Duration {
        self.lock_description()
            .servers
            .get(address)
            .and_then(|s| s.min_round_trip_time)
            .unwrap_or(Duration::ZERO)
    }

    /// What the last check of the primary (else of any known server) said.
    pub(crate) fn primary_info(&self) -> Option<(ServerAddress, ServerInfo)> {
        if self.load_balanced {
            return self
                .load_balancer_info
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
        let description = self.lock_description();
        let servers = self.lock_servers();
        let rank = |t: ServerType| match t {
            ServerType::RsPrimary | ServerType::Standalone | ServerType::Mongos => 0,
            ServerType::Unknown => 2,
            _ => 1,
        };
        let mut known: Vec<_> = description.servers.values().collect();
        known.sort_by_key(|s| rank(s.server_type));
        known.into_iter().find_map(|s| {
            let info = servers.get(&s.address)?.info()?;
            Some((s.address.clone(), info))
        })
    }

    /// Stops every monitor and closes every pool; selection fails from now on.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let servers = std::mem::take(&mut *self.lock_servers());
        for (address, server) in &servers {
            server.close();
            let event = DescriptionEvent::ServerClosed {
                address: address.clone(),
            };
            emit_sdam(self.sdam_handler.as_ref(), SdamEvent::Description(event));
        }
        emit_sdam(self.sdam_handler.as_ref(), SdamEvent::TopologyClosed);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether SRV polling goes on: the topology is open and Sharded or still Unknown.
    pub(crate) fn srv_polling_allowed(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && matches!(
                self.lock_description().topology_type,
                brook_topology::TopologyType::Sharded | brook_topology::TopologyType::Unknown
            )
    }

    /// An SRV rescan found `hosts`: servers no longer named close, new ones open (up to
    /// `max_hosts` in all when it is not 0), the others are left alone. Only for a
    /// Sharded or Unknown topology.
    pub(crate) fn apply_srv_hosts(self: &Arc<Self>, hosts: &[ServerAddress], max_hosts: usize) {
        let events = self
            .lock_description()
            .apply_srv_hosts(hosts, max_hosts, |n| self.next_random(n));
        self.apply(events);
    }

    /// Reports a monitor's heartbeat event.
    pub(crate) fn heartbeat(&self, event: SdamEvent) {
        emit_sdam(self.sdam_handler.as_ref(), event);
    }
}
