//! CMAP monitoring events.

use std::sync::Arc;
use std::time::Duration;

use crate::options::PoolOptions;

/// Receives every [`PoolEvent`] of one pool.
///
/// Events are delivered one at a time, in the order the pool's state changed, never while
/// the pool's lock is held: the handler may call into the pool (`stats()`, `clear()`, ...).
/// It runs on whichever thread happens to be delivering (the one that caused the event,
/// or another one already delivering), so it should be quick and must not block.
pub type EventHandler = Arc<dyn Fn(&PoolEvent) + Send + Sync>;

/// A CMAP monitoring event (the spec's `*Event` types, without the address, which the
/// facade knows).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// CMAP `PoolCreatedEvent`.
    PoolCreated {
        /// The options the pool was created with.
        options: PoolOptions,
    },
    /// CMAP `PoolReadyEvent`: the pool went from paused to ready.
    PoolReady,
    /// CMAP `PoolClearedEvent`: the pool went from ready to paused, or (with a
    /// `service_id`, behind a load balancer) the connections of one service were made
    /// stale.
    PoolCleared {
        /// Whether checked-out connections were interrupted too.
        interrupt_in_use: bool,
        /// The service cleared ([`Pool::clear_service`](crate::Pool::clear_service)).
        service_id: Option<crate::ServiceId>,
    },
    /// CMAP `PoolClosedEvent`.
    PoolClosed,
    /// CMAP `ConnectionCreatedEvent`: establishing a new connection started.
    ConnectionCreated {
        /// The connection's id in this pool (1, 2, ... in creation order).
        connection_id: u64,
    },
    /// CMAP `ConnectionReadyEvent`: a connection was established.
    ConnectionReady {
        /// The connection's id.
        connection_id: u64,
        /// Time since its `ConnectionCreated`.
        duration: Duration,
    },
    /// CMAP `ConnectionClosedEvent`: a connection left the pool (also one whose
    /// establishment failed or was interrupted).
    ConnectionClosed {
        /// The connection's id.
        connection_id: u64,
        /// Why.
        reason: CloseReason,
    },
    /// CMAP `ConnectionCheckOutStartedEvent`.
    CheckOutStarted,
    /// CMAP `ConnectionCheckOutFailedEvent`.
    CheckOutFailed {
        /// Why.
        reason: CheckOutFailReason,
        /// Time since the checkout started.
        duration: Duration,
    },
    /// CMAP `ConnectionCheckedOutEvent`.
    CheckedOut {
        /// The connection's id.
        connection_id: u64,
        /// Time since the checkout started.
        duration: Duration,
    },
    /// CMAP `ConnectionCheckedInEvent` (also emitted for a connection discarded by its
    /// holder, before it is closed).
    CheckedIn {
        /// The connection's id.
        connection_id: u64,
    },
}

/// Why a connection was closed (CMAP `ConnectionClosedEvent.reason`, plus
/// [`Surplus`](CloseReason::Surplus)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// CMAP `"stale"`: the pool was cleared after the connection was created (also a
    /// connection whose establishment a `clear(true)` interrupted).
    Stale,
    /// CMAP `"idle"`: available for longer than `max_idle_time`.
    Idle,
    /// CMAP `"error"`: the manager reported it broken, its holder discarded it, or
    /// establishing it failed.
    Error,
    /// CMAP `"poolClosed"`: the pool was closed.
    PoolClosed,
    /// brook-specific: a dedicated connection checked in while the pool already held
    /// `max_pool_size` connections. A facade reporting CMAP events maps it to `"idle"` or
    /// `"stale"` as it prefers; neither is quite right, so the pool keeps its own name.
    Surplus,
}

/// Why a checkout failed (CMAP `ConnectionCheckOutFailedEvent.reason`, refined).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutFailReason {
    /// CMAP `"timeout"`: `wait_queue_timeout` expired.
    Timeout,
    /// CMAP `"connectionError"`: establishing the connection failed.
    ConnectionError,
    /// CMAP `"poolClosed"`.
    PoolClosed,
    /// The pool is paused (cleared): CMAP reports this as `"connectionError"`.
    PoolCleared,
    /// brook-specific: the checkout future was dropped before it finished (an outer
    /// timeout, a `select!` that took another branch). CMAP has no such case; a facade
    /// reports it as `"timeout"`.
    Cancelled,
}
