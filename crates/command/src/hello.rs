//! The `hello` handshake command, its client metadata, and its reply.

use brook_wire::SharedDoc;
use bson::{Document, doc, oid::ObjectId};

use crate::error::{CommandError, check_ok_shared};
use crate::parse::Fields;
use crate::{Command, CommandBody, Reply, with_db};

/// The `client` document of the handshake: who is connecting, from where.
///
/// [`ClientMetadata::new`] fills in brook's name and version and the platform it was
/// built for; the application name is the caller's. [`ClientMetadata::to_document`]
/// enforces the handshake specification's limits: the application name may be at most
/// [`MAX_APP_NAME_LEN`](Self::MAX_APP_NAME_LEN) bytes (longer is an error, never
/// truncated), and the whole document at most [`MAX_DOCUMENT_SIZE`](Self::MAX_DOCUMENT_SIZE)
/// bytes, reached by dropping optional fields in the specification's order: the `env`
/// fields but `env.name`, then the `os` fields but `os.type`, then `env`, then by
/// truncating `platform`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMetadata {
    /// `application.name`, the `appName` URI option.
    pub application_name: Option<String>,
    /// `driver.name`: `"brook"`, or `"brook|<wrapper>"` for a wrapping library.
    pub driver_name: String,
    /// `driver.version`.
    pub driver_version: String,
    /// `os.type` (`uname -s` style: `"Linux"`, `"Darwin"`, `"Windows"`, `"BSD"`, ...).
    pub os_type: String,
    /// `os.name`.
    pub os_name: Option<String>,
    /// `os.architecture` (`uname -m` style).
    pub os_architecture: Option<String>,
    /// `os.version`.
    pub os_version: Option<String>,
    /// `platform`: free-form details of the runtime, e.g. `"rustc 1.95.0"`.
    pub platform: Option<String>,
    /// `env`: the execution environment (FaaS, container), as the caller detected it.
    pub env: Option<Document>,
}

impl Default for ClientMetadata {
    fn default() -> Self {
        ClientMetadata::new()
    }
}

/// `uname -s`-style name of the target OS.
fn os_type_for(os: &str) -> &'static str {
    match os {
        "linux" | "android" => "Linux",
        "macos" | "ios" | "tvos" | "watchos" | "visionos" => "Darwin",
        "windows" => "Windows",
        "freebsd" | "netbsd" | "openbsd" | "dragonfly" => "BSD",
        "solaris" | "illumos" | "aix" | "haiku" => "Unix",
        _ => "unknown",
    }
}

impl ClientMetadata {
    /// The largest `client` document the server accepts, BSON overhead included.
    pub const MAX_DOCUMENT_SIZE: usize = 512;
    /// The longest `application.name` the server accepts, in bytes.
    pub const MAX_APP_NAME_LEN: usize = 128;

    /// brook's metadata: driver `"brook"` at this crate's version, the OS type, name
    /// and architecture of the build target (`std::env::consts`), platform
    /// `"rustc <version>"`, no application name, no `env`.
    pub fn new() -> Self {
        let os = std::env::consts::OS;
        ClientMetadata {
            application_name: None,
            driver_name: String::from("brook"),
            driver_version: String::from(env!("CARGO_PKG_VERSION")),
            os_type: String::from(os_type_for(os)),
            os_name: (!os.is_empty()).then(|| String::from(os)),
            os_architecture: Some(String::from(std::env::consts::ARCH)),
            os_version: None,
            platform: Some(format!("rustc {}", env!("BROOK_RUSTC_VERSION"))),
            env: None,
        }
    }

    /// Sets the application name, refusing one over [`Self::MAX_APP_NAME_LEN`] bytes.
    pub fn with_app_name(mut self, name: impl Into<String>) -> Result<Self, CommandError> {
        let name = name.into();
        check_app_name(&name)?;
        self.application_name = Some(name);
        Ok(self)
    }

    /// The `client` document, trimmed to [`Self::MAX_DOCUMENT_SIZE`] bytes.
    pub fn to_document(&self) -> Result<Document, CommandError> {
        if let Some(name) = &self.application_name {
            check_app_name(name)?;
        }
        let mut trimmed = self.clone();
        let mut doc = trimmed.untrimmed_document();
        let mut size = bson_len(&doc)?;
        let steps: [fn(&mut ClientMetadata) -> bool; 3] = [
            ClientMetadata::keep_only_env_name,
            ClientMetadata::keep_only_os_type,
            ClientMetadata::drop_env,
        ];
        for step in steps {
            if size <= Self::MAX_DOCUMENT_SIZE {
                return Ok(doc);
            }
            if step(&mut trimmed) {
                doc = trimmed.untrimmed_document();
                size = bson_len(&doc)?;
            }
        }
        if size > Self::MAX_DOCUMENT_SIZE {
            let excess = size - Self::MAX_DOCUMENT_SIZE;
            if let Some(platform) = trimmed.platform.take() {
                let mut keep = platform.len().saturating_sub(excess);
                while !platform.is_char_boundary(keep) {
                    keep -= 1;
                }
                trimmed.platform = platform.get(..keep).map(str::to_owned);
                doc = trimmed.untrimmed_document();
                size = bson_len(&doc)?;
            }
        }
        if size > Self::MAX_DOCUMENT_SIZE {
            return Err(CommandError::ClientMetadataTooLarge {
                len: size,
                max: Self::MAX_DOCUMENT_SIZE,
            });
        }
        Ok(doc)
    }

    fn untrimmed_document(&self) -> Document {
        let mut client = Document::new();
        if let Some(name) = &self.application_name {
            client.insert("application", doc! { "name": name });
        }
        client.insert(
            "driver",
            doc! { "name": &self.driver_name, "version": &self.driver_version },
        );
        let mut os = doc! { "type": &self.os_type };
        if let Some(name) = &self.os_name {
            os.insert("name", name);
        }
        if let Some(arch) = &self.os_architecture {
            os.insert("architecture", arch);
        }
        if let Some(version) = &self.os_version {
            os.insert("version", version);
        }
        client.insert("os", os);
        if let Some(platform) = &self.platform {
            client.insert("platform", platform);
        }
        if let Some(env) = &self.env {
            client.insert("env", env.clone());
        }
        client
    }

    /// Step 1: `env` keeps only `name` (and goes when it has none). True if changed.
    fn keep_only_env_name(&mut self) -> bool {
        let Some(env) = &self.env else { return false };
        if env.keys().all(|k| k == "name") {
            return false;
        }
        self.env = env.get("name").map(|name| doc! { "name": name.clone() });
        true
    }

    /// Step 2: `os` keeps only `type`. True if changed.
    fn keep_only_os_type(&mut self) -> bool {
        let changed =
            self.os_name.is_some() || self.os_architecture.is_some() || self.os_version.is_some();
        self.os_name = None;
        self.os_architecture = None;
        self.os_version = None;
        changed
    }

    /// Step 3: no `env`. True if changed.
    fn drop_env(&mut self) -> bool {
        self.env.take().is_some()
    }
}

fn check_app_name(name: &str) -> Result<(), CommandError> {
    if name.len() > ClientMetadata::MAX_APP_NAME_LEN {
        return Err(CommandError::AppNameTooLong {
            len: name.len(),
            max: ClientMetadata::MAX_APP_NAME_LEN,
        });
    }
    Ok(())
}

fn bson_len(doc: &Document) -> Result<usize, CommandError> {
    Ok(doc.to_vec()?.len())
}

/// The handshake and monitoring command:
/// `{hello: 1, client?, compression?, loadBalanced?, saslSupportedMechs?,
/// speculativeAuthenticate?, topologyVersion?, maxAwaitTimeMS?, $db}`, run on `admin`.
///
/// With both `topology_version` and `max_await_time` set it is an *awaitable* hello
/// (MongoDB 4.4+): the server answers when its topology version moves past the one given
/// or after `maxAwaitTimeMS`, and, when the message also carries the OP_MSG
/// `exhaustAllowed` flag, keeps streaming replies (SDAM's streaming protocol).
///
/// With `legacy_name` set the body starts `{isMaster: 1, helloOk: true, ...}` instead,
/// for servers older than 4.4.2 (which do not know `hello`); the reply is read the
/// same way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hello {
    /// The `client` document; send it on a connection's first hello only.
    pub client_metadata: Option<ClientMetadata>,
    /// The compressors offered, by name, in the client's order of preference.
    pub compression: Vec<String>,
    /// `loadBalanced: true`, when connecting through a load balancer.
    pub load_balanced: bool,
    /// `"<db>.<user>"`, to learn the user's SASL mechanisms.
    pub sasl_supported_mechs: Option<String>,
    /// The first authentication command, to authenticate speculatively.
    pub speculative_authenticate: Option<Document>,
    /// Send the legacy `isMaster` name (with `helloOk: true`) instead of `hello`.
    pub legacy_name: bool,
    /// `topologyVersion`: the server's version the client last saw (for an awaitable
    /// hello; send it together with `max_await_time`).
    pub topology_version: Option<Document>,
    /// `maxAwaitTimeMS`: how long an awaitable hello may wait for a topology change
    /// (sent as an int64 of whole milliseconds).
    pub max_await_time: Option<std::time::Duration>,
}

impl Hello {
    /// A bare `hello` (no metadata, no compressors).
    pub fn new() -> Self {
        Hello::default()
    }

    /// An awaitable hello (SDAM streaming protocol): answered once the server's topology
    /// version differs from `topology_version`, or after `max_await`.
    pub fn awaitable(topology_version: Document, max_await: std::time::Duration) -> Self {
        Hello {
            topology_version: Some(topology_version),
            max_await_time: Some(max_await),
            ..Hello::default()
        }
    }

    /// The first hello of a connection: with client metadata.
    pub fn handshake(metadata: ClientMetadata) -> Self {
        Hello {
            client_metadata: Some(metadata),
            ..Hello::default()
        }
    }
}

impl Command for Hello {
    const NAME: &'static str = "hello";
    type Output = HelloReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        if self.legacy_name {
            body.insert("isMaster", 1);
            body.insert("helloOk", true);
        } else {
            body.insert(Self::NAME, 1);
        }
        if let Some(meta) = &self.client_metadata {
            body.insert("client", meta.to_document()?);
        }
        if !self.compression.is_empty() {
            body.insert("compression", self.compression.clone());
        }
        if self.load_balanced {
            body.insert("loadBalanced", true);
        }
        if let Some(user) = &self.sasl_supported_mechs {
            body.insert("saslSupportedMechs", user);
        }
        if let Some(auth) = &self.speculative_authenticate {
            body.insert("speculativeAuthenticate", auth.clone());
        }
        if let Some(tv) = &self.topology_version {
            body.insert("topologyVersion", tv.clone());
        }
        if let Some(wait) = self.max_await_time {
            let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            body.insert("maxAwaitTimeMS", ms);
        }
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<HelloReply, CommandError> {
        HelloReply::parse(&reply.body)
    }
}

/// A successful `hello` (or legacy `isMaster`) reply.
#[derive(Debug, Clone)]
pub struct HelloReply {
    /// `isWritablePrimary` (legacy: `ismaster`).
    pub is_writable_primary: bool,
    /// `secondary`.
    pub secondary: bool,
    /// `arbiterOnly`.
    pub arbiter_only: bool,
    /// `hidden`.
    pub hidden: bool,
    /// `helloOk`: the server understands `hello` (in replies to legacy `isMaster`).
    pub hello_ok: bool,
    /// `setName`: the replica set's name.
    pub set_name: Option<String>,
    /// `setVersion`.
    pub set_version: Option<i64>,
    /// `electionId`.
    pub election_id: Option<ObjectId>,
    /// `hosts`: the set's electable members.
    pub hosts: Vec<String>,
    /// `passives`: the set's priority-0 members.
    pub passives: Vec<String>,
    /// `arbiters`.
    pub arbiters: Vec<String>,
    /// `primary`: the primary as this member sees it.
    pub primary: Option<String>,
    /// `me`: this member's own address.
    pub me: Option<String>,
    /// `minWireVersion` (0 when absent).
    pub min_wire_version: i32,
    /// `maxWireVersion` (0 when absent).
    pub max_wire_version: i32,
    /// `maxBsonObjectSize` (16 MiB when absent).
    pub max_bson_object_size: usize,
    /// `maxMessageSizeBytes` (48,000,000 when absent).
    pub max_message_size_bytes: usize,
    /// `maxWriteBatchSize` (100,000 when absent).
    pub max_write_batch_size: usize,
    /// `logicalSessionTimeoutMinutes`: absent when the server has no sessions.
    pub logical_session_timeout_minutes: Option<i64>,
    /// `compression`: the compressors the server agreed to, from the client's list.
    pub compression: Vec<String>,
    /// `connectionId`.
    pub connection_id: Option<i64>,
    /// `msg` (`"isdbgrid"` from a mongos).
    pub msg: Option<String>,
    /// `readOnly`.
    pub read_only: bool,
    /// `saslSupportedMechs` (when asked for).
    pub sasl_supported_mechs: Option<Vec<String>>,
    /// `serviceId` (behind a load balancer).
    pub service_id: Option<ObjectId>,
    /// `topologyVersion` (sharing the reply's buffer).
    pub topology_version: Option<SharedDoc>,
    /// `speculativeAuthenticate`: the server's answer to a speculative first auth step.
    pub speculative_authenticate: Option<SharedDoc>,
    /// The whole reply.
    pub raw: SharedDoc,
}

impl HelloReply {
    /// `maxBsonObjectSize` when the reply has none: 16 MiB.
    pub const DEFAULT_MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
    /// `maxMessageSizeBytes` when the reply has none.
    pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: usize = 48_000_000;
    /// `maxWriteBatchSize` when the reply has none.
    pub const DEFAULT_MAX_WRITE_BATCH_SIZE: usize = 100_000;

    /// Parses a hello reply body (checking `ok` first).
    pub fn parse(body: &SharedDoc) -> Result<HelloReply, CommandError> {
        check_ok_shared(Hello::NAME, body)?;
        let f = Fields::new(Hello::NAME, body.as_raw());
        let is_writable_primary = match f.opt_bool("isWritablePrimary")? {
            Some(v) => v,
            None => f.opt_bool("ismaster")?.unwrap_or(false),
        };
        Ok(HelloReply {
            is_writable_primary,
            secondary: f.opt_bool("secondary")?.unwrap_or(false),
            arbiter_only: f.opt_bool("arbiterOnly")?.unwrap_or(false),
            hidden: f.opt_bool("hidden")?.unwrap_or(false),
            hello_ok: f.opt_bool("helloOk")?.unwrap_or(false),
            set_name: f.opt_str("setName")?.map(str::to_owned),
            set_version: f.opt_i64("setVersion")?,
            election_id: f.opt_object_id("electionId")?,
            hosts: f.opt_str_array("hosts")?.unwrap_or_default(),
            passives: f.opt_str_array("passives")?.unwrap_or_default(),
            arbiters: f.opt_str_array("arbiters")?.unwrap_or_default(),
            primary: f.opt_str("primary")?.map(str::to_owned),
            me: f.opt_str("me")?.map(str::to_owned),
            min_wire_version: f.opt_i32("minWireVersion")?.unwrap_or(0),
            max_wire_version: f.opt_i32("maxWireVersion")?.unwrap_or(0),
            max_bson_object_size: f
                .opt_usize("maxBsonObjectSize")?
                .unwrap_or(Self::DEFAULT_MAX_BSON_OBJECT_SIZE),
            max_message_size_bytes: f
                .opt_usize("maxMessageSizeBytes")?
                .unwrap_or(Self::DEFAULT_MAX_MESSAGE_SIZE_BYTES),
            max_write_batch_size: f
                .opt_usize("maxWriteBatchSize")?
                .unwrap_or(Self::DEFAULT_MAX_WRITE_BATCH_SIZE),
            logical_session_timeout_minutes: f.opt_i64("logicalSessionTimeoutMinutes")?,
            compression: f.opt_str_array("compression")?.unwrap_or_default(),
            connection_id: f.opt_i64("connectionId")?,
            msg: f.opt_str("msg")?.map(str::to_owned),
            read_only: f.opt_bool("readOnly")?.unwrap_or(false),
            sasl_supported_mechs: f.opt_str_array("saslSupportedMechs")?,
            service_id: f.opt_object_id("serviceId")?,
            topology_version: f.opt_shared_doc("topologyVersion", body)?,
            speculative_authenticate: f.opt_shared_doc("speculativeAuthenticate", body)?,
            raw: body.clone(),
        })
    }

    /// Whether the server is a mongos (`msg: "isdbgrid"`).
    pub fn is_mongos(&self) -> bool {
        self.msg.as_deref() == Some("isdbgrid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Timestamp, spec::BinarySubtype};

    fn reply(doc: Document) -> Reply {
        Reply::from_document(&doc).unwrap()
    }

    fn meta() -> ClientMetadata {
        ClientMetadata {
            application_name: Some("app".into()),
            driver_name: "brook".into(),
            driver_version: "0.1.0".into(),
            os_type: "Linux".into(),
            os_name: Some("linux".into()),
            os_architecture: Some("x86_64".into()),
            os_version: None,
            platform: Some("rustc 1.95.0".into()),
            env: None,
        }
    }

    #[test]
    fn default_metadata_describes_brook() {
        let m = ClientMetadata::new();
        assert_eq!(m.driver_name, "brook");
        assert_eq!(m.driver_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.os_architecture.as_deref(), Some(std::env::consts::ARCH));
        assert_eq!(m.os_name.as_deref(), Some(std::env::consts::OS));
        if cfg!(target_os = "linux") {
            assert_eq!(m.os_type, "Linux");
        }
        assert!(m.platform.as_deref().unwrap().starts_with("rustc "));
        assert_eq!(m.application_name, None);
        let doc = m.to_document().unwrap();
        assert!(bson_len(&doc).unwrap() <= ClientMetadata::MAX_DOCUMENT_SIZE);
    }

    #[test]
    fn metadata_document_shape() {
        assert_eq!(
            meta().to_document().unwrap(),
            doc! {
                "application": { "name": "app" },
                "driver": { "name": "brook", "version": "0.1.0" },
                "os": { "type": "Linux", "name": "linux", "architecture": "x86_64" },
                "platform": "rustc 1.95.0",
            }
        );
    }

    #[test]
    fn app_name_limit() {
        let ok = "a".repeat(128);
        assert!(ClientMetadata::new().with_app_name(ok).is_ok());
        let err = ClientMetadata::new()
            .with_app_name("a".repeat(129))
            .unwrap_err();
        assert!(matches!(
            err,
            CommandError::AppNameTooLong { len: 129, max: 128 }
        ));
        // Bytes, not characters: 43 × "€" is 129 bytes.
        assert!(ClientMetadata::new().with_app_name("€".repeat(42)).is_ok());
        let err = ClientMetadata::new()
            .with_app_name("€".repeat(43))
            .unwrap_err();
        assert!(matches!(err, CommandError::AppNameTooLong { len: 129, .. }));
        // A too-long name set through the public field is caught when building.
        let mut m = meta();
        m.application_name = Some("x".repeat(200));
        assert!(matches!(
            m.to_document(),
            Err(CommandError::AppNameTooLong { len: 200, .. })
        ));
        let hello = Hello::handshake(m);
        assert!(matches!(
            hello.build("admin"),
            Err(CommandError::AppNameTooLong { .. })
        ));
    }

    #[test]
    fn trims_env_fields_first() {
        let mut m = meta();
        m.env = Some(doc! { "name": "aws.lambda", "region": "r".repeat(400), "memory_mb": 1024 });
        let doc = m.to_document().unwrap();
        assert_eq!(
            doc.get_document("env").unwrap(),
            &doc! { "name": "aws.lambda" }
        );
        assert_eq!(
            doc.get_document("os").unwrap(),
            &doc! { "type": "Linux", "name": "linux", "architecture": "x86_64" }
        );
        assert_eq!(doc.get_str("platform").unwrap(), "rustc 1.95.0");
    }

    #[test]
    fn trims_os_fields_second() {
        let mut m = meta();
        m.env = Some(doc! { "name": "aws.lambda", "region": "r".repeat(400) });
        m.os_version = Some("v".repeat(150));
        m.os_name = Some("n".repeat(150));
        let doc = m.to_document().unwrap();
        assert_eq!(
            doc.get_document("env").unwrap(),
            &doc! { "name": "aws.lambda" }
        );
        assert_eq!(doc.get_document("os").unwrap(), &doc! { "type": "Linux" });
        assert_eq!(doc.get_str("platform").unwrap(), "rustc 1.95.0");
    }

    #[test]
    fn drops_env_third_then_truncates_platform() {
        let mut m = meta();
        m.env = Some(doc! { "name": "e".repeat(450) });
        let doc = m.to_document().unwrap();
        assert!(doc.get("env").is_none());
        assert_eq!(doc.get_document("os").unwrap(), &doc! { "type": "Linux" });
        assert_eq!(doc.get_str("platform").unwrap(), "rustc 1.95.0");

        let mut m = meta();
        m.platform = Some("p".repeat(600));
        let doc = m.to_document().unwrap();
        let size = bson_len(&doc).unwrap();
        assert_eq!(
            size,
            ClientMetadata::MAX_DOCUMENT_SIZE,
            "truncated to exactly fit"
        );
        let platform = doc.get_str("platform").unwrap();
        assert!(platform.len() < 600 && platform.chars().all(|c| c == 'p'));
        assert_eq!(
            doc.get_document("application").unwrap(),
            &doc! { "name": "app" }
        );
    }

    #[test]
    fn truncates_platform_on_a_char_boundary() {
        let mut m = meta();
        m.platform = Some("€".repeat(300));
        let doc = m.to_document().unwrap();
        assert!(bson_len(&doc).unwrap() <= ClientMetadata::MAX_DOCUMENT_SIZE);
        assert!(doc.get_str("platform").unwrap().chars().all(|c| c == '€'));
    }

    #[test]
    fn overlong_required_fields_are_an_error() {
        let mut m = meta();
        m.driver_name = "d".repeat(600);
        assert!(matches!(
            m.to_document(),
            Err(CommandError::ClientMetadataTooLarge { max: 512, .. })
        ));
    }

    #[test]
    fn hello_bodies() {
        let h = Hello::new();
        assert_eq!(
            h.build("admin").unwrap().body,
            doc! { "hello": 1, "$db": "admin" }
        );

        let mut h = Hello::handshake(meta());
        h.compression = vec!["zstd".into(), "snappy".into()];
        h.load_balanced = true;
        h.sasl_supported_mechs = Some("admin.alice".into());
        assert_eq!(
            h.build("admin").unwrap().body,
            doc! {
                "hello": 1,
                "client": meta().to_document().unwrap(),
                "compression": ["zstd", "snappy"],
                "loadBalanced": true,
                "saslSupportedMechs": "admin.alice",
                "$db": "admin",
            }
        );

        let h = Hello {
            legacy_name: true,
            ..Hello::new()
        };
        let body = h.build("admin").unwrap();
        assert_eq!(
            body.body,
            doc! { "isMaster": 1, "helloOk": true, "$db": "admin" }
        );
        assert!(!body.may_compress());
    }

    #[test]
    fn awaitable_hello_body() {
        let tv = doc! { "processId": ObjectId::parse_str("66a1f2c3d4e5f60718293a4b").unwrap(), "counter": 3i64 };
        let h = Hello::awaitable(tv.clone(), std::time::Duration::from_millis(10_000));
        assert_eq!(
            h.build("admin").unwrap().body,
            doc! { "hello": 1, "topologyVersion": tv, "maxAwaitTimeMS": 10_000i64, "$db": "admin" }
        );
    }

    fn mongo8_primary() -> Document {
        doc! {
            "topologyVersion": { "processId": ObjectId::parse_str("66a1f2c3d4e5f60718293a4b").unwrap(), "counter": 6i64 },
            "hosts": ["mongo-0:27017", "mongo-1:27017", "mongo-2:27017"],
            "setName": "rs0",
            "setVersion": 1,
            "isWritablePrimary": true,
            "secondary": false,
            "primary": "mongo-0:27017",
            "me": "mongo-0:27017",
            "electionId": ObjectId::parse_str("7fffffff0000000000000003").unwrap(),
            "lastWrite": {
                "opTime": { "ts": Timestamp { time: 1_722_000_000, increment: 1 }, "t": 3i64 },
                "lastWriteDate": bson::DateTime::from_millis(1_722_000_000_000),
            },
            "maxBsonObjectSize": 16_777_216,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": bson::DateTime::from_millis(1_722_000_000_123),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 412,
            "minWireVersion": 0,
            "maxWireVersion": 25,
            "readOnly": false,
            "compression": ["zstd"],
            "saslSupportedMechs": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
            "ok": 1.0,
            "$clusterTime": {
                "clusterTime": Timestamp { time: 1_722_000_000, increment: 1 },
                "signature": { "hash": bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0i64 },
            },
            "operationTime": Timestamp { time: 1_722_000_000, increment: 1 },
        }
    }

    #[test]
    fn parses_a_replica_set_primary() {
        let r = Hello::new().handle_reply(reply(mongo8_primary())).unwrap();
        assert!(r.is_writable_primary);
        assert!(!r.secondary);
        assert_eq!(r.set_name.as_deref(), Some("rs0"));
        assert_eq!(r.set_version, Some(1));
        assert_eq!(r.hosts.len(), 3);
        assert_eq!(r.primary.as_deref(), Some("mongo-0:27017"));
        assert_eq!(r.me.as_deref(), Some("mongo-0:27017"));
        assert_eq!(r.min_wire_version, 0);
        assert_eq!(r.max_wire_version, 25);
        assert_eq!(r.max_bson_object_size, 16_777_216);
        assert_eq!(r.max_message_size_bytes, 48_000_000);
        assert_eq!(r.max_write_batch_size, 100_000);
        assert_eq!(r.logical_session_timeout_minutes, Some(30));
        assert_eq!(r.compression, vec!["zstd".to_owned()]);
        assert_eq!(r.connection_id, Some(412));
        assert_eq!(r.sasl_supported_mechs.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            r.election_id,
            Some(ObjectId::parse_str("7fffffff0000000000000003").unwrap())
        );
        assert!(!r.is_mongos());
        let tv = r.topology_version.as_ref().unwrap();
        assert_eq!(tv.to_document().unwrap().get_i64("counter").unwrap(), 6);
        let start = r.raw.bytes().as_ptr() as usize;
        let tv_at = tv.bytes().as_ptr() as usize;
        assert!(
            tv_at > start && tv_at < start + r.raw.bytes().len(),
            "shares the reply"
        );
    }

    #[test]
    fn applies_defaults_and_legacy_fields() {
        let r = Hello::new()
            .handle_reply(reply(
                doc! { "ismaster": true, "msg": "isdbgrid", "maxWireVersion": 6i64, "ok": 1 },
            ))
            .unwrap();
        assert!(r.is_writable_primary);
        assert!(r.is_mongos());
        assert_eq!(r.max_wire_version, 6);
        assert_eq!(r.max_bson_object_size, 16 * 1024 * 1024);
        assert_eq!(r.max_message_size_bytes, 48_000_000);
        assert_eq!(r.max_write_batch_size, 100_000);
        assert_eq!(r.logical_session_timeout_minutes, None);
        assert!(r.hosts.is_empty() && r.compression.is_empty());
        assert!(r.topology_version.is_none());
    }

    #[test]
    fn hello_errors_and_malformed_replies() {
        let err = Hello::new()
            .handle_reply(reply(doc! { "ok": 0.0, "errmsg": "Authentication failed.", "code": 18, "codeName": "AuthenticationFailed" }))
            .unwrap_err();
        assert_eq!(err.code(), Some(18));

        for bad in [
            doc! { "ok": 1, "maxWireVersion": "25" },
            doc! { "ok": 1, "hosts": "a:1" },
            doc! { "ok": 1, "hosts": ["a:1", 2] },
            doc! { "ok": 1, "maxBsonObjectSize": -1 },
            doc! { "ok": 1, "maxWireVersion": 1i64 << 40 },
            doc! { "ok": 1, "topologyVersion": 3 },
            doc! { "ok": 1, "isWritablePrimary": "yes" },
        ] {
            let err = Hello::new().handle_reply(reply(bad.clone())).unwrap_err();
            assert!(
                matches!(
                    err,
                    CommandError::MalformedReply {
                        command: "hello",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }
}
