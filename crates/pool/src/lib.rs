//! A connection pool following the MongoDB Connection Monitoring and Pooling (CMAP)
//! specification, generic over a [`Manager`] that opens and judges connections. It knows
//! nothing of MongoDB: the facade's manager does the TCP/TLS connect, the handshake and
//! authentication, and maps [`PoolEvent`]s to its own monitoring.
//!
//! # Behaviour
//!
//! - States: a pool is created **paused**; [`Pool::ready`] makes it ready, [`Pool::clear`]
//!   pauses it again (and bumps the generation), [`Pool::close`] is final. A checkout on a
//!   paused pool fails at once with [`PoolError::Cleared`], on a closed one with
//!   [`PoolError::Closed`].
//! - Limits: `max_pool_size` bounds the connections counted against the pool (available,
//!   in use, being established); `max_connecting` bounds establishments in progress;
//!   `min_pool_size` is kept while ready; `max_idle_time` closes idle connections;
//!   `wait_queue_timeout` bounds a whole checkout.
//! - Order: the wait queue is FIFO; idle connections are reused LIFO (most recently checked
//!   in first); connection ids start at 1 and grow in creation order.
//! - Events are delivered in the order of the state changes, outside the pool's lock (see
//!   [`EventHandler`]).
//!
//! # Establishment in spawned tasks
//!
//! [`Manager::connect`] always runs in a task the pool spawns, never in the checkout's
//! future, and no lock is held across it. As in CMAP:
//!
//! - a checkout that no available connection can serve starts an establishment of its
//!   own while `max_connecting` and `max_pool_size` allow, and gets that connection;
//!   when establishing fails, that checkout fails with [`PoolError::Connect`]
//!   ([`Manager::on_connect_error`] is told first and may clear the pool);
//! - a checkout blocked by those limits takes the first connection that becomes
//!   available: checked in, or made by the `min_pool_size` fill (whose establishments
//!   count as coming for the oldest blocked checkouts, so they do not start more);
//! - available connections go to the oldest checkout that is not establishing its own.
//!
//! Because the establishment is not the checkout's future:
//!
//! - dropping a checkout (timeout, `select!`, task abort) never wastes a connection: its
//!   establishment goes on and the connection becomes available (or is closed, if the pool
//!   was cleared or closed meanwhile);
//! - a `connect` that hangs blocks nothing but its own `max_connecting` and
//!   `max_pool_size` slots and the checkout waiting for it (until that checkout's timeout
//!   or drop): other checkouts use the other slots, `clear(true)`, `close()` and dropping
//!   the pool abort it. The manager must bound `connect` (connectTimeoutMS), or the slot
//!   stays taken. The same holds for a hung `min_pool_size` establishment and the oldest
//!   blocked checkout counting on it.
//!
//! # Cancellation
//!
//! Every `await` in a checkout is a wait on a oneshot channel whose sender sits in the wait
//! queue. Dropping the checkout future removes its queue entry under the lock (emitting
//! `CheckOutFailed` with reason [`CheckOutFailReason::Cancelled`]) and re-runs the
//! dispatch; if the pool had already handed it a connection, the connection is checked
//! back in. Each `CheckOutStarted` is thus followed by exactly one `CheckedOut` or
//! `CheckOutFailed`, and the counters in [`PoolStats`] stay exact.
//!
//! # Dedicated connections
//!
//! [`Pool::check_out_dedicated`] hands out connections outside the `max_pool_size`
//! accounting, for a long-polling change stream that must never make other operations
//! wait. See its docs.
//!
//! # Interrupting in-use connections
//!
//! The pool never holds a checked-out connection, so it cannot close one. After
//! `clear(true)` (or `close()`) [`Pooled::interrupted`] resolves for every connection of an
//! older generation; the holder selects on it beside its IO and drops or discards the
//! connection, which the pool then closes.
//!
//! # Runtime
//!
//! [`Pool::new`] must be called inside a tokio runtime; establishments and the background
//! task run on that runtime. The background task holds a weak reference and ends when the
//! pool is closed or dropped; dropping the last [`Pool`] and [`Pooled`] aborts
//! establishments in progress.
#![forbid(unsafe_code)]

mod error;
mod event;
mod manager;
mod options;
mod pool;

pub use error::PoolError;
pub use event::{CheckOutFailReason, CloseReason, EventHandler, PoolEvent};
pub use manager::{ConnectErrorAction, Manager};
pub use options::{DEFAULT_MAINTENANCE_INTERVAL, PoolOptions};
pub use pool::{Pool, PoolStats, Pooled};

/// A service behind a load balancer: the 12 bytes of the `serviceId` ObjectId a
/// server's handshake reports (see [`Manager::service_id`]).
pub type ServiceId = [u8; 12];
