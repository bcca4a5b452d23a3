//! The pool's error.

use std::time::Duration;

/// Why a checkout failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// `wait_queue_timeout` expired (CMAP `WaitQueueTimeoutError`).
    #[error("timed out while checking out a connection from connection pool")]
    Timeout {
        /// How long the checkout had waited.
        after: Duration,
    },
    /// The pool is closed (CMAP `PoolClosedError`).
    #[error("attempted to check out a connection from closed connection pool")]
    Closed,
    /// The pool is paused: it was cleared before or during the checkout and not made ready
    /// again (CMAP `PoolClearedError`, a retryable error that must not mark the server
    /// unknown).
    #[error("connection pool was cleared (generation {generation})")]
    Cleared {
        /// The pool's generation when the checkout failed.
        generation: u64,
    },
    /// Establishing a connection failed; the manager's error.
    #[error("failed to establish a connection")]
    Connect(#[source] E),
}

impl<E> PoolError<E> {
    /// The CMAP `ConnectionCheckOutFailedEvent` reason this error is reported with.
    pub fn fail_reason(&self) -> crate::CheckOutFailReason {
        match self {
            PoolError::Timeout { .. } => crate::CheckOutFailReason::Timeout,
            PoolError::Closed => crate::CheckOutFailReason::PoolClosed,
            PoolError::Cleared { .. } => crate::CheckOutFailReason::PoolCleared,
            PoolError::Connect(_) => crate::CheckOutFailReason::ConnectionError,
        }
    }
}
