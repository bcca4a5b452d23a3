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
  help [<command>]           print this text, or a command's

options:
  -h, --help                 print this text
  -V, --version              print brook's version

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
  --resume-file PATH   after each event, save the stream's resume token in PATH
                       (written to PATH.tmp, then renamed; fsync'd at most once a
                       second and at exit). At start, if PATH exists, resume from it
                       (resumeAfter; startAfter when it holds an invalidate event's
                       token); it then takes precedence over --resume-after,
                       --start-after and --start-at-operation-time. Events are
                       delivered at least once: after a crash the last events before
                       the crash may be printed again, none is skipped.
  --count N            exit 0 after N events, closing the stream
  -h, --help           print this text

The connection string takes every brook URI option. Without serverSelectionTimeoutMS
in it, brook tail gives up finding a server after 10 s. Live statistics (events/s,
getMore round trips, resumes, lag) are shown on stderr when stderr is a terminal.
Ctrl-C or SIGTERM closes the stream and exits 0.
";

/// `brook demo-writer --help`.
pub(crate) const WRITER_USAGE: &str = "\
usage: brook demo-writer <uri> <db>.<coll> [--count N] [--interval-ms M]

Writes to <db>.<coll> through brook, one operation every M ms (default 200), in a
cycle of insert, insert, update, delete, so that a `brook tail` of the collection sees
every kind of event. Runs until N operations are done (default: until Ctrl-C or
SIGTERM), then prints a one-line summary on stderr.
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
    /// What to follow.
    pub(crate) target: Target,
    /// The stream's options.
    pub(crate) watch: WatchOptions,
    /// Where to keep the resume token.
    pub(crate) resume_file: Option<PathBuf>,
    /// Stop after this many events.
    pub(crate) count: Option<u64>,
}

/// `brook demo-writer`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriterArgs {
    /// The connection string.
    pub(crate) uri: String,
    /// The database.
    pub(crate) db: String,
    /// The collection.
    pub(crate) coll: String,
    /// Stop after this many operations.
    pub(crate) count: Option<u64>,
    /// The pause between operations.
    pub(crate) interval: Duration,
}

/// The default pause of `demo-writer`.
pub(crate) const DEFAULT_WRITER_INTERVAL: Duration = Duration::from_millis(200);

/// Parses the arguments after the program name.
pub(crate) fn parse<I>(args: I) -> Result<Command, CliError>
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
            "tail" => parse_tail(&mut parser),
            "demo-writer" => parse_writer(&mut parser),
            "help" => match parser.next()? {
                None => Ok(Command::Help(MAIN_USAGE)),
                Some(Value(topic)) => match topic.string()?.as_str() {
                    "tail" => Ok(Command::Help(TAIL_USAGE)),
                    "demo-writer" => Ok(Command::Help(WRITER_USAGE)),
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

/// Refuses a connection string brook cannot parse (a usage error, exit 2).
fn check_uri(uri: &str) -> Result<(), CliError> {
    brook::ClientOptions::parse(uri)
        .map(|_| ())
        .map_err(|e| CliError::usage(format!("`{uri}`: {e}")))
}

fn at_least_one(flag: &str, n: u64) -> Result<u64, CliError> {
    if n == 0 {
        Err(CliError::usage(format!("{flag}: must be at least 1")))
    } else {
        Ok(n)
    }
}

fn parse_tail(parser: &mut lexopt::Parser) -> Result<Command, CliError> {
    let mut positionals: Vec<String> = Vec::new();
    let mut cluster = false;
    let mut watch = WatchOptions::default();
    let mut resume_file = None;
    let mut count = None;
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
            Value(v) => positionals.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let mut positionals = positionals.into_iter();
    let uri = positionals
        .next()
        .ok_or_else(|| CliError::usage("tail: missing <uri>"))?;
    check_uri(&uri)?;
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
        target,
        watch,
        resume_file,
        count,
    })))
}

fn parse_writer(parser: &mut lexopt::Parser) -> Result<Command, CliError> {
    let mut positionals: Vec<String> = Vec::new();
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
            Value(v) => positionals.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let mut positionals = positionals.into_iter();
    let uri = positionals
        .next()
        .ok_or_else(|| CliError::usage("demo-writer: missing <uri>"))?;
    check_uri(&uri)?;
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
        db,
        coll,
        count,
        interval,
    }))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    const URI: &str = "mongodb://127.0.0.1:27017/";

    fn parse_strs(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().copied())
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
        assert_eq!((t.resume_file, t.count), (None, None));

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
