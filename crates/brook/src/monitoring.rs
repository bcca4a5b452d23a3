//! What the driver is doing, for the user: connection pool (CMAP) events, delivered to an
//! [`EventHandler`] set on [`ClientOptions::cmap_event_handler`](crate::ClientOptions)
//! and emitted as `tracing` events (target `brook::pool`).

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
