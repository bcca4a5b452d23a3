//! Server selection: suitable servers by read preference, staleness and the latency window.
//!
//! The Server Selection specification splits choosing a server into steps, and so does
//! this module; the driver runs them in a loop, waiting for a new topology description
//! between tries until its `serverSelectionTimeoutMS` runs out:
//!
//! 1. [`suitable_servers`]: the servers of the topology that may run the operation
//!    (its kind, the read preference's mode and tag sets, `maxStalenessSeconds`), with
//!    the servers a retry wants to avoid left out when others remain;
//! 2. [`in_latency_window`]: those whose average round trip is within `localThresholdMS`
//!    of the fastest;
//! 3. [`select_from_window`]: two of the window at random, keeping the one with fewer
//!    operations in flight.
//!
//! [`select_server`] chains the three. When nothing is suitable, the driver waits for the
//! next description; once it gives up, [`SelectionError::no_suitable_server`] says what
//! the topology looked like.
//!
//! Nothing here reads a clock or owns a source of randomness: staleness is computed from
//! the times stored in the descriptions, and the caller passes the random numbers.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};

use crate::{ServerAddress, ServerDescription, ServerType, TopologyDescription, TopologyType};

/// The Max Staleness specification's `idleWritePeriodMS`: how often a primary writes a
/// no-op when idle, so that secondaries' `lastWriteDate` keeps moving.
pub const IDLE_WRITE_PERIOD: Duration = Duration::from_secs(10);

/// The Max Staleness specification's `smallestMaxStalenessSeconds`.
pub const SMALLEST_MAX_STALENESS: Duration = Duration::from_secs(90);

/// The default `localThresholdMS`: the width of the latency window.
pub const DEFAULT_LOCAL_THRESHOLD: Duration = Duration::from_millis(15);

/// The oldest wire version (MongoDB 3.4) that reports what staleness needs.
const MAX_STALENESS_MIN_WIRE_VERSION: i32 = 5;

/// One tag set of a read preference: a server matches it when it has every one of these
/// tags with the same value (the empty set matches every server).
pub type TagSet = BTreeMap<String, String>;

/// Which members a read may go to (Server Selection "Read preference").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadPreferenceMode {
    /// The primary only.
    #[default]
    Primary,
    /// The primary when there is one, else a secondary.
    PrimaryPreferred,
    /// Secondaries only.
    Secondary,
    /// A secondary when one is suitable, else the primary.
    SecondaryPreferred,
    /// The primary or a secondary, whichever is nearest.
    Nearest,
}

impl ReadPreferenceMode {
    /// The name the server and the connection string use (`"secondaryPreferred"`).
    pub fn name(self) -> &'static str {
        match self {
            ReadPreferenceMode::Primary => "primary",
            ReadPreferenceMode::PrimaryPreferred => "primaryPreferred",
            ReadPreferenceMode::Secondary => "secondary",
            ReadPreferenceMode::SecondaryPreferred => "secondaryPreferred",
            ReadPreferenceMode::Nearest => "nearest",
        }
    }
}

impl fmt::Display for ReadPreferenceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A read preference: the mode, the tag sets tried in order, and the staleness bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPreference {
    /// Which members the read may go to.
    pub mode: ReadPreferenceMode,
    /// Tried in order: the first set that some eligible member matches picks the members.
    /// Empty means "any member" (as does one empty set).
    pub tag_sets: Vec<TagSet>,
    /// `maxStalenessSeconds`: secondaries estimated to lag the primary (or the freshest
    /// secondary) by more than this are left out. `None` means no bound.
    pub max_staleness: Option<Duration>,
}

impl ReadPreference {
    /// A read preference with this mode, no tag sets and no staleness bound.
    pub fn new(mode: ReadPreferenceMode) -> ReadPreference {
        ReadPreference {
            mode,
            tag_sets: Vec::new(),
            max_staleness: None,
        }
    }

    /// The default read preference: the primary.
    pub fn primary() -> ReadPreference {
        ReadPreference::new(ReadPreferenceMode::Primary)
    }

    /// The same read preference with these tag sets.
    pub fn with_tag_sets(mut self, tag_sets: Vec<TagSet>) -> ReadPreference {
        self.tag_sets = tag_sets;
        self
    }

    /// The same read preference with this `maxStalenessSeconds`.
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> ReadPreference {
        self.max_staleness = Some(max_staleness);
        self
    }

    /// The read preference as the server reads it:
    /// `{mode, tags?, maxStalenessSeconds?}` (tags only when some set is non-empty).
    pub fn to_document(&self) -> Document {
        let mut document = doc! { "mode": self.mode.name() };
        if self.tag_sets.iter().any(|set| !set.is_empty()) {
            let tags: Vec<Bson> = self
                .tag_sets
                .iter()
                .map(|set| {
                    Bson::Document(
                        set.iter()
                            .map(|(name, value)| (name.clone(), Bson::String(value.clone())))
                            .collect(),
                    )
                })
                .collect();
            document.insert("tags", tags);
        }
        if let Some(max_staleness) = self.max_staleness {
            let seconds = i64::try_from(max_staleness.as_secs()).unwrap_or(i64::MAX);
            document.insert("maxStalenessSeconds", seconds);
        }
        document
    }

    /// Checks what the specification forbids whatever the topology: mode primary with a
    /// non-empty tag set or with `maxStalenessSeconds`.
    pub fn validate(&self) -> Result<(), SelectionError> {
        if self.mode != ReadPreferenceMode::Primary {
            return Ok(());
        }
        if self.tag_sets.iter().any(|set| !set.is_empty()) {
            return Err(SelectionError::PrimaryWithTagSets);
        }
        if self.max_staleness.is_some() {
            return Err(SelectionError::PrimaryWithMaxStaleness);
        }
        Ok(())
    }
}

/// The `$readPreference` field to add to a read sent to `server` in `topology`, if any
/// (Server Selection "Passing read preference to mongos and load balancers" and the
/// OP_MSG rules for replica sets and direct connections):
///
/// - a standalone gets none;
/// - a direct connection (Single) to anything but a mongos or a load balancer turns mode
///   primary into `primaryPreferred`, so that a secondary answers;
/// - otherwise mode primary sends none (it is the server's default), and every other
///   mode is sent with its tag sets and `maxStalenessSeconds`.
pub fn read_preference_field(
    topology_type: TopologyType,
    server_type: ServerType,
    preference: &ReadPreference,
) -> Option<Document> {
    if server_type == ServerType::Standalone {
        return None;
    }
    let routed = matches!(server_type, ServerType::Mongos | ServerType::LoadBalancer);
    if preference.mode == ReadPreferenceMode::Primary {
        return (topology_type == TopologyType::Single && !routed)
            .then(|| doc! { "mode": ReadPreferenceMode::PrimaryPreferred.name() });
    }
    Some(preference.to_document())
}

/// What a server is being selected for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    /// A read, with its read preference.
    Read(&'a ReadPreference),
    /// A write (or a command that must run on the primary).
    Write,
}

impl fmt::Display for Operation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Write => f.write_str("a write"),
            Operation::Read(preference) => {
                write!(f, "a read with mode {}", preference.mode)?;
                if preference.tag_sets.iter().any(|set| !set.is_empty()) {
                    write!(f, ", tag sets {:?}", preference.tag_sets)?;
                }
                if let Some(max_staleness) = preference.max_staleness {
                    write!(f, ", maxStalenessSeconds {}", max_staleness.as_secs())?;
                }
                Ok(())
            }
        }
    }
}

/// Why no server could be selected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// A server's wire versions do not overlap brook's (the topology's
    /// `compatibility_error`).
    #[error("incompatible server: {0}")]
    Incompatible(String),
    /// Mode primary with a non-empty tag set.
    #[error("read preference mode primary cannot have tag sets")]
    PrimaryWithTagSets,
    /// Mode primary with `maxStalenessSeconds`.
    #[error("read preference mode primary cannot have maxStalenessSeconds")]
    PrimaryWithMaxStaleness,
    /// `maxStalenessSeconds` below `max(90 s, heartbeatFrequencyMS + 10 s)` on a replica set.
    #[error(
        "maxStalenessSeconds is {}s, below the smallest allowed {}s \
         (at least 90s, and at least heartbeatFrequencyMS plus the 10s idle write period)",
        max_staleness.as_secs_f64(),
        minimum.as_secs_f64()
    )]
    MaxStalenessTooSmall {
        /// What the read preference asked for.
        max_staleness: Duration,
        /// The smallest value allowed with this heartbeat frequency.
        minimum: Duration,
    },
    /// `maxStalenessSeconds` with a server too old to report what staleness needs.
    #[error(
        "maxStalenessSeconds needs MongoDB 3.4 or newer (wire version 5), \
         but {address} has wire version {max_wire_version}"
    )]
    MaxStalenessUnsupported {
        /// The old server.
        address: ServerAddress,
        /// Its `maxWireVersion`.
        max_wire_version: i32,
    },
    /// No server was suitable before the driver gave up waiting.
    #[error("no server is suitable for {operation}; topology: {topology}")]
    NoSuitableServer {
        /// The operation, as [`Operation`]'s `Display` says it.
        operation: String,
        /// The topology, as [`describe_topology`] says it.
        topology: String,
    },
}

impl SelectionError {
    /// The error to report when the driver's wait for a suitable server timed out.
    pub fn no_suitable_server(
        topology: &TopologyDescription,
        operation: Operation<'_>,
    ) -> SelectionError {
        SelectionError::NoSuitableServer {
            operation: operation.to_string(),
            topology: describe_topology(topology),
        }
    }
}

/// A one-line account of a topology for error messages: its type, and each server's
/// address, type, round trip and last error.
pub fn describe_topology(topology: &TopologyDescription) -> String {
    let mut out = format!("{:?}", topology.topology_type);
    if let Some(set_name) = &topology.set_name {
        let _ = write!(out, " (set {set_name})");
    }
    out.push_str(" [");
    for (index, server) in topology.servers.values().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{} {:?}", server.address, server.server_type);
        if let Some(rtt) = server.round_trip_time {
            let _ = write!(out, " rtt {:.1}ms", rtt.as_secs_f64() * 1000.0);
        }
        if let Some(error) = &server.error {
            let _ = write!(out, " error: {error}");
        }
    }
    out.push(']');
    out
}

/// The servers of `topology` that may run `operation` (Server Selection "Topology type"
/// rules, with Max Staleness), in address order.
///
/// - Unknown: none.
/// - Single: the one server unless it is Unknown, whatever its type (a direct connection
///   goes where it was told, hidden members included).
/// - LoadBalanced: the load balancer. Sharded: every mongos. Read preferences are passed
///   on to those and do not filter here.
/// - Replica sets: writes go to the primary; reads follow the mode, `maxStalenessSeconds`
///   (secondaries only) and then the first tag set some candidate matches.
///
/// `deprioritized` lists servers a retry should avoid (the one that just failed): they are
/// left out of the topology, and only if that leaves nothing suitable is the selection
/// made again with them. `heartbeat_frequency` enters the staleness estimate and the
/// smallest `maxStalenessSeconds` allowed.
///
/// Errors when the topology is incompatible with brook, when the read preference is
/// invalid, or when `maxStalenessSeconds` is too small for a replica set. An empty list
/// is not an error: the driver waits for the next topology description and tries again.
pub fn suitable_servers<'t>(
    topology: &'t TopologyDescription,
    operation: Operation<'_>,
    deprioritized: &[ServerAddress],
    heartbeat_frequency: Duration,
) -> Result<Vec<&'t ServerDescription>, SelectionError> {
    if let Some(error) = &topology.compatibility_error {
        return Err(SelectionError::Incompatible(error.clone()));
    }
    if let Operation::Read(preference) = operation {
        preference.validate()?;
        check_max_staleness(topology, preference, heartbeat_frequency)?;
    }
    if !deprioritized.is_empty() {
        let preferred = suitable_among(topology, operation, heartbeat_frequency, |server| {
            !deprioritized.contains(&server.address)
        });
        if !preferred.is_empty() {
            return Ok(preferred);
        }
    }
    Ok(suitable_among(
        topology,
        operation,
        heartbeat_frequency,
        |_| true,
    ))
}

/// The Max Staleness checks that depend on the topology.
fn check_max_staleness(
    topology: &TopologyDescription,
    preference: &ReadPreference,
    heartbeat_frequency: Duration,
) -> Result<(), SelectionError> {
    let Some(max_staleness) = preference.max_staleness else {
        return Ok(());
    };
    if let Some(old) = topology.servers.values().find(|server| {
        server.server_type != ServerType::Unknown
            && server.max_wire_version < MAX_STALENESS_MIN_WIRE_VERSION
    }) {
        return Err(SelectionError::MaxStalenessUnsupported {
            address: old.address.clone(),
            max_wire_version: old.max_wire_version,
        });
    }
    // mongos and a direct connection check the bound themselves; only a replica set's
    // bound is the driver's to enforce.
    if matches!(
        topology.topology_type,
        TopologyType::ReplicaSetWithPrimary | TopologyType::ReplicaSetNoPrimary
    ) {
        let minimum =
            SMALLEST_MAX_STALENESS.max(heartbeat_frequency.saturating_add(IDLE_WRITE_PERIOD));
        if max_staleness < minimum {
            return Err(SelectionError::MaxStalenessTooSmall {
                max_staleness,
                minimum,
            });
        }
    }
    Ok(())
}

/// The suitable servers among those `include` keeps.
fn suitable_among<'t>(
    topology: &'t TopologyDescription,
    operation: Operation<'_>,
    heartbeat_frequency: Duration,
    include: impl Fn(&ServerDescription) -> bool,
) -> Vec<&'t ServerDescription> {
    let candidates = topology.servers.values().filter(|server| include(server));
    let of_type = |wanted: ServerType| {
        topology
            .servers
            .values()
            .filter(|server| include(server) && server.server_type == wanted)
            .collect::<Vec<_>>()
    };
    match topology.topology_type {
        TopologyType::Unknown => Vec::new(),
        TopologyType::Single => candidates
            .filter(|server| server.server_type != ServerType::Unknown)
            .collect(),
        TopologyType::LoadBalanced => of_type(ServerType::LoadBalancer),
        TopologyType::Sharded => of_type(ServerType::Mongos),
        TopologyType::ReplicaSetWithPrimary | TopologyType::ReplicaSetNoPrimary => {
            match operation {
                Operation::Write => of_type(ServerType::RsPrimary),
                Operation::Read(preference) => {
                    replica_set_read(topology, preference, heartbeat_frequency, include)
                }
            }
        }
    }
}

/// A replica set's suitable servers for a read.
fn replica_set_read<'t>(
    topology: &'t TopologyDescription,
    preference: &ReadPreference,
    heartbeat_frequency: Duration,
    include: impl Fn(&ServerDescription) -> bool,
) -> Vec<&'t ServerDescription> {
    // Staleness is measured against the real primary even when a retry avoids it: the
    // data's freshness does not depend on which server the retry prefers.
    let primary = topology
        .servers
        .values()
        .find(|server| server.server_type == ServerType::RsPrimary);
    let staleness = Staleness::new(topology, primary, heartbeat_frequency);
    let eligible_primary = primary.filter(|server| include(server));
    let secondaries: Vec<&ServerDescription> = topology
        .servers
        .values()
        .filter(|server| server.server_type == ServerType::RsSecondary && include(server))
        .filter(|server| match preference.max_staleness {
            None => true,
            Some(max_staleness) => staleness.within(server, max_staleness),
        })
        .collect();
    let tagged_secondaries = || matching_first_tag_set(&secondaries, &preference.tag_sets);
    match preference.mode {
        ReadPreferenceMode::Primary => eligible_primary.into_iter().collect(),
        ReadPreferenceMode::PrimaryPreferred => match eligible_primary {
            Some(primary) => vec![primary],
            None => tagged_secondaries(),
        },
        ReadPreferenceMode::Secondary => tagged_secondaries(),
        ReadPreferenceMode::SecondaryPreferred => {
            let chosen = tagged_secondaries();
            if chosen.is_empty() {
                eligible_primary.into_iter().collect()
            } else {
                chosen
            }
        }
        ReadPreferenceMode::Nearest => {
            let mut members = secondaries.clone();
            members.extend(eligible_primary);
            members.sort_by(|a, b| a.address.cmp(&b.address));
            matching_first_tag_set(&members, &preference.tag_sets)
        }
    }
}

/// The servers matching the first tag set that any of them matches; all of them when
/// there are no tag sets.
fn matching_first_tag_set<'t>(
    servers: &[&'t ServerDescription],
    tag_sets: &[TagSet],
) -> Vec<&'t ServerDescription> {
    if tag_sets.is_empty() {
        return servers.to_vec();
    }
    for tag_set in tag_sets {
        let matching: Vec<&ServerDescription> = servers
            .iter()
            .copied()
            .filter(|server| {
                tag_set
                    .iter()
                    .all(|(name, value)| server.tags.get(name) == Some(value))
            })
            .collect();
        if !matching.is_empty() {
            return matching;
        }
    }
    Vec::new()
}

/// The reference point of the Max Staleness estimate.
enum Staleness {
    /// With a primary P: `(S.lastUpdateTime - S.lastWriteDate) - (P.lastUpdateTime -
    /// P.lastWriteDate) + heartbeatFrequency`.
    Primary {
        last_update_time: Instant,
        last_write_date: i64,
        heartbeat_frequency: Duration,
    },
    /// Without one: `SMax.lastWriteDate - S.lastWriteDate + heartbeatFrequency`, SMax
    /// being the secondary with the newest write.
    FreshestSecondary {
        last_write_date: i64,
        heartbeat_frequency: Duration,
    },
    /// No reference at all (no secondary reports a write): every secondary is stale.
    Unknowable,
}

impl Staleness {
    fn new(
        topology: &TopologyDescription,
        primary: Option<&ServerDescription>,
        heartbeat_frequency: Duration,
    ) -> Staleness {
        if let Some((last_update_time, last_write_date)) =
            primary.and_then(|primary| Some((primary.last_update_time?, primary.last_write_date?)))
        {
            return Staleness::Primary {
                last_update_time,
                last_write_date,
                heartbeat_frequency,
            };
        }
        // A primary that reports no times (which no server new enough for max staleness
        // does) is treated as absent, so that the estimate still has a reference.
        match topology
            .servers
            .values()
            .filter(|server| server.server_type == ServerType::RsSecondary)
            .filter_map(|server| server.last_write_date)
            .max()
        {
            Some(last_write_date) => Staleness::FreshestSecondary {
                last_write_date,
                heartbeat_frequency,
            },
            None => Staleness::Unknowable,
        }
    }

    /// Whether `secondary`'s estimated staleness is at most `max_staleness`; a secondary
    /// without the times the estimate needs is taken as stale.
    fn within(&self, secondary: &ServerDescription, max_staleness: Duration) -> bool {
        let Some(write) = secondary.last_write_date else {
            return false;
        };
        let nanos = match *self {
            Staleness::Unknowable => return false,
            Staleness::Primary {
                last_update_time,
                last_write_date,
                heartbeat_frequency,
            } => {
                let Some(update) = secondary.last_update_time else {
                    return false;
                };
                signed_nanos_between(last_update_time, update) + millis_to_nanos(last_write_date)
                    - millis_to_nanos(write)
                    + heartbeat_frequency.as_nanos() as i128
            }
            Staleness::FreshestSecondary {
                last_write_date,
                heartbeat_frequency,
            } => {
                millis_to_nanos(last_write_date) - millis_to_nanos(write)
                    + heartbeat_frequency.as_nanos() as i128
            }
        };
        nanos <= max_staleness.as_nanos() as i128
    }
}

/// `later - earlier` in nanoseconds, negative when `later` is the earlier one.
fn signed_nanos_between(earlier: Instant, later: Instant) -> i128 {
    match later.checked_duration_since(earlier) {
        Some(forward) => forward.as_nanos() as i128,
        None => -(earlier.duration_since(later).as_nanos() as i128),
    }
}

fn millis_to_nanos(millis: i64) -> i128 {
    i128::from(millis) * 1_000_000
}

/// The servers whose average round trip is at most the fastest one's plus
/// `local_threshold` (Server Selection "Latency window"). A server without an average
/// counts as zero: a load balancer is never monitored, so it has none.
pub fn in_latency_window<'a>(
    servers: &[&'a ServerDescription],
    local_threshold: Duration,
) -> Vec<&'a ServerDescription> {
    let rtt = |server: &ServerDescription| server.round_trip_time.unwrap_or(Duration::ZERO);
    let Some(fastest) = servers.iter().map(|server| rtt(server)).min() else {
        return Vec::new();
    };
    let bound = fastest.saturating_add(local_threshold);
    servers
        .iter()
        .copied()
        .filter(|server| rtt(server) <= bound)
        .collect()
}

/// Picks one server of the latency window by the "power of two random choices": two
/// distinct servers at random, then the one with fewer operations in flight (the first
/// drawn on a tie). `random(n)` must return a number in `0..n` (larger values are reduced
/// modulo `n`); `None` only for an empty window.
pub fn select_from_window<'a>(
    window: &[&'a ServerDescription],
    operation_count: impl Fn(&ServerAddress) -> u64,
    mut random: impl FnMut(usize) -> usize,
) -> Option<&'a ServerDescription> {
    let len = window.len();
    if len < 2 {
        return window.first().copied();
    }
    let first = random(len) % len;
    // Draw the second among the other len - 1, then step over the first.
    let mut second = random(len - 1) % (len - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (window.get(first)?, window.get(second)?);
    if operation_count(&b.address) < operation_count(&a.address) {
        Some(b)
    } else {
        Some(a)
    }
}

/// The three steps at once: suitable servers, the latency window, two random choices.
/// `Ok(None)` means nothing is suitable yet: wait for the next topology description.
pub fn select_server<'t>(
    topology: &'t TopologyDescription,
    operation: Operation<'_>,
    deprioritized: &[ServerAddress],
    heartbeat_frequency: Duration,
    local_threshold: Duration,
    operation_count: impl Fn(&ServerAddress) -> u64,
    random: impl FnMut(usize) -> usize,
) -> Result<Option<&'t ServerDescription>, SelectionError> {
    let suitable = suitable_servers(topology, operation, deprioritized, heartbeat_frequency)?;
    let window = in_latency_window(&suitable, local_threshold);
    Ok(select_from_window(&window, operation_count, random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged_secondary() -> ReadPreference {
        ReadPreference::new(ReadPreferenceMode::Secondary)
            .with_tag_sets(vec![
                TagSet::from([("dc".to_owned(), "ny".to_owned())]),
                TagSet::new(),
            ])
            .with_max_staleness(Duration::from_secs(120))
    }

    #[test]
    fn the_document_carries_tags_and_staleness() {
        assert_eq!(
            tagged_secondary().to_document(),
            doc! {
                "mode": "secondary",
                "tags": [{ "dc": "ny" }, {}],
                "maxStalenessSeconds": 120_i64,
            }
        );
        let plain =
            ReadPreference::new(ReadPreferenceMode::Nearest).with_tag_sets(vec![TagSet::new()]);
        assert_eq!(plain.to_document(), doc! { "mode": "nearest" });
    }

    #[test]
    fn primary_is_sent_only_on_a_direct_connection_to_a_member() {
        let primary = ReadPreference::primary();
        assert_eq!(
            read_preference_field(TopologyType::Single, ServerType::RsSecondary, &primary),
            Some(doc! { "mode": "primaryPreferred" })
        );
        for (topology, server) in [
            (TopologyType::Single, ServerType::Standalone),
            (TopologyType::Single, ServerType::Mongos),
            (TopologyType::Sharded, ServerType::Mongos),
            (TopologyType::LoadBalanced, ServerType::LoadBalancer),
            (TopologyType::ReplicaSetWithPrimary, ServerType::RsPrimary),
        ] {
            assert_eq!(read_preference_field(topology, server, &primary), None);
        }
    }

    #[test]
    fn other_modes_are_sent_except_to_a_standalone() {
        let secondary = tagged_secondary();
        assert_eq!(
            read_preference_field(TopologyType::Sharded, ServerType::Mongos, &secondary),
            Some(secondary.to_document())
        );
        assert_eq!(
            read_preference_field(
                TopologyType::ReplicaSetNoPrimary,
                ServerType::RsSecondary,
                &secondary
            ),
            Some(secondary.to_document())
        );
        assert_eq!(
            read_preference_field(TopologyType::Single, ServerType::Standalone, &secondary),
            None
        );
    }
}
