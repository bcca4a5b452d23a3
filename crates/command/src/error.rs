//! The crate's error type, the server's error shapes, and `check_ok`.

use std::fmt;

use brook_wire::{SharedDoc, WireError};
use bson::RawDocument;

use crate::parse::{self, Fields};

/// Everything that can go wrong while building a command or reading its reply.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The server answered `ok: 0` (or the equivalent): the command failed on the server.
    #[error(transparent)]
    Server(ServerError),
    /// The reply does not have the shape the command's reply must have (a missing
    /// `cursor`, a field of the wrong type, undecodable BSON, ...).
    #[error("malformed {command} reply: {reason}")]
    MalformedReply {
        /// The command whose reply was malformed (its server name, e.g. `"getMore"`).
        command: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The command's arguments cannot make a valid command (e.g. an empty insert batch,
    /// a `getMore` on cursor id 0).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The handshake's `appName` is longer than the server accepts.
    #[error("appName is {len} bytes long; the limit is {max} bytes")]
    AppNameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit ([`crate::ClientMetadata::MAX_APP_NAME_LEN`]).
        max: usize,
    },
    /// The handshake's `client` document stays over the limit even after every
    /// optional field the handshake specification allows to drop was dropped (only
    /// possible with an overlong driver name or version).
    #[error("client metadata is {len} bytes even after trimming; the limit is {max} bytes")]
    ClientMetadataTooLarge {
        /// Its size in bytes after trimming.
        len: usize,
        /// The limit ([`crate::ClientMetadata::MAX_DOCUMENT_SIZE`]).
        max: usize,
    },
    /// The framing layer refused a document or message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A document could not be serialised to BSON.
    #[error("BSON error: {0}")]
    Bson(#[from] bson::error::Error),
}

impl CommandError {
    /// The server's error, when the command failed on the server.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            CommandError::Server(err) => Some(err),
            _ => None,
        }
    }

    /// The server's error code, when the command failed on the server with one.
    pub fn code(&self) -> Option<i32> {
        self.server_error().and_then(|err| err.code)
    }

    /// The server's error labels (empty for errors that did not come from the server).
    pub fn labels(&self) -> &[String] {
        self.server_error().map_or(&[], |err| err.labels.as_slice())
    }

    /// Whether the server's error carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels().iter().any(|l| l == label)
    }

    pub(crate) fn malformed(command: &'static str, reason: impl Into<String>) -> CommandError {
        CommandError::MalformedReply {
            command,
            reason: reason.into(),
        }
    }
}

impl From<ServerError> for CommandError {
    fn from(err: ServerError) -> Self {
        CommandError::Server(err)
    }
}

/// A command that failed on the server: `{ok: 0, code?, codeName?, errmsg, errorLabels?}`.
#[derive(Debug, Clone)]
pub struct ServerError {
    /// The error code. Absent in some replies (old servers, proxies, some mongos paths).
    pub code: Option<i32>,
    /// The error's name, e.g. `"CursorNotFound"`.
    pub code_name: Option<String>,
    /// The server's message (`errmsg`; empty when the reply has none).
    pub message: String,
    /// The error labels (`errorLabels`), e.g. `"ResumableChangeStreamError"`.
    pub labels: Vec<String>,
    /// True when this error is a write concern error (the command itself succeeded,
    /// see [`WriteConcernError::to_server_error`]).
    pub write_concern_error: bool,
    /// The whole reply the error came from, when it is available.
    pub raw: Option<SharedDoc>,
}

impl ServerError {
    /// Whether the error carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// Reads the error fields of a failed reply. Lenient: fields of unexpected types
    /// are ignored rather than turning a server error into a malformed-reply error.
    fn from_fields(doc: &RawDocument, raw: Option<SharedDoc>) -> ServerError {
        let fields = Fields::lenient(doc);
        ServerError {
            code: fields.lenient_i32("code"),
            code_name: fields.lenient_str("codeName"),
            message: fields.lenient_str("errmsg").unwrap_or_default(),
            labels: fields.lenient_labels("errorLabels"),
            write_concern_error: false,
            raw,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.write_concern_error {
            f.write_str("write concern error")?;
        } else {
            f.write_str("server error")?;
        }
        match (&self.code_name, self.code) {
            (Some(name), Some(code)) => write!(f, " {name} ({code})")?,
            (Some(name), None) => write!(f, " {name}")?,
            (None, Some(code)) => write!(f, " {code}")?,
            (None, None) => {}
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.labels.is_empty() {
            write!(f, " (labels: {})", self.labels.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// One failed document of a write command (`writeErrors[]`).
#[derive(Debug, Clone)]
pub struct WriteError {
    /// The position of the failed statement in the command's batch.
    pub index: usize,
    /// The error code.
    pub code: i32,
    /// The error's name, when the server sent one.
    pub code_name: Option<String>,
    /// The server's message (`errmsg`).
    pub message: String,
    /// The `errInfo` document, sharing the reply's buffer.
    pub details: Option<SharedDoc>,
}

/// The write concern could not be satisfied (`writeConcernError`); the write itself
/// may have been applied.
#[derive(Debug, Clone)]
pub struct WriteConcernError {
    /// The error code.
    pub code: i32,
    /// The error's name, when the server sent one.
    pub code_name: Option<String>,
    /// The server's message (`errmsg`).
    pub message: String,
    /// Labels from `writeConcernError.errorLabels` (servers before 4.4) followed by
    /// the reply's top-level `errorLabels` (4.4 and later), without duplicates.
    pub labels: Vec<String>,
    /// The `errInfo` document, sharing the reply's buffer.
    pub details: Option<SharedDoc>,
}

impl WriteConcernError {
    /// This error as a [`ServerError`] with `write_concern_error: true`, for callers
    /// that report write concern failures as errors.
    pub fn to_server_error(&self) -> ServerError {
        ServerError {
            code: Some(self.code),
            code_name: self.code_name.clone(),
            message: self.message.clone(),
            labels: self.labels.clone(),
            write_concern_error: true,
            raw: self.details.clone(),
        }
    }
}

/// Checks a reply's `ok` field: `Ok(())` for `ok: 1`, [`CommandError::Server`] for any
/// other value (`ok` may be a double, an int32, an int64 or a bool), and
/// [`CommandError::MalformedReply`] when `ok` is missing or not a number or bool.
///
/// The returned [`ServerError`]'s `raw` is a copy of `reply`; [`Command`](crate::Command)
/// implementations use a variant that shares the reply's buffer instead.
pub fn check_ok(reply: &RawDocument) -> Result<(), CommandError> {
    check_ok_inner("command", reply, || SharedDoc::from_raw(reply))
}

/// `check_ok` for a reply held in a [`SharedDoc`]: the error's `raw` shares its buffer.
pub(crate) fn check_ok_shared(
    command: &'static str,
    reply: &SharedDoc,
) -> Result<(), CommandError> {
    check_ok_inner(command, reply.as_raw(), || reply.clone())
}

fn check_ok_inner(
    command: &'static str,
    doc: &RawDocument,
    raw: impl FnOnce() -> SharedDoc,
) -> Result<(), CommandError> {
    let fields = Fields::new(command, doc);
    let Some(ok) = fields.get("ok")? else {
        return Err(CommandError::malformed(
            command,
            "the reply has no `ok` field",
        ));
    };
    match parse::ok_value(ok) {
        Some(true) => Ok(()),
        Some(false) => Err(CommandError::Server(ServerError::from_fields(
            doc,
            Some(raw()),
        ))),
        None => Err(CommandError::malformed(
            command,
            format!("`ok` has type {:?}", ok.element_type()),
        )),
    }
}
