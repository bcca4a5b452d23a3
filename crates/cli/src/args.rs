//! The command line, parsed with lexopt into a [`Command`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bson::{Document, Timestamp};
use lexopt::prelude::*;

use crate::error::CliError;
use crate::json;

/// `brook --help`.
pub(crate) const MAIN_USAGE: &str = "\
brook: follow MongoDB change streams from the command line

usage: brook <command> [options]

commands:
  tail <uri> <db>[.<coll>]   print a change stream as JSON lines (see `brook tail --help`)
  tail <uri> --cluster       the same for the whole deployment
  demo-writer <uri> <db.coll>
                             insert, update and delete documents, for the demo
                             (see `brook demo-writer --help`)
  bench <uri> <db>.<coll>    measure insert-to-event latency, getMores and events/s
                             of a change stream (see `brook bench --help`)
  help [<command>]           print this text, or a command's

options:
  -h, --help                 print this text
  -V, --version              print brook's version

<uri> may be left out when the MONGODB_URI environment variable holds it (a first
argument that does not start with mongodb:// or mongodb+srv:// is not taken for one).
Every command takes --password-file PATH: the password is read from PATH (its first
line) instead of the URI, so that it stays out of the process list and shell history.
A URI is never printed with its password.

Errors print one line `brook: error: …` on stderr; the exit status is 2 for a bad
command line and 1 for a failure while running.
";

/// `brook tail --help`.
pub(crate) const TAIL_USAGE: &str = "\
usage: brook tail <uri> <db>[.<coll>] [options]
       brook tail <uri> --cluster [options]

Prints each change event as one line of relaxed extended JSON on stdout, as the server
sent it (fields in order, nothing decoded or dropped). <db>.<coll> follows a collection,
<db> alone a database, --cluster every database of the deployment.

watch options (passed to the server as the $changeStream stage and aggregate options):
  --pipeline JSON                    stages after $changeStream, a JSON array, e.g.
                                     '[{\"$match\": {\"operationType\": \"insert\"}}]'
  --full-document V                  default | updateLookup | whenAvailable | required
  --full-document-before-change V    off | whenAvailable | required
  --resume-after JSON_TOKEN          start after this event, e.g. '{\"_data\": \"82…\"}'
  --start-after JSON_TOKEN           like --resume-after, also after an invalidate
  --start-at-operation-time T:I      start at this cluster time (seconds:increment)
  --max-await-time MS                how long each getMore waits for new events
  --batch-size N                     events per reply
  --collation JSON                   e.g. '{\"locale\": \"fr\"}'
  --comment STR                      a comment for the server's logs and profiler
  --show-expanded-events             also DDL events (create, createIndexes, …)

tool options:
  --resume-file PATH   keep the stream's resume token in PATH: saved after each batch
                       of events is printed, after quiet periods too (the token of
                       empty batches, at most once a second, so that a --pipeline
                       that filters everything out does not leave a token that falls
                       off the oplog), and at exit (written to PATH.tmp, then renamed;
                       fsync'd at most once a second and at exit). PATH's directory
                       must exist and be writable: checked before connecting (exit 2).
                       At start, if PATH exists, resume from it (resumeAfter;
                       startAfter when it holds an invalidate event's token); it then
                       takes precedence over --resume-after, --start-after and
                       --start-at-operation-time. Events are delivered at least once:
                       after a crash the last events before the crash may be printed
                       again, none is skipped.
  --count N            exit 0 after N events, closing the stream
  --stats-every SECS   statistics every SECS seconds (0.1 to 86400; decimals allowed).
                       When stderr is not a terminal (systemd, docker): one JSON line
                       on stderr every SECS and once at exit: {\"ts\": RFC 3339 UTC
                       with ms, \"events\", \"events_per_second\", \"get_mores\",
                       \"resumes\", \"failed_resumes\", \"lag_ms\" (now minus the last
                       event's commit time, null before one), \"server_lag_ms\" (the
                       server's time minus the token's, null when unknown),
                       \"server\" (host:port or null)}. On a terminal: how often the
                       status line is redrawn (default 1).
  --password-file PATH the password (first line of PATH), instead of the URI's
  -h, --help           print this text

<uri> may be left out when MONGODB_URI holds it. The connection string takes every
brook URI option. Without serverSelectionTimeoutMS
in it, brook tail gives up finding a server after 10 s. Live statistics (events/s,
getMore round trips, resumes, lag) are shown on stderr when stderr is a terminal;
elsewhere stderr stays quiet unless --stats-every asks for JSON lines.
Ctrl-C or SIGTERM closes the stream and exits 0.
";

/// `brook demo-writer --help`.
pub(crate) const WRITER_USAGE: &str = "\
usage: brook demo-writer <uri> <db>.<coll> [--count N] [--interval-ms M]
                         [--password-file PATH]

Writes to <db>.<coll> through brook, one operation every M ms (default 200), in a
cycle of insert, insert, update, delete, so that a `brook tail` of the collection sees
every kind of event. Runs until N operations are done (default: until Ctrl-C or
SIGTERM), then prints a one-line summary on stderr.
";

/// `brook bench --help`.
pub(crate) const BENCH_USAGE: &str = "\
usage: brook bench <uri> <db>.<coll> [options]

Measures a change stream against any deployment: one client inserts documents into
<db>.<coll> at a controlled rate while another follows the collection's change stream
(raw events, filtered on this run's id), and the time from each insert being sent to
its event being read is recorded in an HDR histogram (microseconds, 3 significant
digits). Writes of the warm-up are followed but not measured.

options:
  --rate N                 writes per second (default 200). The writer sends one insert
                           at a time, so the achieved rate is also capped by the insert
                           round trip; it is reported as writes/s
  --duration SECS          how long to write after the warm-up (default 10)
  --events N               instead of --duration: write N measured documents
  --warmup SECS            write (and read) this long before measuring (default 1)
  --batch-size N           batchSize of the change stream's aggregate and getMores
  --max-await-time MS      maxAwaitTimeMS of the getMores (server default: 1000)
  --doc-size BYTES         size of each inserted document, padded with a string
                           (default 256; the smallest is the unpadded document, ~80)
  --json                   print one JSON object instead of the table
  --keep                   leave the inserted documents in the collection
  --password-file PATH     the password (first line of PATH), instead of the URI's
  -h, --help               print this text

After the last write the bench waits up to 5 s for the events still missing. Every
inserted document carries {brookBench: \"<run id>\"} (a new ObjectId's hex string,
printed as run_id);
at the end, also after an error and after Ctrl-C or SIGTERM (which stop the run and
print the results so far), exactly those documents are deleted with one
delete {q: {brookBench: <run id>}, limit: 0}. Nothing else is written or dropped.

getMore round trip: the time of each getMore of the stream, from sending it to its
reply, including the server's wait for events (up to maxAwaitTimeMS), so with a
long-poll it measures how a getMore waits, not the network alone.

JSON fields (`--json`; latencies in microseconds, rates per second):
  run_id, namespace, interrupted (bool: Ctrl-C/SIGTERM), requested_rate,
  warmup_s, measured_s (seconds from the first measured write to the last measured
  event), writes (measured inserts acknowledged), warmup_writes, writes_per_s,
  events (measured events read), events_per_s,
  latency_us {count, min, p50, p90, p99, p999, max, mean},
  getmores (measured), getmores_empty, getmores_per_s, events_per_getmore,
  getmore_rtt_us {count, min, p50, p90, p99, p999, max, mean},
  resumes, lost (acknowledged writes whose event never came), duplicated (events
  read twice), foreign (events of the stream that were not this run's inserts),
  doc_size (bytes of one inserted document), cleanup_deleted (documents deleted at
  the end; null with --keep)
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Print this text on stdout and exit 0.
    Help(&'static str),
    /// Print the version and exit 0.
    Version,
    /// `brook tail` (boxed: it is by far the largest variant).
    Tail(Box<TailArgs>),
    /// `brook demo-writer`.
    DemoWriter(WriterArgs),
    /// `brook bench`.
    Bench(BenchArgs),
}

/// What a `brook tail` follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One collection.
    Collection {
        /// Its database.
        db: String,
        /// The collection.
        coll: String,
    },
    /// One database.
    Database(String),
    /// The whole deployment.
    Cluster,
}

/// The options of the change stream, as given on the command line.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WatchOptions {
    /// Stages after `$changeStream`.
    pub(crate) pipeline: Vec<Document>,
    /// `fullDocument`.
    pub(crate) full_document: Option<String>,
    /// `fullDocumentBeforeChange`.
    pub(crate) full_document_before_change: Option<String>,
    /// `resumeAfter`.
    pub(crate) resume_after: Option<Document>,
    /// `startAfter`.
    pub(crate) start_after: Option<Document>,
    /// `startAtOperationTime`.
    pub(crate) start_at_operation_time: Option<Timestamp>,
    /// `maxAwaitTimeMS` of the getMores.
    pub(crate) max_await_time: Option<Duration>,
    /// `batchSize`.
    pub(crate) batch_size: Option<u32>,
    /// `collation`.
    pub(crate) collation: Option<Document>,
    /// `comment`.
    pub(crate) comment: Option<String>,
    /// `showExpandedEvents`.
    pub(crate) show_expanded_events: bool,
}

/// `brook tail`'s arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TailArgs {
    /// The connection string.
    pub(crate) uri: String,
    /// Where to read the password from (`--password-file`).
    pub(crate) password_file: Option<PathBuf>,
    /// What to follow.
    pub(crate) target: Target,
    /// The stream's options.
    pub(crate) watch: WatchOptions,
    /// Where to keep the resume token.
    pub(crate) resume_file: Option<PathBuf>,
    /// Stop after this many events.
    pub(crate) count: Option<u64>,
    /// How often statistics are written (`--stats-every`).
    pub(crate) stats_every: Option<Duration>,
}

/// The shortest `--stats-every`.
pub(crate) const MIN_STATS_EVERY: Duration = Duration::from_millis(100);
/// The longest `--stats-every` (a day).
pub(crate) const MAX_STATS_EVERY: Duration = Duration::from_secs(86_400);

/// `brook demo-writer`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriterArgs {
    /// The connection string.
    pub(crate) uri: String,
    /// Where to read the password from (`--password-file`).
    pub(crate) password_file: Option<PathBuf>,
    /// The database.
    pub(crate) db: String,
    /// The collection.
    pub(crate) coll: String,
    /// Stop after this many operations.
    pub(crate) count: Option<u64>,
    /// The pause between operations.
    pub(crate) interval: Duration,
}

/// When `brook bench` stops writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BenchLength {
    /// Write for this long after the warm-up.
    Duration(Duration),
    /// Write this many measured documents.
    Events(u64),
}

/// `brook bench`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BenchArgs {
    /// The connection string.
    pub(crate) uri: String,
    /// Where to read the password from (`--password-file`).
    pub(crate) password_file: Option<PathBuf>,
    /// The database.
    pub(crate) db: String,
    /// The collection.
    pub(crate) coll: String,
    /// Writes per second.
    pub(crate) rate: u32,
    /// How long the measured part lasts.
    pub(crate) length: BenchLength,
    /// The unmeasured start.
    pub(crate) warmup: Duration,
    /// `batchSize` of the stream.
    pub(crate) batch_size: Option<u32>,
    /// `maxAwaitTimeMS` of the getMores.
    pub(crate) max_await_time: Option<Duration>,
    /// The size of each inserted document.
    pub(crate) doc_size: usize,
    /// Print JSON instead of the table.
    pub(crate) json: bool,
    /// Leave the inserted documents.
    pub(crate) keep: bool,
}

/// The default write rate of `brook bench`.
pub(crate) const DEFAULT_BENCH_RATE: u32 = 200;
/// The default measured length of `brook bench`.
pub(crate) const DEFAULT_BENCH_DURATION: Duration = Duration::from_secs(10);
/// The default warm-up of `brook bench`.
pub(crate) const DEFAULT_BENCH_WARMUP: Duration = Duration::from_secs(1);
/// The default inserted document size of `brook bench`.
pub(crate) const DEFAULT_BENCH_DOC_SIZE: usize = 256;
/// The largest `--doc-size` (the server's 16 MiB document limit).
pub(crate) const MAX_BENCH_DOC_SIZE: usize = 16 * 1024 * 1024;

/// The default pause of `demo-writer`.
pub(crate) const DEFAULT_WRITER_INTERVAL: Duration = Duration::from_millis(200);

/// Parses the arguments after the program name.
pub(crate) fn parse<I>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let env_uri = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty());
    parse_with_env(args, env_uri.as_deref())
}

/// [`parse`] with `env_uri` standing for `MONGODB_URI`.
pub(crate) fn parse_with_env<I>(args: I, env_uri: Option<&str>) -> Result<Command, CliError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut parser = lexopt::Parser::from_args(args);
    match parser.next()? {
        None => Err(CliError::usage("no command given")),
        Some(Short('h') | Long("help")) => Ok(Command::Help(MAIN_USAGE)),
        Some(Short('V') | Long("version")) => Ok(Command::Version),
        Some(Value(command)) => match command.string()?.as_str() {
            "tail" => parse_tail(&mut parser, env_uri),
            "demo-writer" => parse_writer(&mut parser, env_uri),
            "bench" => parse_bench(&mut parser, env_uri),
            "help" => match parser.next()? {
                None => Ok(Command::Help(MAIN_USAGE)),
                Some(Value(topic)) => match topic.string()?.as_str() {
                    "tail" => Ok(Command::Help(TAIL_USAGE)),
                    "demo-writer" => Ok(Command::Help(WRITER_USAGE)),
                    "bench" => Ok(Command::Help(BENCH_USAGE)),
                    other => Err(CliError::usage(format!(
                        "no help for unknown command `{other}`"
                    ))),
                },
                Some(other) => Err(other.unexpected().into()),
            },
            other => Err(CliError::usage(format!("unknown command `{other}`"))),
        },
        Some(other) => Err(other.unexpected().into()),
    }
}

/// The value of the option being parsed, as UTF-8.
fn string_value(parser: &mut lexopt::Parser) -> Result<String, CliError> {
    Ok(parser.value()?.string()?)
}

/// The value of `flag`, parsed as JSON with `f`.
fn json_value<T>(
    parser: &mut lexopt::Parser,
    flag: &str,
    f: impl FnOnce(&str) -> Result<T, json::JsonError>,
) -> Result<T, CliError> {
    let text = string_value(parser)?;
    f(&text).map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// A whole number for `flag`.
fn number_value<T: std::str::FromStr>(
    parser: &mut lexopt::Parser,
    flag: &str,
    what: &str,
) -> Result<T, CliError> {
    let text = string_value(parser)?;
    text.trim()
        .parse::<T>()
        .map_err(|_| CliError::usage(format!("{flag}: expected {what}, got `{text}`")))
}

/// `T:I`, seconds and increment of a cluster time.
pub(crate) fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    let bad = || format!("expected <seconds>:<increment> (e.g. 1700000000:1), got `{text}`");
    let (time, increment) = text.split_once(':').ok_or_else(bad)?;
    Ok(Timestamp {
        time: time.trim().parse().map_err(|_| bad())?,
        increment: increment.trim().parse().map_err(|_| bad())?,
    })
}

/// `<db>[.<coll>]`: the collection name is everything after the first dot (database
/// names cannot contain one, collection names can).
pub(crate) fn parse_namespace(text: &str) -> Result<Target, String> {
    match text.split_once('.') {
        None if text.is_empty() => Err("the database name is empty".to_owned()),
        None => Ok(Target::Database(text.to_owned())),
        Some(("", _)) => Err(format!("`{text}`: the database name is empty")),
        Some((_, "")) => Err(format!("`{text}`: the collection name is empty")),
        Some((db, coll)) => Ok(Target::Collection {
            db: db.to_owned(),
            coll: coll.to_owned(),
        }),
    }
}

/// Refuses a connection string brook cannot parse (a usage error, exit 2). The URI is
/// shown without its password.
fn check_uri(uri: &str) -> Result<(), CliError> {
    brook::ClientOptions::parse(uri)
        .map(|_| ())
        .map_err(|e| CliError::usage(format!("`{}`: {e}", brook::redact_uri(uri))))
}

/// Whether `arg` is a connection string rather than a namespace.
fn is_uri(arg: &str) -> bool {
    arg.starts_with("mongodb://") || arg.starts_with("mongodb+srv://")
}

/// The command's connection string: its first argument when that is one, else
/// `MONGODB_URI` (`env_uri`).
fn take_uri(
    positionals: &mut Vec<String>,
    env_uri: Option<&str>,
    command: &str,
    others: usize,
) -> Result<String, CliError> {
    match positionals.first() {
        Some(first) if is_uri(first) => Ok(positionals.remove(0)),
        // Meant as a connection string (it looks like one, or there is one argument more
        // than the command takes besides it), but not one, whatever MONGODB_URI says.
        Some(first) if first.contains("://") || positionals.len() > others => {
            Err(CliError::usage(format!(
                "{command}: `{}` is not a MongoDB connection string (mongodb:// or \
             mongodb+srv://)",
                brook::redact_uri(first)
            )))
        }
        _ => match env_uri {
            Some(uri) => Ok(uri.to_owned()),
            None => Err(CliError::usage(format!(
                "{command}: missing <uri> (give it first, or set MONGODB_URI)"
            ))),
        },
    }
}

/// A path value of `flag`.
fn path_value(parser: &mut lexopt::Parser, flag: &str) -> Result<PathBuf, CliError> {
    let path = PathBuf::from(parser.value()?);
    if path.as_os_str().is_empty() {
        return Err(CliError::usage(format!("{flag}: the path is empty")));
    }
    Ok(path)
}

fn at_least_one(flag: &str, n: u64) -> Result<u64, CliError> {
    if n == 0 {
        Err(CliError::usage(format!("{flag}: must be at least 1")))
    } else {
        Ok(n)
    }
}

fn parse_tail(parser: &mut lexopt::Parser, env_uri: Option<&str>) -> Result<Command, CliError> {
    let mut positionals: Vec<String> = Vec::new();
    let mut password_file = None;
    let mut cluster = false;
    let mut watch = WatchOptions::default();
    let mut resume_file = None;
    let mut count = None;
    let mut stats_every = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(TAIL_USAGE)),
            Long("cluster") => cluster = true,
            Long("pipeline") => {
                watch.pipeline = json_value(parser, "--pipeline", json::parse_pipeline)?;
            }
            Long("full-document") => watch.full_document = Some(string_value(parser)?),
            Long("full-document-before-change") => {
                watch.full_document_before_change = Some(string_value(parser)?);
            }
            Long("resume-after") => {
                watch.resume_after =
                    Some(json_value(parser, "--resume-after", json::parse_document)?);
            }
            Long("start-after") => {
                watch.start_after =
                    Some(json_value(parser, "--start-after", json::parse_document)?);
            }
            Long("start-at-operation-time") => {
                let text = string_value(parser)?;
                watch.start_at_operation_time = Some(
                    parse_timestamp(&text)
                        .map_err(|e| CliError::usage(format!("--start-at-operation-time: {e}")))?,
                );
            }
            Long("max-await-time") => {
                let ms: u64 = number_value(parser, "--max-await-time", "milliseconds")?;
                watch.max_await_time = Some(Duration::from_millis(ms));
            }
            Long("batch-size") => {
                watch.batch_size = Some(number_value(
                    parser,
                    "--batch-size",
                    "a whole number up to 4294967295",
                )?);
            }
            Long("collation") => {
                watch.collation = Some(json_value(parser, "--collation", json::parse_document)?);
            }
            Long("comment") => watch.comment = Some(string_value(parser)?),
            Long("show-expanded-events") => watch.show_expanded_events = true,
            Long("resume-file") => {
                let path = PathBuf::from(parser.value()?);
                if path.as_os_str().is_empty() {
                    return Err(CliError::usage("--resume-file: the path is empty"));
                }
                resume_file = Some(path);
            }
            Long("count") => {
                let n = number_value(parser, "--count", "a whole number")?;
                count = Some(at_least_one("--count", n)?);
            }
            Long("stats-every") => {
                let every = seconds_value(parser, "--stats-every")?;
                if every < MIN_STATS_EVERY {
                    return Err(CliError::usage(format!(
                        "--stats-every: must be at least {} seconds",
                        MIN_STATS_EVERY.as_secs_f64()
                    )));
                }
                stats_every = Some(every.min(MAX_STATS_EVERY));
            }
            Long("password-file") => password_file = Some(path_value(parser, "--password-file")?),
            Value(v) => positionals.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let uri = take_uri(&mut positionals, env_uri, "tail", usize::from(!cluster))?;
    check_uri(&uri)?;
    let mut positionals = positionals.into_iter();
    let target = match (positionals.next(), cluster) {
        (None, true) => Target::Cluster,
        (Some(ns), false) => {
            parse_namespace(&ns).map_err(|e| CliError::usage(format!("tail: {e}")))?
        }
        (None, false) => {
            return Err(CliError::usage(
                "tail: missing <db>[.<coll>] (or --cluster for the whole deployment)",
            ));
        }
        (Some(ns), true) => {
            return Err(CliError::usage(format!(
                "tail: --cluster follows every database, drop `{ns}`"
            )));
        }
    };
    if let Some(extra) = positionals.next() {
        return Err(CliError::usage(format!(
            "tail: unexpected argument `{extra}`"
        )));
    }
    Ok(Command::Tail(Box::new(TailArgs {
        uri,
        password_file,
        target,
        watch,
        resume_file,
        count,
        stats_every,
    })))
}

fn parse_writer(parser: &mut lexopt::Parser, env_uri: Option<&str>) -> Result<Command, CliError> {
    let mut positionals: Vec<String> = Vec::new();
    let mut password_file = None;
    let mut count = None;
    let mut interval = DEFAULT_WRITER_INTERVAL;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(WRITER_USAGE)),
            Long("count") => {
                let n = number_value(parser, "--count", "a whole number")?;
                count = Some(at_least_one("--count", n)?);
            }
            Long("interval-ms") => {
                let ms: u64 = number_value(parser, "--interval-ms", "milliseconds")?;
                interval = Duration::from_millis(ms);
            }
            Long("password-file") => password_file = Some(path_value(parser, "--password-file")?),
            Value(v) => positionals.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let uri = take_uri(&mut positionals, env_uri, "demo-writer", 1)?;
    check_uri(&uri)?;
    let mut positionals = positionals.into_iter();
    let ns = positionals
        .next()
        .ok_or_else(|| CliError::usage("demo-writer: missing <db>.<coll>"))?;
    let (db, coll) = match parse_namespace(&ns) {
        Ok(Target::Collection { db, coll }) => (db, coll),
        Ok(_) => {
            return Err(CliError::usage(format!(
                "demo-writer: `{ns}` names no collection (expected <db>.<coll>)"
            )));
        }
        Err(e) => return Err(CliError::usage(format!("demo-writer: {e}"))),
    };
    if let Some(extra) = positionals.next() {
        return Err(CliError::usage(format!(
            "demo-writer: unexpected argument `{extra}`"
        )));
    }
    Ok(Command::DemoWriter(WriterArgs {
        uri,
        password_file,
        db,
        coll,
        count,
        interval,
    }))
}

/// Seconds for `flag`: a non-negative decimal number (e.g. `2.5`), at most a day.
fn seconds_value(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, CliError> {
    let text = string_value(parser)?;
    let bad = || {
        CliError::usage(format!(
            "{flag}: expected seconds (e.g. 10 or 2.5), got `{text}`"
        ))
    };
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(CliError::usage(format!(
            "{flag}: must be between 0 and 86400 seconds, got `{text}`"
        )));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn parse_bench(parser: &mut lexopt::Parser, env_uri: Option<&str>) -> Result<Command, CliError> {
    let mut positionals: Vec<String> = Vec::new();
    let mut password_file = None;
    let mut rate = DEFAULT_BENCH_RATE;
    let mut duration = None;
    let mut events = None;
    let mut warmup = DEFAULT_BENCH_WARMUP;
    let mut batch_size = None;
    let mut max_await_time = None;
    let mut doc_size = DEFAULT_BENCH_DOC_SIZE;
    let mut json = false;
    let mut keep = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(BENCH_USAGE)),
            Long("rate") => {
                let n: u32 = number_value(parser, "--rate", "writes per second, 1 to 1000000")?;
                if !(1..=1_000_000).contains(&n) {
                    return Err(CliError::usage(format!(
                        "--rate: must be between 1 and 1000000, got {n}"
                    )));
                }
                rate = n;
            }
            Long("duration") => {
                let d = seconds_value(parser, "--duration")?;
                if d.is_zero() {
                    return Err(CliError::usage("--duration: must be more than 0"));
                }
                duration = Some(d);
            }
            Long("events") => {
                let n = number_value(parser, "--events", "a whole number")?;
                events = Some(at_least_one("--events", n)?);
            }
            Long("warmup") => warmup = seconds_value(parser, "--warmup")?,
            Long("batch-size") => {
                batch_size = Some(number_value(
                    parser,
                    "--batch-size",
                    "a whole number up to 4294967295",
                )?);
            }
            Long("max-await-time") => {
                let ms: u64 = number_value(parser, "--max-await-time", "milliseconds")?;
                max_await_time = Some(Duration::from_millis(ms));
            }
            Long("doc-size") => {
                let n: usize = number_value(parser, "--doc-size", "a size in bytes")?;
                if n > MAX_BENCH_DOC_SIZE {
                    return Err(CliError::usage(format!(
                        "--doc-size: at most {MAX_BENCH_DOC_SIZE} bytes, got {n}"
                    )));
                }
                doc_size = n;
            }
            Long("json") => json = true,
            Long("keep") => keep = true,
            Long("password-file") => password_file = Some(path_value(parser, "--password-file")?),
            Value(v) => positionals.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let length = match (duration, events) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "bench: --duration and --events exclude each other",
            ));
        }
        (Some(d), None) => BenchLength::Duration(d),
        (None, Some(n)) => BenchLength::Events(n),
        (None, None) => BenchLength::Duration(DEFAULT_BENCH_DURATION),
    };
    let uri = take_uri(&mut positionals, env_uri, "bench", 1)?;
    check_uri(&uri)?;
    let mut positionals = positionals.into_iter();
    let ns = positionals
        .next()
        .ok_or_else(|| CliError::usage("bench: missing <db>.<coll>"))?;
    let (db, coll) = match parse_namespace(&ns) {
        Ok(Target::Collection { db, coll }) => (db, coll),
        Ok(_) => {
            return Err(CliError::usage(format!(
                "bench: `{ns}` names no collection (expected <db>.<coll>)"
            )));
        }
        Err(e) => return Err(CliError::usage(format!("bench: {e}"))),
    };
    if let Some(extra) = positionals.next() {
        return Err(CliError::usage(format!(
            "bench: unexpected argument `{extra}`"
        )));
    }
    Ok(Command::Bench(BenchArgs {
        uri,
        password_file,
        db,
        coll,
        rate,
        length,
        warmup,
        batch_size,
        max_await_time,
        doc_size,
        json,
        keep,
    }))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    const URI: &str = "mongodb://127.0.0.1:27017/";

    fn parse_strs(args: &[&str]) -> Result<Command, CliError> {
        parse_with_env(args.iter().copied(), None)
    }

    #[test]
    fn the_uri_may_come_from_mongodb_uri() {
        let env = Some("mongodb://env-host/");
        let from_env = |args: &[&str]| match parse_with_env(args.iter().copied(), env) {
            Ok(Command::Tail(t)) => *t,
            other => panic!("{args:?} gave {other:?}"),
        };
        let t = from_env(&["tail", "shop.orders"]);
        assert_eq!(t.uri, "mongodb://env-host/");
        assert_eq!(
            t.target,
            Target::Collection {
                db: "shop".into(),
                coll: "orders".into()
            }
        );
        assert_eq!(from_env(&["tail", "--cluster"]).target, Target::Cluster);
        // A URI on the command line wins.
        assert_eq!(from_env(&["tail", URI, "shop"]).uri, URI);
        for args in [
            &["demo-writer", "shop.orders"][..],
            &["bench", "shop.orders"],
        ] {
            let uri = match parse_with_env(args.iter().copied(), env) {
                Ok(Command::DemoWriter(w)) => w.uri,
                Ok(Command::Bench(b)) => b.uri,
                other => panic!("{args:?} gave {other:?}"),
            };
            assert_eq!(uri, "mongodb://env-host/");
        }
        let err = parse_strs(&["tail", "shop.orders"]).unwrap_err();
        assert!(err.line().contains("MONGODB_URI"), "{}", err.line());
        let err = parse_strs(&["tail", "http://u:pw123@h/", "shop"]).unwrap_err();
        assert!(
            err.line().contains("not a MongoDB connection string"),
            "{}",
            err.line()
        );
        assert!(!err.line().contains("pw123"), "{}", err.line());
    }

    #[test]
    fn password_files_are_taken_and_bad_uris_are_shown_without_password() {
        let t = tail(&["tail", URI, "shop", "--password-file", "/run/secrets/db"]);
        assert_eq!(t.password_file, Some(PathBuf::from("/run/secrets/db")));
        let err = parse_strs(&["tail", URI, "shop", "--password-file", ""]).unwrap_err();
        assert!(err.line().contains("--password-file"), "{}", err.line());
        let err = parse_strs(&["tail", "mongodb://u:pw123@h:0/", "shop"]).unwrap_err();
        assert!(!err.line().contains("pw123"), "{}", err.line());
        assert!(err.line().contains("u:****@h:0"), "{}", err.line());
    }

    fn tail(args: &[&str]) -> TailArgs {
        match parse_strs(args) {
            Ok(Command::Tail(t)) => *t,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match parse_strs(args) {
            Err(e @ CliError::Usage(_)) => e.to_string(),
            other => panic!("{args:?} gave {other:?}, not a usage error"),
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help(MAIN_USAGE));
        assert_eq!(parse_strs(&["-h"]).unwrap(), Command::Help(MAIN_USAGE));
        assert_eq!(parse_strs(&["help"]).unwrap(), Command::Help(MAIN_USAGE));
        assert_eq!(
            parse_strs(&["help", "tail"]).unwrap(),
            Command::Help(TAIL_USAGE)
        );
        assert_eq!(
            parse_strs(&["tail", "--help"]).unwrap(),
            Command::Help(TAIL_USAGE)
        );
        assert_eq!(
            parse_strs(&["tail", URI, "--help"]).unwrap(),
            Command::Help(TAIL_USAGE)
        );
        assert_eq!(
            parse_strs(&["demo-writer", "-h"]).unwrap(),
            Command::Help(WRITER_USAGE)
        );
        assert_eq!(parse_strs(&["-V"]).unwrap(), Command::Version);
        assert_eq!(parse_strs(&["--version"]).unwrap(), Command::Version);
    }

    #[test]
    fn targets() {
        let t = tail(&["tail", URI, "shop.orders"]);
        assert_eq!(t.uri, URI);
        assert_eq!(
            t.target,
            Target::Collection {
                db: "shop".into(),
                coll: "orders".into()
            }
        );
        assert_eq!(t.watch, WatchOptions::default());
        assert_eq!((t.resume_file, t.count, t.stats_every), (None, None, None));

        // Collection names may hold dots; database names cannot.
        assert_eq!(
            tail(&["tail", URI, "shop.orders.archive"]).target,
            Target::Collection {
                db: "shop".into(),
                coll: "orders.archive".into()
            }
        );
        assert_eq!(
            tail(&["tail", URI, "shop"]).target,
            Target::Database("shop".into())
        );
        assert_eq!(tail(&["tail", URI, "--cluster"]).target, Target::Cluster);
        assert_eq!(tail(&["tail", "--cluster", URI]).target, Target::Cluster);
    }

    #[test]
    fn every_watch_option() {
        let t = tail(&[
            "tail",
            URI,
            "shop.orders",
            "--pipeline",
            r#"[{"$match": {"operationType": "insert"}}]"#,
            "--full-document",
            "updateLookup",
            "--full-document-before-change=whenAvailable",
            "--resume-after",
            r#"{"_data": "8201"}"#,
            "--start-after",
            r#"{"_data": "8202"}"#,
            "--start-at-operation-time",
            "1700000000:5",
            "--max-await-time",
            "250",
            "--batch-size",
            "100",
            "--collation",
            r#"{"locale": "fr", "strength": 1}"#,
            "--comment",
            "from the cli",
            "--show-expanded-events",
            "--resume-file",
            "/tmp/token.json",
            "--count",
            "3",
            "--stats-every",
            "2.5",
        ]);
        let expected = WatchOptions {
            pipeline: vec![doc! { "$match": { "operationType": "insert" } }],
            full_document: Some("updateLookup".into()),
            full_document_before_change: Some("whenAvailable".into()),
            resume_after: Some(doc! { "_data": "8201" }),
            start_after: Some(doc! { "_data": "8202" }),
            start_at_operation_time: Some(Timestamp {
                time: 1_700_000_000,
                increment: 5,
            }),
            max_await_time: Some(Duration::from_millis(250)),
            batch_size: Some(100),
            collation: Some(doc! { "locale": "fr", "strength": 1 }),
            comment: Some("from the cli".into()),
            show_expanded_events: true,
        };
        assert_eq!(t.watch, expected);
        assert_eq!(t.resume_file, Some(PathBuf::from("/tmp/token.json")));
        assert_eq!(t.count, Some(3));
        assert_eq!(t.stats_every, Some(Duration::from_millis(2500)));
        assert_eq!(tail(&["tail", URI, "a.b"]).stats_every, None);
        assert_eq!(
            tail(&["tail", URI, "a.b", "--stats-every=86400"]).stats_every,
            Some(MAX_STATS_EVERY)
        );
    }

    #[test]
    fn usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["frobnicate"], "unknown command `frobnicate`"),
            (&["--bogus"], "--bogus"),
            (&["tail"], "missing <uri>"),
            (&["tail", URI], "missing <db>[.<coll>]"),
            (&["tail", URI, "a.b", "c"], "unexpected argument `c`"),
            (&["tail", URI, "a.b", "--cluster"], "--cluster"),
            (&["tail", URI, ".b"], "database name is empty"),
            (&["tail", URI, "a."], "collection name is empty"),
            (&["tail", URI, "a.b", "--frob"], "--frob"),
            (&["tail", URI, "a.b", "--count"], "--count"),
            (
                &["tail", URI, "a.b", "--count", "x"],
                "--count: expected a whole number",
            ),
            (
                &["tail", URI, "a.b", "--count", "0"],
                "--count: must be at least 1",
            ),
            (&["tail", URI, "a.b", "--batch-size", "-1"], "--batch-size"),
            (
                &["tail", URI, "a.b", "--max-await-time", "1.5"],
                "--max-await-time",
            ),
            (
                &["tail", URI, "a.b", "--pipeline", "{}"],
                "--pipeline: expected a JSON array",
            ),
            (
                &["tail", URI, "a.b", "--pipeline", "[1]"],
                "--pipeline: stage 0",
            ),
            (
                &["tail", URI, "a.b", "--resume-after", "nope"],
                "--resume-after: invalid JSON",
            ),
            (&["tail", URI, "a.b", "--collation", "[]"], "--collation"),
            (
                &["tail", URI, "a.b", "--start-at-operation-time", "12"],
                "<seconds>:<increment>",
            ),
            (&["tail", URI, "a.b", "--resume-file", ""], "--resume-file"),
            (
                &["tail", URI, "a.b", "--stats-every", "0"],
                "--stats-every: must be at least 0.1 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "0.05"],
                "--stats-every: must be at least 0.1 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "86401"],
                "--stats-every: must be between 0 and 86400 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "-1"],
                "--stats-every: must be between",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "often"],
                "--stats-every: expected seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "inf"],
                "--stats-every",
            ),
            (&["tail", URI, "a.b", "--stats-every"], "--stats-every"),
            (
                &["tail", URI, "a.b", "--show-expanded-events=yes"],
                "show-expanded-events",
            ),
            (&["tail", "http://x", "a.b"], "`http://x`"),
            (&["demo-writer", URI], "missing <db>.<coll>"),
            (&["demo-writer", URI, "db"], "names no collection"),
            (
                &["demo-writer", URI, "a.b", "--interval-ms", "soon"],
                "--interval-ms",
            ),
            (&["help", "nope"], "unknown command `nope`"),
        ];
        for (args, needle) in cases {
            let message = usage_error(args);
            assert!(
                message.contains(needle),
                "{args:?}: `{message}` lacks `{needle}`"
            );
        }
    }

    #[test]
    fn demo_writer() {
        assert_eq!(
            parse_strs(&[
                "demo-writer",
                URI,
                "demo.events",
                "--count",
                "7",
                "--interval-ms",
                "5"
            ])
            .unwrap(),
            Command::DemoWriter(WriterArgs {
                uri: URI.into(),
                password_file: None,
                db: "demo".into(),
                coll: "events".into(),
                count: Some(7),
                interval: Duration::from_millis(5),
            })
        );
        let Command::DemoWriter(w) = parse_strs(&["demo-writer", URI, "demo.events"]).unwrap()
        else {
            panic!("not a demo-writer");
        };
        assert_eq!((w.count, w.interval), (None, DEFAULT_WRITER_INTERVAL));
    }

    fn bench(args: &[&str]) -> BenchArgs {
        match parse_strs(args) {
            Ok(Command::Bench(b)) => b,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn bench_defaults_and_every_flag() {
        let b = bench(&["bench", URI, "benchdb.events"]);
        assert_eq!(
            b,
            BenchArgs {
                uri: URI.into(),
                password_file: None,
                db: "benchdb".into(),
                coll: "events".into(),
                rate: DEFAULT_BENCH_RATE,
                length: BenchLength::Duration(DEFAULT_BENCH_DURATION),
                warmup: DEFAULT_BENCH_WARMUP,
                batch_size: None,
                max_await_time: None,
                doc_size: DEFAULT_BENCH_DOC_SIZE,
                json: false,
                keep: false,
            }
        );
        let b = bench(&[
            "bench",
            URI,
            "b.c",
            "--rate",
            "500",
            "--duration",
            "2.5",
            "--warmup=0",
            "--batch-size",
            "10",
            "--max-await-time",
            "50",
            "--doc-size",
            "1024",
            "--json",
            "--keep",
        ]);
        assert_eq!(b.rate, 500);
        assert_eq!(b.length, BenchLength::Duration(Duration::from_millis(2500)));
        assert_eq!(b.warmup, Duration::ZERO);
        assert_eq!(b.batch_size, Some(10));
        assert_eq!(b.max_await_time, Some(Duration::from_millis(50)));
        assert_eq!(b.doc_size, 1024);
        assert!(b.json && b.keep);
        assert_eq!(
            bench(&["bench", URI, "b.c", "--events", "50"]).length,
            BenchLength::Events(50)
        );
        assert_eq!(
            parse_strs(&["help", "bench"]).unwrap(),
            Command::Help(BENCH_USAGE)
        );
        assert_eq!(
            parse_strs(&["bench", "--help"]).unwrap(),
            Command::Help(BENCH_USAGE)
        );
    }

    #[test]
    fn bench_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["bench"], "bench: missing <uri>"),
            (&["bench", URI], "bench: missing <db>.<coll>"),
            (&["bench", URI, "db"], "names no collection"),
            (&["bench", URI, "a.b", "x"], "unexpected argument `x`"),
            (
                &["bench", URI, "a.b", "--rate", "0"],
                "--rate: must be between",
            ),
            (&["bench", URI, "a.b", "--rate", "fast"], "--rate: expected"),
            (
                &["bench", URI, "a.b", "--duration", "0"],
                "--duration: must be more than 0",
            ),
            (
                &["bench", URI, "a.b", "--duration", "-1"],
                "--duration: must be between",
            ),
            (&["bench", URI, "a.b", "--duration", "NaN"], "--duration"),
            (
                &["bench", URI, "a.b", "--warmup", "soon"],
                "--warmup: expected seconds",
            ),
            (
                &["bench", URI, "a.b", "--events", "0"],
                "--events: must be at least 1",
            ),
            (
                &["bench", URI, "a.b", "--events", "5", "--duration", "1"],
                "exclude each other",
            ),
            (
                &["bench", URI, "a.b", "--doc-size", "99999999"],
                "--doc-size: at most",
            ),
            (&["bench", URI, "a.b", "--json=yes"], "json"),
            (&["bench", URI, "a.b", "--frob"], "--frob"),
        ];
        for (args, needle) in cases {
            let message = usage_error(args);
            assert!(
                message.contains(needle),
                "{args:?}: `{message}` lacks `{needle}`"
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp("5:6").unwrap(),
            Timestamp {
                time: 5,
                increment: 6
            }
        );
        for bad in ["", "5", "5:", ":6", "a:b", "5:6:7", "-1:0", "4294967296:0"] {
            assert!(parse_timestamp(bad).is_err(), "accepted {bad:?}");
        }
    }
}
