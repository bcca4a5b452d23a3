//! `failover-bench`: how long one change-stream client takes to cross a failover of the
//! testkit's replica set, printing one JSON line; `cargo xtask bench` runs it for brook
//! and for the official driver.
//!
//! ```text
//! failover-bench --kind stepdown|kill|blackhole [--failovers N] [--interval-ms MS]
//!                [--settle-ms MS] [--timeout-s S] [--uri-options OPTS] [--trace]
//!                -- CLIENT [ARGS...]
//! ```
//!
//! It starts a [`ReplicaSet`] of three fake members (member 0 primary), then the client
//! command with `--uri <the set's URI>&OPTS` appended: a `failover-tail` client
//! (`brook-bench`, or `compare-bench` for the official driver) that tails `shop.orders`
//! and prints `ready`, then a line per event with its arrival time
//! (`bench_measure::failover_line`). Once the client is ready, the harness inserts an
//! event (`fullDocument.n` = 0, 1, 2, …) every `--interval-ms` (5 ms), and every
//! `--settle-ms` (1 s) plus a random 0–500 ms (so that failovers fall anywhere in the
//! clients' 500 ms heartbeat cycle), right after an insert, fails the primary over:
//!
//! * the **loss** instant is taken ([`bench_measure::unix_ns`], the clock the client
//!   dates its events with), then the primary is lost: `stepdown` (it steps down and
//!   answers as a secondary), `kill` (listener and connections closed at once, as
//!   SIGKILL) or `blackhole` (it reads requests but never answers again);
//! * the next member is elected at once (the election itself is the server's time, not
//!   the driver's: it is left out), a killed primary is restarted as a secondary, and
//!   the next event is inserted at once: the first one only a new primary can serve;
//! * the **failover time** is when that event (or a later one) reached the client less
//!   the loss instant;
//! * once it arrived, a blackholed member is healed (it rejoins as a secondary), and the
//!   next failover waits its settle time, so that each one starts from three healthy
//!   members that the client has seen.
//!
//! A failover whose event has not arrived within `--timeout-s` (30 s) ends the run, as
//! does the client exiting. After the last one, events stop and the harness waits (up to
//! 10 s) for the last event, then counts events lost (never received) and duplicated.
//! The result: failovers, timeouts, p50/p90/p99/max (nearest rank over the failovers),
//! every sample (`samples_ms`), errors the client's stream surfaced, lost (and the first
//! few lost `n`, next to each failover's first event), how many failovers lost events
//! (one that did is timed to the first event that came after it, not to a resumed
//! stream's first), duplicated. `--trace` prints, at
//! the end, every change-stream aggregate each member received (with its
//! `resumeAfter`/`startAtOperationTime`) and the tokens of the events around each
//! failover: how a lost event was skipped.
#![forbid(unsafe_code)]

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use bson::doc;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};

use bench_measure::{BoxError, unix_ns};
use brook_testkit::{ReplicaSet, ReplicaSetConfig};

/// The namespace the clients tail (`brook_benches::{DB, COLL}`, compare-bench's too).
const NS: &str = "shop.orders";
/// The spread added to each settle time, over the clients' 500 ms heartbeat.
const JITTER_MS: u64 = 500;
/// How long the harness waits for the client to open its stream, and for the last event.
const READY_WAIT: Duration = Duration::from_secs(30);
const DRAIN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailoverKind {
    StepDown,
    Kill,
    Blackhole,
}

impl FailoverKind {
    fn parse(s: &str) -> Option<FailoverKind> {
        Some(match s {
            "stepdown" => FailoverKind::StepDown,
            "kill" => FailoverKind::Kill,
            "blackhole" => FailoverKind::Blackhole,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            FailoverKind::StepDown => "stepdown",
            FailoverKind::Kill => "kill",
            FailoverKind::Blackhole => "blackhole",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    kind: FailoverKind,
    failovers: usize,
    interval: Duration,
    settle: Duration,
    timeout: Duration,
    uri_options: String,
    trace: bool,
    client: Vec<String>,
}

fn parse_args() -> Result<Args, BoxError> {
    use lexopt::prelude::*;
    let mut kind = None;
    let mut args = Args {
        kind: FailoverKind::StepDown,
        failovers: 20,
        interval: Duration::from_millis(5),
        settle: Duration::from_millis(1000),
        timeout: Duration::from_secs(30),
        uri_options: String::new(),
        trace: false,
        client: Vec::new(),
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("kind") => {
                let v = parser.value()?.string()?;
                kind = Some(FailoverKind::parse(&v).ok_or(format!("unknown kind `{v}`"))?);
            }
            Long("failovers") => args.failovers = parser.value()?.parse()?,
            Long("interval-ms") => {
                args.interval = Duration::from_millis(parser.value()?.parse::<u64>()?.max(1));
            }
            Long("settle-ms") => args.settle = Duration::from_millis(parser.value()?.parse()?),
            Long("timeout-s") => args.timeout = Duration::from_secs(parser.value()?.parse()?),
            Long("uri-options") => args.uri_options = parser.value()?.string()?,
            Long("trace") => args.trace = true,
            Value(v) => {
                args.client.push(v.string()?);
                for rest in parser.raw_args()? {
                    args.client.push(rest.string()?);
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.kind = kind.ok_or("--kind is required")?;
    if args.client.is_empty() {
        return Err("no client command after `--`".into());
    }
    if args.failovers == 0 {
        return Err("--failovers must be at least 1".into());
    }
    Ok(args)
}

/// A small xorshift generator for the settle jitter (seeded from the clock: runs need
/// not repeat, only spread).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        Jitter(u64::try_from(unix_ns() % u128::from(u64::MAX)).unwrap_or(1) | 1)
    }

    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// One line of the client's output.
#[derive(Debug, PartialEq)]
enum Line {
    Ready,
    Event { n: i64, at_ns: u128 },
    Error { message: String },
    Other,
}

fn parse_line(line: &str) -> Line {
    let mut parts = line.splitn(3, ' ');
    match parts.next() {
        Some("ready") => Line::Ready,
        Some("ev") => {
            let n = parts.next().and_then(|v| v.parse().ok());
            let at = parts.next().and_then(|v| v.trim().parse().ok());
            match (n, at) {
                (Some(n), Some(at_ns)) => Line::Event { n, at_ns },
                _ => Line::Other,
            }
        }
        Some("err") => Line::Error {
            message: parts.nth(1).unwrap_or_default().trim().to_owned(),
        },
        _ => Line::Other,
    }
}

/// The value at quantile `q` of sorted `v`, by nearest rank.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A failover whose first new-primary event has not arrived yet.
struct Pending {
    /// The loss instant ([`unix_ns`]).
    lost_at_ns: u128,
    /// The first event inserted after the loss.
    first_new: i64,
    /// When the wait for it ends.
    deadline: Instant,
    /// The member that was primary.
    old: usize,
}

async fn fail_over(rs: &ReplicaSet, kind: FailoverKind) -> Result<(u128, usize), BoxError> {
    let old = rs.primary().ok_or("no primary to fail over")?;
    let next = (old + 1) % rs.member_count();
    let lost_at = unix_ns();
    match kind {
        FailoverKind::StepDown => rs.step_down().await,
        FailoverKind::Kill => rs.kill(old).await?,
        FailoverKind::Blackhole => rs.blackhole(old).await?,
    }
    rs.elect(next).await?;
    if kind == FailoverKind::Kill {
        rs.restart(old).await?;
    }
    Ok((lost_at, old))
}

async fn run(args: &Args) -> Result<Value, BoxError> {
    let rs = ReplicaSet::start(ReplicaSetConfig::new("rs0")).await?;
    let mut uri = rs.uri();
    if !args.uri_options.is_empty() {
        uri.push('&');
        uri.push_str(args.uri_options.trim_start_matches(['&', '?']));
    }
    let (program, client_args) = args.client.split_first().ok_or("no client command")?;
    let mut child = Command::new(program)
        .args(client_args)
        .args(["--uri", &uri])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start `{program}`: {e}"))?;
    let stdout = child.stdout.take().ok_or("no client stdout")?;
    let mut lines = BufReader::new(stdout).lines();

    // The stream is open: from now on every event is the client's to receive.
    let ready = timeout(READY_WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if parse_line(&line) == Line::Ready {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    match ready {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err("the client exited before its stream was open".into()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(format!("the client was not ready within {READY_WAIT:?}").into()),
    }

    let mut jitter = Jitter::new();
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_n: i64 = 0;
    // How many times each event arrived.
    let mut received: Vec<u32> = Vec::new();
    let mut samples_ns: Vec<u64> = Vec::new();
    // The first event of each failover (inserted right after the loss).
    let mut first_events: Vec<i64> = Vec::new();
    // The event that crossed each failover (the first one received at or after it).
    let mut crossings: Vec<i64> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut timeouts = 0u64;
    let mut errors = 0u64;
    let mut first_error = String::new();
    let mut stop_reason = String::new();
    let mut next_failover = Instant::now() + args.settle;
    let insert = |n: i64| {
        rs.insert_event(NS, doc! { "_id": n, "n": n });
    };

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(p) = &pending
                    && Instant::now() >= p.deadline
                {
                    timeouts += 1;
                    stop_reason = format!(
                        "failover {} not crossed within {:?}",
                        samples_ns.len() + 1,
                        args.timeout
                    );
                    break;
                }
                insert(next_n);
                next_n += 1;
                if pending.is_none() && Instant::now() >= next_failover {
                    let (lost_at_ns, old) = fail_over(&rs, args.kind).await?;
                    insert(next_n);
                    first_events.push(next_n);
                    pending = Some(Pending {
                        lost_at_ns,
                        first_new: next_n,
                        deadline: Instant::now() + args.timeout,
                        old,
                    });
                    next_n += 1;
                    ticker.reset();
                }
            }
            line = lines.next_line() => {
                let Some(line) = line? else {
                    stop_reason = "the client exited".to_owned();
                    break;
                };
                match parse_line(&line) {
                    Line::Event { n, at_ns } => {
                        if let Ok(i) = usize::try_from(n) {
                            if received.len() <= i {
                                received.resize(i + 1, 0);
                            }
                            if let Some(count) = received.get_mut(i) {
                                *count += 1;
                            }
                        }
                        if let Some(p) = &pending
                            && n >= p.first_new
                        {
                            let took = at_ns.saturating_sub(p.lost_at_ns);
                            samples_ns.push(u64::try_from(took).unwrap_or(u64::MAX));
                            crossings.push(n);
                            if args.kind == FailoverKind::Blackhole {
                                rs.unblackhole(p.old).await?;
                            }
                            pending = None;
                            if samples_ns.len() >= args.failovers {
                                break;
                            }
                            next_failover = Instant::now()
                                + args.settle
                                + Duration::from_millis(jitter.next_ms(JITTER_MS));
                        }
                    }
                    Line::Error { message } => {
                        errors += 1;
                        if first_error.is_empty() {
                            first_error = message;
                        }
                    }
                    Line::Ready | Line::Other => {}
                }
            }
        }
    }

    // Drain: every inserted event should arrive (the run may have stopped early).
    if stop_reason.is_empty() {
        let last = next_n - 1;
        let deadline = Instant::now() + DRAIN_WAIT;
        let seen_last = |received: &[u32]| {
            usize::try_from(last)
                .ok()
                .and_then(|i| received.get(i))
                .is_some_and(|c| *c > 0)
        };
        while !seen_last(&received) {
            let line = tokio::select! {
                line = lines.next_line() => line?,
                () = sleep_until(deadline) => break,
            };
            let Some(line) = line else { break };
            if let Line::Event { n, .. } = parse_line(&line)
                && let Ok(i) = usize::try_from(n)
            {
                if received.len() <= i {
                    received.resize(i + 1, 0);
                }
                if let Some(count) = received.get_mut(i) {
                    *count += 1;
                }
            }
        }
    }
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.shutdown().await;
    }
    if timeout(Duration::from_secs(2), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    if args.trace {
        // What each member was asked to resume from: where lost events come from.
        for (i, m) in rs.members().iter().enumerate() {
            for c in m.commands_named("aggregate") {
                let stage = c.body.get_array("pipeline").ok().and_then(|p| p.first());
                eprintln!("member {i} connection {}: {stage:?}", c.connection_id);
            }
        }
        for e in rs.events() {
            let n = e
                .get_document("fullDocument")
                .ok()
                .and_then(|d| d.get_i64("n").ok());
            if let Some(n) = n
                && first_events.iter().any(|f| (f - n).abs() <= 2)
            {
                eprintln!("event {n}: token {:?}", e.get_document("_id").ok());
            }
        }
    }
    rs.shutdown().await;

    let inserted = usize::try_from(next_n).unwrap_or(0);
    let lost_ids: Vec<usize> = (0..inserted)
        .filter(|i| received.get(*i).is_none_or(|c| *c == 0))
        .collect();
    let lost = lost_ids.len();
    // A failover lost events if one between the last crossing and its own never came:
    // its time is then to a later event, not to a resumed stream's first.
    let mut failovers_losing = 0usize;
    let mut previous = -1i64;
    for crossing in &crossings {
        let window = (previous + 1)..=*crossing;
        if lost_ids
            .iter()
            .any(|id| i64::try_from(*id).is_ok_and(|id| window.contains(&id)))
        {
            failovers_losing += 1;
        }
        previous = *crossing;
    }
    // The first few lost events, with the failovers' first events, to see where they fell.
    let lost_first: Vec<String> = lost_ids.iter().take(20).map(ToString::to_string).collect();
    let duplicated: u64 = received
        .iter()
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum();
    let samples_ms: Vec<String> = samples_ns
        .iter()
        .map(|ns| format!("{:.2}", *ns as f64 / 1e6))
        .collect();
    let mut sorted = samples_ns.clone();
    sorted.sort_unstable();
    let mean = if sorted.is_empty() {
        None
    } else {
        Some(sorted.iter().map(|v| *v as f64).sum::<f64>() / sorted.len() as f64)
    };
    Ok(json!({
        "kind": args.kind.name(),
        "failovers": samples_ns.len(),
        "timeouts": timeouts,
        "p50_ns": nearest_rank(&sorted, 0.50),
        "p90_ns": nearest_rank(&sorted, 0.90),
        "p99_ns": nearest_rank(&sorted, 0.99),
        "min_ns": sorted.first(),
        "max_ns": sorted.last(),
        "mean_ns": mean,
        "samples_ms": samples_ms.join(";"),
        "events": inserted,
        "lost": lost,
        "failovers_losing_events": failovers_losing,
        "lost_first": lost_first.join(";"),
        "failover_first_events": first_events.iter().map(ToString::to_string).collect::<Vec<_>>().join(";"),
        "duplicated": duplicated,
        "errors": errors,
        "first_error": first_error,
        "stopped": stop_reason,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("failover-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failover-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("failover-bench: {}: {e}", args.kind.name());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_lines_parse() {
        assert_eq!(parse_line("ready"), Line::Ready);
        assert_eq!(
            parse_line("ev 12 1700000000123456789"),
            Line::Event {
                n: 12,
                at_ns: 1_700_000_000_123_456_789
            }
        );
        assert_eq!(
            parse_line("err 17 not primary (10107)"),
            Line::Error {
                message: "not primary (10107)".to_owned()
            }
        );
        assert_eq!(parse_line("ev x y"), Line::Other);
        assert_eq!(parse_line(""), Line::Other);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(10));
        assert_eq!(nearest_rank(&v, 0.99), Some(20));
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut j = Jitter::new();
        assert!((0..1000).all(|_| j.next_ms(500) < 500));
    }
}
