//! `brook tail` and `brook demo-writer` against the fake server.

use std::time::Duration;

use brook_testkit::shapes::{
    self, BatchKind, delete_event, insert_event, invalidate_event, post_batch_resume_token,
    update_event,
};
use brook_testkit::{Action, FakeServer, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, Timestamp, doc};

use crate::harness::{brook_command, kill, run_brook, stderr, stdout_lines, temp_dir, wait};

const NS: &str = "shop.orders";
const CURSOR: i64 = 77;

fn ts(i: u32) -> Timestamp {
    Timestamp {
        time: 1_700_000_000,
        increment: i,
    }
}

fn three_events() -> Vec<Document> {
    vec![
        insert_event(ts(1), NS, doc! { "_id": 1, "sku": "A", "qty": 2 }),
        update_event(
            ts(2),
            NS,
            doc! { "_id": 1 },
            doc! { "qty": 3 },
            &["note"],
            None,
        ),
        delete_event(ts(3), NS, doc! { "_id": 1 }),
    ]
}

fn first_batch(events: Vec<Document>, pbrt: Option<Document>) -> Action {
    Action::cursor(CURSOR, NS, BatchKind::First, events, pbrt, None)
}

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::default())
        .await
        .expect("start the fake server")
}

/// The `$changeStream` stage of an aggregate.
fn change_stream_stage(cmd: &ReceivedCommand) -> Document {
    let pipeline = cmd.body.get_array("pipeline").expect("a pipeline");
    match pipeline.first() {
        Some(Bson::Document(stage)) => stage
            .get_document("$changeStream")
            .expect("$changeStream first")
            .clone(),
        other => panic!("first stage: {other:?}"),
    }
}

fn aggregates(server: &FakeServer) -> Vec<ReceivedCommand> {
    server.commands_named("aggregate")
}

/// The token a resume file holds, and its `invalidate` flag.
fn read_resume_file(path: &std::path::Path) -> (Document, bool) {
    let text = std::fs::read_to_string(path).expect("the resume file exists");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let token = match Bson::try_from(value["resumeToken"].clone()).expect("extended JSON") {
        Bson::Document(d) => d,
        other => panic!("token {other:?}"),
    };
    (token, value["invalidate"].as_bool().expect("a bool"))
}

/// bson's relaxed extended JSON with every ISO-8601 date given its milliseconds, as
/// `brook tail` prints them (`…:20Z` → `…:20.000Z`, so that dates sort as text).
fn with_millis(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(date) if k == "$date" && !date.contains('.') => {
                        (k, Value::String(date.replace('Z', ".000Z")))
                    }
                    other => (k, with_millis(other)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(with_millis).collect()),
        other => other,
    }
}

fn assert_one_error_line(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(out.stdout.is_empty(), "stdout: {:?}", stdout_lines(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("brook: error: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_canonical_keeps_every_type() {
    let server = server().await;
    let events = three_events();
    server.push_action(
        "aggregate",
        first_batch(events.clone(), Some(post_batch_resume_token(ts(3)))),
    );
    let uri = server.uri();
    let out = run_brook(&[
        "tail",
        &uri,
        NS,
        "--count",
        "3",
        "--json-format",
        "canonical",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, event) in lines.iter().zip(&events) {
        // Exactly bson's canonical extended JSON, in the server's field order, and it
        // reads back as the event, every type kept.
        let expected = Bson::Document(event.clone()).into_canonical_extjson();
        assert_eq!(line, &expected.to_string());
        let back = Bson::try_from(serde_json::from_str::<serde_json::Value>(line).expect("JSON"));
        assert_eq!(back.expect("extended JSON"), Bson::Document(event.clone()));
    }
    assert!(
        lines[0].contains(r#""fullDocument":{"_id":{"$numberInt":"1"},"sku":"A""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(r#""wallTime":{"$date":{"$numberLong":"1700000000000"}}"#),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_pages_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run_brook(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(!script.is_empty(), "{shell}");
        assert!(script.contains("tail"), "{shell} lacks tail");
        // fish names long options without their dashes (`-l resume-file`).
        let (resume_file, json_format) = match shell {
            "fish" => ("-l resume-file", "-l json-format"),
            _ => ("--resume-file", "--json-format"),
        };
        assert!(script.contains(resume_file), "{shell} lacks --resume-file");
        assert!(script.contains(json_format), "{shell} lacks --json-format");
    }
    let out = run_brook(&["man"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
    assert!(page.contains(".TH brook 1"), "{page}");
    assert!(page.contains("tail"), "{page}");
    let out = run_brook(&["man", "tail"]).await;
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH brook\\-tail 1") || page.contains(".TH brook-tail 1"),
        "{page}"
    );
    assert!(page.contains("resume\\-file"), "{page}");
    let out = run_brook(&["completions", "tcsh"]).await;
    assert_one_error_line(&out, 2, "tcsh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_each_event_as_one_relaxed_json_line() {
    let server = server().await;
    let events = three_events();
    server.push_action(
        "aggregate",
        first_batch(events.clone(), Some(post_batch_resume_token(ts(3)))),
    );
    let uri = server.uri();
    let out = run_brook(&["tail", &uri, NS, "--count", "3"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    // stderr is not a terminal here: no statistics, nothing at all.
    assert_eq!(stderr(&out), "");

    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, event) in lines.iter().zip(&events) {
        let printed: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        assert_eq!(
            printed,
            with_millis(Bson::Document(event.clone()).into_relaxed_extjson())
        );
        assert!(
            line.starts_with(r#"{"_id":{"_data":"82"#),
            "server field order: {line}"
        );
    }
    // Relaxed: plain numbers, {"$date": ISO} wall times.
    assert!(
        lines[0].contains(r#""fullDocument":{"_id":1,"sku":"A","qty":2}"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(r#""wallTime":{"$date":"2023-11-14T22:13:20.000Z"}"#),
        "{}",
        lines[0]
    );

    let aggs = aggregates(&server);
    assert_eq!(aggs.len(), 1);
    assert_eq!(aggs[0].db, "shop");
    assert_eq!(aggs[0].body.get_str("aggregate").ok(), Some("orders"));
    assert_eq!(change_stream_stage(&aggs[0]), doc! {});
    // --count closes the stream: killCursors for the open cursor.
    let kills = server.commands_named("killCursors");
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(
        kills[0].body.get_array("cursors").ok(),
        Some(&vec![Bson::Int64(CURSOR)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watch_flag_reaches_the_server() {
    let server = server().await;
    let events = three_events();
    server.push_action(
        "aggregate",
        first_batch(
            vec![events[0].clone()],
            Some(post_batch_resume_token(ts(1))),
        ),
    );
    server.push_action(
        "getMore",
        Action::cursor(
            CURSOR,
            NS,
            BatchKind::Next,
            vec![events[1].clone()],
            Some(post_batch_resume_token(ts(2))),
            None,
        ),
    );
    let uri = server.uri();
    let out = run_brook(&[
        "tail",
        &uri,
        NS,
        "--pipeline",
        r#"[{"$match": {"operationType": {"$in": ["insert", "update"]}}}, {"$project": {"b": 1, "a": 1}}]"#,
        "--full-document",
        "updateLookup",
        "--full-document-before-change",
        "whenAvailable",
        "--resume-after",
        r#"{"_data": "8201"}"#,
        "--start-at-operation-time",
        "1700000000:9",
        "--max-await-time",
        "250",
        "--batch-size",
        "100",
        "--collation",
        r#"{"locale": "fr", "strength": 1}"#,
        "--comment",
        "cli test",
        "--show-expanded-events",
        "--count",
        "2",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 2);

    let aggs = aggregates(&server);
    assert_eq!(aggs.len(), 1, "{aggs:?}");
    let body = &aggs[0].body;
    let stage = change_stream_stage(&aggs[0]);
    assert_eq!(stage.get_str("fullDocument").ok(), Some("updateLookup"));
    assert_eq!(
        stage.get_str("fullDocumentBeforeChange").ok(),
        Some("whenAvailable")
    );
    assert_eq!(
        stage.get_document("resumeAfter").ok(),
        Some(&doc! { "_data": "8201" })
    );
    assert_eq!(
        stage.get_timestamp("startAtOperationTime").ok(),
        Some(ts(9))
    );
    assert_eq!(stage.get_bool("showExpandedEvents").ok(), Some(true));
    let pipeline = body.get_array("pipeline").expect("pipeline");
    assert_eq!(pipeline.len(), 3);
    let project = pipeline[2]
        .as_document()
        .and_then(|d| d.get_document("$project").ok())
        .expect("$project stage");
    assert_eq!(
        project.keys().collect::<Vec<_>>(),
        ["b", "a"],
        "key order kept"
    );
    assert_eq!(
        body.get_document("collation").ok(),
        Some(&doc! { "locale": "fr", "strength": 1 })
    );
    assert_eq!(body.get_str("comment").ok(), Some("cli test"));
    let batch_size = body
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize"))
        .and_then(Bson::as_i64_lenient);
    assert_eq!(batch_size, Some(100));
    assert!(
        !body.contains_key("maxTimeMS"),
        "maxAwaitTimeMS is for getMore only"
    );

    let get_mores = server.commands_named("getMore");
    assert_eq!(get_mores.len(), 1);
    let gm = &get_mores[0].body;
    assert_eq!(
        gm.get("maxTimeMS").and_then(Bson::as_i64_lenient),
        Some(250)
    );
    assert_eq!(
        gm.get("batchSize").and_then(Bson::as_i64_lenient),
        Some(100)
    );
    assert_eq!(gm.get_str("collection").ok(), Some("orders"));
}

/// `Bson::as_i64` that also takes an int32.
trait Lenient {
    fn as_i64_lenient(&self) -> Option<i64>;
}

impl Lenient for Bson {
    fn as_i64_lenient(&self) -> Option<i64> {
        match self {
            Bson::Int32(v) => Some(i64::from(*v)),
            Bson::Int64(v) => Some(*v),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_file_is_written_after_what_was_printed_and_used_at_restart() {
    let dir = temp_dir("resume");
    let file = dir.join("orders.token");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    let events = three_events();
    let pbrt = post_batch_resume_token(ts(3));

    // Run 1: two events of a three-event batch. After an event that is not its batch's
    // last, the token is that event's _id.
    let server1 = server().await;
    server1.push_action("aggregate", first_batch(events.clone(), Some(pbrt.clone())));
    let uri1 = server1.uri();
    let out = run_brook(&[
        "tail",
        &uri1,
        NS,
        "--resume-file",
        &file_arg,
        "--count",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 1);
    let first_id = events[0].get_document("_id").expect("_id").clone();
    assert_eq!(read_resume_file(&file), (first_id.clone(), false));
    assert!(!dir.join("orders.token.tmp").exists(), "renamed into place");
    assert!(
        change_stream_stage(&aggregates(&server1)[0]).is_empty(),
        "no file yet: starts from now"
    );

    // Run 2, a new server: resumes after the saved token, even with --start-after given
    // (the file wins), and saves the batch's postBatchResumeToken after its last event.
    let server2 = server().await;
    server2.push_action(
        "aggregate",
        first_batch(events[1..].to_vec(), Some(pbrt.clone())),
    );
    let uri2 = server2.uri();
    let out = run_brook(&[
        "tail",
        &uri2,
        NS,
        "--resume-file",
        &file_arg,
        "--start-after",
        r#"{"_data": "ignored"}"#,
        "--count",
        "2",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].contains(r#""operationType":"update""#),
        "{}",
        lines[0]
    );
    let stage = change_stream_stage(&aggregates(&server2)[0]);
    assert_eq!(
        stage,
        doc! { "resumeAfter": first_id },
        "resumeAfter = the file's token only"
    );
    assert_eq!(read_resume_file(&file), (pbrt, false));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_invalidate_the_file_restarts_with_start_after() {
    let dir = temp_dir("invalidate");
    let file = dir.join("pos.json");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    let invalidate = invalidate_event(ts(5));
    let inv_id = invalidate.get_document("_id").expect("_id").clone();

    let server1 = server().await;
    // The server ends the cursor (id 0) with the invalidate.
    server1.push_action(
        "aggregate",
        Action::cursor(
            0,
            NS,
            BatchKind::First,
            vec![
                three_events().remove(0),
                shapes::drop_event(ts(4), NS),
                invalidate,
            ],
            Some(post_batch_resume_token(ts(6))),
            None,
        ),
    );
    let uri1 = server1.uri();
    let out = run_brook(&["tail", &uri1, NS, "--resume-file", &file_arg]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].contains(r#""operationType":"invalidate""#),
        "{}",
        lines[2]
    );
    assert!(stderr(&out).contains("--start-after"), "{}", stderr(&out));
    assert_eq!(read_resume_file(&file), (inv_id.clone(), true));

    let server2 = server().await;
    server2.push_action("aggregate", first_batch(three_events(), None));
    let uri2 = server2.uri();
    let out = run_brook(&[
        "tail",
        &uri2,
        NS,
        "--resume-file",
        &file_arg,
        "--count",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        change_stream_stage(&aggregates(&server2)[0]),
        doc! { "startAfter": inv_id }
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_cluster_streams() {
    let server = server().await;
    let uri = server.uri();
    server.push_action("aggregate", first_batch(three_events(), None));
    let out = run_brook(&["tail", &uri, "shop", "--count", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    server.push_action("aggregate", first_batch(three_events(), None));
    let out = run_brook(&["tail", &uri, "--cluster", "--count", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    let aggs = aggregates(&server);
    assert_eq!(aggs.len(), 2);
    assert_eq!(aggs[0].db, "shop");
    assert_eq!(aggs[0].body.get("aggregate"), Some(&Bson::Int32(1)));
    assert_eq!(aggs[1].db, "admin");
    assert_eq!(aggs[1].body.get("aggregate"), Some(&Bson::Int32(1)));
    assert_eq!(
        change_stream_stage(&aggs[1])
            .get_bool("allChangesForCluster")
            .ok(),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_error_is_resumed_and_a_fatal_one_ends_with_one_line() {
    let server = server().await;
    let events = three_events();
    server.push_action("aggregate", first_batch(vec![events[0].clone()], None));
    server.push_actions(
        "getMore",
        [
            Action::error(43, "CursorNotFound", &[]),
            Action::error(280, "ChangeStreamFatalError", &[]),
        ],
    );
    // The resume's aggregate: the default one opens a cursor, whose getMore then fails
    // fatally (the second queued getMore action).
    let uri = server.uri();
    let out = run_brook(&["tail", &uri, NS]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 1);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("brook: error: the change stream failed"),
        "{err:?}"
    );
    assert!(err.contains("ChangeStreamFatalError"), "{err:?}");

    let aggs = aggregates(&server);
    assert_eq!(aggs.len(), 2, "one resume");
    assert_eq!(
        change_stream_stage(&aggs[1]),
        doc! { "resumeAfter": events[0].get_document("_id").expect("_id").clone() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_stream_and_exits_0() {
    let server = server().await;
    let uri = server.uri();
    let args: Vec<String> = ["tail", &uri, NS, "--max-await-time", "200"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let child = brook_command(&args).spawn().expect("spawn brook");
    let pid = child.id();
    // Wait for the stream to be open and polling.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.commands_named("getMore").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no getMore");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(pid, "TERM");
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    let kills = server.commands_named("killCursors");
    assert_eq!(kills.len(), 1, "the cursor is killed on the way out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_exit_2_with_one_line() {
    for (args, needle) in [
        (
            vec!["tail", "mongodb://127.0.0.1:1/", NS, "--frobnicate"],
            "--frobnicate",
        ),
        (vec!["tail", "mongodb://127.0.0.1:1/"], "missing <DB>"),
        (
            vec!["tail", "mongodb://127.0.0.1:1/", NS, "--count", "many"],
            "--count",
        ),
        (
            vec!["tail", "mongodb://127.0.0.1:1/", NS, "--pipeline", "{"],
            "--pipeline",
        ),
        (vec!["tail", "not-a-uri", NS], "not-a-uri"),
        (vec!["launch"], "unknown command `launch`"),
        (vec![], "no command given"),
    ] {
        let out = run_brook(&args).await;
        assert_one_error_line(&out, 2, needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_1_with_one_line() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let uri =
        format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300");
    let out = run_brook(&["tail", &uri, NS]).await;
    assert_one_error_line(&out, 1, "cannot connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_goes_to_stdout_and_exits_0() {
    for args in [
        vec!["--help"],
        vec!["tail", "--help"],
        vec!["help", "demo-writer"],
    ] {
        let out = run_brook(&args).await;
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: brook"), "{text}");
        assert!(out.stderr.is_empty());
    }
    let out = run_brook(&["tail", "-h"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("--resume-file <PATH>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writer_inserts_updates_and_deletes() {
    let server = server().await;
    let uri = server.uri();
    let out = run_brook(&[
        "demo-writer",
        &uri,
        "demo.events",
        "--count",
        "8",
        "--interval-ms",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "brook demo-writer: 8 writes to demo.events (4 inserts, 2 updates, 2 deletes)"
    );
    let names: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| matches!(c.name.as_str(), "insert" | "update" | "delete"))
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [
            "insert", "insert", "update", "delete", "insert", "insert", "update", "delete"
        ]
    );
    let inserts = server.commands_named("insert");
    assert!(inserts.iter().all(|c| c.db == "demo"));
    assert_eq!(inserts[0].body.get_str("insert").ok(), Some("events"));
}

/// The token in a resume file, `None` while there is no file yet.
fn resume_file_token(path: &std::path::Path) -> Option<Document> {
    path.exists().then(|| read_resume_file(path).0)
}

/// The file's inode: a new one after every save (a new file is renamed over it).
fn inode(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

fn spawn_brook(args: &[&str]) -> std::process::Child {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    brook_command(&args).spawn().expect("spawn brook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_periods_move_the_resume_file_at_most_once_a_second() {
    let dir = temp_dir("quiet");
    let file = dir.join("pos.json");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    // The default replies: an open cursor, then empty getMores (after the 20 ms the
    // command asks for), each with a later postBatchResumeToken: what a server sends
    // while a $match filters every event out.
    let server = server().await;
    let uri = server.uri();
    let child = spawn_brook(&[
        "tail",
        &uri,
        NS,
        "--pipeline",
        r#"[{"$match": {"operationType": "drop"}}]"#,
        "--max-await-time",
        "20",
        "--resume-file",
        &file_arg,
    ]);
    let pid = child.id();
    // Every save renames a new file over the old one: a new inode.
    let mut tokens = Vec::new();
    let mut inodes = Vec::new();
    let mut observe = |tokens: &mut Vec<Document>| {
        if let (Some(token), Some(ino)) = (resume_file_token(&file), inode(&file))
            && inodes.last() != Some(&ino)
        {
            inodes.push(ino);
            tokens.push(token);
            return true;
        }
        false
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !observe(&mut tokens) {
        assert!(tokio::time::Instant::now() < deadline, "no resume file");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From the first save, 3.2 s: about one save a second, although a new token came
    // every ~20 ms.
    let first_save = tokio::time::Instant::now();
    while first_save.elapsed() < Duration::from_millis(3200) {
        observe(&mut tokens);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stop 400 ms after a save: tokens came since, which only the save at exit keeps.
    while !observe(&mut tokens) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no save after 3.2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    kill(pid, "TERM");
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "no event was printed");
    let get_mores = server.commands_named("getMore").len();
    assert!(
        get_mores > 40,
        "{get_mores} getMores: the stream kept polling"
    );
    // Saved at the first empty batch, then at most once a second: 4 or 5 saves in the
    // 3.2 s (and a bit) watched, where a save per batch would have made over 100.
    assert!(
        (4..=6).contains(&tokens.len()),
        "{} saves in about 3.6 s ({get_mores} getMores): {tokens:?}",
        tokens.len()
    );
    for pair in tokens.windows(2) {
        assert_ne!(pair[0], pair[1], "each save moved the token");
    }
    // At exit the last token the stream had is saved, past what was seen while running.
    let last = read_resume_file(&file);
    assert!(!last.1, "not an invalidate");
    assert_ne!(Some(&last.0), tokens.last(), "saved again at exit");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_that_filters_everything_still_moves_the_resume_file_on_nx_27017() {
    let peer = crate::peer::Peer::start("quiet");
    let dir = temp_dir("quiet-nx");
    let file = dir.join("pos.json");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    let db_name = format!("brook_cli_quiet_{}", std::process::id());
    let ns = format!("{db_name}.items");
    let client = brook::Client::connect(peer.uri()).await.expect("connect");
    let items = client.database(&db_name).collection::<Document>("items");
    items
        .insert_one(doc! { "n": 0 })
        .await
        .expect("create the collection");

    let child = spawn_brook(&[
        "tail",
        peer.uri(),
        &ns,
        "--pipeline",
        r#"[{"$match": {"operationType": "delete"}}]"#,
        "--max-await-time",
        "100",
        "--resume-file",
        &file_arg,
    ]);
    let pid = child.id();
    // Inserts only: the stream prints nothing, yet its token follows them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(token) = resume_file_token(&file) {
            break token;
        }
        assert!(tokio::time::Instant::now() < deadline, "no resume file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut n = 1;
    let moved = loop {
        items.insert_one(doc! { "n": n }).await.expect("insert");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        match resume_file_token(&file) {
            Some(token) if token != first => break token,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token stayed {first:?} after {n} inserts"
        );
    };
    kill(pid, "TERM");
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "printed: {:?}", stdout_lines(&out));
    assert_ne!(moved, first);
    client
        .database(&db_name)
        .run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop the test database");
    client.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_file_that_cannot_be_written_is_refused_before_connecting() {
    let server = server().await;
    let uri = server.uri();
    let dir = temp_dir("refused");
    let missing = dir.join("no-such-dir").join("pos.json");
    let missing_arg = missing.to_str().expect("UTF-8 path").to_owned();
    let mut cases = vec![
        (
            "/nonexistent-dir/x",
            "the directory /nonexistent-dir does not exist",
        ),
        (missing_arg.as_str(), "no-such-dir does not exist"),
    ];
    // sysfs takes no new files, not even root's (permission bits would not stop root).
    if std::path::Path::new("/sys/kernel").is_dir() {
        cases.push((
            "/sys/brook-pos.json",
            "cannot create files in the directory /sys",
        ));
    }
    for (path, reason) in cases {
        let out = run_brook(&["tail", &uri, NS, "--resume-file", path]).await;
        assert_one_error_line(&out, 2, &format!("--resume-file: checkpoint file {path}: "));
        assert!(stderr(&out).contains(reason), "{}", stderr(&out));
    }
    assert_eq!(server.connections_accepted(), 0, "no connection was made");
    assert!(!missing.exists());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_file_is_saved_at_exit_after_count() {
    let dir = temp_dir("count-exit");
    let file = dir.join("pos.json");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    let events = three_events();
    let server = server().await;
    server.push_action(
        "aggregate",
        first_batch(events.clone(), Some(post_batch_resume_token(ts(3)))),
    );
    let uri = server.uri();
    let out = run_brook(&["tail", &uri, NS, "--resume-file", &file_arg, "--count", "2"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 2);
    // The batch was cut after its second event: the token is that event's _id, not the
    // batch's postBatchResumeToken (the third event was never printed).
    let second_id = events[1].get_document("_id").expect("_id").clone();
    assert_eq!(read_resume_file(&file), (second_id, false));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The JSON lines of `--stats-every`, each checked for its fields.
fn stats_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    const FIELDS: [&str; 9] = [
        "ts",
        "events",
        "events_per_second",
        "get_mores",
        "resumes",
        "failed_resumes",
        "lag_ms",
        "server_lag_ms",
        "server",
    ];
    stderr(out)
        .lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let keys: Vec<&str> = value
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            // serde_json keeps the order of the line (preserve_order).
            assert_eq!(keys, FIELDS, "{line}");
            assert!(
                line.starts_with(r#"{"ts":""#) && line.find("\"server\"") > line.find("\"lag_ms\""),
                "fields in order: {line}"
            );
            let ts = value["ts"].as_str().expect("ts is a string");
            assert_eq!(ts.len(), "2026-12-02T02:26:09.123Z".len(), "{ts}");
            assert!(
                ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
                "{ts}"
            );
            for counter in ["events", "get_mores", "resumes", "failed_resumes"] {
                assert!(value[counter].is_u64(), "{counter}: {line}");
            }
            assert!(value["events_per_second"].is_number(), "{line}");
            for maybe in ["lag_ms", "server_lag_ms"] {
                assert!(
                    value[maybe].is_u64() || value[maybe].is_null(),
                    "{maybe}: {line}"
                );
            }
            assert!(
                value["server"].is_string() || value["server"].is_null(),
                "{line}"
            );
            value
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_every_writes_json_lines_when_stderr_is_not_a_terminal() {
    // Two events then quiet: a line every second, and one at exit.
    let quiet = server().await;
    quiet.push_action(
        "aggregate",
        first_batch(
            three_events()[..2].to_vec(),
            Some(post_batch_resume_token(ts(2))),
        ),
    );
    let uri = quiet.uri();
    let child = spawn_brook(&[
        "tail",
        &uri,
        NS,
        "--max-await-time",
        "100",
        "--stats-every",
        "1",
    ]);
    let pid = child.id();
    // From the stream's first getMore (the loop runs), 2.5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while quiet.commands_named("getMore").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no getMore");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill(pid, "TERM");
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 2);
    let lines = stats_lines(&out);
    assert!(
        (3..=4).contains(&lines.len()),
        "every second for 2.5 s, and at exit: {lines:?}"
    );
    let last = lines.last().expect("a line at exit");
    assert_eq!(last["events"], 2);
    // The scripted cursor is not one the fake server knows: its getMore fails with
    // CursorNotFound, and the stream resumes once (to a cursor of the server's own).
    assert_eq!(last["resumes"], 1);
    assert_eq!(last["failed_resumes"], 0);
    assert!(last["get_mores"].as_u64().is_some_and(|n| n >= 1), "{last}");
    assert!(last["lag_ms"].is_u64(), "the events had wall times: {last}");
    assert_eq!(last["server"], quiet.host_port().as_str());

    // --count: the line at exit alone, with what was printed.
    let counted = server().await;
    counted.push_action(
        "aggregate",
        first_batch(three_events(), Some(post_batch_resume_token(ts(3)))),
    );
    let uri = counted.uri();
    let out = run_brook(&["tail", &uri, NS, "--count", "3", "--stats-every", "30"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = stats_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["events"], 3);
}
