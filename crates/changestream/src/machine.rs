//! The change-stream state machine.

use std::collections::VecDeque;
use std::fmt::Debug;

use brook_command::{
    Aggregate, Command, CommandBody, CommandError, CursorReply, GetMore, KillCursors, Namespace,
    SharedDoc,
};
use bson::raw::RawBsonRef;
use bson::{Bson, Document, Timestamp};

use crate::error::{ChangeStreamError, FailedCommand, Failure, is_resumable};
use crate::options::{ChangeStreamOptions, Target};
use crate::scan::{self, Field};

/// The first wire version (server 4.0) whose `operationTime` a stream may save and
/// resume from with `startAtOperationTime`.
pub const OPERATION_TIME_MIN_WIRE_VERSION: i32 = 7;

/// A command the machine wants the driver to run.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing<S> {
    /// Open the stream's cursor: run `command` on `db`, on a server the driver selects
    /// with the stream's original read preference (and in the stream's session). Then
    /// call [`ChangeStreamMachine::handle_aggregate_reply`] or
    /// [`ChangeStreamMachine::handle_failure`].
    Aggregate {
        /// The database to run it on.
        db: String,
        /// The command.
        command: Aggregate,
        /// True when this re-opens the stream after a resumable error.
        resume: bool,
    },
    /// Fetch the next batch: run `command` on `db`, on `server` (the cursor's own).
    /// Then call [`ChangeStreamMachine::handle_get_more_reply`] or
    /// [`ChangeStreamMachine::handle_failure`].
    GetMore {
        /// The server that owns the cursor.
        server: S,
        /// The database to run it on (the cursor's namespace's).
        db: String,
        /// The command.
        command: GetMore,
    },
    /// Close a cursor: run `command` on `db`, on `server` (the cursor's own, never
    /// another). Fire and forget: its outcome, errors included, does not concern the
    /// machine.
    KillCursors {
        /// The server that owns the cursor.
        server: S,
        /// The database to run it on.
        db: String,
        /// The command.
        command: KillCursors,
    },
}

impl<S> Outgoing<S> {
    /// The command's body, with `$db`, ready to be framed.
    pub fn build(&self) -> Result<CommandBody, CommandError> {
        match self {
            Outgoing::Aggregate { db, command, .. } => command.build(db),
            Outgoing::GetMore { db, command, .. } => command.build(db),
            Outgoing::KillCursors { db, command, .. } => command.build(db),
        }
    }

    /// The server the command must go to: `None` for an `aggregate` (the driver
    /// selects one).
    pub fn server(&self) -> Option<&S> {
        match self {
            Outgoing::Aggregate { .. } => None,
            Outgoing::GetMore { server, .. } | Outgoing::KillCursors { server, .. } => Some(server),
        }
    }

    /// The command's name (`"aggregate"`, `"getMore"` or `"killCursors"`).
    pub fn name(&self) -> &'static str {
        match self {
            Outgoing::Aggregate { .. } => Aggregate::NAME,
            Outgoing::GetMore { .. } => GetMore::NAME,
            Outgoing::KillCursors { .. } => KillCursors::NAME,
        }
    }
}

/// The open cursor of the stream.
#[derive(Debug, Clone)]
struct Cursor<S> {
    server: S,
    wire_version: i32,
    id: i64,
    ns: Namespace,
}

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An `aggregate` must be sent (initial, or a resume).
    NeedAggregate,
    /// The `aggregate` was handed out and has not been answered.
    AggregateInFlight,
    /// A cursor is open (non-zero id) and no command is in flight.
    Ready,
    /// A `getMore` was handed out and has not been answered.
    GetMoreInFlight,
    /// The cursor is exhausted or invalidated: buffered events may remain.
    Ended,
    /// Closed by the user or by a fatal error: final.
    Closed,
}

/// The change-stream and resume state machine (sans IO).
///
/// Inputs are the `handle_*` calls, outputs the `poll_*` calls; see the
/// [crate documentation](crate) for the driving loop. `S` identifies a server (the
/// driver's server address): `getMore` and `killCursors` name the server that owns the
/// cursor.
#[derive(Debug, Clone)]
pub struct ChangeStreamMachine<S> {
    target: Target,
    options: ChangeStreamOptions,
    phase: Phase,
    /// Whether the aggregate needed or in flight is a resume.
    resuming: bool,
    /// Whether an aggregate was in flight when the user closed the stream: its cursor,
    /// if one comes back, must be killed.
    orphan_aggregate: bool,
    cursor: Option<Cursor<S>>,
    buffer: VecDeque<SharedDoc>,
    /// The postBatchResumeToken of the batch in `buffer`.
    batch_token: Option<SharedDoc>,
    resume_token: Option<SharedDoc>,
    saved_operation_time: Option<Timestamp>,
    returned_event: bool,
    kills: VecDeque<Outgoing<S>>,
    error: Option<ChangeStreamError>,
    resumes: u64,
}

impl<S: Clone + Eq + Debug> ChangeStreamMachine<S> {
    /// A stream on `target` with `options`. Its first command is the `aggregate`.
    pub fn new(target: Target, options: ChangeStreamOptions) -> Self {
        let resume_token = options
            .start_after
            .clone()
            .or_else(|| options.resume_after.clone());
        ChangeStreamMachine {
            target,
            options,
            phase: Phase::NeedAggregate,
            resuming: false,
            orphan_aggregate: false,
            cursor: None,
            buffer: VecDeque::new(),
            batch_token: None,
            resume_token,
            saved_operation_time: None,
            returned_event: false,
            kills: VecDeque::new(),
            error: None,
            resumes: 0,
        }
    }

    /// What the stream watches.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The options the stream was opened with.
    pub fn options(&self) -> &ChangeStreamOptions {
        &self.options
    }

    /// The cached resume token: the token a resume would use now, and the one to
    /// persist to restart the stream later (with `resumeAfter`, or `startAfter` after
    /// an `invalidate`). Up to date after every event handed out and after every
    /// empty batch.
    pub fn resume_token(&self) -> Option<&SharedDoc> {
        self.resume_token.as_ref()
    }

    /// The `operationTime` saved from the initial `aggregate` (see the specification's
    /// `startAtOperationTime` rule), if any.
    pub fn saved_operation_time(&self) -> Option<Timestamp> {
        self.saved_operation_time
    }

    /// Whether the stream may still yield events: false once it was closed (by the
    /// user or an error), and once an exhausted or invalidated cursor's last event was
    /// handed out.
    pub fn is_alive(&self) -> bool {
        match self.phase {
            Phase::Closed => false,
            Phase::Ended => !self.buffer.is_empty(),
            _ => true,
        }
    }

    /// Whether the stream was closed (by [`close`](Self::close) or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether events (or an error) wait to be handed out by
    /// [`poll_event`](Self::poll_event).
    pub fn has_buffered_events(&self) -> bool {
        !self.buffer.is_empty() || self.error.is_some()
    }

    /// Whether an `aggregate` or `getMore` was handed out and not yet answered.
    pub fn command_in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::AggregateInFlight | Phase::GetMoreInFlight
        )
    }

    /// Whether the next [`poll_command`](Self::poll_command) yields an `aggregate` or a
    /// `getMore` (i.e. the stream needs a round trip to make progress).
    pub fn wants_command(&self) -> bool {
        match self.phase {
            Phase::NeedAggregate => true,
            Phase::Ready => self.buffer.is_empty() && self.error.is_none(),
            _ => false,
        }
    }

    /// How many times the stream resumed.
    pub fn resume_count(&self) -> u64 {
        self.resumes
    }

    /// The server that owns the open cursor, if one is open.
    pub fn cursor_server(&self) -> Option<&S> {
        self.cursor.as_ref().map(|c| &c.server)
    }

    /// The open cursor's id (0 once exhausted), if a cursor was opened.
    pub fn cursor_id(&self) -> Option<i64> {
        self.cursor.as_ref().map(|c| c.id)
    }

    /// The next command to run. `killCursors` commands come first (run them and ignore
    /// their outcome); then, when the stream needs one, the `aggregate` or the
    /// `getMore`, which is then in flight until its `handle_*` call. Returns `None`
    /// while events are buffered, while a command is in flight, and once the stream
    /// ended or was closed.
    pub fn poll_command(&mut self) -> Option<Outgoing<S>> {
        if let Some(kill) = self.kills.pop_front() {
            return Some(kill);
        }
        match self.phase {
            Phase::NeedAggregate => match self.build_aggregate() {
                Ok(command) => {
                    self.phase = Phase::AggregateInFlight;
                    Some(Outgoing::Aggregate {
                        db: self.target.db().to_owned(),
                        command,
                        resume: self.resuming,
                    })
                }
                Err(err) => {
                    self.close_with(err);
                    self.kills.pop_front()
                }
            },
            Phase::Ready if self.buffer.is_empty() && self.error.is_none() => {
                let cursor = self.cursor.as_ref()?;
                let mut command = GetMore::new(cursor.id, cursor.ns.coll.clone());
                command.batch_size = self.options.batch_size;
                command.max_time_ms = self
                    .options
                    .max_await_time
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                command.comment = self.options.comment.clone();
                command.max_wire_version = cursor.wire_version;
                let out = Outgoing::GetMore {
                    server: cursor.server.clone(),
                    db: cursor.ns.db.clone(),
                    command,
                };
                self.phase = Phase::GetMoreInFlight;
                Some(out)
            }
            _ => None,
        }
    }

    /// The next event, or the error that ended the stream (handed out once). Handing
    /// out an event updates the cached resume token: to the batch's
    /// postBatchResumeToken for the last event of a batch that had one, else to the
    /// event's `_id`. An event without an `_id` document yields
    /// [`ChangeStreamError::MissingResumeToken`] and closes the stream.
    pub fn poll_event(&mut self) -> Option<Result<SharedDoc, ChangeStreamError>> {
        if let Some(err) = self.error.take() {
            return Some(Err(err));
        }
        if self.phase == Phase::Closed {
            return None;
        }
        let event = self.buffer.pop_front()?;
        let fields = scan::event_fields(event.as_bytes());
        let token = match fields.id {
            Field::Found(Some(range)) => match event.as_bytes().get(range.clone()) {
                // In bounds (just checked), so the slice cannot panic.
                Some(_) => SharedDoc::from_bytes(event.bytes().slice(range)).ok(),
                None => None,
            },
            Field::Found(None) | Field::Absent => None,
            Field::Unknown => match event.as_raw().get("_id") {
                Ok(Some(RawBsonRef::Document(id))) => event.share(id),
                Ok(Some(_) | None) => None,
                Err(err) => {
                    self.close_with(ChangeStreamError::Malformed(format!(
                        "an event could not be read: {err}"
                    )));
                    return self.error.take().map(Err);
                }
            },
        };
        let Some(token) = token else {
            self.close_with(ChangeStreamError::MissingResumeToken);
            return self.error.take().map(Err);
        };
        self.resume_token = match (&self.batch_token, self.buffer.is_empty()) {
            // The batch token is already a copy of its own (see `take_batch`).
            (Some(pbrt), true) => Some(pbrt.clone()),
            // The batch's last event: its token outlives the batch, so it is copied
            // out of the reply's buffer, which can then be freed with the events.
            (None, true) => Some(detach(&token)),
            // Within a batch the token shares the event's buffer: no allocation.
            (_, false) => Some(token),
        };
        self.returned_event = true;
        let invalidate = match fields.invalidate {
            Field::Found(invalidate) => invalidate,
            Field::Absent => false,
            Field::Unknown => is_invalidate(&event),
        };
        if invalidate {
            // Nothing follows an invalidate: the server closes the cursor (id 0); kill
            // it anyway should it have stayed open.
            self.buffer.clear();
            self.batch_token = None;
            self.queue_kill();
            self.phase = Phase::Ended;
        }
        Some(Ok(event))
    }

    /// The `aggregate` succeeded on `server`, over a connection of wire version
    /// `wire_version`. Ignored unless an `aggregate` is in flight.
    pub fn handle_aggregate_reply(&mut self, server: S, wire_version: i32, reply: CursorReply) {
        if self.phase == Phase::Closed && self.orphan_aggregate {
            // The stream was closed while this aggregate was in flight: close the
            // cursor it opened.
            self.orphan_aggregate = false;
            if reply.id != 0 {
                self.kills
                    .push_back(kill_command(server, &reply.ns, reply.id));
            }
            return;
        }
        if self.phase != Phase::AggregateInFlight {
            return;
        }
        let initial = !self.resuming;
        self.resuming = false;
        if initial
            && self.options.resume_after.is_none()
            && self.options.start_after.is_none()
            && self.options.start_at_operation_time.is_none()
            && wire_version >= OPERATION_TIME_MIN_WIRE_VERSION
            && reply.batch.is_empty()
            && reply.post_batch_resume_token.is_none()
        {
            self.saved_operation_time = reply.operation_time;
        }
        self.cursor = Some(Cursor {
            server,
            wire_version,
            id: reply.id,
            ns: reply.ns.clone(),
        });
        self.take_batch(reply);
    }

    /// The `getMore` succeeded. Ignored unless a `getMore` is in flight.
    pub fn handle_get_more_reply(&mut self, reply: CursorReply) {
        if self.phase != Phase::GetMoreInFlight {
            return;
        }
        if let Some(cursor) = self.cursor.as_mut() {
            // A getMore answers for the cursor it was sent for: the same id while it
            // lives, 0 once it is exhausted. Any other id is a malformed reply; taking
            // it would send the next getMore (and the killCursors) for a cursor this
            // stream never opened.
            if reply.id != 0 && reply.id != cursor.id {
                let message = format!(
                    "getMore for cursor {} answered with cursor id {}",
                    cursor.id, reply.id
                );
                self.close_with(ChangeStreamError::Malformed(message));
                return;
            }
            cursor.id = reply.id;
        }
        self.take_batch(reply);
    }

    /// The command in flight failed. `wire_version` is that of the connection it
    /// failed on (`None`: the cursor's connection's, for a `getMore`). A resumable
    /// `getMore` failure starts a resume (the old cursor's `killCursors` and a new
    /// `aggregate` come out of [`poll_command`](Self::poll_command)); any other failure
    /// closes the stream and is handed out by [`poll_event`](Self::poll_event).
    /// Ignored when no command is in flight.
    pub fn handle_failure(&mut self, failure: Failure, wire_version: Option<i32>) {
        match self.phase {
            Phase::AggregateInFlight => {
                // Errors of an aggregate (the initial one or a resume's) are final: a
                // stream resumes at most once per error.
                self.close_with(ChangeStreamError::from_failure(
                    failure,
                    FailedCommand::Aggregate,
                    wire_version,
                ));
            }
            Phase::GetMoreInFlight => {
                let wire = wire_version
                    .or_else(|| self.cursor.as_ref().map(|c| c.wire_version))
                    .unwrap_or(0);
                if is_resumable(&failure, wire, FailedCommand::GetMore) {
                    self.start_resume();
                } else {
                    self.close_with(ChangeStreamError::from_failure(
                        failure,
                        FailedCommand::GetMore,
                        Some(wire),
                    ));
                }
            }
            _ => {}
        }
    }

    /// The command in flight was abandoned (its future dropped, its task cancelled)
    /// before its outcome was known. A `getMore` counts as a network error (the
    /// stream resumes: its connection is in an unknown state); an `aggregate` is sent
    /// again as it was (whatever cursor it may have opened is unknown and times out on
    /// the server). Ignored when no command is in flight.
    pub fn handle_abandoned(&mut self) {
        match self.phase {
            Phase::AggregateInFlight => self.phase = Phase::NeedAggregate,
            Phase::GetMoreInFlight => {
                self.handle_failure(
                    Failure::Network("the getMore was abandoned".to_owned()),
                    None,
                );
            }
            _ => {}
        }
    }

    /// Closes the stream: queues a `killCursors` for an open cursor (to be taken from
    /// [`poll_command`](Self::poll_command)) and drops buffered events. Final; closing
    /// again does nothing.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.orphan_aggregate = self.phase == Phase::AggregateInFlight;
        self.queue_kill();
        self.phase = Phase::Closed;
        self.buffer.clear();
        self.batch_token = None;
        // A token taken mid-batch shares the dropped batch's buffer: copy it out.
        self.resume_token = self.resume_token.as_ref().map(detach);
        self.error = None;
    }

    /// Closes the stream and keeps `err` to be handed out by `poll_event`.
    fn close_with(&mut self, err: ChangeStreamError) {
        self.close();
        // The command whose outcome closed the stream has completed: no aggregate
        // reply is still due, so none may be taken for an orphan's (a late or
        // duplicated reply would otherwise have its cursor "killed").
        self.orphan_aggregate = false;
        self.error = Some(err);
    }

    /// Queues the `killCursors` of the open cursor, if its id is not 0, and forgets
    /// the cursor id.
    fn queue_kill(&mut self) {
        if let Some(cursor) = self.cursor.as_mut()
            && cursor.id != 0
        {
            let kill = kill_command(cursor.server.clone(), &cursor.ns, cursor.id);
            cursor.id = 0;
            self.kills.push_back(kill);
        }
    }

    fn start_resume(&mut self) {
        self.queue_kill();
        self.cursor = None;
        self.buffer.clear();
        self.batch_token = None;
        // A token taken mid-batch shares the dropped batch's buffer: copy it out.
        self.resume_token = self.resume_token.as_ref().map(detach);
        self.resuming = true;
        self.resumes = self.resumes.saturating_add(1);
        self.phase = Phase::NeedAggregate;
    }

    /// Takes a successful reply's batch.
    fn take_batch(&mut self, reply: CursorReply) {
        // The postBatchResumeToken outlives the batch (it becomes the cached token):
        // one small copy per batch, so that it does not keep the whole reply's buffer
        // alive once the events are dropped.
        let batch_token = reply.post_batch_resume_token.as_ref().map(detach);
        if reply.batch.is_empty()
            && let Some(pbrt) = &batch_token
        {
            self.resume_token = Some(pbrt.clone());
        }
        self.buffer = reply.batch.into();
        self.batch_token = batch_token;
        self.phase = if reply.id == 0 {
            Phase::Ended
        } else {
            Phase::Ready
        };
    }

    /// The `aggregate` to send now: the original one, or a resume's.
    fn build_aggregate(&self) -> Result<Aggregate, ChangeStreamError> {
        let o = &self.options;
        let mut stage = Document::new();
        if self.target == Target::Cluster {
            stage.insert("allChangesForCluster", true);
        }
        if let Some(v) = &o.full_document {
            stage.insert("fullDocument", v.as_str());
        }
        if let Some(v) = &o.full_document_before_change {
            stage.insert("fullDocumentBeforeChange", v.as_str());
        }
        let resume_with = if self.resuming {
            if let Some(token) = &self.resume_token {
                let key = if o.start_after.is_some() && !self.returned_event {
                    "startAfter"
                } else {
                    "resumeAfter"
                };
                Some((key, Bson::Document(token_document(token)?)))
            } else {
                o.start_at_operation_time
                    .or(self.saved_operation_time)
                    .map(|ts| ("startAtOperationTime", Bson::Timestamp(ts)))
            }
        } else {
            None
        };
        match resume_with {
            Some((key, value)) => {
                stage.insert(key, value);
            }
            None => {
                if let Some(t) = &o.resume_after {
                    stage.insert("resumeAfter", token_document(t)?);
                }
                if let Some(t) = &o.start_after {
                    stage.insert("startAfter", token_document(t)?);
                }
                if let Some(ts) = o.start_at_operation_time {
                    stage.insert("startAtOperationTime", ts);
                }
            }
        }
        if let Some(v) = o.show_expanded_events {
            stage.insert("showExpandedEvents", v);
        }
        let mut pipeline = Vec::with_capacity(o.pipeline.len().saturating_add(1));
        let mut first = Document::new();
        first.insert("$changeStream", stage);
        pipeline.push(first);
        pipeline.extend(o.pipeline.iter().cloned());
        let mut command = Aggregate::new(self.target.aggregate_target(), pipeline);
        command.batch_size = o.batch_size;
        command.collation = o.collation.clone();
        command.comment = o.comment.clone();
        command.read_concern = o.read_concern.clone();
        Ok(command)
    }
}

fn kill_command<S>(server: S, ns: &Namespace, id: i64) -> Outgoing<S> {
    Outgoing::KillCursors {
        server,
        db: ns.db.clone(),
        command: KillCursors::new(ns.coll.clone(), vec![id]),
    }
}

fn token_document(token: &SharedDoc) -> Result<Document, ChangeStreamError> {
    token.to_document().map_err(|e| {
        ChangeStreamError::Malformed(format!("the resume token is not valid BSON: {e}"))
    })
}

/// A copy of `doc` in a buffer of its own, so that holding it does not keep the
/// buffer it was sliced from (a whole reply) alive.
fn detach(doc: &SharedDoc) -> SharedDoc {
    SharedDoc::from_raw(doc.as_raw())
}

fn is_invalidate(event: &SharedDoc) -> bool {
    matches!(
        event.as_raw().get("operationType"),
        Ok(Some(RawBsonRef::String("invalidate")))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    type Machine = ChangeStreamMachine<&'static str>;

    /// A reply body in a buffer of its own, and that buffer (to watch its references).
    fn reply(first: bool, batch: usize, pbrt: bool) -> (CursorReply, Bytes) {
        let array: Vec<Bson> = (0..batch)
            .map(|i| {
                Bson::Document(bson::doc! {
                    "_id": { "_data": format!("{i:04}") },
                    "operationType": "insert",
                    "fullDocument": { "x": 1 },
                })
            })
            .collect();
        let key = if first { "firstBatch" } else { "nextBatch" };
        let mut cursor = bson::doc! { "id": 7i64, "ns": "db.coll" };
        cursor.insert(key, array);
        if pbrt {
            cursor.insert("postBatchResumeToken", bson::doc! { "_data": "ffff" });
        }
        let body = SharedDoc::from_document(&bson::doc! { "cursor": cursor, "ok": 1.0 })
            .unwrap_or_else(|e| panic!("{e}"));
        let frame = body.bytes().clone();
        let parsed = CursorReply::parse(if first { "aggregate" } else { "getMore" }, &body);
        (parsed.unwrap_or_else(|e| panic!("{e}")), frame)
    }

    fn opened() -> Machine {
        let mut m = Machine::new(
            Target::collection("db", "coll"),
            ChangeStreamOptions::default(),
        );
        assert!(matches!(m.poll_command(), Some(Outgoing::Aggregate { .. })));
        let (first, _) = reply(true, 0, false);
        m.handle_aggregate_reply("a", 17, first);
        m
    }

    fn drain(m: &mut Machine) -> Vec<SharedDoc> {
        std::iter::from_fn(|| m.poll_event())
            .map(|e| e.unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn the_reply_buffer_is_released_once_the_events_are_dropped() {
        for pbrt in [true, false] {
            let mut m = opened();
            assert!(matches!(m.poll_command(), Some(Outgoing::GetMore { .. })));
            let (batch, frame) = reply(false, 3, pbrt);
            m.handle_get_more_reply(batch);
            let first = m.poll_event().and_then(Result::ok);
            // Mid-batch the token is a slice of the reply: no copy per event.
            let token = m.resume_token().map(|t| t.as_bytes().as_ptr());
            let range = frame.as_ptr_range();
            assert!(token.is_some_and(|p| range.contains(&p)));
            let mut rest = drain(&mut m);
            assert_eq!(rest.len(), 2);
            let expected = if pbrt { "ffff" } else { "0002" };
            let cached = m.resume_token().map(|t| t.to_document());
            assert_eq!(
                cached.and_then(Result::ok),
                Some(bson::doc! { "_data": expected })
            );
            assert!(!frame.is_unique(), "the events still hold the frame");
            drop(first);
            rest.clear();
            assert!(
                frame.is_unique(),
                "the cached token must not hold the frame (pbrt: {pbrt})"
            );
        }
    }

    #[test]
    fn an_empty_batch_token_does_not_hold_the_reply() {
        let mut m = opened();
        assert!(matches!(m.poll_command(), Some(Outgoing::GetMore { .. })));
        let (batch, frame) = reply(false, 0, true);
        m.handle_get_more_reply(batch);
        assert!(m.poll_event().is_none());
        let cached = m.resume_token().map(|t| t.to_document());
        assert_eq!(
            cached.and_then(Result::ok),
            Some(bson::doc! { "_data": "ffff" })
        );
        assert!(frame.is_unique());
    }

    #[test]
    fn closing_mid_batch_copies_the_token_out() {
        let mut m = opened();
        assert!(matches!(m.poll_command(), Some(Outgoing::GetMore { .. })));
        let (batch, frame) = reply(false, 3, true);
        m.handle_get_more_reply(batch);
        let first = m.poll_event().and_then(Result::ok);
        assert!(first.is_some());
        drop(first);
        m.close();
        let cached = m.resume_token().map(|t| t.to_document());
        assert_eq!(
            cached.and_then(Result::ok),
            Some(bson::doc! { "_data": "0000" })
        );
        assert!(frame.is_unique());
    }
}
