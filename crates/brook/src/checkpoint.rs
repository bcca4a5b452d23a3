//! Checkpoints: where a change stream stopped, kept somewhere that outlives the process.
//!
//! A [`Checkpoint`] is a resume token plus whether it is an `invalidate` event's `_id`
//! (such a stream cannot be resumed, only started again after it). A
//! [`CheckpointStore`] loads one at start and saves one after the events before it were
//! handled; [`Checkpoint::apply_to`] sets it on a [`WatchBuilder`] (`resumeAfter`, or
//! `startAfter` after an invalidate). Saving *after* handling the events gives
//! at-least-once delivery: a crash between handling and saving replays those events on
//! restart, it never skips one.
//!
//! [`FileCheckpoint`] is the store brook ships: one small file replaced atomically (what
//! `brook tail --resume-file` uses). Any other place (Redis, a Postgres row next to the
//! data the events update, …) is a type implementing [`CheckpointStore`]:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use brook::checkpoint::{Checkpoint, CheckpointStore};
//! use brook::ResumeToken;
//!
//! /// A store that keeps every checkpoint in memory (a stand-in for a database table).
//! #[derive(Clone, Default)]
//! struct History(Arc<Mutex<Vec<Checkpoint>>>);
//!
//! /// The history's lock was poisoned by a panic elsewhere.
//! #[derive(Debug)]
//! struct Poisoned;
//! impl std::fmt::Display for Poisoned {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("the checkpoint history is poisoned")
//!     }
//! }
//! impl std::error::Error for Poisoned {}
//!
//! impl CheckpointStore for History {
//!     type Error = Poisoned;
//!
//!     async fn load(&mut self) -> Result<Option<Checkpoint>, Poisoned> {
//!         Ok(self.0.lock().map_err(|_| Poisoned)?.last().cloned())
//!     }
//!
//!     async fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), Poisoned> {
//!         self.0.lock().map_err(|_| Poisoned)?.push(checkpoint.clone());
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! # runtime.block_on(async {
//! let mut store = History::default();
//! assert_eq!(store.load().await?, None, "nothing saved: start from now");
//! let token = ResumeToken::from_document(&bson::doc! { "_data": "8265F0" })?;
//! store.save(&Checkpoint::resume_after(token.clone())).await?;
//! store.flush().await?; // the default flush does nothing
//! let loaded = store.load().await?.expect("saved above");
//! assert_eq!(loaded.token, token);
//! assert!(!loaded.after_invalidate);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Batch, ChangeStreamEvent, RawChangeEvent, ResumeToken, WatchBuilder};

/// Where a change stream stopped: the token to continue from, and how to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The resume token: an event's `_id`, or a batch's `postBatchResumeToken`.
    pub token: ResumeToken,
    /// Whether `token` is the `_id` of an `invalidate` event: the stream ended there and
    /// is started again with `startAfter` (the server refuses `resumeAfter` for it).
    pub after_invalidate: bool,
}

impl Checkpoint {
    /// A checkpoint continued with `resumeAfter` (any token but an `invalidate`'s).
    pub fn resume_after(token: ResumeToken) -> Checkpoint {
        Checkpoint {
            token,
            after_invalidate: false,
        }
    }

    /// A checkpoint after an `invalidate` event, continued with `startAfter`.
    pub fn start_after(token: ResumeToken) -> Checkpoint {
        Checkpoint {
            token,
            after_invalidate: true,
        }
    }

    /// The checkpoint to store once every event of `batch` was handled (from
    /// [`ChangeStream::next_batch`](crate::ChangeStream::next_batch)): the batch's resume
    /// token; when the batch ends with an `invalidate`, that event's `_id`, continued
    /// with `startAfter` (the token `startAfter` takes; the reply's
    /// `postBatchResumeToken` may differ from it). `None` when the stream has no token
    /// yet (it started from now and nothing came back).
    ///
    /// ```no_run
    /// use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
    ///
    /// # async fn follow(orders: brook::Collection<bson::Document>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut store = FileCheckpoint::new("/var/lib/indexer/orders.checkpoint")?;
    /// let watch = orders.watch();
    /// let watch = match store.load().await? {
    ///     Some(checkpoint) => checkpoint.apply_to(watch),
    ///     None => watch,
    /// };
    /// let mut stream = watch.await?;
    /// while stream.is_alive() {
    ///     let batch = stream.next_batch().await?;
    ///     for event in batch.events() {
    ///         println!("{:?}", event.operation_type); // handle it (idempotently)
    ///     }
    ///     // Then the position, also after an empty batch (its token moved on too).
    ///     if let Some(checkpoint) = Checkpoint::of_batch(&batch) {
    ///         store.save(&checkpoint).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn of_batch<E: EventToken>(batch: &Batch<E>) -> Option<Checkpoint> {
        if batch.invalidated()
            && let Some(token) = batch.events().last().and_then(EventToken::event_token)
        {
            return Some(Checkpoint::start_after(token));
        }
        let token = batch.resume_token()?.clone();
        Some(Checkpoint {
            token,
            after_invalidate: batch.invalidated(),
        })
    }

    /// Sets this checkpoint as `builder`'s start: [`WatchBuilder::start_after`] after an
    /// invalidate, else [`WatchBuilder::resume_after`]. Set no other start option
    /// (`start_at_operation_time`, …) on the same builder: the server refuses two.
    pub fn apply_to<E>(&self, builder: WatchBuilder<E>) -> WatchBuilder<E> {
        if self.after_invalidate {
            builder.start_after(self.token.clone())
        } else {
            builder.resume_after(self.token.clone())
        }
    }
}

/// An event that knows its own resume token (its `_id`): what
/// [`Checkpoint::of_batch`] keeps after an `invalidate`.
pub trait EventToken {
    /// The event's `_id`, `None` if it has none that is a document.
    fn event_token(&self) -> Option<ResumeToken>;
}

impl EventToken for RawChangeEvent {
    fn event_token(&self) -> Option<ResumeToken> {
        self.resume_token()
    }
}

impl<T> EventToken for ChangeStreamEvent<T> {
    fn event_token(&self) -> Option<ResumeToken> {
        Some(self.id.clone())
    }
}

/// A place where a [`Checkpoint`] is kept across restarts.
///
/// The methods are async so that a store may be a network service; each returned future
/// must be `Send` (a stream is often followed on a multi-threaded runtime). Write the
/// implementation with `async fn` (see the [module](self) example).
///
/// The contract: [`load`](Self::load) returns the last checkpoint saved (`None` when
/// there is none yet: start from now, or from the application's own start option), or
/// an error when what is stored cannot be read — never a guess, since a wrong token
/// skips or replays events. [`save`](Self::save) replaces the stored checkpoint; a
/// failed save may leave the old one, never a mix of both. Once
/// [`flush`](Self::flush) returns `Ok`, the last saved checkpoint survives a crash.
pub trait CheckpointStore {
    /// What can go wrong reading or writing the store.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stored checkpoint, `None` when nothing was saved yet.
    fn load(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, Self::Error>> + Send;

    /// Replaces the stored checkpoint with `checkpoint`.
    fn save(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes the last saved checkpoint durable, for stores whose `save` may defer it.
    /// The default does nothing (every save is durable when it returns).
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }
}

/// The largest checkpoint file read (a token is a few hundred bytes).
const MAX_FILE_LEN: u64 = 1 << 20;

/// A [`CheckpointStore`] in one file, replaced atomically.
///
/// The file holds one line of JSON: `{"resumeToken": <the token in canonical extended
/// JSON, fields in order>, "invalidate": <bool>}` (the format of `brook tail
/// --resume-file`). Unknown members are ignored, so newer writers may add some.
///
/// Saving writes the line to `PATH.tmp` in the same directory, fsyncs it, renames it
/// over `PATH` and fsyncs the directory: a reader, or a crash, sees the old checkpoint or
/// the new one, never half a file, and once `save` returns the new one is on disk.
/// [`sync_interval`](Self::sync_interval) trades some of that durability for fewer
/// fsyncs. The file operations run on tokio's blocking pool
/// ([`tokio::task::spawn_blocking`]), so the store is used inside a tokio runtime.
///
/// [`new`](Self::new) checks the path before anything is followed: a directory that does
/// not exist or cannot be written is refused then, not at the first save.
///
/// ```
/// use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
/// use brook::ResumeToken;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// let dir = std::env::temp_dir().join(format!("brook-doc-checkpoint-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("orders.checkpoint");
///
/// let mut store = FileCheckpoint::new(&path)?;
/// assert_eq!(store.load().await?, None, "no file yet");
/// let token = ResumeToken::from_document(&bson::doc! { "_data": "8265F0A1" })?;
/// store.save(&Checkpoint::resume_after(token.clone())).await?;
///
/// // Later, maybe in another process: continue where it stopped.
/// let saved = FileCheckpoint::new(&path)?.load().await?.expect("saved above");
/// assert_eq!(saved, Checkpoint::resume_after(token));
/// // let stream = saved.apply_to(collection.watch()).await?;
///
/// // A path whose directory is missing is refused at once, naming the path.
/// let err = FileCheckpoint::new(dir.join("no-such-dir").join("x")).unwrap_err();
/// assert!(err.is_missing_directory(), "{err}");
/// assert!(err.to_string().contains("no-such-dir"), "{err}");
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[derive(Debug)]
pub struct FileCheckpoint {
    paths: Arc<Paths>,
    sync_interval: Duration,
    last_sync: Option<Instant>,
    dirty: bool,
}

/// The file, its temporary twin and its directory.
#[derive(Debug)]
struct Paths {
    file: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl FileCheckpoint {
    /// A store in the file at `path` (nothing is read or written to it yet), after
    /// checking that `path` can be saved to: its directory exists and a file can be
    /// created in it, and `path` itself is not a directory. The check creates and removes
    /// `PATH.tmp`, the file every save writes first.
    pub fn new(path: impl Into<PathBuf>) -> Result<FileCheckpoint, FileCheckpointError> {
        let file = path.into();
        // `dir/` names a directory, whatever `file_name` makes of it.
        let trailing_separator = file
            .as_os_str()
            .to_string_lossy()
            .ends_with(std::path::is_separator);
        if file.as_os_str().is_empty() || file.file_name().is_none() || trailing_separator {
            return Err(FileCheckpointError::new(
                &file,
                FileCheckpointErrorKind::NotAFile,
                "the path names no file",
                None,
            ));
        }
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = file.clone().into_os_string();
        tmp.push(".tmp");
        let paths = Paths {
            tmp: PathBuf::from(tmp),
            file,
            dir,
        };
        paths.check()?;
        Ok(FileCheckpoint {
            paths: Arc::new(paths),
            sync_interval: Duration::ZERO,
            last_sync: None,
            dirty: false,
        })
    }

    /// Fsyncs at most once per `interval` (default: zero, at every save). Between two
    /// fsyncs a save still replaces the file atomically, but a power loss may take it
    /// back — or, on some file systems, leave the file empty, which [`load`] then refuses
    /// rather than guess. [`flush`] makes the last save durable; call it before exiting.
    /// With at-least-once processing a lost save means events handled again on restart,
    /// never events skipped.
    ///
    /// [`load`]: CheckpointStore::load
    /// [`flush`]: CheckpointStore::flush
    pub fn sync_interval(mut self, interval: Duration) -> FileCheckpoint {
        self.sync_interval = interval;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.paths.file
    }
}

impl CheckpointStore for FileCheckpoint {
    type Error = FileCheckpointError;

    /// Reads the file: `None` if it does not exist; an error if it cannot be read, is
    /// empty, larger than 1 MiB, or not the line a save writes.
    async fn load(&mut self) -> Result<Option<Checkpoint>, FileCheckpointError> {
        let paths = Arc::clone(&self.paths);
        blocking(&self.paths.file, move || paths.read()).await
    }

    /// Replaces the file with `checkpoint` (see [`FileCheckpoint`] for how).
    async fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), FileCheckpointError> {
        let line = encode(checkpoint).map_err(|message| {
            FileCheckpointError::new(
                &self.paths.file,
                FileCheckpointErrorKind::Malformed,
                message,
                None,
            )
        })?;
        let durable = self
            .last_sync
            .is_none_or(|t| t.elapsed() >= self.sync_interval);
        let paths = Arc::clone(&self.paths);
        // Until the write below succeeds, the file may hold a save that is not durable.
        self.dirty = true;
        blocking(&self.paths.file, move || paths.write(&line, durable)).await?;
        if durable {
            self.dirty = false;
            self.last_sync = Some(Instant::now());
        }
        Ok(())
    }

    /// Fsyncs the file and its directory if a save since the last fsync skipped them.
    async fn flush(&mut self) -> Result<(), FileCheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        let paths = Arc::clone(&self.paths);
        blocking(&self.paths.file, move || paths.sync()).await?;
        self.dirty = false;
        self.last_sync = Some(Instant::now());
        Ok(())
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, FileCheckpointError> + Send + 'static,
) -> Result<T, FileCheckpointError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        FileCheckpointError::new(
            path,
            FileCheckpointErrorKind::Io,
            format!("the file operation did not finish: {e}"),
            None,
        )
    })?
}

impl Paths {
    fn error(
        &self,
        kind: FileCheckpointErrorKind,
        message: impl Into<String>,
        source: Option<io::Error>,
    ) -> FileCheckpointError {
        FileCheckpointError::new(&self.file, kind, message, source)
    }

    /// The checks of [`FileCheckpoint::new`].
    fn check(&self) -> Result<(), FileCheckpointError> {
        use FileCheckpointErrorKind::{Io, MissingDirectory, NotAFile, NotWritable};
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let message = format!("{} is not a directory", self.dir.display());
                return Err(self.error(MissingDirectory, message, None));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let message = format!("the directory {} does not exist", self.dir.display());
                return Err(self.error(MissingDirectory, message, None));
            }
            Err(e) => {
                let message = format!("cannot inspect the directory {}", self.dir.display());
                return Err(self.error(Io, message, Some(e)));
            }
        }
        if fs::metadata(&self.file).is_ok_and(|m| m.is_dir()) {
            return Err(self.error(NotAFile, "it is a directory", None));
        }
        // Whether a file can be created here is known only by creating one: permission
        // bits do not tell (ACLs, read-only mounts, root).
        match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
        {
            Ok(file) => {
                drop(file);
                fs::remove_file(&self.tmp).map_err(|e| {
                    let message = format!("cannot remove {}", self.tmp.display());
                    self.error(Io, message, Some(e))
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                let message = format!(
                    "cannot create files in the directory {}",
                    self.dir.display()
                );
                Err(self.error(NotWritable, message, Some(e)))
            }
            Err(e) => {
                let message = format!("cannot create {}", self.tmp.display());
                Err(self.error(Io, message, Some(e)))
            }
        }
    }

    fn read(&self) -> Result<Option<Checkpoint>, FileCheckpointError> {
        use FileCheckpointErrorKind::{Io, Malformed};
        let file = match File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(Io, "cannot open", Some(e))),
        };
        let len = file
            .metadata()
            .map_err(|e| self.error(Io, "cannot read", Some(e)))?
            .len();
        if len > MAX_FILE_LEN {
            let message = format!("{len} bytes is too large for a checkpoint file");
            return Err(self.error(Malformed, message, None));
        }
        let text = io::read_to_string(file).map_err(|e| self.error(Io, "cannot read", Some(e)))?;
        decode(&text)
            .map(Some)
            .map_err(|message| self.error(Malformed, message, None))
    }

    /// Writes `line` to the temporary file and renames it over the file, with the
    /// fsyncs if `durable`.
    fn write(&self, line: &str, durable: bool) -> Result<(), FileCheckpointError> {
        use FileCheckpointErrorKind::Io;
        let tmp = self.tmp.display();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(|e| self.error(Io, format!("cannot create {tmp}"), Some(e)))?;
        file.write_all(line.as_bytes())
            .map_err(|e| self.error(Io, format!("cannot write {tmp}"), Some(e)))?;
        if durable {
            file.sync_all()
                .map_err(|e| self.error(Io, format!("cannot fsync {tmp}"), Some(e)))?;
        }
        drop(file);
        fs::rename(&self.tmp, &self.file)
            .map_err(|e| self.error(Io, format!("cannot rename {tmp} over it"), Some(e)))?;
        if durable {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Fsyncs the file and its directory.
    fn sync(&self) -> Result<(), FileCheckpointError> {
        File::open(&self.file)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.error(FileCheckpointErrorKind::Io, "cannot fsync", Some(e)))?;
        self.sync_dir()
    }

    /// Fsyncs the directory, so that a rename in it is durable.
    fn sync_dir(&self) -> Result<(), FileCheckpointError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                let message = format!("cannot fsync the directory {}", self.dir.display());
                self.error(FileCheckpointErrorKind::Io, message, Some(e))
            })
    }
}

/// What kind of [`FileCheckpointError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileCheckpointErrorKind {
    /// The file's directory does not exist (or is not a directory).
    MissingDirectory,
    /// No file can be created in the file's directory (permissions, read-only mount).
    NotWritable,
    /// The path names a directory, or no file at all.
    NotAFile,
    /// The file exists but does not hold a checkpoint: empty, too large, not the line a
    /// save writes, or an invalid token.
    Malformed,
    /// Reading, writing, renaming or fsyncing failed.
    Io,
}

/// Why a [`FileCheckpoint`] could not be created, loaded or saved. It names the file.
#[derive(Debug)]
pub struct FileCheckpointError {
    path: PathBuf,
    kind: FileCheckpointErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl FileCheckpointError {
    fn new(
        path: &Path,
        kind: FileCheckpointErrorKind,
        message: impl Into<String>,
        source: Option<io::Error>,
    ) -> FileCheckpointError {
        FileCheckpointError {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
            source,
        }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What kind of error it is.
    pub fn kind(&self) -> FileCheckpointErrorKind {
        self.kind
    }

    /// Whether the file's directory does not exist.
    pub fn is_missing_directory(&self) -> bool {
        self.kind == FileCheckpointErrorKind::MissingDirectory
    }

    /// Whether no file can be created in the file's directory.
    pub fn is_not_writable(&self) -> bool {
        self.kind == FileCheckpointErrorKind::NotWritable
    }

    /// Whether the file exists but holds no valid checkpoint.
    pub fn is_malformed(&self) -> bool {
        self.kind == FileCheckpointErrorKind::Malformed
    }
}

impl fmt::Display for FileCheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint file {}: {}",
            self.path.display(),
            self.message
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileCheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

// ---------------------------------------------------------------------------------------
// The line: canonical extended JSON with the token's fields in their order. serde_json
// writes and reads the scalars; documents are walked here because serde_json's map (without
// its `preserve_order` feature) sorts keys, and a token must come back byte for byte.

/// The line saved for `checkpoint`, with its newline.
fn encode(checkpoint: &Checkpoint) -> Result<String, String> {
    let mut out = String::from("{\"resumeToken\":");
    write_document(checkpoint.token.as_document(), &mut out)?;
    out.push_str(if checkpoint.after_invalidate {
        ",\"invalidate\":true}\n"
    } else {
        ",\"invalidate\":false}\n"
    });
    Ok(out)
}

fn malformed_token(e: impl fmt::Display) -> String {
    format!("cannot encode the resume token: {e}")
}

fn write_document(doc: &RawDocument, out: &mut String) -> Result<(), String> {
    out.push('{');
    for (i, element) in doc.into_iter().enumerate() {
        let (key, value) = element.map_err(malformed_token)?;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key.as_str()).map_err(malformed_token)?);
        out.push(':');
        write_value(value, out)?;
    }
    out.push('}');
    Ok(())
}

fn write_array(array: &RawArray, out: &mut String) -> Result<(), String> {
    out.push('[');
    for (i, value) in array.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value(value.map_err(malformed_token)?, out)?;
    }
    out.push(']');
    Ok(())
}

fn write_value(value: RawBsonRef<'_>, out: &mut String) -> Result<(), String> {
    match value {
        RawBsonRef::Document(d) => write_document(d, out),
        RawBsonRef::Array(a) => write_array(a, out),
        scalar => {
            let bson = Bson::try_from(scalar).map_err(malformed_token)?;
            let json =
                serde_json::to_string(&bson.into_canonical_extjson()).map_err(malformed_token)?;
            out.push_str(&json);
            Ok(())
        }
    }
}

/// Reads a line written by [`encode`].
fn decode(text: &str) -> Result<Checkpoint, String> {
    if text.trim().is_empty() {
        return Err(
            "the file is empty (a crash before its first fsync?): delete it to \
                    start from now, or start from a token of your own"
                .into(),
        );
    }
    let Json::Object(members) =
        serde_json::from_str::<Json>(text).map_err(|e| format!("invalid JSON: {e}"))?
    else {
        return Err("expected a JSON object {\"resumeToken\": …}".into());
    };
    let mut token = None;
    let mut after_invalidate = false;
    for (key, value) in members {
        match key.as_str() {
            "resumeToken" => match value.into_bson()? {
                Bson::Document(doc) => {
                    token = Some(
                        ResumeToken::from_document(&doc)
                            .map_err(|e| format!("invalid resume token: {e}"))?,
                    );
                }
                _ => return Err("`resumeToken` is not a document".into()),
            },
            "invalidate" => match value {
                Json::Scalar(serde_json::Value::Bool(b)) => after_invalidate = b,
                _ => return Err("`invalidate` is not true or false".into()),
            },
            // Left for newer writers.
            _ => {}
        }
    }
    let token = token.ok_or("no `resumeToken` in the file")?;
    Ok(Checkpoint {
        token,
        after_invalidate,
    })
}

/// JSON as read, objects keeping their members' order.
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Scalar(serde_json::Value),
}

impl Json {
    /// The BSON value: an object whose first key starts with `$` is an extended JSON
    /// wrapper (`{"$binary": …}`, `{"$numberLong": …}`) and goes to bson's parser.
    fn into_bson(self) -> Result<Bson, String> {
        match self {
            Json::Object(members) if members.first().is_some_and(|(k, _)| k.starts_with('$')) => {
                Bson::try_from(Json::Object(members).into_value())
                    .map_err(|e| format!("invalid extended JSON: {e}"))
            }
            Json::Object(members) => {
                let mut doc = Document::new();
                for (key, value) in members {
                    doc.insert(key, value.into_bson()?);
                }
                Ok(Bson::Document(doc))
            }
            Json::Array(items) => items
                .into_iter()
                .map(Json::into_bson)
                .collect::<Result<Vec<_>, _>>()
                .map(Bson::Array),
            Json::Scalar(value) => {
                Bson::try_from(value).map_err(|e| format!("invalid extended JSON: {e}"))
            }
        }
    }

    fn into_value(self) -> serde_json::Value {
        match self {
            Json::Object(members) => serde_json::Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
            Json::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(Json::into_value).collect())
            }
            Json::Scalar(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Scalar(serde_json::Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            members.push(entry);
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use bson::spec::BinarySubtype;

    use super::*;

    fn token(data: &str) -> ResumeToken {
        ResumeToken::from_document(&doc! { "_data": data }).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("brook-checkpoint-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_line_round_trips_byte_for_byte() {
        // `_typeBits` sorts before `_data` (uppercase first): a sorting map would reorder.
        let t = ResumeToken::from_document(&doc! {
            "_data": "8265F0",
            "_typeBits": bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![0x40] },
            "n": 5_i64,
            "nested": { "z": 1, "a": [1_i32, "x"] },
        })
        .unwrap();
        let line = encode(&Checkpoint::resume_after(t.clone())).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(
            line.starts_with(r#"{"resumeToken":{"_data":"8265F0","_typeBits":{"$binary""#),
            "{line}"
        );
        assert!(line.contains(r#""n":{"$numberLong":"5"}"#), "{line}");
        let saved = decode(&line).unwrap();
        assert_eq!(saved.token.as_bytes(), t.as_bytes(), "byte for byte");
        assert!(!saved.after_invalidate);
        let invalidated = decode(&encode(&Checkpoint::start_after(t)).unwrap()).unwrap();
        assert!(invalidated.after_invalidate);
    }

    #[test]
    fn lines_written_by_brook_tail_before_the_move_still_load() {
        let line = "{\"resumeToken\":{\"_data\":\"8265F0\"},\"invalidate\":true}\n";
        assert_eq!(
            decode(line).unwrap(),
            Checkpoint::start_after(token("8265F0"))
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        for bad in [
            "",
            "  \n",
            "[]",
            "{}",
            r#"{"resumeToken": "x"}"#,
            r#"{"resumeToken": {"_data": "a"}, "invalidate": "yes"}"#,
            r#"{"resumeToken": {"_data": "a"}"#,
            r#"{"resumeToken": {"$binary": 5}}"#,
        ] {
            assert!(decode(bad).is_err(), "accepted {bad:?}");
        }
        // Unknown members are ignored.
        let ok = decode(r#"{"resumeToken": {"_data": "a"}, "savedBy": "brook 9"}"#).unwrap();
        assert_eq!(ok, Checkpoint::resume_after(token("a")));
    }

    #[tokio::test]
    async fn save_replaces_the_file_atomically_and_load_reads_it() {
        let dir = temp_dir("save");
        let path = dir.join("pos.json");
        let mut store = FileCheckpoint::new(&path).unwrap();
        assert!(!dir.join("pos.json.tmp").exists(), "the probe is removed");
        assert_eq!(store.load().await.unwrap(), None, "no file: no checkpoint");

        store
            .save(&Checkpoint::resume_after(token("01")))
            .await
            .unwrap();
        let first_inode = inode(&path);
        assert_eq!(
            store.load().await.unwrap(),
            Some(Checkpoint::resume_after(token("01")))
        );
        store
            .save(&Checkpoint::start_after(token("02")))
            .await
            .unwrap();
        // Replaced by a rename, never rewritten in place: a reader sees one line or the
        // other.
        assert_ne!(inode(&path), first_inode, "a new file was renamed over it");
        assert_eq!(
            FileCheckpoint::new(&path).unwrap().load().await.unwrap(),
            Some(Checkpoint::start_after(token("02")))
        );
        assert!(!dir.join("pos.json.tmp").exists(), "renamed into place");
        let entries = fs::read_dir(&dir).unwrap().count();
        assert_eq!(entries, 1, "nothing else is left in the directory");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_save_leaves_the_old_checkpoint() {
        let dir = temp_dir("failed-save");
        let path = dir.join("pos.json");
        let mut store = FileCheckpoint::new(&path).unwrap();
        store
            .save(&Checkpoint::resume_after(token("01")))
            .await
            .unwrap();
        // The temporary file cannot be created: a directory is in its place.
        fs::create_dir(dir.join("pos.json.tmp")).unwrap();
        let err = store
            .save(&Checkpoint::resume_after(token("02")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("pos.json.tmp"), "{err}");
        assert_eq!(
            store.load().await.unwrap(),
            Some(Checkpoint::resume_after(token("01"))),
            "the file still holds the last good save"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    fn inode(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
    }

    #[cfg(not(unix))]
    fn inode(_: &Path) -> u64 {
        0
    }

    #[tokio::test]
    async fn with_a_sync_interval_saves_land_at_once_and_flush_syncs() {
        let dir = temp_dir("interval");
        let path = dir.join("pos.json");
        let mut store = FileCheckpoint::new(&path)
            .unwrap()
            .sync_interval(Duration::from_secs(3600));
        for data in ["01", "02", "03"] {
            store
                .save(&Checkpoint::resume_after(token(data)))
                .await
                .unwrap();
            assert_eq!(
                FileCheckpoint::new(&path).unwrap().load().await.unwrap(),
                Some(Checkpoint::resume_after(token(data))),
                "every save replaces the file, synced or not"
            );
        }
        assert!(store.dirty, "the last two saves skipped their fsync");
        store.flush().await.unwrap();
        assert!(!store.dirty);
        store.flush().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn bad_files_are_refused_naming_the_file() {
        let dir = temp_dir("bad");
        let path = dir.join("pos.json");
        let mut store = FileCheckpoint::new(&path).unwrap();
        fs::write(&path, "").unwrap();
        let err = store.load().await.unwrap_err();
        assert!(err.is_malformed(), "{err:?}");
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        fs::write(&path, "{\"resumeToken\": 1}").unwrap();
        assert!(store.load().await.unwrap_err().is_malformed());
        fs::write(&path, vec![b' '; 2 << 20]).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_directory_is_refused_at_construction_and_at_save() {
        let dir = temp_dir("missing");
        let path = dir.join("no").join("such").join("pos.json");
        let err = FileCheckpoint::new(&path).unwrap_err();
        assert!(err.is_missing_directory(), "{err:?}");
        assert_eq!(err.path(), path);
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        assert!(text.contains("does not exist"), "{text}");

        // A file where the directory should be.
        fs::write(dir.join("plain"), "x").unwrap();
        let err = FileCheckpoint::new(dir.join("plain").join("pos.json")).unwrap_err();
        assert!(err.is_missing_directory(), "{err:?}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        // The path itself a directory, or written as one.
        let err = FileCheckpoint::new(&dir).unwrap_err();
        assert_eq!(err.kind(), FileCheckpointErrorKind::NotAFile, "{err:?}");
        let err = FileCheckpoint::new(format!("{}/later/", dir.display())).unwrap_err();
        assert_eq!(err.kind(), FileCheckpointErrorKind::NotAFile, "{err:?}");
        assert!(!dir.join("later").exists() && !dir.join("later.tmp").exists());

        // The directory removed after the check: the save fails, naming what it did.
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        let mut store = FileCheckpoint::new(sub.join("pos.json")).unwrap();
        fs::remove_dir(&sub).unwrap();
        let err = store
            .save(&Checkpoint::resume_after(token("01")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), FileCheckpointErrorKind::Io);
        assert!(err.to_string().contains("cannot create"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_unwritable_directory_is_refused_at_construction() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("unwritable");
        let locked = dir.join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        let result = FileCheckpoint::new(locked.join("pos.json"));
        // Permission bits do not bind root (CAP_DAC_OVERRIDE): when a file can be created
        // in the 0o500 directory anyway, this run cannot test the refusal, and only this
        // assertion is skipped (decided at run time, by trying).
        let bits_apply = File::create(locked.join("probe")).is_err();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        if bits_apply {
            let err = result.unwrap_err();
            assert!(err.is_not_writable(), "{err:?}");
            assert!(err.to_string().contains("cannot create files"), "{err}");
            assert!(err.to_string().contains("locked"), "{err}");
        } else {
            eprintln!("skipped: permission bits do not apply to this user (root)");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// sysfs refuses new files to every user, root included: the refusal is tested even
    /// where the permission bits above do not apply.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_refusing_new_files_is_refused_even_for_root() {
        if !Path::new("/sys/kernel").is_dir() {
            eprintln!("skipped: no sysfs mounted");
            return;
        }
        let err = FileCheckpoint::new("/sys/brook-checkpoint").unwrap_err();
        assert!(err.is_not_writable(), "{err:?}");
        assert!(
            err.to_string().starts_with(
                "checkpoint file /sys/brook-checkpoint: cannot create files in the directory /sys"
            ),
            "{err}"
        );
    }

    /// The `$changeStream` stage of the `aggregate` a builder with `checkpoint` sends.
    async fn stage_sent_for(checkpoint: &Checkpoint) -> Document {
        let server = brook_testkit::FakeServer::start(brook_testkit::ServerConfig::default())
            .await
            .unwrap();
        let client = crate::Client::connect(&server.uri()).await.unwrap();
        let watch = client
            .database("shop")
            .collection::<Document>("orders")
            .watch();
        let stream = checkpoint.apply_to(watch).await.unwrap();
        stream.close().await.unwrap();
        client.shutdown().await;
        let aggregate = server.commands_named("aggregate").remove(0);
        match aggregate.body.get_array("pipeline").unwrap().first() {
            Some(Bson::Document(stage)) => stage.get_document("$changeStream").unwrap().clone(),
            other => panic!("first stage: {other:?}"),
        }
    }

    #[tokio::test]
    async fn apply_to_resumes_after_or_starts_after_an_invalidate() {
        assert_eq!(
            stage_sent_for(&Checkpoint::resume_after(token("8201"))).await,
            doc! { "resumeAfter": { "_data": "8201" } }
        );
        assert_eq!(
            stage_sent_for(&Checkpoint::start_after(token("8202"))).await,
            doc! { "startAfter": { "_data": "8202" } }
        );
    }

    #[tokio::test]
    async fn of_batch_takes_the_batch_token_and_start_after_an_invalidate() {
        use brook_testkit::shapes::{self, BatchKind};
        let ts = |i| bson::Timestamp {
            time: 1_700_000_000,
            increment: i,
        };
        let ns = "shop.orders";
        let server = brook_testkit::FakeServer::start(brook_testkit::ServerConfig::default())
            .await
            .unwrap();
        let insert = shapes::insert_event(ts(1), ns, doc! { "_id": 1 });
        let invalidate = shapes::invalidate_event(ts(3));
        server.push_action(
            "aggregate",
            brook_testkit::Action::cursor(
                5,
                ns,
                BatchKind::First,
                vec![insert],
                Some(shapes::post_batch_resume_token(ts(2))),
                None,
            ),
        );
        server.push_action(
            "getMore",
            brook_testkit::Action::cursor(
                0,
                ns,
                BatchKind::Next,
                vec![invalidate.clone()],
                Some(shapes::post_batch_resume_token(ts(4))),
                None,
            ),
        );
        let client = crate::Client::connect(&server.uri()).await.unwrap();
        let mut stream = client
            .database("shop")
            .collection::<Document>("orders")
            .watch()
            .raw()
            .await
            .unwrap();
        let pbrt = ResumeToken::from_document(&shapes::post_batch_resume_token(ts(2))).unwrap();
        let first = stream.next_batch().await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(
            Checkpoint::of_batch(&first),
            Some(Checkpoint::resume_after(pbrt))
        );
        let last = stream.next_batch().await.unwrap();
        assert!(last.invalidated());
        let invalidate_id =
            ResumeToken::from_document(invalidate.get_document("_id").unwrap()).unwrap();
        assert_eq!(
            Checkpoint::of_batch(&last),
            Some(Checkpoint::start_after(invalidate_id))
        );
        client.shutdown().await;
    }

    #[test]
    fn a_checkpoint_picks_the_start_option() {
        assert_eq!(
            Checkpoint::resume_after(token("a")),
            Checkpoint {
                token: token("a"),
                after_invalidate: false
            }
        );
        assert!(Checkpoint::start_after(token("a")).after_invalidate);
    }
}
