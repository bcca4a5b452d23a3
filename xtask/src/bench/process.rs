//! Running the bench processes: building them, the `replay-server` of a scenario, one
//! client run (its last stdout line, a JSON object), a scenario's rounds.

use super::*;

/// Runs `cmd`, waiting at most `limit`, and parses its last stdout line as a flat JSON
/// object.
pub(super) fn run_json(cmd: &mut Command, limit: Duration) -> Result<Obj> {
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
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) uri: String,
    pub(super) frame_len: f64,
}

impl Server {
    pub(super) fn start(bin: &Path, s: &Scenario) -> Result<Server> {
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

pub(super) struct Bins {
    pub(super) server: PathBuf,
    pub(super) brook: PathBuf,
    pub(super) failover: PathBuf,
    pub(super) compare: PathBuf,
}

pub(super) fn build(root: &Path) -> Result<Bins> {
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

pub(super) fn client_command(bins: &Bins, client: &str) -> Command {
    if client.starts_with("official") {
        Command::new(&bins.compare)
    } else {
        Command::new(&bins.brook)
    }
}

pub(super) fn run_scenario(bins: &Bins, s: &Scenario, opts: &Options, log: &mut fs::File) -> Runs {
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
pub(super) fn to_json(o: &Obj) -> String {
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
