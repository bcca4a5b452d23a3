//! What the fake server and the proxy share: a loopback listener whose accept loop spawns
//! one task per connection, and a clean stop of both.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Locks a mutex, ignoring poisoning: a panicking test must not wedge the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The accept loop and the connection tasks of one listener. Dropping it aborts them all;
/// [`Listening::shutdown`] also waits until they are gone.
pub(crate) struct Listening {
    listener: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Listening {
    /// Accepts connections on `listener` until stopped; `serve` turns each accepted stream
    /// into the task that serves it. Must be called inside a tokio runtime.
    pub(crate) fn start<F, Fut>(listener: TcpListener, mut serve: F) -> Listening
    where
        F: FnMut(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let set = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _peer)) = listener.accept().await else {
                    // Accept errors (e.g. too many open files) are transient: back off.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let connection = serve(stream);
                let mut set = lock(&set);
                // Reap finished connections so the set does not grow without bound.
                while set.try_join_next().is_some() {}
                set.spawn(connection);
            }
        });
        Listening {
            listener: Mutex::new(Some(task)),
            connections,
        }
    }

    /// Stops accepting, closes every connection and waits until they are closed. Calling
    /// it twice is harmless.
    pub(crate) async fn shutdown(&self) {
        let listener = lock(&self.listener).take();
        if let Some(task) = listener {
            task.abort();
            // The task was aborted: its result (a cancellation) carries nothing to report.
            let _cancelled = task.await;
        }
        let mut set = std::mem::take(&mut *lock(&self.connections));
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.listener).take() {
            task.abort();
        }
        lock(&self.connections).abort_all();
    }
}
