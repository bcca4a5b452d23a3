//! Runs the Initial DNS Seedlist Discovery spec tests
//! (`initial-dns-seedlist-discovery/tests/`, read from `$BROOK_SPEC_TESTS`, default
//! `../shared/spec-tests` beside the workspace) against `brook::srv::resolve`.
//!
//! The case files give the expected outcome only; the DNS records they rely on are the
//! test suite's zone, described in the folder's README. [`Zone::spec`] serves that zone
//! (written here from the README's description), so no case needs a network or a DNS
//! server. Every case's seeds, `numSeeds`, options, `parsed_options` and error are
//! checked. The `hosts`/`numHosts`/ping part of a case needs the zone's names to reach
//! running servers; a case whose part cannot run is listed in [`KNOWN_GAPS`] with the
//! reason, and a listed case whose part passes fails the run.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::ClientOptions;
use brook::srv::{DnsFuture, Resolver, SrvRecord};
use serde_json::Value;

/// Cases whose discovery part (`hosts`, `numHosts`, ping) does not run, with the reason.
const KNOWN_GAPS: &[(&str, &str)] = &[(
    "replica-set/longer-parent-in-return.json",
    "its target localhost.sub.<domain> has two labels more than the domain, so the adapted \
     zone cannot spell it as an IP literal (the testkit runs are DNS-free) and it does not \
     resolve",
)];

/// Cases that cannot connect while `Client::with_options` refuses credentials and auth
/// options (before brook authenticates): gaps only in such a build (see
/// [`credentials_refused`]), and required to pass once brook authenticates.
const AUTH_GAPS: &[&str] = &[
    // A user in the URI.
    "replica-set/encoded-userinfo-and-db.json",
    "replica-set/uri-with-auth.json",
    // authSource from the TXT record.
    "replica-set/one-txt-record.json",
    "replica-set/srvMaxHosts-zero-txt.json",
    "replica-set/txt-record-with-overridden-ssl-option.json",
    "replica-set/txt-record-with-overridden-uri-option.json",
];

/// Whether this build refuses credentials at connect.
fn credentials_refused() -> bool {
    ClientOptions::parse("mongodb://user:pw@127.0.0.1/?authSource=admin")
        .and_then(|o| o.check_supported())
        .is_err_and(|e| e.is_unsupported())
}

/// Why `name`'s discovery part is a known gap, if it is one.
fn gap(name: &str, auth_refused: bool) -> Option<&'static str> {
    KNOWN_GAPS
        .iter()
        .find(|(gap, _)| *gap == name)
        .map(|(_, why)| *why)
        .or_else(|| {
            (auth_refused && AUTH_GAPS.contains(&name))
                .then_some("brook refuses credentials and auth options at connect")
        })
}

/// A DNS zone served from memory: SRV and TXT records by name (lowercase, no trailing
/// dot). Records may be changed while a client polls.
#[derive(Clone, Default)]
pub(crate) struct Zone {
    srv: Arc<Mutex<BTreeMap<String, Vec<SrvRecord>>>>,
    txt: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// The SRV names looked up, in order.
    pub(crate) srv_queries: Arc<Mutex<Vec<String>>>,
    /// The polling floor this zone reports (the spec's 60 s unless a test lowers it).
    pub(crate) rescan_floor: Option<Duration>,
    /// When set, every SRV lookup fails with this message.
    pub(crate) srv_failure: Arc<Mutex<Option<String>>>,
}

impl Zone {
    /// Replaces the SRV records of `name` with `records` (`(target, port)`), whose TTL
    /// the resolver does not know (so a poller rescans at its floor).
    pub(crate) fn set_srv(&self, name: &str, records: &[(&str, u16)]) {
        self.set_srv_records(
            name,
            records
                .iter()
                .map(|(target, port)| SrvRecord::new(*target, *port))
                .collect(),
        );
    }

    fn set_srv_records(&self, name: &str, records: Vec<SrvRecord>) {
        self.srv
            .lock()
            .expect("zone lock")
            .insert(name.to_ascii_lowercase(), records);
    }

    /// Adds a TXT record to `name`, given as its character strings.
    pub(crate) fn add_txt(&self, name: &str, strings: &[&str]) {
        self.txt
            .lock()
            .expect("zone lock")
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(strings.concat());
    }

    /// The test suite's zone, from the README of `initial-dns-seedlist-discovery/tests`
    /// (`test.build.10gen.cc`; `test4` has no SRV record, `test9` does not exist).
    pub(crate) fn spec() -> Zone {
        let zone = Zone::default();
        let d = "test.build.10gen.cc";
        let local = "localhost.test.build.10gen.cc.";
        let srv: &[(&str, &[(&str, u16)])] = &[
            ("_mongodb._tcp.test1", &[(local, 27017), (local, 27018)]),
            ("_mongodb._tcp.test2", &[(local, 27018), (local, 27019)]),
            ("_mongodb._tcp.test3", &[(local, 27017)]),
            ("_mongodb._tcp.test5", &[(local, 27017)]),
            ("_mongodb._tcp.test6", &[(local, 27017)]),
            ("_mongodb._tcp.test7", &[(local, 27017)]),
            ("_mongodb._tcp.test8", &[(local, 27017)]),
            ("_mongodb._tcp.test10", &[(local, 27017)]),
            ("_mongodb._tcp.test11", &[(local, 27017)]),
            (
                "_mongodb._tcp.test12",
                &[("localhost.build.10gen.cc.", 27017)],
            ),
            ("_mongodb._tcp.test13", &[("test.build.10gen.cc.", 27017)]),
            (
                "_mongodb._tcp.test14",
                &[("localhost.not-test.build.10gen.cc.", 27017)],
            ),
            (
                "_mongodb._tcp.test15",
                &[("localhost.test.not-build.10gen.cc.", 27017)],
            ),
            (
                "_mongodb._tcp.test16",
                &[("localhost.test.build.not-10gen.cc.", 27017)],
            ),
            (
                "_mongodb._tcp.test17",
                &[("localhost.test.build.10gen.not-cc.", 27017)],
            ),
            (
                "_mongodb._tcp.test18",
                &[("localhost.sub.test.build.10gen.cc.", 27017)],
            ),
            (
                "_mongodb._tcp.test19",
                &[("localhost.evil.build.10gen.cc.", 27017), (local, 27017)],
            ),
            ("_mongodb._tcp.test20", &[(local, 27017)]),
            ("_mongodb._tcp.test21", &[(local, 27017)]),
            // The README lists one record; the case file (srv-service-name.json) expects
            // the seeds 27017 and 27018, as the suite's live zone serves them.
            ("_customname._tcp.test22", &[(local, 27017), (local, 27018)]),
            ("_mongodb._tcp.test23", &[(local, 8000)]),
            ("_mongodb._tcp.test24", &[(local, 8000)]),
        ];
        for (name, records) in srv {
            let ttl = Duration::from_secs(86400);
            let records = records
                .iter()
                .map(|(target, port)| SrvRecord::new(*target, *port).with_ttl(ttl))
                .collect();
            zone.set_srv_records(&format!("{name}.{d}"), records);
        }
        let txt: &[(&str, &[&str])] = &[
            ("test5", &["replicaSet=repl0&authSource=thisDB"]),
            ("test6", &["replicaSet=repl0"]),
            ("test6", &["authSource=otherDB"]),
            ("test7", &["ssl=false"]),
            ("test8", &["authSource"]),
            ("test10", &["socketTimeoutMS=500"]),
            ("test11", &["replicaS", "et=rep", "l0"]),
            ("test20", &["loadBalanced=true"]),
            ("test21", &["loadBalanced=false"]),
            ("test24", &["loadBalanced=true"]),
        ];
        for (name, strings) in txt {
            zone.add_txt(&format!("{name}.{d}"), strings);
        }
        zone
    }
}

impl Resolver for Zone {
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.srv_queries
                .lock()
                .expect("zone lock")
                .push(name.clone());
            if let Some(message) = self.srv_failure.lock().expect("zone lock").clone() {
                return Err(io::Error::other(message));
            }
            match self.srv.lock().expect("zone lock").get(&name) {
                Some(records) => Ok(records.clone()),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("NXDOMAIN: {name}"),
                )),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            Ok(self
                .txt
                .lock()
                .expect("zone lock")
                .get(&name)
                .cloned()
                .unwrap_or_default())
        })
    }

    fn min_rescan_interval(&self) -> Duration {
        self.rescan_floor.unwrap_or(brook::srv::MIN_RESCAN_INTERVAL)
    }
}

fn spec_dir() -> PathBuf {
    match std::env::var_os("BROOK_SPEC_TESTS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    }
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
}

/// The resolved value of an option named in a case's `options`.
fn option_value(o: &ClientOptions, key: &str) -> Option<Value> {
    match key {
        "ssl" | "tls" => o.tls.map(Value::from),
        "replicaSet" => o.replica_set.clone().map(Value::from),
        "authSource" => o
            .credential
            .as_ref()
            .and_then(|c| c.source.clone())
            .map(Value::from),
        "loadBalanced" => o.load_balanced.map(Value::from),
        "directConnection" => o.direct_connection.map(Value::from),
        "srvMaxHosts" => o.srv_max_hosts.map(Value::from),
        "srvServiceName" => o.srv_service_name.clone().map(Value::from),
        _ => None,
    }
}

fn parsed_option(o: &ClientOptions, key: &str) -> Option<Value> {
    let credential = o.credential.as_ref();
    match key {
        "user" => credential.and_then(|c| c.username.clone()).map(Value::from),
        "password" => credential.and_then(|c| c.password.clone()).map(Value::from),
        "db" | "auth_database" | "defaultDatabase" => o.default_database.clone().map(Value::from),
        _ => None,
    }
}

fn strings(case: &Value, key: &str) -> Option<BTreeSet<String>> {
    case.get(key).and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

/// Parses and resolves the case's URI with the spec zone; checks the seeds, options,
/// `parsed_options` and error. Returns the resolved options of a case that expects
/// success.
async fn check_resolution(case: &Value) -> Result<Option<ClientOptions>, String> {
    let uri = case.get("uri").and_then(Value::as_str).ok_or("no uri")?;
    let error = case.get("error").and_then(Value::as_bool).unwrap_or(false);
    let resolved = match ClientOptions::parse(uri) {
        Ok(options) => brook::srv::resolve(&options, &Zone::spec()).await,
        Err(e) => Err(e),
    };
    let resolved = match (error, resolved) {
        (true, Err(_)) => return Ok(None),
        (true, Ok(r)) => {
            return Err(format!(
                "expected an error, resolved to {:?}",
                r.options.hosts
            ));
        }
        (false, Err(e)) => return Err(format!("failed: {e}")),
        (false, Ok(r)) => r.options,
    };
    let seeds: BTreeSet<String> = resolved.hosts.iter().map(ToString::to_string).collect();
    if let Some(want) = strings(case, "seeds")
        && case.get("numSeeds").is_none()
        && seeds != want
    {
        return Err(format!("seeds {seeds:?}, expected {want:?}"));
    }
    if let Some(n) = case.get("numSeeds").and_then(Value::as_u64) {
        if seeds.len() as u64 != n {
            return Err(format!("{} seeds ({seeds:?}), expected {n}", seeds.len()));
        }
        // Chosen at random: each one must come from the SRV records.
        let all = Zone::spec();
        let name = uri
            .trim_start_matches("mongodb+srv://")
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let records = all.srv(&format!("_mongodb._tcp.{name}")).await;
        let known: BTreeSet<String> = records
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| format!("{}:{}", r.target.trim_end_matches('.'), r.port))
            .collect();
        if !seeds.is_subset(&known) {
            return Err(format!("seeds {seeds:?} are not among {known:?}"));
        }
    }
    for (section, get) in [
        (
            "options",
            option_value as fn(&ClientOptions, &str) -> Option<Value>,
        ),
        ("parsed_options", parsed_option),
    ] {
        let Some(expected) = case.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (key, want) in expected {
            let got = get(&resolved, key);
            if got.as_ref() != Some(want) {
                return Err(format!("{section}.{key}: got {got:?}, expected {want}"));
            }
        }
    }
    Ok(Some(resolved))
}

#[tokio::test]
async fn initial_dns_seedlist_discovery_spec() {
    let root = spec_dir();
    let dir = root.join("initial-dns-seedlist-discovery/tests");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing (set BROOK_SPEC_TESTS)",
            dir.display()
        );
        eprintln!("skipping: {} is missing", dir.display());
        return;
    }
    let mut files = Vec::new();
    json_files(&dir, &mut files);
    assert_eq!(files.len(), 53, "the suite has 53 cases");
    let auth_refused = credentials_refused();
    let mut failures = Vec::new();
    let mut resolved_ok = 0;
    let mut discovery_run = 0;
    let mut gaps = 0;
    for file in &files {
        let name = file
            .strip_prefix(&dir)
            .expect("below the folder")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("readable spec file");
        let case: Value = serde_json::from_str(&text).expect("valid JSON");
        let outcome = check_resolution(&case).await;
        let options = match outcome {
            Ok(options) => {
                resolved_ok += 1;
                options
            }
            Err(why) => {
                failures.push(format!("{name}: {why}"));
                continue;
            }
        };
        let needs_discovery =
            options.is_some() && (case.get("hosts").is_some() || case.get("numHosts").is_some());
        if !needs_discovery {
            continue;
        }
        let gap = gap(&name, auth_refused);
        let folder = name.split('/').next().unwrap_or_default();
        let outcome = crate::srv::check_discovery(folder, &case).await;
        match (outcome, gap) {
            (Ok(()), None) => discovery_run += 1,
            (Ok(()), Some(_)) => failures.push(format!(
                "{name}: listed in KNOWN_GAPS but passes; remove it"
            )),
            (Err(_), Some(_)) => gaps += 1,
            (Err(why), None) => failures.push(format!("{name} (discovery): {why}")),
        }
    }
    for gap in KNOWN_GAPS
        .iter()
        .map(|(gap, _)| *gap)
        .chain(AUTH_GAPS.iter().copied())
    {
        if !files.iter().any(|f| f.ends_with(gap)) {
            failures.push(format!("KNOWN_GAPS names {gap}, which is no case"));
        }
    }
    eprintln!(
        "initial-dns-seedlist-discovery: {} cases; seeds/options/errors checked and passed: \
         {resolved_ok}; discovery (hosts, ping) run and passed: {discovery_run}; known gaps: \
         {gaps}",
        files.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
