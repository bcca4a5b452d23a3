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

/// How a command of the stream failed, as the driver saw it: a kind, not a message.
///
/// The driver keeps its own error (with its message, its source, the address) and
/// reports it when the failure closes the stream; the machine only needs the kind to
/// decide between resuming and closing (see [`is_resumable`]).
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection failed before the reply was read: an IO error, a reset, the
    /// peer closed it.
    Network,
    /// A client-side timeout expired before the reply arrived.
    Timeout,
    /// The peer's reply could not be read or did not answer the request: a malformed
    /// frame, a checksum mismatch, a wrong `responseTo`, a decompression failure, an
    /// unexpected `moreToCome`, a malformed reply body.
    Protocol,
    /// The server answered with an error (`ok: 0`).
    Server(ServerError),
    /// A local failure before anything was sent: the command could not be built or
    /// encoded.
    Client,
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
            Failure::Network => f.write_str("network error"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Protocol => f.write_str("protocol error"),
            Failure::Server(e) => write!(f, "{e}"),
            Failure::Client => f.write_str("client error"),
        }
    }
}

/// Whether a failure of `command`, on a connection of wire version `wire_version`,
/// lets the change stream resume (the Change Streams specification's "Resumable Error"):
///
/// 1. an error of an `aggregate` never is;
/// 2. a `getMore` error that is not a server error is: [`Failure::Network`],
///    [`Failure::Timeout`] and [`Failure::Protocol`] (the specification: "any error
///    encountered which is not a server error, e.g. a timeout or network error" — a
///    reply the client cannot accept is one);
/// 3. `CursorNotFound` (43) always is;
/// 4. from wire version 9, a server error is iff it carries `ResumableChangeStreamError`;
/// 5. below wire version 9, a server error is iff its code is in [`RESUMABLE_CODES`];
/// 6. nothing else is (ElectionInProgress 216, ChangeStreamFatalError 280,
///    ChangeStreamHistoryLost 286, ...).
///
/// [`Failure::Client`] is never resumable: the getMore could not even be built or
/// encoded, nothing reached the server, and a resume cannot cure that — it would loop
/// (resume → aggregate → the same getMore fails again → resume ...).
pub fn is_resumable(failure: &Failure, wire_version: i32, command: FailedCommand) -> bool {
    if command == FailedCommand::Aggregate {
        return false;
    }
    match failure {
        Failure::Network | Failure::Timeout | Failure::Protocol => true,
        Failure::Client => false,
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
///
/// For the failures a driver reports ([`Failure::Network`], [`Failure::Timeout`],
/// [`Failure::Protocol`], [`Failure::Client`]) the error names the kind and the
/// command only: the driver holds the original error and is expected to report that
/// one instead (see [`command`](Self::command)).
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
    #[error("change stream {command} failed: network error")]
    Network {
        /// The command that failed.
        command: FailedCommand,
    },
    /// A client-side timeout expired during the `aggregate`.
    #[error("change stream {command} timed out")]
    Timeout {
        /// The command that failed.
        command: FailedCommand,
    },
    /// The reply to the `aggregate` could not be read or did not answer it.
    #[error("change stream {command} failed: protocol error{}", detail(.reason))]
    Protocol {
        /// The command that failed.
        command: FailedCommand,
        /// What was wrong with the reply, when the machine found it itself (parsing
        /// a reply handed to [`handle_reply`](crate::ChangeStreamMachine::handle_reply));
        /// `None` when the driver reported [`Failure::Protocol`].
        reason: Option<String>,
    },
    /// A command could not be built or encoded, so nothing was sent.
    #[error("change stream {command} failed: client error")]
    Client {
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

/// `": reason"`, or nothing.
fn detail(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map_or_else(String::new, |reason| format!(": {reason}"))
}

impl ChangeStreamError {
    /// Builds the error reported for a fatal `failure` of `command`.
    pub fn from_failure(
        failure: Failure,
        command: FailedCommand,
        wire_version: Option<i32>,
    ) -> ChangeStreamError {
        match failure {
            Failure::Network => ChangeStreamError::Network { command },
            Failure::Timeout => ChangeStreamError::Timeout { command },
            Failure::Protocol => ChangeStreamError::Protocol {
                command,
                reason: None,
            },
            Failure::Client => ChangeStreamError::Client { command },
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

    /// Whether a reply that could not be read or did not answer its command caused
    /// this.
    pub fn is_protocol(&self) -> bool {
        matches!(self, ChangeStreamError::Protocol { .. })
    }

    /// The command that failed, for command failures ([`Server`](Self::Server),
    /// [`Network`](Self::Network), [`Timeout`](Self::Timeout),
    /// [`Protocol`](Self::Protocol), [`Client`](Self::Client)).
    pub fn command(&self) -> Option<FailedCommand> {
        match self {
            ChangeStreamError::Server { command, .. }
            | ChangeStreamError::Network { command }
            | ChangeStreamError::Timeout { command }
            | ChangeStreamError::Protocol { command, .. }
            | ChangeStreamError::Client { command } => Some(*command),
            ChangeStreamError::MissingResumeToken
            | ChangeStreamError::Malformed(_)
            | ChangeStreamError::Closed => None,
        }
    }

    /// The failure this error reports, for command failures.
    fn failure(&self) -> Option<Failure> {
        match self {
            ChangeStreamError::Server { error, .. } => Some(Failure::Server((**error).clone())),
            ChangeStreamError::Network { .. } => Some(Failure::Network),
            ChangeStreamError::Timeout { .. } => Some(Failure::Timeout),
            ChangeStreamError::Protocol { .. } => Some(Failure::Protocol),
            ChangeStreamError::Client { .. } => Some(Failure::Client),
            ChangeStreamError::MissingResumeToken
            | ChangeStreamError::Malformed(_)
            | ChangeStreamError::Closed => None,
        }
    }

    /// Whether the error, as the machine saw it, would have allowed a resume (see
    /// [`is_resumable`]). It is false for every error the machine reports, since
    /// resumable errors are resumed rather than reported and an `aggregate`'s errors
    /// never are — the one exception being a resume whose own `aggregate` failed: that
    /// error is surfaced (one attempt per error) and is reported as it is.
    pub fn is_resumable(&self) -> bool {
        let wire_version = match self {
            ChangeStreamError::Server { wire_version, .. } => wire_version.unwrap_or(0),
            _ => 0,
        };
        match (self.failure(), self.command()) {
            (Some(failure), Some(command)) => is_resumable(&failure, wire_version, command),
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
            // Every getMore error that is not a server error, but a local one.
            for kind in [Failure::Network, Failure::Timeout, Failure::Protocol] {
                assert!(is_resumable(&kind, wire, gm), "{kind}");
                assert!(!is_resumable(&kind, wire, agg), "{kind}");
            }
            assert!(!is_resumable(&Failure::Client, wire, gm));
            assert!(!is_resumable(&Failure::Client, wire, agg));
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
        let n = ChangeStreamError::from_failure(Failure::Network, FailedCommand::Aggregate, None);
        assert!(n.is_network() && !n.is_timeout() && !n.is_protocol() && !n.is_resumable());
        assert_eq!(
            n.to_string(),
            "change stream aggregate failed: network error"
        );
        assert_eq!(n.command(), Some(FailedCommand::Aggregate));
        let t = ChangeStreamError::from_failure(Failure::Timeout, FailedCommand::Aggregate, None);
        assert!(t.is_timeout() && !t.is_resumable());
        assert_eq!(t.to_string(), "change stream aggregate timed out");
        let p = ChangeStreamError::from_failure(Failure::Protocol, FailedCommand::Aggregate, None);
        assert!(p.is_protocol() && !p.is_resumable() && p.code().is_none());
        assert_eq!(
            p.to_string(),
            "change stream aggregate failed: protocol error"
        );
        let p = ChangeStreamError::Protocol {
            command: FailedCommand::Aggregate,
            reason: Some("no cursor".into()),
        };
        assert_eq!(
            p.to_string(),
            "change stream aggregate failed: protocol error: no cursor"
        );
        // Were a getMore's protocol error reported, it would be the resumable kind.
        let p = ChangeStreamError::from_failure(Failure::Protocol, FailedCommand::GetMore, None);
        assert!(p.is_resumable());
        let c = ChangeStreamError::from_failure(Failure::Client, FailedCommand::GetMore, None);
        assert!(!c.is_resumable() && !c.is_network());
        assert_eq!(c.to_string(), "change stream getMore failed: client error");
        assert_eq!(c.command(), Some(FailedCommand::GetMore));
        assert_eq!(
            ChangeStreamError::MissingResumeToken.to_string(),
            "cannot provide resume functionality when the resume token is missing"
        );
        assert_eq!(ChangeStreamError::Closed.command(), None);
    }
}
