//! Held failures: a driver with a resume policy or a history-lost rule answers the
//! failures that would end the stream (`hold_failures`).

use brook_changestream::{ChangeStreamOptions, FailedCommand, Failure, Outgoing};
use bson::{Timestamp, doc};

use crate::harness::*;

fn ts(t: u32) -> Timestamp {
    Timestamp {
        time: t,
        increment: 1,
    }
}

/// A held db.coll stream on "a" (wire 21), cursor 7, after one event `e1` whose
/// getMore then failed resumably: the resume's aggregate is next.
fn resuming() -> H {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.m.hold_failures(true);
    h.agg("a", 21, 7, vec![ev("e1")], None, Some(ts(1)));
    assert_eq!(h.events().len(), 1);
    h.gm_fail(Failure::Network, None);
    h
}

/// Takes the resume's killCursors and aggregate, and fails the aggregate with 10107.
fn fail_resume(h: &mut H) {
    let mut saw_aggregate = false;
    while let Some(out) = h.m.poll_command() {
        if let Outgoing::Aggregate { resume, .. } = &out {
            assert!(*resume);
            let body = out.build().unwrap().body;
            assert_eq!(stage(&body), doc! { "resumeAfter": tok("e1") });
            saw_aggregate = true;
            break;
        }
    }
    assert!(saw_aggregate);
    h.m.handle_failure(
        Failure::server(10107, &["ResumableChangeStreamError"]),
        Some(21),
    );
}

#[test]
fn a_failed_resume_is_held_and_retry_resume_tries_again_from_the_same_token() {
    let mut h = resuming();
    assert!(h.m.resume_cause().is_some());
    fail_resume(&mut h);
    let held = h.m.held_failure().expect("held");
    assert_eq!(held.command, FailedCommand::Aggregate);
    assert!(held.during_resume);
    assert_eq!(held.error.server_error().and_then(|e| e.code), Some(10107));
    // Held: alive, nothing to send, nothing to hand out.
    assert!(h.m.is_alive());
    assert!(!h.m.is_closed());
    h.expect_none();
    assert!(h.events().is_empty());
    h.m.retry_resume();
    assert!(h.m.held_failure().is_none());
    assert_eq!(h.m.resume_count(), 2);
    fail_resume(&mut h);
    h.m.retry_resume();
    let body = h.agg("b", 21, 8, vec![ev("e2")], None, None);
    assert_eq!(stage(&body), doc! { "resumeAfter": tok("e1") });
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.token(), Some(tok("e2")));
}

#[test]
fn give_up_hands_out_the_held_error_and_closes() {
    let mut h = resuming();
    fail_resume(&mut h);
    h.m.give_up();
    let events = h.events();
    assert_eq!(events.len(), 1);
    let err = events[0].as_ref().expect_err("the error");
    assert_eq!(err.server_error().and_then(|e| e.code), Some(10107));
    assert!(h.m.is_closed());
    assert_eq!(h.token(), Some(tok("e1")), "the token is kept");
}

#[test]
fn restart_from_now_drops_the_token_and_every_start_option() {
    let mut h = H::coll(ChangeStreamOptions {
        resume_after: Some(shared(tok("old"))),
        ..Default::default()
    });
    h.m.hold_failures(true);
    let (_, body, _) = h.next();
    assert_eq!(stage(&body), doc! { "resumeAfter": tok("old") });
    h.m.handle_failure(Failure::server(286, &[]), Some(21));
    let held = h.m.held_failure().expect("held");
    assert!(!held.during_resume, "the initial aggregate");
    h.m.restart_from_now();
    assert_eq!(h.token(), None);
    let body = h.agg("a", 21, 9, vec![], Some(tok("now")), Some(ts(9)));
    assert_eq!(stage(&body), doc! {}, "from now");
    assert_eq!(h.token(), Some(tok("now")));
    // A later resume uses the new token.
    h.gm_fail(Failure::Network, None);
    let mut resumed = None;
    while let Some(out) = h.m.poll_command() {
        if matches!(out, Outgoing::Aggregate { .. }) {
            resumed = Some(out.build().unwrap().body);
            break;
        }
    }
    assert_eq!(stage(&resumed.unwrap()), doc! { "resumeAfter": tok("now") });
}

#[test]
fn a_fatal_get_more_error_is_held_too_and_without_hold_closes_at_once() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.m.hold_failures(true);
    h.agg("a", 21, 7, vec![], Some(tok("p0")), None);
    h.gm_fail(Failure::server(286, &[]), None);
    let held = h.m.held_failure().expect("held");
    assert_eq!(held.command, FailedCommand::GetMore);
    assert!(!held.during_resume);
    h.m.restart_from_now();
    // The old cursor is killed before the restart's aggregate.
    let (server, body, _) = h.next();
    assert_eq!(server, Some("a"));
    assert_eq!(body.get_str("killCursors").ok(), Some("coll"));
    let body = h.agg("a", 21, 8, vec![], None, None);
    assert_eq!(stage(&body), doc! {});

    let mut plain = H::coll(ChangeStreamOptions::default());
    plain.agg("a", 21, 7, vec![], Some(tok("p0")), None);
    plain.gm_fail(Failure::server(286, &[]), None);
    assert!(plain.m.held_failure().is_none());
    assert!(plain.m.is_closed());
}

#[test]
fn close_drops_a_held_failure() {
    let mut h = resuming();
    fail_resume(&mut h);
    h.m.close();
    assert!(h.m.held_failure().is_none());
    assert!(h.events().is_empty(), "closed by the user: no error");
    h.m.retry_resume();
    assert!(h.m.is_closed());
}
