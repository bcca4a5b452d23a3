//! The cancellation matrix: a checkout dropped while queued behind a full pool, while
//! blocked by `max_connecting`, or while its connection is being established, for each
//! connect outcome (ok, error, slow then ok, slow then error, hang); a guard dropped while
//! in use, broken or not. After each: exact stats, the next waiter proceeds, consistent
//! events, no leaked connection.
//!
//! Futures are polled by hand (`poll_once`) on a paused current-thread runtime, so each
//! drop happens at exactly the intended await.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use brook_pool::{CheckOutFailReason, CloseReason, PoolError, PoolEvent};
use tokio::sync::Notify;

use crate::support::{CheckOutResult, Harness, Options, Step, bounded, ms, options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Slow,
    SlowFail,
    Hang,
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::Fail,
    Outcome::Slow,
    Outcome::SlowFail,
    Outcome::Hang,
];

/// Runs `case` once for every connect outcome.
async fn for_every_outcome<F: Future>(case: impl Fn(Outcome) -> F) {
    for outcome in OUTCOMES {
        case(outcome).await;
    }
}

/// Polls a future once.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// A checkout polled by hand.
type PendingCheckout<'a> = Pin<Box<dyn Future<Output = CheckOutResult> + 'a>>;

/// Starts a checkout and polls it once: it must be left waiting.
async fn waiting_check_out(h: &Harness) -> PendingCheckout<'_> {
    let mut checkout: PendingCheckout<'_> = Box::pin(h.pool.check_out());
    assert!(poll_once(&mut checkout).await.is_pending());
    checkout
}

/// Polls a checkout whose connect followed `outcome` (and has had the time to): with `Ok`
/// and `Slow` it holds connection `id`, which it checks back in; with `Fail` and `SlowFail`
/// it failed with the connect error; with `Hang` it is still waiting.
async fn assert_checkout_followed(
    checkout: &mut PendingCheckout<'_>,
    outcome: Outcome,
    id: u64,
    case: &str,
) {
    match outcome {
        Outcome::Ok | Outcome::Slow => {
            let conn = poll_once(checkout).await;
            let Poll::Ready(Ok(conn)) = conn else {
                panic!("{case}: {conn:?}")
            };
            assert_eq!(conn.id(), id, "{case}");
        }
        Outcome::Fail | Outcome::SlowFail => {
            let res = poll_once(checkout).await;
            assert!(
                matches!(res, Poll::Ready(Err(PoolError::Connect(_)))),
                "{case}: {res:?}"
            );
        }
        Outcome::Hang => assert!(poll_once(checkout).await.is_pending(), "{case}"),
    }
}

/// The step for a connect that must still be running when the checkout is dropped; `Ok`
/// and `Fail` are gated and the gate opened right after the drop.
fn deferred_step(outcome: Outcome, gate: &Arc<Notify>) -> Step {
    match outcome {
        Outcome::Ok => Step::Gate(Arc::clone(gate)),
        Outcome::Fail => Step::GateFail(Arc::clone(gate)),
        Outcome::Slow => Step::Slow(ms(10)),
        Outcome::SlowFail => Step::SlowFail(ms(10)),
        Outcome::Hang => Step::Hang,
    }
}

fn immediate_step(outcome: Outcome) -> Step {
    match outcome {
        Outcome::Ok => Step::Ok,
        Outcome::Fail => Step::Fail,
        Outcome::Slow => Step::Slow(ms(10)),
        Outcome::SlowFail => Step::SlowFail(ms(10)),
        Outcome::Hang => Step::Hang,
    }
}

/// Lets every slow connect finish.
async fn resolve(h: &Harness) {
    h.settle().await;
    h.advance(ms(50)).await;
}

/// The common end of every case: nothing is left waiting; the pool serves a fresh
/// checkout (after `clear(true)` + `ready()` when a connect hangs, the documented way to
/// free its slot); with every guard dropped the counters add up, no established
/// connection leaked, and the events are consistent.
async fn finish(h: &Harness, outcome: Outcome, case: &str) {
    resolve(h).await;
    let s = h.pool.stats();
    assert_eq!(s.waiting, 0, "{case}: {s:?}");
    assert_eq!(s.in_use, 0, "{case}: {s:?}");
    assert_eq!(
        s.pending,
        usize::from(outcome == Outcome::Hang),
        "{case}: {s:?}"
    );
    if outcome == Outcome::Hang {
        h.pool.clear(true);
        h.pool.ready();
        assert_eq!(
            h.pool.stats().pending,
            0,
            "{case}: clear(true) aborts the hung connect"
        );
    }
    let next = tokio::time::timeout(ms(100), h.pool.check_out()).await;
    let next = next.unwrap_or_else(|_| panic!("{case}: the next checkout never proceeded"));
    let next = next.unwrap_or_else(|e| panic!("{case}: the next checkout failed: {e}"));
    drop(next);
    h.settle().await;
    let s = h.pool.stats();
    assert_eq!(
        (s.waiting, s.in_use, s.pending, s.dedicated),
        (0, 0, 0, 0),
        "{case}: {s:?}"
    );
    assert_eq!(s.total, s.available, "{case}: {s:?}");
    assert_eq!(
        h.mock().open(),
        s.available,
        "{case}: leaked or lost connections"
    );
    h.rec.check_consistency(true);
}

/// The matrix's pool: two connections, one established at a time.
fn matrix_options() -> Options {
    options().max_pool_size(2).max_connecting(1)
}

/// Dropped while queued behind a full pool; the connection the next waiter then needs
/// follows `outcome`.
async fn dropped_in_queue(outcome: Outcome) {
    let case = format!("queue/{outcome:?}");
    let h = Harness::ready(matrix_options().max_pool_size(1));
    let holder = h.pool.check_out().await.unwrap();
    let victim = waiting_check_out(&h).await;
    let mut next = waiting_check_out(&h).await;
    assert_eq!(h.pool.stats().waiting, 2, "{case}");

    drop(victim);
    assert_eq!(h.pool.stats().waiting, 1, "{case}");
    assert_eq!(h.failed_with(CheckOutFailReason::Cancelled), 1, "{case}");

    // The holder's connection is broken: `next` needs a new one, which follows `outcome`.
    h.mock().push([immediate_step(outcome)]);
    holder.break_it();
    drop(holder);
    assert_eq!(h.pool.stats().pending, 1, "{case}: next's connect started");
    resolve(&h).await;
    assert_checkout_followed(&mut next, outcome, 2, &case).await;
    if outcome == Outcome::Hang {
        drop(next);
    }
    finish(&h, outcome, &case).await;
}

/// Dropped while blocked by `max_connecting` (another checkout's connect in flight, which
/// then follows `outcome`).
async fn dropped_waiting_for_max_connecting(outcome: Outcome) {
    let case = format!("maxConnecting/{outcome:?}");
    let h = Harness::ready(matrix_options());
    let gate = Arc::new(Notify::new());
    h.mock().push([deferred_step(outcome, &gate)]);
    let mut first = waiting_check_out(&h).await;
    let victim = waiting_check_out(&h).await;
    let s = h.pool.stats();
    assert_eq!(
        (s.pending, s.waiting),
        (1, 2),
        "{case}: victim blocked by maxConnecting"
    );

    drop(victim);
    gate.notify_one();
    let s = h.pool.stats();
    assert_eq!((s.pending, s.waiting), (1, 1), "{case}: {s:?}");
    assert_eq!(h.failed_with(CheckOutFailReason::Cancelled), 1, "{case}");
    resolve(&h).await;
    assert_checkout_followed(&mut first, outcome, 1, &case).await;
    if outcome == Outcome::Hang {
        // The hung connect holds the only max_connecting slot: a new checkout waits
        // (documented; the manager must bound connect).
        drop(first);
        let blocked = tokio::time::timeout(ms(20), h.pool.check_out()).await;
        assert!(blocked.is_err(), "{case}: no slot while the connect hangs");
    }
    finish(&h, outcome, &case).await;
}

/// Dropped while its own connection is being established. With `Ok` and `Fail` the
/// connect finishes before the drop, so the outcome is already in the checkout's channel.
async fn dropped_while_connecting(outcome: Outcome) {
    let case = format!("connecting/{outcome:?}");
    let h = Harness::ready(matrix_options().max_connecting(2));
    h.mock().push([immediate_step(outcome)]);
    let victim = waiting_check_out(&h).await;
    assert_eq!(h.pool.stats().pending, 1, "{case}");
    h.settle().await;
    drop(victim);
    let s = h.pool.stats();
    let events = h.rec.events();
    match outcome {
        Outcome::Ok => {
            // Handed over, then dropped before being polled: checked back in.
            assert!(
                events.contains(&PoolEvent::CheckedIn { connection_id: 1 }),
                "{case}"
            );
            assert_eq!(
                (s.available, s.in_use, s.pending),
                (1, 0, 0),
                "{case}: {s:?}"
            );
        }
        Outcome::Fail => {
            assert_eq!(
                h.failed_with(CheckOutFailReason::ConnectionError),
                1,
                "{case}"
            );
            assert_eq!((s.total, s.pending), (0, 0), "{case}: {s:?}");
        }
        Outcome::Slow | Outcome::SlowFail | Outcome::Hang => {
            assert_eq!(h.failed_with(CheckOutFailReason::Cancelled), 1, "{case}");
            assert_eq!(
                (s.pending, s.waiting),
                (1, 0),
                "{case}: the connect goes on"
            );
        }
    }
    if outcome == Outcome::Hang {
        // The pool stays usable: the other max_connecting slot serves a new checkout.
        let other = tokio::time::timeout(ms(100), h.pool.check_out()).await;
        let other = other.unwrap_or_else(|_| panic!("{case}: blocked by a hung connect"));
        assert_eq!(other.unwrap().id(), 2, "{case}");
    }
    resolve(&h).await;
    let s = h.pool.stats();
    match outcome {
        // The dropped checkout's connection was not wasted.
        Outcome::Ok | Outcome::Slow => assert_eq!(s.available, 1, "{case}: {s:?}"),
        Outcome::Fail | Outcome::SlowFail => {
            assert_eq!(s.total, 0, "{case}: {s:?}");
            assert!(h.closed(1, CloseReason::Error), "{case}");
        }
        Outcome::Hang => assert_eq!(s.pending, 1, "{case}: {s:?}"),
    }
    let attempts = h.mock().attempts();
    finish(&h, outcome, &case).await;
    if matches!(outcome, Outcome::Ok | Outcome::Slow) {
        assert_eq!(
            h.mock().attempts(),
            attempts,
            "{case}: the next checkout reused it"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn checkout_dropped_in_the_queue() {
    bounded(for_every_outcome(dropped_in_queue)).await;
}

#[tokio::test(start_paused = true)]
async fn checkout_dropped_waiting_for_max_connecting() {
    bounded(for_every_outcome(dropped_waiting_for_max_connecting)).await;
}

#[tokio::test(start_paused = true)]
async fn checkout_dropped_while_connecting() {
    bounded(for_every_outcome(dropped_while_connecting)).await;
}

/// A guard dropped while in use, its connection broken or not, with a checkout waiting.
#[tokio::test(start_paused = true)]
async fn guard_dropped_in_use() {
    bounded(async move {
        for broken in [false, true] {
            let h = Harness::ready(matrix_options().max_pool_size(1));
            let guard = h.pool.check_out().await.unwrap();
            let waiter = h.spawn_check_out();
            h.settle().await;
            assert_eq!(h.pool.stats().waiting, 1);
            if broken {
                guard.break_it();
            }
            drop(guard);
            let id = waiter.await.unwrap().unwrap().id();
            assert_eq!(id, if broken { 2 } else { 1 }, "broken = {broken}");
            if broken {
                assert!(h.closed(1, CloseReason::Error));
            }
            finish(&h, Outcome::Ok, &format!("guard/broken={broken}")).await;
        }
    })
    .await;
}

/// A `wait_queue_timeout` expiring while the connection is being established: the checkout
/// fails with Timeout, the connection joins the pool when ready.
#[tokio::test(start_paused = true)]
async fn timeout_while_connecting_keeps_the_connection() {
    bounded(async move {
        let h = Harness::ready(matrix_options().wait_queue_timeout(ms(20)));
        h.mock().push([Step::Slow(ms(100))]);
        let err = h.pool.check_out().await.unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout { after } if after >= ms(20)),
            "{err:?}"
        );
        assert_eq!(h.failed_with(CheckOutFailReason::Timeout), 1);
        assert_eq!(h.pool.stats().pending, 1);
        h.advance(ms(100)).await;
        assert_eq!(h.pool.stats().available, 1);
        assert_eq!(h.pool.check_out().await.unwrap().id(), 1);
        finish(&h, Outcome::Ok, "timeout-while-connecting").await;
    })
    .await;
}

/// Many tasks on a multi-threaded runtime checking out with random timeouts, aborts,
/// discards, clears and a slow, sometimes failing connect: the counters and events stay
/// consistent and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_on_a_multi_threaded_runtime() {
    bounded(async move {
        let h = Harness::ready(
            options()
                .max_pool_size(3)
                .max_connecting(2)
                .min_pool_size(1)
                .wait_queue_timeout(ms(30))
                .maintenance_interval(ms(5)),
        );
        let mut steps = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..400 {
            steps.push(match rand() % 5 {
                0 => Step::Fail,
                1 => Step::Slow(ms(2)),
                _ => Step::Ok,
            });
        }
        h.mock().push(steps);
        // Clears at 60 and 120 ms, while the queue is long.
        let clearer = tokio::spawn({
            let pool = h.pool.clone();
            async move {
                for interrupt in [false, true] {
                    tokio::time::sleep(ms(60)).await;
                    pool.clear(interrupt);
                    pool.ready();
                }
            }
        });
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let pool = h.pool.clone();
            let r = rand();
            // Outer limits below and above the pool's 30 ms wait_queue_timeout.
            let limit = ms(1 + rand() % 100);
            tasks.push(tokio::spawn(async move {
                if let Ok(Ok(conn)) = tokio::time::timeout(limit, pool.check_out()).await {
                    tokio::time::sleep(ms(r % 10)).await;
                    if r % 7 == 0 {
                        conn.discard();
                    } else if r % 11 == 0 {
                        conn.break_it();
                    }
                }
            }));
            if r % 5 == 0
                && let Some(t) = tasks.get(tasks.len().saturating_sub(2))
            {
                t.abort();
            }
            if i % 5 == 0 {
                tokio::time::sleep(ms(1)).await;
            }
        }
        clearer.await.unwrap();
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(ms(50)).await;
        let s = h.pool.stats();
        assert_eq!((s.waiting, s.in_use, s.pending), (0, 0, 0), "{s:?}");
        assert_eq!(h.mock().open(), s.available, "{s:?}");
        h.rec.check_consistency(true);
        // The run went through every path it is meant to.
        for reason in [
            CheckOutFailReason::Timeout,
            CheckOutFailReason::Cancelled,
            CheckOutFailReason::ConnectionError,
            CheckOutFailReason::PoolCleared,
        ] {
            assert!(h.failed_with(reason) > 0, "no {reason:?}");
        }
        assert!(h.rec.count(|e| matches!(e, PoolEvent::CheckedOut { .. })) > 50);
        h.pool.close();
        assert_eq!(h.mock().open(), 0);
    })
    .await;
}
