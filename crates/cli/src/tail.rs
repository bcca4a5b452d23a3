//! `brook tail`: follow a change stream and print its events as JSON lines.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
use brook::{
    ChangeStream, Client, ClientOptions, FullDocument, FullDocumentBeforeChange, RawChangeEvent,
    ResumeToken, WatchBuilder,
};

use crate::args::{TailArgs, Target, WatchOptions};
use crate::error::CliError;
use crate::json;
use crate::stats::{self, Snapshot};

/// `serverSelectionTimeoutMS` when the connection string sets none: a person is waiting.
pub(crate) const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing the stream (killCursors) and the client (endSessions) may take at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the status line is redrawn when `--stats-every` does not say.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How often the resume file is fsync'd, and saved during a quiet period (empty
/// batches): often enough that a quiet stream's token never falls off the oplog, rarely
/// enough that an idle stream does not write all the time.
pub(crate) const SAVE_INTERVAL: Duration = Duration::from_secs(1);

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

/// Sets the command line's options on a watch builder. When `saved` is the checkpoint
/// read from the resume file, it replaces the start options of the command line.
pub(crate) fn configure<E>(
    mut builder: WatchBuilder<E>,
    watch: &WatchOptions,
    saved: Option<&Checkpoint>,
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
        Some(checkpoint) => builder = checkpoint.apply_to(builder),
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
    saved: Option<&Checkpoint>,
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

/// The resume file while the stream is followed: what is saved, and when.
#[derive(Debug)]
struct ResumeFile {
    store: FileCheckpoint,
    /// The checkpoint after the last event printed (or the last empty batch).
    latest: Option<Checkpoint>,
    /// The checkpoint last written to the file.
    saved: Option<Checkpoint>,
    /// When it was written.
    saved_at: Option<Instant>,
}

impl ResumeFile {
    fn new(store: FileCheckpoint, loaded: Option<Checkpoint>) -> ResumeFile {
        ResumeFile {
            store,
            latest: loaded.clone(),
            saved: loaded,
            saved_at: None,
        }
    }

    /// Notes the checkpoint after what was just printed.
    fn advance(&mut self, checkpoint: Checkpoint) {
        self.latest = Some(checkpoint);
    }

    /// Notes the token of an empty batch. The token the stream was opened with comes
    /// back until the server sends a newer one: it keeps its checkpoint (a `startAfter`
    /// one must not turn into `resumeAfter`).
    fn advance_quietly(&mut self, token: &ResumeToken) {
        if self.latest.as_ref().is_none_or(|c| &c.token != token) {
            self.latest = Some(Checkpoint::resume_after(token.clone()));
        }
    }

    /// Writes the latest checkpoint if the file does not hold it yet.
    async fn save(&mut self) -> Result<(), CliError> {
        if let Some(latest) = &self.latest
            && self.saved.as_ref() != Some(latest)
        {
            self.store.save(latest).await?;
            self.saved = Some(latest.clone());
            self.saved_at = Some(Instant::now());
        }
        Ok(())
    }

    /// [`save`](Self::save) unless the file was written less than [`SAVE_INTERVAL`] ago:
    /// for the tokens of empty batches.
    async fn save_if_due(&mut self) -> Result<(), CliError> {
        if self.saved_at.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL) {
            self.save().await?;
        }
        Ok(())
    }

    /// Saves the latest checkpoint and makes the file durable: at exit.
    async fn finish(&mut self) -> Result<(), CliError> {
        self.save().await?;
        self.store.flush().await?;
        Ok(())
    }
}

/// Runs `brook tail`.
pub(crate) async fn run(args: TailArgs) -> Result<(), CliError> {
    // The resume file is checked (its directory exists and takes new files) and read
    // before connecting: a command line that cannot keep its place never starts.
    let mut file = match &args.resume_file {
        Some(path) => {
            let mut store = FileCheckpoint::new(path)?.sync_interval(SAVE_INTERVAL);
            let loaded = store.load().await?;
            Some(ResumeFile::new(store, loaded))
        }
        None => None,
    };
    let saved = file.as_ref().and_then(|f| f.saved.clone());
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
    let outcome = follow(&mut stream, &args, file.as_mut(), shutdown).await;
    // Close even after an error: a dead stream's close sends nothing.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;
    close_client(&client).await;
    // The checkpoint after the last event printed, also when the loop ended with an
    // error (what was printed stays printed).
    let finished = match file.as_mut() {
        Some(f) => f.finish().await,
        None => Ok(()),
    };
    let stop = outcome?;
    finished?;
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

/// Prints `event` as one line and flushes stdout. `Ok(false)` when stdout is closed.
fn print_event(
    out: &mut impl Write,
    line: &mut Vec<u8>,
    event: &RawChangeEvent,
    format: json::JsonFormat,
) -> Result<bool, CliError> {
    line.clear();
    json::write_document(event.as_document(), format, line)
        .map_err(|e| CliError::Event(e.to_string()))?;
    line.push(b'\n');
    match out.write_all(line).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Stdout(e)),
    }
}

/// What `brook tail` writes on stderr while it runs, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// stderr is a terminal: a status line redrawn in place.
    StatusLine(Duration),
    /// `--stats-every` and stderr is not a terminal: one JSON line per period.
    JsonLines(Duration),
    /// Nothing (stderr is not a terminal, no `--stats-every`).
    Nothing,
}

impl Report {
    fn new(terminal: bool, every: Option<Duration>) -> Report {
        match (terminal, every) {
            (true, every) => Report::StatusLine(every.unwrap_or(STATS_INTERVAL)),
            (false, Some(every)) => Report::JsonLines(every),
            (false, None) => Report::Nothing,
        }
    }

    /// The ticks of the report: a status line is drawn at once, a JSON line comes after
    /// one period.
    fn ticker(self) -> Option<tokio::time::Interval> {
        let mut ticker = match self {
            Report::StatusLine(every) => tokio::time::interval(every),
            Report::JsonLines(every) => {
                tokio::time::interval_at(tokio::time::Instant::now() + every, every)
            }
            Report::Nothing => return None,
        };
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(ticker)
    }

    /// Writes the stream's statistics of now; `last` at exit (the status line then
    /// stays on screen, on its own line).
    fn write(self, stream: &ChangeStream<RawChangeEvent>, started: Instant, last: bool) {
        let snapshot = Snapshot::from(&stream.stats());
        match self {
            Report::StatusLine(_) => {
                let status = stats::status_line(&snapshot, started.elapsed());
                let end = if last { "\n" } else { "" };
                eprint!("\r\x1b[K{status}{end}");
            }
            Report::JsonLines(_) => {
                // One write per line, so that lines from elsewhere never interleave.
                let line = format!("{}\n", stats::json_line(SystemTime::now(), &snapshot));
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
            Report::Nothing => {}
        }
    }
}

/// Waits for the next tick of `ticker`, forever without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Reads batches until `--count` events were printed, a signal, the end of the stream or
/// an error. Each batch is printed (and flushed), then its checkpoint saved once: at
/// least once.
async fn follow(
    stream: &mut ChangeStream<RawChangeEvent>,
    args: &TailArgs,
    mut file: Option<&mut ResumeFile>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stop, CliError> {
    tokio::pin!(shutdown);
    let started = Instant::now();
    let report = Report::new(io::stderr().is_terminal(), args.stats_every);
    let mut ticker = report.ticker();
    let mut out = io::stdout().lock();
    let mut line = Vec::with_capacity(1024);
    let mut printed: u64 = 0;
    let result = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(Stop::Count);
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(Stop::Signal),
            // At most one getMore; an abandoned call leaves it in flight for the next.
            batch = stream.next_batch() => {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => break Err(CliError::brook("the change stream failed", e)),
                };
                if batch.is_empty() {
                    if !stream.is_alive() {
                        break Ok(Stop::Ended);
                    }
                    // A quiet period: the postBatchResumeToken moves on even when the
                    // pipeline filtered every event out; saved at most once a second.
                    if let Some(f) = file.as_deref_mut()
                        && let Some(token) = batch.resume_token()
                    {
                        f.advance_quietly(token);
                        if let Err(e) = f.save_if_due().await {
                            break Err(e);
                        }
                    }
                    continue;
                }
                let room = args.count.map_or(usize::MAX, |n| {
                    usize::try_from(n.saturating_sub(printed)).unwrap_or(usize::MAX)
                });
                let shown = &batch.events()[..batch.len().min(room)];
                let mut closed = false;
                for event in shown {
                    match print_event(&mut out, &mut line, event, args.json_format) {
                        Ok(true) => printed = printed.saturating_add(1),
                        Ok(false) => {
                            closed = true;
                            break;
                        }
                        Err(e) => return finish_with(report, stream, started, Err(e)),
                    }
                }
                if closed {
                    break Ok(Stop::StdoutClosed);
                }
                // Printed (and flushed) first, saved second: at least once.
                if let Some(f) = file.as_deref_mut() {
                    if let Some(checkpoint) = checkpoint_after(&batch, shown.len()) {
                        f.advance(checkpoint);
                    }
                    if let Err(e) = f.save().await {
                        break Err(e);
                    }
                }
            },
            () = tick(&mut ticker) => report.write(stream, started, false),
        }
    };
    finish_with(report, stream, started, result)
}

/// Writes the last report, then returns `result`.
fn finish_with(
    report: Report,
    stream: &ChangeStream<RawChangeEvent>,
    started: Instant,
    result: Result<Stop, CliError>,
) -> Result<Stop, CliError> {
    report.write(stream, started, true);
    result
}

/// The checkpoint after the first `shown` events of `batch` were printed: the batch's
/// ([`Checkpoint::of_batch`]: `startAfter` the invalidate's `_id` when it ends with one)
/// after all of them, the `_id` of the last one printed when `--count` cut it short.
fn checkpoint_after(batch: &brook::Batch<RawChangeEvent>, shown: usize) -> Option<Checkpoint> {
    let last = batch.events().get(shown.checked_sub(1)?)?;
    if shown < batch.len() {
        return last.resume_token().map(Checkpoint::resume_after);
    }
    Checkpoint::of_batch(batch).or_else(|| last.resume_token().map(Checkpoint::resume_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(data: &str) -> ResumeToken {
        ResumeToken::from_document(&bson::doc! { "_data": data }).expect("a token")
    }

    #[tokio::test]
    async fn a_quiet_period_keeps_a_start_after_checkpoint_until_the_token_moves() {
        let dir = std::env::temp_dir().join(format!("brook-cli-quiet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let store = FileCheckpoint::new(dir.join("pos.json")).expect("a store");
        let loaded = Checkpoint::start_after(token("inv"));
        let mut file = ResumeFile::new(store, Some(loaded.clone()));
        // The stream opened with startAfter hands the same token back while quiet.
        file.advance_quietly(&token("inv"));
        assert_eq!(file.latest, Some(loaded.clone()));
        file.save().await.expect("nothing to save");
        assert!(!dir.join("pos.json").exists(), "the file already holds it");
        // A newer token is resumed after.
        file.advance_quietly(&token("later"));
        assert_eq!(file.latest, Some(Checkpoint::resume_after(token("later"))));
        file.finish().await.expect("saved");
        let mut reread = FileCheckpoint::new(dir.join("pos.json")).expect("a store");
        assert_eq!(
            reread.load().await.expect("loads"),
            Some(Checkpoint::resume_after(token("later")))
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
