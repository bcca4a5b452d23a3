//! `brook-bench`: one client of one scenario of `cargo xtask bench`, printing one JSON line.
//!
//! ```text
//! brook-bench --client C --scenario S [--uri URI] [--seconds F] [--events N] [--streams N]
//!             [--batch-size N] [--count N] [--resume-after DATA] [--db D] [--coll C]
//! ```
//!
//! Clients:
//!
//! * `floor-tokio`: a tokio `TcpStream` sending a pre-encoded getMore and reading the reply
//!   frame (length prefix, then the rest) with no BSON work at all;
//! * `floor-std`: the same on blocking `std::net` sockets (single-stream scenarios);
//! * `brook-typed`: brook's `ChangeStream<ChangeStreamEvent<Order>>` (serde into a struct);
//! * `brook-raw`: brook's `ChangeStream<RawChangeEvent>` (each event a slice of the reply);
//! * `brook-doc`: brook's `ChangeStream<ChangeStreamEvent<Document>>` (what a dynamic
//!   consumer, e.g. pymongo's dicts, gets; used end to end, where nx-27017's events do
//!   not hold `Order`s: it writes ObjectIds in a shape of its own).
//!
//! Scenarios:
//!
//! * `stream`: one stream, one event (or one round trip for a floor) after another for
//!   `--seconds`: latency percentiles per step, events/s, allocations per event;
//! * `idle`: one stream whose getMores come back empty (`next_if_any` for brook): CPU
//!   time per idle round trip (from `/proc/self/task/*/schedstat`), latency;
//! * `concurrent`: `--streams` streams on one client (one task each): total events/s,
//!   latency percentiles across all of them;
//! * `idle-rss`: `--streams` open streams waiting on held getMores: resident memory;
//! * `e2e`: consume `--count` events of `--db.--coll` from a real server (brook only),
//!   resuming after the token `{_data: DATA}`;
//! * `decode`: no server: decoding getMore reply frames (100 × ~300 B and 1,000 × ~2 KB)
//!   in bytes/s, next to a plain copy of the same bytes.
//!
//! Allocations are counted by a counting global allocator (`stats_alloc`) for the whole
//! process (every thread) between the start and the end of the measured phase.
#![forbid(unsafe_code)]

use std::alloc::System;
use std::hint::black_box;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use brook::{ChangeStream, ChangeStreamEvent, RawChangeEvent, ResumeToken};
use brook_benches::{
    COLL, CURSOR_ID, DB, LARGE_EVENT, Order, SMALL_EVENT, decode_get_more,
    get_more_reply_frame_sized, get_more_request_frame,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type BoxError = Box<dyn std::error::Error>;

/// How long a single-stream run warms up before it measures.
const WARM_UP: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    FloorTokio,
    FloorStd,
    BrookTyped,
    BrookRaw,
    BrookDoc,
}

impl ClientKind {
    fn parse(s: &str) -> Option<ClientKind> {
        Some(match s {
            "floor-tokio" => ClientKind::FloorTokio,
            "floor-std" => ClientKind::FloorStd,
            "brook-typed" => ClientKind::BrookTyped,
            "brook-raw" => ClientKind::BrookRaw,
            "brook-doc" => ClientKind::BrookDoc,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            ClientKind::FloorTokio => "floor-tokio",
            ClientKind::FloorStd => "floor-std",
            ClientKind::BrookTyped => "brook-typed",
            ClientKind::BrookRaw => "brook-raw",
            ClientKind::BrookDoc => "brook-doc",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    client: ClientKind,
    scenario: String,
    uri: String,
    seconds: f64,
    events: u64,
    streams: usize,
    batch_size: Option<u32>,
    count: u64,
    resume_after: Option<String>,
    db: String,
    coll: String,
}

fn parse_args() -> Result<Args, BoxError> {
    use lexopt::prelude::*;
    let mut client = None;
    let mut args = Args {
        client: ClientKind::FloorTokio,
        scenario: String::new(),
        uri: String::new(),
        seconds: 2.0,
        events: 1,
        streams: 1,
        batch_size: None,
        count: 10_000,
        resume_after: None,
        db: DB.to_owned(),
        coll: COLL.to_owned(),
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("client") => {
                let v = parser.value()?.string()?;
                client = Some(ClientKind::parse(&v).ok_or(format!("unknown client `{v}`"))?);
            }
            Long("scenario") => args.scenario = parser.value()?.string()?,
            Long("uri") => args.uri = parser.value()?.string()?,
            Long("seconds") => args.seconds = parser.value()?.parse()?,
            Long("events") => args.events = parser.value()?.parse()?,
            Long("streams") => args.streams = parser.value()?.parse()?,
            Long("batch-size") => args.batch_size = Some(parser.value()?.parse()?),
            Long("count") => args.count = parser.value()?.parse()?,
            Long("resume-after") => args.resume_after = Some(parser.value()?.string()?),
            Long("db") => args.db = parser.value()?.string()?,
            Long("coll") => args.coll = parser.value()?.string()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    if args.scenario != "decode" {
        args.client = client.ok_or("--client is required")?;
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Measures
// ---------------------------------------------------------------------------------------

fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// CPU time of every thread of this process, in nanoseconds.
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

/// A `/proc/self/status` field in kB (`VmHWM`, `VmRSS`).
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

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// `host:port` of a `mongodb://host:port/...` URI.
fn host_port(uri: &str) -> Result<String, BoxError> {
    let rest = uri
        .strip_prefix("mongodb://")
        .ok_or("not a mongodb:// URI")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Ok(rest.get(..end).ok_or("bad URI")?.to_owned())
}

/// A plain tokio socket doing getMore round trips with no BSON work.
struct FloorTokio {
    socket: tokio::net::TcpStream,
    request: Bytes,
    buf: Vec<u8>,
    events: u64,
}

impl FloorTokio {
    async fn connect(args: &Args) -> Result<FloorTokio, BoxError> {
        let socket = tokio::net::TcpStream::connect(host_port(&args.uri)?).await?;
        socket.set_nodelay(true)?;
        Ok(FloorTokio {
            socket,
            request: get_more_request_frame(CURSOR_ID)?,
            buf: Vec::new(),
            events: args.events,
        })
    }

    async fn round_trip(&mut self) -> Result<u64, BoxError> {
        self.socket.write_all(&self.request).await?;
        let mut len = [0u8; 4];
        self.socket.read_exact(&mut len).await?;
        let total = usize::try_from(i32::from_le_bytes(len))?;
        let rest = total
            .checked_sub(4)
            .ok_or("frame shorter than its length")?;
        if self.buf.len() < rest {
            self.buf.resize(rest, 0);
        }
        let body = self.buf.get_mut(..rest).ok_or("buffer")?;
        self.socket.read_exact(body).await?;
        Ok(self.events)
    }
}

/// The same floor on blocking std sockets.
struct FloorStd {
    socket: std::net::TcpStream,
    request: Bytes,
    buf: Vec<u8>,
    events: u64,
}

impl FloorStd {
    fn connect(args: &Args) -> Result<FloorStd, BoxError> {
        let socket = std::net::TcpStream::connect(host_port(&args.uri)?)?;
        socket.set_nodelay(true)?;
        Ok(FloorStd {
            socket,
            request: get_more_request_frame(CURSOR_ID)?,
            buf: Vec::new(),
            events: args.events,
        })
    }

    fn round_trip(&mut self) -> Result<u64, BoxError> {
        self.socket.write_all(&self.request)?;
        let mut len = [0u8; 4];
        self.socket.read_exact(&mut len)?;
        let total = usize::try_from(i32::from_le_bytes(len))?;
        let rest = total
            .checked_sub(4)
            .ok_or("frame shorter than its length")?;
        if self.buf.len() < rest {
            self.buf.resize(rest, 0);
        }
        let body = self.buf.get_mut(..rest).ok_or("buffer")?;
        self.socket.read_exact(body)?;
        Ok(self.events)
    }
}

/// One source of events: a floor socket or a brook change stream.
enum Source {
    FloorTokio(FloorTokio),
    FloorStd(FloorStd),
    Typed(ChangeStream<ChangeStreamEvent<Order>>),
    Raw(ChangeStream<RawChangeEvent>),
    Doc(ChangeStream<ChangeStreamEvent<bson::Document>>),
}

impl Source {
    async fn open(
        kind: ClientKind,
        client: Option<&brook::Client>,
        args: &Args,
    ) -> Result<Source, BoxError> {
        let brook = || client.ok_or("no brook client");
        let max_await = Duration::from_secs(1);
        Ok(match kind {
            ClientKind::FloorTokio => Source::FloorTokio(FloorTokio::connect(args).await?),
            ClientKind::FloorStd => Source::FloorStd(FloorStd::connect(args)?),
            ClientKind::BrookTyped => {
                let coll = brook()?.database(&args.db).collection::<Order>(&args.coll);
                let mut watch = coll.watch().max_await_time(max_await);
                if let Some(n) = args.batch_size {
                    watch = watch.batch_size(n);
                }
                if let Some(data) = &args.resume_after {
                    watch = watch.resume_after(token(data)?);
                }
                Source::Typed(watch.await?)
            }
            ClientKind::BrookRaw => {
                let coll = brook()?.database(&args.db).collection::<Order>(&args.coll);
                let mut watch = coll.watch().max_await_time(max_await);
                if let Some(n) = args.batch_size {
                    watch = watch.batch_size(n);
                }
                if let Some(data) = &args.resume_after {
                    watch = watch.resume_after(token(data)?);
                }
                Source::Raw(watch.raw().await?)
            }
            ClientKind::BrookDoc => {
                let coll = brook()?
                    .database(&args.db)
                    .collection::<bson::Document>(&args.coll);
                let mut watch = coll.watch().max_await_time(max_await);
                if let Some(n) = args.batch_size {
                    watch = watch.batch_size(n);
                }
                if let Some(data) = &args.resume_after {
                    watch = watch.resume_after(token(data)?);
                }
                Source::Doc(watch.await?)
            }
        })
    }

    /// The next event (brook) or round trip (floor): how many events it brought.
    async fn step(&mut self) -> Result<u64, BoxError> {
        match self {
            Source::FloorTokio(f) => f.round_trip().await,
            Source::FloorStd(f) => f.round_trip(),
            Source::Typed(s) => match s.next().await {
                Some(Ok(event)) => {
                    black_box(event);
                    Ok(1)
                }
                Some(Err(e)) => Err(e.into()),
                None => Err("the stream ended".into()),
            },
            Source::Raw(s) => match s.next().await {
                Some(Ok(event)) => {
                    black_box(event);
                    Ok(1)
                }
                Some(Err(e)) => Err(e.into()),
                None => Err("the stream ended".into()),
            },
            Source::Doc(s) => match s.next().await {
                Some(Ok(event)) => {
                    black_box(event);
                    Ok(1)
                }
                Some(Err(e)) => Err(e.into()),
                None => Err("the stream ended".into()),
            },
        }
    }

    /// At most one getMore (`next_if_any`); a floor's round trip.
    async fn step_idle(&mut self) -> Result<u64, BoxError> {
        match self {
            Source::FloorTokio(_) | Source::FloorStd(_) => self.step().await,
            Source::Typed(s) => Ok(u64::from(black_box(s.next_if_any().await?).is_some())),
            Source::Raw(s) => Ok(u64::from(black_box(s.next_if_any().await?).is_some())),
            Source::Doc(s) => Ok(u64::from(black_box(s.next_if_any().await?).is_some())),
        }
    }
}

fn token(data: &str) -> Result<ResumeToken, BoxError> {
    Ok(ResumeToken::from_document(&bson::doc! { "_data": data })?)
}

async fn brook_client(args: &Args) -> Result<Option<brook::Client>, BoxError> {
    Ok(match args.client {
        ClientKind::BrookTyped | ClientKind::BrookRaw | ClientKind::BrookDoc => {
            Some(brook::Client::connect(&args.uri).await?)
        }
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// One stream, step after step: `idle` uses `step_idle`.
async fn single(args: &Args, idle: bool) -> Result<Value, BoxError> {
    let client = brook_client(args).await?;
    let mut source = Source::open(args.client, client.as_ref(), args).await?;
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

/// `--streams` streams on one client, one task each, for `--seconds`.
async fn concurrent(args: &Args) -> Result<Value, BoxError> {
    let client = brook_client(args).await?;
    let mut sources = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        sources.push(Source::open(args.client, client.as_ref(), args).await?);
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let local = tokio::task::LocalSet::new();
    let warm_until = Instant::now() + WARM_UP;
    let start = Rc::new(std::cell::Cell::new(warm_until));
    let mut tasks = Vec::new();
    for mut source in sources {
        let start = Rc::clone(&start);
        tasks.push(local.spawn_local(async move {
            let mut hist = histogram()?;
            let mut events = 0u64;
            while Instant::now() < start.get() {
                source.step().await?;
            }
            let begin = start.get();
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

/// `--streams` open streams, idle: resident memory once all wait on a getMore.
async fn idle_rss(args: &Args) -> Result<Value, BoxError> {
    let rss_before = status_kb("VmRSS:");
    let client = brook_client(args).await?;
    let local = tokio::task::LocalSet::new();
    let opened = local
        .run_until(async {
            let mut handles = Vec::new();
            for _ in 0..args.streams {
                let mut source = Source::open(args.client, client.as_ref(), args).await?;
                handles.push(tokio::task::spawn_local(async move {
                    loop {
                        if source.step().await.is_err() {
                            break;
                        }
                    }
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

/// `--count` events from a real server, resuming after `--resume-after`.
async fn e2e(args: &Args) -> Result<Value, BoxError> {
    let client = brook_client(args).await?;
    let start = Instant::now();
    let mut source = Source::open(args.client, client.as_ref(), args).await?;
    let mut events = 0u64;
    while events < args.count {
        events += source.step().await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "events": events,
        "seconds": elapsed,
        "events_per_s": events as f64 / elapsed,
    }))
}

/// Frame decoding (decode + getMore reply parse) next to a copy of the same bytes.
fn decode(args: &Args) -> Result<Value, BoxError> {
    let mut out = json!({});
    for (events, size, name) in [
        (100usize, SMALL_EVENT, "b100_300"),
        (1_000, LARGE_EVENT, "b1000_2k"),
    ] {
        let frame = get_more_reply_frame_sized(events, size)?;
        let copies = (64 * 1024 * 1024 / frame.len()).clamp(4, 4096);
        let budget = Duration::from_secs_f64(args.seconds / 4.0);
        // memcpy: a new Vec with the frame's bytes.
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < budget {
            black_box(frame.to_vec());
            n += 1;
        }
        let copy = n as f64 * frame.len() as f64 / start.elapsed().as_secs_f64();
        // decode: frames prepared beforehand (as the socket read leaves them).
        let (mut n, mut spent) = (0u64, Duration::ZERO);
        while spent < budget {
            let mut bufs: Vec<BytesMut> = (0..copies).map(|_| BytesMut::from(&frame[..])).collect();
            let t = Instant::now();
            for buf in &mut bufs {
                let reply = decode_get_more(buf)?;
                if reply.batch.len() != events {
                    return Err("a batch decoded short".into());
                }
                black_box(reply);
            }
            spent += t.elapsed();
            n += copies as u64;
        }
        let decoded = n as f64 * frame.len() as f64 / spent.as_secs_f64();
        merge(
            &mut out,
            json!({
                format!("{name}_frame_len"): frame.len(),
                format!("{name}_memcpy_bytes_per_s"): copy,
                format!("{name}_decode_bytes_per_s"): decoded,
                format!("{name}_decode_events_per_s"): decoded / frame.len() as f64 * events as f64,
            }),
        );
    }
    Ok(out)
}

async fn run(args: &Args) -> Result<Value, BoxError> {
    match args.scenario.as_str() {
        "stream" => single(args, false).await,
        "idle" => single(args, true).await,
        "concurrent" => concurrent(args).await,
        "idle-rss" => idle_rss(args).await,
        "e2e" => e2e(args).await,
        "decode" => decode(args),
        other => Err(format!("unknown scenario `{other}`").into()),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("brook-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brook-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&args));
    match result {
        Ok(mut value) => {
            let client = if args.scenario == "decode" {
                "brook"
            } else {
                args.client.name()
            };
            merge(
                &mut value,
                json!({ "client": client, "scenario": args.scenario }),
            );
            println!("{value}");
            // Idle streams hold tasks that never end: leave without tearing them down.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("brook-bench: {} {}: {e}", args.client.name(), args.scenario);
            ExitCode::FAILURE
        }
    }
}
