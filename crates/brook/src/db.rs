//! `Database`: commands and collections of one database.

use std::time::Duration;

use brook_command::{AggregateTarget, RunCommand};
use bson::{Document, RawDocumentBuf};

use crate::change_stream::{Scope, WatchBuilder};
use crate::client::Client;
use crate::coll::{AggregateBuilder, Collection};
use crate::error::Error;
use crate::event::ChangeStreamEvent;
use crate::exec::{Retry, Target, Timing};
use crate::options::ReadPreference;

/// A handle to one database. Cheap to clone; no IO until an operation runs.
#[derive(Debug, Clone)]
pub struct Database {
    client: Client,
    pub(crate) name: String,
    pub(crate) read_preference: ReadPreference,
    /// `timeoutMS` of its operations (the client's unless set here).
    pub(crate) timeout: Option<Duration>,
}

impl Database {
    pub(crate) fn new(client: Client, name: &str) -> Database {
        let read_preference = client.exec.default_read_preference().clone();
        let timeout = client.exec.options().timeout;
        Database {
            client,
            name: name.to_string(),
            read_preference,
            timeout,
        }
    }

    /// The same database, its operations (and those of the collections it hands out)
    /// bounded by `timeoutMS` = `timeout` (the Client Side Operations Timeout
    /// specification; see [`ClientOptions::timeout`](crate::ClientOptions::timeout)).
    /// `Duration::ZERO` means no limit (the specification's rules still apply: legacy
    /// timeouts ignored). The default is the client's (`timeoutMS` in the connection
    /// string).
    pub fn with_timeout(mut self, timeout: Duration) -> Database {
        self.timeout = Some(timeout);
        self
    }

    /// The `timeoutMS` of this database's operations, `None` when not set at any level.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The same database, reading with `read_preference` (aggregates and change
    /// streams, and the collections it hands out). The default is the client's
    /// (`readPreference` and friends in the connection string, else primary).
    pub fn with_read_preference(mut self, read_preference: ReadPreference) -> Database {
        self.read_preference = read_preference;
        self
    }

    /// The read preference of this database's reads.
    pub fn read_preference(&self) -> &ReadPreference {
        &self.read_preference
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this database belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A collection whose documents are read and written as `T`.
    pub fn collection<T>(&self, name: &str) -> Collection<T> {
        Collection::new(
            self.client.clone(),
            &self.name,
            name,
            self.read_preference.clone(),
            self.timeout,
        )
    }

    /// A collection of raw BSON documents (no per-field decoding).
    pub fn collection_raw(&self, name: &str) -> Collection<RawDocumentBuf> {
        self.collection(name)
    }

    /// Run `command` (first key = the command's name) on this database and return the
    /// server's reply. `$db` and the implicit session's `lsid` are added to a copy; the
    /// caller's document is not changed. An `ok: 0` reply is an error whose
    /// `is_server_error()` is true.
    ///
    /// Under `timeoutMS` ([`with_timeout`](Self::with_timeout)) the command gets the
    /// computed `maxTimeMS`, replacing one the document carries.
    pub async fn run_command(&self, command: Document) -> Result<Document, Error> {
        let timing = Timing::for_timeout(self.timeout);
        let cmd = RunCommand::new(command);
        let reply = self
            .client
            .exec
            .execute_implicit(&self.name, &cmd, Target::Primary, Retry::No, timing)
            .await?;
        reply.to_document().map_err(Error::bson)
    }

    /// A change stream on every collection of this database (`aggregate: 1`). Set
    /// options on the builder, then `.await` it for a [`ChangeStream`](crate::ChangeStream).
    pub fn watch(&self) -> WatchBuilder<ChangeStreamEvent<Document>> {
        WatchBuilder::new(
            std::sync::Arc::clone(&self.client.exec),
            Scope::Database(self.name.clone()),
            self.read_preference.clone(),
        )
        .inherit_timeout(self.timeout)
    }

    /// A database-level aggregation (`aggregate: 1`), e.g. `$currentOp` on `admin`.
    pub fn aggregate(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
    ) -> AggregateBuilder<'_, Document> {
        AggregateBuilder::new(
            &self.client,
            &self.name,
            AggregateTarget::Database,
            pipeline.into_iter().collect(),
            self.read_preference.clone(),
            self.timeout,
        )
    }
}
