//! The measuring code of the bench clients. `brook-bench` (brook and the socket floors)
//! and `benches/compare`'s `compare-bench` (the official driver) both time their streams
//! with these functions, so every client is measured by the very same loop: only the
//! [`Source`] differs.
#![forbid(unsafe_code)]

use std::alloc::System;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use stats_alloc::{Region, StatsAlloc};

/// The error of a bench client.
pub type BoxError = Box<dyn std::error::Error>;

/// How long a scenario runs before measuring starts.
pub const WARM_UP: Duration = Duration::from_millis(300);

/// One client's stream, stepped by the measuring loops.
// The loops run on one thread (a current-thread runtime, a LocalSet): the futures need
// not be Send, so a plain `async fn` is the right signature.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// Waits for the next batch; returns how many events it held.
    async fn step(&mut self) -> Result<u64, BoxError>;
    /// One idle round trip (an empty getMore); returns how many events came back.
    async fn step_idle(&mut self) -> Result<u64, BoxError>;
}

/// A histogram of nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// CPU time of every thread of this process so far, in ns (0 where /proc has none).
pub fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A `kB` field of `/proc/self/status` (e.g. `"VmHWM:"`), 0 when absent.
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The percentiles `cargo xtask bench` reads, and the distribution it plots.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    let dist: Vec<String> = [
        0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
    ]
    .iter()
    .map(|p| format!("{p}:{}", h.value_at_quantile(p / 100.0)))
    .collect();
    json!({
        "p50_ns": h.value_at_quantile(0.50),
        "p90_ns": h.value_at_quantile(0.90),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "max_ns": h.max(),
        "mean_ns": h.mean(),
        "dist": dist.join(";"),
    })
}

/// Adds the fields of `more` to the object `into`.
pub fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, more) {
        a.extend(b);
    }
}

fn record_since(hist: &mut Histogram<u64>, last: &mut Instant) -> Result<Instant, BoxError> {
    let now = Instant::now();
    hist.record(
        u64::try_from((now - *last).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1),
    )?;
    *last = now;
    Ok(now)
}

/// One stream, step after step (`idle`: [`Source::step_idle`]) for `seconds` after
/// [`WARM_UP`]: the time of each step, events/s, allocations (counted by `alloc`, the
/// binary's global allocator) and CPU per step, peak RSS.
pub async fn single<S: Source>(
    source: &mut S,
    seconds: f64,
    idle: bool,
    alloc: &'static StatsAlloc<System>,
) -> Result<Value, BoxError> {
    let warm = Instant::now();
    while warm.elapsed() < WARM_UP {
        if idle {
            source.step_idle().await?;
        } else {
            source.step().await?;
        }
    }
    let mut hist = histogram()?;
    let budget = Duration::from_secs_f64(seconds);
    let (mut events, mut steps) = (0u64, 0u64);
    let cpu0 = cpu_ns();
    let region = Region::new(alloc);
    let start = Instant::now();
    let mut last = start;
    loop {
        let got = if idle {
            source.step_idle().await?
        } else {
            source.step().await?
        };
        let now = record_since(&mut hist, &mut last)?;
        events += got;
        steps += 1;
        if now - start >= budget {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allocs = region.change();
    let cpu = cpu_ns().saturating_sub(cpu0);
    let per_event = |n: u64| {
        if events == 0 {
            Value::Null
        } else {
            json!(n as f64 / events as f64)
        }
    };
    let mut out = json!({
        "events": events,
        "steps": steps,
        "seconds": elapsed,
        "events_per_s": events as f64 / elapsed,
        "steps_per_s": steps as f64 / elapsed,
        "allocs_per_event": per_event((allocs.allocations + allocs.reallocations) as u64),
        "alloc_bytes_per_event": per_event(allocs.bytes_allocated as u64),
        "allocs_per_step": (allocs.allocations + allocs.reallocations) as f64 / steps as f64,
        "cpu_ns_per_step": cpu as f64 / steps as f64,
        "vm_hwm_kb": status_kb("VmHWM:"),
    });
    merge(&mut out, percentiles(&hist));
    Ok(out)
}

/// Every source in its own task on one `LocalSet`, stepping for `seconds` after a
/// common [`WARM_UP`]: total events/s and the latency of every step of every stream.
/// Must run inside a tokio runtime.
pub async fn concurrent<S: Source + 'static>(
    sources: Vec<S>,
    seconds: f64,
) -> Result<Value, BoxError> {
    let streams = sources.len();
    let budget = Duration::from_secs_f64(seconds);
    let local = tokio::task::LocalSet::new();
    let warm_until = Instant::now() + WARM_UP;
    let start = Rc::new(warm_until);
    let mut tasks = Vec::new();
    for mut source in sources {
        let start = Rc::clone(&start);
        tasks.push(local.spawn_local(async move {
            let mut hist = histogram()?;
            let mut events = 0u64;
            while Instant::now() < *start {
                source.step().await?;
            }
            let begin = *start;
            let mut last = Instant::now();
            loop {
                let got = source.step().await?;
                let now = record_since(&mut hist, &mut last)?;
                events += got;
                if now - begin >= budget {
                    break;
                }
            }
            Ok::<_, BoxError>((hist, events, source))
        }));
    }
    let results = local
        .run_until(async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        })
        .await;
    let elapsed = (Instant::now() - warm_until).as_secs_f64();
    let mut hist = histogram()?;
    let mut events = 0u64;
    for r in results {
        let (h, n, _source) = r.map_err(|e| format!("a stream task failed: {e}"))??;
        hist.add(h)?;
        events += n;
    }
    let mut out = json!({
        "streams": streams,
        "events": events,
        "seconds": elapsed,
        "events_per_s": events as f64 / elapsed,
    });
    merge(&mut out, percentiles(&hist));
    Ok(out)
}

/// The memory report of the idle-streams scenario: `opened` streams open and waiting,
/// `rss_before_kb` the resident size before the client was made.
pub fn idle_rss_report(rss_before_kb: u64, opened: usize) -> Value {
    let rss = status_kb("VmRSS:");
    json!({
        "streams": opened,
        "vm_rss_kb": rss,
        "vm_hwm_kb": status_kb("VmHWM:"),
        "rss_before_kb": rss_before_kb,
        "kb_per_stream": rss.saturating_sub(rss_before_kb) as f64 / opened.max(1) as f64,
    })
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`): the clock the failover bench's
/// harness and its client process share, to date a failover and an event's arrival.
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Ends the process (status 0) once its standard input closes: how the failover bench's
/// harness stops a client whose stream would tail forever.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _read = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// What a failover-bench client prints, one line each (to standard output, flushed):
/// `ready` once its change stream is open, `ev N T` for the event whose
/// `fullDocument.n` is `N`, received at [`unix_ns`] `T`, and `err T MESSAGE` for an error
/// the stream handed to the application (the client then reopens it after its last
/// resume token, the same way for every driver).
pub mod failover_line {
    use std::io::Write;

    fn put(line: std::fmt::Arguments<'_>) {
        let mut out = std::io::stdout().lock();
        let _written = out.write_fmt(line);
        let _newline = out.write_all(b"\n");
        let _flushed = out.flush();
    }

    /// The stream is open.
    pub fn ready() {
        put(format_args!("ready"));
    }

    /// Event `n` arrived now (`None`: an event without `fullDocument.n`, printed as -1).
    pub fn event(n: Option<i64>) {
        put(format_args!("ev {} {}", n.unwrap_or(-1), super::unix_ns()));
    }

    /// The stream failed with `error` now.
    pub fn error(error: &dyn std::fmt::Display) {
        let message = error.to_string().replace('\n', " ");
        put(format_args!("err {} {message}", super::unix_ns()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_merge_adds_fields() {
        let mut h = histogram().unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h);
        let get = |k: &str| p[k].as_u64().unwrap();
        assert!(get("p50_ns") <= get("p90_ns") && get("p90_ns") <= get("p99_ns"));
        assert!(get("p99_ns") <= get("max_ns"));
        let mut out = json!({ "events": 3 });
        merge(&mut out, p);
        assert_eq!(out["events"], 3);
        assert!(out.get("p50_ns").is_some());
    }

    struct Counter(u64);

    impl Source for Counter {
        async fn step(&mut self) -> Result<u64, BoxError> {
            self.0 += 1;
            tokio::task::yield_now().await;
            Ok(2)
        }
        async fn step_idle(&mut self) -> Result<u64, BoxError> {
            tokio::task::yield_now().await;
            Ok(0)
        }
    }

    #[test]
    fn concurrent_sums_the_events_of_every_stream() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt
            .block_on(concurrent(vec![Counter(0), Counter(0)], 0.05))
            .unwrap();
        assert_eq!(out["streams"], 2);
        assert!(out["events"].as_u64().unwrap() >= 2);
        assert_eq!(out["events"].as_u64().unwrap() % 2, 0);
    }
}
