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
//!   in bytes/s, next to a plain copy of the same bytes;
//! * `failover-tail`: the client side of `failover-bench` (any `--client`; brook reads
//!   `ChangeStreamEvent<Document>`): tails `--db.--coll` on the replica set of `--uri`,
//!   printing a line per event as `bench_measure::failover_line` says, until its
//!   standard input closes.
//!
//! Allocations are counted by a counting global allocator (`stats_alloc`) for the whole
//! process (every thread) between the start and the end of the measured phase.
#![forbid(unsafe_code)]

use std::alloc::System;
use std::hint::black_box;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use brook::{ChangeStream, ChangeStreamEvent, RawChangeEvent, ResumeToken};
use brook_benches::{
    COLL, CURSOR_ID, DB, LARGE_EVENT, Order, SMALL_EVENT, decode_get_more,
    get_more_reply_frame_sized, get_more_request_frame,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

use bench_measure::BoxError;

/// How long a single-stream run warms up before it measures.

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

impl bench_measure::Source for Source {
    async fn step(&mut self) -> Result<u64, BoxError> {
        Source::step(self).await
    }

    async fn step_idle(&mut self) -> Result<u64, BoxError> {
        Source::step_idle(self).await
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
    bench_measure::single(&mut source, args.seconds, idle, GLOBAL).await
}

/// `--streams` streams on one client, one task each, for `--seconds`.
async fn concurrent(args: &Args) -> Result<Value, BoxError> {
    let client = brook_client(args).await?;
    let mut sources = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        sources.push(Source::open(args.client, client.as_ref(), args).await?);
    }
    bench_measure::concurrent(sources, args.seconds).await
}

/// `--streams` open streams, idle: resident memory once all wait on a getMore.
async fn idle_rss(args: &Args) -> Result<Value, BoxError> {
    let rss_before = bench_measure::status_kb("VmRSS:");
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
    Ok(bench_measure::idle_rss_report(rss_before, opened))
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

/// The client side of `failover-bench`: a `ChangeStreamEvent<Document>` stream on
/// `--db.--coll`, each event printed with its arrival time; an error the stream hands out
/// is printed too and the stream reopened after its last resume token (what an
/// application does; `compare-bench` does the same with the official driver).
async fn failover_tail(args: &Args) -> Result<Value, BoxError> {
    use bench_measure::failover_line;
    bench_measure::exit_when_stdin_closes();
    let client = brook::Client::connect(&args.uri).await?;
    let coll = client
        .database(&args.db)
        .collection::<bson::Document>(&args.coll);
    let mut token: Option<ResumeToken> = None;
    let mut opened = false;
    loop {
        let mut watch = coll.watch().max_await_time(FAILOVER_MAX_AWAIT);
        if let Some(t) = &token {
            watch = watch.resume_after(t.clone());
        }
        let mut stream = match watch.await {
            Ok(s) => s,
            Err(e) if opened => {
                failover_line::error(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !opened {
            failover_line::ready();
            opened = true;
        }
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    failover_line::event(
                        event
                            .full_document
                            .as_ref()
                            .and_then(|d| d.get_i64("n").ok()),
                    );
                }
                Err(e) => {
                    failover_line::error(&e);
                    break;
                }
            }
        }
        token = stream.resume_token().or(token);
    }
}

/// The `maxAwaitTimeMS` of the failover bench's streams (both drivers).
const FAILOVER_MAX_AWAIT: Duration = Duration::from_secs(1);

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
        bench_measure::merge(
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
        "failover-tail" => failover_tail(args).await,
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
            bench_measure::merge(
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
