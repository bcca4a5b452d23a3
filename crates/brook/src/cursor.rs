//! `Cursor<T>`: a stream of documents fetched with getMore, killed on close.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_command::{Command, CursorReply, GetMoreOptions, KillCursors, Namespace, SharedDoc};
use brook_conn::ServerAddress;
use bson::RawDocument;
use futures_core::Stream;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::exec::{
    Body, Bound, Deadline, Executed, Executor, GetMoreCache, KillAt, Lease, PooledConn, Target,
};
use crate::session::{HeldSession, SessionRef};

/// A getMore in flight: its outcome, the session it held, and the pinned connection it
/// ran on (behind a load balancer) when still usable.
type GetMoreFuture = Pin<
    Box<dyn Future<Output = (Result<CursorReply, Error>, HeldSession, Option<PooledConn>)> + Send>,
>;

/// The code of CursorNotFound: the server no longer knows the cursor.
const CURSOR_NOT_FOUND: i32 = 43;

/// How `timeoutMS` bounds a cursor's getMores (Client Side Operations Timeout,
/// "Non-tailable Cursors"). No getMore carries `maxTimeMS` in either mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorTimeout {
    /// `TimeoutMode::CursorLifetime`: the deadline of the operation that opened the
    /// cursor bounds every getMore.
    Lifetime(Deadline),
    /// `TimeoutMode::Iteration`: each call that sends a getMore gets a fresh deadline of
    /// this `timeoutMS`.
    Iteration(Duration),
}

impl CursorTimeout {
    /// The `timeoutMS` the cursor was opened with: what `close` (and a drop's background
    /// kill) gets afresh.
    fn timeout(&self) -> Duration {
        match self {
            CursorTimeout::Lifetime(deadline) => deadline.timeout(),
            CursorTimeout::Iteration(timeout) => *timeout,
        }
    }

    /// The deadline of a getMore: the cursor's lifetime's, or in iteration mode that of
    /// the call it is part of (`call`, started with the call's first getMore: a call
    /// that sends several getMores gets one timeout for all of them).
    fn get_more_deadline(&self, call: &mut Option<Deadline>) -> Deadline {
        match self {
            CursorTimeout::Lifetime(deadline) => *deadline,
            CursorTimeout::Iteration(timeout) => {
                *call.get_or_insert_with(|| Deadline::after(*timeout))
            }
        }
    }
}

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
    /// How `timeoutMS` bounds the getMores; `None` when it is not set.
    timeout: Option<CursorTimeout>,
    /// In iteration mode, the deadline of the call in progress (from its first getMore
    /// until it returns).
    call_deadline: Option<Deadline>,
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
            timeout: None,
            call_deadline: None,
            _marker: PhantomData,
        };
        if cursor.id == 0 {
            cursor.session = HeldSession::None;
            cursor.pinned = None;
        }
        cursor
    }

    /// The cursor bounded by `timeout` (`None`: no `timeoutMS`).
    pub(crate) fn with_timeout(mut self, timeout: Option<CursorTimeout>) -> Cursor<T> {
        self.timeout = timeout;
        self
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
    ///
    /// Under `timeoutMS` the `killCursors` gets the `timeoutMS` the cursor was opened
    /// with afresh (even when a cursor-lifetime deadline has passed), and carries
    /// `maxTimeMS`; [`close_with_timeout`](Self::close_with_timeout) sets another.
    pub async fn close(self) -> Result<(), Error> {
        let timeout = self.timeout.map(|t| t.timeout());
        self.close_within(timeout).await
    }

    /// [`close`](Self::close) with a `timeoutMS` of its own for the `killCursors`
    /// (`Duration::ZERO`: no limit), whether or not the cursor had one.
    pub async fn close_with_timeout(self, timeout: Duration) -> Result<(), Error> {
        self.close_within(Some(timeout)).await
    }

    async fn close_within(mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = Deadline::for_timeout(timeout);
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
                .kill_cursors_pinned_within(conn, &self.ns.db, &cmd, &mut session, deadline)
                .await;
        }
        self.exec
            .kill_cursors_within(&self.server, &self.ns.db, &cmd, &mut session, deadline)
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
        // Under timeoutMS: the cursor's deadline (its lifetime's, or a fresh one), from
        // the checkout on; no maxTimeMS on the getMore.
        let deadline = self
            .timeout
            .map(|t| t.get_more_deadline(&mut self.call_deadline));
        let bound = move |min_rtt: Duration| match deadline {
            Some(deadline) => Bound::Deadline {
                deadline,
                max_time: false,
                min_rtt,
            },
            None => Bound::Legacy(limit),
        };
        let exec = Arc::clone(&self.exec);
        let server = self.server.clone();
        let mut session = std::mem::take(&mut self.session);
        let pinned = self.pinned.take();
        let load_balanced = self.exec.is_load_balanced();
        self.in_flight = Some(Box::pin(async move {
            let mut kept = None;
            let res = async {
                let body = body?;
                let (mut conn, _operation, min_rtt) = match pinned {
                    Some(conn) => {
                        let min_rtt = exec.min_rtt(conn.address());
                        (conn, None, min_rtt)
                    }
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
                            .check_out_within(Target::At(&server), Lease::Shared, &[], deadline)
                            .await?;
                        (checked.conn, Some(checked.operation), checked.min_rtt)
                    }
                };
                let wire = conn.description().max_wire_version;
                let sent = exec
                    .run_on_within(
                        &mut conn,
                        Body::Serialized(body),
                        Some(&mut session),
                        bound(min_rtt),
                    )
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
        let polled = this.poll_inner(cx);
        if polled.is_ready() {
            // The call is over: the next one that sends a getMore gets a fresh timeout.
            this.call_deadline = None;
        }
        polled
    }
}

impl<T: DeserializeOwned> Cursor<T> {
    /// [`Stream::poll_next`], before the end of the call is noted.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Error>>> {
        let this = self;
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
        // A fresh timeoutMS, as for `close`.
        let timeout = self.timeout.map(|t| t.timeout());
        let at = match self.pinned.take() {
            Some(conn) => KillAt::Pinned(Box::new(conn)),
            None => KillAt::Server(self.server.clone()),
        };
        self.exec
            .spawn_kill_cursors_within(at, self.ns.db.clone(), cmd, session, timeout);
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
