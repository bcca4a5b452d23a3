//! `Cursor<T>`: a stream of documents fetched with getMore, killed on close.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brook_command::{Command, CursorReply, GetMoreOptions, KillCursors, Namespace, SharedDoc};
use brook_conn::ServerAddress;
use bson::RawDocument;
use futures_core::Stream;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::exec::{Body, Executed, Executor, GetMoreCache, KillAt, Lease, PooledConn, Target};
use crate::session::{HeldSession, SessionRef};

/// A getMore in flight: its outcome, the session it held, and the pinned connection it
/// ran on (behind a load balancer) when still usable.
type GetMoreFuture = Pin<
    Box<dyn Future<Output = (Result<CursorReply, Error>, HeldSession, Option<PooledConn>)> + Send>,
>;

/// The code of CursorNotFound: the server no longer knows the cursor.
const CURSOR_NOT_FOUND: i32 = 43;

/// A server cursor: yields documents of type `T`, deserialised one at a time from the
/// batch buffers as they are consumed, and fetches further batches with `getMore` on the
/// server that created it, with the session it was created in.
///
/// It implements [`Stream`]`<Item = Result<T, Error>>`; [`Cursor::try_next`] is the same
/// without an extension trait. When the server reports the cursor exhausted (id 0) the
/// implicit session is returned to the pool at once. [`Cursor::close`] kills a cursor that
/// is still open and reports the outcome; dropping an open cursor sends `killCursors` in
/// the background (best effort, only inside a tokio runtime).
pub struct Cursor<T> {
    exec: Arc<Executor>,
    ns: Namespace,
    id: i64,
    /// The server that made the cursor, and that connection's wire version.
    server: ServerAddress,
    wire_version: i32,
    buffer: VecDeque<SharedDoc>,
    get_more: GetMoreOptions,
    cache: GetMoreCache,
    post_batch_resume_token: Option<SharedDoc>,
    /// The session, while no getMore is in flight (the getMore holds it meanwhile).
    session: HeldSession,
    in_flight: Option<GetMoreFuture>,
    failed: bool,
    /// Behind a load balancer: the connection the cursor was opened on, which its
    /// getMores and killCursors must use (returned to the pool once the cursor ends).
    pinned: Option<PooledConn>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Cursor<T> {
    pub(crate) fn new(
        exec: Arc<Executor>,
        executed: Executed<CursorReply>,
        get_more: GetMoreOptions,
        session: HeldSession,
    ) -> Cursor<T> {
        let reply = executed.output;
        let mut cursor = Cursor {
            exec,
            ns: reply.ns,
            id: reply.id,
            server: executed.address,
            wire_version: executed.wire_version,
            buffer: reply.batch.into(),
            get_more,
            cache: GetMoreCache::default(),
            post_batch_resume_token: reply.post_batch_resume_token,
            session,
            in_flight: None,
            failed: false,
            pinned: executed.pinned,
            _marker: PhantomData,
        };
        if cursor.id == 0 {
            cursor.session = HeldSession::None;
            cursor.pinned = None;
        }
        cursor
    }

    /// The server's cursor id (0 once exhausted or killed).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The namespace the cursor reads.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Whether the server has nothing more: id 0 and the buffered batch consumed.
    pub fn is_exhausted(&self) -> bool {
        self.id == 0 && self.buffer.is_empty()
    }

    /// How many documents of the current batch are buffered and not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The `postBatchResumeToken` of the latest reply, if it had one.
    pub fn post_batch_resume_token(&self) -> Option<&RawDocument> {
        self.post_batch_resume_token.as_ref().map(SharedDoc::as_raw)
    }

    /// The server the cursor lives on (every getMore and the killCursors go there).
    pub fn server_address(&self) -> &ServerAddress {
        &self.server
    }

    /// Kill the cursor on its server (if it is still open) and release its session.
    /// Returns the outcome of `killCursors`; closing an exhausted cursor does nothing.
    pub async fn close(mut self) -> Result<(), Error> {
        // An in-flight getMore is abandoned: its connection is discarded, not reused.
        self.in_flight = None;
        let id = std::mem::replace(&mut self.id, 0);
        self.buffer.clear();
        let mut session = std::mem::take(&mut self.session);
        if id == 0 {
            return Ok(());
        }
        let cmd = KillCursors::new(self.ns.coll.clone(), vec![id]);
        if let Some(conn) = self.pinned.take() {
            return self
                .exec
                .kill_cursors_pinned(conn, &self.ns.db, &cmd, &mut session)
                .await;
        }
        self.exec
            .kill_cursors_bounded(&self.server, &self.ns.db, &cmd, &mut session)
            .await
    }

    fn start_get_more(&mut self) {
        let cmd = self.get_more.build(self.id, &self.ns, self.wire_version);
        let cluster_time = self.exec.cluster_time();
        let body = self.cache.body(
            &self.ns.db,
            &cmd,
            self.session.lsid(),
            cluster_time.as_ref(),
        );
        let limit = self
            .get_more
            .max_await_time
            .map(|wait| self.exec.await_bound(Some(wait)));
        let exec = Arc::clone(&self.exec);
        let server = self.server.clone();
        let mut session = std::mem::take(&mut self.session);
        let pinned = self.pinned.take();
        let load_balanced = self.exec.is_load_balanced();
        self.in_flight = Some(Box::pin(async move {
            let mut kept = None;
            let res = async {
                let body = body?;
                let (mut conn, _operation) = match pinned {
                    Some(conn) => (conn, None),
                    None if load_balanced => {
                        // The pinned connection was lost: no other connection reaches
                        // the mongos that holds the cursor.
                        return Err(Error::conn(brook_conn::ConnError::Io {
                            address: server.clone(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotConnected,
                                "the cursor's pinned connection was lost; behind a load \
                                 balancer no other connection reaches its mongos",
                            ),
                            wire_version: None,
                        }));
                    }
                    None => {
                        let checked = exec
                            .check_out(Target::At(&server), Lease::Shared, &[])
                            .await?;
                        (checked.conn, Some(checked.operation))
                    }
                };
                let wire = conn.description().max_wire_version;
                let sent = exec
                    .run_on(&mut conn, Body::Serialized(body), Some(&mut session), limit)
                    .await;
                if load_balanced && !conn.is_broken() {
                    kept = Some(conn);
                }
                cmd.handle_reply(sent?)
                    .map_err(|e| Error::command(e).with_wire_version(Some(wire)))
            }
            .await;
            (res, session, kept)
        }));
    }
}

impl<T: DeserializeOwned> Cursor<T> {
    fn decode(doc: &SharedDoc) -> Result<T, Error> {
        bson::deserialize_from_slice(doc.bytes()).map_err(Error::bson)
    }

    /// The next document, `Ok(None)` once the cursor is exhausted (or after an error).
    pub async fn try_next(&mut self) -> Result<Option<T>, Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }
}

impl<T: DeserializeOwned> Stream for Cursor<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(doc) = this.buffer.pop_front() {
                return Poll::Ready(Some(Self::decode(&doc)));
            }
            if let Some(fut) = this.in_flight.as_mut() {
                let (res, session, pinned) = match fut.as_mut().poll(cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => return Poll::Pending,
                };
                this.in_flight = None;
                this.session = session;
                this.pinned = pinned;
                match res {
                    Ok(reply) => {
                        this.id = reply.id;
                        this.buffer = reply.batch.into();
                        if reply.post_batch_resume_token.is_some() {
                            this.post_batch_resume_token = reply.post_batch_resume_token;
                        }
                        if this.id == 0 {
                            this.session = HeldSession::None;
                            this.pinned = None;
                        }
                        continue;
                    }
                    Err(err) => {
                        this.failed = true;
                        if err.code() == Some(CURSOR_NOT_FOUND) {
                            this.id = 0;
                        }
                        return Poll::Ready(Some(Err(err)));
                    }
                }
            }
            if this.id == 0 || this.failed {
                this.session = HeldSession::None;
                this.pinned = None;
                return Poll::Ready(None);
            }
            this.start_get_more();
        }
    }
}

impl<T> Drop for Cursor<T> {
    fn drop(&mut self) {
        self.in_flight = None;
        if self.id == 0 {
            return;
        }
        let session = std::mem::take(&mut self.session);
        let cmd = KillCursors::new(self.ns.coll.clone(), vec![self.id]);
        if let Some(conn) = self.pinned.take() {
            self.exec.spawn_kill_cursors(
                KillAt::Pinned(Box::new(conn)),
                self.ns.db.clone(),
                cmd,
                session,
            );
            return;
        }
        self.exec.spawn_kill_cursors(
            KillAt::Server(self.server.clone()),
            self.ns.db.clone(),
            cmd,
            session,
        );
    }
}

impl<T> fmt::Debug for Cursor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("ns", &self.ns)
            .field("id", &self.id)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
