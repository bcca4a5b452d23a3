//! Live statistics of `brook tail`: a status line redrawn on stderr when it is a terminal,
//! JSON lines on stderr (`--stats-every`) when it is not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brook::StreamStats;

/// The numbers of one report: [`StreamStats`] as the tool shows them (a type of its own
/// so that the formatting is tested with any numbers).
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

impl From<&StreamStats> for Snapshot {
    fn from(stats: &StreamStats) -> Snapshot {
        Snapshot {
            events: stats.events,
            events_per_second: stats.events_per_second,
            get_mores: stats.get_mores,
            resumes: stats.resumes,
            failed_resumes: stats.failed_resumes,
            lag: stats.lag,
            server_lag: stats.server_lag,
            server: stats.server.as_ref().map(ToString::to_string),
        }
    }
}

/// The status line drawn on a terminal; `up` is how long the tool has run.
pub(crate) fn status_line(snapshot: &Snapshot, up: Duration) -> String {
    let duration = |d: Option<Duration>| match d {
        Some(d) if d < Duration::from_secs(10) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{} s", d.as_secs()),
        None => "-".to_owned(),
    };
    let failed = match snapshot.failed_resumes {
        0 => String::new(),
        n => format!(" ({n} failed)"),
    };
    format!(
        "brook tail: {} events ({:.0}/s) | {} getMores | {} resumes{failed} | lag {} | \
         server lag {} | on {} | up {} s",
        snapshot.events,
        snapshot.events_per_second,
        snapshot.get_mores,
        snapshot.resumes,
        duration(snapshot.lag),
        duration(snapshot.server_lag),
        snapshot.server.as_deref().unwrap_or("-"),
        up.as_secs()
    )
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
    // serde_json's `preserve_order` keeps the fields in the order written here.
    serde_json::json!({
        "ts": rfc3339_millis(now),
        "events": snapshot.events,
        "events_per_second": rate,
        "get_mores": snapshot.get_mores,
        "resumes": snapshot.resumes,
        "failed_resumes": snapshot.failed_resumes,
        "lag_ms": millis(snapshot.lag),
        "server_lag_ms": millis(snapshot.server_lag),
        "server": snapshot.server,
    })
    .to_string()
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
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            events: 31,
            events_per_second: 15.56,
            get_mores: 7,
            resumes: 1,
            failed_resumes: 0,
            lag: Some(Duration::from_micros(12_700)),
            server_lag: None,
            server: Some("db1:27017".into()),
        }
    }

    #[test]
    fn the_status_line_shows_rate_counters_and_lags() {
        assert_eq!(
            status_line(&snapshot(), Duration::from_millis(2_900)),
            "brook tail: 31 events (16/s) | 7 getMores | 1 resumes | lag 12 ms | \
             server lag - | on db1:27017 | up 2 s"
        );
        let later = Snapshot {
            failed_resumes: 2,
            lag: Some(Duration::from_secs(42)),
            server_lag: Some(Duration::from_secs(3)),
            server: None,
            ..snapshot()
        };
        let line = status_line(&later, Duration::from_secs(60));
        assert!(line.contains("1 resumes (2 failed) |"), "{line}");
        assert!(
            line.contains("| lag 42 s | server lag 3000 ms | on - |"),
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
        let line = json_line(at(1_700_000_000_123), &snapshot());
        assert_eq!(
            line,
            r#"{"ts":"2023-11-14T22:13:20.123Z","events":31,"events_per_second":15.6,"get_mores":7,"resumes":1,"failed_resumes":0,"lag_ms":12,"server_lag_ms":null,"server":"db1:27017"}"#
        );
        let quiet = Snapshot {
            events_per_second: f64::NAN,
            lag: None,
            server: None,
            ..snapshot()
        };
        let value: serde_json::Value = serde_json::from_str(&json_line(at(0), &quiet)).unwrap();
        assert_eq!(value["events_per_second"], serde_json::Value::Null);
        assert_eq!(value["lag_ms"], serde_json::Value::Null);
        assert_eq!(value["server"], serde_json::Value::Null);
    }
}
