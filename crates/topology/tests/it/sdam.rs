//! The SDAM spec runner: every unit test in `server-discovery-and-monitoring/tests`.
//!
//! Each file builds a topology from its URI, feeds each phase's hello replies and
//! application errors in order, and compares the topology (or, in `monitoring/`, the
//! SDAM events) with the phase's outcome. Pools are modelled by their generation only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brook_command::{HelloReply, SharedDoc};
use brook_topology::{
    ApplicationError, ApplicationErrorKind, ErrorPhase, RttEstimator, SdamEvent, ServerAddress,
    ServerDescription, ServerType, TopologyDescription, TopologyOptions, TopologyType,
};
use bson::{Bson, Document};
use serde_json::Value;

/// Cases that cannot run yet, with why. A listed case that passes fails the run.
const KNOWN_GAPS: &[(&str, &str)] = &[];

const FOLDERS: &[&str] = &[
    "single",
    "rs",
    "sharded",
    "load-balanced",
    "errors",
    "monitoring",
];

fn spec_dir() -> PathBuf {
    let root = match std::env::var("BROOK_SPEC_TESTS") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    };
    let dir = root.join("server-discovery-and-monitoring/tests");
    assert!(
        dir.is_dir(),
        "SDAM spec tests not found at {} (set BROOK_SPEC_TESTS to the spec-tests folder)",
        dir.display()
    );
    dir
}

/// Extended JSON (the subset the SDAM files use) to BSON.
fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(small) => Bson::Int32(small),
                Err(_) => Bson::Int64(i),
            },
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(map) => {
            if let Some(Value::String(oid)) = map.get("$oid") {
                return Bson::ObjectId(bson::oid::ObjectId::parse_str(oid).expect("an $oid"));
            }
            if let Some(Value::String(n)) = map.get("$numberLong") {
                return Bson::Int64(n.parse().expect("a $numberLong"));
            }
            if let Some(Value::Object(date)) = map.get("$date") {
                let ms = date
                    .get("$numberLong")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .expect("a $date");
                return Bson::DateTime(bson::DateTime::from_millis(ms));
            }
            Bson::Document(to_document(value))
        }
    }
}

fn to_document(value: &Value) -> Document {
    let mut doc = Document::new();
    for (key, item) in value.as_object().expect("an object") {
        doc.insert(key.clone(), to_bson(item));
    }
    doc
}

/// The test URIs: hosts and the few options SDAM looks at.
struct TestUri {
    seeds: Vec<ServerAddress>,
    options: TopologyOptions,
}

fn parse_uri(uri: &str) -> TestUri {
    let rest = uri.strip_prefix("mongodb://").expect("a mongodb:// URI");
    let (hosts, query) = match rest.find(['/', '?']) {
        Some(i) => (
            &rest[..i],
            rest[i..].trim_start_matches('/').trim_start_matches('?'),
        ),
        None => (rest, ""),
    };
    let seeds = hosts
        .split(',')
        .map(|h| ServerAddress::parse(h).expect("a host"))
        .collect();
    let mut options = TopologyOptions::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').expect("key=value");
        match key.to_ascii_lowercase().as_str() {
            "replicaset" => options.replica_set = Some(value.to_owned()),
            "directconnection" => options.direct_connection = Some(value == "true"),
            "loadbalanced" => options.load_balanced = value == "true",
            "heartbeatfrequencyms" => {}
            other => panic!("unexpected URI option {other}"),
        }
    }
    TestUri { seeds, options }
}

fn address(s: &str) -> ServerAddress {
    ServerAddress::parse(s).expect("an address")
}

fn server_type_name(t: ServerType) -> &'static str {
    match t {
        ServerType::Unknown => "Unknown",
        ServerType::Standalone => "Standalone",
        ServerType::Mongos => "Mongos",
        ServerType::PossiblePrimary => "PossiblePrimary",
        ServerType::RsPrimary => "RSPrimary",
        ServerType::RsSecondary => "RSSecondary",
        ServerType::RsArbiter => "RSArbiter",
        ServerType::RsOther => "RSOther",
        ServerType::RsGhost => "RSGhost",
        ServerType::LoadBalancer => "LoadBalancer",
        _ => "(new server type)",
    }
}

fn topology_type_name(t: TopologyType) -> &'static str {
    match t {
        TopologyType::Unknown => "Unknown",
        TopologyType::Single => "Single",
        TopologyType::ReplicaSetNoPrimary => "ReplicaSetNoPrimary",
        TopologyType::ReplicaSetWithPrimary => "ReplicaSetWithPrimary",
        TopologyType::Sharded => "Sharded",
        TopologyType::LoadBalanced => "LoadBalanced",
        _ => "(new topology type)",
    }
}

/// One file's client: the topology, pool generations and the events seen so far.
struct Client {
    topology: TopologyDescription,
    generations: BTreeMap<ServerAddress, u64>,
    /// Each monitor's round-trip estimator.
    rtts: BTreeMap<ServerAddress, RttEstimator>,
    events: Vec<SdamEvent>,
    now: Instant,
}

impl Client {
    fn new(uri: &str) -> Client {
        let uri = parse_uri(uri);
        let topology = TopologyDescription::new(uri.seeds, uri.options);
        let events = topology.opening_events();
        Client {
            topology,
            generations: BTreeMap::new(),
            rtts: BTreeMap::new(),
            events,
            now: Instant::now(),
        }
    }

    fn generation(&self, address: &ServerAddress) -> u64 {
        self.generations.get(address).copied().unwrap_or(0)
    }

    fn respond(&mut self, from: &ServerAddress, reply: &Value) {
        self.now += Duration::from_millis(10);
        let events = if reply.as_object().is_some_and(|o| o.is_empty()) {
            self.rtts.remove(from);
            self.topology
                .handle_hello(from, Err(String::from("network error")), None, self.now)
        } else {
            let mut doc = to_document(reply);
            // `null` in a reply means the field is absent.
            let nulls: Vec<String> = doc
                .iter()
                .filter(|(_, v)| matches!(v, Bson::Null))
                .map(|(k, _)| k.clone())
                .collect();
            for key in nulls {
                doc.remove(&key);
            }
            let shared = SharedDoc::from_document(&doc).expect("encodable");
            match HelloReply::parse(&shared) {
                Ok(hello) => {
                    let rtt = self.rtts.entry(from.clone()).or_default();
                    rtt.add_sample(Duration::from_millis(5));
                    self.topology
                        .handle_hello(from, Ok(&hello), Some(rtt), self.now)
                }
                Err(err) => self
                    .topology
                    .handle_hello(from, Err(err.to_string()), None, self.now),
            }
        };
        self.events.extend(events);
    }

    fn application_error(&mut self, error: &Value) {
        let at = address(error["address"].as_str().expect("address"));
        let generation = error["generation"]
            .as_u64()
            .unwrap_or_else(|| self.generation(&at));
        let phase = match error["when"].as_str() {
            Some("beforeHandshakeCompletes") => ErrorPhase::BeforeHandshake,
            Some("afterHandshakeCompletes") => ErrorPhase::AfterHandshake,
            other => panic!("unexpected when {other:?}"),
        };
        let kind = match error["type"].as_str() {
            Some("network") => ApplicationErrorKind::Network,
            Some("timeout") => ApplicationErrorKind::Timeout,
            Some("command") => {
                let response = to_document(&error["response"]);
                ApplicationErrorKind::Server {
                    code: match response.get("code") {
                        Some(Bson::Int32(c)) => Some(*c),
                        Some(Bson::Int64(c)) => i32::try_from(*c).ok(),
                        _ => None,
                    },
                    message: response.get_str("errmsg").unwrap_or("").to_owned(),
                    topology_version: response.get_document("topologyVersion").ok().cloned(),
                }
            }
            other => panic!("unexpected type {other:?}"),
        };
        let mut app_error = ApplicationError::new(kind, phase, generation);
        if let Some(v) = error["maxWireVersion"].as_i64() {
            app_error = app_error.with_max_wire_version(i32::try_from(v).expect("small"));
        }
        let pool_generation = self.generation(&at);
        let decision = self
            .topology
            .handle_application_error(&at, &app_error, pool_generation);
        if decision.clear_pool {
            *self.generations.entry(at).or_insert(0) += 1;
        }
        self.events.extend(decision.events);
    }
}

/// Compares an optional expected value (`absent` = not checked, `null` = None).
fn check_opt<T: PartialEq + std::fmt::Debug>(
    errors: &mut Vec<String>,
    what: &str,
    expected: Option<&Value>,
    actual: Option<T>,
    parse: impl Fn(&Value) -> T,
) {
    let Some(expected) = expected else { return };
    let expected = if expected.is_null() {
        None
    } else {
        Some(parse(expected))
    };
    if expected != actual {
        errors.push(format!("{what}: expected {expected:?}, got {actual:?}"));
    }
}

fn oid(v: &Value) -> bson::oid::ObjectId {
    match to_bson(v) {
        Bson::ObjectId(id) => id,
        other => panic!("not an ObjectId: {other}"),
    }
}

fn check_outcome(client: &Client, outcome: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let topology = &client.topology;
    let expected_type = outcome["topologyType"].as_str().expect("topologyType");
    if topology_type_name(topology.topology_type) != expected_type {
        errors.push(format!(
            "topologyType: expected {expected_type}, got {:?}",
            topology.topology_type
        ));
    }
    check_opt(
        &mut errors,
        "setName",
        outcome.get("setName"),
        topology.set_name.clone(),
        |v| v.as_str().expect("a string").to_owned(),
    );
    check_opt(
        &mut errors,
        "logicalSessionTimeoutMinutes",
        outcome.get("logicalSessionTimeoutMinutes"),
        topology.logical_session_timeout_minutes,
        |v| v.as_i64().expect("an integer"),
    );
    check_opt(
        &mut errors,
        "maxSetVersion",
        outcome.get("maxSetVersion"),
        topology.max_set_version.map(i64::from),
        |v| v.as_i64().expect("an integer"),
    );
    check_opt(
        &mut errors,
        "maxElectionId",
        outcome.get("maxElectionId"),
        topology.max_election_id,
        oid,
    );
    if let Some(compatible) = outcome.get("compatible").and_then(Value::as_bool)
        && compatible != topology.compatibility_error.is_none()
    {
        errors.push(format!(
            "compatible: expected {compatible}, got error {:?}",
            topology.compatibility_error
        ));
    }
    let expected_servers = outcome["servers"].as_object().expect("servers");
    let expected_addresses: Vec<ServerAddress> =
        expected_servers.keys().map(|a| address(a)).collect();
    let actual_addresses: Vec<ServerAddress> = topology.servers.keys().cloned().collect();
    let mut sorted = expected_addresses.clone();
    sorted.sort();
    if sorted != actual_addresses {
        errors.push(format!(
            "servers: expected {sorted:?}, got {actual_addresses:?}"
        ));
    }
    for (name, expected) in expected_servers {
        let at = address(name);
        let Some(server) = topology.servers.get(&at) else {
            continue;
        };
        check_server(&mut errors, client, name, server, expected);
    }
    errors
}

fn check_server(
    errors: &mut Vec<String>,
    client: &Client,
    name: &str,
    server: &ServerDescription,
    expected: &Value,
) {
    let expected_type = expected["type"].as_str().expect("type");
    if server_type_name(server.server_type) != expected_type {
        errors.push(format!(
            "{name} type: expected {expected_type}, got {:?} (error {:?})",
            server.server_type, server.error
        ));
    }
    if let Some(substring) = expected.get("error").and_then(Value::as_str) {
        let actual = server.error.as_deref().unwrap_or("");
        if !actual.contains(substring) {
            errors.push(format!(
                "{name} error: expected to contain {substring:?}, got {actual:?}"
            ));
        }
    }
    check_opt(
        errors,
        &format!("{name} setName"),
        expected.get("setName"),
        server.set_name.clone(),
        |v| v.as_str().expect("a string").to_owned(),
    );
    check_opt(
        errors,
        &format!("{name} setVersion"),
        expected.get("setVersion"),
        server.set_version.map(i64::from),
        |v| v.as_i64().expect("an integer"),
    );
    check_opt(
        errors,
        &format!("{name} electionId"),
        expected.get("electionId"),
        server.election_id,
        oid,
    );
    check_opt(
        errors,
        &format!("{name} logicalSessionTimeoutMinutes"),
        expected.get("logicalSessionTimeoutMinutes"),
        server.logical_session_timeout_minutes,
        |v| v.as_i64().expect("an integer"),
    );
    let known =
        server.server_type != ServerType::Unknown && server.server_type != ServerType::LoadBalancer;
    check_opt(
        errors,
        &format!("{name} minWireVersion"),
        expected.get("minWireVersion"),
        known.then_some(i64::from(server.min_wire_version)),
        |v| v.as_i64().expect("an integer"),
    );
    check_opt(
        errors,
        &format!("{name} maxWireVersion"),
        expected.get("maxWireVersion"),
        known.then_some(i64::from(server.max_wire_version)),
        |v| v.as_i64().expect("an integer"),
    );
    check_opt(
        errors,
        &format!("{name} topologyVersion"),
        expected.get("topologyVersion"),
        server.topology_version.clone(),
        to_document,
    );
    if let Some(generation) = expected
        .get("pool")
        .and_then(|p| p.get("generation"))
        .and_then(Value::as_u64)
    {
        let actual = client.generation(&server.address);
        if actual != generation {
            errors.push(format!(
                "{name} pool generation: expected {generation}, got {actual}"
            ));
        }
    }
}

fn type_name_of_event(event: &SdamEvent) -> &'static str {
    match event {
        SdamEvent::TopologyOpening => "topology_opening_event",
        SdamEvent::ServerOpening { .. } => "server_opening_event",
        SdamEvent::ServerClosed { .. } => "server_closed_event",
        SdamEvent::ServerDescriptionChanged { .. } => "server_description_changed_event",
        SdamEvent::TopologyDescriptionChanged { .. } => "topology_description_changed_event",
        _ => "(new event)",
    }
}

/// Compares a monitoring-test server description (address, type, hosts, passives,
/// arbiters, primary, setName).
fn check_event_server(
    errors: &mut Vec<String>,
    what: &str,
    expected: &Value,
    actual: &ServerDescription,
) {
    let list = |v: &[ServerAddress]| {
        let mut l: Vec<String> = v.iter().map(ToString::to_string).collect();
        l.sort();
        l
    };
    let expected_list = |key: &str| {
        let mut l: Vec<String> = expected[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| address(h.as_str().expect("a host")).to_string())
                    .collect()
            })
            .unwrap_or_default();
        l.sort();
        l
    };
    let checks = [
        (
            "address",
            Some(address(expected["address"].as_str().expect("address")).to_string()),
            Some(actual.address.to_string()),
        ),
        (
            "type",
            expected["type"].as_str().map(str::to_owned),
            Some(server_type_name(actual.server_type).to_owned()),
        ),
        (
            "hosts",
            Some(expected_list("hosts").join(",")),
            Some(list(&actual.hosts).join(",")),
        ),
        (
            "passives",
            Some(expected_list("passives").join(",")),
            Some(list(&actual.passives).join(",")),
        ),
        (
            "arbiters",
            Some(expected_list("arbiters").join(",")),
            Some(list(&actual.arbiters).join(",")),
        ),
        (
            "primary",
            expected["primary"].as_str().map(|p| address(p).to_string()),
            actual.primary.as_ref().map(ToString::to_string),
        ),
        (
            "setName",
            expected["setName"].as_str().map(str::to_owned),
            actual.set_name.clone(),
        ),
    ];
    for (field, want, got) in checks {
        if want != got {
            errors.push(format!("{what} {field}: expected {want:?}, got {got:?}"));
        }
    }
}

fn check_event_topology(
    errors: &mut Vec<String>,
    what: &str,
    expected: &Value,
    actual: &TopologyDescription,
) {
    let expected_type = expected["topologyType"].as_str().expect("topologyType");
    if topology_type_name(actual.topology_type) != expected_type {
        errors.push(format!(
            "{what} topologyType: expected {expected_type}, got {:?}",
            actual.topology_type
        ));
    }
    if let Some(name) = expected.get("setName").and_then(Value::as_str)
        && actual.set_name.as_deref() != Some(name)
    {
        errors.push(format!(
            "{what} setName: expected {name}, got {:?}",
            actual.set_name
        ));
    }
    let servers = expected["servers"].as_array().expect("servers");
    if servers.len() != actual.servers.len() {
        errors.push(format!(
            "{what} servers: expected {}, got {:?}",
            servers.len(),
            actual.servers.keys().collect::<Vec<_>>()
        ));
        return;
    }
    for server in servers {
        let at = address(server["address"].as_str().expect("address"));
        match actual.servers.get(&at) {
            Some(d) => check_event_server(errors, &format!("{what} {at}"), server, d),
            None => errors.push(format!("{what}: no server {at}")),
        }
    }
}

fn check_events(client: &Client, outcome: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let expected = outcome["events"].as_array().expect("events");
    let names: Vec<&str> = client.events.iter().map(type_name_of_event).collect();
    let expected_names: Vec<&str> = expected
        .iter()
        .map(|e| {
            e.as_object()
                .and_then(|o| o.keys().next())
                .map(String::as_str)
                .expect("an event")
        })
        .collect();
    if names != expected_names {
        errors.push(format!(
            "events: expected {expected_names:?}, got {names:?}"
        ));
        return errors;
    }
    for (i, (want, got)) in expected.iter().zip(&client.events).enumerate() {
        let body = want
            .as_object()
            .and_then(|o| o.values().next())
            .expect("a body");
        let what = format!("event {i}");
        match got {
            SdamEvent::ServerOpening { address: at } | SdamEvent::ServerClosed { address: at } => {
                let want_at = address(body["address"].as_str().expect("address"));
                if &want_at != at {
                    errors.push(format!("{what}: expected {want_at}, got {at}"));
                }
            }
            SdamEvent::ServerDescriptionChanged {
                address: at,
                previous,
                new,
            } => {
                let want_at = address(body["address"].as_str().expect("address"));
                if &want_at != at {
                    errors.push(format!("{what}: expected {want_at}, got {at}"));
                }
                check_event_server(
                    &mut errors,
                    &format!("{what} previous"),
                    &body["previousDescription"],
                    previous,
                );
                check_event_server(
                    &mut errors,
                    &format!("{what} new"),
                    &body["newDescription"],
                    new,
                );
            }
            SdamEvent::TopologyDescriptionChanged { previous, new } => {
                check_event_topology(
                    &mut errors,
                    &format!("{what} previous"),
                    &body["previousDescription"],
                    previous,
                );
                check_event_topology(
                    &mut errors,
                    &format!("{what} new"),
                    &body["newDescription"],
                    new,
                );
            }
            _ => {}
        }
    }
    errors
}

/// Runs one file; the first phase that differs, with what differed.
fn run_file(path: &Path, monitoring: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let test: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut client = Client::new(test["uri"].as_str().expect("uri"));
    for (i, phase) in test["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .enumerate()
    {
        for response in phase["responses"].as_array().into_iter().flatten() {
            let from = address(response[0].as_str().expect("an address"));
            client.respond(&from, &response[1]);
        }
        for error in phase["applicationErrors"].as_array().into_iter().flatten() {
            client.application_error(error);
        }
        let errors = if monitoring {
            check_events(&client, &phase["outcome"])
        } else {
            check_outcome(&client, &phase["outcome"])
        };
        client.events.clear();
        if !errors.is_empty() {
            return Err(format!("phase {i}: {}", errors.join("; ")));
        }
    }
    Ok(())
}

#[test]
fn sdam_spec_tests() {
    let dir = spec_dir();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for folder in FOLDERS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
            .unwrap_or_else(|e| panic!("cannot read {folder}: {e}"))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no SDAM tests in {folder}");
        let (mut ran, mut gaps) = (0, 0);
        for path in files {
            let name = format!(
                "{folder}/{}",
                path.file_name().and_then(|n| n.to_str()).expect("a name")
            );
            let gap = KNOWN_GAPS.iter().find(|(file, _)| *file == name);
            let result = run_file(&path, *folder == "monitoring");
            match (gap, result) {
                (None, Ok(())) => ran += 1,
                (None, Err(e)) => failures.push(format!("{name}: {e}")),
                (Some(_), Err(_)) => gaps += 1,
                (Some((_, reason)), Ok(())) => failures.push(format!(
                    "{name} passes but is listed in KNOWN_GAPS ({reason}): remove it"
                )),
            }
        }
        summary.push(format!("{folder}: {ran} passed, {gaps} known gaps"));
    }
    eprintln!("SDAM spec tests: {}", summary.join(", "));
    assert!(
        failures.is_empty(),
        "{} SDAM spec test(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
