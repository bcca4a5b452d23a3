//! Failover time on the testkit's replica set: `failover-bench` per kind and client,
//! and its section of the report (also `docs/bench/FAILOVER.md`).

use super::*;

/// The fewest failovers per kind and client (`--quick` runs this many).
pub(super) const MIN_FAILOVERS: usize = 20;

/// The ways the primary is lost, as `failover-bench --kind` names them.
pub(super) const FAILOVER_KINDS: [&str; 3] = ["stepdown", "kill", "blackhole"];

/// The URI options of every failover client: short heartbeats and connect timeouts (a
/// blackholed primary is noticed through them), the default server selection timeout.
pub(super) const FAILOVER_URI_OPTIONS: &str =
    "heartbeatFrequencyMS=500&connectTimeoutMS=500&serverSelectionTimeoutMS=30000";

/// The clients of the failover scenario: brook and the official driver as they come
/// (`serverMonitoringMode` auto: streaming monitors), and each with
/// `serverMonitoringMode=poll` (`-poll`).
pub(super) const FAILOVER_CLIENTS: [&str; 4] = ["brook", "official", "brook-poll", "official-poll"];

/// The pairs compared (brook's client, the official one) and their monitors.
pub(super) const FAILOVER_PAIRS: [(&str, &str, &str); 2] = [
    ("brook", "official", "as they come (streaming)"),
    ("brook-poll", "official-poll", "`serverMonitoringMode=poll`"),
];

/// Every failover run: the harness's JSON per kind and client.
#[derive(Debug, Default, Clone)]
pub(super) struct Failovers {
    pub(super) failovers: usize,
    pub(super) by_run: BTreeMap<(String, String), Obj>,
    pub(super) errors: Vec<String>,
}

impl Failovers {
    pub(super) fn get(&self, kind: &str, client: &str, key: &str) -> Option<f64> {
        num(self.by_run.get(&(kind.to_owned(), client.to_owned()))?, key)
    }
}

/// `failover-bench` arguments for one run: the kind, the count, the URI options, then
/// the client command.
pub(super) fn failover_args(
    bins: &Bins,
    kind: &str,
    client: &str,
    failovers: usize,
) -> Vec<String> {
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

pub(super) fn failover(bins: &Bins, failovers: usize, log: &mut fs::File) -> Failovers {
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
pub(super) fn kept_notes(page: &str) -> String {
    page.find(NOTES_MARKER)
        .map(|at| format!("\n{}", &page[at..]))
        .unwrap_or_default()
}

/// Milliseconds from nanoseconds, with the digits that matter at that size.
pub(super) fn fmt_ms(ns: Option<f64>) -> String {
    match ns.map(|v| v / 1e6) {
        None => "–".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) if ms < 100.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
    }
}

/// The failover section: how it is measured, the settings, the p50/p99 table with the
/// ratios to the official driver, and the details per run.
pub(super) fn failover_markdown(f: &Failovers, heading: &str) -> String {
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
