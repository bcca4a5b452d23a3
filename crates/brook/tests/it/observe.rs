//! What the driver is doing (issue 12): command monitoring events through
//! `ClientOptions::command_event_handler`, commands and replies in traces (redacted: no
//! password ever), and the `metrics` feature's names and labels, against the testkit's
//! fake server.

use std::sync::{Arc, Mutex};

use brook::monitoring::{CommandEvent, EventHandler};
use brook::{Client, ClientOptions};
use brook_testkit::shapes::BatchKind;
use brook_testkit::{Action, AuthConfig, FakeServer, ServerConfig};
use bson::{Binary, Document, doc, spec::BinarySubtype};

const NS: &str = "app.c";
const SECRET: &str = "hunter2-Sesame-77";

/// Every command event the client reports, in order.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<CommandEvent>>>);

impl Events {
    fn handler(&self) -> EventHandler<CommandEvent> {
        let sink = Arc::clone(&self.0);
        EventHandler::new(move |e: &CommandEvent| sink.lock().unwrap().push(e.clone()))
    }

    /// The events of the commands named in `names`, in order.
    fn of(&self, names: &[&str]) -> Vec<CommandEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| names.contains(&e.command_name()))
            .cloned()
            .collect()
    }
}

/// `(kind, command name)` of each event: the shape of a sequence.
fn kinds(events: &[CommandEvent]) -> Vec<(&'static str, String)> {
    events
        .iter()
        .map(|e| {
            let kind = match e {
                CommandEvent::Started(_) => "started",
                CommandEvent::Succeeded(_) => "succeeded",
                CommandEvent::Failed(_) => "failed",
                _ => "other",
            };
            (kind, e.command_name().to_owned())
        })
        .collect()
}

async fn fake() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

/// A client of `fake` reporting its command events to `events`.
async fn observed(fake: &FakeServer, events: &Events) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=3000",
        fake.host_port()
    );
    let mut options = ClientOptions::parse(&uri).expect("options");
    options.command_event_handler = Some(events.handler());
    Client::with_options(options).await.expect("connects")
}

/// A find, its getMore and its killCursors each give a started event and a succeeded
/// event with the same request id, on the same connection, with the spec's fields.
#[tokio::test]
async fn find_get_more_and_kill_cursors_are_started_and_succeeded_pairs() {
    let fake = fake().await;
    fake.push_action(
        "find",
        Action::cursor(
            42,
            NS,
            BatchKind::First,
            vec![doc! { "_id": 1 }],
            None,
            None,
        ),
    );
    fake.push_action(
        "getMore",
        Action::cursor(42, NS, BatchKind::Next, vec![doc! { "_id": 2 }], None, None),
    );
    let events = Events::default();
    let client = observed(&fake, &events).await;
    let coll = client.database("app").collection::<Document>("c");
    let mut cursor = coll.find(doc! {}).batch_size(1).await.expect("find");
    assert_eq!(cursor.try_next().await.unwrap(), Some(doc! { "_id": 1 }));
    assert_eq!(cursor.try_next().await.unwrap(), Some(doc! { "_id": 2 }));
    cursor.close().await.expect("killCursors");

    let seen = events.of(&["find", "getMore", "killCursors"]);
    assert_eq!(
        kinds(&seen),
        [
            ("started", "find".to_owned()),
            ("succeeded", "find".to_owned()),
            ("started", "getMore".to_owned()),
            ("succeeded", "getMore".to_owned()),
            ("started", "killCursors".to_owned()),
            ("succeeded", "killCursors".to_owned()),
        ]
    );
    let address = client.server_address().expect("a server");
    let mut request_ids = Vec::new();
    for pair in seen.chunks(2) {
        let (CommandEvent::Started(started), CommandEvent::Succeeded(done)) = (&pair[0], &pair[1])
        else {
            panic!("a started/succeeded pair: {pair:?}");
        };
        assert_eq!(
            started.context, done.context,
            "the same command, the same place"
        );
        assert_eq!(started.context.database_name, "app");
        assert_eq!(started.context.address, address);
        assert_eq!(started.context.service_id, None);
        assert!(started.context.server_connection_id.is_some());
        assert!(done.duration > std::time::Duration::ZERO);
        assert_eq!(
            started.command.keys().next().map(String::as_str),
            Some(started.command_name.as_str()),
            "the command as sent: {:?}",
            started.command
        );
        assert_eq!(done.reply.get_f64("ok").ok(), Some(1.0), "{:?}", done.reply);
        request_ids.push(started.context.request_id);
    }
    let mut distinct = request_ids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "one request id per command: {request_ids:?}"
    );
    // The find is its operation's first command; the getMore sent what the fake got.
    let CommandEvent::Started(find) = &seen[0] else {
        unreachable!()
    };
    assert_eq!(find.context.operation_id, find.context.request_id);
    assert_eq!(find.command.get_str("find").ok(), Some("c"));
    let CommandEvent::Started(get_more) = &seen[2] else {
        unreachable!()
    };
    assert_eq!(get_more.command.get_i64("getMore").ok(), Some(42));
    assert_eq!(
        get_more.command.get_str("collection").ok(),
        fake.commands_named("getMore")[0]
            .body
            .get_str("collection")
            .ok()
    );
    let CommandEvent::Succeeded(more) = &seen[3] else {
        unreachable!()
    };
    let batch = more
        .reply
        .get_document("cursor")
        .and_then(|c| c.get_array("nextBatch"))
        .expect("the reply as received");
    assert_eq!(batch.len(), 1);
}

/// A reply with `ok: 0` is a failed event with the server's code and message.
#[tokio::test]
async fn a_server_error_is_a_failed_event() {
    let fake = fake().await;
    fake.push_action(
        "find",
        Action::error_with_message(2, "BadValue", "no such operator", &[]),
    );
    let events = Events::default();
    let client = observed(&fake, &events).await;
    let coll = client.database("app").collection::<Document>("c");
    let err = coll.find(doc! {}).await.expect_err("BadValue");
    assert_eq!(err.code(), Some(2));
    let seen = events.of(&["find"]);
    assert_eq!(
        kinds(&seen),
        [
            ("started", "find".to_owned()),
            ("failed", "find".to_owned())
        ]
    );
    let (CommandEvent::Started(started), CommandEvent::Failed(failed)) = (&seen[0], &seen[1])
    else {
        unreachable!()
    };
    assert_eq!(failed.context.request_id, started.context.request_id);
    assert_eq!(failed.code, Some(2));
    assert!(
        failed.failure.contains("no such operator"),
        "{}",
        failed.failure
    );
    assert!(failed.duration > std::time::Duration::ZERO);
}

/// A security-sensitive command shows an empty body in its started event, an empty reply
/// in its succeeded event and no message in its failed event; `hello` is sensitive only
/// with `speculativeAuthenticate`.
#[tokio::test]
async fn a_sensitive_command_is_redacted_in_its_events() {
    let fake = fake().await;
    let payload = Binary {
        subtype: BinarySubtype::Generic,
        bytes: format!("\0app\0{SECRET}").into_bytes(),
    };
    fake.push_action(
        "saslStart",
        Action::reply(
            doc! { "conversationId": 1, "done": false, "payload": payload.clone(), "ok": 1.0 },
        ),
    );
    fake.push_action(
        "createUser",
        Action::error_with_message(51003, "UserExists", &format!("user exists: {SECRET}"), &[]),
    );
    let events = Events::default();
    let client = observed(&fake, &events).await;
    let db = client.database("admin");
    db.run_command(doc! { "saslStart": 1, "mechanism": "PLAIN", "payload": payload })
        .await
        .expect("scripted reply");
    db.run_command(doc! { "createUser": "app", "pwd": SECRET, "roles": [] })
        .await
        .expect_err("scripted error");
    db.run_command(doc! {
        "hello": 1,
        "speculativeAuthenticate": { "saslStart": 1, "mechanism": "PLAIN", "payload": SECRET },
    })
    .await
    .expect("hello");
    db.run_command(doc! { "hello": 1 }).await.expect("hello");

    let seen = events.of(&["saslStart", "createUser", "hello"]);
    assert_eq!(
        kinds(&seen),
        [
            ("started", "saslStart".to_owned()),
            ("succeeded", "saslStart".to_owned()),
            ("started", "createUser".to_owned()),
            ("failed", "createUser".to_owned()),
            ("started", "hello".to_owned()),
            ("succeeded", "hello".to_owned()),
            ("started", "hello".to_owned()),
            ("succeeded", "hello".to_owned()),
        ]
    );
    for event in &seen[..6] {
        match event {
            CommandEvent::Started(e) => assert!(e.command.is_empty(), "{e:?}"),
            CommandEvent::Succeeded(e) => assert!(e.reply.is_empty(), "{e:?}"),
            CommandEvent::Failed(e) => assert_eq!(e.code, Some(51003)),
            _ => unreachable!(),
        }
    }
    // A plain hello is shown.
    let (CommandEvent::Started(hello), CommandEvent::Succeeded(reply)) = (&seen[6], &seen[7])
    else {
        unreachable!()
    };
    assert_eq!(hello.command.get_i32("hello").ok(), Some(1));
    assert!(!reply.reply.is_empty());
    let shown = format!("{seen:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// All `tracing` output of an authenticated session (SCRAM-SHA-256 against the testkit's
/// server), bodies traced at TRACE: the command spans and bodies are there, and neither
/// the password nor a saslStart payload ever is.
#[tokio::test]
async fn no_trace_of_an_authenticated_session_shows_the_password() {
    // tracing-core, with a single dispatcher registered in the process, computes the
    // interest of a callsite first hit on another thread (another test's, with no
    // subscriber) from that thread's default alone, and caches "never": a second
    // dispatcher makes it ask each thread's subscriber every time.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let captured = crate::secrets::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.clone());
    let fake = FakeServer::start(
        ServerConfig::replica_set("rs0").with_auth(AuthConfig::new().user(
            "admin",
            "app",
            SECRET,
            &["SCRAM-SHA-256"],
        )),
    )
    .await
    .expect("starts");
    fake.push_action(
        "find",
        Action::cursor(7, NS, BatchKind::First, vec![doc! { "_id": 1 }], None, None),
    );
    fake.push_action(
        "getMore",
        Action::cursor(0, NS, BatchKind::Next, vec![doc! { "_id": 2 }], None, None),
    );
    let client = Client::connect(&format!(
        "mongodb://app:{SECRET}@{}/?serverSelectionTimeoutMS=3000&authMechanism=SCRAM-SHA-256",
        fake.host_port()
    ))
    .await
    .expect("connects");
    let coll = client.database("app").collection::<Document>("c");
    coll.insert_one(doc! { "a": 1 })
        .await
        .expect("authenticated");
    let mut cursor = coll.find(doc! {}).batch_size(1).await.expect("find");
    while cursor.try_next().await.expect("getMore").is_some() {}
    // The user's own sensitive commands, a password in each.
    let admin = client.database("admin");
    let plain = Binary {
        subtype: BinarySubtype::Generic,
        bytes: format!("\0app\0{SECRET}").into_bytes(),
    };
    let _ = admin
        .run_command(doc! { "saslStart": 1, "mechanism": "PLAIN", "payload": plain })
        .await;
    let _ = admin
        .run_command(doc! { "createUser": "other", "pwd": SECRET, "roles": [] })
        .await;
    let _ = admin
        .run_command(doc! { "updateUser": "other", "pwd": SECRET })
        .await;
    client.shutdown().await;

    let lines = captured.0.lock().unwrap().clone();
    let text = lines.join("\n");
    // What is traced: a span per command, inside an operation's; bodies and replies.
    assert!(text.contains("brook.operation"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("brook.command") && l.contains("command=\"insert\"")),
        "{text}"
    );
    assert!(text.contains(r#"body={"insert":"c""#), "{text}");
    assert!(text.contains("reply={"), "{text}");
    assert!(text.contains("command=\"getMore\""), "{text}");
    assert!(text.contains("duration_us="), "{text}");
    assert!(text.contains("command=\"saslStart\""), "{text}");
    assert!(
        text.contains("body={}"),
        "sensitive bodies shown empty: {text}"
    );
    // What never is.
    assert!(!text.contains(SECRET), "the password leaked:\n{text}");
    assert!(!text.contains("hunter2"), "the password leaked:\n{text}");
    assert!(
        !text.contains("payload"),
        "a SASL payload was traced:\n{text}"
    );
    assert!(
        !text.contains("\"pwd\""),
        "a user's password field was traced:\n{text}"
    );
}

/// With the `metrics` feature: the names and labels brook records, seen by a recorder of
/// the test's own.
#[cfg(feature = "metrics")]
mod metrics {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use brook::Client;
    use brook_testkit::shapes::{self, BatchKind};
    use brook_testkit::{Action, FakeServer, ServerConfig};
    use bson::{Document, Timestamp, doc};
    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    use super::NS;

    /// Every recorded value, as `name{label=value,...}`.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(String, f64)>>>);

    struct Handle {
        key: String,
        seen: Seen,
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            #[allow(clippy::cast_precision_loss)]
            self.seen
                .0
                .lock()
                .unwrap()
                .push((self.key.clone(), value as f64));
        }
        fn absolute(&self, value: u64) {
            CounterFn::increment(self, value);
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, value: f64) {
            self.seen.0.lock().unwrap().push((self.key.clone(), value));
        }
        fn decrement(&self, value: f64) {
            GaugeFn::increment(self, -value);
        }
        fn set(&self, value: f64) {
            GaugeFn::increment(self, value);
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, value: f64) {
            self.seen.0.lock().unwrap().push((self.key.clone(), value));
        }
    }

    struct TestRecorder(Seen);

    impl TestRecorder {
        fn handle(&self, key: &Key) -> Arc<Handle> {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            Arc::new(Handle {
                key: format!("{}{{{}}}", key.name(), labels.join(",")),
                seen: self.0.clone(),
            })
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    /// The process's recorder (a global: brook's tasks record from any thread).
    fn seen() -> &'static Seen {
        static SEEN: OnceLock<Seen> = OnceLock::new();
        SEEN.get_or_init(|| {
            let seen = Seen::default();
            metrics::set_global_recorder(TestRecorder(seen.clone())).expect("first recorder");
            seen
        })
    }

    fn values(key: &str) -> Vec<f64> {
        seen()
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .collect()
    }

    fn event(i: u32) -> Document {
        let ts = Timestamp {
            time: 1_700_000_000,
            increment: i,
        };
        let mut e = shapes::insert_event(ts, NS, doc! { "_id": i });
        // Written two seconds ago.
        let written = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 2000);
        e.insert("wallTime", written);
        e
    }

    /// Command durations by name and outcome, pool checkouts and their wait, change
    /// events, their lag, resumes and failed resumes.
    #[tokio::test]
    async fn brook_records_its_metrics_with_their_labels() {
        let seen = seen();
        let fake = FakeServer::start(ServerConfig::replica_set("rs0"))
            .await
            .expect("starts");
        let server = fake.host_port();
        fake.push_action(
            "find",
            Action::cursor(
                42,
                NS,
                BatchKind::First,
                vec![doc! { "_id": 1 }],
                None,
                None,
            ),
        );
        fake.push_action(
            "getMore",
            Action::cursor(0, NS, BatchKind::Next, vec![doc! { "_id": 2 }], None, None),
        );
        let client = Client::connect(&format!(
            "mongodb://{server}/?serverSelectionTimeoutMS=3000"
        ))
        .await
        .expect("connects");
        let coll = client.database("app").collection::<Document>("c");
        let mut cursor = coll.find(doc! {}).batch_size(1).await.expect("find");
        while cursor.try_next().await.expect("getMore").is_some() {}
        let _ = client
            .database("app")
            .run_command(doc! { "noSuchCommand": 1 })
            .await
            .expect_err("not found");

        // A change stream: two events in one batch, a resume that works (after a
        // resumable error), one that fails (a second resumable error, then an aggregate
        // refused).
        let post = shapes::post_batch_resume_token(Timestamp {
            time: 1_700_000_000,
            increment: 9,
        });
        fake.push_actions(
            "aggregate",
            [
                Action::cursor(7, NS, BatchKind::First, vec![], Some(post.clone()), None),
                Action::cursor(8, NS, BatchKind::First, vec![], Some(post.clone()), None),
                Action::error(2, "BadValue", &[]),
            ],
        );
        fake.push_actions(
            "getMore",
            [
                Action::cursor(7, NS, BatchKind::Next, vec![event(1), event(2)], None, None),
                Action::error(43, "CursorNotFound", &[]),
                Action::error(43, "CursorNotFound", &[]),
            ],
        );
        let mut stream = coll.watch().await.expect("watch");
        for _ in 0..2 {
            stream.next().await.expect("an event").expect("no error");
        }
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends");
        assert!(matches!(end, Some(Err(_))), "the failed resume ends it");
        client.shutdown().await;

        let keys: Vec<String> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        let has = |key: &str| keys.iter().any(|k| k == key);
        for key in [
            "brook_command_duration_seconds{command=find,outcome=ok}",
            "brook_command_duration_seconds{command=getMore,outcome=ok}",
            "brook_command_duration_seconds{command=other,outcome=error}",
            "brook_command_duration_seconds{command=aggregate,outcome=error}",
            "brook_change_stream_events_total{}",
            "brook_change_stream_lag_seconds{}",
            "brook_change_stream_resumes_total{outcome=ok}",
            "brook_change_stream_resumes_total{outcome=failed}",
            "brook_change_stream_failed_resumes_total{}",
        ] {
            assert!(has(key), "{key} missing from {keys:#?}");
        }
        let checkouts = format!("brook_pool_checkouts_total{{outcome=ok,server={server}}}");
        assert!(has(&checkouts), "{checkouts} missing from {keys:#?}");
        let wait = format!("brook_pool_checkout_wait_seconds{{server={server}}}");
        assert!(has(&wait), "{wait} missing from {keys:#?}");
        // Durations in seconds; the lag of the batch's last event about two seconds.
        assert!(
            values("brook_command_duration_seconds{command=getMore,outcome=ok}")
                .iter()
                .all(|s| (0.0..10.0).contains(s))
        );
        let lag = values("brook_change_stream_lag_seconds{}");
        assert!(lag.iter().any(|s| (1.5..30.0).contains(s)), "{lag:?}");
        assert!(values("brook_change_stream_events_total{}").len() >= 2);
    }
}
