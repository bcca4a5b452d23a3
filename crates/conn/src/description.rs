//! What the hello handshake told about the server at the other end of a connection.

use std::time::Duration;

use brook_command::HelloReply;
use brook_wire::Compressor;

use brook_command::ServerAddress;

/// The kind of server, from its hello reply (the server discovery specification's rules).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// A server that is not part of a replica set and not a mongos.
    Standalone,
    /// A mongos router (`msg: "isdbgrid"`).
    Mongos,
    /// The primary of a replica set.
    RsPrimary,
    /// A secondary of a replica set.
    RsSecondary,
    /// An arbiter of a replica set.
    RsArbiter,
    /// A replica set member that is none of the above (hidden, starting up, recovering…).
    RsOther,
    /// A replica set member that has not been given its configuration yet
    /// (`isreplicaset: true` without `setName`).
    RsGhost,
}

impl ServerKind {
    /// Classifies a hello reply.
    pub fn from_hello(hello: &HelloReply) -> ServerKind {
        if hello.is_mongos() {
            ServerKind::Mongos
        } else if hello.set_name.is_some() {
            if hello.is_writable_primary {
                ServerKind::RsPrimary
            } else if hello.secondary {
                ServerKind::RsSecondary
            } else if hello.arbiter_only {
                ServerKind::RsArbiter
            } else {
                ServerKind::RsOther
            }
        } else if hello.raw.as_raw().get_bool("isreplicaset").unwrap_or(false) {
            ServerKind::RsGhost
        } else {
            ServerKind::Standalone
        }
    }

    /// True for the replica set kinds.
    pub fn is_replica_set_member(self) -> bool {
        matches!(
            self,
            ServerKind::RsPrimary
                | ServerKind::RsSecondary
                | ServerKind::RsArbiter
                | ServerKind::RsOther
                | ServerKind::RsGhost
        )
    }
}

/// What a connection knows about its server after the handshake.
#[derive(Debug, Clone)]
pub struct StreamDescription {
    /// The address the connection was opened to.
    pub address: ServerAddress,
    /// `minWireVersion`.
    pub min_wire_version: i32,
    /// `maxWireVersion`: what errors of this connection carry as their wire version.
    pub max_wire_version: i32,
    /// `maxBsonObjectSize`: the largest document the server accepts.
    pub max_bson_object_size: usize,
    /// `maxMessageSizeBytes`: the largest frame either side may send; the connection's
    /// decode limit and encode limit after the handshake.
    pub max_message_size_bytes: usize,
    /// `maxWriteBatchSize`: the most statements in one write command.
    pub max_write_batch_size: usize,
    /// `logicalSessionTimeoutMinutes` as a duration; `None` when the server has no
    /// sessions.
    pub logical_session_timeout: Option<Duration>,
    /// The negotiated compressor: the first of the client's offer that the server also
    /// lists.
    pub compressor: Option<Compressor>,
    /// The server's kind.
    pub server_kind: ServerKind,
    /// `setName`, for replica set members.
    pub set_name: Option<String>,
    /// `hosts`: the replica set's electable members.
    pub hosts: Vec<String>,
    /// `primary`, as the server sees it.
    pub primary: Option<String>,
    /// `me`: the server's own name for itself.
    pub me: Option<String>,
    /// The whole parsed reply (including its raw document).
    pub hello: HelloReply,
}

impl StreamDescription {
    /// Builds the description from a hello reply; `offered` is the client's compressor list
    /// in order of preference.
    ///
    /// A `maxMessageSizeBytes` beyond what a frame's `i32` length can express is clamped
    /// to `i32::MAX`.
    pub fn from_hello(
        address: ServerAddress,
        hello: HelloReply,
        offered: &[Compressor],
    ) -> StreamDescription {
        let frame_max = usize::try_from(i32::MAX).unwrap_or(usize::MAX);
        StreamDescription {
            address,
            min_wire_version: hello.min_wire_version,
            max_wire_version: hello.max_wire_version,
            max_bson_object_size: hello.max_bson_object_size,
            max_message_size_bytes: hello.max_message_size_bytes.min(frame_max),
            max_write_batch_size: hello.max_write_batch_size,
            logical_session_timeout: session_timeout(hello.logical_session_timeout_minutes),
            compressor: negotiate_compressor(offered, &hello.compression),
            server_kind: ServerKind::from_hello(&hello),
            set_name: hello.set_name.clone(),
            hosts: hello.hosts.clone(),
            primary: hello.primary.clone(),
            me: hello.me.clone(),
            hello,
        }
    }
}

/// The compressor to use: the first of the client's `offered` list (in its order of
/// preference) whose name the server's `compression` list contains and that this build
/// supports. The client's entry is returned, so a configured level is kept.
///
/// ```
/// use brook_conn::negotiate_compressor;
/// use brook_wire::Compressor;
/// let offered = [Compressor::Noop, Compressor::Zstd { level: Some(3) }];
/// let server = vec!["zstd".to_owned(), "noop".to_owned()];
/// assert_eq!(negotiate_compressor(&offered, &server), Some(Compressor::Noop));
/// assert_eq!(negotiate_compressor(&offered, &[]), None);
/// ```
pub fn negotiate_compressor(offered: &[Compressor], server: &[String]) -> Option<Compressor> {
    offered
        .iter()
        .find(|c| c.is_available() && server.iter().any(|s| s.eq_ignore_ascii_case(c.name())))
        .copied()
}

fn session_timeout(minutes: Option<i64>) -> Option<Duration> {
    let minutes = u64::try_from(minutes?).ok()?;
    Some(Duration::from_secs(minutes.checked_mul(60)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_wire::SharedDoc;
    use bson::{Document, doc};

    fn hello(d: Document) -> HelloReply {
        HelloReply::parse(&SharedDoc::from_document(&d).unwrap()).unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    #[cfg(all(feature = "snappy", feature = "zlib", feature = "zstd"))]
    fn first_of_the_clients_list_that_the_server_lists_wins() {
        let offered = [
            Compressor::Zstd { level: None },
            Compressor::Snappy,
            Compressor::Zlib { level: Some(4) },
        ];
        assert_eq!(
            negotiate_compressor(&offered, &names(&["zlib", "snappy"])),
            Some(Compressor::Snappy)
        );
        assert_eq!(
            negotiate_compressor(&offered, &names(&["zlib"])),
            Some(Compressor::Zlib { level: Some(4) })
        );
        assert_eq!(
            negotiate_compressor(&offered, &names(&["snappy", "zstd"])),
            Some(Compressor::Zstd { level: None })
        );
        assert_eq!(negotiate_compressor(&offered, &names(&["lz4"])), None);
        assert_eq!(negotiate_compressor(&offered, &[]), None);
        assert_eq!(negotiate_compressor(&[], &names(&["zlib"])), None);
    }

    #[test]
    fn noop_is_always_available() {
        assert_eq!(
            negotiate_compressor(&[Compressor::Noop], &names(&["NOOP"])),
            Some(Compressor::Noop)
        );
        assert_eq!(
            negotiate_compressor(&[Compressor::Noop], &names(&["zlib"])),
            None
        );
    }

    #[test]
    #[cfg(not(feature = "zstd"))]
    fn a_compressor_this_build_lacks_is_never_chosen() {
        assert_eq!(
            negotiate_compressor(
                &[Compressor::Zstd { level: None }, Compressor::Noop],
                &names(&["zstd", "noop"])
            ),
            Some(Compressor::Noop)
        );
    }

    #[test]
    #[cfg(all(feature = "snappy", feature = "zlib", feature = "zstd"))]
    fn description_of_a_replica_set_primary() {
        let reply = hello(doc! {
            "isWritablePrimary": true,
            "setName": "rs0",
            "hosts": ["a:27017", "b:27017"],
            "primary": "a:27017",
            "me": "a:27017",
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "maxBsonObjectSize": 16777216,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "logicalSessionTimeoutMinutes": 30,
            "compression": ["zlib"],
            "connectionId": 7,
            "ok": 1.0,
        });
        let d = StreamDescription::from_hello(
            ServerAddress::new("a", 27017),
            reply,
            &[Compressor::Snappy, Compressor::Zlib { level: None }],
        );
        assert_eq!(d.address, ServerAddress::new("a", 27017));
        assert_eq!((d.min_wire_version, d.max_wire_version), (0, 21));
        assert_eq!(d.max_bson_object_size, 16_777_216);
        assert_eq!(d.max_message_size_bytes, 48_000_000);
        assert_eq!(d.max_write_batch_size, 100_000);
        assert_eq!(d.logical_session_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(d.compressor, Some(Compressor::Zlib { level: None }));
        assert_eq!(d.server_kind, ServerKind::RsPrimary);
        assert!(d.server_kind.is_replica_set_member());
        assert_eq!(d.set_name.as_deref(), Some("rs0"));
        assert_eq!(d.hosts, names(&["a:27017", "b:27017"]));
        assert_eq!(d.primary.as_deref(), Some("a:27017"));
        assert_eq!(d.me.as_deref(), Some("a:27017"));
        assert_eq!(d.hello.connection_id, Some(7));
    }

    #[test]
    fn defaults_when_the_reply_is_sparse() {
        let d = StreamDescription::from_hello(
            ServerAddress::new("h", 1),
            hello(doc! { "ok": 1 }),
            &[Compressor::Snappy],
        );
        assert_eq!(d.server_kind, ServerKind::Standalone);
        assert!(!d.server_kind.is_replica_set_member());
        assert_eq!(d.max_message_size_bytes, 48_000_000);
        assert_eq!(d.max_bson_object_size, 16 * 1024 * 1024);
        assert_eq!(d.max_write_batch_size, 100_000);
        assert_eq!(d.logical_session_timeout, None);
        assert_eq!(d.compressor, None);
        assert!(d.hosts.is_empty() && d.set_name.is_none() && d.me.is_none());
    }

    #[test]
    fn server_kinds() {
        let kind = |d: Document| ServerKind::from_hello(&hello(d));
        assert_eq!(
            kind(doc! { "ok": 1, "msg": "isdbgrid" }),
            ServerKind::Mongos
        );
        assert_eq!(
            kind(doc! { "ok": 1, "setName": "rs", "secondary": true }),
            ServerKind::RsSecondary
        );
        assert_eq!(
            kind(doc! { "ok": 1, "setName": "rs", "arbiterOnly": true }),
            ServerKind::RsArbiter
        );
        assert_eq!(
            kind(doc! { "ok": 1, "setName": "rs", "hidden": true }),
            ServerKind::RsOther
        );
        assert_eq!(
            kind(doc! { "ok": 1, "ismaster": true, "setName": "rs" }),
            ServerKind::RsPrimary
        );
        assert_eq!(
            kind(doc! { "ok": 1, "isreplicaset": true }),
            ServerKind::RsGhost
        );
        assert_eq!(
            kind(doc! { "ok": 1, "isWritablePrimary": true }),
            ServerKind::Standalone
        );
    }

    #[test]
    fn session_timeouts() {
        assert_eq!(session_timeout(None), None);
        assert_eq!(session_timeout(Some(-1)), None);
        assert_eq!(session_timeout(Some(0)), Some(Duration::ZERO));
        assert_eq!(session_timeout(Some(i64::MAX)), None);
    }

    #[test]
    fn huge_message_size_is_clamped_to_the_frame_limit() {
        let d = StreamDescription::from_hello(
            ServerAddress::new("h", 1),
            hello(doc! { "ok": 1, "maxMessageSizeBytes": i64::MAX }),
            &[],
        );
        assert_eq!(d.max_message_size_bytes, 2_147_483_647);
    }
}
