//! What a change stream watches and the options it was opened with.

use std::time::Duration;

use brook_command::{AggregateTarget, GetMoreOptions, SharedDoc};
use bson::{Bson, Document, Timestamp};

/// What a change stream watches.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One collection: `{aggregate: "<coll>"}` on `db`.
    Collection {
        /// The database.
        db: String,
        /// The collection.
        coll: String,
    },
    /// Every collection of a database: `{aggregate: 1}` on `db`.
    Database {
        /// The database.
        db: String,
    },
    /// The whole deployment: `{aggregate: 1}` on `admin`, with
    /// `allChangesForCluster: true` in the `$changeStream` stage.
    Cluster,
}

impl Target {
    /// A collection-level stream.
    pub fn collection(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Target::Collection {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// A database-level stream.
    pub fn database(db: impl Into<String>) -> Self {
        Target::Database { db: db.into() }
    }

    /// The database the `aggregate` runs on (`admin` for a cluster-level stream).
    pub fn db(&self) -> &str {
        match self {
            Target::Collection { db, .. } | Target::Database { db } => db,
            Target::Cluster => "admin",
        }
    }

    /// The `aggregate` field: the collection's name, or `1` for database- and
    /// cluster-level streams.
    pub fn aggregate_target(&self) -> AggregateTarget {
        match self {
            Target::Collection { coll, .. } => AggregateTarget::Collection(coll.clone()),
            Target::Database { .. } | Target::Cluster => AggregateTarget::Database,
        }
    }
}

/// The options of a change stream (the specification's `ChangeStreamOptions`), plus the
/// user's pipeline stages.
///
/// Nothing here is validated: unknown `fullDocument` / `fullDocumentBeforeChange`
/// values pass through, and `resumeAfter`, `startAfter` and `startAtOperationTime` are
/// sent as given even when several are set (the server reports the conflict).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeStreamOptions {
    /// The user's stages, appended after the `$changeStream` stage.
    pub pipeline: Vec<Document>,
    /// `fullDocument` in the stage (`"default"`, `"updateLookup"`, `"whenAvailable"`,
    /// `"required"`, or anything the server may add).
    pub full_document: Option<String>,
    /// `fullDocumentBeforeChange` in the stage (`"off"`, `"whenAvailable"`,
    /// `"required"`, ...).
    pub full_document_before_change: Option<String>,
    /// `resumeAfter` in the stage: a resume token (e.g. a saved
    /// [`crate::ChangeStreamMachine::resume_token`]).
    pub resume_after: Option<SharedDoc>,
    /// `startAfter` in the stage: a resume token, which may be an `invalidate` event's.
    pub start_after: Option<SharedDoc>,
    /// `startAtOperationTime` in the stage.
    pub start_at_operation_time: Option<Timestamp>,
    /// How long each `getMore` waits for new events on the server: its `maxTimeMS`.
    /// Never sent on the `aggregate`.
    pub max_await_time: Option<Duration>,
    /// `cursor.batchSize` of the `aggregate`, and `batchSize` of every `getMore`
    /// unless it is 0: `Some(0)` opens the cursor without a first batch, and the
    /// `getMore`s then carry no `batchSize` (see [`GetMoreOptions`]).
    pub batch_size: Option<u32>,
    /// `collation` of the `aggregate`.
    pub collation: Option<Document>,
    /// `comment` of the `aggregate`, and of each `getMore` on servers of wire version 9
    /// or more.
    pub comment: Option<Bson>,
    /// `showExpandedEvents` in the stage.
    pub show_expanded_events: Option<bool>,
    /// `readConcern` of the `aggregate`.
    pub read_concern: Option<Document>,
}

impl ChangeStreamOptions {
    /// How the stream's `getMore`s are built: `batch_size` (never 0 on a `getMore`),
    /// `max_await_time` as `maxTimeMS`, and `comment` (wire version 9 or more).
    pub fn get_more_options(&self) -> GetMoreOptions {
        GetMoreOptions {
            batch_size: self.batch_size,
            max_await_time: self.max_await_time,
            comment: self.comment.clone(),
        }
    }
}
