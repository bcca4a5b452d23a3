//! The pool's options.

use std::time::Duration;

/// How often the background task runs when [`PoolOptions::maintenance_interval`] is not set
/// otherwise: one second.
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// The options of one pool (CMAP's `ConnectionPoolOptions`, plus the background task's
/// interval).
///
/// Values CMAP declares invalid are not rejected but made harmless, as documented on each
/// field; the facade validates what the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// CMAP `maxPoolSize`: at most this many connections (available, in use and being
    /// established) count against the pool at once; `0` means unlimited. Dedicated
    /// checkouts ([`Pool::check_out_dedicated`](crate::Pool::check_out_dedicated)) do not
    /// count. Default 100.
    pub max_pool_size: u32,
    /// CMAP `minPoolSize`: while the pool is ready, the pool establishes connections in the
    /// background until it has at least this many (capped at `max_pool_size` when that is
    /// not 0). Default 0.
    pub min_pool_size: u32,
    /// CMAP `maxConnecting`: at most this many connections are being established at once
    /// (dedicated ones included). `0` is treated as 1. Default 2.
    pub max_connecting: u32,
    /// CMAP `maxIdleTimeMS`: an available connection unused for longer than this is closed
    /// (reason [`Idle`](crate::CloseReason::Idle)), at checkout or by the background task.
    /// `None` (and, as in CMAP, `Some(Duration::ZERO)`) keeps idle connections forever.
    /// Default `None`.
    pub max_idle_time: Option<Duration>,
    /// CMAP `waitQueueTimeoutMS`: bounds a whole checkout, from its start to the connection
    /// handed over (waiting in the queue, for `max_connecting`, and for the connection being
    /// established). `None` (and, as in CMAP, `Some(Duration::ZERO)`) leaves the bound to the
    /// caller, who then must bound the checkout itself (CSOT, or a `tokio::time::timeout`
    /// around it: dropping a checkout is always safe). Default `None`.
    pub wait_queue_timeout: Option<Duration>,
    /// How long the background task sleeps between runs. A run closes idle, stale and
    /// broken available connections, then establishes connections up to `min_pool_size`
    /// (filling also happens at once on [`ready`](crate::Pool::ready) and whenever a
    /// connection leaves the pool; the run is what retries the fill after an establishment
    /// failed). Zero is treated as one millisecond. Default
    /// [`DEFAULT_MAINTENANCE_INTERVAL`] (one second).
    pub maintenance_interval: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_pool_size: 100,
            min_pool_size: 0,
            max_connecting: 2,
            max_idle_time: None,
            wait_queue_timeout: None,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
        }
    }
}

impl PoolOptions {
    /// `max_pool_size` as a limit (`None` = unlimited).
    pub(crate) fn max_pool(&self) -> Option<usize> {
        (self.max_pool_size > 0).then(|| to_usize(self.max_pool_size))
    }

    /// `min_pool_size`, capped at `max_pool_size`.
    pub(crate) fn min_pool(&self) -> usize {
        let min = to_usize(self.min_pool_size);
        self.max_pool().map_or(min, |max| min.min(max))
    }

    /// `max_connecting`, at least 1.
    pub(crate) fn max_connecting(&self) -> usize {
        to_usize(self.max_connecting.max(1))
    }

    /// `max_idle_time` with zero meaning forever.
    pub(crate) fn idle_limit(&self) -> Option<Duration> {
        self.max_idle_time.filter(|d| !d.is_zero())
    }

    /// `wait_queue_timeout` with zero meaning unbounded.
    pub(crate) fn checkout_limit(&self) -> Option<Duration> {
        self.wait_queue_timeout.filter(|d| !d.is_zero())
    }

    /// `maintenance_interval`, at least one millisecond.
    pub(crate) fn interval(&self) -> Duration {
        self.maintenance_interval.max(Duration::from_millis(1))
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_cmap() {
        let o = PoolOptions::default();
        assert_eq!(o.max_pool_size, 100);
        assert_eq!(o.min_pool_size, 0);
        assert_eq!(o.max_connecting, 2);
        assert_eq!(o.max_idle_time, None);
        assert_eq!(o.wait_queue_timeout, None);
        assert_eq!(o.maintenance_interval, DEFAULT_MAINTENANCE_INTERVAL);
    }

    #[test]
    fn degenerate_values_are_harmless() {
        let o = PoolOptions {
            max_pool_size: 3,
            min_pool_size: 10,
            max_connecting: 0,
            max_idle_time: Some(Duration::ZERO),
            wait_queue_timeout: Some(Duration::ZERO),
            maintenance_interval: Duration::ZERO,
        };
        assert_eq!(o.max_pool(), Some(3));
        assert_eq!(o.min_pool(), 3);
        assert_eq!(o.max_connecting(), 1);
        assert_eq!(o.idle_limit(), None);
        assert_eq!(o.checkout_limit(), None);
        assert_eq!(o.interval(), Duration::from_millis(1));
        let unlimited = PoolOptions {
            max_pool_size: 0,
            min_pool_size: 7,
            ..PoolOptions::default()
        };
        assert_eq!(unlimited.max_pool(), None);
        assert_eq!(unlimited.min_pool(), 7);
    }
}
