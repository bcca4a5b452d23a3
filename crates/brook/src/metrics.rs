//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo feature
//! `metrics`): brook records, the application installs a recorder (an exporter such as
//! `metrics-exporter-prometheus`) to collect them. Without a recorder installed every
//! call is a no-op.
//!
//! | name | kind | labels | what |
//! | --- | --- | --- | --- |
//! | [`COMMAND_DURATION`] | histogram (seconds) | `command`, `outcome` | each command's round trip (getMore latency among them) |
//! | [`CHANGE_STREAM_EVENTS`] | counter | | change events handed to the application |
//! | [`CHANGE_STREAM_RESUMES`] | counter | `outcome` | resume attempts (`ok`, `failed`) |
//! | [`CHANGE_STREAM_FAILED_RESUMES`] | counter | | resume attempts that failed |
//! | [`CHANGE_STREAM_LAG`] | histogram (seconds) | | for the last event of each batch: delivery time minus the event's `wallTime` |
//! | [`POOL_CHECKOUTS`] | counter | `server`, `outcome` | connection checkouts (`ok`, `failed`) |
//! | [`POOL_CHECKOUT_WAIT`] | histogram (seconds) | `server` | how long each checkout waited |
//!
//! `command` is the command's name for the commands brook sends (`find`, `getMore`,
//! `aggregate`, ...) and `other` for any other (a `runCommand` of the user's): the label
//! stays bounded. `outcome` is `ok` or `error` (a reply with `ok: 0`, or no reply).

use std::time::{Duration, SystemTime};

use brook_command::SharedDoc;
use brook_conn::ServerAddress;
use brook_pool::PoolEvent;
use metrics::{
    Key, Label, Metadata, Unit, counter, describe_counter, describe_histogram, histogram,
};

use crate::resume::ResumeOutcome;

/// Histogram: the duration of each command, in seconds (labels `command`, `outcome`).
pub const COMMAND_DURATION: &str = "brook_command_duration_seconds";
/// Counter: change-stream events handed to the application.
pub const CHANGE_STREAM_EVENTS: &str = "brook_change_stream_events_total";
/// Counter: change-stream resume attempts (label `outcome`: `ok` or `failed`).
pub const CHANGE_STREAM_RESUMES: &str = "brook_change_stream_resumes_total";
/// Counter: change-stream resume attempts that failed.
pub const CHANGE_STREAM_FAILED_RESUMES: &str = "brook_change_stream_failed_resumes_total";
/// Histogram: how far behind the writes a change stream is, in seconds: when the last
/// event of a batch is handed out, the time since its `wallTime` (MongoDB 6.0+).
pub const CHANGE_STREAM_LAG: &str = "brook_change_stream_lag_seconds";
/// Counter: connection checkouts (labels `server`, `outcome`: `ok` or `failed`).
pub const POOL_CHECKOUTS: &str = "brook_pool_checkouts_total";
/// Histogram: how long each checkout waited for a connection, in seconds (label
/// `server`).
pub const POOL_CHECKOUT_WAIT: &str = "brook_pool_checkout_wait_seconds";

/// Describes brook's metrics (unit and help text) to the recorder installed now: call it
/// once after installing the recorder, for an exporter that shows descriptions (such as
/// Prometheus' `# HELP` lines). Recording works without it.
pub fn describe() {
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "Duration of each command brook sent, by command name and outcome"
    );
    describe_counter!(
        CHANGE_STREAM_EVENTS,
        Unit::Count,
        "Change-stream events handed to the application"
    );
    describe_counter!(
        CHANGE_STREAM_RESUMES,
        Unit::Count,
        "Change-stream resume attempts, by outcome"
    );
    describe_counter!(
        CHANGE_STREAM_FAILED_RESUMES,
        Unit::Count,
        "Change-stream resume attempts that failed"
    );
    describe_histogram!(
        CHANGE_STREAM_LAG,
        Unit::Seconds,
        "Time from an event's wallTime to its delivery (last event of each batch)"
    );
    describe_counter!(
        POOL_CHECKOUTS,
        Unit::Count,
        "Connection checkouts, by server and outcome"
    );
    describe_histogram!(
        POOL_CHECKOUT_WAIT,
        Unit::Seconds,
        "Time each connection checkout waited, by server"
    );
}

/// The commands named in the `command` label (any other is `other`), with their keys,
/// built at compile time: recording a command's duration allocates nothing.
macro_rules! command_keys {
    ($($command:literal),* $(,)?) => {
        [$(
            (
                $command,
                {
                    static LABELS: [Label; 2] = [
                        Label::from_static_parts("command", $command),
                        Label::from_static_parts("outcome", "ok"),
                    ];
                    Key::from_static_parts(COMMAND_DURATION, &LABELS)
                },
                {
                    static LABELS: [Label; 2] = [
                        Label::from_static_parts("command", $command),
                        Label::from_static_parts("outcome", "error"),
                    ];
                    Key::from_static_parts(COMMAND_DURATION, &LABELS)
                },
            ),
        )*]
    };
}

/// `(command, key when ok, key on error)`; the last is `other`.
static COMMAND_KEYS: [(&str, Key, Key); 21] = command_keys![
    "getMore",
    "find",
    "aggregate",
    "killCursors",
    "insert",
    "update",
    "delete",
    "findAndModify",
    "count",
    "distinct",
    "listCollections",
    "listIndexes",
    "listDatabases",
    "create",
    "drop",
    "createIndexes",
    "dropIndexes",
    "endSessions",
    "ping",
    "hello",
    "other",
];

/// Where brook's metrics come from, for the recorder.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The keys of the command `name` (those of `other` for a command not listed).
fn command_keys(name: &str) -> &'static (&'static str, Key, Key) {
    let last = COMMAND_KEYS.len() - 1;
    COMMAND_KEYS[..last]
        .iter()
        .find(|(known, _, _)| *known == name)
        .unwrap_or(&COMMAND_KEYS[last])
}

/// `name` as a `command` label value.
pub(crate) fn command_label(name: &str) -> &'static str {
    command_keys(name).0
}

/// A command whose `command` label is `label` (from [`command_label`]) took `duration`;
/// `ok`: it succeeded.
pub(crate) fn command(label: &str, ok: bool, duration: Duration) {
    let (_, on_ok, on_error) = command_keys(label);
    let key = if ok { on_ok } else { on_error };
    metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key, &METADATA)
            .record(duration.as_secs_f64());
    });
}

/// A change event was handed out; `last_of_batch`: the last of its batch (its lag is
/// recorded).
pub(crate) fn change_event(event: &SharedDoc, last_of_batch: bool) {
    counter!(CHANGE_STREAM_EVENTS).increment(1);
    if !last_of_batch {
        return;
    }
    let Ok(written) = event.as_raw().get_datetime("wallTime") else {
        return;
    };
    let written = written.to_system_time();
    if let Ok(lag) = SystemTime::now().duration_since(written) {
        histogram!(CHANGE_STREAM_LAG).record(lag.as_secs_f64());
    } else {
        // The event was written "after" now: clocks apart; no lag.
        histogram!(CHANGE_STREAM_LAG).record(0.0);
    }
}

/// A resume attempt ended with `outcome`.
pub(crate) fn resume(outcome: &ResumeOutcome) {
    match outcome {
        ResumeOutcome::Failed { .. } => {
            counter!(CHANGE_STREAM_RESUMES, "outcome" => "failed").increment(1);
            counter!(CHANGE_STREAM_FAILED_RESUMES).increment(1);
        }
        ResumeOutcome::Resumed => {
            counter!(CHANGE_STREAM_RESUMES, "outcome" => "ok").increment(1);
        }
    }
}

/// A pool event of the pool of `address`: checkouts and their wait.
pub(crate) fn pool_event(address: &ServerAddress, event: &PoolEvent) {
    let (outcome, duration) = match event {
        PoolEvent::CheckedOut { duration, .. } => ("ok", *duration),
        PoolEvent::CheckOutFailed { duration, .. } => ("failed", *duration),
        _ => return,
    };
    let server = address.to_string();
    counter!(POOL_CHECKOUTS, "server" => server.clone(), "outcome" => outcome).increment(1);
    histogram!(POOL_CHECKOUT_WAIT, "server" => server).record(duration.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::command_label;

    #[test]
    fn the_command_label_stays_bounded() {
        assert_eq!(command_label("getMore"), "getMore");
        assert_eq!(command_label("find"), "find");
        assert_eq!(command_label("myAdminCommand"), "other");
        assert_eq!(command_label("GETMORE"), "other");
    }
}
