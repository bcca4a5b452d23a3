//! A simple connection cache for one server.
//!
//! Idle connections are reused most-recently-used first; broken ones and ones idle longer
//! than `maxIdleTimeMS` are dropped; at most `maxPoolSize` connections are checked out at
//! once (0 = unlimited), and a checkout waits at most `waitQueueTimeoutMS` for a free slot.
//! A pool following the CMAP specification (events, generations, maxConnecting,
//! background fill to minPoolSize) comes later in its own crate.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_conn::{Connection, ConnectionOptions, ServerAddress};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind};

/// The default `maxPoolSize`.
pub(crate) const DEFAULT_MAX_POOL_SIZE: u32 = 100;

#[derive(Debug)]
pub(crate) struct ConnPool {
    address: ServerAddress,
    options: ConnectionOptions,
    idle: Mutex<Vec<(Connection, Instant)>>,
    permits: Arc<Semaphore>,
    wait_queue_timeout: Option<Duration>,
    max_idle_time: Option<Duration>,
    closed: AtomicBool,
}

impl ConnPool {
    pub(crate) fn new(
        address: ServerAddress,
        options: ConnectionOptions,
        max_pool_size: u32,
        wait_queue_timeout: Option<Duration>,
        max_idle_time: Option<Duration>,
    ) -> Arc<ConnPool> {
        let size = if max_pool_size == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max_pool_size as usize
        };
        Arc::new(ConnPool {
            address,
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            wait_queue_timeout,
            max_idle_time: max_idle_time.filter(|d| !d.is_zero()),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// Put a connection made elsewhere (the discovery handshake) into the idle list.
    pub(crate) fn seed(&self, conn: Connection) {
        if !conn.is_broken() && !self.closed.load(Ordering::Acquire) {
            self.lock().push((conn, Instant::now()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Connection, Instant)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Check a connection out: an idle one if a healthy one is there, else a new one.
    pub(crate) async fn checkout(self: &Arc<Self>) -> Result<PooledConn, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        let acquire = Arc::clone(&self.permits).acquire_owned();
        let permit = match self.wait_queue_timeout {
            Some(limit) => tokio::time::timeout(limit, acquire)
                .await
                .map_err(|_| Error::new(ErrorKind::PoolTimeout { after: limit }))?,
            None => acquire.await,
        }
        .map_err(|_| Error::new(ErrorKind::Shutdown))?;
        let reused = {
            let mut idle = self.lock();
            let now = Instant::now();
            let mut found = None;
            while let Some((conn, since)) = idle.pop() {
                let stale = self
                    .max_idle_time
                    .is_some_and(|max| now.saturating_duration_since(since) >= max);
                if !conn.is_broken() && !stale {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(conn) => conn,
            None => Connection::connect(&self.address, &self.options).await?,
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }

    /// A connection for one change stream, owned by the stream and outside the
    /// `maxPoolSize` accounting (it takes no permit, so a long-polling getMore never makes
    /// other operations wait): the most recently used healthy idle connection to
    /// `address` if the cache has one, else a new connection. It never comes back to the
    /// cache: the stream closes it when it ends.
    pub(crate) async fn dedicated(&self, address: &ServerAddress) -> Result<Connection, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Shutdown));
        }
        if address == &self.address {
            let mut idle = self.lock();
            let now = Instant::now();
            while let Some((conn, since)) = idle.pop() {
                let stale = self
                    .max_idle_time
                    .is_some_and(|max| now.saturating_duration_since(since) >= max);
                if !conn.is_broken() && !stale {
                    return Ok(conn);
                }
            }
        }
        Ok(Connection::connect(address, &self.options).await?)
    }

    /// Close the pool: idle connections are dropped, checked-out ones are dropped when
    /// returned, and checkouts fail.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.lock().clear();
    }
}

/// A checked-out connection; returned to its pool when dropped (unless broken).
#[derive(Debug)]
pub(crate) struct PooledConn {
    conn: Option<Connection>,
    pool: Arc<ConnPool>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Always Some until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.is_broken()
            && !self.pool.closed.load(Ordering::Acquire)
        {
            self.pool.lock().push((conn, Instant::now()));
        }
    }
}
