//! What the driver is doing, for the user: connection pool (CMAP) events, delivered to an
//! [`EventHandler`] set on [`ClientOptions::cmap_event_handler`](crate::ClientOptions)
//! and emitted as `tracing` events (target `brook::pool`); server discovery and
//! monitoring (SDAM) events, delivered to
//! [`ClientOptions::sdam_event_handler`](crate::ClientOptions) and emitted as `tracing`
//! events (target `brook::sdam`).

use std::fmt;
use std::sync::Arc;

use brook_conn::ServerAddress;
pub use brook_pool::{CheckOutFailReason, CloseReason, PoolEvent, PoolOptions};
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
