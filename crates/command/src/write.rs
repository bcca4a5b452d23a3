//! The write commands `insert`, `update` and `delete`, and their replies.
//!
//! Their statements travel as kind-1 document sequences (`documents`, `updates`,
//! `deletes`), not inside the body, so a large batch is never copied into one big
//! document. Splitting a batch to fit `maxWriteBatchSize` / `maxMessageSizeBytes` is the
//! caller's job, as is adding `_id`s to inserted documents.

use brook_wire::SharedDoc;
use bson::{Bson, Document, RawBsonRef, RawDocument};

use crate::error::{CommandError, WriteConcernError, WriteError, check_ok_shared};
use crate::parse::Fields;
use crate::{Command, CommandBody, Reply, to_shared, with_db};

/// Appends the options shared by the three write commands, in the server's order.
fn write_options(
    body: &mut Document,
    ordered: bool,
    write_concern: Option<&Document>,
    bypass_document_validation: Option<bool>,
) {
    body.insert("ordered", ordered);
    if let Some(wc) = write_concern {
        body.insert("writeConcern", wc.clone());
    }
    if let Some(bypass) = bypass_document_validation {
        body.insert("bypassDocumentValidation", bypass);
    }
}

/// `{insert: coll, ordered, writeConcern?, bypassDocumentValidation?, $db}` with the
/// documents in a `documents` sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    /// The collection.
    pub coll: String,
    /// The documents, already serialised (and with their `_id`s).
    pub documents: Vec<SharedDoc>,
    /// Stop at the first failure (`true`, the server's default) or go on.
    pub ordered: bool,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
    /// `bypassDocumentValidation`.
    pub bypass_document_validation: Option<bool>,
}

impl Insert {
    /// An ordered insert of `documents` into `coll`.
    pub fn new(coll: impl Into<String>, documents: Vec<SharedDoc>) -> Self {
        Insert {
            coll: coll.into(),
            documents,
            ordered: true,
            write_concern: None,
            bypass_document_validation: None,
        }
    }
}

impl Command for Insert {
    const NAME: &'static str = "insert";
    type Output = InsertReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.documents.is_empty() {
            return Err(CommandError::Invalid(
                "insert needs at least one document".to_owned(),
            ));
        }
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        write_options(
            &mut body,
            self.ordered,
            self.write_concern.as_ref(),
            self.bypass_document_validation,
        );
        let mut out = with_db(body, db);
        out.sequences
            .push(("documents".to_owned(), self.documents.clone()));
        Ok(out)
    }

    fn handle_reply(&self, reply: Reply) -> Result<InsertReply, CommandError> {
        let parts = WriteParts::parse(Self::NAME, &reply.body)?;
        Ok(InsertReply {
            n: parts.n,
            write_errors: parts.write_errors,
            write_concern_error: parts.write_concern_error,
        })
    }
}

/// What an `insert` did.
#[derive(Debug, Clone)]
pub struct InsertReply {
    /// How many documents were inserted.
    pub n: i64,
    /// The documents that failed.
    pub write_errors: Vec<WriteError>,
    /// The write concern failure, if any.
    pub write_concern_error: Option<WriteConcernError>,
}

/// The `u` of an update statement.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateModification {
    /// An update document (`{$set: ...}`) or a replacement document.
    Document(Document),
    /// An aggregation pipeline (4.2+).
    Pipeline(Vec<Document>),
}

/// One statement of an `update`: `{q, u, upsert?, multi?, collation?, arrayFilters?, hint?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStatement {
    /// The filter.
    pub q: Document,
    /// The modification.
    pub u: UpdateModification,
    /// Insert when nothing matches (sent only when true).
    pub upsert: bool,
    /// Update every match rather than the first (sent only when true).
    pub multi: bool,
    /// `collation`.
    pub collation: Option<Document>,
    /// `arrayFilters`.
    pub array_filters: Option<Vec<Document>>,
    /// `hint`: an index name or key pattern.
    pub hint: Option<Bson>,
}

impl UpdateStatement {
    /// Updates the first document matching `q` with `u`.
    pub fn new(q: Document, u: UpdateModification) -> Self {
        UpdateStatement {
            q,
            u,
            upsert: false,
            multi: false,
            collation: None,
            array_filters: None,
            hint: None,
        }
    }

    fn to_document(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("q", self.q.clone());
        match &self.u {
            UpdateModification::Document(u) => doc.insert("u", u.clone()),
            UpdateModification::Pipeline(stages) => doc.insert("u", stages.clone()),
        };
        if self.upsert {
            doc.insert("upsert", true);
        }
        if self.multi {
            doc.insert("multi", true);
        }
        if let Some(collation) = &self.collation {
            doc.insert("collation", collation.clone());
        }
        if let Some(filters) = &self.array_filters {
            doc.insert("arrayFilters", filters.clone());
        }
        if let Some(hint) = &self.hint {
            doc.insert("hint", hint.clone());
        }
        doc
    }
}

/// `{update: coll, ordered, writeConcern?, bypassDocumentValidation?, $db}` with the
/// statements in an `updates` sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The collection.
    pub coll: String,
    /// The statements.
    pub updates: Vec<UpdateStatement>,
    /// Stop at the first failure (`true`) or go on.
    pub ordered: bool,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
    /// `bypassDocumentValidation`.
    pub bypass_document_validation: Option<bool>,
}

impl Update {
    /// An ordered update of `coll`.
    pub fn new(coll: impl Into<String>, updates: Vec<UpdateStatement>) -> Self {
        Update {
            coll: coll.into(),
            updates,
            ordered: true,
            write_concern: None,
            bypass_document_validation: None,
        }
    }
}

impl Command for Update {
    const NAME: &'static str = "update";
    type Output = UpdateReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.updates.is_empty() {
            return Err(CommandError::Invalid(
                "update needs at least one statement".to_owned(),
            ));
        }
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        write_options(
            &mut body,
            self.ordered,
            self.write_concern.as_ref(),
            self.bypass_document_validation,
        );
        let statements = to_shared(self.updates.iter().map(UpdateStatement::to_document))?;
        let mut out = with_db(body, db);
        out.sequences.push(("updates".to_owned(), statements));
        Ok(out)
    }

    fn handle_reply(&self, reply: Reply) -> Result<UpdateReply, CommandError> {
        let parts = WriteParts::parse(Self::NAME, &reply.body)?;
        let f = Fields::new(Self::NAME, reply.body.as_raw());
        let mut upserted = Vec::new();
        if let Some(array) = f.opt_array("upserted")? {
            for item in array {
                let item = item.map_err(|e| f.malformed(format!("cannot read `upserted`: {e}")))?;
                let RawBsonRef::Document(entry) = item else {
                    return Err(f.malformed("`upserted[]` should be documents"));
                };
                upserted.push(Upserted::parse(entry)?);
            }
        }
        Ok(UpdateReply {
            n: parts.n,
            n_modified: f.opt_i64("nModified")?.unwrap_or(0),
            upserted,
            write_errors: parts.write_errors,
            write_concern_error: parts.write_concern_error,
        })
    }
}

/// A document an update inserted (`upserted[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The position of the statement that inserted it.
    pub index: usize,
    /// Its `_id`.
    pub id: Bson,
}

impl Upserted {
    fn parse(entry: &RawDocument) -> Result<Upserted, CommandError> {
        let f = Fields::new(Update::NAME, entry);
        let index = f
            .opt_usize("index")?
            .ok_or_else(|| f.malformed("an `upserted` entry has no `index`"))?;
        let raw_id = f
            .get("_id")?
            .ok_or_else(|| f.malformed("an `upserted` entry has no `_id`"))?;
        let id = Bson::try_from(raw_id)
            .map_err(|e| f.malformed(format!("cannot read an upserted `_id`: {e}")))?;
        Ok(Upserted { index, id })
    }
}

/// What an `update` did.
#[derive(Debug, Clone)]
pub struct UpdateReply {
    /// How many documents matched (upserts included).
    pub n: i64,
    /// How many documents were changed.
    pub n_modified: i64,
    /// The documents inserted by upserts.
    pub upserted: Vec<Upserted>,
    /// The statements that failed.
    pub write_errors: Vec<WriteError>,
    /// The write concern failure, if any.
    pub write_concern_error: Option<WriteConcernError>,
}

/// One statement of a `delete`: `{q, limit, collation?, hint?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteStatement {
    /// The filter.
    pub q: Document,
    /// Delete every match (`limit: 0`) rather than the first (`limit: 1`).
    pub multi: bool,
    /// `collation`.
    pub collation: Option<Document>,
    /// `hint`: an index name or key pattern.
    pub hint: Option<Bson>,
}

impl DeleteStatement {
    /// Deletes the first document matching `q`.
    pub fn one(q: Document) -> Self {
        DeleteStatement {
            q,
            multi: false,
            collation: None,
            hint: None,
        }
    }

    /// Deletes every document matching `q`.
    pub fn many(q: Document) -> Self {
        DeleteStatement {
            multi: true,
            ..DeleteStatement::one(q)
        }
    }

    fn to_document(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("q", self.q.clone());
        doc.insert("limit", if self.multi { 0 } else { 1 });
        if let Some(collation) = &self.collation {
            doc.insert("collation", collation.clone());
        }
        if let Some(hint) = &self.hint {
            doc.insert("hint", hint.clone());
        }
        doc
    }
}

/// `{delete: coll, ordered, writeConcern?, $db}` with the statements in a `deletes`
/// sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    /// The collection.
    pub coll: String,
    /// The statements.
    pub deletes: Vec<DeleteStatement>,
    /// Stop at the first failure (`true`) or go on.
    pub ordered: bool,
    /// `writeConcern`.
    pub write_concern: Option<Document>,
}

impl Delete {
    /// An ordered delete from `coll`.
    pub fn new(coll: impl Into<String>, deletes: Vec<DeleteStatement>) -> Self {
        Delete {
            coll: coll.into(),
            deletes,
            ordered: true,
            write_concern: None,
        }
    }
}

impl Command for Delete {
    const NAME: &'static str = "delete";
    type Output = DeleteReply;

    fn build(&self, db: &str) -> Result<CommandBody, CommandError> {
        if self.deletes.is_empty() {
            return Err(CommandError::Invalid(
                "delete needs at least one statement".to_owned(),
            ));
        }
        let mut body = Document::new();
        body.insert(Self::NAME, &self.coll);
        write_options(&mut body, self.ordered, self.write_concern.as_ref(), None);
        let statements = to_shared(self.deletes.iter().map(DeleteStatement::to_document))?;
        let mut out = with_db(body, db);
        out.sequences.push(("deletes".to_owned(), statements));
        Ok(out)
    }

    fn handle_reply(&self, reply: Reply) -> Result<DeleteReply, CommandError> {
        let parts = WriteParts::parse(Self::NAME, &reply.body)?;
        Ok(DeleteReply {
            n: parts.n,
            write_errors: parts.write_errors,
            write_concern_error: parts.write_concern_error,
        })
    }
}

/// What a `delete` did.
#[derive(Debug, Clone)]
pub struct DeleteReply {
    /// How many documents were deleted.
    pub n: i64,
    /// The statements that failed.
    pub write_errors: Vec<WriteError>,
    /// The write concern failure, if any.
    pub write_concern_error: Option<WriteConcernError>,
}

/// The parts every write reply has.
struct WriteParts {
    n: i64,
    write_errors: Vec<WriteError>,
    write_concern_error: Option<WriteConcernError>,
}

impl WriteParts {
    fn parse(command: &'static str, body: &SharedDoc) -> Result<WriteParts, CommandError> {
        check_ok_shared(command, body)?;
        let f = Fields::new(command, body.as_raw());
        let n = f.opt_i64("n")?.unwrap_or(0);

        let mut write_errors = Vec::new();
        if let Some(array) = f.opt_array("writeErrors")? {
            for item in array {
                let item =
                    item.map_err(|e| f.malformed(format!("cannot read `writeErrors`: {e}")))?;
                let RawBsonRef::Document(entry) = item else {
                    return Err(f.malformed("`writeErrors[]` should be documents"));
                };
                write_errors.push(parse_write_error(command, entry, body)?);
            }
        }

        let write_concern_error = match f.opt_doc("writeConcernError")? {
            None => None,
            Some(wce) => {
                let top_labels = f.opt_str_array("errorLabels")?.unwrap_or_default();
                Some(parse_write_concern_error(command, wce, top_labels, body)?)
            }
        };

        Ok(WriteParts {
            n,
            write_errors,
            write_concern_error,
        })
    }
}

fn parse_write_error(
    command: &'static str,
    entry: &RawDocument,
    body: &SharedDoc,
) -> Result<WriteError, CommandError> {
    let f = Fields::new(command, entry);
    Ok(WriteError {
        index: f
            .opt_usize("index")?
            .ok_or_else(|| f.malformed("a write error has no `index`"))?,
        code: f.req_i32("code")?,
        code_name: f.opt_str("codeName")?.map(str::to_owned),
        message: f.opt_str("errmsg")?.unwrap_or_default().to_owned(),
        details: f.opt_shared_doc("errInfo", body)?,
    })
}

pub(crate) fn parse_write_concern_error(
    command: &'static str,
    wce: &RawDocument,
    top_labels: Vec<String>,
    body: &SharedDoc,
) -> Result<WriteConcernError, CommandError> {
    let f = Fields::new(command, wce);
    let mut labels = f.opt_str_array("errorLabels")?.unwrap_or_default();
    for label in top_labels {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    Ok(WriteConcernError {
        code: f.req_i32("code")?,
        code_name: f.opt_str("codeName")?.map(str::to_owned),
        message: f.opt_str("errmsg")?.unwrap_or_default().to_owned(),
        labels,
        details: f.opt_shared_doc("errInfo", body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Timestamp, doc, oid::ObjectId};

    fn reply(doc: Document) -> Reply {
        Reply::from_document(&doc).unwrap()
    }

    fn shared(doc: Document) -> SharedDoc {
        SharedDoc::from_document(&doc).unwrap()
    }

    #[test]
    fn insert_body_and_sequence() {
        let docs = vec![
            shared(doc! { "_id": 1, "a": "x" }),
            shared(doc! { "_id": 2 }),
        ];
        let mut cmd = Insert::new("events", docs.clone());
        let body = cmd.build("app").unwrap();
        assert_eq!(
            body.body,
            doc! { "insert": "events", "ordered": true, "$db": "app" }
        );
        assert_eq!(body.sequences.len(), 1);
        assert_eq!(body.sequences[0].0, "documents");
        assert!(body.sequences[0].1 == docs);

        cmd.ordered = false;
        cmd.write_concern = Some(doc! { "w": "majority", "wtimeout": 5000 });
        cmd.bypass_document_validation = Some(true);
        assert_eq!(
            cmd.build("app").unwrap().body,
            doc! {
                "insert": "events",
                "ordered": false,
                "writeConcern": { "w": "majority", "wtimeout": 5000 },
                "bypassDocumentValidation": true,
                "$db": "app",
            }
        );
        assert!(matches!(
            Insert::new("c", vec![]).build("app"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn update_body_and_statements() {
        let mut s1 = UpdateStatement::new(
            doc! { "_id": 1 },
            UpdateModification::Document(doc! { "$set": { "a": 1 } }),
        );
        s1.upsert = true;
        s1.hint = Some(Bson::String("_id_".into()));
        let mut s2 = UpdateStatement::new(
            doc! { "k": { "$gt": 3 } },
            UpdateModification::Pipeline(vec![doc! { "$set": { "b": "$a" } }]),
        );
        s2.multi = true;
        s2.collation = Some(doc! { "locale": "fr" });
        s2.array_filters = Some(vec![doc! { "e.x": 1 }]);
        let body = Update::new("c", vec![s1, s2]).build("db").unwrap();
        assert_eq!(
            body.body,
            doc! { "update": "c", "ordered": true, "$db": "db" }
        );
        assert_eq!(body.sequences[0].0, "updates");
        let stmts: Vec<Document> = body.sequences[0]
            .1
            .iter()
            .map(|d| d.to_document().unwrap())
            .collect();
        assert_eq!(
            stmts,
            vec![
                doc! { "q": { "_id": 1 }, "u": { "$set": { "a": 1 } }, "upsert": true, "hint": "_id_" },
                doc! {
                    "q": { "k": { "$gt": 3 } },
                    "u": [{ "$set": { "b": "$a" } }],
                    "multi": true,
                    "collation": { "locale": "fr" },
                    "arrayFilters": [{ "e.x": 1 }],
                },
            ]
        );
        assert!(matches!(
            Update::new("c", vec![]).build("db"),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn delete_body_and_statements() {
        let mut one = DeleteStatement::one(doc! { "a": 1 });
        one.hint = Some(Bson::Document(doc! { "a": 1 }));
        let many = DeleteStatement::many(doc! {});
        let mut cmd = Delete::new("c", vec![one, many]);
        cmd.write_concern = Some(doc! { "w": 1 });
        let body = cmd.build("db").unwrap();
        assert_eq!(
            body.body,
            doc! { "delete": "c", "ordered": true, "writeConcern": { "w": 1 }, "$db": "db" }
        );
        assert_eq!(body.sequences[0].0, "deletes");
        let stmts: Vec<Document> = body.sequences[0]
            .1
            .iter()
            .map(|d| d.to_document().unwrap())
            .collect();
        assert_eq!(
            stmts,
            vec![
                doc! { "q": { "a": 1 }, "limit": 1, "hint": { "a": 1 } },
                doc! { "q": {}, "limit": 0 },
            ]
        );
        assert!(matches!(
            Delete::new("c", vec![]).build("db"),
            Err(CommandError::Invalid(_))
        ));
    }

    fn cluster_time() -> Document {
        doc! {
            "clusterTime": Timestamp { time: 1_722_000_100, increment: 4 },
            "signature": {
                "hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] },
                "keyId": 0i64,
            },
        }
    }

    #[test]
    fn insert_reply_success() {
        let r = Insert::new("c", vec![shared(doc! {})])
            .handle_reply(reply(doc! {
                "n": 2,
                "electionId": ObjectId::parse_str("7fffffff0000000000000003").unwrap(),
                "opTime": { "ts": Timestamp { time: 1_722_000_100, increment: 4 }, "t": 3i64 },
                "ok": 1.0,
                "$clusterTime": cluster_time(),
                "operationTime": Timestamp { time: 1_722_000_100, increment: 4 },
            }))
            .unwrap();
        assert_eq!(r.n, 2);
        assert!(r.write_errors.is_empty());
        assert!(r.write_concern_error.is_none());
    }

    #[test]
    fn insert_reply_with_write_errors() {
        let r = Insert::new("c", vec![shared(doc! {})])
            .handle_reply(reply(doc! {
                "n": 1,
                "writeErrors": [
                    {
                        "index": 1,
                        "code": 11000,
                        "errmsg": "E11000 duplicate key error collection: app.c index: _id_ dup key: { _id: 1 }",
                        "keyPattern": { "_id": 1 },
                        "keyValue": { "_id": 1 },
                    },
                    {
                        "index": 2i64,
                        "code": 121,
                        "codeName": "DocumentValidationFailure",
                        "errmsg": "Document failed validation",
                        "errInfo": { "failingDocumentId": 3, "details": { "operatorName": "$jsonSchema" } },
                    },
                ],
                "ok": 1.0,
            }))
            .unwrap();
        assert_eq!(r.n, 1);
        assert_eq!(r.write_errors.len(), 2);
        let e0 = &r.write_errors[0];
        assert_eq!((e0.index, e0.code), (1, 11000));
        assert!(e0.message.starts_with("E11000"));
        assert!(e0.code_name.is_none() && e0.details.is_none());
        let e1 = &r.write_errors[1];
        assert_eq!((e1.index, e1.code), (2, 121));
        assert_eq!(e1.code_name.as_deref(), Some("DocumentValidationFailure"));
        assert_eq!(
            e1.details
                .as_ref()
                .unwrap()
                .to_document()
                .unwrap()
                .get_i32("failingDocumentId")
                .unwrap(),
            3
        );
    }

    #[test]
    fn write_concern_error_collects_labels() {
        let r = Delete::new("c", vec![DeleteStatement::one(doc! {})])
            .handle_reply(reply(doc! {
                "n": 1,
                "writeConcernError": {
                    "code": 64,
                    "codeName": "WriteConcernFailed",
                    "errmsg": "waiting for replication timed out",
                    "errInfo": { "wtimeout": true, "writeConcern": { "w": 3, "wtimeout": 100, "provenance": "clientSupplied" } },
                },
                "errorLabels": ["RetryableWriteError"],
                "ok": 1,
            }))
            .unwrap();
        assert_eq!(r.n, 1);
        let wce = r.write_concern_error.unwrap();
        assert_eq!(wce.code, 64);
        assert_eq!(wce.code_name.as_deref(), Some("WriteConcernFailed"));
        assert_eq!(wce.labels, vec!["RetryableWriteError".to_owned()]);
        assert!(wce.details.is_some());
        let se = wce.to_server_error();
        assert!(se.write_concern_error);
        assert_eq!(se.code, Some(64));
        assert!(se.has_label("RetryableWriteError"));
        assert!(
            se.to_string()
                .starts_with("write concern error WriteConcernFailed (64)")
        );

        // Pre-4.4 shape: labels inside the writeConcernError, not repeated.
        let r = Delete::new("c", vec![DeleteStatement::one(doc! {})])
            .handle_reply(reply(doc! {
                "n": 0,
                "writeConcernError": { "code": 91, "errmsg": "shutting down", "errorLabels": ["RetryableWriteError"] },
                "errorLabels": ["RetryableWriteError"],
                "ok": 1,
            }))
            .unwrap();
        assert_eq!(
            r.write_concern_error.unwrap().labels,
            vec!["RetryableWriteError".to_owned()]
        );
    }

    #[test]
    fn update_reply_with_upserts() {
        let id = ObjectId::parse_str("66a1f2c3d4e5f60718293a4c").unwrap();
        let r = Update::new(
            "c",
            vec![UpdateStatement::new(
                doc! {},
                UpdateModification::Document(doc! {}),
            )],
        )
        .handle_reply(reply(doc! {
            "n": 3,
            "upserted": [{ "index": 0, "_id": id }, { "index": 2, "_id": "k" }],
            "nModified": 1.0,
            "ok": 1.0,
        }))
        .unwrap();
        assert_eq!((r.n, r.n_modified), (3, 1));
        assert_eq!(
            r.upserted,
            vec![
                Upserted {
                    index: 0,
                    id: Bson::ObjectId(id)
                },
                Upserted {
                    index: 2,
                    id: Bson::String("k".into())
                },
            ]
        );
    }

    #[test]
    fn write_command_failures() {
        let cmd = Insert::new("c", vec![shared(doc! {})]);
        let err = cmd
            .handle_reply(reply(doc! {
                "ok": 0.0,
                "errmsg": "not primary",
                "code": 10107,
                "codeName": "NotWritablePrimary",
                "errorLabels": ["RetryableWriteError"],
            }))
            .unwrap_err();
        assert_eq!(err.code(), Some(10107));
        assert!(err.has_label("RetryableWriteError"));
    }

    #[test]
    fn malformed_write_replies() {
        let upd = Update::new(
            "c",
            vec![UpdateStatement::new(
                doc! {},
                UpdateModification::Document(doc! {}),
            )],
        );
        let cases = [
            doc! { "ok": 1, "n": "1" },
            doc! { "ok": 1, "writeErrors": { "index": 0 } },
            doc! { "ok": 1, "writeErrors": [1] },
            doc! { "ok": 1, "writeErrors": [{ "code": 1, "errmsg": "x" }] },
            doc! { "ok": 1, "writeErrors": [{ "index": -1, "code": 1 }] },
            doc! { "ok": 1, "writeErrors": [{ "index": 0 }] },
            doc! { "ok": 1, "writeErrors": [{ "index": 0, "code": 1, "errInfo": "x" }] },
            doc! { "ok": 1, "writeConcernError": "x" },
            doc! { "ok": 1, "writeConcernError": { "errmsg": "no code" } },
            doc! { "ok": 1, "upserted": [{ "_id": 1 }] },
            doc! { "ok": 1, "upserted": [{ "index": 0 }] },
            doc! { "ok": 1, "upserted": [3] },
            doc! { "ok": 1, "nModified": 1.5 },
            doc! { "n": 1 },
        ];
        for bad in cases {
            let err = upd.handle_reply(reply(bad.clone())).unwrap_err();
            assert!(
                matches!(
                    err,
                    CommandError::MalformedReply {
                        command: "update",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }
}
