//! `Collection<T>`: writes with typed results, `find` and `aggregate` builders.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use brook_command::{
    Aggregate, AggregateTarget, CommandError, Delete, DeleteStatement, Find, GetMoreOptions,
    Insert, SharedDoc, Update, UpdateModification, UpdateStatement, WriteConcernError, WriteError,
};
use bson::oid::ObjectId;
use bson::raw::cstr;
use bson::{Bson, Document, RawDocumentBuf};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::change_stream::{Scope, WatchBuilder};
use crate::client::Client;
use crate::cursor::{Cursor, CursorTimeout};
use crate::error::{Error, ErrorKind};
use crate::event::ChangeStreamEvent;
use crate::exec::{Retry, Target, Timing};
use crate::options::{ReadPreference, TimeoutMode};

/// Bytes of an OP_MSG that are not the documents of the sequence: the header, the flags,
/// the command body (name, `$db`, `lsid`, `ordered`, write concern) and the section
/// headers. Reserved from `maxMessageSizeBytes` when splitting a write into batches.
pub(crate) const MESSAGE_OVERHEAD: usize = 16 * 1024;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of [`Collection::insert_one`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InsertOneResult {
    /// The `_id` of the inserted document (generated when the value had none).
    pub inserted_id: Bson,
}

/// The result of [`Collection::insert_many`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InsertManyResult {
    /// The `_id` of each inserted document, by its position in the input.
    pub inserted_ids: BTreeMap<usize, Bson>,
}

/// The result of [`Collection::update_one`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UpdateResult {
    /// How many documents matched the filter.
    pub matched_count: u64,
    /// How many were changed.
    pub modified_count: u64,
    /// The `_id` of the upserted document, if the update inserted one.
    pub upserted_id: Option<Bson>,
}

/// The result of [`Collection::delete_one`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeleteResult {
    /// How many documents were deleted.
    pub deleted_count: u64,
}

/// A collection of documents of type `T` (`Document`, `RawDocumentBuf`, or any
/// serde type). Cheap to clone; no IO until an operation runs.
pub struct Collection<T> {
    pub(crate) client: Client,
    pub(crate) db: String,
    pub(crate) name: String,
    pub(crate) read_preference: ReadPreference,
    /// `timeoutMS` of its operations (the database's unless set here).
    pub(crate) timeout: Option<Duration>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for Collection<T> {
    fn clone(&self) -> Self {
        Collection {
            client: self.client.clone(),
            db: self.db.clone(),
            name: self.name.clone(),
            read_preference: self.read_preference.clone(),
            timeout: self.timeout,
            _marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Collection({}.{})", self.db, self.name)
    }
}

fn write_failure(
    write_errors: Vec<WriteError>,
    write_concern_error: Option<WriteConcernError>,
    applied: u64,
    wire_version: i32,
) -> Error {
    Error::new(ErrorKind::Write {
        write_errors,
        write_concern_error,
        applied,
    })
    .with_wire_version(Some(wire_version))
}

/// A write's failure, as the operation's timeout error when `timing` has a deadline and
/// the server reports MaxTimeMSExpired (code 50) in a write error or its write concern
/// error (Client Side Operations Timeout, "Error Transformations").
pub(crate) fn write_failure_within(
    timing: Timing,
    write_errors: Vec<WriteError>,
    write_concern_error: Option<WriteConcernError>,
    applied: u64,
    wire_version: i32,
) -> Error {
    let expired = write_errors.iter().any(|e| e.code == MAX_TIME_MS_EXPIRED)
        || write_concern_error
            .as_ref()
            .is_some_and(|e| e.code == MAX_TIME_MS_EXPIRED);
    let err = write_failure(write_errors, write_concern_error, applied, wire_version);
    match timing.deadline {
        Some(d) if expired => d.expired("on the server (MaxTimeMSExpired)", Some(err)),
        _ => err,
    }
}

/// The server's code for a command out of its `maxTimeMS` (MaxTimeMSExpired).
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// Refuses a `timeout_mode` without a `timeoutMS` (Client Side Operations Timeout,
/// "Cursors": a client-side error, nothing is sent).
fn check_timeout_mode(mode: Option<TimeoutMode>, timeout: Option<Duration>) -> Result<(), Error> {
    if mode.is_some() && timeout.is_none() {
        return Err(Error::invalid_argument(
            "timeout_mode needs a timeoutMS (set on the client, the database, the collection \
             or the operation)",
        ));
    }
    Ok(())
}

fn wire_err(e: brook_wire::WireError) -> Error {
    Error::command(CommandError::from(e))
}

/// Serialise `value` for an insert, adding an ObjectId `_id` first when it has none
/// (the caller's value is not touched).
pub(crate) fn to_insert_doc<T: Serialize>(value: &T) -> Result<(SharedDoc, Bson), Error> {
    let raw = bson::serialize_to_raw_document_buf(value)?;
    let existing = raw.get("_id")?.map(bson::RawBson::from);
    match existing {
        Some(id) => {
            let id = Bson::try_from(id)?;
            let doc = SharedDoc::from_bytes(raw.into_bytes().into()).map_err(wire_err)?;
            Ok((doc, id))
        }
        None => {
            let oid = ObjectId::new();
            let mut out = RawDocumentBuf::new();
            out.append(cstr!("_id"), oid);
            for item in raw.iter() {
                let (k, v) = item?;
                out.append(k, v);
            }
            let doc = SharedDoc::from_bytes(out.into_bytes().into()).map_err(wire_err)?;
            Ok((doc, Bson::ObjectId(oid)))
        }
    }
}

/// Split documents into batches: at most `max_count` documents and `max_bytes` bytes
/// each, and at least one document per batch (a single document larger than `max_bytes`
/// is refused by the caller before this).
pub(crate) fn split_batches(
    sizes: &[usize],
    max_count: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let max_count = max_count.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count >= max_count || bytes.saturating_add(size) > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

impl<T> Collection<T> {
    pub(crate) fn new(
        client: Client,
        db: &str,
        name: &str,
        read_preference: ReadPreference,
        timeout: Option<Duration>,
    ) -> Collection<T> {
        Collection {
            client,
            db: db.to_string(),
            name: name.to_string(),
            read_preference,
            timeout,
            _marker: PhantomData,
        }
    }

    /// The same collection, its operations bounded by `timeoutMS` = `timeout` (the
    /// Client Side Operations Timeout specification; see
    /// [`ClientOptions::timeout`](crate::ClientOptions::timeout)). `Duration::ZERO`
    /// means no limit (the specification's rules still apply: legacy timeouts ignored).
    /// The default is the database's. An operation's builder may set its own
    /// (`.timeout(…)`).
    pub fn with_timeout(mut self, timeout: Duration) -> Collection<T> {
        self.timeout = Some(timeout);
        self
    }

    /// The `timeoutMS` of this collection's operations, `None` when not set at any level.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How the commands of an operation with `timeoutMS` `timeout` are bounded, from now.
    pub(crate) fn timing(&self, timeout: Option<Duration>) -> Timing {
        Timing::for_timeout(timeout)
    }

    /// The write concern of a write bounded by `timing` (no `wtimeout` under
    /// `timeoutMS`).
    pub(crate) fn write_concern(&self, timing: Timing) -> Option<Document> {
        self.client
            .exec
            .options()
            .write_concern_for(timing.deadline.is_some())
    }

    /// The same collection, reading with `read_preference` (finds, aggregates and change
    /// streams; writes always go to the primary). The default is the database's.
    pub fn with_read_preference(mut self, read_preference: ReadPreference) -> Collection<T> {
        self.read_preference = read_preference;
        self
    }

    /// The read preference of this collection's reads.
    pub fn read_preference(&self) -> &ReadPreference {
        &self.read_preference
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's name.
    pub fn database_name(&self) -> &str {
        &self.db
    }

    /// `db.coll`.
    pub fn namespace(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The same collection, read and written as another type.
    pub fn clone_with_type<U>(&self) -> Collection<U> {
        Collection::new(
            self.client.clone(),
            &self.db,
            &self.name,
            self.read_preference.clone(),
            self.timeout,
        )
    }

    /// Update the first document matching `filter` with `update` (update operators such
    /// as `{$set: ...}`). Await it, or set `.upsert(true)` first.
    pub fn update_one(&self, filter: Document, update: Document) -> UpdateOne<'_, T> {
        UpdateOne {
            coll: self,
            statement: UpdateStatement::new(filter, UpdateModification::Document(update)),
            timeout: self.timeout,
        }
    }

    /// Update the first document matching `filter` with an aggregation pipeline.
    pub fn update_one_with_pipeline(
        &self,
        filter: Document,
        pipeline: Vec<Document>,
    ) -> UpdateOne<'_, T> {
        UpdateOne {
            coll: self,
            statement: UpdateStatement::new(filter, UpdateModification::Pipeline(pipeline)),
            timeout: self.timeout,
        }
    }

    /// Delete the first document matching `filter`.
    pub async fn delete_one(&self, filter: Document) -> Result<DeleteResult, Error> {
        let timing = self.timing(self.timeout);
        let mut cmd = Delete::new(self.name.clone(), vec![DeleteStatement::one(filter)]);
        cmd.write_concern = self.write_concern(timing);
        let reply = self
            .client
            .exec
            .execute_implicit(&self.db, &cmd, Target::Primary, Retry::Write, timing)
            .await?;
        if !reply.write_errors.is_empty() || reply.write_concern_error.is_some() {
            return Err(write_failure_within(
                timing,
                reply.write_errors,
                reply.write_concern_error,
                u64::try_from(reply.n).unwrap_or(0),
                self.client.exec.server_info().max_wire_version,
            ));
        }
        Ok(DeleteResult {
            deleted_count: u64::try_from(reply.n).unwrap_or(0),
        })
    }

    /// A change stream on this collection, with `fullDocument` (and
    /// `fullDocumentBeforeChange`) images decoded as `T`. Set options on the builder,
    /// then `.await` it for a [`ChangeStream`](crate::ChangeStream); see the
    /// [crate docs](crate#change-streams).
    pub fn watch(&self) -> WatchBuilder<ChangeStreamEvent<T>> {
        WatchBuilder::new(
            std::sync::Arc::clone(&self.client.exec),
            Scope::Collection {
                db: self.db.clone(),
                coll: self.name.clone(),
            },
            self.read_preference.clone(),
        )
        .inherit_timeout(self.timeout)
    }

    /// Run an aggregation pipeline on the collection.
    pub fn aggregate(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
    ) -> AggregateBuilder<'_, T> {
        AggregateBuilder::new(
            &self.client,
            &self.db,
            AggregateTarget::Collection(self.name.clone()),
            pipeline.into_iter().collect(),
            self.read_preference.clone(),
            self.timeout,
        )
    }
}

impl<T: Serialize> Collection<T> {
    /// Insert one document. An ObjectId `_id` is generated when the value has none; the
    /// value itself is not changed.
    pub async fn insert_one(&self, value: impl Borrow<T>) -> Result<InsertOneResult, Error> {
        let (doc, id) = to_insert_doc(value.borrow())?;
        let max = self.client.exec.server_info().max_bson_object_size;
        if doc.bytes().len() > max {
            return Err(Error::invalid_argument(format!(
                "document is {} bytes; the server's limit is {max}",
                doc.bytes().len()
            )));
        }
        let timing = self.timing(self.timeout);
        let mut cmd = Insert::new(self.name.clone(), vec![doc]);
        cmd.write_concern = self.write_concern(timing);
        let reply = self
            .client
            .exec
            .execute_implicit(&self.db, &cmd, Target::Primary, Retry::Write, timing)
            .await?;
        if !reply.write_errors.is_empty() || reply.write_concern_error.is_some() {
            return Err(write_failure_within(
                timing,
                reply.write_errors,
                reply.write_concern_error,
                u64::try_from(reply.n).unwrap_or(0),
                self.client.exec.server_info().max_wire_version,
            ));
        }
        Ok(InsertOneResult { inserted_id: id })
    }

    /// Insert many documents, split into as many `insert` commands as the server's
    /// `maxWriteBatchSize` and `maxMessageSizeBytes` require. Ordered by default: the
    /// first write error stops the insert. Await it, or set `.ordered(false)` first.
    pub fn insert_many<I>(&self, values: I) -> InsertMany<'_, T>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let docs = values
            .into_iter()
            .map(|v| to_insert_doc(v.borrow()))
            .collect::<Result<Vec<_>, Error>>();
        InsertMany {
            coll: self,
            docs,
            ordered: true,
            timeout: self.timeout,
        }
    }
}

impl<T: DeserializeOwned> Collection<T> {
    /// Find the documents matching `filter`; set options on the builder, then await it
    /// for a [`Cursor`].
    pub fn find(&self, filter: Document) -> FindBuilder<'_, T> {
        FindBuilder {
            coll: self,
            cmd: Find::new(self.name.clone(), filter),
            read_preference: None,
            timeout: self.timeout,
            timeout_mode: None,
        }
    }
}

/// An `insert_many` waiting to be awaited.
#[must_use = "an insert does nothing until awaited"]
pub struct InsertMany<'a, T> {
    coll: &'a Collection<T>,
    docs: Result<Vec<(SharedDoc, Bson)>, Error>,
    ordered: bool,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for InsertMany<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertMany")
            .field("coll", &self.coll.namespace())
            .field("ordered", &self.ordered)
            .finish_non_exhaustive()
    }
}

impl<T> InsertMany<'_, T> {
    /// Whether to stop at the first write error (default `true`).
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// `timeoutMS` of this insert (the collection's by default): one deadline for every
    /// batch (`Duration::ZERO`: no limit).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<InsertManyResult, Error> {
        let timing = self.coll.timing(self.timeout);
        let docs = self.docs?;
        if docs.is_empty() {
            return Err(Error::invalid_argument(
                "insert_many needs at least one document",
            ));
        }
        let inner = &self.coll.client.exec;
        let server = inner.server_info();
        let sizes: Vec<usize> = docs.iter().map(|(d, _)| d.bytes().len()).collect();
        if let Some((i, size)) = sizes
            .iter()
            .enumerate()
            .find(|(_, s)| **s > server.max_bson_object_size)
        {
            return Err(Error::invalid_argument(format!(
                "document {i} is {size} bytes; the server's limit is {}",
                server.max_bson_object_size
            )));
        }
        let budget = server
            .max_message_size_bytes
            .saturating_sub(MESSAGE_OVERHEAD)
            .max(server.max_bson_object_size);
        let batches = split_batches(&sizes, server.max_write_batch_size, budget);
        let mut applied = 0u64;
        let mut write_errors = Vec::new();
        let mut wce = None;
        let mut inserted = BTreeMap::new();
        for range in batches {
            let batch: Vec<SharedDoc> = docs
                .get(range.clone())
                .unwrap_or_default()
                .iter()
                .map(|(d, _)| d.clone())
                .collect();
            let mut cmd = Insert::new(self.coll.name.clone(), batch);
            cmd.ordered = self.ordered;
            cmd.write_concern = self.coll.write_concern(timing);
            let reply = inner
                .execute_implicit(&self.coll.db, &cmd, Target::Primary, Retry::Write, timing)
                .await?;
            applied += u64::try_from(reply.n).unwrap_or(0);
            let failed: Vec<usize> = reply.write_errors.iter().map(|e| e.index).collect();
            for (offset, (_, id)) in docs
                .get(range.clone())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let stop_here = self.ordered && failed.iter().any(|&f| offset >= f);
                if !failed.contains(&offset) && !stop_here {
                    inserted.insert(range.start + offset, id.clone());
                }
            }
            let had_errors = !reply.write_errors.is_empty();
            write_errors.extend(reply.write_errors.into_iter().map(|mut e| {
                e.index += range.start;
                e
            }));
            if reply.write_concern_error.is_some() {
                wce = reply.write_concern_error;
            }
            if had_errors && self.ordered {
                break;
            }
        }
        if !write_errors.is_empty() || wce.is_some() {
            return Err(write_failure_within(
                timing,
                write_errors,
                wce,
                applied,
                server.max_wire_version,
            ));
        }
        Ok(InsertManyResult {
            inserted_ids: inserted,
        })
    }
}

impl<'a, T> IntoFuture for InsertMany<'a, T> {
    type Output = Result<InsertManyResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// An `update_one` waiting to be awaited.
#[must_use = "an update does nothing until awaited"]
pub struct UpdateOne<'a, T> {
    coll: &'a Collection<T>,
    statement: UpdateStatement,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for UpdateOne<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateOne")
            .field("coll", &self.coll.namespace())
            .field("statement", &self.statement)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> UpdateOne<'_, T> {
    /// Insert a document when none matches.
    pub fn upsert(mut self, upsert: bool) -> Self {
        self.statement.upsert = upsert;
        self
    }

    /// `arrayFilters`.
    pub fn array_filters(mut self, filters: Vec<Document>) -> Self {
        self.statement.array_filters = Some(filters);
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.statement.collation = Some(collation);
        self
    }

    /// `timeoutMS` of this update (the collection's by default; `Duration::ZERO`: no
    /// limit).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<UpdateResult, Error> {
        let timing = self.coll.timing(self.timeout);
        let inner = &self.coll.client.exec;
        let mut cmd = Update::new(self.coll.name.clone(), vec![self.statement]);
        cmd.write_concern = self.coll.write_concern(timing);
        let reply = inner
            .execute_implicit(&self.coll.db, &cmd, Target::Primary, Retry::Write, timing)
            .await?;
        if !reply.write_errors.is_empty() || reply.write_concern_error.is_some() {
            return Err(write_failure_within(
                timing,
                reply.write_errors,
                reply.write_concern_error,
                u64::try_from(reply.n).unwrap_or(0),
                inner.server_info().max_wire_version,
            ));
        }
        let upserted_id = reply.upserted.into_iter().next().map(|u| u.id);
        let n = u64::try_from(reply.n).unwrap_or(0);
        Ok(UpdateResult {
            matched_count: if upserted_id.is_some() {
                n.saturating_sub(1)
            } else {
                n
            },
            modified_count: u64::try_from(reply.n_modified).unwrap_or(0),
            upserted_id,
        })
    }
}

impl<'a, T> IntoFuture for UpdateOne<'a, T> {
    type Output = Result<UpdateResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A `find` waiting to be awaited: set options, then `.await` it for a [`Cursor`].
#[must_use = "a find does nothing until awaited"]
pub struct FindBuilder<'a, T> {
    coll: &'a Collection<T>,
    cmd: Find,
    read_preference: Option<ReadPreference>,
    timeout: Option<Duration>,
    timeout_mode: Option<TimeoutMode>,
}

impl<T> fmt::Debug for FindBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FindBuilder")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .field("timeout_mode", &self.timeout_mode)
            .finish()
    }
}

impl<T> FindBuilder<'_, T> {
    /// `timeoutMS` of this find and its cursor (the collection's by default;
    /// `Duration::ZERO`: no limit): see [`timeout_mode`](Self::timeout_mode).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How `timeoutMS` applies to the cursor ([`TimeoutMode::CursorLifetime`] by
    /// default). Refused (a client-side error, nothing sent) when no `timeoutMS` applies.
    pub fn timeout_mode(mut self, mode: TimeoutMode) -> Self {
        self.timeout_mode = Some(mode);
        self
    }

    /// Documents per batch (the first batch and every getMore).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.cmd.batch_size = Some(n);
        self
    }

    /// Return at most `n` documents in total.
    pub fn limit(mut self, n: u64) -> Self {
        self.cmd.limit = Some(n);
        self
    }

    /// Skip the first `n` matching documents.
    pub fn skip(mut self, n: u64) -> Self {
        self.cmd.skip = Some(n);
        self
    }

    /// The sort order.
    pub fn sort(mut self, sort: Document) -> Self {
        self.cmd.sort = Some(sort);
        self
    }

    /// The projection.
    pub fn projection(mut self, projection: Document) -> Self {
        self.cmd.projection = Some(projection);
        self
    }

    /// A comment recorded in the server's logs and profiler (also sent on getMores to
    /// servers of wire version 9 and later).
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }

    /// `maxTimeMS` of the find (ignored under `timeoutMS`, which sets its own).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.cmd.max_time_ms = Some(millis(d));
        self
    }

    /// `hint`.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.cmd.hint = Some(hint.into());
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.cmd.collation = Some(collation);
        self
    }

    /// The read preference of this find (the collection's by default).
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = Some(read_preference);
        self
    }
}

impl<'a, T: 'a> IntoFuture for FindBuilder<'a, T> {
    type Output = Result<Cursor<T>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            check_timeout_mode(this.timeout_mode, this.timeout)?;
            let inner = &this.coll.client.exec;
            inner.check_open()?;
            let (timing, cursor_timeout) = cursor_timing(this.timeout, this.timeout_mode);
            if timing.deadline.is_some() {
                // A legacy option, ignored under timeoutMS.
                this.cmd.max_time_ms = None;
            }
            let mut session = inner.implicit_session();
            let preference = this
                .read_preference
                .as_ref()
                .unwrap_or(&this.coll.read_preference);
            let target = Target::Read(preference);
            let executed = inner
                .execute_pinned(
                    &this.coll.db,
                    &this.cmd,
                    Some(&mut session),
                    target,
                    Retry::Read,
                    timing,
                )
                .await?;
            let spec = GetMoreOptions {
                batch_size: this.cmd.batch_size,
                max_await_time: None,
                comment: this.cmd.comment.clone(),
            };
            Ok(Cursor::new(inner.clone(), executed, spec, session).with_timeout(cursor_timeout))
        })
    }
}

/// An `aggregate` waiting to be awaited: set options, then `.await` it for a [`Cursor`].
#[must_use = "an aggregate does nothing until awaited"]
pub struct AggregateBuilder<'a, T> {
    client: &'a Client,
    db: &'a str,
    cmd: Aggregate,
    read_preference: ReadPreference,
    max_await_time: Option<Duration>,
    timeout: Option<Duration>,
    timeout_mode: Option<TimeoutMode>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for AggregateBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateBuilder")
            .field("db", &self.db)
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .field("timeout_mode", &self.timeout_mode)
            .finish()
    }
}

impl<'a, T> AggregateBuilder<'a, T> {
    pub(crate) fn new(
        client: &'a Client,
        db: &'a str,
        target: AggregateTarget,
        pipeline: Vec<Document>,
        read_preference: ReadPreference,
        timeout: Option<Duration>,
    ) -> Self {
        AggregateBuilder {
            client,
            db,
            cmd: Aggregate::new(target, pipeline),
            read_preference,
            max_await_time: None,
            timeout,
            timeout_mode: None,
            _marker: PhantomData,
        }
    }

    /// `timeoutMS` of this aggregate and its cursor (the collection's or database's by
    /// default; `Duration::ZERO`: no limit): see [`timeout_mode`](Self::timeout_mode).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How `timeoutMS` applies to the cursor ([`TimeoutMode::CursorLifetime`] by
    /// default). Refused (a client-side error, nothing sent) when no `timeoutMS`
    /// applies, and [`TimeoutMode::Iteration`] for a pipeline with `$out` or `$merge`.
    pub fn timeout_mode(mut self, mode: TimeoutMode) -> Self {
        self.timeout_mode = Some(mode);
        self
    }

    /// Documents per batch (the first batch and every getMore).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.cmd.batch_size = Some(n);
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }

    /// `maxTimeMS` of the aggregate (ignored under `timeoutMS`, which sets its own).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.cmd.max_time_ms = Some(millis(d));
        self
    }

    /// `maxTimeMS` of each getMore (for tailable-await cursors such as change streams).
    pub fn max_await_time(mut self, d: Duration) -> Self {
        self.max_await_time = Some(d);
        self
    }

    /// `allowDiskUse`.
    pub fn allow_disk_use(mut self, allow: bool) -> Self {
        self.cmd.allow_disk_use = Some(allow);
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.cmd.collation = Some(collation);
        self
    }

    /// The read preference of this aggregate (the collection's or database's by
    /// default). A pipeline with `$out` or `$merge` always runs on the primary.
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = read_preference;
        self
    }

    /// Read the results as another type.
    pub fn with_type<U>(self) -> AggregateBuilder<'a, U> {
        AggregateBuilder {
            client: self.client,
            db: self.db,
            cmd: self.cmd,
            read_preference: self.read_preference,
            max_await_time: self.max_await_time,
            timeout: self.timeout,
            timeout_mode: self.timeout_mode,
            _marker: PhantomData,
        }
    }
}

impl<'a, T: 'a> IntoFuture for AggregateBuilder<'a, T> {
    type Output = Result<Cursor<T>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            check_timeout_mode(this.timeout_mode, this.timeout)?;
            // `$out` and `$merge` write: to the primary, and never retried.
            let writes = this
                .cmd
                .pipeline
                .iter()
                .any(|stage| stage.contains_key("$out") || stage.contains_key("$merge"));
            if writes && this.timeout_mode == Some(TimeoutMode::Iteration) {
                return Err(Error::invalid_argument(
                    "timeout_mode(Iteration) cannot apply to an aggregate with $out or $merge \
                     (it has no cursor to iterate)",
                ));
            }
            let inner = &this.client.exec;
            inner.check_open()?;
            let (timing, cursor_timeout) = cursor_timing(this.timeout, this.timeout_mode);
            if timing.deadline.is_some() {
                // A legacy option, ignored under timeoutMS.
                this.cmd.max_time_ms = None;
            }
            let mut session = inner.implicit_session();
            let (target, retry) = if writes {
                (Target::Primary, Retry::No)
            } else {
                (Target::Read(&this.read_preference), Retry::Read)
            };
            let executed = inner
                .execute_pinned(
                    this.db,
                    &this.cmd,
                    Some(&mut session),
                    target,
                    retry,
                    timing,
                )
                .await?;
            let spec = GetMoreOptions {
                batch_size: this.cmd.batch_size,
                max_await_time: this.max_await_time,
                comment: this.cmd.comment.clone(),
            };
            Ok(Cursor::new(inner.clone(), executed, spec, session).with_timeout(cursor_timeout))
        })
    }
}

/// How the command opening a cursor is bounded, and the cursor's own timeout, for an
/// operation with `timeoutMS` `timeout` in `mode` (Client Side Operations Timeout,
/// "Non-tailable Cursors"): cursor lifetime (the default) sends `maxTimeMS` on the
/// opening command and keeps its deadline for the getMores; iteration sends none and
/// gives each getMore a fresh deadline.
pub(crate) fn cursor_timing(
    timeout: Option<Duration>,
    mode: Option<TimeoutMode>,
) -> (Timing, Option<CursorTimeout>) {
    let timing = Timing::for_timeout(timeout);
    match (timing.deadline, timeout, mode.unwrap_or_default()) {
        (Some(deadline), _, TimeoutMode::CursorLifetime) => {
            (timing, Some(CursorTimeout::Lifetime(deadline)))
        }
        (Some(_), Some(timeout), TimeoutMode::Iteration) => (
            timing.without_max_time(),
            Some(CursorTimeout::Iteration(timeout)),
        ),
        _ => (timing, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn batches_split_by_count_and_bytes() {
        assert_eq!(split_batches(&[10; 5], 2, 1000), [0..2, 2..4, 4..5]);
        assert_eq!(split_batches(&[40, 40, 40, 10], 100, 80), [0..2, 2..4]);
        // A document larger than the budget still gets a batch of its own.
        assert_eq!(split_batches(&[10, 500, 10], 100, 100), [0..1, 1..2, 2..3]);
        assert!(split_batches(&[], 10, 10).is_empty());
        assert_eq!(split_batches(&[1, 1, 1], 0, 10), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn insert_doc_gets_an_id_first_without_touching_the_value() {
        let value = doc! { "a": 1 };
        let (shared, id) = to_insert_doc(&value).unwrap();
        assert_eq!(value, doc! { "a": 1 });
        let d = shared.to_document().unwrap();
        assert_eq!(d.keys().next().map(String::as_str), Some("_id"));
        assert_eq!(d.get("_id"), Some(&id));
        assert!(matches!(id, Bson::ObjectId(_)));

        let (shared, id) = to_insert_doc(&doc! { "x": 2, "_id": 7 }).unwrap();
        assert_eq!(id, Bson::Int32(7));
        assert_eq!(shared.to_document().unwrap(), doc! { "x": 2, "_id": 7 });
    }

    #[test]
    fn insert_doc_refuses_non_documents() {
        assert!(to_insert_doc(&5i32).is_err());
    }
}
