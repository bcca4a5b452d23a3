//! Fuzz target `changestream_machine`: brook-changestream's state machine driven by
//! arbitrary sequences of replies (with arbitrary batches, some with raw fuzzed bytes),
//! failures, cancellations and closes. Checks that nothing panics and that the
//! machine's invariants hold: closed is final, never two resumes without a successful
//! aggregate between them, the cached token is the last handed-out event's `_id` or a
//! postBatchResumeToken that came after it, and `killCursors`/`getMore` go to the
//! cursor's own server.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target};
use brook_command::{CursorReply, SharedDoc};
use bson::{Bson, Document, Timestamp, doc};

#[derive(Debug, Arbitrary)]
enum Ev {
    Good,
    NoId,
    IdNotDocument,
    Invalidate,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Command,
    Event,
    AggOk {
        server: u8,
        wire: u8,
        exhausted: bool,
        batch: Vec<Ev>,
        pbrt: bool,
        optime: bool,
    },
    GmOk {
        exhausted: bool,
        batch: Vec<Ev>,
        pbrt: bool,
    },
    /// A reply body made of fuzzed bytes: parsed like a driver would, and fed only if
    /// it parses.
    RawReply {
        aggregate: bool,
        bytes: Vec<u8>,
    },
    Fail {
        kind: u8,
        code: i32,
        label: bool,
        wire: Option<u8>,
    },
    Abandon,
    Close,
}

#[derive(Debug, Arbitrary)]
struct Script {
    start: u8,
    steps: Vec<Step>,
}

fn reply(
    first: bool,
    id: i64,
    batch: Vec<Document>,
    pbrt: Option<Document>,
    optime: bool,
) -> Option<CursorReply> {
    let key = if first { "firstBatch" } else { "nextBatch" };
    let mut cursor = doc! { "id": id, "ns": "db.coll" };
    cursor.insert(
        key,
        batch.into_iter().map(Bson::Document).collect::<Vec<_>>(),
    );
    if let Some(t) = pbrt {
        cursor.insert("postBatchResumeToken", t);
    }
    let mut body = doc! { "cursor": cursor, "ok": 1 };
    if optime {
        body.insert(
            "operationTime",
            Timestamp {
                time: 5,
                increment: 1,
            },
        );
    }
    let shared = SharedDoc::from_document(&body).ok()?;
    CursorReply::parse("getMore", &shared).ok()
}

libfuzzer_sys::fuzz_target!(|script: Script| {
    let mut options = ChangeStreamOptions::default();
    let mut allowed: Vec<Document> = Vec::new();
    match script.start % 4 {
        1 => {
            options.resume_after = SharedDoc::from_document(&doc! { "_data": "ra" }).ok();
            allowed.push(doc! { "_data": "ra" });
        }
        2 => {
            options.start_after = SharedDoc::from_document(&doc! { "_data": "sa" }).ok();
            allowed.push(doc! { "_data": "sa" });
        }
        3 => {
            options.start_at_operation_time = Some(Timestamp {
                time: 1,
                increment: 1,
            })
        }
        _ => {}
    }
    let mut m: ChangeStreamMachine<u8> =
        ChangeStreamMachine::new(Target::collection("db", "coll"), options);
    let mut servers: HashMap<i64, u8> = HashMap::new();
    let mut next_id = 100i64;
    let mut serial = 0u64;
    let mut batch_pbrt: Option<Document> = None;
    let mut aggregate_ok = true;
    let mut resumes = 0;
    let mut was_closed = false;
    // Replies made of fuzzed bytes are beyond the token bookkeeping: after one, the
    // token invariant is no longer checked.
    let mut track_tokens = true;

    for step in script.steps.into_iter().take(256) {
        let in_flight = m.command_in_flight() && !m.is_closed();
        let mut docs = |batch: Vec<Ev>| -> Vec<Document> {
            batch
                .into_iter()
                .take(16)
                .map(|e| {
                    serial += 1;
                    let id = doc! { "_data": format!("e{serial}") };
                    match e {
                        Ev::Good => doc! { "_id": id, "operationType": "insert" },
                        Ev::NoId => doc! { "operationType": "insert" },
                        Ev::IdNotDocument => doc! { "_id": 1, "operationType": "insert" },
                        Ev::Invalidate => doc! { "_id": id, "operationType": "invalidate" },
                    }
                })
                .collect()
        };
        match step {
            Step::Command => {
                if let Some(out) = m.poll_command() {
                    let _ = out.build();
                    match &out {
                        Outgoing::KillCursors {
                            server, command, ..
                        } => {
                            for id in &command.ids {
                                assert_eq!(servers.get(id), Some(server));
                            }
                        }
                        Outgoing::GetMore {
                            server, command, ..
                        } => {
                            assert!(!was_closed);
                            assert_eq!(servers.get(&command.id), Some(server));
                        }
                        _ => assert!(!was_closed),
                    }
                }
            }
            Step::Event => {
                if let Some(Ok(event)) = m.poll_event() {
                    assert!(!was_closed);
                    if let Ok(Some(id)) = event.as_raw().get_document("_id").map(Some)
                        && let Ok(id) = Document::try_from(id)
                    {
                        allowed = vec![id];
                        allowed.extend(batch_pbrt.clone());
                    }
                }
            }
            Step::AggOk {
                server,
                wire,
                exhausted,
                batch,
                pbrt,
                optime,
            } => {
                let id = if exhausted { 0 } else { next_id };
                next_id += 1;
                let batch = docs(batch);
                let empty = batch.is_empty();
                let token = pbrt.then(|| doc! { "_data": format!("p{next_id}") });
                if let Some(r) = reply(true, id, batch, token.clone(), optime) {
                    let server = server % 4;
                    // Ids are unique per reply: a cursor opened by an aggregate that was
                    // in flight when the stream closed is killed on this server too.
                    servers.insert(id, server);
                    m.handle_aggregate_reply(server, i32::from(wire % 30), r);
                    if in_flight && !m.command_in_flight() {
                        aggregate_ok = true;
                        batch_pbrt = token.clone();
                        if empty && let Some(t) = token {
                            allowed.push(t);
                        }
                    }
                }
            }
            Step::GmOk {
                exhausted,
                batch,
                pbrt,
            } => {
                let id = if exhausted {
                    0
                } else {
                    m.cursor_id().unwrap_or(1)
                };
                let batch = docs(batch);
                let empty = batch.is_empty();
                let token = pbrt.then(|| doc! { "_data": format!("q{serial}") });
                if let Some(r) = reply(false, id, batch, token.clone(), false) {
                    m.handle_get_more_reply(r);
                    if in_flight && !m.command_in_flight() {
                        batch_pbrt = token.clone();
                        if empty && let Some(t) = token {
                            allowed.push(t);
                        }
                    }
                }
            }
            Step::RawReply { aggregate, bytes } => {
                // Fuzzed bytes reach the machine only through the real parser.
                let Ok(doc) = SharedDoc::from_bytes(bytes::Bytes::from(bytes)) else {
                    continue;
                };
                let Ok(r) = CursorReply::parse("getMore", &doc) else {
                    continue;
                };
                track_tokens = false;
                if aggregate {
                    servers.entry(r.id).or_insert(0);
                    m.handle_aggregate_reply(0, 9, r);
                    if in_flight && !m.command_in_flight() {
                        aggregate_ok = true;
                    }
                } else {
                    m.handle_get_more_reply(r);
                }
            }
            Step::Fail {
                kind,
                code,
                label,
                wire,
            } => {
                let labels: &[&str] = if label {
                    &["ResumableChangeStreamError"]
                } else {
                    &[]
                };
                let failure = match kind % 4 {
                    0 => Failure::Network("n".into()),
                    1 => Failure::Timeout("t".into()),
                    2 => Failure::Client("c".into()),
                    _ => Failure::server(code, labels),
                };
                m.handle_failure(failure, wire.map(|w| i32::from(w % 30)));
            }
            Step::Abandon => m.handle_abandoned(),
            Step::Close => m.close(),
        }

        if was_closed {
            assert!(m.is_closed() && !m.is_alive() && !m.command_in_flight());
        }
        was_closed = m.is_closed();
        let now = m.resume_count();
        if now > resumes {
            assert_eq!(now, resumes + 1);
            assert!(aggregate_ok, "two resumes without a successful aggregate");
            aggregate_ok = false;
            resumes = now;
        }
        if track_tokens && let Some(t) = m.resume_token().and_then(|t| t.to_document().ok()) {
            assert!(allowed.contains(&t), "token {t} not in {allowed:?}");
        }
    }
});
