//! Live statistics of `brook tail`, drawn on stderr when it is a terminal.

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

    /// The status line at `now` (starts a new events/s window); `server` is the one the
    /// stream's cursor is on.
    pub(crate) fn line(
        &mut self,
        now: Instant,
        get_mores: u64,
        resumes: u64,
        server: Option<&dyn std::fmt::Display>,
    ) -> String {
        let window = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        if window > 0.0 {
            // Precision loss is fine for a rate shown with no decimals.
            #[allow(clippy::cast_precision_loss)]
            let events = self.window_events as f64;
            self.rate = events / window;
        }
        self.window_start = now;
        self.window_events = 0;
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
}
