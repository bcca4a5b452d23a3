//! A scriptable mock manager and an event recorder.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_pool::{
    CheckOutFailReason, CloseReason, ConnectErrorAction, EventHandler, Manager, Pool, PoolError,
    PoolEvent, PoolOptions, Pooled,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What one `connect` call does.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Succeeds at once.
    Ok,
    /// Succeeds after a delay.
    Slow(Duration),
    /// Fails at once.
    Fail,
    /// Fails after a delay.
    SlowFail(Duration),
    /// Never completes.
    Hang,
    /// Waits until the gate is opened, then succeeds.
    Gate(Arc<Notify>),
    /// Waits until the gate is opened, then fails.
    GateFail(Arc<Notify>),
}

/// The mock's error.
#[derive(Debug, thiserror::Error)]
#[error("mock connect failed (attempt {attempt})")]
pub(crate) struct MockError {
    pub(crate) attempt: u64,
}

/// A mock connection; counts itself open until dropped.
#[derive(Debug)]
pub(crate) struct MockConn {
    pub(crate) broken: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    /// The service behind a load balancer (see `MockManager::services`).
    service: Option<[u8; 12]>,
}

impl MockConn {
    pub(crate) fn break_it(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
}

impl Drop for MockConn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A manager whose `connect` follows a script: queued steps first, then the default.
#[derive(Debug)]
pub(crate) struct MockManager {
    steps: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    /// Answer of `on_connect_error`.
    pub(crate) clear_on_error: AtomicBool,
    attempts: AtomicU64,
    open: Arc<AtomicUsize>,
    /// `connect` futures not yet finished or dropped.
    live: Arc<AtomicUsize>,
    /// Behind a load balancer with this many services (0: none): connection `k` (from
    /// 1) belongs to service `k % services`.
    pub(crate) services: AtomicU64,
}

/// Counts a `connect` future as live until it is dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MockManager {
    pub(crate) fn new() -> Self {
        MockManager {
            steps: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::Ok),
            clear_on_error: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            live: Arc::new(AtomicUsize::new(0)),
            services: AtomicU64::new(0),
        }
    }

    /// The next `connect` calls follow these steps, in order.
    pub(crate) fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.steps.lock().unwrap().extend(steps);
    }

    /// What `connect` does once the queued steps are used up.
    pub(crate) fn set_default(&self, step: Step) {
        *self.default.lock().unwrap() = step;
    }

    /// `connect` calls so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Connections established and not yet dropped.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A handle on the count of `connect` futures still running.
    pub(crate) fn live_connects(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.live)
    }

    fn next_step(&self) -> Step {
        let queued = self.steps.lock().unwrap().pop_front();
        queued.unwrap_or_else(|| self.default.lock().unwrap().clone())
    }
}

impl Manager for MockManager {
    type Connection = MockConn;
    type Error = MockError;

    fn connect(&self) -> impl Future<Output = Result<MockConn, MockError>> + Send {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let services = self.services.load(Ordering::SeqCst);
        let service = (services > 0).then(|| [(attempt % services) as u8; 12]);
        let step = self.next_step();
        let open = Arc::clone(&self.open);
        self.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(Arc::clone(&self.live));
        async move {
            let _live = live;
            let ok = match step {
                Step::Ok => true,
                Step::Slow(d) => {
                    tokio::time::sleep(d).await;
                    true
                }
                Step::Fail => false,
                Step::SlowFail(d) => {
                    tokio::time::sleep(d).await;
                    false
                }
                Step::Hang => std::future::pending().await,
                Step::Gate(gate) => {
                    gate.notified().await;
                    true
                }
                Step::GateFail(gate) => {
                    gate.notified().await;
                    false
                }
            };
            if ok {
                open.fetch_add(1, Ordering::SeqCst);
                Ok(MockConn {
                    broken: Arc::new(AtomicBool::new(false)),
                    open,
                    service,
                })
            } else {
                Err(MockError { attempt })
            }
        }
    }

    fn is_broken(&self, conn: &MockConn) -> bool {
        conn.broken.load(Ordering::SeqCst)
    }

    fn service_id(&self, conn: &MockConn) -> Option<[u8; 12]> {
        conn.service
    }

    fn on_connect_error(&self, _error: &MockError, _generation: u64) -> ConnectErrorAction {
        if self.clear_on_error.load(Ordering::SeqCst) {
            ConnectErrorAction::Clear
        } else {
            ConnectErrorAction::Keep
        }
    }
}

/// Records every event; lets a test wait for some.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    events: Arc<Mutex<Vec<PoolEvent>>>,
    notify: Arc<Notify>,
}

impl Recorder {
    pub(crate) fn handler(&self) -> EventHandler {
        let me = self.clone();
        Arc::new(move |event: &PoolEvent| {
            me.events.lock().unwrap().push(event.clone());
            me.notify.notify_waiters();
        })
    }

    pub(crate) fn events(&self) -> Vec<PoolEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Where the first event matching `pred` stands in the stream, if any did.
    pub(crate) fn position(&self, pred: impl Fn(&PoolEvent) -> bool) -> Option<usize> {
        self.events.lock().unwrap().iter().position(pred)
    }

    pub(crate) fn count(&self, pred: impl Fn(&PoolEvent) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// Waits until `pred` matched `n` events, at most `limit` (tokio time).
    pub(crate) async fn wait_for(
        &self,
        n: usize,
        limit: Duration,
        pred: impl Fn(&PoolEvent) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count(&pred) >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "timed out waiting for {n} events; saw {:?}",
                    self.events()
                ));
            }
        }
    }

    /// Checks the invariants every event stream must keep: each `CheckOutStarted` ends in
    /// exactly one `CheckedOut` or `CheckOutFailed` (counted globally: never more endings
    /// than starts, and equal when `settled`); each `ConnectionCreated` has at most one
    /// `ConnectionClosed`, which comes after it; `CheckedIn` only for checked-out ids.
    pub(crate) fn check_consistency(&self, settled: bool) {
        let events = self.events();
        let mut started = 0usize;
        let mut ended = 0usize;
        let mut created = std::collections::HashSet::new();
        let mut closed = std::collections::HashSet::new();
        let mut out = std::collections::HashMap::<u64, i64>::new();
        for e in &events {
            match e {
                PoolEvent::CheckOutStarted => started += 1,
                PoolEvent::CheckedOut { connection_id, .. } => {
                    ended += 1;
                    *out.entry(*connection_id).or_default() += 1;
                    assert!(
                        !closed.contains(connection_id),
                        "closed {connection_id} checked out: {events:#?}"
                    );
                }
                PoolEvent::CheckOutFailed { .. } => ended += 1,
                PoolEvent::ConnectionCreated { connection_id } => {
                    assert!(created.insert(*connection_id), "created twice: {events:#?}");
                }
                PoolEvent::ConnectionClosed { connection_id, .. } => {
                    assert!(
                        created.contains(connection_id),
                        "closed before created: {events:#?}"
                    );
                    assert!(closed.insert(*connection_id), "closed twice: {events:#?}");
                }
                PoolEvent::CheckedIn { connection_id } => {
                    let n = out.entry(*connection_id).or_default();
                    *n -= 1;
                    assert!(*n >= 0, "checked in without checkout: {events:#?}");
                }
                _ => {}
            }
            assert!(
                ended <= started,
                "more checkout endings than starts: {events:#?}"
            );
        }
        if settled {
            assert_eq!(started, ended, "unsettled checkouts: {events:#?}");
        }
    }
}

/// What a checkout from the mock's pool ends in.
pub(crate) type CheckOutResult = Result<Pooled<MockManager>, PoolError<MockError>>;

/// `PoolOptions` set one named field at a time, from the defaults:
/// `options().max_pool_size(1).max_connecting(1)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options(PoolOptions);

/// The default pool options, to adjust with [`Options`]' setters.
pub(crate) fn options() -> Options {
    Options::default()
}

impl Options {
    pub(crate) fn max_pool_size(mut self, n: u32) -> Self {
        self.0.max_pool_size = n;
        self
    }

    pub(crate) fn min_pool_size(mut self, n: u32) -> Self {
        self.0.min_pool_size = n;
        self
    }

    pub(crate) fn max_connecting(mut self, n: u32) -> Self {
        self.0.max_connecting = n;
        self
    }

    pub(crate) fn max_idle_time(mut self, limit: Duration) -> Self {
        self.0.max_idle_time = Some(limit);
        self
    }

    pub(crate) fn wait_queue_timeout(mut self, limit: Duration) -> Self {
        self.0.wait_queue_timeout = Some(limit);
        self
    }

    pub(crate) fn maintenance_interval(mut self, every: Duration) -> Self {
        self.0.maintenance_interval = every;
        self
    }
}

impl From<Options> for PoolOptions {
    fn from(options: Options) -> PoolOptions {
        options.0
    }
}

/// A pool over a fresh mock, recording events.
pub(crate) struct Harness {
    pub(crate) pool: Pool<MockManager>,
    pub(crate) rec: Recorder,
}

impl Harness {
    /// A paused pool.
    pub(crate) fn new(options: impl Into<PoolOptions>) -> Self {
        let rec = Recorder::default();
        let pool = Pool::new(MockManager::new(), options.into(), Some(rec.handler()));
        Harness { pool, rec }
    }

    /// A ready pool.
    pub(crate) fn ready(options: impl Into<PoolOptions>) -> Self {
        let h = Harness::new(options);
        h.pool.ready();
        h
    }

    pub(crate) fn mock(&self) -> &MockManager {
        self.pool.manager()
    }

    /// Lets spawned tasks run (paused time does not advance while tasks are runnable).
    pub(crate) async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Lets `duration` of tokio time pass, then lets spawned tasks run.
    pub(crate) async fn advance(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
        self.settle().await;
    }

    /// A checkout on a task of its own, so that the test can go on while it waits.
    pub(crate) fn spawn_check_out(&self) -> JoinHandle<CheckOutResult> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.check_out().await })
    }

    /// Checks out `n` connections, all held at once, and returns their ids in checkout
    /// order; they are checked back in when this returns.
    pub(crate) async fn ids_of_checkouts(&self, n: usize) -> Vec<u64> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(self.pool.check_out().await.unwrap());
        }
        held.iter().map(Pooled::id).collect()
    }

    /// Was connection `connection_id` closed for `reason`?
    pub(crate) fn closed(&self, connection_id: u64, reason: CloseReason) -> bool {
        self.rec.events().contains(&PoolEvent::ConnectionClosed {
            connection_id,
            reason,
        })
    }

    pub(crate) fn failed_with(&self, reason: CheckOutFailReason) -> usize {
        self.rec
            .count(|e| matches!(e, PoolEvent::CheckOutFailed { reason: r, .. } if *r == reason))
    }
}

/// Runs a test body, failing it (instead of hanging) if it takes more than a minute of
/// tokio time: with paused time a stuck pool lets the clock jump there at once.
pub(crate) async fn bounded<F: Future>(body: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), body).await {
        Ok(output) => output,
        Err(_) => panic!("the test hung (60 s of tokio time)"),
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
