//! The change-stream state machine.

use std::collections::VecDeque;
use std::fmt::Debug;

use brook_command::{
    Aggregate, AggregateTarget, Command, CommandBody, CommandError, CursorReply, GetMore,
    GetMoreOptions, KillCursors, Namespace, Reply, SharedDoc,
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
///
/// Deliberately exhaustive (the one public enum that is not `#[non_exhaustive]`): a
/// driver must run every command the machine hands out, so a new kind of command is a
/// breaking change that every driver has to handle, never a `_ =>` arm that guesses.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing<S> {
    /// Open the stream's cursor: run `command` on `db`, on a server the driver selects
    /// with the stream's original read preference (and in the stream's session). Then
    /// call [`ChangeStreamMachine::handle_reply`] with the server and wire version of
    /// the connection it ran on, or [`ChangeStreamMachine::handle_failure`].
    Aggregate {
        /// The database to run it on.
        db: String,
        /// The command.
        command: Aggregate,
        /// True when this re-opens the stream after a resumable error.
        resume: bool,
    },
    /// Fetch the next batch: run `command` on `db`, on `server` (the cursor's own).
    /// Then call [`ChangeStreamMachine::handle_reply`] or
    /// [`ChangeStreamMachine::handle_failure`].
    ///
    /// A cursor's `getMore` is the same command for the cursor's whole life (built once
    /// when the cursor opens, with [`ChangeStreamOptions::get_more_options`]): a driver
    /// may serialise it once per cursor, keyed by `server` and
    /// [`ChangeStreamMachine::cursor_id`].
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
    /// The cursor id: 0 once exhausted, or once its `killCursors` was queued.
    id: i64,
    ns: Namespace,
    /// The cursor's `getMore`, built once when the cursor opened; it also parses the
    /// `getMore`'s replies.
    get_more: GetMore,
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
    /// A failure that would close the stream is held for the driver to decide (see
    /// [`ChangeStreamMachine::hold_failures`]): resume, restart from now, or give up.
    Held,
    /// Closed by the user or by a fatal error: final.
    Closed,
}

/// A failure held by a machine in [`hold_failures`](ChangeStreamMachine::hold_failures)
/// mode, waiting for the driver's decision.
#[derive(Debug, Clone)]
pub struct HeldFailure {
    /// The error that would have closed the stream.
    pub error: ChangeStreamError,
    /// The command that failed.
    pub command: FailedCommand,
    /// Whether the failed command was a resume's `aggregate` (not the initial one).
    pub during_resume: bool,
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
    /// How the cursors' `getMore`s are built (derived from `options` once).
    get_more_options: GetMoreOptions,
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
    /// Hold failures that would close the stream instead (see `hold_failures`).
    hold: bool,
    held: Option<HeldFailure>,
    /// The failure that started the resume in progress (or the last one), if any.
    resume_cause: Option<ChangeStreamError>,
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
            get_more_options: options.get_more_options(),
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
            hold: false,
            held: None,
            resume_cause: None,
        }
    }

    /// Hold failures that would close the stream (a failed `aggregate`, the initial one
    /// or a resume's; a `getMore` failure that is not resumable) instead of closing it:
    /// the machine then waits in a held state ([`held_failure`](Self::held_failure))
    /// until the driver decides: [`retry_resume`](Self::retry_resume) (a resume policy
    /// that tries again), [`restart_from_now`](Self::restart_from_now) (history lost,
    /// the application re-snapshots) or [`give_up`](Self::give_up) (the error is handed
    /// out and the stream closes, as without this mode). Off by default: the
    /// specification's behaviour, every such failure final.
    pub fn hold_failures(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// The failure held for the driver's decision, if the machine holds one.
    pub fn held_failure(&self) -> Option<&HeldFailure> {
        self.held.as_ref()
    }

    /// The failure that made the stream resume last (a resumable `getMore` failure, or
    /// the held failure a [`retry_resume`](Self::retry_resume) answered), if any.
    pub fn resume_cause(&self) -> Option<&ChangeStreamError> {
        self.resume_cause.as_ref()
    }

    /// Answers a held failure by resuming (again): the old cursor, if any, is killed and
    /// the resume's `aggregate` comes out of [`poll_command`](Self::poll_command), from
    /// the cached token. Counts as a resume. Ignored when nothing is held.
    pub fn retry_resume(&mut self) {
        if let Some(held) = self.held.take() {
            self.resume_cause = Some(held.error);
            self.start_resume();
        }
    }

    /// Answers a held failure by starting afresh from "now": the cached token, the saved
    /// operation time and the start options are dropped, the old cursor is killed, and
    /// the next `aggregate` opens the stream at the current time, as a new stream (for
    /// an application that re-snapshots what it lost: the token fell off the oplog,
    /// `ChangeStreamHistoryLost`). Ignored when nothing is held.
    pub fn restart_from_now(&mut self) {
        if self.held.take().is_none() {
            return;
        }
        self.queue_kill();
        self.cursor = None;
        self.buffer.clear();
        self.batch_token = None;
        self.resume_token = None;
        self.saved_operation_time = None;
        self.options.resume_after = None;
        self.options.start_after = None;
        self.options.start_at_operation_time = None;
        self.returned_event = false;
        self.resuming = false;
        self.phase = Phase::NeedAggregate;
    }

    /// Answers a held failure by giving up: the stream closes and
    /// [`poll_event`](Self::poll_event) hands out the error. Ignored when nothing is
    /// held.
    pub fn give_up(&mut self) {
        if let Some(held) = self.held.take() {
            self.close_with(held.error);
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
    /// their outcome, never feed it back); then, when the stream needs one, the
    /// `aggregate` or the `getMore`, which is then in flight until its
    /// [`handle_reply`](Self::handle_reply) or [`handle_failure`](Self::handle_failure)
    /// (or [`handle_abandoned`](Self::handle_abandoned)). Returns `None`
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
                let out = Outgoing::GetMore {
                    server: cursor.server.clone(),
                    db: cursor.ns.db.clone(),
                    command: cursor.get_more.clone(),
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

    /// The reply to the `aggregate` or `getMore` in flight (the machine knows which),
    /// as it came off the wire: body and sequences, `ok` not checked. `server` and
    /// `wire_version` are those of the connection the command ran on (for a `getMore`,
    /// the cursor's server).
    ///
    /// The machine parses the reply with the command's own
    /// [`handle_reply`](brook_command::Command::handle_reply): `ok: 0` is handled as
    /// [`Failure::Server`] and a reply that cannot be read (or a `getMore` reply that
    /// speaks of another cursor) as [`Failure::Protocol`], exactly as
    /// [`handle_failure`](Self::handle_failure) would handle them (a `getMore`'s
    /// resumable failure resumes; anything else closes the stream). A `getMore` reply is
    /// parsed in place: its events are slices of the reply's buffer.
    ///
    /// Ignored when nothing is in flight — except the reply of an `aggregate` that was
    /// in flight when the stream was [closed](Self::close): the cursor it opened is
    /// killed (a `killCursors` on `server` comes out of
    /// [`poll_command`](Self::poll_command)). `killCursors` replies are never fed back.
    pub fn handle_reply(&mut self, server: S, wire_version: i32, reply: Reply) {
        match self.phase {
            Phase::AggregateInFlight => match parse_aggregate_reply(reply) {
                Ok(reply) => self.take_aggregate_reply(server, wire_version, reply),
                Err(err) => self.reply_failed(err, wire_version),
            },
            Phase::GetMoreInFlight => self.take_get_more_reply(wire_version, reply),
            Phase::Closed if self.orphan_aggregate => {
                // The stream was closed while this aggregate was in flight: close the
                // cursor it opened.
                self.orphan_aggregate = false;
                if let Ok(reply) = parse_aggregate_reply(reply)
                    && reply.id != 0
                {
                    self.kills
                        .push_back(kill_command(server, &reply.ns, reply.id));
                }
            }
            _ => {}
        }
    }

    /// The `aggregate` in flight succeeded.
    fn take_aggregate_reply(&mut self, server: S, wire_version: i32, reply: CursorReply) {
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
        let get_more = self
            .get_more_options
            .build(reply.id, &reply.ns, wire_version);
        self.cursor = Some(Cursor {
            server,
            wire_version,
            id: reply.id,
            ns: reply.ns.clone(),
            get_more,
        });
        self.take_batch(reply);
    }

    /// Parses and takes the reply of the `getMore` in flight.
    fn take_get_more_reply(&mut self, wire_version: i32, reply: Reply) {
        let Some(cursor) = self.cursor.as_mut() else {
            // A getMore is in flight only while a cursor is open.
            return;
        };
        let reply = match cursor.get_more.handle_reply(reply) {
            Ok(reply) => reply,
            Err(err) => {
                self.reply_failed(err, wire_version);
                return;
            }
        };
        // A getMore answers for the cursor it was sent for: the same id while it lives,
        // 0 once it is exhausted. Any other id means the reply did not answer the
        // request; taking it would send the next getMore (and the killCursors) for a
        // cursor this stream never opened.
        if reply.id != 0 && reply.id != cursor.id {
            let reason = format!(
                "getMore for cursor {} answered with cursor id {}",
                cursor.id, reply.id
            );
            self.fail(Failure::Protocol, Some(wire_version), Some(reason));
            return;
        }
        cursor.id = reply.id;
        self.take_batch(reply);
    }

    /// The reply of the command in flight could not be taken: `ok: 0`, or unreadable.
    fn reply_failed(&mut self, err: CommandError, wire_version: i32) {
        match err {
            CommandError::Server(error) => {
                self.fail(Failure::Server(error), Some(wire_version), None)
            }
            // Whatever else stops a reply from being parsed is about the reply.
            other => self.fail(
                Failure::Protocol,
                Some(wire_version),
                Some(other.to_string()),
            ),
        }
    }

    /// The command in flight failed. `wire_version` is that of the connection it
    /// failed on (`None`: the cursor's connection's, for a `getMore`). A resumable
    /// `getMore` failure starts a resume (the old cursor's `killCursors` and a new
    /// `aggregate` come out of [`poll_command`](Self::poll_command)); any other failure
    /// closes the stream and is handed out by [`poll_event`](Self::poll_event).
    /// Ignored when no command is in flight.
    ///
    /// Which [`Failure`] to report: [`Failure::Network`] when the connection failed
    /// before the reply was read, [`Failure::Timeout`] when a client-side timeout
    /// expired first, [`Failure::Protocol`] when the reply's frame could not be
    /// accepted, [`Failure::Client`] when the command could not be built or encoded
    /// (nothing was sent). A reply that was read is handed to
    /// [`handle_reply`](Self::handle_reply) instead, even an `ok: 0` one.
    pub fn handle_failure(&mut self, failure: Failure, wire_version: Option<i32>) {
        self.fail(failure, wire_version, None);
    }

    /// [`handle_failure`](Self::handle_failure), with what was wrong with the reply
    /// when the machine found a protocol failure itself.
    fn fail(&mut self, failure: Failure, wire_version: Option<i32>, reason: Option<String>) {
        let error = |failure: Failure, command: FailedCommand, wire_version: Option<i32>| match (
            failure, reason,
        ) {
            (Failure::Protocol, reason @ Some(_)) => {
                ChangeStreamError::Protocol { command, reason }
            }
            (failure, _) => ChangeStreamError::from_failure(failure, command, wire_version),
        };
        match self.phase {
            Phase::AggregateInFlight => {
                // Errors of an aggregate (the initial one or a resume's) are final: a
                // stream resumes at most once per error (unless the driver holds
                // failures and its resume policy says otherwise).
                let err = error(failure, FailedCommand::Aggregate, wire_version);
                self.stop(err, FailedCommand::Aggregate);
            }
            Phase::GetMoreInFlight => {
                let wire = wire_version
                    .or_else(|| self.cursor.as_ref().map(|c| c.wire_version))
                    .unwrap_or(0);
                if is_resumable(&failure, wire, FailedCommand::GetMore) {
                    self.resume_cause = Some(ChangeStreamError::from_failure(
                        failure,
                        FailedCommand::GetMore,
                        Some(wire),
                    ));
                    self.start_resume();
                } else {
                    let err = error(failure, FailedCommand::GetMore, Some(wire));
                    self.stop(err, FailedCommand::GetMore);
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
            Phase::GetMoreInFlight => self.handle_failure(Failure::Network, None),
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
        self.held = None;
        self.phase = Phase::Closed;
        self.buffer.clear();
        self.batch_token = None;
        // A token taken mid-batch shares the dropped batch's buffer: copy it out.
        self.resume_token = self.resume_token.as_ref().map(detach);
        self.error = None;
    }

    /// A failure that ends the stream: held for the driver when it holds failures,
    /// else the stream closes with it.
    fn stop(&mut self, err: ChangeStreamError, command: FailedCommand) {
        if self.hold {
            self.held = Some(HeldFailure {
                error: err,
                command,
                during_resume: command == FailedCommand::Aggregate && self.resuming,
            });
            self.phase = Phase::Held;
        } else {
            self.close_with(err);
        }
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

/// Parses an `aggregate`'s reply with [`Aggregate::handle_reply`]. The reply's shape does
/// not depend on the aggregate's arguments, so an empty one (no allocation) parses it.
fn parse_aggregate_reply(reply: Reply) -> Result<CursorReply, CommandError> {
    Aggregate::new(AggregateTarget::Database, Vec::new()).handle_reply(reply)
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
    fn reply(first: bool, batch: usize, pbrt: bool) -> (Reply, Bytes) {
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
        (Reply::new(body), frame)
    }

    fn opened() -> Machine {
        let mut m = Machine::new(
            Target::collection("db", "coll"),
            ChangeStreamOptions::default(),
        );
        assert!(matches!(m.poll_command(), Some(Outgoing::Aggregate { .. })));
        let (first, _) = reply(true, 0, false);
        m.handle_reply("a", 17, first);
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
            m.handle_reply("a", 17, batch);
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
        m.handle_reply("a", 17, batch);
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
        m.handle_reply("a", 17, batch);
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
