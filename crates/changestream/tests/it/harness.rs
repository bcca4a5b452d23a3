//! A small script helper: plays the server against the machine and checks the exact
//! commands it sends.

use brook_changestream::{
    ChangeStreamError, ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target,
};
use brook_command::{Reply, SharedDoc};
use bson::{Bson, Document, Timestamp, doc};

/// Servers are named by a static string.
pub(crate) type Srv = &'static str;

/// A cursor reply, as it comes off the wire: `firstBatch` when `first`, else
/// `nextBatch`.
pub(crate) fn cursor_reply(
    first: bool,
    id: i64,
    ns: &str,
    batch: Vec<Document>,
    pbrt: Option<Document>,
    operation_time: Option<Timestamp>,
) -> Reply {
    let key = if first { "firstBatch" } else { "nextBatch" };
    let mut cursor = doc! { "id": id, "ns": ns };
    cursor.insert(
        key,
        batch.into_iter().map(Bson::Document).collect::<Vec<_>>(),
    );
    if let Some(t) = pbrt {
        cursor.insert("postBatchResumeToken", t);
    }
    let mut body = doc! { "cursor": cursor, "ok": 1.0 };
    if let Some(ts) = operation_time {
        body.insert("operationTime", ts);
    }
    reply(&body)
}

/// A reply made of `body`.
pub(crate) fn reply(body: &Document) -> Reply {
    Reply::from_document(body).unwrap()
}

/// A change event with `_id: {_data: n}`.
pub(crate) fn ev(n: &str) -> Document {
    doc! { "_id": { "_data": n }, "operationType": "insert", "ns": { "db": "db", "coll": "coll" } }
}

/// A token `{_data: n}`.
pub(crate) fn tok(n: &str) -> Document {
    doc! { "_data": n }
}

/// A token as a SharedDoc.
pub(crate) fn shared(d: Document) -> SharedDoc {
    SharedDoc::from_document(&d).unwrap()
}

/// The machine plus the namespace its cursors report.
pub(crate) struct H {
    pub(crate) m: ChangeStreamMachine<Srv>,
    pub(crate) ns: String,
    /// The wire version of the connection of the latest aggregate answered, which the
    /// getMores then run on.
    pub(crate) wire: i32,
}

impl H {
    pub(crate) fn new(target: Target, options: ChangeStreamOptions) -> H {
        let ns = match &target {
            Target::Collection { db, coll } => format!("{db}.{coll}"),
            Target::Database { db } => format!("{db}.$cmd.aggregate"),
            _ => "admin.$cmd.aggregate".to_owned(),
        };
        H {
            m: ChangeStreamMachine::new(target, options),
            ns,
            wire: 0,
        }
    }

    /// A collection stream on db.coll.
    pub(crate) fn coll(options: ChangeStreamOptions) -> H {
        H::new(Target::collection("db", "coll"), options)
    }

    /// The next command, with its server and its body.
    pub(crate) fn next(&mut self) -> (Option<Srv>, Document, Outgoing<Srv>) {
        let out = self
            .m
            .poll_command()
            .expect("the machine should want a command");
        let body = out.build().expect("the command builds").body;
        (out.server().copied(), body, out)
    }

    /// Asserts the next command is exactly `expected`, sent to `server`.
    pub(crate) fn expect(&mut self, server: Option<Srv>, expected: Document) {
        let (s, body, _) = self.next();
        assert_eq!(body, expected);
        assert_eq!(s, server, "server of {body}");
    }

    /// Asserts no command is wanted.
    pub(crate) fn expect_none(&mut self) {
        if let Some(out) = self.m.poll_command() {
            panic!("unexpected command {:?}", out.build().map(|b| b.body));
        }
    }

    /// Takes the next command, which must be an aggregate, and answers it.
    pub(crate) fn agg(
        &mut self,
        server: Srv,
        wire: i32,
        id: i64,
        batch: Vec<Document>,
        pbrt: Option<Document>,
        optime: Option<Timestamp>,
    ) -> Document {
        let (s, body, out) = self.next();
        assert!(matches!(out, Outgoing::Aggregate { .. }), "{body}");
        assert_eq!(s, None);
        self.reply_agg(server, wire, id, batch, pbrt, optime);
        body
    }

    /// Answers the aggregate in flight.
    pub(crate) fn reply_agg(
        &mut self,
        server: Srv,
        wire: i32,
        id: i64,
        batch: Vec<Document>,
        pbrt: Option<Document>,
        optime: Option<Timestamp>,
    ) {
        self.wire = wire;
        let reply = cursor_reply(true, id, &self.ns, batch, pbrt, optime);
        self.m.handle_reply(server, wire, reply);
    }

    /// Takes the next command, which must be a getMore, and answers it.
    pub(crate) fn gm(&mut self, id: i64, batch: Vec<Document>, pbrt: Option<Document>) -> Document {
        let reply = cursor_reply(false, id, &self.ns, batch, pbrt, None);
        self.gm_reply(reply).1
    }

    /// Takes the next command, which must be a getMore, and answers it with `reply`
    /// (on the cursor's server, at the wire version of the aggregate's connection).
    pub(crate) fn gm_reply(&mut self, reply: Reply) -> (Option<Srv>, Document) {
        let (s, body, out) = self.next();
        assert!(matches!(out, Outgoing::GetMore { .. }), "{body}");
        let server = s.expect("a getMore names its server");
        self.m.handle_reply(server, self.wire, reply);
        (s, body)
    }

    /// Takes the next command, which must be a getMore, and fails it.
    pub(crate) fn gm_fail(
        &mut self,
        failure: Failure,
        wire: Option<i32>,
    ) -> (Option<Srv>, Document) {
        let (s, body, out) = self.next();
        assert!(matches!(out, Outgoing::GetMore { .. }), "{body}");
        self.m.handle_failure(failure, wire);
        (s, body)
    }

    /// Drains the buffered events (and error).
    pub(crate) fn events(&mut self) -> Vec<Result<Document, ChangeStreamError>> {
        let mut all = Vec::new();
        while let Some(e) = self.m.poll_event() {
            all.push(e.map(|d| d.to_document().unwrap()));
        }
        all
    }

    /// The cached token as a Document.
    pub(crate) fn token(&self) -> Option<Document> {
        self.m.resume_token().map(|t| t.to_document().unwrap())
    }
}

/// The `$changeStream` stage of an aggregate body.
pub(crate) fn stage(body: &Document) -> Document {
    let pipeline = body.get_array("pipeline").unwrap();
    let first = pipeline.first().unwrap().as_document().unwrap();
    first.get_document("$changeStream").unwrap().clone()
}

/// The expected initial aggregate of a db.coll stream with the given stage.
pub(crate) fn agg_doc(stage: Document) -> Document {
    doc! { "aggregate": "coll", "pipeline": [{ "$changeStream": stage }], "cursor": {}, "$db": "db" }
}

pub(crate) fn gm_doc(id: i64) -> Document {
    doc! { "getMore": id, "collection": "coll", "$db": "db" }
}

pub(crate) fn kill_doc(id: i64) -> Document {
    doc! { "killCursors": "coll", "cursors": [id], "$db": "db" }
}
