//! `Cursor<T>`: a stream of documents fetched with getMore, killed on close.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_command::{CursorReply, GetMore, KillCursors, Namespace, SharedDoc};
use bson::Bson;
use futures_core::Stream;
use serde::de::DeserializeOwned;

use crate::client::{ClientInner, SessionGuard};
use crate::error::Error;

type GetMoreFuture =
    Pin<Box<dyn Future<Output = (Result<CursorReply, Error>, Option<SessionGuard>)> + Send>>;

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
    client: Arc<ClientInner>,
    ns: Namespace,
    id: i64,
    buffer: VecDeque<SharedDoc>,
    batch_size: Option<u32>,
    max_await_time: Option<Duration>,
    comment: Option<Bson>,
    wire_version: i32,
    post_batch_resume_token: Option<SharedDoc>,
    session: Option<SessionGuard>,
    in_flight: Option<GetMoreFuture>,
    failed: bool,
    _marker: PhantomData<fn() -> T>,
}

/// How a cursor fetches further batches.
#[derive(Debug, Clone, Default)]
pub(crate) struct CursorSpec {
    pub(crate) batch_size: Option<u32>,
    pub(crate) max_await_time: Option<Duration>,
    pub(crate) comment: Option<Bson>,
}

impl<T> Cursor<T> {
    pub(crate) fn new(
        client: Arc<ClientInner>,
        reply: CursorReply,
        spec: CursorSpec,
        session: Option<SessionGuard>,
    ) -> Cursor<T> {
        let wire_version = client.server.max_wire_version;
        let mut cursor = Cursor {
            client,
            ns: reply.ns,
            id: reply.id,
            buffer: reply.batch.into(),
            batch_size: spec.batch_size,
            max_await_time: spec.max_await_time,
            comment: spec.comment,
            wire_version,
            post_batch_resume_token: reply.post_batch_resume_token,
            session,
            in_flight: None,
            failed: false,
            _marker: PhantomData,
        };
        if cursor.id == 0 {
            cursor.session = None;
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
    pub fn post_batch_resume_token(&self) -> Option<&SharedDoc> {
        self.post_batch_resume_token.as_ref()
    }

    /// Kill the cursor on its server (if it is still open) and release its session.
    /// Returns the outcome of `killCursors`; closing an exhausted cursor does nothing.
    pub async fn close(mut self) -> Result<(), Error> {
        // An in-flight getMore is abandoned: its connection is discarded, not reused.
        self.in_flight = None;
        let id = std::mem::replace(&mut self.id, 0);
        self.buffer.clear();
        let mut session = self.session.take();
        if id == 0 {
            return Ok(());
        }
        let cmd = KillCursors::new(self.ns.coll.clone(), vec![id]);
        self.client
            .run_in_session(&self.ns.db, &cmd, session.as_mut())
            .await
            .map(|_| ())
    }

    fn start_get_more(&mut self) {
        let mut cmd = GetMore::new(self.id, self.ns.coll.clone());
        cmd.batch_size = self.batch_size;
        cmd.max_time_ms = self
            .max_await_time
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        cmd.comment = self.comment.clone();
        cmd.max_wire_version = self.wire_version;
        let client = Arc::clone(&self.client);
        let db = self.ns.db.clone();
        let mut session = self.session.take();
        self.in_flight = Some(Box::pin(async move {
            let res = client.run_in_session(&db, &cmd, session.as_mut()).await;
            (res, session)
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
                let (res, session) = match fut.as_mut().poll(cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => return Poll::Pending,
                };
                this.in_flight = None;
                this.session = session;
                match res {
                    Ok(reply) => {
                        this.id = reply.id;
                        this.buffer = reply.batch.into();
                        if reply.post_batch_resume_token.is_some() {
                            this.post_batch_resume_token = reply.post_batch_resume_token;
                        }
                        if this.id == 0 {
                            this.session = None;
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
                this.session = None;
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
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = Arc::clone(&self.client);
        let ns = self.ns.clone();
        let id = self.id;
        let mut session = self.session.take();
        handle.spawn(async move {
            let cmd = KillCursors::new(ns.coll.clone(), vec![id]);
            let _ = client.run_in_session(&ns.db, &cmd, session.as_mut()).await;
        });
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
