//! SDAM: how hello replies and errors update a [`TopologyDescription`].
//!
//! The driver owns the IO: its monitors run `hello` and hand each outcome to
//! [`TopologyDescription::handle_hello`]; its executor hands every failed operation to
//! [`TopologyDescription::handle_application_error`], which answers with an
//! [`ErrorDecision`] (mark the server Unknown, clear its pool, request an immediate check).
//! Both return the [`SdamEvent`]s the change produced (SDAM monitoring), so the driver can
//! publish them without keeping a shadow copy of the topology.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use brook_command::HelloReply;
use bson::Document;
use bson::oid::ObjectId;

use crate::{
    RttEstimator, ServerAddress, ServerDescription, ServerType, TopologyDescription, TopologyType,
};

/// The oldest wire version brook speaks: 6 (MongoDB 3.6), the first with `OP_MSG`, the
/// only framing brook sends.
pub const MIN_WIRE_VERSION: i32 = 6;
/// The newest wire version brook knows (MongoDB 8.2).
pub const MAX_WIRE_VERSION: i32 = 27;
/// The MongoDB release of [`MIN_WIRE_VERSION`], named in compatibility errors.
pub const MIN_SERVER_VERSION: &str = "3.6";

/// The URI options that decide the initial topology and its transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopologyOptions {
    /// `directConnection`: `Some(true)` talks to the one seed whatever it is (Single).
    pub direct_connection: Option<bool>,
    /// `replicaSet`: the required set name (starts as ReplicaSetNoPrimary unless direct).
    pub replica_set: Option<String>,
    /// `loadBalanced=true`: the one seed is a load balancer.
    pub load_balanced: bool,
}

impl TopologyOptions {
    /// Options with nothing set (discovery from the seeds).
    pub fn new() -> Self {
        TopologyOptions::default()
    }
}

/// A change SDAM monitoring publishes (the SDAM monitoring specification's events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SdamEvent {
    /// The topology was created.
    TopologyOpening,
    /// A server entered the topology.
    ServerOpening {
        /// Its address.
        address: ServerAddress,
    },
    /// A server left the topology (its monitor and pool should stop).
    ServerClosed {
        /// Its address.
        address: ServerAddress,
    },
    /// A server's description changed (by the SDAM equality rule).
    ServerDescriptionChanged {
        /// Its address.
        address: ServerAddress,
        /// Before.
        previous: Box<ServerDescription>,
        /// After.
        new: Box<ServerDescription>,
    },
    /// The topology's description changed.
    TopologyDescriptionChanged {
        /// Before.
        previous: Box<TopologyDescription>,
        /// After.
        new: Box<TopologyDescription>,
    },
}

/// When an application error happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorPhase {
    /// While the connection was being established (connect, TLS, hello, auth).
    BeforeHandshake,
    /// On an established connection (after the pool check-out succeeded).
    AfterHandshake,
}

/// What kind of application error happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApplicationErrorKind {
    /// The connection failed (reset, closed, unreachable), not by a timeout.
    Network,
    /// A network read or write timed out.
    Timeout,
    /// The server answered with an error (a command's top-level `code`/`errmsg`).
    Server {
        /// `code`, when the reply had one (it decides over the message).
        code: Option<i32>,
        /// `errmsg`.
        message: String,
        /// The reply's `topologyVersion`, when it had one.
        topology_version: Option<Document>,
    },
}

/// An error an application operation met on one server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApplicationError {
    /// What happened.
    pub kind: ApplicationErrorKind,
    /// When it happened.
    pub phase: ErrorPhase,
    /// The pool generation of the connection it happened on (of the pool's generation
    /// when checking out, for errors before the handshake completed).
    pub generation: u64,
    /// The connection's `maxWireVersion`, when its handshake completed.
    pub max_wire_version: Option<i32>,
}

impl ApplicationError {
    /// An error of `kind` in `phase`, on a connection of pool generation `generation`.
    pub fn new(kind: ApplicationErrorKind, phase: ErrorPhase, generation: u64) -> Self {
        ApplicationError {
            kind,
            phase,
            generation,
            max_wire_version: None,
        }
    }

    /// Sets the connection's `maxWireVersion`.
    pub fn with_max_wire_version(mut self, max_wire_version: i32) -> Self {
        self.max_wire_version = Some(max_wire_version);
        self
    }
}

/// What the driver does after [`TopologyDescription::handle_application_error`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ErrorDecision {
    /// The server was marked Unknown (the topology changed).
    pub mark_unknown: bool,
    /// Clear the server's pool (increment its generation, close idle connections).
    pub clear_pool: bool,
    /// Ask the server's monitor to check it now.
    pub request_check: bool,
    /// What changed, for SDAM monitoring.
    pub events: Vec<SdamEvent>,
}

/// "Not writable primary" error codes: NotWritablePrimary, NotPrimaryNoSecondaryOk,
/// LegacyNotPrimary.
const NOT_PRIMARY_CODES: [i32; 3] = [10107, 13435, 10058];
/// "Node is recovering" error codes: InterruptedAtShutdown,
/// InterruptedDueToReplStateChange, NotPrimaryOrSecondary, PrimarySteppedDown,
/// ShutdownInProgress.
const RECOVERING_CODES: [i32; 5] = [11600, 11602, 13436, 189, 91];
/// Shutdown codes: InterruptedAtShutdown, ShutdownInProgress.
const SHUTDOWN_CODES: [i32; 2] = [11600, 91];

/// Whether a server error is a "state change" error (not primary, or recovering).
fn is_state_change(code: Option<i32>, message: &str) -> bool {
    match code {
        Some(code) => NOT_PRIMARY_CODES.contains(&code) || RECOVERING_CODES.contains(&code),
        // Without a code, the legacy messages decide ("not master or secondary" and
        // "node is recovering" are recovering; "not master" is not-primary).
        None => message.contains("not master") || message.contains("node is recovering"),
    }
}

/// Whether `candidate` is newer than `current` (SDAM topologyVersion comparison): true
/// when either is missing or their processIds differ, else when its counter is greater.
fn topology_version_greater(candidate: Option<&Document>, current: Option<&Document>) -> bool {
    let (Some(candidate), Some(current)) = (candidate, current) else {
        return true;
    };
    match (
        candidate.get_object_id("processId"),
        current.get_object_id("processId"),
    ) {
        (Ok(a), Ok(b)) if a == b => counter(candidate) > counter(current),
        _ => true,
    }
}

fn counter(tv: &Document) -> i64 {
    match tv.get("counter") {
        Some(bson::Bson::Int64(v)) => *v,
        Some(bson::Bson::Int32(v)) => i64::from(*v),
        _ => 0,
    }
}

/// A hello's address field, lowercased; unparsable ones are dropped.
fn addresses(list: &[String]) -> Vec<ServerAddress> {
    list.iter()
        .filter_map(|a| ServerAddress::parse(a).ok())
        .collect()
}

impl ServerDescription {
    /// The description a successful hello gives (SDAM "Parsing a hello response").
    /// The round-trip times come from the monitor's `rtt` estimator (its average and
    /// minimum, with this check's sample already added); without one, `previous`'s stay.
    pub fn from_hello(
        address: ServerAddress,
        reply: &HelloReply,
        rtt: Option<&RttEstimator>,
        previous: Option<&ServerDescription>,
        now: Instant,
    ) -> ServerDescription {
        let raw = reply.raw.as_raw();
        let is_replica_set = matches!(
            raw.get("isreplicaset"),
            Ok(Some(bson::RawBsonRef::Boolean(true)))
        );
        let server_type = if is_replica_set {
            ServerType::RsGhost
        } else if reply.is_mongos() {
            ServerType::Mongos
        } else if reply.set_name.is_some() {
            if reply.hidden {
                ServerType::RsOther
            } else if reply.is_writable_primary {
                ServerType::RsPrimary
            } else if reply.secondary {
                ServerType::RsSecondary
            } else if reply.arbiter_only {
                ServerType::RsArbiter
            } else {
                ServerType::RsOther
            }
        } else {
            ServerType::Standalone
        };
        let mut tags = std::collections::BTreeMap::new();
        if let Ok(doc) = raw.get_document("tags") {
            for (key, value) in doc.into_iter().flatten() {
                if let Some(value) = value.as_str() {
                    tags.insert(key.as_str().to_owned(), value.to_owned());
                }
            }
        }
        let last_write_date = raw
            .get_document("lastWrite")
            .ok()
            .and_then(|lw| lw.get_datetime("lastWriteDate").ok())
            .map(|d| d.timestamp_millis());
        let (round_trip_time, min_round_trip_time) = round_trips(previous, rtt);
        ServerDescription {
            address,
            server_type,
            error: None,
            round_trip_time,
            min_round_trip_time,
            last_update_time: Some(now),
            last_write_date,
            min_wire_version: reply.min_wire_version,
            max_wire_version: reply.max_wire_version,
            me: reply
                .me
                .as_deref()
                .and_then(|m| ServerAddress::parse(m).ok()),
            hosts: addresses(&reply.hosts),
            passives: addresses(&reply.passives),
            arbiters: addresses(&reply.arbiters),
            tags,
            set_name: reply.set_name.clone(),
            set_version: reply.set_version.and_then(|v| i32::try_from(v).ok()),
            election_id: reply.election_id,
            primary: reply
                .primary
                .as_deref()
                .and_then(|p| ServerAddress::parse(p).ok()),
            logical_session_timeout_minutes: reply.logical_session_timeout_minutes,
            topology_version: reply
                .topology_version
                .as_ref()
                .and_then(|tv| tv.to_document().ok()),
        }
    }

    /// An Unknown description carrying why (a failed check or an application error).
    pub fn unknown_with_error(
        address: ServerAddress,
        error: String,
        topology_version: Option<Document>,
    ) -> ServerDescription {
        let mut d = ServerDescription::unknown(address);
        d.error = Some(error);
        d.topology_version = topology_version;
        d
    }

    /// SDAM "Server Description Equality": the fields monitoring compares (not the
    /// round-trip times or update times).
    pub fn same_as(&self, other: &ServerDescription) -> bool {
        let set = |v: &[ServerAddress]| v.iter().cloned().collect::<BTreeSet<_>>();
        self.address == other.address
            && self.server_type == other.server_type
            && self.error == other.error
            && self.min_wire_version == other.min_wire_version
            && self.max_wire_version == other.max_wire_version
            && self.me == other.me
            && set(&self.hosts) == set(&other.hosts)
            && set(&self.passives) == set(&other.passives)
            && set(&self.arbiters) == set(&other.arbiters)
            && self.tags == other.tags
            && self.set_name == other.set_name
            && self.set_version == other.set_version
            && self.election_id == other.election_id
            && self.primary == other.primary
            && self.logical_session_timeout_minutes == other.logical_session_timeout_minutes
            && self.topology_version == other.topology_version
    }

    /// Whether it holds data (counts for `logicalSessionTimeoutMinutes`).
    fn is_data_bearing(&self) -> bool {
        matches!(
            self.server_type,
            ServerType::Standalone
                | ServerType::RsPrimary
                | ServerType::RsSecondary
                | ServerType::Mongos
        )
    }

    /// Every member its hello names (hosts, passives, arbiters).
    fn members(&self) -> impl Iterator<Item = &ServerAddress> {
        self.hosts
            .iter()
            .chain(self.passives.iter())
            .chain(self.arbiters.iter())
    }
}

/// The round-trip times a check reports: the monitor's estimator's average and minimum,
/// or, when the check measured none (a streamed reply), the previous description's.
fn round_trips(
    previous: Option<&ServerDescription>,
    rtt: Option<&RttEstimator>,
) -> (Option<Duration>, Option<Duration>) {
    match rtt {
        Some(estimator) if estimator.average().is_some() => {
            (estimator.average(), Some(estimator.min()))
        }
        _ => (
            previous.and_then(|p| p.round_trip_time),
            previous.and_then(|p| p.min_round_trip_time),
        ),
    }
}

/// `None` sorts before any value, as SDAM's tuple comparison of electionIds wants.
fn election_tuple_less(
    new: (Option<ObjectId>, Option<i32>),
    max: (Option<ObjectId>, Option<i32>),
) -> bool {
    new < max
}

impl TopologyDescription {
    /// The initial topology (SDAM "Initial TopologyType"): LoadBalanced with one
    /// LoadBalancer server for `loadBalanced=true`; Single for `directConnection=true`;
    /// ReplicaSetNoPrimary for `replicaSet=`; else Unknown. Each seed starts Unknown.
    pub fn new(seeds: Vec<ServerAddress>, options: TopologyOptions) -> Self {
        let topology_type = if options.load_balanced {
            TopologyType::LoadBalanced
        } else if options.direct_connection == Some(true) {
            TopologyType::Single
        } else if options.replica_set.is_some() {
            TopologyType::ReplicaSetNoPrimary
        } else {
            TopologyType::Unknown
        };
        let mut topology = TopologyDescription {
            topology_type,
            set_name: options.replica_set.clone(),
            seed_count: seeds.len(),
            options,
            ..TopologyDescription::default()
        };
        for seed in seeds {
            let mut server = ServerDescription::unknown(seed.clone());
            if topology_type == TopologyType::LoadBalanced {
                server.server_type = ServerType::LoadBalancer;
            }
            topology.servers.insert(seed, server);
        }
        topology.update_derived();
        topology
    }

    /// The events of the topology's creation: TopologyOpening, the change from an empty
    /// Unknown topology to this one, and a ServerOpening per seed (for a load balancer,
    /// then its change from Unknown to LoadBalancer, as SDAM monitoring orders them).
    pub fn opening_events(&self) -> Vec<SdamEvent> {
        let mut events = vec![SdamEvent::TopologyOpening];
        let empty = TopologyDescription {
            options: self.options.clone(),
            seed_count: self.seed_count,
            ..TopologyDescription::default()
        };
        events.push(SdamEvent::TopologyDescriptionChanged {
            previous: Box::new(empty),
            new: Box::new(self.clone()),
        });
        for address in self.servers.keys() {
            events.push(SdamEvent::ServerOpening {
                address: address.clone(),
            });
        }
        if self.topology_type == TopologyType::LoadBalanced {
            // The load balancer is announced Unknown, then described as LoadBalancer.
            let mut unknown = self.clone();
            for server in unknown.servers.values_mut() {
                server.server_type = ServerType::Unknown;
            }
            for (address, server) in &self.servers {
                events.push(SdamEvent::ServerDescriptionChanged {
                    address: address.clone(),
                    previous: Box::new(ServerDescription::unknown(address.clone())),
                    new: Box::new(server.clone()),
                });
            }
            if let Some(SdamEvent::TopologyDescriptionChanged { new, .. }) = events.get_mut(1) {
                **new = unknown.clone();
            }
            events.push(SdamEvent::TopologyDescriptionChanged {
                previous: Box::new(unknown),
                new: Box::new(self.clone()),
            });
        }
        events
    }

    /// SDAM equality of whole topologies (the types, set, maxima, compatibility, session
    /// timeout, and every server by [`ServerDescription::same_as`]).
    pub fn same_as(&self, other: &TopologyDescription) -> bool {
        self.topology_type == other.topology_type
            && self.set_name == other.set_name
            && self.max_set_version == other.max_set_version
            && self.max_election_id == other.max_election_id
            && self.compatibility_error == other.compatibility_error
            && self.logical_session_timeout_minutes == other.logical_session_timeout_minutes
            && self.servers.len() == other.servers.len()
            && self
                .servers
                .iter()
                .zip(other.servers.iter())
                .all(|((a, x), (b, y))| a == b && x.same_as(y))
    }

    /// A monitor's check of `address` finished: `Ok` with the hello reply, or `Err` with
    /// why it failed (network error, `ok: 0`, ..., after the one retry SDAM allows for a
    /// previously known server). `rtt` is the monitor's estimator after this check's
    /// sample (`None` when the check measured no round trip, e.g. a streamed reply).
    /// Applies SDAM's transitions and returns what changed. A reply whose
    /// `topologyVersion` is older than the server's (same process, lower counter) is
    /// ignored. A failed check also means: clear the server's pool and reset the
    /// estimator (the driver does both).
    pub fn handle_hello(
        &mut self,
        address: &ServerAddress,
        reply: Result<&HelloReply, String>,
        rtt: Option<&RttEstimator>,
        now: Instant,
    ) -> Vec<SdamEvent> {
        let Some(previous) = self.servers.get(address) else {
            // A response from a server no longer in the topology is ignored.
            return Vec::new();
        };
        let description = match reply {
            Ok(reply) => {
                let d =
                    ServerDescription::from_hello(address.clone(), reply, rtt, Some(previous), now);
                // A reply older than what we know (same process, lower counter) is stale.
                if counter_less(
                    d.topology_version.as_ref(),
                    previous.topology_version.as_ref(),
                ) {
                    return Vec::new();
                }
                d
            }
            Err(error) => {
                let mut d = ServerDescription::unknown_with_error(address.clone(), error, None);
                d.last_update_time = Some(now);
                d
            }
        };
        self.apply_with_events(description)
    }

    /// An application operation on `address` failed (SDAM "Error handling"). `pool_generation`
    /// is the server pool's current generation. Errors from an older generation, and
    /// state-change errors whose `topologyVersion` is not newer than the server's, are
    /// ignored (the decision is all false).
    pub fn handle_application_error(
        &mut self,
        address: &ServerAddress,
        error: &ApplicationError,
        pool_generation: u64,
    ) -> ErrorDecision {
        let mut decision = ErrorDecision::default();
        let Some(current) = self.servers.get(address) else {
            return decision;
        };
        if error.generation < pool_generation {
            return decision;
        }
        let (mark, clear, check, message, tv) = match (&error.kind, error.phase) {
            (ApplicationErrorKind::Network, _) => {
                (true, true, false, String::from("network error"), None)
            }
            // A timeout, before or after the handshake, changes nothing: the monitor
            // decides whether the server is down (the spec's current rule, checked by
            // `errors/error_handling_handshake.json`).
            (ApplicationErrorKind::Timeout, _) => return decision,
            (
                ApplicationErrorKind::Server {
                    code,
                    message,
                    topology_version,
                },
                _,
            ) => {
                if !is_state_change(*code, message) {
                    return decision;
                }
                if !topology_version_greater(
                    topology_version.as_ref(),
                    current.topology_version.as_ref(),
                ) {
                    return decision;
                }
                let shutdown = code.is_some_and(|c| SHUTDOWN_CODES.contains(&c));
                let pre_42 = error.max_wire_version.is_none_or(|v| v < 8);
                (
                    true,
                    shutdown || pre_42,
                    true,
                    message.clone(),
                    topology_version.clone(),
                )
            }
        };
        if self.topology_type == TopologyType::LoadBalanced {
            // Behind a load balancer the server is never marked Unknown nor checked, and
            // an error before the handshake (no serviceId yet) changes nothing; after it,
            // the pool clear is for the connection's serviceId only (the driver scopes it).
            decision.clear_pool = clear && error.phase == ErrorPhase::AfterHandshake;
            return decision;
        }
        decision.mark_unknown = mark;
        decision.clear_pool = clear;
        decision.request_check = check;
        if mark {
            let description = ServerDescription::unknown_with_error(address.clone(), message, tv);
            decision.events = self.apply_with_events(description);
        }
        decision
    }

    /// An SRV rescan found `hosts` (Polling SRV Records for mongos Discovery): in a
    /// Sharded or Unknown topology, servers no longer named leave, the ones already there
    /// stay as they are, and new ones join as Unknown; with `max_hosts` > 0 new ones are
    /// picked at random (`random(n)` answers an index below `n`) until the topology holds
    /// `max_hosts`. Other topologies are left alone. Returns the events.
    pub fn apply_srv_hosts(
        &mut self,
        hosts: &[ServerAddress],
        max_hosts: usize,
        mut random: impl FnMut(usize) -> usize,
    ) -> Vec<SdamEvent> {
        if !matches!(
            self.topology_type,
            TopologyType::Sharded | TopologyType::Unknown
        ) || hosts.is_empty()
        {
            return Vec::new();
        }
        let before = self.clone();
        self.servers.retain(|a, _| hosts.contains(a));
        let mut new: Vec<&ServerAddress> = hosts
            .iter()
            .filter(|h| !self.servers.contains_key(*h))
            .collect();
        new.dedup();
        let room = if max_hosts == 0 {
            new.len()
        } else {
            max_hosts.saturating_sub(self.servers.len()).min(new.len())
        };
        // A partial Fisher-Yates shuffle picks `room` of the new hosts.
        for i in 0..room {
            let j = i + random(new.len() - i).min(new.len() - i - 1);
            new.swap(i, j);
        }
        for address in new.into_iter().take(room) {
            self.servers
                .insert(address.clone(), ServerDescription::unknown(address.clone()));
        }
        self.update_derived();
        let mut events = Vec::new();
        self.push_changes(before, &mut events);
        events
    }

    /// The events of going from `before` to this description, after `events`: servers
    /// opened and closed, then the topology's change if any.
    fn push_changes(&self, before: TopologyDescription, events: &mut Vec<SdamEvent>) {
        for added in self
            .servers
            .keys()
            .filter(|a| !before.servers.contains_key(*a))
        {
            events.push(SdamEvent::ServerOpening {
                address: added.clone(),
            });
        }
        for removed in before
            .servers
            .keys()
            .filter(|a| !self.servers.contains_key(*a))
        {
            events.push(SdamEvent::ServerClosed {
                address: removed.clone(),
            });
        }
        if !before.same_as(self) {
            events.push(SdamEvent::TopologyDescriptionChanged {
                previous: Box::new(before),
                new: Box::new(self.clone()),
            });
        }
    }

    /// Applies a new description of one of the servers and returns the events.
    fn apply_with_events(&mut self, description: ServerDescription) -> Vec<SdamEvent> {
        let before = self.clone();
        let address = description.address.clone();
        self.apply(description);
        let mut events = Vec::new();
        if let (Some(old), Some(new)) = (before.servers.get(&address), self.servers.get(&address))
            && !old.same_as(new)
        {
            events.push(SdamEvent::ServerDescriptionChanged {
                address: address.clone(),
                previous: Box::new(old.clone()),
                new: Box::new(new.clone()),
            });
        }
        self.push_changes(before, &mut events);
        events
    }

    /// SDAM "Updating the TopologyDescription".
    fn apply(&mut self, description: ServerDescription) {
        let address = description.address.clone();
        if !self.servers.contains_key(&address) {
            return;
        }
        let server_type = description.server_type;
        match self.topology_type {
            TopologyType::LoadBalanced => {
                // The load balancer stays a LoadBalancer; nothing from hello applies.
                return;
            }
            TopologyType::Single => {
                let wrong_set = match (&self.options.replica_set, &description.set_name) {
                    (Some(want), got) => got.as_ref() != Some(want),
                    (None, _) => false,
                };
                if wrong_set && server_type != ServerType::Unknown {
                    let error = format!(
                        "replica set name {:?} does not match the required {:?}",
                        description.set_name, self.options.replica_set
                    );
                    self.servers.insert(
                        address.clone(),
                        ServerDescription::unknown_with_error(address, error, None),
                    );
                } else {
                    self.servers.insert(address, description);
                }
            }
            TopologyType::Unknown => {
                self.servers.insert(address.clone(), description.clone());
                match server_type {
                    ServerType::Standalone => {
                        if self.seed_count != 1 {
                            self.servers.remove(&address);
                        } else {
                            self.topology_type = TopologyType::Single;
                        }
                    }
                    ServerType::Mongos => self.topology_type = TopologyType::Sharded,
                    ServerType::RsPrimary => {
                        self.topology_type = TopologyType::ReplicaSetWithPrimary;
                        self.update_rs_from_primary(&description);
                    }
                    ServerType::RsSecondary | ServerType::RsArbiter | ServerType::RsOther => {
                        self.topology_type = TopologyType::ReplicaSetNoPrimary;
                        self.update_rs_without_primary(&description);
                    }
                    _ => {}
                }
            }
            TopologyType::Sharded => {
                self.servers.insert(address.clone(), description);
                if !matches!(server_type, ServerType::Unknown | ServerType::Mongos) {
                    self.servers.remove(&address);
                }
            }
            TopologyType::ReplicaSetNoPrimary => {
                self.servers.insert(address.clone(), description.clone());
                match server_type {
                    ServerType::Standalone | ServerType::Mongos => {
                        self.servers.remove(&address);
                    }
                    ServerType::RsPrimary => {
                        self.topology_type = TopologyType::ReplicaSetWithPrimary;
                        self.update_rs_from_primary(&description);
                    }
                    ServerType::RsSecondary | ServerType::RsArbiter | ServerType::RsOther => {
                        self.update_rs_without_primary(&description);
                    }
                    _ => {}
                }
            }
            TopologyType::ReplicaSetWithPrimary => {
                self.servers.insert(address.clone(), description.clone());
                match server_type {
                    ServerType::Standalone | ServerType::Mongos => {
                        self.servers.remove(&address);
                        self.check_if_has_primary();
                    }
                    ServerType::RsPrimary => self.update_rs_from_primary(&description),
                    ServerType::RsSecondary | ServerType::RsArbiter | ServerType::RsOther => {
                        self.update_rs_with_primary_from_member(&description);
                    }
                    _ => self.check_if_has_primary(),
                }
            }
        }
        self.update_derived();
    }

    /// SDAM `updateRSWithoutPrimary`.
    fn update_rs_without_primary(&mut self, description: &ServerDescription) {
        let address = &description.address;
        match &self.set_name {
            None => self.set_name = description.set_name.clone(),
            Some(name) if description.set_name.as_ref() != Some(name) => {
                self.servers.remove(address);
                return;
            }
            Some(_) => {}
        }
        for member in description.members() {
            self.servers
                .entry(member.clone())
                .or_insert_with(|| ServerDescription::unknown(member.clone()));
        }
        if let Some(primary) = &description.primary
            && let Some(server) = self.servers.get_mut(primary)
            && server.server_type == ServerType::Unknown
        {
            server.server_type = ServerType::PossiblePrimary;
        }
        if description.me.as_ref().is_some_and(|me| me != address) {
            self.servers.remove(address);
        }
    }

    /// SDAM `updateRSWithPrimaryFromMember`.
    fn update_rs_with_primary_from_member(&mut self, description: &ServerDescription) {
        let address = &description.address;
        if self.set_name != description.set_name
            || description.me.as_ref().is_some_and(|me| me != address)
        {
            self.servers.remove(address);
            self.check_if_has_primary();
            return;
        }
        if !self
            .servers
            .values()
            .any(|s| s.server_type == ServerType::RsPrimary)
        {
            self.topology_type = TopologyType::ReplicaSetNoPrimary;
            if let Some(primary) = &description.primary
                && let Some(server) = self.servers.get_mut(primary)
                && server.server_type == ServerType::Unknown
            {
                server.server_type = ServerType::PossiblePrimary;
            }
        }
    }

    /// SDAM `updateRSFromPrimary`, with the wire-version-17 electionId-first rule.
    fn update_rs_from_primary(&mut self, description: &ServerDescription) {
        let address = description.address.clone();
        match &self.set_name {
            None => self.set_name = description.set_name.clone(),
            Some(name) if description.set_name.as_ref() != Some(name) => {
                self.servers.remove(&address);
                self.check_if_has_primary();
                return;
            }
            Some(_) => {}
        }
        let stale_error = "primary marked stale due to electionId/setVersion mismatch";
        if description.max_wire_version >= 17 {
            let new = (description.election_id, description.set_version);
            let max = (self.max_election_id, self.max_set_version);
            if election_tuple_less(new, max) {
                self.mark_stale_primary(&address, stale_error);
                return;
            }
            self.max_election_id = description.election_id;
            self.max_set_version = description.set_version;
        } else {
            if let (Some(set_version), Some(election_id)) =
                (description.set_version, description.election_id)
            {
                if let (Some(max_sv), Some(max_eid)) = (self.max_set_version, self.max_election_id)
                    && (max_sv > set_version || (max_sv == set_version && max_eid > election_id))
                {
                    self.mark_stale_primary(&address, stale_error);
                    return;
                }
                self.max_election_id = Some(election_id);
            }
            if let Some(set_version) = description.set_version
                && self.max_set_version.is_none_or(|max| set_version > max)
            {
                self.max_set_version = Some(set_version);
            }
        }
        // Any other primary is stale now.
        let others: Vec<ServerAddress> = self
            .servers
            .values()
            .filter(|s| s.address != address && s.server_type == ServerType::RsPrimary)
            .map(|s| s.address.clone())
            .collect();
        for other in others {
            let error = String::from("primary marked stale due to discovery of newer primary");
            self.servers.insert(
                other.clone(),
                ServerDescription::unknown_with_error(other, error, None),
            );
        }
        let members: BTreeSet<ServerAddress> = description.members().cloned().collect();
        for member in &members {
            self.servers
                .entry(member.clone())
                .or_insert_with(|| ServerDescription::unknown(member.clone()));
        }
        self.servers.retain(|a, _| members.contains(a));
        self.check_if_has_primary();
    }

    fn mark_stale_primary(&mut self, address: &ServerAddress, error: &str) {
        self.servers.insert(
            address.clone(),
            ServerDescription::unknown_with_error(address.clone(), error.to_owned(), None),
        );
        self.check_if_has_primary();
    }

    /// SDAM `checkIfHasPrimary`.
    fn check_if_has_primary(&mut self) {
        self.topology_type = if self
            .servers
            .values()
            .any(|s| s.server_type == ServerType::RsPrimary)
        {
            TopologyType::ReplicaSetWithPrimary
        } else {
            TopologyType::ReplicaSetNoPrimary
        };
    }

    /// Recomputes what follows from the servers: `logicalSessionTimeoutMinutes` and the
    /// wire-version compatibility error.
    fn update_derived(&mut self) {
        let mut timeout: Option<i64> = None;
        let mut any = false;
        let mut missing = false;
        for server in self.servers.values().filter(|s| s.is_data_bearing()) {
            any = true;
            match server.logical_session_timeout_minutes {
                Some(t) => timeout = Some(timeout.map_or(t, |m| m.min(t))),
                None => missing = true,
            }
        }
        self.logical_session_timeout_minutes = if any && !missing { timeout } else { None };

        self.compatibility_error = None;
        for server in self.servers.values() {
            // Unknown and PossiblePrimary have no wire versions yet (a possible primary is
            // only another member's word); a load balancer reports none.
            if matches!(
                server.server_type,
                ServerType::Unknown | ServerType::PossiblePrimary | ServerType::LoadBalancer
            ) {
                continue;
            }
            if server.min_wire_version > MAX_WIRE_VERSION {
                self.compatibility_error = Some(format!(
                    "Server at {} requires wire version {}, but this version of brook only supports up to {}.",
                    server.address, server.min_wire_version, MAX_WIRE_VERSION
                ));
                break;
            }
            if server.max_wire_version < MIN_WIRE_VERSION {
                self.compatibility_error = Some(format!(
                    "Server at {} reports wire version {}, but this version of brook requires at least {} (MongoDB {}).",
                    server.address, server.max_wire_version, MIN_WIRE_VERSION, MIN_SERVER_VERSION
                ));
                break;
            }
        }
    }
}

/// Whether both topologyVersions share a processId and `a`'s counter is below `b`'s.
fn counter_less(a: Option<&Document>, b: Option<&Document>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    matches!(
        (a.get_object_id("processId"), b.get_object_id("processId")),
        (Ok(x), Ok(y)) if x == y
    ) && counter(a) < counter(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn a() -> ServerAddress {
        ServerAddress::new("a", 27017)
    }

    fn tv(counter: i64) -> Document {
        doc! { "processId": ObjectId::from_bytes([1; 12]), "counter": counter }
    }

    /// A Single topology whose one server is a standalone with `topologyVersion` 1.
    fn known_single() -> TopologyDescription {
        let mut topology = TopologyDescription::new(vec![a()], TopologyOptions::default());
        let mut server = ServerDescription::unknown(a());
        server.server_type = ServerType::Standalone;
        server.max_wire_version = 9;
        server.topology_version = Some(tv(1));
        topology.topology_type = TopologyType::Single;
        topology.servers.insert(a(), server);
        topology
    }

    fn server_error(code: Option<i32>, message: &str) -> ApplicationError {
        ApplicationError::new(
            ApplicationErrorKind::Server {
                code,
                message: message.to_owned(),
                topology_version: None,
            },
            ErrorPhase::AfterHandshake,
            0,
        )
    }

    #[test]
    fn a_code_decides_over_the_message() {
        assert!(is_state_change(Some(10107), "anything"));
        assert!(!is_state_change(Some(1), "not master"));
        assert!(is_state_change(None, "not master or secondary"));
        assert!(is_state_change(None, "node is recovering"));
        assert!(!is_state_change(None, "duplicate key"));
    }

    #[test]
    fn topology_versions_compare_by_counter_within_one_process() {
        assert!(topology_version_greater(Some(&tv(2)), Some(&tv(1))));
        assert!(!topology_version_greater(Some(&tv(1)), Some(&tv(1))));
        assert!(topology_version_greater(None, Some(&tv(1))));
        let other = doc! { "processId": ObjectId::from_bytes([2; 12]), "counter": 0_i64 };
        assert!(topology_version_greater(Some(&other), Some(&tv(5))));
    }

    #[test]
    fn not_primary_before_4_2_clears_the_pool() {
        let mut topology = known_single();
        let error = server_error(Some(10107), "not primary").with_max_wire_version(7);
        let decision = topology.handle_application_error(&a(), &error, 0);
        assert!(decision.mark_unknown && decision.clear_pool && decision.request_check);
    }

    #[test]
    fn not_primary_from_4_2_keeps_the_pool() {
        let mut topology = known_single();
        let error = server_error(Some(10107), "not primary").with_max_wire_version(8);
        let decision = topology.handle_application_error(&a(), &error, 0);
        assert!(decision.mark_unknown && !decision.clear_pool && decision.request_check);
        assert_eq!(topology.servers[&a()].server_type, ServerType::Unknown);
    }

    #[test]
    fn an_error_from_an_older_pool_generation_is_ignored() {
        let mut topology = known_single();
        let error =
            ApplicationError::new(ApplicationErrorKind::Network, ErrorPhase::AfterHandshake, 0);
        let decision = topology.handle_application_error(&a(), &error, 1);
        assert_eq!(decision, ErrorDecision::default());
        assert_eq!(topology.servers[&a()].server_type, ServerType::Standalone);
    }

    #[test]
    fn a_network_error_marks_unknown_and_clears() {
        let mut topology = known_single();
        let error = ApplicationError::new(
            ApplicationErrorKind::Network,
            ErrorPhase::BeforeHandshake,
            0,
        );
        let decision = topology.handle_application_error(&a(), &error, 0);
        assert!(decision.mark_unknown && decision.clear_pool && !decision.request_check);
        assert!(
            decision
                .events
                .iter()
                .any(|e| matches!(e, SdamEvent::ServerDescriptionChanged { .. }))
        );
    }

    #[test]
    fn a_load_balancer_is_never_marked_unknown() {
        let lb = TopologyOptions {
            load_balanced: true,
            ..TopologyOptions::default()
        };
        let mut topology = TopologyDescription::new(vec![a()], lb);
        let before = ApplicationError::new(
            ApplicationErrorKind::Network,
            ErrorPhase::BeforeHandshake,
            0,
        );
        assert_eq!(
            topology.handle_application_error(&a(), &before, 0),
            ErrorDecision::default()
        );
        let after =
            ApplicationError::new(ApplicationErrorKind::Network, ErrorPhase::AfterHandshake, 0);
        let decision = topology.handle_application_error(&a(), &after, 0);
        assert!(decision.clear_pool && !decision.mark_unknown && !decision.request_check);
        assert_eq!(topology.servers[&a()].server_type, ServerType::LoadBalancer);
    }

    #[test]
    fn round_trips_come_from_the_monitor_estimator() -> Result<(), Box<dyn std::error::Error>> {
        let body = doc! { "ok": 1, "isWritablePrimary": true, "maxWireVersion": 9 };
        let reply = HelloReply::parse(&brook_command::SharedDoc::from_document(&body)?)?;
        let mut topology = TopologyDescription::new(vec![a()], TopologyOptions::default());
        let mut rtt = RttEstimator::new();
        rtt.add_sample(Duration::from_millis(10));
        rtt.add_sample(Duration::from_millis(20));
        let now = Instant::now();
        topology.handle_hello(&a(), Ok(&reply), Some(&rtt), now);
        let server = &topology.servers[&a()];
        assert_eq!(server.round_trip_time, Some(Duration::from_millis(12)));
        assert_eq!(server.min_round_trip_time, Some(Duration::from_millis(10)));
        // A check without a measured round trip keeps the last ones.
        topology.handle_hello(&a(), Ok(&reply), None, now);
        let server = &topology.servers[&a()];
        assert_eq!(server.round_trip_time, Some(Duration::from_millis(12)));
        assert_eq!(topology.topology_type, TopologyType::Single);
        Ok(())
    }

    #[test]
    fn srv_hosts_replace_the_seeds_of_a_sharded_topology() {
        let b = ServerAddress::new("b", 27017);
        let c = ServerAddress::new("c", 27017);
        let mut topology = TopologyDescription::new(vec![a(), b.clone()], TopologyOptions::new());
        topology.topology_type = TopologyType::Sharded;
        if let Some(server) = topology.servers.get_mut(&a()) {
            server.server_type = ServerType::Mongos;
        }
        let events = topology.apply_srv_hosts(&[a(), c.clone()], 0, |_| 0);
        assert_eq!(
            topology.servers.keys().cloned().collect::<Vec<_>>(),
            [a(), c.clone()]
        );
        // The host that stayed is left as it was.
        assert_eq!(topology.servers[&a()].server_type, ServerType::Mongos);
        assert!(events.contains(&SdamEvent::ServerOpening { address: c.clone() }));
        assert!(events.contains(&SdamEvent::ServerClosed { address: b.clone() }));
        // srvMaxHosts: new hosts join only up to the limit.
        let events = topology.apply_srv_hosts(&[a(), b.clone(), c.clone()], 2, |_| 0);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(topology.servers.len(), 2);
        // A replica set is never touched.
        topology.topology_type = TopologyType::ReplicaSetNoPrimary;
        assert!(topology.apply_srv_hosts(&[b], 0, |_| 0).is_empty());
    }

    #[test]
    fn incompatible_servers_name_the_versions() {
        let mut topology = known_single();
        if let Some(server) = topology.servers.get_mut(&a()) {
            server.max_wire_version = 2;
        }
        topology.update_derived();
        let error = topology.compatibility_error.unwrap_or_default();
        assert!(error.contains("reports wire version 2"), "{error}");
        assert!(
            error.contains("requires at least 6 (MongoDB 3.6)"),
            "{error}"
        );
    }
}
