//! Index management and enumeration: `createIndexes`, `dropIndexes`, `listIndexes`,
//! `listCollections`, `listDatabases`.

use bson::{Bson, Document, RawBsonRef};

use crate::crud::{put, put_max_time};
use crate::error::{CommandError, WriteConcernError, check_ok_shared};
use crate::parse::Fields;
use crate::write::parse_write_concern_error;
use crate::{Command, CommandBody, CursorReply, Reply, count_bson, with_db};

/// The name the server would give an index on `keys` (Index Management specification):
/// each key and its value joined with `_`, e.g. `{a: 1, b: -1}` → `a_1_b_-1`,
/// `{t: "text"}` → `t_text`. Integral numbers are written without a fraction.
pub fn index_name(keys: &Document) -> String {
    let mut parts = Vec::with_capacity(keys.len() * 2);
    for (key, value) in keys {
        parts.push(key.clone());
        parts.push(match value {
            Bson::Int32(v) => v.to_string(),
            Bson::Int64(v) => v.to_string(),
            Bson::Double(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", *v as i64),
            Bson::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    parts.join("_")
}

/// Reads a reply's `writeConcernError`, with the top-level labels.
fn opt_wce(
    command: &'static str,
    reply: &Reply,
) -> Result<Option<WriteConcernError>, CommandError> {
    let f = Fields::new(command, reply.body.as_raw());
    match f.opt_doc("writeConcernError")? {
        None => Ok(None),
        Some(wce) => {
            let labels = f.opt_str_array("errorLabels")?.unwrap_or_default();
            parse_write_concern_error(command, wce, labels, &reply.body).map(Some)
        }
    }
}

/// `{createIndexes: coll, indexes: [{key, name, ...}], writeConcern?, commitQuorum?,
/// maxTimeMS?, comment?, $db}`. Its output is the write concern error, if any (the
/// index names are those sent).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateIndexes {
    /// The collection.
    pub coll: String,
    /// The index specifications, each with `key` and `name`.
    pub indexes: Vec<Document>,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
    /// `commitQuorum`.
    pub commit_quorum: Option<Bson>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl CreateIndexes {
    /// Creates `indexes` on `coll`.
    pub fn new(coll: impl Into<String>, indexes: Vec<Document>) -> Self {
        CreateIndexes {
            coll: coll.into(),
            indexes,
            write_concern: None,
            commit_quorum: None,
            max_time_ms: None,
            comment: None,
        }
    }
}

impl Command for CreateIndexes {
    const NAME: &'static str = "createIndexes";
    type Output = Option<WriteConcernError>;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.indexes.is_empty() {
            return Err(CommandError::Invalid(
                "createIndexes needs at least one index".to_owned(),
            ));
        }
        for index in &self.indexes {
            if !matches!(index.get("key"), Some(Bson::Document(k)) if !k.is_empty()) {
                return Err(CommandError::Invalid(format!(
                    "index {index} has no keys (a non-empty `key` document)"
                )));
            }
            if !matches!(index.get("name"), Some(Bson::String(_))) {
                return Err(CommandError::Invalid(format!("index {index} has no name")));
            }
        }
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("indexes", self.indexes.clone());
        if let Some(wc) = &self.write_concern {
            body.insert("writeConcern", wc.clone());
        }
        if let Some(q) = &self.commit_quorum {
            body.insert("commitQuorum", q.clone());
        }
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.as_ref());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<Option<WriteConcernError>, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        opt_wce(Self::NAME, &reply)
    }
}

/// `{dropIndexes: coll, index: name | "*", writeConcern?, maxTimeMS?, comment?, $db}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DropIndexes {
    /// The collection.
    pub coll: String,
    /// The index's name, or `"*"` for every index but `_id_`.
    pub index: String,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl DropIndexes {
    /// Drops index `index` (a name, or `"*"`) of `coll`.
    pub fn new(coll: impl Into<String>, index: impl Into<String>) -> Self {
        DropIndexes {
            coll: coll.into(),
            index: index.into(),
            write_concern: None,
            max_time_ms: None,
            comment: None,
        }
    }
}

impl Command for DropIndexes {
    const NAME: &'static str = "dropIndexes";
    type Output = Option<WriteConcernError>;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.index.is_empty() {
            return Err(CommandError::Invalid(
                "dropIndexes needs an index name (or \"*\")".to_owned(),
            ));
        }
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("index", &self.index);
        if let Some(wc) = &self.write_concern {
            body.insert("writeConcern", wc.clone());
        }
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.as_ref());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<Option<WriteConcernError>, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        opt_wce(Self::NAME, &reply)
    }
}

/// `{listIndexes: coll, cursor: {batchSize?}, comment?, maxTimeMS?, $db}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListIndexes {
    /// The collection.
    pub coll: String,
    /// `cursor.batchSize`.
    pub batch_size: Option<u32>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl ListIndexes {
    /// Lists the indexes of `coll`.
    pub fn new(coll: impl Into<String>) -> Self {
        ListIndexes {
            coll: coll.into(),
            batch_size: None,
            max_time_ms: None,
            comment: None,
        }
    }
}

/// `cursor: {batchSize?}`.
fn cursor_doc(batch_size: Option<u32>) -> Result<Document, CommandError> {
    let mut cursor = Document::new();
    if let Some(size) = batch_size {
        cursor.insert("batchSize", count_bson("batchSize", u64::from(size))?);
    }
    Ok(cursor)
}

impl Command for ListIndexes {
    const NAME: &'static str = "listIndexes";
    type Output = CursorReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("cursor", cursor_doc(self.batch_size)?);
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.as_ref());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<CursorReply, CommandError> {
        CursorReply::parse(Self::NAME, &reply.body)
    }
}

/// `{listCollections: 1, filter?, nameOnly?, authorizedCollections?, cursor:
/// {batchSize?}, maxTimeMS?, comment?, $db}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListCollections {
    /// `filter`.
    pub filter: Option<Document>,
    /// `nameOnly`.
    pub name_only: Option<bool>,
    /// `authorizedCollections`.
    pub authorized_collections: Option<bool>,
    /// `cursor.batchSize`.
    pub batch_size: Option<u32>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl ListCollections {
    /// Lists every collection.
    pub fn new() -> Self {
        ListCollections::default()
    }
}

impl Command for ListCollections {
    const NAME: &'static str = "listCollections";
    type Output = CursorReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, 1);
        if let Some(filter) = &self.filter {
            body.insert("filter", filter.clone());
        }
        if let Some(v) = self.name_only {
            body.insert("nameOnly", v);
        }
        if let Some(v) = self.authorized_collections {
            body.insert("authorizedCollections", v);
        }
        body.insert("cursor", cursor_doc(self.batch_size)?);
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.as_ref());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<CursorReply, CommandError> {
        CursorReply::parse(Self::NAME, &reply.body)
    }
}

/// `{listDatabases: 1, filter?, nameOnly?, authorizedDatabases?, maxTimeMS?, comment?,
/// $db}`; run it on `admin`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListDatabases {
    /// `filter`.
    pub filter: Option<Document>,
    /// `nameOnly`.
    pub name_only: Option<bool>,
    /// `authorizedDatabases`.
    pub authorized_databases: Option<bool>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl ListDatabases {
    /// Lists every database.
    pub fn new() -> Self {
        ListDatabases::default()
    }
}

/// One database of a `listDatabases` reply.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DatabaseEntry {
    /// Its name.
    pub name: String,
    /// `sizeOnDisk` in bytes (absent with `nameOnly`).
    pub size_on_disk: Option<u64>,
    /// `empty` (absent with `nameOnly`).
    pub empty: Option<bool>,
    /// `shards` (on a sharded cluster).
    pub shards: Option<Document>,
}

impl Command for ListDatabases {
    const NAME: &'static str = "listDatabases";
    type Output = Vec<DatabaseEntry>;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, 1);
        if let Some(filter) = &self.filter {
            body.insert("filter", filter.clone());
        }
        if let Some(v) = self.name_only {
            body.insert("nameOnly", v);
        }
        if let Some(v) = self.authorized_databases {
            body.insert("authorizedDatabases", v);
        }
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.as_ref());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<Vec<DatabaseEntry>, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        let f = Fields::new(Self::NAME, reply.body.as_raw());
        let array = f
            .opt_array("databases")?
            .ok_or_else(|| f.malformed("the reply has no `databases` array"))?;
        let mut out = Vec::new();
        for item in array {
            let item = item.map_err(|e| f.malformed(format!("cannot read `databases`: {e}")))?;
            let RawBsonRef::Document(entry) = item else {
                return Err(f.malformed("`databases[]` should be documents"));
            };
            let e = Fields::new(Self::NAME, entry);
            let name = e
                .opt_str("name")?
                .ok_or_else(|| e.malformed("a `databases` entry has no `name`"))?
                .to_owned();
            let size_on_disk = match e.opt_i64("sizeOnDisk")? {
                None => None,
                Some(n) => Some(
                    u64::try_from(n)
                        .map_err(|_| e.malformed(format!("`sizeOnDisk` = {n} is negative")))?,
                ),
            };
            let shards = e
                .opt_doc("shards")?
                .map(Document::try_from)
                .transpose()
                .map_err(|err| e.malformed(format!("cannot read `shards`: {err}")))?;
            out.push(DatabaseEntry {
                name,
                size_on_disk,
                empty: e.opt_bool("empty")?,
                shards,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn reply(doc: Document) -> Reply {
        Reply::from_document(&doc).unwrap()
    }

    #[test]
    fn index_names_as_the_spec_generates_them() {
        assert_eq!(index_name(&doc! { "x": 1 }), "x_1");
        assert_eq!(index_name(&doc! { "x": 1, "y": -1 }), "x_1_y_-1");
        assert_eq!(
            index_name(&doc! { "x": 1, "y": -1, "z": -1 }),
            "x_1_y_-1_z_-1"
        );
        assert_eq!(index_name(&doc! { "t": "text" }), "t_text");
        assert_eq!(
            index_name(&doc! { "loc": "2dsphere", "n": 1i64 }),
            "loc_2dsphere_n_1"
        );
        assert_eq!(index_name(&doc! { "a": 1.0, "b": -1.0 }), "a_1_b_-1");
    }

    #[test]
    fn create_indexes_body_and_checks() {
        let mut cmd = CreateIndexes::new(
            "c",
            vec![doc! { "key": { "a": 1 }, "name": "a_1", "unique": true }],
        );
        cmd.write_concern = Some(doc! { "w": 1 });
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! {
                "createIndexes": "c",
                "indexes": [{ "key": { "a": 1 }, "name": "a_1", "unique": true }],
                "writeConcern": { "w": 1 },
                "$db": "db",
            }
        );
        for bad in [
            vec![],
            vec![doc! { "name": "x" }],
            vec![doc! { "key": {}, "name": "x" }],
            vec![doc! { "key": { "a": 1 } }],
        ] {
            assert!(matches!(
                CreateIndexes::new("c", bad).build("db"),
                Err(CommandError::Invalid(_))
            ));
        }
        assert!(
            cmd.handle_reply(reply(
                doc! { "numIndexesBefore": 1, "numIndexesAfter": 2, "ok": 1 }
            ))
            .unwrap()
            .is_none()
        );
        let wce = cmd
            .handle_reply(reply(
                doc! { "writeConcernError": { "code": 64, "errmsg": "t" }, "ok": 1 },
            ))
            .unwrap();
        assert_eq!(wce.unwrap().code, 64);
        let err = cmd
            .handle_reply(reply(
                doc! { "ok": 0, "code": 85, "codeName": "IndexOptionsConflict", "errmsg": "x" },
            ))
            .unwrap_err();
        assert_eq!(err.code(), Some(85));
    }

    #[test]
    fn drop_and_list_indexes_bodies() {
        let body = DropIndexes::new("c", "a_1").build("db").unwrap().body;
        assert_eq!(
            body,
            doc! { "dropIndexes": "c", "index": "a_1", "$db": "db" }
        );
        assert!(matches!(
            DropIndexes::new("c", "").build("db"),
            Err(CommandError::Invalid(_))
        ));
        let mut li = ListIndexes::new("c");
        li.batch_size = Some(2);
        assert_eq!(
            li.build("db").unwrap().body,
            doc! { "listIndexes": "c", "cursor": { "batchSize": 2 }, "$db": "db" }
        );
    }

    #[test]
    fn list_collections_body() {
        let mut cmd = ListCollections::new();
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! { "listCollections": 1, "cursor": {}, "$db": "db" }
        );
        cmd.filter = Some(doc! { "name": "x" });
        cmd.name_only = Some(true);
        cmd.authorized_collections = Some(true);
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! {
                "listCollections": 1,
                "filter": { "name": "x" },
                "nameOnly": true,
                "authorizedCollections": true,
                "cursor": {},
                "$db": "db",
            }
        );
    }

    #[test]
    fn list_databases_body_and_reply() {
        let mut cmd = ListDatabases::new();
        cmd.name_only = Some(true);
        assert_eq!(
            cmd.build("admin").unwrap().body,
            doc! { "listDatabases": 1, "nameOnly": true, "$db": "admin" }
        );
        let dbs = cmd
            .handle_reply(reply(doc! {
                "databases": [
                    { "name": "admin", "sizeOnDisk": 8192i64, "empty": false },
                    { "name": "app" },
                ],
                "totalSize": 8192,
                "ok": 1,
            }))
            .unwrap();
        assert_eq!(dbs.len(), 2);
        assert_eq!(
            (dbs[0].name.as_str(), dbs[0].size_on_disk, dbs[0].empty),
            ("admin", Some(8192), Some(false))
        );
        assert_eq!((dbs[1].name.as_str(), dbs[1].size_on_disk), ("app", None));
        for bad in [
            doc! { "ok": 1 },
            doc! { "databases": [1], "ok": 1 },
            doc! { "databases": [{ "sizeOnDisk": 1 }], "ok": 1 },
            doc! { "databases": [{ "name": "a", "sizeOnDisk": -1 }], "ok": 1 },
        ] {
            assert!(matches!(
                cmd.handle_reply(reply(bad)),
                Err(CommandError::MalformedReply { .. })
            ));
        }
    }
}
