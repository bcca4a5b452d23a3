//! Property tests: random sequences of replies, failures, cancellations and closes
//! never panic and keep the machine's invariants.

use std::collections::HashMap;

use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target};
use bson::{Document, Timestamp, doc};
use proptest::prelude::*;

use crate::harness::{cursor_reply, reply, shared};

#[derive(Debug, Clone)]
enum Ev {
    Good,
    NoId,
    Invalidate,
}

#[derive(Debug, Clone)]
enum Step {
    Command,
    Event,
    AggOk {
        server: u8,
        wire: i32,
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
    Fail {
        kind: u8,
        code: i32,
        label: bool,
        wire: Option<i32>,
    },
    /// A reply that is a failure: `ok: 0` (with `code`, and the resumable label when
    /// `label`), or, when `malformed`, a body without a cursor.
    ReplyErr {
        malformed: bool,
        code: i32,
        label: bool,
        wire: i32,
    },
    Abandon,
    Close,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![8 => Just(Ev::Good), 1 => Just(Ev::NoId), 1 => Just(Ev::Invalidate)]
}

fn step() -> impl Strategy<Value = Step> {
    let wire = prop::sample::select(vec![6, 7, 8, 9, 17]);
    let code = prop::sample::select(vec![6, 43, 63, 91, 216, 280, 286, 50, 11600]);
    prop_oneof![
        6 => Just(Step::Command),
        6 => Just(Step::Event),
        3 => (0u8..3, wire.clone(), prop::bool::weighted(0.1), prop::collection::vec(ev(), 0..4), any::<bool>(), any::<bool>())
            .prop_map(|(server, wire, exhausted, batch, pbrt, optime)| Step::AggOk { server, wire, exhausted, batch, pbrt, optime }),
        4 => (prop::bool::weighted(0.1), prop::collection::vec(ev(), 0..4), any::<bool>())
            .prop_map(|(exhausted, batch, pbrt)| Step::GmOk { exhausted, batch, pbrt }),
        3 => (0u8..5, code.clone(), any::<bool>(), prop::option::of(wire.clone()))
            .prop_map(|(kind, code, label, wire)| Step::Fail { kind, code, label, wire }),
        2 => (any::<bool>(), code, any::<bool>(), wire)
            .prop_map(|(malformed, code, label, wire)| Step::ReplyErr { malformed, code, label, wire }),
        1 => Just(Step::Abandon),
        1 => Just(Step::Close),
    ]
}

fn options() -> impl Strategy<Value = ChangeStreamOptions> {
    (0u8..4).prop_map(|k| {
        let mut o = ChangeStreamOptions::default();
        match k {
            1 => o.resume_after = Some(shared(doc! { "_data": "ra" })),
            2 => o.start_after = Some(shared(doc! { "_data": "sa" })),
            3 => {
                o.start_at_operation_time = Some(Timestamp {
                    time: 1,
                    increment: 1,
                })
            }
            _ => {}
        }
        o
    })
}

/// Runs one random script, checking the invariants after each step.
fn run(options: ChangeStreamOptions, steps: Vec<Step>) {
    let initial = options
        .start_after
        .clone()
        .or(options.resume_after.clone())
        .map(|t| t.to_document().unwrap());
    let mut m: ChangeStreamMachine<u8> =
        ChangeStreamMachine::new(Target::collection("db", "coll"), options);
    let mut serial = 0u32;
    // Tokens the cached token may equal now.
    let mut allowed: Vec<Document> = initial.into_iter().collect();
    let mut cursor_servers: HashMap<i64, u8> = HashMap::new();
    let mut next_id = 100i64;
    let mut aggregate_ok_since_resume = true;
    let mut resumes = 0;
    let mut was_closed = false;
    let mut error_seen = false;
    let mut pending_batch_pbrt: Option<Document> = None;
    // Whether the last aggregate-or-getMore handed out was the aggregate: a reply
    // answers whichever is in flight.
    let mut aggregate_handed_out = false;

    let batch_docs = |batch: &[Ev], serial: &mut u32| -> Vec<Document> {
        batch
            .iter()
            .map(|e| {
                *serial += 1;
                let id = doc! { "_data": format!("e{serial}") };
                match e {
                    Ev::Good => doc! { "_id": id, "operationType": "insert" },
                    Ev::NoId => doc! { "operationType": "insert" },
                    Ev::Invalidate => doc! { "_id": id, "operationType": "invalidate" },
                }
            })
            .collect()
    };

    for step in steps {
        let in_flight_before = m.command_in_flight();
        let resumes_before = m.resume_count();
        // Whether the reply of this step was taken: it answered the command in flight
        // without closing the stream or making it resume.
        let taken = |m: &ChangeStreamMachine<u8>| {
            in_flight_before
                && !m.command_in_flight()
                && !m.is_closed()
                && m.resume_count() == resumes_before
        };
        match step {
            Step::Command => {
                if let Some(out) = m.poll_command() {
                    assert!(out.build().is_ok());
                    match &out {
                        Outgoing::KillCursors {
                            server, command, ..
                        } => {
                            for id in &command.ids {
                                assert_eq!(
                                    cursor_servers.get(id),
                                    Some(server),
                                    "kill on its own server"
                                );
                            }
                        }
                        Outgoing::GetMore {
                            server, command, ..
                        } => {
                            assert!(!was_closed, "no getMore once closed");
                            assert_eq!(cursor_servers.get(&command.id), Some(server));
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
                let buffered = m.has_buffered_events();
                match m.poll_event() {
                    Some(Ok(e)) => {
                        assert!(!was_closed);
                        let id = e
                            .to_document()
                            .unwrap()
                            .get_document("_id")
                            .unwrap()
                            .clone();
                        allowed = vec![id];
                        allowed.extend(pending_batch_pbrt.clone());
                    }
                    Some(Err(_)) => {
                        assert!(!error_seen, "one error at most");
                        error_seen = true;
                        assert!(m.is_closed());
                    }
                    None => assert!(!buffered || was_closed),
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
                let docs = batch_docs(&batch, &mut serial);
                let empty = docs.is_empty();
                let token = pbrt.then(|| doc! { "_data": format!("p{next_id}") });
                let reply = cursor_reply(
                    true,
                    id,
                    "db.coll",
                    docs,
                    token.clone(),
                    optime.then_some(Timestamp {
                        time: 5,
                        increment: 1,
                    }),
                );
                // Ids are unique per reply: whichever command this answers (the
                // aggregate, an orphan aggregate after close, or a getMore, which then
                // refuses a foreign id), the cursor lives on `server`.
                cursor_servers.insert(id, server);
                m.handle_reply(server, wire, reply);
                if taken(&m) {
                    if aggregate_handed_out {
                        aggregate_ok_since_resume = true;
                    }
                    pending_batch_pbrt = token.clone();
                    if empty && let Some(t) = token {
                        allowed.push(t);
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
                let docs = batch_docs(&batch, &mut serial);
                let empty = docs.is_empty();
                let token = pbrt.then(|| doc! { "_data": format!("q{serial}") });
                // A driver answers on the cursor's server. Should an aggregate be in
                // flight instead, this reply is taken as its reply (the machine knows
                // what it asked for): the cursor it names then lives on that server.
                let server = m.cursor_server().copied().unwrap_or(0);
                if id != 0 {
                    cursor_servers.entry(id).or_insert(server);
                }
                m.handle_reply(
                    server,
                    9,
                    cursor_reply(false, id, "db.coll", docs, token.clone(), None),
                );
                if taken(&m) {
                    if aggregate_handed_out {
                        aggregate_ok_since_resume = true;
                    }
                    pending_batch_pbrt = token.clone();
                    if empty && let Some(t) = token {
                        allowed.push(t);
                    }
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
                let failure = match kind {
                    0 => Failure::Network,
                    1 => Failure::Timeout,
                    2 => Failure::Client,
                    3 => Failure::Protocol,
                    _ => Failure::server(code, labels),
                };
                m.handle_failure(failure, wire);
            }
            Step::ReplyErr {
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
                m.handle_reply(server, wire, reply(&body));
            }
            Step::Abandon => m.handle_abandoned(),
            Step::Close => m.close(),
        }

        // Closed is final.
        if was_closed {
            assert!(m.is_closed() && !m.is_alive());
            assert!(!m.command_in_flight());
        }
        was_closed = m.is_closed();
        // Never two resumes without a successful aggregate between them.
        let now = m.resume_count();
        if now > resumes {
            assert_eq!(now, resumes + 1);
            assert!(
                aggregate_ok_since_resume,
                "two resumes without a successful aggregate"
            );
            aggregate_ok_since_resume = false;
            resumes = now;
        }
        // The token is the last handed-out event's _id, or a pbrt that came after it
        // (or the token the stream started with).
        match m.resume_token() {
            Some(t) => {
                let t = t.to_document().unwrap();
                assert!(allowed.contains(&t), "token {t} not in {allowed:?}");
            }
            None => assert!(allowed.is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_scripts_keep_the_invariants(options in options(), steps in prop::collection::vec(step(), 0..60)) {
        run(options, steps);
    }
}

/// A long, mostly well-behaved run: a driver loop against a server that fails often.
#[test]
fn a_driver_loop_against_a_flaky_server() {
    let mut steps = Vec::new();
    for i in 0..400u32 {
        steps.push(Step::Event);
        steps.push(Step::Command);
        steps.push(match i % 7 {
            0 => Step::AggOk {
                server: (i % 3) as u8,
                wire: 9,
                exhausted: false,
                batch: vec![Ev::Good],
                pbrt: i % 2 == 0,
                optime: true,
            },
            1 | 2 => Step::GmOk {
                exhausted: false,
                batch: vec![Ev::Good, Ev::Good],
                pbrt: true,
            },
            // A malformed reply or a CursorNotFound reply: both resume from a getMore.
            4 => Step::ReplyErr {
                malformed: i % 2 == 0,
                code: 43,
                label: false,
                wire: 9,
            },
            3 => Step::Fail {
                kind: 4,
                code: 43,
                label: false,
                wire: None,
            },
            5 => Step::Fail {
                kind: 0,
                code: 0,
                label: false,
                wire: None,
            },
            _ => Step::Abandon,
        });
    }
    run(ChangeStreamOptions::default(), steps);
}
