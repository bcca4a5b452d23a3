//! How a failed command is reported to the machine ([`Failure`]), the resumability
//! rules ([`is_resumable`]), and the crate's error type ([`ChangeStreamError`]).

use std::fmt;

use brook_command::ServerError;

/// The error label with which servers of wire version 9 or more mark resumable errors.
pub const RESUMABLE_LABEL: &str = "ResumableChangeStreamError";

/// Code 43, `CursorNotFound`: always resumable.
pub const CURSOR_NOT_FOUND: i32 = 43;

/// The first wire version (server 4.4) whose resumable errors carry
/// [`RESUMABLE_LABEL`]; before it, [`RESUMABLE_CODES`] decides.
pub const LABEL_MIN_WIRE_VERSION: i32 = 9;

/// The error codes that make a `getMore` failure resumable on servers of wire version
/// below 9: HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress,
/// FailedToSatisfyReadPreference, StaleEpoch, PrimarySteppedDown, RetryChangeStream,
/// ExceededTimeLimit, SocketException, NotWritablePrimary, InterruptedAtShutdown,
/// InterruptedDueToReplStateChange, StaleConfig, NotPrimaryNoSecondaryOk,
/// NotPrimaryOrSecondary, StaleShardVersion.
pub const RESUMABLE_CODES: [i32; 17] = [
    6, 7, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436, 63,
];

/// Which of the stream's commands failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedCommand {
    /// The `aggregate` that opens (or re-opens, when resuming) the stream's cursor.
    Aggregate,
    /// A `getMore` on the stream's cursor.
    GetMore,
}

impl fmt::Display for FailedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailedCommand::Aggregate => "aggregate",
            FailedCommand::GetMore => "getMore",
        })
    }
}

/// How a command of the stream failed, as the driver saw it.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection failed (reset, closed, unreachable) before a reply was read.
    Network(String),
    /// A client-side timeout expired before the reply arrived.
    Timeout(String),
    /// The server answered with an error (`ok: 0`).
    Server(ServerError),
    /// Any other client-side failure (a malformed reply, a command that could not be
    /// encoded, ...): never resumable.
    Client(String),
}

impl Failure {
    /// A server error with `code` and `labels` (for tests and fake servers).
    pub fn server(code: i32, labels: &[&str]) -> Failure {
        Failure::Server(ServerError {
            code: Some(code),
            code_name: None,
            message: String::new(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            write_concern_error: false,
            raw: None,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Network(m) => write!(f, "network error: {m}"),
            Failure::Timeout(m) => write!(f, "timed out: {m}"),
            Failure::Server(e) => write!(f, "{e}"),
            Failure::Client(m) => write!(f, "client error: {m}"),
        }
    }
}

/// Whether a failure of `command`, on a connection of wire version `wire_version`,
/// lets the change stream resume (the Change Streams specification's "Resumable Error"):
///
/// 1. an error of an `aggregate` never is;
/// 2. a network error or client-side timeout of a `getMore` is;
/// 3. `CursorNotFound` (43) always is;
/// 4. from wire version 9, a server error is iff it carries `ResumableChangeStreamError`;
/// 5. below wire version 9, a server error is iff its code is in [`RESUMABLE_CODES`];
/// 6. nothing else is (other client errors, ElectionInProgress 216,
///    ChangeStreamFatalError 280, ChangeStreamHistoryLost 286, ...).
pub fn is_resumable(failure: &Failure, wire_version: i32, command: FailedCommand) -> bool {
    if command == FailedCommand::Aggregate {
        return false;
    }
    match failure {
        Failure::Network(_) | Failure::Timeout(_) => true,
        Failure::Client(_) => false,
        Failure::Server(err) => {
            if err.code == Some(CURSOR_NOT_FOUND) {
                true
            } else if wire_version >= LABEL_MIN_WIRE_VERSION {
                err.has_label(RESUMABLE_LABEL)
            } else {
                err.code.is_some_and(|code| RESUMABLE_CODES.contains(&code))
            }
        }
    }
}

/// Why a change stream stopped.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeStreamError {
    /// A command failed on the server, and the error was not resumable (or it was the
    /// `aggregate`, whose errors never are).
    #[error("change stream {command} failed: {error}")]
    Server {
        /// The server's error (boxed: it carries the whole reply).
        error: Box<ServerError>,
        /// The command that failed.
        command: FailedCommand,
        /// The wire version of the connection it failed on, when known.
        wire_version: Option<i32>,
    },
    /// The network failed during the `aggregate` (a `getMore`'s network errors are
    /// resumed, not reported).
    #[error("change stream {command} failed: network error: {message}")]
    Network {
        /// The driver's description of the failure.
        message: String,
        /// The command that failed.
        command: FailedCommand,
    },
    /// A client-side timeout expired during the `aggregate`.
    #[error("change stream {command} timed out: {message}")]
    Timeout {
        /// The driver's description of the failure.
        message: String,
        /// The command that failed.
        command: FailedCommand,
    },
    /// Another client-side failure (e.g. a malformed reply).
    #[error("change stream {command} failed: {message}")]
    Client {
        /// The driver's description of the failure.
        message: String,
        /// The command that failed.
        command: FailedCommand,
    },
    /// An event had no `_id` document (a pipeline stage removed or replaced it), so
    /// the stream cannot resume after it. The stream is closed.
    #[error("cannot provide resume functionality when the resume token is missing")]
    MissingResumeToken,
    /// An event or a resume token could not be read as BSON.
    #[error("malformed change stream data: {0}")]
    Malformed(String),
    /// The stream was closed. The machine itself never yields this (a closed machine's
    /// `poll_event` returns `None`); drivers use it to answer a user who iterates a
    /// closed stream.
    #[error("the change stream is closed")]
    Closed,
}

impl ChangeStreamError {
    /// Builds the error reported for a fatal `failure` of `command`.
    pub fn from_failure(
        failure: Failure,
        command: FailedCommand,
        wire_version: Option<i32>,
    ) -> ChangeStreamError {
        match failure {
            Failure::Network(message) => ChangeStreamError::Network { message, command },
            Failure::Timeout(message) => ChangeStreamError::Timeout { message, command },
            Failure::Client(message) => ChangeStreamError::Client { message, command },
            Failure::Server(error) => ChangeStreamError::Server {
                error: Box::new(error),
                command,
                wire_version,
            },
        }
    }

    /// The server's error, when a command failed on the server.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ChangeStreamError::Server { error, .. } => Some(&**error),
            _ => None,
        }
    }

    /// The server's error code, when there is one.
    pub fn code(&self) -> Option<i32> {
        self.server_error().and_then(|e| e.code)
    }

    /// Whether a network error caused this.
    pub fn is_network(&self) -> bool {
        matches!(self, ChangeStreamError::Network { .. })
    }

    /// Whether a client-side timeout caused this.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ChangeStreamError::Timeout { .. })
    }

    /// The command that failed, for command failures.
    pub fn command(&self) -> Option<FailedCommand> {
        match self {
            ChangeStreamError::Server { command, .. }
            | ChangeStreamError::Network { command, .. }
            | ChangeStreamError::Timeout { command, .. }
            | ChangeStreamError::Client { command, .. } => Some(*command),
            _ => None,
        }
    }

    /// Whether the error, as the machine saw it, would have allowed a resume. It is
    /// false for every error the machine reports, since resumable errors are resumed
    /// rather than reported — except when the resume itself failed, where the
    /// resumable error is surfaced as the spec allows only one attempt.
    pub fn is_resumable(&self) -> bool {
        match self {
            ChangeStreamError::Server {
                error,
                command,
                wire_version,
            } => is_resumable(
                &Failure::Server((**error).clone()),
                wire_version.unwrap_or(0),
                *command,
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        let gm = FailedCommand::GetMore;
        let agg = FailedCommand::Aggregate;
        for code in RESUMABLE_CODES {
            assert!(is_resumable(&Failure::server(code, &[]), 8, gm), "{code}");
            assert!(!is_resumable(&Failure::server(code, &[]), 9, gm), "{code}");
            assert!(is_resumable(
                &Failure::server(code, &[RESUMABLE_LABEL]),
                9,
                gm
            ));
            assert!(!is_resumable(&Failure::server(code, &[]), 8, agg));
        }
        for wire in [6, 8, 9, 21] {
            assert!(is_resumable(&Failure::server(43, &[]), wire, gm));
            assert!(!is_resumable(&Failure::server(43, &[]), wire, agg));
            for code in [216, 280, 286, 11601, 136, 237, 50] {
                assert!(!is_resumable(&Failure::server(code, &[]), wire, gm));
            }
            assert!(is_resumable(&Failure::Network("x".into()), wire, gm));
            assert!(is_resumable(&Failure::Timeout("x".into()), wire, gm));
            assert!(!is_resumable(&Failure::Network("x".into()), wire, agg));
            assert!(!is_resumable(&Failure::Client("x".into()), wire, gm));
        }
        // A label is ignored below wire version 9.
        assert!(!is_resumable(
            &Failure::server(50, &[RESUMABLE_LABEL]),
            8,
            gm
        ));
        // A server error without a code.
        let mut no_code = ServerError {
            code: None,
            code_name: None,
            message: String::new(),
            labels: vec![],
            write_concern_error: false,
            raw: None,
        };
        assert!(!is_resumable(&Failure::Server(no_code.clone()), 8, gm));
        no_code.labels.push(RESUMABLE_LABEL.into());
        assert!(is_resumable(&Failure::Server(no_code), 9, gm));
    }

    #[test]
    fn error_predicates() {
        let e = ChangeStreamError::from_failure(
            Failure::server(6, &[]),
            FailedCommand::GetMore,
            Some(8),
        );
        assert_eq!(e.code(), Some(6));
        assert!(e.is_resumable());
        assert_eq!(e.command(), Some(FailedCommand::GetMore));
        assert!(!e.is_network());
        let n = ChangeStreamError::from_failure(
            Failure::Network("reset".into()),
            FailedCommand::Aggregate,
            None,
        );
        assert!(n.is_network() && !n.is_timeout() && !n.is_resumable());
        assert_eq!(
            n.to_string(),
            "change stream aggregate failed: network error: reset"
        );
        assert_eq!(
            ChangeStreamError::MissingResumeToken.to_string(),
            "cannot provide resume functionality when the resume token is missing"
        );
        assert_eq!(ChangeStreamError::Closed.command(), None);
    }
}
