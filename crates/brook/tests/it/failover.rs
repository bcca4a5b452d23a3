//! Change streams across failovers on the testkit's replica set: the stream follows the
//! primary (the topology's monitors find it), and every event arrives once, in order.

use std::time::Duration;

use brook::{ChangeStreamEvent, Client};
use brook_testkit::{ReplicaSet, ReplicaSetConfig};
use bson::{Document, doc};

const NS: &str = "app.items";

/// How a failover happens.
#[derive(Debug, Clone, Copy)]
enum Failover {
    StepDown,
    Kill,
    Blackhole,
}

async fn set() -> ReplicaSet {
    ReplicaSet::start(ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(200)))
        .await
        .expect("the replica set starts")
}

async fn client(rs: &ReplicaSet) -> Client {
    let uri = format!(
        "{}&serverSelectionTimeoutMS=10000&connectTimeoutMS=500&heartbeatFrequencyMS=500",
        rs.uri()
    );
    Client::connect(&uri)
        .await
        .expect("the client finds the primary")
}

fn n_of(e: &ChangeStreamEvent<Document>) -> i32 {
    e.full_document
        .as_ref()
        .and_then(|d| d.get_i32("n").ok())
        .expect("fullDocument.n")
}

/// Fails the primary over to the next member, the way `how` says. A killed primary is
/// restarted (as a secondary) at once; a blackholed one stays silent until it is about
/// to be elected again, so that the stream has to notice it through the monitor (a
/// failed heartbeat interrupts the getMore waiting on it).
async fn fail_over(rs: &ReplicaSet, how: Failover) {
    let old = rs.primary().expect("a primary");
    let next = (old + 1) % rs.member_count();
    rs.unblackhole(next).await.expect("unblackhole");
    match how {
        Failover::StepDown => rs.step_down().await,
        Failover::Kill => rs.kill(old).await.expect("kill"),
        Failover::Blackhole => rs.blackhole(old).await.expect("blackhole"),
    }
    rs.elect(next).await.expect("elect");
    if let Failover::Kill = how {
        rs.restart(old).await.expect("restart");
    }
}

/// How long a failover may take to cross. Below [`brook::GET_MORE_GRACE`] (10 s) on
/// purpose: a getMore stuck on a blackholed primary must be interrupted by the failed
/// heartbeat (heartbeatFrequencyMS and connectTimeoutMS are 500 ms here), not wait out
/// its own bound.
const CROSSING: Duration = Duration::from_secs(8);

/// Reads the next event's `n`, within [`CROSSING`].
async fn next_n(stream: &mut brook::ChangeStream<ChangeStreamEvent<Document>>, what: &str) -> i32 {
    let event = tokio::time::timeout(CROSSING, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no event within {CROSSING:?}"))
        .expect("the stream goes on")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    n_of(&event)
}

/// `total` events, a failover every `every` events, its style taken in turn from
/// `styles`, and one more event after the last failover: the stream must yield exactly
/// 0..=total, in order, and end on the last primary.
async fn events_survive(styles: &[Failover], total: i32, every: i32) {
    let rs = set().await;
    let client = client(&rs).await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(100))
        .await
        .unwrap();
    let mut seen = Vec::with_capacity(usize::try_from(total).unwrap() + 1);
    let mut failovers = 0u64;
    for n in 0..=total {
        rs.insert_event(NS, doc! { "_id": n, "n": n });
        if n % every == every - 1 || n == total {
            while seen.len() <= usize::try_from(n).unwrap() {
                let what = format!("after {} events and {failovers} failovers", seen.len());
                seen.push(next_n(&mut stream, &what).await);
            }
            if n < total {
                let how = styles[usize::try_from(failovers).unwrap() % styles.len()];
                fail_over(&rs, how).await;
                failovers += 1;
            }
        }
    }
    let expected: Vec<i32> = (0..=total).collect();
    assert!(seen == expected, "{styles:?}: every event once, in order");
    assert!(stream.resume_count() >= failovers, "{styles:?}");
    let primary = rs.primary().expect("a primary");
    assert_eq!(
        stream.server_address().map(ToString::to_string),
        Some(rs.hosts()[primary].clone()),
        "{styles:?}: the stream is on the new primary"
    );
    stream.close().await.ok();
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_step_downs() {
    events_survive(&[Failover::StepDown], 60, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_a_killed_primary() {
    events_survive(&[Failover::Kill], 60, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_a_blackholed_primary() {
    events_survive(&[Failover::Blackhole], 60, 15).await;
}

/// 10,000 events, the primary stepped down, killed or blackholed every 400 events (25
/// failovers): exactly 10,000 events (and one after the last failover), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_across_twenty_five_failovers() {
    let styles = [Failover::StepDown, Failover::Kill, Failover::Blackhole];
    events_survive(&styles, 10_000, 400).await;
}

/// Discovery from a seed list that names only a secondary finds the primary.
#[tokio::test]
async fn discovery_from_a_secondary_alone_finds_the_primary() {
    let rs = set().await;
    let uri = format!(
        "mongodb://{}/?replicaSet=rs0&serverSelectionTimeoutMS=5000",
        rs.hosts()[2]
    );
    let client = Client::connect(&uri).await.unwrap();
    assert_eq!(
        client.server_address().map(|a| a.to_string()),
        Some(rs.hosts()[0].clone())
    );
    client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    assert_eq!(rs.member(0).commands_named("ping").len(), 1);
}

/// SDAM events reach the handler set on the client options: the topology and its
/// servers opening, heartbeats, description changes as members are found, the primary's
/// change after an election, and the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdam_events_reach_the_handler() {
    use brook::monitoring::{DescriptionEvent, EventHandler, SdamEvent, ServerType};
    use std::sync::{Arc, Mutex};

    let rs = set().await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let uri = format!(
        "mongodb://{}/?replicaSet=rs0&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=5000",
        rs.hosts()[1]
    );
    let mut options = brook::ClientOptions::parse(&uri).unwrap();
    options.sdam_event_handler = Some(EventHandler::new(move |e: &SdamEvent| {
        sink.lock().unwrap().push(e.clone());
    }));
    let client = Client::with_options(options).await.unwrap();
    rs.step_down().await;
    rs.elect(2).await.unwrap();
    let new_primary = rs.hosts()[2].clone();
    let seen_new_primary = || {
        events.lock().unwrap().iter().any(|e| {
            matches!(e, SdamEvent::Description(DescriptionEvent::ServerDescriptionChanged { address, new, .. })
                if address.to_string() == new_primary && new.server_type == ServerType::RsPrimary)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen_new_primary() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new primary was never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.shutdown().await;
    let events = events.lock().unwrap().clone();
    assert!(matches!(
        events.first(),
        Some(SdamEvent::Description(DescriptionEvent::TopologyOpening))
    ));
    let opened = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                SdamEvent::Description(DescriptionEvent::ServerOpening { .. })
            )
        })
        .count();
    assert_eq!(opened, 3, "the seed, then the two members it named");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SdamEvent::HeartbeatStarted { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SdamEvent::HeartbeatSucceeded { .. }))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        SdamEvent::Description(DescriptionEvent::TopologyDescriptionChanged { .. })
    )));
    assert!(
        matches!(events.last(), Some(SdamEvent::TopologyClosed)),
        "{:?}",
        events.last()
    );
}
