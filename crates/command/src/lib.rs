//! MongoDB commands for brook: how each command's body is built and how its reply is
//! read, with no IO and no clock.
//!
//! # Design
//!
//! Every command is a plain struct of public fields (with a `new` for the required
//! ones) implementing [`Command`]:
//!
//! * [`Command::build`] turns it into a [`CommandBody`]: the kind-0 body document with
//!   the command's name as its **first key** (the server dispatches on it) and `$db`
//!   appended, plus the kind-1 document sequences of the write commands (`documents`,
//!   `updates`, `deletes`). [`CommandBody::into_message`] makes it an OP_MSG.
//! * [`Command::handle_reply`] reads the [`Reply`] (the reply's body and sequences as
//!   they came off the wire) into a typed value. Every reply goes through the `ok`
//!   check first: `ok` other than 1 (as a double, int32, int64 or bool) becomes
//!   [`CommandError::Server`] carrying a [`ServerError`]. A reply of the wrong shape
//!   becomes [`CommandError::MalformedReply`]; nothing here panics on server input.
//!
//! Connections (`brook-conn`) only shuttle the bytes: `run(db, &cmd)` is
//! `cmd.build(db)` → encode → send → receive → decode → `cmd.handle_reply(reply)`.
//! Because both halves are synchronous and IO-free, each is unit-tested here with
//! exact documents, and the reply parsers can be fuzzed.
//!
//! # Zero copy
//!
//! A reply arrives as one [`SharedDoc`] (a slice of the refcounted buffer the frame was
//! read into). The documents of a cursor batch, the `postBatchResumeToken`, the
//! `$clusterTime` and other sub-documents are handed out as `SharedDoc`s made with
//! [`SharedDoc::share`]: they point into that same buffer, so a batch of a thousand
//! change events costs a thousand refcount increments, not a thousand copies.
//!
//! # Leniency
//!
//! Numbers are read the way MongoDB writes them, which is not always consistently:
//! counts, sizes, cursor ids and codes are accepted as int32, int64, or a double
//! holding an integer. Error replies are read leniently too (an `ok: 0` reply with an
//! odd `code` still yields a [`ServerError`], with `code: None`), so that a server
//! error is never masked by a parsing error. Everything brook *sends* uses the types
//! the server documents (cursor ids always as Int64).
//!
//! # The commands
//!
//! [`Hello`] (with [`ClientMetadata`] for the handshake), [`Ping`], [`EndSessions`],
//! [`Insert`], [`Update`], [`Delete`], [`Find`], [`Aggregate`], [`GetMore`],
//! [`KillCursors`], and [`RunCommand`] for a user's own document.
//!
//! Two decisions worth knowing:
//!
//! * [`GetMore`] sends its `comment` only when its `max_wire_version` field (the
//!   connection's) is 9 or more, as older servers reject it there. Cursors build their
//!   getMores with [`GetMoreOptions::build`], the one place that decides what a getMore
//!   carries (no `batchSize: 0`, `maxTimeMS` from the await time), for `find` and
//!   `aggregate` cursors and change streams alike.
//! * [`RunCommand`] never mutates the user's document: `$db` goes onto a copy, and a
//!   `$db` already in the user's document is replaced by the database the command runs
//!   on (the Run Command specification requires `$db` to be that database).
//!
//! ```
//! use brook_command::{Command, GetMore, Reply};
//! use bson::doc;
//!
//! let mut get_more = GetMore::new(42, "events");
//! get_more.max_time_ms = Some(1_000);
//! let body = get_more.build("app")?;
//! assert_eq!(
//!     body.body,
//!     doc! { "getMore": 42i64, "collection": "events", "maxTimeMS": 1000, "$db": "app" },
//! );
//!
//! let reply = Reply::from_document(&doc! {
//!     "cursor": { "nextBatch": [{ "_id": 1 }], "id": 0i64, "ns": "app.events" },
//!     "ok": 1.0,
//! })?;
//! let cursor = get_more.handle_reply(reply)?;
//! assert_eq!((cursor.id, cursor.ns.coll.as_str(), cursor.batch.len()), (0, "events", 1));
//! # Ok::<(), brook_command::CommandError>(())
//! ```

#![forbid(unsafe_code)]

mod address;
mod admin;
mod crud;
mod cursor;
mod error;
mod hello;
mod parse;
mod simple;
mod write;

pub use address::{AddressError, DEFAULT_PORT, ServerAddress};
pub use admin::{
    CreateIndexes, DatabaseEntry, DropIndexes, ListCollections, ListDatabases, ListIndexes,
    index_name,
};
pub use brook_wire::{DocumentSequence, Message, SharedDoc};
use bson::{Bson, Document, Timestamp};
pub use crud::{
    Count, CountDocuments, Distinct, FindAndModify, FindAndModifyAction, FindAndModifyReply,
};

pub use cursor::{
    Aggregate, AggregateTarget, CursorReply, Find, GetMore, GetMoreOptions, KillCursors,
    KillCursorsReply, Namespace,
};
pub use error::{CommandError, ServerError, WriteConcernError, WriteError, check_ok};
pub use hello::{ClientMetadata, Hello, HelloReply};
pub use simple::{EndSessions, Ping, RunCommand};
pub use write::{
    Delete, DeleteReply, DeleteStatement, Insert, InsertReply, Update, UpdateModification,
    UpdateReply, UpdateStatement, Upserted,
};

use crate::parse::Fields;

/// A server command: builds its body, parses its reply.
pub trait Command {
    /// The server's name for the command (the body's first key), e.g. `"getMore"`.
    const NAME: &'static str;
    /// What a successful reply is parsed into.
    type Output;
    /// The command body (first key = the command's name) with `$db` set to `db`, plus
    /// its kind-1 document sequences (insert/update/delete). Fails with
    /// [`CommandError::Invalid`] when the arguments cannot make a valid command.
    fn build(&self, db: &str) -> Result<CommandBody, CommandError>;
    /// Parses the reply; replies with `ok` other than 1 become [`CommandError::Server`].
    fn handle_reply(&self, reply: Reply) -> Result<Self::Output, CommandError>;
}

/// A command ready to be framed: its body and its kind-1 document sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandBody {
    /// The kind-0 body, command name first, `$db` included.
    pub body: Document,
    /// The kind-1 sections, in order: (identifier, documents).
    pub sequences: Vec<(String, Vec<SharedDoc>)>,
}

impl CommandBody {
    /// A body with no document sequences.
    pub fn new(body: Document) -> Self {
        CommandBody {
            body,
            sequences: Vec::new(),
        }
    }

    /// The command's name: the body's first key.
    pub fn command_name(&self) -> Option<&str> {
        self.body.keys().next().map(String::as_str)
    }

    /// Whether the compression specification allows compressing this command (it
    /// forbids it for the handshake and authentication commands; see
    /// [`brook_wire::may_compress`]).
    pub fn may_compress(&self) -> bool {
        self.command_name().is_some_and(brook_wire::may_compress)
    }

    /// The OP_MSG carrying this command: the body as the kind-0 section, each sequence
    /// as a kind-1 section, no flags.
    pub fn into_message(self, request_id: i32) -> Result<Message, CommandError> {
        let body = SharedDoc::from_document(&self.body)?;
        let mut message = Message::command(request_id, body);
        message.sequences = self
            .sequences
            .into_iter()
            .map(|(identifier, documents)| DocumentSequence {
                identifier,
                documents,
            })
            .collect();
        Ok(message)
    }
}

/// A reply: the body and any kind-1 sequences, as they came off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The kind-0 section.
    pub body: SharedDoc,
    /// The kind-1 sections (MongoDB does not send any today; kept for completeness).
    pub sequences: Vec<DocumentSequence>,
}

impl Reply {
    /// A reply made of a body alone.
    pub fn new(body: SharedDoc) -> Self {
        Reply {
            body,
            sequences: Vec::new(),
        }
    }

    /// A reply from a document (serialises it; for tests and fake servers).
    pub fn from_document(doc: &Document) -> Result<Self, CommandError> {
        Ok(Reply::new(SharedDoc::from_document(doc)?))
    }

    /// The reply's `operationTime`, if present and a timestamp.
    pub fn operation_time(&self) -> Option<Timestamp> {
        Fields::lenient(self.body.as_raw())
            .opt_timestamp("operationTime")
            .ok()
            .flatten()
    }

    /// The reply's `$clusterTime` document (sharing the reply's buffer), if present,
    /// for gossiping the cluster time on later commands.
    pub fn cluster_time(&self) -> Option<SharedDoc> {
        Fields::lenient(self.body.as_raw())
            .opt_shared_doc("$clusterTime", &self.body)
            .ok()
            .flatten()
    }
}

impl From<Message> for Reply {
    fn from(message: Message) -> Self {
        Reply {
            body: message.body,
            sequences: message.sequences,
        }
    }
}

/// Appends `$db` to a body being built.
fn with_db(mut body: Document, db: &str) -> CommandBody {
    body.insert("$db", db);
    CommandBody::new(body)
}

/// A non-negative count as the smallest BSON integer holding it (Int32 when it fits).
fn count_bson(field: &str, value: u64) -> Result<Bson, CommandError> {
    if let Ok(v) = i32::try_from(value) {
        Ok(Bson::Int32(v))
    } else if let Ok(v) = i64::try_from(value) {
        Ok(Bson::Int64(v))
    } else {
        Err(CommandError::Invalid(format!(
            "{field} = {value} is beyond the int64 range"
        )))
    }
}

/// Serialises statement documents for a kind-1 sequence.
fn to_shared(docs: impl IntoIterator<Item = Document>) -> Result<Vec<SharedDoc>, CommandError> {
    docs.into_iter()
        .map(|doc| SharedDoc::from_document(&doc).map_err(CommandError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn command_body_helpers() {
        let body = CommandBody::new(doc! { "ping": 1, "$db": "admin" });
        assert_eq!(body.command_name(), Some("ping"));
        assert!(body.may_compress());
        assert!(!CommandBody::new(doc! { "hello": 1 }).may_compress());
        assert!(!CommandBody::new(doc! { "isMaster": 1 }).may_compress());
        assert!(!CommandBody::new(doc! { "saslStart": 1 }).may_compress());
        assert!(!CommandBody::new(doc! {}).may_compress());
        assert_eq!(CommandBody::new(doc! {}).command_name(), None);
    }

    #[test]
    fn into_message_carries_body_and_sequences() {
        let doc1 = SharedDoc::from_document(&doc! { "_id": 1 }).unwrap();
        let body = CommandBody {
            body: doc! { "insert": "c", "$db": "d" },
            sequences: vec![("documents".to_owned(), vec![doc1.clone()])],
        };
        let msg = body.into_message(7).unwrap();
        assert_eq!(msg.request_id, 7);
        assert_eq!(
            msg.body.to_document().unwrap(),
            doc! { "insert": "c", "$db": "d" }
        );
        assert_eq!(msg.sequences.len(), 1);
        assert_eq!(msg.sequences[0].identifier, "documents");
        assert!(msg.sequences[0].documents == vec![doc1]);
    }

    #[test]
    fn counts_use_the_smallest_integer() {
        assert_eq!(count_bson("x", 5).unwrap(), Bson::Int32(5));
        assert_eq!(count_bson("x", 1 << 40).unwrap(), Bson::Int64(1 << 40));
        assert!(matches!(
            count_bson("x", u64::MAX),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn reply_helpers() {
        let reply = Reply::from_document(&doc! {
            "ok": 1.0,
            "operationTime": Timestamp { time: 5, increment: 2 },
            "$clusterTime": { "clusterTime": Timestamp { time: 5, increment: 2 } },
        })
        .unwrap();
        assert_eq!(
            reply.operation_time(),
            Some(Timestamp {
                time: 5,
                increment: 2
            })
        );
        let ct = reply.cluster_time().unwrap();
        assert_eq!(
            ct.to_document().unwrap(),
            doc! { "clusterTime": Timestamp { time: 5, increment: 2 } }
        );
        let none = Reply::from_document(&doc! { "ok": 1 }).unwrap();
        assert_eq!(none.operation_time(), None);
        assert!(none.cluster_time().is_none());
    }
}
