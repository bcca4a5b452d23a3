//! `compare-bench`: the official `mongodb` driver (3.x) doing what `brook-bench` does, against
//! the same replay server, printing the same JSON line.
//!
//! ```text
//! compare-bench --client official-typed|official-raw
//!               --scenario stream|idle|concurrent|idle-rss|failover-tail
//!               --uri URI [--seconds F] [--streams N] [--batch-size N]
//! ```
//!
//! * `official-typed`: `Collection<Order>::watch()`, events as `ChangeStreamEvent<Order>`;
//! * `official-raw`: the same stream `.with_type::<RawDocumentBuf>()`.
//!
//! `--scenario failover-tail` is the client side of `failover-bench` (brook's
//! `benches/src/bin/failover-bench.rs`): a `ChangeStreamEvent<Document>` stream on the
//! replica set of `--uri`, taken as given (the harness adds the same options for every
//! driver), printing a line per event as `bench_measure::failover_line` says.
//!
//! For the other scenarios, the URI gets `serverMonitoringMode=poll` (the replay server
//! answers an awaitable hello only after its wait, so polling keeps monitoring off the
//! measured path) and, for the concurrent scenarios, `maxPoolSize` large enough for one
//! connection per stream (the driver checks a connection out per getMore; its default
//! pool of 10 would make 100 streams queue). Everything else is the driver's default.

use std::alloc::System;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::RawDocumentBuf;
use mongodb::bson::oid::ObjectId;
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ChangeStreamEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

use bench_measure::BoxError;

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

impl bench_measure::Source for Source {
    async fn step(&mut self) -> Result<u64, BoxError> {
        Source::step(self).await
    }

    async fn step_idle(&mut self) -> Result<u64, BoxError> {
        Source::step_idle(self).await
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
    bench_measure::single(&mut source, args.seconds, idle, GLOBAL).await
}

async fn concurrent(args: &Args) -> Result<Value, BoxError> {
    let client = client(args, args.streams).await?;
    let mut sources = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        sources.push(Source::open(&client, args).await?);
    }
    bench_measure::concurrent(sources, args.seconds).await
}

async fn idle_rss(args: &Args) -> Result<Value, BoxError> {
    let rss_before = bench_measure::status_kb("VmRSS:");
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
    Ok(bench_measure::idle_rss_report(rss_before, opened))
}

/// The client side of `failover-bench`: each event printed with its arrival time; an
/// error the stream hands out is printed too and the stream reopened after its last
/// resume token (what brook-bench's `failover-tail` does with brook).
async fn failover_tail(args: &Args) -> Result<Value, BoxError> {
    use bench_measure::failover_line;
    use mongodb::bson::Document;
    bench_measure::exit_when_stdin_closes();
    let client = mongodb::Client::with_uri_str(&args.uri).await?;
    let coll = client.database(DB).collection::<Document>(COLL);
    let mut token: Option<mongodb::change_stream::event::ResumeToken> = None;
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

async fn run(args: &Args) -> Result<Value, BoxError> {
    match args.scenario.as_str() {
        "stream" => single(args, false).await,
        "idle" => single(args, true).await,
        "concurrent" => concurrent(args).await,
        "idle-rss" => idle_rss(args).await,
        "failover-tail" => failover_tail(args).await,
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
            bench_measure::merge(
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
