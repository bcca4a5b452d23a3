//! The everyday API (CRUD, Index Management and Enumerate Collections/Databases
//! specifications): `find_one`, `update_many`, `delete_many`, `replace_one`, the counts,
//! `distinct`, the `find_one_and_*` family, index management and the listings.
//!
//! Every operation is a builder: set options, then `.await` it. Reads are retryable
//! reads (`retryReads`), the single-document writes (`replace_one`, `find_one_and_*`)
//! retryable writes (`retryWrites`, with a `txnNumber` on a replica set);
//! `update_many`, `delete_many` and the index commands are never retried. Each takes
//! the `timeoutMS` of its collection, database or client, or its own (`.timeout(…)`).

use std::borrow::Borrow;
use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use brook_command::{
    Count, CountDocuments, CreateIndexes, Delete, DeleteStatement, Distinct, DropIndexes, Find,
    FindAndModify, FindAndModifyAction, GetMoreOptions, ListCollections, ListDatabases,
    ListIndexes, SharedDoc, Update, UpdateModification, UpdateReply, UpdateStatement, index_name,
};
use bson::{Bson, Document};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::coll::{
    BoxFuture, Collection, DeleteResult, UpdateResult, cursor_timing, millis, write_failure_within,
};
use crate::cursor::Cursor;
use crate::db::Database;
use crate::error::Error;
use crate::exec::{Retry, Target, Timing};
use crate::options::ReadPreference;

pub use brook_command::DatabaseEntry as DatabaseSpecification;

/// Which version of the document a `find_one_and_update` / `find_one_and_replace`
/// returns.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnDocument {
    /// The document as it was before the change (the default; `new: false`).
    #[default]
    Before,
    /// The document as it is after the change (`new: true`).
    After,
}

/// The result of [`Collection::create_index`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CreateIndexResult {
    /// The index's name (given, or generated from its keys as the server would).
    pub index_name: String,
}

fn decode<T: DeserializeOwned>(doc: &SharedDoc) -> Result<T, Error> {
    bson::deserialize_from_slice(doc.bytes()).map_err(Error::bson)
}

/// Refuses an update document that is not all update operators (CRUD specification:
/// checked client-side, nothing is sent).
fn check_update(update: &Document) -> Result<(), Error> {
    match update.keys().next() {
        Some(k) if k.starts_with('$') => Ok(()),
        Some(k) => Err(Error::invalid_argument(format!(
            "an update document takes update operators ($set, $inc…), not the field `{k}`: \
             use replace_one to replace a document"
        ))),
        None => Err(Error::invalid_argument("the update document is empty")),
    }
}

/// Refuses a replacement document with update operators (CRUD specification).
fn check_replacement(replacement: &Document) -> Result<(), Error> {
    match replacement.keys().next() {
        Some(k) if k.starts_with('$') => Err(Error::invalid_argument(format!(
            "a replacement document takes no update operator (`{k}`): use update_one"
        ))),
        _ => Ok(()),
    }
}

/// Serialises a replacement and checks it.
fn to_replacement<T: Serialize>(value: &T) -> Result<Document, Error> {
    let doc = bson::serialize_to_document(value)?;
    check_replacement(&doc)?;
    Ok(doc)
}

/// `cmd.max_time_ms` is a legacy option: dropped under `timeoutMS`.
fn legacy_max_time(timing: Timing, max_time_ms: &mut Option<u64>) {
    if timing.deadline.is_some() {
        *max_time_ms = None;
    }
}

/// Runs an `update` and reads its result.
async fn run_update<T>(
    coll: &Collection<T>,
    statement: UpdateStatement,
    retry: Retry,
    timeout: Option<Duration>,
) -> Result<UpdateResult, Error> {
    let timing = coll.timing(timeout);
    let exec = &coll.client.exec;
    let mut cmd = Update::new(coll.name.clone(), vec![statement]);
    cmd.write_concern = coll.write_concern(timing);
    let reply: UpdateReply = exec
        .execute_implicit(&coll.db, &cmd, Target::Primary, retry, timing)
        .await?;
    let n = u64::try_from(reply.n).unwrap_or(0);
    if !reply.write_errors.is_empty() || reply.write_concern_error.is_some() {
        return Err(write_failure_within(
            timing,
            reply.write_errors,
            reply.write_concern_error,
            n,
            exec.server_info().max_wire_version,
        ));
    }
    let upserted_id = reply.upserted.into_iter().next().map(|u| u.id);
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

/// A read's target: the builder's read preference, else the collection's.
fn read_target<'p>(own: &'p Option<ReadPreference>, coll: &'p ReadPreference) -> Target<'p> {
    Target::Read(own.as_ref().unwrap_or(coll))
}

// ------------------------------------------------------------------------------------
// The entry points
// ------------------------------------------------------------------------------------

impl<T> Collection<T> {
    /// Update every document matching `filter` with `update` (update operators such as
    /// `{$set: …}`). Not retryable. Await it, or set options first.
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// let r = coll
    ///     .update_many(doc! { "status": "new" }, doc! { "$set": { "status": "seen" } })
    ///     .await?;
    /// println!("{} of {} changed", r.modified_count, r.matched_count);
    /// # Ok(()) }
    /// ```
    pub fn update_many(&self, filter: Document, update: Document) -> UpdateMany<'_, T> {
        let checked = check_update(&update);
        let mut statement = UpdateStatement::new(filter, UpdateModification::Document(update));
        statement.multi = true;
        UpdateMany {
            coll: self,
            statement,
            checked,
            timeout: self.timeout,
        }
    }

    /// Update every document matching `filter` with an aggregation pipeline.
    pub fn update_many_with_pipeline(
        &self,
        filter: Document,
        pipeline: impl IntoIterator<Item = Document>,
    ) -> UpdateMany<'_, T> {
        let mut statement = UpdateStatement::new(
            filter,
            UpdateModification::Pipeline(pipeline.into_iter().collect()),
        );
        statement.multi = true;
        UpdateMany {
            coll: self,
            statement,
            checked: Ok(()),
            timeout: self.timeout,
        }
    }

    /// Delete every document matching `filter`. Not retryable.
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// let r = coll.delete_many(doc! { "expired": true }).await?;
    /// println!("{} deleted", r.deleted_count);
    /// # Ok(()) }
    /// ```
    pub fn delete_many(&self, filter: Document) -> DeleteMany<'_, T> {
        DeleteMany {
            coll: self,
            statement: DeleteStatement::many(filter),
            timeout: self.timeout,
        }
    }

    /// Count the documents matching `filter` exactly (an `aggregate` with `$match` and
    /// `$group`, as the CRUD specification says). A retryable read.
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// let n = coll.count_documents(doc! { "done": false }).limit(1000).await?;
    /// # Ok(()) }
    /// ```
    pub fn count_documents(&self, filter: Document) -> CountDocumentsBuilder<'_, T> {
        CountDocumentsBuilder {
            coll: self,
            cmd: CountDocuments::new(self.name.clone(), filter),
            read_preference: None,
            timeout: self.timeout,
        }
    }

    /// The collection's document count from its metadata (the `count` command with no
    /// query): fast, but may be off after an unclean shutdown or in a sharded cluster
    /// with orphans. A retryable read.
    pub fn estimated_document_count(&self) -> EstimatedDocumentCount<'_, T> {
        EstimatedDocumentCount {
            coll: self,
            cmd: Count::new(self.name.clone()),
            read_preference: None,
            timeout: self.timeout,
        }
    }

    /// The distinct values of `field` among the documents matching `filter`. A retryable
    /// read.
    pub fn distinct(&self, field: impl Into<String>, filter: Document) -> DistinctBuilder<'_, T> {
        DistinctBuilder {
            coll: self,
            cmd: Distinct::new(self.name.clone(), field, filter),
            read_preference: None,
            timeout: self.timeout,
        }
    }

    /// Find the first document matching `filter`, update it with `update` (update
    /// operators) and return it as it was before ([`ReturnDocument::Before`], the
    /// default) or after. `None` when nothing matched (and no upsert happened). A
    /// retryable write (`findAndModify`).
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// use brook::ReturnDocument;
    /// let counter = coll
    ///     .find_one_and_update(doc! { "_id": "seq" }, doc! { "$inc": { "n": 1 } })
    ///     .upsert(true)
    ///     .return_document(ReturnDocument::After)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn find_one_and_update(
        &self,
        filter: Document,
        update: Document,
    ) -> FindOneAndUpdate<'_, T> {
        let checked = check_update(&update);
        FindOneAndUpdate(FamBuilder::new(
            self,
            FindAndModify::new(
                self.name.clone(),
                filter,
                FindAndModifyAction::Update(update),
            ),
            checked,
        ))
    }

    /// [`find_one_and_update`](Self::find_one_and_update) with an aggregation pipeline.
    pub fn find_one_and_update_with_pipeline(
        &self,
        filter: Document,
        pipeline: impl IntoIterator<Item = Document>,
    ) -> FindOneAndUpdate<'_, T> {
        FindOneAndUpdate(FamBuilder::new(
            self,
            FindAndModify::new(
                self.name.clone(),
                filter,
                FindAndModifyAction::UpdatePipeline(pipeline.into_iter().collect()),
            ),
            Ok(()),
        ))
    }

    /// Find the first document matching `filter`, delete it and return it. A retryable
    /// write (`findAndModify` with `remove`).
    pub fn find_one_and_delete(&self, filter: Document) -> FindOneAndDelete<'_, T> {
        FindOneAndDelete(FamBuilder::new(
            self,
            FindAndModify::new(self.name.clone(), filter, FindAndModifyAction::Remove),
            Ok(()),
        ))
    }

    /// Create an index on `keys` (e.g. `{email: 1}`), named as the server would name it
    /// unless [`name`](CreateIndex::name) is set. Not retried.
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// let r = coll.create_index(doc! { "email": 1 }).unique(true).await?;
    /// assert_eq!(r.index_name, "email_1");
    /// # Ok(()) }
    /// ```
    pub fn create_index(&self, keys: Document) -> CreateIndex<'_, T> {
        CreateIndex {
            coll: self,
            keys,
            options: Document::new(),
            commit_quorum: None,
            max_time_ms: None,
            comment: None,
            timeout: self.timeout,
        }
    }

    /// Drop the index called `name`. Not retried.
    pub fn drop_index(&self, name: impl Into<String>) -> DropIndex<'_, T> {
        DropIndex {
            coll: self,
            cmd: DropIndexes::new(self.name.clone(), name),
            timeout: self.timeout,
        }
    }

    /// Drop every index but `_id_` (`dropIndexes` with `"*"`).
    pub fn drop_indexes(&self) -> DropIndex<'_, T> {
        self.drop_index("*")
    }

    /// The collection's indexes, as a cursor of index documents (`{v, key, name, …}`).
    /// A retryable read, on the primary. A collection that does not exist is the
    /// server's NamespaceNotFound error (code 26), as the Enumerating Indexes
    /// specification allows.
    pub fn list_indexes(&self) -> ListIndexesBuilder<'_, T> {
        ListIndexesBuilder {
            coll: self,
            cmd: ListIndexes::new(self.name.clone()),
            timeout: self.timeout,
        }
    }

    /// The names of the collection's indexes.
    pub async fn list_index_names(&self) -> Result<Vec<String>, Error> {
        let mut cursor = self.list_indexes().await?;
        let mut names = Vec::new();
        while let Some(index) = cursor.try_next().await? {
            let name = index
                .get_str("name")
                .map_err(|_| Error::bson(format!("an index without a name: {index}")))?;
            names.push(name.to_owned());
        }
        Ok(names)
    }
}

impl<T: Serialize> Collection<T> {
    /// Replace the first document matching `filter` with `replacement` (which must hold
    /// no update operator). A retryable write.
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// coll.replace_one(doc! { "_id": 1 }, doc! { "_id": 1, "v": 2 }).upsert(true).await?;
    /// # Ok(()) }
    /// ```
    pub fn replace_one(&self, filter: Document, replacement: impl Borrow<T>) -> ReplaceOne<'_, T> {
        let replacement = to_replacement(replacement.borrow());
        ReplaceOne {
            coll: self,
            filter,
            replacement,
            upsert: false,
            collation: None,
            hint: None,
            timeout: self.timeout,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// Find the first document matching `filter`, replace it with `replacement` and
    /// return it as it was before (the default) or after. A retryable write.
    pub fn find_one_and_replace(
        &self,
        filter: Document,
        replacement: impl Borrow<T>,
    ) -> FindOneAndReplace<'_, T> {
        let (action, checked) = match to_replacement(replacement.borrow()) {
            Ok(doc) => (FindAndModifyAction::Update(doc), Ok(())),
            Err(e) => (FindAndModifyAction::Update(Document::new()), Err(e)),
        };
        FindOneAndReplace(FamBuilder::new(
            self,
            FindAndModify::new(self.name.clone(), filter, action),
            checked,
        ))
    }
}

impl<T: DeserializeOwned> Collection<T> {
    /// The first document matching `filter` (in `sort` order when set), or `None`. A
    /// retryable read (`find` with `limit: 1, singleBatch: true`).
    ///
    /// ```no_run
    /// # async fn f(coll: brook::Collection<bson::Document>) -> brook::Result<()> {
    /// use bson::doc;
    /// let newest = coll.find_one(doc! {}).sort(doc! { "at": -1 }).await?;
    /// # Ok(()) }
    /// ```
    pub fn find_one(&self, filter: Document) -> FindOne<'_, T> {
        let mut cmd = Find::new(self.name.clone(), filter);
        cmd.limit = Some(1);
        cmd.single_batch = Some(true);
        FindOne {
            coll: self,
            cmd,
            read_preference: None,
            timeout: self.timeout,
        }
    }
}

impl Database {
    /// The database's collections, as a cursor of `listCollections` entries (`{name,
    /// type, options, info, idIndex}`). A retryable read, on the primary.
    ///
    /// ```no_run
    /// # async fn f(db: brook::Database) -> brook::Result<()> {
    /// let names = db.list_collection_names().await?;
    /// # Ok(()) }
    /// ```
    pub fn list_collections(&self) -> ListCollectionsBuilder<'_> {
        ListCollectionsBuilder {
            db: self,
            cmd: ListCollections::new(),
            timeout: self.timeout,
        }
    }

    /// The names of the database's collections (`listCollections` with `nameOnly`).
    pub async fn list_collection_names(&self) -> Result<Vec<String>, Error> {
        let mut cursor = self.list_collections().name_only(true).await?;
        let mut names = Vec::new();
        while let Some(entry) = cursor.try_next().await? {
            let name = entry
                .get_str("name")
                .map_err(|_| Error::bson(format!("a collection without a name: {entry}")))?;
            names.push(name.to_owned());
        }
        Ok(names)
    }
}

impl Client {
    /// The deployment's databases (`listDatabases` on `admin`). A retryable read, on
    /// the primary.
    ///
    /// ```no_run
    /// # async fn f(client: brook::Client) -> brook::Result<()> {
    /// for db in client.list_databases().await? {
    ///     println!("{} ({:?} bytes)", db.name, db.size_on_disk);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_databases(&self) -> ListDatabasesBuilder<'_> {
        ListDatabasesBuilder {
            client: self,
            cmd: ListDatabases::new(),
            timeout: self.exec.options().timeout,
        }
    }

    /// The names of the deployment's databases (`listDatabases` with `nameOnly`).
    pub async fn list_database_names(&self) -> Result<Vec<String>, Error> {
        let dbs = self.list_databases().name_only(true).await?;
        Ok(dbs.into_iter().map(|d| d.name).collect())
    }
}

/// The setters every builder has: `timeout`.
macro_rules! timeout_setter {
    () => {
        /// `timeoutMS` of this operation (the collection's, database's or client's by
        /// default; `Duration::ZERO`: no limit).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = Some(timeout);
            self
        }
    };
}

/// The setters of the reads: `max_time`, `comment`, `read_preference`.
macro_rules! read_setters {
    () => {
        /// `maxTimeMS` (ignored under `timeoutMS`, which sets its own).
        pub fn max_time(mut self, d: Duration) -> Self {
            self.cmd.max_time_ms = Some(millis(d));
            self
        }

        /// A comment recorded in the server's logs and profiler.
        pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
            self.cmd.comment = Some(comment.into());
            self
        }

        /// The read preference of this read (the collection's by default).
        pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
            self.read_preference = Some(read_preference);
            self
        }
    };
}

// ------------------------------------------------------------------------------------
// find_one
// ------------------------------------------------------------------------------------

/// A `find_one` waiting to be awaited: set options, then `.await` it for an
/// `Option<T>`.
#[must_use = "a find does nothing until awaited"]
pub struct FindOne<'a, T> {
    coll: &'a Collection<T>,
    cmd: Find,
    read_preference: Option<ReadPreference>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for FindOne<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FindOne")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> FindOne<'_, T> {
    timeout_setter!();
    read_setters!();

    /// The projection.
    pub fn projection(mut self, projection: Document) -> Self {
        self.cmd.projection = Some(projection);
        self
    }

    /// The sort order: which document is "first".
    pub fn sort(mut self, sort: Document) -> Self {
        self.cmd.sort = Some(sort);
        self
    }

    /// Skip the first `n` matching documents.
    pub fn skip(mut self, n: u64) -> Self {
        self.cmd.skip = Some(n);
        self
    }

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.cmd.hint = Some(hint.into());
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.cmd.collation = Some(collation);
        self
    }
}

impl<'a, T: DeserializeOwned + 'a> IntoFuture for FindOne<'a, T> {
    type Output = Result<Option<T>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            let timing = Timing::for_timeout(this.timeout);
            legacy_max_time(timing, &mut this.cmd.max_time_ms);
            let target = read_target(&this.read_preference, &this.coll.read_preference);
            let reply = this
                .coll
                .client
                .exec
                .execute_implicit(&this.coll.db, &this.cmd, target, Retry::Read, timing)
                .await?;
            reply.batch.first().map(decode).transpose()
        })
    }
}

// ------------------------------------------------------------------------------------
// update_many, replace_one, delete_many
// ------------------------------------------------------------------------------------

/// An `update_many` waiting to be awaited.
#[must_use = "an update does nothing until awaited"]
pub struct UpdateMany<'a, T> {
    coll: &'a Collection<T>,
    statement: UpdateStatement,
    checked: Result<(), Error>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for UpdateMany<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateMany")
            .field("coll", &self.coll.namespace())
            .field("statement", &self.statement)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> UpdateMany<'_, T> {
    timeout_setter!();

    /// Insert a document when none matches.
    pub fn upsert(mut self, upsert: bool) -> Self {
        self.statement.upsert = upsert;
        self
    }

    /// `arrayFilters`: which array elements the `$[<id>]` operators update.
    pub fn array_filters(mut self, filters: impl IntoIterator<Item = Document>) -> Self {
        self.statement.array_filters = Some(filters.into_iter().collect());
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.statement.collation = Some(collation);
        self
    }

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.statement.hint = Some(hint.into());
        self
    }
}

impl<'a, T> IntoFuture for UpdateMany<'a, T> {
    type Output = Result<UpdateResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.checked?;
            run_update(self.coll, self.statement, Retry::No, self.timeout).await
        })
    }
}

/// A `replace_one` waiting to be awaited.
#[must_use = "a replace does nothing until awaited"]
pub struct ReplaceOne<'a, T> {
    coll: &'a Collection<T>,
    filter: Document,
    replacement: Result<Document, Error>,
    upsert: bool,
    collation: Option<Document>,
    hint: Option<Bson>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for ReplaceOne<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaceOne")
            .field("coll", &self.coll.namespace())
            .field("filter", &self.filter)
            .field("upsert", &self.upsert)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> ReplaceOne<'_, T> {
    timeout_setter!();

    /// Insert the replacement when nothing matches.
    pub fn upsert(mut self, upsert: bool) -> Self {
        self.upsert = upsert;
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.collation = Some(collation);
        self
    }

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl<'a, T> IntoFuture for ReplaceOne<'a, T> {
    type Output = Result<UpdateResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let replacement = self.replacement?;
            let mut statement =
                UpdateStatement::new(self.filter, UpdateModification::Document(replacement));
            statement.upsert = self.upsert;
            statement.collation = self.collation;
            statement.hint = self.hint;
            run_update(self.coll, statement, Retry::Write, self.timeout).await
        })
    }
}

/// A `delete_many` waiting to be awaited.
#[must_use = "a delete does nothing until awaited"]
pub struct DeleteMany<'a, T> {
    coll: &'a Collection<T>,
    statement: DeleteStatement,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for DeleteMany<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeleteMany")
            .field("coll", &self.coll.namespace())
            .field("statement", &self.statement)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> DeleteMany<'_, T> {
    timeout_setter!();

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.statement.collation = Some(collation);
        self
    }

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.statement.hint = Some(hint.into());
        self
    }
}

impl<'a, T> IntoFuture for DeleteMany<'a, T> {
    type Output = Result<DeleteResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let coll = self.coll;
            let timing = coll.timing(self.timeout);
            let exec = &coll.client.exec;
            let mut cmd = Delete::new(coll.name.clone(), vec![self.statement]);
            cmd.write_concern = coll.write_concern(timing);
            let reply = exec
                .execute_implicit(&coll.db, &cmd, Target::Primary, Retry::No, timing)
                .await?;
            let n = u64::try_from(reply.n).unwrap_or(0);
            if !reply.write_errors.is_empty() || reply.write_concern_error.is_some() {
                return Err(write_failure_within(
                    timing,
                    reply.write_errors,
                    reply.write_concern_error,
                    n,
                    exec.server_info().max_wire_version,
                ));
            }
            Ok(DeleteResult { deleted_count: n })
        })
    }
}

// ------------------------------------------------------------------------------------
// count_documents, estimated_document_count, distinct
// ------------------------------------------------------------------------------------

/// A `count_documents` waiting to be awaited.
#[must_use = "a count does nothing until awaited"]
pub struct CountDocumentsBuilder<'a, T> {
    coll: &'a Collection<T>,
    cmd: CountDocuments,
    read_preference: Option<ReadPreference>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for CountDocumentsBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountDocumentsBuilder")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> CountDocumentsBuilder<'_, T> {
    timeout_setter!();
    read_setters!();

    /// Skip the first `n` matching documents (`$skip`).
    pub fn skip(mut self, n: u64) -> Self {
        self.cmd.skip = Some(n);
        self
    }

    /// Count at most `n` documents (`$limit`).
    pub fn limit(mut self, n: u64) -> Self {
        self.cmd.limit = Some(n);
        self
    }

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.cmd.hint = Some(hint.into());
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.cmd.collation = Some(collation);
        self
    }
}

impl<'a, T> IntoFuture for CountDocumentsBuilder<'a, T> {
    type Output = Result<u64, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            let timing = Timing::for_timeout(this.timeout);
            legacy_max_time(timing, &mut this.cmd.max_time_ms);
            let target = read_target(&this.read_preference, &this.coll.read_preference);
            this.coll
                .client
                .exec
                .execute_implicit(&this.coll.db, &this.cmd, target, Retry::Read, timing)
                .await
        })
    }
}

/// An `estimated_document_count` waiting to be awaited.
#[must_use = "a count does nothing until awaited"]
pub struct EstimatedDocumentCount<'a, T> {
    coll: &'a Collection<T>,
    cmd: Count,
    read_preference: Option<ReadPreference>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for EstimatedDocumentCount<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EstimatedDocumentCount")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> EstimatedDocumentCount<'_, T> {
    timeout_setter!();
    read_setters!();
}

impl<'a, T> IntoFuture for EstimatedDocumentCount<'a, T> {
    type Output = Result<u64, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            let timing = Timing::for_timeout(this.timeout);
            legacy_max_time(timing, &mut this.cmd.max_time_ms);
            let target = read_target(&this.read_preference, &this.coll.read_preference);
            this.coll
                .client
                .exec
                .execute_implicit(&this.coll.db, &this.cmd, target, Retry::Read, timing)
                .await
        })
    }
}

/// A `distinct` waiting to be awaited.
#[must_use = "a distinct does nothing until awaited"]
pub struct DistinctBuilder<'a, T> {
    coll: &'a Collection<T>,
    cmd: Distinct,
    read_preference: Option<ReadPreference>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for DistinctBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistinctBuilder")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> DistinctBuilder<'_, T> {
    timeout_setter!();
    read_setters!();

    /// `hint`: an index name or key pattern.
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.cmd.hint = Some(hint.into());
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.cmd.collation = Some(collation);
        self
    }
}

impl<'a, T> IntoFuture for DistinctBuilder<'a, T> {
    type Output = Result<Vec<Bson>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut this = self;
            let timing = Timing::for_timeout(this.timeout);
            legacy_max_time(timing, &mut this.cmd.max_time_ms);
            let target = read_target(&this.read_preference, &this.coll.read_preference);
            this.coll
                .client
                .exec
                .execute_implicit(&this.coll.db, &this.cmd, target, Retry::Read, timing)
                .await
        })
    }
}

// ------------------------------------------------------------------------------------
// find_one_and_update / _replace / _delete
// ------------------------------------------------------------------------------------

/// What the three `find_one_and_*` builders share.
struct FamBuilder<'a, T> {
    coll: &'a Collection<T>,
    cmd: FindAndModify,
    checked: Result<(), Error>,
    timeout: Option<Duration>,
}

impl<'a, T> FamBuilder<'a, T> {
    fn new(coll: &'a Collection<T>, cmd: FindAndModify, checked: Result<(), Error>) -> Self {
        FamBuilder {
            coll,
            cmd,
            checked,
            timeout: coll.timeout,
        }
    }

    async fn run(self) -> Result<Option<T>, Error>
    where
        T: DeserializeOwned,
    {
        self.checked?;
        let coll = self.coll;
        let mut cmd = self.cmd;
        let timing = coll.timing(self.timeout);
        legacy_max_time(timing, &mut cmd.max_time_ms);
        cmd.write_concern = coll.write_concern(timing);
        let exec = &coll.client.exec;
        let reply = exec
            .execute_implicit(&coll.db, &cmd, Target::Primary, Retry::Write, timing)
            .await?;
        if let Some(wce) = reply.write_concern_error {
            let n = reply.n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            return Err(write_failure_within(
                timing,
                Vec::new(),
                Some(wce),
                n,
                exec.server_info().max_wire_version,
            ));
        }
        reply.value.as_ref().map(decode).transpose()
    }
}

impl<T> fmt::Debug for FamBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FindOneAndModify")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The setters the three `find_one_and_*` builders share.
macro_rules! fam_setters {
    () => {
        /// `timeoutMS` of this operation (the collection's by default;
        /// `Duration::ZERO`: no limit).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.0.timeout = Some(timeout);
            self
        }

        /// The sort order: which document, when several match.
        pub fn sort(mut self, sort: Document) -> Self {
            self.0.cmd.sort = Some(sort);
            self
        }

        /// The projection of the returned document (`fields`).
        pub fn projection(mut self, projection: Document) -> Self {
            self.0.cmd.fields = Some(projection);
            self
        }

        /// `collation`.
        pub fn collation(mut self, collation: Document) -> Self {
            self.0.cmd.collation = Some(collation);
            self
        }

        /// `hint`: an index name or key pattern (4.4+).
        pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
            self.0.cmd.hint = Some(hint.into());
            self
        }

        /// `maxTimeMS` (ignored under `timeoutMS`, which sets its own).
        pub fn max_time(mut self, d: Duration) -> Self {
            self.0.cmd.max_time_ms = Some(millis(d));
            self
        }

        /// A comment recorded in the server's logs and profiler.
        pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
            self.0.cmd.comment = Some(comment.into());
            self
        }
    };
}

/// The setters of the two that modify rather than delete.
macro_rules! fam_modify_setters {
    () => {
        /// Insert a document when none matches.
        pub fn upsert(mut self, upsert: bool) -> Self {
            self.0.cmd.upsert = upsert;
            self
        }

        /// Return the document as it was before the change (the default) or after.
        pub fn return_document(mut self, which: ReturnDocument) -> Self {
            self.0.cmd.new = which == ReturnDocument::After;
            self
        }

        /// `bypassDocumentValidation`.
        pub fn bypass_document_validation(mut self, bypass: bool) -> Self {
            self.0.cmd.bypass_document_validation = Some(bypass);
            self
        }
    };
}

/// A `find_one_and_update` waiting to be awaited.
#[derive(Debug)]
#[must_use = "a find_one_and_update does nothing until awaited"]
pub struct FindOneAndUpdate<'a, T>(FamBuilder<'a, T>);

impl<T> FindOneAndUpdate<'_, T> {
    fam_setters!();
    fam_modify_setters!();

    /// `arrayFilters`: which array elements the `$[<id>]` operators update.
    pub fn array_filters(mut self, filters: impl IntoIterator<Item = Document>) -> Self {
        self.0.cmd.array_filters = Some(filters.into_iter().collect());
        self
    }
}

/// A `find_one_and_replace` waiting to be awaited.
#[derive(Debug)]
#[must_use = "a find_one_and_replace does nothing until awaited"]
pub struct FindOneAndReplace<'a, T>(FamBuilder<'a, T>);

impl<T> FindOneAndReplace<'_, T> {
    fam_setters!();
    fam_modify_setters!();
}

/// A `find_one_and_delete` waiting to be awaited.
#[derive(Debug)]
#[must_use = "a find_one_and_delete does nothing until awaited"]
pub struct FindOneAndDelete<'a, T>(FamBuilder<'a, T>);

impl<T> FindOneAndDelete<'_, T> {
    fam_setters!();
}

macro_rules! fam_into_future {
    ($name:ident) => {
        impl<'a, T: DeserializeOwned + 'a> IntoFuture for $name<'a, T> {
            type Output = Result<Option<T>, Error>;
            type IntoFuture = BoxFuture<'a, Self::Output>;

            fn into_future(self) -> Self::IntoFuture {
                Box::pin(self.0.run())
            }
        }
    };
}

fam_into_future!(FindOneAndUpdate);
fam_into_future!(FindOneAndReplace);
fam_into_future!(FindOneAndDelete);

// ------------------------------------------------------------------------------------
// Indexes
// ------------------------------------------------------------------------------------

/// A `create_index` waiting to be awaited.
#[must_use = "a create_index does nothing until awaited"]
pub struct CreateIndex<'a, T> {
    coll: &'a Collection<T>,
    keys: Document,
    /// The index options (`unique`, `name`…), in the index specification.
    options: Document,
    commit_quorum: Option<Bson>,
    max_time_ms: Option<u64>,
    comment: Option<Bson>,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for CreateIndex<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateIndex")
            .field("coll", &self.coll.namespace())
            .field("keys", &self.keys)
            .field("options", &self.options)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> CreateIndex<'_, T> {
    timeout_setter!();

    /// The index's name (by default generated from the keys: `{a: 1, b: -1}` →
    /// `a_1_b_-1`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.insert("name", name.into());
        self
    }

    /// `unique`: refuse two documents with the same key.
    pub fn unique(mut self, unique: bool) -> Self {
        self.options.insert("unique", unique);
        self
    }

    /// `sparse`: index only the documents that have the field.
    pub fn sparse(mut self, sparse: bool) -> Self {
        self.options.insert("sparse", sparse);
        self
    }

    /// `expireAfterSeconds` of a TTL index (whole seconds).
    pub fn expire_after(mut self, after: Duration) -> Self {
        // An int32 as the server documents it; wider only when it must be.
        let secs = after.as_secs();
        let value = match i32::try_from(secs) {
            Ok(v) => Bson::Int32(v),
            Err(_) => Bson::Int64(i64::try_from(secs).unwrap_or(i64::MAX)),
        };
        self.options.insert("expireAfterSeconds", value);
        self
    }

    /// `partialFilterExpression`: index only the documents matching it.
    pub fn partial_filter_expression(mut self, filter: Document) -> Self {
        self.options.insert("partialFilterExpression", filter);
        self
    }

    /// `collation`.
    pub fn collation(mut self, collation: Document) -> Self {
        self.options.insert("collation", collation);
        self
    }

    /// `hidden`: kept up to date but not used by the query planner (4.4+).
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.options.insert("hidden", hidden);
        self
    }

    /// Another index option, as the server names it (e.g. `weights` for a text index).
    pub fn option(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.options.insert(key, value.into());
        self
    }

    /// `commitQuorum` (4.4+): how many data-bearing members must be ready.
    pub fn commit_quorum(mut self, quorum: impl Into<Bson>) -> Self {
        self.commit_quorum = Some(quorum.into());
        self
    }

    /// `maxTimeMS` (ignored under `timeoutMS`, which sets its own).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.max_time_ms = Some(millis(d));
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

impl<'a, T> IntoFuture for CreateIndex<'a, T> {
    type Output = Result<CreateIndexResult, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if self.keys.is_empty() {
                return Err(Error::invalid_argument("an index needs at least one key"));
            }
            let name = match self.options.get("name") {
                Some(Bson::String(name)) => name.clone(),
                _ => index_name(&self.keys),
            };
            let mut spec = Document::new();
            spec.insert("key", self.keys);
            spec.insert("name", name.clone());
            for (k, v) in self.options {
                if k != "name" {
                    spec.insert(k, v);
                }
            }
            let coll = self.coll;
            let timing = coll.timing(self.timeout);
            let mut cmd = CreateIndexes::new(coll.name.clone(), vec![spec]);
            cmd.commit_quorum = self.commit_quorum;
            cmd.max_time_ms = self.max_time_ms;
            cmd.comment = self.comment;
            legacy_max_time(timing, &mut cmd.max_time_ms);
            cmd.write_concern = coll.write_concern(timing);
            let exec = &coll.client.exec;
            let wce = exec
                .execute_implicit(&coll.db, &cmd, Target::Primary, Retry::No, timing)
                .await?;
            if let Some(wce) = wce {
                return Err(write_failure_within(
                    timing,
                    Vec::new(),
                    Some(wce),
                    0,
                    exec.server_info().max_wire_version,
                ));
            }
            Ok(CreateIndexResult { index_name: name })
        })
    }
}

/// A `drop_index` / `drop_indexes` waiting to be awaited.
#[must_use = "a drop_index does nothing until awaited"]
pub struct DropIndex<'a, T> {
    coll: &'a Collection<T>,
    cmd: DropIndexes,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for DropIndex<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropIndex")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> DropIndex<'_, T> {
    timeout_setter!();

    /// `maxTimeMS` (ignored under `timeoutMS`, which sets its own).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.cmd.max_time_ms = Some(millis(d));
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }
}

impl<'a, T> IntoFuture for DropIndex<'a, T> {
    type Output = Result<(), Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let coll = self.coll;
            let mut cmd = self.cmd;
            let timing = coll.timing(self.timeout);
            legacy_max_time(timing, &mut cmd.max_time_ms);
            cmd.write_concern = coll.write_concern(timing);
            let exec = &coll.client.exec;
            let wce = exec
                .execute_implicit(&coll.db, &cmd, Target::Primary, Retry::No, timing)
                .await?;
            match wce {
                None => Ok(()),
                Some(wce) => Err(write_failure_within(
                    timing,
                    Vec::new(),
                    Some(wce),
                    0,
                    exec.server_info().max_wire_version,
                )),
            }
        })
    }
}

/// Runs a cursor-opening listing command on the primary (a retryable read) and wraps
/// its reply in a [`Cursor`].
async fn open_listing<C>(
    client: &Client,
    db: &str,
    mut cmd: C,
    batch_size: Option<u32>,
    timeout: Option<Duration>,
    max_time: impl FnOnce(&mut C) -> &mut Option<u64>,
) -> Result<Cursor<Document>, Error>
where
    C: brook_command::Command<Output = brook_command::CursorReply>,
{
    let exec = &client.exec;
    exec.check_open()?;
    let (timing, cursor_timeout) = cursor_timing(timeout, None);
    legacy_max_time(timing, max_time(&mut cmd));
    let mut session = exec.implicit_session();
    let executed = exec
        .execute_pinned(
            db,
            &cmd,
            Some(&mut session),
            Target::Primary,
            Retry::Read,
            timing,
        )
        .await?;
    // The getMores inherit the command's comment on the server: they MUST NOT carry it
    // (Enumerating Indexes / Enumerating Collections specifications).
    let spec = GetMoreOptions {
        batch_size,
        max_await_time: None,
        comment: None,
    };
    Ok(Cursor::new(exec.clone(), executed, spec, session).with_timeout(cursor_timeout))
}

/// A `list_indexes` waiting to be awaited for a [`Cursor`] of index documents.
#[must_use = "a list_indexes does nothing until awaited"]
pub struct ListIndexesBuilder<'a, T> {
    coll: &'a Collection<T>,
    cmd: ListIndexes,
    timeout: Option<Duration>,
}

impl<T> fmt::Debug for ListIndexesBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListIndexesBuilder")
            .field("coll", &self.coll.namespace())
            .field("cmd", &self.cmd)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<T> ListIndexesBuilder<'_, T> {
    timeout_setter!();

    /// Documents per batch.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.cmd.batch_size = Some(n);
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }
}

impl<'a, T> IntoFuture for ListIndexesBuilder<'a, T> {
    type Output = Result<Cursor<Document>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let batch_size = self.cmd.batch_size;
            open_listing(
                &self.coll.client,
                &self.coll.db,
                self.cmd,
                batch_size,
                self.timeout,
                |c| &mut c.max_time_ms,
            )
            .await
        })
    }
}

/// A `list_collections` waiting to be awaited for a [`Cursor`] of collection entries.
#[must_use = "a list_collections does nothing until awaited"]
#[derive(Debug)]
pub struct ListCollectionsBuilder<'a> {
    db: &'a Database,
    cmd: ListCollections,
    timeout: Option<Duration>,
}

impl ListCollectionsBuilder<'_> {
    timeout_setter!();

    /// `filter` on the entries (e.g. `{name: "events"}`, `{type: "view"}`).
    pub fn filter(mut self, filter: Document) -> Self {
        self.cmd.filter = Some(filter);
        self
    }

    /// `nameOnly`: entries with `name` and `type` only (no collection locks taken).
    pub fn name_only(mut self, name_only: bool) -> Self {
        self.cmd.name_only = Some(name_only);
        self
    }

    /// `authorizedCollections`: only the collections the user may act on.
    pub fn authorized_collections(mut self, authorized: bool) -> Self {
        self.cmd.authorized_collections = Some(authorized);
        self
    }

    /// Documents per batch.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.cmd.batch_size = Some(n);
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }
}

impl<'a> IntoFuture for ListCollectionsBuilder<'a> {
    type Output = Result<Cursor<Document>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let batch_size = self.cmd.batch_size;
            open_listing(
                self.db.client(),
                &self.db.name,
                self.cmd,
                batch_size,
                self.timeout,
                |c| &mut c.max_time_ms,
            )
            .await
        })
    }
}

/// A `list_databases` waiting to be awaited.
#[must_use = "a list_databases does nothing until awaited"]
#[derive(Debug)]
pub struct ListDatabasesBuilder<'a> {
    client: &'a Client,
    cmd: ListDatabases,
    timeout: Option<Duration>,
}

impl ListDatabasesBuilder<'_> {
    timeout_setter!();

    /// `filter` on the entries (e.g. `{name: {$regex: "^app"}}`).
    pub fn filter(mut self, filter: Document) -> Self {
        self.cmd.filter = Some(filter);
        self
    }

    /// `nameOnly`: names only (no sizes; no database locks taken).
    pub fn name_only(mut self, name_only: bool) -> Self {
        self.cmd.name_only = Some(name_only);
        self
    }

    /// `authorizedDatabases`: only the databases the user may act on.
    pub fn authorized_databases(mut self, authorized: bool) -> Self {
        self.cmd.authorized_databases = Some(authorized);
        self
    }

    /// A comment recorded in the server's logs and profiler.
    pub fn comment(mut self, comment: impl Into<Bson>) -> Self {
        self.cmd.comment = Some(comment.into());
        self
    }
}

impl<'a> IntoFuture for ListDatabasesBuilder<'a> {
    type Output = Result<Vec<DatabaseSpecification>, Error>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let timing = Timing::for_timeout(self.timeout);
            self.client
                .exec
                .execute_implicit("admin", &self.cmd, Target::Primary, Retry::Read, timing)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn updates_and_replacements_are_checked() {
        assert!(check_update(&doc! { "$set": { "a": 1 } }).is_ok());
        assert!(
            check_update(&doc! { "a": 1 })
                .unwrap_err()
                .is_invalid_argument()
        );
        assert!(check_update(&doc! {}).unwrap_err().is_invalid_argument());
        assert!(check_replacement(&doc! { "a": 1 }).is_ok());
        assert!(check_replacement(&doc! {}).is_ok());
        assert!(
            check_replacement(&doc! { "$set": { "a": 1 } })
                .unwrap_err()
                .is_invalid_argument()
        );
    }
}
