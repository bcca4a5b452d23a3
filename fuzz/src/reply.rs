//! `reply_parse`: brook-command's reply parsers on replies off the wire.
//!
//! The input is a frame (decoded by brook-wire, as a connection would) or, when it does
//! not start with one, a structured reply document built from the field names the
//! parsers read ([`arb::Doc`]). Every reply goes through every parser: `check_ok`, the
//! cursor reply (as `find`, `aggregate` and `getMore` read it), `hello`, `killCursors`,
//! the write commands, `ping`, `endSessions`, `runCommand`.
//!
//! Invariants: no parser panics (whatever the types, nesting or encoding of the fields);
//! errors render; a parsed cursor reply's batch, post-batch resume token and cluster time
//! are slices of the reply's own buffer (shared, not copied) and are each one document
//! readable to the end; `ok: 0` never parses as a success.

use bson::RawDocumentBuf;
use bytes::BytesMut;

use brook_command::{
    Aggregate, AggregateTarget, Command, CommandError, CursorReply, Delete, DeleteStatement,
    EndSessions, Find, GetMore, Hello, HelloReply, Insert, KillCursors, Ping, Reply, RunCommand,
    SharedDoc, Update, UpdateModification, UpdateStatement, check_ok,
};
use brook_wire::{DecodeLimits, decode};

use crate::arb::{self, Doc};

/// The decode limit: large enough for any reply a seed holds.
pub const LIMIT: usize = 1 << 20;

/// The fuzz target's body.
pub fn check_reply(data: &[u8]) {
    let limits = DecodeLimits {
        max_message_size: LIMIT,
    };
    let mut buf = BytesMut::from(data);
    let mut decoded_any = false;
    // Every frame of the input, as a connection would read them one after the other.
    while let Ok(Some(decoded)) = decode(&mut buf, &limits) {
        decoded_any = true;
        check_reply_value(Reply::from(decoded.message));
    }
    if decoded_any {
        return;
    }
    if let Some(doc) = arb::from_bytes::<Doc>(data)
        && let Ok(body) = SharedDoc::from_document(&doc.to_document())
    {
        check_reply_value(Reply::new(body));
    }
}

/// Runs `reply` through every parser and checks what comes out.
pub fn check_reply_value(reply: Reply) {
    let body = reply.body.clone();
    let ok = check_ok(body.as_raw());
    if let Err(e) = &ok {
        render(e);
    }
    let _ = reply.operation_time();
    if let Some(ct) = reply.cluster_time() {
        assert_shared(&body, &ct, "$clusterTime");
    }

    let cursor_commands: [(&str, Result<CursorReply, CommandError>); 4] = [
        (
            "find",
            Find::new("events", bson::Document::new()).handle_reply(reply.clone()),
        ),
        (
            "aggregate",
            Aggregate::new(AggregateTarget::Collection("events".to_owned()), Vec::new())
                .handle_reply(reply.clone()),
        ),
        (
            "aggregate 1",
            Aggregate::new(AggregateTarget::Database, Vec::new()).handle_reply(reply.clone()),
        ),
        (
            "getMore",
            GetMore::new(42, "events").handle_reply(reply.clone()),
        ),
    ];
    for (what, parsed) in cursor_commands {
        match parsed {
            Ok(c) => {
                assert!(
                    ok.is_ok(),
                    "{what}: a reply check_ok refuses parsed as a cursor"
                );
                check_cursor(&body, &c);
            }
            Err(e) => render(&e),
        }
    }
    match CursorReply::parse("getMore", &body) {
        Ok(c) => check_cursor(&body, &c),
        Err(e) => render(&e),
    }

    match Hello::new().handle_reply(reply.clone()) {
        Ok(h) => {
            assert!(ok.is_ok(), "hello: a reply check_ok refuses parsed");
            let _ = h.is_mongos();
            assert_eq!(h.raw.bytes(), body.bytes());
        }
        Err(e) => render(&e),
    }
    if let Err(e) = HelloReply::parse(&body) {
        render(&e);
    }

    outcome(
        "killCursors",
        ok.is_ok(),
        KillCursors::new("events", vec![1, 2, 3]).handle_reply(reply.clone()),
    );
    let doc = SharedDoc::from_raw(&RawDocumentBuf::new());
    outcome(
        "insert",
        ok.is_ok(),
        Insert::new("events", vec![doc.clone(), doc]).handle_reply(reply.clone()),
    );
    let update = UpdateStatement::new(
        bson::Document::new(),
        UpdateModification::Document(bson::Document::new()),
    );
    outcome(
        "update",
        ok.is_ok(),
        Update::new("events", vec![update.clone(), update]).handle_reply(reply.clone()),
    );
    let delete = DeleteStatement::one(bson::Document::new());
    outcome(
        "delete",
        ok.is_ok(),
        Delete::new("events", vec![delete]).handle_reply(reply.clone()),
    );
    outcome("ping", ok.is_ok(), Ping::new().handle_reply(reply.clone()));
    outcome(
        "endSessions",
        ok.is_ok(),
        EndSessions::new(Vec::new()).handle_reply(reply.clone()),
    );
    match RunCommand::new(bson::Document::new()).handle_reply(reply) {
        Ok(raw) => assert_eq!(
            raw.bytes(),
            body.bytes(),
            "runCommand must hand back the reply itself"
        ),
        Err(e) => render(&e),
    }
}

fn outcome<T: std::fmt::Debug>(what: &str, ok: bool, parsed: Result<T, CommandError>) {
    match parsed {
        Ok(v) => {
            assert!(ok, "{what}: a reply check_ok refuses parsed as a success");
            let _ = format!("{v:?}");
        }
        Err(e) => render(&e),
    }
}

fn render(e: &CommandError) {
    let text = e.to_string();
    assert!(!text.is_empty());
    let _ = format!("{e:?}");
    let _ = (e.code(), e.labels(), e.server_error());
}

fn check_cursor(body: &SharedDoc, c: &CursorReply) {
    for (i, doc) in c.batch.iter().enumerate() {
        assert_shared(body, doc, &format!("batch[{i}]"));
    }
    if let Some(t) = &c.post_batch_resume_token {
        assert_shared(body, t, "postBatchResumeToken");
    }
    if let Some(t) = &c.cluster_time {
        assert_shared(body, t, "$clusterTime");
    }
    let _ = c.is_alive();
}

/// `part` must lie inside `whole`'s buffer and be one well-bounded document whose
/// elements can be walked (errors allowed, panics not).
fn assert_shared(whole: &SharedDoc, part: &SharedDoc, what: &str) {
    let w = whole.as_bytes().as_ptr_range();
    let p = part.as_bytes().as_ptr_range();
    assert!(
        w.start <= p.start && p.end <= w.end,
        "{what} is not a slice of the reply's buffer (it was copied)"
    );
    assert!(
        SharedDoc::from_bytes(part.bytes().clone()).is_ok(),
        "{what} is not one document"
    );
    for element in part.as_raw() {
        if element.is_err() {
            break;
        }
    }
}
