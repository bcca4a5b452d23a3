//! `cargo xtask demo`: brook's main job, live, in one command.
//!
//! 1. installs the nx-27017 peer if needed ([`peer::install`]) and builds the `brook`
//!    binary (`cargo build -p brook-cli`: the debug profile, which builds in about half
//!    the time of `--release` on a fresh clone and is plenty fast for a demo);
//! 2. starts a fresh peer ([`Peer`], a guard that stops it whichever way this ends);
//! 3. runs `brook tail <uri> demo.events --count N` in the foreground (its JSON lines on
//!    stdout, its live statistics on stderr when that is a terminal) and, half a second
//!    later, `brook demo-writer <uri> demo.events` in the background;
//! 4. when the tail has printed N events: stops the writer (SIGTERM; it prints a summary)
//!    and the peer.
//!
//! Every child is held by a guard that stops it on drop, so an error or a panic stops
//! them all. Ctrl-C reaches every process of the terminal's process group: the tail and
//! the writer close their stream and connection and exit 0, the peer exits cleanly, and
//! xtask (std only, no signal handler) exits with them.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::peer::{self, Peer};
use crate::{Context, Error, Result, cargo, display_command, repo_root, run};

const USAGE: &str = "\
usage: cargo xtask demo [--count N] [--interval-ms M]

Starts an nx-27017 peer, then tails the change stream of demo.events with
`brook tail --count N` (default 20) while `brook demo-writer` inserts, updates and
deletes documents every M ms (default 250). Stops everything when N events were shown.
";

/// Events the tail shows by default.
const DEFAULT_COUNT: u64 = 20;

/// The writer's default pause between writes.
const DEFAULT_INTERVAL_MS: u64 = 250;

/// The namespace the demo writes and tails.
const NAMESPACE: &str = "demo.events";

/// How long the writer starts after the tail (so the tail's stream is open first).
const WRITER_DELAY: Duration = Duration::from_millis(500);

/// How long a stopping child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often a running child is looked at.
const POLL: Duration = Duration::from_millis(20);

/// The options of `cargo xtask demo`.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    count: u64,
    interval_ms: u64,
}

impl Options {
    /// `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut opts = Options {
            count: DEFAULT_COUNT,
            interval_ms: DEFAULT_INTERVAL_MS,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let mut number = |name: &str| -> Result<u64> {
                let value = inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| Error::new(format!("{name} needs a value")))?;
                value.parse().map_err(|_| {
                    Error::new(format!("{name}: expected a whole number, got `{value}`"))
                })
            };
            match flag {
                "-h" | "--help" => return Ok(None),
                "--count" => opts.count = number("--count")?,
                "--interval-ms" => opts.interval_ms = number("--interval-ms")?,
                other => {
                    return Err(Error::new(format!(
                        "unknown option `{other}` (usage: cargo xtask demo [--count N] [--interval-ms M])"
                    )));
                }
            }
        }
        if opts.count == 0 {
            return Err(Error::new("--count must be at least 1"));
        }
        Ok(Some(opts))
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Guard {
    name: &'static str,
    child: Option<Child>,
}

impl Guard {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Guard> {
        eprintln!("$ {}", display_command(cmd));
        let child = cmd
            .spawn()
            .context(|| format!("could not start `{}`", display_command(cmd)))?;
        Ok(Guard {
            name,
            child: Some(child),
        })
    }

    /// Waits for the child to exit, at most `limit`; `None` if it is still running.
    fn wait_for(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child
                .try_wait()
                .context(|| format!("could not wait for {}", self.name))?
            {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(POLL);
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL after [`STOP_GRACE`]. Its exit status, if
    /// it was still running.
    fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        if child
            .try_wait()
            .context(|| format!("could not wait for {}", self.name))?
            .is_none()
        {
            // Through the shell's kill builtin: std can only send SIGKILL.
            let _ = Command::new("sh")
                .args(["-c", "kill -s TERM \"$1\" 2>/dev/null", "sh"])
                .arg(child.id().to_string())
                .stdin(Stdio::null())
                .status();
        }
        if let Some(status) = self.wait_for(STOP_GRACE)? {
            return Ok(Some(status));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child
                .wait()
                .context(|| format!("could not wait for {}", self.name))?;
            return Ok(Some(status));
        }
        Ok(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: could not stop {}: {e}", self.name);
        }
    }
}

/// Where cargo puts the debug `brook` binary.
fn brook_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let target = if target.is_relative() {
        repo_root().join(target)
    } else {
        target
    };
    target.join("debug").join("brook")
}

/// `cargo xtask demo [--count N] [--interval-ms M]`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let Some(opts) = Options::parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let started = Instant::now();
    peer::install()?;
    run(cargo().args(["build", "--package", "brook-cli", "--bin", "brook"]))?;
    let brook = brook_binary();
    if !brook.is_file() {
        return Err(Error::new(format!(
            "the build succeeded but {} is missing",
            brook.display()
        )));
    }
    let peer = Peer::start_for_test()?;
    let uri = peer.uri();
    eprintln!(
        "xtask: nx-27017 is up at {uri} ({:.1} s); tailing {NAMESPACE} for {} events\n",
        started.elapsed().as_secs_f64(),
        opts.count
    );

    let mut tail = Guard::spawn(
        "brook tail",
        Command::new(&brook)
            .args(["tail", &uri, NAMESPACE, "--count"])
            .arg(opts.count.to_string())
            .stdin(Stdio::null()),
    )?;
    sleep(WRITER_DELAY);
    let mut writer = Guard::spawn(
        "brook demo-writer",
        Command::new(&brook)
            .args(["demo-writer", &uri, NAMESPACE, "--interval-ms"])
            .arg(opts.interval_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;

    // Generous: the writer makes one event per interval.
    let limit = Duration::from_millis(opts.interval_ms.saturating_mul(opts.count))
        .saturating_add(Duration::from_secs(30));
    let tail_status = tail.wait_for(limit)?;
    let writer_status = writer.stop()?;
    let peer_result = peer.stop();
    match tail_status {
        Some(status) if status.success() => {}
        Some(status) => return Err(Error::new(format!("brook tail failed ({status})"))),
        None => {
            return Err(Error::new(format!(
                "brook tail did not show {} events within {} s",
                opts.count,
                limit.as_secs()
            )));
        }
    }
    match writer_status {
        Some(status) if !status.success() => {
            return Err(Error::new(format!("brook demo-writer failed ({status})")));
        }
        _ => {}
    }
    peer_result?;
    eprintln!(
        "\nxtask: demo done in {:.1} s: `{} tail --help` for more",
        started.elapsed().as_secs_f64(),
        brook.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        assert_eq!(
            Options::parse(&[]).unwrap(),
            Some(Options {
                count: DEFAULT_COUNT,
                interval_ms: DEFAULT_INTERVAL_MS
            })
        );
        assert_eq!(
            Options::parse(&args(&["--count", "5", "--interval-ms=10"])).unwrap(),
            Some(Options {
                count: 5,
                interval_ms: 10
            })
        );
        assert_eq!(Options::parse(&args(&["--help"])).unwrap(), None);
        for bad in [
            &["--count"][..],
            &["--count", "x"],
            &["--count", "0"],
            &["--frob"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_binary_is_under_the_target_dir() {
        let path = brook_binary();
        assert!(path.ends_with("debug/brook"), "{}", path.display());
        assert!(path.is_absolute());
    }
}
