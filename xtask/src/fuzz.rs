//! `cargo xtask fuzz`: build every cargo-fuzz target of `fuzz/` and run each for a
//! bounded time, on the stable toolchain.
//!
//! cargo-fuzz is installed on first use into `target/tools` (`cargo install --locked`,
//! pinned version, skipped when already there). Targets are built and run with
//! `--sanitizer none`, which needs no `-Z` flag and therefore works on stable rustc:
//! libFuzzer's coverage guidance comes from `-Cpasses=sancov-module`, a stable codegen
//! option. `--sanitizer address` adds AddressSanitizer; that needs `-Zsanitizer`, so
//! this module sets `RUSTC_BOOTSTRAP=1` for that build only (see `docs/fuzzing.md`).
//!
//! Each target runs with its committed seeds (`fuzz/seeds/<target>`, read only) and a
//! working corpus (`fuzz/corpus/<target>`, kept between runs, git-ignored). A crash, a
//! timeout or an out-of-memory stop fails the command and names the artifact libFuzzer
//! wrote. The number of executions per target comes from libFuzzer's final statistics.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The cargo-fuzz release `cargo xtask fuzz` installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Per-input time limit in seconds: a slower input is reported as a hang.
const UNIT_TIMEOUT_SECS: u64 = 10;

/// libFuzzer stops (and reports) when the process's RSS passes this many MiB.
const RSS_LIMIT_MB: u64 = 1024;

/// Under AddressSanitizer, any single allocation of this many MiB or more is a failure.
const MALLOC_LIMIT_MB: u64 = 256;

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [--target T]... [--sanitizer none|address]
                        [--list] [-- <libFuzzer flags>]

  --seconds N        run each target for N seconds (default 60)
  --target T         run only target T (repeatable; default: every target)
  --sanitizer S      `none` (default, stable toolchain) or `address`
                     (AddressSanitizer, built with RUSTC_BOOTSTRAP=1)
  --list             print the fuzz targets and exit
  -- ...             extra flags handed to libFuzzer as they are
";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    targets: Vec<String>,
    sanitizer: Sanitizer,
    list: bool,
    help: bool,
    libfuzzer_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sanitizer {
    None,
    Address,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Sanitizer::None => "none",
            Sanitizer::Address => "address",
        }
    }
}

/// One target's outcome.
#[derive(Debug)]
struct TargetRun {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    corpus_entries: usize,
}

/// Entry point: `args` are the arguments after `fuzz`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    if opts.help {
        print!("{USAGE}");
        return Ok(());
    }
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    let all_targets = list_targets(&fuzz_dir)?;
    if opts.list {
        for t in &all_targets {
            println!("{t}");
        }
        return Ok(());
    }
    let targets = select_targets(&all_targets, &opts.targets)?;

    let tools = root.join("target").join("tools");
    ensure_cargo_fuzz(&tools)?;
    let target_dir = root.join("target").join("fuzz");

    let mut build = cargo_fuzz(&tools, &fuzz_dir, opts.sanitizer);
    build
        .arg("build")
        .arg("--sanitizer")
        .arg(opts.sanitizer.name())
        .arg("--target-dir")
        .arg(&target_dir);
    run_checked(&mut build)?;

    let log_dir = root.join("target").join("fuzz-logs");
    fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;

    let mut results = Vec::new();
    for target in &targets {
        let result = run_target(&RunSpec {
            tools: &tools,
            fuzz_dir: &fuzz_dir,
            target_dir: &target_dir,
            log_dir: &log_dir,
            target,
            opts: &opts,
        })?;
        results.push(result);
    }

    println!();
    println!(
        "fuzz summary ({} s per target, sanitizer {}):",
        opts.seconds,
        opts.sanitizer.name()
    );
    println!(
        "{:<24} {:>10} {:>14} {:>10}",
        "target", "seconds", "executions", "corpus"
    );
    for r in &results {
        let execs = r
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!(
            "{:<24} {:>10.1} {:>14} {:>10}",
            r.target, r.seconds, execs, r.corpus_entries
        );
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        seconds: 60,
        targets: Vec::new(),
        sanitizer: Sanitizer::None,
        list: false,
        help: false,
        libfuzzer_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" | "-s" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                opts.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: `{v}` is not a whole number of seconds"))?;
                if opts.seconds == 0 {
                    return Err("--seconds must be at least 1".to_owned());
                }
            }
            "--target" | "-t" => {
                let v = it.next().ok_or("--target needs a value")?;
                opts.targets.push(v.clone());
            }
            "--sanitizer" => {
                let v = it.next().ok_or("--sanitizer needs a value")?;
                opts.sanitizer = match v.as_str() {
                    "none" => Sanitizer::None,
                    "address" | "asan" => Sanitizer::Address,
                    other => return Err(format!("--sanitizer: unknown `{other}` (none|address)")),
                };
            }
            "--list" => opts.list = true,
            "--help" | "-h" => opts.help = true,
            "--" => {
                opts.libfuzzer_args.extend(it.by_ref().cloned());
            }
            other => {
                eprint!("{USAGE}");
                return Err(format!("fuzz: unknown argument `{other}`"));
            }
        }
    }
    Ok(opts)
}

fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The fuzz targets, from the `[[bin]]` tables of `fuzz/Cargo.toml`.
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let manifest_path = fuzz_dir.join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let targets = bin_names(&manifest);
    if targets.is_empty() {
        return Err(format!("no [[bin]] targets in {}", manifest_path.display()));
    }
    Ok(targets)
}

/// The `name` of every `[[bin]]` table of a Cargo manifest (a small, line-based reader:
/// enough for the manifest this repository writes).
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        if let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=').map(str::trim);
            if let Some(v) = value
                .and_then(|v| v.strip_prefix('"'))
                .and_then(|v| v.split('"').next())
            {
                names.push(v.to_owned());
            }
        }
    }
    names
}

fn select_targets(all: &[String], wanted: &[String]) -> Result<Vec<String>, String> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for w in wanted {
        if !all.contains(w) {
            return Err(format!(
                "unknown fuzz target `{w}` (targets: {})",
                all.join(", ")
            ));
        }
        if !out.contains(w) {
            out.push(w.clone());
        }
    }
    Ok(out)
}

/// Installs the pinned cargo-fuzz under `tools` unless that exact version is there.
fn ensure_cargo_fuzz(tools: &Path) -> Result<(), String> {
    let bin = tools
        .join("bin")
        .join(format!("cargo-fuzz{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        let out = Command::new(&bin).args(["fuzz", "--version"]).output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains(CARGO_FUZZ_VERSION) {
                return Ok(());
            }
        }
    }
    eprintln!(
        "xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        tools.display()
    );
    let mut install = Command::new(cargo_program());
    install
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
            "--root",
        ])
        .arg(tools);
    run_checked(&mut install)
}

/// `cargo fuzz` with `tools/bin` first on `PATH`, run from the fuzz crate.
fn cargo_fuzz(tools: &Path, fuzz_dir: &Path, sanitizer: Sanitizer) -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.arg("fuzz").current_dir(fuzz_dir);
    let mut paths = vec![tools.join("bin")];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    if let Ok(joined) = std::env::join_paths(paths) {
        cmd.env("PATH", joined);
    }
    if sanitizer == Sanitizer::Address {
        // -Zsanitizer=address is unstable: let the stable compiler accept it.
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd
}

fn show(cmd: &Command) -> String {
    let mut line = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line
}

fn run_checked(cmd: &mut Command) -> Result<(), String> {
    let line = show(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

struct RunSpec<'a> {
    tools: &'a Path,
    fuzz_dir: &'a Path,
    target_dir: &'a Path,
    log_dir: &'a Path,
    target: &'a str,
    opts: &'a Options,
}

fn run_target(spec: &RunSpec<'_>) -> Result<TargetRun, String> {
    let target = spec.target;
    let corpus = spec.fuzz_dir.join("corpus").join(target);
    let seeds = spec.fuzz_dir.join("seeds").join(target);
    fs::create_dir_all(&corpus).map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;

    let mut cmd = cargo_fuzz(spec.tools, spec.fuzz_dir, spec.opts.sanitizer);
    cmd.arg("run")
        .arg("--sanitizer")
        .arg(spec.opts.sanitizer.name())
        .arg("--target-dir")
        .arg(spec.target_dir)
        .arg(target)
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    } else {
        eprintln!("xtask fuzz: warning: no seeds at {}", seeds.display());
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", spec.opts.seconds))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1");
    if spec.opts.sanitizer == Sanitizer::Address {
        cmd.arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"));
    }
    cmd.args(&spec.opts.libfuzzer_args);

    let log_path = spec.log_dir.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let line = show(&cmd);
    eprintln!("$ {line}");
    eprintln!(
        "xtask fuzz: {target}: {} s, log in {}",
        spec.opts.seconds,
        log_path.display()
    );

    let started = Instant::now();
    // libFuzzer reports on stderr; cargo-fuzz's own messages also go there.
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    let mut report = Report::default();
    if let Some(stderr) = child.stderr.take() {
        for text in BufReader::new(stderr).lines() {
            let Ok(text) = text else { break };
            // The log is a convenience; a failed write must not hide the run's outcome.
            let _ = writeln!(log, "{text}");
            report.observe(&text);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{line}`: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();

    if !status.success() || report.failure.is_some() {
        let what = report
            .failure
            .as_deref()
            .unwrap_or("libFuzzer exited with an error");
        let artifact = report
            .artifact
            .as_ref()
            .map_or_else(|| "(no artifact path reported)".to_owned(), Clone::clone);
        eprintln!("---- last lines of {} ----", log_path.display());
        for l in tail(&log_path, 40) {
            eprintln!("{l}");
        }
        return Err(format!(
            "fuzz target `{target}` failed ({status}): {what}\n  artifact: {artifact}\n  \
             reproduce: (cd fuzz && cargo fuzz run --sanitizer {} {target} {artifact})",
            spec.opts.sanitizer.name()
        ));
    }
    let corpus_entries = fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    eprintln!(
        "xtask fuzz: {target}: ok, {} executions in {seconds:.1} s",
        report
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
    Ok(TargetRun {
        target: target.to_owned(),
        seconds,
        executions: report.executions,
        corpus_entries,
    })
}

/// What we learn from libFuzzer's output, line by line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    executions: Option<u64>,
    artifact: Option<String>,
    failure: Option<String>,
}

impl Report {
    fn observe(&mut self, line: &str) {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(n) = n.trim().parse() {
                self.executions = Some(n);
            }
        } else if let Some(rest) = line.strip_prefix('#') {
            // `#123456\tDONE   cov: ...` — the last status line of a run.
            let mut parts = rest.split_whitespace();
            if let (Some(n), Some("DONE")) = (parts.next(), parts.next())
                && self.executions.is_none()
            {
                self.executions = n.parse().ok();
            }
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 123456 runs in 60 second(s)`
            if self.executions.is_none() {
                self.executions = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            }
        }
        if let Some(idx) = line.find("Test unit written to ") {
            let path = line[idx + "Test unit written to ".len()..].trim();
            self.artifact = Some(path.to_owned());
        }
        for marker in [
            "ERROR: libFuzzer: deadly signal",
            "ERROR: libFuzzer: timeout",
            "ERROR: libFuzzer: out-of-memory",
            "ERROR: libFuzzer: fuzz target exited",
            "ERROR: libFuzzer: leak",
            "ERROR: AddressSanitizer",
            "ERROR: libFuzzer: malloc limit",
        ] {
            if line.contains(marker) && self.failure.is_none() {
                self.failure = Some(line.to_owned());
            }
        }
        if line.starts_with("==") && line.contains("ERROR: libFuzzer") && self.failure.is_none() {
            self.failure = Some(line.to_owned());
        }
    }
}

fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_seconds_targets_and_passthrough() {
        let opts = parse_args(&strings(&[
            "--seconds",
            "300",
            "--target",
            "frame_decode",
            "--target",
            "reply_parse",
            "--",
            "-jobs=2",
        ]))
        .expect("valid arguments");
        assert_eq!(opts.seconds, 300);
        assert_eq!(opts.targets, strings(&["frame_decode", "reply_parse"]));
        assert_eq!(opts.sanitizer, Sanitizer::None);
        assert_eq!(opts.libfuzzer_args, strings(&["-jobs=2"]));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_args(&strings(&["--seconds"])).is_err());
        assert!(parse_args(&strings(&["--seconds", "ten"])).is_err());
        assert!(parse_args(&strings(&["--seconds", "0"])).is_err());
        assert!(parse_args(&strings(&["--sanitizer", "memory"])).is_err());
        assert!(parse_args(&strings(&["--frobnicate"])).is_err());
    }

    #[test]
    fn reads_bin_names_from_a_manifest() {
        let manifest = r#"
[package]
name = "brook-fuzz"

[[bin]]
name = "frame_decode"
path = "fuzz_targets/frame_decode.rs"

[dependencies]
name = "not-a-bin"

[[bin]]
name    =   "reply_parse"
path = "fuzz_targets/reply_parse.rs"
"#;
        assert_eq!(
            bin_names(manifest),
            strings(&["frame_decode", "reply_parse"])
        );
    }

    #[test]
    fn the_repository_fuzz_manifest_lists_targets() {
        let targets = list_targets(&repo_root().join("fuzz")).expect("fuzz/Cargo.toml is readable");
        assert!(targets.len() >= 4, "{targets:?}");
    }

    #[test]
    fn selects_known_targets_only() {
        let all = strings(&["a", "b", "c"]);
        assert_eq!(select_targets(&all, &[]).expect("all"), all);
        assert_eq!(
            select_targets(&all, &strings(&["c", "a", "c"])).expect("some"),
            strings(&["c", "a"])
        );
        assert!(select_targets(&all, &strings(&["z"])).is_err());
    }

    #[test]
    fn report_reads_executions_and_artifacts() {
        let mut r = Report::default();
        r.observe("#524288\tpulse  cov: 1201 ft: 4410 corp: 310/40Kb exec/s: 8738 rss: 60Mb");
        r.observe(
            "#1048576\tDONE   cov: 1201 ft: 4410 corp: 310/40Kb lim: 4096 exec/s: 17476 rss: 60Mb",
        );
        assert_eq!(r.executions, Some(1_048_576));
        r.observe("Done 1048576 runs in 60 second(s)");
        r.observe("stat::number_of_executed_units: 1048577");
        assert_eq!(r.executions, Some(1_048_577));
        assert_eq!(r.failure, None);

        let mut crash = Report::default();
        crash.observe("==1234== ERROR: libFuzzer: deadly signal");
        crash.observe("artifact_prefix='/w/fuzz/artifacts/frame_decode/'; Test unit written to /w/fuzz/artifacts/frame_decode/crash-abc");
        assert_eq!(
            crash.artifact.as_deref(),
            Some("/w/fuzz/artifacts/frame_decode/crash-abc")
        );
        assert!(
            crash
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("deadly signal"))
        );
    }

    #[test]
    fn tail_of_a_missing_file_is_empty() {
        assert!(tail(Path::new("/nonexistent/brook/fuzz.log"), 10).is_empty());
    }
}
