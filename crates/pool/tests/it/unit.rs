//! The pool's own rules: dedicated checkouts, generations and interruption, LIFO reuse,
//! idle pruning, minPoolSize filling, close, connect errors, event delivery.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use brook_pool::{
    CheckOutFailReason, CloseReason, Pool, PoolError, PoolEvent, PoolOptions, Pooled,
};

use crate::support::{Harness, MockManager, Recorder, Step, bounded, ms, options};

/// Resolves `f` within `limit` of tokio time?
async fn resolves<F: Future>(f: F, limit: Duration) -> bool {
    tokio::time::timeout(limit, f).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn dedicated_checkouts_do_not_count_against_max_pool_size() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(1).wait_queue_timeout(ms(50)));
        let normal = h.pool.check_out().await.unwrap();
        let dedicated = h.pool.check_out_dedicated().await.unwrap();
        assert!(dedicated.is_dedicated() && !normal.is_dedicated());
        assert_eq!((normal.id(), dedicated.id()), (1, 2));
        let s = h.pool.stats();
        assert_eq!((s.total, s.in_use, s.dedicated, s.available), (2, 1, 1, 0));
        // The pool is full for normal checkouts...
        let err = h.pool.check_out().await.unwrap_err();
        assert!(matches!(err, PoolError::Timeout { .. }), "{err:?}");
        // ...but not for dedicated ones.
        let second = h.pool.check_out_dedicated().await.unwrap();
        assert_eq!(second.id(), 3);
        assert_eq!(h.pool.stats().dedicated, 2);
        drop((normal, dedicated, second));
        h.rec.check_consistency(true);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dedicated_checkout_takes_an_idle_connection_out_of_the_accounting() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(2));
        drop(h.pool.check_out().await.unwrap());
        assert_eq!(h.pool.stats().available, 1);
        let dedicated = h.pool.check_out_dedicated().await.unwrap();
        assert_eq!(dedicated.id(), 1, "took the idle one");
        assert_eq!(h.mock().attempts(), 1);
        // Two normal connections fit beside it.
        let a = h.pool.check_out().await.unwrap();
        let b = h.pool.check_out().await.unwrap();
        let s = h.pool.stats();
        assert_eq!((s.total, s.in_use, s.dedicated), (3, 2, 1));
        // Checked in while the pool is full: closed as surplus.
        drop(dedicated);
        assert!(h.closed(1, CloseReason::Surplus));
        assert_eq!(h.pool.stats().total, 2);
        drop((a, b));
        h.rec.check_consistency(true);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dedicated_connection_checked_in_with_room_becomes_a_normal_one() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(2));
        let dedicated = h.pool.check_out_dedicated().await.unwrap();
        drop(dedicated);
        let s = h.pool.stats();
        assert_eq!((s.available, s.dedicated, s.total), (1, 0, 1));
        let normal = h.pool.check_out().await.unwrap();
        assert_eq!((normal.id(), normal.is_dedicated()), (1, false));
        assert_eq!(h.pool.stats().in_use, 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dedicated_checkout_respects_max_connecting_and_pause() {
    bounded(async move {
        let h = Harness::new(options().max_pool_size(1).max_connecting(1));
        let err = h.pool.check_out_dedicated().await.unwrap_err();
        assert!(
            matches!(err, PoolError::Cleared { generation: 0 }),
            "{err:?}"
        );
        h.pool.ready();
        h.mock().push([Step::Slow(ms(30))]);
        let first = h.spawn_check_out();
        h.settle().await;
        let t0 = tokio::time::Instant::now();
        let dedicated = h.pool.check_out_dedicated().await.unwrap();
        // It waited for the only max_connecting slot (the first checkout's 30 ms connect),
        // then had its own connect.
        assert!(t0.elapsed() >= ms(30));
        let first = first.await.unwrap().unwrap();
        assert_eq!((first.id(), dedicated.id()), (1, 2));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn generations_staleness_and_interruption() {
    bounded(async move {
        let h = Harness::ready(options());
        let a = h.pool.check_out().await.unwrap();
        assert_eq!((a.generation(), h.pool.generation()), (0, 0));
        assert!(!a.is_stale());
        let a_interrupted = a.interrupted();

        h.pool.clear(false);
        assert_eq!(h.pool.generation(), 1);
        assert!(a.is_stale());
        assert!(!h.pool.is_ready());
        let mut a_interrupted = Box::pin(a_interrupted);
        assert!(
            !resolves(&mut a_interrupted, ms(10)).await,
            "clear(false) does not interrupt"
        );

        // Clearing a paused pool bumps the generation (CMAP) but emits nothing.
        h.pool.clear(false);
        assert_eq!(h.pool.generation(), 2);
        assert_eq!(
            h.rec.count(|e| matches!(e, PoolEvent::PoolCleared { .. })),
            1
        );

        h.pool.ready();
        let b = h.pool.check_out().await.unwrap();
        assert_eq!(b.generation(), 2);
        assert!(!b.is_stale());
        h.pool.clear(true);
        assert!(resolves(&mut a_interrupted, ms(1)).await);
        assert!(resolves(b.interrupted(), ms(1)).await);
        assert!(
            resolves(a.interrupted(), ms(1)).await,
            "already interrupted: at once"
        );
        assert!(h.rec.events().contains(&PoolEvent::PoolCleared {
            interrupt_in_use: true,
            service_id: None,
        }));

        h.pool.ready();
        let c = h.pool.check_out().await.unwrap();
        assert_eq!(c.generation(), 3);
        let c_interrupted = c.interrupted();
        let mut c_interrupted = Box::pin(c_interrupted);
        assert!(!resolves(&mut c_interrupted, ms(10)).await);
        h.pool.close();
        assert!(c.is_stale());
        assert!(
            resolves(&mut c_interrupted, ms(1)).await,
            "close interrupts"
        );

        // Checked in to a closed pool: PoolClosed wins over Stale.
        drop((a, b, c));
        for id in 1..=3 {
            assert!(h.closed(id, CloseReason::PoolClosed));
        }
        h.rec.check_consistency(true);
    })
    .await;
}

/// Runs `body` to completion on a fresh current-thread runtime, outside any test runtime.
fn on_a_current_thread_runtime<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(body)
}

#[test]
fn pools_guards_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    on_a_current_thread_runtime(async {
        let pool = Pool::new(MockManager::new(), PoolOptions::default(), None);
        assert_send_sync(&pool);
        let checkout = pool.check_out();
        assert_send(&checkout);
        let dedicated = pool.check_out_dedicated();
        assert_send(&dedicated);
        pool.ready();
        let conn = checkout.await.unwrap();
        assert_send_sync(&conn);
        drop((conn, dedicated));
    });
}

#[test]
fn interrupted_is_send_and_static() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    on_a_current_thread_runtime(async {
        let pool = Pool::new(MockManager::new(), PoolOptions::default(), None);
        pool.ready();
        let conn = pool.check_out().await.unwrap();
        let fut = conn.interrupted();
        assert_send_static(&fut);
        drop(conn);
        pool.close();
        fut.await;
    });
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_reused_lifo() {
    bounded(async move {
        let h = Harness::ready(options());
        let c1 = h.pool.check_out().await.unwrap();
        let c2 = h.pool.check_out().await.unwrap();
        let c3 = h.pool.check_out().await.unwrap();
        drop(c1);
        drop(c3);
        drop(c2);
        assert_eq!(h.ids_of_checkouts(3).await, [2, 3, 1]);
        assert_eq!(h.mock().attempts(), 3);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_wait_queue_is_fifo() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(1));
        let first = h.pool.check_out().await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..5 {
            let pool = h.pool.clone();
            let served = Arc::clone(&served);
            tasks.push(tokio::spawn(async move {
                let conn = pool.check_out().await.unwrap();
                served.lock().unwrap().push(n);
                tokio::time::sleep(ms(1)).await;
                drop(conn);
            }));
            h.settle().await;
        }
        assert_eq!(h.pool.stats().waiting, 5);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), [0, 1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_idle_time_prunes_in_the_background() {
    bounded(async move {
        let h = Harness::ready(options().max_idle_time(ms(50)).maintenance_interval(ms(10)));
        let a = h.pool.check_out().await.unwrap();
        let b = h.pool.check_out().await.unwrap();
        // Runs at 10, 20, ... ms; checks between them. Idle means idle for more than 50 ms.
        drop(a);
        tokio::time::sleep(ms(35)).await;
        drop(b);
        tokio::time::sleep(ms(30)).await;
        // At 65 ms: a (idle 65 ms) pruned at 60; b (idle 30 ms) kept.
        assert!(h.closed(1, CloseReason::Idle));
        assert_eq!(h.pool.stats().available, 1);
        tokio::time::sleep(ms(40)).await;
        assert!(h.closed(2, CloseReason::Idle));
        assert_eq!(h.pool.stats().total, 0);
        assert_eq!(h.mock().open(), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn min_pool_size_is_filled_after_ready_and_after_clear_and_ready() {
    bounded(async move {
        let h = Harness::new(
            options()
                .min_pool_size(3)
                .max_connecting(2)
                .maintenance_interval(ms(10)),
        );
        tokio::time::sleep(ms(100)).await;
        assert_eq!(h.mock().attempts(), 0, "nothing while paused");
        h.pool.ready();
        assert_eq!(h.pool.stats().pending, 2, "max_connecting bounds the fill");
        h.settle().await;
        let s = h.pool.stats();
        assert_eq!((s.available, s.total), (3, 3));
        let ready_at = h.rec.position(|e| *e == PoolEvent::PoolReady).unwrap();
        let first_created = h
            .rec
            .position(|e| matches!(e, PoolEvent::ConnectionCreated { .. }))
            .unwrap();
        assert!(ready_at < first_created, "PoolReady comes before the fill");

        h.pool.clear(false);
        assert_eq!(h.pool.stats().total, 0);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(h.mock().attempts(), 3, "nothing while paused");
        h.pool.ready();
        h.settle().await;
        assert_eq!(h.pool.stats().available, 3);
        let ids = h.ids_of_checkouts(3).await;
        assert_eq!(ids.iter().copied().max(), Some(6));
        assert_eq!(h.mock().attempts(), 6);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn min_pool_fill_backs_off_after_a_failure_until_the_next_run() {
    bounded(async move {
        let h = Harness::new(options().min_pool_size(1).maintenance_interval(ms(100)));
        h.mock().set_default(Step::Fail);
        h.pool.ready();
        h.settle().await;
        assert_eq!(h.mock().attempts(), 1, "no retry storm");
        h.advance(ms(100)).await;
        assert_eq!(h.mock().attempts(), 2, "retried by the background run");
        h.mock().set_default(Step::Ok);
        h.advance(ms(100)).await;
        assert_eq!(h.pool.stats().available, 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn close_semantics() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(2).max_connecting(2));
        let idle = h.pool.check_out().await.unwrap();
        let in_use = h.pool.check_out().await.unwrap();
        drop(idle);

        h.pool.close();
        h.pool.close();
        assert!(h.pool.is_closed() && !h.pool.is_ready());
        assert!(h.closed(1, CloseReason::PoolClosed));
        assert_eq!(
            h.rec.count(|e| *e == PoolEvent::PoolClosed),
            1,
            "idempotent"
        );
        assert!(in_use.is_stale());
        drop(in_use);
        assert!(h.closed(2, CloseReason::PoolClosed));

        assert!(matches!(h.pool.check_out().await, Err(PoolError::Closed)));
        assert!(matches!(
            h.pool.check_out_dedicated().await,
            Err(PoolError::Closed)
        ));
        assert_eq!(h.failed_with(CheckOutFailReason::PoolClosed), 2);
        let generation = h.pool.generation();
        h.pool.ready();
        h.pool.clear(true);
        assert!(h.pool.is_closed());
        assert_eq!(
            h.pool.generation(),
            generation,
            "clear of a closed pool is a no-op"
        );
        assert_eq!(h.pool.stats(), Default::default());
        assert_eq!(h.mock().open(), 0);
        h.rec.check_consistency(true);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn close_aborts_establishments() {
    bounded(async move {
        let h = Harness::ready(options());
        h.mock().set_default(Step::Hang);
        let waiter = h.spawn_check_out();
        h.settle().await;
        assert_eq!(h.pool.stats().pending, 1);
        h.pool.close();
        assert!(matches!(waiter.await.unwrap(), Err(PoolError::Closed)));
        assert_eq!(h.pool.stats().pending, 0);
        assert!(h.closed(1, CloseReason::PoolClosed));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn clear_fails_waiters_and_closes_available_connections() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(2));
        let held = h.pool.check_out().await.unwrap();
        drop(h.pool.check_out().await.unwrap());
        let _full = h.pool.check_out().await.unwrap();
        let waiter = h.spawn_check_out();
        h.settle().await;
        h.pool.clear(false);
        assert!(matches!(
            waiter.await.unwrap(),
            Err(PoolError::Cleared { generation: 1 })
        ));
        assert!(matches!(
            h.pool.check_out().await,
            Err(PoolError::Cleared { generation: 1 })
        ));
        assert_eq!(h.failed_with(CheckOutFailReason::PoolCleared), 2);
        drop(held);
        assert!(h.closed(1, CloseReason::Stale));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_error_fails_the_checkout_that_started_it_and_may_clear_the_pool() {
    bounded(async move {
        let h = Harness::ready(options().max_connecting(1));
        h.mock().push([Step::SlowFail(ms(10))]);
        let first = h.spawn_check_out();
        h.settle().await;
        let second = h.spawn_check_out();
        h.settle().await;
        assert_eq!(h.pool.stats().waiting, 2);
        assert!(matches!(first.await.unwrap(), Err(PoolError::Connect(_))));
        // The second one (blocked by max_connecting) then starts its own, successful, connect.
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.id(), 2);

        // With a manager that clears on error: PoolCleared comes before ConnectionClosed, the
        // failing checkout sees the connect error, the others the cleared error.
        h.mock().clear_on_error.store(true, Ordering::SeqCst);
        h.mock().push([Step::SlowFail(ms(10))]);
        let a = h.spawn_check_out();
        h.settle().await;
        let b = h.spawn_check_out();
        h.settle().await;
        assert!(matches!(a.await.unwrap(), Err(PoolError::Connect(_))));
        assert!(matches!(
            b.await.unwrap(),
            Err(PoolError::Cleared { generation: 1 })
        ));
        let events = h.rec.events();
        let cleared = events
            .iter()
            .position(|e| matches!(e, PoolEvent::PoolCleared { .. }));
        let closed3 = events.iter().position(|e| {
            *e == PoolEvent::ConnectionClosed {
                connection_id: 3,
                reason: CloseReason::Error,
            }
        });
        assert!(cleared.is_some() && cleared < closed3, "{events:#?}");
        assert!(!h.pool.is_ready());
        drop(second);
        h.rec.check_consistency(true);
    })
    .await;
}

/// A checkout blocked by `max_connecting` takes a connection checked in meanwhile, not
/// one being established for another checkout (CMAP).
#[tokio::test(start_paused = true)]
async fn a_checkout_blocked_by_max_connecting_takes_a_checked_in_connection() {
    bounded(async move {
        let h = Harness::ready(options().max_connecting(1));
        let held = h.pool.check_out().await.unwrap();
        h.mock().push([Step::Slow(ms(100))]);
        let establishing = h.spawn_check_out();
        h.settle().await;
        let blocked = h.spawn_check_out();
        h.settle().await;
        drop(held);
        let blocked = blocked.await.unwrap().unwrap();
        assert_eq!(blocked.id(), 1);
        assert!(!establishing.is_finished());
        assert_eq!(establishing.await.unwrap().unwrap().id(), 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn broken_idle_connections_are_not_handed_out() {
    bounded(async move {
        let h = Harness::ready(options());
        let conn = h.pool.check_out().await.unwrap();
        let flag = Arc::clone(&conn.broken);
        drop(conn);
        flag.store(true, Ordering::SeqCst);
        let next = h.pool.check_out().await.unwrap();
        assert_eq!(next.id(), 2);
        assert!(h.closed(1, CloseReason::Error));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn discard_emits_checked_in_then_closes_with_error() {
    bounded(async move {
        let h = Harness::ready(options());
        let conn = h.pool.check_out().await.unwrap();
        conn.discard();
        let events = h.rec.events();
        let tail = &events[events.len() - 2..];
        assert_eq!(
            tail,
            [
                PoolEvent::CheckedIn { connection_id: 1 },
                PoolEvent::ConnectionClosed {
                    connection_id: 1,
                    reason: CloseReason::Error
                }
            ]
        );
        assert_eq!(h.pool.stats().total, 0);
        assert_eq!(h.mock().open(), 0);
    })
    .await;
}

/// The handler runs without the pool's lock: it may call into the pool, even clear it.
#[tokio::test(start_paused = true)]
async fn the_event_handler_may_call_into_the_pool() {
    bounded(async move {
        let cell: Arc<OnceLock<Pool<MockManager>>> = Arc::default();
        let seen = Recorder::default();
        let inner = seen.handler();
        let handler_cell = Arc::clone(&cell);
        let handler = Arc::new(move |e: &PoolEvent| {
            inner(e);
            if let Some(pool) = handler_cell.get() {
                let _ = pool.stats();
                if matches!(e, PoolEvent::CheckedIn { .. }) {
                    pool.clear(false);
                }
            }
        });
        let pool = Pool::new(MockManager::new(), PoolOptions::default(), Some(handler));
        cell.set(pool.clone()).unwrap();
        pool.ready();
        let conn = pool.check_out().await.unwrap();
        drop(conn);
        assert!(!pool.is_ready());
        let events = seen.events();
        assert_eq!(
            events[events.len() - 3..],
            [
                PoolEvent::CheckedIn { connection_id: 1 },
                PoolEvent::PoolCleared {
                    interrupt_in_use: false,
                    service_id: None,
                },
                PoolEvent::ConnectionClosed {
                    connection_id: 1,
                    reason: CloseReason::Stale
                },
            ]
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn guards_outlive_the_pool_handles() {
    bounded(async move {
        let h = Harness::ready(options());
        let conn: Pooled<MockManager> = h.pool.check_out().await.unwrap();
        let rec = h.rec.clone();
        drop(h);
        assert_eq!(conn.id(), 1);
        drop(conn);
        assert!(
            rec.events()
                .contains(&PoolEvent::CheckedIn { connection_id: 1 })
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn connection_ids_follow_creation_order_across_clears() {
    bounded(async move {
        let h = Harness::ready(options());
        let a = h.pool.check_out().await.unwrap();
        h.pool.clear(false);
        h.pool.ready();
        let b = h.pool.check_out().await.unwrap();
        assert_eq!((a.id(), b.id()), (1, 2));
        assert!(a.is_stale() && !b.is_stale());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn debug_output_names_no_connection() {
    bounded(async move {
        let h = Harness::ready(options());
        let conn = h.pool.check_out().await.unwrap();
        let pooled = format!("{conn:?}");
        assert!(
            pooled.contains("id: 1") && pooled.contains("generation: 0"),
            "{pooled}"
        );
        let pool = format!("{:?}", h.pool);
        assert!(pool.contains("in_use: 1"), "{pool}");
    })
    .await;
}

/// The background task and hung establishments end with the pool: on close, and when the
/// last handle and guard are dropped.
#[tokio::test(start_paused = true)]
async fn closing_or_dropping_the_pool_ends_its_tasks() {
    bounded(async move {
        let alive = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let base = alive();
        for close in [true, false] {
            let h = Harness::ready(options());
            h.mock().set_default(Step::Hang);
            let live = h.mock().live_connects();
            let checkout = h.spawn_check_out();
            h.settle().await;
            assert_eq!(live.load(Ordering::SeqCst), 1);
            assert_eq!(
                alive(),
                base + 3,
                "background task, establishment, checkout"
            );
            if close {
                h.pool.close();
                assert!(matches!(checkout.await.unwrap(), Err(PoolError::Closed)));
                tokio::time::sleep(ms(1)).await;
                assert_eq!(alive(), base, "close ends the tasks while handles remain");
            } else {
                checkout.abort();
                let _ = checkout.await;
            }
            drop(h);
            tokio::time::sleep(ms(1)).await;
            assert_eq!(live.load(Ordering::SeqCst), 0, "close = {close}");
            assert_eq!(alive(), base, "close = {close}");
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn clearing_a_service_makes_only_its_connections_stale() {
    bounded(async move {
        let h = Harness::ready(options());
        h.mock().services.store(2, Ordering::SeqCst);
        // Connections 1 and 3 belong to service [1; 12], 2 and 4 to [0; 12].
        let conns: Vec<_> = [
            h.pool.check_out().await.unwrap(),
            h.pool.check_out().await.unwrap(),
            h.pool.check_out().await.unwrap(),
            h.pool.check_out().await.unwrap(),
        ]
        .into();
        let services: Vec<_> = conns.iter().map(|c| c.service_id()).collect();
        assert_eq!(
            services,
            [Some([1; 12]), Some([0; 12]), Some([1; 12]), Some([0; 12])]
        );
        let mut conns = conns.into_iter();
        let (c1, c2, c3, c4) = (
            conns.next().unwrap(),
            conns.next().unwrap(),
            conns.next().unwrap(),
            conns.next().unwrap(),
        );
        // c3 and c4 idle; c1 and c2 in use.
        drop((c3, c4));
        h.pool.clear_service([1; 12], false);
        assert!(h.pool.is_ready(), "a service clear does not pause the pool");
        assert!(h.rec.events().contains(&PoolEvent::PoolCleared {
            interrupt_in_use: false,
            service_id: Some([1; 12]),
        }));
        assert!(
            h.closed(3, CloseReason::Stale),
            "the idle one of the service"
        );
        assert!(
            !h.closed(4, CloseReason::Stale),
            "the other service is untouched"
        );
        assert!(c1.is_stale() && !c2.is_stale());
        assert_eq!(h.pool.generation(), 0);
        drop(c1);
        assert!(h.closed(1, CloseReason::Stale), "closed when checked in");
        drop(c2);
        assert_eq!(h.pool.stats().available, 2, "connections 2 and 4 are kept");
        // A new connection of the cleared service is fresh.
        let again: Vec<_> = [
            h.pool.check_out().await.unwrap(),
            h.pool.check_out().await.unwrap(),
        ]
        .into();
        assert!(again.iter().all(|c| !c.is_stale()));
        let fresh = h.pool.check_out().await.unwrap();
        assert_eq!(fresh.service_id(), Some([1; 12]));
        assert!(!fresh.is_stale());
        drop((again, fresh));
        h.rec.check_consistency(true);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_checkout_until_a_deadline_ignores_wait_queue_timeout() {
    bounded(async move {
        let h = Harness::ready(options().max_pool_size(1).wait_queue_timeout(ms(50)));
        let held = h.pool.check_out().await.unwrap();
        // The deadline, not waitQueueTimeoutMS, bounds the wait: 200 ms, not 50.
        let started = tokio::time::Instant::now();
        let deadline = started + ms(200);
        let err = h.pool.check_out_until(Some(deadline)).await.unwrap_err();
        assert!(matches!(err, PoolError::Timeout { .. }), "{err:?}");
        assert_eq!(started.elapsed(), ms(200));
        // A dedicated checkout does not wait for room: it establishes one in time.
        let soon = tokio::time::Instant::now() + ms(200);
        let dedicated = h.pool.check_out_dedicated_until(Some(soon)).await;
        assert!(dedicated.is_ok_and(|c| c.is_dedicated()));
        // An expired deadline fails at once; no deadline waits as long as it takes.
        let err = h.pool.check_out_until(Some(started)).await.unwrap_err();
        assert!(matches!(err, PoolError::Timeout { .. }), "{err:?}");
        let pool = h.pool.clone();
        let waiter = tokio::spawn(async move { pool.check_out_until(None).await.map(drop) });
        tokio::time::sleep(ms(1000)).await;
        assert!(
            !waiter.is_finished(),
            "no deadline: still waiting after 1 s"
        );
        drop(held);
        assert!(resolves(waiter, ms(100)).await);
        h.rec.check_consistency(true);
    })
    .await;
}
