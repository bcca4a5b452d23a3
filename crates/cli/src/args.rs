//! The command line: one clap definition ([`Cli`]) that the parser, `--help`, the shell
//! completions (`brook completions`) and the man page (`brook man`) are all made from, so
//! that none of them can drift from the others. [`parse`] turns it into a [`Command`],
//! with the checks clap cannot express (where the URI comes from, what a namespace
//! names) done after it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bson::{Document, Timestamp};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::error::CliError;
use crate::json::{self, JsonFormat};

/// What every command says after its options about connection strings and errors.
const CONNECTION_NOTES: &str = "\
<URI> may be left out when the MONGODB_URI environment variable holds it (a first
argument that does not start with mongodb:// or mongodb+srv:// is not taken for one).
--password-file PATH reads the password from PATH (its first line) instead of the URI,
so that it stays out of the process list and shell history. A URI is never printed
with its password.

Errors print one line `brook: error: …` on stderr; the exit status is 2 for a bad
command line and 1 for a failure while running.";

/// `brook tail --help`, after the options.
const TAIL_NOTES: &str = "\
Each change event is printed as one line of extended JSON on stdout, as the server sent
it (fields in order, nothing decoded or dropped). <DB>.<COLL> follows a collection,
<DB> alone a database, --cluster every database of the deployment.

The connection string takes every brook URI option. Without serverSelectionTimeoutMS
in it, brook tail gives up finding a server after 10 s. Live statistics (events/s,
getMore round trips, resumes, lag) are shown on stderr when stderr is a terminal;
elsewhere stderr stays quiet unless --stats-every asks for JSON lines.
Ctrl-C or SIGTERM closes the stream and exits 0.

<URI> may be left out when MONGODB_URI holds it. A password is never printed.";

/// `brook bench --help`, after the options.
const BENCH_NOTES: &str = "\
After the last write the bench waits up to 5 s for the events still missing. Every
inserted document carries {brookBench: \"<run id>\"} (a new ObjectId's hex string,
printed as run_id); at the end, also after an error and after Ctrl-C or SIGTERM (which
stop the run and print the results so far), exactly those documents are deleted with
one delete {q: {brookBench: <run id>}, limit: 0}. Nothing else is written or dropped.

getMore round trip: the time of each getMore of the stream, from sending it to its
reply, including the server's wait for events (up to maxAwaitTimeMS), so with a
long-poll it measures how a getMore waits, not the network alone.

JSON fields (--json; latencies in microseconds, rates per second):
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

<URI> may be left out when MONGODB_URI holds it. A password is never printed.";

/// The `brook` command line, as clap reads it.
#[derive(Debug, Parser)]
#[command(
    name = "brook",
    version,
    about = "Follow MongoDB change streams from the command line",
    after_help = CONNECTION_NOTES,
    disable_colored_help = true
)]
pub(crate) struct Cli {
    /// The command to run.
    #[command(subcommand)]
    command: Option<CliCommand>,
}

/// `brook`'s commands.
#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Print a change stream as JSON lines
    Tail(Box<TailCli>),
    /// Insert, update and delete documents, for the demo
    #[command(after_help = "\
Writes to <DB>.<COLL> through brook, one operation every --interval-ms, in a cycle of
insert, insert, update, delete, so that a `brook tail` of the collection sees every
kind of event. Runs until --count operations are done (default: until Ctrl-C or
SIGTERM), then prints a one-line summary on stderr.

<URI> may be left out when MONGODB_URI holds it. A password is never printed.")]
    DemoWriter(WriterCli),
    /// Measure insert-to-event latency, getMores and events/s of a change stream
    Bench(BenchCli),
    /// Print a shell completion script for brook (e.g. `brook completions bash >
    /// /etc/bash_completion.d/brook`)
    Completions {
        /// The shell the script is for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print brook's man page (roff), or a command's (`brook man tail | man -l -`)
    Man {
        /// The command whose page to print (brook's own without one)
        #[arg(
            value_name = "COMMAND",
            value_parser = ["tail", "demo-writer", "bench", "completions", "man"]
        )]
        command: Option<String>,
    },
}

/// The connection arguments every command that connects takes.
#[derive(Debug, Args)]
struct Connection {
    /// The connection string (mongodb:// or mongodb+srv://); MONGODB_URI when left out
    #[arg(value_name = "URI")]
    uri: Option<String>,
    /// The password, from the first line of PATH, instead of the URI's
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
}

/// `brook tail`'s command line.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = TAIL_NOTES,
    override_usage = "brook tail [URI] <DB>[.<COLL>] [OPTIONS]\n       brook tail [URI] --cluster [OPTIONS]"
)]
struct TailCli {
    #[command(flatten)]
    connection: Connection,
    /// What to follow: <DB>.<COLL> a collection, <DB> a database
    #[arg(value_name = "DB[.COLL]")]
    namespace: Option<String>,
    /// Follow every database of the deployment (instead of <DB>[.<COLL>])
    #[arg(long)]
    cluster: bool,
    /// Stages after $changeStream, a JSON array, e.g. '[{"$match": {"operationType": "insert"}}]'
    #[arg(long, value_name = "JSON", value_parser = pipeline_value, help_heading = "Watch options")]
    pipeline: Option<Pipeline>,
    /// fullDocument: default | updateLookup | whenAvailable | required
    #[arg(long, value_name = "V", help_heading = "Watch options")]
    full_document: Option<String>,
    /// fullDocumentBeforeChange: off | whenAvailable | required
    #[arg(long, value_name = "V", help_heading = "Watch options")]
    full_document_before_change: Option<String>,
    /// Start after this event, e.g. '{"_data": "82…"}'
    #[arg(long, value_name = "JSON_TOKEN", value_parser = document_value, help_heading = "Watch options")]
    resume_after: Option<Document>,
    /// Like --resume-after, also after an invalidate
    #[arg(long, value_name = "JSON_TOKEN", value_parser = document_value, help_heading = "Watch options")]
    start_after: Option<Document>,
    /// Start at this cluster time (<seconds>:<increment>)
    #[arg(long, value_name = "T:I", value_parser = timestamp_value, help_heading = "Watch options")]
    start_at_operation_time: Option<Timestamp>,
    /// How long each getMore waits for new events (milliseconds)
    #[arg(long, value_name = "MS", value_parser = millis_value, help_heading = "Watch options")]
    max_await_time: Option<Duration>,
    /// Events per reply
    #[arg(long, value_name = "N", value_parser = batch_size_value, help_heading = "Watch options")]
    batch_size: Option<u32>,
    /// A collation, e.g. '{"locale": "fr"}'
    #[arg(long, value_name = "JSON", value_parser = document_value, help_heading = "Watch options")]
    collation: Option<Document>,
    /// A comment for the server's logs and profiler
    #[arg(long, value_name = "STR", help_heading = "Watch options")]
    comment: Option<String>,
    /// Also DDL events (create, createIndexes, …)
    #[arg(long, help_heading = "Watch options")]
    show_expanded_events: bool,
    /// Keep the stream's resume token in PATH, and resume from it at start
    ///
    /// Saved after each batch of events is printed, after quiet periods too (the token
    /// of empty batches, at most once a second, so that a --pipeline that filters
    /// everything out does not leave a token that falls off the oplog), and at exit
    /// (written to PATH.tmp, then renamed; fsync'd at most once a second and at exit).
    /// PATH's directory must exist and be writable: checked before connecting (exit 2).
    /// At start, if PATH exists, resume from it (resumeAfter; startAfter when it holds an
    /// invalidate event's token); it then takes precedence over --resume-after,
    /// --start-after and --start-at-operation-time. Events are delivered at least once:
    /// after a crash the last events before the crash may be printed again, none is
    /// skipped.
    #[arg(long, value_name = "PATH")]
    resume_file: Option<PathBuf>,
    /// Exit 0 after N events, closing the stream
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    count: Option<u64>,
    /// Statistics every SECS seconds (0.1 to 86400; decimals allowed)
    ///
    /// When stderr is not a terminal (systemd, docker): one JSON line on stderr every
    /// SECS and once at exit: {"ts": RFC 3339 UTC with ms, "events",
    /// "events_per_second", "get_mores", "resumes", "failed_resumes", "lag_ms" (now minus
    /// the last event's commit time, null before one), "server_lag_ms" (the server's time
    /// minus the token's, null when unknown), "server" (host:port or null)}. On a
    /// terminal: how often the status line is redrawn (default 1).
    #[arg(long, value_name = "SECS", value_parser = stats_every_value)]
    stats_every: Option<Duration>,
    /// How events are printed: relaxed or canonical MongoDB Extended JSON v2
    ///
    /// relaxed (the default): numbers as JSON numbers, dates as {"$date": "…"} in UTC,
    /// always with milliseconds (2026-12-02T03:04:05.000Z) so that they sort as text
    /// (years 1970 to 9999; other dates as {"$date": {"$numberLong": "…"}}). canonical:
    /// every type kept ({"$numberInt": "1"}, {"$date": {"$numberLong": "…"}}), as
    /// mongoexport --jsonFormat=canonical prints, for tools that read the types back.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = JsonFormat::Relaxed)]
    json_format: JsonFormat,
}

/// `brook demo-writer`'s command line.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    override_usage = "brook demo-writer [URI] <DB>.<COLL> [OPTIONS]"
)]
struct WriterCli {
    #[command(flatten)]
    connection: Connection,
    /// The collection to write to
    #[arg(value_name = "DB.COLL")]
    namespace: Option<String>,
    /// Stop after N operations (default: until Ctrl-C or SIGTERM)
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    count: Option<u64>,
    /// The pause between operations, in milliseconds
    #[arg(long = "interval-ms", value_name = "M", value_parser = millis_value, default_value = "200")]
    interval: Duration,
}

/// `brook bench`'s command line.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = BENCH_NOTES,
    override_usage = "brook bench [URI] <DB>.<COLL> [OPTIONS]"
)]
struct BenchCli {
    #[command(flatten)]
    connection: Connection,
    /// The collection to write to and follow
    #[arg(value_name = "DB.COLL")]
    namespace: Option<String>,
    /// Writes per second
    ///
    /// The writer sends one insert at a time, so the achieved rate is also capped by the
    /// insert round trip; it is reported as writes/s.
    #[arg(long, value_name = "N", value_parser = rate_value, default_value_t = DEFAULT_BENCH_RATE)]
    rate: u32,
    /// How long to write after the warm-up, in seconds [default: 10]
    #[arg(long, value_name = "SECS", value_parser = positive_seconds_value)]
    duration: Option<Duration>,
    /// Instead of --duration: write N measured documents
    #[arg(long, value_name = "N", value_parser = at_least_one, conflicts_with = "duration")]
    events: Option<u64>,
    /// Write (and read) this long before measuring, in seconds
    #[arg(long, value_name = "SECS", value_parser = seconds_value, default_value = "1")]
    warmup: Duration,
    /// batchSize of the change stream's aggregate and getMores
    #[arg(long, value_name = "N", value_parser = batch_size_value)]
    batch_size: Option<u32>,
    /// maxAwaitTimeMS of the getMores (server default: 1000)
    #[arg(long, value_name = "MS", value_parser = millis_value)]
    max_await_time: Option<Duration>,
    /// Size of each inserted document, padded with a string (the smallest is the
    /// unpadded document, ~80)
    #[arg(long, value_name = "BYTES", value_parser = doc_size_value, default_value_t = DEFAULT_BENCH_DOC_SIZE)]
    doc_size: usize,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Leave the inserted documents in the collection
    #[arg(long)]
    keep: bool,
}

/// `--pipeline`'s stages (a newtype: clap would read a bare `Vec` as repeated values).
#[derive(Debug, Clone)]
struct Pipeline(Vec<Document>);

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Print this text on stdout and exit 0 (help, the version, a completion script, a
    /// man page).
    Print(String),
    /// `brook tail` (boxed: it is by far the largest variant).
    Tail(Box<TailArgs>),
    /// `brook demo-writer`.
    DemoWriter(WriterArgs),
    /// `brook bench`.
    Bench(BenchArgs),
}

impl Command {
    /// The name of the command that runs, for the help hint of its errors.
    pub(crate) fn name(&self) -> Option<&'static str> {
        match self {
            Command::Print(_) => None,
            Command::Tail(_) => Some("tail"),
            Command::DemoWriter(_) => Some("demo-writer"),
            Command::Bench(_) => Some("bench"),
        }
    }
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
    /// How events are printed (`--json-format`).
    pub(crate) json_format: JsonFormat,
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
/// The default inserted document size of `brook bench`.
pub(crate) const DEFAULT_BENCH_DOC_SIZE: usize = 256;
/// The largest `--doc-size` (the server's 16 MiB document limit).
pub(crate) const MAX_BENCH_DOC_SIZE: usize = 16 * 1024 * 1024;

/// Parses the arguments after the program name, with `MONGODB_URI` from the environment.
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
    let args: Vec<OsString> = std::iter::once(OsString::from("brook"))
        .chain(args.into_iter().map(Into::into))
        .collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return from_clap(&e, &args),
    };
    match cli.command {
        None => Err(CliError::usage("no command given")),
        Some(CliCommand::Tail(t)) => tail_args(*t, env_uri)
            .map(|t| Command::Tail(Box::new(t)))
            .map_err(|e| e.in_command("tail")),
        Some(CliCommand::DemoWriter(w)) => {
            writer_args(w, env_uri).map_err(|e| e.in_command("demo-writer"))
        }
        Some(CliCommand::Bench(b)) => bench_args(b, env_uri).map_err(|e| e.in_command("bench")),
        Some(CliCommand::Completions { shell }) => completions(shell),
        Some(CliCommand::Man { command }) => {
            man_page(command.as_deref()).map_err(|e| e.in_command("man"))
        }
    }
}

/// The commands a help hint may name (`brook tail --help`), and the titles of their man
/// pages.
const COMMANDS: [(&str, &str); 5] = [
    ("tail", "brook-tail"),
    ("demo-writer", "brook-demo-writer"),
    ("bench", "brook-bench"),
    ("completions", "brook-completions"),
    ("man", "brook-man"),
];

/// A clap error as brook shows it: help and the version are printed (exit 0); anything
/// else is one usage error, clap's message and its tip without the usage block, naming
/// the help of the command it is about.
fn from_clap(e: &clap::Error, args: &[OsString]) -> Result<Command, CliError> {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return Ok(Command::Print(e.render().to_string()));
        }
        _ => {}
    }
    let message = match (e.kind(), e.get(ContextKind::InvalidSubcommand)) {
        (ErrorKind::InvalidSubcommand, Some(ContextValue::String(name))) => {
            format!("unknown command `{name}`")
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines
                .next()
                .unwrap_or("invalid command line")
                .trim_start_matches("error: ")
                .to_owned();
            // clap's suggestions ("a similar argument exists") and the possible values
            // are worth the space; its other tips ("to pass '--x' as a value, use
            // '-- --x'") only repeat the value.
            let tips: Vec<&str> = lines
                .filter(|l| l.starts_with("tip: a similar") || l.starts_with("[possible values"))
                .map(|l| l.trim_start_matches('[').trim_end_matches(']'))
                .collect();
            if tips.is_empty() {
                first
            } else {
                format!("{first} ({})", tips.join("; "))
            }
        }
    };
    // clap quotes arguments as given: a connection string among them is shown redacted.
    let message = args
        .iter()
        .filter_map(|a| a.to_str())
        .filter(|a| a.contains("://"))
        .fold(message, |m, uri| m.replace(uri, &brook::redact_uri(uri)));
    // The command is the first argument that is not an option, when it is one of ours.
    let command = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .and_then(|a| COMMANDS.iter().find(|(c, _)| *c == a))
        .map(|(c, _)| *c);
    let error = CliError::usage(message);
    Err(match command {
        Some(name) => error.in_command(name),
        None => error,
    })
}

/// `brook completions <shell>`: the script clap_complete makes from [`Cli`].
fn completions(shell: clap_complete::Shell) -> Result<Command, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "brook", &mut script);
    String::from_utf8(script)
        .map(Command::Print)
        .map_err(|e| CliError::Failed(format!("the completion script is not UTF-8: {e}")))
}

/// `brook man [<command>]`: the man page clap_mangen makes from [`Cli`] (roff).
fn man_page(command: Option<&str>) -> Result<Command, CliError> {
    let mut cli = Cli::command();
    // Built, so that every subcommand knows its full name (`brook tail`) for its usage.
    cli.build();
    let page = match command {
        None => cli,
        Some(name) => match (
            cli.find_subcommand(name),
            COMMANDS.iter().find(|(c, _)| *c == name),
        ) {
            (Some(sub), Some((_, title))) => sub
                .clone()
                .name(*title)
                .display_name(*title)
                .version(env!("CARGO_PKG_VERSION")),
            _ => return Err(CliError::usage(format!("unknown command `{name}`"))),
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| CliError::Failed(format!("cannot render the man page: {e}")))?;
    String::from_utf8(roff)
        .map(Command::Print)
        .map_err(|e| CliError::Failed(format!("the man page is not UTF-8: {e}")))
}

// ---------------------------------------------------------------------------------------
// Values: each parser's message follows clap's "invalid value 'x' for '--flag <N>': ",
// so it neither repeats the value nor the flag.
// ---------------------------------------------------------------------------------------

/// A whole number, at least 1.
fn at_least_one(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number".to_owned()),
    }
}

/// Milliseconds, a whole number.
fn millis_value(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| "expected milliseconds (a whole number)".to_owned())
}

/// A `batchSize`.
fn batch_size_value(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| "expected a whole number up to 4294967295".to_owned())
}

/// `brook bench --rate`.
fn rate_value(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(_) => Err("must be between 1 and 1000000".to_owned()),
        Err(_) => Err("expected writes per second, 1 to 1000000".to_owned()),
    }
}

/// `brook bench --doc-size`.
fn doc_size_value(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= MAX_BENCH_DOC_SIZE => Ok(n),
        Ok(_) => Err(format!("at most {MAX_BENCH_DOC_SIZE} bytes")),
        Err(_) => Err("expected a size in bytes".to_owned()),
    }
}

/// Seconds: a non-negative decimal number (e.g. `2.5`), at most a day.
fn seconds_value(text: &str) -> Result<Duration, String> {
    let bad = || "expected seconds (e.g. 10 or 2.5)".to_owned();
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err("must be between 0 and 86400 seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Seconds, more than 0 (`--duration`).
fn positive_seconds_value(text: &str) -> Result<Duration, String> {
    match seconds_value(text)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
}

/// `--stats-every`: seconds from [`MIN_STATS_EVERY`] to [`MAX_STATS_EVERY`].
fn stats_every_value(text: &str) -> Result<Duration, String> {
    let every = seconds_value(text)?;
    if every < MIN_STATS_EVERY {
        return Err(format!(
            "must be at least {} seconds",
            MIN_STATS_EVERY.as_secs_f64()
        ));
    }
    Ok(every.min(MAX_STATS_EVERY))
}

/// `--pipeline`.
fn pipeline_value(text: &str) -> Result<Pipeline, String> {
    json::parse_pipeline(text)
        .map(Pipeline)
        .map_err(|e| e.to_string())
}

/// A JSON document (`--resume-after`, `--collation`…).
fn document_value(text: &str) -> Result<Document, String> {
    json::parse_document(text).map_err(|e| e.to_string())
}

/// `--start-at-operation-time`.
fn timestamp_value(text: &str) -> Result<Timestamp, String> {
    parse_timestamp(text)
}

/// `T:I`, seconds and increment of a cluster time.
pub(crate) fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    let bad = || "expected <seconds>:<increment> (e.g. 1700000000:1)".to_owned();
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

// ---------------------------------------------------------------------------------------
// After clap: where the URI comes from, what the namespace names
// ---------------------------------------------------------------------------------------

/// Whether `arg` is a connection string rather than a namespace.
fn is_uri(arg: &str) -> bool {
    arg.starts_with("mongodb://") || arg.starts_with("mongodb+srv://")
}

/// The connection string and the namespace argument. clap hands the first positional
/// argument over as `uri`, but with `MONGODB_URI` set, `brook tail shop.orders` means
/// the namespace: a first argument is the URI only when it is one. `others` is how many
/// arguments the command takes besides the URI. The URI is checked (brook must be able
/// to parse it) and shown without its password.
fn split_uri(
    uri: Option<String>,
    namespace: Option<String>,
    env_uri: Option<&str>,
    others: usize,
) -> Result<(String, Option<String>), CliError> {
    let mut positionals: Vec<String> = uri.into_iter().chain(namespace).collect();
    let uri = match positionals.first() {
        Some(first) if is_uri(first) => positionals.remove(0),
        // Meant as a connection string (it looks like one, or there is one argument more
        // than the command takes besides it), but not one, whatever MONGODB_URI says.
        Some(first) if first.contains("://") || positionals.len() > others => {
            return Err(CliError::usage(format!(
                "`{}` is not a MongoDB connection string (mongodb:// or mongodb+srv://)",
                brook::redact_uri(first)
            )));
        }
        _ => match env_uri {
            Some(uri) => uri.to_owned(),
            None => {
                return Err(CliError::usage(
                    "missing <URI> (give it first, or set MONGODB_URI)",
                ));
            }
        },
    };
    brook::ClientOptions::parse(&uri)
        .map_err(|e| CliError::usage(format!("`{}`: {e}", brook::redact_uri(&uri))))?;
    Ok((uri, positionals.pop()))
}

/// The `<db>.<coll>` of `demo-writer` and `bench`.
fn collection(namespace: Option<String>) -> Result<(String, String), CliError> {
    let ns = namespace.ok_or_else(|| CliError::usage("missing <DB>.<COLL>"))?;
    match parse_namespace(&ns) {
        Ok(Target::Collection { db, coll }) => Ok((db, coll)),
        Ok(_) => Err(CliError::usage(format!(
            "`{ns}` names no collection (expected <DB>.<COLL>)"
        ))),
        Err(e) => Err(CliError::usage(e)),
    }
}

fn tail_args(t: TailCli, env_uri: Option<&str>) -> Result<TailArgs, CliError> {
    let others = usize::from(!t.cluster);
    let (uri, namespace) = split_uri(t.connection.uri, t.namespace, env_uri, others)?;
    let target = match (namespace, t.cluster) {
        (None, true) => Target::Cluster,
        (Some(ns), false) => parse_namespace(&ns).map_err(CliError::usage)?,
        (None, false) => {
            return Err(CliError::usage(
                "missing <DB>[.<COLL>] (or --cluster for the whole deployment)",
            ));
        }
        (Some(ns), true) => {
            return Err(CliError::usage(format!(
                "--cluster follows every database, drop `{ns}`"
            )));
        }
    };
    Ok(TailArgs {
        uri,
        password_file: t.connection.password_file,
        target,
        watch: WatchOptions {
            pipeline: t.pipeline.map(|p| p.0).unwrap_or_default(),
            full_document: t.full_document,
            full_document_before_change: t.full_document_before_change,
            resume_after: t.resume_after,
            start_after: t.start_after,
            start_at_operation_time: t.start_at_operation_time,
            max_await_time: t.max_await_time,
            batch_size: t.batch_size,
            collation: t.collation,
            comment: t.comment,
            show_expanded_events: t.show_expanded_events,
        },
        resume_file: t.resume_file,
        count: t.count,
        stats_every: t.stats_every,
        json_format: t.json_format,
    })
}

fn writer_args(w: WriterCli, env_uri: Option<&str>) -> Result<Command, CliError> {
    let (uri, namespace) = split_uri(w.connection.uri, w.namespace, env_uri, 1)?;
    let (db, coll) = collection(namespace)?;
    Ok(Command::DemoWriter(WriterArgs {
        uri,
        password_file: w.connection.password_file,
        db,
        coll,
        count: w.count,
        interval: w.interval,
    }))
}

fn bench_args(b: BenchCli, env_uri: Option<&str>) -> Result<Command, CliError> {
    let (uri, namespace) = split_uri(b.connection.uri, b.namespace, env_uri, 1)?;
    let (db, coll) = collection(namespace)?;
    let length = match (b.duration, b.events) {
        (_, Some(n)) => BenchLength::Events(n),
        (Some(d), None) => BenchLength::Duration(d),
        (None, None) => BenchLength::Duration(DEFAULT_BENCH_DURATION),
    };
    Ok(Command::Bench(BenchArgs {
        uri,
        password_file: b.connection.password_file,
        db,
        coll,
        rate: b.rate,
        length,
        warmup: b.warmup,
        batch_size: b.batch_size,
        max_await_time: b.max_await_time,
        doc_size: b.doc_size,
        json: b.json,
        keep: b.keep,
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
            Err(e @ CliError::Usage { .. }) => e.line(),
            other => panic!("{args:?} gave {other:?}, not a usage error"),
        }
    }

    fn printed(args: &[&str]) -> String {
        match parse_strs(args) {
            Ok(Command::Print(text)) => text,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        // clap's own checks of the definition (names, conflicts, value names).
        Cli::command().debug_assert();
    }

    #[test]
    fn help_and_version() {
        for args in [&["--help"][..], &["-h"], &["help"]] {
            let text = printed(args);
            assert!(text.contains("Usage: brook [COMMAND]"), "{text}");
            for command in ["tail", "demo-writer", "bench", "completions", "man"] {
                assert!(text.contains(command), "{args:?} lacks {command}");
            }
            assert!(text.contains("MONGODB_URI"), "{text}");
        }
        for args in [
            &["tail", "--help"][..],
            &["help", "tail"],
            &["tail", URI, "--help"],
            &["tail", "-h"],
        ] {
            let text = printed(args);
            assert!(text.contains("Usage: brook tail"), "{args:?}: {text}");
            for flag in [
                "--resume-file <PATH>",
                "--json-format <FORMAT>",
                "--cluster",
            ] {
                assert!(text.contains(flag), "{args:?} lacks {flag}");
            }
        }
        // The long help says more than the short one.
        assert!(printed(&["tail", "--help"]).contains("PATH.tmp"));
        assert!(printed(&["demo-writer", "-h"]).contains("Usage: brook demo-writer"));
        assert!(printed(&["bench", "--help"]).contains("cleanup_deleted"));
        let version = format!("brook {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(printed(&["-V"]), version);
        assert_eq!(printed(&["--version"]), version);
    }

    #[test]
    fn completions_for_every_shell() {
        for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
            let script = printed(&["completions", shell]);
            assert!(!script.is_empty(), "{shell}");
            assert!(script.contains("tail"), "{shell} lacks tail");
            assert!(
                script.contains("resume-file"),
                "{shell} lacks --resume-file"
            );
        }
        let message = usage_error(&["completions", "tcsh"]);
        assert!(message.contains("tcsh"), "{message}");
    }

    #[test]
    fn man_pages() {
        let page = printed(&["man"]);
        assert!(
            page.starts_with(".ie \\n(.g"),
            "{}",
            &page[..80.min(page.len())]
        );
        assert!(page.contains(".TH brook 1"), "{page}");
        assert!(page.contains("tail"), "{page}");
        let tail = printed(&["man", "tail"]);
        assert!(tail.contains(".TH brook-tail 1"), "{tail}");
        assert!(tail.contains("resume\\-file"), "{tail}");
        let title = format!(
            ".TH brook-tail 1  \"brook-tail {}\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(tail.contains(&title), "{tail}");
        let message = usage_error(&["man", "nope"]);
        assert!(message.contains("'nope'"), "{message}");
        assert!(
            message.contains("(possible values: tail, demo-writer"),
            "{message}"
        );
        assert!(message.contains("(see `brook man --help`)"), "{message}");
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
        assert_eq!(t.json_format, JsonFormat::Relaxed);

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
            "--json-format",
            "canonical",
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
        assert_eq!(t.json_format, JsonFormat::Canonical);
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
            (
                &["frobnicate"],
                "unknown command `frobnicate` (see `brook --help`)",
            ),
            (&["--bogus"], "--bogus"),
            (
                &["tail"],
                "missing <URI> (give it first, or set MONGODB_URI) (see `brook tail --help`)",
            ),
            (&["tail", URI], "missing <DB>[.<COLL>]"),
            (
                &["tail", URI, "a.b", "c"],
                "unexpected argument 'c' found (see `brook tail --help`)",
            ),
            (&["tail", URI, "a.b", "--cluster"], "--cluster"),
            (&["tail", URI, ".b"], "database name is empty"),
            (&["tail", URI, "a."], "collection name is empty"),
            (&["tail", URI, "a.b", "--frob"], "--frob"),
            (&["tail", URI, "a.b", "--count"], "--count"),
            (
                &["tail", URI, "a.b", "--count", "x"],
                "invalid value 'x' for '--count <N>': expected a whole number (see `brook tail --help`)",
            ),
            (
                &["tail", URI, "a.b", "--count", "0"],
                "'--count <N>': must be at least 1",
            ),
            (&["tail", URI, "a.b", "--batch-size", "-1"], "--batch-size"),
            (
                &["tail", URI, "a.b", "--max-await-time", "1.5"],
                "--max-await-time",
            ),
            (
                &["tail", URI, "a.b", "--pipeline", "{}"],
                "'--pipeline <JSON>': expected a JSON array",
            ),
            (
                &["tail", URI, "a.b", "--pipeline", "[1]"],
                "'--pipeline <JSON>': stage 0",
            ),
            (
                &["tail", URI, "a.b", "--resume-after", "nope"],
                "'--resume-after <JSON_TOKEN>': invalid JSON",
            ),
            (&["tail", URI, "a.b", "--collation", "[]"], "--collation"),
            (
                &["tail", URI, "a.b", "--start-at-operation-time", "12"],
                "<seconds>:<increment>",
            ),
            (&["tail", URI, "a.b", "--resume-file", ""], "--resume-file"),
            (
                &["tail", URI, "a.b", "--stats-every", "0"],
                "'--stats-every <SECS>': must be at least 0.1 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "0.05"],
                "'--stats-every <SECS>': must be at least 0.1 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "86401"],
                "'--stats-every <SECS>': must be between 0 and 86400 seconds",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "-1"],
                "'--stats-every <SECS>': must be between",
            ),
            (
                &["tail", URI, "a.b", "--stats-every", "often"],
                "'--stats-every <SECS>': expected seconds",
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
            (
                &["demo-writer", URI],
                "missing <DB>.<COLL> (see `brook demo-writer --help`)",
            ),
            (&["demo-writer", URI, "db"], "names no collection"),
            (
                &["demo-writer", URI, "a.b", "--interval-ms", "soon"],
                "--interval-ms",
            ),
            (&["help", "nope"], "nope"),
            (&["tail", URI, "a.b", "--json-format", "xml"], "xml"),
            (
                &["tail", URI, "a.b", "mongodb://u:pw123@h/"],
                "unexpected argument 'mongodb://u:****@h/'",
            ),
            (&["tail", URI, "a.b", "--cout", "1"], "--count"),
        ];
        for (args, needle) in cases {
            let message = usage_error(args);
            assert!(
                message.contains(needle),
                "{args:?}: `{message}` lacks `{needle}`"
            );
            assert_one_clean_line(args, &message);
        }
    }

    /// One line, naming a help, without clap's usage block or a repeated value.
    fn assert_one_clean_line(args: &[&str], message: &str) {
        assert!(!message.contains('\n'), "{args:?}: {message:?}");
        assert!(message.starts_with("brook: error: "), "{message}");
        assert!(message.contains(" --help`)"), "{args:?}: {message}");
        for noise in ["Usage:", "For more information", "error: error", "::"] {
            assert!(!message.contains(noise), "{args:?}: {message}");
        }
        if let Some(value) = message.split('\'').nth(1) {
            assert_eq!(
                message.matches(&format!("'{value}'")).count(),
                1,
                "{args:?} repeats {value:?}: {message}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn paths_are_taken_as_given_even_when_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"/tmp/token\xff.json".to_vec());
        let args: Vec<OsString> = ["tail", URI, "a.b", "--resume-file"]
            .into_iter()
            .map(OsString::from)
            .chain([path.clone()])
            .collect();
        match parse_with_env(args, None) {
            Ok(Command::Tail(t)) => assert_eq!(t.resume_file, Some(PathBuf::from(path))),
            other => panic!("{other:?}"),
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
        assert_eq!((w.count, w.interval), (None, Duration::from_millis(200)));
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
                warmup: Duration::from_secs(1),
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
        assert_eq!(printed(&["help", "bench"]), printed(&["bench", "--help"]));
    }

    #[test]
    fn bench_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["bench"],
                "missing <URI> (give it first, or set MONGODB_URI) (see `brook bench --help`)",
            ),
            (&["bench", URI], "missing <DB>.<COLL>"),
            (&["bench", URI, "db"], "names no collection"),
            (&["bench", URI, "a.b", "x"], "unexpected argument 'x'"),
            (
                &["bench", URI, "a.b", "--rate", "0"],
                "'--rate <N>': must be between",
            ),
            (
                &["bench", URI, "a.b", "--rate", "fast"],
                "'--rate <N>': expected",
            ),
            (
                &["bench", URI, "a.b", "--duration", "0"],
                "'--duration <SECS>': must be more than 0",
            ),
            (
                &["bench", URI, "a.b", "--duration", "-1"],
                "'--duration <SECS>': must be between",
            ),
            (&["bench", URI, "a.b", "--duration", "NaN"], "--duration"),
            (
                &["bench", URI, "a.b", "--warmup", "soon"],
                "'--warmup <SECS>': expected seconds",
            ),
            (
                &["bench", URI, "a.b", "--events", "0"],
                "'--events <N>': must be at least 1",
            ),
            (
                &["bench", URI, "a.b", "--events", "5", "--duration", "1"],
                "'--events <N>' cannot be used with '--duration <SECS>'",
            ),
            (
                &["bench", URI, "a.b", "--doc-size", "99999999"],
                "'--doc-size <BYTES>': at most",
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
            assert_one_clean_line(args, &message);
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
