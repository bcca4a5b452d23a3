//! `cargo xtask`: brook's project commands.
//!
//! `cargo xtask` is an alias (see `.cargo/config.toml`) for
//! `cargo run --quiet --package xtask --`. Every subcommand lives in its own module and
//! `main` only dispatches:
//!
//! - `peer` ([`peer`]): install, start, stop the nx-27017 peer used by the integration tests.
//! - `test` ([`test`]): the whole test loop CI runs (`.ci/run` calls `cargo xtask test`).
//!
//! Other subcommands (`fuzz`, `bench`, `demo`) get their own module and one arm in
//! [`dispatch`] each.
//!
//! xtask depends on std only, so `cargo xtask` builds in seconds on a fresh clone.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod fuzz;
mod peer;
mod test;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--live]        run the whole test loop: fmt, clippy, the IO-line check, unit,
                       property and integration tests (against a fresh nx-27017 peer),
                       doc tests. With --live, no peer is started and the tests run
                       against MONGODB_URI, which must be set.
       [--only-integration]
                       run only the integration tests (tests/it), for a quick check
  peer install         create target/brook-venv and pip install the pinned nx-27017
  peer start           start a peer in the background and print its MONGODB_URI
  peer stop            stop the peer `peer start` started
  peer status          say whether that peer is running, and its MONGODB_URI
  demo [--count N] [--interval-ms M]
                       the main job, live: start a peer, a writer inserting, updating and
                       deleting through brook, and `brook tail` printing the events
  fuzz [--seconds N] [--target T]... [--sanitizer none|address] [--list] [-- <libFuzzer flags>]
                       install cargo-fuzz into target/tools, build every fuzz target and
                       run each for N seconds (default 60); fails on any crash
  bench [--quick] [--rounds N] [--seconds S] [--only SCENARIO]... [--no-footprint] [--no-e2e]
                       brook next to the socket floor and the official driver against one
                       replay server; writes docs/BENCHMARKS.md (with --quick: target/bench/)
  bench criterion [cargo bench args] [-- criterion args]
                       the criterion codec benches (cargo bench -p brook-benches)
  help                 print this text
";

/// An xtask failure: a message meant for the person at the terminal.
#[derive(Debug)]
pub(crate) struct Error(String);

impl Error {
    /// A failure described by `msg`.
    pub(crate) fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// xtask's result type.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Adds what was being attempted to an IO error.
pub(crate) trait Context<T> {
    /// Turns the error into an [`Error`] that starts with `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// The repository root (the workspace's directory), wherever xtask is run from.
pub(crate) fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The cargo that runs xtask (`$CARGO`), or `cargo` from `PATH`.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// A command line as a person would type it (for messages).
pub(crate) fn display_command(cmd: &Command) -> String {
    let mut line = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
            line.push_str(&format!("{arg:?}"));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `cmd` with inherited stdio; a non-zero exit is an error naming the command.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = display_command(cmd);
    eprintln!("$ {line}");
    let status = cmd.status().context(|| format!("could not run `{line}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("`{line}` failed ({status})")))
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            return Err(Error::new("no command given"));
        }
    };
    match command {
        "test" => test::main(rest),
        "peer" => peer::main(rest),
        "demo" => demo::main(rest),
        "fuzz" => fuzz::run(rest).map_err(Error::new),
        "bench" => bench::run(rest).map_err(Error::new),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            Err(Error::new(format!("unknown command `{other}`")))
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Every guard (e.g. a running peer) is dropped inside `dispatch`, before we exit.
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_command_quotes_only_what_needs_it() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["clippy", "--", "-D", "warnings", "a b", ""]);
        assert_eq!(
            display_command(&cmd),
            r#"cargo clippy -- -D warnings "a b" """#
        );
    }

    #[test]
    fn repo_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml"))
            .expect("the workspace manifest is readable");
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn unknown_command_is_an_error() {
        let err = dispatch(&["frobnicate".to_owned()]).expect_err("unknown command");
        assert!(err.to_string().contains("frobnicate"), "{err}");
        assert!(dispatch(&[]).is_err());
    }
}
