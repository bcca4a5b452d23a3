//! Connection strings: `ClientOptions::parse` follows the MongoDB Connection String and
//! URI Options specifications.
//!
//! Parsing is the spec's business and nothing else: a URI the spec calls invalid is an
//! [`Error`](crate::Error) (`is_invalid_argument()`), and what the spec says to ignore with
//! a warning (an unknown key, a value of the wrong type or out of range, a repeated key) is
//! left out of the options and recorded in [`ClientOptions::warnings`].
//!
//! Connecting is stricter: [`Client::with_options`](crate::Client::with_options) refuses
//! options that carry warnings, and options brook parses but does not act on yet, so that
//! nothing in a connection string is silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// The port used when a host names none.
pub const DEFAULT_PORT: u16 = 27017;

/// One seed from the host list of a connection string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Host {
    /// A host name, an IPv4 address or an IP literal (stored without its brackets).
    Tcp {
        /// The host name or address, ASCII-lowercased.
        host: String,
        /// The port, if the URI gave one ([`DEFAULT_PORT`] otherwise).
        port: Option<u16>,
    },
    /// A Unix domain socket path (written percent-encoded in the URI). Parsed, but brook
    /// cannot connect to one yet.
    Unix {
        /// The decoded path.
        path: String,
    },
}

impl Host {
    /// The host name, address or socket path.
    pub fn host(&self) -> &str {
        match self {
            Host::Tcp { host, .. } => host,
            Host::Unix { path } => path,
        }
    }

    /// The port given in the URI, if any (always `None` for a Unix socket).
    pub fn port(&self) -> Option<u16> {
        match self {
            Host::Tcp { port, .. } => *port,
            Host::Unix { .. } => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp { host, port } => {
                let port = port.unwrap_or(DEFAULT_PORT);
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")
                } else {
                    write!(f, "{host}:{port}")
                }
            }
            Host::Unix { path } => f.write_str(path),
        }
    }
}

/// Credentials from the userinfo part of a URI and the auth options, as written
/// ([`ClientOptions::auth_credential`] resolves the defaults). brook authenticates with
/// SCRAM-SHA-256, SCRAM-SHA-1, MONGODB-X509 and PLAIN; GSSAPI, MONGODB-AWS and
/// MONGODB-OIDC are refused at connect.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credential {
    /// The percent-decoded user name.
    pub username: Option<String>,
    /// The percent-decoded password (`Some("")` for `user:@host`).
    pub password: Option<String>,
    /// `authSource`, if given.
    pub source: Option<String>,
    /// `authMechanism`, if given, in its canonical spelling.
    pub mechanism: Option<String>,
    /// `authMechanismProperties`.
    pub mechanism_properties: BTreeMap<String, String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("source", &self.source)
            .field("mechanism", &self.mechanism)
            .field("mechanism_properties", &self.mechanism_properties)
            .finish()
    }
}

/// The `w` of a write concern.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acknowledgment {
    /// `w: <n>`: that many members.
    Nodes(u32),
    /// `w: "majority"`.
    Majority,
    /// A custom tag set name.
    Custom(String),
}

pub use brook_topology::{ReadPreference, ReadPreferenceMode, TagSet};

/// The mode named `s` (the URI's spelling, any case).
fn parse_read_preference_mode(s: &str) -> Option<ReadPreferenceMode> {
    [
        ReadPreferenceMode::Primary,
        ReadPreferenceMode::PrimaryPreferred,
        ReadPreferenceMode::Secondary,
        ReadPreferenceMode::SecondaryPreferred,
        ReadPreferenceMode::Nearest,
    ]
    .into_iter()
    .find(|m| m.name().eq_ignore_ascii_case(s))
}

/// `serverMonitoringMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMonitoringMode {
    /// `auto`.
    Auto,
    /// `stream`.
    Stream,
    /// `poll`.
    Poll,
}

impl ServerMonitoringMode {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerMonitoringMode::Auto => "auto",
            ServerMonitoringMode::Stream => "stream",
            ServerMonitoringMode::Poll => "poll",
        }
    }
}

/// Why a part of the URI was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriWarningKind {
    /// A key brook does not know.
    UnknownOption,
    /// A known key whose value has the wrong type or is out of range.
    InvalidValue,
    /// A key given more than once (the last value was kept).
    RepeatedOption,
}

/// Something the spec says to ignore with a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UriWarning {
    /// The option key as written in the URI.
    pub option: String,
    /// What kind of warning.
    pub kind: UriWarningKind,
    /// A human-readable explanation.
    pub message: String,
}

impl fmt::Display for UriWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option `{}`: {}", self.option, self.message)
    }
}

/// Options of a [`Client`](crate::Client), usually parsed from a connection string.
///
/// Fields marked *(not acted on yet)* are parsed and validated per the URI Options spec and
/// kept here, but brook does not implement their feature yet;
/// [`Client::with_options`](crate::Client::with_options) refuses them when set, naming the
/// option, rather than ignoring them.
#[derive(Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The seed list, in URI order.
    pub hosts: Vec<Host>,
    /// `mongodb+srv://`: the one host is looked up in DNS at connect (see [`crate::srv`]).
    pub srv: bool,
    /// Credentials as written in the URI (see [`ClientOptions::auth_credential`]).
    pub credential: Option<Credential>,
    /// The database in the URI's path.
    pub default_database: Option<String>,
    /// `appName`, sent in the handshake.
    pub app_name: Option<String>,
    /// `connectTimeoutMS` (`Some(ZERO)` = no timeout; default 10 s).
    pub connect_timeout: Option<Duration>,
    /// `socketTimeoutMS` (`Some(ZERO)` = no timeout, the default).
    pub socket_timeout: Option<Duration>,
    /// `serverSelectionTimeoutMS`: bounds the initial discovery (default 30 s).
    pub server_selection_timeout: Option<Duration>,
    /// `timeoutMS`: the client-side operation timeout (Client Side Operations Timeout
    /// specification) of every operation of the client, inherited by its databases and
    /// collections unless they set their own (`with_timeout`). One deadline computed when
    /// an operation starts bounds all of it: server selection, connection checkout, each
    /// command (which carries `maxTimeMS`), every retry. `Some(ZERO)` means no limit;
    /// `None` (the default) keeps the legacy timeouts (`socketTimeoutMS`,
    /// `waitQueueTimeoutMS`, `wTimeoutMS`, operations' `max_time`), which are ignored once
    /// `timeoutMS` is set at any level.
    pub timeout: Option<Duration>,
    /// `compressors`, in preference order (names known to the spec).
    pub compressors: Option<Vec<String>>,
    /// `zlibCompressionLevel` (-1 = zlib's default).
    pub zlib_compression_level: Option<i32>,
    /// `maxPoolSize` (0 = unlimited; default 100).
    pub max_pool_size: Option<u32>,
    /// `minPoolSize`: connections the pool keeps open, filled in the background (default 0).
    pub min_pool_size: Option<u32>,
    /// `maxIdleTimeMS`: idle connections older than this are closed (0 = no limit).
    pub max_idle_time: Option<Duration>,
    /// `maxConnecting`: connections the pool establishes at once (default 2).
    pub max_connecting: Option<u32>,
    /// `waitQueueTimeoutMS`: how long a checkout may wait for a free connection.
    pub wait_queue_timeout: Option<Duration>,
    /// `directConnection`.
    pub direct_connection: Option<bool>,
    /// `replicaSet`: the required set name of the servers found.
    pub replica_set: Option<String>,
    /// `loadBalanced`: the one host is a load balancer in front of mongoses.
    pub load_balanced: Option<bool>,
    /// `tls` / `ssl`.
    pub tls: Option<bool>,
    /// `tlsCAFile`.
    pub tls_ca_file: Option<String>,
    /// `tlsCertificateKeyFile`.
    pub tls_certificate_key_file: Option<String>,
    /// `tlsCertificateKeyFilePassword` (refused at connect: brook does not decrypt keys).
    pub tls_certificate_key_file_password: Option<String>,
    /// `tlsAllowInvalidCertificates`.
    pub tls_allow_invalid_certificates: Option<bool>,
    /// `tlsAllowInvalidHostnames`.
    pub tls_allow_invalid_hostnames: Option<bool>,
    /// `tlsInsecure` (both of the above).
    pub tls_insecure: Option<bool>,
    /// `tlsDisableOCSPEndpointCheck`: brook (rustls) never contacts OCSP responders, so
    /// `true` is accepted as what happens anyway and `false` is refused at connect.
    pub tls_disable_ocsp_endpoint_check: Option<bool>,
    /// `tlsDisableCertificateRevocationCheck`: brook checks no revocation (no OCSP, no
    /// CRL), so `true` is accepted as what happens anyway and `false` is refused at connect.
    pub tls_disable_certificate_revocation_check: Option<bool>,
    /// `readPreference` (not acted on yet unless `primary`: operations go to the primary).
    pub read_preference: Option<ReadPreferenceMode>,
    /// `readPreferenceTags`, one tag set per occurrence (not acted on yet).
    pub read_preference_tags: Option<Vec<BTreeMap<String, String>>>,
    /// `maxStalenessSeconds` (-1 = none; not acted on yet).
    pub max_staleness_seconds: Option<i64>,
    /// `readConcernLevel` (not acted on yet).
    pub read_concern_level: Option<String>,
    /// `w`: sent as the `writeConcern` of insert, update and delete.
    pub w: Option<Acknowledgment>,
    /// `wTimeoutMS`: the `wtimeout` of that write concern.
    pub w_timeout: Option<Duration>,
    /// `journal`: the `j` of that write concern.
    pub journal: Option<bool>,
    /// `retryWrites` (kept; brook does not retry yet, so any value is accepted).
    pub retry_writes: Option<bool>,
    /// `retryReads` (kept; brook does not retry yet, so any value is accepted).
    pub retry_reads: Option<bool>,
    /// `heartbeatFrequencyMS` (kept; no monitoring yet).
    pub heartbeat_frequency: Option<Duration>,
    /// `localThresholdMS` (kept; no latency-window selection yet).
    pub local_threshold: Option<Duration>,
    /// `serverMonitoringMode` (kept; no monitoring yet).
    pub server_monitoring_mode: Option<ServerMonitoringMode>,
    /// `serverSelectionTryOnce` (single-threaded drivers only; kept, ignored by design).
    pub server_selection_try_once: Option<bool>,
    /// `srvServiceName` (SRV only; default `mongodb`).
    pub srv_service_name: Option<String>,
    /// `srvMaxHosts` (SRV only; 0 = every host the SRV records name).
    pub srv_max_hosts: Option<u32>,
    /// `proxyHost` (not acted on yet).
    pub proxy_host: Option<String>,
    /// `proxyPort`.
    pub proxy_port: Option<u16>,
    /// `proxyUsername`.
    pub proxy_username: Option<String>,
    /// `proxyPassword`.
    pub proxy_password: Option<String>,
    /// `maxAdaptiveRetries` (not acted on yet).
    pub max_adaptive_retries: Option<u32>,
    /// `enableOverloadRetargeting` (not acted on yet).
    pub enable_overload_retargeting: Option<bool>,
    /// What the parse ignored, with the reason. `Client::with_options` refuses options
    /// whose list is not empty.
    pub warnings: Vec<UriWarning>,
    /// Called with every connection pool event (CMAP monitoring: pool created, ready,
    /// cleared, closed; connection created, ready, closed with its reason; checkout
    /// started, failed, checked out, checked in). Not from the connection string. The
    /// same events are emitted as `tracing` events with target `brook::pool`.
    pub cmap_event_handler: Option<crate::monitoring::EventHandler<crate::monitoring::CmapEvent>>,
    /// Called with every SDAM monitoring event (topology and server descriptions opening,
    /// changing and closing; heartbeats started, succeeded and failed). Not from the
    /// connection string. The same events are emitted as `tracing` events with target
    /// `brook::sdam`.
    pub sdam_event_handler: Option<crate::monitoring::EventHandler<crate::monitoring::SdamEvent>>,
    /// Called with every command monitoring event (command started, succeeded, failed:
    /// see [`CommandEvent`](crate::monitoring::CommandEvent)), security-sensitive
    /// commands and their replies redacted. Not from the connection string. Without it no
    /// event is built. Commands are also traced (target `brook::command`: a span per
    /// command, bodies at trace level, redacted and truncated).
    pub command_event_handler:
        Option<crate::monitoring::EventHandler<crate::monitoring::CommandEvent>>,
    /// The DNS resolver for `mongodb+srv://` (see [`crate::srv`]). Not from the
    /// connection string; `None` uses the system's (with the `srv` cargo feature).
    pub dns_resolver: Option<crate::srv::DnsResolver>,
}

impl fmt::Debug for ClientOptions {
    /// Every field, with the secrets (the password of the credential, of the TLS key
    /// file, of the proxy) shown as `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("hosts", &self.hosts)
            .field("srv", &self.srv)
            .field("credential", &self.credential)
            .field("default_database", &self.default_database)
            .field("app_name", &self.app_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("socket_timeout", &self.socket_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("timeout", &self.timeout)
            .field("compressors", &self.compressors)
            .field("zlib_compression_level", &self.zlib_compression_level)
            .field("max_pool_size", &self.max_pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("max_idle_time", &self.max_idle_time)
            .field("max_connecting", &self.max_connecting)
            .field("wait_queue_timeout", &self.wait_queue_timeout)
            .field("direct_connection", &self.direct_connection)
            .field("replica_set", &self.replica_set)
            .field("load_balanced", &self.load_balanced)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_certificate_key_file", &self.tls_certificate_key_file)
            .field(
                "tls_certificate_key_file_password",
                &self
                    .tls_certificate_key_file_password
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field(
                "tls_allow_invalid_certificates",
                &self.tls_allow_invalid_certificates,
            )
            .field(
                "tls_allow_invalid_hostnames",
                &self.tls_allow_invalid_hostnames,
            )
            .field("tls_insecure", &self.tls_insecure)
            .field(
                "tls_disable_ocsp_endpoint_check",
                &self.tls_disable_ocsp_endpoint_check,
            )
            .field(
                "tls_disable_certificate_revocation_check",
                &self.tls_disable_certificate_revocation_check,
            )
            .field("read_preference", &self.read_preference)
            .field("read_preference_tags", &self.read_preference_tags)
            .field("max_staleness_seconds", &self.max_staleness_seconds)
            .field("read_concern_level", &self.read_concern_level)
            .field("w", &self.w)
            .field("w_timeout", &self.w_timeout)
            .field("journal", &self.journal)
            .field("retry_writes", &self.retry_writes)
            .field("retry_reads", &self.retry_reads)
            .field("heartbeat_frequency", &self.heartbeat_frequency)
            .field("local_threshold", &self.local_threshold)
            .field("server_monitoring_mode", &self.server_monitoring_mode)
            .field("server_selection_try_once", &self.server_selection_try_once)
            .field("srv_service_name", &self.srv_service_name)
            .field("srv_max_hosts", &self.srv_max_hosts)
            .field("proxy_host", &self.proxy_host)
            .field("proxy_port", &self.proxy_port)
            .field("proxy_username", &self.proxy_username)
            .field(
                "proxy_password",
                &self.proxy_password.as_ref().map(|_| "<redacted>"),
            )
            .field("max_adaptive_retries", &self.max_adaptive_retries)
            .field(
                "enable_overload_retargeting",
                &self.enable_overload_retargeting,
            )
            .field("warnings", &self.warnings)
            .field("cmap_event_handler", &self.cmap_event_handler)
            .field("sdam_event_handler", &self.sdam_event_handler)
            .field("command_event_handler", &self.command_event_handler)
            .field("dns_resolver", &self.dns_resolver)
            .finish()
    }
}

const AUTH_MECHANISMS: &[&str] = &[
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "MONGODB-X509",
    "PLAIN",
    "GSSAPI",
    "MONGODB-AWS",
    "MONGODB-OIDC",
    "MONGODB-CR",
];
const COMPRESSORS: &[&str] = &["snappy", "zlib", "zstd", "noop"];

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUri {
        message: msg.into(),
    })
}

/// Percent-decode `s`; a `%` not followed by two hex digits is an error.
fn percent_decode(s: &str, what: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| -> Option<u8> {
                let c = *bytes.get(j)?;
                (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
            };
            match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    return Err(invalid(format!(
                        "{what} contains a `%` that is not a percent-encoding"
                    )));
                }
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{what} is not UTF-8 once decoded")))
}

fn parse_port(s: &str, host: &str) -> Result<u16, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("invalid port `{s}` for host `{host}`")));
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(invalid(format!(
            "port `{s}` for host `{host}` is out of range 1..=65535"
        ))),
    }
}

fn parse_host(raw: &str) -> Result<Host, Error> {
    if raw.is_empty() {
        return Err(invalid("empty host in the host list"));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| invalid(format!("unterminated IP literal `{raw}`")))?;
        let (lit, after) = rest.split_at(close);
        let after = after.get(1..).unwrap_or("");
        if lit.is_empty() {
            return Err(invalid("empty IP literal"));
        }
        let port = if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(parse_port(p, raw)?)
        } else {
            return Err(invalid(format!("unexpected text after IP literal `{raw}`")));
        };
        return Ok(Host::Tcp {
            host: lit.to_ascii_lowercase(),
            port,
        });
    }
    let decoded = percent_decode(raw, "a host")?;
    if decoded.contains('/') {
        // An encoded '/' marks a Unix domain socket path.
        return Ok(Host::Unix { path: decoded });
    }
    let (host, port) = match decoded.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p, &decoded)?)),
        None => (decoded.as_str(), None),
    };
    if host.is_empty() {
        return Err(invalid(format!("missing host name in `{raw}`")));
    }
    if host
        .chars()
        .any(|c| c == ':' || c == '@' || c == '?' || c == '#' || c.is_whitespace())
    {
        return Err(invalid(format!("invalid host `{host}`")));
    }
    Ok(Host::Tcp {
        host: host.to_lowercase(),
        port,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_int(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_kv_list(v: &str) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if v.is_empty() {
        return Some(map);
    }
    for item in v.split(',') {
        let (k, val) = item.split_once(':')?;
        if k.is_empty() {
            return None;
        }
        map.insert(k.to_string(), val.to_string());
    }
    Some(map)
}

/// The Authentication specification's rules for a credential's fields, per mechanism.
fn validate_credential(cred: &Credential, props_ignored: bool) -> Result<(), Error> {
    let mech = cred.mechanism.as_deref();
    let props = &cred.mechanism_properties;
    let source = cred.source.as_deref();
    let external_only = |name: &str| -> Result<(), Error> {
        match source {
            Some(s) if s != "$external" => Err(invalid(format!(
                "authMechanism {name} requires authSource $external"
            ))),
            _ => Ok(()),
        }
    };
    match mech {
        Some("GSSAPI") => {
            external_only("GSSAPI")?;
            if let Some(c) = props.get("CANONICALIZE_HOST_NAME")
                && !matches!(
                    c.as_str(),
                    "none" | "forward" | "forwardAndReverse" | "true" | "false"
                )
            {
                return Err(invalid(format!(
                    "CANONICALIZE_HOST_NAME `{c}` is not none, forward or forwardAndReverse"
                )));
            }
        }
        Some("MONGODB-X509") => {
            external_only("MONGODB-X509")?;
            if cred.password.is_some() {
                return Err(invalid("authMechanism MONGODB-X509 takes no password"));
            }
        }
        Some("MONGODB-AWS") => {
            external_only("MONGODB-AWS")?;
            if cred.username.is_some() != cred.password.is_some() {
                return Err(invalid(
                    "authMechanism MONGODB-AWS needs both a user name and a password, or neither",
                ));
            }
            if props.contains_key("AWS_SESSION_TOKEN") && cred.username.is_none() {
                return Err(invalid(
                    "AWS_SESSION_TOKEN needs a user name and password in the URI",
                ));
            }
        }
        Some("MONGODB-OIDC") => {
            external_only("MONGODB-OIDC")?;
            if cred.password.is_some() {
                return Err(invalid("authMechanism MONGODB-OIDC takes no password"));
            }
            if !props_ignored {
                if let Some(k) = props.keys().find(|k| {
                    !matches!(
                        k.as_str(),
                        "ENVIRONMENT" | "TOKEN_RESOURCE" | "ALLOWED_HOSTS"
                    )
                }) {
                    return Err(invalid(format!(
                        "unknown MONGODB-OIDC authMechanismProperties key `{k}`"
                    )));
                }
                match props.get("ENVIRONMENT").map(String::as_str) {
                    None => {
                        return Err(invalid(
                            "MONGODB-OIDC needs an ENVIRONMENT in authMechanismProperties",
                        ));
                    }
                    Some("test" | "k8s" | "gcp") if cred.username.is_some() => {
                        return Err(invalid("this MONGODB-OIDC ENVIRONMENT takes no user name"));
                    }
                    Some("azure" | "gcp") if !props.contains_key("TOKEN_RESOURCE") => {
                        return Err(invalid(
                            "this MONGODB-OIDC ENVIRONMENT needs a TOKEN_RESOURCE",
                        ));
                    }
                    Some("test" | "azure" | "gcp" | "k8s") => {}
                    Some(other) => {
                        return Err(invalid(format!(
                            "unknown MONGODB-OIDC ENVIRONMENT `{other}`"
                        )));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The state of one parse: options, warnings, and which keys were seen.
struct Parser {
    opts: ClientOptions,
    seen: BTreeMap<String, usize>,
}

impl Parser {
    fn warn(&mut self, key: &str, kind: UriWarningKind, message: impl Into<String>) {
        self.opts.warnings.push(UriWarning {
            option: key.to_string(),
            kind,
            message: message.into(),
        });
    }

    fn bool_opt(&mut self, key: &str, v: &str) -> Option<bool> {
        let b = parse_bool(v);
        if b.is_none() {
            self.warn(
                key,
                UriWarningKind::InvalidValue,
                format!("`{v}` is not `true` or `false`; ignored"),
            );
        }
        b
    }

    fn int_opt(&mut self, key: &str, v: &str, min: i64, max: i64) -> Option<i64> {
        match parse_int(v) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.warn(
                    key,
                    UriWarningKind::InvalidValue,
                    format!("{n} is outside {min}..={max}; ignored"),
                );
                None
            }
            None => {
                self.warn(
                    key,
                    UriWarningKind::InvalidValue,
                    format!("`{v}` is not an integer; ignored"),
                );
                None
            }
        }
    }

    fn ms_opt(&mut self, key: &str, v: &str, min: i64) -> Option<Duration> {
        self.int_opt(key, v, min, i64::from(i32::MAX))
            .and_then(|n| u64::try_from(n).ok())
            .map(Duration::from_millis)
    }

    fn u32_opt(&mut self, key: &str, v: &str, min: i64) -> Option<u32> {
        self.int_opt(key, v, min, i64::from(i32::MAX))
            .and_then(|n| u32::try_from(n).ok())
    }

    /// Apply one `key=value` pair (key already lowercased, both decoded).
    fn apply(&mut self, key: &str, orig_key: &str, v: &str) -> Result<(), Error> {
        let count = self.seen.entry(key.to_string()).or_insert(0);
        *count += 1;
        let repeated = *count > 1;
        if repeated {
            if key.starts_with("proxy") {
                return Err(invalid(format!(
                    "option `{orig_key}` is given more than once"
                )));
            }
            if key != "readpreferencetags" {
                self.warn(
                    orig_key,
                    UriWarningKind::RepeatedOption,
                    "given more than once; the last value is used",
                );
            }
        }
        if v.is_empty() && key == "authsource" {
            return Err(invalid("authSource must not be empty"));
        }
        if v.is_empty() && key != "readpreferencetags" {
            self.warn(
                orig_key,
                UriWarningKind::InvalidValue,
                "empty value; ignored",
            );
            return Ok(());
        }
        let o = orig_key;
        match key {
            "appname" => self.opts.app_name = Some(v.to_string()),
            "authmechanism" => {
                let m = AUTH_MECHANISMS
                    .iter()
                    .find(|m| m.eq_ignore_ascii_case(v))
                    .ok_or_else(|| invalid(format!("unknown authMechanism `{v}`")))?;
                self.cred().mechanism = Some((*m).to_string());
            }
            "authmechanismproperties" => match parse_kv_list(v) {
                Some(map) => self.cred().mechanism_properties = map,
                None => self.warn(
                    o,
                    UriWarningKind::InvalidValue,
                    "expected `KEY:value` pairs separated by commas; ignored",
                ),
            },
            "authsource" => self.cred().source = Some(v.to_string()),
            "compressors" => {
                let mut list = Vec::new();
                for name in v.split(',') {
                    if let Some(c) = COMPRESSORS.iter().find(|c| c.eq_ignore_ascii_case(name)) {
                        list.push((*c).to_string());
                    } else {
                        self.warn(
                            o,
                            UriWarningKind::InvalidValue,
                            format!("unknown compressor `{name}`; ignored"),
                        );
                    }
                }
                self.opts.compressors = Some(list);
            }
            "zlibcompressionlevel" => {
                self.opts.zlib_compression_level = self
                    .int_opt(o, v, -1, 9)
                    .and_then(|n| i32::try_from(n).ok());
            }
            "connecttimeoutms" => self.opts.connect_timeout = self.ms_opt(o, v, 0),
            "sockettimeoutms" => self.opts.socket_timeout = self.ms_opt(o, v, 0),
            "serverselectiontimeoutms" => self.opts.server_selection_timeout = self.ms_opt(o, v, 1),
            "timeoutms" => self.opts.timeout = self.ms_opt(o, v, 0),
            "maxpoolsize" => self.opts.max_pool_size = self.u32_opt(o, v, 0),
            "minpoolsize" => self.opts.min_pool_size = self.u32_opt(o, v, 0),
            "maxidletimems" => self.opts.max_idle_time = self.ms_opt(o, v, 0),
            "maxconnecting" => self.opts.max_connecting = self.u32_opt(o, v, 1),
            "waitqueuetimeoutms" => self.opts.wait_queue_timeout = self.ms_opt(o, v, 1),
            "directconnection" => self.opts.direct_connection = self.bool_opt(o, v),
            "replicaset" => self.opts.replica_set = Some(v.to_string()),
            "loadbalanced" => self.opts.load_balanced = self.bool_opt(o, v),
            "tls" | "ssl" => {
                if let Some(b) = self.bool_opt(o, v) {
                    if self.opts.tls.is_some_and(|prev| prev != b) {
                        return Err(invalid("`tls` and `ssl` disagree"));
                    }
                    self.opts.tls = Some(b);
                }
            }
            "tlscafile" => self.opts.tls_ca_file = Some(v.to_string()),
            "tlscertificatekeyfile" => self.opts.tls_certificate_key_file = Some(v.to_string()),
            "tlscertificatekeyfilepassword" => {
                self.opts.tls_certificate_key_file_password = Some(v.to_string())
            }
            "tlsallowinvalidcertificates" => {
                self.opts.tls_allow_invalid_certificates = self.bool_opt(o, v)
            }
            "tlsallowinvalidhostnames" => {
                self.opts.tls_allow_invalid_hostnames = self.bool_opt(o, v)
            }
            "tlsinsecure" => self.opts.tls_insecure = self.bool_opt(o, v),
            "tlsdisableocspendpointcheck" => {
                self.opts.tls_disable_ocsp_endpoint_check = self.bool_opt(o, v)
            }
            "tlsdisablecertificaterevocationcheck" => {
                self.opts.tls_disable_certificate_revocation_check = self.bool_opt(o, v)
            }
            "readpreference" => match parse_read_preference_mode(v) {
                Some(m) => self.opts.read_preference = Some(m),
                None => self.warn(
                    o,
                    UriWarningKind::InvalidValue,
                    format!("unknown read preference `{v}`; ignored"),
                ),
            },
            "readpreferencetags" => match parse_kv_list(v) {
                Some(tags) => self
                    .opts
                    .read_preference_tags
                    .get_or_insert_with(Vec::new)
                    .push(tags),
                None => self.warn(
                    o,
                    UriWarningKind::InvalidValue,
                    "expected `tag:value` pairs separated by commas; ignored",
                ),
            },
            "maxstalenessseconds" => {
                self.opts.max_staleness_seconds = self.int_opt(o, v, -1, i64::from(i32::MAX))
            }
            "readconcernlevel" => self.opts.read_concern_level = Some(v.to_string()),
            "w" => {
                self.opts.w = match parse_int(v) {
                    Some(n) => match u32::try_from(n) {
                        Ok(n) => Some(Acknowledgment::Nodes(n)),
                        Err(_) => {
                            self.warn(o, UriWarningKind::InvalidValue, "negative `w`; ignored");
                            None
                        }
                    },
                    None if v == "majority" => Some(Acknowledgment::Majority),
                    None => Some(Acknowledgment::Custom(v.to_string())),
                }
            }
            "wtimeoutms" => self.opts.w_timeout = self.ms_opt(o, v, 0),
            "journal" => self.opts.journal = self.bool_opt(o, v),
            "retrywrites" => self.opts.retry_writes = self.bool_opt(o, v),
            "retryreads" => self.opts.retry_reads = self.bool_opt(o, v),
            "heartbeatfrequencyms" => self.opts.heartbeat_frequency = self.ms_opt(o, v, 500),
            "localthresholdms" => self.opts.local_threshold = self.ms_opt(o, v, 0),
            "servermonitoringmode" => {
                let mode = [
                    ServerMonitoringMode::Auto,
                    ServerMonitoringMode::Stream,
                    ServerMonitoringMode::Poll,
                ]
                .into_iter()
                .find(|m| m.as_str().eq_ignore_ascii_case(v));
                match mode {
                    Some(m) => self.opts.server_monitoring_mode = Some(m),
                    None => self.warn(
                        o,
                        UriWarningKind::InvalidValue,
                        format!("unknown serverMonitoringMode `{v}`; ignored"),
                    ),
                }
            }
            "serverselectiontryonce" => self.opts.server_selection_try_once = self.bool_opt(o, v),
            "srvservicename" => self.opts.srv_service_name = Some(v.to_string()),
            "srvmaxhosts" => self.opts.srv_max_hosts = self.u32_opt(o, v, 0),
            "proxyhost" => self.opts.proxy_host = Some(v.to_string()),
            "proxyport" => {
                self.opts.proxy_port = self
                    .int_opt(o, v, 0, 65535)
                    .and_then(|n| u16::try_from(n).ok())
            }
            "proxyusername" => self.opts.proxy_username = Some(v.to_string()),
            "proxypassword" => self.opts.proxy_password = Some(v.to_string()),
            "maxadaptiveretries" => self.opts.max_adaptive_retries = self.u32_opt(o, v, 0),
            "enableoverloadretargeting" => {
                self.opts.enable_overload_retargeting = self.bool_opt(o, v)
            }
            _ => self.warn(
                o,
                UriWarningKind::UnknownOption,
                "unknown option; ignored by the parse, refused by Client::with_options",
            ),
        }
        Ok(())
    }

    fn cred(&mut self) -> &mut Credential {
        self.opts.credential.get_or_insert_with(|| Credential {
            username: None,
            password: None,
            source: None,
            mechanism: None,
            mechanism_properties: BTreeMap::new(),
        })
    }

    /// Cross-option rules of the specs: conflicts are errors.
    fn validate(&mut self) -> Result<(), Error> {
        let o = &self.opts;
        let present = |k: &str| self.seen.contains_key(k);
        let tls_pairs: [(&str, &str, bool, bool); 6] = [
            (
                "tlsInsecure",
                "tlsAllowInvalidCertificates",
                o.tls_insecure.is_some(),
                o.tls_allow_invalid_certificates.is_some(),
            ),
            (
                "tlsInsecure",
                "tlsAllowInvalidHostnames",
                o.tls_insecure.is_some(),
                o.tls_allow_invalid_hostnames.is_some(),
            ),
            (
                "tlsInsecure",
                "tlsDisableOCSPEndpointCheck",
                o.tls_insecure.is_some(),
                o.tls_disable_ocsp_endpoint_check.is_some(),
            ),
            (
                "tlsInsecure",
                "tlsDisableCertificateRevocationCheck",
                o.tls_insecure.is_some(),
                o.tls_disable_certificate_revocation_check.is_some(),
            ),
            (
                "tlsAllowInvalidCertificates",
                "tlsDisableOCSPEndpointCheck",
                o.tls_allow_invalid_certificates.is_some(),
                o.tls_disable_ocsp_endpoint_check.is_some(),
            ),
            (
                "tlsAllowInvalidCertificates",
                "tlsDisableCertificateRevocationCheck",
                o.tls_allow_invalid_certificates.is_some(),
                o.tls_disable_certificate_revocation_check.is_some(),
            ),
        ];
        for (a, b, has_a, has_b) in tls_pairs {
            if has_a && has_b {
                return Err(invalid(format!("`{a}` and `{b}` cannot both be given")));
            }
        }
        if o.tls_disable_ocsp_endpoint_check.is_some()
            && o.tls_disable_certificate_revocation_check.is_some()
        {
            return Err(invalid(
                "`tlsDisableOCSPEndpointCheck` and `tlsDisableCertificateRevocationCheck` \
                 cannot both be given",
            ));
        }
        if o.direct_connection == Some(true) {
            if o.hosts.len() > 1 {
                return Err(invalid("directConnection=true requires exactly one host"));
            }
            if o.srv {
                return Err(invalid(
                    "directConnection=true is not allowed with mongodb+srv://",
                ));
            }
        }
        if o.load_balanced == Some(true) {
            if o.hosts.len() > 1 {
                return Err(invalid("loadBalanced=true requires exactly one host"));
            }
            if o.direct_connection == Some(true) {
                return Err(invalid(
                    "loadBalanced=true cannot be combined with directConnection=true",
                ));
            }
            if o.replica_set.is_some() {
                return Err(invalid(
                    "loadBalanced=true cannot be combined with replicaSet",
                ));
            }
        }
        if !o.srv && (present("srvservicename") || present("srvmaxhosts")) {
            return Err(invalid(
                "srvServiceName and srvMaxHosts are only allowed with mongodb+srv://",
            ));
        }
        if o.srv_max_hosts.is_some_and(|n| n > 0) {
            if o.replica_set.is_some() {
                return Err(invalid(
                    "srvMaxHosts > 0 cannot be combined with replicaSet",
                ));
            }
            if o.load_balanced == Some(true) {
                return Err(invalid(
                    "srvMaxHosts > 0 cannot be combined with loadBalanced=true",
                ));
            }
        }
        if o.proxy_host.is_none()
            && (present("proxyport") || present("proxyusername") || present("proxypassword"))
        {
            return Err(invalid(
                "proxyPort, proxyUsername and proxyPassword require proxyHost",
            ));
        }
        if o.proxy_username.is_some() != o.proxy_password.is_some() {
            return Err(invalid(
                "proxyUsername and proxyPassword must be given together",
            ));
        }
        if let (Some(min), Some(max)) = (o.min_pool_size, o.max_pool_size)
            && max != 0
            && min > max
        {
            return Err(invalid("minPoolSize is larger than maxPoolSize"));
        }
        if o.w == Some(Acknowledgment::Nodes(0)) && o.journal == Some(true) {
            return Err(invalid("w=0 cannot be combined with journal=true"));
        }
        if o.read_preference == Some(ReadPreferenceMode::Primary) {
            if o.read_preference_tags
                .as_ref()
                .is_some_and(|t| t.iter().any(|set| !set.is_empty()))
            {
                return Err(invalid(
                    "readPreferenceTags cannot be used with readPreference=primary",
                ));
            }
            if o.max_staleness_seconds.is_some_and(|s| s != -1) {
                return Err(invalid(
                    "maxStalenessSeconds cannot be used with readPreference=primary",
                ));
            }
        }
        if let Some(cred) = &o.credential {
            let needs_user = matches!(
                cred.mechanism.as_deref(),
                Some("SCRAM-SHA-1" | "SCRAM-SHA-256" | "PLAIN" | "GSSAPI" | "MONGODB-CR")
            );
            if needs_user && cred.username.is_none() {
                return Err(invalid(format!(
                    "authMechanism {} requires a user name",
                    cred.mechanism.as_deref().unwrap_or_default()
                )));
            }
            // authMechanismProperties that were ignored (with a warning) are not checked.
            let props_ignored = o
                .warnings
                .iter()
                .any(|w| w.option.eq_ignore_ascii_case("authMechanismProperties"));
            validate_credential(cred, props_ignored)?;
        }
        Ok(())
    }
}

impl ClientOptions {
    /// Parse a `mongodb://` (or `mongodb+srv://`) connection string.
    ///
    /// Errors (`is_invalid_argument()`) are what the spec calls an invalid URI; ignored
    /// parts are listed in [`warnings`](ClientOptions::warnings).
    pub fn parse(uri: &str) -> Result<ClientOptions, Error> {
        let (srv, rest) = if let Some(r) = uri.strip_prefix("mongodb://") {
            (false, r)
        } else if let Some(r) = uri.strip_prefix("mongodb+srv://") {
            (true, r)
        } else {
            return Err(invalid(
                "a connection string must start with `mongodb://` or `mongodb+srv://`",
            ));
        };
        // The host list ends at the first '/' or '?' (options may follow the hosts
        // without the delimiting '/').
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes().get(i) == Some(&b'/') => (&rest[..i], Some(&rest[i + 1..])),
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if hostlist.is_empty() {
            return Err(invalid("the connection string names no host"));
        }
        let mut p = Parser {
            opts: ClientOptions {
                srv,
                ..ClientOptions::default()
            },
            seen: BTreeMap::new(),
        };
        if let Some(info) = userinfo {
            if info.contains('@') {
                return Err(invalid("the user info contains an unescaped `@`"));
            }
            let (user, pass) = match info.split_once(':') {
                Some((u, pw)) => (u, Some(pw)),
                None => (info, None),
            };
            if pass.is_some_and(|pw| pw.contains(':')) {
                return Err(invalid("the password contains an unescaped `:`"));
            }
            if user.is_empty() {
                return Err(invalid("the user name is empty"));
            }
            let username = percent_decode(user, "the user name")?;
            let password = pass
                .map(|pw| percent_decode(pw, "the password"))
                .transpose()?;
            let cred = p.cred();
            cred.username = Some(username);
            cred.password = password;
        }
        for raw in hostlist.split(',') {
            p.opts.hosts.push(parse_host(raw)?);
        }
        if srv {
            match p.opts.hosts.as_slice() {
                [Host::Tcp { port: None, .. }] => {}
                [Host::Tcp { .. }] => {
                    return Err(invalid("a mongodb+srv:// host must not have a port"));
                }
                _ => {
                    return Err(invalid("mongodb+srv:// takes exactly one host name"));
                }
            }
        }
        if let Some(pq) = path_and_query {
            let (db, query) = match pq.find('?') {
                Some(i) => (&pq[..i], Some(&pq[i + 1..])),
                None => (pq, None),
            };
            if !db.is_empty() {
                let db = percent_decode(db, "the database name")?;
                if db
                    .chars()
                    .any(|c| matches!(c, '/' | '\\' | ' ' | '"' | '$'))
                    && db != "$external"
                {
                    return Err(invalid(format!("invalid database name `{db}`")));
                }
                p.opts.default_database = Some(db);
            }
            if let Some(q) = query {
                for pair in q.split('&') {
                    if pair.is_empty() {
                        continue;
                    }
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| invalid(format!("option `{pair}` has no `=`")))?;
                    if k.is_empty() {
                        return Err(invalid(format!("option `{pair}` has an empty key")));
                    }
                    let key = percent_decode(k, "an option key")?;
                    let value = percent_decode(v, "an option value")?;
                    let lower = key.to_ascii_lowercase();
                    p.apply(&lower, &key, &value)?;
                }
            }
        }
        p.validate()?;
        Ok(p.opts)
    }

    /// The credential to authenticate with, as the Authentication specification resolves
    /// it: `None` when the URI names no user and no mechanism (an `authSource` alone
    /// creates none); the source defaulted (`$external` for GSSAPI, MONGODB-X509,
    /// MONGODB-AWS and MONGODB-OIDC; else `authSource`, the URI's database, then `admin`
    /// — `$external` for PLAIN); GSSAPI's `SERVICE_NAME` defaulted to `mongodb`.
    pub fn auth_credential(&self) -> Option<Credential> {
        let cred = self.credential.as_ref()?;
        if cred.username.is_none() && cred.mechanism.is_none() {
            return None;
        }
        let external = matches!(
            cred.mechanism.as_deref(),
            Some("GSSAPI" | "MONGODB-X509" | "MONGODB-AWS" | "MONGODB-OIDC")
        );
        let source = if external {
            "$external".to_owned()
        } else {
            let fallback = if cred.mechanism.as_deref() == Some("PLAIN") {
                "$external"
            } else {
                "admin"
            };
            cred.source
                .clone()
                .or_else(|| self.default_database.clone())
                .unwrap_or_else(|| fallback.to_owned())
        };
        let mut mechanism_properties = cred.mechanism_properties.clone();
        if cred.mechanism.as_deref() == Some("GSSAPI") {
            mechanism_properties
                .entry("SERVICE_NAME".to_owned())
                .or_insert_with(|| "mongodb".to_owned());
        }
        Some(Credential {
            username: cred.username.clone(),
            password: cred.password.clone(),
            source: Some(source),
            mechanism: cred.mechanism.clone(),
            mechanism_properties,
        })
    }

    /// Whether the URI names credentials or auth options.
    pub fn has_credentials(&self) -> bool {
        self.credential.is_some()
    }

    /// The `writeConcern` document for write commands, when the URI set one.
    pub fn write_concern(&self) -> Option<bson::Document> {
        if self.w.is_none() && self.w_timeout.is_none() && self.journal.is_none() {
            return None;
        }
        let mut wc = bson::Document::new();
        match &self.w {
            Some(Acknowledgment::Nodes(n)) => {
                wc.insert("w", i64::from(*n));
            }
            Some(Acknowledgment::Majority) => {
                wc.insert("w", "majority");
            }
            Some(Acknowledgment::Custom(tag)) => {
                wc.insert("w", tag.as_str());
            }
            None => {}
        }
        if let Some(t) = self.w_timeout {
            wc.insert("wtimeout", i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        }
        if let Some(j) = self.journal {
            wc.insert("j", j);
        }
        Some(wc)
    }

    /// [`write_concern`](Self::write_concern) for a write under `timeoutMS` when
    /// `csot` is true: without `wtimeout` (Client Side Operations Timeout: `wTimeoutMS` is
    /// ignored once `timeoutMS` is set), `None` when nothing else is left.
    pub(crate) fn write_concern_for(&self, csot: bool) -> Option<bson::Document> {
        let mut wc = self.write_concern()?;
        if csot {
            wc.remove("wtimeout");
            if wc.is_empty() {
                return None;
            }
        }
        Some(wc)
    }

    /// The read preference the URI gives (`readPreference`, `readPreferenceTags`,
    /// `maxStalenessSeconds`; `-1` means no bound): the client's default for reads and
    /// change streams. Primary when the URI says nothing.
    pub fn effective_read_preference(&self) -> ReadPreference {
        let mut preference = ReadPreference::new(self.read_preference.unwrap_or_default());
        if let Some(tags) = &self.read_preference_tags {
            preference.tag_sets = tags.clone();
        }
        if let Some(seconds) = self
            .max_staleness_seconds
            .and_then(|s| u64::try_from(s).ok())
        {
            preference.max_staleness = Some(Duration::from_secs(seconds));
        }
        preference
    }

    /// Check that brook can honour every option that was set: no warnings, no features
    /// that are parsed but not implemented yet. `Client::with_options` calls this.
    pub fn check_supported(&self) -> Result<(), Error> {
        if let Some(w) = self.warnings.first() {
            let all: Vec<String> = self.warnings.iter().map(ToString::to_string).collect();
            return Err(Error::new(ErrorKind::InvalidUri {
                message: format!(
                    "brook does not ignore connection-string options it cannot honour \
                     (first: {w}); all warnings: {}",
                    all.join("; ")
                ),
            }));
        }
        let unsupported = |feature: &str| -> Result<(), Error> {
            Err(Error::new(ErrorKind::Unsupported {
                feature: feature.to_string(),
            }))
        };
        if let Some(m @ ("GSSAPI" | "MONGODB-AWS" | "MONGODB-OIDC" | "MONGODB-CR")) = self
            .credential
            .as_ref()
            .and_then(|c| c.mechanism.as_deref())
        {
            return unsupported(&format!(
                "authMechanism={m} (brook authenticates with SCRAM-SHA-256, SCRAM-SHA-1, \
                 MONGODB-X509 and PLAIN)"
            ));
        }
        if self.hosts.iter().any(|h| matches!(h, Host::Unix { .. })) {
            return unsupported("Unix domain socket hosts");
        }
        let checks: [(bool, &str); 6] = [
            (
                self.tls_certificate_key_file_password.is_some(),
                "tlsCertificateKeyFilePassword",
            ),
            // rustls checks no revocation (no OCSP, stapled or fetched; no CRL): `=true`
            // asks for what brook does anyway and is accepted; `=false` is refused.
            (
                self.tls_disable_ocsp_endpoint_check == Some(false),
                "tlsDisableOCSPEndpointCheck=false (brook never contacts OCSP responders)",
            ),
            (
                self.tls_disable_certificate_revocation_check == Some(false),
                "tlsDisableCertificateRevocationCheck=false (brook checks no revocation: \
                 no OCSP, no CRL)",
            ),
            (self.read_concern_level.is_some(), "readConcernLevel"),
            (self.proxy_host.is_some(), "SOCKS5 proxy options"),
            (
                self.max_adaptive_retries.is_some() || self.enable_overload_retargeting.is_some(),
                "maxAdaptiveRetries / enableOverloadRetargeting",
            ),
        ];
        for (set, name) in checks {
            if set {
                return unsupported(name);
            }
        }
        Ok(())
    }
}

/// How `timeoutMS` applies to a cursor (Client Side Operations Timeout, "Cursors"): set
/// with `timeout_mode` on [`FindBuilder`](crate::FindBuilder) and
/// [`AggregateBuilder`](crate::AggregateBuilder), which refuse it when no `timeoutMS`
/// applies to the operation.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimeoutMode {
    /// The default: one deadline covers the command that opens the cursor and every
    /// getMore after it (`find` at `T` with `timeoutMS` `t`: the cursor is done by
    /// `T + t`). Buffered documents are returned even after the deadline; only a
    /// getMore fails. The opening command carries `maxTimeMS`; getMores do not.
    #[default]
    CursorLifetime,
    /// The opening command gets `timeoutMS`, and so does each call that sends a getMore
    /// (a fresh deadline each); no command carries `maxTimeMS`. Refused for an
    /// aggregate with `$out` or `$merge`.
    Iteration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(uri: &str) -> Vec<String> {
        ClientOptions::parse(uri)
            .map(|o| o.hosts.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn parses_hosts_of_every_kind() {
        assert_eq!(
            hosts("mongodb://a.example.com,[::1]:27018,127.0.0.1:5"),
            ["a.example.com:27017", "[::1]:27018", "127.0.0.1:5"]
        );
        let o = ClientOptions::parse("mongodb://%2Ftmp%2Fm.sock,rel%2Fx.sock/db").unwrap();
        assert_eq!(
            o.hosts,
            [
                Host::Unix {
                    path: "/tmp/m.sock".into()
                },
                Host::Unix {
                    path: "rel/x.sock".into()
                }
            ]
        );
        assert_eq!(o.default_database.as_deref(), Some("db"));
        assert_eq!(hosts("mongodb://EXAMPLE.com"), ["example.com:27017"]);
    }

    #[test]
    fn rejects_malformed_uris() {
        for bad in [
            "",
            "mongo://x",
            "mongodb://",
            "mongodb://h::1",
            "mongodb://h:0",
            "mongodb://h:65536",
            "mongodb://[::1]:x",
            "mongodb://[::1",
            "mongodb://h/?w",
            "mongodb://a:b:c@h",
            "mongodb://a@@h",
            "mongodb://a%zz@h",
            "mongodb://u%20%:p@h",
            "mongodb://a/@h/db",
            "mongodb+srv://a,b",
            "mongodb+srv://a:1",
            "mongodb://h/?tls=true&ssl=false",
            "mongodb://h/?tlsInsecure=true&tlsAllowInvalidHostnames=false",
            "mongodb://a,b/?directConnection=true",
            "mongodb://a/?loadBalanced=true&replicaSet=x",
            "mongodb://a/?srvMaxHosts=1",
            "mongodb://a/?proxyPort=1",
            "mongodb://a/?authMechanism=NOPE",
            "mongodb://a/?authMechanism=PLAIN",
            "mongodb://a/?minPoolSize=5&maxPoolSize=2",
            "mongodb://a/?w=0&journal=true",
        ] {
            let err = ClientOptions::parse(bad).expect_err(bad);
            assert!(err.is_invalid_argument(), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let o =
            ClientOptions::parse("mongodb://%40l%3Ace:p%2Fw@h/my%3Ddb?authSource=admin").unwrap();
        let c = o.credential.clone().unwrap();
        assert_eq!(c.username.as_deref(), Some("@l:ce"));
        assert_eq!(c.password.as_deref(), Some("p/w"));
        assert_eq!(c.source.as_deref(), Some("admin"));
        assert_eq!(o.default_database.as_deref(), Some("my=db"));
        assert!(!format!("{c:?}").contains("p/w"), "Debug must redact");
        o.check_supported().unwrap();
        for (m, uri) in [
            ("GSSAPI", "mongodb://u@h/?authMechanism=GSSAPI"),
            ("MONGODB-AWS", "mongodb://h/?authMechanism=MONGODB-AWS"),
            (
                "MONGODB-OIDC",
                "mongodb://h/?authMechanism=MONGODB-OIDC&authMechanismProperties=ENVIRONMENT:k8s",
            ),
        ] {
            let err = ClientOptions::parse(uri)
                .unwrap()
                .check_supported()
                .unwrap_err();
            assert!(err.to_string().contains(m), "{err}");
        }
    }

    #[test]
    fn options_are_case_insensitive_and_typed() {
        let o = ClientOptions::parse(
            "mongodb://h/?APPNAME=app&connectTimeoutMS=20&maxPoolSize=0&compressors=zstd,snappy\
             &zlibCompressionLevel=-1&w=majority&readPreference=SECONDARY&readPreferenceTags=dc:ny\
             &readPreferenceTags=",
        )
        .unwrap();
        assert_eq!(o.app_name.as_deref(), Some("app"));
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(20)));
        assert_eq!(o.max_pool_size, Some(0));
        assert_eq!(
            o.compressors,
            Some(vec!["zstd".to_string(), "snappy".to_string()])
        );
        assert_eq!(o.zlib_compression_level, Some(-1));
        assert_eq!(o.w, Some(Acknowledgment::Majority));
        assert_eq!(o.read_preference, Some(ReadPreferenceMode::Secondary));
        assert_eq!(o.read_preference_tags.as_ref().map(Vec::len), Some(2));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn warnings_are_recorded_and_refused_at_connect() {
        let o = ClientOptions::parse(
            "mongodb://h/?foo=bar&maxIdleTimeMS=&journal=maybe&replicaSet=a&replicaSet=b",
        )
        .unwrap();
        let kinds: Vec<UriWarningKind> = o.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [
                UriWarningKind::UnknownOption,
                UriWarningKind::InvalidValue,
                UriWarningKind::InvalidValue,
                UriWarningKind::RepeatedOption
            ]
        );
        assert_eq!(o.replica_set.as_deref(), Some("b"));
        assert_eq!(o.journal, None);
        let err = o.check_supported().unwrap_err();
        assert!(err.is_invalid_argument());
        assert!(err.to_string().contains("foo"), "{err}");
    }

    #[test]
    fn unsupported_features_parse_but_are_refused() {
        for uri in [
            "mongodb://%2Ftmp%2Fmongodb-27017.sock",
            "mongodb://h/?readConcernLevel=majority",
        ] {
            let o = ClientOptions::parse(uri).unwrap();
            let err = o.check_supported().unwrap_err();
            assert!(err.is_unsupported(), "{uri}: {err}");
        }
        for supported in [
            "mongodb://h:1/?appName=x&directConnection=true&maxPoolSize=3",
            "mongodb://h/?loadBalanced=true",
            "mongodb://h/?timeoutMS=5",
            "mongodb://h/?timeoutMS=0&socketTimeoutMS=10&waitQueueTimeoutMS=10&wTimeoutMS=10",
            "mongodb://a,b/?readPreference=nearest&readPreferenceTags=dc:ny&maxStalenessSeconds=120",
            "mongodb+srv://cluster.example.com/?srvServiceName=db&srvMaxHosts=2",
        ] {
            ClientOptions::parse(supported)
                .unwrap()
                .check_supported()
                .unwrap();
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_password() {
        let o = ClientOptions::parse(
            "mongodb://user:s3cret-pw@h/?tlsCertificateKeyFilePassword=k3y-pw\
             &proxyHost=p&proxyUsername=u&proxyPassword=pr0xy-pw",
        )
        .expect("valid");
        let shown = format!("{o:?} {o:#?}");
        for secret in ["s3cret-pw", "k3y-pw", "pr0xy-pw"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<redacted>"));
        assert!(
            shown.contains("proxy_host"),
            "the other fields are still shown"
        );
    }
}
