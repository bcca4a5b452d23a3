//! What the fake server does with a request: [`Action`], [`Fault`] and the [`Handler`] trait.

use std::time::Duration;

use bson::{Document, Timestamp};

use crate::record::ReceivedCommand;
use crate::shapes::{self, BatchKind};

/// What the server does in answer to one request.
///
/// Actions come from the per-command queues ([`FakeServer::push_actions`]), then from the
/// [`Handler`], then from the built-in defaults ([`Action::Default`]).
///
/// A request that carries the `moreToCome` flag wants no reply: for it every action that
/// would send something sends nothing, and only [`Fault::CloseWithoutReply`] and
/// [`Fault::Hang`] (and the wait of [`Action::Delay`]) take effect.
///
/// [`FakeServer::push_actions`]: crate::FakeServer::push_actions
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Use the built-in handling: hello/isMaster, ping, endSessions, killCursors, an empty
    /// find/aggregate cursor, getMore → 43 CursorNotFound, writes → `{n, ok: 1}`, anything
    /// else → 59 CommandNotFound.
    Default,
    /// Reply with this document, sent as is (no `$clusterTime` is added).
    Reply(Document),
    /// Send these bytes as they are, as the whole answer (e.g. a hand-made frame), and keep
    /// the connection open.
    Raw(Vec<u8>),
    /// Wait, then do the inner action.
    Delay(Duration, Box<Action>),
    /// Reply once per document, every reply but the last flagged `moreToCome` (the exhaust
    /// protocol: the client reads the later replies without sending a request). An empty list
    /// sends nothing.
    MoreToCome(Vec<Document>),
    /// Misbehave.
    Fault(Fault),
}

impl Action {
    /// Reply with `doc`.
    pub fn reply(doc: Document) -> Action {
        Action::Reply(doc)
    }

    /// Reply `{ok: 1.0}`.
    pub fn ok() -> Action {
        Action::Reply(shapes::ok_reply())
    }

    /// Reply with a command error `{ok: 0.0, errmsg, code, codeName, errorLabels?}`; the
    /// message is made up from the code name.
    ///
    /// ```
    /// use brook_testkit::{shapes, Action};
    /// let a = Action::error(43, "CursorNotFound", &[shapes::RESUMABLE_CHANGE_STREAM_ERROR]);
    /// let Action::Reply(doc) = a else { unreachable!() };
    /// assert_eq!(doc.get_i32("code").unwrap(), 43);
    /// ```
    pub fn error(code: i32, code_name: &str, labels: &[&str]) -> Action {
        let message = format!("{code_name} (injected by brook-testkit)");
        Action::Reply(shapes::error_reply(code, code_name, &message, labels))
    }

    /// Like [`Action::error`] with a message of your own.
    pub fn error_with_message(code: i32, code_name: &str, errmsg: &str, labels: &[&str]) -> Action {
        Action::Reply(shapes::error_reply(code, code_name, errmsg, labels))
    }

    /// Reply with a cursor reply ([`shapes::cursor_reply`]).
    pub fn cursor(
        id: i64,
        ns: &str,
        kind: BatchKind,
        batch: Vec<Document>,
        post_batch_resume_token: Option<Document>,
        operation_time: Option<Timestamp>,
    ) -> Action {
        Action::Reply(shapes::cursor_reply(
            id,
            ns,
            kind,
            batch,
            post_batch_resume_token,
            operation_time,
        ))
    }

    /// Wait `delay`, then do `then`.
    pub fn delay(delay: Duration, then: Action) -> Action {
        Action::Delay(delay, Box::new(then))
    }

    /// Misbehave with `fault`.
    pub fn fault(fault: Fault) -> Action {
        Action::Fault(fault)
    }
}

impl From<Fault> for Action {
    fn from(fault: Fault) -> Action {
        Action::Fault(fault)
    }
}

impl From<Document> for Action {
    fn from(doc: Document) -> Action {
        Action::Reply(doc)
    }
}

/// A way for the server to misbehave, instead of replying properly.
///
/// The malformed frames are made from the reply the server would have sent by default
/// (the built-in reply to the request), then corrupted in one place only, so that each fault
/// exercises exactly one check of the client's decoder. Fault frames are never compressed and
/// carry no checksum unless the fault is about the checksum. After sending a malformed frame
/// the server keeps the connection open (the client is expected to close it).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without replying.
    CloseWithoutReply,
    /// Send the first half of a valid reply frame (at least its header), then close.
    CloseMidReply,
    /// Send the first `bytes` bytes of a valid reply frame (clamped to the frame's length
    /// minus one), wait `stall`, then close.
    PartialThenStall {
        /// How many bytes of the frame to send.
        bytes: usize,
        /// How long to stay silent before closing.
        stall: Duration,
    },
    /// A valid reply whose header declares `declared` bytes: more than the client's limit
    /// (e.g. 48,000,001 or `i32::MAX`). Only the real frame's bytes follow.
    LengthOverLimit {
        /// The declared `messageLength`.
        declared: i32,
    },
    /// A reply whose header declares fewer than the 16 bytes of a header (`declared` should
    /// be below 16, e.g. 0, 8 or negative).
    LengthBelowMinimum {
        /// The declared `messageLength`.
        declared: i32,
    },
    /// A reply whose body document has a length prefix running past the end of the message.
    BadBson,
    /// A reply whose section kind byte is this value (anything but 0 and 1 is unknown).
    UnknownSectionKind(u8),
    /// A reply that carries a CRC-32C checksum which does not match its bytes.
    BadChecksum,
    /// A valid reply whose `responseTo` is not the request's id.
    WrongResponseTo,
    /// A valid reply with these extra flag bits set (use bits of the required range
    /// `0x0000_fffc`, e.g. `1 << 3`, to make the client refuse it).
    UnknownRequiredFlag(u32),
    /// Never reply: keep the connection open (reading and dropping whatever comes) until the
    /// client closes it or the server shuts down.
    Hang,
}

/// Decides what the server does with each request that no queued action claimed.
///
/// Any `Fn(&ReceivedCommand) -> Action + Send + Sync + 'static` closure is a handler:
///
/// ```
/// use brook_testkit::{Action, ReceivedCommand, ServerConfig};
/// let config = ServerConfig::default().with_handler(|cmd: &ReceivedCommand| match cmd.name.as_str() {
///     "ping" => Action::error(13, "Unauthorized", &[]),
///     _ => Action::Default,
/// });
/// # let _ = config;
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The action for `cmd` (return [`Action::Default`] for the built-in handling).
    fn handle(&self, cmd: &ReceivedCommand) -> Action;
}

impl<F> Handler for F
where
    F: Fn(&ReceivedCommand) -> Action + Send + Sync + 'static,
{
    fn handle(&self, cmd: &ReceivedCommand) -> Action {
        self(cmd)
    }
}
