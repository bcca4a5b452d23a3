//! `Client`: discovery of the server to talk to, the connection cache, sessions, shutdown.

use std::sync::Arc;
use std::time::Duration;

use brook_conn::{ConnectionOptions, ServerAddress, ServerKind, TlsOptions};
use brook_pool::PoolOptions;
use brook_topology::TopologyOptions;
use brook_wire::Compressor;
use bson::Document;

use crate::change_stream::{Scope, WatchBuilder};
use crate::db::Database;
use crate::error::Error;
use crate::event::ChangeStreamEvent;
use crate::exec::{DEFAULT_SERVER_SELECTION_TIMEOUT, Executor, Target, Topology, TopologySettings};
use crate::options::{ClientOptions, Host};
use crate::session::ClientSession;

/// The default `maxPoolSize`.
const DEFAULT_MAX_POOL_SIZE: u32 = 100;
/// The default `maxConnecting`.
const DEFAULT_MAX_CONNECTING: u32 = 2;
/// The default `heartbeatFrequencyMS`.
const DEFAULT_HEARTBEAT_FREQUENCY: Duration = Duration::from_secs(10);
/// The default `localThresholdMS`.
const DEFAULT_LOCAL_THRESHOLD: Duration = Duration::from_millis(15);

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
        credential: o.auth_credential().map(|c| {
            brook_conn::Credential::new(
                c.username,
                c.password,
                c.source.unwrap_or_else(|| "admin".to_owned()),
                c.mechanism
                    .as_deref()
                    .and_then(brook_conn::Mechanism::from_name),
            )
        }),
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

impl Client {
    /// Parse `uri` and connect: see [`Client::with_options`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), brook::Error> {
    /// # let server = brook_testkit::FakeServer::start(brook_testkit::ServerConfig::replica_set("rs0"))
    /// #     .await
    /// #     .expect("a fake server");
    /// # let uri = format!("mongodb://{}/?replicaSet=rs0&appName=indexer", server.host_port());
    /// // e.g. "mongodb://db1.example.net,db2.example.net/?replicaSet=rs0&appName=indexer"
    /// let client = brook::Client::connect(&uri).await?;
    /// assert_eq!(client.options().app_name.as_deref(), Some("indexer"));
    /// assert!(client.server_address().is_some(), "connect returns once the primary answered");
    /// let pong = client.database("admin").run_command(bson::doc! { "ping": 1 }).await?;
    /// assert_eq!(pong.get_f64("ok").ok(), Some(1.0));
    /// client.shutdown().await;
    ///
    /// // An option brook would have to ignore is refused before any IO, naming it.
    /// let err = brook::Client::connect("mongodb://localhost/?frobnicate=1").await.unwrap_err();
    /// assert!(err.is_invalid_argument() && err.to_string().contains("frobnicate"), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(uri: &str) -> Result<Client, Error> {
        Client::with_options(ClientOptions::parse(uri)?).await
    }

    /// Connect with parsed options.
    ///
    /// Refuses options that carry warnings or ask for what brook does not do yet
    /// ([`ClientOptions::check_supported`]), and an invalid read preference (tags or
    /// `maxStalenessSeconds` with mode primary). Then follows the deployment as the SDAM
    /// specification says: one monitor per server (seeds first, then the hosts the
    /// members report), a CMAP connection pool per server, and server selection by read
    /// preference within the latency window (`localThresholdMS`). Returns once a server
    /// for the client's default read preference answered, or fails after
    /// `serverSelectionTimeoutMS` (default 30 s) with an error describing the deployment
    /// as seen. Later operations select again each time, so a client follows elections,
    /// members added and removed, and mongoses coming and going.
    pub async fn with_options(options: ClientOptions) -> Result<Client, Error> {
        options.check_supported()?;
        // mongodb+srv://: the seeds and the TXT record's options from DNS (crate::srv).
        let (options, srv_poller) =
            crate::srv::prepare(options, DEFAULT_SERVER_SELECTION_TIMEOUT).await?;
        options
            .effective_read_preference()
            .validate()
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let mut conn_options = to_connection_options(&options)?;
        let load_balanced = options.load_balanced == Some(true);
        conn_options.load_balanced = load_balanced;
        let seeds = seed_addresses(&options)?;
        if seeds.is_empty() {
            return Err(Error::invalid_argument(
                "the connection string names no host",
            ));
        }
        let defaults = PoolOptions::default();
        let pool_options = PoolOptions {
            max_pool_size: options.max_pool_size.unwrap_or(DEFAULT_MAX_POOL_SIZE),
            min_pool_size: options.min_pool_size.unwrap_or(0),
            max_connecting: options.max_connecting.unwrap_or(DEFAULT_MAX_CONNECTING),
            max_idle_time: options.max_idle_time.filter(|d| !d.is_zero()),
            wait_queue_timeout: options.wait_queue_timeout.filter(|d| !d.is_zero()),
            ..defaults
        };
        let selection_timeout = options
            .server_selection_timeout
            .unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT);
        let settings = TopologySettings {
            conn_options,
            pool_options,
            heartbeat: options
                .heartbeat_frequency
                .unwrap_or(DEFAULT_HEARTBEAT_FREQUENCY),
            local_threshold: options.local_threshold.unwrap_or(DEFAULT_LOCAL_THRESHOLD),
            selection_timeout,
            monitoring_mode: options
                .server_monitoring_mode
                .unwrap_or(crate::options::ServerMonitoringMode::Auto),
        };
        let mut topology_options = TopologyOptions::new();
        topology_options.direct_connection = options.direct_connection;
        topology_options.replica_set = options.replica_set.clone();
        topology_options.load_balanced = load_balanced;
        let handler = options.cmap_event_handler.clone();
        let sdam_handler = options.sdam_event_handler.clone();
        let topology = Topology::start(seeds, topology_options, settings, handler, sdam_handler);
        if let Some(poller) = srv_poller {
            poller.start(&topology);
        }
        // A client exists once the deployment answered: the first selection of a
        // server for its default read preference (the primary, a mongos, the
        // standalone, the one server of a direct connection, or a secondary for
        // `readPreference=secondary`).
        let deadline = tokio::time::Instant::now() + selection_timeout;
        let preference = options.effective_read_preference();
        if let Err(e) = topology
            .select(Target::Read(&preference), &[], deadline)
            .await
        {
            topology.close();
            return Err(e);
        }
        if load_balanced && let Err(e) = topology.learn_load_balancer(deadline).await {
            topology.close();
            return Err(e);
        }
        Ok(Client {
            exec: Executor::new(options, topology),
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

    /// The address of the primary (or mongos, standalone, the one server of a direct
    /// connection) as the topology sees it now: where operations go.
    pub fn server_address(&self) -> Option<ServerAddress> {
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
        WatchBuilder::new(
            Arc::clone(&self.exec),
            Scope::Cluster,
            self.exec.default_read_preference().clone(),
        )
        .inherit_timeout(self.exec.options().timeout)
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
