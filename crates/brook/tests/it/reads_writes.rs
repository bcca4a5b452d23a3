//! Read preferences, retryable reads and retryable writes, through real sockets on the
//! testkit: which member a read goes to and what `$readPreference` it carries; which
//! errors make an operation run once more, on which server, with which `txnNumber`.

use std::collections::BTreeSet;
use std::time::Duration;

use brook::{Client, ReadPreference, ReadPreferenceMode, TagSet};
use brook_testkit::{
    Action, FakeServer, Fault, ReceivedCommand, ReplicaSet, ReplicaSetConfig, ServerConfig,
};
use bson::{Bson, Document, doc};

use crate::change_stream::wait_until;

async fn set_with_tags(tags: Vec<Document>) -> ReplicaSet {
    let config = ReplicaSetConfig::new("rs0")
        .with_max_await(Duration::from_millis(200))
        .with_tags(tags);
    ReplicaSet::start(config)
        .await
        .expect("the replica set starts")
}

async fn set_client(rs: &ReplicaSet, query: &str) -> Client {
    let heartbeat = if query.contains("heartbeatFrequencyMS") {
        ""
    } else {
        "&heartbeatFrequencyMS=500"
    };
    let uri = format!(
        "{}&serverSelectionTimeoutMS=5000{heartbeat}{query}",
        rs.uri()
    );
    Client::connect(&uri).await.expect("the client connects")
}

/// The `find`s each member got, by member index.
fn finds(rs: &ReplicaSet) -> Vec<Vec<ReceivedCommand>> {
    rs.members()
        .iter()
        .map(|m| m.commands_named("find"))
        .collect()
}

/// The one member that got `name` commands, and those commands.
fn only_member_with(rs: &ReplicaSet, name: &str) -> (usize, Vec<ReceivedCommand>) {
    let got: Vec<(usize, Vec<ReceivedCommand>)> = rs
        .members()
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.commands_named(name)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    assert_eq!(got.len(), 1, "exactly one member got {name}: {got:?}");
    got.into_iter().next().expect("one member")
}

fn tag(pairs: &[(&str, &str)]) -> TagSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Waits until the client's monitors know every member (so that selection sees them all).
async fn wait_for_secondaries(client: &Client, rs: &ReplicaSet) {
    let coll = client.database("app").collection::<Document>("items");
    let preference = ReadPreference::new(ReadPreferenceMode::Secondary);
    // A secondary read succeeds once one secondary is known; give the others a moment.
    coll.clone()
        .with_read_preference(preference)
        .find(doc! {})
        .await
        .expect("a secondary is found");
    for m in rs.members() {
        m.clear_commands();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[tokio::test]
async fn reads_follow_the_read_preference() {
    let rs = set_with_tags(vec![
        doc! { "dc": "ny" },
        doc! { "dc": "sf" },
        doc! { "dc": "ny", "rack": "2" },
    ])
    .await;
    let client = set_client(&rs, "").await;
    wait_for_secondaries(&client, &rs).await;
    let coll = client.database("app").collection::<Document>("items");

    // Primary (the default): member 0, no $readPreference (the server's default).
    coll.find(doc! {}).await.expect("find");
    let (member, sent) = only_member_with(&rs, "find");
    assert_eq!(member, 0);
    assert!(
        sent[0].body.get("$readPreference").is_none(),
        "{:?}",
        sent[0]
    );
    rs.members().iter().for_each(|m| m.clear_commands());

    // Secondary with tag sets: the first set that matches a secondary picks it.
    let preference = ReadPreference::new(ReadPreferenceMode::Secondary)
        .with_tag_sets(vec![tag(&[("dc", "tokyo")]), tag(&[("dc", "ny")])]);
    for _ in 0..5 {
        coll.find(doc! {})
            .read_preference(preference.clone())
            .await
            .expect("find on a tagged secondary");
    }
    let (member, sent) = only_member_with(&rs, "find");
    assert_eq!(member, 2, "the only secondary tagged dc:ny");
    assert_eq!(
        sent[0].body.get_document("$readPreference").expect("sent"),
        &doc! { "mode": "secondary", "tags": [{ "dc": "tokyo" }, { "dc": "ny" }] }
    );
    rs.members().iter().for_each(|m| m.clear_commands());

    // A tag set no member has: nothing is suitable, and the error says what was seen.
    let impossible = ReadPreference::new(ReadPreferenceMode::Secondary)
        .with_tag_sets(vec![tag(&[("dc", "mars")])]);
    let quick = Client::connect(&format!(
        "{}&serverSelectionTimeoutMS=300&heartbeatFrequencyMS=500",
        rs.uri()
    ))
    .await
    .expect("connects");
    let err = quick
        .database("app")
        .collection::<Document>("items")
        .find(doc! {})
        .read_preference(impossible)
        .await
        .expect_err("no member is tagged dc:mars");
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("mars"), "{err}");
    assert!(err.to_string().contains("RsSecondary"), "{err}");

    // secondaryPreferred from the URI is every handle's default.
    let preferring = set_client(&rs, "&readPreference=secondaryPreferred").await;
    wait_for_secondaries(&preferring, &rs).await;
    let c = preferring.database("app").collection::<Document>("items");
    assert_eq!(
        c.read_preference().mode,
        ReadPreferenceMode::SecondaryPreferred
    );
    for _ in 0..10 {
        c.find(doc! {}).await.expect("find");
    }
    let by_member: Vec<usize> = finds(&rs).iter().map(Vec::len).collect();
    assert_eq!(by_member[0], 0, "never the primary: {by_member:?}");
    assert_eq!(by_member[1] + by_member[2], 10, "{by_member:?}");
    rs.shutdown().await;
}

#[tokio::test]
async fn nearest_spreads_reads_over_the_latency_window() {
    let rs = set_with_tags(Vec::new()).await;
    // A window wide enough for every loopback member.
    let client = set_client(&rs, "&readPreference=nearest&localThresholdMS=1000").await;
    wait_for_secondaries(&client, &rs).await;
    let coll = client.database("app").collection::<Document>("items");
    for _ in 0..60 {
        coll.find(doc! {}).await.expect("find");
    }
    let by_member: Vec<usize> = finds(&rs).iter().map(Vec::len).collect();
    assert_eq!(by_member.iter().sum::<usize>(), 60);
    assert!(
        by_member.iter().all(|&n| n > 0),
        "every member of the window is chosen some of the time: {by_member:?}"
    );
    for sent in finds(&rs).iter().flatten() {
        assert_eq!(
            sent.body.get_document("$readPreference").expect("sent"),
            &doc! { "mode": "nearest" }
        );
    }
    rs.shutdown().await;
}

#[tokio::test]
async fn a_direct_connection_to_a_secondary_reads_with_primary_preferred() {
    let rs = set_with_tags(Vec::new()).await;
    let host = rs.hosts()[1].clone();
    let client = Client::connect(&format!(
        "mongodb://{host}/?directConnection=true&serverSelectionTimeoutMS=5000"
    ))
    .await
    .expect("connects to the secondary");
    let coll = client.database("app").collection::<Document>("items");
    coll.find(doc! {})
        .await
        .expect("a secondary serves the find");
    let (member, sent) = only_member_with(&rs, "find");
    assert_eq!(member, 1);
    assert_eq!(
        sent[0].body.get_document("$readPreference").expect("sent"),
        &doc! { "mode": "primaryPreferred" }
    );
    rs.shutdown().await;
}

#[tokio::test]
async fn a_change_stream_reads_from_a_secondary_when_asked() {
    let rs = set_with_tags(vec![doc! {}, doc! { "use": "cdc" }, doc! {}]).await;
    let client = set_client(&rs, "").await;
    wait_for_secondaries(&client, &rs).await;
    let coll = client.database("app").collection::<Document>("items");
    let preference = ReadPreference::new(ReadPreferenceMode::Secondary)
        .with_tag_sets(vec![tag(&[("use", "cdc")])]);
    let mut stream = coll
        .watch()
        .read_preference(preference)
        .await
        .expect("opens on the tagged secondary");
    assert_eq!(
        stream.server_address().map(ToString::to_string),
        Some(rs.hosts()[1].clone())
    );
    rs.insert_event("app.items", doc! { "_id": 1, "n": 1 });
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(
        event
            .full_document
            .as_ref()
            .and_then(|d| d.get_i32("n").ok()),
        Some(1)
    );
    let (member, sent) = only_member_with(&rs, "aggregate");
    assert_eq!(member, 1);
    assert_eq!(
        sent[0].body.get_document("$readPreference").expect("sent"),
        &doc! { "mode": "secondary", "tags": [{ "use": "cdc" }] }
    );
    stream.close().await.expect("closed");
    rs.shutdown().await;
}

#[tokio::test]
async fn an_invalid_read_preference_is_refused_at_connect() {
    let rs = set_with_tags(Vec::new()).await;
    // Parsing refuses tags with mode primary in the URI; options built by hand are
    // checked when connecting.
    let mut options = brook::ClientOptions::parse(&rs.uri()).expect("parses");
    options.read_preference_tags = Some(vec![tag(&[("dc", "ny")])]);
    let err = Client::with_options(options).await.expect_err("refused");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(err.to_string().contains("tag sets"), "{err}");
    rs.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Retryable writes and reads on one replica-set-shaped server
// ---------------------------------------------------------------------------------------

async fn server(config: ServerConfig) -> FakeServer {
    FakeServer::start(config).await.expect("fake server starts")
}

async fn client_for(server: &FakeServer, query: &str) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500{query}",
        server.host_port()
    );
    Client::connect(&uri).await.expect("client connects")
}

fn txn_number(c: &ReceivedCommand) -> Option<i64> {
    match c.body.get("txnNumber") {
        Some(Bson::Int64(n)) => Some(*n),
        None => None,
        Some(other) => panic!("txnNumber must be an int64: {other:?}"),
    }
}

fn lsid(c: &ReceivedCommand) -> Document {
    c.body.get_document("lsid").expect("an lsid").clone()
}

#[tokio::test]
async fn a_write_is_retried_once_with_the_same_txn_number() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");

    // A network error: retried on a new connection, same lsid and txnNumber.
    fake.push_actions("insert", [Action::fault(Fault::CloseWithoutReply)]);
    coll.insert_one(doc! { "a": 1 })
        .await
        .expect("the retry succeeds");
    let sent = fake.commands_named("insert");
    assert_eq!(sent.len(), 2);
    assert!(txn_number(&sent[0]).is_some(), "{:?}", sent[0].body);
    assert_eq!(txn_number(&sent[0]), txn_number(&sent[1]));
    assert_eq!(lsid(&sent[0]), lsid(&sent[1]));
    assert_ne!(sent[0].connection_id, sent[1].connection_id);

    // The next write in a session gets the next txnNumber (sessions are pooled LIFO, so
    // the same session comes back).
    fake.clear_commands();
    coll.update_one(doc! {}, doc! { "$set": { "a": 2 } })
        .await
        .expect("update");
    coll.delete_one(doc! {}).await.expect("delete");
    let update = fake.commands_named("update");
    let delete = fake.commands_named("delete");
    assert_eq!((update.len(), delete.len()), (1, 1));
    let (u, d) = (txn_number(&update[0]), txn_number(&delete[0]));
    assert!(u.is_some() && d.is_some(), "{u:?} {d:?}");
    if lsid(&update[0]) == lsid(&delete[0]) {
        assert_eq!(d, u.map(|n| n + 1));
    }

    // A labelled server error (a stepping-down primary): retried.
    fake.clear_commands();
    fake.push_actions(
        "update",
        [Action::error(
            10107,
            "NotWritablePrimary",
            &["RetryableWriteError"],
        )],
    );
    coll.update_one(doc! {}, doc! { "$set": { "a": 3 } })
        .await
        .expect("the retry succeeds");
    let sent = fake.commands_named("update");
    assert_eq!(sent.len(), 2);
    assert_eq!(txn_number(&sent[0]), txn_number(&sent[1]));

    // Not retryable: an error without the label (wire version 21), a write error.
    fake.clear_commands();
    fake.push_actions("insert", [Action::error(2, "BadValue", &[])]);
    let err = coll.insert_one(doc! { "a": 4 }).await.expect_err("fails");
    assert_eq!(err.code(), Some(2));
    assert_eq!(fake.commands_named("insert").len(), 1);

    // Twice retryable: one retry only, and its error is the one returned.
    fake.clear_commands();
    fake.push_actions(
        "insert",
        [
            Action::fault(Fault::CloseWithoutReply),
            Action::error(91, "ShutdownInProgress", &["RetryableWriteError"]),
        ],
    );
    let err = coll.insert_one(doc! { "a": 5 }).await.expect_err("fails");
    assert_eq!(err.code(), Some(91), "{err}");
    assert_eq!(fake.commands_named("insert").len(), 2);

    // A retry that performed no write reports the first error.
    fake.clear_commands();
    fake.push_actions(
        "insert",
        [
            Action::error(189, "PrimarySteppedDown", &["RetryableWriteError"]),
            Action::error(
                91,
                "ShutdownInProgress",
                &["RetryableWriteError", "NoWritesPerformed"],
            ),
        ],
    );
    let err = coll.insert_one(doc! { "a": 6 }).await.expect_err("fails");
    assert_eq!(err.code(), Some(189), "the first error: {err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn writes_are_not_retried_when_they_cannot_be() {
    // retryWrites=false: no txnNumber, no retry.
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "&retryWrites=false").await;
    let coll = client.database("app").collection::<Document>("items");
    fake.push_actions("insert", [Action::fault(Fault::CloseWithoutReply)]);
    let err = coll.insert_one(doc! { "a": 1 }).await.expect_err("fails");
    assert!(err.is_network(), "{err}");
    let sent = fake.commands_named("insert");
    assert_eq!(sent.len(), 1);
    assert_eq!(txn_number(&sent[0]), None);
    fake.shutdown().await;

    // A standalone takes no txnNumber: the write is sent once, as it is.
    let fake = server(ServerConfig::standalone()).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    fake.push_actions("insert", [Action::fault(Fault::CloseWithoutReply)]);
    let err = coll.insert_one(doc! { "a": 1 }).await.expect_err("fails");
    assert!(err.is_network(), "{err}");
    let sent = fake.commands_named("insert");
    assert_eq!(sent.len(), 1);
    assert_eq!(txn_number(&sent[0]), None);
    fake.shutdown().await;

    // w=0: unacknowledged writes are never retried.
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "&w=0").await;
    let coll = client.database("app").collection::<Document>("items");
    coll.insert_one(doc! { "a": 1 }).await.ok();
    wait_until("the insert arrives", || {
        !fake.commands_named("insert").is_empty()
    })
    .await;
    assert_eq!(txn_number(&fake.commands_named("insert")[0]), None);
    fake.shutdown().await;
}

#[tokio::test]
async fn reads_are_retried_once() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    fake.push_actions("find", [Action::fault(Fault::CloseWithoutReply)]);
    coll.find(doc! {}).await.expect("the retry succeeds");
    assert_eq!(fake.commands_named("find").len(), 2);

    fake.clear_commands();
    fake.push_actions(
        "aggregate",
        [Action::error(11602, "InterruptedDueToReplStateChange", &[])],
    );
    coll.aggregate(vec![doc! { "$match": {} }])
        .await
        .expect("the retry succeeds");
    assert_eq!(fake.commands_named("aggregate").len(), 2);

    // $out writes: not a retryable read.
    fake.clear_commands();
    fake.push_actions(
        "aggregate",
        [Action::error(11602, "InterruptedDueToReplStateChange", &[])],
    );
    let err = coll
        .aggregate(vec![doc! { "$out": "elsewhere" }])
        .await
        .expect_err("not retried");
    assert_eq!(err.code(), Some(11602));
    assert_eq!(fake.commands_named("aggregate").len(), 1);

    // Not a retryable code.
    fake.clear_commands();
    fake.push_actions("find", [Action::error(2, "BadValue", &[])]);
    coll.find(doc! {}).await.expect_err("fails");
    assert_eq!(fake.commands_named("find").len(), 1);

    // runCommand is never retried.
    fake.clear_commands();
    fake.push_actions("ping", [Action::fault(Fault::CloseWithoutReply)]);
    client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .expect_err("fails");
    assert_eq!(fake.commands_named("ping").len(), 1);
    fake.shutdown().await;

    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "&retryReads=false").await;
    let coll = client.database("app").collection::<Document>("items");
    fake.push_actions("find", [Action::fault(Fault::CloseWithoutReply)]);
    let err = coll.find(doc! {}).await.expect_err("fails");
    assert!(err.is_network(), "{err}");
    assert_eq!(fake.commands_named("find").len(), 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn a_write_after_an_unnoticed_election_is_retried_on_the_new_primary() {
    let rs = set_with_tags(Vec::new()).await;
    // Polling rarely: the client does not notice the election before it writes.
    let client = set_client(&rs, "&serverMonitoringMode=poll&heartbeatFrequencyMS=60000").await;
    let coll = client.database("app").collection::<Document>("items");
    coll.insert_one(doc! { "n": 0 }).await.expect("first write");
    rs.step_down().await;
    rs.elect(1).await.expect("elect");
    coll.insert_one(doc! { "n": 1 })
        .await
        .expect("retried on member 1");
    let old: Vec<ReceivedCommand> = rs.member(0).commands_named("insert");
    let new: Vec<ReceivedCommand> = rs.member(1).commands_named("insert");
    assert_eq!(old.len(), 2, "the first write and the failed attempt");
    assert_eq!(new.len(), 1, "the retry");
    let attempts = [&old[1], &new[0]];
    assert_eq!(txn_number(attempts[0]), txn_number(attempts[1]));
    assert!(txn_number(attempts[0]).is_some());
    assert_eq!(lsid(attempts[0]), lsid(attempts[1]));
    let logged: BTreeSet<i32> = rs
        .events()
        .iter()
        .filter_map(|e| e.get_document("fullDocument").ok()?.get_i32("n").ok())
        .collect();
    assert_eq!(logged, BTreeSet::from([0, 1]), "written once each");
    rs.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Through mongos
// ---------------------------------------------------------------------------------------

async fn mongoses() -> (FakeServer, FakeServer) {
    let config = || {
        let mut config =
            ServerConfig::default().with_topology(brook_testkit::shapes::Topology::Mongos);
        config.max_await = Duration::from_millis(100);
        config
    };
    (server(config()).await, server(config()).await)
}

fn mongos_uri(a: &FakeServer, b: &FakeServer, query: &str) -> String {
    format!(
        "mongodb://{},{}/?serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500\
         &localThresholdMS=1000{query}",
        a.host_port(),
        b.host_port()
    )
}

#[tokio::test]
async fn operations_spread_over_the_mongoses_of_the_window() {
    let (a, b) = mongoses().await;
    let client = Client::connect(&mongos_uri(&a, &b, ""))
        .await
        .expect("connects");
    // Both mongoses known before counting.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let coll = client.database("app").collection::<Document>("items");
    for i in 0..40 {
        coll.find(doc! {}).await.expect("find");
        coll.insert_one(doc! { "i": i }).await.expect("insert");
    }
    for (name, fake) in [("a", &a), ("b", &b)] {
        let finds = fake.commands_named("find").len();
        let inserts = fake.commands_named("insert");
        assert!(finds > 0, "mongos {name} served no find");
        assert!(!inserts.is_empty(), "mongos {name} served no insert");
        // A mongos takes retryable writes.
        assert!(inserts.iter().all(|c| txn_number(c).is_some()));
    }
    assert_eq!(
        a.commands_named("find").len() + b.commands_named("find").len(),
        40
    );
}

#[tokio::test]
async fn a_retry_through_mongos_goes_to_another_mongos() {
    let (a, b) = mongoses().await;
    let client = Client::connect(&mongos_uri(&a, &b, ""))
        .await
        .expect("connects");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let coll = client.database("app").collection::<Document>("items");
    for fake in [&a, &b] {
        fake.push_actions("insert", [Action::fault(Fault::CloseWithoutReply)]);
        fake.push_actions("find", [Action::fault(Fault::CloseWithoutReply)]);
    }
    let err = coll
        .insert_one(doc! { "x": 1 })
        .await
        .expect_err("both fail");
    assert!(err.is_network(), "{err}");
    // The failed mongos is deprioritized: one attempt on each.
    assert_eq!(a.commands_named("insert").len(), 1);
    assert_eq!(b.commands_named("insert").len(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let err = coll.find(doc! {}).await.expect_err("both fail");
    assert!(err.is_network(), "{err}");
    assert_eq!(a.commands_named("find").len(), 1);
    assert_eq!(b.commands_named("find").len(), 1);
}

#[tokio::test]
async fn a_change_stream_moves_to_another_mongos_when_its_own_dies() {
    let (a, b) = mongoses().await;
    let client = Client::connect(&mongos_uri(&a, &b, ""))
        .await
        .expect("connects");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.expect("opens");
    let first = stream.server_address().cloned().expect("on a mongos");
    let (dead, alive) = if first.to_string() == a.host_port() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(stream.next_if_any().await.expect("a getMore").is_none());
    dead.shutdown().await;
    // The getMore fails on the network, the stream resumes on the other mongos.
    let mut moved = false;
    for _ in 0..20 {
        let _ = stream.next_if_any().await;
        if stream.server_address().map(ToString::to_string) == Some(alive.host_port()) {
            moved = true;
            break;
        }
    }
    assert!(moved, "the stream is on {:?}", stream.server_address());
    assert!(stream.is_alive());
    assert_eq!(stream.resume_count(), 1);
    assert_eq!(alive.commands_named("aggregate").len(), 1);
}

#[tokio::test]
async fn max_staleness_is_checked_and_sent() {
    let rs = set_with_tags(Vec::new()).await;
    // Below the smallest allowed (90 s): a clear error at selection, not a timeout.
    let client = set_client(&rs, "&readPreference=secondary&maxStalenessSeconds=91").await;
    let coll = client.database("app").collection::<Document>("items");
    let too_small = ReadPreference::new(ReadPreferenceMode::Secondary)
        .with_max_staleness(Duration::from_secs(30));
    let err = coll
        .find(doc! {})
        .read_preference(too_small)
        .await
        .expect_err("refused");
    assert!(!err.is_timeout(), "{err}");
    assert!(err.to_string().contains("maxStalenessSeconds"), "{err}");
    // Allowed: the members are fresh (their lastWrite is the set's clock), so a secondary
    // serves it, and the bound is sent.
    coll.find(doc! {}).await.expect("a fresh secondary");
    let (member, sent) = only_member_with(&rs, "find");
    assert_ne!(member, 0);
    assert_eq!(
        sent[0].body.get_document("$readPreference").expect("sent"),
        &doc! { "mode": "secondary", "maxStalenessSeconds": 91_i64 }
    );
    rs.shutdown().await;
}
