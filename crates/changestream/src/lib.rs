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
//! * Inputs: [`handle_reply`](ChangeStreamMachine::handle_reply) with the reply of
//!   the `aggregate` or `getMore` in flight, exactly as it came off the wire (the
//!   machine knows which command it answers, and parses it: `ok: 0` and malformed
//!   replies are failures like any other);
//!   [`handle_failure`](ChangeStreamMachine::handle_failure) with a [`Failure`] — a
//!   kind, not a message: the driver keeps its own error — when no reply was read; and
//!   [`handle_abandoned`](ChangeStreamMachine::handle_abandoned) for a command whose
//!   future was dropped, so that cancellation never leaves a command "in flight".
//!
//! Events are [`SharedDoc`](brook_command::SharedDoc)s sharing the reply's buffer: no
//! copy per event. `getMore`s are built by
//! [`GetMoreOptions`](brook_command::GetMoreOptions) (see
//! [`ChangeStreamOptions::get_more_options`]), the same rules as any cursor's.
//!
//! # Driving it
//!
//! A blocking `next` loops: take an event if one is buffered; otherwise run the next
//! command; stop when there is neither (the stream ended or was closed). A
//! non-blocking `try_next` does the same but runs at most one `getMore`, then returns
//! `None` if it brought no event — the resume token is still up to date (a
//! postBatchResumeToken of an empty batch is cached), which is how a user persists
//! tokens during quiet periods. `killCursors` are fire-and-forget: a driver may run
//! them in the background, and never feeds their outcome back.
//!
//! ```
//! use brook_changestream::{ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing, Target};
//! use brook_command::Reply;
//! use bson::doc;
//!
//! // A pretend server: answers each command with a canned reply.
//! fn run(out: &Outgoing<&'static str>, round: usize) -> Result<Reply, Failure> {
//!     let body = match (out, round) {
//!         (Outgoing::Aggregate { .. }, _) => doc! {
//!             "ok": 1,
//!             "cursor": { "id": 7i64, "ns": "shop.orders", "firstBatch": [],
//!                         "postBatchResumeToken": { "_data": "01" } },
//!         },
//!         // The first getMore meets a failover (the server answers `ok: 0`), the second
//!         // a connection reset (no reply at all): the machine resumes after each.
//!         (Outgoing::GetMore { .. }, 2) => doc! {
//!             "ok": 0, "code": 91, "codeName": "ShutdownInProgress", "errmsg": "shutting down",
//!         },
//!         (Outgoing::GetMore { .. }, 4) => return Err(Failure::Network),
//!         (Outgoing::GetMore { .. }, _) => doc! {
//!             "ok": 1,
//!             "cursor": { "id": 0i64, "ns": "shop.orders", "nextBatch": [
//!                 { "_id": { "_data": "02" }, "operationType": "insert" },
//!             ] },
//!         },
//!         (Outgoing::KillCursors { .. }, _) => unreachable!("not run by this loop"),
//!     };
//!     Reply::from_document(&body).map_err(|_| Failure::Client)
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
//!     // The aggregate runs on a server the driver selects, a getMore on out.server();
//!     // the connection there reports wire version 8.
//!     let server = out.server().copied().unwrap_or("a:27017");
//!     match run(&out, round) {
//!         Ok(reply) => stream.handle_reply(server, 8, reply),
//!         Err(failure) => stream.handle_failure(failure, Some(8)),
//!     }
//!     // A non-blocking try_next would return here, after at most one getMore.
//! }
//! assert_eq!(
//!     sent,
//!     ["aggregate", "getMore", "killCursors", "aggregate", "getMore", "killCursors",
//!      "aggregate", "getMore"],
//! );
//! assert_eq!(stream.resume_count(), 2);
//! assert_eq!(events.len(), 1);
//! assert_eq!(stream.resume_token().unwrap().to_document()?, doc! { "_data": "02" });
//! assert!(!stream.is_alive());
//! # Ok::<(), brook_wire::WireError>(())
//! ```
//!
//! Each resume in this script sent `resumeAfter: {_data: "01"}` (the empty first
//! batch's postBatchResumeToken) to the server the driver selected.

#![forbid(unsafe_code)]

mod error;
mod machine;
mod options;
mod scan;
mod token;

pub use error::{
    CURSOR_NOT_FOUND, ChangeStreamError, FailedCommand, Failure, LABEL_MIN_WIRE_VERSION,
    RESUMABLE_CODES, RESUMABLE_LABEL, is_resumable,
};
pub use machine::{ChangeStreamMachine, HeldFailure, OPERATION_TIME_MIN_WIRE_VERSION, Outgoing};
pub use options::{ChangeStreamOptions, Target};
pub use token::{TokenInfo, TokenType, decode_resume_token, decode_resume_token_hex};
