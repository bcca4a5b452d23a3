//! Live statistics of `brook tail`: a status line redrawn on stderr when it is a terminal,
//! JSON lines on stderr (`--stats-every`) when it is not.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::RawDocument;

/// How long an event took from its commit to now: from its `wallTime` (milliseconds) if it
/// has one, else from its `clusterTime` (a timestamp, seconds; or a date, as some servers
/// send). `None` when the event has neither, or `now` is before the UNIX epoch. A commit
/// time in the future (clock skew) counts as no lag.
pub(crate) fn lag_of(event: &RawDocument, now: SystemTime) -> Option<Duration> {
    let now_ms = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    let committed_ms = if let Ok(wall) = event.get_datetime("wallTime") {
        wall.timestamp_millis()
    } else if let Ok(ts) = event.get_timestamp("clusterTime") {
        i64::from(ts.time).saturating_mul(1000)
    } else if let Ok(date) = event.get_datetime("clusterTime") {
        date.timestamp_millis()
    } else {
        return None;
    };
    let lag = now_ms.saturating_sub(committed_ms).max(0);
    Some(Duration::from_millis(u64::try_from(lag).unwrap_or(0)))
}

/// The counters behind the status line.
#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    events: u64,
    window_start: Instant,
    window_events: u64,
    rate: f64,
    lag: Option<Duration>,
}

impl Stats {
    /// Counters starting at `now`.
    pub(crate) fn new(now: Instant) -> Stats {
        Stats {
            started: now,
            events: 0,
            window_start: now,
            window_events: 0,
            rate: 0.0,
            lag: None,
        }
    }

    /// Counts one event, with its lag if known.
    pub(crate) fn event(&mut self, lag: Option<Duration>) {
        self.events = self.events.saturating_add(1);
        self.window_events = self.window_events.saturating_add(1);
        if lag.is_some() {
            self.lag = lag;
        }
    }

    /// Events counted so far.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Ends the events/s window at `now` and starts the next one.
    fn roll(&mut self, now: Instant) {
        let window = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        if window > 0.0 {
            // Precision loss is fine for a rate shown with one decimal.
            #[allow(clippy::cast_precision_loss)]
            let events = self.window_events as f64;
            self.rate = events / window;
        }
        self.window_start = now;
        self.window_events = 0;
    }

    /// The numbers at `now` (starts a new events/s window), for a JSON line.
    pub(crate) fn snapshot(
        &mut self,
        now: Instant,
        get_mores: u64,
        resumes: u64,
        server: Option<String>,
    ) -> Snapshot {
        self.roll(now);
        Snapshot {
            events: self.events,
            events_per_second: self.rate,
            get_mores,
            resumes,
            failed_resumes: 0,
            lag: self.lag,
            server_lag: None,
            server,
        }
    }

    /// The status line at `now` (starts a new events/s window); `server` is the one the
    /// stream's cursor is on.
    pub(crate) fn line(
        &mut self,
        now: Instant,
        get_mores: u64,
        resumes: u64,
        server: Option<&dyn std::fmt::Display>,
    ) -> String {
        self.roll(now);
        let lag = match self.lag {
            Some(l) if l < Duration::from_secs(10) => format!("{} ms", l.as_millis()),
            Some(l) => format!("{} s", l.as_secs()),
            None => "-".to_owned(),
        };
        let server = server.map_or_else(|| "-".to_owned(), ToString::to_string);
        format!(
            "brook tail: {} events ({:.0}/s) | {} getMores | {} resumes | lag {} | on {} | up {} s",
            self.events,
            self.rate,
            get_mores,
            resumes,
            lag,
            server,
            now.saturating_duration_since(self.started).as_secs()
        )
    }
}

/// One `--stats-every` report, whatever produced the numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// Events received.
    pub(crate) events: u64,
    /// Events per second over the last window.
    pub(crate) events_per_second: f64,
    /// getMores sent.
    pub(crate) get_mores: u64,
    /// Resumes that opened a new cursor.
    pub(crate) resumes: u64,
    /// Resume attempts that failed.
    pub(crate) failed_resumes: u64,
    /// From the last event's commit to its receipt.
    pub(crate) lag: Option<Duration>,
    /// The server's time minus the token's.
    pub(crate) server_lag: Option<Duration>,
    /// `host:port` of the stream's server.
    pub(crate) server: Option<String>,
}

/// `snapshot` as one line of JSON (no newline), stamped `now`: the fields are always
/// all there, in this order, `null` where a value is unknown.
pub(crate) fn json_line(now: SystemTime, snapshot: &Snapshot) -> String {
    let millis = |d: Option<Duration>| {
        d.map_or(serde_json::Value::Null, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).into()
        })
    };
    // A rate that is not a number (never from a clock, but the field must stay JSON).
    let rate = serde_json::Number::from_f64((snapshot.events_per_second * 10.0).round() / 10.0)
        .map_or(serde_json::Value::Null, serde_json::Value::Number);
    // serde_json's `json!` map sorts keys: the line is put together in order instead.
    let fields: [(&str, serde_json::Value); 9] = [
        ("ts", rfc3339_millis(now).into()),
        ("events", snapshot.events.into()),
        ("events_per_second", rate),
        ("get_mores", snapshot.get_mores.into()),
        ("resumes", snapshot.resumes.into()),
        ("failed_resumes", snapshot.failed_resumes.into()),
        ("lag_ms", millis(snapshot.lag)),
        ("server_lag_ms", millis(snapshot.server_lag)),
        (
            "server",
            snapshot
                .server
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String),
        ),
    ];
    let mut line = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('"');
        line.push_str(key);
        line.push_str("\":");
        line.push_str(&value.to_string());
    }
    line.push('}');
    line
}

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T02:26:09.123Z`; the epoch
/// for a time before it.
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch). Written here rather than pulling a
/// date crate into the tool for one timestamp.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use bson::{DateTime, Timestamp, rawdoc};

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn lag_prefers_wall_time_then_cluster_time() {
        let both = rawdoc! {
            "clusterTime": Timestamp { time: 1_000, increment: 1 },
            "wallTime": DateTime::from_millis(1_000_250),
        };
        assert_eq!(
            lag_of(&both, at(1_000_300)),
            Some(Duration::from_millis(50))
        );
        let ts_only = rawdoc! { "clusterTime": Timestamp { time: 1_000, increment: 1 } };
        assert_eq!(
            lag_of(&ts_only, at(1_002_500)),
            Some(Duration::from_millis(2_500))
        );
        let date_only = rawdoc! { "clusterTime": DateTime::from_millis(7_000) };
        assert_eq!(
            lag_of(&date_only, at(7_040)),
            Some(Duration::from_millis(40))
        );
        assert_eq!(lag_of(&rawdoc! { "x": 1 }, at(5)), None);
        let future = rawdoc! { "wallTime": DateTime::from_millis(9_000) };
        assert_eq!(lag_of(&future, at(1_000)), Some(Duration::ZERO));
    }

    #[test]
    fn the_line_shows_rate_counters_and_lag() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        for _ in 0..30 {
            s.event(Some(Duration::from_millis(12)));
        }
        s.event(None);
        assert_eq!(s.events(), 31);
        let line = s.line(t0 + Duration::from_secs(2), 7, 1, Some(&"db1:27017"));
        assert_eq!(
            line,
            "brook tail: 31 events (16/s) | 7 getMores | 1 resumes | lag 12 ms | on db1:27017 | up 2 s"
        );
        s.event(Some(Duration::from_secs(42)));
        let line = s.line(t0 + Duration::from_secs(3), 8, 1, None);
        assert!(line.contains("| on - |"), "{line}");
        assert!(
            line.contains("(1/s)") && line.contains("lag 42 s"),
            "{line}"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(at(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        // Leap days, the end of a century year that is a leap year, a year's last ms.
        assert_eq!(
            rfc3339_millis(at(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(at(1_709_164_800_999)),
            "2024-02-29T00:00:00.999Z"
        );
        assert_eq!(
            rfc3339_millis(at(1_798_761_599_999)),
            "2026-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(at(4_107_542_400_000)),
            "2100-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_json_line_has_every_field_in_order() {
        let snapshot = Snapshot {
            events: 31,
            events_per_second: 15.56,
            get_mores: 7,
            resumes: 1,
            failed_resumes: 0,
            lag: Some(Duration::from_micros(12_700)),
            server_lag: None,
            server: Some("db1:27017".into()),
        };
        let line = json_line(at(1_700_000_000_123), &snapshot);
        assert_eq!(
            line,
            r#"{"ts":"2023-11-14T22:13:20.123Z","events":31,"events_per_second":15.6,"get_mores":7,"resumes":1,"failed_resumes":0,"lag_ms":12,"server_lag_ms":null,"server":"db1:27017"}"#
        );
        let quiet = Snapshot {
            events_per_second: f64::NAN,
            lag: None,
            server: None,
            ..snapshot
        };
        let value: serde_json::Value = serde_json::from_str(&json_line(at(0), &quiet)).unwrap();
        assert_eq!(value["events_per_second"], serde_json::Value::Null);
        assert_eq!(value["lag_ms"], serde_json::Value::Null);
        assert_eq!(value["server"], serde_json::Value::Null);
    }
}
