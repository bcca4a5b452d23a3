//! `--resume-file`: where `brook tail` keeps its place.
//!
//! The file holds one line of JSON: `{"resumeToken": <token in canonical extended JSON>,
//! "invalidate": <bool>}`. `invalidate` is true when the token is the `_id` of an
//! `invalidate` event: such a stream cannot be resumed, only started again after it, so
//! the next run passes the token as `startAfter` instead of `resumeAfter`.
//!
//! Saving is atomic: the line is written to `PATH.tmp`, then renamed over `PATH`, so a
//! reader (or a crash) sees the old token or the new one, never half a file. The file and
//! its directory are fsync'd at most once a second and when the tool exits: a power loss
//! can take back at most the last second of tokens, which means events printed again on
//! restart, never events skipped (at-least-once). A file that is empty or unreadable after
//! such a crash is refused with an error, never guessed around.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brook::ResumeToken;
use bson::Bson;

use crate::error::CliError;
use crate::json::{self, Mode, Ordered};

/// How often a saved token is made durable with fsync.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The largest resume file read (a token is a few hundred bytes).
const MAX_FILE_LEN: u64 = 1 << 20;

/// A position read back from the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    /// The token.
    pub(crate) token: ResumeToken,
    /// Whether it is an `invalidate` event's `_id` (start with `startAfter`).
    pub(crate) invalidate: bool,
}

/// The line written for `token`.
pub(crate) fn encode(token: &ResumeToken, invalidate: bool) -> Result<String, String> {
    let token_json = json::document_to_string(token.as_document(), Mode::Canonical)
        .map_err(|e| format!("cannot encode the resume token: {e}"))?;
    Ok(format!(
        "{{\"resumeToken\":{token_json},\"invalidate\":{invalidate}}}\n"
    ))
}

/// Reads a line written by [`encode`].
pub(crate) fn decode(text: &str) -> Result<Saved, String> {
    if text.trim().is_empty() {
        return Err(
            "the file is empty (delete it to start from now, or pass --resume-after)".into(),
        );
    }
    let Ordered::Object(members) = Ordered::parse(text).map_err(|e| e.to_string())? else {
        return Err("expected a JSON object {\"resumeToken\": …}".into());
    };
    let mut token = None;
    let mut invalidate = false;
    for (key, value) in members {
        match key.as_str() {
            "resumeToken" => match value.into_bson().map_err(|e| e.to_string())? {
                Bson::Document(doc) => {
                    token = Some(
                        ResumeToken::from_document(&doc)
                            .map_err(|e| format!("invalid resume token: {e}"))?,
                    );
                }
                _ => return Err("`resumeToken` is not a document".into()),
            },
            "invalidate" => match value {
                Ordered::Bool(b) => invalidate = b,
                _ => return Err("`invalidate` is not true or false".into()),
            },
            // Unknown members are left for newer versions of the tool.
            _ => {}
        }
    }
    let token = token.ok_or("no `resumeToken` in the file")?;
    Ok(Saved { token, invalidate })
}

/// Reads the file at `path`: `None` if it does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<Saved>, CliError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::resume_file(path, format!("cannot open: {e}"))),
    };
    let len = file
        .metadata()
        .map_err(|e| CliError::resume_file(path, format!("cannot read: {e}")))?
        .len();
    if len > MAX_FILE_LEN {
        return Err(CliError::resume_file(
            path,
            format!("{len} bytes is too large for a resume token file"),
        ));
    }
    let text = fs::read_to_string(path)
        .map_err(|e| CliError::resume_file(path, format!("cannot read: {e}")))?;
    decode(&text)
        .map(Some)
        .map_err(|message| CliError::resume_file(path, message))
}

/// The writer of one resume file.
#[derive(Debug)]
pub(crate) struct ResumeFile {
    path: PathBuf,
    tmp: PathBuf,
    last_sync: Option<Instant>,
    dirty: bool,
}

impl ResumeFile {
    /// A writer for `path` (nothing is written yet).
    pub(crate) fn new(path: PathBuf) -> ResumeFile {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        ResumeFile {
            path,
            tmp: PathBuf::from(tmp),
            last_sync: None,
            dirty: false,
        }
    }

    /// Saves `token` atomically (write `PATH.tmp`, rename over `PATH`), and makes it
    /// durable if the last fsync is [`SYNC_INTERVAL`] old.
    pub(crate) fn save(&mut self, token: &ResumeToken, invalidate: bool) -> Result<(), CliError> {
        let line = encode(token, invalidate).map_err(|m| CliError::resume_file(&self.path, m))?;
        let err = |what: &str, e: std::io::Error| {
            CliError::resume_file(&self.path, format!("{what}: {e}"))
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(|e| err(&format!("cannot create {}", self.tmp.display()), e))?;
        file.write_all(line.as_bytes())
            .map_err(|e| err(&format!("cannot write {}", self.tmp.display()), e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path)
            .map_err(|e| err(&format!("cannot rename {} over it", self.tmp.display()), e))?;
        self.dirty = true;
        if self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_INTERVAL) {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes the last saved token durable: fsync of the file and of its directory (for
    /// the rename). Does nothing if nothing was saved since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), CliError> {
        if !self.dirty {
            return Ok(());
        }
        let err =
            |e: std::io::Error| CliError::resume_file(&self.path, format!("cannot fsync: {e}"));
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
        self.dirty = false;
        self.last_sync = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn token(data: &str) -> ResumeToken {
        ResumeToken::from_document(&doc! { "_data": data }).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("brook-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_line_round_trips_exactly() {
        let t = ResumeToken::from_document(
            &doc! { "_data": "8265F0", "_typeBits": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0x40] }, "n": 5_i64 },
        )
        .unwrap();
        let line = encode(&t, false).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(line.starts_with(r#"{"resumeToken":{"_data":"8265F0","_typeBits":{"$binary""#));
        let saved = decode(&line).unwrap();
        assert_eq!(saved.token.as_bytes(), t.as_bytes(), "byte for byte");
        assert!(!saved.invalidate);
        assert!(decode(&encode(&t, true).unwrap()).unwrap().invalidate);
    }

    #[test]
    fn bad_files_are_refused() {
        for bad in [
            "",
            "  \n",
            "[]",
            "{}",
            r#"{"resumeToken": "x"}"#,
            r#"{"resumeToken": {"_data": "a"}, "invalidate": "yes"}"#,
            r#"{"resumeToken": {"_data": "a"}"#,
        ] {
            assert!(decode(bad).is_err(), "accepted {bad:?}");
        }
        // Unknown members are ignored.
        let ok = decode(r#"{"resumeToken": {"_data": "a"}, "savedBy": "brook 9"}"#).unwrap();
        assert_eq!(ok.token, token("a"));
    }

    #[test]
    fn save_replaces_the_file_and_load_reads_it() {
        let dir = temp_dir("save");
        let path = dir.join("pos.json");
        assert_eq!(load(&path).unwrap(), None, "a missing file is no position");

        let mut file = ResumeFile::new(path.clone());
        file.save(&token("01"), false).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().token, token("01"));
        file.save(&token("02"), true).unwrap();
        let saved = load(&path).unwrap().unwrap();
        assert_eq!((saved.token, saved.invalidate), (token("02"), true));
        file.sync().unwrap();
        assert!(
            !dir.join("pos.json.tmp").exists(),
            "the temporary file was renamed"
        );

        fs::write(&path, "").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        fs::write(&path, vec![b' '; 2 << 20]).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("too large"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_into_a_missing_directory_is_an_error() {
        let dir = temp_dir("missing");
        let mut file = ResumeFile::new(dir.join("no").join("such").join("pos.json"));
        let err = file.save(&token("01"), false).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("cannot create"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
