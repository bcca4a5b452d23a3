//! Transcript tests: a script plays the server; one test per rule of the Change
//! Streams specification (see CHANGE-STREAM-RULES.md).

use std::time::Duration;

use brook_changestream::{
    ChangeStreamError, ChangeStreamOptions, FailedCommand, Failure, Outgoing, RESUMABLE_CODES,
    RESUMABLE_LABEL, Target,
};
use brook_command::SharedDoc;
use bson::{Bson, Timestamp, doc};

use crate::harness::*;

fn ts(t: u32) -> Timestamp {
    Timestamp {
        time: t,
        increment: 1,
    }
}

/// Opens a db.coll stream on server "a" at `wire` with an empty first batch carrying
/// pbrt `{_data: "p0"}`, cursor 7.
fn opened(wire: i32) -> H {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("a", wire, 7, vec![], Some(tok("p0")), Some(ts(1)));
    h
}

#[test]
fn initial_aggregate_and_get_more_shapes() {
    let mut h = H::coll(ChangeStreamOptions {
        max_await_time: Some(Duration::from_millis(1500)),
        ..Default::default()
    });
    assert!(h.m.wants_command());
    // maxAwaitTimeMS never goes on the aggregate.
    let body = h.agg("a", 9, 7, vec![], None, None);
    assert_eq!(body, agg_doc(doc! {}));
    assert!(h.m.is_alive());
    assert_eq!(h.m.cursor_server(), Some(&"a"));
    h.expect(
        Some("a"),
        doc! { "getMore": 7i64, "collection": "coll", "maxTimeMS": 1500, "$db": "db" },
    );
    assert!(h.m.command_in_flight());
    // Nothing else while the getMore is in flight.
    h.expect_none();
}

#[test]
fn database_target_aggregates_on_one_and_uses_the_reply_namespace() {
    let mut h = H::new(Target::database("shop"), ChangeStreamOptions::default());
    let body = h.agg("a", 9, 5, vec![], None, None);
    assert_eq!(
        body,
        doc! { "aggregate": 1, "pipeline": [{ "$changeStream": {} }], "cursor": {}, "$db": "shop" }
    );
    h.expect(
        Some("a"),
        doc! { "getMore": 5i64, "collection": "$cmd.aggregate", "$db": "shop" },
    );
}

#[test]
fn cluster_target_runs_on_admin_with_all_changes_for_cluster() {
    let mut h = H::new(Target::Cluster, ChangeStreamOptions::default());
    let body = h.agg("a", 9, 5, vec![], None, None);
    assert_eq!(
        body,
        doc! {
            "aggregate": 1,
            "pipeline": [{ "$changeStream": { "allChangesForCluster": true } }],
            "cursor": {},
            "$db": "admin",
        }
    );
    h.expect(
        Some("a"),
        doc! { "getMore": 5i64, "collection": "$cmd.aggregate", "$db": "admin" },
    );
}

#[test]
fn every_option_lands_under_its_name() {
    let mut h = H::coll(ChangeStreamOptions {
        pipeline: vec![
            doc! { "$match": { "x": 1 } },
            doc! { "$project": { "y": 0 } },
        ],
        full_document: Some("updateLookup".into()),
        // Unknown values pass through.
        full_document_before_change: Some("someFutureValue".into()),
        show_expanded_events: Some(true),
        batch_size: Some(10),
        collation: Some(doc! { "locale": "fr" }),
        comment: Some(Bson::Document(doc! { "who": "me" })),
        read_concern: Some(doc! { "level": "majority" }),
        max_await_time: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let body = h.agg("a", 9, 7, vec![], None, None);
    assert_eq!(
        body,
        doc! {
            "aggregate": "coll",
            "pipeline": [
                { "$changeStream": {
                    "fullDocument": "updateLookup",
                    "fullDocumentBeforeChange": "someFutureValue",
                    "showExpandedEvents": true,
                } },
                { "$match": { "x": 1 } },
                { "$project": { "y": 0 } },
            ],
            "cursor": { "batchSize": 10 },
            "collation": { "locale": "fr" },
            "comment": { "who": "me" },
            "readConcern": { "level": "majority" },
            "$db": "db",
        }
    );
    h.expect(
        Some("a"),
        doc! {
            "getMore": 7i64, "collection": "coll", "batchSize": 10, "maxTimeMS": 2000,
            "comment": { "who": "me" }, "$db": "db",
        },
    );
}

#[test]
fn start_options_are_sent_as_given_without_validation() {
    let mut h = H::coll(ChangeStreamOptions {
        resume_after: Some(shared(tok("r"))),
        start_after: Some(shared(tok("s"))),
        start_at_operation_time: Some(ts(9)),
        ..Default::default()
    });
    let body = h.agg("a", 9, 7, vec![], None, None);
    assert_eq!(
        stage(&body),
        doc! { "resumeAfter": tok("r"), "startAfter": tok("s"), "startAtOperationTime": ts(9) }
    );
}

#[test]
fn comment_on_get_more_only_from_wire_version_nine() {
    for (wire, with_comment) in [(7, false), (8, false), (9, true), (21, true)] {
        let mut h = H::coll(ChangeStreamOptions {
            comment: Some(Bson::String("c".into())),
            ..Default::default()
        });
        let body = h.agg("a", wire, 7, vec![], None, None);
        assert_eq!(body.get_str("comment").unwrap(), "c");
        let mut expected = gm_doc(7);
        if with_comment {
            expected = doc! { "getMore": 7i64, "collection": "coll", "comment": "c", "$db": "db" };
        }
        h.expect(Some("a"), expected);
    }
}

/// Fails the first getMore of an opened stream with `failure` and reports whether the
/// machine resumed (checking the exact commands either way).
fn resumes_after(wire: i32, failure: Failure) -> bool {
    let mut h = opened(wire);
    let (server, body) = h.gm_fail(failure, None);
    assert_eq!((server, body), (Some("a"), gm_doc(7)));
    assert!(!h.m.command_in_flight());
    // Either way the old cursor is killed on its own server.
    h.expect(Some("a"), kill_doc(7));
    if h.m.is_closed() {
        h.expect_none();
        let events = h.events();
        assert_eq!(events.len(), 1);
        assert!(events[0].is_err());
        assert!(!h.m.is_alive());
        assert!(h.m.poll_event().is_none());
        false
    } else {
        h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
        assert_eq!(h.m.resume_count(), 1);
        true
    }
}

#[test]
fn every_allow_listed_code_resumes_below_wire_version_nine() {
    assert_eq!(RESUMABLE_CODES.len(), 17);
    for code in RESUMABLE_CODES {
        assert!(resumes_after(8, Failure::server(code, &[])), "code {code}");
        assert!(resumes_after(6, Failure::server(code, &[])), "code {code}");
    }
    for code in [216, 280, 286, 50, 11601, 136, 237, 2, 13] {
        assert!(!resumes_after(8, Failure::server(code, &[])), "code {code}");
    }
    // The label means nothing below wire version 9.
    assert!(!resumes_after(8, Failure::server(50, &[RESUMABLE_LABEL])));
}

#[test]
fn from_wire_version_nine_the_label_decides() {
    for code in RESUMABLE_CODES {
        // A formerly resumable code without the label is fatal...
        assert!(!resumes_after(9, Failure::server(code, &[])), "code {code}");
        // ... and with it resumes.
        assert!(resumes_after(9, Failure::server(code, &[RESUMABLE_LABEL])));
    }
    assert!(resumes_after(9, Failure::server(50, &[RESUMABLE_LABEL])));
    assert!(resumes_after(17, Failure::server(280, &[RESUMABLE_LABEL])));
    assert!(!resumes_after(
        17,
        Failure::server(50, &["TransientTransactionError"])
    ));
}

#[test]
fn cursor_not_found_always_resumes() {
    for wire in [6, 8, 9, 25] {
        assert!(resumes_after(wire, Failure::server(43, &[])), "wire {wire}");
    }
}

#[test]
fn election_in_progress_and_change_stream_fatal_errors_are_fatal() {
    for wire in [8, 9] {
        for code in [216, 280, 286] {
            let mut h = opened(wire);
            h.gm_fail(Failure::server(code, &[]), None);
            h.expect(Some("a"), kill_doc(7));
            h.expect_none();
            let events = h.events();
            let err = events[0].as_ref().unwrap_err();
            assert_eq!(err.code(), Some(code));
            assert_eq!(err.command(), Some(FailedCommand::GetMore));
            assert!(!err.is_resumable());
            assert!(h.m.is_closed());
        }
    }
}

#[test]
fn the_failing_connection_wire_version_decides() {
    // The cursor was opened at wire 8 but the getMore's connection reports 9: code 6
    // without a label is then fatal.
    let mut h = opened(8);
    h.gm_fail(Failure::server(6, &[]), Some(9));
    assert!(h.m.is_closed());
    let mut h = opened(9);
    h.gm_fail(Failure::server(6, &[]), Some(8));
    assert!(!h.m.is_closed());
}

#[test]
fn network_errors_and_timeouts_resume_on_get_more_only() {
    assert!(resumes_after(9, Failure::Network));
    assert!(resumes_after(9, Failure::Timeout));
    assert!(resumes_after(9, Failure::Protocol));
    assert!(!resumes_after(9, Failure::Client));

    for failure in [
        Failure::Network,
        Failure::Timeout,
        Failure::Protocol,
        Failure::Client,
        Failure::server(43, &[]),
        Failure::server(6, &[RESUMABLE_LABEL]),
    ] {
        let mut h = H::coll(ChangeStreamOptions::default());
        h.expect(None, agg_doc(doc! {}));
        h.m.handle_failure(failure, Some(9));
        // Errors of the initial aggregate are never resumed: no command follows.
        h.expect_none();
        let events = h.events();
        assert_eq!(events.len(), 1);
        let err = events[0].as_ref().unwrap_err();
        assert_eq!(err.command(), Some(FailedCommand::Aggregate));
        assert!(!h.m.is_alive());
    }
}

#[test]
fn empty_first_batch_with_a_post_batch_resume_token() {
    let mut h = H::coll(ChangeStreamOptions::default());
    assert_eq!(h.token(), None);
    h.agg("a", 8, 7, vec![], Some(tok("p0")), Some(ts(3)));
    assert_eq!(h.token(), Some(tok("p0")));
    // With a pbrt, the operationTime is not saved.
    assert_eq!(h.m.saved_operation_time(), None);
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
}

#[test]
fn empty_first_batch_without_a_token_saves_the_operation_time() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("a", 7, 7, vec![], None, Some(ts(3)));
    assert_eq!(h.token(), None);
    assert_eq!(h.m.saved_operation_time(), Some(ts(3)));
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "startAtOperationTime": ts(3) }));
    // The resume's own reply does not replace the saved time.
    h.reply_agg("b", 7, 8, vec![], None, Some(ts(5)));
    assert_eq!(h.m.saved_operation_time(), Some(ts(3)));
}

#[test]
fn operation_time_is_not_saved_below_wire_seven_or_after_events_or_with_start_options() {
    // Wire 6: nothing saved; the resume is the original aggregate.
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("a", 6, 7, vec![], None, Some(ts(3)));
    assert_eq!(h.m.saved_operation_time(), None);
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! {}));

    // A first batch with events.
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("a", 8, 7, vec![ev("1")], None, Some(ts(3)));
    assert_eq!(h.m.saved_operation_time(), None);

    // A start option given.
    let mut h = H::coll(ChangeStreamOptions {
        resume_after: Some(shared(tok("r"))),
        ..Default::default()
    });
    h.agg("a", 8, 7, vec![], None, Some(ts(3)));
    assert_eq!(h.m.saved_operation_time(), None);
}

#[test]
fn start_after_is_resent_until_an_event_is_returned() {
    let opts = ChangeStreamOptions {
        start_after: Some(shared(tok("s"))),
        start_at_operation_time: Some(ts(2)),
        ..Default::default()
    };
    // Resume before any event, no pbrt: startAfter with the original token, and the
    // startAtOperationTime dropped.
    let mut h = H::coll(opts.clone());
    assert_eq!(h.token(), Some(tok("s")));
    let body = h.agg("a", 9, 7, vec![], None, None);
    assert_eq!(
        stage(&body),
        doc! { "startAfter": tok("s"), "startAtOperationTime": ts(2) }
    );
    h.gm_fail(Failure::server(43, &[]), None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "startAfter": tok("s") }));

    // A pbrt before any event: still startAfter, with the pbrt.
    let mut h = H::coll(opts.clone());
    h.agg("a", 9, 7, vec![], Some(tok("p1")), None);
    h.gm_fail(Failure::server(43, &[]), None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "startAfter": tok("p1") }));

    // After an event was returned: resumeAfter.
    let mut h = H::coll(opts);
    h.agg("a", 9, 7, vec![ev("e1")], None, None);
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.token(), Some(tok("e1")));
    h.gm_fail(Failure::server(43, &[]), None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("e1") }));
}

#[test]
fn start_after_buffered_but_not_returned_is_still_start_after() {
    // An event received but not yet handed out does not count as returned.
    let mut h = H::coll(ChangeStreamOptions {
        start_after: Some(shared(tok("s"))),
        ..Default::default()
    });
    h.agg("a", 9, 7, vec![], None, None);
    h.gm(7, vec![], Some(tok("p2")));
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "startAfter": tok("p2") }));
}

#[test]
fn resume_after_given_then_resume() {
    let mut h = H::coll(ChangeStreamOptions {
        resume_after: Some(shared(tok("r"))),
        ..Default::default()
    });
    assert_eq!(h.token(), Some(tok("r")));
    let body = h.agg("a", 8, 7, vec![], None, Some(ts(4)));
    assert_eq!(body, agg_doc(doc! { "resumeAfter": tok("r") }));
    h.gm_fail(Failure::server(89, &[]), None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("r") }));
}

#[test]
fn start_at_operation_time_given_then_resume() {
    let mut h = H::coll(ChangeStreamOptions {
        start_at_operation_time: Some(ts(4)),
        full_document: Some("updateLookup".into()),
        ..Default::default()
    });
    let body = h.agg("a", 8, 7, vec![], None, Some(ts(9)));
    assert_eq!(
        stage(&body),
        doc! { "fullDocument": "updateLookup", "startAtOperationTime": ts(4) }
    );
    // No token: startAtOperationTime again, the given one (the reply's is not saved).
    h.gm_fail(Failure::server(43, &[]), None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(
        None,
        agg_doc(doc! { "fullDocument": "updateLookup", "startAtOperationTime": ts(4) }),
    );
    // Once a token is cached, resumeAfter replaces startAtOperationTime.
    h.reply_agg("a", 8, 8, vec![], Some(tok("p3")), None);
    h.gm_fail(Failure::server(43, &[]), None);
    h.expect(
        Some("a"),
        doc! { "killCursors": "coll", "cursors": [8i64], "$db": "db" },
    );
    h.expect(
        None,
        agg_doc(doc! { "fullDocument": "updateLookup", "resumeAfter": tok("p3") }),
    );
}

#[test]
fn token_after_each_event_and_the_pbrt_after_the_last() {
    let mut h = opened(9);
    assert_eq!(h.token(), Some(tok("p0")));
    h.gm(7, vec![ev("1"), ev("2"), ev("3")], Some(tok("p1")));
    // Received but not handed out: the token has not moved.
    assert_eq!(h.token(), Some(tok("p0")));
    assert!(h.m.has_buffered_events());
    assert!(!h.m.wants_command());
    // No getMore while events are buffered.
    h.expect_none();
    let expected = [tok("1"), tok("2"), tok("p1")];
    for (i, want) in expected.iter().enumerate() {
        let e = h.m.poll_event().unwrap().unwrap();
        assert_eq!(
            e.to_document().unwrap().get_document("_id").unwrap(),
            &tok(&(i + 1).to_string())
        );
        assert_eq!(h.token().as_ref(), Some(want));
    }
    assert!(h.m.poll_event().is_none());
    // A batch without a pbrt: the last event's _id.
    h.gm(7, vec![ev("4"), ev("5")], None);
    h.events();
    assert_eq!(h.token(), Some(tok("5")));
    // An empty batch with a pbrt moves the token; without one it stays.
    h.gm(7, vec![], Some(tok("p2")));
    assert_eq!(h.token(), Some(tok("p2")));
    h.gm(7, vec![], None);
    assert_eq!(h.token(), Some(tok("p2")));
    // A resume after all this uses the latest token.
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p2") }));
}

#[test]
fn an_event_without_an_id_closes_the_stream() {
    for bad in [
        doc! { "operationType": "insert" },
        doc! { "_id": 5, "operationType": "insert" },
    ] {
        let mut h = opened(9);
        h.gm(7, vec![ev("1"), bad, ev("3")], Some(tok("p1")));
        assert!(h.m.poll_event().unwrap().is_ok());
        assert_eq!(h.token(), Some(tok("1")));
        let err = h.m.poll_event().unwrap().unwrap_err();
        assert!(
            matches!(err, ChangeStreamError::MissingResumeToken),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "cannot provide resume functionality when the resume token is missing"
        );
        assert!(h.m.is_closed() && !h.m.is_alive());
        // The rest of the batch is dropped, the cursor killed, the token kept.
        assert!(h.m.poll_event().is_none());
        h.expect(Some("a"), kill_doc(7));
        h.expect_none();
        assert_eq!(h.token(), Some(tok("1")));
    }
}

#[test]
fn invalidate_ends_the_stream() {
    let mut h = opened(9);
    let invalidate = doc! { "_id": { "_data": "inv" }, "operationType": "invalidate" };
    h.gm(0, vec![ev("1"), invalidate.clone()], None);
    assert!(h.m.is_alive());
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].as_ref().unwrap(), &invalidate);
    assert!(!h.m.is_alive());
    assert!(!h.m.is_closed());
    // The token to start again after it (with startAfter) is the invalidate's _id.
    assert_eq!(h.token(), Some(tok("inv")));
    h.expect_none();
    // A cursor left open by the server after an invalidate is killed.
    let mut h = opened(9);
    h.gm(7, vec![invalidate, ev("after")], None);
    assert_eq!(h.events().len(), 1);
    assert!(!h.m.is_alive());
    h.expect(Some("a"), kill_doc(7));
    h.expect_none();
}

#[test]
fn an_exhausted_cursor_ends_after_its_last_event() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("a", 9, 0, vec![ev("1")], None, None);
    assert!(h.m.is_alive());
    h.expect_none();
    assert_eq!(h.events().len(), 1);
    assert!(!h.m.is_alive());
    h.expect_none();
    // Closing an ended stream sends nothing.
    h.m.close();
    h.expect_none();
}

#[test]
fn kill_cursors_goes_to_the_old_cursor_server_only() {
    let mut h = opened(9);
    let (server, _) = h.gm_fail(Failure::server(43, &[]), None);
    assert_eq!(server, Some("a"));
    h.expect(Some("a"), kill_doc(7));
    // The resume lands on another server.
    h.agg("b", 9, 8, vec![], Some(tok("p1")), None);
    assert_eq!(h.m.cursor_server(), Some(&"b"));
    let (server, body) = h.gm_fail(Failure::server(43, &[]), None);
    assert_eq!((server, body), (Some("b"), gm_doc(8)));
    h.expect(Some("b"), kill_doc(8));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p1") }));
}

#[test]
fn resume_once_per_error() {
    for second in [
        Failure::server(6, &[]),
        Failure::server(43, &[]),
        Failure::Network,
    ] {
        let mut h = opened(8);
        h.gm_fail(Failure::server(6, &[]), None);
        h.expect(Some("a"), kill_doc(7));
        h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
        // The resume's aggregate fails: surfaced, no second attempt.
        h.m.handle_failure(second, Some(8));
        h.expect_none();
        let events = h.events();
        assert_eq!(events.len(), 1);
        let err = events[0].as_ref().unwrap_err();
        assert_eq!(err.command(), Some(FailedCommand::Aggregate));
        assert!(h.m.is_closed());
        assert_eq!(h.m.resume_count(), 1);
    }
}

#[test]
fn a_chain_of_resumes_each_succeeding() {
    let mut h = opened(9);
    let servers = ["b", "c", "a"];
    let mut id = 7;
    for (round, server) in servers.iter().enumerate() {
        let old_server = *h.m.cursor_server().unwrap();
        h.gm_fail(Failure::Network, None);
        h.expect(Some(old_server), kill_doc(id));
        // Consecutive resumes without any change in between keep the token.
        let body = h.agg(server, 9, id + 1, vec![], None, None);
        assert_eq!(body, agg_doc(doc! { "resumeAfter": tok("p0") }));
        id += 1;
        assert_eq!(h.m.resume_count(), round as u64 + 1);
    }
    h.gm(id, vec![ev("x")], None);
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.token(), Some(tok("x")));
    assert!(h.m.is_alive());
}

#[test]
fn close_queues_kill_cursors_once_and_is_final() {
    let mut h = opened(9);
    h.gm(7, vec![ev("1")], None);
    h.m.close();
    assert!(h.m.is_closed() && !h.m.is_alive());
    // Buffered events are dropped.
    assert!(h.m.poll_event().is_none());
    h.expect(Some("a"), kill_doc(7));
    h.expect_none();
    h.m.close();
    h.expect_none();
    // Later input is ignored.
    h.m.handle_reply(
        "a",
        9,
        cursor_reply(false, 7, "db.coll", vec![ev("2")], None, None),
    );
    h.m.handle_reply(
        "a",
        9,
        cursor_reply(true, 9, "db.coll", vec![ev("3")], None, None),
    );
    h.m.handle_failure(Failure::server(43, &[]), None);
    h.m.handle_abandoned();
    assert!(h.m.poll_event().is_none());
    h.expect_none();
    assert!(h.m.is_closed());
    assert_eq!(h.token(), Some(tok("p0")));
}

#[test]
fn close_with_a_get_more_in_flight_kills_and_ignores_the_reply() {
    let mut h = opened(9);
    h.expect(Some("a"), gm_doc(7));
    h.m.close();
    h.expect(Some("a"), kill_doc(7));
    h.m.handle_reply(
        "a",
        9,
        cursor_reply(false, 7, "db.coll", vec![ev("1")], None, None),
    );
    assert!(h.m.poll_event().is_none());
    h.expect_none();
}

#[test]
fn close_with_the_aggregate_in_flight_kills_the_cursor_it_opens() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.expect(None, agg_doc(doc! {}));
    h.m.close();
    h.expect_none();
    h.m.handle_reply(
        "b",
        9,
        cursor_reply(true, 11, "db.coll", vec![ev("1")], None, None),
    );
    h.expect(Some("b"), kill_doc(11));
    h.expect_none();
    assert!(h.m.poll_event().is_none());
    assert!(h.m.is_closed());
}

#[test]
fn close_before_anything_sends_nothing() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.m.close();
    h.m.close();
    h.expect_none();
    assert!(h.m.poll_event().is_none());
    assert!(!h.m.is_alive());
}

#[test]
fn an_abandoned_get_more_resumes_and_an_abandoned_aggregate_is_resent() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.expect(None, agg_doc(doc! {}));
    assert!(h.m.command_in_flight());
    h.m.handle_abandoned();
    assert!(!h.m.command_in_flight());
    h.agg("a", 9, 7, vec![], Some(tok("p0")), None);
    assert_eq!(h.m.resume_count(), 0);
    h.expect(Some("a"), gm_doc(7));
    h.m.handle_abandoned();
    assert!(!h.m.command_in_flight());
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
    assert_eq!(h.m.resume_count(), 1);
    // Nothing in flight: abandoning is a no-op.
    h.m.handle_abandoned();
    h.agg("a", 9, 8, vec![], None, None);
    h.m.handle_abandoned();
    assert!(h.m.wants_command());
}

#[test]
fn input_with_nothing_in_flight_is_ignored() {
    let mut h = H::coll(ChangeStreamOptions::default());
    // Nothing in flight yet.
    h.m.handle_reply(
        "z",
        9,
        cursor_reply(true, 3, "db.coll", vec![ev("x")], None, None),
    );
    h.m.handle_reply("z", 9, reply(&doc! { "ok": 0, "code": 280 }));
    h.m.handle_failure(Failure::server(43, &[]), None);
    h.m.handle_failure(Failure::Client, None);
    assert!(h.m.poll_event().is_none());
    assert!(!h.m.is_closed());
    assert!(h.m.wants_command());
    // Once a reply was taken, a duplicate of it is ignored too.
    h.agg("a", 9, 7, vec![ev("1")], None, None);
    h.m.handle_reply(
        "a",
        9,
        cursor_reply(false, 7, "db.coll", vec![ev("2")], None, None),
    );
    h.m.handle_reply("a", 9, reply(&doc! { "ok": 1 }));
    assert_eq!(h.events().len(), 1);
    assert!(h.m.is_alive() && !h.m.is_closed());
    h.expect(Some("a"), gm_doc(7));
}

#[test]
fn a_corrupt_resume_token_is_an_error_not_a_panic() {
    // Right length prefix and terminator, but an element claiming a huge string.
    let mut bytes = bson::rawdoc! { "_data": "abc" }.into_bytes();
    let pos = bytes.windows(6).position(|w| w == b"_data\0").unwrap() + 6;
    bytes.splice(pos..pos + 4, 0x7fff_ffffi32.to_le_bytes());
    let token = SharedDoc::from_bytes(bytes::Bytes::from(bytes)).unwrap();
    let mut h = H::coll(ChangeStreamOptions {
        resume_after: Some(token),
        ..Default::default()
    });
    assert!(h.m.poll_command().is_none());
    let events = h.events();
    assert!(matches!(events[0], Err(ChangeStreamError::Malformed(_))));
    assert!(h.m.is_closed());
}

#[test]
fn outgoing_helpers() {
    let mut h = opened(9);
    let out = h.m.poll_command().unwrap();
    assert_eq!(out.name(), "getMore");
    assert!(matches!(out, Outgoing::GetMore { server: "a", .. }));
    assert_eq!(h.m.cursor_id(), Some(7));
    assert_eq!(h.m.target(), &Target::collection("db", "coll"));
    assert_eq!(h.m.options(), &ChangeStreamOptions::default());
}

#[test]
fn a_get_more_answering_for_another_cursor_is_a_protocol_failure_and_resumes() {
    let mut h = opened(21);
    // Cursor 7 asked for; the reply speaks of cursor 8. It did not answer the request:
    // a protocol failure, which a getMore resumes from. Its batch is not taken.
    h.gm(8, vec![ev("e1")], None);
    assert!(h.events().is_empty());
    assert!(!h.m.is_closed() && h.m.is_alive());
    // The cursor this stream opened is killed; cursor 8 is never touched.
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
    assert_eq!(h.m.resume_count(), 1);
    h.reply_agg("b", 21, 9, vec![], None, None);
    h.expect(Some("b"), gm_doc(9));
}

#[test]
fn a_reply_after_the_aggregate_failed_opens_nothing_and_kills_nothing() {
    let mut h = H::coll(ChangeStreamOptions::default());
    let (_, body, _) = h.next();
    assert!(body.contains_key("aggregate"));
    h.m.handle_failure(Failure::Network, Some(21));
    assert!(h.m.is_closed());
    // A late (or duplicated) reply to the failed aggregate is not an orphan of close().
    let ns = h.ns.clone();
    h.m.handle_reply("a", 21, cursor_reply(true, 9, &ns, vec![], None, None));
    h.m.close();
    h.expect_none();
}

// ---------------------------------------------------------------------------------
// Failures as kinds, and replies the machine parses itself.

/// Opens a db.coll stream whose cursor 7 lives on server "b" (wire `wire`), and hands
/// out one event, so that the cached token is that event's `_id`, `{_data: "e1"}`.
fn opened_on_b_after_an_event(wire: i32) -> H {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.agg("b", wire, 7, vec![ev("e1")], None, None);
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.token(), Some(tok("e1")));
    h
}

#[test]
fn a_get_more_error_that_is_not_a_server_error_resumes_unless_it_is_local() {
    // Spec rule 2: a network error, a timeout, and a reply the client cannot accept.
    for wire in [6, 8, 9, 21] {
        for failure in [Failure::Network, Failure::Timeout, Failure::Protocol] {
            let mut h = opened_on_b_after_an_event(wire);
            let (server, body) = h.gm_fail(failure.clone(), None);
            assert_eq!((server, body), (Some("b"), gm_doc(7)));
            // The old cursor is killed on its own server, then the resume's aggregate
            // (on a server the driver selects) resumes after the cached token.
            h.expect(Some("b"), kill_doc(7));
            h.expect(None, agg_doc(doc! { "resumeAfter": tok("e1") }));
            h.expect_none();
            assert!(h.events().is_empty(), "{failure}: nothing reported");
            assert_eq!(h.m.resume_count(), 1);
            assert!(h.m.is_alive());
        }
    }
    // A getMore that could not even be built or encoded: nothing was sent, a resume
    // would fail the same way. The stream closes, killing its cursor.
    let mut h = opened_on_b_after_an_event(9);
    h.gm_fail(Failure::Client, None);
    h.expect(Some("b"), kill_doc(7));
    h.expect_none();
    let events = h.events();
    assert!(
        matches!(
            events.as_slice(),
            [Err(ChangeStreamError::Client {
                command: FailedCommand::GetMore
            })]
        ),
        "{events:?}"
    );
    assert!(h.m.is_closed() && !h.m.is_alive());
    assert_eq!(h.m.resume_count(), 0);
    assert_eq!(h.token(), Some(tok("e1")));
}

#[test]
fn a_malformed_get_more_reply_is_a_protocol_failure_and_resumes() {
    for bad in [
        // `ok` is the machine's to check, not the driver's: a reply without it.
        doc! { "cursor": { "id": 7i64, "ns": "db.coll", "nextBatch": [] } },
        doc! { "ok": 1 },
        doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "db.coll" } },
        doc! { "ok": 1, "cursor": { "id": "7", "ns": "db.coll", "nextBatch": [] } },
        doc! { "ok": 1, "cursor": { "id": 7i64, "ns": "db.coll", "nextBatch": [1] } },
    ] {
        let mut h = opened_on_b_after_an_event(9);
        h.gm_reply(reply(&bad));
        assert!(h.events().is_empty(), "{bad}");
        h.expect(Some("b"), kill_doc(7));
        h.expect(None, agg_doc(doc! { "resumeAfter": tok("e1") }));
        assert_eq!(h.m.resume_count(), 1, "{bad}");
    }
}

#[test]
fn a_get_more_reply_with_ok_0_is_a_server_failure() {
    // Resumable: CursorNotFound at any wire version; from wire version 9 the label; below
    // it the code. The wire version handed to handle_reply decides.
    for (wire, reply_body) in [
        (
            9,
            doc! { "ok": 0, "code": 43, "codeName": "CursorNotFound", "errmsg": "gone" },
        ),
        (
            9,
            doc! { "ok": 0.0, "code": 91, "errorLabels": [RESUMABLE_LABEL], "errmsg": "shutdown" },
        ),
        (8, doc! { "ok": 0, "code": 6, "errmsg": "host unreachable" }),
    ] {
        let mut h = opened_on_b_after_an_event(wire);
        h.gm_reply(reply(&reply_body));
        assert!(h.events().is_empty(), "{reply_body}");
        h.expect(Some("b"), kill_doc(7));
        h.expect(None, agg_doc(doc! { "resumeAfter": tok("e1") }));
    }

    // Fatal: closed with the server's error, which keeps its code, name and message.
    let mut h = opened_on_b_after_an_event(21);
    h.gm_reply(reply(&doc! {
        "ok": 0,
        "code": 280,
        "codeName": "ChangeStreamFatalError",
        "errmsg": "the pipeline changed _id",
    }));
    h.expect(Some("b"), kill_doc(7));
    h.expect_none();
    let err = h.m.poll_event().unwrap().unwrap_err();
    assert_eq!(err.code(), Some(280));
    assert_eq!(err.command(), Some(FailedCommand::GetMore));
    assert!(!err.is_resumable());
    let server_error = err.server_error().unwrap();
    assert_eq!(
        server_error.code_name.as_deref(),
        Some("ChangeStreamFatalError")
    );
    assert_eq!(server_error.message, "the pipeline changed _id");
    assert!(matches!(
        err,
        ChangeStreamError::Server {
            wire_version: Some(21),
            ..
        }
    ));
    assert!(h.m.is_closed() && h.m.poll_event().is_none());

    // A code that is resumable below wire version 9 is fatal when the connection the
    // getMore ran on reports 9 or more, whatever the cursor's wire version.
    let mut h = opened_on_b_after_an_event(8);
    let (server, _, _) = h.next();
    h.m.handle_reply(server.unwrap(), 9, reply(&doc! { "ok": 0, "code": 6 }));
    assert!(h.m.is_closed());
    assert_eq!(h.events()[0].as_ref().unwrap_err().code(), Some(6));
}

#[test]
fn batch_size_zero_goes_on_the_aggregate_only() {
    let mut h = H::coll(ChangeStreamOptions {
        batch_size: Some(0),
        max_await_time: Some(Duration::from_millis(250)),
        ..Default::default()
    });
    let body = h.agg("a", 21, 7, vec![], Some(tok("p0")), None);
    assert_eq!(
        body,
        doc! {
            "aggregate": "coll",
            "pipeline": [{ "$changeStream": {} }],
            "cursor": { "batchSize": 0 },
            "$db": "db",
        }
    );
    let get_more = doc! { "getMore": 7i64, "collection": "coll", "maxTimeMS": 250, "$db": "db" };
    assert_eq!(h.gm(7, vec![], Some(tok("p1"))), get_more);
    // The same getMore every time, and the same rules after a resume.
    assert_eq!(h.gm(7, vec![], None), get_more);
    h.gm_fail(Failure::Network, None);
    h.expect(Some("a"), kill_doc(7));
    let body = h.agg("b", 21, 8, vec![], None, None);
    assert_eq!(
        body.get_document("cursor").unwrap(),
        &doc! { "batchSize": 0 }
    );
    h.expect(
        Some("b"),
        doc! { "getMore": 8i64, "collection": "coll", "maxTimeMS": 250, "$db": "db" },
    );
}

#[test]
fn an_aggregate_reply_with_ok_0_closes_with_the_server_error() {
    for wire in [8, 21] {
        let mut h = H::coll(ChangeStreamOptions::default());
        h.expect(None, agg_doc(doc! {}));
        // Even a code that would resume a getMore: an aggregate's errors never resume.
        h.m.handle_reply(
            "a",
            wire,
            reply(&doc! {
                "ok": 0,
                "code": 43,
                "codeName": "CursorNotFound",
                "errorLabels": [RESUMABLE_LABEL],
                "errmsg": "no",
            }),
        );
        h.expect_none();
        let events = h.events();
        let err = events[0].as_ref().unwrap_err();
        assert_eq!(err.code(), Some(43));
        assert_eq!(err.command(), Some(FailedCommand::Aggregate));
        assert_eq!(err.server_error().unwrap().message, "no");
        assert!(!err.is_resumable());
        assert!(matches!(
            err,
            ChangeStreamError::Server { wire_version: Some(w), .. } if *w == wire
        ));
        assert!(h.m.is_closed() && !h.m.is_alive());
        assert_eq!(h.m.cursor_id(), None);
    }
}

#[test]
fn a_malformed_aggregate_reply_closes_with_a_protocol_error() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.expect(None, agg_doc(doc! {}));
    h.m.handle_reply(
        "a",
        21,
        reply(&doc! { "ok": 1, "cursor": { "id": 7i64, "firstBatch": [] } }),
    );
    h.expect_none();
    let events = h.events();
    let err = events[0].as_ref().unwrap_err();
    assert!(err.is_protocol() && !err.is_resumable(), "{err}");
    assert_eq!(err.command(), Some(FailedCommand::Aggregate));
    assert!(
        matches!(err, ChangeStreamError::Protocol { reason: Some(r), .. } if r.contains("ns")),
        "the machine says what was wrong: {err}"
    );
    assert!(h.m.is_closed());
}

#[test]
fn a_resume_aggregate_failing_through_its_reply_is_surfaced() {
    let mut h = opened(9);
    h.gm_reply(reply(&doc! { "ok": 0, "code": 43 }));
    h.expect(Some("a"), kill_doc(7));
    h.expect(None, agg_doc(doc! { "resumeAfter": tok("p0") }));
    h.m.handle_reply("b", 9, reply(&doc! { "ok": 0, "code": 43 }));
    h.expect_none();
    let events = h.events();
    let err = events[0].as_ref().unwrap_err();
    assert_eq!(
        (err.code(), err.command()),
        (Some(43), Some(FailedCommand::Aggregate))
    );
    assert_eq!(h.m.resume_count(), 1);
}

#[test]
fn an_orphan_aggregate_reply_with_ok_0_kills_nothing() {
    let mut h = H::coll(ChangeStreamOptions::default());
    h.expect(None, agg_doc(doc! {}));
    h.m.close();
    h.m.handle_reply("b", 9, reply(&doc! { "ok": 0, "code": 13 }));
    h.expect_none();
    // The orphan's turn has passed: a later reply is not taken for it.
    h.m.handle_reply(
        "b",
        9,
        cursor_reply(true, 11, "db.coll", vec![], None, None),
    );
    h.expect_none();
    assert!(h.m.poll_event().is_none());
}
