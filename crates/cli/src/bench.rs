//! `brook bench`: insert-to-event latency, getMore round trips and events/s of a change
//! stream, against any deployment.
//!
//! A writer task (its own [`Client`]) inserts documents `{_id, brookBench: "<run id>", seq,
//! sentNs, pad}` at a paced rate; `sentNs` is the send time in nanoseconds since an
//! [`Instant`] taken once by this process, so writer and reader share one monotonic clock.
//! The reader follows the collection's change stream in raw mode (filtered on the run id
//! by a `$match`), reads `seq` and `sentNs` out of each event's `fullDocument` without
//! decoding the rest, and records `now - sentNs` in an HDR histogram. `seq` numbers find
//! lost and duplicated events. At the end the run's documents, and only they, are deleted.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brook::{ChangeStream, Client, Collection, RawChangeEvent};
use bson::oid::ObjectId;
use bson::{Bson, Document, RawDocument, doc};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::{BenchArgs, BenchLength};
use crate::error::CliError;

/// How long the reader waits, after the last write, for the events still missing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The same after Ctrl-C or SIGTERM: a short wait for events already on their way.
const INTERRUPT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long closing the stream, stopping the writer, the cleanup and the clients' shutdown
/// may each take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest value the histograms hold (one hour in microseconds); larger ones are
/// recorded as this.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// The field that marks the run's documents.
const RUN_FIELD: &str = "brookBench";

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Paces the writer at `rate` writes per second without bursts: write `k` is due `k`
/// periods after the anchor; a write that went out more than one period late re-anchors
/// the schedule at its send time (like tokio's `MissedTickBehavior::Delay`), so a slow
/// server lowers the achieved rate instead of causing a catch-up burst.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate: u64,
    anchor: Duration,
    since_anchor: u64,
}

impl Pacer {
    /// A schedule of `rate` (at least 1) writes per second whose first write is due at 0.
    pub(crate) fn new(rate: u32) -> Pacer {
        Pacer {
            rate: u64::from(rate.max(1)),
            anchor: Duration::ZERO,
            since_anchor: 0,
        }
    }

    fn offset(&self, k: u64) -> Duration {
        // k / rate seconds, computed in nanoseconds so that no error accumulates.
        let ns = u128::from(k).saturating_mul(1_000_000_000) / u128::from(self.rate);
        self.anchor
            .saturating_add(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// When the next write is due (from the start of writing).
    pub(crate) fn next_due(&self) -> Duration {
        self.offset(self.since_anchor)
    }

    /// Records that the due write went out at `at`.
    pub(crate) fn sent(&mut self, at: Duration) {
        let late_limit = self.offset(self.since_anchor.saturating_add(1));
        if at > late_limit {
            self.anchor = at;
            self.since_anchor = 1;
        } else {
            self.since_anchor = self.since_anchor.saturating_add(1);
        }
    }
}

/// The percentiles of one histogram (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Summary {
    /// Values recorded.
    pub(crate) count: u64,
    /// Smallest.
    pub(crate) min: u64,
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Largest.
    pub(crate) max: u64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Summary {
    /// The summary of `h` (all zeros when it is empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
            "mean": round(self.mean, 1),
        })
    }

    fn table_row(self, label: &str) -> String {
        #[allow(clippy::cast_precision_loss)] // microseconds shown as milliseconds
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "{label:<26}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.mean / 1000.0
        )
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A histogram of microseconds up to an hour, 3 significant digits.
pub(crate) fn new_histogram() -> Result<Histogram<u64>, CliError> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|e| CliError::Failed(format!("cannot create a histogram: {e}")))
}

fn record_us(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

/// Which sequence numbers were seen: a bitset bounded by the number of writes attempted.
#[derive(Debug, Default)]
pub(crate) struct SeqTracker {
    words: Vec<u64>,
}

/// What [`SeqTracker::record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first time.
    First,
    /// Seen before.
    Duplicate,
    /// Not a sequence number the writer has used.
    Unknown,
}

impl SeqTracker {
    /// Records `seq`; numbers at or above `attempted` (never written) are refused.
    pub(crate) fn record(&mut self, seq: u64, attempted: u64) -> Seen {
        if seq >= attempted {
            return Seen::Unknown;
        }
        let (Ok(word), bit) = (usize::try_from(seq / 64), seq % 64) else {
            return Seen::Unknown;
        };
        if self.words.len() <= word {
            self.words.resize(word.saturating_add(1), 0);
        }
        match self.words.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => Seen::Duplicate,
            Some(w) => {
                *w |= 1 << bit;
                Seen::First
            }
            None => Seen::Unknown,
        }
    }

    /// How many of the numbers `0..n` were seen.
    pub(crate) fn count_below(&self, n: u64) -> u64 {
        let full = usize::try_from(n / 64).unwrap_or(usize::MAX);
        let mut count: u64 = self
            .words
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = n % 64;
        if rest > 0
            && let Some(w) = self.words.get(full)
        {
            count += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
        count
    }
}

/// One inserted document. `pad` makes it `doc_size` bytes when that is more than the
/// unpadded size.
fn bench_doc(run_id: &str, seq: u64, sent_ns: u64, pad: &str) -> Document {
    doc! {
        "_id": ObjectId::new(),
        RUN_FIELD: run_id,
        "seq": i64::try_from(seq).unwrap_or(i64::MAX),
        "sentNs": i64::try_from(sent_ns).unwrap_or(i64::MAX),
        "pad": pad,
    }
}

/// The padding that makes a document `doc_size` bytes, and the size it then has.
pub(crate) fn padding_for(doc_size: usize) -> Result<(String, usize), CliError> {
    let base = bson::serialize_to_vec(&bench_doc(&ObjectId::new().to_hex(), 0, 0, ""))
        .map_err(|e| CliError::Failed(format!("cannot encode a document: {e}")))?
        .len();
    let pad = doc_size.saturating_sub(base);
    Ok(("x".repeat(pad), base.saturating_add(pad)))
}

/// The run's `seq` and `sentNs` from an insert event of this run, read without decoding
/// the event (raw lookups); `None` for any other event.
pub(crate) fn bench_fields(event: &RawDocument, run_id: &str) -> Option<(u64, u64)> {
    if event.get_str("operationType").ok()? != "insert" {
        return None;
    }
    let full = event.get_document("fullDocument").ok()?;
    if full.get_str(RUN_FIELD).ok()? != run_id {
        return None;
    }
    Some((count_field(full, "seq")?, count_field(full, "sentNs")?))
}

/// A non-negative integer field, written as an Int64 but read back as whichever integer
/// type the server chose (some store small numbers as Int32).
fn count_field(doc: &RawDocument, key: &str) -> Option<u64> {
    match doc.get(key).ok()?? {
        bson::RawBsonRef::Int64(n) => u64::try_from(n).ok(),
        bson::RawBsonRef::Int32(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// What the writer did.
#[derive(Debug, Default)]
struct WriterReport {
    /// Inserts acknowledged (sequence numbers `0..acknowledged`).
    acknowledged: u64,
    /// Of which during the warm-up.
    warmup_acknowledged: u64,
    /// Send times of the first and last measured write (ns since the origin).
    first_measured_ns: Option<u64>,
    last_measured_ns: Option<u64>,
    /// The insert that failed, if one did.
    error: Option<CliError>,
}

impl WriterReport {
    fn measured(&self) -> u64 {
        self.acknowledged.saturating_sub(self.warmup_acknowledged)
    }
}

/// What the writer needs.
struct WriterJob {
    coll: Collection<Document>,
    ns: String,
    run_id: String,
    rate: u32,
    warmup: Duration,
    length: BenchLength,
    pad: String,
    origin: Instant,
    attempted: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

async fn write(mut job: WriterJob) -> WriterReport {
    let mut report = WriterReport::default();
    let mut pacer = Pacer::new(job.rate);
    let warmup_ns = nanos(job.warmup);
    let mut seq: u64 = 0;
    loop {
        if *job.stop.borrow() {
            break;
        }
        let due = pacer.next_due();
        let finished = match job.length {
            BenchLength::Duration(d) => due >= job.warmup.saturating_add(d),
            BenchLength::Events(n) => report.measured() >= n,
        };
        if finished {
            break;
        }
        let at = job.origin.checked_add(due).unwrap_or_else(Instant::now);
        tokio::select! {
            biased;
            _ = job.stop.changed() => break,
            () = tokio::time::sleep_until(at.into()) => {}
        }
        let sent_ns = nanos(job.origin.elapsed());
        job.attempted
            .store(seq.saturating_add(1), Ordering::Release);
        let result = job
            .coll
            .insert_one(bench_doc(&job.run_id, seq, sent_ns, &job.pad))
            .await;
        if let Err(e) = result {
            report.error = Some(CliError::brook(format!("insert into {} failed", job.ns), e));
            break;
        }
        report.acknowledged = report.acknowledged.saturating_add(1);
        if sent_ns < warmup_ns {
            report.warmup_acknowledged = report.warmup_acknowledged.saturating_add(1);
        } else {
            report.first_measured_ns.get_or_insert(sent_ns);
            report.last_measured_ns = Some(sent_ns);
        }
        pacer.sent(Duration::from_nanos(sent_ns));
        seq = seq.saturating_add(1);
    }
    report
}

/// What the reader counted.
struct ReaderState {
    run_id: String,
    origin: Instant,
    warmup_ns: u64,
    latency: Histogram<u64>,
    get_more_rtt: Histogram<u64>,
    seen: SeqTracker,
    measured_events: u64,
    first_event_ns: Option<u64>,
    last_event_ns: Option<u64>,
    duplicated: u64,
    foreign: u64,
    /// getMores sent when measuring began, and when.
    measure_start: Option<(u64, u64)>,
    get_mores_empty: u64,
}

impl ReaderState {
    fn now_ns(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn event(&mut self, event: &RawChangeEvent, attempted: u64) {
        let now_ns = self.now_ns();
        let Some((seq, sent_ns)) = bench_fields(event.as_document(), &self.run_id) else {
            self.foreign = self.foreign.saturating_add(1);
            return;
        };
        match self.seen.record(seq, attempted) {
            Seen::First => {}
            Seen::Duplicate => {
                self.duplicated = self.duplicated.saturating_add(1);
                return;
            }
            Seen::Unknown => {
                self.foreign = self.foreign.saturating_add(1);
                return;
            }
        }
        if sent_ns >= self.warmup_ns {
            record_us(
                &mut self.latency,
                Duration::from_nanos(now_ns.saturating_sub(sent_ns)),
            );
            self.measured_events = self.measured_events.saturating_add(1);
            self.first_event_ns.get_or_insert(now_ns);
            self.last_event_ns = Some(now_ns);
        }
    }
}

/// Why the reading stopped.
enum ReadEnd {
    /// Every acknowledged write's event came, or the drain timeout passed.
    Done,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

struct Reader<'a> {
    stream: &'a mut ChangeStream<RawChangeEvent>,
    state: ReaderState,
    attempted: Arc<AtomicU64>,
    writer: JoinHandle<WriterReport>,
    stop: watch::Sender<bool>,
    report: Option<WriterReport>,
}

impl Reader<'_> {
    /// Reads until every acknowledged write was seen (after the writer finished), the
    /// drain timeout, a signal or an error.
    async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<ReadEnd, CliError> {
        tokio::pin!(shutdown);
        let mut interrupted = false;
        let mut drain_until: Option<tokio::time::Instant> = None;
        // A dropped call may leave a getMore in flight: the next call's time is partial.
        let mut skip_rtt = false;
        loop {
            if let Some(r) = &self.report
                && self.state.seen.count_below(r.acknowledged) == r.acknowledged
            {
                break;
            }
            let now_ns = self.state.now_ns();
            if self.state.measure_start.is_none() && now_ns >= self.state.warmup_ns {
                self.state.measure_start = Some((self.stream.get_more_count(), now_ns));
            }
            let measuring = self.state.measure_start.is_some();
            let drain = drain_until.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                () = &mut shutdown, if !interrupted => {
                    interrupted = true;
                    let _ = self.stop.send(true);
                    let until = tokio::time::Instant::now() + INTERRUPT_DRAIN_TIMEOUT;
                    drain_until = Some(drain_until.map_or(until, |d| d.min(until)));
                    skip_rtt = true;
                }
                joined = &mut self.writer, if self.report.is_none() => {
                    let mut report = joined.map_err(|e| CliError::Failed(format!("the writer task failed: {e}")))?;
                    if let Some(e) = report.error.take() {
                        self.report = Some(report);
                        return Err(e);
                    }
                    self.report = Some(report);
                    let wait = if interrupted { INTERRUPT_DRAIN_TIMEOUT } else { DRAIN_TIMEOUT };
                    let until = tokio::time::Instant::now() + wait;
                    drain_until = Some(drain_until.map_or(until, |d| d.min(until)));
                    skip_rtt = true;
                }
                () = tokio::time::sleep_until(drain), if drain_until.is_some() => break,
                (item, took, get_more) = next_timed(self.stream) => {
                    if get_more && measuring && !skip_rtt {
                        record_us(&mut self.state.get_more_rtt, took);
                    }
                    if get_more {
                        skip_rtt = false;
                    }
                    match item {
                        Ok(Some(event)) => {
                            let attempted = self.attempted.load(Ordering::Acquire);
                            self.state.event(&event, attempted);
                        }
                        Ok(None) if !self.stream.is_alive() => {
                            return Err(CliError::Failed(
                                "the change stream ended (was the collection dropped or renamed?)".to_owned(),
                            ));
                        }
                        Ok(None) => {
                            if measuring && get_more {
                                self.state.get_mores_empty = self.state.get_mores_empty.saturating_add(1);
                            }
                        }
                        Err(e) => return Err(CliError::brook("the change stream failed", e)),
                    }
                }
            }
        }
        Ok(if interrupted {
            ReadEnd::Interrupted
        } else {
            ReadEnd::Done
        })
    }

    /// Stops the writer (if it still runs) and returns its report.
    async fn finish_writer(&mut self) -> Option<WriterReport> {
        if self.report.is_none() {
            let _ = self.stop.send(true);
            match tokio::time::timeout(CLOSE_TIMEOUT, &mut self.writer).await {
                Ok(Ok(report)) => self.report = Some(report),
                Ok(Err(_)) => {}
                Err(_) => self.writer.abort(),
            }
        }
        self.report.take()
    }
}

/// One `next_if_any` (a buffered event, or at most one getMore), its time, and whether
/// it sent a getMore.
async fn next_timed(
    stream: &mut ChangeStream<RawChangeEvent>,
) -> (Result<Option<RawChangeEvent>, brook::Error>, Duration, bool) {
    let before = stream.get_more_count();
    let start = Instant::now();
    let item = stream.next_if_any().await;
    let took = start.elapsed();
    (item, took, stream.get_more_count() > before)
}

/// The results of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    /// The run id (hex ObjectId).
    pub(crate) run_id: String,
    /// `db.coll`.
    pub(crate) namespace: String,
    /// Stopped by a signal.
    pub(crate) interrupted: bool,
    /// `--rate`.
    pub(crate) requested_rate: u32,
    /// `--warmup` in seconds.
    pub(crate) warmup_s: f64,
    /// From the first measured write to the last measured event, seconds.
    pub(crate) measured_s: f64,
    /// Measured writes acknowledged.
    pub(crate) writes: u64,
    /// Warm-up writes acknowledged.
    pub(crate) warmup_writes: u64,
    /// Achieved write rate.
    pub(crate) writes_per_s: f64,
    /// Measured events read.
    pub(crate) events: u64,
    /// Event rate.
    pub(crate) events_per_s: f64,
    /// Insert-to-event latency.
    pub(crate) latency: Summary,
    /// getMores while measuring.
    pub(crate) get_mores: u64,
    /// Of which returned no event.
    pub(crate) get_mores_empty: u64,
    /// getMore rate.
    pub(crate) get_mores_per_s: f64,
    /// Events per getMore.
    pub(crate) events_per_get_more: f64,
    /// getMore round trips.
    pub(crate) get_more_rtt: Summary,
    /// Resumes of the stream.
    pub(crate) resumes: u64,
    /// Acknowledged writes whose event never came.
    pub(crate) lost: u64,
    /// Events read twice.
    pub(crate) duplicated: u64,
    /// Other events of the stream.
    pub(crate) foreign: u64,
    /// Bytes of one inserted document.
    pub(crate) doc_size: usize,
    /// Documents deleted at the end (`None` with `--keep`).
    pub(crate) cleanup_deleted: Option<i64>,
}

/// `(n - 1)` intervals over the time from the first to the last of `n` instants (ns).
#[allow(clippy::cast_precision_loss)] // rates shown with one decimal
pub(crate) fn rate_between(n: u64, first_ns: Option<u64>, last_ns: Option<u64>) -> f64 {
    match (first_ns, last_ns) {
        (Some(a), Some(b)) if b > a && n >= 2 => (n - 1) as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    }
}

impl Report {
    /// The `--json` object.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "run_id": self.run_id,
            "namespace": self.namespace,
            "interrupted": self.interrupted,
            "requested_rate": self.requested_rate,
            "warmup_s": round(self.warmup_s, 3),
            "measured_s": round(self.measured_s, 3),
            "writes": self.writes,
            "warmup_writes": self.warmup_writes,
            "writes_per_s": round(self.writes_per_s, 1),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "latency_us": self.latency.to_json(),
            "getmores": self.get_mores,
            "getmores_empty": self.get_mores_empty,
            "getmores_per_s": round(self.get_mores_per_s, 1),
            "events_per_getmore": round(self.events_per_get_more, 2),
            "getmore_rtt_us": self.get_more_rtt.to_json(),
            "resumes": self.resumes,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "foreign": self.foreign,
            "doc_size": self.doc_size,
            "cleanup_deleted": self.cleanup_deleted,
        })
    }

    /// The human table.
    pub(crate) fn table(&self) -> String {
        let mut t = String::new();
        let mut line = |label: &str, value: String| {
            t.push_str(&format!("{label:<16}{value}\n"));
        };
        line("namespace", self.namespace.clone());
        line("run id", self.run_id.clone());
        if self.interrupted {
            line(
                "interrupted",
                "yes (Ctrl-C or SIGTERM): partial results".to_owned(),
            );
        }
        line(
            "measured",
            format!(
                "{:.2} s (after {:.2} s of warm-up, {} writes)",
                self.measured_s, self.warmup_s, self.warmup_writes
            ),
        );
        line(
            "writes",
            format!(
                "{} ({:.1}/s achieved, {}/s requested; {} B each)",
                self.writes, self.writes_per_s, self.requested_rate, self.doc_size
            ),
        );
        line(
            "events",
            format!("{} ({:.1}/s)", self.events, self.events_per_s),
        );
        line(
            "getMores",
            format!(
                "{} ({:.1}/s, {:.2} events each, {} empty)",
                self.get_mores,
                self.get_mores_per_s,
                self.events_per_get_more,
                self.get_mores_empty
            ),
        );
        line("resumes", self.resumes.to_string());
        line("lost", self.lost.to_string());
        line("duplicated", self.duplicated.to_string());
        if self.foreign > 0 {
            line("other events", self.foreign.to_string());
        }
        line(
            "cleanup",
            match self.cleanup_deleted {
                Some(n) => format!("{n} documents deleted"),
                None => format!(
                    "kept (delete them with {{{RUN_FIELD}: \"{}\"}})",
                    self.run_id
                ),
            },
        );
        t.push('\n');
        t.push_str(&format!(
            "{:<26}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "(ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
        ));
        t.push_str(&self.latency.table_row("insert-to-event latency"));
        t.push('\n');
        t.push_str(&self.get_more_rtt.table_row("getMore round trip"));
        t.push('\n');
        t
    }
}

/// Deletes the run's documents: `delete {q: {brookBench: run_id}, limit: 0}`.
async fn clean_up(client: &Client, args: &BenchArgs, run_id: &str) -> Result<i64, CliError> {
    let what = || {
        format!(
            "cleanup of {}.{} failed (documents with {{{RUN_FIELD}: \"{run_id}\"}} remain)",
            args.db, args.coll
        )
    };
    let command = doc! {
        "delete": args.coll.as_str(),
        "deletes": [ { "q": { RUN_FIELD: run_id }, "limit": 0 } ],
    };
    let db = client.database(&args.db);
    let reply = match tokio::time::timeout(CLOSE_TIMEOUT, db.run_command(command)).await {
        Ok(reply) => reply.map_err(|e| CliError::brook(what(), e))?,
        Err(_) => return Err(CliError::Failed(format!("{}: timed out", what()))),
    };
    if reply.contains_key("writeErrors") || reply.contains_key("writeConcernError") {
        return Err(CliError::Failed(format!(
            "{}: {}",
            what(),
            Bson::Document(reply).into_relaxed_extjson()
        )));
    }
    Ok(match reply.get("n") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => 0,
    })
}

/// Runs `brook bench`.
pub(crate) async fn run(args: BenchArgs) -> Result<(), CliError> {
    let shutdown = crate::shutdown_signal()?;
    tokio::pin!(shutdown);
    let (pad, doc_size) = padding_for(args.doc_size)?;
    // A string, not an ObjectId: some servers (nx-27017) cannot match ObjectId values.
    let run_id = ObjectId::new().to_hex();
    let ns = format!("{}.{}", args.db, args.coll);
    let (reader_client, writer_client) = tokio::select! {
        clients = async {
            let a = crate::tail::connect(&args.uri, args.password_file.as_deref()).await?;
            let b = crate::tail::connect(&args.uri, args.password_file.as_deref()).await?;
            Ok::<_, CliError>((a, b))
        } => clients?,
        () = &mut shutdown => return Ok(()),
    };
    let coll = reader_client
        .database(&args.db)
        .collection::<Document>(&args.coll);
    let mut builder = coll.watch().raw().pipeline(vec![
        doc! { "$match": { "operationType": "insert", "fullDocument.brookBench": run_id.as_str() } },
    ]);
    if let Some(n) = args.batch_size {
        builder = builder.batch_size(n);
    }
    if let Some(wait) = args.max_await_time {
        builder = builder.max_await_time(wait);
    }
    let opened = tokio::select! {
        stream = builder.into_future() => Some(stream.map_err(|e| CliError::brook(format!("cannot watch {ns}"), e))?),
        () = &mut shutdown => None,
    };
    let Some(mut stream) = opened else {
        shutdown_clients(&reader_client, &writer_client).await;
        return Ok(());
    };

    let origin = Instant::now();
    let attempted = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write(WriterJob {
        coll: writer_client
            .database(&args.db)
            .collection::<Document>(&args.coll),
        ns: ns.clone(),
        run_id: run_id.clone(),
        rate: args.rate,
        warmup: args.warmup,
        length: args.length,
        pad,
        origin,
        attempted: Arc::clone(&attempted),
        stop: stop_rx,
    }));
    let mut reader = Reader {
        stream: &mut stream,
        state: ReaderState {
            run_id: run_id.clone(),
            origin,
            warmup_ns: nanos(args.warmup),
            latency: new_histogram()?,
            get_more_rtt: new_histogram()?,
            seen: SeqTracker::default(),
            measured_events: 0,
            first_event_ns: None,
            last_event_ns: None,
            duplicated: 0,
            foreign: 0,
            measure_start: None,
            get_mores_empty: 0,
        },
        attempted,
        writer,
        stop: stop_tx,
        report: None,
    };
    let outcome = reader.run(shutdown).await;
    let writer_report = reader.finish_writer().await;
    let end_ns = reader.state.now_ns();
    let get_mores_now = reader.stream.get_more_count();
    let state = reader.state;
    let resumes = stream.resume_count();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;

    let cleanup = if args.keep {
        Ok(None)
    } else {
        clean_up(&reader_client, &args, &run_id).await.map(Some)
    };
    shutdown_clients(&reader_client, &writer_client).await;
    let end = outcome?;
    let cleanup_deleted = cleanup?;
    let w = writer_report
        .ok_or_else(|| CliError::Failed("the writer task did not finish".to_owned()))?;

    let (get_mores, measure_window_ns) = match state.measure_start {
        Some((at_start, start_ns)) => (
            get_mores_now.saturating_sub(at_start),
            end_ns.saturating_sub(start_ns),
        ),
        None => (0, 0),
    };
    #[allow(clippy::cast_precision_loss)] // rates shown with decimals
    let per_s = |n: u64, ns: u64| {
        if ns == 0 {
            0.0
        } else {
            n as f64 / (ns as f64 / 1e9)
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let events_per_get_more = if get_mores == 0 {
        0.0
    } else {
        state.measured_events as f64 / get_mores as f64
    };
    #[allow(clippy::cast_precision_loss)]
    let measured_s = match (w.first_measured_ns, state.last_event_ns) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let report = Report {
        run_id,
        namespace: ns,
        interrupted: matches!(end, ReadEnd::Interrupted),
        requested_rate: args.rate,
        warmup_s: args.warmup.as_secs_f64(),
        measured_s,
        writes: w.measured(),
        warmup_writes: w.warmup_acknowledged,
        writes_per_s: rate_between(w.measured(), w.first_measured_ns, w.last_measured_ns),
        events: state.measured_events,
        events_per_s: rate_between(
            state.measured_events,
            state.first_event_ns,
            state.last_event_ns,
        ),
        latency: Summary::of(&state.latency),
        get_mores,
        get_mores_empty: state.get_mores_empty,
        get_mores_per_s: per_s(get_mores, measure_window_ns),
        events_per_get_more,
        get_more_rtt: Summary::of(&state.get_more_rtt),
        resumes,
        lost: w
            .acknowledged
            .saturating_sub(state.seen.count_below(w.acknowledged)),
        duplicated: state.duplicated,
        foreign: state.foreign,
        doc_size,
        cleanup_deleted,
    };
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.table()
    };
    print_out(&text)
}

fn print_out(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Stdout(e)),
    }
}

async fn shutdown_clients(a: &Client, b: &Client) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        tokio::join!(a.shutdown(), b.shutdown());
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_pacer_keeps_the_grid_when_on_time() {
        let mut p = Pacer::new(200); // 5 ms apart
        let mut dues = Vec::new();
        for _ in 0..4 {
            let due = p.next_due();
            dues.push(due);
            // Sent a little late, but within a period: the grid holds (no drift).
            p.sent(due + Duration::from_micros(300));
        }
        assert_eq!(dues, [ms(0), ms(5), ms(10), ms(15)]);
        // Non-integral periods accumulate no error: 3 per second, the 3rd at exactly 1 s.
        let mut p = Pacer::new(3);
        for _ in 0..3 {
            let due = p.next_due();
            p.sent(due);
        }
        assert_eq!(p.next_due(), Duration::from_secs(1));
    }

    #[test]
    fn the_pacer_re_anchors_instead_of_bursting() {
        let mut p = Pacer::new(100); // 10 ms apart
        p.sent(ms(0));
        assert_eq!(p.next_due(), ms(10));
        // The write due at 10 ms went out at 45 ms (a slow insert before it): the next
        // is one period later, not three writes at once to catch up.
        p.sent(ms(45));
        assert_eq!(p.next_due(), ms(55));
        p.sent(ms(55));
        assert_eq!(p.next_due(), ms(65));
        // Late by less than a period: stays on the grid.
        p.sent(ms(72));
        assert_eq!(p.next_due(), ms(75));
        // A rate of 0 is treated as 1 per second.
        assert_eq!(
            {
                let mut q = Pacer::new(0);
                q.sent(ms(0));
                q.next_due()
            },
            Duration::from_secs(1)
        );
    }

    #[test]
    fn summaries_of_histograms() {
        let mut h = new_histogram().unwrap();
        assert_eq!(Summary::of(&h), Summary::default());
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.max, 1000);
        assert!((s.mean - 500.5).abs() < 0.01, "{}", s.mean);
        let j = s.to_json();
        assert_eq!(j["p50"], 500);
        assert_eq!(j["count"], 1000);
        assert_eq!(j["mean"], 500.5);
        // Over the top: saturates at one hour (within the 3 significant digits).
        record_us(&mut h, Duration::from_secs(7200));
        let top = Summary::of(&h);
        assert!(
            top.max >= HISTOGRAM_MAX_US && top.max <= HISTOGRAM_MAX_US + HISTOGRAM_MAX_US / 1000
        );
        assert!(
            top.p50 <= top.p90 && top.p90 <= top.p99 && top.p99 <= top.p999 && top.p999 <= top.max
        );
        let row = s.table_row("x");
        assert!(row.contains("0.500") && row.contains("0.900"), "{row}");
    }

    #[test]
    fn sequence_tracking() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0, 10), Seen::First);
        assert_eq!(t.record(3, 10), Seen::First);
        assert_eq!(t.record(3, 10), Seen::Duplicate);
        assert_eq!(t.record(10, 10), Seen::Unknown, "never written");
        assert_eq!(t.record(u64::MAX, u64::MAX), Seen::Unknown);
        assert_eq!(t.count_below(10), 2);
        assert_eq!(t.count_below(3), 1);
        for s in 60..130 {
            assert_eq!(t.record(s, 200), Seen::First);
        }
        assert_eq!(t.count_below(200), 72);
        assert_eq!(t.count_below(64), 2 + 4);
        assert_eq!(t.count_below(1_000_000), 72, "past the bitset");
        assert_eq!(t.count_below(0), 0);
    }

    #[test]
    fn rates_count_intervals() {
        // 11 writes 100 ms apart: 10 per second.
        assert!((rate_between(11, Some(0), Some(1_000_000_000)) - 10.0).abs() < 1e-9);
        assert_eq!(rate_between(1, Some(5), Some(5)), 0.0);
        assert_eq!(rate_between(5, None, Some(5)), 0.0);
    }

    #[test]
    fn documents_are_padded_to_the_size_and_read_back_raw() {
        let (pad, size) = padding_for(1000).unwrap();
        let run_id = ObjectId::new().to_hex();
        let run_id = run_id.as_str();
        let d = bench_doc(run_id, 7, 123_456, &pad);
        assert_eq!(bson::serialize_to_vec(&d).unwrap().len(), 1000);
        assert_eq!(size, 1000);
        let (none, small) = padding_for(0).unwrap();
        assert!(none.is_empty() && small > 50 && small < 120, "{small}");

        let raw = |d: Document| {
            bson::RawDocumentBuf::from_bytes(bson::serialize_to_vec(&d).unwrap()).unwrap()
        };
        let event = raw(doc! { "operationType": "insert", "fullDocument": d });
        assert_eq!(bench_fields(&event, run_id), Some((7, 123_456)));
        assert_eq!(bench_fields(&event, "another"), None, "another run");
        let delete = raw(doc! { "operationType": "delete", "documentKey": { "_id": 1 } });
        assert_eq!(bench_fields(&delete, run_id), None);
        let negative = raw(doc! {
            "operationType": "insert",
            "fullDocument": { RUN_FIELD: run_id, "seq": -1_i64, "sentNs": 5_i64 },
        });
        assert_eq!(bench_fields(&negative, run_id), None);
        let wrong_type = raw(doc! {
            "operationType": "insert",
            "fullDocument": { RUN_FIELD: run_id, "seq": "1", "sentNs": 5_i64 },
        });
        assert_eq!(bench_fields(&wrong_type, run_id), None);
        let int32 = raw(doc! {
            "operationType": "insert",
            "fullDocument": { RUN_FIELD: run_id, "seq": 3_i32, "sentNs": 5_i64 },
        });
        assert_eq!(bench_fields(&int32, run_id), Some((3, 5)));
    }

    #[test]
    fn the_report_prints_a_table_and_json() {
        let s = Summary {
            count: 10,
            min: 100,
            p50: 1500,
            p90: 2000,
            p99: 3000,
            p999: 3000,
            max: 3100,
            mean: 1600.25,
        };
        let r = Report {
            run_id: "0123456789abcdef01234567".into(),
            namespace: "b.c".into(),
            interrupted: false,
            requested_rate: 200,
            warmup_s: 1.0,
            measured_s: 0.05,
            writes: 10,
            warmup_writes: 200,
            writes_per_s: 199.94,
            events: 10,
            events_per_s: 200.0,
            latency: s,
            get_mores: 8,
            get_mores_empty: 1,
            get_mores_per_s: 160.0,
            events_per_get_more: 1.25,
            get_more_rtt: Summary::default(),
            resumes: 0,
            lost: 0,
            duplicated: 0,
            foreign: 0,
            doc_size: 256,
            cleanup_deleted: Some(210),
        };
        let t = r.table();
        for needle in [
            "p50",
            "p99.9",
            "insert-to-event latency",
            "getMore round trip",
            "1.500",
            "3.100",
            "199.9/s achieved",
            "210 documents deleted",
            "lost            0",
        ] {
            assert!(t.contains(needle), "{needle:?} not in\n{t}");
        }
        let j = r.to_json();
        assert_eq!(j["latency_us"]["p99"], 3000);
        assert_eq!(j["latency_us"]["mean"], 1600.3);
        assert_eq!(j["writes_per_s"], 199.9);
        assert_eq!(j["cleanup_deleted"], 210);
        let kept = Report {
            cleanup_deleted: None,
            interrupted: true,
            ..r
        };
        assert!(kept.to_json()["cleanup_deleted"].is_null());
        assert!(
            kept.table()
                .contains("kept (delete them with {brookBench: \"0123")
        );
        assert!(kept.table().contains("interrupted"));
    }
}
