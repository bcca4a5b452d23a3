//! Server and topology descriptions (SDAM "Data structures").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{Document, oid::ObjectId};

use crate::ServerAddress;

/// What a server is, from its last hello (SDAM "ServerType").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerType {
    /// Not checked yet, or the last check failed.
    Unknown,
    /// A mongod that is not a replica-set member.
    Standalone,
    /// A mongos.
    Mongos,
    /// A member another member names as primary, not yet checked itself.
    PossiblePrimary,
    /// The replica set's primary.
    RsPrimary,
    /// A secondary.
    RsSecondary,
    /// An arbiter.
    RsArbiter,
    /// A hidden, starting up or recovering member.
    RsOther,
    /// A member not yet initiated or removed from its set.
    RsGhost,
    /// A load balancer in front of mongoses.
    LoadBalancer,
}

/// What the whole deployment is (SDAM "TopologyType").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopologyType {
    /// Not known yet.
    Unknown,
    /// One server, used whatever it is (`directConnection=true`, or one standalone).
    Single,
    /// A replica set without a known primary.
    ReplicaSetNoPrimary,
    /// A replica set with a known primary.
    ReplicaSetWithPrimary,
    /// mongoses.
    Sharded,
    /// A load balancer.
    LoadBalanced,
}

/// One server as the topology sees it (SDAM "ServerDescription").
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerDescription {
    /// The address as the seed list or a member's `hosts` spelled it, lowercased.
    pub address: ServerAddress,
    /// What the server is.
    pub server_type: ServerType,
    /// The error that made it Unknown, if one did.
    pub error: Option<String>,
    /// The moving average of its hello round trips (SDAM: alpha 0.2).
    pub round_trip_time: Option<Duration>,
    /// The smallest round trip of the recent samples.
    pub min_round_trip_time: Option<Duration>,
    /// When the last check of it completed (for staleness).
    pub last_update_time: Option<Instant>,
    /// `lastWrite.lastWriteDate`, ms since the Unix epoch (for staleness).
    pub last_write_date: Option<i64>,
    /// `minWireVersion`.
    pub min_wire_version: i32,
    /// `maxWireVersion`.
    pub max_wire_version: i32,
    /// `me`, lowercased.
    pub me: Option<ServerAddress>,
    /// `hosts`, lowercased.
    pub hosts: Vec<ServerAddress>,
    /// `passives`, lowercased.
    pub passives: Vec<ServerAddress>,
    /// `arbiters`, lowercased.
    pub arbiters: Vec<ServerAddress>,
    /// `tags`.
    pub tags: BTreeMap<String, String>,
    /// `setName`.
    pub set_name: Option<String>,
    /// `setVersion`.
    pub set_version: Option<i32>,
    /// `electionId`.
    pub election_id: Option<ObjectId>,
    /// `primary`, lowercased.
    pub primary: Option<ServerAddress>,
    /// `logicalSessionTimeoutMinutes`.
    pub logical_session_timeout_minutes: Option<i64>,
    /// `topologyVersion` (`{processId, counter}`).
    pub topology_version: Option<Document>,
}

impl ServerDescription {
    /// A server not checked yet.
    pub fn unknown(address: ServerAddress) -> ServerDescription {
        ServerDescription {
            address,
            server_type: ServerType::Unknown,
            error: None,
            round_trip_time: None,
            min_round_trip_time: None,
            last_update_time: None,
            last_write_date: None,
            min_wire_version: 0,
            max_wire_version: 0,
            me: None,
            hosts: Vec::new(),
            passives: Vec::new(),
            arbiters: Vec::new(),
            tags: BTreeMap::new(),
            set_name: None,
            set_version: None,
            election_id: None,
            primary: None,
            logical_session_timeout_minutes: None,
            topology_version: None,
        }
    }

    /// Whether it can take operations at all (a data-bearing or routing server).
    pub fn is_available(&self) -> bool {
        matches!(
            self.server_type,
            ServerType::Standalone
                | ServerType::Mongos
                | ServerType::RsPrimary
                | ServerType::RsSecondary
                | ServerType::LoadBalancer
        )
    }
}

/// The deployment as the client sees it (SDAM "TopologyDescription").
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopologyDescription {
    /// What the deployment is.
    pub topology_type: TopologyType,
    /// The replica set's name, once known (or required by `replicaSet=`).
    pub set_name: Option<String>,
    /// The highest `setVersion` seen from a primary.
    pub max_set_version: Option<i32>,
    /// The highest `electionId` seen from a primary.
    pub max_election_id: Option<ObjectId>,
    /// Every server, by address.
    pub servers: BTreeMap<ServerAddress, ServerDescription>,
    /// `None` when every server's wire versions overlap brook's; else why not (selection
    /// fails with it).
    pub compatibility_error: Option<String>,
    /// The smallest `logicalSessionTimeoutMinutes` of the data-bearing servers, `None`
    /// when one of them has none.
    pub logical_session_timeout_minutes: Option<i64>,
    /// The options the topology was created with (they steer SDAM's transitions).
    pub options: crate::sdam::TopologyOptions,
    /// How many seeds the topology started from (a lone seed that turns out standalone
    /// makes the topology Single; among several, a standalone is removed).
    pub seed_count: usize,
}

impl Default for TopologyDescription {
    /// An Unknown topology with no servers and default options.
    fn default() -> Self {
        TopologyDescription {
            topology_type: TopologyType::Unknown,
            set_name: None,
            max_set_version: None,
            max_election_id: None,
            servers: BTreeMap::new(),
            compatibility_error: None,
            logical_session_timeout_minutes: None,
            options: crate::sdam::TopologyOptions::default(),
            seed_count: 0,
        }
    }
}
