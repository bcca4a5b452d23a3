//! Small, complete programs built on brook, each a library function called by its
//! `main` (`src/bin/*.rs`) and by a test (`tests/examples.rs`) that checks its outcome:
//!
//! | program | module | what it shows |
//! |---|---|---|
//! | `cache-invalidator` | [`cache_invalidator`] | typed events (`ChangeStreamEvent<Product>`), a `$match` pipeline, a checkpoint file ([`brook::checkpoint::FileCheckpoint`]) saved after each event |
//! | `outbox-relay` | [`outbox_relay`] | at-least-once relay to stdout: `next_batch()`, one checkpoint save per batch |
//! | `audit-log` | [`audit_log`] | a database-wide stream (`db.watch().raw()`), events appended as undecoded BSON |
//! | `metrics-prometheus` | [`metrics_prometheus`] | brook's metrics (feature `metrics`) rendered by a Prometheus exporter, command monitoring events beside them |
//! | `failover-consumer` | [`failover_consumer`] | a consumer on the testkit's replica set while the primary steps down and another is elected; `ResumePolicy::backoff()`; nothing lost or repeated |
//!
//! Run one with `cargo run -p brook-examples --bin <program> -- --help`. Without `--uri`
//! a program starts a fake replica set in-process (`brook_testkit::ReplicaSet`) and
//! writes its own events; with `--uri mongodb://…` it follows that deployment (a replica
//! set: change streams need one) and waits for someone else's writes.
#![forbid(unsafe_code)]

pub mod audit_log;
pub mod cache_invalidator;
pub mod failover_consumer;
pub mod metrics_prometheus;
pub mod outbox_relay;

use std::time::Duration;

use brook_testkit::{ReplicaSet, ReplicaSetConfig};

/// The README's Rust blocks, compiled as doc tests of this crate so that they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Rust blocks of `docs/change-streams.md`, compiled as doc tests too.
#[doc = include_str!("../../docs/change-streams.md")]
#[cfg(doctest)]
pub struct ChangeStreamsDoctests;

/// The error type of the examples: anything, sendable between tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts a fake three-member replica set (MongoDB 7 replies, one change log every
/// primary serves) whose getMores wait at most 200 ms, and returns it with a connection
/// string for it that notices a failover within about a second.
pub async fn demo_replica_set() -> Result<(ReplicaSet, String), BoxError> {
    let set =
        ReplicaSet::start(ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(200)))
            .await?;
    let uri = format!(
        "{}&heartbeatFrequencyMS=500&connectTimeoutMS=500&serverSelectionTimeoutMS=10000",
        set.uri()
    );
    Ok((set, uri))
}

/// Waits until a member of `set` received a change stream's `aggregate` (a program that
/// starts "from now" sees only the events written after it), for at most `limit`.
pub async fn wait_for_stream(set: &ReplicaSet, limit: Duration) -> Result<(), BoxError> {
    let opened = || {
        set.members().iter().any(|m| {
            m.commands_named("aggregate")
                .iter()
                .any(|c| c.body.get_array("pipeline").is_ok_and(|p| !p.is_empty()))
        })
    };
    let started = std::time::Instant::now();
    while !opened() {
        if started.elapsed() > limit {
            return Err(format!("no change stream was opened within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The command line every program shares: `--uri URI`, `--events N`,
/// `--timeout SECONDS`, and one path (`--checkpoint PATH` or `--out PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The deployment to follow; `None`: start a fake replica set in-process.
    pub uri: Option<String>,
    /// Stop after this many events.
    pub events: usize,
    /// Give up (and fail) after this long.
    pub timeout: Duration,
    /// The program's file (checkpoint or output), if it takes one.
    pub path: Option<String>,
    /// Program-specific number (`--failover-every N`), if given.
    pub every: Option<usize>,
}

impl Args {
    /// Parses `args` (without the program name). `usage` is printed for `--help` (and
    /// the process exits 0) and is part of the error for anything unknown.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        default_events: usize,
        usage: &str,
    ) -> Result<Args, BoxError> {
        let mut parsed = Args {
            uri: None,
            events: default_events,
            timeout: Duration::from_secs(60),
            path: None,
            every: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value\n{usage}"))
            };
            match arg.as_str() {
                "--uri" => parsed.uri = Some(value("--uri")?),
                "--events" => parsed.events = value("--events")?.parse()?,
                "--timeout" => parsed.timeout = Duration::from_secs(value("--timeout")?.parse()?),
                "--checkpoint" | "--out" => parsed.path = Some(value(&arg)?),
                "--failover-every" => parsed.every = Some(value("--failover-every")?.parse()?),
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}`\n{usage}").into()),
            }
        }
        if parsed.events == 0 {
            return Err(format!("--events must be at least 1\n{usage}").into());
        }
        Ok(parsed)
    }
}

/// Runs `future` within `limit`, failing with a message naming `what` when it takes
/// longer: every program is bounded.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(format!("{what}: not done within {limit:?}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn args_parse() {
        let args = Args::parse(
            strings(&[
                "--events",
                "7",
                "--uri",
                "mongodb://h/",
                "--checkpoint",
                "c",
            ]),
            3,
            "usage",
        )
        .expect("valid");
        assert_eq!(args.events, 7);
        assert_eq!(args.uri.as_deref(), Some("mongodb://h/"));
        assert_eq!(args.path.as_deref(), Some("c"));
        assert_eq!(
            Args::parse(strings(&[]), 3, "u").expect("defaults").events,
            3
        );
        let err = Args::parse(strings(&["--nope"]), 3, "the usage").expect_err("unknown");
        assert!(err.to_string().contains("the usage"), "{err}");
        assert!(Args::parse(strings(&["--events", "0"]), 3, "u").is_err());
        assert!(Args::parse(strings(&["--events"]), 3, "u").is_err());
    }
}
