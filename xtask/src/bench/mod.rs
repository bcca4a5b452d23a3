//! `cargo xtask bench`: brook side by side with a raw-socket floor and the official
//! `mongodb` driver, in one run, written up in `docs/BENCHMARKS.md` with SVG plots.
//!
//! What it does, in order:
//!
//! 1. builds (release) `replay-server`, `brook-bench` and `failover-bench` (package
//!    `brook-benches`) and `compare-bench` (the crate `benches/compare`, its own
//!    workspace, into `compare/` of the target dir);
//! 2. for each scenario, starts one `replay-server` process configured for it (events per
//!    getMore, event size, delay) and runs every client against it as a separate process,
//!    `--rounds` times, the clients' order rotating each round so that they interleave;
//!    each process prints one JSON line; a metric's result is the median over rounds;
//! 3. measures frame decoding next to a copy of the same bytes (`brook-bench decode`);
//!    then failover time: `failover-bench` runs the testkit's replica set and fails its
//!    primary over (stepdown, kill, blackhole) `--failovers` times per kind while one
//!    client tails a change stream (brook and the official driver as they come, and each
//!    with polling monitors): from the loss to the first event only the new primary could
//!    serve, p50/p99 per kind and client, also written to `docs/bench/FAILOVER.md`;
//! 4. footprint: crates in the normal dependency tree (`cargo tree -e normal`) of the
//!    `brook` CLI and of `official-tail` (a minimal watch program on the official crate),
//!    their clean release build times (each in its own target dir under
//!    `target/bench-footprint/`) and binary sizes;
//! 5. end to end on nx-27017: 10,000 inserted events consumed by brook and by pymongo,
//!    both resuming after the same token;
//! 6. writes `docs/BENCHMARKS.md`, `docs/bench/*.svg` and `docs/bench/results.json`; every
//!    raw line is kept in `target/bench/runs.jsonl`.
//!
//! `--quick` runs everything briefly (one round, short runs, 100 idle streams, 20
//! failovers per kind, 1,000 e2e events, no clean builds) to check the pipeline; its
//! report goes to `target/bench/BENCHMARKS.md` (and plots and `FAILOVER.md` beside it) so
//! that the committed one is kept.
//! `cargo xtask bench criterion [cargo bench args]` runs the criterion codec bench as before.
//!
//! The parts, by job: [`scenarios`] (what is measured, the JSON lines of a run),
//! [`process`] (building and running the bench processes), [`footprint`], [`e2e`],
//! [`failover`], [`report`] (`BENCHMARKS.md`, `results.json`) and [`svg`] (the plots);
//! this file holds the options, the harness that runs them in order, and `criterion`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Context, Error, Result, cargo, display_command, peer, repo_root};

mod e2e;
mod failover;
mod footprint;
mod process;
mod report;
mod scenarios;
mod svg;

use e2e::*;
use failover::*;
use footprint::*;
use process::*;
use report::*;
use scenarios::*;
use svg::*;

/// The package holding the benches.
const PACKAGE: &str = "brook-benches";

/// Hand-written profile notes, copied into the report.
const PROFILE_NOTES: &str = "docs/bench/PROFILE.md";

/// The committed failover page; what follows [`NOTES_MARKER`] in it is hand-written and
/// kept when the page is written again.
const FAILOVER_PAGE: &str = "docs/bench/FAILOVER.md";
const NOTES_MARKER: &str = "<!-- Hand-written from here on: `cargo xtask bench` keeps it. -->";

const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--rounds N] [--seconds S] [--failovers N]
                         [--no-footprint] [--no-e2e] [--only SCENARIO]...
       cargo xtask bench criterion [cargo bench args] [-- criterion args]

  (default)        brook vs a raw-socket floor vs the official mongodb driver on a replay
                   server; writes docs/BENCHMARKS.md and docs/bench/*.svg
  --quick          one short round of everything, no clean builds; writes under target/bench/
  --rounds N       rounds per scenario (default 5); medians are over rounds
  --seconds S      measured seconds per client run (default 2)
  --failovers N    failovers per kind and client in the `failover` scenario (default 40,
                   20 with --quick; at least 20)
  --no-footprint   skip dependency counts, clean builds and binary sizes
  --no-e2e         skip the nx-27017 end-to-end run
  --only ID        run only this scenario (repeatable); see the scenario ids in the report
                   (also `decode` and `failover`)
  criterion        run `cargo bench -p brook-benches` with the remaining arguments
";

/// Entry point: `args` are the arguments after `bench`.
pub(crate) fn run(args: &[String]) -> std::result::Result<(), String> {
    if args.first().map(String::as_str) == Some("criterion") {
        return criterion(args.get(1..).unwrap_or_default()).map_err(|e| e.to_string());
    }
    let opts = Options::parse(args).map_err(|e| e.to_string())?;
    if opts.help {
        print!("{USAGE}");
        return Ok(());
    }
    harness(&opts).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Options {
    quick: bool,
    rounds: usize,
    seconds: f64,
    failovers: usize,
    footprint: bool,
    e2e: bool,
    only: Vec<String>,
    help: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            quick: false,
            rounds: 5,
            seconds: 2.0,
            failovers: 40,
            footprint: true,
            e2e: true,
            only: Vec::new(),
            help: false,
        };
        let mut rounds = None;
        let mut seconds = None;
        let mut failovers = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::new(format!("{name} needs a value")))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--rounds" => {
                    rounds = Some(
                        value("--rounds")?
                            .parse::<usize>()
                            .map_err(|e| Error::new(format!("--rounds: {e}")))?
                            .max(1),
                    );
                }
                "--seconds" => {
                    seconds = Some(
                        value("--seconds")?
                            .parse::<f64>()
                            .map_err(|e| Error::new(format!("--seconds: {e}")))?,
                    );
                }
                "--failovers" => {
                    failovers = Some(
                        value("--failovers")?
                            .parse::<usize>()
                            .map_err(|e| Error::new(format!("--failovers: {e}")))?,
                    );
                }
                "--no-footprint" => o.footprint = false,
                "--no-e2e" => o.e2e = false,
                "--only" => o.only.push(value("--only")?),
                "-h" | "--help" => o.help = true,
                other => return Err(Error::new(format!("unknown option `{other}`\n{USAGE}"))),
            }
        }
        if o.quick {
            o.rounds = 1;
            o.seconds = 0.3;
            o.failovers = MIN_FAILOVERS;
        }
        o.rounds = rounds.unwrap_or(o.rounds);
        o.seconds = seconds.unwrap_or(o.seconds);
        o.failovers = failovers.unwrap_or(o.failovers);
        if o.failovers < MIN_FAILOVERS {
            return Err(Error::new(format!(
                "--failovers must be at least {MIN_FAILOVERS} (a p99 needs them)"
            )));
        }
        if !(o.seconds > 0.0 && o.seconds < 600.0) {
            return Err(Error::new("--seconds must be in (0, 600)"));
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

struct Machine {
    cpu: String,
    cores: usize,
    mem_gb: f64,
    kernel: String,
    rustc: String,
    load: String,
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let mem_gb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        mem_gb,
        kernel,
        rustc,
        load,
    }
}

fn harness(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let root = repo_root();
    let out_dir = if opts.quick {
        root.join("target").join("bench")
    } else {
        root.join("docs")
    };
    let plot_dir = if opts.quick {
        out_dir.clone()
    } else {
        out_dir.join("bench")
    };
    let work = root.join("target").join("bench");
    fs::create_dir_all(&work).context(|| format!("could not create {}", work.display()))?;
    fs::create_dir_all(&plot_dir).context(|| format!("could not create {}", plot_dir.display()))?;
    let machine = machine();
    let bins = build(&root)?;
    let runs_path = work.join("runs.jsonl");
    let mut log = fs::File::create(&runs_path)
        .context(|| format!("could not create {}", runs_path.display()))?;

    let mut results: BTreeMap<&'static str, Runs> = BTreeMap::new();
    let all = scenarios(opts.quick);
    for s in &all {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| o == s.id) {
            continue;
        }
        eprintln!("scenario {}: {}", s.id, s.title);
        results.insert(s.id, run_scenario(&bins, s, opts, &mut log));
    }

    // Frame decoding next to a copy.
    let mut decode = Runs::default();
    if opts.only.is_empty() || opts.only.iter().any(|o| o == "decode") {
        eprintln!("scenario decode: frame decoding vs memcpy");
        for _ in 0..opts.rounds.min(3) {
            let mut cmd = Command::new(&bins.brook);
            cmd.args([
                "--scenario",
                "decode",
                "--seconds",
                &format!("{}", opts.seconds * 2.0),
            ]);
            match run_json(&mut cmd, Duration::from_secs(300)) {
                Ok(o) => {
                    let _logged = writeln!(log, "decode\tbrook\t{}", to_json(&o));
                    decode
                        .by_client
                        .entry("brook".to_owned())
                        .or_default()
                        .push(o);
                }
                Err(e) => decode.errors.push(e.to_string()),
            }
        }
    }

    let failovers = if opts.only.is_empty() || opts.only.iter().any(|o| o == "failover") {
        eprintln!(
            "scenario failover: failover time on the testkit's replica set ({} per kind and client)",
            opts.failovers
        );
        Some(failover(&bins, opts.failovers, &mut log))
    } else {
        None
    };

    let fp = if opts.footprint && opts.only.is_empty() {
        Some(footprint(&root, !opts.quick))
    } else {
        None
    };
    let e2e_result = if opts.e2e && opts.only.is_empty() {
        eprintln!("end to end on nx-27017");
        Some(e2e(
            &bins,
            if opts.quick { 1_000 } else { 10_000 },
            if opts.quick { 1 } else { 3 },
            &mut log,
        ))
    } else {
        None
    };

    let elapsed = started.elapsed();
    let report = Report {
        opts,
        machine: &machine,
        scenarios: &all,
        results: &results,
        decode: &decode,
        failovers: failovers.as_ref(),
        footprint: fp.as_ref(),
        e2e: e2e_result.as_ref(),
        elapsed,
        plot_prefix: if opts.quick { "" } else { "bench/" },
    };
    let markdown = report.markdown();
    let md_path = out_dir.join("BENCHMARKS.md");
    fs::write(&md_path, &markdown).context(|| format!("could not write {}", md_path.display()))?;
    fs::write(plot_dir.join("latency.svg"), report.latency_svg())
        .context(|| "could not write latency.svg".to_owned())?;
    fs::write(plot_dir.join("throughput.svg"), report.throughput_svg())
        .context(|| "could not write throughput.svg".to_owned())?;
    fs::write(plot_dir.join("results.json"), report.results_json())
        .context(|| "could not write results.json".to_owned())?;
    if let Some(f) = &failovers {
        let path = plot_dir.join("FAILOVER.md");
        fs::write(&path, report.failover_page(f))
            .context(|| format!("could not write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!("{}", report.targets_text());
    println!(
        "wrote {} (and plots in {}); raw runs in {}; took {:.0} s",
        md_path.display(),
        plot_dir.display(),
        runs_path.display(),
        elapsed.as_secs_f64()
    );
    let failures: usize = results.values().map(|r| r.errors.len()).sum::<usize>()
        + failovers.as_ref().map_or(0, |f| f.errors.len());
    if failures > 0 {
        return Err(Error::new(format!(
            "{failures} bench run(s) failed; see above"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// criterion
// ---------------------------------------------------------------------------------------

/// `cargo bench -p brook-benches` with the user's arguments, then where criterion's
/// report is.
fn criterion(args: &[String]) -> Result<()> {
    let root = repo_root();
    crate::run(cargo().args(bench_args(args)))?;
    let criterion_dir = target_dir(&root, std::env::var_os("CARGO_TARGET_DIR")).join("criterion");
    let index = criterion_dir.join("report").join("index.html");
    if index.is_file() {
        println!("criterion report: {}", index.display());
    } else {
        println!(
            "criterion results: {} (no HTML index was written)",
            criterion_dir.display()
        );
    }
    println!(
        "raw estimates: {}/<group>/<bench>/new/estimates.json",
        criterion_dir.display()
    );
    Ok(())
}

/// `cargo` arguments: `bench -p brook-benches` then the user's.
fn bench_args(user: &[String]) -> Vec<String> {
    let mut v = vec!["bench".to_owned(), "-p".to_owned(), PACKAGE.to_owned()];
    v.extend(user.iter().cloned());
    v
}

/// Where cargo writes: `$CARGO_TARGET_DIR` (relative to the repository) or `target/`.
fn target_dir(root: &Path, env: Option<std::ffi::OsString>) -> PathBuf {
    match env {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

#[cfg(test)]
mod tests;
