//! `brook bench` against a fake server that turns each insert it receives into a change
//! event, returned by the stream's next getMore.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_testkit::shapes::{self, BatchKind, insert_event, post_batch_resume_token};
use brook_testkit::{Action, FakeServer, ReceivedCommand, ServerConfig};
use bson::oid::ObjectId;
use bson::{Bson, Document, Timestamp, doc};

use crate::harness::{brook_command, kill, run_brook, stderr, stdout_lines, wait};

const NS: &str = "benchdb.events";

/// The fake deployment's oplog, as far as the bench needs one: inserts become events.
#[derive(Default)]
struct EchoState {
    queue: Mutex<VecDeque<Document>>,
    clock: AtomicU32,
    inserted: AtomicUsize,
}

impl EchoState {
    fn tick(&self) -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: self.clock.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    fn handle(&self, cmd: &ReceivedCommand) -> Action {
        match cmd.name.as_str() {
            "insert" => {
                let docs = cmd.sequence("documents").unwrap_or_default();
                let mut queue = self.queue.lock().unwrap();
                for d in docs {
                    let ts = self.tick();
                    queue.push_back(shapes::with_seq(
                        insert_event(ts, NS, d.clone()),
                        ts.increment,
                    ));
                }
                self.inserted.fetch_add(docs.len(), Ordering::Relaxed);
                Action::Default
            }
            "getMore" => {
                let id = cmd.body.get_i64("getMore").unwrap_or(0);
                let events: Vec<Document> = self.queue.lock().unwrap().drain(..).collect();
                let pbrt = Some(post_batch_resume_token(self.tick()));
                if events.is_empty() {
                    // A short long-poll, so that an idle stream does not spin.
                    Action::delay(
                        Duration::from_millis(2),
                        Action::cursor(id, NS, BatchKind::Next, events, pbrt, None),
                    )
                } else {
                    Action::cursor(id, NS, BatchKind::Next, events, pbrt, None)
                }
            }
            "delete" => {
                let n = i32::try_from(self.inserted.load(Ordering::Relaxed)).unwrap_or(i32::MAX);
                Action::reply(doc! { "n": n, "ok": 1.0 })
            }
            _ => Action::Default,
        }
    }
}

async fn echo_server() -> FakeServer {
    let state = Arc::new(EchoState::default());
    FakeServer::start(
        ServerConfig::default().with_handler(move |cmd: &ReceivedCommand| state.handle(cmd)),
    )
    .await
    .expect("start the fake server")
}

fn json_output(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    let lines = stdout_lines(out);
    assert_eq!(lines.len(), 1, "one JSON line: {lines:?}");
    serde_json::from_str(&lines[0]).expect("valid JSON")
}

fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count: {x}"))
}

/// Every insert carries the run id; the one delete removes exactly those documents.
fn assert_cleaned_up(server: &FakeServer, run_id: &str) {
    let inserts = server.commands_named("insert");
    assert!(!inserts.is_empty());
    for cmd in &inserts {
        assert_eq!(cmd.db, "benchdb");
        assert_eq!(cmd.body.get_str("insert").ok(), Some("events"));
        for d in cmd.sequence("documents").expect("documents") {
            assert_eq!(d.get_str("brookBench").ok(), Some(run_id), "{d}");
        }
    }
    let deletes = server.commands_named("delete");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let delete = &deletes[0];
    assert_eq!(delete.db, "benchdb");
    assert_eq!(delete.body.get_str("delete").ok(), Some("events"));
    let statements: Vec<Document> = match delete.body.get_array("deletes") {
        Ok(a) => a
            .iter()
            .map(|b| b.as_document().expect("a statement").clone())
            .collect(),
        Err(_) => delete.sequence("deletes").expect("deletes").to_vec(),
    };
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0].get_document("q").ok(),
        Some(&doc! { "brookBench": run_id })
    );
    assert_eq!(
        statements[0].get("limit").and_then(Bson::as_i32),
        Some(0),
        "{statements:?}"
    );
    assert!(server.commands_named("drop").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_results_count_every_event_and_clean_up() {
    let server = echo_server().await;
    let uri = server.uri();
    let out = run_brook(&[
        "bench", &uri, NS, "--json", "--events", "50", "--rate", "500", "--warmup", "0.05",
    ])
    .await;
    let j = json_output(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(u(&j, &["events"]), 50, "{j}");
    assert_eq!(u(&j, &["writes"]), 50, "{j}");
    assert_eq!(u(&j, &["lost"]), 0, "{j}");
    assert_eq!(u(&j, &["duplicated"]), 0, "{j}");
    assert_eq!(u(&j, &["foreign"]), 0, "{j}");
    assert_eq!(u(&j, &["resumes"]), 0, "{j}");
    assert_eq!(j["interrupted"], false);
    assert_eq!(j["namespace"], NS);
    assert_eq!(u(&j, &["requested_rate"]), 500);
    assert_eq!(u(&j, &["doc_size"]), 256);
    let lat = &j["latency_us"];
    assert_eq!(u(lat, &["count"]), 50);
    let (min, p50, p90, p99, p999, max) = (
        u(lat, &["min"]),
        u(lat, &["p50"]),
        u(lat, &["p90"]),
        u(lat, &["p99"]),
        u(lat, &["p999"]),
        u(lat, &["max"]),
    );
    assert!(
        min > 0 && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{lat}"
    );
    assert!(max < 5_000_000, "an event took over 5 s: {lat}");
    let mean = lat["mean"].as_f64().expect("mean");
    assert!(mean >= min as f64 && mean <= max as f64, "{lat}");
    // At 500/s, 50 writes take about 0.1 s: the rate is paced, not a burst.
    let writes_per_s = j["writes_per_s"].as_f64().expect("writes_per_s");
    assert!(writes_per_s > 100.0 && writes_per_s < 600.0, "{j}");
    assert!(
        j["events_per_s"].as_f64().expect("events_per_s") > 0.0,
        "{j}"
    );
    let get_mores = u(&j, &["getmores"]);
    assert!(get_mores >= 1, "{j}");
    assert!(u(&j, &["getmore_rtt_us", "count"]) <= get_mores, "{j}");
    assert!(u(&j, &["getmores_empty"]) <= get_mores, "{j}");

    let run_id = j["run_id"].as_str().expect("run_id");
    assert!(ObjectId::parse_str(run_id).is_ok(), "{run_id}");
    assert_cleaned_up(&server, run_id);
    let inserted: usize = server
        .commands_named("insert")
        .iter()
        .map(|c| c.sequence("documents").map_or(0, <[Document]>::len))
        .sum();
    assert_eq!(
        u(&j, &["cleanup_deleted"]),
        inserted as u64,
        "the fake server's delete reports every insert"
    );
    assert_eq!(
        u(&j, &["writes"]) + u(&j, &["warmup_writes"]),
        inserted as u64
    );
    // The stream is filtered on the run id and closed at the end.
    let aggregate = &server.commands_named("aggregate")[0];
    let pipeline = aggregate.body.get_array("pipeline").expect("pipeline");
    assert_eq!(
        pipeline.get(1).and_then(Bson::as_document),
        Some(&doc! { "$match": { "operationType": "insert", "fullDocument.brookBench": run_id } })
    );
    assert_eq!(server.commands_named("killCursors").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_has_its_headers_and_keep_leaves_the_documents() {
    let server = echo_server().await;
    let uri = server.uri();
    let out = run_brook(&[
        "bench",
        &uri,
        NS,
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--rate",
        "100",
        "--batch-size",
        "7",
        "--max-await-time",
        "20",
        "--doc-size",
        "1000",
        "--keep",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "namespace       benchdb.events",
        "run id",
        "writes",
        "events",
        "getMores",
        "lost            0",
        "duplicated      0",
        "1000 B each",
        "kept (delete them with {brookBench: \"",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "mean",
        "insert-to-event latency",
        "getMore round trip",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(
        server.commands_named("delete").is_empty(),
        "--keep deletes nothing"
    );
    // The stream options reach the server.
    let aggregate = &server.commands_named("aggregate")[0];
    assert_eq!(
        aggregate.body.get_document("cursor").ok(),
        Some(&doc! { "batchSize": 7 })
    );
    let get_mores = server.commands_named("getMore");
    assert!(!get_mores.is_empty());
    assert_eq!(
        get_mores[0].body.get("maxTimeMS").and_then(|b| match b {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            _ => None,
        }),
        Some(20)
    );
    // 100/s for 0.3 s after 0.1 s of warm-up: about 40 documents of 1000 bytes.
    let docs: Vec<Document> = server
        .commands_named("insert")
        .iter()
        .flat_map(|c| c.sequence("documents").unwrap_or_default().to_vec())
        .collect();
    assert!((30..=45).contains(&docs.len()), "{} inserts", docs.len());
    for d in &docs {
        assert_eq!(bson::serialize_to_vec(d).unwrap().len(), 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleans_up_and_prints_partial_results() {
    let server = echo_server().await;
    let uri = server.uri();
    let args: Vec<String> = [
        "bench",
        &uri,
        NS,
        "--json",
        "--duration",
        "60",
        "--warmup",
        "0",
        "--rate",
        "200",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let child = brook_command(&args).spawn().expect("spawn brook");
    // Wait until it is writing.
    let mut waited = Duration::ZERO;
    while server.commands_named("insert").len() < 20 {
        assert!(waited < Duration::from_secs(20), "no inserts");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    kill(child.id(), "TERM");
    let out = wait(child).await;
    let j = json_output(&out);
    assert_eq!(j["interrupted"], true, "{j}");
    assert!(u(&j, &["events"]) >= 20, "{j}");
    assert_eq!(u(&j, &["lost"]), 0, "{j}");
    assert_eq!(u(&j, &["duplicated"]), 0, "{j}");
    let run_id = j["run_id"].as_str().expect("run_id");
    assert!(ObjectId::parse_str(run_id).is_ok(), "{run_id}");
    assert_cleaned_up(&server, run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_exit_2_with_one_line() {
    for (args, needle) in [
        (&["bench"][..], "missing <URI>"),
        (&["bench", "mongodb://127.0.0.1:1/"], "missing <DB>.<COLL>"),
        (
            &["bench", "mongodb://127.0.0.1:1/", "db"],
            "names no collection",
        ),
        (
            &["bench", "mongodb://127.0.0.1:1/", "a.b", "--rate", "0"],
            "--rate",
        ),
        (
            &[
                "bench",
                "mongodb://127.0.0.1:1/",
                "a.b",
                "--events",
                "3",
                "--duration",
                "1",
            ],
            "cannot be used with",
        ),
        (
            &["bench", "mongodb://127.0.0.1:1/", "a.b", "--nope"],
            "--nope",
        ),
        (&["bench", "nope://x", "a.b"], "`nope://x`"),
    ] {
        let out = run_brook(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.starts_with("brook: error: ") && err.contains(needle),
            "{err:?}"
        );
    }
    let help = run_brook(&["bench", "--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    for field in [
        "latency_us",
        "getmore_rtt_us",
        "events_per_s",
        "lost",
        "duplicated",
        "cleanup_deleted",
    ] {
        assert!(text.contains(field), "--help documents {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_runtime_error() {
    // A port nothing listens on, with a short server selection timeout.
    let out = run_brook(&[
        "bench",
        "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=200",
        NS,
        "--events",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.starts_with("brook: error: cannot connect"), "{err:?}");
}
