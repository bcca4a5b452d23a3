//! `Client`: discovery of the server to talk to, the connection cache, sessions, shutdown.

use std::sync::Arc;
use std::time::Duration;

use brook_conn::{Connection, ConnectionOptions, ServerAddress, ServerKind, TlsOptions};
use brook_pool::PoolOptions;
use brook_wire::Compressor;
use bson::Document;

use crate::change_stream::{Scope, WatchBuilder};
use crate::db::Database;
use crate::error::{Error, ErrorKind};
use crate::event::ChangeStreamEvent;
use crate::exec::{DEFAULT_SERVER_SELECTION_TIMEOUT, Executor, Server, ServerInfo};
use crate::options::{ClientOptions, Host};
use crate::session::ClientSession;

/// The default `maxPoolSize`.
const DEFAULT_MAX_POOL_SIZE: u32 = 100;
/// The default `maxConnecting`.
const DEFAULT_MAX_CONNECTING: u32 = 2;
/// The pause between two rounds over the seed list during discovery.
const DISCOVERY_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A handle to a MongoDB deployment. Cheap to clone (an `Arc` inside); all clones share
/// one executor: one connection pool per server, one session pool, one cluster time.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) exec: Arc<Executor>,
}

fn to_connection_options(o: &ClientOptions) -> Result<ConnectionOptions, Error> {
    let mut compressors = Vec::new();
    for name in o.compressors.iter().flatten() {
        let c = match Compressor::from_name(name) {
            Some(Compressor::Zlib { .. }) => Compressor::Zlib {
                level: o.zlib_compression_level.and_then(|l| u32::try_from(l).ok()),
            },
            Some(c) => c,
            None => {
                return Err(Error::unsupported(format!(
                    "the `{name}` compressor (not built into brook-wire)"
                )));
            }
        };
        if !c.is_available() {
            return Err(Error::unsupported(format!(
                "the `{name}` compressor: build brook with its `{}` cargo feature",
                c.name()
            )));
        }
        compressors.push(c);
    }
    let insecure = o.tls_insecure == Some(true);
    let tls_wanted =
        o.tls == Some(true) || o.tls_ca_file.is_some() || o.tls_certificate_key_file.is_some();
    if o.tls == Some(false) && tls_wanted {
        return Err(Error::invalid_argument(
            "tls=false contradicts tlsCAFile / tlsCertificateKeyFile",
        ));
    }
    let tls = tls_wanted.then(|| TlsOptions {
        ca_file: o.tls_ca_file.clone().map(Into::into),
        cert_key_file: o.tls_certificate_key_file.clone().map(Into::into),
        allow_invalid_certificates: insecure || o.tls_allow_invalid_certificates == Some(true),
        allow_invalid_hostnames: insecure || o.tls_allow_invalid_hostnames == Some(true),
        server_name: None,
    });
    let defaults = ConnectionOptions::default();
    Ok(ConnectionOptions {
        connect_timeout: o.connect_timeout.unwrap_or(defaults.connect_timeout),
        socket_timeout: o.socket_timeout.filter(|d| !d.is_zero()),
        app_name: o.app_name.clone(),
        compressors,
        tls,
        ..defaults
    })
}

fn seed_addresses(o: &ClientOptions) -> Result<Vec<ServerAddress>, Error> {
    o.hosts
        .iter()
        .map(|h| match h {
            Host::Tcp { host, port } => Ok(ServerAddress::new(
                host.clone(),
                port.unwrap_or(crate::options::DEFAULT_PORT),
            )),
            _ => Err(Error::unsupported("Unix domain socket hosts")),
        })
        .collect()
}

/// Connect to seeds in order until a usable server handshakes; follow a replica set
/// member's `primary`/`hosts` to the writable primary.
async fn discover(o: &ClientOptions, conn_opts: &ConnectionOptions) -> Result<Connection, Error> {
    let seeds = seed_addresses(o)?;
    if seeds.is_empty() {
        return Err(Error::invalid_argument(
            "the connection string names no host",
        ));
    }
    let direct = o.direct_connection == Some(true);
    let limit = o
        .server_selection_timeout
        .unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT);
    let deadline = tokio::time::Instant::now() + limit;
    let mut problems: Vec<String> = Vec::new();
    loop {
        let mut candidates: Vec<ServerAddress> = seeds.clone();
        let mut tried: Vec<ServerAddress> = Vec::new();
        while let Some(addr) = (!candidates.is_empty()).then(|| candidates.remove(0)) {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let conn = match tokio::time::timeout(remaining, Connection::connect(&addr, conn_opts))
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    problems.push(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    problems.push(format!("{addr}: timed out"));
                    continue;
                }
            };
            let d = conn.description();
            if let Some(want) = &o.replica_set
                && d.set_name.as_deref() != Some(want.as_str())
            {
                problems.push(format!(
                    "{addr}: replica set name {:?} is not {want:?}",
                    d.set_name
                ));
                continue;
            }
            if direct {
                return Ok(conn);
            }
            match d.server_kind {
                ServerKind::RsPrimary | ServerKind::Mongos => return Ok(conn),
                ServerKind::Standalone if seeds.len() == 1 && o.replica_set.is_none() => {
                    return Ok(conn);
                }
                ServerKind::Standalone => {
                    problems.push(format!(
                        "{addr}: a standalone server in a multi-host seed list"
                    ));
                }
                kind if kind.is_replica_set_member() => {
                    problems.push(format!("{addr}: {kind:?}, not the primary"));
                    if let Some(primary) = d.primary.as_deref().and_then(|p| p.parse().ok()) {
                        candidates.insert(0, primary);
                    }
                    for h in &d.hosts {
                        if let Ok(a) = h.parse::<ServerAddress>() {
                            candidates.push(a);
                        }
                    }
                }
                kind => problems.push(format!("{addr}: unusable server kind {kind:?}")),
            }
        }
        if tokio::time::Instant::now() + DISCOVERY_RETRY_PAUSE >= deadline {
            problems.dedup();
            let tail = problems.len().saturating_sub(10);
            return Err(Error::new(ErrorKind::ServerSelection {
                message: format!(
                    "no writable primary, mongos or standalone found within {limit:?}: {}",
                    problems.get(tail..).unwrap_or_default().join("; ")
                ),
                timed_out: true,
            }));
        }
        tokio::time::sleep(DISCOVERY_RETRY_PAUSE).await;
    }
}

impl Client {
    /// Parse `uri` and connect: see [`Client::with_options`].
    pub async fn connect(uri: &str) -> Result<Client, Error> {
        Client::with_options(ClientOptions::parse(uri)?).await
    }

    /// Connect with parsed options.
    ///
    /// Refuses options that carry warnings or ask for what brook does not do yet
    /// ([`ClientOptions::check_supported`]). Then connects to the seeds in order until one
    /// handshakes: a standalone (single seed), a mongos or a replica set primary is used
    /// as is (any server with `directConnection=true`); a secondary points the search at
    /// its `primary` and its `hosts`. Rounds repeat until `serverSelectionTimeoutMS`
    /// (default 30 s). The server found is used for every operation, through a CMAP
    /// connection pool (`maxPoolSize`, `minPoolSize`, `maxConnecting`, `maxIdleTimeMS`,
    /// `waitQueueTimeoutMS`). A network error clears the pool and marks the server
    /// unknown until a fresh handshake finds it again; operations wait for that up to
    /// `serverSelectionTimeoutMS`. There is no replica-set monitoring yet, so a failover
    /// to another member needs a new client.
    pub async fn with_options(options: ClientOptions) -> Result<Client, Error> {
        options.check_supported()?;
        let conn_opts = to_connection_options(&options)?;
        let conn = discover(&options, &conn_opts).await?;
        let info = ServerInfo::of(&conn);
        let address = conn.description().address.clone();
        // The discovery connection did its job; the pool opens its own (CMAP counts and
        // ids every connection it owns).
        conn.close().await;
        let defaults = PoolOptions::default();
        let pool_options = PoolOptions {
            max_pool_size: options.max_pool_size.unwrap_or(DEFAULT_MAX_POOL_SIZE),
            min_pool_size: options.min_pool_size.unwrap_or(0),
            max_connecting: options.max_connecting.unwrap_or(DEFAULT_MAX_CONNECTING),
            max_idle_time: options.max_idle_time.filter(|d| !d.is_zero()),
            wait_queue_timeout: options.wait_queue_timeout.filter(|d| !d.is_zero()),
            ..defaults
        };
        let handler = options.cmap_event_handler.clone();
        let server = Server::new(address, conn_opts, pool_options, info, handler);
        Ok(Client {
            exec: Executor::new(options, server),
        })
    }

    /// A handle to database `name` (no IO).
    pub fn database(&self, name: &str) -> Database {
        Database::new(self.clone(), name)
    }

    /// The database named in the connection string's path, if any.
    pub fn default_database(&self) -> Option<Database> {
        self.exec
            .options()
            .default_database
            .as_deref()
            .map(|name| self.database(name))
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        self.exec.options()
    }

    /// The address of the server every operation goes to.
    pub fn server_address(&self) -> &ServerAddress {
        self.exec.address()
    }

    /// The `maxWireVersion` of that server.
    pub fn max_wire_version(&self) -> i32 {
        self.exec.server_info().max_wire_version
    }

    /// What kind of server that is (standalone, mongos, replica set primary...).
    pub fn server_kind(&self) -> ServerKind {
        self.exec.server_info().kind
    }

    /// The server's `logicalSessionTimeoutMinutes`, if it supports sessions.
    pub fn logical_session_timeout(&self) -> Option<Duration> {
        self.exec.server_info().logical_session_timeout
    }

    /// Start an explicit session (see [`ClientSession`]): its `lsid` is used by every
    /// command of the change streams it is given to. Fails with an `is_unsupported()`
    /// error when the server does not support sessions (no
    /// `logicalSessionTimeoutMinutes` in its handshake), and after [`shutdown`](Self::shutdown).
    pub async fn start_session(&self) -> Result<ClientSession, Error> {
        self.exec.check_open()?;
        let timeout = self
            .exec
            .server_info()
            .logical_session_timeout
            .ok_or_else(|| {
                Error::unsupported("sessions on a server without logicalSessionTimeoutMinutes")
            })?;
        Ok(ClientSession::new(
            Arc::clone(self.exec.sessions()),
            timeout,
        ))
    }

    /// A change stream on the whole deployment: `aggregate: 1` on `admin` with
    /// `allChangesForCluster: true`. Set options on the builder, then `.await` it for a
    /// [`ChangeStream`](crate::ChangeStream); see the [crate docs](crate#change-streams).
    pub fn watch(&self) -> WatchBuilder<ChangeStreamEvent<Document>> {
        WatchBuilder::new(Arc::clone(&self.exec), Scope::Cluster)
    }

    /// End the client. Later operations on this client or its clones fail with an error
    /// whose `is_shutdown()` is true. Background `killCursors` (of dropped cursors and
    /// streams) get up to 5 s to finish; then `endSessions` with every pooled session id
    /// (in batches of 10,000, on pooled connections, each bounded by 5 s, errors ignored
    /// as the spec says); then the pool closes. Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.exec.shutdown().await;
    }
}
