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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Context, Error, Result, cargo, display_command, peer, repo_root};

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
// Scenarios
// ---------------------------------------------------------------------------------------

const FLOOR: &str = "floor-tokio";
const OFFICIAL: &str = "official-typed";
const ALL_CLIENTS: [&str; 6] = [
    "floor-tokio",
    "floor-std",
    "brook-typed",
    "brook-raw",
    "official-typed",
    "official-raw",
];
const ASYNC_CLIENTS: [&str; 5] = [
    "floor-tokio",
    "brook-typed",
    "brook-raw",
    "official-typed",
    "official-raw",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One stream; events come back in every getMore.
    Stream,
    /// One stream; every getMore comes back empty.
    Idle,
    /// Many streams on one client.
    Concurrent,
    /// Many open, idle streams.
    IdleRss,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Idle => "idle",
            Kind::Concurrent => "concurrent",
            Kind::IdleRss => "idle-rss",
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    id: &'static str,
    title: &'static str,
    kind: Kind,
    events: u64,
    size: usize,
    delay_ms: u64,
    streams: usize,
    clients: &'static [&'static str],
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let s = |id, title, events, size| Scenario {
        id,
        title,
        kind: Kind::Stream,
        events,
        size,
        delay_ms: 0,
        streams: 1,
        clients: &ALL_CLIENTS,
    };
    vec![
        s("latency", "one ~300 B event per getMore", 1, 300),
        s("b10_300", "batches of 10 events of ~300 B", 10, 300),
        s("b100_300", "batches of 100 events of ~300 B", 100, 300),
        s("b1000_300", "batches of 1,000 events of ~300 B", 1000, 300),
        s("b100_2k", "batches of 100 events of ~2 KB", 100, 2048),
        s("b1000_2k", "batches of 1,000 events of ~2 KB", 1000, 2048),
        Scenario {
            id: "idle",
            title: "empty getMores (idle round trips)",
            kind: Kind::Idle,
            events: 0,
            ..s("", "", 0, 300)
        },
        Scenario {
            id: "c100",
            title: "100 concurrent streams on one client, one event per getMore",
            kind: Kind::Concurrent,
            streams: 100,
            clients: &ASYNC_CLIENTS,
            ..s("", "", 1, 300)
        },
        Scenario {
            id: "rss1000",
            title: "1,000 idle streams (getMores held 500 ms)",
            kind: Kind::IdleRss,
            events: 0,
            delay_ms: 500,
            streams: if quick { 100 } else { 1000 },
            clients: &ASYNC_CLIENTS,
            ..s("", "", 0, 300)
        },
    ]
}

// ---------------------------------------------------------------------------------------
// A flat JSON object (what the bench binaries print)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(f64),
    Str(String),
    Null,
}

type Obj = BTreeMap<String, Val>;

/// Parses one flat JSON object: string keys, values that are numbers, strings, booleans
/// (as 0/1) or null. Nested values are refused.
fn parse_flat_json(text: &str) -> Option<Obj> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    object
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                serde_json::Value::Null => Val::Null,
                serde_json::Value::Bool(b) => Val::Num(if b { 1.0 } else { 0.0 }),
                serde_json::Value::Number(n) => Val::Num(n.as_f64()?),
                serde_json::Value::String(s) => Val::Str(s),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
            };
            Some((key, value))
        })
        .collect()
}

/// `n` as a JSON number, written as Rust's `Display` writes it: integral values without
/// a fraction (`12`, not `12.0`), so that the files keep the form they always had; null
/// when it is not finite.
fn json_number(n: f64) -> serde_json::Value {
    // 2^53: beyond it an f64 holds no fraction, and not every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // Integral and within ±2^53: the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        serde_json::Value::from(i)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

fn num(o: &Obj, key: &str) -> Option<f64> {
    match o.get(key) {
        Some(Val::Num(n)) => Some(*n),
        _ => None,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The results of one scenario: every run of every client.
#[derive(Debug, Default, Clone)]
struct Runs {
    by_client: BTreeMap<String, Vec<Obj>>,
    frame_len: Option<f64>,
    errors: Vec<String>,
}

impl Runs {
    /// The median over rounds of `key` for `client`.
    fn med(&self, client: &str, key: &str) -> Option<f64> {
        let runs = self.by_client.get(client)?;
        median(runs.iter().filter_map(|o| num(o, key)).collect())
    }

    /// The median over rounds of each point of a client's latency distribution
    /// (`dist` = `"percentile:ns;..."`).
    fn dist(&self, client: &str) -> Vec<(f64, f64)> {
        let Some(runs) = self.by_client.get(client) else {
            return Vec::new();
        };
        let mut points: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order = Vec::new();
        for o in runs {
            if let Some(Val::Str(d)) = o.get("dist") {
                for pair in d.split(';') {
                    if let Some((p, ns)) = pair.split_once(':')
                        && let Ok(ns) = ns.parse::<f64>()
                    {
                        if !points.contains_key(p) {
                            order.push(p.to_owned());
                        }
                        points.entry(p.to_owned()).or_default().push(ns);
                    }
                }
            }
        }
        order
            .iter()
            .filter_map(|p| {
                let pct = p.parse::<f64>().ok()?;
                Some((pct, median(points.get(p)?.clone())?))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Runs `cmd`, waiting at most `limit`, and parses its last stdout line as a flat JSON
/// object.
fn run_json(cmd: &mut Command, limit: Duration) -> Result<Obj> {
    let line = display_command(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(|| format!("could not run `{line}`"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _read = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _read = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _killed = child.kill();
                let _reaped = child.wait();
                return Err(Error::new(format!(
                    "`{line}` ran past {} s and was killed",
                    limit.as_secs()
                )));
            }
            Err(e) => return Err(Error::new(format!("waiting for `{line}`: {e}"))),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::new(format!(
            "`{line}` failed ({status}): {}",
            err.trim()
        )));
    }
    let last = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    last.and_then(parse_flat_json)
        .ok_or_else(|| Error::new(format!("`{line}` printed no JSON result: {out}")))
}

/// A running `replay-server`: stopped (stdin closed, then killed) when dropped.
struct Server {
    child: Child,
    uri: String,
    frame_len: f64,
}

impl Server {
    fn start(bin: &Path, s: &Scenario) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--events",
            &s.events.to_string(),
            "--size",
            &s.size.to_string(),
        ]);
        if s.delay_ms > 0 {
            cmd.args(["--delay-ms", &s.delay_ms.to_string()]);
        }
        let line = display_command(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context(|| format!("could not start `{line}`"))?;
        let mut first = String::new();
        if let Some(out) = child.stdout.take() {
            let _read = BufReader::new(out).read_line(&mut first);
        }
        let parsed = parse_flat_json(&first);
        let uri = match parsed.as_ref().and_then(|o| o.get("uri")) {
            Some(Val::Str(u)) => u.clone(),
            _ => {
                let _killed = child.kill();
                let _reaped = child.wait();
                return Err(Error::new(format!("`{line}` printed no URI: {first}")));
            }
        };
        let frame_len = parsed
            .as_ref()
            .and_then(|o| num(o, "get_more_reply_len"))
            .unwrap_or(0.0);
        Ok(Server {
            child,
            uri,
            frame_len,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

struct Bins {
    server: PathBuf,
    brook: PathBuf,
    failover: PathBuf,
    compare: PathBuf,
}

fn build(root: &Path) -> Result<Bins> {
    crate::run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        PACKAGE,
        "--bin",
        "replay-server",
        "--bin",
        "brook-bench",
        "--bin",
        "failover-bench",
    ]))?;
    let target = target_dir(root, std::env::var_os("CARGO_TARGET_DIR"));
    let compare = target.join("compare");
    crate::run(
        cargo()
            .current_dir(root.join("benches").join("compare"))
            .args(["build", "--release", "--quiet", "--bin", "compare-bench"])
            .arg("--target-dir")
            .arg(&compare),
    )?;
    let release = target.join("release");
    Ok(Bins {
        server: release.join("replay-server"),
        brook: release.join("brook-bench"),
        failover: release.join("failover-bench"),
        compare: compare.join("release").join("compare-bench"),
    })
}

fn client_command(bins: &Bins, client: &str) -> Command {
    if client.starts_with("official") {
        Command::new(&bins.compare)
    } else {
        Command::new(&bins.brook)
    }
}

fn run_scenario(bins: &Bins, s: &Scenario, opts: &Options, log: &mut fs::File) -> Runs {
    let mut runs = Runs::default();
    let server = match Server::start(&bins.server, s) {
        Ok(server) => server,
        Err(e) => {
            runs.errors.push(e.to_string());
            return runs;
        }
    };
    runs.frame_len = Some(server.frame_len);
    let seconds = if s.kind == Kind::IdleRss {
        1.0
    } else {
        opts.seconds
    };
    // Opening 1,000 streams takes a while on a loaded machine.
    let limit = Duration::from_secs_f64(seconds * 3.0 + 120.0);
    let rounds = if s.kind == Kind::IdleRss {
        opts.rounds.min(3)
    } else {
        opts.rounds
    };
    for round in 0..rounds {
        let n = s.clients.len();
        for i in 0..n {
            let client = s.clients[(i + round) % n];
            let mut cmd = client_command(bins, client);
            cmd.args(["--client", client, "--scenario", s.kind.arg()])
                .args(["--uri", &server.uri])
                .args(["--seconds", &format!("{seconds}")])
                .args(["--events", &s.events.to_string()])
                .args(["--streams", &s.streams.to_string()]);
            eprint!(
                "  {:<10} round {}/{} {:<15}",
                s.id,
                round + 1,
                rounds,
                client
            );
            match run_json(&mut cmd, limit) {
                Ok(obj) => {
                    let show = match s.kind {
                        Kind::IdleRss => num(&obj, "vm_rss_kb").map(|kb| format!("{kb:.0} kB RSS")),
                        Kind::Idle => num(&obj, "cpu_ns_per_step")
                            .map(|ns| format!("{:.1} µs CPU/round trip", ns / 1000.0)),
                        _ => num(&obj, "events_per_s").map(|e| format!("{e:.0} events/s")),
                    };
                    eprintln!(" {}", show.unwrap_or_default());
                    let _logged = writeln!(log, "{}\t{}\t{}", s.id, client, to_json(&obj));
                    runs.by_client
                        .entry(client.to_owned())
                        .or_default()
                        .push(obj);
                }
                Err(e) => {
                    eprintln!(" FAILED");
                    eprintln!("    {e}");
                    runs.errors.push(format!("{client}: {e}"));
                }
            }
        }
    }
    runs
}

/// `o` as one line of JSON (keys in order, non-finite numbers as null).
fn to_json(o: &Obj) -> String {
    let object: serde_json::Map<String, serde_json::Value> = o
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Val::Num(n) => json_number(*n),
                Val::Str(t) => serde_json::Value::String(t.clone()),
                Val::Null => serde_json::Value::Null,
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

// ---------------------------------------------------------------------------------------
// Footprint
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Footprint {
    brook_crates: Option<usize>,
    /// `benches/minimal-tail`: the same program as `official-tail`, on brook.
    brook_minimal_crates: Option<usize>,
    official_crates: Option<usize>,
    brook_build_s: Option<f64>,
    official_build_s: Option<f64>,
    brook_size: Option<u64>,
    official_size: Option<u64>,
    brook_stripped: Option<u64>,
    official_stripped: Option<u64>,
    errors: Vec<String>,
}

/// The distinct `name vX.Y.Z` packages in `cargo tree --prefix none` output.
fn count_crates(tree: &str) -> usize {
    let mut names: Vec<String> = tree
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let version = parts.next()?;
            version
                .starts_with('v')
                .then(|| format!("{name} {version}"))
        })
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

fn capture(cmd: &mut Command) -> Result<String> {
    let line = display_command(cmd);
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .context(|| format!("could not run `{line}`"))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn stripped_size(bin: &Path, tmp: &Path) -> Option<u64> {
    let out = tmp.join(format!("{}.stripped", bin.file_name()?.to_string_lossy()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .ok()?
        .success();
    let size = ok.then(|| fs::metadata(&out).ok().map(|m| m.len()))??;
    let _removed = fs::remove_file(&out);
    Some(size)
}

fn footprint(root: &Path, clean_builds: bool) -> Footprint {
    let mut f = Footprint::default();
    let compare = root.join("benches").join("compare");
    match capture(cargo().args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "brook-cli",
    ])) {
        Ok(t) => f.brook_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    match capture(cargo().args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "brook-minimal-tail",
    ])) {
        Ok(t) => f.brook_minimal_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    match capture(cargo().current_dir(&compare).args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "official-tail",
    ])) {
        Ok(t) => f.official_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    let base = root.join("target").join("bench-footprint");
    let brook_dir = base.join("brook");
    let official_dir = base.join("official");
    let brook_bin = brook_dir.join("release").join("brook");
    let official_bin = official_dir.join("release").join("official-tail");
    let timed = |cmd: &mut Command, dir: &Path, clean: bool| -> Result<f64> {
        if clean && dir.exists() {
            fs::remove_dir_all(dir).context(|| format!("could not clear {}", dir.display()))?;
        }
        let start = Instant::now();
        crate::run(cmd.arg("--target-dir").arg(dir))?;
        Ok(start.elapsed().as_secs_f64())
    };
    eprintln!(
        "footprint: release builds{}",
        if clean_builds {
            " from clean (this takes minutes)"
        } else {
            ""
        }
    );
    match timed(
        cargo().args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "brook-cli",
            "--bin",
            "brook",
        ]),
        &brook_dir,
        clean_builds,
    ) {
        Ok(s) if clean_builds => f.brook_build_s = Some(s),
        Ok(_) => {}
        Err(e) => f.errors.push(e.to_string()),
    }
    match timed(
        cargo().current_dir(&compare).args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "official-tail",
        ]),
        &official_dir,
        clean_builds,
    ) {
        Ok(s) if clean_builds => f.official_build_s = Some(s),
        Ok(_) => {}
        Err(e) => f.errors.push(e.to_string()),
    }
    f.brook_size = fs::metadata(&brook_bin).ok().map(|m| m.len());
    f.official_size = fs::metadata(&official_bin).ok().map(|m| m.len());
    f.brook_stripped = stripped_size(&brook_bin, &base);
    f.official_stripped = stripped_size(&official_bin, &base);
    f
}

// ---------------------------------------------------------------------------------------
// End to end on nx-27017
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct E2e {
    count: u64,
    by_client: BTreeMap<String, Vec<f64>>,
    errors: Vec<String>,
}

const PY_PREPARE: &str = r#"
import sys, json
from bson import ObjectId
from pymongo import MongoClient
uri, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = MongoClient(uri, directConnection=True)
coll = c["bench"][name]
coll.drop()
coll.insert_one({"_id": "setup"})
with coll.watch() as s:
    coll.insert_one({"_id": "marker"})
    token = s.next()["_id"]
docs = [{"_id": ObjectId(), "customer": "c%05d" % (i % 50000), "total": 19.99 + i % 100,
         "note": "x" * 160} for i in range(count)]
for i in range(0, count, 1000):
    coll.insert_many(docs[i:i+1000])
print(json.dumps({"resume_after": token["_data"]}))
"#;

const PY_CONSUME: &str = r#"
import sys, json, time
from pymongo import MongoClient
uri, count, data, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = MongoClient(uri, directConnection=True)
coll = c["bench"][name]
start = time.perf_counter()
n = 0
with coll.watch(resume_after={"_data": data}, batch_size=1000) as s:
    for _ in s:
        n += 1
        if n >= count:
            break
el = time.perf_counter() - start
print(json.dumps({"events": n, "seconds": el, "events_per_s": n / el}))
"#;

fn e2e(bins: &Bins, count: u64, rounds: usize, log: &mut fs::File) -> E2e {
    let mut out = E2e {
        count,
        ..E2e::default()
    };
    if let Err(e) = peer::install() {
        out.errors.push(format!("peer install: {e}"));
        return out;
    }
    let nx = match peer::Peer::start_for_test() {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("peer start: {e}"));
            return out;
        }
    };
    let uri = nx.uri();
    let python = peer::venv_dir().join("bin").join("python");
    // Each consumer reads the 10,000 events once enough to resume: so every run gets its
    // own collection, filled the same way just before it, and its own marker token.
    let limit = Duration::from_secs(300);
    // Typed `Order`s cannot be read from nx-27017 (it writes ObjectIds as
    // `{__neosqlite_objectid__, id}`): brook's typed client reads `Document`s, like pymongo.
    let clients = ["brook-raw", "brook-doc", "pymongo"];
    for round in 0..rounds {
        for i in 0..clients.len() {
            let client = clients[(i + round) % clients.len()];
            let coll = format!("e2e_{round}_{i}");
            let prepared = run_json(
                Command::new(&python).args(["-c", PY_PREPARE, &uri, &count.to_string(), &coll]),
                limit,
            );
            let token = match prepared.as_ref().map(|o| o.get("resume_after")) {
                Ok(Some(Val::Str(t))) => t.clone(),
                Ok(_) => {
                    out.errors
                        .push("the prepare script printed no token".to_owned());
                    continue;
                }
                Err(e) => {
                    out.errors.push(format!("prepare: {e}"));
                    continue;
                }
            };
            let mut cmd = if client == "pymongo" {
                let mut c = Command::new(&python);
                c.args(["-c", PY_CONSUME, &uri, &count.to_string(), &token, &coll]);
                c
            } else {
                let mut c = Command::new(&bins.brook);
                c.args(["--client", client, "--scenario", "e2e", "--uri", &uri])
                    .args(["--db", "bench", "--coll", &coll, "--batch-size", "1000"])
                    .args(["--count", &count.to_string(), "--resume-after", &token]);
                c
            };
            eprint!("  e2e        round {}/{} {:<15}", round + 1, rounds, client);
            match run_json(&mut cmd, Duration::from_secs(120)) {
                Ok(o) => {
                    let eps = num(&o, "events_per_s");
                    eprintln!(" {:.0} events/s", eps.unwrap_or(0.0));
                    let _logged = writeln!(log, "e2e\t{client}\t{}", to_json(&o));
                    if let Some(e) = eps {
                        out.by_client.entry(client.to_owned()).or_default().push(e);
                    }
                }
                Err(e) => {
                    eprintln!(" FAILED");
                    eprintln!("    {e}");
                    out.errors.push(format!("{client}: {e}"));
                }
            }
        }
    }
    if let Err(e) = nx.stop() {
        out.errors.push(format!("peer stop: {e}"));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Failover time on the testkit's replica set
// ---------------------------------------------------------------------------------------

/// The fewest failovers per kind and client (`--quick` runs this many).
const MIN_FAILOVERS: usize = 20;

/// The ways the primary is lost, as `failover-bench --kind` names them.
const FAILOVER_KINDS: [&str; 3] = ["stepdown", "kill", "blackhole"];

/// The URI options of every failover client: short heartbeats and connect timeouts (a
/// blackholed primary is noticed through them), the default server selection timeout.
const FAILOVER_URI_OPTIONS: &str =
    "heartbeatFrequencyMS=500&connectTimeoutMS=500&serverSelectionTimeoutMS=30000";

/// The clients of the failover scenario: brook and the official driver as they come
/// (`serverMonitoringMode` auto: streaming monitors), and each with
/// `serverMonitoringMode=poll` (`-poll`).
const FAILOVER_CLIENTS: [&str; 4] = ["brook", "official", "brook-poll", "official-poll"];

/// The pairs compared (brook's client, the official one) and their monitors.
const FAILOVER_PAIRS: [(&str, &str, &str); 2] = [
    ("brook", "official", "as they come (streaming)"),
    ("brook-poll", "official-poll", "`serverMonitoringMode=poll`"),
];

/// Every failover run: the harness's JSON per kind and client.
#[derive(Debug, Default, Clone)]
struct Failovers {
    failovers: usize,
    by_run: BTreeMap<(String, String), Obj>,
    errors: Vec<String>,
}

impl Failovers {
    fn get(&self, kind: &str, client: &str, key: &str) -> Option<f64> {
        num(self.by_run.get(&(kind.to_owned(), client.to_owned()))?, key)
    }
}

/// `failover-bench` arguments for one run: the kind, the count, the URI options, then
/// the client command.
fn failover_args(bins: &Bins, kind: &str, client: &str, failovers: usize) -> Vec<String> {
    let mut options = FAILOVER_URI_OPTIONS.to_owned();
    if client.ends_with("-poll") {
        options.push_str("&serverMonitoringMode=poll");
    }
    let mut v: Vec<String> = vec![
        "--kind".into(),
        kind.into(),
        "--failovers".into(),
        failovers.to_string(),
        "--uri-options".into(),
        options,
        "--".into(),
    ];
    if client.starts_with("brook") {
        v.push(bins.brook.display().to_string());
        v.extend(["--client", "brook-doc"].map(String::from));
    } else {
        v.push(bins.compare.display().to_string());
        v.extend(["--client", "official-typed"].map(String::from));
    }
    v.extend(["--scenario", "failover-tail"].map(String::from));
    v
}

fn failover(bins: &Bins, failovers: usize, log: &mut fs::File) -> Failovers {
    let mut out = Failovers {
        failovers,
        ..Failovers::default()
    };
    // Each failover waits 1–1.5 s after the last, then at most the harness's 30 s.
    let limit = Duration::from_secs(failovers as u64 * 3 + 120);
    let n = FAILOVER_CLIENTS.len();
    for (k, kind) in FAILOVER_KINDS.iter().enumerate() {
        for i in 0..n {
            let client = FAILOVER_CLIENTS[(i + k) % n];
            let mut cmd = Command::new(&bins.failover);
            cmd.args(failover_args(bins, kind, client, failovers));
            eprint!("  failover   {kind:<10} {client:<14}");
            match run_json(&mut cmd, limit) {
                Ok(obj) => {
                    let ms = |key| fmt_ms(num(&obj, key));
                    eprintln!(
                        " p50 {} ms, p99 {} ms over {} failovers",
                        ms("p50_ns"),
                        ms("p99_ns"),
                        fmt_num(num(&obj, "failovers"), 0)
                    );
                    if let Some(Val::Str(why)) = obj.get("stopped")
                        && !why.is_empty()
                    {
                        eprintln!("    stopped early: {why}");
                        out.errors.push(format!("{kind} {client}: {why}"));
                    }
                    let _logged = writeln!(log, "failover-{kind}\t{client}\t{}", to_json(&obj));
                    out.by_run
                        .insert((kind.to_string(), client.to_owned()), obj);
                }
                Err(e) => {
                    eprintln!(" FAILED");
                    eprintln!("    {e}");
                    out.errors.push(format!("{kind} {client}: {e}"));
                }
            }
        }
    }
    out
}

/// The hand-written end of a page (from [`NOTES_MARKER`] on), or nothing.
fn kept_notes(page: &str) -> String {
    page.find(NOTES_MARKER)
        .map(|at| format!("\n{}", &page[at..]))
        .unwrap_or_default()
}

/// Milliseconds from nanoseconds, with the digits that matter at that size.
fn fmt_ms(ns: Option<f64>) -> String {
    match ns.map(|v| v / 1e6) {
        None => "–".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) if ms < 100.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
    }
}

/// The failover section: how it is measured, the settings, the p50/p99 table with the
/// ratios to the official driver, and the details per run.
fn failover_markdown(f: &Failovers, heading: &str) -> String {
    let mut md = String::new();
    let _w = writeln!(
        md,
        "{heading} Failover time\n\n\
         From the primary's loss to the first change event served by the new primary, as \
         the client receives it. `failover-bench` (`benches/src/bin/failover-bench.rs`) runs \
         `brook_testkit::ReplicaSet` (three fake members on loopback ports with MongoDB 7.0 \
         hello shapes, streaming awaitable hello, one change-event log) and starts the \
         client as a separate process, which tails `shop.orders` with a \
         `ChangeStreamEvent<Document>` stream and prints each event's arrival time; an error \
         its stream hands out is counted and the stream reopened after its last resume \
         token, the same for both drivers. An event is inserted every 5 ms; every 1–1.5 s \
         (a random part spreads the failovers over the 500 ms heartbeat cycle) right after \
         an insert the primary is lost — **stepdown**: it steps down (a waiting getMore gets \
         10107 NotWritablePrimary); **kill**: listener and connections closed at once, as \
         SIGKILL; **blackhole**: it reads requests but never answers — the loss instant is \
         taken (`CLOCK_REALTIME`, shared with the client), the next member is elected at \
         once (the election is the server's time: left out), a killed member restarts as a \
         secondary, and an event is inserted at once: the first one only the new primary \
         can serve. **Failover time** = its arrival (or a later event's) − the loss. Once it \
         arrived, a blackholed member is healed; so every failover starts from three \
         healthy members. {} failovers per kind and client; p50 and p99 by nearest rank \
         (with 20 failovers the p99 is the largest).\n\n\
         Settings, the same for every client: URI options `{FAILOVER_URI_OPTIONS}`, \
         `maxAwaitTimeMS` 1000 on the stream, everything else each driver's default. \
         Clients: `brook` and `official` (the `mongodb` crate 3.x, `benches/compare`) as \
         they come (`serverMonitoringMode` auto: both stream their monitors here), \
         `brook-poll` and `official-poll` the same with `serverMonitoringMode=poll`. \
         Ratios: brook's time over the official driver's, monitors alike.\n",
        f.failovers
    );
    let _w = writeln!(
        md,
        "| kind | monitors | brook p50 ms | brook p99 ms | official p50 ms | official p99 ms | \
         brook / official p50 | brook / official p99 |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for kind in FAILOVER_KINDS {
        for (brook, official, monitors) in FAILOVER_PAIRS {
            let get = |c: &str, k: &str| f.get(kind, c, k);
            if get(brook, "p50_ns").is_none() && get(official, "p50_ns").is_none() {
                continue;
            }
            let _w = writeln!(
                md,
                "| {kind} | {monitors} | {} | {} | {} | {} | {} | {} |",
                fmt_ms(get(brook, "p50_ns")),
                fmt_ms(get(brook, "p99_ns")),
                fmt_ms(get(official, "p50_ns")),
                fmt_ms(get(official, "p99_ns")),
                fmt_ratio(ratio(get(brook, "p50_ns"), get(official, "p50_ns"))),
                fmt_ratio(ratio(get(brook, "p99_ns"), get(official, "p99_ns"))),
            );
        }
    }
    md.push('\n');
    for ((kind, client), o) in &f.by_run {
        let losing = num(o, "failovers_losing_events").unwrap_or(0.0);
        if losing > 0.0 {
            let _w = writeln!(
                md,
                "**{kind}, {client}: {losing:.0} of {} failovers lost events** ({} events \
                 never arrived): such a failover is timed to the first event that came after \
                 it, not to a stream resumed where it stopped.\n",
                fmt_num(num(o, "failovers"), 0),
                fmt_num(num(o, "lost"), 0),
            );
        }
    }
    let _w = writeln!(
        md,
        "Each run in detail: failovers crossed (and timed out, 30 s each), the spread, \
         errors the stream handed to the application (each followed by a reopen after the \
         last token), events never received (`lost`; and in how many failovers) or \
         received twice, over the whole run.\n\n\
         | kind | client | failovers | timeouts | min ms | p50 ms | p90 ms | p99 ms | max ms | \
         errors to the app | events | lost | failovers losing events | duplicated |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for ((kind, client), o) in &f.by_run {
        let _w = writeln!(
            md,
            "| {kind} | {client} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_num(num(o, "failovers"), 0),
            fmt_num(num(o, "timeouts"), 0),
            fmt_ms(num(o, "min_ns")),
            fmt_ms(num(o, "p50_ns")),
            fmt_ms(num(o, "p90_ns")),
            fmt_ms(num(o, "p99_ns")),
            fmt_ms(num(o, "max_ns")),
            fmt_num(num(o, "errors"), 0),
            fmt_num(num(o, "events"), 0),
            fmt_num(num(o, "lost"), 0),
            fmt_num(num(o, "failovers_losing_events"), 0),
            fmt_num(num(o, "duplicated"), 0),
        );
    }
    md.push('\n');
    let notes: Vec<String> = f
        .by_run
        .iter()
        .filter_map(|((kind, client), o)| {
            let mut parts = Vec::new();
            if let Some(Val::Str(e)) = o.get("first_error")
                && !e.is_empty()
            {
                parts.push(format!("first error: `{}`", e.replace('`', "'")));
            }
            if let Some(Val::Str(l)) = o.get("lost_first")
                && !l.is_empty()
            {
                parts.push(format!(
                    "lost events (first ones): {}",
                    l.replace(';', ", ")
                ));
            }
            (!parts.is_empty()).then(|| format!("- {kind}, {client}: {}", parts.join("; ")))
        })
        .collect();
    if !notes.is_empty() {
        md.push_str(&notes.join("\n"));
        md.push_str("\n\n");
    }
    for e in &f.errors {
        let _w = writeln!(md, "- failed: `{}`", e.replace('`', "'"));
    }
    if !f.errors.is_empty() {
        md.push('\n');
    }
    md
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
// The report
// ---------------------------------------------------------------------------------------

struct Report<'a> {
    opts: &'a Options,
    machine: &'a Machine,
    scenarios: &'a [Scenario],
    results: &'a BTreeMap<&'static str, Runs>,
    decode: &'a Runs,
    failovers: Option<&'a Failovers>,
    footprint: Option<&'a Footprint>,
    e2e: Option<&'a E2e>,
    elapsed: Duration,
    plot_prefix: &'static str,
}

/// One target of the issue and whether this run met it.
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

fn fmt_num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

fn fmt_si(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

impl Report<'_> {
    fn runs(&self, id: &str) -> Option<&Runs> {
        self.results.get(id)
    }

    fn med(&self, id: &str, client: &str, key: &str) -> Option<f64> {
        self.runs(id)?.med(client, key)
    }

    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let us = |v: Option<f64>| fmt_num(v.map(|v| v / 1000.0), 1);
        let floor_p50 = self.med("latency", FLOOR, "p50_ns");
        for c in ["brook-typed", "brook-raw"] {
            let p50 = self.med("latency", c, "p50_ns");
            let r = ratio(p50, floor_p50);
            t.push(Target {
                what: format!("{c}: p50 per event within 1.3× the tokio floor"),
                measured: format!("{} µs vs {} µs = {}", us(p50), us(floor_p50), fmt_ratio(r)),
                met: r.map(|r| r <= 1.3),
            });
        }
        let off_p99 = self.med("latency", OFFICIAL, "p99_ns");
        for c in ["brook-typed", "brook-raw"] {
            let p99 = self.med("latency", c, "p99_ns");
            t.push(Target {
                what: format!("{c}: p99 per event below the official driver's"),
                measured: format!("{} µs vs {} µs", us(p99), us(off_p99)),
                met: p99.zip(off_p99).map(|(a, b)| a < b),
            });
        }
        for (c, o) in [
            ("brook-typed", "official-typed"),
            ("brook-raw", "official-raw"),
        ] {
            let mut worst: Option<(f64, &str)> = None;
            for id in ["b100_300", "b1000_300", "b100_2k", "b1000_2k"] {
                if let Some(r) = ratio(
                    self.med(id, c, "events_per_s"),
                    self.med(id, o, "events_per_s"),
                ) && worst.is_none_or(|(w, _)| r < w)
                {
                    worst = Some((r, id));
                }
            }
            t.push(Target {
                what: format!("{c}: batch throughput at least 1.5× {o}'s"),
                measured: worst.map_or_else(
                    || "–".to_owned(),
                    |(r, id)| format!("lowest ratio {r:.2}× ({id})"),
                ),
                met: worst.map(|(r, _)| r >= 1.5),
            });
        }
        // Raw mode: allocations per batch must not grow with the batch.
        let per_batch =
            |id: &str, n: f64| self.med(id, "brook-raw", "allocs_per_event").map(|a| a * n);
        let (a100, a1000) = (per_batch("b100_300", 100.0), per_batch("b1000_300", 1000.0));
        let marginal = a100.zip(a1000).map(|(a, b)| (b - a) / 900.0);
        t.push(Target {
            what: "brook-raw: no allocation per event beyond the batch's buffer".to_owned(),
            measured: format!(
                "{} allocations per 100-event batch, {} per 1,000-event batch: {} per extra event",
                fmt_num(a100, 1),
                fmt_num(a1000, 1),
                fmt_num(marginal, 3)
            ),
            met: marginal.map(|m| m < 0.05),
        });
        if let Some(f) = self.footprint {
            let r = f.brook_minimal_crates.zip(f.official_crates);
            t.push(Target {
                what: "dependency tree under a third of the official driver's (the same \
                       minimal tail program on each)"
                    .to_owned(),
                measured: r.map_or_else(
                    || "–".to_owned(),
                    |(b, o)| format!("{b} vs {o} crates = {:.2}×", b as f64 / o as f64),
                ),
                met: r.map(|(b, o)| (b as f64) < o as f64 / 3.0),
            });
        }
        t
    }

    fn targets_text(&self) -> String {
        let mut s = String::from("targets:\n");
        for t in self.targets() {
            let mark = match t.met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            let _w = writeln!(s, "  {mark} {}: {}", t.what, t.measured);
        }
        s
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let m = self.machine;
        let _w = writeln!(
            md,
            "# Benchmarks\n\n\
             Written by `cargo xtask bench`{} — do not edit by hand; rerun it. \
             It took {:.0} s. brook is measured next to a floor (a plain socket doing the \
             same getMore round trips with no BSON work) and next to the official `mongodb` \
             crate (3.x, `benches/compare`, its own workspace), every client a separate \
             process against the **same** replay server process (`brook_testkit::replay`: \
             pre-encoded replies, only `requestID`/`responseTo`/cursor id patched per reply). \
             Each scenario ran {} round(s) of every client, the clients' order rotating each \
             round, {} s measured per run after 0.3 s of warm-up; **every figure is the median \
             over rounds**. All clients run on a current-thread tokio runtime (`floor-std`: \
             blocking sockets).\n",
            if self.opts.quick { " --quick" } else { "" },
            self.elapsed.as_secs_f64(),
            self.opts.rounds,
            self.opts.seconds
        );
        let _w = writeln!(
            md,
            "## The machine\n\n| | |\n|---|---|\n| CPU | {} × {} |\n| memory | {:.1} GiB |\n\
             | kernel | {} |\n| rustc | {} |\n| load average at start | {} |\n",
            m.cores, m.cpu, m.mem_gb, m.kernel, m.rustc, m.load
        );
        let _w = writeln!(
            md,
            "Clients: `floor-tokio` / `floor-std` (pre-encoded getMore, read the reply frame, \
             no parsing), `brook-typed` (`ChangeStream<ChangeStreamEvent<Order>>`), `brook-raw` \
             (`ChangeStream<RawChangeEvent>`: events are slices of the reply buffer), \
             `official-typed` (`Collection<Order>::watch()`), `official-raw` (the same \
             `.with_type::<RawDocumentBuf>()`). The official client's URI adds \
             `serverMonitoringMode=poll` and a `maxPoolSize` of one connection per stream; \
             brook gives each stream its own connection by design.\n"
        );
        md.push_str("## Targets\n\n| target | measured | |\n|---|---|---|\n");
        for t in self.targets() {
            let mark = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _w = writeln!(md, "| {} | {} | {} |", t.what, t.measured, mark);
        }
        md.push('\n');

        // Latency.
        if let Some(r) = self.runs("latency") {
            let _w = writeln!(
                md,
                "## Latency: one event per getMore\n\n~300 B insert events; the time of each \
                 `next()` (a floor: each round trip).\n\n\
                 | client | p50 µs | p99 µs | p99.9 µs | events/s | allocs/event | p50 × floor | p50 × official | p99 × official |\n\
                 |---|---|---|---|---|---|---|---|---|"
            );
            for c in r.by_client.keys() {
                let p50 = r.med(c, "p50_ns");
                let p99 = r.med(c, "p99_ns");
                let _w = writeln!(
                    md,
                    "| {c} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt_num(p50.map(|v| v / 1e3), 1),
                    fmt_num(p99.map(|v| v / 1e3), 1),
                    fmt_num(r.med(c, "p999_ns").map(|v| v / 1e3), 1),
                    fmt_si(r.med(c, "events_per_s")),
                    fmt_num(r.med(c, "allocs_per_event"), 1),
                    fmt_ratio(ratio(p50, r.med(FLOOR, "p50_ns"))),
                    fmt_ratio(ratio(p50, r.med(OFFICIAL, "p50_ns"))),
                    fmt_ratio(ratio(p99, r.med(OFFICIAL, "p99_ns"))),
                );
            }
            let _w = writeln!(
                md,
                "\n![latency distributions]({}latency.svg)\n",
                self.plot_prefix
            );
            self.errors(&mut md, r);
        }

        // Batches.
        md.push_str(
            "## Throughput on batches\n\nEvents/s and MB/s (reply frame bytes) consuming \
             batches; ratios of events/s to the floor and to the official driver (typed to \
             typed, raw to raw); allocations per event (the whole process, per getMore \
             divided by its events).\n\n",
        );
        for s in self
            .scenarios
            .iter()
            .filter(|s| s.kind == Kind::Stream && s.events > 1)
        {
            let Some(r) = self.runs(s.id) else { continue };
            let bytes_per_event = r.frame_len.map(|l| l / s.events as f64);
            let _w = writeln!(
                md,
                "### `{}`: {}\n\nreply frame: {} bytes\n\n\
                 | client | events/s | MB/s | × floor | × official | allocs/event | bytes allocated/event |\n\
                 |---|---|---|---|---|---|---|",
                s.id,
                s.title,
                fmt_num(r.frame_len, 0)
            );
            for c in r.by_client.keys() {
                let eps = r.med(c, "events_per_s");
                let official = if c.ends_with("raw") {
                    "official-raw"
                } else {
                    OFFICIAL
                };
                let _w = writeln!(
                    md,
                    "| {c} | {} | {} | {} | {} | {} | {} |",
                    fmt_si(eps),
                    fmt_num(eps.zip(bytes_per_event).map(|(e, b)| e * b / 1e6), 1),
                    fmt_ratio(ratio(eps, r.med(FLOOR, "events_per_s"))),
                    fmt_ratio(ratio(eps, r.med(official, "events_per_s"))),
                    fmt_num(r.med(c, "allocs_per_event"), 2),
                    fmt_num(r.med(c, "alloc_bytes_per_event"), 0),
                );
            }
            md.push('\n');
            self.errors(&mut md, r);
        }
        let _w = writeln!(
            md,
            "![throughput against batch size]({}throughput.svg)\n",
            self.plot_prefix
        );

        // Idle.
        if let Some(r) = self.runs("idle") {
            md.push_str(
                "## Idle round trips: empty getMores\n\nCPU time of the client process \
                 (all threads, from `/proc/self/task/*/schedstat`) per empty getMore \
                 (`next_if_any()` for the drivers).\n\n\
                 | client | CPU µs/round trip | × floor | × official | round trips/s | p50 µs | allocs/round trip |\n\
                 |---|---|---|---|---|---|---|\n",
            );
            for c in r.by_client.keys() {
                let cpu = r.med(c, "cpu_ns_per_step");
                let _w = writeln!(
                    md,
                    "| {c} | {} | {} | {} | {} | {} | {} |",
                    fmt_num(cpu.map(|v| v / 1e3), 2),
                    fmt_ratio(ratio(cpu, r.med(FLOOR, "cpu_ns_per_step"))),
                    fmt_ratio(ratio(cpu, r.med(OFFICIAL, "cpu_ns_per_step"))),
                    fmt_si(r.med(c, "steps_per_s")),
                    fmt_num(r.med(c, "p50_ns").map(|v| v / 1e3), 1),
                    fmt_num(r.med(c, "allocs_per_step"), 1),
                );
            }
            md.push('\n');
            self.errors(&mut md, r);
        }

        // Concurrency.
        if let Some(r) = self.runs("c100") {
            md.push_str(
                "## 100 concurrent streams on one client\n\nOne event per getMore, one task \
                 per stream on one current-thread runtime; latency of each `next()`.\n\n\
                 | client | events/s (total) | × floor | × official | p50 µs | p99 µs |\n\
                 |---|---|---|---|---|---|\n",
            );
            for c in r.by_client.keys() {
                let eps = r.med(c, "events_per_s");
                let _w = writeln!(
                    md,
                    "| {c} | {} | {} | {} | {} | {} |",
                    fmt_si(eps),
                    fmt_ratio(ratio(eps, r.med(FLOOR, "events_per_s"))),
                    fmt_ratio(ratio(eps, r.med(OFFICIAL, "events_per_s"))),
                    fmt_num(r.med(c, "p50_ns").map(|v| v / 1e3), 0),
                    fmt_num(r.med(c, "p99_ns").map(|v| v / 1e3), 0),
                );
            }
            md.push('\n');
            self.errors(&mut md, r);
        }

        // Memory.
        if let Some(r) = self.runs("rss1000") {
            let streams = self
                .scenarios
                .iter()
                .find(|s| s.id == "rss1000")
                .map_or(0, |s| s.streams);
            let _w = writeln!(
                md,
                "## Memory with {streams} idle streams\n\nResident set of the client process once \
                 every stream waits on a getMore the server holds (`VmRSS`, `VmHWM` from \
                 `/proc/self/status`).\n\n\
                 | client | RSS MB | peak RSS MB | kB per stream | × official |\n|---|---|---|---|---|"
            );
            for c in r.by_client.keys() {
                let rss = r.med(c, "vm_rss_kb");
                let _w = writeln!(
                    md,
                    "| {c} | {} | {} | {} | {} |",
                    fmt_num(rss.map(|v| v / 1024.0), 1),
                    fmt_num(r.med(c, "vm_hwm_kb").map(|v| v / 1024.0), 1),
                    fmt_num(r.med(c, "kb_per_stream"), 1),
                    fmt_ratio(ratio(rss, r.med(OFFICIAL, "vm_rss_kb"))),
                );
            }
            md.push('\n');
            self.errors(&mut md, r);
        }

        // Decode.
        if !self.decode.by_client.is_empty() {
            md.push_str(
                "## Frame decoding next to a plain copy\n\n`brook_wire::decode` + the getMore \
                 reply parse (the batch handed out as slices of the frame), on frames already \
                 in memory, next to copying the same bytes into a new `Vec`.\n\n\
                 | frame | bytes | copy GB/s | decode GB/s | decode / copy | decode events/s |\n\
                 |---|---|---|---|---|---|\n",
            );
            for (name, title) in [("b100_300", "100 × ~300 B"), ("b1000_2k", "1,000 × ~2 KB")] {
                let d = self.decode;
                let copy = d.med("brook", &format!("{name}_memcpy_bytes_per_s"));
                let dec = d.med("brook", &format!("{name}_decode_bytes_per_s"));
                let _w = writeln!(
                    md,
                    "| {title} | {} | {} | {} | {} | {} |",
                    fmt_num(d.med("brook", &format!("{name}_frame_len")), 0),
                    fmt_num(copy.map(|v| v / 1e9), 2),
                    fmt_num(dec.map(|v| v / 1e9), 2),
                    fmt_ratio(ratio(dec, copy)),
                    fmt_si(d.med("brook", &format!("{name}_decode_events_per_s"))),
                );
            }
            md.push_str(
                "\nThe criterion version of this (with encode): `cargo xtask bench criterion`.\n\n",
            );
        }

        // Failover time.
        if let Some(f) = self.failovers {
            md.push_str(&failover_markdown(f, "##"));
            let _w = writeln!(
                md,
                "(Also written alone, with the command and the machine, to \
                 [`FAILOVER.md`]({}FAILOVER.md).)\n",
                self.plot_prefix
            );
        }

        // Footprint.
        if let Some(f) = self.footprint {
            let mb = |b: Option<u64>| fmt_num(b.map(|b| b as f64 / 1e6), 2);
            let _w = writeln!(
                md,
                "## Footprint\n\n`brook` is the CLI (`crates/cli`, `brook tail`); `official-tail` \
                 (`benches/compare/tail`) is the smallest tail program on the official crate \
                 with its default features. Crates: distinct packages in \
                 `cargo tree -e normal --prefix none` (the program itself included). Build: a \
                 clean `cargo build --release` of that binary in its own target dir, both in this \
                 run. Sizes: as built (release profile with line tables) and stripped. \
                 `brook-minimal-tail` (`benches/minimal-tail`) is `official-tail`'s program on \
                 brook with its default features (TLS on, compression opt-in as in the official \
                 crate): {} crates, {} of official-tail's.\n\n\
                 | | brook | official-tail | brook / official |\n|---|---|---|---|\n\
                 | crates in the dependency tree | {} | {} | {} |\n\
                 | clean release build, s | {} | {} | {} |\n\
                 | binary, MB | {} | {} | {} |\n\
                 | binary stripped, MB | {} | {} | {} |\n",
                fmt_num(f.brook_minimal_crates.map(|v| v as f64), 0),
                fmt_ratio(ratio(
                    f.brook_minimal_crates.map(|v| v as f64),
                    f.official_crates.map(|v| v as f64)
                )),
                fmt_num(f.brook_crates.map(|v| v as f64), 0),
                fmt_num(f.official_crates.map(|v| v as f64), 0),
                fmt_ratio(ratio(
                    f.brook_crates.map(|v| v as f64),
                    f.official_crates.map(|v| v as f64)
                )),
                fmt_num(f.brook_build_s, 0),
                fmt_num(f.official_build_s, 0),
                fmt_ratio(ratio(f.brook_build_s, f.official_build_s)),
                mb(f.brook_size),
                mb(f.official_size),
                fmt_ratio(ratio(
                    f.brook_size.map(|v| v as f64),
                    f.official_size.map(|v| v as f64)
                )),
                mb(f.brook_stripped),
                mb(f.official_stripped),
                fmt_ratio(ratio(
                    f.brook_stripped.map(|v| v as f64),
                    f.official_stripped.map(|v| v as f64)
                )),
            );
            for e in &f.errors {
                let _w = writeln!(md, "- failed: `{}`", e.replace('`', "'"));
            }
        }

        // End to end.
        if let Some(e) = self.e2e {
            let _w = writeln!(
                md,
                "## End to end on nx-27017\n\n{} insert events (~300 B) written with pymongo, then \
                 consumed by one client resuming after the marker event just before them \
                 (a fresh collection filled the same way for every run: nx-27017 stops \
                 serving a resumed stream's history once it was read), `batchSize` 1,000; \
                 events/s from opening the stream to the last event, median of the rounds. \
                 nx-27017 is a Python server on SQLite: it, not the client, sets this pace.\n\n\
                 | client | events/s | × pymongo |\n|---|---|---|",
                e.count
            );
            let py = e.by_client.get("pymongo").and_then(|v| median(v.clone()));
            for (c, v) in &e.by_client {
                let m = median(v.clone());
                let _w = writeln!(md, "| {c} | {} | {} |", fmt_si(m), fmt_ratio(ratio(m, py)));
            }
            for err in &e.errors {
                let _w = writeln!(md, "- failed: `{}`", err.replace('`', "'"));
            }
            md.push('\n');
        }

        // Hand-written notes (profiles, before/after of fixes) kept across runs.
        if let Ok(notes) = fs::read_to_string(repo_root().join(PROFILE_NOTES)) {
            let _w = writeln!(
                md,
                "## Where the time goes\n\n(From `{PROFILE_NOTES}`, written by hand from the \
                 profiles it names; `cargo xtask bench` copies it here.)\n\n{}\n",
                notes.trim()
            );
        }

        md.push_str(
            "## Reproduce\n\n```sh\ncargo xtask bench           # everything (this page)\n\
             cargo xtask bench --quick   # a short smoke run into target/bench/\n\
             cargo xtask bench --only latency --rounds 3\n\
             cargo xtask bench --quick --only failover --failovers 40 # failover time alone\n\
             cargo xtask bench criterion # the criterion codec bench\n```\n\n\
             Raw per-run results: `target/bench/runs.jsonl`; the medians: `docs/bench/results.json`.\n",
        );
        md
    }

    /// `FAILOVER.md`: the failover section alone, with the command and the machine.
    fn failover_page(&self, f: &Failovers) -> String {
        let m = self.machine;
        let mut command = String::from("cargo xtask bench");
        if self.opts.quick {
            command.push_str(" --quick");
        }
        for o in &self.opts.only {
            command.push_str(" --only ");
            command.push_str(o);
        }
        if !self.opts.footprint {
            command.push_str(" --no-footprint");
        }
        if !self.opts.e2e {
            command.push_str(" --no-e2e");
        }
        if !self.opts.quick || f.failovers != MIN_FAILOVERS {
            let _w = write!(command, " --failovers {}", f.failovers);
        }
        let mut md = format!(
            "# Failover time: brook and the official driver\n\n\
             Written by `{command}` (the run's failover part; it also goes into \
             `BENCHMARKS.md`) — rerun it rather than editing the tables.\n\n\
             Machine: {} × {}, {:.1} GiB, Linux {}, {}; load average at start {}.\n\n",
            m.cores, m.cpu, m.mem_gb, m.kernel, m.rustc, m.load
        );
        md.push_str(&failover_markdown(f, "##"));
        if let Ok(page) = fs::read_to_string(repo_root().join(FAILOVER_PAGE)) {
            md.push_str(&kept_notes(&page));
        }
        md
    }

    fn errors(&self, md: &mut String, r: &Runs) {
        for e in &r.errors {
            let _w = writeln!(md, "- failed: `{}`", e.replace('`', "'"));
        }
        if !r.errors.is_empty() {
            md.push('\n');
        }
    }

    fn results_json(&self) -> String {
        // Keys in the order put (serde_json's `preserve_order`).
        let mut results = serde_json::Map::new();
        let mut put = |k: String, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                results.insert(k, json_number(v));
            }
        };
        let keys = [
            "p50_ns",
            "p99_ns",
            "p999_ns",
            "events_per_s",
            "allocs_per_event",
            "cpu_ns_per_step",
            "vm_rss_kb",
            "kb_per_stream",
        ];
        for (id, r) in self.results {
            for c in r.by_client.keys() {
                for k in keys {
                    put(format!("{id}.{c}.{k}"), r.med(c, k));
                }
            }
        }
        if let Some(f) = self.footprint {
            put(
                "footprint.brook.crates".into(),
                f.brook_crates.map(|v| v as f64),
            );
            put(
                "footprint.brook_minimal.crates".into(),
                f.brook_minimal_crates.map(|v| v as f64),
            );
            put(
                "footprint.official.crates".into(),
                f.official_crates.map(|v| v as f64),
            );
            put("footprint.brook.build_s".into(), f.brook_build_s);
            put("footprint.official.build_s".into(), f.official_build_s);
            put(
                "footprint.brook.bytes".into(),
                f.brook_size.map(|v| v as f64),
            );
            put(
                "footprint.official.bytes".into(),
                f.official_size.map(|v| v as f64),
            );
        }
        if let Some(e) = self.e2e {
            for (c, v) in &e.by_client {
                put(format!("e2e.{c}.events_per_s"), median(v.clone()));
            }
        }
        if let Some(f) = self.failovers {
            for ((kind, client), o) in &f.by_run {
                for k in [
                    "failovers",
                    "timeouts",
                    "p50_ns",
                    "p90_ns",
                    "p99_ns",
                    "max_ns",
                    "errors",
                    "lost",
                    "failovers_losing_events",
                    "duplicated",
                ] {
                    put(format!("failover.{kind}.{client}.{k}"), num(o, k));
                }
            }
            for kind in FAILOVER_KINDS {
                for (brook, official, _) in FAILOVER_PAIRS {
                    for (k, p) in [("p50_ns", "p50"), ("p99_ns", "p99")] {
                        put(
                            format!("failover.{kind}.{brook}_over_{official}.{p}"),
                            ratio(f.get(kind, brook, k), f.get(kind, official, k)),
                        );
                    }
                }
            }
        }
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(results))
            .unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text
    }

    /// Latency percentiles (x: percentile on a log scale of 1/(1-p); y: µs, log scale).
    fn latency_svg(&self) -> String {
        let Some(r) = self.runs("latency") else {
            return svg_message("no latency results");
        };
        let series: Vec<(String, Vec<(f64, f64)>)> = r
            .by_client
            .keys()
            .map(|c| {
                let pts = r
                    .dist(c)
                    .into_iter()
                    .filter(|(p, _)| *p < 100.0)
                    .map(|(p, ns)| ((1.0 / (1.0 - p / 100.0)).log10(), ns / 1e3))
                    .collect();
                (c.clone(), pts)
            })
            .collect();
        let xticks = [
            (0.0, "0%"),
            (1.0, "90%"),
            (2.0, "99%"),
            (3.0, "99.9%"),
            (4.0, "99.99%"),
        ];
        line_chart(&Chart {
            title: "Latency per event, one event per getMore (median over rounds)",
            x_label: "percentile",
            y_label: "µs (log scale)",
            x_ticks: &xticks.map(|(v, l)| (v, l.to_owned())),
            x_range: (0.0, 4.0),
            series: &series,
            dashed: &[],
        })
    }

    /// Events/s against batch size (both log scales).
    fn throughput_svg(&self) -> String {
        let mut series = Vec::new();
        let mut dashed = Vec::new();
        for (size, ids) in [
            (
                "300 B",
                &["latency", "b10_300", "b100_300", "b1000_300"][..],
            ),
            ("2 KB", &["b100_2k", "b1000_2k"][..]),
        ] {
            for c in ALL_CLIENTS {
                let pts: Vec<(f64, f64)> = ids
                    .iter()
                    .filter_map(|id| {
                        let s = self.scenarios.iter().find(|s| s.id == *id)?;
                        let eps = self.med(id, c, "events_per_s")?;
                        Some(((s.events as f64).log10(), eps))
                    })
                    .collect();
                if !pts.is_empty() {
                    if size == "2 KB" {
                        dashed.push(series.len());
                    }
                    series.push((format!("{c} {size}"), pts));
                }
            }
        }
        let xticks = [(0.0, "1"), (1.0, "10"), (2.0, "100"), (3.0, "1,000")];
        line_chart(&Chart {
            title: "Events/s against events per getMore (~300 B solid, ~2 KB dashed)",
            x_label: "events per getMore (log scale)",
            y_label: "events/s (log scale)",
            x_ticks: &xticks.map(|(v, l)| (v, l.to_owned())),
            x_range: (0.0, 3.0),
            series: &series,
            dashed: &dashed,
        })
    }
}

// ---------------------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------------------

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_ticks: &'a [(f64, String)],
    x_range: (f64, f64),
    /// Each series: name, points (x in chart units, y > 0 plotted on a log scale).
    series: &'a [(String, Vec<(f64, f64)>)],
    /// Indices of series drawn dashed.
    dashed: &'a [usize],
}

const COLORS: [&str; 6] = [
    "#7f7f7f", "#bcbd22", "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e",
];

fn color_of(name: &str) -> &'static str {
    let client = name.split_whitespace().next().unwrap_or(name);
    ALL_CLIENTS
        .iter()
        .position(|c| *c == client)
        .and_then(|i| COLORS.get(i))
        .copied()
        .unwrap_or("#000000")
}

fn svg_message(msg: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"60\">\
         <text x=\"10\" y=\"30\" font-family=\"sans-serif\" font-size=\"14\">{msg}</text></svg>\n"
    )
}

fn line_chart(c: &Chart<'_>) -> String {
    let (w, h) = (860.0, 480.0);
    let (left, right, top, bottom) = (80.0, 220.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let ys: Vec<f64> = c
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .filter(|y| *y > 0.0)
        .collect();
    if ys.is_empty() {
        return svg_message("no data");
    }
    let ymin = ys
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let mut ymax = ys.iter().copied().fold(0.0, f64::max).log10().ceil();
    if ymax <= ymin {
        ymax = ymin + 1.0;
    }
    let (x0, x1) = c.x_range;
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * pw;
    let py = |y: f64| top + ph - (y.max(1e-12).log10() - ymin) / (ymax - ymin) * ph;
    let mut s = String::new();
    let _w = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        xml(c.title)
    );
    // Y grid: decades, and 2× and 5× within.
    let mut d = ymin;
    while d <= ymax + 1e-9 {
        for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = 10f64.powf(d) * m;
            if v.log10() > ymax + 1e-9 {
                continue;
            }
            let y = py(v);
            let _w = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#ccc" } else { "#eee" }
            );
            let _w = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                y + 4.0,
                fmt_si(Some(v)).replace(' ', "")
            );
        }
        d += 1.0;
    }
    for (x, label) in c.x_ticks {
        let xp = px(*x);
        let _w = writeln!(
            s,
            "<line x1=\"{xp:.1}\" x2=\"{xp:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{xp:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            top + ph,
            top + ph + 18.0,
            xml(label)
        );
    }
    let _w = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        h - 18.0,
        xml(c.x_label),
        top + ph / 2.0,
        xml(c.y_label)
    );
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let color = color_of(name);
        let dash = if c.dashed.contains(&i) {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, y)| *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _w = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            if let Some((x, y)) = p.split_once(',') {
                let _w = writeln!(
                    s,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{color}\"/>"
                );
            }
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = left + pw + 16.0;
        let _w = writeln!(
            s,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn passes_user_arguments_after_the_package() {
        let user = strings(&["--bench", "codec", "--", "decode"]);
        assert_eq!(
            bench_args(&user),
            [
                "bench",
                "-p",
                "brook-benches",
                "--bench",
                "codec",
                "--",
                "decode"
            ]
        );
        assert_eq!(bench_args(&[]), ["bench", "-p", "brook-benches"]);
    }

    #[test]
    fn target_dir_follows_cargo_target_dir() {
        let root = Path::new("/repo");
        assert_eq!(target_dir(root, None), Path::new("/repo/target"));
        assert_eq!(target_dir(root, Some("".into())), Path::new("/repo/target"));
        assert_eq!(target_dir(root, Some("out".into())), Path::new("/repo/out"));
        assert_eq!(target_dir(root, Some("/tmp/t".into())), Path::new("/tmp/t"));
    }

    #[test]
    fn the_bench_packages_exist() {
        let manifest = fs::read_to_string(repo_root().join("benches").join("Cargo.toml"))
            .expect("benches/Cargo.toml is readable");
        assert!(manifest.contains(&format!("name = \"{PACKAGE}\"")));
        let compare = fs::read_to_string(repo_root().join("benches/compare/Cargo.toml"))
            .expect("benches/compare/Cargo.toml is readable");
        assert!(compare.contains("[workspace]"));
        assert!(compare.contains("mongodb"));
    }

    #[test]
    fn options_parse() {
        let o = Options::parse(&[]).expect("defaults");
        assert_eq!((o.quick, o.rounds, o.seconds), (false, 5, 2.0));
        let q =
            Options::parse(&strings(&["--quick", "--only", "idle", "--no-e2e"])).expect("quick");
        assert_eq!((q.quick, q.rounds, q.seconds, q.e2e), (true, 1, 0.3, false));
        assert_eq!(q.only, ["idle"]);
        let r =
            Options::parse(&strings(&["--quick", "--rounds", "3", "--seconds", "1"])).expect("r");
        assert_eq!((r.rounds, r.seconds), (3, 1.0));
        assert!(Options::parse(&strings(&["--seconds"])).is_err());
        assert!(Options::parse(&strings(&["--frobnicate"])).is_err());
        assert!(Options::parse(&strings(&["--seconds", "0"])).is_err());
        assert_eq!((o.failovers, q.failovers), (40, MIN_FAILOVERS));
        let f = Options::parse(&strings(&["--quick", "--failovers", "25"])).expect("f");
        assert_eq!(f.failovers, 25);
        assert!(Options::parse(&strings(&["--failovers", "5"])).is_err());
    }

    fn bins() -> Bins {
        Bins {
            server: "/t/replay-server".into(),
            brook: "/t/brook-bench".into(),
            failover: "/t/failover-bench".into(),
            compare: "/t/compare-bench".into(),
        }
    }

    #[test]
    fn failover_clients_get_the_same_options() {
        let brook = failover_args(&bins(), "kill", "brook", 20);
        assert_eq!(
            brook,
            [
                "--kind",
                "kill",
                "--failovers",
                "20",
                "--uri-options",
                FAILOVER_URI_OPTIONS,
                "--",
                "/t/brook-bench",
                "--client",
                "brook-doc",
                "--scenario",
                "failover-tail"
            ]
        );
        let official = failover_args(&bins(), "kill", "official", 20);
        assert_eq!(official[5], FAILOVER_URI_OPTIONS);
        assert_eq!(official[7], "/t/compare-bench");
        for client in ["brook-poll", "official-poll"] {
            let poll = failover_args(&bins(), "kill", client, 20);
            assert_eq!(
                poll[5],
                format!("{FAILOVER_URI_OPTIONS}&serverMonitoringMode=poll")
            );
        }
        assert_eq!(
            failover_args(&bins(), "kill", "brook-poll", 20)[7],
            "/t/brook-bench"
        );
    }

    #[test]
    fn the_failover_table_has_ratios_to_the_official_driver() {
        let mut f = Failovers {
            failovers: 20,
            ..Failovers::default()
        };
        for (client, p50, lost) in [("brook", 2e6, 0.0), ("official", 1e6, 3.0)] {
            let mut o = Obj::new();
            o.insert("p50_ns".into(), Val::Num(p50));
            o.insert("p99_ns".into(), Val::Num(p50 * 4.0));
            o.insert("lost".into(), Val::Num(lost));
            o.insert("failovers_losing_events".into(), Val::Num(lost / 2.0));
            if lost > 0.0 {
                o.insert("lost_first".into(), Val::Str("7;8".into()));
            }
            f.by_run.insert(("kill".into(), client.into()), o);
        }
        let md = failover_markdown(&f, "##");
        assert!(md.starts_with("## Failover time"));
        assert!(md.contains(
            "| kill | as they come (streaming) | 2.00 | 8.00 | 1.00 | 4.00 | 2.00× | 2.00× |"
        ));
        assert!(!md.contains("| stepdown |"), "no row without results");
        assert!(!md.contains("| kill | `serverMonitoringMode=poll`"));
        assert!(md.contains("- kill, official: lost events (first ones): 7, 8"));
        assert!(md.contains("**kill, official: 2 of – failovers lost events** (3 events"));
        assert_eq!(fmt_ms(Some(123_456_789.0)), "123");
        assert_eq!(fmt_ms(Some(12_345_678.0)), "12.3");
        assert_eq!(fmt_ms(None), "–");
        let page = format!("# t\n\n| a |\n{NOTES_MARKER}\n\n## Notes\n");
        assert_eq!(kept_notes(&page), format!("\n{NOTES_MARKER}\n\n## Notes\n"));
        assert_eq!(kept_notes("# t\n"), "");
    }

    #[test]
    fn flat_json_round_trips() {
        let o =
            parse_flat_json(r#"{"a":1.5,"b":"x\"y","c":null,"d":true,"e":-3e2, "f" : "p:1;q:2"}"#)
                .expect("parses");
        assert_eq!(num(&o, "a"), Some(1.5));
        assert_eq!(o.get("b"), Some(&Val::Str("x\"y".to_owned())));
        assert_eq!(o.get("c"), Some(&Val::Null));
        assert_eq!(num(&o, "d"), Some(1.0));
        assert_eq!(num(&o, "e"), Some(-300.0));
        assert_eq!(parse_flat_json(&to_json(&o)), Some(o));
        assert_eq!(parse_flat_json("{}"), Some(Obj::new()));
        assert_eq!(parse_flat_json(r#"{"a":[1]}"#), None);
        assert_eq!(parse_flat_json("nope"), None);
        // Numbers keep the form Rust's Display gives them; non-finite ones are null.
        let o: Obj = [
            ("n".to_owned(), Val::Num(12.0)),
            ("f".to_owned(), Val::Num(1.5)),
            ("i".to_owned(), Val::Num(f64::INFINITY)),
            ("s".to_owned(), Val::Str("a\"b\n".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(to_json(&o), r#"{"f":1.5,"i":null,"n":12,"s":"a\"b\n"}"#);
    }

    #[test]
    fn medians_and_distributions() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
        let mut runs = Runs::default();
        for (p50, dist) in [
            (10.0, "50:10;99:30"),
            (20.0, "50:20;99:50"),
            (30.0, "50:30;99:40"),
        ] {
            let mut o = Obj::new();
            o.insert("p50_ns".into(), Val::Num(p50));
            o.insert("dist".into(), Val::Str(dist.into()));
            runs.by_client.entry("c".into()).or_default().push(o);
        }
        assert_eq!(runs.med("c", "p50_ns"), Some(20.0));
        assert_eq!(runs.dist("c"), vec![(50.0, 20.0), (99.0, 40.0)]);
        assert_eq!(runs.med("nobody", "p50_ns"), None);
    }

    #[test]
    fn crates_are_counted_once() {
        let tree = "brook-cli v0.1.0 (/w/crates/cli)\nbson v3.1.0\nserde v1.0.228\n\
                    bson v3.1.0 (*)\nserde v1.0.228\n\n";
        assert_eq!(count_crates(tree), 3);
    }

    #[test]
    fn charts_are_svg() {
        let series = vec![
            ("brook-raw".to_owned(), vec![(0.0, 10.0), (1.0, 20.0)]),
            (
                "official-typed 2 KB".to_owned(),
                vec![(0.0, 30.0), (1.0, 2000.0)],
            ),
        ];
        let svg = line_chart(&Chart {
            title: "t <&>",
            x_label: "x",
            y_label: "y",
            x_ticks: &[(0.0, "0".to_owned()), (1.0, "1".to_owned())],
            x_range: (0.0, 1.0),
            series: &series,
            dashed: &[1],
        });
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(
            line_chart(&Chart {
                series: &[],
                ..Chart {
                    title: "",
                    x_label: "",
                    y_label: "",
                    x_ticks: &[],
                    x_range: (0.0, 1.0),
                    series: &[],
                    dashed: &[]
                }
            })
            .contains("no data")
        );
    }

    #[test]
    fn every_scenario_has_a_unique_id_and_clients() {
        let all = scenarios(false);
        let mut ids: Vec<_> = all.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert!(
            all.iter()
                .all(|s| !s.clients.is_empty() && !s.id.is_empty())
        );
        assert_eq!(
            scenarios(true)
                .iter()
                .find(|s| s.id == "rss1000")
                .map(|s| s.streams),
            Some(100)
        );
    }
}
