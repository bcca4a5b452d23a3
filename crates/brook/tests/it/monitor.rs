//! SDAM server monitoring against the testkit's replica set: the streaming protocol
//! (awaitable hello with exhaust, one reply per state change), the RTT monitor, the
//! polling protocol of `serverMonitoringMode=poll`, and failures of the streaming
//! connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook::monitoring::{DescriptionEvent, EventHandler, SdamEvent, ServerType};
use brook::{Client, ClientOptions};
use brook_testkit::{ReceivedCommand, ReplicaSet, ReplicaSetConfig};

type Events = Arc<Mutex<Vec<(Instant, SdamEvent)>>>;

async fn set() -> ReplicaSet {
    ReplicaSet::start(ReplicaSetConfig::new("rs0"))
        .await
        .expect("the replica set starts")
}

/// A client of `rs` with `query` added to its URI, recording its SDAM events.
async fn watched_client(rs: &ReplicaSet, query: &str) -> (Client, Events) {
    let uri = format!("{}&serverSelectionTimeoutMS=5000{query}", rs.uri());
    let mut options = ClientOptions::parse(&uri).expect("the URI parses");
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    options.sdam_event_handler = Some(EventHandler::new(move |e: &SdamEvent| {
        sink.lock().unwrap().push((Instant::now(), e.clone()));
    }));
    let client = Client::with_options(options)
        .await
        .expect("the client finds the primary");
    (client, events)
}

fn is_hello(c: &ReceivedCommand) -> bool {
    matches!(c.name.as_str(), "hello" | "isMaster" | "ismaster")
}

/// An awaitable hello: `topologyVersion` and `maxAwaitTimeMS`.
fn is_awaitable(c: &ReceivedCommand) -> bool {
    is_hello(c) && c.body.contains_key("topologyVersion") && c.body.contains_key("maxAwaitTimeMS")
}

/// When the events first said that `host` is `kind`, at or after `since`.
fn reported_at(events: &Events, host: &str, kind: ServerType, since: Instant) -> Option<Instant> {
    events.lock().unwrap().iter().find_map(|(at, e)| match e {
        SdamEvent::Description(DescriptionEvent::ServerDescriptionChanged {
            address, new, ..
        }) if *at >= since && address.to_string() == host && new.server_type == kind => Some(*at),
        _ => None,
    })
}

/// Waits up to `limit` for the events to say that `host` is `kind` (after `since`);
/// returns how long after `since` they did.
async fn wait_reported(
    events: &Events,
    host: &str,
    kind: ServerType,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        if let Some(at) = reported_at(events, host, kind, since) {
            return Some(at - since);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reported_at(events, host, kind, since).map(|at| at - since)
}

/// The heartbeat events' `awaited` flags, (started, succeeded, failed), for `host`.
fn awaited_flags(events: &Events, host: &str) -> (Vec<bool>, Vec<bool>, Vec<bool>) {
    let mut flags = (Vec::new(), Vec::new(), Vec::new());
    for (_, e) in events.lock().unwrap().iter() {
        match e {
            SdamEvent::HeartbeatStarted { address, awaited } if address.to_string() == host => {
                flags.0.push(*awaited);
            }
            SdamEvent::HeartbeatSucceeded {
                address, awaited, ..
            } if address.to_string() == host => flags.1.push(*awaited),
            SdamEvent::HeartbeatFailed {
                address, awaited, ..
            } if address.to_string() == host => flags.2.push(*awaited),
            _ => {}
        }
    }
    flags
}

/// With heartbeatFrequencyMS at 10 s, a streaming client hears of an election at once:
/// the members' awaited hellos answer the change as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_learns_an_election_long_before_the_heartbeat() {
    let rs = set().await;
    let (client, events) = watched_client(
        &rs,
        "&heartbeatFrequencyMS=10000&serverMonitoringMode=stream",
    )
    .await;
    // Let every monitor settle into its awaited hello.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let since = Instant::now();
    rs.step_down().await;
    rs.elect(1).await.unwrap();
    let took = wait_reported(
        &events,
        &rs.hosts()[1],
        ServerType::RsPrimary,
        since,
        Duration::from_secs(3),
    )
    .await;
    let took = took.expect("the new primary is reported within 3 s (heartbeat: 10 s)");
    eprintln!("streaming: new primary reported {took:?} after the election");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let old = wait_reported(
        &events,
        &rs.hosts()[0],
        ServerType::RsSecondary,
        since,
        Duration::from_secs(1),
    )
    .await;
    assert!(old.is_some(), "the old primary is reported a secondary");
    client.shutdown().await;
}

/// `serverMonitoringMode=poll`: nothing is awaited, so with heartbeatFrequencyMS at 10 s
/// and no operation to ask for a check, the election stays unknown for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_learns_an_election_only_at_the_next_check() {
    let rs = set().await;
    let (client, events) =
        watched_client(&rs, "&heartbeatFrequencyMS=10000&serverMonitoringMode=poll").await;
    // Past the checks the client's first selection asked for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = Instant::now();
    rs.step_down().await;
    rs.elect(1).await.unwrap();
    let took = wait_reported(
        &events,
        &rs.hosts()[1],
        ServerType::RsPrimary,
        since,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(took, None, "a polling client has no reason to check yet");
    for member in rs.members() {
        assert!(
            !member.commands().iter().any(is_awaitable),
            "no awaitable hello in poll mode"
        );
    }
    client.shutdown().await;
}

/// Heartbeat events say whether they were awaited: in stream mode, the handshake's check
/// is not and every later check is; in poll mode none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_events_say_whether_they_were_awaited() {
    let rs = set().await;
    let host = rs.hosts()[0].clone();

    let (client, events) =
        watched_client(&rs, "&heartbeatFrequencyMS=500&serverMonitoringMode=stream").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    client.shutdown().await;
    let (started, succeeded, failed) = awaited_flags(&events, &host);
    assert_eq!(started.first(), Some(&false), "the handshake: {started:?}");
    assert_eq!(
        succeeded.first(),
        Some(&false),
        "the handshake: {succeeded:?}"
    );
    assert!(
        started.len() >= 3 && started[1..].iter().all(|a| *a),
        "streamed checks are awaited: {started:?}"
    );
    assert!(
        succeeded.len() >= 2 && succeeded[1..].iter().all(|a| *a),
        "streamed replies are awaited: {succeeded:?}"
    );
    assert!(failed.is_empty(), "{failed:?}");

    let (client, events) =
        watched_client(&rs, "&heartbeatFrequencyMS=500&serverMonitoringMode=poll").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    client.shutdown().await;
    let (started, succeeded, _) = awaited_flags(&events, &host);
    assert!(started.len() >= 2, "{started:?}");
    assert!(!succeeded.is_empty());
    assert!(
        started.iter().chain(&succeeded).all(|a| !*a),
        "polled checks are not awaited: {started:?} {succeeded:?}"
    );
}

/// The streaming protocol on the wire: one awaitable hello with exhaustAllowed per
/// monitoring connection, however many replies follow (one per maxAwaitTimeMS here), and
/// the RTT monitor's plain hellos every heartbeatFrequencyMS on a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_awaitable_hello_streams_replies_and_rtt_has_its_own_connection() {
    let rs = set().await;
    let (client, events) =
        watched_client(&rs, "&heartbeatFrequencyMS=500&serverMonitoringMode=stream").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let member = rs.member(2);
    let commands = member.commands();
    let awaitable: Vec<&ReceivedCommand> = commands.iter().filter(|c| is_awaitable(c)).collect();
    assert_eq!(awaitable.len(), 1, "one awaitable hello: {awaitable:?}");
    let stream = awaitable[0];
    assert!(stream.exhaust_allowed(), "sent with exhaustAllowed");
    assert_eq!(
        stream.body.get_i64("maxAwaitTimeMS").ok(),
        Some(500),
        "maxAwaitTimeMS is heartbeatFrequencyMS"
    );
    let (_, succeeded, _) = awaited_flags(&events, &rs.hosts()[2]);
    let streamed = succeeded.iter().filter(|a| **a).count();
    assert!(
        streamed >= 4,
        "replies streamed every 500 ms: {succeeded:?}"
    );
    // The RTT monitor: plain hellos (no handshake metadata, not awaitable) on another
    // connection than the stream's.
    let plain: Vec<&ReceivedCommand> = commands
        .iter()
        .filter(|c| is_hello(c) && !is_awaitable(c) && !c.body.contains_key("client"))
        .collect();
    assert!(plain.len() >= 3, "RTT hellos every 500 ms: {}", plain.len());
    assert!(
        plain
            .iter()
            .all(|c| c.connection_id != stream.connection_id),
        "RTT hellos have a connection of their own"
    );
    // Round-trip times are reported with the streamed descriptions.
    let rtt = events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            SdamEvent::Description(DescriptionEvent::ServerDescriptionChanged {
                address,
                new,
                ..
            }) if address.to_string() == rs.hosts()[2] => Some(new.round_trip_time),
            _ => None,
        });
    assert!(matches!(rtt, Some(Some(_))), "{rtt:?}");
    client.shutdown().await;
}

/// A member that stops answering on the streaming connection is Unknown within
/// connectTimeoutMS + heartbeatFrequencyMS (the bound of an awaited read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_member_is_unknown_within_the_awaited_read_bound() {
    let rs = set().await;
    let (client, events) = watched_client(
        &rs,
        "&heartbeatFrequencyMS=1000&connectTimeoutMS=400&serverMonitoringMode=stream",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let host = rs.hosts()[2].clone();
    let since = Instant::now();
    rs.blackhole(2).await.unwrap();
    let took = wait_reported(
        &events,
        &host,
        ServerType::Unknown,
        since,
        Duration::from_secs(4),
    )
    .await
    .expect("the blackholed member is marked Unknown");
    eprintln!("blackholed member Unknown after {took:?}");
    let bound = Duration::from_millis(400 + 1000);
    assert!(
        took <= bound + Duration::from_millis(300),
        "{took:?} > {bound:?}"
    );
    let (_, _, failed) = awaited_flags(&events, &host);
    assert_eq!(
        failed.first(),
        Some(&true),
        "the awaited read failed: {failed:?}"
    );
    // The others stay known.
    assert!(reported_at(&events, &rs.hosts()[0], ServerType::Unknown, since).is_none());
    rs.unblackhole(2).await.unwrap();
    let back = wait_reported(
        &events,
        &host,
        ServerType::RsSecondary,
        Instant::now(),
        Duration::from_secs(5),
    )
    .await;
    assert!(back.is_some(), "the member is found again once it answers");
    client.shutdown().await;
}

/// A killed member's streaming connection fails at once: Unknown without waiting for any
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_unknown_at_once() {
    let rs = set().await;
    let (client, events) = watched_client(
        &rs,
        "&heartbeatFrequencyMS=10000&connectTimeoutMS=2000&serverMonitoringMode=stream",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let host = rs.hosts()[2].clone();
    let since = Instant::now();
    rs.kill(2).await.unwrap();
    let took = wait_reported(
        &events,
        &host,
        ServerType::Unknown,
        since,
        Duration::from_secs(3),
    )
    .await
    .expect("the killed member is marked Unknown");
    assert!(took < Duration::from_secs(1), "{took:?}");
    client.shutdown().await;
}

/// Shutting the client down stops both monitors of every member: their connections
/// close (the stream's and the RTT monitor's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_monitoring_connections() {
    let rs = set().await;
    let (client, _events) =
        watched_client(&rs, "&heartbeatFrequencyMS=500&serverMonitoringMode=stream").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let member = rs.member(1);
    assert!(
        member.open_connections() >= 2,
        "a streaming and an RTT connection: {}",
        member.open_connections()
    );
    client.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while member.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still open after shutdown",
            member.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An application's network error marks the server Unknown and clears its pool: the
/// streaming check in progress is cancelled (its connection closed) and the monitor
/// starts over on a new connection, which finds the server again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_network_error_cancels_the_streaming_check() {
    use brook_testkit::{Action, Fault};

    let rs = set().await;
    let (client, events) = watched_client(
        &rs,
        "&heartbeatFrequencyMS=10000&serverMonitoringMode=stream",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let host = rs.hosts()[0].clone();
    let first_stream: Vec<u64> = rs
        .member(0)
        .commands()
        .iter()
        .filter(|c| is_awaitable(c))
        .map(|c| c.connection_id)
        .collect();
    assert_eq!(first_stream.len(), 1, "one stream so far");
    rs.member(0)
        .push_action("ping", Action::fault(Fault::CloseWithoutReply));
    let since = Instant::now();
    let err = client
        .database("admin")
        .run_command(bson::doc! { "ping": 1 })
        .await
        .expect_err("the connection closes without a reply");
    assert!(err.is_network(), "{err}");
    let cancelled = || {
        events.lock().unwrap().iter().any(|(at, e)| {
            matches!(e, SdamEvent::HeartbeatFailed { address, awaited: true, error, .. }
                if *at >= since && address.to_string() == host && error.contains("cancelled"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cancelled() {
        assert!(
            Instant::now() < deadline,
            "the streaming check was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Found again (a check was requested: after minHeartbeatFrequencyMS, not 10 s), on
    // a new streaming connection.
    let back = wait_reported(
        &events,
        &host,
        ServerType::RsPrimary,
        since,
        Duration::from_secs(3),
    )
    .await
    .expect("the primary is found again");
    assert!(back < Duration::from_secs(2), "{back:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let streams: Vec<u64> = rs
            .member(0)
            .commands()
            .iter()
            .filter(|c| is_awaitable(c))
            .map(|c| c.connection_id)
            .collect();
        if streams.len() == 2 {
            assert_ne!(streams[0], streams[1], "a new monitoring connection");
            break;
        }
        assert!(Instant::now() < deadline, "no new stream: {streams:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.shutdown().await;
}
