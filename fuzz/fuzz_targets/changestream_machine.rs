//! Fuzz target `changestream_machine`: brook-changestream's state machine driven by
//! arbitrary sequences of replies (with arbitrary batches, `ok: 0` and malformed ones,
//! some made of raw fuzzed bytes, all parsed by the machine itself), failures of every
//! kind, cancellations and closes. Checks that nothing panics and that the
//! machine's invariants hold: closed is final, never two resumes without a successful
//! aggregate between them, the cached token is the last handed-out event's `_id` or a
//! postBatchResumeToken that came after it, and `killCursors`/`getMore` go to the
//! cursor's own server.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target};
use brook_command::{CursorReply, Reply, SharedDoc};
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
    /// A reply body made of fuzzed bytes, fed as it is (the machine parses it) once it
    /// passes framing, on the connection of wire version `wire`.
    RawReply {
        wire: u8,
        bytes: Vec<u8>,
    },
    /// A reply that is a failure: `ok: 0` with `code` (and the resumable label when
    /// `label`), or, when `malformed`, a body without a cursor.
    ErrReply {
        malformed: bool,
        code: i32,
        label: bool,
        wire: u8,
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
) -> Option<Reply> {
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
    Reply::from_document(&body).ok()
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
    // Every (cursor id, server) a reply was fed with: the only cursors the machine can
    // know of (fuzzed ids may repeat an earlier id on another server).
    let mut servers: HashSet<(i64, u8)> = HashSet::new();
    let mut next_id = 100i64;
    let mut serial = 0u64;
    let mut batch_pbrt: Option<Document> = None;
    let mut aggregate_ok = true;
    let mut resumes = 0;
    let mut was_closed = false;
    // Replies made of fuzzed bytes are beyond the token bookkeeping: after one, the
    // token invariant is no longer checked.
    let mut track_tokens = true;
    // Whether the last aggregate-or-getMore handed out was the aggregate: a reply
    // answers whichever is in flight.
    let mut aggregate_handed_out = false;

    for step in script.steps.into_iter().take(256) {
        let in_flight = m.command_in_flight() && !m.is_closed();
        let resumes_before = m.resume_count();
        // Whether this step's reply was taken: it answered the command in flight
        // without closing the stream or making it resume.
        let taken = |m: &ChangeStreamMachine<u8>| {
            in_flight
                && !m.command_in_flight()
                && !m.is_closed()
                && m.resume_count() == resumes_before
        };
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
                                assert!(servers.contains(&(*id, *server)), "kill {id} on {server}");
                            }
                        }
                        Outgoing::GetMore {
                            server, command, ..
                        } => {
                            assert!(!was_closed);
                            assert!(servers.contains(&(command.id, *server)));
                            aggregate_handed_out = false;
                        }
                        Outgoing::Aggregate { .. } => {
                            assert!(!was_closed);
                            aggregate_handed_out = true;
                        }
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
                    servers.insert((id, server));
                    m.handle_reply(server, i32::from(wire % 30), r);
                    if taken(&m) {
                        if aggregate_handed_out {
                            aggregate_ok = true;
                        }
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
                    // On the cursor's server; should the aggregate be in flight, this
                    // reply answers it, and its cursor lives there.
                    let server = m.cursor_server().copied().unwrap_or(0);
                    if id != 0 {
                        servers.insert((id, server));
                    }
                    m.handle_reply(server, 9, r);
                    if taken(&m) {
                        if aggregate_handed_out {
                            aggregate_ok = true;
                        }
                        batch_pbrt = token.clone();
                        if empty && let Some(t) = token {
                            allowed.push(t);
                        }
                    }
                }
            }
            Step::RawReply { wire, bytes } => {
                // Fuzzed bytes reach the machine as a driver hands them over: framed,
                // not parsed.
                let Ok(doc) = SharedDoc::from_bytes(bytes::Bytes::from(bytes)) else {
                    continue;
                };
                let server = m.cursor_server().copied().unwrap_or(0);
                // The bookkeeping reads the id the machine may adopt.
                if let Ok(r) = CursorReply::parse("getMore", &doc) {
                    servers.insert((r.id, server));
                }
                track_tokens = false;
                m.handle_reply(server, i32::from(wire % 30), Reply::new(doc));
                if taken(&m) && aggregate_handed_out {
                    aggregate_ok = true;
                }
            }
            Step::ErrReply {
                malformed,
                code,
                label,
                wire,
            } => {
                let body = if malformed {
                    doc! { "ok": 1 }
                } else if label {
                    doc! { "ok": 0, "code": code, "errorLabels": ["ResumableChangeStreamError"] }
                } else {
                    doc! { "ok": 0, "code": code }
                };
                let server = m.cursor_server().copied().unwrap_or(0);
                if let Ok(r) = Reply::from_document(&body) {
                    m.handle_reply(server, i32::from(wire % 30), r);
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
                let failure = match kind % 5 {
                    0 => Failure::Network,
                    1 => Failure::Timeout,
                    2 => Failure::Client,
                    3 => Failure::server(code, labels),
                    _ => Failure::Protocol,
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
