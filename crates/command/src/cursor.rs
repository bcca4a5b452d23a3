//! The cursor commands `find`, `aggregate`, `getMore` and `killCursors`, and the
//! cursor reply they share.

use std::fmt;
use std::time::Duration;

use brook_wire::SharedDoc;
use bson::{Bson, Document, Timestamp};

use crate::error::{CommandError, check_ok_shared};
use crate::parse::Fields;
use crate::{Command, CommandBody, Reply, count_bson, with_db};

/// A namespace, `db.coll`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// The database.
    pub db: String,
    /// The collection (may itself contain dots, e.g. `$cmd.aggregate`).
    pub coll: String,
}

impl Namespace {
    /// Splits `ns` at its first `.`; `None` unless both parts are non-empty.
    pub fn parse(ns: &str) -> Option<Namespace> {
        let (db, coll) = ns.split_once('.')?;
        if db.is_empty() || coll.is_empty() {
            return None;
        }
        Some(Namespace {
            db: db.to_owned(),
            coll: coll.to_owned(),
        })
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// A reply that opens or continues a cursor:
/// `{ok: 1, cursor: {id, ns, firstBatch | nextBatch, postBatchResumeToken?},
/// operationTime?, $clusterTime?}`.
#[derive(Debug, Clone)]
pub struct CursorReply {
    /// The cursor id (0: the cursor is exhausted). Read from int32 or int64.
    pub id: i64,
    /// The cursor's namespace; `getMore`s go to `ns.coll` on `ns.db`.
    pub ns: Namespace,
    /// The batch's documents, each sharing the reply's buffer (no per-document copy).
    pub batch: Vec<SharedDoc>,
    /// `cursor.postBatchResumeToken` (change streams), sharing the reply's buffer.
    pub post_batch_resume_token: Option<SharedDoc>,
    /// The reply's `operationTime`.
    pub operation_time: Option<Timestamp>,
    /// The reply's `$clusterTime`, sharing the reply's buffer.
    pub cluster_time: Option<SharedDoc>,
    /// True if the batch was a `firstBatch`, false for a `nextBatch`.
    pub first_batch: bool,
}

impl CursorReply {
    /// Parses a cursor reply body (checking `ok` first); `command` names the command in
    /// errors.
    pub fn parse(command: &'static str, body: &SharedDoc) -> Result<CursorReply, CommandError> {
        check_ok_shared(command, body)?;
        let top = Fields::new(command, body.as_raw());
        let cursor = Fields::new(command, top.req_doc("cursor")?);

        let id = cursor
            .opt_i64("id")?
            .ok_or_else(|| cursor.malformed("the cursor has no `id`"))?;
        let ns_text = cursor
            .opt_str("ns")?
            .ok_or_else(|| cursor.malformed("the cursor has no `ns`"))?;
        let ns = Namespace::parse(ns_text).ok_or_else(|| {
            cursor.malformed(format!("the cursor's ns {ns_text:?} is not db.coll"))
        })?;

        let (key, array, first_batch) = if let Some(array) = cursor.opt_array("firstBatch")? {
            ("firstBatch", array, true)
        } else if let Some(array) = cursor.opt_array("nextBatch")? {
            ("nextBatch", array, false)
        } else {
            return Err(cursor.malformed("the cursor has neither `firstBatch` nor `nextBatch`"));
        };
        let batch = cursor.shared_docs(key, array, body)?;

        Ok(CursorReply {
            id,
            ns,
            batch,
            post_batch_resume_token: cursor.opt_shared_doc("postBatchResumeToken", body)?,
            operation_time: top.opt_timestamp("operationTime")?,
            cluster_time: top.opt_shared_doc("$clusterTime", body)?,
            first_batch,
        })
    }

    /// Whether the server still holds the cursor (`id != 0`).
    pub fn is_alive(&self) -> bool {
        self.id != 0
    }
}

/// `{find: coll, filter, sort?, projection?, hint?, skip?, limit?, batchSize?,
/// singleBatch?, comment?, maxTimeMS?, collation?, $db}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    /// The collection.
    pub coll: String,
    /// The filter (always sent, `{}` matches everything).
    pub filter: Document,
    /// `sort`.
    pub sort: Option<Document>,
    /// `projection`.
    pub projection: Option<Document>,
    /// `hint`: an index name or key pattern.
    pub hint: Option<Bson>,
    /// `skip`.
    pub skip: Option<u64>,
    /// `limit` (0 is no limit).
    pub limit: Option<u64>,
    /// `batchSize` of the first batch.
    pub batch_size: Option<u32>,
    /// `singleBatch`: close the cursor after the first batch.
    pub single_batch: Option<bool>,
    /// `comment`.
    pub comment: Option<Bson>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `collation`.
    pub collation: Option<Document>,
}

impl Find {
    /// Finds the documents of `coll` matching `filter`.
    pub fn new(coll: impl Into<String>, filter: Document) -> Self {
        Find {
            coll: coll.into(),
            filter,
            sort: None,
            projection: None,
            hint: None,
            skip: None,
            limit: None,
            batch_size: None,
            single_batch: None,
            comment: None,
            max_time_ms: None,
            collation: None,
        }
    }
}

impl Command for Find {
    const NAME: &'static str = "find";
    type Output = CursorReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("filter", self.filter.clone());
        if let Some(sort) = &self.sort {
            body.insert("sort", sort.clone());
        }
        if let Some(projection) = &self.projection {
            body.insert("projection", projection.clone());
        }
        if let Some(hint) = &self.hint {
            body.insert("hint", hint.clone());
        }
        if let Some(skip) = self.skip {
            body.insert("skip", count_bson("skip", skip)?);
        }
        if let Some(limit) = self.limit {
            body.insert("limit", count_bson("limit", limit)?);
        }
        if let Some(size) = self.batch_size {
            body.insert("batchSize", count_bson("batchSize", u64::from(size))?);
        }
        if let Some(single) = self.single_batch {
            body.insert("singleBatch", single);
        }
        if let Some(comment) = &self.comment {
            body.insert("comment", comment.clone());
        }
        if let Some(ms) = self.max_time_ms {
            body.insert("maxTimeMS", count_bson("maxTimeMS", ms)?);
        }
        if let Some(collation) = &self.collation {
            body.insert("collation", collation.clone());
        }
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<CursorReply, CommandError> {
        CursorReply::parse(Self::NAME, &reply.body)
    }
}

/// What an `aggregate` runs on.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateTarget {
    /// A collection: `aggregate: "<coll>"`.
    Collection(String),
    /// The database itself: `aggregate: 1` (database-level change streams, `$currentOp`).
    Database,
}

/// `{aggregate: coll | 1, pipeline, cursor: {batchSize?}, collation?, comment?,
/// readConcern?, maxTimeMS?, allowDiskUse?, $db}`.
///
/// For a change stream, `pipeline` starts with the `$changeStream` stage; its
/// `maxAwaitTimeMS` belongs on the [`GetMore`]s, never here.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The collection or database aggregated.
    pub target: AggregateTarget,
    /// The stages.
    pub pipeline: Vec<Document>,
    /// `cursor.batchSize` of the first batch.
    pub batch_size: Option<u32>,
    /// `collation`.
    pub collation: Option<Document>,
    /// `comment`.
    pub comment: Option<Bson>,
    /// `readConcern`.
    pub read_concern: Option<Document>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `allowDiskUse`.
    pub allow_disk_use: Option<bool>,
}

impl Aggregate {
    /// Runs `pipeline` on `target`.
    pub fn new(target: AggregateTarget, pipeline: Vec<Document>) -> Self {
        Aggregate {
            target,
            pipeline,
            batch_size: None,
            collation: None,
            comment: None,
            read_concern: None,
            max_time_ms: None,
            allow_disk_use: None,
        }
    }
}

impl Command for Aggregate {
    const NAME: &'static str = "aggregate";
    type Output = CursorReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        match &self.target {
            AggregateTarget::Collection(coll) => body.insert(Self::NAME, coll),
            AggregateTarget::Database => body.insert(Self::NAME, 1),
        };
        body.insert("pipeline", self.pipeline.clone());
        let mut cursor = Document::new();
        if let Some(size) = self.batch_size {
            cursor.insert("batchSize", count_bson("batchSize", u64::from(size))?);
        }
        body.insert("cursor", cursor);
        if let Some(collation) = &self.collation {
            body.insert("collation", collation.clone());
        }
        if let Some(comment) = &self.comment {
            body.insert("comment", comment.clone());
        }
        if let Some(rc) = &self.read_concern {
            body.insert("readConcern", rc.clone());
        }
        if let Some(ms) = self.max_time_ms {
            body.insert("maxTimeMS", count_bson("maxTimeMS", ms)?);
        }
        if let Some(allow) = self.allow_disk_use {
            body.insert("allowDiskUse", allow);
        }
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<CursorReply, CommandError> {
        CursorReply::parse(Self::NAME, &reply.body)
    }
}

/// `{getMore: Int64 id, collection, batchSize?, maxTimeMS?, comment?, $db}`: the next
/// batch of a cursor, from the server that owns it. Run it on the cursor's `ns.db`.
///
/// `comment` is sent only when `max_wire_version` (that of the connection the getMore
/// is sent on) is 9 or more: older servers reject `comment` on `getMore`. It defaults
/// to 0, so a caller that sets `comment` must also set the wire version.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMore {
    /// The cursor id (sent as Int64; must not be 0).
    pub id: i64,
    /// The cursor's collection (`ns.coll` of the cursor reply).
    pub coll: String,
    /// `batchSize`.
    pub batch_size: Option<u32>,
    /// `maxTimeMS`: for a tailable-await cursor (change stream), the `maxAwaitTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment` (sent only when `max_wire_version >= 9`).
    pub comment: Option<Bson>,
    /// The max wire version of the server the getMore goes to; decides `comment`.
    pub max_wire_version: i32,
}

impl GetMore {
    /// The first wire version (4.4) whose `getMore` accepts a `comment`.
    pub const COMMENT_MIN_WIRE_VERSION: i32 = 9;

    /// A getMore of cursor `id` on collection `coll`.
    pub fn new(id: i64, coll: impl Into<String>) -> Self {
        GetMore {
            id,
            coll: coll.into(),
            batch_size: None,
            max_time_ms: None,
            comment: None,
            max_wire_version: 0,
        }
    }
}

impl Command for GetMore {
    const NAME: &'static str = "getMore";
    type Output = CursorReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.id == 0 {
            return Err(CommandError::Invalid(
                "getMore on cursor id 0 (the cursor is exhausted)".to_owned(),
            ));
        }
        let mut body = Document::new();
        body.insert(Self::NAME, Bson::Int64(self.id));
        body.insert("collection", &self.coll);
        if let Some(size) = self.batch_size {
            body.insert("batchSize", count_bson("batchSize", u64::from(size))?);
        }
        if let Some(ms) = self.max_time_ms {
            body.insert("maxTimeMS", count_bson("maxTimeMS", ms)?);
        }
        if let Some(comment) = &self.comment
            && self.max_wire_version >= Self::COMMENT_MIN_WIRE_VERSION
        {
            body.insert("comment", comment.clone());
        }
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<CursorReply, CommandError> {
        CursorReply::parse(Self::NAME, &reply.body)
    }
}

/// How a cursor's getMores are built: the same for find/aggregate cursors and change streams.
///
/// The cursor-opening command (`find`, `aggregate`) takes its own `batchSize`; these
/// options shape every [`GetMore`] that follows, built by [`build`](Self::build):
///
/// * `batchSize` only when `batch_size` is non-zero. A batch size of 0 means "open the
///   cursor without returning documents", which belongs on the `find`/`aggregate`
///   only: on a getMore servers reject it or treat it as "no limit" depending on the
///   version, so it is never sent there.
/// * `maxTimeMS` = `max_await_time` in whole milliseconds, saturating at `i64::MAX`
///   (the largest value the command can carry; the server bounds it further).
/// * `comment` only for servers of wire version 9 (4.4) or more (see
///   [`GetMore::COMMENT_MIN_WIRE_VERSION`]): older servers reject it on a getMore.
///
/// ```
/// use std::time::Duration;
/// use brook_command::{Command, GetMoreOptions, Namespace};
/// use bson::doc;
///
/// let options = GetMoreOptions {
///     batch_size: Some(0),
///     max_await_time: Some(Duration::from_millis(1500)),
///     comment: Some("tail".into()),
/// };
/// let ns = Namespace::parse("app.events").unwrap();
/// // Wire version 8: no comment; batch size 0: no batchSize.
/// assert_eq!(
///     options.build(42, &ns, 8).build(&ns.db)?.body,
///     doc! { "getMore": 42i64, "collection": "events", "maxTimeMS": 1500, "$db": "app" },
/// );
/// # Ok::<(), brook_command::CommandError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetMoreOptions {
    /// `batchSize` of each getMore; `Some(0)` sends none (see above).
    pub batch_size: Option<u32>,
    /// How long each getMore of a tailable-await cursor (a change stream) waits for
    /// new documents on the server: its `maxTimeMS`.
    pub max_await_time: Option<Duration>,
    /// `comment` of each getMore, on servers of wire version 9 or more.
    pub comment: Option<Bson>,
}

impl GetMoreOptions {
    /// The getMore for cursor `id` on `ns`, for a server of `max_wire_version`.
    ///
    /// Run it on `ns.db`, on the server that owns the cursor.
    pub fn build(&self, id: i64, ns: &Namespace, max_wire_version: i32) -> GetMore {
        GetMore {
            id,
            coll: ns.coll.clone(),
            batch_size: self.batch_size.filter(|&size| size != 0),
            max_time_ms: self.max_await_time.map(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                ms.min(i64::MAX.unsigned_abs())
            }),
            comment: self.comment.clone(),
            max_wire_version,
        }
    }
}

/// `{killCursors: coll, cursors: [Int64 id, ...], $db}`: closes cursors on the server
/// that owns them. Run it on the cursors' `ns.db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCursors {
    /// The cursors' collection.
    pub coll: String,
    /// The cursor ids (sent as Int64; at least one).
    pub ids: Vec<i64>,
}

impl KillCursors {
    /// Kills `ids` in `coll`.
    pub fn new(coll: impl Into<String>, ids: Vec<i64>) -> Self {
        KillCursors {
            coll: coll.into(),
            ids,
        }
    }
}

impl Command for KillCursors {
    const NAME: &'static str = "killCursors";
    type Output = KillCursorsReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.ids.is_empty() {
            return Err(CommandError::Invalid(
                "killCursors needs at least one cursor id".to_owned(),
            ));
        }
        let ids: Vec<Bson> = self.ids.iter().copied().map(Bson::Int64).collect();
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("cursors", ids);
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<KillCursorsReply, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        let f = Fields::new(Self::NAME, reply.body.as_raw());
        Ok(KillCursorsReply {
            killed: f.opt_i64_array("cursorsKilled")?.unwrap_or_default(),
            not_found: f.opt_i64_array("cursorsNotFound")?.unwrap_or_default(),
            alive: f.opt_i64_array("cursorsAlive")?.unwrap_or_default(),
            unknown: f.opt_i64_array("cursorsUnknown")?.unwrap_or_default(),
        })
    }
}

/// What a `killCursors` did with each id (missing lists are empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillCursorsReply {
    /// `cursorsKilled`.
    pub killed: Vec<i64>,
    /// `cursorsNotFound`.
    pub not_found: Vec<i64>,
    /// `cursorsAlive`.
    pub alive: Vec<i64>,
    /// `cursorsUnknown`.
    pub unknown: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Binary, doc, spec::BinarySubtype};

    fn reply(doc: Document) -> Reply {
        Reply::from_document(&doc).unwrap()
    }

    fn cluster_time() -> Document {
        doc! {
            "clusterTime": Timestamp { time: 1_722_000_200, increment: 9 },
            "signature": {
                "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xab; 20] },
                "keyId": 7_394_812_345_678_901_249i64,
            },
        }
    }

    fn event(n: i32) -> Document {
        doc! {
            "_id": { "_data": format!("8266A1F2C8000000{n:02}2B042C0100296E5A1004") },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_722_000_200, increment: n.unsigned_abs() },
            "wallTime": bson::DateTime::from_millis(1_722_000_200_000),
            "fullDocument": { "_id": n, "v": "x".repeat(10) },
            "ns": { "db": "app", "coll": "events" },
            "documentKey": { "_id": n },
        }
    }

    /// A MongoDB 7/8 change-stream aggregate reply.
    fn aggregate_reply() -> Document {
        doc! {
            "cursor": {
                "firstBatch": [event(1), event(2), event(3)],
                "postBatchResumeToken": { "_data": "8266A1F2C8000000032B042C0100296E5A1004" },
                "id": 5_678_901_234_567_890_123i64,
                "ns": "app.events",
            },
            "ok": 1.0,
            "$clusterTime": cluster_time(),
            "operationTime": Timestamp { time: 1_722_000_200, increment: 9 },
        }
    }

    #[test]
    fn find_bodies() {
        let cmd = Find::new("c", doc! {});
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! { "find": "c", "filter": {}, "$db": "db" }
        );

        let mut cmd = Find::new("c", doc! { "a": { "$gt": 1 } });
        cmd.sort = Some(doc! { "a": -1 });
        cmd.projection = Some(doc! { "_id": 0 });
        cmd.hint = Some(Bson::String("a_1".into()));
        cmd.skip = Some(5);
        cmd.limit = Some(10);
        cmd.batch_size = Some(2);
        cmd.single_batch = Some(true);
        cmd.comment = Some(Bson::String("hi".into()));
        cmd.max_time_ms = Some(3_000_000_000);
        cmd.collation = Some(doc! { "locale": "en" });
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! {
                "find": "c",
                "filter": { "a": { "$gt": 1 } },
                "sort": { "a": -1 },
                "projection": { "_id": 0 },
                "hint": "a_1",
                "skip": 5,
                "limit": 10,
                "batchSize": 2,
                "singleBatch": true,
                "comment": "hi",
                "maxTimeMS": 3_000_000_000i64,
                "collation": { "locale": "en" },
                "$db": "db",
            }
        );
    }

    #[test]
    fn aggregate_bodies() {
        let pipeline = vec![
            doc! { "$changeStream": { "fullDocument": "updateLookup" } },
            doc! { "$match": { "operationType": "insert" } },
        ];
        let cmd = Aggregate::new(
            AggregateTarget::Collection("events".into()),
            pipeline.clone(),
        );
        assert_eq!(
            cmd.build("app").unwrap().body,
            doc! { "aggregate": "events", "pipeline": pipeline.clone(), "cursor": {}, "$db": "app" }
        );

        let mut cmd = Aggregate::new(AggregateTarget::Database, pipeline.clone());
        cmd.batch_size = Some(0);
        cmd.collation = Some(doc! { "locale": "fr" });
        cmd.comment = Some(Bson::Document(doc! { "tag": 1 }));
        cmd.read_concern = Some(doc! { "level": "majority" });
        cmd.max_time_ms = Some(1000);
        cmd.allow_disk_use = Some(true);
        let body = cmd.build("app").unwrap().body;
        assert_eq!(
            body,
            doc! {
                "aggregate": 1,
                "pipeline": pipeline,
                "cursor": { "batchSize": 0 },
                "collation": { "locale": "fr" },
                "comment": { "tag": 1 },
                "readConcern": { "level": "majority" },
                "maxTimeMS": 1000,
                "allowDiskUse": true,
                "$db": "app",
            }
        );
        assert_eq!(body.get("aggregate"), Some(&Bson::Int32(1)));
    }

    #[test]
    fn get_more_bodies_and_comment_gating() {
        let mut cmd = GetMore::new(42, "events");
        assert_eq!(
            cmd.build("app").unwrap().body,
            doc! { "getMore": 42i64, "collection": "events", "$db": "app" }
        );
        assert_eq!(
            cmd.build("app").unwrap().body.get("getMore"),
            Some(&Bson::Int64(42))
        );

        cmd.batch_size = Some(100);
        cmd.max_time_ms = Some(1000);
        cmd.comment = Some(Bson::String("c".into()));
        cmd.max_wire_version = 8;
        assert_eq!(
            cmd.build("app").unwrap().body,
            doc! { "getMore": 42i64, "collection": "events", "batchSize": 100, "maxTimeMS": 1000, "$db": "app" },
            "no comment below wire version 9"
        );
        cmd.max_wire_version = 9;
        assert_eq!(
            cmd.build("app").unwrap().body,
            doc! {
                "getMore": 42i64, "collection": "events", "batchSize": 100, "maxTimeMS": 1000,
                "comment": "c", "$db": "app",
            }
        );
        assert!(matches!(
            GetMore::new(0, "c").build("app"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn get_more_options_build_the_get_more() {
        let ns = Namespace::parse("app.events").unwrap();
        let body = |options: &GetMoreOptions, wire: i32| {
            let cmd = options.build(42, &ns, wire);
            assert_eq!((cmd.id, cmd.coll.as_str()), (42, "events"));
            cmd.build(&ns.db).unwrap().body
        };
        assert_eq!(
            body(&GetMoreOptions::default(), 21),
            doc! { "getMore": 42i64, "collection": "events", "$db": "app" }
        );
        let mut options = GetMoreOptions {
            batch_size: Some(5),
            max_await_time: Some(Duration::from_micros(2_500_900)),
            comment: Some(Bson::String("c".into())),
        };
        assert_eq!(
            body(&options, 9),
            doc! {
                "getMore": 42i64, "collection": "events", "batchSize": 5, "maxTimeMS": 2500,
                "comment": "c", "$db": "app",
            }
        );
        // No comment below wire version 9.
        assert_eq!(
            body(&options, 8),
            doc! { "getMore": 42i64, "collection": "events", "batchSize": 5, "maxTimeMS": 2500, "$db": "app" }
        );
        // A batch size of 0 belongs on the find/aggregate only: never on a getMore.
        options.batch_size = Some(0);
        options.comment = None;
        assert_eq!(options.build(42, &ns, 9).batch_size, None);
        assert_eq!(
            body(&options, 9),
            doc! { "getMore": 42i64, "collection": "events", "maxTimeMS": 2500, "$db": "app" }
        );
        // An await time beyond what maxTimeMS can carry saturates: the getMore builds.
        options.max_await_time = Some(Duration::MAX);
        assert_eq!(
            body(&options, 9).get("maxTimeMS"),
            Some(&Bson::Int64(i64::MAX))
        );
    }

    #[test]
    fn kill_cursors_bodies() {
        let cmd = KillCursors::new("events", vec![5, 1 << 40]);
        let body = cmd.build("app").unwrap().body;
        assert_eq!(
            body,
            doc! { "killCursors": "events", "cursors": [5i64, 1i64 << 40], "$db": "app" }
        );
        assert_eq!(body.get_array("cursors").unwrap()[0], Bson::Int64(5));
        assert!(matches!(
            KillCursors::new("c", vec![]).build("app"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn parses_a_change_stream_aggregate_reply() {
        let cmd = Aggregate::new(AggregateTarget::Collection("events".into()), vec![]);
        let r = cmd.handle_reply(reply(aggregate_reply())).unwrap();
        assert_eq!(r.id, 5_678_901_234_567_890_123);
        assert!(r.is_alive());
        assert_eq!(
            r.ns,
            Namespace {
                db: "app".into(),
                coll: "events".into()
            }
        );
        assert!(r.first_batch);
        assert_eq!(r.batch.len(), 3);
        for (i, doc) in r.batch.iter().enumerate() {
            let n = i32::try_from(i).unwrap() + 1;
            assert_eq!(doc.to_document().unwrap(), event(n));
        }
        assert_eq!(
            r.post_batch_resume_token.unwrap().to_document().unwrap(),
            doc! { "_data": "8266A1F2C8000000032B042C0100296E5A1004" }
        );
        assert_eq!(
            r.operation_time,
            Some(Timestamp {
                time: 1_722_000_200,
                increment: 9
            })
        );
        assert_eq!(
            r.cluster_time.unwrap().to_document().unwrap(),
            cluster_time()
        );
    }

    #[test]
    fn batch_documents_share_the_reply_buffer() {
        let reply = reply(aggregate_reply());
        let buf = reply.body.bytes().clone();
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let r = Aggregate::new(AggregateTarget::Database, vec![])
            .handle_reply(reply)
            .unwrap();
        let inside = |d: &SharedDoc| {
            let p = d.bytes().as_ptr() as usize;
            p > start && p + d.bytes().len() <= end
        };
        assert!(
            r.batch.iter().all(inside),
            "every batch document points into the reply"
        );
        assert!(inside(r.post_batch_resume_token.as_ref().unwrap()));
        assert!(inside(r.cluster_time.as_ref().unwrap()));
        // And they are distinct, ordered slices of it.
        let offsets: Vec<usize> = r
            .batch
            .iter()
            .map(|d| d.bytes().as_ptr() as usize)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn parses_get_more_replies_with_int32_ids_and_empty_batches() {
        let cmd = GetMore::new(7, "events");
        let r = cmd
            .handle_reply(reply(doc! {
                "cursor": {
                    "nextBatch": [],
                    "postBatchResumeToken": { "_data": "8266A1F2D0000000012B0429296E1404" },
                    "id": 7,
                    "ns": "app.events",
                },
                "ok": 1,
            }))
            .unwrap();
        assert_eq!(r.id, 7);
        assert!(!r.first_batch);
        assert!(r.batch.is_empty());
        assert!(r.post_batch_resume_token.is_some());
        assert!(r.operation_time.is_none() && r.cluster_time.is_none());

        let r = cmd
            .handle_reply(reply(doc! {
                "cursor": { "nextBatch": [{ "_id": 1 }], "id": 0i64, "ns": "app.$cmd.aggregate" },
                "ok": true,
            }))
            .unwrap();
        assert!(!r.is_alive());
        assert_eq!(
            r.ns,
            Namespace {
                db: "app".into(),
                coll: "$cmd.aggregate".into()
            }
        );
        assert_eq!(r.batch.len(), 1);
    }

    #[test]
    fn ok_forms() {
        let cursor = doc! { "firstBatch": [], "id": 0i64, "ns": "a.b" };
        for ok in [
            Bson::Double(1.0),
            Bson::Int32(1),
            Bson::Int64(1),
            Bson::Boolean(true),
        ] {
            let r = Find::new("b", doc! {})
                .handle_reply(reply(doc! { "cursor": cursor.clone(), "ok": ok.clone() }));
            assert!(r.is_ok(), "ok: {ok}");
        }
        for ok in [
            Bson::Double(0.0),
            Bson::Int32(0),
            Bson::Int64(0),
            Bson::Boolean(false),
        ] {
            let r = Find::new("b", doc! {})
                .handle_reply(reply(doc! { "cursor": cursor.clone(), "ok": ok.clone() }));
            assert!(matches!(r, Err(CommandError::Server(_))), "ok: {ok}");
        }
        let r = Find::new("b", doc! {})
            .handle_reply(reply(doc! { "cursor": cursor.clone(), "ok": "1" }));
        assert!(matches!(
            r,
            Err(CommandError::MalformedReply {
                command: "find",
                ..
            })
        ));
        let r = Find::new("b", doc! {}).handle_reply(reply(doc! { "cursor": cursor }));
        assert!(matches!(
            r,
            Err(CommandError::MalformedReply {
                command: "find",
                ..
            })
        ));
    }

    #[test]
    fn server_errors_with_and_without_code_and_labels() {
        let cmd = GetMore::new(7, "events");
        let err = cmd
            .handle_reply(reply(doc! {
                "ok": 0.0,
                "errmsg": "cursor id 7 not found",
                "code": 43,
                "codeName": "CursorNotFound",
                "$clusterTime": cluster_time(),
                "operationTime": Timestamp { time: 1, increment: 1 },
            }))
            .unwrap_err();
        let se = err.server_error().unwrap();
        assert_eq!(se.code, Some(43));
        assert_eq!(se.code_name.as_deref(), Some("CursorNotFound"));
        assert_eq!(se.message, "cursor id 7 not found");
        assert!(se.labels.is_empty());
        assert!(!se.write_concern_error);
        assert!(se.raw.is_some());
        assert_eq!(
            err.to_string(),
            "server error CursorNotFound (43): cursor id 7 not found"
        );

        let err = cmd
            .handle_reply(reply(doc! {
                "ok": 0,
                "errmsg": "interrupted at shutdown",
                "code": 11600i64,
                "codeName": "InterruptedAtShutdown",
                "errorLabels": ["ResumableChangeStreamError", "RetryableWriteError"],
            }))
            .unwrap_err();
        assert_eq!(err.code(), Some(11600));
        assert!(err.has_label("ResumableChangeStreamError"));
        assert_eq!(err.labels().len(), 2);

        let err = cmd
            .handle_reply(reply(doc! { "ok": 0.0, "errmsg": "something odd" }))
            .unwrap_err();
        let se = err.server_error().unwrap();
        assert_eq!(se.code, None);
        assert_eq!(se.code_name, None);
        assert_eq!(se.message, "something odd");
        assert_eq!(err.to_string(), "server error: something odd");

        // Odd types in an error reply do not hide the error.
        let err = cmd
            .handle_reply(reply(
                doc! { "ok": 0, "code": "x", "errmsg": 5, "errorLabels": ["A", 1, "B"] },
            ))
            .unwrap_err();
        let se = err.server_error().unwrap();
        assert_eq!(se.code, None);
        assert_eq!(se.message, "");
        assert_eq!(se.labels, vec!["A".to_owned(), "B".to_owned()]);
        let err = cmd
            .handle_reply(reply(doc! { "ok": 0, "code": 43.0 }))
            .unwrap_err();
        assert_eq!(err.code(), Some(43));
    }

    #[test]
    fn malformed_cursor_replies() {
        let cmd = GetMore::new(7, "events");
        let cases = [
            doc! { "ok": 1 },
            doc! { "ok": 1, "cursor": 5 },
            doc! { "ok": 1, "cursor": { "ns": "a.b", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": "7", "ns": "a.b", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 1.5, "ns": "a.b", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": 3, "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "nodot", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": ".b", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.", "nextBatch": [] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b" } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b", "nextBatch": { "0": {} } } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b", "nextBatch": [{}, 3] } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b", "nextBatch": [], "postBatchResumeToken": "t" } },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b", "nextBatch": [] }, "operationTime": 5 },
            doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "a.b", "nextBatch": [] }, "$clusterTime": 5 },
        ];
        for bad in cases {
            let err = cmd.handle_reply(reply(bad.clone())).unwrap_err();
            assert!(
                matches!(
                    err,
                    CommandError::MalformedReply {
                        command: "getMore",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn corrupt_bytes_inside_a_valid_frame_are_malformed_not_a_panic() {
        // A document whose length prefix and terminator are right but whose element
        // claims a string longer than the document.
        let mut bytes =
            bson::rawdoc! { "ok": 1, "cursor": { "id": 1i64, "ns": "a.b", "nextBatch": [] } }
                .into_bytes();
        // Find the "ns" string's length prefix and make it huge.
        let pos = bytes.windows(3).position(|w| w == b"ns\0").unwrap() + 3;
        bytes.splice(pos..pos + 4, 0x7fff_ffffi32.to_le_bytes());
        // Framing checks only the length prefix and the terminator, so this passes it.
        let doc = SharedDoc::from_bytes(bytes::Bytes::from(bytes)).unwrap();
        let err = GetMore::new(1, "b")
            .handle_reply(Reply::new(doc))
            .unwrap_err();
        assert!(matches!(err, CommandError::MalformedReply { .. }), "{err}");
    }

    #[test]
    fn kill_cursors_replies() {
        let cmd = KillCursors::new("events", vec![1, 2, 3]);
        let r = cmd
            .handle_reply(reply(doc! {
                "cursorsKilled": [1i64],
                "cursorsNotFound": [2i64, 3],
                "cursorsAlive": [],
                "cursorsUnknown": [],
                "ok": 1.0,
            }))
            .unwrap();
        assert_eq!(r.killed, vec![1]);
        assert_eq!(r.not_found, vec![2, 3]);
        assert!(r.alive.is_empty() && r.unknown.is_empty());
        assert_eq!(
            cmd.handle_reply(reply(doc! { "ok": 1 })).unwrap(),
            KillCursorsReply::default()
        );
        assert!(matches!(
            cmd.handle_reply(reply(doc! { "ok": 1, "cursorsKilled": ["1"] })),
            Err(CommandError::MalformedReply {
                command: "killCursors",
                ..
            })
        ));
        assert!(matches!(
            cmd.handle_reply(reply(doc! { "ok": 1, "cursorsKilled": 1 })),
            Err(CommandError::MalformedReply { .. })
        ));
        assert!(matches!(
            cmd.handle_reply(reply(
                doc! { "ok": 0, "code": 13, "errmsg": "unauthorized" }
            )),
            Err(CommandError::Server(_))
        ));
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            Namespace::parse("a.b.c"),
            Some(Namespace {
                db: "a".into(),
                coll: "b.c".into()
            })
        );
        assert_eq!(Namespace::parse("abc"), None);
        assert_eq!(Namespace::parse("a.b").unwrap().to_string(), "a.b");
    }
}
