//! Client Side Operations Timeout (`timeoutMS`) against the testkit's fake server: the
//! cases of the specification's unified tests (`client-side-operations-timeout/tests/`)
//! that apply to the operations brook has, one test per case, named after it
//! (`<file>__<case>`). A `failCommand` fail point with `blockConnection`/`blockTimeMS` is
//! a queued [`Action::delay`] here; the command monitoring the spec checks is the fake
//! server's record of what it received. Times are scaled up from the spec's (which
//! assume a quiet machine) so that every margin is at least a few hundred milliseconds.
//!
//! | test | spec file | case |
//! |---|---|---|
//! | `non_tailable_cursors__timeout_ms_applied_to_find_if_timeout_mode_is_cursor_lifetime` | non-tailable-cursors.json | timeoutMS applied to find if timeoutMode is cursor_lifetime |
//! | `non_tailable_cursors__remaining_timeout_ms_applied_to_get_more_if_timeout_mode_is_unset` | non-tailable-cursors.json | remaining timeoutMS applied to getMore if timeoutMode is unset |
//! | `non_tailable_cursors__remaining_timeout_ms_applied_to_get_more_if_timeout_mode_is_cursor_lifetime` | non-tailable-cursors.json | remaining timeoutMS applied to getMore if timeoutMode is cursor_lifetime |
//! | `non_tailable_cursors__timeout_ms_applied_to_find_if_timeout_mode_is_iteration` | non-tailable-cursors.json | timeoutMS applied to find if timeoutMode is iteration |
//! | `non_tailable_cursors__timeout_ms_is_refreshed_for_get_more_if_timeout_mode_is_iteration_success` | non-tailable-cursors.json | timeoutMS is refreshed for getMore if timeoutMode is iteration - success |
//! | `non_tailable_cursors__timeout_ms_is_refreshed_for_get_more_if_timeout_mode_is_iteration_failure` | non-tailable-cursors.json | timeoutMS is refreshed for getMore if timeoutMode is iteration - failure |
//! | `non_tailable_cursors__aggregate_with_out_errors_if_timeout_mode_is_iteration` | non-tailable-cursors.json | aggregate with $out errors if timeoutMode is iteration |
//! | `non_tailable_cursors__aggregate_with_merge_errors_if_timeout_mode_is_iteration` | non-tailable-cursors.json | aggregate with $merge errors if timeoutMode is iteration |
//! | `cursors__find_errors_if_timeout_mode_is_set_and_timeout_ms_is_not` | cursors.json | find errors if timeoutMode is set and timeoutMS is not |
//! | `cursors__collection_aggregate_errors_if_timeout_mode_is_set_and_timeout_ms_is_not` | cursors.json | collection aggregate errors if timeoutMode is set and timeoutMS is not |
//! | `cursors__database_aggregate_errors_if_timeout_mode_is_set_and_timeout_ms_is_not` | cursors.json | database aggregate errors if timeoutMode is set and timeoutMS is not |
//! | `close_cursors__timeout_ms_is_refreshed_for_close` | close-cursors.json | timeoutMS is refreshed for close |
//! | `close_cursors__timeout_ms_can_be_overridden_for_close` | close-cursors.json | timeoutMS can be overridden for close |
//! | `global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__<op>` | global-timeoutMS.json | timeoutMS can be configured on a MongoClient - `<op>` |
//! | `global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__<op>` | global-timeoutMS.json | timeoutMS can be set to 0 on a MongoClient - `<op>` |
//! | `override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__<op>` | override-database-timeoutMS.json | timeoutMS can be configured on a MongoDatabase - `<op>` |
//! | `override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__<op>` | override-database-timeoutMS.json | timeoutMS can be set to 0 on a MongoDatabase - `<op>` |
//! | `override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__<op>` | override-collection-timeoutMS.json | timeoutMS can be configured on a MongoCollection - `<op>` |
//! | `override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__<op>` | override-collection-timeoutMS.json | timeoutMS can be set to 0 on a MongoCollection - `<op>` |
//! | `override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__<op>` | override-operation-timeoutMS.json | timeoutMS can be configured for an operation - `<op>` |
//! | `override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__<op>` | override-operation-timeoutMS.json | timeoutMS can be set to 0 for an operation - `<op>` |
//! | `retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__<op>` | retryability-timeoutMS.json | timeoutMS applies to whole operation, not individual attempts - `<op>` |
//! | `retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__<op>` | retryability-timeoutMS.json | operation is retried multiple times for non-zero timeoutMS - `<op>` |
//! | `retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__<op>` | retryability-timeoutMS.json | operation is retried multiple times if timeoutMS is zero - `<op>` |
//! | `legacy_timeouts__socket_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field` | legacy-timeouts.json | socketTimeoutMS is not used to derive a maxTimeMS command field |
//! | `legacy_timeouts__wait_queue_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field` | legacy-timeouts.json | waitQueueTimeoutMS is not used to derive a maxTimeMS command field |
//! | `legacy_timeouts__w_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field` | legacy-timeouts.json | wTimeoutMS is not used to derive a maxTimeMS command field |
//! | `legacy_timeouts__max_time_ms_option_is_used_directly_as_the_max_time_ms_field_on_a_command` | legacy-timeouts.json | maxTimeMS option is used directly as the maxTimeMS field on a command (with find: brook has no estimatedDocumentCount) |
//! | `wait_queue_timeout__wait_queue_timeout_error_does_not_clear_the_pool` | waitQueueTimeout.json | WaitQueueTimeoutError does not clear the pool |
//! | `command_execution__max_time_ms_value_in_the_command_is_less_than_timeout_ms` | command-execution.json | maxTimeMS value in the command is less than timeoutMS |
//! | `command_execution__command_is_not_sent_if_rtt_is_greater_than_timeout_ms` | command-execution.json | command is not sent if RTT is greater than timeoutMS |
//! | `command_execution__short_circuit_is_not_enabled_with_only_1_rtt_measurement` | command-execution.json | short-circuit is not enabled with only 1 RTT measurement |
//! | `error_transformations__basic_max_time_ms_expired_error_is_transformed` | error-transformations.json | basic MaxTimeMSExpired error is transformed |
//! | `error_transformations__write_concern_error_max_time_ms_expired_is_transformed` | error-transformations.json | write concern error MaxTimeMSExpired is transformed |
//!
//! `<op>` is one of `find_on_collection`, `aggregate_on_collection`,
//! `aggregate_on_database`, `run_command_on_database` (not in the collection and
//! retryability files: it is a database operation, and never retried),
//! `insert_one_on_collection`, `insert_many_on_collection`, `update_one_on_collection`,
//! `delete_one_on_collection`.
//!
//! Not mirrored: listCollections, listIndexes, listDatabases, count, distinct,
//! findOne*, replaceOne, updateMany, deleteMany, bulkWrite, index management, GridFS and
//! client-side encryption cases (brook has none of these operations); the
//! `maxCommitTimeMS` case of legacy-timeouts.json and the session/transaction files
//! (brook has no transactions); tailable-awaitData.json and tailable-non-awaitData.json
//! (brook has no tailable cursors besides change streams; their `watch` cases are in
//! `csot_change_streams.rs`); change-streams.json (every case, in
//! `csot_change_streams.rs`);
//! deprecated-options.json (it asks for errors when a deprecated option is set beside
//! timeoutMS, which the specification itself replaced with "timeoutMS overrides
//! deprecated timeout options": see `timeout_ms_overrides_the_legacy_options`).
//!
//! Beyond the spec files: `timeout_ms_overrides_the_legacy_options`,
//! `a_command_cut_by_timeout_ms_closes_its_connection_and_does_not_clear_the_pool`,
//! `an_expired_cursor_lifetime_still_returns_its_buffered_documents`,
//! `server_selection_is_bounded_by_timeout_ms`,
//! `iteration_mode_bounds_a_whole_call_not_each_get_more`.
#![allow(non_snake_case)] // `<file>__<case>`: the spec file and case, apart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook::monitoring::{CmapEvent, EventHandler, PoolEvent};
use brook::{Client, ClientOptions, Collection, Database, Error, TimeoutMode};
use brook_testkit::shapes::BatchKind;
use brook_testkit::{Action, FakeServer, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, doc};

const DB: &str = "test";
const COLL: &str = "coll";
const NS: &str = "test.coll";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `failCommand` with `blockConnection: true, blockTimeMS: n`, then the default reply.
fn blocked(n: u64) -> Action {
    Action::delay(ms(n), Action::Default)
}

/// `failCommand` with `blockConnection`, then `then`.
fn blocked_then(n: u64, then: Action) -> Action {
    Action::delay(ms(n), then)
}

async fn fake() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

fn uri(fake: &FakeServer, query: &str) -> String {
    format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500{query}",
        fake.host_port()
    )
}

async fn client(fake: &FakeServer, query: &str) -> Client {
    Client::connect(&uri(fake, query))
        .await
        .expect("client connects")
}

/// The `maxTimeMS` a command carried, if any.
fn max_time(c: &ReceivedCommand) -> Option<i64> {
    match c.body.get("maxTimeMS") {
        None => None,
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(other) => panic!("maxTimeMS must be an int or a long: {other:?}"),
    }
}

/// The commands named `name` the client sent to the test database (the handshakes' and
/// monitors' hellos go to `admin`).
fn sent(fake: &FakeServer, name: &str) -> Vec<ReceivedCommand> {
    fake.commands_named(name)
        .into_iter()
        .filter(|c| c.db == DB)
        .collect()
}

fn items(range: std::ops::Range<i32>) -> Vec<Document> {
    range.map(|n| doc! { "_id": n }).collect()
}

/// A find (or aggregate) reply opening cursor 42 with two documents.
fn first_batch() -> Action {
    Action::cursor(42, NS, BatchKind::First, items(0..2), None, None)
}

/// The getMore reply that ends cursor 42.
fn last_batch() -> Action {
    Action::cursor(0, NS, BatchKind::Next, items(2..4), None, None)
}

async fn drain(mut cursor: brook::Cursor<Document>) -> Result<Vec<Document>, Error> {
    let mut out = Vec::new();
    while let Some(doc) = cursor.try_next().await? {
        out.push(doc);
    }
    Ok(out)
}

fn assert_timeout<T: std::fmt::Debug>(outcome: Result<T, Error>) -> Error {
    let err = outcome.expect_err("the operation must time out");
    assert!(err.is_timeout(), "a timeout error: {err}");
    assert!(err.is_operation_timeout(), "a timeoutMS error: {err}");
    assert!(err.to_string().contains("timeoutMS"), "{err}");
    err
}

// ---------------------------------------------------------------------------------------
// The operations the per-operation files are mirrored for
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Op {
    Find,
    CollAggregate,
    DbAggregate,
    RunCommand,
    InsertOne,
    InsertMany,
    UpdateOne,
    DeleteOne,
}

impl Op {
    /// The command the operation sends.
    fn command(self) -> &'static str {
        match self {
            Op::Find => "find",
            Op::CollAggregate | Op::DbAggregate => "aggregate",
            Op::RunCommand => "ping",
            Op::InsertOne | Op::InsertMany => "insert",
            Op::UpdateOne => "update",
            Op::DeleteOne => "delete",
        }
    }

    /// Runs the operation on `db` / `coll`, with `timeout` as its own `timeoutMS` when
    /// set (a builder's `.timeout`, else a `with_timeout` handle for the plain async
    /// functions).
    async fn run(
        self,
        db: &Database,
        coll: &Collection<Document>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let coll_for = |c: &Collection<Document>| match timeout {
            Some(t) => c.clone().with_timeout(t),
            None => c.clone(),
        };
        match self {
            Op::Find => {
                let mut find = coll.find(doc! {});
                if let Some(t) = timeout {
                    find = find.timeout(t);
                }
                drain(find.await?).await.map(drop)
            }
            Op::CollAggregate => {
                let mut agg = coll.aggregate(vec![doc! { "$match": {} }]);
                if let Some(t) = timeout {
                    agg = agg.timeout(t);
                }
                drain(agg.await?).await.map(drop)
            }
            Op::DbAggregate => {
                let mut agg = db.aggregate(vec![doc! { "$listLocalSessions": {} }]);
                if let Some(t) = timeout {
                    agg = agg.timeout(t);
                }
                drain(agg.await?).await.map(drop)
            }
            Op::RunCommand => {
                let db = match timeout {
                    Some(t) => db.clone().with_timeout(t),
                    None => db.clone(),
                };
                db.run_command(doc! { "ping": 1 }).await.map(drop)
            }
            Op::InsertOne => coll_for(coll).insert_one(doc! { "x": 1 }).await.map(drop),
            Op::InsertMany => {
                let mut insert = coll.insert_many([doc! { "x": 1 }, doc! { "x": 2 }]);
                if let Some(t) = timeout {
                    insert = insert.timeout(t);
                }
                insert.await.map(drop)
            }
            Op::UpdateOne => {
                let mut update = coll.update_one(doc! {}, doc! { "$set": { "x": 1 } });
                if let Some(t) = timeout {
                    update = update.timeout(t);
                }
                update.await.map(drop)
            }
            Op::DeleteOne => coll_for(coll).delete_one(doc! {}).await.map(drop),
        }
    }
}

/// Generates one `#[tokio::test]` per `name => Op`, each calling `helper(op)`.
macro_rules! per_op {
    ($helper:ident: $($name:ident => $op:expr),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $helper($op).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// non-tailable-cursors.json
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn non_tailable_cursors__timeout_ms_applied_to_find_if_timeout_mode_is_cursor_lifetime() {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=300").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", blocked(900));
    let outcome = coll
        .find(doc! {})
        .timeout_mode(TimeoutMode::CursorLifetime)
        .await;
    assert_timeout(outcome);
    let finds = sent(&fake, "find");
    assert_eq!(finds.len(), 1, "a timeout is not retried");
    assert!(max_time(&finds[0]).is_some_and(|m| m > 0 && m <= 300));
}

/// The spec's "remaining timeoutMS applied to getMore" cases: find and getMore each take
/// 650 ms of a 1000 ms timeoutMS; the find carries maxTimeMS, the getMore none, and the
/// getMore runs out of the time the find left.
async fn remaining_timeout_applied_to_get_more(mode: Option<TimeoutMode>) {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=1000").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", blocked_then(650, first_batch()));
    fake.push_action("getMore", blocked_then(650, last_batch()));
    let mut find = coll.find(doc! {}).batch_size(2).timeout(ms(1000));
    if let Some(mode) = mode {
        find = find.timeout_mode(mode);
    }
    let cursor = find.await.expect("the find fits in the timeout");
    assert_timeout(drain(cursor).await);
    let finds = sent(&fake, "find");
    let get_mores = sent(&fake, "getMore");
    assert_eq!((finds.len(), get_mores.len()), (1, 1));
    assert!(max_time(&finds[0]).is_some());
    assert_eq!(get_mores[0].body.get_str("collection").ok(), Some(COLL));
    assert_eq!(max_time(&get_mores[0]), None, "no maxTimeMS on a getMore");
}

#[tokio::test]
async fn non_tailable_cursors__remaining_timeout_ms_applied_to_get_more_if_timeout_mode_is_unset() {
    remaining_timeout_applied_to_get_more(None).await;
}

#[tokio::test]
async fn non_tailable_cursors__remaining_timeout_ms_applied_to_get_more_if_timeout_mode_is_cursor_lifetime()
 {
    remaining_timeout_applied_to_get_more(Some(TimeoutMode::CursorLifetime)).await;
}

#[tokio::test]
async fn non_tailable_cursors__timeout_ms_applied_to_find_if_timeout_mode_is_iteration() {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=300").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", blocked(900));
    let outcome = coll
        .find(doc! {})
        .timeout_mode(TimeoutMode::Iteration)
        .await;
    assert_timeout(outcome);
    let finds = sent(&fake, "find");
    assert_eq!(finds.len(), 1);
    assert_eq!(max_time(&finds[0]), None, "no maxTimeMS in iteration mode");
}

#[tokio::test]
async fn non_tailable_cursors__timeout_ms_is_refreshed_for_get_more_if_timeout_mode_is_iteration_success()
 {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=1000").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", blocked_then(650, first_batch()));
    fake.push_action("getMore", blocked_then(650, last_batch()));
    let cursor = coll
        .find(doc! {})
        .batch_size(2)
        .timeout_mode(TimeoutMode::Iteration)
        .timeout(ms(1000))
        .await
        .expect("the find fits in its timeout");
    let docs = drain(cursor)
        .await
        .expect("the getMore gets a fresh timeout");
    assert_eq!(docs, items(0..4));
    let finds = sent(&fake, "find");
    let get_mores = sent(&fake, "getMore");
    assert_eq!((finds.len(), get_mores.len()), (1, 1));
    assert_eq!(max_time(&finds[0]), None);
    assert_eq!(max_time(&get_mores[0]), None);
}

#[tokio::test]
async fn non_tailable_cursors__timeout_ms_is_refreshed_for_get_more_if_timeout_mode_is_iteration_failure()
 {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=300").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", first_batch());
    fake.push_action("getMore", blocked_then(900, last_batch()));
    let cursor = coll
        .find(doc! {})
        .batch_size(2)
        .timeout_mode(TimeoutMode::Iteration)
        .await
        .expect("the find is quick");
    assert_timeout(drain(cursor).await);
    let finds = sent(&fake, "find");
    let get_mores = sent(&fake, "getMore");
    assert_eq!((finds.len(), get_mores.len()), (1, 1));
    assert_eq!(max_time(&finds[0]), None);
    assert_eq!(max_time(&get_mores[0]), None);
}

async fn aggregate_writing_refuses_iteration(stage: Document) {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=300").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    let err = coll
        .aggregate(vec![stage])
        .timeout(ms(100))
        .timeout_mode(TimeoutMode::Iteration)
        .await
        .expect_err("a client-side error");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(sent(&fake, "aggregate").is_empty(), "nothing is sent");
}

#[tokio::test]
async fn non_tailable_cursors__aggregate_with_out_errors_if_timeout_mode_is_iteration() {
    aggregate_writing_refuses_iteration(doc! { "$out": "aggregateOutputColl" }).await;
}

#[tokio::test]
async fn non_tailable_cursors__aggregate_with_merge_errors_if_timeout_mode_is_iteration() {
    aggregate_writing_refuses_iteration(doc! { "$merge": "aggregateOutputColl" }).await;
}

// ---------------------------------------------------------------------------------------
// cursors.json
// ---------------------------------------------------------------------------------------

async fn timeout_mode_without_timeout_ms(op: Op) {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let db = client.database(DB);
    let coll = db.collection::<Document>(COLL);
    let err = match op {
        Op::Find => coll
            .find(doc! {})
            .timeout_mode(TimeoutMode::CursorLifetime)
            .await
            .map(drop),
        Op::CollAggregate => coll
            .aggregate(vec![])
            .timeout_mode(TimeoutMode::CursorLifetime)
            .await
            .map(drop),
        Op::DbAggregate => db
            .aggregate(vec![])
            .timeout_mode(TimeoutMode::CursorLifetime)
            .await
            .map(drop),
        other => panic!("{other:?} opens no cursor"),
    }
    .expect_err("a client-side error");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(err.to_string().contains("timeoutMS"), "{err}");
    assert!(sent(&fake, op.command()).is_empty(), "nothing is sent");
}

per_op! { timeout_mode_without_timeout_ms:
    cursors__find_errors_if_timeout_mode_is_set_and_timeout_ms_is_not => Op::Find,
    cursors__collection_aggregate_errors_if_timeout_mode_is_set_and_timeout_ms_is_not => Op::CollAggregate,
    cursors__database_aggregate_errors_if_timeout_mode_is_set_and_timeout_ms_is_not => Op::DbAggregate,
}

// ---------------------------------------------------------------------------------------
// close-cursors.json
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn close_cursors__timeout_ms_is_refreshed_for_close() {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", first_batch());
    fake.push_action("getMore", blocked_then(900, last_batch()));
    let mut cursor = coll
        .find(doc! {})
        .batch_size(2)
        .timeout(ms(300))
        .await
        .expect("find");
    assert!(cursor.try_next().await.expect("buffered").is_some());
    assert!(cursor.try_next().await.expect("buffered").is_some());
    assert_timeout(cursor.try_next().await);
    // The cursor's deadline has passed; close gets a fresh timeoutMS.
    cursor.close().await.expect("killCursors succeeds");
    let kills = sent(&fake, "killCursors");
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].body.get_str("killCursors").ok(), Some(COLL));
    assert!(max_time(&kills[0]).is_some_and(|m| m > 0 && m <= 300));
}

#[tokio::test]
async fn close_cursors__timeout_ms_can_be_overridden_for_close() {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", first_batch());
    fake.push_action("killCursors", blocked(600));
    let cursor = coll
        .find(doc! {})
        .batch_size(2)
        .timeout(ms(300))
        .await
        .expect("find");
    // With the cursor's own 300 ms the kill would time out.
    cursor
        .close_with_timeout(ms(3000))
        .await
        .expect("killCursors succeeds within the overriding timeout");
    let kills = sent(&fake, "killCursors");
    assert_eq!(kills.len(), 1);
    assert!(max_time(&kills[0]).is_some_and(|m| m > 300 && m <= 3000));
}

// ---------------------------------------------------------------------------------------
// global-timeoutMS.json, override-*-timeoutMS.json
// ---------------------------------------------------------------------------------------

/// Where a test sets `timeoutMS`.
#[derive(Debug, Clone, Copy)]
enum Level {
    Client,
    Database,
    Collection,
    Operation,
}

/// `op` with `timeoutMS` = `timeout` set at `level` (the client's being 50 ms when set
/// lower down): "configured" cases block the command 900 ms under a 300 ms client
/// timeout (expecting a timeout error and one command with maxTimeMS), or 300 ms under a
/// 5 s timeout set lower down (expecting success and maxTimeMS); "set to 0" cases block
/// it 300 ms and expect success without maxTimeMS.
async fn timeout_at_level(level: Level, timeout: Duration, op: Op) {
    let fake = fake().await;
    let client_timeout = match level {
        Level::Client => timeout,
        _ => ms(50),
    };
    let client = client(
        &fake,
        &format!("&timeoutMS={}&minPoolSize=1", client_timeout.as_millis()),
    )
    .await;
    let mut db = client.database(DB);
    if let Level::Database = level {
        db = db.with_timeout(timeout);
    }
    let mut coll = db.collection::<Document>(COLL);
    if let Level::Collection = level {
        coll = coll.with_timeout(timeout);
    }
    let op_timeout = matches!(level, Level::Operation).then_some(timeout);
    let fails = matches!(level, Level::Client) && !timeout.is_zero();
    fake.push_actions(op.command(), [blocked(if fails { 900 } else { 300 })]);
    let outcome = op.run(&db, &coll, op_timeout).await;
    let commands = sent(&fake, op.command());
    assert_eq!(commands.len(), 1, "{:?}", commands);
    if timeout.is_zero() {
        outcome.expect("timeoutMS=0: no limit");
        assert_eq!(max_time(&commands[0]), None, "timeoutMS=0: no maxTimeMS");
    } else if fails {
        assert_timeout(outcome);
        assert!(max_time(&commands[0]).is_some_and(|m| m > 0 && m <= 300));
    } else {
        outcome.expect("the operation fits in its timeout");
        assert!(max_time(&commands[0]).is_some_and(|m| m > 300 && m <= 5000));
    }
}

async fn configured_on_client(op: Op) {
    timeout_at_level(Level::Client, ms(300), op).await;
}

async fn zero_on_client(op: Op) {
    timeout_at_level(Level::Client, Duration::ZERO, op).await;
}

async fn configured_on_database(op: Op) {
    timeout_at_level(Level::Database, ms(5000), op).await;
}

async fn zero_on_database(op: Op) {
    timeout_at_level(Level::Database, Duration::ZERO, op).await;
}

async fn configured_on_collection(op: Op) {
    timeout_at_level(Level::Collection, ms(5000), op).await;
}

async fn zero_on_collection(op: Op) {
    timeout_at_level(Level::Collection, Duration::ZERO, op).await;
}

async fn configured_for_operation(op: Op) {
    timeout_at_level(Level::Operation, ms(5000), op).await;
}

async fn zero_for_operation(op: Op) {
    timeout_at_level(Level::Operation, Duration::ZERO, op).await;
}

per_op! { configured_on_client:
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__find_on_collection => Op::Find,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__aggregate_on_collection => Op::CollAggregate,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__aggregate_on_database => Op::DbAggregate,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__run_command_on_database => Op::RunCommand,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__insert_one_on_collection => Op::InsertOne,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__insert_many_on_collection => Op::InsertMany,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__update_one_on_collection => Op::UpdateOne,
    global_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_client__delete_one_on_collection => Op::DeleteOne,
}

per_op! { zero_on_client:
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__find_on_collection => Op::Find,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__aggregate_on_collection => Op::CollAggregate,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__aggregate_on_database => Op::DbAggregate,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__run_command_on_database => Op::RunCommand,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__insert_one_on_collection => Op::InsertOne,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__insert_many_on_collection => Op::InsertMany,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__update_one_on_collection => Op::UpdateOne,
    global_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_client__delete_one_on_collection => Op::DeleteOne,
}

per_op! { configured_on_database:
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__find_on_collection => Op::Find,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__aggregate_on_collection => Op::CollAggregate,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__aggregate_on_database => Op::DbAggregate,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__run_command_on_database => Op::RunCommand,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__insert_one_on_collection => Op::InsertOne,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__insert_many_on_collection => Op::InsertMany,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__update_one_on_collection => Op::UpdateOne,
    override_database_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_database__delete_one_on_collection => Op::DeleteOne,
}

per_op! { zero_on_database:
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__find_on_collection => Op::Find,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__aggregate_on_collection => Op::CollAggregate,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__aggregate_on_database => Op::DbAggregate,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__run_command_on_database => Op::RunCommand,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__insert_one_on_collection => Op::InsertOne,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__insert_many_on_collection => Op::InsertMany,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__update_one_on_collection => Op::UpdateOne,
    override_database_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_database__delete_one_on_collection => Op::DeleteOne,
}

per_op! { configured_on_collection:
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__find_on_collection => Op::Find,
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__aggregate_on_collection => Op::CollAggregate,
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__insert_one_on_collection => Op::InsertOne,
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__insert_many_on_collection => Op::InsertMany,
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__update_one_on_collection => Op::UpdateOne,
    override_collection_timeout_ms__timeout_ms_can_be_configured_on_a_mongo_collection__delete_one_on_collection => Op::DeleteOne,
}

per_op! { zero_on_collection:
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__find_on_collection => Op::Find,
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__aggregate_on_collection => Op::CollAggregate,
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__insert_one_on_collection => Op::InsertOne,
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__insert_many_on_collection => Op::InsertMany,
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__update_one_on_collection => Op::UpdateOne,
    override_collection_timeout_ms__timeout_ms_can_be_set_to_0_on_a_mongo_collection__delete_one_on_collection => Op::DeleteOne,
}

per_op! { configured_for_operation:
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__find_on_collection => Op::Find,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__aggregate_on_collection => Op::CollAggregate,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__aggregate_on_database => Op::DbAggregate,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__run_command_on_database => Op::RunCommand,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__insert_one_on_collection => Op::InsertOne,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__insert_many_on_collection => Op::InsertMany,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__update_one_on_collection => Op::UpdateOne,
    override_operation_timeout_ms__timeout_ms_can_be_configured_for_an_operation__delete_one_on_collection => Op::DeleteOne,
}

per_op! { zero_for_operation:
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__find_on_collection => Op::Find,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__aggregate_on_collection => Op::CollAggregate,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__aggregate_on_database => Op::DbAggregate,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__run_command_on_database => Op::RunCommand,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__insert_one_on_collection => Op::InsertOne,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__insert_many_on_collection => Op::InsertMany,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__update_one_on_collection => Op::UpdateOne,
    override_operation_timeout_ms__timeout_ms_can_be_set_to_0_for_an_operation__delete_one_on_collection => Op::DeleteOne,
}

// ---------------------------------------------------------------------------------------
// retryability-timeoutMS.json
// ---------------------------------------------------------------------------------------

/// Error 7 (HostNotFound) with `RetryableWriteError`: retryable for reads and writes.
fn retryable_error() -> Action {
    Action::error(7, "HostNotFound", &["RetryableWriteError"])
}

/// Four attempts each answered after 200 ms with a retryable error, under a 500 ms
/// timeoutMS: the third attempt is cut by the deadline, a timeout error (without
/// timeoutMS the operation would be retried once and fail with error 7).
async fn timeout_applies_to_whole_operation(op: Op) {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=500&minPoolSize=1").await;
    let db = client.database(DB);
    let coll = db.collection::<Document>(COLL);
    fake.push_actions(
        op.command(),
        (0..4).map(|_| blocked_then(200, retryable_error())),
    );
    let started = Instant::now();
    assert_timeout(op.run(&db, &coll, None).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    let attempts = sent(&fake, op.command()).len();
    assert!((2..=3).contains(&attempts), "{attempts} attempts");
}

async fn retried_multiple_times(op: Op, timeout: Duration) {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=100&minPoolSize=1").await;
    let db = client.database(DB);
    let coll = db.collection::<Document>(COLL);
    fake.push_actions(op.command(), [retryable_error(), retryable_error()]);
    op.run(&db, &coll, Some(timeout))
        .await
        .expect("the third attempt succeeds");
    let commands = sent(&fake, op.command());
    assert_eq!(commands.len(), 3, "retried twice");
    for c in &commands {
        assert_eq!(max_time(c).is_some(), !timeout.is_zero(), "{:?}", c.body);
    }
    if matches!(
        op,
        Op::InsertOne | Op::InsertMany | Op::UpdateOne | Op::DeleteOne
    ) {
        let txn: Vec<_> = commands.iter().map(|c| c.body.get("txnNumber")).collect();
        assert!(txn[0].is_some() && txn.iter().all(|t| *t == txn[0]));
    }
}

async fn retried_multiple_times_non_zero(op: Op) {
    retried_multiple_times(op, ms(5000)).await;
}

async fn retried_multiple_times_zero(op: Op) {
    retried_multiple_times(op, Duration::ZERO).await;
}

per_op! { timeout_applies_to_whole_operation:
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__find_on_collection => Op::Find,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__aggregate_on_collection => Op::CollAggregate,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__aggregate_on_database => Op::DbAggregate,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__insert_one_on_collection => Op::InsertOne,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__insert_many_on_collection => Op::InsertMany,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__update_one_on_collection => Op::UpdateOne,
    retryability_timeout_ms__timeout_ms_applies_to_whole_operation_not_individual_attempts__delete_one_on_collection => Op::DeleteOne,
}

per_op! { retried_multiple_times_non_zero:
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__find_on_collection => Op::Find,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__aggregate_on_collection => Op::CollAggregate,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__aggregate_on_database => Op::DbAggregate,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__insert_one_on_collection => Op::InsertOne,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__insert_many_on_collection => Op::InsertMany,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__update_one_on_collection => Op::UpdateOne,
    retryability_timeout_ms__operation_is_retried_multiple_times_for_non_zero_timeout_ms__delete_one_on_collection => Op::DeleteOne,
}

per_op! { retried_multiple_times_zero:
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__find_on_collection => Op::Find,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__aggregate_on_collection => Op::CollAggregate,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__aggregate_on_database => Op::DbAggregate,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__insert_one_on_collection => Op::InsertOne,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__insert_many_on_collection => Op::InsertMany,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__update_one_on_collection => Op::UpdateOne,
    retryability_timeout_ms__operation_is_retried_multiple_times_if_timeout_ms_is_zero__delete_one_on_collection => Op::DeleteOne,
}

// ---------------------------------------------------------------------------------------
// legacy-timeouts.json
// ---------------------------------------------------------------------------------------

/// An insert on a client with `query` (no timeoutMS): no maxTimeMS.
async fn legacy_insert(query: &str) -> ReceivedCommand {
    let fake = fake().await;
    let client = client(&fake, query).await;
    let coll = client.database(DB).collection::<Document>(COLL);
    coll.insert_one(doc! { "x": 1 }).await.expect("insert");
    let inserts = sent(&fake, "insert");
    assert_eq!(inserts.len(), 1);
    assert_eq!(max_time(&inserts[0]), None, "{:?}", inserts[0].body);
    inserts[0].clone()
}

#[tokio::test]
async fn legacy_timeouts__socket_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field() {
    legacy_insert("&socketTimeoutMS=50000").await;
}

#[tokio::test]
async fn legacy_timeouts__wait_queue_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field()
{
    legacy_insert("&waitQueueTimeoutMS=50000").await;
}

#[tokio::test]
async fn legacy_timeouts__w_timeout_ms_is_not_used_to_derive_a_max_time_ms_command_field() {
    let insert = legacy_insert("&wTimeoutMS=50000").await;
    let wc = insert
        .body
        .get_document("writeConcern")
        .expect("a write concern");
    assert_eq!(wc.get("wtimeout").and_then(Bson::as_i64), Some(50000));
}

#[tokio::test]
async fn legacy_timeouts__max_time_ms_option_is_used_directly_as_the_max_time_ms_field_on_a_command()
 {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    let cursor = coll.find(doc! {}).max_time(ms(50000)).await.expect("find");
    drain(cursor).await.expect("empty");
    let finds = sent(&fake, "find");
    assert_eq!(finds.len(), 1);
    assert_eq!(max_time(&finds[0]), Some(50000));
}

/// Under timeoutMS the legacy options are ignored: no `wtimeout`, the operation's
/// `max_time` replaced by the computed maxTimeMS, `socketTimeoutMS` not bounding a
/// command that the timeout allows.
#[tokio::test]
async fn timeout_ms_overrides_the_legacy_options() {
    let fake = fake().await;
    let client = client(
        &fake,
        "&timeoutMS=5000&wTimeoutMS=50000&w=majority&socketTimeoutMS=200&waitQueueTimeoutMS=1",
    )
    .await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("insert", blocked(500));
    coll.insert_one(doc! { "x": 1 })
        .await
        .expect("socketTimeoutMS is ignored under timeoutMS");
    let insert = &sent(&fake, "insert")[0];
    assert!(max_time(insert).is_some_and(|m| m > 0 && m <= 5000));
    let wc = insert
        .body
        .get_document("writeConcern")
        .expect("w=majority");
    assert_eq!(wc.get_str("w").ok(), Some("majority"));
    assert!(!wc.contains_key("wtimeout"), "{wc:?}");

    let cursor = coll.find(doc! {}).max_time(ms(50000)).await.expect("find");
    drain(cursor).await.expect("empty");
    let find = &sent(&fake, "find")[0];
    assert!(max_time(find).is_some_and(|m| m > 0 && m <= 5000));
}

// ---------------------------------------------------------------------------------------
// waitQueueTimeout.json
// ---------------------------------------------------------------------------------------

/// A client whose pool events are recorded.
async fn client_with_events(
    fake: &FakeServer,
    query: &str,
) -> (Client, Arc<Mutex<Vec<PoolEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut options = ClientOptions::parse(&uri(fake, query)).expect("options");
    let seen = Arc::clone(&events);
    options.cmap_event_handler = Some(EventHandler::new(move |e: &CmapEvent| {
        seen.lock().unwrap().push(e.event.clone());
    }));
    let client = Client::with_options(options)
        .await
        .expect("client connects");
    (client, events)
}

fn pool_cleared(events: &Mutex<Vec<PoolEvent>>) -> bool {
    events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PoolEvent::PoolCleared { .. }))
}

#[tokio::test]
async fn wait_queue_timeout__wait_queue_timeout_error_does_not_clear_the_pool() {
    let fake = fake().await;
    let (client, events) = client_with_events(&fake, "&maxPoolSize=1").await;
    let db = client.database(DB);
    fake.push_action("ping", blocked(1500));
    let busy = {
        let db = db.clone();
        tokio::spawn(async move { db.run_command(doc! { "ping": 1 }).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent(&fake, "ping").is_empty() {
        assert!(Instant::now() < deadline, "the ping never arrived");
        tokio::time::sleep(ms(10)).await;
    }
    // The one connection is busy: the checkout waits, and gives up at timeoutMS.
    let err = assert_timeout(
        db.clone()
            .with_timeout(ms(300))
            .run_command(doc! { "hello": 1 })
            .await,
    );
    assert!(err.to_string().contains("checkout"), "{err}");
    busy.await.expect("task").expect("the ping succeeds");
    db.run_command(doc! { "hello": 1 })
        .await
        .expect("the pool is usable");
    assert_eq!(sent(&fake, "ping").len(), 1);
    assert_eq!(
        sent(&fake, "hello").len(),
        1,
        "the timed-out hello was not sent"
    );
    assert!(
        !pool_cleared(&events),
        "a checkout timeout does not clear the pool"
    );
}

// ---------------------------------------------------------------------------------------
// command-execution.json
// ---------------------------------------------------------------------------------------

/// A server whose every hello (handshakes and monitoring checks) takes `delay`: the
/// monitor measures round trips of at least `delay`.
async fn slow_hello_server(delay: Duration) -> FakeServer {
    let config = ServerConfig::replica_set("rs0").with_handler(move |cmd: &ReceivedCommand| {
        match cmd.name.as_str() {
            "hello" | "isMaster" | "ismaster" => Action::delay(delay, Action::Default),
            _ => Action::Default,
        }
    });
    FakeServer::start(config).await.expect("fake server starts")
}

async fn rtt_client(fake: &FakeServer, timeout_ms: u64, heartbeat_ms: u64) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=10000&serverMonitoringMode=poll\
         &heartbeatFrequencyMS={heartbeat_ms}&timeoutMS={timeout_ms}&minPoolSize=1&w=1",
        fake.host_port()
    );
    Client::connect(&uri).await.expect("client connects")
}

#[tokio::test]
async fn command_execution__max_time_ms_value_in_the_command_is_less_than_timeout_ms() {
    let fake = slow_hello_server(ms(200)).await;
    let client = rtt_client(&fake, 1000, 500).await;
    let coll = client.database(DB).collection::<Document>("timeoutColl");
    coll.clone()
        .with_timeout(ms(100_000))
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("first insert");
    // Enough checks for a minimum round trip (two samples at least).
    tokio::time::sleep(ms(2000)).await;
    coll.insert_one(doc! { "_id": 2 })
        .await
        .expect("second insert");
    let inserts = sent(&fake, "insert");
    assert_eq!(inserts.len(), 2);
    let second = max_time(&inserts[1]).expect("maxTimeMS");
    assert!(
        second > 0 && second <= 800,
        "maxTimeMS {second} leaves the 200 ms round trip out of 1000 ms"
    );
}

#[tokio::test]
async fn command_execution__command_is_not_sent_if_rtt_is_greater_than_timeout_ms() {
    let fake = slow_hello_server(ms(300)).await;
    let client = rtt_client(&fake, 100, 500).await;
    let coll = client.database(DB).collection::<Document>("timeoutColl");
    coll.clone()
        .with_timeout(ms(100_000))
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("first insert");
    tokio::time::sleep(ms(2500)).await;
    for id in 2..5 {
        assert_timeout(coll.insert_one(doc! { "_id": id }).await);
    }
    assert_eq!(
        sent(&fake, "insert").len(),
        1,
        "only the first insert was sent"
    );
}

#[tokio::test]
async fn command_execution__short_circuit_is_not_enabled_with_only_1_rtt_measurement() {
    let fake = slow_hello_server(ms(300)).await;
    let client = rtt_client(&fake, 250, 100_000).await;
    let coll = client.database(DB).collection::<Document>("timeoutColl");
    coll.clone()
        .with_timeout(ms(100_000))
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("first insert");
    coll.insert_one(doc! { "_id": 2 })
        .await
        .expect("one round-trip sample is no minimum: the insert is sent");
    let inserts = sent(&fake, "insert");
    assert_eq!(inserts.len(), 2);
    assert!(max_time(&inserts[1]).is_some_and(|m| m > 0 && m <= 250));
}

// ---------------------------------------------------------------------------------------
// error-transformations.json
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn error_transformations__basic_max_time_ms_expired_error_is_transformed() {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=2000").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("insert", Action::error(50, "MaxTimeMSExpired", &[]));
    let err = assert_timeout(coll.insert_one(doc! { "_id": 1 }).await);
    assert_eq!(err.code(), Some(50), "the server's error stays reachable");
    assert_eq!(sent(&fake, "insert").len(), 1, "not retried");
}

#[tokio::test]
async fn error_transformations__write_concern_error_max_time_ms_expired_is_transformed() {
    let fake = fake().await;
    let client = client(&fake, "&timeoutMS=2000").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action(
        "insert",
        Action::reply(doc! {
            "ok": 1.0,
            "n": 1,
            "writeConcernError": { "code": 50, "errmsg": "maxTimeMS expired" },
        }),
    );
    let err = assert_timeout(coll.insert_one(doc! { "_id": 1 }).await);
    assert_eq!(err.code(), Some(50));
}

// ---------------------------------------------------------------------------------------
// Beyond the spec files
// ---------------------------------------------------------------------------------------

/// A command cut mid-flight by timeoutMS: its connection is closed (it cannot be reused)
/// but the pool is not cleared (SDAM: a timeout after the handshake changes nothing),
/// and the next operation runs on another connection of the same generation.
#[tokio::test]
async fn a_command_cut_by_timeout_ms_closes_its_connection_and_does_not_clear_the_pool() {
    let fake = fake().await;
    let (client, events) = client_with_events(&fake, "&timeoutMS=300").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("insert", blocked(900));
    assert_timeout(coll.insert_one(doc! { "x": 1 }).await);
    coll.insert_one(doc! { "x": 2 })
        .await
        .expect("the next insert succeeds");
    let inserts = sent(&fake, "insert");
    assert_eq!(inserts.len(), 2);
    assert_ne!(
        inserts[0].connection_id, inserts[1].connection_id,
        "the cut connection is not reused"
    );
    assert!(!pool_cleared(&events));
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, PoolEvent::ConnectionClosed { .. })),
        "the cut connection is closed"
    );
}

/// Cursor lifetime: documents already buffered are returned after the deadline; only
/// the getMore fails (spec, "Non-tailable Cursors").
#[tokio::test]
async fn an_expired_cursor_lifetime_still_returns_its_buffered_documents() {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action("find", first_batch());
    fake.push_action("getMore", last_batch());
    let mut cursor = coll
        .find(doc! {})
        .batch_size(2)
        .timeout(ms(300))
        .await
        .expect("find");
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        cursor.try_next().await.expect("buffered"),
        Some(items(0..1).remove(0))
    );
    assert_eq!(
        cursor.try_next().await.expect("buffered"),
        Some(items(1..2).remove(0))
    );
    assert_timeout(cursor.try_next().await);
    assert!(sent(&fake, "getMore").is_empty(), "the getMore is not sent");
}

/// Server selection waits `min(serverSelectionTimeoutMS, time left)` and fails with the
/// operation's timeout error, the selection error as its cause.
#[tokio::test]
async fn server_selection_is_bounded_by_timeout_ms() {
    let fake = fake().await;
    let client = Client::connect(&format!(
        "mongodb://{}/?serverSelectionTimeoutMS=30000&heartbeatFrequencyMS=500",
        fake.host_port()
    ))
    .await
    .expect("client connects");
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.shutdown().await;
    // The monitor notices the server gone; selection then finds none.
    tokio::time::sleep(ms(1500)).await;
    let started = Instant::now();
    let err = assert_timeout(
        coll.clone()
            .with_timeout(ms(500))
            .insert_one(doc! { "x": 1 })
            .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the 30 s selection timeout"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cut step's error is the source: {err}"
    );
}

/// Iteration mode: the timeout applies to a whole `next` call, not to each getMore of it
/// (spec, "Cursors"): an empty batch and a second getMore, 650 ms each, exceed one
/// 1000 ms call.
#[tokio::test]
async fn iteration_mode_bounds_a_whole_call_not_each_get_more() {
    let fake = fake().await;
    let client = client(&fake, "").await;
    let coll = client.database(DB).collection::<Document>(COLL);
    fake.push_action(
        "find",
        Action::cursor(42, NS, BatchKind::First, vec![], None, None),
    );
    fake.push_actions(
        "getMore",
        [
            blocked_then(
                650,
                Action::cursor(42, NS, BatchKind::Next, vec![], None, None),
            ),
            blocked_then(650, last_batch()),
        ],
    );
    let mut cursor = coll
        .find(doc! {})
        .timeout(ms(1000))
        .timeout_mode(TimeoutMode::Iteration)
        .await
        .expect("find");
    assert_timeout(cursor.try_next().await);
    assert_eq!(sent(&fake, "getMore").len(), 2);
}
