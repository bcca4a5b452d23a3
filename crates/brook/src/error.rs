//! The one public error type, [`Error`], and its kinds.

use std::fmt;
use std::time::Duration;

use brook_changestream::{ChangeStreamError, FailedCommand, Failure};
use brook_command::{CommandError, ServerError, WriteConcernError, WriteError};
use brook_conn::ConnError;

/// A shorthand for `Result<T, brook::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The codes after which a read or a write is retried (the Retryable Reads and Writes
/// specifications): the server is stepping down, shutting down, or unreachable.
const RETRYABLE_CODES: [i32; 12] = [
    11600, 11602, 10107, 13435, 13436, 189, 91, 7, 6, 89, 9001, 262,
];

/// The label servers (wire version 9+) put on errors after which a write may be retried.
const RETRYABLE_WRITE_LABEL: &str = "RetryableWriteError";

/// What went wrong (private: the public surface is [`Error`]'s predicates, so that
/// no type of brook's inner crates is reachable from a public signature).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErrorKind {
    /// The connection string is invalid per the Connection String / URI Options specs, or
    /// carries options brook would have to ignore (see [`crate::ClientOptions`]).
    #[error("invalid connection string: {message}")]
    InvalidUri {
        /// What is wrong.
        message: String,
    },
    /// An argument of an operation is invalid (e.g. an empty `insert_many`).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The request needs a feature brook does not have yet.
    #[error("{feature} is not supported by brook yet")]
    Unsupported {
        /// The feature.
        feature: String,
    },
    /// The connection failed: network error, timeout, TLS, handshake, protocol.
    #[error(transparent)]
    Connection(ConnError),
    /// The server answered `ok: 0`.
    #[error(transparent)]
    Server(ServerError),
    /// A write command reported write errors or a write concern error.
    #[error("{}", write_failure_message(.write_errors, .write_concern_error.as_ref()))]
    Write {
        /// Failed statements, with `index` relative to the caller's whole input.
        write_errors: Vec<WriteError>,
        /// The write concern error, if any.
        write_concern_error: Option<WriteConcernError>,
        /// How many statements were applied before the failure (`n` summed over batches).
        applied: u64,
    },
    /// A reply could not be understood, or a command could not be built.
    #[error(transparent)]
    Command(CommandError),
    /// No server could be found to talk to.
    #[error("server selection failed: {message}")]
    ServerSelection {
        /// What was tried.
        message: String,
        /// Whether it gave up because `serverSelectionTimeoutMS` passed.
        timed_out: bool,
    },
    /// No connection became free within `waitQueueTimeoutMS`.
    #[error("no connection became available within {after:?} (waitQueueTimeoutMS)")]
    PoolTimeout {
        /// The limit.
        after: Duration,
    },
    /// A value could not be converted to or from BSON.
    #[error("BSON conversion error: {message}")]
    Bson {
        /// What failed.
        message: String,
    },
    /// The client was shut down with [`Client::shutdown`](crate::Client::shutdown).
    #[error("the client has been shut down")]
    Shutdown,
    /// The server's pool was cleared after an error and the server was not found again
    /// in time (CMAP's PoolClearedError).
    #[error("the connection pool for {address} was cleared")]
    PoolCleared {
        /// The server.
        address: brook_conn::ServerAddress,
    },
    /// A change event could not be decoded into the stream's item type. The stream has
    /// moved past it and stays usable.
    #[error("cannot decode the change event at `{path}`: {message}")]
    EventDecode {
        /// The path of the field that failed (`fullDocument.qty`), `.` for the whole event.
        path: String,
        /// Why.
        message: String,
        /// The event's resume token.
        resume_token: Option<crate::event::ResumeToken>,
    },
    /// A bounded background step took too long.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// Its bound.
        after: Duration,
    },
    /// The operation's client-side timeout (`timeoutMS`, the Client Side Operations
    /// Timeout specification) expired: during server selection, a connection checkout,
    /// or a command (or before a command was sent, when too little time was left for
    /// the server's round trip). `cause` is the error of the step that was cut short,
    /// when there is one (a socket timeout, a selection or checkout timeout, the
    /// server's MaxTimeMSExpired).
    #[error(
        "operation exceeded timeoutMS ({timeout:?}) {during}{}",
        cause.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    OperationTimeout {
        /// The `timeoutMS` of the operation.
        timeout: Duration,
        /// Where the expiry was detected ("during server selection", …).
        during: &'static str,
        /// The error of the step that was cut short.
        cause: Option<Box<Error>>,
    },
    /// A change stream stopped for a reason of its own (not a failed command, which keeps
    /// its own kind): an event without `_id` ("cannot provide resume functionality when
    /// the resume token is missing"), malformed event data, or use after close.
    #[error(transparent)]
    ChangeStream(ChangeStreamError),
    /// A change stream's token fell off the oplog and the stream restarted from now
    /// ([`HistoryLost::RestartFromNow`](crate::HistoryLost::RestartFromNow)): reported
    /// once; the stream goes on.
    #[error("{gap}")]
    HistoryLost {
        /// What was not delivered.
        gap: Box<crate::resume::HistoryGap>,
    },
}

fn write_failure_message(errors: &[WriteError], wce: Option<&WriteConcernError>) -> String {
    let mut s = String::new();
    if let Some(first) = errors.first() {
        s.push_str(&format!(
            "write error at index {}: {} (code {}",
            first.index, first.message, first.code
        ));
        if let Some(name) = &first.code_name {
            s.push_str(&format!(", {name}"));
        }
        s.push(')');
        if errors.len() > 1 {
            s.push_str(&format!(" and {} more write error(s)", errors.len() - 1));
        }
    }
    if let Some(w) = wce {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(&format!(
            "write concern error: {} (code {})",
            w.message, w.code
        ));
    }
    s
}

/// 286 `ChangeStreamHistoryLost`.
const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
/// 280 `ChangeStreamFatalError`.
const CHANGE_STREAM_FATAL_ERROR: i32 = 280;

struct Inner {
    kind: ErrorKind,
    wire_version: Option<i32>,
}

/// The error of every brook operation: opaque, inspected with predicates.
///
/// ```
/// # fn check(err: &brook::Error) {
/// if err.is_network() { /* retry elsewhere */ }
/// if err.code() == Some(11000) { /* duplicate key */ }
/// if err.has_label("RetryableWriteError") { /* ... */ }
/// # }
/// ```
pub struct Error(Box<Inner>);

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error(Box::new(Inner {
            kind,
            wire_version: None,
        }))
    }

    pub(crate) fn with_wire_version(mut self, wire_version: Option<i32>) -> Error {
        if wire_version.is_some() {
            self.0.wire_version = wire_version;
        }
        self
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument {
            message: message.into(),
        })
    }

    pub(crate) fn bson(err: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Bson {
            message: err.to_string(),
        })
    }

    pub(crate) fn event_decode(
        path: String,
        message: String,
        resume_token: Option<crate::event::ResumeToken>,
    ) -> Error {
        Error::new(ErrorKind::EventDecode {
            path,
            message,
            resume_token,
        })
    }

    /// A change event that could not be decoded into the stream's item type (the stream
    /// stays usable): see [`decode_path`](Self::decode_path) and
    /// [`resume_token`](Self::resume_token).
    pub fn is_event_decode(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::EventDecode { .. })
    }

    /// For an event that failed to decode: the path of the field that failed, e.g.
    /// `fullDocument.qty` (`.` when the event as a whole could not be read).
    pub fn decode_path(&self) -> Option<&str> {
        match &self.0.kind {
            ErrorKind::EventDecode { path, .. } => Some(path),
            _ => None,
        }
    }

    /// For an event that failed to decode: that event's resume token, so that a consumer
    /// can record what it skipped (the stream's own token has moved past it already).
    pub fn resume_token(&self) -> Option<&crate::event::ResumeToken> {
        match &self.0.kind {
            ErrorKind::EventDecode { resume_token, .. } => resume_token.as_ref(),
            _ => None,
        }
    }

    /// What went wrong (for the crate's own tests).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    pub(crate) fn unsupported(feature: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported {
            feature: feature.into(),
        })
    }

    /// A network failure (IO error, peer closed, TLS failure, socket timeout, or use of a
    /// connection that broke before).
    pub fn is_network(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::Connection(e) if e.is_network())
    }

    /// The peer sent something unreadable, or a reply that does not answer the request:
    /// a malformed frame or reply, a checksum mismatch, a failed decompression, a wrong
    /// `responseTo`, an unasked-for `moreToCome`. The connection was discarded.
    pub fn is_protocol(&self) -> bool {
        match &self.0.kind {
            ErrorKind::Connection(e) => e.is_protocol(),
            ErrorKind::Command(CommandError::MalformedReply { .. }) => true,
            _ => false,
        }
    }

    /// Authentication failed (the credential was refused, the mechanism is not supported,
    /// or the server could not prove it knows the password). Never retried; the error
    /// names the mechanism and the user, never the password.
    pub fn is_auth(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::Connection(e) if e.is_auth())
    }

    /// The server's pool was cleared after a network error and the server was not found
    /// again in time.
    pub fn is_pool_cleared(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::PoolCleared { .. })
    }

    /// A client-side timeout: the operation's `timeoutMS` expired (see
    /// [`is_operation_timeout`](Error::is_operation_timeout)), a connect or socket
    /// timeout, `waitQueueTimeoutMS`, or server selection giving up after
    /// `serverSelectionTimeoutMS`.
    pub fn is_timeout(&self) -> bool {
        match &self.0.kind {
            ErrorKind::OperationTimeout { .. } => true,
            ErrorKind::Connection(e) => e.is_timeout(),
            ErrorKind::PoolTimeout { .. } => true,
            ErrorKind::ServerSelection { timed_out, .. } => *timed_out,
            _ => false,
        }
    }

    /// The change stream's resume token is no longer in the oplog: the server's 286
    /// `ChangeStreamHistoryLost` (the stream ended with it), or the report of a stream
    /// that restarted from now because of it (see [`history_gap`](Self::history_gap)).
    pub fn is_history_lost(&self) -> bool {
        self.code() == Some(CHANGE_STREAM_HISTORY_LOST)
            || matches!(&self.0.kind, ErrorKind::HistoryLost { .. })
    }

    /// What a change stream that restarted from now after losing its history did not
    /// deliver ([`HistoryLost::RestartFromNow`](crate::HistoryLost::RestartFromNow)).
    /// The stream that returned this error goes on.
    pub fn history_gap(&self) -> Option<&crate::resume::HistoryGap> {
        match &self.0.kind {
            ErrorKind::HistoryLost { gap } => Some(gap),
            _ => None,
        }
    }

    /// The server's 280 `ChangeStreamFatalError`: the stream cannot go on (for example
    /// a pipeline stage changed the events' `_id`), and resuming cannot cure it.
    pub fn is_change_stream_fatal(&self) -> bool {
        self.code() == Some(CHANGE_STREAM_FATAL_ERROR)
    }

    /// The operation's `timeoutMS` expired (client-side operation timeout). The error of
    /// the step that was cut short, if any, is its [`source`](std::error::Error::source)
    /// and is part of its message; a server's MaxTimeMSExpired keeps its
    /// [`code`](Error::code) (50).
    pub fn is_operation_timeout(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::OperationTimeout { .. })
    }

    /// The error of an operation whose `timeoutMS` (`timeout`) expired `during` a step
    /// ("during server selection"), `cause` being that step's own error if it had one.
    pub(crate) fn operation_timeout(
        timeout: Duration,
        during: &'static str,
        cause: Option<Error>,
    ) -> Error {
        let wire_version = cause.as_ref().and_then(Error::wire_version);
        Error::new(ErrorKind::OperationTimeout {
            timeout,
            during,
            cause: cause.map(Box::new),
        })
        .with_wire_version(wire_version)
    }

    /// The server reported the failure (`ok: 0`, write errors or a write concern error).
    pub fn is_server_error(&self) -> bool {
        self.server_error().is_some() || matches!(&self.0.kind, ErrorKind::Write { .. })
    }

    /// An invalid argument or connection string.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            &self.0.kind,
            ErrorKind::InvalidArgument { .. } | ErrorKind::InvalidUri { .. }
        )
    }

    /// A feature brook does not support yet was asked for.
    pub fn is_unsupported(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::Unsupported { .. })
    }

    /// The client was shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::Shutdown)
    }

    /// The error a timeoutMS error wraps (the step that was cut short), else `self`: what
    /// the server said is read from there.
    fn reported(&self) -> &Error {
        match &self.0.kind {
            ErrorKind::OperationTimeout { cause: Some(e), .. } => e.reported(),
            _ => self,
        }
    }

    pub(crate) fn server_error(&self) -> Option<&ServerError> {
        let this = self.reported();
        match &this.0.kind {
            ErrorKind::Server(e) => Some(e),
            ErrorKind::Command(CommandError::Server(e)) => Some(e),
            ErrorKind::Connection(e) => e.server_error(),
            ErrorKind::ChangeStream(e) => e.server_error(),
            _ => None,
        }
    }

    /// The server's error code: of the command error, else of the first write error, else
    /// of the write concern error.
    pub fn code(&self) -> Option<i32> {
        if let Some(e) = self.server_error() {
            return e.code;
        }
        match &self.reported().0.kind {
            ErrorKind::Write {
                write_errors,
                write_concern_error,
                ..
            } => write_errors
                .first()
                .map(|w| w.code)
                .or(write_concern_error.as_ref().map(|w| w.code)),
            _ => None,
        }
    }

    /// The server's name for [`code`](Error::code), when it sent one.
    pub fn code_name(&self) -> Option<&str> {
        if let Some(e) = self.server_error() {
            return e.code_name.as_deref();
        }
        match &self.reported().0.kind {
            ErrorKind::Write {
                write_errors,
                write_concern_error,
                ..
            } => match write_errors.first() {
                Some(w) => w.code_name.as_deref(),
                None => write_concern_error
                    .as_ref()
                    .and_then(|w| w.code_name.as_deref()),
            },
            _ => None,
        }
    }

    /// The server's error labels (`errorLabels`), empty when there are none.
    pub fn labels(&self) -> &[String] {
        if let Some(e) = self.server_error() {
            return &e.labels;
        }
        match &self.reported().0.kind {
            ErrorKind::Write {
                write_concern_error: Some(w),
                ..
            } => &w.labels,
            _ => &[],
        }
    }

    /// Whether [`labels`](Error::labels) contains `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels().iter().any(|l| l == label)
    }

    /// The `maxWireVersion` of the connection the error happened on, when known.
    pub fn wire_version(&self) -> Option<i32> {
        match (&self.0.kind, self.0.wire_version) {
            (_, Some(v)) => Some(v),
            (ErrorKind::Connection(e), None) => e.wire_version(),
            (ErrorKind::ChangeStream(ChangeStreamError::Server { wire_version, .. }), None) => {
                *wire_version
            }
            _ => None,
        }
    }

    /// How the change-stream machinery classifies this error when a command of a stream
    /// fails: server errors are `Server`; client-side timeouts (socket, getMore bound,
    /// selection, wait queue) `Timeout`; other network errors and a cleared pool
    /// `Network`; unreadable replies `Protocol`; anything else (a command that could not
    /// be built) `Client`.
    pub(crate) fn to_failure(&self) -> Failure {
        if let Some(e) = self.server_error() {
            return Failure::Server(e.clone());
        }
        if self.is_timeout() {
            Failure::Timeout
        } else if self.is_network() || self.is_pool_cleared() {
            Failure::Network
        } else if self.is_protocol() {
            Failure::Protocol
        } else {
            Failure::Client
        }
    }

    /// The error of a checkout that failed in the pool of `address`.
    pub(crate) fn from_pool(
        err: brook_pool::PoolError<ConnError>,
        address: &brook_conn::ServerAddress,
    ) -> Error {
        match err {
            brook_pool::PoolError::Timeout { after } => {
                Error::new(ErrorKind::PoolTimeout { after })
            }
            brook_pool::PoolError::Closed => Error::new(ErrorKind::Shutdown),
            brook_pool::PoolError::Cleared { .. } => Error::new(ErrorKind::PoolCleared {
                address: address.clone(),
            }),
            brook_pool::PoolError::Connect(e) => Error::conn(e),
            _ => Error::new(ErrorKind::PoolCleared {
                address: address.clone(),
            }),
        }
    }

    /// Whether a change stream may resume after this error, had a `getMore` failed with
    /// it (the Change Streams specification's rules, decided with
    /// [`wire_version`](Error::wire_version)): network errors and timeouts, code 43
    /// CursorNotFound, and, from wire version 9, server errors labelled
    /// `ResumableChangeStreamError`, below it the spec's list of codes.
    pub fn is_resumable_change_stream_error(&self) -> bool {
        brook_changestream::is_resumable(
            &self.to_failure(),
            self.wire_version().unwrap_or(0),
            FailedCommand::GetMore,
        )
    }

    /// Whether a read that failed with this error is retried once (the Retryable Reads
    /// specification): a network error (a timeout included), a pool cleared under the
    /// operation, or a server error whose code says the server is stepping down, shutting
    /// down or unreachable. Server selection failures are not retried.
    pub fn is_retryable_read(&self) -> bool {
        if self.is_operation_timeout() {
            // The operation's time is up (Client Side Operations Timeout).
            return false;
        }
        if self.is_network() || self.is_pool_cleared() {
            return true;
        }
        self.server_error()
            .and_then(|e| e.code)
            .is_some_and(|code| RETRYABLE_CODES.contains(&code) || code == 134)
    }

    /// Whether a retryable write that failed with this error is retried once (the
    /// Retryable Writes specification): a network error, a pool cleared under the
    /// operation, an error labelled `RetryableWriteError` (which servers of wire version
    /// 9 and newer attach), and before wire version 9 a top-level or write concern error
    /// with one of the spec's codes. A write error (`writeErrors`) never is.
    pub fn is_retryable_write(&self) -> bool {
        if self.is_operation_timeout() {
            // The operation's time is up (Client Side Operations Timeout).
            return false;
        }
        if self.is_network() || self.is_pool_cleared() || self.has_label(RETRYABLE_WRITE_LABEL) {
            return true;
        }
        if self.wire_version().is_some_and(|w| w >= 9) {
            return false;
        }
        let code = match &self.0.kind {
            ErrorKind::Write {
                write_concern_error: Some(w),
                ..
            } => Some(w.code),
            ErrorKind::Write { .. } => None,
            _ => self.server_error().and_then(|e| e.code),
        };
        code.is_some_and(|code| RETRYABLE_CODES.contains(&code))
    }

    /// Whether a change stream ended because an event had no `_id` (a pipeline stage
    /// removed it), so that it could not be resumed after that event.
    pub fn is_missing_resume_token(&self) -> bool {
        matches!(
            &self.0.kind,
            ErrorKind::ChangeStream(ChangeStreamError::MissingResumeToken)
        )
    }

    /// The write errors of a failed write (indices relative to the caller's input).
    pub fn write_errors(&self) -> &[WriteError] {
        match &self.reported().0.kind {
            ErrorKind::Write { write_errors, .. } => write_errors,
            _ => &[],
        }
    }

    /// The server's message, when the server reported the error.
    pub fn server_message(&self) -> Option<&str> {
        if let Some(e) = self.server_error() {
            return Some(&e.message);
        }
        match &self.reported().0.kind {
            ErrorKind::Write {
                write_errors,
                write_concern_error,
                ..
            } => write_errors
                .first()
                .map(|w| w.message.as_str())
                .or(write_concern_error.as_ref().map(|w| w.message.as_str())),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.kind, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("wire_version", &self.wire_version())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.kind {
            ErrorKind::OperationTimeout { cause: Some(e), .. } => Some(&**e),
            kind => std::error::Error::source(kind),
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

// The inner crates' errors convert with crate-private functions rather than `From`
// impls, so that no public impl names a type of an inner crate.
impl Error {
    /// The error of a command that failed to build or whose reply says it failed.
    pub(crate) fn command(err: CommandError) -> Error {
        match err {
            CommandError::Server(e) => Error::new(ErrorKind::Server(e)),
            other => Error::new(ErrorKind::Command(other)),
        }
    }

    /// The error of a connection.
    pub(crate) fn conn(err: ConnError) -> Error {
        match err {
            ConnError::Command {
                source,
                wire_version,
            } => Error::command(*source).with_wire_version(wire_version),
            other => {
                let wv = other.wire_version();
                Error::new(ErrorKind::Connection(other)).with_wire_version(wv)
            }
        }
    }
}

impl From<bson::error::Error> for Error {
    fn from(err: bson::error::Error) -> Error {
        Error::bson(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_conn::ServerAddress;

    fn server_error(code: i32, labels: &[&str]) -> ServerError {
        ServerError {
            code: Some(code),
            code_name: Some("SomeError".into()),
            message: "it went wrong".into(),
            labels: labels.iter().map(ToString::to_string).collect(),
            write_concern_error: false,
            raw: None,
        }
    }

    #[test]
    fn server_errors_through_conn_keep_code_labels_and_wire_version() {
        let conn = ConnError::Command {
            source: Box::new(CommandError::Server(server_error(
                91,
                &["ResumableChangeStreamError"],
            ))),
            wire_version: Some(21),
        };
        let err = Error::conn(conn);
        assert!(err.is_server_error());
        assert!(!err.is_network() && !err.is_timeout() && !err.is_invalid_argument());
        assert_eq!(err.code(), Some(91));
        assert_eq!(err.code_name(), Some("SomeError"));
        assert!(err.has_label("ResumableChangeStreamError"));
        assert!(!err.has_label("Other"));
        assert_eq!(err.wire_version(), Some(21));
        assert_eq!(err.server_message(), Some("it went wrong"));
        assert!(err.to_string().contains("it went wrong"), "{err}");
    }

    #[test]
    fn network_and_timeout_errors() {
        let address = ServerAddress::new("db.example.com", 27017);
        let closed = Error::conn(ConnError::Closed {
            address: address.clone(),
            mid_message: true,
            wire_version: Some(25),
        });
        assert!(closed.is_network());
        assert!(!closed.is_timeout());
        assert!(!closed.is_server_error());
        assert_eq!(closed.code(), None);
        assert!(closed.labels().is_empty());
        assert_eq!(closed.wire_version(), Some(25));

        let timeout = Error::conn(ConnError::Timeout {
            address,
            operation: "operation",
            after: Duration::from_secs(1),
            wire_version: None,
        });
        assert!(timeout.is_timeout() && timeout.is_network());
        assert_eq!(timeout.wire_version(), None);
        assert!(
            Error::new(ErrorKind::PoolTimeout {
                after: Duration::from_millis(5)
            })
            .is_timeout()
        );
        let sel = Error::new(ErrorKind::ServerSelection {
            message: "none".into(),
            timed_out: true,
        });
        assert!(sel.is_timeout() && !sel.is_network());
    }

    #[test]
    fn write_errors_report_the_first_code() {
        let err = Error::new(ErrorKind::Write {
            write_errors: vec![WriteError {
                index: 3,
                code: 11000,
                code_name: Some("DuplicateKey".into()),
                message: "dup".into(),
                details: None,
            }],
            write_concern_error: None,
            applied: 3,
        });
        assert!(err.is_server_error());
        assert_eq!(err.code(), Some(11000));
        assert_eq!(err.code_name(), Some("DuplicateKey"));
        assert_eq!(err.write_errors().len(), 1);
        assert!(err.to_string().contains("index 3"), "{err}");

        let wce = Error::new(ErrorKind::Write {
            write_errors: vec![],
            write_concern_error: Some(WriteConcernError {
                code: 64,
                code_name: None,
                message: "timeout".into(),
                labels: vec!["RetryableWriteError".into()],
                details: None,
            }),
            applied: 1,
        });
        assert_eq!(wce.code(), Some(64));
        assert!(wce.has_label("RetryableWriteError"));
    }

    #[test]
    fn argument_errors() {
        assert!(Error::invalid_argument("x").is_invalid_argument());
        let u = Error::unsupported("thing");
        assert!(u.is_unsupported() && !u.is_invalid_argument());
        assert_eq!(u.to_string(), "thing is not supported by brook yet");
        assert!(Error::new(ErrorKind::Shutdown).is_shutdown());
        let malformed = Error::command(CommandError::Invalid("bad".into()));
        assert!(!malformed.is_server_error());
        assert!(matches!(malformed.kind(), ErrorKind::Command(_)));
    }
}
