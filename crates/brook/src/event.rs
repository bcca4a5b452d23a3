//! Change events: the documents a change stream yields, typed.
//!
//! [`ChangeStreamEvent<T>`] carries every field MongoDB puts in a change event (the Change
//! Streams specification's `ChangeStreamDocument`, up to server 8.x); `T` is the type the
//! `fullDocument` and `fullDocumentBeforeChange` images decode into. [`RawChangeEvent`] is
//! the undecoded event for callers that want to look at a few fields or forward the bytes.
//! [`ResumeToken`] is an event's `_id`: what an application persists to resume later.
//!
//! The decoding policy is documented on [`ChangeStreamEvent`].

use std::fmt;

use brook_wire::SharedDoc;
use bson::{Binary, Bson, DateTime, Document, RawDocument, RawDocumentBuf, Timestamp};
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

#[cfg(test)]
mod equivalence;
mod fast;
mod split;

/// The message of the error for an event without `_id`.
const MISSING_RESUME_TOKEN: &str = "change event has no `_id`: cannot provide resume \
     functionality when the resume token is missing";

// ---------------------------------------------------------------------------------------
// ResumeToken
// ---------------------------------------------------------------------------------------

/// A resume token: the `_id` of a change event, or a `postBatchResumeToken`.
///
/// It is opaque (its shape depends on the server version); persist it — e.g. with
/// [`as_bytes`](Self::as_bytes) and restore it with [`from_bytes`](Self::from_bytes) — and
/// pass it back as `resumeAfter` / `startAfter` to continue a stream where it stopped.
///
/// It is held in a refcounted buffer ([`SharedDoc`]): cloning is a refcount increment, and
/// a token taken from a [`RawChangeEvent`] shares the event's buffer. Two tokens are equal
/// when their bytes are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken(SharedDoc);

impl ResumeToken {
    /// Reads a token from its BSON bytes (e.g. a persisted [`as_bytes`](Self::as_bytes)),
    /// checking every element.
    pub fn from_bytes(bytes: &[u8]) -> Result<ResumeToken, Error> {
        let raw = RawDocumentBuf::from_bytes(bytes.to_vec()).map_err(Error::bson)?;
        // Walk the whole document so that a corrupted token is refused here rather than
        // by the server on resume.
        Document::try_from(raw.as_ref()).map_err(Error::bson)?;
        Ok(ResumeToken::from(raw))
    }

    /// A token from a [`Document`] (serialises it).
    pub fn from_document(doc: &Document) -> Result<ResumeToken, Error> {
        let raw = RawDocumentBuf::try_from(doc).map_err(Error::bson)?;
        Ok(ResumeToken::from(raw))
    }

    /// The token as a raw BSON document, for reading it in place.
    pub fn as_document(&self) -> &RawDocument {
        self.0.as_raw()
    }

    /// A copy of the token as an owned raw BSON document.
    pub fn to_raw(&self) -> RawDocumentBuf {
        self.as_document().to_owned()
    }

    /// The token parsed into a [`Document`].
    pub fn to_document(&self) -> Result<Document, Error> {
        Document::try_from(self.as_document()).map_err(Error::bson)
    }

    /// The token's BSON bytes: what to persist.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The token's buffer, as the change-stream machinery stores it.
    pub fn as_shared(&self) -> &SharedDoc {
        &self.0
    }

    /// The token's buffer, giving up the wrapper.
    pub fn into_shared(self) -> SharedDoc {
        self.0
    }

    /// The cluster time the token stands for: the event's, or the high-water mark's.
    ///
    /// Read from the token's `_data` (see [`info`](Self::info)); `None` when the token is
    /// not of a known kind. The format is the server's internal business: use this for
    /// monitoring (how far behind a stream is) and checkpoints, not to compare tokens.
    ///
    /// ```
    /// use brook::ResumeToken;
    /// use brook::bson::{Timestamp, doc};
    ///
    /// // A postBatchResumeToken of a MongoDB 5.0 replica set.
    /// let token = ResumeToken::from_document(&doc! { "_data": "82612F653E000000022B0229296E04" })?;
    /// assert_eq!(token.cluster_time(), Some(Timestamp { time: 1630496062, increment: 2 }));
    /// # Ok::<(), brook::Error>(())
    /// ```
    pub fn cluster_time(&self) -> Option<Timestamp> {
        self.info().map(|info| info.cluster_time)
    }

    /// Everything the token's `_data` says, as far as it can be read: cluster time, token
    /// version, high-water mark or event, the event's `operationType` (version-2 tokens),
    /// the fragment number of a split event's fragment.
    ///
    /// `None` when the token is not `{_data: "<hex>"}` starting with a cluster time (e.g.
    /// MongoDB 3.6's binary tokens); fields it cannot read are `None`. Never fails.
    ///
    /// ```
    /// use brook::{ResumeToken, TokenType};
    /// use brook::bson::doc;
    ///
    /// // An insert's token from MongoDB 6.0 (a version-2 token).
    /// let token = ResumeToken::from_document(&doc! { "_data":
    ///     "826275077A000000012B042C0100296E5A1004BFFDB617400E486099007C0E0048B305463C6F70\
    ///      65726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F696400\
    ///      646275077A2F3159F971E405C6000004" })?;
    /// let info = token.info().expect("a readable token");
    /// assert_eq!(info.cluster_time.time, 1651836794);
    /// assert_eq!(info.version, Some(2));
    /// assert_eq!(info.token_type, Some(TokenType::Event));
    /// assert_eq!(info.event_type.as_deref(), Some("insert"));
    /// # Ok::<(), brook::Error>(())
    /// ```
    pub fn info(&self) -> Option<brook_changestream::TokenInfo> {
        brook_changestream::decode_resume_token(self.as_document())
    }
}

impl From<SharedDoc> for ResumeToken {
    /// Wraps the document (no copy).
    fn from(doc: SharedDoc) -> Self {
        ResumeToken(doc)
    }
}

impl From<RawDocumentBuf> for ResumeToken {
    /// Takes over the document's buffer (no copy).
    fn from(doc: RawDocumentBuf) -> Self {
        ResumeToken(SharedDoc::from(doc))
    }
}

impl From<&RawDocument> for ResumeToken {
    /// Copies the document.
    fn from(doc: &RawDocument) -> Self {
        ResumeToken(SharedDoc::from_raw(doc))
    }
}

impl From<ResumeToken> for SharedDoc {
    fn from(token: ResumeToken) -> Self {
        token.0
    }
}

impl AsRef<RawDocument> for ResumeToken {
    fn as_ref(&self) -> &RawDocument {
        self.as_document()
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Document::try_from(self.as_document()) {
            Ok(d) => write!(f, "ResumeToken({d})"),
            Err(_) => write!(f, "ResumeToken(<malformed, {} bytes>)", self.0.len()),
        }
    }
}

impl Serialize for ResumeToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_document().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ResumeToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawDocumentBuf::deserialize(deserializer)
            .map(ResumeToken::from)
            .map_err(|e| de::Error::custom(format!("invalid resume token: {e}")))
    }
}

/// The resume token (`_id`) of an undecoded change event, copied out of it; `None` if the
/// event has no `_id` or its `_id` is not a document.
///
/// [`RawChangeEvent::resume_token`] does the same without copying.
pub fn resume_token_of(event: &RawDocument) -> Option<ResumeToken> {
    event.get_document("_id").ok().map(ResumeToken::from)
}

// ---------------------------------------------------------------------------------------
// OperationType
// ---------------------------------------------------------------------------------------

/// The `operationType` of a change event.
///
/// Deserialises from the server's string and serialises back to it; a value brook does not
/// know becomes [`Other`](Self::Other) with the string kept, so newer servers never break
/// decoding. Build one from a string with `OperationType::from("insert")`, which maps
/// known names to their variant (never construct `Other` with a known name: it would not
/// compare equal to the variant).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OperationType {
    /// `insert`: a document was inserted.
    Insert,
    /// `update`: a document was updated in place (see `updateDescription`).
    Update,
    /// `replace`: a document was replaced.
    Replace,
    /// `delete`: a document was deleted.
    Delete,
    /// `drop`: a collection was dropped.
    Drop,
    /// `rename`: a collection was renamed (the new name is in `to`).
    Rename,
    /// `dropDatabase`: a database was dropped.
    DropDatabase,
    /// `invalidate`: the stream's target is gone; the stream ends after this event.
    Invalidate,
    /// `create`: a collection or view was created (`showExpandedEvents`).
    Create,
    /// `createIndexes`: indexes were created (`showExpandedEvents`).
    CreateIndexes,
    /// `dropIndexes`: indexes were dropped (`showExpandedEvents`).
    DropIndexes,
    /// `modify`: a collection's options were changed by `collMod` (`showExpandedEvents`).
    Modify,
    /// `shardCollection`: a collection was sharded (`showExpandedEvents`).
    ShardCollection,
    /// `reshardCollection`: a collection's shard key was changed (`showExpandedEvents`).
    ReshardCollection,
    /// `refineCollectionShardKey`: a shard key was refined (`showExpandedEvents`).
    RefineCollectionShardKey,
    /// Any other value, as the server sent it.
    Other(String),
}

impl OperationType {
    /// The known variant named `s`, if any.
    fn known(s: &str) -> Option<OperationType> {
        Some(match s {
            "insert" => OperationType::Insert,
            "update" => OperationType::Update,
            "replace" => OperationType::Replace,
            "delete" => OperationType::Delete,
            "drop" => OperationType::Drop,
            "rename" => OperationType::Rename,
            "dropDatabase" => OperationType::DropDatabase,
            "invalidate" => OperationType::Invalidate,
            "create" => OperationType::Create,
            "createIndexes" => OperationType::CreateIndexes,
            "dropIndexes" => OperationType::DropIndexes,
            "modify" => OperationType::Modify,
            "shardCollection" => OperationType::ShardCollection,
            "reshardCollection" => OperationType::ReshardCollection,
            "refineCollectionShardKey" => OperationType::RefineCollectionShardKey,
            _ => return None,
        })
    }

    /// The name the server uses (`"insert"`, `"dropDatabase"`, ... or the `Other` string).
    pub fn as_str(&self) -> &str {
        match self {
            OperationType::Insert => "insert",
            OperationType::Update => "update",
            OperationType::Replace => "replace",
            OperationType::Delete => "delete",
            OperationType::Drop => "drop",
            OperationType::Rename => "rename",
            OperationType::DropDatabase => "dropDatabase",
            OperationType::Invalidate => "invalidate",
            OperationType::Create => "create",
            OperationType::CreateIndexes => "createIndexes",
            OperationType::DropIndexes => "dropIndexes",
            OperationType::Modify => "modify",
            OperationType::ShardCollection => "shardCollection",
            OperationType::ReshardCollection => "reshardCollection",
            OperationType::RefineCollectionShardKey => "refineCollectionShardKey",
            OperationType::Other(s) => s,
        }
    }
}

impl From<&str> for OperationType {
    fn from(s: &str) -> Self {
        OperationType::known(s).unwrap_or_else(|| OperationType::Other(s.to_owned()))
    }
}

impl From<String> for OperationType {
    fn from(s: String) -> Self {
        OperationType::known(&s).unwrap_or(OperationType::Other(s))
    }
}

impl fmt::Display for OperationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OperationType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OperationType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OperationTypeVisitor;

        impl de::Visitor<'_> for OperationTypeVisitor {
            type Value = OperationType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an operationType string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OperationType, E> {
                Ok(OperationType::from(v))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<OperationType, E> {
                Ok(OperationType::from(v))
            }
        }

        deserializer.deserialize_str(OperationTypeVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// Parts of an event
// ---------------------------------------------------------------------------------------

/// The namespace of a change event (`ns`) or the new name of a renamed collection (`to`).
///
/// `coll` is absent for database-wide events (`dropDatabase`) and some `invalidate`s.
/// Fields the server may add to `ns` (e.g. `viewOn`) are ignored.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChangeNamespace {
    /// The database.
    pub db: String,
    /// The collection, if the event concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coll: Option<String>,
}

impl ChangeNamespace {
    /// The namespace of a whole database.
    pub fn database(db: impl Into<String>) -> ChangeNamespace {
        ChangeNamespace {
            db: db.into(),
            coll: None,
        }
    }

    /// The namespace of one collection.
    pub fn collection(db: impl Into<String>, coll: impl Into<String>) -> ChangeNamespace {
        ChangeNamespace {
            db: db.into(),
            coll: Some(coll.into()),
        }
    }
}

impl fmt::Display for ChangeNamespace {
    /// `db.coll`, or `db` alone without a collection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.coll {
            Some(coll) => write!(f, "{}.{}", self.db, coll),
            None => f.write_str(&self.db),
        }
    }
}

/// What an `update` changed (`updateDescription`).
///
/// Missing lists and documents decode as empty (servers before 4.7 send no
/// `truncatedArrays`).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDescription {
    /// The fields set by the update and their new values, by dotted path (array elements
    /// by index: `"tags.0"`), except arrays reported in `truncated_arrays`.
    #[serde(default)]
    pub updated_fields: Document,
    /// The dotted paths of the fields the update removed.
    #[serde(default)]
    pub removed_fields: Vec<String>,
    /// Arrays the update shortened (pipeline updates), with their new length.
    #[serde(default)]
    pub truncated_arrays: Vec<TruncatedArray>,
    /// For update paths that are ambiguous (keys containing dots, or numeric keys that look
    /// like array indices), the path split into its real components: strings for field
    /// names, Int32 for array indices, e.g. `{"a.0": ["a", "0"]}`. Server 6.1+; before
    /// 8.2 only with `showExpandedEvents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disambiguated_paths: Option<Document>,
}

/// One array shortened by an update (an element of `truncatedArrays`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TruncatedArray {
    /// The dotted path of the array.
    pub field: String,
    /// Its length after the update.
    #[serde(rename = "newSize")]
    pub new_size: i32,
}

/// Which part of a split event this is (`splitEvent`, from `$changeStreamSplitLargeEvent`
/// on server 7.0+): fragment `fragment` of `of`, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitEvent {
    /// This fragment's number, from 1.
    pub fragment: i32,
    /// The number of fragments of the event.
    pub of: i32,
}

// ---------------------------------------------------------------------------------------
// ChangeStreamEvent
// ---------------------------------------------------------------------------------------

/// One change event, with its full-document images decoded as `T`.
///
/// Every field but [`id`](Self::id) is optional: which ones are present depends on the
/// operation, the server version and the stream's options (`fullDocument`,
/// `fullDocumentBeforeChange`, `showExpandedEvents`). See [`RawChangeEvent`] for the
/// undecoded form.
///
/// Serialising writes the server's field names and leaves `None` fields out, so an event
/// round-trips through BSON.
///
/// # Decoding
///
/// Events are decoded in one pass straight from their BSON bytes
/// ([`ChangeStreamEvent::from_slice`], [`ChangeStreamEvent::from_raw`]); no intermediate
/// [`Document`] is built for the event itself. The envelope's fields are read by their
/// BSON type and only the images go through serde (as `T`); `documentKey` stays raw
/// bytes. Anything unusual (a field of an unexpected type, a repeated field, an image `T`
/// rejects) is decoded again by the type's serde [`Deserialize`] implementation, which
/// has the final word and words the errors — so both ways of decoding always agree.
///
/// * `_id` and `operationType` are required (every server event has both). An event
///   without `_id` is an error whose message says the resume token is missing: the change
///   stream cannot resume past such an event. That check comes first, so an event missing
///   both reports the missing token. (A pipeline that projects fields away still decodes
///   as a [`RawChangeEvent`].)
/// * Every other field may be absent. `null` is read as absent for the optional fields
///   (servers send `fullDocument: null` for an update whose document is gone, and
///   `fullDocumentBeforeChange: null` when a pre-image is unavailable).
/// * Numbers are read by value: `txnNumber`, `truncatedArrays.newSize` and the `splitEvent`
///   counters accept Int32 and Int64 alike (out-of-range values are an error).
/// * Unknown fields are ignored, at the top level and in `ns`, so that events of newer
///   servers still decode; the server adds fields over time (`nsType` came in 8.1). Use
///   [`RawChangeEvent`] to see everything the server sent.
/// * `clusterTime` is a BSON Timestamp on every real MongoDB server. A value of another
///   type is read as `None` rather than failing the whole event: the field is informational
///   only (resuming uses `_id`, never `clusterTime`), and some wire-compatible servers send
///   a date there. No conversion is attempted: a date is not a cluster time.
/// * An unknown `operationType` becomes [`OperationType::Other`], never an error, as the
///   specification requires.
///
/// ```
/// use brook::{ChangeStreamEvent, OperationType};
/// use brook::bson::{doc, rawdoc};
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// struct Order { sku: String }
///
/// let raw = rawdoc! {
///     "_id": { "_data": "8266A1B2C3" },
///     "operationType": "insert",
///     "ns": { "db": "shop", "coll": "orders" },
///     "documentKey": { "_id": 1 },
///     "fullDocument": { "_id": 1, "sku": "A-1" },
/// };
/// let event = ChangeStreamEvent::<Order>::from_raw(&raw)?;
/// assert_eq!(event.operation_type, OperationType::Insert);
/// assert_eq!(event.full_document.map(|o| o.sku).as_deref(), Some("A-1"));
/// // Persist this to resume later.
/// assert_eq!(event.id.to_document()?, doc! { "_data": "8266A1B2C3" });
/// # Ok::<(), brook::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStreamEvent<T = Document> {
    /// `_id`: the resume token of this event.
    #[serde(rename = "_id")]
    pub id: ResumeToken,
    /// `operationType`.
    pub operation_type: OperationType,
    /// `ns`: where the change happened. Absent for `invalidate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<ChangeNamespace>,
    /// `nsType`: what a `create` event created: `"collection"`, `"timeseries"` or `"view"`
    /// (server 8.1+, `showExpandedEvents`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_type: Option<String>,
    /// `to`: the new namespace of a `rename`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<ChangeNamespace>,
    /// `documentKey`: the `_id` of the changed document, and the shard key fields on a
    /// sharded collection. Present for `insert`, `update`, `replace`, `delete`.
    ///
    /// Kept as the server's bytes (one copy, no per-field decoding): read a field with
    /// e.g. `key.get_object_id("_id")`, or decode it with
    /// [`bson::deserialize_from_slice`] / `Document::try_from(key.as_ref())`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_key: Option<RawDocumentBuf>,
    /// `updateDescription`: what an `update` changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_description: Option<UpdateDescription>,
    /// `fullDocument`: the document after the change (always for `insert` and `replace`;
    /// for `update` with `fullDocument: updateLookup` / `whenAvailable` / `required`).
    /// `None` when absent or `null` (e.g. the document was deleted before the lookup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_document: Option<T>,
    /// `fullDocumentBeforeChange`: the pre-image, with `fullDocumentBeforeChange:
    /// whenAvailable` / `required` on a collection with pre-images enabled. `None` when
    /// absent or `null` (unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_document_before_change: Option<T>,
    /// `clusterTime`: the oplog timestamp of the change (shared by the events of one
    /// transaction). `None` if absent or not a Timestamp (see [Decoding](Self#decoding)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<Timestamp>,
    /// `wallTime`: the server's wall clock when the change happened (server 6.0+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<DateTime>,
    /// `collectionUUID`: the UUID (binary subtype 4) of the collection
    /// (server 6.0+, `showExpandedEvents`).
    #[serde(rename = "collectionUUID", skip_serializing_if = "Option::is_none")]
    pub collection_uuid: Option<Binary>,
    /// `operationDescription`: details of a DDL event (`create`, `createIndexes`,
    /// `modify`, `rename`, `shardCollection`, ...; `showExpandedEvents`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_description: Option<Document>,
    /// `splitEvent`: set when the event was split by `$changeStreamSplitLargeEvent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_event: Option<SplitEvent>,
    /// `lsid`: the session of the transaction the change belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsid: Option<Document>,
    /// `txnNumber`: the transaction number within `lsid` (read from Int32 or Int64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_number: Option<i64>,
}

/// What the server sends, with `_id` optional so that its absence gets a clear error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
struct EventRepr<T> {
    #[serde(rename = "_id", default)]
    id: Option<ResumeToken>,
    #[serde(default)]
    operation_type: Option<OperationType>,
    #[serde(default)]
    ns: Option<ChangeNamespace>,
    #[serde(default)]
    ns_type: Option<String>,
    #[serde(default)]
    to: Option<ChangeNamespace>,
    #[serde(default)]
    document_key: Option<RawDocumentBuf>,
    #[serde(default)]
    update_description: Option<UpdateDescription>,
    #[serde(default)]
    full_document: Option<T>,
    #[serde(default)]
    full_document_before_change: Option<T>,
    #[serde(default, deserialize_with = "timestamp_or_none")]
    cluster_time: Option<Timestamp>,
    #[serde(default)]
    wall_time: Option<DateTime>,
    #[serde(rename = "collectionUUID", default)]
    collection_uuid: Option<Binary>,
    #[serde(default)]
    operation_description: Option<Document>,
    #[serde(default)]
    split_event: Option<SplitEvent>,
    #[serde(default)]
    lsid: Option<Document>,
    #[serde(default)]
    txn_number: Option<i64>,
}

/// A Timestamp, or `None` for `null` and values of any other type.
fn timestamp_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    Ok(match Option::<Bson>::deserialize(d)? {
        Some(Bson::Timestamp(ts)) => Some(ts),
        _ => None,
    })
}

impl<T> Default for EventRepr<T> {
    fn default() -> Self {
        EventRepr {
            id: None,
            operation_type: None,
            ns: None,
            ns_type: None,
            to: None,
            document_key: None,
            update_description: None,
            full_document: None,
            full_document_before_change: None,
            cluster_time: None,
            wall_time: None,
            collection_uuid: None,
            operation_description: None,
            split_event: None,
            lsid: None,
            txn_number: None,
        }
    }
}

/// A required field an event lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Id,
    OperationType,
}

impl<T> EventRepr<T> {
    /// The event, once both required fields are there.
    fn into_event(self) -> Result<ChangeStreamEvent<T>, Missing> {
        Ok(ChangeStreamEvent {
            id: self.id.ok_or(Missing::Id)?,
            operation_type: self.operation_type.ok_or(Missing::OperationType)?,
            ns: self.ns,
            ns_type: self.ns_type,
            to: self.to,
            document_key: self.document_key,
            update_description: self.update_description,
            full_document: self.full_document,
            full_document_before_change: self.full_document_before_change,
            cluster_time: self.cluster_time,
            wall_time: self.wall_time,
            collection_uuid: self.collection_uuid,
            operation_description: self.operation_description,
            split_event: self.split_event,
            lsid: self.lsid,
            txn_number: self.txn_number,
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ChangeStreamEvent<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The missing token is checked first, so an event lacking both reports it.
        EventRepr::<T>::deserialize(deserializer)?
            .into_event()
            .map_err(|missing| match missing {
                Missing::Id => de::Error::custom(MISSING_RESUME_TOKEN),
                Missing::OperationType => de::Error::missing_field("operationType"),
            })
    }
}

impl<T> ChangeStreamEvent<T> {
    /// A minimal event: a token and an operation type, every other field `None`. For tests
    /// and for building events by hand; fill in the fields after.
    pub fn new(id: ResumeToken, operation_type: OperationType) -> ChangeStreamEvent<T> {
        ChangeStreamEvent {
            id,
            operation_type,
            ns: None,
            ns_type: None,
            to: None,
            document_key: None,
            update_description: None,
            full_document: None,
            full_document_before_change: None,
            cluster_time: None,
            wall_time: None,
            collection_uuid: None,
            operation_description: None,
            split_event: None,
            lsid: None,
            txn_number: None,
        }
    }

    /// The same event with `f` applied to `full_document` and
    /// `full_document_before_change`.
    pub fn map_document<U>(mut self, mut f: impl FnMut(T) -> U) -> ChangeStreamEvent<U> {
        let full_document = self.full_document.take().map(&mut f);
        let full_document_before_change = self.full_document_before_change.take().map(&mut f);
        self.with_images(full_document, full_document_before_change)
    }

    /// The same event with the fallible `f` applied to `full_document` and
    /// `full_document_before_change`; the first error is returned.
    pub fn try_map_document<U, E>(
        mut self,
        mut f: impl FnMut(T) -> Result<U, E>,
    ) -> Result<ChangeStreamEvent<U>, E> {
        let full_document = self.full_document.take().map(&mut f).transpose()?;
        let full_document_before_change = self
            .full_document_before_change
            .take()
            .map(&mut f)
            .transpose()?;
        Ok(self.with_images(full_document, full_document_before_change))
    }

    /// Moves every field but the images into an event of another document type.
    fn with_images<U>(self, after: Option<U>, before: Option<U>) -> ChangeStreamEvent<U> {
        ChangeStreamEvent {
            id: self.id,
            operation_type: self.operation_type,
            ns: self.ns,
            ns_type: self.ns_type,
            to: self.to,
            document_key: self.document_key,
            update_description: self.update_description,
            full_document: after,
            full_document_before_change: before,
            cluster_time: self.cluster_time,
            wall_time: self.wall_time,
            collection_uuid: self.collection_uuid,
            operation_description: self.operation_description,
            split_event: self.split_event,
            lsid: self.lsid,
            txn_number: self.txn_number,
        }
    }
}

impl<T: DeserializeOwned> ChangeStreamEvent<T> {
    /// Decodes an event from its BSON bytes, in one pass.
    ///
    /// Fails if the bytes are not a well-formed document, if `_id` is missing (the message
    /// says the resume token is missing) or if a field has a type it cannot have, including
    /// images that do not fit `T`.
    pub fn from_slice(bytes: &[u8]) -> Result<ChangeStreamEvent<T>, Error> {
        if let Some(event) = RawDocument::from_bytes(bytes).ok().and_then(fast::decode) {
            return Ok(event);
        }
        // The reference decoder: it has the final word on anything unusual, and words
        // every error.
        bson::deserialize_from_slice(bytes).map_err(|e| decode_error::<T>(bytes, &e))
    }

    /// Decodes an event from a raw document, in one pass (see
    /// [`from_slice`](Self::from_slice)).
    pub fn from_raw(event: &RawDocument) -> Result<ChangeStreamEvent<T>, Error> {
        Self::from_slice(event.as_bytes())
    }
}

/// The error for an event that failed to decode: decoded once more, on this cold path,
/// through a deserializer that tracks the path to the failing field (the fast paths
/// carry no such bookkeeping), with the event's resume token when it has one.
fn decode_error<T: DeserializeOwned>(bytes: &[u8], err: &bson::error::Error) -> Error {
    let raw = RawDocument::from_bytes(bytes).ok();
    let token = raw
        .and_then(|r| r.get_document("_id").ok())
        .map(|id| ResumeToken(SharedDoc::from_raw(id)));
    let located = raw.and_then(|r| Document::try_from(r).ok()).map(|doc| {
        let de = bson::de::Deserializer::new(Bson::Document(doc));
        serde_path_to_error::deserialize::<_, ChangeStreamEvent<T>>(de)
    });
    // The reference decoder's words, the located decoder's path.
    let path = match located {
        Some(Err(e)) => e.path().to_string(),
        _ => String::from("."),
    };
    Error::event_decode(path, err.to_string(), token)
}

impl ChangeStreamEvent<Document> {
    /// The same event with its images decoded as `U`.
    pub fn into_typed<U: DeserializeOwned>(self) -> Result<ChangeStreamEvent<U>, Error> {
        self.try_map_document(|d| bson::deserialize_from_document(d).map_err(Error::bson))
    }
}

impl ChangeStreamEvent<RawDocumentBuf> {
    /// The same event with its images decoded as `U` (from their bytes, in one pass each).
    pub fn into_typed<U: DeserializeOwned>(self) -> Result<ChangeStreamEvent<U>, Error> {
        self.try_map_document(|d| bson::deserialize_from_slice(d.as_bytes()).map_err(Error::bson))
    }
}

// ---------------------------------------------------------------------------------------
// RawChangeEvent
// ---------------------------------------------------------------------------------------

/// An undecoded change event: the document exactly as the server sent it, in a refcounted
/// buffer (events of one batch share the reply's buffer).
///
/// Reading a field reads it in place; [`decode`](Self::decode) turns it into a
/// [`ChangeStreamEvent`] when wanted.
#[derive(Clone, PartialEq)]
pub struct RawChangeEvent(SharedDoc);

impl RawChangeEvent {
    /// The event as a raw BSON document.
    pub fn as_document(&self) -> &RawDocument {
        self.0.as_raw()
    }

    /// The event's BSON bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The event's buffer.
    pub fn as_shared(&self) -> &SharedDoc {
        &self.0
    }

    /// The event's buffer, giving up the wrapper.
    pub fn into_shared(self) -> SharedDoc {
        self.0
    }

    /// The event's resume token (`_id`), sharing the event's buffer (no copy); `None` if
    /// `_id` is missing or not a document.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        let id = self.as_document().get_document("_id").ok()?;
        match self.0.share(id) {
            Some(shared) => Some(ResumeToken(shared)),
            None => Some(ResumeToken::from(id)),
        }
    }

    /// The event's `operationType`; `None` if missing or not a string.
    pub fn operation_type(&self) -> Option<OperationType> {
        self.as_document()
            .get_str("operationType")
            .ok()
            .map(OperationType::from)
    }

    /// Decodes the event, with its images as `T` (see [`ChangeStreamEvent::from_slice`]).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<ChangeStreamEvent<T>, Error> {
        ChangeStreamEvent::from_slice(self.as_bytes())
    }

    /// The event parsed into a [`Document`].
    pub fn to_document(&self) -> Result<Document, Error> {
        Document::try_from(self.as_document()).map_err(Error::bson)
    }
}

impl From<SharedDoc> for RawChangeEvent {
    /// Wraps the document (no copy).
    fn from(doc: SharedDoc) -> Self {
        RawChangeEvent(doc)
    }
}

impl From<RawDocumentBuf> for RawChangeEvent {
    /// Takes over the document's buffer (no copy).
    fn from(doc: RawDocumentBuf) -> Self {
        RawChangeEvent(SharedDoc::from(doc))
    }
}

impl From<RawChangeEvent> for SharedDoc {
    fn from(event: RawChangeEvent) -> Self {
        event.0
    }
}

impl AsRef<RawDocument> for RawChangeEvent {
    fn as_ref(&self) -> &RawDocument {
        self.as_document()
    }
}

impl fmt::Debug for RawChangeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Document::try_from(self.as_document()) {
            Ok(d) => write!(f, "RawChangeEvent({d})"),
            Err(_) => write!(f, "RawChangeEvent(<malformed, {} bytes>)", self.0.len()),
        }
    }
}

impl Serialize for RawChangeEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_document().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawChangeEvent {
    /// Copies the document into its own buffer; no field is decoded.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawDocumentBuf::deserialize(deserializer).map(RawChangeEvent::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, rawdoc};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Order {
        #[serde(rename = "_id")]
        id: i32,
        sku: String,
        qty: i64,
    }

    fn token(n: u32) -> Document {
        doc! { "_data": format!("8266A1B2C3{n:08X}2B042C0100296E5A1004") }
    }

    fn ts(t: u32, i: u32) -> Timestamp {
        Timestamp {
            time: t,
            increment: i,
        }
    }

    fn uuid_bin() -> Binary {
        Binary {
            subtype: BinarySubtype::Uuid,
            bytes: (1..=16).collect(),
        }
    }

    fn bytes(d: &Document) -> Vec<u8> {
        bson::serialize_to_vec(d).unwrap()
    }

    fn decode<T: DeserializeOwned>(d: &Document) -> Result<ChangeStreamEvent<T>, Error> {
        ChangeStreamEvent::from_slice(&bytes(d))
    }

    #[test]
    fn insert_decodes_full_document_into_a_user_struct() {
        let d = doc! {
            "_id": token(1),
            "operationType": "insert",
            "clusterTime": ts(1_718_000_000, 3),
            "wallTime": DateTime::from_millis(1_718_000_000_123),
            "fullDocument": { "_id": 7, "sku": "A-1", "qty": 2 },
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 7 },
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.id.to_document().unwrap(), token(1));
        assert_eq!(ev.operation_type, OperationType::Insert);
        assert_eq!(ev.cluster_time, Some(ts(1_718_000_000, 3)));
        assert_eq!(ev.wall_time, Some(DateTime::from_millis(1_718_000_000_123)));
        assert_eq!(
            ev.full_document,
            Some(Order {
                id: 7,
                sku: "A-1".into(),
                qty: 2
            })
        );
        assert_eq!(ev.ns, Some(ChangeNamespace::collection("shop", "orders")));
        assert_eq!(ev.document_key, Some(rawdoc! { "_id": 7 }));
        assert_eq!(ev.full_document_before_change, None);
        assert_eq!(ev.update_description, None);
        assert_eq!(ev.to, None);
        assert_eq!(ev.txn_number, None);
        assert_eq!(ev.split_event, None);
    }

    #[test]
    fn update_decodes_update_description_with_truncated_arrays_and_disambiguated_paths() {
        let d = doc! {
            "_id": token(2),
            "operationType": "update",
            "clusterTime": ts(1_718_000_001, 1),
            "wallTime": DateTime::from_millis(1_718_000_001_000),
            "collectionUUID": uuid_bin(),
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 7 },
            "updateDescription": {
                "updatedFields": { "qty": 5, "a.0": 1, "tags.1.b": 3 },
                "removedFields": [ "note", "legacy.x" ],
                "truncatedArrays": [
                    { "field": "tags", "newSize": 2 },
                    { "field": "hist.0.list", "newSize": 5_i64 },
                ],
                "disambiguatedPaths": { "a.0": [ "a", "0" ], "tags.1.b": [ "tags", 1, "b" ] },
            },
            "fullDocument": null,
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.operation_type, OperationType::Update);
        assert_eq!(ev.collection_uuid, Some(uuid_bin()));
        assert_eq!(ev.full_document, None, "fullDocument: null is None");
        let ud = ev.update_description.unwrap();
        assert_eq!(
            ud.updated_fields,
            doc! { "qty": 5, "a.0": 1, "tags.1.b": 3 }
        );
        assert_eq!(ud.removed_fields, vec!["note", "legacy.x"]);
        assert_eq!(
            ud.truncated_arrays,
            vec![
                TruncatedArray {
                    field: "tags".into(),
                    new_size: 2
                },
                TruncatedArray {
                    field: "hist.0.list".into(),
                    new_size: 5
                },
            ]
        );
        assert_eq!(
            ud.disambiguated_paths,
            Some(doc! { "a.0": [ "a", "0" ], "tags.1.b": [ "tags", 1, "b" ] })
        );
    }

    #[test]
    fn update_description_without_optional_lists_decodes_empty() {
        let d = doc! {
            "_id": token(3),
            "operationType": "update",
            "updateDescription": { "updatedFields": { "x": 1 }, "removedFields": [] },
        };
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        let ud = ev.update_description.unwrap();
        assert_eq!(ud.updated_fields, doc! { "x": 1 });
        assert!(ud.removed_fields.is_empty());
        assert!(ud.truncated_arrays.is_empty());
        assert_eq!(ud.disambiguated_paths, None);
    }

    #[test]
    fn replace_carries_the_new_document() {
        let d = doc! {
            "_id": token(4),
            "operationType": "replace",
            "clusterTime": ts(10, 1),
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 7 },
            "fullDocument": { "_id": 7, "sku": "B-2", "qty": 9_i64 },
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.operation_type, OperationType::Replace);
        assert_eq!(ev.full_document.unwrap().sku, "B-2");
    }

    #[test]
    fn delete_with_and_without_pre_image() {
        let mut d = doc! {
            "_id": token(5),
            "operationType": "delete",
            "clusterTime": ts(11, 1),
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 7 },
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.operation_type, OperationType::Delete);
        assert_eq!(ev.full_document, None);
        assert_eq!(ev.full_document_before_change, None);

        // whenAvailable without a pre-image: explicit null.
        d.insert("fullDocumentBeforeChange", Bson::Null);
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.full_document_before_change, None);

        d.insert(
            "fullDocumentBeforeChange",
            doc! { "_id": 7, "sku": "B-2", "qty": 9 },
        );
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(
            ev.full_document_before_change,
            Some(Order {
                id: 7,
                sku: "B-2".into(),
                qty: 9
            })
        );
    }

    #[test]
    fn drop_rename_drop_database_and_invalidate() {
        let drop = doc! {
            "_id": token(6), "operationType": "drop", "clusterTime": ts(12, 1),
            "ns": { "db": "shop", "coll": "orders" },
        };
        let ev: ChangeStreamEvent = decode(&drop).unwrap();
        assert_eq!(ev.operation_type, OperationType::Drop);
        assert_eq!(ev.ns.unwrap().to_string(), "shop.orders");

        let rename = doc! {
            "_id": token(7), "operationType": "rename", "clusterTime": ts(13, 1),
            "ns": { "db": "shop", "coll": "orders" },
            "to": { "db": "shop", "coll": "orders_2024" },
            "operationDescription": { "to": { "db": "shop", "coll": "orders_2024" } },
        };
        let ev: ChangeStreamEvent = decode(&rename).unwrap();
        assert_eq!(ev.operation_type, OperationType::Rename);
        assert_eq!(
            ev.to,
            Some(ChangeNamespace::collection("shop", "orders_2024"))
        );
        assert_eq!(
            ev.operation_description,
            Some(doc! { "to": { "db": "shop", "coll": "orders_2024" } })
        );

        let drop_db = doc! {
            "_id": token(8), "operationType": "dropDatabase", "clusterTime": ts(14, 1),
            "ns": { "db": "shop" },
        };
        let ev: ChangeStreamEvent = decode(&drop_db).unwrap();
        assert_eq!(ev.operation_type, OperationType::DropDatabase);
        let ns = ev.ns.unwrap();
        assert_eq!(ns, ChangeNamespace::database("shop"));
        assert_eq!(ns.coll, None);
        assert_eq!(ns.to_string(), "shop");

        let invalidate = doc! {
            "_id": token(9), "operationType": "invalidate", "clusterTime": ts(14, 2),
            "wallTime": DateTime::from_millis(5),
        };
        let ev: ChangeStreamEvent = decode(&invalidate).unwrap();
        assert_eq!(ev.operation_type, OperationType::Invalidate);
        assert_eq!(ev.ns, None);
        assert_eq!(ev.document_key, None);
    }

    #[test]
    fn expanded_ddl_events_keep_operation_description() {
        let create = doc! {
            "_id": token(10), "operationType": "create", "clusterTime": ts(15, 1),
            "collectionUUID": uuid_bin(),
            "ns": { "db": "shop", "coll": "carts" },
            "nsType": "collection",
            "operationDescription": { "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } },
        };
        let ev: ChangeStreamEvent = decode(&create).unwrap();
        assert_eq!(ev.operation_type, OperationType::Create);
        assert_eq!(ev.ns_type.as_deref(), Some("collection"));
        assert_eq!(ev.collection_uuid, Some(uuid_bin()));
        assert_eq!(
            ev.operation_description
                .unwrap()
                .get_document("idIndex")
                .unwrap()
                .get_str("name")
                .unwrap(),
            "_id_"
        );

        let create_indexes = doc! {
            "_id": token(11), "operationType": "createIndexes", "clusterTime": ts(16, 1),
            "ns": { "db": "shop", "coll": "carts" },
            "operationDescription": {
                "indexes": [ { "v": 2, "key": { "user": 1 }, "name": "user_1" } ],
            },
        };
        let ev: ChangeStreamEvent = decode(&create_indexes).unwrap();
        assert_eq!(ev.operation_type, OperationType::CreateIndexes);
        assert_eq!(
            ev.operation_description
                .unwrap()
                .get_array("indexes")
                .unwrap()
                .len(),
            1
        );

        for (name, ty) in [
            ("dropIndexes", OperationType::DropIndexes),
            ("modify", OperationType::Modify),
            ("shardCollection", OperationType::ShardCollection),
            ("reshardCollection", OperationType::ReshardCollection),
            (
                "refineCollectionShardKey",
                OperationType::RefineCollectionShardKey,
            ),
        ] {
            let d = doc! {
                "_id": token(12), "operationType": name,
                "ns": { "db": "shop", "coll": "carts" },
                "operationDescription": { "k": 1 },
            };
            let ev: ChangeStreamEvent = decode(&d).unwrap();
            assert_eq!(ev.operation_type, ty);
            assert_eq!(ev.operation_description, Some(doc! { "k": 1 }));
        }
    }

    #[test]
    fn unknown_operation_type_is_other_and_serialises_back() {
        let d = doc! {
            "_id": token(13), "operationType": "migrateChunkToNewShard",
            "ns": { "db": "shop", "coll": "carts" },
        };
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        assert_eq!(
            ev.operation_type,
            OperationType::Other("migrateChunkToNewShard".into())
        );
        assert_eq!(ev.operation_type.as_str(), "migrateChunkToNewShard");
        let back = bson::serialize_to_document(&ev).unwrap();
        assert_eq!(
            back.get_str("operationType").unwrap(),
            "migrateChunkToNewShard"
        );
    }

    #[test]
    fn operation_type_names_round_trip() {
        let names = [
            "insert",
            "update",
            "replace",
            "delete",
            "drop",
            "rename",
            "dropDatabase",
            "invalidate",
            "create",
            "createIndexes",
            "dropIndexes",
            "modify",
            "shardCollection",
            "reshardCollection",
            "refineCollectionShardKey",
        ];
        for name in names {
            let ty = OperationType::from(name);
            assert!(
                !matches!(ty, OperationType::Other(_)),
                "{name} is a known type"
            );
            assert_eq!(ty.as_str(), name);
            assert_eq!(ty.to_string(), name);
            assert_eq!(OperationType::from(name.to_owned()), ty);
            let bson = bson::serialize_to_bson(&ty).unwrap();
            assert_eq!(bson, Bson::String(name.into()));
            let again: OperationType = bson::deserialize_from_bson(bson).unwrap();
            assert_eq!(again, ty);
        }
        assert_eq!(
            OperationType::from("Insert"),
            OperationType::Other("Insert".into()),
            "names are case-sensitive"
        );
        let not_a_string = bson::deserialize_from_bson::<OperationType>(Bson::Int32(1));
        assert!(not_a_string.is_err());
    }

    #[test]
    fn split_event_fragments() {
        let d = doc! {
            "_id": token(14), "operationType": "update",
            "splitEvent": { "fragment": 2, "of": 3_i64 },
            "updateDescription": { "updatedFields": {}, "removedFields": [] },
        };
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        assert_eq!(ev.split_event, Some(SplitEvent { fragment: 2, of: 3 }));
    }

    #[test]
    fn transaction_fields_accept_int32_and_int64() {
        let lsid = doc! {
            "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![9; 16] },
            "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![1; 32] },
        };
        let mut d = doc! {
            "_id": token(15), "operationType": "insert", "clusterTime": ts(20, 4),
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 1 },
            "fullDocument": { "_id": 1, "sku": "T", "qty": 1 },
            "lsid": lsid.clone(),
            "txnNumber": 42_i64,
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.lsid, Some(lsid));
        assert_eq!(ev.txn_number, Some(42));

        d.insert("txnNumber", 43_i32);
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.txn_number, Some(43));
    }

    #[test]
    fn missing_id_is_a_resume_token_error() {
        let d = doc! {
            "operationType": "insert",
            "ns": { "db": "shop", "coll": "orders" },
            "fullDocument": { "_id": 1, "sku": "T", "qty": 1 },
        };
        let err = decode::<Order>(&d).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("resume token is missing"),
            "unexpected message: {msg}"
        );
        assert!(err.is_event_decode());
        // A missing field is the event's own fault, not one field's.
        assert_eq!(err.decode_path(), Some("."));
        assert!(err.resume_token().is_none());
    }

    #[test]
    fn a_decode_error_names_the_field_path_and_carries_the_token() {
        let d = doc! {
            "_id": { "_data": "8265" },
            "operationType": "insert",
            "ns": { "db": "shop", "coll": "orders" },
            "fullDocument": { "_id": 1, "sku": "T", "qty": "three" },
        };
        let err = decode::<Order>(&d).unwrap_err();
        assert!(err.is_event_decode(), "{err}");
        assert_eq!(err.decode_path(), Some("fullDocument.qty"), "{err}");
        let token = err.resume_token().expect("the event's token");
        assert_eq!(token.to_document().unwrap(), doc! { "_data": "8265" });
        assert!(err.to_string().contains("fullDocument.qty"), "{err}");
    }

    #[test]
    fn missing_id_is_reported_before_missing_operation_type() {
        let d = doc! { "ns": { "db": "shop", "coll": "orders" } };
        let msg = decode::<Document>(&d).unwrap_err().to_string();
        assert!(
            msg.contains("resume token is missing"),
            "unexpected message: {msg}"
        );
        let d = doc! { "_id": token(23) };
        let msg = decode::<Document>(&d).unwrap_err().to_string();
        assert!(msg.contains("operationType"), "unexpected message: {msg}");
    }

    #[test]
    fn non_document_id_is_an_error() {
        let d = doc! { "_id": "not-a-token", "operationType": "insert" };
        let msg = decode::<Document>(&d).unwrap_err().to_string();
        assert!(
            msg.contains("invalid resume token"),
            "unexpected message: {msg}"
        );
    }

    #[test]
    fn null_or_absent_update_description_is_none() {
        let mut d = doc! { "_id": token(16), "operationType": "insert", "updateDescription": null };
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        assert_eq!(ev.update_description, None);
        d.remove("updateDescription");
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        assert_eq!(ev.update_description, None);
    }

    #[test]
    fn nx_27017_shape_decodes_with_a_date_cluster_time_read_as_none() {
        // What nx-27017 sends: a string token, clusterTime as a BSON date, explicit nulls.
        let now = DateTime::from_millis(1_718_000_000_000);
        let d = doc! {
            "_id": { "_data": "nx:17" },
            "operationType": "insert",
            "clusterTime": now,
            "wallTime": now,
            "fullDocument": { "_id": 3, "sku": "N", "qty": 4 },
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 3 },
            "updateDescription": null,
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.cluster_time, None);
        assert_eq!(ev.wall_time, Some(now));
        assert_eq!(ev.update_description, None);
        assert_eq!(ev.id.to_document().unwrap(), doc! { "_data": "nx:17" });
        assert_eq!(ev.full_document.unwrap().qty, 4);

        // A delete from nx: fullDocument null.
        let d = doc! {
            "_id": { "_data": "nx:18" }, "operationType": "delete", "clusterTime": now,
            "fullDocument": null, "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 3 }, "updateDescription": null,
        };
        let ev: ChangeStreamEvent<Order> = decode(&d).unwrap();
        assert_eq!(ev.full_document, None);
        assert_eq!(ev.cluster_time, None);
    }

    #[test]
    fn other_cluster_time_types_are_none_too() {
        for value in [Bson::Null, Bson::Int64(5), Bson::String("x".into())] {
            let d = doc! { "_id": token(17), "operationType": "drop", "clusterTime": value };
            let ev: ChangeStreamEvent = decode(&d).unwrap();
            assert_eq!(ev.cluster_time, None);
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let d = doc! {
            "_id": token(18), "operationType": "insert",
            "ns": { "db": "shop", "coll": "v", "viewOn": "orders" },
            "commitTimestamp": ts(1, 1),
            "someFutureField": { "a": [1, 2, 3] },
        };
        let ev: ChangeStreamEvent = decode(&d).unwrap();
        assert_eq!(ev.ns, Some(ChangeNamespace::collection("shop", "v")));
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        let cases = [
            doc! { "_id": token(19) },
            doc! { "_id": token(19), "operationType": 3 },
            doc! { "_id": token(19), "operationType": "insert", "txnNumber": "x" },
            doc! { "_id": token(19), "operationType": "insert", "ns": { "coll": "c" } },
            doc! { "_id": token(19), "operationType": "update",
            "updateDescription": { "truncatedArrays": [ { "field": "a", "newSize": 5_000_000_000_i64 } ] } },
            doc! { "_id": token(19), "operationType": "insert", "fullDocument": { "_id": "x" } },
        ];
        for d in cases {
            assert!(decode::<Order>(&d).is_err(), "accepted {d}");
        }
        assert!(ChangeStreamEvent::<Document>::from_slice(b"\x05\0\0").is_err());
        assert!(ChangeStreamEvent::<Document>::from_slice(b"\x0c\0\0\0\x10a\0\x01\0\0").is_err());
    }

    fn every_field() -> Document {
        doc! {
            "_id": token(20),
            "operationType": "update",
            "ns": { "db": "shop", "coll": "orders" },
            "nsType": "collection",
            "to": { "db": "shop", "coll": "archive" },
            "documentKey": { "_id": 7 },
            "updateDescription": {
                "updatedFields": { "qty": 5_i64 },
                "removedFields": [ "note" ],
                "truncatedArrays": [ { "field": "tags", "newSize": 1 } ],
                "disambiguatedPaths": { "a.0": [ "a", "0" ] },
            },
            "fullDocument": { "_id": 7, "sku": "A", "qty": 5_i64 },
            "fullDocumentBeforeChange": { "_id": 7, "sku": "A", "qty": 4_i64 },
            "clusterTime": ts(30, 2),
            "wallTime": DateTime::from_millis(30_000),
            "collectionUUID": uuid_bin(),
            "operationDescription": { "x": 1 },
            "splitEvent": { "fragment": 1, "of": 2 },
            "lsid": { "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![2; 16] } },
            "txnNumber": 9_i64,
        }
    }

    #[test]
    fn round_trip_serialise_then_deserialise() {
        let original = every_field();
        let ev: ChangeStreamEvent<Order> = decode(&original).unwrap();
        // Serialising writes back exactly what the server sent.
        assert_eq!(bson::serialize_to_document(&ev).unwrap(), original);
        let bytes = bson::serialize_to_vec(&ev).unwrap();
        let again: ChangeStreamEvent<Order> = ChangeStreamEvent::from_slice(&bytes).unwrap();
        assert_eq!(again, ev);

        // A minimal event leaves every None field out.
        let min: ChangeStreamEvent<Order> = ChangeStreamEvent::new(
            ResumeToken::from_document(&token(21)).unwrap(),
            OperationType::Invalidate,
        );
        let d = bson::serialize_to_document(&min).unwrap();
        assert_eq!(d, doc! { "_id": token(21), "operationType": "invalidate" });
        assert_eq!(decode::<Order>(&d).unwrap(), min);
    }

    #[test]
    fn from_raw_decodes_without_an_intermediate_document() {
        let raw = rawdoc! {
            "_id": { "_data": "01" },
            "operationType": "insert",
            "fullDocument": { "_id": 1, "sku": "R", "qty": 1 },
        };
        let ev = ChangeStreamEvent::<Order>::from_raw(&raw).unwrap();
        assert_eq!(ev.full_document.unwrap().sku, "R");
        // Images kept raw, decoded later.
        let ev = ChangeStreamEvent::<RawDocumentBuf>::from_raw(&raw).unwrap();
        assert_eq!(
            ev.full_document.as_ref().unwrap().get_str("sku").unwrap(),
            "R"
        );
        let typed: ChangeStreamEvent<Order> = ev.into_typed().unwrap();
        assert_eq!(typed.full_document.unwrap().id, 1);
    }

    #[test]
    fn map_and_try_map_document() {
        let ev: ChangeStreamEvent<Order> = decode(&every_field()).unwrap();
        let mapped = ev.clone().map_document(|o| o.qty);
        assert_eq!(mapped.full_document, Some(5));
        assert_eq!(mapped.full_document_before_change, Some(4));
        assert_eq!(mapped.id, ev.id);
        assert_eq!(mapped.update_description, ev.update_description);
        assert_eq!(mapped.txn_number, Some(9));

        let failed = ev.clone().try_map_document(|o| {
            if o.qty == 4 {
                Err("pre-image")
            } else {
                Ok(o.qty)
            }
        });
        assert_eq!(failed.unwrap_err(), "pre-image");
        let ok = ev.try_map_document(|o| Ok::<_, ()>(o.sku)).unwrap();
        assert_eq!(ok.full_document.as_deref(), Some("A"));

        let generic: ChangeStreamEvent = decode(&every_field()).unwrap();
        let typed: ChangeStreamEvent<Order> = generic.clone().into_typed().unwrap();
        assert_eq!(typed.full_document.unwrap().qty, 5);
        let bad = generic.into_typed::<TruncatedArray>();
        assert!(bad.is_err());
    }

    #[test]
    fn resume_token_bytes_round_trip_and_validation() {
        let t = ResumeToken::from_document(&token(22)).unwrap();
        let restored = ResumeToken::from_bytes(t.as_bytes()).unwrap();
        assert_eq!(restored, t);
        assert_eq!(t.to_raw().as_bytes(), t.as_bytes());
        assert_eq!(
            t.as_document().get_str("_data").unwrap(),
            token(22).get_str("_data").unwrap()
        );
        assert!(format!("{t:?}").starts_with("ResumeToken("));

        // Cloning shares the buffer.
        let c = t.clone();
        assert_eq!(c.as_bytes().as_ptr(), t.as_bytes().as_ptr());
        assert_eq!(SharedDoc::from(c), t.clone().into_shared());

        assert!(ResumeToken::from_bytes(b"").is_err());
        assert!(ResumeToken::from_bytes(b"\x05\0\0\0\x01").is_err());
        // Framing fine, element cut short.
        assert!(ResumeToken::from_bytes(b"\x08\0\0\0\x10a\0\0").is_err());

        // Inside another document it serialises as a sub-document.
        let holder = doc! { "resumeAfter": bson::serialize_to_bson(&t).unwrap() };
        assert_eq!(holder.get_document("resumeAfter").unwrap(), &token(22));
    }

    #[test]
    fn raw_event_reads_in_place_and_shares_its_token() {
        let raw = RawChangeEvent::from(rawdoc! {
            "_id": { "_data": "82AB" },
            "operationType": "insert",
            "fullDocument": { "_id": 1, "sku": "Z", "qty": 1 },
        });
        let t = raw.resume_token().unwrap();
        let range = raw.as_bytes().as_ptr_range();
        assert!(
            range.contains(&t.as_bytes().as_ptr()),
            "token shares the event buffer"
        );
        assert_eq!(t.to_document().unwrap(), doc! { "_data": "82AB" });
        assert_eq!(raw.operation_type(), Some(OperationType::Insert));
        let ev = raw.decode::<Order>().unwrap();
        assert_eq!(ev.id, t);
        assert_eq!(ev.full_document.unwrap().sku, "Z");
        assert!(format!("{raw:?}").starts_with("RawChangeEvent("));

        let copied = resume_token_of(raw.as_document()).unwrap();
        assert_eq!(copied, t);
        assert!(!range.contains(&copied.as_bytes().as_ptr()));

        let no_id = RawChangeEvent::from(rawdoc! { "operationType": 5 });
        assert_eq!(no_id.resume_token(), None);
        assert_eq!(no_id.operation_type(), None);
        assert_eq!(resume_token_of(no_id.as_document()), None);
        assert!(no_id.decode::<Document>().is_err());
        let bad_id = rawdoc! { "_id": "str" };
        assert_eq!(resume_token_of(&bad_id), None);

        // As the item type of a generic decode (e.g. a cursor): copies the whole event.
        let outer = bson::serialize_to_vec(&doc! { "e": raw.to_document().unwrap() }).unwrap();
        #[derive(Deserialize)]
        struct Holder {
            e: RawChangeEvent,
        }
        let h: Holder = bson::deserialize_from_slice(&outer).unwrap();
        assert_eq!(h.e, raw);
        assert_eq!(
            bson::serialize_to_document(&h.e).unwrap(),
            raw.to_document().unwrap()
        );
    }
}
