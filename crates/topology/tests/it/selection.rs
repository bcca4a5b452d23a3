//! The server-selection spec runner: `server-selection/tests` (server_selection, rtt,
//! in_window, logging) and `max-staleness/tests` when present, plus hand-written cases for
//! the Max Staleness rules (the max-staleness spec data is not in the shared folder).
//!
//! Every file is run; a case that cannot pass is listed in [`KNOWN_GAPS`] with the reason,
//! and a listed case that passes fails the run (so the list cannot go stale).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brook_topology::selection::{DEFAULT_LOCAL_THRESHOLD, describe_topology};
use brook_topology::{
    Operation, ReadPreference, ReadPreferenceMode, RttEstimator, SelectionError, ServerAddress,
    ServerDescription, ServerType, TagSet, TopologyDescription, TopologyType, in_latency_window,
    select_from_window, suitable_servers,
};
use serde_json::Value;

/// Cases that cannot run, by path below the spec folder, with the reason.
const KNOWN_GAPS: &[(&str, &str)] = &[
    (
        "server-selection/tests/logging/load-balanced.json",
        "logging: selection log messages are the facade's (brook-topology logs nothing) and \
         there is no unified-test-format runner yet",
    ),
    (
        "server-selection/tests/logging/operation-id.json",
        "logging: selection log messages are the facade's (brook-topology logs nothing) and \
         there is no unified-test-format runner yet",
    ),
    (
        "server-selection/tests/logging/replica-set.json",
        "logging: selection log messages are the facade's (brook-topology logs nothing) and \
         there is no unified-test-format runner yet",
    ),
    (
        "server-selection/tests/logging/sharded.json",
        "logging: selection log messages are the facade's (brook-topology logs nothing) and \
         there is no unified-test-format runner yet",
    ),
    (
        "server-selection/tests/logging/standalone.json",
        "logging: selection log messages are the facade's (brook-topology logs nothing) and \
         there is no unified-test-format runner yet",
    ),
];

/// The heartbeat frequency when a file names none (the SDAM default).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// The spec-tests root: `$BROOK_SPEC_TESTS`, else `../shared/spec-tests` beside the
/// workspace. Missing is a failure, never a skip.
fn spec_root() -> PathBuf {
    let root = match std::env::var("BROOK_SPEC_TESTS") {
        Ok(value) if !value.is_empty() => PathBuf::from(value),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    };
    let selection = root.join("server-selection/tests");
    assert!(
        selection.is_dir(),
        "the server-selection spec tests are missing: {} is not a directory (set \
         BROOK_SPEC_TESTS to the folder holding mongodb/specifications' test data)",
        selection.display()
    );
    root
}

/// The `.json` files below `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", current.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What one folder's run did.
#[derive(Default)]
struct Tally {
    passed: Vec<String>,
    gaps: Vec<String>,
    failures: Vec<String>,
}

/// Runs `case` on every JSON file below `folder` (relative to the root), applies
/// [`KNOWN_GAPS`], and fails on any unexpected outcome. Returns the tally for the report.
fn run_folder(folder: &str, case: impl Fn(&Value) -> Result<(), String>) -> Tally {
    let root = spec_root();
    let dir = root.join(folder);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let files = json_files(&dir);
    assert!(!files.is_empty(), "{} holds no JSON files", dir.display());
    let mut tally = Tally::default();
    for file in files {
        let name = file
            .strip_prefix(&root)
            .expect("below the root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("readable spec file");
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&json)))
            .unwrap_or_else(|_| Err("panicked".to_owned()));
        let gap = KNOWN_GAPS.iter().find(|(gap, _)| *gap == name);
        match (outcome, gap) {
            (Ok(()), None) => tally.passed.push(name),
            (Ok(()), Some(_)) => tally.failures.push(format!(
                "{name}: listed in KNOWN_GAPS but passes; remove it"
            )),
            (Err(_), Some(_)) => tally.gaps.push(name),
            (Err(why), None) => tally.failures.push(format!("{name}: {why}")),
        }
    }
    eprintln!(
        "{folder}: {} passed, {} known gaps",
        tally.passed.len(),
        tally.gaps.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases in {folder} failed:\n{}",
        tally.failures.len(),
        tally.passed.len() + tally.gaps.len() + tally.failures.len(),
        tally.failures.join("\n")
    );
    tally
}

#[test]
fn known_gaps_name_existing_files() {
    let root = spec_root();
    for (name, reason) in KNOWN_GAPS {
        assert!(
            root.join(name).is_file(),
            "KNOWN_GAPS names {name}, which does not exist"
        );
        assert!(!reason.is_empty(), "{name} needs a reason");
    }
}

// ---------------------------------------------------------------------------------------
// Parsing the spec's descriptions.

fn ms_to_duration(ms: f64) -> Duration {
    Duration::from_nanos((ms * 1_000_000.0).round() as u64)
}

fn address(value: &Value) -> Result<ServerAddress, String> {
    let text = value.as_str().ok_or("address is not a string")?;
    ServerAddress::parse(text).map_err(|e| format!("bad address {text}: {e}"))
}

fn server_type(name: &str) -> Result<ServerType, String> {
    Ok(match name {
        "Unknown" => ServerType::Unknown,
        "Standalone" => ServerType::Standalone,
        "Mongos" => ServerType::Mongos,
        "PossiblePrimary" => ServerType::PossiblePrimary,
        "RSPrimary" => ServerType::RsPrimary,
        "RSSecondary" => ServerType::RsSecondary,
        "RSArbiter" => ServerType::RsArbiter,
        "RSOther" => ServerType::RsOther,
        "RSGhost" => ServerType::RsGhost,
        "LoadBalancer" => ServerType::LoadBalancer,
        other => return Err(format!("unknown server type {other}")),
    })
}

fn topology_type(name: &str) -> Result<TopologyType, String> {
    Ok(match name {
        "Unknown" => TopologyType::Unknown,
        "Single" => TopologyType::Single,
        "ReplicaSetNoPrimary" => TopologyType::ReplicaSetNoPrimary,
        "ReplicaSetWithPrimary" => TopologyType::ReplicaSetWithPrimary,
        "Sharded" => TopologyType::Sharded,
        "LoadBalanced" => TopologyType::LoadBalanced,
        other => return Err(format!("unknown topology type {other}")),
    })
}

/// A number that may be spelled as extended JSON (`{"$numberLong": "12"}`).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Object(map) => map
            .get("$numberLong")
            .or_else(|| map.get("$numberInt"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        _ => None,
    }
}

fn tag_set(value: &Value) -> Result<TagSet, String> {
    let map = value.as_object().ok_or("a tag set is not an object")?;
    map.iter()
        .map(|(k, v)| {
            let v = v.as_str().ok_or("a tag value is not a string")?;
            Ok((k.clone(), v.to_owned()))
        })
        .collect()
}

/// One server of a spec description; `base` is the instant `lastUpdateTime: 0` stands for.
fn server(value: &Value, base: Instant) -> Result<ServerDescription, String> {
    let mut server = ServerDescription::unknown(address(&value["address"])?);
    server.server_type = server_type(value["type"].as_str().ok_or("server type missing")?)?;
    server.round_trip_time = value.get("avg_rtt_ms").and_then(number).map(ms_to_duration);
    if let Some(tags) = value.get("tags") {
        server.tags = tag_set(tags)?;
    }
    if let Some(update) = value.get("lastUpdateTime").and_then(number) {
        server.last_update_time = Some(base + ms_to_duration(update));
    }
    server.last_write_date = value
        .get("lastWrite")
        .and_then(|write| write.get("lastWriteDate"))
        .and_then(number)
        .map(|ms| ms as i64);
    // The server-selection files give no wire version; any modern server's will do.
    server.max_wire_version = value
        .get("maxWireVersion")
        .and_then(number)
        .map_or(21, |v| v as i32);
    Ok(server)
}

fn topology(value: &Value, base: Instant) -> Result<TopologyDescription, String> {
    let kind = topology_type(value["type"].as_str().ok_or("topology type missing")?)?;
    let mut servers = BTreeMap::new();
    for entry in value["servers"].as_array().ok_or("servers missing")? {
        let server = server(entry, base)?;
        servers.insert(server.address.clone(), server);
    }
    let mut topology = TopologyDescription::default();
    topology.topology_type = kind;
    topology.servers = servers;
    Ok(topology)
}

fn read_preference(value: &Value) -> Result<ReadPreference, String> {
    let mode = match value["mode"]
        .as_str()
        .unwrap_or("Primary")
        .to_ascii_lowercase()
        .as_str()
    {
        "primary" => ReadPreferenceMode::Primary,
        "primarypreferred" => ReadPreferenceMode::PrimaryPreferred,
        "secondary" => ReadPreferenceMode::Secondary,
        "secondarypreferred" => ReadPreferenceMode::SecondaryPreferred,
        "nearest" => ReadPreferenceMode::Nearest,
        other => return Err(format!("unknown mode {other}")),
    };
    let mut preference = ReadPreference::new(mode);
    if let Some(sets) = value.get("tag_sets").and_then(Value::as_array) {
        preference.tag_sets = sets.iter().map(tag_set).collect::<Result<_, _>>()?;
    }
    if let Some(seconds) = value.get("maxStalenessSeconds").and_then(number) {
        // -1 means "no maximum" in the connection string and the spec data.
        if seconds >= 0.0 {
            preference.max_staleness = Some(Duration::from_secs_f64(seconds));
        }
    }
    Ok(preference)
}

fn addresses(servers: &[&ServerDescription]) -> BTreeSet<String> {
    servers.iter().map(|s| s.address.to_string()).collect()
}

fn expected_addresses(value: &Value) -> Result<BTreeSet<String>, String> {
    value
        .as_array()
        .ok_or("expected servers are not a list")?
        .iter()
        .map(|s| Ok(address(&s["address"])?.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// server_selection (and max-staleness, which has the same shape).

fn selection_case(json: &Value) -> Result<(), String> {
    let base = Instant::now();
    let topology = topology(&json["topology_description"], base)?;
    let preference = read_preference(json.get("read_preference").unwrap_or(&Value::Null))?;
    let operation = match json["operation"].as_str().unwrap_or("read") {
        "read" => Operation::Read(&preference),
        "write" => Operation::Write,
        other => return Err(format!("unknown operation {other}")),
    };
    let heartbeat = json
        .get("heartbeatFrequencyMS")
        .and_then(number)
        .map_or(DEFAULT_HEARTBEAT, ms_to_duration);
    let threshold = json
        .get("localThresholdMS")
        .and_then(number)
        .map_or(DEFAULT_LOCAL_THRESHOLD, ms_to_duration);
    let deprioritized = match json.get("deprioritized_servers").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .map(|s| address(&s["address"]))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let outcome = suitable_servers(&topology, operation, &deprioritized, heartbeat);
    if json.get("error").and_then(Value::as_bool) == Some(true) {
        return match outcome {
            Err(_) => Ok(()),
            Ok(servers) => Err(format!(
                "expected an error, selected {:?}",
                addresses(&servers)
            )),
        };
    }
    let suitable = outcome.map_err(|e| format!("unexpected error: {e}"))?;
    if let Some(expected) = json.get("suitable_servers") {
        let expected = expected_addresses(expected)?;
        if addresses(&suitable) != expected {
            return Err(format!(
                "suitable servers {:?}, expected {expected:?} ({})",
                addresses(&suitable),
                describe_topology(&topology)
            ));
        }
    }
    let window = in_latency_window(&suitable, threshold);
    if let Some(expected) = json.get("in_latency_window") {
        let expected = expected_addresses(expected)?;
        if addresses(&window) != expected {
            return Err(format!(
                "latency window {:?}, expected {expected:?}",
                addresses(&window)
            ));
        }
    }
    Ok(())
}

#[test]
fn server_selection() {
    let tally = run_folder("server-selection/tests/server_selection", selection_case);
    assert!(
        tally.passed.len() >= 80,
        "too few cases ran: {}",
        tally.passed.len()
    );
}

#[test]
fn max_staleness_spec_data_when_present() {
    // The shared folder may lack the Max Staleness data; the rules are then covered by the
    // hand-written tests below. When it is there, every file runs.
    let root = spec_root();
    if root.join("max-staleness/tests").is_dir() {
        run_folder("max-staleness/tests", selection_case);
    }
}

// ---------------------------------------------------------------------------------------
// rtt

fn rtt_case(json: &Value) -> Result<(), String> {
    let mut estimator = match number(&json["avg_rtt_ms"]) {
        Some(ms) => RttEstimator::with_average(ms_to_duration(ms)),
        None if json["avg_rtt_ms"] == "NULL" => RttEstimator::new(),
        None => return Err("avg_rtt_ms is neither a number nor NULL".to_owned()),
    };
    let sample = number(&json["new_rtt_ms"]).ok_or("new_rtt_ms missing")?;
    let expected = number(&json["new_avg_rtt"]).ok_or("new_avg_rtt missing")?;
    estimator.add_sample(ms_to_duration(sample));
    let got = estimator
        .average()
        .ok_or("no average after a sample")?
        .as_secs_f64()
        * 1000.0;
    if (got - expected).abs() > 1e-4 {
        return Err(format!("average {got} ms, expected {expected} ms"));
    }
    Ok(())
}

#[test]
fn rtt() {
    let tally = run_folder("server-selection/tests/rtt", rtt_case);
    assert_eq!(tally.passed.len(), 7);
}

// ---------------------------------------------------------------------------------------
// in_window

/// splitmix64: a small seeded generator, so that a failure repeats.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn in_window_case(json: &Value) -> Result<(), String> {
    let topology = topology(&json["topology_description"], Instant::now())?;
    let mut counts = BTreeMap::new();
    for entry in json["mocked_topology_state"]
        .as_array()
        .ok_or("mocked_topology_state missing")?
    {
        let count = number(&entry["operation_count"]).ok_or("operation_count missing")? as u64;
        counts.insert(address(&entry["address"])?, count);
    }
    let iterations = number(&json["iterations"]).ok_or("iterations missing")? as usize;
    let outcome = &json["outcome"];
    let tolerance = number(&outcome["tolerance"]).ok_or("tolerance missing")?;
    let preference = ReadPreference::new(ReadPreferenceMode::Nearest);
    let suitable = suitable_servers(
        &topology,
        Operation::Read(&preference),
        &[],
        DEFAULT_HEARTBEAT,
    )
    .map_err(|e| e.to_string())?;
    let window = in_latency_window(&suitable, DEFAULT_LOCAL_THRESHOLD);
    let mut rng = SplitMix(0x5EED_B200_C0DE);
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..iterations {
        let server = select_from_window(
            &window,
            |address| counts.get(address).copied().unwrap_or(0),
            |n| rng.below(n),
        )
        .ok_or("nothing selected")?;
        *chosen.entry(server.address.to_string()).or_default() += 1;
    }
    let expected = outcome["expected_frequencies"]
        .as_object()
        .ok_or("expected_frequencies missing")?;
    for (name, frequency) in expected {
        let want = number(frequency).ok_or("a frequency is not a number")?;
        let got = chosen
            .get(&address(&Value::from(name.as_str()))?.to_string())
            .copied()
            .unwrap_or(0) as f64
            / iterations as f64;
        let ok = if want == 0.0 || want == 1.0 {
            got == want
        } else {
            (got - want).abs() <= tolerance
        };
        if !ok {
            return Err(format!(
                "{name} chosen with frequency {got}, expected {want} ± {tolerance}"
            ));
        }
    }
    Ok(())
}

#[test]
fn in_window() {
    let tally = run_folder("server-selection/tests/in_window", in_window_case);
    assert_eq!(tally.passed.len(), 8);
}

// ---------------------------------------------------------------------------------------
// logging: not run here (see KNOWN_GAPS); every file must be listed.

#[test]
fn logging() {
    let tally = run_folder("server-selection/tests/logging", |_| {
        Err("log messages are not emitted by brook-topology".to_owned())
    });
    assert!(tally.passed.is_empty());
}

// ---------------------------------------------------------------------------------------
// Max Staleness rules, hand-written (the shared folder has no max-staleness data).

/// A replica-set member for the staleness tests, built field by field.
struct Member {
    address: &'static str,
    server_type: ServerType,
    /// When its last check completed, in ms after the test's base instant.
    last_update_ms: u64,
    /// Its `lastWriteDate`, in ms since the epoch.
    last_write_ms: i64,
}

fn replica_set(kind: TopologyType, members: &[Member], base: Instant) -> TopologyDescription {
    let mut servers = BTreeMap::new();
    for member in members {
        let address = ServerAddress::parse(member.address).expect("address");
        let mut server = ServerDescription::unknown(address.clone());
        server.server_type = member.server_type;
        server.round_trip_time = Some(Duration::from_millis(5));
        server.last_update_time = Some(base + Duration::from_millis(member.last_update_ms));
        server.last_write_date = Some(member.last_write_ms);
        server.max_wire_version = 21;
        servers.insert(address, server);
    }
    let mut topology = TopologyDescription::default();
    topology.topology_type = kind;
    topology.set_name = Some("rs".to_owned());
    topology.servers = servers;
    topology
}

fn secondary_reads(
    topology: &TopologyDescription,
    max_staleness_secs: u64,
    heartbeat: Duration,
) -> Result<BTreeSet<String>, SelectionError> {
    let preference = ReadPreference::new(ReadPreferenceMode::Secondary)
        .with_max_staleness(Duration::from_secs(max_staleness_secs));
    suitable_servers(topology, Operation::Read(&preference), &[], heartbeat)
        .map(|servers| addresses(&servers))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn staleness_with_a_primary_compares_write_lag_and_check_times() {
    let base = Instant::now();
    // Primary checked at t=0 having written at 1_000_000; staleness of S =
    // (S.update - S.write) - (P.update - P.write) + heartbeat.
    let topology = replica_set(
        TopologyType::ReplicaSetWithPrimary,
        &[
            Member {
                address: "p:27017",
                server_type: ServerType::RsPrimary,
                last_update_ms: 0,
                last_write_ms: 1_000_000,
            },
            // 80 s behind, checked at the same time: 80 + 10 = 90 s.
            Member {
                address: "fresh:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 1_000_000 - 80_000,
            },
            // Same write as the primary but checked 81 s later: 81 + 10 = 91 s.
            Member {
                address: "late:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 81_000,
                last_write_ms: 1_000_000,
            },
        ],
        base,
    );
    assert_eq!(
        secondary_reads(&topology, 90, DEFAULT_HEARTBEAT),
        Ok(set(&["fresh:27017"]))
    );
    assert_eq!(
        secondary_reads(&topology, 91, DEFAULT_HEARTBEAT),
        Ok(set(&["fresh:27017", "late:27017"]))
    );
}

#[test]
fn staleness_without_a_primary_uses_the_freshest_secondary() {
    let base = Instant::now();
    let topology = replica_set(
        TopologyType::ReplicaSetNoPrimary,
        &[
            Member {
                address: "a:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 500_000,
            },
            // 81 s behind a: 81 + 10 = 91 s.
            Member {
                address: "b:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 500_000 - 81_000,
            },
        ],
        base,
    );
    assert_eq!(
        secondary_reads(&topology, 90, DEFAULT_HEARTBEAT),
        Ok(set(&["a:27017"]))
    );
    assert_eq!(
        secondary_reads(&topology, 91, DEFAULT_HEARTBEAT),
        Ok(set(&["a:27017", "b:27017"]))
    );
}

#[test]
fn staleness_filters_secondaries_but_never_the_primary() {
    let base = Instant::now();
    let topology = replica_set(
        TopologyType::ReplicaSetWithPrimary,
        &[
            Member {
                address: "p:27017",
                server_type: ServerType::RsPrimary,
                last_update_ms: 0,
                last_write_ms: 1_000_000,
            },
            Member {
                address: "stale:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 0,
            },
        ],
        base,
    );
    for (mode, expected) in [
        (ReadPreferenceMode::Nearest, set(&["p:27017"])),
        (ReadPreferenceMode::SecondaryPreferred, set(&["p:27017"])),
        (ReadPreferenceMode::Secondary, set(&[])),
    ] {
        let preference = ReadPreference::new(mode).with_max_staleness(Duration::from_secs(90));
        let got = suitable_servers(
            &topology,
            Operation::Read(&preference),
            &[],
            DEFAULT_HEARTBEAT,
        )
        .map(|servers| addresses(&servers));
        assert_eq!(got, Ok(expected), "{mode}");
    }
}

#[test]
fn max_staleness_below_the_smallest_allowed_is_an_error_on_replica_sets() {
    let base = Instant::now();
    let members = [Member {
        address: "a:27017",
        server_type: ServerType::RsSecondary,
        last_update_ms: 0,
        last_write_ms: 0,
    }];
    let topology = replica_set(TopologyType::ReplicaSetNoPrimary, &members, base);
    assert_eq!(
        secondary_reads(&topology, 89, DEFAULT_HEARTBEAT),
        Err(SelectionError::MaxStalenessTooSmall {
            max_staleness: Duration::from_secs(89),
            minimum: Duration::from_secs(90),
        })
    );
    // A slow heartbeat raises the floor to heartbeat + idle write period.
    assert_eq!(
        secondary_reads(&topology, 100, Duration::from_secs(95)),
        Err(SelectionError::MaxStalenessTooSmall {
            max_staleness: Duration::from_secs(100),
            minimum: Duration::from_secs(105),
        })
    );
    assert!(secondary_reads(&topology, 105, Duration::from_secs(95)).is_ok());
    // mongos checks the bound itself.
    let mut sharded = topology.clone();
    sharded.topology_type = TopologyType::Sharded;
    assert!(secondary_reads(&sharded, 1, DEFAULT_HEARTBEAT).is_ok());
}

#[test]
fn max_staleness_needs_wire_version_5() {
    let base = Instant::now();
    let mut topology = replica_set(
        TopologyType::ReplicaSetNoPrimary,
        &[Member {
            address: "old:27017",
            server_type: ServerType::RsSecondary,
            last_update_ms: 0,
            last_write_ms: 0,
        }],
        base,
    );
    for server in topology.servers.values_mut() {
        server.max_wire_version = 4;
    }
    assert!(matches!(
        secondary_reads(&topology, 120, DEFAULT_HEARTBEAT),
        Err(SelectionError::MaxStalenessUnsupported {
            max_wire_version: 4,
            ..
        })
    ));
}

#[test]
fn primary_mode_rejects_tags_and_max_staleness() {
    let topology = replica_set(TopologyType::ReplicaSetNoPrimary, &[], Instant::now());
    let tagged = ReadPreference::primary()
        .with_tag_sets(vec![TagSet::from([("dc".to_owned(), "ny".to_owned())])]);
    assert_eq!(
        suitable_servers(&topology, Operation::Read(&tagged), &[], DEFAULT_HEARTBEAT),
        Err(SelectionError::PrimaryWithTagSets)
    );
    let stale = ReadPreference::primary().with_max_staleness(Duration::from_secs(120));
    assert_eq!(
        suitable_servers(&topology, Operation::Read(&stale), &[], DEFAULT_HEARTBEAT),
        Err(SelectionError::PrimaryWithMaxStaleness)
    );
    // One empty tag set is the same as none.
    let empty = ReadPreference::primary().with_tag_sets(vec![TagSet::new()]);
    assert_eq!(
        suitable_servers(&topology, Operation::Read(&empty), &[], DEFAULT_HEARTBEAT),
        Ok(Vec::new())
    );
}

#[test]
fn an_incompatible_topology_fails_selection() {
    let mut topology = replica_set(TopologyType::ReplicaSetNoPrimary, &[], Instant::now());
    topology.compatibility_error = Some("a:27017 is too old".to_owned());
    assert_eq!(
        suitable_servers(&topology, Operation::Write, &[], DEFAULT_HEARTBEAT),
        Err(SelectionError::Incompatible(
            "a:27017 is too old".to_owned()
        ))
    );
}

#[test]
fn no_suitable_server_describes_the_topology() {
    let base = Instant::now();
    let topology = replica_set(
        TopologyType::ReplicaSetNoPrimary,
        &[Member {
            address: "a:27017",
            server_type: ServerType::RsSecondary,
            last_update_ms: 0,
            last_write_ms: 0,
        }],
        base,
    );
    let message = SelectionError::no_suitable_server(&topology, Operation::Write).to_string();
    assert!(message.contains("a write"), "{message}");
    assert!(message.contains("ReplicaSetNoPrimary"), "{message}");
    assert!(message.contains("a:27017 RsSecondary"), "{message}");
}

#[test]
fn select_from_window_prefers_the_less_busy_of_two() {
    let topology = replica_set(
        TopologyType::ReplicaSetNoPrimary,
        &[
            Member {
                address: "a:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 0,
            },
            Member {
                address: "b:27017",
                server_type: ServerType::RsSecondary,
                last_update_ms: 0,
                last_write_ms: 0,
            },
        ],
        Instant::now(),
    );
    let window: Vec<&ServerDescription> = topology.servers.values().collect();
    let busy_a = |address: &ServerAddress| u64::from(address.to_string().starts_with('a')) * 9;
    // Whichever order the two are drawn in, b wins.
    for draw in [0, 1] {
        let chosen = select_from_window(&window, busy_a, |_| draw).expect("a server");
        assert_eq!(chosen.address.to_string(), "b:27017");
    }
    // A random source out of range is reduced, never a panic.
    assert!(select_from_window(&window, |_| 0, |_| usize::MAX).is_some());
    assert!(select_from_window(&[], |_| 0, |_| 0).is_none());
}
