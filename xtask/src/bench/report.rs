//! The report: `docs/BENCHMARKS.md`, `results.json` and the plots' data.

use super::*;

pub(super) struct Report<'a> {
    pub(super) opts: &'a Options,
    pub(super) machine: &'a Machine,
    pub(super) scenarios: &'a [Scenario],
    pub(super) results: &'a BTreeMap<&'static str, Runs>,
    pub(super) decode: &'a Runs,
    pub(super) failovers: Option<&'a Failovers>,
    pub(super) footprint: Option<&'a Footprint>,
    pub(super) e2e: Option<&'a E2e>,
    pub(super) elapsed: Duration,
    pub(super) plot_prefix: &'static str,
}

/// One target of the issue and whether this run met it.
pub(super) struct Target {
    pub(super) what: String,
    pub(super) measured: String,
    pub(super) met: Option<bool>,
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

pub(super) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

pub(super) fn fmt_num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

pub(super) fn fmt_si(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

impl Report<'_> {
    pub(super) fn runs(&self, id: &str) -> Option<&Runs> {
        self.results.get(id)
    }

    pub(super) fn med(&self, id: &str, client: &str, key: &str) -> Option<f64> {
        self.runs(id)?.med(client, key)
    }

    pub(super) fn targets(&self) -> Vec<Target> {
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

    pub(super) fn targets_text(&self) -> String {
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

    pub(super) fn markdown(&self) -> String {
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
    pub(super) fn failover_page(&self, f: &Failovers) -> String {
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

    pub(super) fn errors(&self, md: &mut String, r: &Runs) {
        for e in &r.errors {
            let _w = writeln!(md, "- failed: `{}`", e.replace('`', "'"));
        }
        if !r.errors.is_empty() {
            md.push('\n');
        }
    }

    pub(super) fn results_json(&self) -> String {
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
    pub(super) fn latency_svg(&self) -> String {
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
    pub(super) fn throughput_svg(&self) -> String {
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
