//! `mongodb+srv://` end to end with a resolver double ([`Zone`]) and the testkit's fake
//! servers: the discovery part of the seedlist spec cases, connect-time refusals, and SRV
//! polling for mongos discovery (hosts added and removed as the SRV answer changes).
//!
//! The testkit's servers listen on `127.0.0.1` at random ports, and no test may use the
//! network's DNS, so the spec's zone is adapted as its README asks ("replace
//! `test.build.10gen.cc` with your own domain name"): the domain becomes `0.0.1`, whose
//! target `localhost.0.0.1` is spelled `127.0.0.1` (an IP literal inside the domain, so
//! no address lookup is needed), and the zone's ports become the servers' ports.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::monitoring::{DescriptionEvent, EventHandler, SdamEvent};
use brook::srv::DnsResolver;
use brook::{Client, ClientOptions};
use brook_testkit::{FakeServer, ReplicaSet, ReplicaSetConfig, ServerConfig};
use bson::doc;
use serde_json::Value;

use crate::spec_srv::Zone;

/// The adapted domain: `localhost.<DOMAIN>` is `127.0.0.1`.
const DOMAIN: &str = "0.0.1";

/// The topology's server addresses as the SDAM events last described them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<BTreeSet<String>>>);

impl Seen {
    fn handler(&self) -> EventHandler<SdamEvent> {
        let seen = self.clone();
        EventHandler::new(move |e: &SdamEvent| {
            if let SdamEvent::Description(DescriptionEvent::TopologyDescriptionChanged {
                new,
                ..
            }) = e
            {
                *seen.0.lock().expect("lock") =
                    new.servers.keys().map(ToString::to_string).collect();
            }
        })
    }

    fn now(&self) -> BTreeSet<String> {
        self.0.lock().expect("lock").clone()
    }

    /// Waits (up to 10 s) until the addresses are `want`.
    async fn wait_for(&self, want: &BTreeSet<String>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.now() != *want {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("hosts {:?}, expected {want:?}", self.now()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The servers a spec folder's cases run against, and the zone's ports mapped to theirs.
struct Deployment {
    ports: Vec<(u16, u16)>,
    _set: Option<ReplicaSet>,
    _servers: Vec<FakeServer>,
}

impl Deployment {
    async fn for_folder(folder: &str) -> Result<Deployment, String> {
        let e = |e: brook_testkit::TestkitError| e.to_string();
        match folder {
            "replica-set" => {
                let set = ReplicaSet::start(ReplicaSetConfig::new("repl0"))
                    .await
                    .map_err(e)?;
                let ports = (0..3)
                    .map(|i| (27017 + i, set.member(usize::from(i)).port()))
                    .collect();
                Ok(Deployment {
                    ports,
                    _set: Some(set),
                    _servers: Vec::new(),
                })
            }
            "sharded" => {
                let mut servers = Vec::new();
                for _ in 0..2 {
                    servers.push(FakeServer::start(mongos()).await.map_err(e)?);
                }
                let ports = vec![(27017, servers[0].port()), (27018, servers[1].port())];
                Ok(Deployment {
                    ports,
                    _set: None,
                    _servers: servers,
                })
            }
            "load-balanced" => {
                let lb = FakeServer::start(ServerConfig::load_balancer(1))
                    .await
                    .map_err(e)?;
                Ok(Deployment {
                    ports: vec![(8000, lb.port())],
                    _set: None,
                    _servers: vec![lb],
                })
            }
            other => Err(format!("no deployment for {other}")),
        }
    }

    fn port(&self, zone_port: u16) -> u16 {
        self.ports
            .iter()
            .find(|(z, _)| *z == zone_port)
            .map_or(zone_port, |(_, real)| *real)
    }

    /// A `host:port` of the spec (`localhost:27017`, or `localhost.test.build.10gen.cc:
    /// 27017`) as the adapted deployment's address.
    fn address(&self, spec: &str) -> String {
        let port = spec
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(27017);
        format!("127.0.0.1:{}", self.port(port))
    }

    /// The spec zone with its domain and ports adapted.
    async fn zone(&self) -> Zone {
        let spec = Zone::spec();
        let adapted = Zone::default();
        for n in 1..=24 {
            for service in ["mongodb", "customname"] {
                let name = format!("_{service}._tcp.test{n}.test.build.10gen.cc");
                let Ok(records) = brook::srv::Resolver::srv(&spec, &name).await else {
                    continue;
                };
                let records: Vec<(String, u16)> = records
                    .iter()
                    .map(|r| {
                        let target = r.target.trim_end_matches('.');
                        let target = match target {
                            "localhost.test.build.10gen.cc" => "127.0.0.1".to_owned(),
                            other => other.replace("test.build.10gen.cc", DOMAIN),
                        };
                        (target, self.port(r.port))
                    })
                    .collect();
                let records: Vec<(&str, u16)> =
                    records.iter().map(|(t, p)| (t.as_str(), *p)).collect();
                adapted.set_srv(&format!("_{service}._tcp.test{n}.{DOMAIN}"), &records);
            }
            let name = format!("test{n}.test.build.10gen.cc");
            for txt in brook::srv::Resolver::txt(&spec, &name)
                .await
                .unwrap_or_default()
            {
                adapted.add_txt(&format!("test{n}.{DOMAIN}"), &[&txt]);
            }
        }
        adapted
    }
}

fn mongos() -> ServerConfig {
    ServerConfig::default().with_topology(brook_testkit::shapes::Topology::Mongos)
}

/// The discovery part of a seedlist spec case (`hosts`, `numHosts`, ping): connects with
/// the adapted zone to the testkit deployment of the case's folder (with `tls=false` set
/// in code: the testkit's servers speak plain TCP) and waits for the topology's hosts.
pub(crate) async fn check_discovery(folder: &str, case: &Value) -> Result<(), String> {
    let deployment = Deployment::for_folder(folder).await?;
    let uri = case
        .get("uri")
        .and_then(Value::as_str)
        .ok_or("no uri")?
        .to_ascii_lowercase()
        .replace("test.build.10gen.cc", DOMAIN);
    let mut options = ClientOptions::parse(&uri).map_err(|e| e.to_string())?;
    options.tls = Some(false);
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.heartbeat_frequency = Some(Duration::from_millis(500));
    options.dns_resolver = Some(DnsResolver::new(deployment.zone().await));
    let seen = Seen::default();
    options.sdam_event_handler = Some(seen.handler());
    let client = Client::with_options(options)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let outcome = async {
        if case.get("ping").and_then(Value::as_bool) != Some(false) {
            client
                .database("admin")
                .run_command(doc! { "ping": 1 })
                .await
                .map_err(|e| format!("ping: {e}"))?;
        }
        if let Some(hosts) = case.get("hosts").and_then(Value::as_array) {
            let want: BTreeSet<String> = hosts
                .iter()
                .filter_map(Value::as_str)
                .map(|h| deployment.address(h))
                .collect();
            seen.wait_for(&want).await?;
        }
        if let Some(n) = case.get("numHosts").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let got = seen.now();
            if got.len() as u64 != n {
                return Err(format!("{} hosts ({got:?}), expected {n}", got.len()));
            }
        }
        Ok(())
    }
    .await;
    client.shutdown().await;
    outcome
}

/// Opens a client on `mongodb+srv://test1.0.0.1/` polling every 100 ms.
async fn polled_client(zone: &Zone, query: &str) -> (Client, Seen) {
    let mut options =
        ClientOptions::parse(&format!("mongodb+srv://test1.{DOMAIN}/?tls=false{query}"))
            .expect("the URI parses");
    options.heartbeat_frequency = Some(Duration::from_millis(500));
    options.server_selection_timeout = Some(Duration::from_secs(5));
    let mut zone = zone.clone();
    zone.rescan_floor = Some(Duration::from_millis(100));
    options.dns_resolver = Some(DnsResolver::new(zone));
    let seen = Seen::default();
    options.sdam_event_handler = Some(seen.handler());
    let client = Client::with_options(options)
        .await
        .expect("the client finds a mongos");
    (client, seen)
}

async fn mongoses(n: usize) -> Vec<FakeServer> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(FakeServer::start(mongos()).await.expect("a fake mongos"));
    }
    servers
}

fn set_of(servers: &[&FakeServer]) -> BTreeSet<String> {
    servers.iter().map(|s| s.host_port()).collect()
}

fn publish(zone: &Zone, servers: &[&FakeServer]) {
    let records: Vec<(&str, u16)> = servers.iter().map(|s| ("127.0.0.1", s.port())).collect();
    zone.set_srv(&format!("_mongodb._tcp.test1.{DOMAIN}"), &records);
}

#[tokio::test]
async fn polling_adds_and_removes_mongoses() {
    let m = mongoses(3).await;
    let zone = Zone::default();
    publish(&zone, &[&m[0], &m[1]]);
    let (client, seen) = polled_client(&zone, "").await;
    seen.wait_for(&set_of(&[&m[0], &m[1]])).await.unwrap();
    // A record added: its host joins.
    publish(&zone, &[&m[0], &m[1], &m[2]]);
    seen.wait_for(&set_of(&[&m[0], &m[1], &m[2]]))
        .await
        .unwrap();
    // A record removed: its host leaves, the others stay.
    publish(&zone, &[&m[0], &m[2]]);
    seen.wait_for(&set_of(&[&m[0], &m[2]])).await.unwrap();
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("a mongos answers");
    // A failed lookup, an empty answer and a target outside the domain change nothing.
    *zone.srv_failure.lock().unwrap() = Some("SERVFAIL".into());
    tokio::time::sleep(Duration::from_millis(400)).await;
    *zone.srv_failure.lock().unwrap() = None;
    zone.set_srv(&format!("_mongodb._tcp.test1.{DOMAIN}"), &[]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    zone.set_srv(
        &format!("_mongodb._tcp.test1.{DOMAIN}"),
        &[("evil.example.com", m[1].port())],
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(seen.now(), set_of(&[&m[0], &m[2]]));
    client.shutdown().await;
}

#[tokio::test]
async fn polling_keeps_srv_max_hosts() {
    let m = mongoses(4).await;
    let zone = Zone::default();
    publish(&zone, &[&m[0], &m[1]]);
    let (client, seen) = polled_client(&zone, "&srvMaxHosts=2").await;
    seen.wait_for(&set_of(&[&m[0], &m[1]])).await.unwrap();
    // m[1] goes; of the two new ones, one joins (chosen at random) beside m[0].
    publish(&zone, &[&m[0], &m[2], &m[3]]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = seen.now();
        if now.len() == 2 && now.contains(&m[0].host_port()) && !now.contains(&m[1].host_port()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hosts {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.now().len(), 2, "never more than srvMaxHosts");
    client.shutdown().await;
}

#[tokio::test]
async fn a_replica_set_is_not_polled() {
    let set = ReplicaSet::start(ReplicaSetConfig::new("repl0"))
        .await
        .expect("a replica set");
    let zone = Zone::default();
    let name = format!("_mongodb._tcp.test1.{DOMAIN}");
    zone.set_srv(&name, &[("127.0.0.1", set.member(0).port())]);
    let (client, seen) = polled_client(&zone, "").await;
    let members: BTreeSet<String> = set.hosts().iter().cloned().collect();
    seen.wait_for(&members).await.unwrap();
    let queries = zone.srv_queries.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        zone.srv_queries.lock().unwrap().len(),
        queries,
        "no rescan once the topology is a replica set"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn lookups_that_fail_refuse_the_connect() {
    let zone = Zone::spec();
    for (uri, invalid) in [
        // No SRV record.
        ("mongodb+srv://test4.test.build.10gen.cc/", false),
        // A target outside the domain.
        ("mongodb+srv://test14.test.build.10gen.cc/", true),
        // Two TXT records.
        ("mongodb+srv://test6.test.build.10gen.cc/", true),
    ] {
        let mut options = ClientOptions::parse(uri).expect("the URI parses");
        options.dns_resolver = Some(DnsResolver::new(zone.clone()));
        let err = Client::with_options(options)
            .await
            .expect_err("the connect fails");
        assert_eq!(err.is_invalid_argument(), invalid, "{uri}: {err}");
    }
}

#[tokio::test]
async fn the_srv_service_name_is_looked_up() {
    let m = mongoses(1).await;
    let zone = Zone::default();
    zone.set_srv(
        &format!("_customname._tcp.test22.{DOMAIN}"),
        &[("127.0.0.1", m[0].port())],
    );
    let mut options = ClientOptions::parse(&format!(
        "mongodb+srv://test22.{DOMAIN}/?srvServiceName=customname&tls=false"
    ))
    .expect("the URI parses");
    options.dns_resolver = Some(DnsResolver::new(zone.clone()));
    let client = Client::with_options(options).await.expect("connects");
    assert_eq!(
        zone.srv_queries.lock().unwrap().first().map(String::as_str),
        Some("_customname._tcp.test22.0.0.1")
    );
    client.shutdown().await;
}

/// A resolver that never answers.
struct Silent;

impl brook::srv::Resolver for Silent {
    fn srv<'a>(&'a self, _: &'a str) -> brook::srv::DnsFuture<'a, Vec<brook::srv::SrvRecord>> {
        Box::pin(std::future::pending())
    }

    fn txt<'a>(&'a self, _: &'a str) -> brook::srv::DnsFuture<'a, Vec<String>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn the_lookups_are_bounded_by_connect_timeout() {
    let mut options = ClientOptions::parse(&format!(
        "mongodb+srv://test1.{DOMAIN}/?connectTimeoutMS=200&serverSelectionTimeoutMS=5000"
    ))
    .expect("the URI parses");
    options.dns_resolver = Some(DnsResolver::new(Silent));
    let started = std::time::Instant::now();
    let err = Client::with_options(options)
        .await
        .expect_err("no answer, no client");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
}

#[tokio::test]
async fn a_load_balanced_deployment_is_not_polled() {
    // The polling spec's prose test 9.
    let lb = FakeServer::start(ServerConfig::load_balancer(1))
        .await
        .expect("a fake load balancer");
    let mut zone = Zone::default();
    zone.rescan_floor = Some(Duration::from_millis(50));
    let name = format!("_mongodb._tcp.test3.{DOMAIN}");
    zone.set_srv(&name, &[("127.0.0.1", lb.port())]);
    let mut options = ClientOptions::parse(&format!(
        "mongodb+srv://test3.{DOMAIN}/?loadBalanced=true&tls=false"
    ))
    .expect("the URI parses");
    options.dns_resolver = Some(DnsResolver::new(zone.clone()));
    let client = Client::with_options(options).await.expect("connects");
    zone.set_srv(&name, &[("127.0.0.1", lb.port()), ("127.0.0.1", 1)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(zone.srv_queries.lock().unwrap().len(), 1, "looked up once");
    client.shutdown().await;
}
