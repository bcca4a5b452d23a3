//! The pool: its state, the checkout path, the guard and the background task.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::ServiceId;
use crate::error::PoolError;
use crate::event::{CheckOutFailReason, CloseReason, EventHandler, PoolEvent};
use crate::manager::{ConnectErrorAction, Manager};
use crate::options::PoolOptions;

/// What bounds a checkout's wait.
#[derive(Debug, Clone, Copy)]
enum CheckOutWait {
    /// `wait_queue_timeout` from the pool's options.
    Options,
    /// The caller's deadline (`None`: none).
    Until(Option<Instant>),
}

/// A CMAP connection pool; see the [crate docs](crate).
///
/// Cloning is cheap and gives another handle on the same pool.
pub struct Pool<M: Manager> {
    inner: Arc<Inner<M>>,
}

/// A snapshot of a pool's counters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Every connection of the pool: `available + in_use + dedicated + pending`.
    pub total: usize,
    /// Established connections waiting in the pool.
    pub available: usize,
    /// Connections being established.
    pub pending: usize,
    /// Connections checked out with [`Pool::check_out`].
    pub in_use: usize,
    /// Connections checked out with [`Pool::check_out_dedicated`] (outside `max_pool_size`).
    pub dedicated: usize,
    /// Checkouts waiting for a connection.
    pub waiting: usize,
}

/// A checked-out connection. Dereferences to the connection; dropping it checks the
/// connection back in (see [`Drop`](#impl-Drop-for-Pooled<M>)).
pub struct Pooled<M: Manager> {
    /// `Some` until the guard is dropped.
    conn: Option<M::Connection>,
    id: u64,
    generation: u64,
    service: Option<ServiceGeneration>,
    dedicated: bool,
    discard: bool,
    pool: Arc<Inner<M>>,
}

struct Inner<M: Manager> {
    manager: Arc<M>,
    options: PoolOptions,
    handler: Option<EventHandler>,
    runtime: Handle,
    state: Mutex<State<M>>,
    /// Mirrors `State::generation`, for lock-free reads.
    generation: AtomicU64,
    /// How many service clears happened (so that a connection of a service need not
    /// take the lock to know it is fresh while none did).
    service_clears: AtomicU64,
    /// Mirrors `State::phase == Closed`.
    closed: AtomicBool,
    /// Connections whose generation is below this value are interrupted
    /// (`clear(true)` sets the new generation, `close()` sets `u64::MAX`).
    interrupt: watch::Sender<u64>,
    /// Wakes the background task (when the pool closes or is dropped).
    wake: Arc<Notify>,
    this: Weak<Inner<M>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Paused,
    Ready,
    Closed,
}

/// A connection's service and that service's generation when it was established.
type ServiceGeneration = (ServiceId, u64);

struct State<M: Manager> {
    phase: Phase,
    generation: u64,
    /// Per service (behind a load balancer): how many times it was cleared.
    service_generations: BTreeMap<ServiceId, u64>,
    next_connection_id: u64,
    next_waiter_id: u64,
    /// Oldest check-in first; checkouts take from the end (LIFO).
    available: Vec<Idle<M::Connection>>,
    in_use: usize,
    dedicated: usize,
    /// Connections being established, by id.
    pending: BTreeMap<u64, Pending>,
    /// How many of `pending` were started for dedicated checkouts (outside `max_pool_size`).
    pending_dedicated: usize,
    /// The wait queue, FIFO.
    waiters: VecDeque<Waiter<M>>,
    /// Set when an establishment failed: no background (minPoolSize) establishment until
    /// the next background run or `ready()`, so a failing server is not hammered.
    fill_backoff: bool,
    record_events: bool,
    events: VecDeque<PoolEvent>,
    emitting: bool,
    /// Connections to drop once the lock is released.
    graveyard: Vec<M::Connection>,
}

struct Idle<C> {
    conn: C,
    id: u64,
    generation: u64,
    service: Option<ServiceGeneration>,
    since: Instant,
}

struct Pending {
    generation: u64,
    dedicated: bool,
    /// The waiter that started it, if any (`None`: started by the `min_pool_size` fill).
    /// An owner no longer in the queue makes it an orphan.
    owner: Option<u64>,
    created: Instant,
    task: AbortHandle,
}

struct Waiter<M: Manager> {
    id: u64,
    dedicated: bool,
    started: Instant,
    /// The establishment this waiter started, whose connection it will get.
    owns: Option<u64>,
    tx: oneshot::Sender<Outcome<M>>,
}

/// A connection handed to a waiter, not yet wrapped in a [`Pooled`].
struct Handout<C> {
    conn: C,
    id: u64,
    generation: u64,
    service: Option<ServiceGeneration>,
    dedicated: bool,
}

type Outcome<M> = Result<Handout<<M as Manager>::Connection>, PoolError<<M as Manager>::Error>>;

impl<M: Manager> State<M> {
    fn emit(&mut self, event: PoolEvent) {
        if self.record_events {
            self.events.push_back(event);
        }
    }

    /// Whether a connection of `generation` (and `service`) is stale.
    fn is_stale(&self, generation: u64, service: Option<&ServiceGeneration>) -> bool {
        generation != self.generation
            || service
                .is_some_and(|(id, g)| self.service_generations.get(id).copied().unwrap_or(0) != *g)
    }

    /// Connections counted against `max_pool_size`.
    fn counted_total(&self) -> usize {
        self.available.len() + self.in_use + (self.pending.len() - self.pending_dedicated)
    }

    fn close_conn(&mut self, conn: M::Connection, connection_id: u64, reason: CloseReason) {
        self.emit(PoolEvent::ConnectionClosed {
            connection_id,
            reason,
        });
        self.graveyard.push(conn);
    }

    fn fail(&mut self, waiter: Waiter<M>, error: PoolError<M::Error>) {
        self.emit(PoolEvent::CheckOutFailed {
            reason: error.fail_reason(),
            duration: waiter.started.elapsed(),
        });
        // The receiver is alive while the waiter is queued (see `Waiting`).
        let _ = waiter.tx.send(Err(error));
    }

    fn fail_all_waiters(&mut self, error: impl Fn() -> PoolError<M::Error>) {
        while let Some(waiter) = self.waiters.pop_front() {
            self.fail(waiter, error());
        }
    }

    /// Interrupts every establishment in progress, reporting it closed with `reason`.
    fn abort_pending(&mut self, reason: CloseReason) {
        for (connection_id, pending) in std::mem::take(&mut self.pending) {
            pending.task.abort();
            self.emit(PoolEvent::ConnectionClosed {
                connection_id,
                reason,
            });
        }
        self.pending_dedicated = 0;
    }

    fn remove_waiter(&mut self, id: u64) -> Option<Waiter<M>> {
        let pos = self.waiters.iter().position(|w| w.id == id)?;
        self.waiters.remove(pos)
    }

    /// Establishments of the current generation started by the `min_pool_size` fill.
    fn fill_pending(&self) -> usize {
        self.pending
            .values()
            .filter(|p| p.generation == self.generation && p.owner.is_none())
            .count()
    }
}

impl<M: Manager> Inner<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then drops the closed connections and delivers the events,
    /// both without the lock.
    fn with_state<R>(&self, f: impl FnOnce(&mut State<M>) -> R) -> R {
        let (result, dead) = {
            let mut st = self.lock();
            let result = f(&mut st);
            (result, std::mem::take(&mut st.graveyard))
        };
        drop(dead);
        self.deliver_events();
        result
    }

    /// Delivers queued events in order. Whoever finds the queue non-empty and nobody
    /// delivering becomes the deliverer until the queue is empty; the check for "empty"
    /// and the hand-back happen under the lock, so no event is stranded.
    fn deliver_events(&self) {
        let Some(handler) = &self.handler else {
            return;
        };
        {
            let mut st = self.lock();
            if st.emitting || st.events.is_empty() {
                return;
            }
            st.emitting = true;
        }
        let mut delivering = Delivering {
            pool: self,
            armed: true,
        };
        loop {
            let event = {
                let mut st = self.lock();
                match st.events.pop_front() {
                    Some(event) => event,
                    None => {
                        st.emitting = false;
                        delivering.armed = false;
                        return;
                    }
                }
            };
            handler(&event);
        }
    }

    fn max_connecting(&self) -> usize {
        self.options.max_connecting()
    }

    fn has_room(&self, st: &State<M>) -> bool {
        self.options
            .max_pool()
            .is_none_or(|max| st.counted_total() < max)
    }

    /// Why an available connection may not be handed out, if it may not.
    fn perished(
        &self,
        st: &State<M>,
        idle: &Idle<M::Connection>,
        now: Instant,
    ) -> Option<CloseReason> {
        if st.is_stale(idle.generation, idle.service.as_ref()) {
            Some(CloseReason::Stale)
        } else if self
            .options
            .idle_limit()
            .is_some_and(|limit| now.saturating_duration_since(idle.since) > limit)
        {
            Some(CloseReason::Idle)
        } else if self.manager.is_broken(&idle.conn) {
            Some(CloseReason::Error)
        } else {
            None
        }
    }

    /// The most recently checked-in usable connection, closing perished ones on the way.
    fn take_available(&self, st: &mut State<M>, now: Instant) -> Option<Idle<M::Connection>> {
        while let Some(idle) = st.available.pop() {
            match self.perished(st, &idle, now) {
                Some(reason) => st.close_conn(idle.conn, idle.id, reason),
                None => return Some(idle),
            }
        }
        None
    }

    fn hand_out(&self, st: &mut State<M>, waiter: Waiter<M>, idle: Idle<M::Connection>) {
        if waiter.dedicated {
            st.dedicated += 1;
        } else {
            st.in_use += 1;
        }
        st.emit(PoolEvent::CheckedOut {
            connection_id: idle.id,
            duration: waiter.started.elapsed(),
        });
        let handout = Handout {
            conn: idle.conn,
            id: idle.id,
            generation: idle.generation,
            service: idle.service,
            dedicated: waiter.dedicated,
        };
        if let Err(Ok(handout)) = waiter.tx.send(Ok(handout)) {
            // Unreachable while `Waiting` keeps its receiver until the waiter is dequeued;
            // if it ever happens, the connection is checked back in, not lost.
            self.check_in_locked(st, handout, false);
        }
    }

    /// Serves the wait queue and keeps the pool at `min_pool_size`. Called after every
    /// state change.
    ///
    /// 1. Available connections go, most recently checked in first, to the oldest waiter
    ///    that has no establishment of its own (else to the oldest waiter, whose
    ///    establishment then becomes an orphan).
    /// 2. Waiters without an establishment are covered, oldest first, by the fill's
    ///    establishments (whose connections they will take); the others start one of their
    ///    own while `max_connecting` and (for normal checkouts) `max_pool_size` allow.
    /// 3. The fill starts establishments up to `min_pool_size`.
    fn dispatch(&self, st: &mut State<M>) {
        if st.phase != Phase::Ready {
            return;
        }
        let now = Instant::now();
        while !st.waiters.is_empty() {
            let Some(idle) = self.take_available(st, now) else {
                break;
            };
            let pos = st
                .waiters
                .iter()
                .position(|w| w.owns.is_none())
                .unwrap_or(0);
            let Some(waiter) = st.waiters.remove(pos) else {
                st.available.push(idle);
                break;
            };
            self.hand_out(st, waiter, idle);
        }

        let max_connecting = self.max_connecting();
        let max_pool = self.options.max_pool();
        let mut cover = st.fill_pending();
        let mut pending = st.pending.len();
        let mut counted = st.counted_total();
        let mut starts = Vec::new();
        for (pos, waiter) in st.waiters.iter().enumerate() {
            if waiter.owns.is_some() {
                continue;
            }
            if cover > 0 {
                cover -= 1;
            } else if pending >= max_connecting {
                break;
            } else if waiter.dedicated {
                starts.push(pos);
                pending += 1;
            } else if max_pool.is_none_or(|max| counted < max) {
                starts.push(pos);
                pending += 1;
                counted += 1;
            }
            // else: blocked by max_pool_size (as every later normal waiter); a later
            // dedicated one may still start.
        }
        for pos in starts {
            let Some(waiter) = st.waiters.get(pos) else {
                continue;
            };
            let (owner, dedicated) = (waiter.id, waiter.dedicated);
            let id = self.start_connect(st, dedicated, Some(owner));
            if let Some(waiter) = st.waiters.get_mut(pos) {
                waiter.owns = Some(id);
            }
        }

        if !st.fill_backoff {
            let min = self.options.min_pool();
            while st.counted_total() < min && st.pending.len() < max_connecting {
                self.start_connect(st, false, None);
            }
        }
    }

    /// Creates a pending connection and spawns its establishment; returns its id.
    fn start_connect(&self, st: &mut State<M>, dedicated: bool, owner: Option<u64>) -> u64 {
        let id = st.next_connection_id;
        st.next_connection_id += 1;
        let generation = st.generation;
        let created = Instant::now();
        st.emit(PoolEvent::ConnectionCreated { connection_id: id });
        let manager = Arc::clone(&self.manager);
        let pool = self.this.clone();
        // Spawned under the lock: the task cannot report back before `pending` holds it.
        let task = self.runtime.spawn(async move {
            let result = manager.connect().await;
            let action = match &result {
                Ok(_) => ConnectErrorAction::Keep,
                Err(error) => manager.on_connect_error(error, generation),
            };
            if let Some(pool) = pool.upgrade() {
                pool.connect_done(id, result, action);
            }
        });
        st.pending.insert(
            id,
            Pending {
                generation,
                dedicated,
                owner,
                created,
                task: task.abort_handle(),
            },
        );
        if dedicated {
            st.pending_dedicated += 1;
        }
        id
    }

    /// An establishment finished.
    fn connect_done(
        &self,
        id: u64,
        result: Result<M::Connection, M::Error>,
        action: ConnectErrorAction,
    ) {
        // What nobody takes is dropped after the lock is released.
        let leftover = self.with_state(|st| {
            let Some(pending) = st.pending.remove(&id) else {
                // Interrupted (clear/close) and already reported closed.
                return Some(result);
            };
            if pending.dedicated {
                st.pending_dedicated -= 1;
            }
            let current = pending.generation == st.generation;
            match result {
                Ok(conn) => {
                    if st.phase == Phase::Closed {
                        st.close_conn(conn, id, CloseReason::PoolClosed);
                    } else if !current {
                        st.close_conn(conn, id, CloseReason::Stale);
                    } else {
                        st.emit(PoolEvent::ConnectionReady {
                            connection_id: id,
                            duration: pending.created.elapsed(),
                        });
                        let service = self.manager.service_id(&conn).map(|service| {
                            let g = st.service_generations.get(&service).copied();
                            (service, g.unwrap_or(0))
                        });
                        let idle = Idle {
                            conn,
                            id,
                            generation: pending.generation,
                            service,
                            since: Instant::now(),
                        };
                        self.place_established(st, idle, &pending);
                    }
                }
                Err(error) => {
                    // CMAP: the checkout that started it sees the error.
                    let victim = pending.owner.and_then(|owner| st.remove_waiter(owner));
                    if current && action == ConnectErrorAction::Clear {
                        self.clear_locked(st, false);
                    }
                    st.emit(PoolEvent::ConnectionClosed {
                        connection_id: id,
                        reason: CloseReason::Error,
                    });
                    st.fill_backoff = true;
                    match victim {
                        Some(waiter) => st.fail(waiter, PoolError::Connect(error)),
                        None => {
                            self.dispatch(st);
                            return Some(Err(error));
                        }
                    }
                }
            }
            self.dispatch(st);
            None
        });
        drop(leftover);
    }

    /// A freshly established connection of the current generation: to the waiter that
    /// started it, else into the pool (a dedicated one only if there is room).
    fn place_established(&self, st: &mut State<M>, idle: Idle<M::Connection>, pending: &Pending) {
        if let Some(waiter) = pending.owner.and_then(|owner| st.remove_waiter(owner)) {
            self.hand_out(st, waiter, idle);
        } else if !pending.dedicated || self.has_room(st) {
            st.available.push(idle);
        } else {
            st.close_conn(idle.conn, idle.id, CloseReason::Surplus);
        }
    }

    fn clear_locked(&self, st: &mut State<M>, interrupt_in_use: bool) {
        if st.phase == Phase::Closed {
            return;
        }
        // CMAP: the generation is bumped even when the pool is already paused (so that
        // errors from before stop clearing it), but only ready -> paused is reported.
        st.generation += 1;
        self.generation.store(st.generation, Ordering::Release);
        if st.phase == Phase::Ready {
            st.phase = Phase::Paused;
            st.emit(PoolEvent::PoolCleared {
                interrupt_in_use,
                service_id: None,
            });
        }
        if interrupt_in_use {
            self.interrupt.send_replace(st.generation);
            st.abort_pending(CloseReason::Stale);
        }
        // Every available connection is now stale: close them now rather than at the next
        // checkout or background run.
        for idle in std::mem::take(&mut st.available) {
            st.close_conn(idle.conn, idle.id, CloseReason::Stale);
        }
        let generation = st.generation;
        st.fail_all_waiters(|| PoolError::Cleared { generation });
    }

    fn check_in(&self, handout: Handout<M::Connection>, discard: bool) {
        let broken = discard || self.manager.is_broken(&handout.conn);
        self.with_state(|st| {
            self.check_in_locked(st, handout, broken);
            self.dispatch(st);
        });
    }

    fn check_in_locked(&self, st: &mut State<M>, handout: Handout<M::Connection>, broken: bool) {
        st.emit(PoolEvent::CheckedIn {
            connection_id: handout.id,
        });
        if handout.dedicated {
            st.dedicated = st.dedicated.saturating_sub(1);
        } else {
            st.in_use = st.in_use.saturating_sub(1);
        }
        let reason = if broken {
            Some(CloseReason::Error)
        } else if st.phase == Phase::Closed {
            Some(CloseReason::PoolClosed)
        } else if st.is_stale(handout.generation, handout.service.as_ref()) {
            Some(CloseReason::Stale)
        } else if handout.dedicated && !self.has_room(st) {
            Some(CloseReason::Surplus)
        } else {
            None
        };
        match reason {
            Some(reason) => st.close_conn(handout.conn, handout.id, reason),
            None => st.available.push(Idle {
                conn: handout.conn,
                id: handout.id,
                generation: handout.generation,
                service: handout.service,
                since: Instant::now(),
            }),
        }
    }

    /// One background run; `false` once the pool is closed.
    fn maintain(&self) -> bool {
        self.with_state(|st| {
            if st.phase == Phase::Closed {
                return false;
            }
            let now = Instant::now();
            let mut kept = Vec::with_capacity(st.available.len());
            for idle in std::mem::take(&mut st.available) {
                match self.perished(st, &idle, now) {
                    Some(reason) => st.close_conn(idle.conn, idle.id, reason),
                    None => kept.push(idle),
                }
            }
            st.available = kept;
            st.fill_backoff = false;
            self.dispatch(st);
            true
        })
    }
}

impl<M: Manager> Drop for Inner<M> {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for pending in st.pending.values() {
            pending.task.abort();
        }
        self.wake.notify_one();
    }
}

/// Resets `emitting` if an event handler panics.
struct Delivering<'a, M: Manager> {
    pool: &'a Inner<M>,
    armed: bool,
}

impl<M: Manager> Drop for Delivering<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.lock().emitting = false;
        }
    }
}

/// A queued checkout; dropping it before it settled leaves the queue (cancellation).
struct Waiting<'a, M: Manager> {
    pool: &'a Inner<M>,
    id: u64,
    started: Instant,
    rx: oneshot::Receiver<Outcome<M>>,
    settled: bool,
}

impl<M: Manager> Waiting<'_, M> {
    /// Leaves the queue because the checkout ended without a result (timeout or
    /// cancellation); if a result was sent meanwhile, returns it instead.
    fn leave(&mut self, reason: CheckOutFailReason) -> Option<Outcome<M>> {
        self.settled = true;
        let left = self.pool.with_state(|st| {
            let waiter = st.remove_waiter(self.id)?;
            let duration = self.started.elapsed();
            st.emit(PoolEvent::CheckOutFailed { reason, duration });
            drop(waiter);
            self.pool.dispatch(st);
            Some(duration)
        });
        match left {
            Some(after) => Some(Err(PoolError::Timeout { after })),
            // Dequeued by the pool: its outcome is in the channel.
            None => self.rx.try_recv().ok(),
        }
    }
}

impl<M: Manager> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(Ok(handout)) = self.leave(CheckOutFailReason::Cancelled) {
            // Handed over just as the checkout was dropped: give it back.
            self.pool.check_in(handout, false);
        }
    }
}

impl<M: Manager> Pool<M> {
    /// Creates a paused pool and emits `PoolCreated`.
    ///
    /// Establishments and the background task run on the tokio runtime this is called
    /// from. The background task holds only a weak reference: it ends when the pool is
    /// closed or dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn new(manager: M, options: PoolOptions, events: Option<EventHandler>) -> Pool<M> {
        let runtime = Handle::current();
        let record_events = events.is_some();
        let inner = Arc::new_cyclic(|this| Inner {
            manager: Arc::new(manager),
            options: options.clone(),
            handler: events,
            runtime: runtime.clone(),
            state: Mutex::new(State {
                phase: Phase::Paused,
                generation: 0,
                service_generations: BTreeMap::new(),
                next_connection_id: 1,
                next_waiter_id: 0,
                available: Vec::new(),
                in_use: 0,
                dedicated: 0,
                pending: BTreeMap::new(),
                pending_dedicated: 0,
                waiters: VecDeque::new(),
                fill_backoff: false,
                record_events,
                events: VecDeque::new(),
                emitting: false,
                graveyard: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            service_clears: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            interrupt: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            this: this.clone(),
        });
        inner.with_state(|st| st.emit(PoolEvent::PoolCreated { options }));
        runtime.spawn(background(
            Arc::downgrade(&inner),
            Arc::clone(&inner.wake),
            inner.options.interval(),
        ));
        Pool { inner }
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// The options the pool was created with.
    pub fn options(&self) -> &PoolOptions {
        &self.inner.options
    }

    /// Paused -> ready (emits `PoolReady`, then starts filling to `min_pool_size`); a no-op
    /// when ready or closed.
    pub fn ready(&self) {
        self.inner.with_state(|st| {
            if st.phase != Phase::Paused {
                return;
            }
            st.phase = Phase::Ready;
            st.emit(PoolEvent::PoolReady);
            st.fill_backoff = false;
            self.inner.dispatch(st);
        });
    }

    /// Clears the pool (CMAP `clear`): bumps the generation, making every existing
    /// connection stale; pauses the pool (emitting `PoolCleared` only if it was ready);
    /// closes the available connections (reason `Stale`); fails every waiting checkout with
    /// [`PoolError::Cleared`]. Connections being established finish and are then closed as
    /// stale, and checked-out ones are closed when checked in.
    ///
    /// With `interrupt_in_use`, establishments in progress are aborted at once (closed,
    /// reason `Stale`) and [`Pooled::interrupted`] resolves for every connection checked
    /// out before the clear. A no-op on a closed pool.
    pub fn clear(&self, interrupt_in_use: bool) {
        self.inner
            .with_state(|st| self.inner.clear_locked(st, interrupt_in_use));
    }

    /// Clears the connections of one service behind a load balancer (CMAP's clear with a
    /// `serviceId`): they become stale (available ones are closed now, reason `Stale`;
    /// checked-out ones when checked in), `PoolCleared` is emitted with the service, and
    /// the pool stays ready — connections of other services are untouched. With
    /// `interrupt_in_use`, [`Pooled::interrupted`] does not resolve (interruption is by
    /// generation, for the whole pool): callers behind a load balancer do not interrupt.
    /// A no-op on a closed pool.
    pub fn clear_service(&self, service: ServiceId, interrupt_in_use: bool) {
        self.inner.with_state(|st| {
            if st.phase == Phase::Closed {
                return;
            }
            *st.service_generations.entry(service).or_insert(0) += 1;
            self.inner.service_clears.fetch_add(1, Ordering::AcqRel);
            st.emit(PoolEvent::PoolCleared {
                interrupt_in_use,
                service_id: Some(service),
            });
            let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.available)
                .into_iter()
                .partition(|idle| st.is_stale(idle.generation, idle.service.as_ref()));
            st.available = kept;
            for idle in stale {
                st.close_conn(idle.conn, idle.id, CloseReason::Stale);
            }
        });
    }

    /// Closes the pool (idempotent): closes the available connections (reason
    /// `PoolClosed`), aborts establishments in progress (reported closed, reason
    /// `PoolClosed`), emits `PoolClosed`, then fails waiting checkouts with
    /// [`PoolError::Closed`], as it will fail every later one. Checked-out connections are
    /// closed when checked in, and their [`Pooled::interrupted`] resolves.
    pub fn close(&self) {
        self.inner.with_state(|st| {
            if st.phase == Phase::Closed {
                return;
            }
            st.phase = Phase::Closed;
            self.inner.closed.store(true, Ordering::Release);
            self.inner.interrupt.send_replace(u64::MAX);
            for idle in std::mem::take(&mut st.available) {
                st.close_conn(idle.conn, idle.id, CloseReason::PoolClosed);
            }
            st.abort_pending(CloseReason::PoolClosed);
            st.emit(PoolEvent::PoolClosed);
            st.fail_all_waiters(|| PoolError::Closed);
        });
        self.inner.wake.notify_one();
    }

    /// The current generation (0 at creation, +1 per clear).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Whether the pool is ready (checkouts may succeed).
    pub fn is_ready(&self) -> bool {
        self.inner.lock().phase == Phase::Ready
    }

    /// Whether the pool is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Checks out a connection counted against `max_pool_size`.
    ///
    /// Fails at once on a paused pool ([`PoolError::Cleared`]) or a closed one
    /// ([`PoolError::Closed`]); otherwise waits in the FIFO queue for an available
    /// connection or a new one, at most `wait_queue_timeout` in all. Without a
    /// `wait_queue_timeout` the wait is unbounded: bound it yourself. Dropping the future
    /// at any point is safe (see the crate docs).
    pub async fn check_out(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.check_out_inner(false, CheckOutWait::Options).await
    }

    /// [`check_out`](Pool::check_out) bounded by `deadline` instead of
    /// `wait_queue_timeout` (which is then ignored): the client-side operation timeout of
    /// the operation that checks out. `None`: no bound at all. A checkout that reaches the
    /// deadline fails with [`PoolError::Timeout`]; a connection being established for it
    /// goes on in the background and joins the pool.
    pub async fn check_out_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.check_out_inner(false, CheckOutWait::Until(deadline))
            .await
    }

    /// Checks out a connection that does not count against `max_pool_size` (for a
    /// long-polling change stream, which must never make other operations wait), but is
    /// otherwise a pool connection: same generations, pause and close rules,
    /// `max_connecting`, events and ids.
    ///
    /// It takes an available connection if there is one (that connection then leaves the
    /// `max_pool_size` accounting), else establishes one. At check-in it becomes a normal
    /// available connection if the pool holds fewer than `max_pool_size` counted
    /// connections, else it is closed (reason [`Surplus`](CloseReason::Surplus)).
    pub async fn check_out_dedicated(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.check_out_inner(true, CheckOutWait::Options).await
    }

    /// [`check_out_dedicated`](Pool::check_out_dedicated) bounded by `deadline` instead of
    /// `wait_queue_timeout`, as [`check_out_until`](Pool::check_out_until) is.
    pub async fn check_out_dedicated_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.check_out_inner(true, CheckOutWait::Until(deadline))
            .await
    }

    async fn check_out_inner(
        &self,
        dedicated: bool,
        wait: CheckOutWait,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let pool = &*self.inner;
        let started = Instant::now();
        let (id, rx) = pool.with_state(|st| {
            st.emit(PoolEvent::CheckOutStarted);
            let refused = match st.phase {
                Phase::Ready => None,
                Phase::Paused => Some(PoolError::Cleared {
                    generation: st.generation,
                }),
                Phase::Closed => Some(PoolError::Closed),
            };
            if let Some(error) = refused {
                st.emit(PoolEvent::CheckOutFailed {
                    reason: error.fail_reason(),
                    duration: started.elapsed(),
                });
                return Err(error);
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_waiter_id;
            st.next_waiter_id += 1;
            st.waiters.push_back(Waiter {
                id,
                dedicated,
                started,
                owns: None,
                tx,
            });
            pool.dispatch(st);
            Ok((id, rx))
        })?;
        let mut waiting = Waiting {
            pool,
            id,
            started,
            rx,
            settled: false,
        };
        let deadline = match wait {
            CheckOutWait::Options => pool
                .options
                .checkout_limit()
                .and_then(|limit| started.checked_add(limit)),
            CheckOutWait::Until(deadline) => deadline,
        };
        let received = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, &mut waiting.rx)
                .await
                .ok(),
            None => Some((&mut waiting.rx).await),
        };
        let outcome = match received {
            Some(Ok(outcome)) => {
                waiting.settled = true;
                outcome
            }
            // The pool dropped the sender without an answer: only possible if it is gone.
            Some(Err(_)) => {
                waiting.settled = true;
                Err(PoolError::Closed)
            }
            None => waiting
                .leave(CheckOutFailReason::Timeout)
                .unwrap_or(Err(PoolError::Closed)),
        };
        outcome.map(|handout| Pooled {
            conn: Some(handout.conn),
            id: handout.id,
            generation: handout.generation,
            service: handout.service,
            dedicated: handout.dedicated,
            discard: false,
            pool: Arc::clone(&self.inner),
        })
    }

    /// The pool's counters now.
    pub fn stats(&self) -> PoolStats {
        let st = self.inner.lock();
        PoolStats {
            total: st.available.len() + st.in_use + st.dedicated + st.pending.len(),
            available: st.available.len(),
            pending: st.pending.len(),
            in_use: st.in_use,
            dedicated: st.dedicated,
            waiting: st.waiters.len(),
        }
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("options", &self.inner.options)
            .field("generation", &self.generation())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The background task: every `interval` (or when woken), one run, until the pool is
/// closed or gone.
async fn background<M: Manager>(pool: Weak<Inner<M>>, wake: Arc<Notify>, interval: Duration) {
    loop {
        match Instant::now().checked_add(interval) {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
            }
            None => wake.notified().await,
        }
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !pool.maintain() {
            return;
        }
    }
}

impl<M: Manager> Pooled<M> {
    /// The connection's id in its pool.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The pool generation the connection was created in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether it came from [`Pool::check_out_dedicated`].
    pub fn is_dedicated(&self) -> bool {
        self.dedicated
    }

    /// The pool was cleared (or closed) after this connection was made: do not start new
    /// work on it.
    pub fn is_stale(&self) -> bool {
        if self.generation < self.pool.generation.load(Ordering::Acquire)
            || self.pool.closed.load(Ordering::Acquire)
        {
            return true;
        }
        if self.service.is_none() || self.pool.service_clears.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.pool
            .lock()
            .is_stale(self.generation, self.service.as_ref())
    }

    /// The service the connection belongs to, behind a load balancer
    /// ([`Manager::service_id`]).
    pub fn service_id(&self) -> Option<ServiceId> {
        self.service.map(|(id, _)| id)
    }

    /// Resolves once a `clear(interrupt_in_use = true)` made this connection stale, or the
    /// pool closed (or was dropped); at once if that already happened. A `clear(false)`
    /// does not resolve it. Owned and `'static`, so it can sit in a `tokio::select!` beside
    /// the IO on the connection; the caller then drops or [`discard`](Pooled::discard)s
    /// the connection (the pool cannot close a connection it does not hold).
    pub fn interrupted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut floor = self.pool.interrupt.subscribe();
        let generation = self.generation;
        async move {
            // An error means the pool is gone: interrupted as well.
            let _ = floor.wait_for(|floor| *floor > generation).await;
        }
    }

    /// Closes it now with reason `Error` (after an error the caller saw), instead of
    /// checking it in. `CheckedIn` is still emitted first, as for any connection leaving
    /// its holder.
    pub fn discard(mut self) {
        self.discard = true;
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        // `conn` is only taken in `drop`.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

/// Checks the connection in: emits `CheckedIn`, then closes it if it is broken or
/// discarded (reason `Error`), the pool is closed (`PoolClosed`), it is stale (`Stale`),
/// or it is dedicated and the pool is full (`Surplus`); otherwise makes it available
/// (handing it to the first waiter, if any).
impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let handout = Handout {
                conn,
                id: self.id,
                generation: self.generation,
                service: self.service,
                dedicated: self.dedicated,
            };
            self.pool.check_in(handout, self.discard);
        }
    }
}

impl<M: Manager> fmt::Debug for Pooled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("dedicated", &self.dedicated)
            .finish_non_exhaustive()
    }
}
