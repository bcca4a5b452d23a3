//! The one error type of the `brook` command-line tool, and how it is shown.

/// Everything that can make `brook` fail. [`CliError::exit_code`] maps it to the process's
/// exit status: 2 for a command line that cannot be run, 1 for a failure while running.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line is wrong (unknown flag, bad value, missing argument).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// The command it is about (`tail`), whose help the error line names.
        command: Option<&'static str>,
    },
    /// A brook operation failed.
    #[error("{what}: {source}")]
    Brook {
        /// What was being done.
        what: String,
        /// The driver's error.
        source: brook::Error,
    },
    /// The resume file cannot be used (its directory is missing or not writable: exit
    /// 2, before connecting), or could not be read, parsed or written (exit 1).
    #[error("--resume-file: {0}")]
    ResumeFile(#[from] brook::checkpoint::FileCheckpointError),
    /// An event could not be turned into JSON (malformed BSON from the server).
    #[error("cannot print an event: {0}")]
    Event(String),
    /// Standard output could not be written (other than a closed pipe, which ends quietly).
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
    /// A run went wrong in a way that is not one brook error (e.g. `brook bench` saw the
    /// stream end, or its writer task died).
    #[error("{0}")]
    Failed(String),
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

impl CliError {
    /// A usage error with `message`.
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage {
            message: message.into(),
            command: None,
        }
    }

    /// The error, about `command` (`tail`) when it is a usage error about no command yet:
    /// its line then points to `brook tail --help`.
    pub(crate) fn in_command(self, command: &'static str) -> CliError {
        match self {
            CliError::Usage {
                message,
                command: None,
            } => CliError::Usage {
                message,
                command: Some(command),
            },
            other => other,
        }
    }

    /// A brook error, with what was being done.
    pub(crate) fn brook(what: impl Into<String>, source: brook::Error) -> CliError {
        CliError::Brook {
            what: what.into(),
            source,
        }
    }

    /// The process exit status for this error: 2 for usage errors and a resume file
    /// that cannot be used at all (the command line names a place that cannot hold it),
    /// 1 for the rest.
    pub(crate) fn exit_code(&self) -> u8 {
        use brook::checkpoint::FileCheckpointErrorKind as Kind;
        match self {
            CliError::Usage { .. } => 2,
            CliError::ResumeFile(e) => match e.kind() {
                Kind::MissingDirectory | Kind::NotWritable | Kind::NotAFile => 2,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// The one line printed on stderr: `brook: error: …`, with any line breaks of the
    /// underlying messages folded so that the output stays one line.
    pub(crate) fn line(&self) -> String {
        let mut text = self.to_string();
        match self {
            CliError::Usage {
                command: Some(command),
                ..
            } => text.push_str(&format!(" (see `brook {command} --help`)")),
            CliError::Usage { command: None, .. } => text.push_str(" (see `brook --help`)"),
            _ => {}
        }
        let folded: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!("brook: error: {}", folded.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_the_rest_exit_1() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        let missing = brook::checkpoint::FileCheckpoint::new("/no/such/dir/f").unwrap_err();
        assert_eq!(CliError::from(missing).exit_code(), 2);
        assert_eq!(CliError::Failed("bad".into()).exit_code(), 1);
        assert_eq!(
            CliError::Stdout(std::io::Error::other("closed")).exit_code(),
            1
        );
    }

    #[test]
    fn the_error_line_is_one_line() {
        let e = CliError::Failed("first\nsecond\n\n  third".into());
        let line = e.line();
        assert_eq!(line, "brook: error: first; second; third");
        assert!(!line.contains('\n'));
        let u = CliError::usage("unknown option '--x'").line();
        assert_eq!(u, "brook: error: unknown option '--x' (see `brook --help`)");
        let t = CliError::usage("missing <URI>").in_command("tail");
        assert_eq!(
            t.line(),
            "brook: error: missing <URI> (see `brook tail --help`)"
        );
        // The first command named stays: an error is about where it was made.
        let t = t.in_command("bench");
        assert!(
            t.line().ends_with("(see `brook tail --help`)"),
            "{}",
            t.line()
        );
        // Errors that are not usage errors carry no hint.
        let f = CliError::Failed("x".into()).in_command("tail");
        assert_eq!(f.line(), "brook: error: x");
    }
}
