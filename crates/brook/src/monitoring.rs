//! What the driver is doing, for the user: connection pool (CMAP) events, delivered to an
//! [`EventHandler`] set on [`ClientOptions::cmap_event_handler`](crate::ClientOptions)
//! and emitted as `tracing` events (target `brook::pool`); server discovery and
//! monitoring (SDAM) events, delivered to
//! [`ClientOptions::sdam_event_handler`](crate::ClientOptions) and emitted as `tracing`
//! events (target `brook::sdam`); command monitoring events (the Command Logging and
//! Monitoring specification), delivered to
//! [`ClientOptions::command_event_handler`](crate::ClientOptions), and one `tracing` span
//! per command (target `brook::command`, see below).
//!
//! # Commands in traces
//!
//! Every command the executor runs is a span named `brook.command` (target
//! `brook::command`; level `TRACE` for a `getMore`, `DEBUG` for any other command) with
//! the fields `command` (its name), `database`, `server`, `request_id`, `operation_id`,
//! `connection_id`, and, once it is answered, `duration_us`, `outcome` (`"ok"` or
//! `"error"`) and `code` (the server's error code, if any). The commands of one operation
//! (a retried find, a killCursors) are inside a `brook.operation` span (`DEBUG`, fields
//! `command`, `database`, `operation_id`). At `TRACE`, the event `command started` has
//! the command as a field (`body`) and `command succeeded` the reply (`reply`), in
//! relaxed extended JSON, truncated to 1000 bytes (or `MONGODB_LOG_MAX_DOCUMENT_LENGTH`)
//! followed by `...`; a failure is a `command failed` event at `DEBUG`. The
//! security-sensitive commands (`authenticate`, `saslStart`, `saslContinue`,
//! `getnonce`, `createUser`, `updateUser`, `copydbgetnonce`, `copydbsaslstart`,
//! `copydb`, and `hello` / `isMaster` carrying `speculativeAuthenticate`) are shown as
//! `{}`, their replies and failure messages too. Nothing of this is built when no
//! subscriber wants it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use brook_conn::ServerAddress;
pub use brook_pool::{CheckOutFailReason, CloseReason, PoolEvent, PoolOptions};
use bson::oid::ObjectId;
use bson::{Document, RawDocument};
use tracing::{debug, trace};

/// A connection pool event of one server's pool (the CMAP specification's monitoring
/// events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CmapEvent {
    /// The server whose pool it is.
    pub address: ServerAddress,
    /// What happened.
    pub event: PoolEvent,
}

/// A user callback for driver events of type `E`, cheap to clone. It runs on the task
/// that caused the event, sometimes with a pool lock held: keep it short and never block
/// in it (send the event to a channel to do more).
pub struct EventHandler<E>(Arc<dyn Fn(&E) + Send + Sync>);

impl<E> EventHandler<E> {
    /// A handler calling `f` for every event.
    pub fn new(f: impl Fn(&E) + Send + Sync + 'static) -> EventHandler<E> {
        EventHandler(Arc::new(f))
    }

    /// Calls the handler.
    pub fn call(&self, event: &E) {
        (self.0)(event);
    }
}

impl<E> Clone for EventHandler<E> {
    fn clone(&self) -> Self {
        EventHandler(Arc::clone(&self.0))
    }
}

impl<E> fmt::Debug for EventHandler<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandler")
    }
}

impl<E> PartialEq for EventHandler<E> {
    /// Two handlers are equal when they are clones of one another.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Emits `event` as a `tracing` event: pool lifecycle at debug, per-checkout traffic at
/// trace.
pub(crate) fn trace_pool_event(address: &ServerAddress, event: &PoolEvent) {
    #[cfg(feature = "metrics")]
    crate::metrics::pool_event(address, event);
    match event {
        PoolEvent::CheckOutStarted | PoolEvent::CheckedOut { .. } | PoolEvent::CheckedIn { .. } => {
            trace!(target: "brook::pool", server = %address, ?event, "connection pool event");
        }
        _ => {
            debug!(target: "brook::pool", server = %address, ?event, "connection pool event");
        }
    }
}

/// The SDAM description types an [`SdamEvent`] carries (from brook-topology).
pub use brook_topology::{
    SdamEvent as DescriptionEvent, ServerDescription, ServerType, TopologyDescription,
    TopologyOptions, TopologyType,
};

/// A server discovery and monitoring event (the SDAM specification's monitoring events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SdamEvent {
    /// The topology opened, a server opened or closed, a server's or the topology's
    /// description changed (each only when it changed by SDAM's equality rule).
    Description(DescriptionEvent),
    /// The client shut down: every monitor stopped, every pool closed.
    TopologyClosed,
    /// A monitor is checking a server (in the streaming protocol: is about to wait for
    /// the server's next streamed hello reply).
    HeartbeatStarted {
        /// The server.
        address: ServerAddress,
        /// True for a check of the streaming protocol (an awaitable hello, whose reply
        /// the server sends when its state changes or after heartbeatFrequencyMS).
        awaited: bool,
    },
    /// A check succeeded.
    HeartbeatSucceeded {
        /// The server.
        address: ServerAddress,
        /// How long the check took (a new connection's handshake, or a hello; for an
        /// awaited check, the server's wait included).
        duration: std::time::Duration,
        /// True for a check of the streaming protocol.
        awaited: bool,
    },
    /// A check failed.
    HeartbeatFailed {
        /// The server.
        address: ServerAddress,
        /// How long until it failed.
        duration: std::time::Duration,
        /// Why.
        error: String,
        /// True for a check of the streaming protocol.
        awaited: bool,
    },
}

/// Hands `event` to the user's handler and emits it as a `tracing` event (target
/// `brook::sdam`: description changes at debug, heartbeats at trace).
pub(crate) fn emit_sdam(handler: Option<&EventHandler<SdamEvent>>, event: SdamEvent) {
    match &event {
        SdamEvent::HeartbeatStarted { .. } | SdamEvent::HeartbeatSucceeded { .. } => {
            trace!(target: "brook::sdam", ?event, "heartbeat");
        }
        SdamEvent::HeartbeatFailed { address, error, .. } => {
            debug!(target: "brook::sdam", server = %address, error, "heartbeat failed");
        }
        SdamEvent::Description(DescriptionEvent::ServerDescriptionChanged {
            address, new, ..
        }) => {
            debug!(target: "brook::sdam", server = %address, kind = ?new.server_type, "server description changed");
        }
        SdamEvent::Description(DescriptionEvent::TopologyDescriptionChanged { new, .. }) => {
            debug!(target: "brook::sdam", kind = ?new.topology_type, "topology description changed");
        }
        other => debug!(target: "brook::sdam", event = ?other, "topology event"),
    }
    if let Some(h) = handler {
        h.call(&event);
    }
}

/// A command monitoring event (the Command Logging and Monitoring specification): one
/// [`Started`](CommandEvent::Started) per command sent, then one
/// [`Succeeded`](CommandEvent::Succeeded) or [`Failed`](CommandEvent::Failed) (a reply
/// with `ok` other than 1, or no reply: a network error, a timeout) with the same
/// `request_id`. Commands of the handshake and of the monitors are not reported.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CommandEvent {
    /// The command is about to be sent.
    Started(CommandStartedEvent),
    /// The server answered with `ok: 1`.
    Succeeded(CommandSucceededEvent),
    /// The server answered with an error, or the exchange failed.
    Failed(CommandFailedEvent),
}

impl CommandEvent {
    /// The command's name (the body's first key), e.g. `"getMore"`.
    pub fn command_name(&self) -> &str {
        match self {
            CommandEvent::Started(e) => &e.command_name,
            CommandEvent::Succeeded(e) => &e.command_name,
            CommandEvent::Failed(e) => &e.command_name,
        }
    }

    /// The request id of the command's message, the same in its three events.
    pub fn request_id(&self) -> i32 {
        match self {
            CommandEvent::Started(e) => e.context.request_id,
            CommandEvent::Succeeded(e) => e.context.request_id,
            CommandEvent::Failed(e) => e.context.request_id,
        }
    }
}

/// Where a command ran: the fields every command event shares.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandContext {
    /// The database the command ran on (its `$db`).
    pub database_name: String,
    /// The request id of the command's message, the same in its three events.
    pub request_id: i32,
    /// The operation the command belongs to: the request id of the operation's first
    /// command (the same for a retry, a cursor's initial command and its getMores keep
    /// their own).
    pub operation_id: i32,
    /// The driver's id of the connection (unique within the process).
    pub connection_id: u64,
    /// The server's id of the connection (`connectionId` of its hello reply), if it said.
    pub server_connection_id: Option<i64>,
    /// The server the connection is to.
    pub address: ServerAddress,
    /// The service id of the connection behind a load balancer.
    pub service_id: Option<ObjectId>,
}

/// A command is about to be sent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandStartedEvent {
    /// The command's name.
    pub command_name: String,
    /// The command as sent (its document sequences, e.g. an insert's `documents`, as
    /// arrays); an empty document for a security-sensitive command.
    pub command: Document,
    /// Where it runs.
    pub context: CommandContext,
}

/// A command's reply had `ok: 1`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandSucceededEvent {
    /// The command's name.
    pub command_name: String,
    /// The reply; an empty document for a security-sensitive command.
    pub reply: Document,
    /// From just before the command was sent to the reply parsed.
    pub duration: Duration,
    /// Where it ran.
    pub context: CommandContext,
}

/// A command failed: the server answered with an error, or no answer came.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandFailedEvent {
    /// The command's name.
    pub command_name: String,
    /// What failed (a message with no detail for a security-sensitive command).
    pub failure: String,
    /// The server's error code, when the server answered.
    pub code: Option<i32>,
    /// From just before the command was sent to the failure.
    pub duration: Duration,
    /// Where it ran.
    pub context: CommandContext,
}

/// The commands whose body and reply are never shown (Command Logging and Monitoring,
/// "Security"), lowercase.
const SENSITIVE_COMMANDS: [&str; 9] = [
    "authenticate",
    "saslstart",
    "saslcontinue",
    "getnonce",
    "createuser",
    "updateuser",
    "copydbgetnonce",
    "copydbsaslstart",
    "copydb",
];

/// Whether the command `name` is security-sensitive; `speculative`: its body has a
/// `speculativeAuthenticate` field (which makes a `hello` or `isMaster` sensitive).
pub(crate) fn is_sensitive(name: &str, speculative: bool) -> bool {
    SENSITIVE_COMMANDS
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
        || (speculative
            && (name.eq_ignore_ascii_case("hello") || name.eq_ignore_ascii_case("ismaster")))
}

/// The default `maxDocumentLength` of the specification, in bytes.
pub const DEFAULT_MAX_DOCUMENT_LENGTH: usize = 1000;

/// The longest document shown in a trace: `MONGODB_LOG_MAX_DOCUMENT_LENGTH` when set to a
/// number, else [`DEFAULT_MAX_DOCUMENT_LENGTH`]. Read once.
pub(crate) fn max_document_length() -> usize {
    static LENGTH: OnceLock<usize> = OnceLock::new();
    *LENGTH.get_or_init(|| {
        std::env::var("MONGODB_LOG_MAX_DOCUMENT_LENGTH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_DOCUMENT_LENGTH)
    })
}

/// `text` cut to at most `max` bytes (at a character boundary), followed by `...` when
/// it was longer.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// A document as a trace shows it: relaxed extended JSON, truncated to
/// [`max_document_length`], or `{}` when redacted. Rendered only when displayed.
pub(crate) enum Shown<'a> {
    /// A document being built (a command before it is sent).
    Owned(&'a Document),
    /// A document off the wire (a reply, a serialised command).
    Raw(&'a RawDocument),
    /// A security-sensitive command or reply.
    Redacted,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owned;
        let doc = match self {
            Shown::Redacted => return f.write_str("{}"),
            Shown::Owned(doc) => *doc,
            Shown::Raw(raw) => match Document::try_from(*raw) {
                Ok(doc) => {
                    owned = doc;
                    &owned
                }
                Err(_) => return f.write_str("<invalid BSON>"),
            },
        };
        f.write_str(&truncate(relaxed_json(doc), max_document_length()))
    }
}

/// `doc` in relaxed extended JSON, its top-level fields in their order (the command's
/// name first).
fn relaxed_json(doc: &Document) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in doc.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(&value.clone().into_relaxed_extjson().to_string());
    }
    out.push('}');
    out
}

/// Hands `event` to the user's command handler.
pub(crate) fn emit_command(handler: &EventHandler<CommandEvent>, event: CommandEvent) {
    handler.call(&event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_commands() {
        for name in [
            "authenticate",
            "saslStart",
            "saslContinue",
            "getnonce",
            "createUser",
            "updateUser",
            "copydbgetnonce",
            "copydbsaslstart",
            "copydb",
        ] {
            assert!(is_sensitive(name, false), "{name}");
        }
        assert!(is_sensitive("hello", true) && is_sensitive("isMaster", true));
        assert!(!is_sensitive("hello", false) && !is_sensitive("isMaster", false));
        assert!(!is_sensitive("find", true) && !is_sensitive("getMore", false));
    }

    #[test]
    fn long_documents_are_truncated_with_an_ellipsis() {
        assert_eq!(truncate("abcdef".into(), 10), "abcdef");
        assert_eq!(truncate("abcdef".into(), 6), "abcdef");
        assert_eq!(truncate("abcdef".into(), 4), "abcd...");
        // Never inside a character: 'é' is two bytes.
        assert_eq!(truncate("aéb".into(), 2), "a...");
        let doc = bson::doc! { "insert": "c", "pad": "x".repeat(5000) };
        let shown = Shown::Owned(&doc).to_string();
        assert_eq!(shown.len(), DEFAULT_MAX_DOCUMENT_LENGTH + 3);
        assert!(shown.starts_with(r#"{"insert":"c""#) && shown.ends_with("..."));
        assert_eq!(Shown::Redacted.to_string(), "{}");
    }
}
