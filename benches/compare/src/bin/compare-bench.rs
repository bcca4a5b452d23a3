//! `compare-bench`: the official `mongodb` driver (3.x) doing what `brook-bench` does, against
//! the same replay server, printing the same JSON line.
//!
//! ```text
//! compare-bench --client official-typed|official-raw --scenario stream|idle|concurrent|idle-rss
//!               --uri URI [--seconds F] [--streams N] [--batch-size N]
//! ```
//!
//! * `official-typed`: `Collection<Order>::watch()`, events as `ChangeStreamEvent<Order>`;
//! * `official-raw`: the same stream `.with_type::<RawDocumentBuf>()`.
//!
//! The URI gets `serverMonitoringMode=poll` (the replay server answers an awaitable hello
//! only after its wait, so polling keeps monitoring off the measured path) and, for the
//! concurrent scenarios, `maxPoolSize` large enough for one connection per stream (the
//! driver checks a connection out per getMore; its default pool of 10 would make 100
//! streams queue). Everything else is the driver's default.

use std::alloc::System;
use std::hint::black_box;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use mongodb::bson::RawDocumentBuf;
use mongodb::bson::oid::ObjectId;
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ChangeStreamEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type BoxError = Box<dyn std::error::Error>;

const WARM_UP: Duration = Duration::from_millis(300);
const DB: &str = "shop";
const COLL: &str = "orders";

/// The order a change event's `fullDocument` holds (the same type brook-bench uses).
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct Order {
    #[serde(rename = "_id")]
    id: ObjectId,
    customer: String,
    total: f64,
    #[serde(default)]
    items: Vec<OrderLine>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct OrderLine {
    sku: String,
    qty: i32,
    price: f64,
}

struct Args {
    raw: bool,
    scenario: String,
    uri: String,
    seconds: f64,
    streams: usize,
    batch_size: Option<u32>,
}

fn parse_args() -> Result<Args, BoxError> {
    use lexopt::prelude::*;
    let mut args = Args {
        raw: false,
        scenario: String::new(),
        uri: String::new(),
        seconds: 2.0,
        streams: 1,
        batch_size: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("client") => {
                args.raw = match parser.value()?.string()?.as_str() {
                    "official-typed" => false,
                    "official-raw" => true,
                    other => return Err(format!("unknown client `{other}`").into()),
                }
            }
            Long("scenario") => args.scenario = parser.value()?.string()?,
            Long("uri") => args.uri = parser.value()?.string()?,
            Long("seconds") => args.seconds = parser.value()?.parse()?,
            Long("streams") => args.streams = parser.value()?.parse()?,
            Long("batch-size") => args.batch_size = Some(parser.value()?.parse()?),
            Long("events") => {
                let _ = parser.value()?;
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(args)
}

fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentiles(h: &Histogram<u64>) -> Value {
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

fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, more) {
        a.extend(b);
    }
}

enum Source {
    Typed(ChangeStream<ChangeStreamEvent<Order>>),
    Raw(ChangeStream<RawDocumentBuf>),
}

impl Source {
    async fn open(client: &mongodb::Client, args: &Args) -> Result<Source, BoxError> {
        let coll = client.database(DB).collection::<Order>(COLL);
        let mut watch = coll.watch().max_await_time(Duration::from_secs(1));
        if let Some(n) = args.batch_size {
            watch = watch.batch_size(n);
        }
        let stream = watch.await?;
        Ok(if args.raw {
            Source::Raw(stream.with_type::<RawDocumentBuf>())
        } else {
            Source::Typed(stream)
        })
    }

    async fn step(&mut self) -> Result<u64, BoxError> {
        match self {
            Source::Typed(s) => match s.next().await {
                Some(Ok(e)) => {
                    black_box(e);
                    Ok(1)
                }
                Some(Err(e)) => Err(e.into()),
                None => Err("the stream ended".into()),
            },
            Source::Raw(s) => match s.next().await {
                Some(Ok(e)) => {
                    black_box(e);
                    Ok(1)
                }
                Some(Err(e)) => Err(e.into()),
                None => Err("the stream ended".into()),
            },
        }
    }

    async fn step_idle(&mut self) -> Result<u64, BoxError> {
        match self {
            Source::Typed(s) => Ok(u64::from(black_box(s.next_if_any().await?).is_some())),
            Source::Raw(s) => Ok(u64::from(black_box(s.next_if_any().await?).is_some())),
        }
    }
}

async fn client(args: &Args, pool: usize) -> Result<mongodb::Client, BoxError> {
    let sep = if args.uri.contains('?') { '&' } else { '?' };
    let uri = format!(
        "{}{sep}serverMonitoringMode=poll&maxPoolSize={}",
        args.uri,
        pool.max(10)
    );
    Ok(mongodb::Client::with_uri_str(&uri).await?)
}

async fn single(args: &Args, idle: bool) -> Result<Value, BoxError> {
    let client = client(args, 10).await?;
    let mut source = Source::open(&client, args).await?;
    let warm = Instant::now();
    while warm.elapsed() < WARM_UP {
        if idle {
            source.step_idle().await?;
        } else {
            source.step().await?;
        }
    }
    let mut hist = histogram()?;
    let budget = Duration::from_secs_f64(args.seconds);
    let (mut events, mut steps) = (0u64, 0u64);
    let cpu0 = cpu_ns();
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    let mut last = start;
    loop {
        let got = if idle {
            source.step_idle().await?
        } else {
            source.step().await?
        };
        let now = Instant::now();
        hist.record(
            u64::try_from((now - last).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
        last = now;
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

async fn concurrent(args: &Args) -> Result<Value, BoxError> {
    let client = client(args, args.streams).await?;
    let mut sources = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        sources.push(Source::open(&client, args).await?);
    }
    let budget = Duration::from_secs_f64(args.seconds);
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
                let now = Instant::now();
                hist.record(
                    u64::try_from((now - last).as_nanos())
                        .unwrap_or(u64::MAX)
                        .max(1),
                )?;
                last = now;
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
        "streams": args.streams,
        "events": events,
        "seconds": elapsed,
        "events_per_s": events as f64 / elapsed,
    });
    merge(&mut out, percentiles(&hist));
    Ok(out)
}

async fn idle_rss(args: &Args) -> Result<Value, BoxError> {
    let rss_before = status_kb("VmRSS:");
    let client = client(args, args.streams).await?;
    let local = tokio::task::LocalSet::new();
    let opened = local
        .run_until(async {
            let mut handles = Vec::new();
            for _ in 0..args.streams {
                let mut source = Source::open(&client, args).await?;
                handles.push(tokio::task::spawn_local(async move {
                    while source.step().await.is_ok() {}
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            Ok::<_, BoxError>(handles.len())
        })
        .await?;
    let rss = status_kb("VmRSS:");
    Ok(json!({
        "streams": opened,
        "vm_rss_kb": rss,
        "vm_hwm_kb": status_kb("VmHWM:"),
        "rss_before_kb": rss_before,
        "kb_per_stream": rss.saturating_sub(rss_before) as f64 / opened.max(1) as f64,
    }))
}

async fn run(args: &Args) -> Result<Value, BoxError> {
    match args.scenario.as_str() {
        "stream" => single(args, false).await,
        "idle" => single(args, true).await,
        "concurrent" => concurrent(args).await,
        "idle-rss" => idle_rss(args).await,
        other => Err(format!("unknown scenario `{other}`").into()),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client_name = if args.raw {
        "official-raw"
    } else {
        "official-typed"
    };
    match runtime.block_on(run(&args)) {
        Ok(mut value) => {
            merge(
                &mut value,
                json!({ "client": client_name, "scenario": args.scenario }),
            );
            println!("{value}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("compare-bench: {client_name} {}: {e}", args.scenario);
            ExitCode::FAILURE
        }
    }
}
