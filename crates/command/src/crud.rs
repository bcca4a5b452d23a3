//! The everyday read and write commands beyond `find`/`insert`/`update`/`delete`:
//! `count`, `distinct`, the `aggregate` of `countDocuments`, and `findAndModify`.

use brook_wire::SharedDoc;
use bson::{Bson, Document, RawBsonRef};

use crate::error::{CommandError, WriteConcernError, check_ok_shared};
use crate::parse::Fields;
use crate::write::parse_write_concern_error;
use crate::{Command, CommandBody, CursorReply, Reply, count_bson, with_db};

/// Appends `key: value` when `value` is set.
pub(crate) fn put(body: &mut Document, key: &str, value: Option<impl Into<Bson> + Clone>) {
    if let Some(v) = value {
        body.insert(key, v.into());
    }
}

/// Appends `maxTimeMS` when set.
pub(crate) fn put_max_time(body: &mut Document, ms: Option<u64>) -> Result<(), CommandError> {
    if let Some(ms) = ms {
        body.insert("maxTimeMS", count_bson("maxTimeMS", ms)?);
    }
    Ok(())
}

/// `{count: coll, query?, hint?, maxTimeMS?, comment?, $db}`: the `count` command, as
/// `estimatedDocumentCount` uses it (with no query: the collection's metadata count).
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    /// The collection.
    pub coll: String,
    /// `query` (sent only when set).
    pub query: Option<Document>,
    /// `hint`.
    pub hint: Option<Bson>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl Count {
    /// Counts the documents of `coll`.
    pub fn new(coll: impl Into<String>) -> Self {
        Count {
            coll: coll.into(),
            query: None,
            hint: None,
            max_time_ms: None,
            comment: None,
        }
    }
}

/// Reads a required non-negative count `key` of a reply.
fn req_count(f: &Fields<'_>, key: &str) -> Result<u64, CommandError> {
    let n = f
        .opt_i64(key)?
        .ok_or_else(|| f.malformed(format!("the reply has no `{key}` count")))?;
    u64::try_from(n).map_err(|_| f.malformed(format!("`{key}` = {n} is negative")))
}

impl Command for Count {
    const NAME: &'static str = "count";
    type Output = u64;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        put(&mut body, "query", self.query.clone());
        put(&mut body, "hint", self.hint.clone());
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.clone());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<u64, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        req_count(&Fields::new(Self::NAME, reply.body.as_raw()), "n")
    }
}

/// The `aggregate` of `countDocuments` (CRUD specification): `[{$match: filter},
/// {$skip}?, {$limit}?, {$group: {_id: 1, n: {$sum: 1}}}]`. Its output is the count
/// (0 when the first batch is empty: nothing matched).
#[derive(Debug, Clone, PartialEq)]
pub struct CountDocuments {
    /// The collection.
    pub coll: String,
    /// The filter (`$match`).
    pub filter: Document,
    /// `$skip` before counting.
    pub skip: Option<u64>,
    /// `$limit` before counting.
    pub limit: Option<u64>,
    /// `hint`.
    pub hint: Option<Bson>,
    /// `collation`.
    pub collation: Option<Document>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl CountDocuments {
    /// Counts the documents of `coll` matching `filter`.
    pub fn new(coll: impl Into<String>, filter: Document) -> Self {
        CountDocuments {
            coll: coll.into(),
            filter,
            skip: None,
            limit: None,
            hint: None,
            collation: None,
            max_time_ms: None,
            comment: None,
        }
    }

    /// The pipeline sent.
    pub fn pipeline(&self) -> Result<Vec<Document>, CommandError> {
        let mut stages = vec![bson::doc! { "$match": self.filter.clone() }];
        if let Some(skip) = self.skip {
            stages.push(bson::doc! { "$skip": count_bson("skip", skip)? });
        }
        if let Some(limit) = self.limit {
            stages.push(bson::doc! { "$limit": count_bson("limit", limit)? });
        }
        stages.push(bson::doc! { "$group": { "_id": 1, "n": { "$sum": 1 } } });
        Ok(stages)
    }
}

impl Command for CountDocuments {
    const NAME: &'static str = "aggregate";
    type Output = u64;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("pipeline", self.pipeline()?);
        body.insert("cursor", Document::new());
        put(&mut body, "hint", self.hint.clone());
        put(&mut body, "collation", self.collation.clone());
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.clone());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<u64, CommandError> {
        let cursor = CursorReply::parse(Self::NAME, &reply.body)?;
        match cursor.batch.first() {
            None => Ok(0),
            Some(doc) => req_count(&Fields::new(Self::NAME, doc.as_raw()), "n"),
        }
    }
}

/// `{distinct: coll, key, query, hint?, collation?, maxTimeMS?, comment?, $db}`; its
/// output is the reply's `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinct {
    /// The collection.
    pub coll: String,
    /// The field whose distinct values are wanted.
    pub key: String,
    /// The filter (always sent).
    pub query: Document,
    /// `hint`.
    pub hint: Option<Bson>,
    /// `collation`.
    pub collation: Option<Document>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl Distinct {
    /// The distinct values of `key` among the documents of `coll` matching `query`.
    pub fn new(coll: impl Into<String>, key: impl Into<String>, query: Document) -> Self {
        Distinct {
            coll: coll.into(),
            key: key.into(),
            query,
            hint: None,
            collation: None,
            max_time_ms: None,
            comment: None,
        }
    }
}

impl Command for Distinct {
    const NAME: &'static str = "distinct";
    type Output = Vec<Bson>;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("key", &self.key);
        body.insert("query", self.query.clone());
        put(&mut body, "hint", self.hint.clone());
        put(&mut body, "collation", self.collation.clone());
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "comment", self.comment.clone());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<Vec<Bson>, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        let f = Fields::new(Self::NAME, reply.body.as_raw());
        let values = f
            .opt_array("values")?
            .ok_or_else(|| f.malformed("the reply has no `values` array"))?;
        let mut out = Vec::new();
        for item in values {
            let item = item.map_err(|e| f.malformed(format!("cannot read `values`: {e}")))?;
            let value = Bson::try_from(item)
                .map_err(|e| f.malformed(format!("cannot read a value of `values`: {e}")))?;
            out.push(value);
        }
        Ok(out)
    }
}

/// What a `findAndModify` does to the document it finds.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum FindAndModifyAction {
    /// `remove: true`.
    Remove,
    /// `update`: an update document (operators) or a replacement document.
    Update(Document),
    /// `update`: an aggregation pipeline (4.2+).
    UpdatePipeline(Vec<Document>),
}

/// `{findAndModify: coll, query, sort?, remove? | update?, new?, fields?, upsert?,
/// bypassDocumentValidation?, writeConcern?, maxTimeMS?, collation?, arrayFilters?,
/// hint?, comment?, $db}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FindAndModify {
    /// The collection.
    pub coll: String,
    /// The filter (always sent).
    pub query: Document,
    /// Remove, update or replace.
    pub action: FindAndModifyAction,
    /// `sort`: which document, when several match.
    pub sort: Option<Document>,
    /// `new`: return the document after the change (sent only when true).
    pub new: bool,
    /// `fields`: the projection of the returned document.
    pub fields: Option<Document>,
    /// `upsert` (sent only when true; never with `remove`).
    pub upsert: bool,
    /// `bypassDocumentValidation`.
    pub bypass_document_validation: Option<bool>,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
    /// `maxTimeMS`.
    pub max_time_ms: Option<u64>,
    /// `collation`.
    pub collation: Option<Document>,
    /// `arrayFilters`.
    pub array_filters: Option<Vec<Document>>,
    /// `hint`.
    pub hint: Option<Bson>,
    /// `comment`.
    pub comment: Option<Bson>,
}

impl FindAndModify {
    /// `action` on the first document of `coll` matching `query`.
    pub fn new(coll: impl Into<String>, query: Document, action: FindAndModifyAction) -> Self {
        FindAndModify {
            coll: coll.into(),
            query,
            action,
            sort: None,
            new: false,
            fields: None,
            upsert: false,
            bypass_document_validation: None,
            write_concern: None,
            max_time_ms: None,
            collation: None,
            array_filters: None,
            hint: None,
            comment: None,
        }
    }
}

/// What a `findAndModify` returned.
#[derive(Debug, Clone)]
pub struct FindAndModifyReply {
    /// `value`: the document (before or after, as `new` said), `None` when nothing
    /// matched (or, with `new: false`, when an upsert inserted it).
    pub value: Option<SharedDoc>,
    /// `lastErrorObject.n`: how many documents were found (0 or 1), when reported.
    pub n: Option<i64>,
    /// `lastErrorObject.upserted`: the `_id` of an upserted document.
    pub upserted: Option<Bson>,
    /// The write concern failure, if any.
    pub write_concern_error: Option<WriteConcernError>,
}

impl Command for FindAndModify {
    const NAME: &'static str = "findAndModify";
    type Output = FindAndModifyReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        body.insert("query", self.query.clone());
        put(&mut body, "sort", self.sort.clone());
        match &self.action {
            FindAndModifyAction::Remove => {
                if self.upsert || self.new {
                    return Err(CommandError::Invalid(
                        "findAndModify with remove takes neither upsert nor new".to_owned(),
                    ));
                }
                body.insert("remove", true);
            }
            FindAndModifyAction::Update(update) => {
                body.insert("update", update.clone());
            }
            FindAndModifyAction::UpdatePipeline(stages) => {
                body.insert("update", stages.clone());
            }
        }
        if self.new {
            body.insert("new", true);
        }
        put(&mut body, "fields", self.fields.clone());
        if self.upsert {
            body.insert("upsert", true);
        }
        put(
            &mut body,
            "bypassDocumentValidation",
            self.bypass_document_validation,
        );
        put(&mut body, "writeConcern", self.write_concern.clone());
        put_max_time(&mut body, self.max_time_ms)?;
        put(&mut body, "collation", self.collation.clone());
        put(&mut body, "arrayFilters", self.array_filters.clone());
        put(&mut body, "hint", self.hint.clone());
        put(&mut body, "comment", self.comment.clone());
        Ok(with_db(body, db))
    }

    fn handle_reply(&self, reply: Reply) -> Result<FindAndModifyReply, CommandError> {
        check_ok_shared(Self::NAME, &reply.body)?;
        let f = Fields::new(Self::NAME, reply.body.as_raw());
        let value = match f.get("value")? {
            None | Some(RawBsonRef::Null) => None,
            Some(RawBsonRef::Document(doc)) => Some(f.share(&reply.body, doc)?),
            Some(_) => return Err(f.malformed("`value` should be a document or null")),
        };
        let (n, upserted) = match f.opt_doc("lastErrorObject")? {
            None => (None, None),
            Some(last) => {
                let last = Fields::new(Self::NAME, last);
                let upserted = last
                    .get("upserted")?
                    .map(Bson::try_from)
                    .transpose()
                    .map_err(|e| f.malformed(format!("cannot read `upserted`: {e}")))?;
                (last.opt_i64("n")?, upserted)
            }
        };
        let write_concern_error = match f.opt_doc("writeConcernError")? {
            None => None,
            Some(wce) => {
                let labels = f.opt_str_array("errorLabels")?.unwrap_or_default();
                Some(parse_write_concern_error(
                    Self::NAME,
                    wce,
                    labels,
                    &reply.body,
                )?)
            }
        };
        Ok(FindAndModifyReply {
            value,
            n,
            upserted,
            write_concern_error,
        })
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
    fn count_body_and_reply() {
        let mut cmd = Count::new("c");
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! { "count": "c", "$db": "db" }
        );
        cmd.query = Some(doc! { "a": 1 });
        cmd.max_time_ms = Some(10);
        cmd.comment = Some("x".into());
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! { "count": "c", "query": { "a": 1 }, "maxTimeMS": 10, "comment": "x", "$db": "db" }
        );
        assert_eq!(
            cmd.handle_reply(reply(doc! { "n": 7, "ok": 1 })).unwrap(),
            7
        );
        assert_eq!(
            cmd.handle_reply(reply(doc! { "n": 7.0, "ok": 1 })).unwrap(),
            7
        );
        for bad in [
            doc! { "ok": 1 },
            doc! { "n": -1, "ok": 1 },
            doc! { "n": "1", "ok": 1 },
        ] {
            let err = cmd.handle_reply(reply(bad.clone())).unwrap_err();
            assert!(
                matches!(
                    err,
                    CommandError::MalformedReply {
                        command: "count",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let err = cmd
            .handle_reply(reply(doc! { "ok": 0, "code": 26, "errmsg": "ns" }))
            .unwrap_err();
        assert_eq!(err.code(), Some(26));
    }

    #[test]
    fn count_documents_pipeline_and_reply() {
        let mut cmd = CountDocuments::new("c", doc! { "a": 1 });
        cmd.skip = Some(2);
        cmd.limit = Some(5);
        cmd.hint = Some("a_1".into());
        let body = cmd.build("db").unwrap().body;
        assert_eq!(
            body,
            doc! {
                "aggregate": "c",
                "pipeline": [
                    { "$match": { "a": 1 } },
                    { "$skip": 2 },
                    { "$limit": 5 },
                    { "$group": { "_id": 1, "n": { "$sum": 1 } } },
                ],
                "cursor": {},
                "hint": "a_1",
                "$db": "db",
            }
        );
        let r = doc! { "cursor": { "id": 0i64, "ns": "db.c", "firstBatch": [{ "_id": 1, "n": 4 }] }, "ok": 1 };
        assert_eq!(cmd.handle_reply(reply(r)).unwrap(), 4);
        let empty = doc! { "cursor": { "id": 0i64, "ns": "db.c", "firstBatch": [] }, "ok": 1 };
        assert_eq!(cmd.handle_reply(reply(empty)).unwrap(), 0);
        let no_n =
            doc! { "cursor": { "id": 0i64, "ns": "db.c", "firstBatch": [{ "_id": 1 }] }, "ok": 1 };
        assert!(matches!(
            cmd.handle_reply(reply(no_n)),
            Err(CommandError::MalformedReply { .. })
        ));
    }

    #[test]
    fn distinct_body_and_reply() {
        let mut cmd = Distinct::new("c", "k", doc! {});
        cmd.collation = Some(doc! { "locale": "fr" });
        assert_eq!(
            cmd.build("db").unwrap().body,
            doc! { "distinct": "c", "key": "k", "query": {}, "collation": { "locale": "fr" }, "$db": "db" }
        );
        let values = cmd
            .handle_reply(reply(doc! { "values": [1, "a", null], "ok": 1 }))
            .unwrap();
        assert_eq!(values, vec![Bson::Int32(1), Bson::from("a"), Bson::Null]);
        for bad in [doc! { "ok": 1 }, doc! { "values": 1, "ok": 1 }] {
            assert!(matches!(
                cmd.handle_reply(reply(bad)),
                Err(CommandError::MalformedReply { .. })
            ));
        }
    }

    #[test]
    fn find_and_modify_bodies() {
        let mut upd = FindAndModify::new(
            "c",
            doc! { "a": 1 },
            FindAndModifyAction::Update(doc! { "$inc": { "n": 1 } }),
        );
        upd.new = true;
        upd.upsert = true;
        upd.sort = Some(doc! { "n": -1 });
        upd.fields = Some(doc! { "_id": 0 });
        upd.array_filters = Some(vec![doc! { "e.x": 1 }]);
        upd.write_concern = Some(doc! { "w": "majority" });
        assert_eq!(
            upd.build("db").unwrap().body,
            doc! {
                "findAndModify": "c",
                "query": { "a": 1 },
                "sort": { "n": -1 },
                "update": { "$inc": { "n": 1 } },
                "new": true,
                "fields": { "_id": 0 },
                "upsert": true,
                "writeConcern": { "w": "majority" },
                "arrayFilters": [{ "e.x": 1 }],
                "$db": "db",
            }
        );
        let rm = FindAndModify::new("c", doc! {}, FindAndModifyAction::Remove);
        assert_eq!(
            rm.build("db").unwrap().body,
            doc! { "findAndModify": "c", "query": {}, "remove": true, "$db": "db" }
        );
        let mut bad = rm.clone();
        bad.upsert = true;
        assert!(matches!(bad.build("db"), Err(CommandError::Invalid(_))));
        let pipe = FindAndModify::new(
            "c",
            doc! {},
            FindAndModifyAction::UpdatePipeline(vec![doc! { "$set": { "a": 1 } }]),
        );
        assert_eq!(
            pipe.build("db")
                .unwrap()
                .body
                .get_array("update")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn find_and_modify_replies() {
        let cmd = FindAndModify::new("c", doc! {}, FindAndModifyAction::Remove);
        let r = cmd
            .handle_reply(reply(doc! {
                "lastErrorObject": { "n": 1, "updatedExisting": false, "upserted": 5 },
                "value": { "_id": 5 },
                "ok": 1.0,
            }))
            .unwrap();
        assert_eq!(r.value.unwrap().to_document().unwrap(), doc! { "_id": 5 });
        assert_eq!((r.n, r.upserted), (Some(1), Some(Bson::Int32(5))));
        let r = cmd
            .handle_reply(reply(doc! { "value": null, "ok": 1 }))
            .unwrap();
        assert!(r.value.is_none() && r.write_concern_error.is_none());
        let r = cmd
            .handle_reply(reply(doc! {
                "value": null,
                "writeConcernError": { "code": 64, "errmsg": "timeout" },
                "ok": 1,
            }))
            .unwrap();
        assert_eq!(r.write_concern_error.unwrap().code, 64);
        for bad in [
            doc! { "value": 1, "ok": 1 },
            doc! { "value": null, "lastErrorObject": 1, "ok": 1 },
            doc! { "value": null, "writeConcernError": { "errmsg": "x" }, "ok": 1 },
        ] {
            assert!(matches!(
                cmd.handle_reply(reply(bad)),
                Err(CommandError::MalformedReply { .. })
            ));
        }
    }
}
