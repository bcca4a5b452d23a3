//! `brook tail`: follow a change stream and print its events as JSON lines.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use brook::{
    ChangeStream, Client, ClientOptions, FullDocument, FullDocumentBeforeChange, OperationType,
    RawChangeEvent, ResumeToken, WatchBuilder,
};
use futures_util::StreamExt;

use crate::args::{TailArgs, Target, WatchOptions};
use crate::error::CliError;
use crate::json::{self, Mode};
use crate::resume_file::{self, ResumeFile, Saved};
use crate::stats::{self, Stats};

/// `serverSelectionTimeoutMS` when the connection string sets none: a person is waiting.
pub(crate) const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing the stream (killCursors) and the client (endSessions) may take at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the status line is redrawn.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Connects as the tools do: the URI's options, with a shorter default server selection
/// timeout, and the password from `password_file` when one is given (its first line).
/// Errors show the URI without its password.
pub(crate) async fn connect(uri: &str, password_file: Option<&Path>) -> Result<Client, CliError> {
    let shown = brook::redact_uri(uri);
    let mut options =
        ClientOptions::parse(uri).map_err(|e| CliError::usage(format!("`{shown}`: {e}")))?;
    if let Some(path) = password_file {
        let password = read_password(path)?;
        match options.credential.as_mut() {
            Some(credential) if credential.username.is_some() => {
                credential.password = Some(password);
            }
            _ => {
                return Err(CliError::usage(format!(
                    "--password-file: `{shown}` names no user to give the password to"
                )));
            }
        }
    }
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(DEFAULT_SERVER_SELECTION_TIMEOUT);
    }
    Client::with_options(options)
        .await
        .map_err(|e| CliError::brook(format!("cannot connect to {shown}"), e))
}

/// The first line of `path` (without its line ending): a password kept out of the
/// command line. The file's content never appears in an error.
pub(crate) fn read_password(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "--password-file: cannot read {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(CliError::usage(format!(
            "--password-file: {} is empty",
            path.display()
        )));
    }
    Ok(line.to_owned())
}

/// Sets the command line's options on a watch builder. When `saved` is a position read
/// from the resume file, it replaces the start options of the command line.
pub(crate) fn configure<E>(
    mut builder: WatchBuilder<E>,
    watch: &WatchOptions,
    saved: Option<&Saved>,
) -> Result<WatchBuilder<E>, CliError> {
    let token = |doc: &bson::Document, flag: &str| {
        ResumeToken::from_document(doc).map_err(|e| CliError::usage(format!("{flag}: {e}")))
    };
    if !watch.pipeline.is_empty() {
        builder = builder.pipeline(watch.pipeline.clone());
    }
    if let Some(v) = &watch.full_document {
        builder = builder.full_document(FullDocument::from(v.as_str()));
    }
    if let Some(v) = &watch.full_document_before_change {
        builder = builder.full_document_before_change(FullDocumentBeforeChange::from(v.as_str()));
    }
    match saved {
        Some(Saved {
            token,
            invalidate: true,
        }) => builder = builder.start_after(token.clone()),
        Some(Saved {
            token,
            invalidate: false,
        }) => builder = builder.resume_after(token.clone()),
        None => {
            if let Some(doc) = &watch.resume_after {
                builder = builder.resume_after(token(doc, "--resume-after")?);
            }
            if let Some(doc) = &watch.start_after {
                builder = builder.start_after(token(doc, "--start-after")?);
            }
            if let Some(ts) = watch.start_at_operation_time {
                builder = builder.start_at_operation_time(ts);
            }
        }
    }
    if let Some(wait) = watch.max_await_time {
        builder = builder.max_await_time(wait);
    }
    if let Some(n) = watch.batch_size {
        builder = builder.batch_size(n);
    }
    if let Some(collation) = &watch.collation {
        builder = builder.collation(collation.clone());
    }
    if let Some(comment) = &watch.comment {
        builder = builder.comment(comment.as_str());
    }
    if watch.show_expanded_events {
        builder = builder.show_expanded_events(true);
    }
    Ok(builder)
}

/// Opens the stream the command line asks for, in raw mode.
async fn open(
    client: &Client,
    args: &TailArgs,
    saved: Option<&Saved>,
) -> Result<ChangeStream<RawChangeEvent>, CliError> {
    let (builder, what) = match &args.target {
        Target::Collection { db, coll } => (
            client
                .database(db)
                .collection::<bson::Document>(coll)
                .watch()
                .raw(),
            format!("cannot watch {db}.{coll}"),
        ),
        Target::Database(db) => (
            client.database(db).watch().raw(),
            format!("cannot watch database {db}"),
        ),
        Target::Cluster => (
            client.watch().raw(),
            "cannot watch the deployment".to_owned(),
        ),
    };
    configure(builder, &args.watch, saved)?
        .await
        .map_err(|e| CliError::brook(what, e))
}

/// Why the loop stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `--count` events were printed.
    Count,
    /// SIGINT or SIGTERM.
    Signal,
    /// The stream ended (after an `invalidate` event, or the server closed the cursor).
    Ended,
    /// Whoever reads stdout went away.
    StdoutClosed,
}

/// Runs `brook tail`.
pub(crate) async fn run(args: TailArgs) -> Result<(), CliError> {
    let saved = match &args.resume_file {
        Some(path) => resume_file::load(path)?,
        None => None,
    };
    let shutdown = crate::shutdown_signal()?;
    tokio::pin!(shutdown);
    let client = tokio::select! {
        client = connect(&args.uri, args.password_file.as_deref()) => client?,
        () = &mut shutdown => return Ok(()),
    };
    let mut stream = tokio::select! {
        stream = open(&client, &args, saved.as_ref()) => stream?,
        () = &mut shutdown => {
            close_client(&client).await;
            return Ok(());
        }
    };
    let mut file = args.resume_file.clone().map(ResumeFile::new);
    let outcome = follow(&mut stream, &args, file.as_mut(), shutdown).await;
    // Close even after an error: a dead stream's close sends nothing.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;
    close_client(&client).await;
    let synced = match file.as_mut() {
        Some(f) => f.sync(),
        None => Ok(()),
    };
    let stop = outcome?;
    synced?;
    if stop == Stop::Ended {
        eprintln!(
            "brook tail: the stream ended (invalidated or closed by the server); \
             restart after it with --start-after <the invalidate event's _id>"
        );
    }
    Ok(())
}

async fn close_client(client: &Client) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
}

/// Reads events until `--count`, a signal, the end of the stream or an error.
async fn follow(
    stream: &mut ChangeStream<RawChangeEvent>,
    args: &TailArgs,
    mut file: Option<&mut ResumeFile>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stop, CliError> {
    tokio::pin!(shutdown);
    let show_stats = io::stderr().is_terminal();
    let mut stats = Stats::new(Instant::now());
    let mut ticker = tokio::time::interval(STATS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = io::stdout().lock();
    let mut line = Vec::with_capacity(1024);
    let result = loop {
        if args.count.is_some_and(|n| stats.events() >= n) {
            break Ok(Stop::Count);
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(Stop::Signal),
            // The Stream trait's next: an abandoned poll leaves the getMore in flight.
            item = StreamExt::next(stream) => match item {
                None => break Ok(Stop::Ended),
                Some(Err(e)) => break Err(CliError::brook("the change stream failed", e)),
                Some(Ok(event)) => {
                    line.clear();
                    if let Err(e) = json::write_document(event.as_document(), Mode::Relaxed, &mut line) {
                        break Err(CliError::Event(e.to_string()));
                    }
                    line.push(b'\n');
                    match out.write_all(&line).and_then(|()| out.flush()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Ok(Stop::StdoutClosed),
                        Err(e) => break Err(CliError::Stdout(e)),
                    }
                    // Printed (and flushed) first, saved second: at least once.
                    if let Some(f) = file.as_deref_mut() {
                        let invalidate = event.operation_type() == Some(OperationType::Invalidate);
                        let token = if invalidate {
                            event.resume_token()
                        } else {
                            stream.resume_token().or_else(|| event.resume_token())
                        };
                        if let Some(token) = token
                            && let Err(e) = f.save(&token, invalidate)
                        {
                            break Err(e);
                        }
                    }
                    stats.event(stats::lag_of(event.as_document(), SystemTime::now()));
                }
            },
            _ = ticker.tick(), if show_stats => {
                let status = stats.line(
                    Instant::now(),
                    stream.get_more_count(),
                    stream.resume_count(),
                    stream.server_address().map(|a| a as &dyn std::fmt::Display),
                );
                eprint!("\r\x1b[K{status}");
            }
        }
    };
    if show_stats {
        // Leave the last numbers on screen, on their own line.
        let status = stats.line(
            Instant::now(),
            stream.get_more_count(),
            stream.resume_count(),
            stream.server_address().map(|a| a as &dyn std::fmt::Display),
        );
        eprintln!("\r\x1b[K{status}");
    }
    result
}
