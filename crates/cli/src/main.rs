//! `brook`: the command-line tool of the brook MongoDB driver.
//!
//! - `brook tail <uri> <db>[.<coll>]` (or `--cluster`) prints a change stream as JSON
//!   lines (relaxed or canonical Extended JSON v2, `--json-format`), with every watch
//!   option as a flag, a resume file for at-least-once processing across restarts,
//!   `--count`, and live statistics on a terminal.
//! - `brook demo-writer <uri> <db.coll>` writes a steady mix of inserts, updates and
//!   deletes (what `cargo xtask demo` tails).
//! - `brook bench <uri> <db.coll>` measures insert-to-event latency (HDR histogram
//!   percentiles), getMore round trips and events/s at a controlled write rate, as a table
//!   or JSON, and deletes what it wrote.
//! - `brook completions <shell>` and `brook man [<command>]` print a shell completion
//!   script and the man page, made from the same clap definition as the parser and
//!   `--help` ([`args::Cli`]), so that none of them can drift from the others.
//!
//! Errors are one line on stderr, `brook: error: …`, ending with the help of the command
//! they are about (``(see `brook tail --help`)``); the exit status is 2 for a bad command line,
//! 1 for a failure while running, 0 otherwise (also after Ctrl-C or SIGTERM, which close
//! the stream first).
#![forbid(unsafe_code)]

mod args;
mod bench;
mod error;
mod json;
mod stats;
mod tail;
mod writer;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use args::Command;
use error::CliError;

/// A future that completes at the first SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed now, so a signal that arrives before the future is polled is not lost.
pub(crate) fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs `fut` on a single-threaded runtime (one stream needs no more).
fn block_on(fut: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(fut)
}

/// Runs `fut` on a runtime of two worker threads, so that the bench's writer and reader
/// do not wait for each other.
fn block_on_multi(fut: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(fut)
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Print(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // `brook man | head` closes the pipe early: not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Stdout(e)),
                _ => Ok(()),
            }
        }
        Command::Tail(a) => block_on(tail::run(*a)),
        Command::DemoWriter(a) => block_on(writer::run(a)),
        Command::Bench(a) => block_on_multi(bench::run(a)),
    }
}

fn main() -> ExitCode {
    let result = args::parse(std::env::args_os().skip(1)).and_then(|command| {
        let name = command.name();
        run(command).map_err(|e| match name {
            Some(name) => e.in_command(name),
            None => e,
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.line());
            ExitCode::from(e.exit_code())
        }
    }
}
