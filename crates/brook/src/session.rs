//! Client-side logical sessions: server sessions and their LIFO pool
//! (Driver Sessions spec, "Server Session Pool").

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{Binary, Document, doc, spec::BinarySubtype};

/// One server session: the `lsid` document and when it was last used.
#[derive(Debug, Clone)]
pub(crate) struct ServerSession {
    /// `{id: <UUID v4 as Binary subtype 4>}`.
    pub(crate) id: Document,
    /// When it was last sent to a server.
    pub(crate) last_use: Instant,
    /// A network error happened while it was in use: the server may still think it is in
    /// use, so it is never reused.
    pub(crate) dirty: bool,
    /// The last `txnNumber` used in this session (retryable writes); the next write
    /// uses one more. Kept with the session through the pool, as the server expects.
    pub(crate) txn_number: i64,
}

impl ServerSession {
    pub(crate) fn new(now: Instant) -> ServerSession {
        let uuid = uuid::Uuid::new_v4();
        ServerSession {
            id: doc! {
                "id": Binary { subtype: BinarySubtype::Uuid, bytes: uuid.as_bytes().to_vec() }
            },
            last_use: now,
            dirty: false,
            txn_number: 0,
        }
    }

    /// Whether the session has less than one minute left before the server may time it out.
    fn about_to_expire(&self, timeout: Duration, now: Instant) -> bool {
        let margin = timeout.saturating_sub(Duration::from_secs(60));
        now.saturating_duration_since(self.last_use) >= margin
    }
}

/// The pool of idle server sessions, most recently used first.
#[derive(Debug, Default)]
pub(crate) struct SessionPool {
    idle: Mutex<VecDeque<ServerSession>>,
}

impl SessionPool {
    /// Take the most recently used session that is not about to expire (dropping expiring
    /// ones), or make a new one. `timeout` is the deployment's logicalSessionTimeoutMinutes.
    pub(crate) fn acquire(&self, timeout: Duration, now: Instant) -> ServerSession {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop_front() {
            if !s.about_to_expire(timeout, now) {
                return s;
            }
        }
        drop(idle);
        ServerSession::new(now)
    }

    /// Return a session: expired sessions at the back are pruned first; a dirty or expiring
    /// session is discarded; the others go to the front.
    pub(crate) fn release(&self, session: ServerSession, timeout: Duration, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while idle.back().is_some_and(|s| s.about_to_expire(timeout, now)) {
            idle.pop_back();
        }
        if !session.dirty && !session.about_to_expire(timeout, now) {
            idle.push_front(session);
        }
    }

    /// Take every pooled session id (for endSessions at shutdown).
    pub(crate) fn drain_ids(&self) -> Vec<Document> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.drain(..).map(|s| s.id).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// An explicit logical session, from [`Client::start_session`](crate::Client::start_session).
///
/// This is a minimal session type: it owns one server session (its `lsid`) for as long as
/// it lives and hands it to the operations it is given to. Today only change streams take
/// one ([`WatchBuilder::session`](crate::WatchBuilder::session)): every command of such a
/// stream (the `aggregate`, each `getMore` and `killCursors`, the `aggregate` of every
/// resume) carries this session's `lsid`. There are no transactions, causal consistency or
/// cluster-time tracking yet.
///
/// Dropping the last handle (the session and every stream started with it) returns the
/// server session to the client's pool, unless a network error made it unusable.
pub struct ClientSession {
    pub(crate) inner: Arc<ExplicitSession>,
}

/// The shared state of a [`ClientSession`].
#[derive(Debug)]
pub(crate) struct ExplicitSession {
    /// The pool of the client that started it (also how a stream checks that the
    /// session is its client's).
    pub(crate) pool: Arc<SessionPool>,
    id: Document,
    last_use: Mutex<Instant>,
    dirty: AtomicBool,
    txn_number: std::sync::atomic::AtomicI64,
    timeout: Duration,
}

impl ClientSession {
    pub(crate) fn new(pool: Arc<SessionPool>, timeout: Duration) -> ClientSession {
        let now = Instant::now();
        let server = pool.acquire(timeout, now);
        ClientSession {
            inner: Arc::new(ExplicitSession {
                pool,
                id: server.id,
                last_use: Mutex::new(server.last_use),
                dirty: AtomicBool::new(false),
                txn_number: std::sync::atomic::AtomicI64::new(server.txn_number),
                timeout,
            }),
        }
    }

    /// The session's `lsid`: `{id: <UUID, binary subtype 4>}`.
    pub fn id(&self) -> &Document {
        &self.inner.id
    }
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl ExplicitSession {
    pub(crate) fn lsid(&self) -> &Document {
        &self.id
    }

    /// Records that a command carrying the lsid was sent.
    pub(crate) fn touch(&self) {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// A network error happened while the session was in use: never reuse it.
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

impl Drop for ExplicitSession {
    fn drop(&mut self) {
        let last_use = *self.last_use.lock().unwrap_or_else(|p| p.into_inner());
        let session = ServerSession {
            id: std::mem::take(&mut self.id),
            last_use,
            dirty: self.dirty.load(Ordering::Acquire),
            txn_number: self.txn_number.load(Ordering::Acquire),
        };
        self.pool.release(session, self.timeout, Instant::now());
    }
}

/// What the executor needs of the session a command runs in.
pub(crate) trait SessionRef: Send {
    /// The `lsid` to attach, if the session has one.
    fn lsid(&self) -> Option<&Document>;
    /// A command carrying the lsid is being sent.
    fn touch(&mut self);
    /// A command of the session failed on the network or was abandoned mid-flight: the
    /// server may still consider the session in use, so it must never be reused.
    fn mark_dirty(&mut self);
    /// The `txnNumber` of a new retryable write in this session (one more than the
    /// last), or `None` for a session that cannot carry one (no lsid).
    fn next_txn_number(&mut self) -> Option<i64>;
}

/// Just an lsid: for a command sent in a session that something else holds (the
/// `killCursors` of a change stream's resume, while the stream keeps its session).
#[derive(Debug, Clone, Default)]
pub(crate) struct LsidOnly(pub(crate) Option<Document>);

impl SessionRef for LsidOnly {
    fn lsid(&self) -> Option<&Document> {
        self.0.as_ref()
    }

    fn touch(&mut self) {}

    fn mark_dirty(&mut self) {}

    fn next_txn_number(&mut self) -> Option<i64> {
        None
    }
}

/// An implicit session checked out for one operation or one cursor; returned to the
/// pool when dropped (unless dirty).
#[derive(Debug)]
pub(crate) struct SessionGuard {
    session: Option<ServerSession>,
    timeout: Duration,
    pool: Arc<SessionPool>,
}

impl SessionGuard {
    pub(crate) fn new(pool: Arc<SessionPool>, timeout: Duration) -> SessionGuard {
        SessionGuard {
            session: Some(pool.acquire(timeout, Instant::now())),
            timeout,
            pool,
        }
    }
}

impl SessionRef for SessionGuard {
    fn lsid(&self) -> Option<&Document> {
        self.session.as_ref().map(|s| &s.id)
    }

    fn touch(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.last_use = Instant::now();
        }
    }

    fn mark_dirty(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.dirty = true;
        }
    }

    fn next_txn_number(&mut self) -> Option<i64> {
        let s = self.session.as_mut()?;
        s.txn_number = s.txn_number.saturating_add(1);
        Some(s.txn_number)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.release(s, self.timeout, Instant::now());
        }
    }
}

/// The session held by a cursor or a change stream for its whole life.
#[derive(Debug, Default)]
pub(crate) enum HeldSession {
    /// The server does not support sessions.
    #[default]
    None,
    /// An implicit session.
    Implicit(SessionGuard),
    /// The user's session.
    Explicit(Arc<ExplicitSession>),
}

impl SessionRef for HeldSession {
    fn lsid(&self) -> Option<&Document> {
        match self {
            HeldSession::None => None,
            HeldSession::Implicit(g) => g.lsid(),
            HeldSession::Explicit(s) => Some(s.lsid()),
        }
    }

    fn touch(&mut self) {
        match self {
            HeldSession::None => {}
            HeldSession::Implicit(g) => g.touch(),
            HeldSession::Explicit(s) => s.touch(),
        }
    }

    fn mark_dirty(&mut self) {
        match self {
            HeldSession::None => {}
            HeldSession::Implicit(g) => g.mark_dirty(),
            HeldSession::Explicit(s) => s.mark_dirty(),
        }
    }

    fn next_txn_number(&mut self) -> Option<i64> {
        match self {
            HeldSession::None => None,
            HeldSession::Implicit(g) => g.next_txn_number(),
            HeldSession::Explicit(s) => Some(
                s.txn_number
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1),
            ),
        }
    }
}

/// The largest number of ids one endSessions command carries.
pub(crate) const END_SESSIONS_BATCH: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30 * 60);

    fn uuid_of(s: &ServerSession) -> Vec<u8> {
        match s.id.get("id") {
            Some(bson::Bson::Binary(b)) => {
                assert_eq!(b.subtype, BinarySubtype::Uuid);
                b.bytes.clone()
            }
            other => panic!("unexpected lsid {other:?}"),
        }
    }

    #[test]
    fn new_sessions_are_uuid_v4_and_distinct() {
        let now = Instant::now();
        let a = ServerSession::new(now);
        let b = ServerSession::new(now);
        let (ua, ub) = (uuid_of(&a), uuid_of(&b));
        assert_eq!(ua.len(), 16);
        assert_eq!(ua.get(6).map(|b| b >> 4), Some(4), "version nibble");
        assert_ne!(ua, ub);
    }

    #[test]
    fn pool_is_lifo() {
        let pool = SessionPool::default();
        let now = Instant::now();
        let a = pool.acquire(T, now);
        let b = pool.acquire(T, now);
        let (ida, idb) = (a.id.clone(), b.id.clone());
        pool.release(a, T, now);
        pool.release(b, T, now);
        assert_eq!(pool.acquire(T, now).id, idb);
        assert_eq!(pool.acquire(T, now).id, ida);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn expiring_and_dirty_sessions_are_discarded() {
        let pool = SessionPool::default();
        let t0 = Instant::now();
        let old = pool.acquire(T, t0);
        pool.release(old, T, t0);
        // 29 minutes later the session has one minute left: not reused.
        let later = t0 + Duration::from_secs(29 * 60);
        let fresh = pool.acquire(T, later);
        assert_eq!(fresh.last_use, later, "a new session was made");
        assert_eq!(pool.len(), 0);

        let mut dirty = pool.acquire(T, later);
        dirty.dirty = true;
        pool.release(dirty, T, later);
        assert_eq!(pool.len(), 0);

        // Releasing prunes stale sessions from the back.
        pool.release(fresh, T, later);
        let newer = ServerSession::new(later + Duration::from_secs(29 * 60));
        pool.release(newer, T, later + Duration::from_secs(29 * 60));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.drain_ids().len(), 1);
        assert_eq!(pool.len(), 0);
    }
}
