//! The MongoDB change stream, and its resume rules, as a state machine without IO.
//!
//! [`ChangeStreamMachine`] decides which command a change stream sends next and what
//! to do with each reply or failure, exactly as the MongoDB Change Streams
//! specification says: which errors are resumable (see [`is_resumable`]), how the
//! cached resume token moves (after every event handed out and every empty batch),
//! which start option a resume sends (`startAfter`, `resumeAfter` or
//! `startAtOperationTime`), and that the old cursor is killed on its own server. It
//! never touches a socket, a clock or a task: a driver (the `brook` crate) runs the
//! commands it hands out and feeds back what happened, in the quinn-proto style.
//!
//! * Outputs: [`poll_command`](ChangeStreamMachine::poll_command) yields an
//!   [`Outgoing`] command (`aggregate` on a server the driver selects, `getMore` and
//!   `killCursors` on the cursor's own server);
//!   [`poll_event`](ChangeStreamMachine::poll_event) yields the next event, or the
//!   error that ended the stream.
//! * Inputs: [`handle_aggregate_reply`](ChangeStreamMachine::handle_aggregate_reply),
//!   [`handle_get_more_reply`](ChangeStreamMachine::handle_get_more_reply),
//!   [`handle_failure`](ChangeStreamMachine::handle_failure) (with a [`Failure`]), and
//!   [`handle_abandoned`](ChangeStreamMachine::handle_abandoned) for a command whose
//!   future was dropped, so that cancellation never leaves a command "in flight".
//!
//! Events are [`SharedDoc`](brook_command::SharedDoc)s sharing the reply's buffer: no
//! copy per event.
//!
//! # Driving it
//!
//! A blocking `next` loops: take an event if one is buffered; otherwise run the next
//! command; stop when there is neither (the stream ended or was closed). A
//! non-blocking `try_next` does the same but runs at most one `getMore`, then returns
//! `None` if it brought no event — the resume token is still up to date (a
//! postBatchResumeToken of an empty batch is cached), which is how a user persists
//! tokens during quiet periods. `killCursors` are fire-and-forget: a driver may run
//! them in the background.
//!
//! ```
//! use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target};
//! use brook_command::{Command, CursorReply, Reply};
//! use bson::doc;
//!
//! // A pretend server: answers each command with a canned reply.
//! fn run(out: &Outgoing<&'static str>, round: usize) -> Result<CursorReply, Failure> {
//!     let body = match (out, round) {
//!         (Outgoing::Aggregate { .. }, _) => doc! {
//!             "ok": 1,
//!             "cursor": { "id": 7i64, "ns": "shop.orders", "firstBatch": [],
//!                         "postBatchResumeToken": { "_data": "01" } },
//!         },
//!         // The first getMore hits a failover: the machine resumes.
//!         (Outgoing::GetMore { .. }, 2) => return Err(Failure::server(91, &[])),
//!         (Outgoing::GetMore { .. }, _) => doc! {
//!             "ok": 1,
//!             "cursor": { "id": 0i64, "ns": "shop.orders", "nextBatch": [
//!                 { "_id": { "_data": "02" }, "operationType": "insert" },
//!             ] },
//!         },
//!         (Outgoing::KillCursors { .. }, _) => unreachable!("handled by the loop"),
//!         _ => unreachable!(),
//!     };
//!     let reply = Reply::from_document(&body).map_err(|e| Failure::Client(e.to_string()))?;
//!     CursorReply::parse("aggregate", &reply.body).map_err(|e| Failure::Client(e.to_string()))
//! }
//!
//! let mut stream = ChangeStreamMachine::new(
//!     Target::collection("shop", "orders"),
//!     ChangeStreamOptions::default(),
//! );
//! let mut events = Vec::new();
//! let mut sent = Vec::new();
//! let mut round = 0;
//! loop {
//!     if let Some(event) = stream.poll_event() {
//!         events.push(event.expect("no error in this script"));
//!         continue;
//!     }
//!     let Some(out) = stream.poll_command() else { break };
//!     sent.push(out.name());
//!     if let Outgoing::KillCursors { .. } = out {
//!         continue; // run it on out.server(), ignore the outcome
//!     }
//!     round += 1;
//!     let is_aggregate = matches!(out, Outgoing::Aggregate { .. });
//!     match run(&out, round) {
//!         Ok(reply) if is_aggregate => stream.handle_aggregate_reply("a:27017", 8, reply),
//!         Ok(reply) => stream.handle_get_more_reply(reply),
//!         Err(failure) => stream.handle_failure(failure, Some(8)),
//!     }
//!     // A non-blocking try_next would return here, after at most one getMore.
//! }
//! assert_eq!(sent, ["aggregate", "getMore", "killCursors", "aggregate", "getMore"]);
//! assert_eq!(events.len(), 1);
//! assert_eq!(stream.resume_token().unwrap().to_document()?, doc! { "_data": "02" });
//! assert!(!stream.is_alive());
//! # Ok::<(), brook_wire::WireError>(())
//! ```
//!
//! The resume in this script sent `resumeAfter: {_data: "01"}` (the empty first
//! batch's postBatchResumeToken) to the server the driver selected.

#![forbid(unsafe_code)]

mod error;
mod machine;
mod options;
mod scan;

pub use error::{
    CURSOR_NOT_FOUND, ChangeStreamError, FailedCommand, Failure, LABEL_MIN_WIRE_VERSION,
    RESUMABLE_CODES, RESUMABLE_LABEL, is_resumable,
};
pub use machine::{ChangeStreamMachine, OPERATION_TIME_MIN_WIRE_VERSION, Outgoing};
pub use options::{ChangeStreamOptions, Target};
