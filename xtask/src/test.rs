//! `cargo xtask test`: the whole test loop, the one command CI runs (`.ci/run`).
//!
//! Steps, in order, stopping at the first failure:
//!
//! 1. `fmt`: `cargo fmt --all -- --check`
//! 2. `clippy`: `cargo clippy --workspace --all-targets -- -D warnings`
//! 3. `io-line`: `cargo tree` of the IO-free crates ([`IO_FREE`]) holds none of [`FORBIDDEN`]
//! 4. `peer`: install the nx-27017 venv and start a peer (not with `--live`)
//! 5. `tests`: unit, property and integration tests with `cargo nextest run --workspace`
//!    (`cargo test` when nextest is missing), with `MONGODB_URI` and `BROOK_SPEC_TESTS` set;
//!    this runs the example programs too (`examples/tests`, package `brook-examples`)
//! 6. `doc-tests`: `cargo test --workspace --doc` (with the README's Rust blocks, which
//!    `brook-examples` includes)
//!
//! The peer is a [`Peer`] guard, so it is stopped whichever way this ends.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer::{self, Peer};
use crate::{Context, Error, Result, cargo, repo_root, run};

/// The crates on the IO-free side of the line (skipped when not in the workspace).
pub(crate) const IO_FREE: [&str; 5] = [
    "brook-wire",
    "brook-auth",
    "brook-command",
    "brook-changestream",
    "brook-topology",
];

/// Crates that mean IO and must not appear in an IO-free crate's dependency tree.
pub(crate) const FORBIDDEN: [&str; 3] = ["tokio", "rustls", "socket2"];

/// The package that holds the integration tests (`tests/it`).
const INTEGRATION_PACKAGE: &str = "brook-integration-tests";

/// Where the spec tests are when `BROOK_SPEC_TESTS` is not set (relative to the repo root).
const DEFAULT_SPEC_TESTS: &str = "../shared/spec-tests";

/// The options of `cargo xtask test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// Run against `MONGODB_URI` instead of a fresh nx-27017.
    live: bool,
    /// Run only the integration tests (a debugging aid; CI runs everything).
    only_integration: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options::default();
        for arg in args {
            match arg.as_str() {
                "--live" => opts.live = true,
                "--only-integration" => opts.only_integration = true,
                other => {
                    return Err(Error::new(format!(
                        "unknown option `{other}` (usage: cargo xtask test [--live] [--only-integration])"
                    )));
                }
            }
        }
        Ok(opts)
    }
}

/// One finished step, for the summary.
struct StepResult {
    name: &'static str,
    took: Duration,
    ok: bool,
}

/// The steps run so far.
#[derive(Default)]
struct Steps {
    done: Vec<StepResult>,
}

impl Steps {
    /// Runs `f` as the step `name`; its failure names the step.
    fn run<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("\n==> xtask test: {name}");
        let started = Instant::now();
        let result = f();
        self.done.push(StepResult {
            name,
            took: started.elapsed(),
            ok: result.is_ok(),
        });
        result.map_err(|e| Error::new(format!("step `{name}` failed: {e}")))
    }

    fn print_summary(&self, outcome: &Result<()>, notes: &[String]) {
        if self.done.is_empty() {
            return; // refused before any step: the error says it all
        }
        eprintln!("\nxtask test summary:");
        for step in &self.done {
            eprintln!(
                "  {:<4}  {:<10} {:>7.1}s",
                if step.ok { "ok" } else { "FAIL" },
                step.name,
                step.took.as_secs_f64()
            );
        }
        for note in notes {
            eprintln!("  {note}");
        }
        match outcome {
            Ok(()) => eprintln!("all {} steps passed", self.done.len()),
            Err(_) => eprintln!("FAILED (the steps after the failed one were not run)"),
        }
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `BROOK_SPEC_TESTS` (default [`DEFAULT_SPEC_TESTS`]), made absolute against the repo root
/// so that tests find it whatever their working directory. Missing is an error in CI.
fn spec_tests_dir() -> Result<PathBuf> {
    let given = std::env::var_os("BROOK_SPEC_TESTS").map(PathBuf::from);
    let path = given.unwrap_or_else(|| PathBuf::from(DEFAULT_SPEC_TESTS));
    let path = if path.is_absolute() {
        path
    } else {
        repo_root().join(path)
    };
    if path.is_dir() {
        return path
            .canonicalize()
            .context(|| format!("could not resolve {}", path.display()));
    }
    if is_ci() {
        return Err(Error::new(format!(
            "the spec tests are missing: {} is not a directory (CI needs ../shared/spec-tests \
             beside the clone, or BROOK_SPEC_TESTS)",
            path.display()
        )));
    }
    eprintln!(
        "xtask: warning: spec tests not found at {}; the spec-test runners will fail",
        path.display()
    );
    Ok(path)
}

/// `cargo xtask test [--live] [--only-integration]`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    let mut steps = Steps::default();
    let mut notes = Vec::new();
    let outcome = run_steps(&opts, &mut steps, &mut notes);
    steps.print_summary(&outcome, &notes);
    outcome
}

fn run_steps(opts: &Options, steps: &mut Steps, notes: &mut Vec<String>) -> Result<()> {
    // Settle what the run needs before spending minutes on clippy.
    let live_uri = if opts.live {
        match std::env::var("MONGODB_URI") {
            Ok(uri) if !uri.trim().is_empty() => Some(uri),
            _ => {
                return Err(Error::new(
                    "--live needs MONGODB_URI set to the deployment to test against \
                     (e.g. MONGODB_URI=mongodb://localhost:27017/?replicaSet=rs0)",
                ));
            }
        }
    } else {
        None
    };
    let spec_tests = spec_tests_dir()?;

    if !opts.only_integration {
        steps.run("fmt", || {
            run(cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
        steps.run("clippy", || {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        steps.run("io-line", io_line)?;
    }

    // Declared before the steps that use it: dropped (stopped) on every way out.
    let mut peer: Option<Peer> = None;
    let uri = match live_uri {
        Some(uri) => {
            notes.push(format!("tests ran against MONGODB_URI={uri} (--live)"));
            uri
        }
        None => {
            let started = steps.run("peer", || {
                peer::install()?;
                Peer::start_for_test()
            })?;
            let uri = started.uri();
            eprintln!("xtask: nx-27017 is up: MONGODB_URI={uri}");
            notes.push(format!(
                "peer: nx-27017 at {uri}, log {}",
                started.log_path().display()
            ));
            peer = Some(started);
            uri
        }
    };

    let with_env = |cmd: &mut Command| {
        cmd.env("MONGODB_URI", &uri)
            .env("BROOK_SPEC_TESTS", &spec_tests);
    };
    steps.run("tests", || {
        let mut cmd = cargo();
        if nextest_available() {
            cmd.args(["nextest", "run", "--no-fail-fast"]);
        } else {
            eprintln!("xtask: cargo-nextest not found, using cargo test");
            cmd.args(["test", "--no-fail-fast", "--lib", "--bins", "--tests"]);
        }
        if opts.only_integration {
            cmd.args(["--package", INTEGRATION_PACKAGE]);
        } else {
            cmd.arg("--workspace");
        }
        with_env(&mut cmd);
        run(&mut cmd)
    })?;
    if !opts.only_integration {
        steps.run("doc-tests", || {
            let mut cmd = cargo();
            cmd.args(["test", "--workspace", "--doc"]);
            with_env(&mut cmd);
            run(&mut cmd)
        })?;
    }

    if let Some(peer) = peer.take() {
        steps.run("peer-stop", || peer.stop())?;
    }
    Ok(())
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cargo` with `args` and returns its stdout; a failure carries its stderr.
fn cargo_output(args: &[&str]) -> Result<String> {
    let mut cmd = cargo();
    cmd.args(args).stdin(Stdio::null());
    let line = crate::display_command(&cmd);
    let out = cmd.output().context(|| format!("could not run `{line}`"))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| Error::new(format!("`{line}` printed non-UTF-8")))
}

/// The IO line: no IO-free crate depends, even through its optional features, on a crate
/// in [`FORBIDDEN`].
fn io_line() -> Result<()> {
    let metadata = cargo_output(&["metadata", "--format-version", "1", "--no-deps"])?;
    let members = workspace_member_names(&metadata).ok_or_else(|| {
        Error::new("could not find `workspace_members` in the output of `cargo metadata`")
    })?;
    let mut failures = Vec::new();
    for package in IO_FREE {
        if !members.iter().any(|m| m == package) {
            eprintln!("io-line: {package} is not in the workspace (yet): skipped");
            continue;
        }
        let tree = cargo_output(&[
            "tree",
            "--package",
            package,
            "--edges",
            "normal",
            "--all-features",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])?;
        let found = forbidden_in_tree(&tree);
        if found.is_empty() {
            eprintln!("io-line: {package}: no {}", FORBIDDEN.join(", no "));
        } else {
            failures.push(format!(
                "{package} depends on {} (see `cargo tree -p {package} -e normal --all-features -i {}`)",
                found.join(", "),
                found.first().copied().unwrap_or("tokio")
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "IO crossed the line:\n  {}",
            failures.join("\n  ")
        )))
    }
}

/// The forbidden crates named in `cargo tree --prefix none --format {p}` output.
fn forbidden_in_tree(tree: &str) -> Vec<&'static str> {
    FORBIDDEN
        .into_iter()
        .filter(|forbidden| {
            tree.lines()
                .any(|line| line.split_whitespace().next() == Some(*forbidden))
        })
        .collect()
}

/// The package names in `cargo metadata`'s `workspace_members`, whose entries are package
/// id specs: `path+file:///w/crates/wire#brook-wire@0.1.0`, or `path+file:///w/xtask#0.0.0`
/// when the directory has the package's name.
fn workspace_member_names(metadata: &str) -> Option<Vec<String>> {
    let (_, after) = metadata.split_once("\"workspace_members\"")?;
    let (_, after) = after.split_once('[')?;
    let (list, _) = after.split_once(']')?;
    let names = list
        .split(',')
        .filter_map(|entry| {
            let spec = entry.trim().trim_matches('"');
            let (url, fragment) = spec.split_once('#')?;
            match fragment.split_once('@') {
                Some((name, _version)) => Some(name.to_owned()),
                None => url
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .map(str::to_owned),
            }
        })
        .collect();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(Options::parse(&[]).expect("no options"), Options::default());
        let opts = Options::parse(&args(&["--live", "--only-integration"])).expect("both");
        assert!(opts.live && opts.only_integration);
        let err = Options::parse(&args(&["--fast"])).expect_err("unknown");
        assert!(err.to_string().contains("--fast"), "{err}");
    }

    #[test]
    fn member_names_from_both_spec_forms() {
        let metadata = r#"{"packages":[{"name":"tokio"}],"workspace_members":["path+file:///work/main/crates/brook#0.1.0","path+file:///work/main/crates/wire#brook-wire@0.1.0","path+file:///work/main/xtask#0.0.0"],"resolve":null}"#;
        assert_eq!(
            workspace_member_names(metadata).expect("members"),
            ["brook", "brook-wire", "xtask"]
        );
        assert_eq!(
            workspace_member_names(r#"{"workspace_members":[]}"#).expect("empty"),
            Vec::<String>::new()
        );
        assert_eq!(workspace_member_names(r#"{"packages":[]}"#), None);
    }

    #[test]
    fn forbidden_crates_are_found_by_exact_name() {
        let clean = "brook-wire v0.1.0 (/w/crates/wire)\nbytes v1.10.1\ntokio-macros-ish v1.0.0\nrustls-pki-types v1.0.0\n";
        assert!(forbidden_in_tree(clean).is_empty());
        let dirty = "brook-command v0.1.0 (/w/crates/command)\ntokio v1.48.0\nsocket2 v0.6.0\ntokio v1.48.0 (*)\n";
        assert_eq!(forbidden_in_tree(dirty), ["tokio", "socket2"]);
    }

    #[test]
    fn io_line_holds_in_this_workspace() {
        // Runs the real `cargo metadata` and `cargo tree` (no build).
        if let Err(e) = io_line() {
            panic!("{e}");
        }
    }

    /// The package of the example programs, whose tests run them.
    const EXAMPLES_PACKAGE: &str = "brook-examples";

    #[test]
    fn the_examples_are_in_the_workspace() {
        // The `tests` step runs `--workspace`: the examples run only while they are in it.
        let metadata = cargo_output(&["metadata", "--format-version", "1", "--no-deps"])
            .unwrap_or_else(|e| panic!("{e}"));
        let members = workspace_member_names(&metadata).expect("workspace members");
        assert!(
            members.iter().any(|m| m == EXAMPLES_PACKAGE),
            "{EXAMPLES_PACKAGE} is not a workspace member: {members:?}"
        );
    }

    #[test]
    fn spec_tests_path_is_absolute() {
        // Whatever the environment, the path handed to the tests is absolute.
        if let Ok(path) = spec_tests_dir() {
            assert!(path.is_absolute(), "{}", path.display());
        }
    }
}
