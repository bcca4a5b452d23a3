//! What the pool needs from the connections it pools.

use std::future::Future;

/// Opens connections for a [`Pool`](crate::Pool) and judges them.
///
/// The pool calls [`connect`](Manager::connect) in a task of its own (see the crate docs),
/// never while holding its lock; [`is_broken`](Manager::is_broken) is called with the
/// pool's lock held, so it must be quick and must not call into the pool.
pub trait Manager: Send + Sync + 'static {
    /// The pooled connection.
    type Connection: Send + 'static;
    /// What establishing a connection may fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens and establishes one connection (the implementation bounds it, e.g.
    /// connectTimeoutMS: a `connect` that never finishes holds a `max_connecting` slot
    /// until the pool is cleared with `interrupt_in_use`, closed or dropped).
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Whether a connection can no longer be used (checked at check-in and before handing
    /// out an idle one, and by the background task on idle ones).
    fn is_broken(&self, conn: &Self::Connection) -> bool;

    /// Called when [`connect`](Manager::connect) failed, before the pool reports the failed
    /// connection closed: the place to feed the error to SDAM (whose rule is that an error
    /// before the handshake completes marks the server Unknown and clears its pool).
    /// `generation` is the pool's generation when the attempt started.
    ///
    /// Returning [`ConnectErrorAction::Clear`] clears the pool (without interrupting
    /// in-use connections) if its generation is still `generation`, so that the
    /// `PoolCleared` event comes before the failed connection's `ConnectionClosed`, as
    /// CMAP's tests expect. The default keeps the pool as it is.
    ///
    /// It runs in the establishing task, without the pool's lock, and may also be called
    /// for an attempt the pool gave up on at the same moment (closed or interrupted).
    fn on_connect_error(&self, error: &Self::Error, generation: u64) -> ConnectErrorAction {
        let _ = (error, generation);
        ConnectErrorAction::Keep
    }

    /// The service an established connection belongs to, behind a load balancer (the
    /// `serviceId` of its handshake): [`Pool::clear_service`](crate::Pool::clear_service)
    /// makes stale only the connections of one service. `None` (the default) for a
    /// connection to a server itself.
    fn service_id(&self, conn: &Self::Connection) -> Option<crate::ServiceId> {
        let _ = conn;
        None
    }
}

/// What a failed establishment does to the pool; see [`Manager::on_connect_error`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectErrorAction {
    /// Leave the pool as it is.
    #[default]
    Keep,
    /// Clear the pool (as `clear(false)`), if it is still at the attempt's generation.
    Clear,
}
