//! `mongodb+srv://`: the MongoDB "Initial DNS Seedlist Discovery" and "Polling SRV Records
//! for mongos Discovery" specifications.
//!
//! At connect, the one host of a `mongodb+srv://cluster.example.com` URI is looked up as
//! the SRV name `_{srvServiceName}._tcp.cluster.example.com` (the seeds) and as a TXT name
//! (default options). Each target must lie inside the URI host's `{domainname}` (the host
//! less its first label when it has three labels or more, the whole host otherwise, in
//! which case a target needs at least one more label); `srvMaxHosts` picks that many
//! seeds at random (Fisher-Yates); at most one TXT record is allowed, its strings
//! concatenated, and it may only set `authSource`, `replicaSet` and `loadBalanced`, which
//! the URI's own options override; TLS is on unless the URI says `tls=false`.
//!
//! While the deployment is Sharded or still Unknown (and not behind a load balancer), the
//! SRV name is looked up again every `rescanSRVIntervalMS`: the lowest TTL of the last
//! answer, never below 60 seconds (or [`Resolver::min_rescan_interval`]), and
//! `heartbeatFrequencyMS` after a failed or empty lookup. Hosts gone from the answer
//! leave the topology; new ones join it as Unknown (up to `srvMaxHosts`). A failed
//! rescan changes nothing.
//!
//! The lookups go through a [`Resolver`]: the system's (`/etc/resolv.conf`, with
//! hickory-resolver, behind the default-on `srv` cargo feature), or one set in code on
//! [`ClientOptions::dns_resolver`] (tests use a double serving a fixed zone). Without the
//! feature and without a resolver set in code, a `mongodb+srv://` URI is refused at
//! connect with an error naming the feature.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use brook_conn::ServerAddress;
use tracing::{debug, warn};

use crate::error::{Error, ErrorKind};
use crate::exec::Topology;
use crate::options::{ClientOptions, Credential, Host};

/// The default `srvServiceName`.
pub const DEFAULT_SERVICE_NAME: &str = "mongodb";

/// The lowest rescan interval the polling specification allows (60 s).
pub const MIN_RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// The default `heartbeatFrequencyMS`: the rescan interval after a failed rescan.
const DEFAULT_HEARTBEAT_FREQUENCY: Duration = Duration::from_secs(10);

/// The options a TXT record may set (lowercased).
const TXT_OPTIONS: &[&str] = &["authsource", "replicaset", "loadbalanced"];

/// One SRV record: where a server listens. Priority and weight are not kept (the spec
/// says to ignore them).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrvRecord {
    /// The target host name (a trailing `.` is allowed).
    pub target: String,
    /// The port.
    pub port: u16,
    /// The record's time to live, when the resolver knows it.
    pub ttl: Option<Duration>,
}

impl SrvRecord {
    /// A record for `target:port`, without a TTL.
    pub fn new(target: impl Into<String>, port: u16) -> SrvRecord {
        SrvRecord {
            target: target.into(),
            port,
            ttl: None,
        }
    }

    /// The same record with a time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> SrvRecord {
        self.ttl = Some(ttl);
        self
    }
}

/// The future a [`Resolver`] returns.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// DNS lookups for `mongodb+srv://`: the system's (see [`DnsResolver::system`]) or a
/// double in tests.
pub trait Resolver: Send + Sync + 'static {
    /// The SRV records of `name` (e.g. `_mongodb._tcp.cluster.example.com`). A name
    /// without records may answer `Ok` with none or an error: both fail a connect.
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>>;

    /// The TXT records of `name`, each as its character strings concatenated in order.
    /// A name without TXT records answers `Ok` with none.
    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>>;

    /// The floor of the SRV polling interval: [`MIN_RESCAN_INTERVAL`] as the spec says.
    /// A test double may lower it to watch polling in milliseconds.
    fn min_rescan_interval(&self) -> Duration {
        MIN_RESCAN_INTERVAL
    }
}

/// A shared [`Resolver`], as [`ClientOptions::dns_resolver`] holds it.
#[derive(Clone)]
pub struct DnsResolver(Arc<dyn Resolver>);

impl DnsResolver {
    /// Wraps `resolver`.
    pub fn new(resolver: impl Resolver) -> DnsResolver {
        DnsResolver(Arc::new(resolver))
    }

    /// The operating system's resolver configuration (`/etc/resolv.conf` on Unix), with
    /// hickory-resolver.
    #[cfg(feature = "srv")]
    pub fn system() -> Result<DnsResolver, Error> {
        let resolver = hickory_resolver::TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| {
                Error::new(ErrorKind::ServerSelection {
                    message: format!("cannot read the system's DNS configuration: {e}"),
                    timed_out: false,
                })
            })?;
        Ok(DnsResolver::new(SystemResolver(resolver)))
    }

    fn get(&self) -> &dyn Resolver {
        &*self.0
    }
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DnsResolver")
    }
}

impl PartialEq for DnsResolver {
    /// Two handles are equal when they are clones of one another.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// hickory-resolver with the system's configuration.
#[cfg(feature = "srv")]
struct SystemResolver(hickory_resolver::TokioResolver);

#[cfg(feature = "srv")]
impl Resolver for SystemResolver {
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        use hickory_resolver::proto::rr::RData;
        Box::pin(async move {
            // A fully qualified name: no search-domain guesses.
            let lookup = self
                .0
                .srv_lookup(format!("{}.", name.trim_end_matches('.')))
                .await
                .map_err(io::Error::other)?;
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        target: srv.target.to_ascii(),
                        port: srv.port,
                        ttl: Some(Duration::from_secs(u64::from(record.ttl))),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        use hickory_resolver::proto::rr::RData;
        Box::pin(async move {
            let lookup = match self
                .0
                .txt_lookup(format!("{}.", name.trim_end_matches('.')))
                .await
            {
                Ok(lookup) => lookup,
                Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
                Err(e) => return Err(io::Error::other(e)),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }
}

/// What resolving a `mongodb+srv://` URI gave.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Resolved {
    /// The options to connect with: `hosts` holds the seeds, the TXT record's options
    /// are merged in (the URI's win), `tls` is on unless the URI turned it off. `srv`
    /// stays true.
    pub options: ClientOptions,
    /// The URI's host: the name polled for mongos discovery.
    pub srv_host: String,
    /// The lowest TTL of the SRV records, when the resolver gave them.
    pub ttl: Option<Duration>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUri {
        message: message.into(),
    })
}

fn lookup_failed(message: String) -> Error {
    Error::new(ErrorKind::ServerSelection {
        message,
        timed_out: false,
    })
}

/// The `{domainname}` of an SRV host: the host less its first label when it has three
/// labels or more, else the whole host.
fn domain_name(srv_host: &str) -> &str {
    if srv_host.split('.').count() >= 3 {
        srv_host
            .split_once('.')
            .map_or(srv_host, |(_, domain)| domain)
    } else {
        srv_host
    }
}

/// Whether `target` lies inside the `{domainname}` of `srv_host` (both lowercase, no
/// trailing dot). With fewer than three labels in the SRV host, the target must have at
/// least one more label, which "ends with `.{domainname}`" also says.
fn in_domain(srv_host: &str, target: &str) -> bool {
    let domain = domain_name(srv_host);
    target
        .strip_suffix(domain)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The SRV name looked up for `srv_host`.
fn srv_name(options: &ClientOptions, srv_host: &str) -> String {
    let service = options
        .srv_service_name
        .as_deref()
        .unwrap_or(DEFAULT_SERVICE_NAME);
    format!("_{service}._tcp.{srv_host}")
}

/// A random index below `n` (not cryptographic: spreads clients over the mongoses).
fn random_below(state: &mut u64, n: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    usize::try_from(*state % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Keeps `max` of `items` chosen at random (a partial Fisher-Yates shuffle); all of them
/// when `max` is 0 or not below their number.
fn choose<T>(mut items: Vec<T>, max: usize) -> Vec<T> {
    if max == 0 || max >= items.len() {
        return items;
    }
    let mut state = RandomState::new().hash_one(items.len()) | 1;
    for i in 0..max {
        let j = i + random_below(&mut state, items.len() - i);
        items.swap(i, j);
    }
    items.truncate(max);
    items
}

/// The TXT record's options, checked: only `authSource`, `replicaSet` and
/// `loadBalanced`, each well formed (`key=value`).
fn txt_options(srv_host: &str, txt: &str) -> Result<ClientOptions, Error> {
    for pair in txt.split('&').filter(|p| !p.is_empty()) {
        let Some((key, _)) = pair.split_once('=') else {
            return Err(invalid(format!(
                "the TXT record of {srv_host} holds `{pair}`, which is not `key=value`"
            )));
        };
        if !TXT_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "the TXT record of {srv_host} sets `{key}`: only authSource, replicaSet and \
                 loadBalanced may be set there"
            )));
        }
    }
    ClientOptions::parse(&format!("mongodb://txt.invalid/?{txt}")).map_err(|e| {
        invalid(format!(
            "the TXT record of {srv_host} is not valid options: {e}"
        ))
    })
}

/// Looks up the SRV records of `srv_host` and keeps the targets inside its domain.
/// `strict`: a target outside it is an error (initial discovery) rather than skipped
/// with a warning (polling).
async fn lookup_hosts(
    resolver: &dyn Resolver,
    options: &ClientOptions,
    srv_host: &str,
    strict: bool,
) -> Result<(Vec<ServerAddress>, Option<Duration>), Error> {
    let name = srv_name(options, srv_host);
    let records = resolver
        .srv(&name)
        .await
        .map_err(|e| lookup_failed(format!("the SRV lookup of {name} failed: {e}")))?;
    if records.is_empty() {
        return Err(lookup_failed(format!(
            "the SRV lookup of {name} found no records"
        )));
    }
    let ttl = records.iter().filter_map(|r| r.ttl).min();
    let mut hosts: Vec<ServerAddress> = Vec::with_capacity(records.len());
    for record in records {
        let target = normalize(&record.target);
        if !in_domain(srv_host, &target) {
            let message = format!(
                "the SRV record {name} points to {target}, outside the domain {}",
                domain_name(srv_host)
            );
            if strict {
                return Err(invalid(message));
            }
            warn!(target: "brook::srv", "{message}; ignored");
            continue;
        }
        let address = ServerAddress::new(target, record.port);
        if !hosts.contains(&address) {
            hosts.push(address);
        }
    }
    if hosts.is_empty() {
        return Err(lookup_failed(format!(
            "the SRV lookup of {name} found no host inside {}",
            domain_name(srv_host)
        )));
    }
    Ok((hosts, ttl))
}

/// Resolves a `mongodb+srv://` URI's options with `resolver`: the seeds from the SRV
/// records (each checked against the parent domain, `srvMaxHosts` of them at random),
/// the TXT record's options merged in, TLS on by default, and the URI option rules
/// checked again on the result (`srvMaxHosts` with `replicaSet` or `loadBalanced`,
/// `loadBalanced` with several hosts or `replicaSet`).
///
/// Errors: `is_invalid_argument()` for a URI or records the specification rejects;
/// otherwise a failed or empty lookup.
pub async fn resolve(options: &ClientOptions, resolver: &dyn Resolver) -> Result<Resolved, Error> {
    let srv_host = match options.hosts.as_slice() {
        [Host::Tcp { host, port: None }] if options.srv => normalize(host),
        _ if !options.srv => {
            return Err(invalid("not a mongodb+srv:// connection string"));
        }
        [Host::Tcp { .. }] => return Err(invalid("a mongodb+srv:// host must not have a port")),
        _ => return Err(invalid("mongodb+srv:// takes exactly one host name")),
    };
    if options.direct_connection == Some(true) {
        return Err(invalid(
            "directConnection=true is not allowed with mongodb+srv://",
        ));
    }
    let (hosts, ttl) = lookup_hosts(resolver, options, &srv_host, true).await?;
    let txt = resolver
        .txt(&srv_host)
        .await
        .map_err(|e| lookup_failed(format!("the TXT lookup of {srv_host} failed: {e}")))?;
    let mut merged = options.clone();
    match txt.as_slice() {
        [] => {}
        [record] => {
            let defaults = txt_options(&srv_host, record)?;
            if merged.replica_set.is_none() {
                merged.replica_set = defaults.replica_set;
            }
            if merged.load_balanced.is_none() {
                merged.load_balanced = defaults.load_balanced;
            }
            if let Some(source) = defaults.credential.and_then(|c| c.source) {
                let credential = merged.credential.get_or_insert_with(|| Credential {
                    username: None,
                    password: None,
                    source: None,
                    mechanism: None,
                    mechanism_properties: Default::default(),
                });
                if credential.source.is_none() {
                    credential.source = Some(source);
                }
            }
            merged.warnings.extend(defaults.warnings);
        }
        _ => {
            return Err(invalid(format!(
                "{srv_host} has {} TXT records; at most one is allowed",
                txt.len()
            )));
        }
    }
    if merged.tls.is_none() {
        merged.tls = Some(true);
    }
    let max_hosts = merged.srv_max_hosts.unwrap_or(0);
    let load_balanced = merged.load_balanced == Some(true);
    if max_hosts > 0 && merged.replica_set.is_some() {
        return Err(invalid(
            "srvMaxHosts > 0 cannot be combined with replicaSet",
        ));
    }
    if load_balanced {
        if max_hosts > 0 {
            return Err(invalid(
                "srvMaxHosts > 0 cannot be combined with loadBalanced=true",
            ));
        }
        if merged.replica_set.is_some() {
            return Err(invalid(
                "loadBalanced=true cannot be combined with replicaSet",
            ));
        }
        if hosts.len() > 1 {
            return Err(invalid(format!(
                "loadBalanced=true requires exactly one host, and the SRV records of {srv_host} \
                 name {}",
                hosts.len()
            )));
        }
    }
    let seeds = choose(hosts, usize::try_from(max_hosts).unwrap_or(usize::MAX));
    merged.hosts = seeds
        .into_iter()
        .map(|a| Host::Tcp {
            host: a.host,
            port: Some(a.port),
        })
        .collect();
    Ok(Resolved {
        options: merged,
        srv_host,
        ttl,
    })
}

/// The resolver to use: the one set in code, else the system's (with the `srv`
/// feature).
fn resolver_for(options: &ClientOptions) -> Result<DnsResolver, Error> {
    if let Some(resolver) = &options.dns_resolver {
        return Ok(resolver.clone());
    }
    #[cfg(feature = "srv")]
    {
        DnsResolver::system()
    }
    #[cfg(not(feature = "srv"))]
    {
        Err(Error::unsupported(
            "mongodb+srv:// without brook's `srv` cargo feature (or a resolver set on \
             ClientOptions::dns_resolver)",
        ))
    }
}

/// The connect hook: for a `mongodb+srv://` URI, resolves the seeds and options (bounded
/// by `connectTimeoutMS` and `serverSelectionTimeoutMS`) and returns the poller to start
/// once the topology exists; other options come back unchanged.
pub(crate) async fn prepare(
    options: ClientOptions,
    default_selection_timeout: Duration,
) -> Result<(ClientOptions, Option<Poller>), Error> {
    if !options.srv {
        return Ok((options, None));
    }
    let resolver = resolver_for(&options)?;
    let selection = options
        .server_selection_timeout
        .unwrap_or(default_selection_timeout);
    let bound = match options.connect_timeout {
        Some(connect) if connect.is_zero() => selection,
        Some(connect) => connect.min(selection),
        None => brook_conn::ConnectionOptions::default()
            .connect_timeout
            .min(selection),
    };
    let resolved = tokio::time::timeout(bound, resolve(&options, resolver.get()))
        .await
        .map_err(|_| {
            Error::new(ErrorKind::ServerSelection {
                message: format!(
                    "the DNS lookups for mongodb+srv:// did not answer within {bound:?}"
                ),
                timed_out: true,
            })
        })??;
    resolved.options.check_supported()?;
    let poller = (resolved.options.load_balanced != Some(true)).then(|| Poller {
        resolver,
        srv_host: resolved.srv_host.clone(),
        options: resolved.options.clone(),
        ttl: resolved.ttl,
    });
    debug!(
        target: "brook::srv",
        host = %resolved.srv_host,
        seeds = ?resolved.options.hosts,
        "mongodb+srv:// resolved"
    );
    Ok((resolved.options, poller))
}

/// SRV polling for mongos discovery: one task per client, holding the topology weakly.
#[derive(Debug)]
pub(crate) struct Poller {
    resolver: DnsResolver,
    srv_host: String,
    options: ClientOptions,
    ttl: Option<Duration>,
}

impl Poller {
    /// Starts rescanning in the background; the task ends with the topology (closed or
    /// dropped) or once the topology is neither Sharded nor Unknown.
    pub(crate) fn start(self, topology: &Arc<Topology>) {
        let topology = Arc::downgrade(topology);
        tokio::spawn(self.run(topology));
    }

    /// `rescanSRVIntervalMS` after a rescan that found hosts with these TTLs.
    fn interval(&self, ttl: Option<Duration>) -> Duration {
        let floor = self.resolver.get().min_rescan_interval();
        ttl.unwrap_or(floor).max(floor)
    }

    async fn run(self, topology: Weak<Topology>) {
        let heartbeat = self
            .options
            .heartbeat_frequency
            .unwrap_or(DEFAULT_HEARTBEAT_FREQUENCY);
        let max_hosts = usize::try_from(self.options.srv_max_hosts.unwrap_or(0)).unwrap_or(0);
        let mut interval = self.interval(self.ttl);
        loop {
            tokio::time::sleep(interval).await;
            match topology.upgrade() {
                Some(t) if t.srv_polling_allowed() => {}
                _ => return,
            }
            let lookup =
                lookup_hosts(self.resolver.get(), &self.options, &self.srv_host, false).await;
            let Some(t) = topology.upgrade() else {
                return;
            };
            match lookup {
                Ok((hosts, ttl)) => {
                    t.apply_srv_hosts(&hosts, max_hosts);
                    interval = self.interval(ttl);
                }
                Err(e) => {
                    warn!(
                        target: "brook::srv",
                        host = %self.srv_host,
                        "SRV rescan found no hosts, the topology is unchanged: {e}"
                    );
                    interval = heartbeat;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_name_drops_the_first_label_from_three_labels_on() {
        assert_eq!(
            domain_name("test1.test.build.10gen.cc"),
            "test.build.10gen.cc"
        );
        assert_eq!(domain_name("hosts_34.example.com"), "example.com");
        assert_eq!(domain_name("mongo.local"), "mongo.local");
        assert_eq!(domain_name("localhost"), "localhost");
    }

    #[test]
    fn targets_must_lie_inside_the_domain() {
        // The spec README's prose tests 2, 3 and 4.
        for (host, target) in [
            ("localhost", "localhost.mongodb"),
            ("mongo.local", "test_1.evil.local"),
            ("blogs.mongodb.com", "blogs.evil.com"),
            ("localhost", "localhost"),
            ("mongo.local", "mongo.local"),
            ("localhost", "test_1.cluster_1localhost"),
            ("mongo.local", "test_1.my_hostmongo.local"),
            ("blogs.mongodb.com", "cluster.testmongodb.com"),
        ] {
            assert!(!in_domain(host, target), "{host} -> {target}");
        }
        for (host, target) in [
            ("localhost", "a.localhost"),
            ("mongo.local", "test_1.mongo.local"),
            ("blogs.mongodb.com", "blogs.mongodb.com"),
            ("blogs.mongodb.com", "a.b.mongodb.com"),
        ] {
            assert!(in_domain(host, target), "{host} -> {target}");
        }
    }

    #[test]
    fn choose_keeps_that_many_distinct_items() {
        for max in 0..6 {
            let chosen = choose((0..5).collect::<Vec<u32>>(), max);
            let want = if max == 0 { 5 } else { max.min(5) };
            assert_eq!(chosen.len(), want);
            let mut sorted = chosen.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), want);
        }
    }

    #[cfg(not(feature = "srv"))]
    #[tokio::test]
    async fn without_the_feature_srv_is_refused_naming_it() {
        let options = ClientOptions::parse("mongodb+srv://cluster.example.com/").unwrap();
        let err = prepare(options, Duration::from_secs(1)).await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(err.to_string().contains("`srv` cargo feature"), "{err}");
    }

    #[test]
    fn a_txt_record_sets_only_three_options() {
        assert!(txt_options("h", "replicaSet=a&authSource=b").is_ok());
        assert!(txt_options("h", "loadBalanced=true").is_ok());
        for bad in [
            "ssl=false",
            "socketTimeoutMS=5",
            "authSource",
            "replicaSet=a&w=1",
        ] {
            let err = txt_options("h", bad).unwrap_err();
            assert!(err.is_invalid_argument(), "{bad}: {err}");
        }
    }
}
