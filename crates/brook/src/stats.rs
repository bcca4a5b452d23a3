//! How a change stream is doing: [`StreamStats`], and the counters behind it.

use std::time::{Duration, Instant, SystemTime};

use brook_conn::ServerAddress;
use bson::Timestamp;
use bson::raw::RawBsonRef;

use brook_command::SharedDoc;

/// A snapshot of a change stream's health, from
/// [`ChangeStream::stats`](crate::ChangeStream::stats).
///
/// The two lags answer different questions. [`lag`](Self::lag) is how far behind the
/// writes the consumer is: the wall-clock time when the last event was received minus
/// the time it was written (its cluster time, or `wallTime`) — clock skew between this
/// host and the servers shows up in it. [`server_lag`](Self::server_lag) needs no
/// shared clock: the server's own time on the last reply (`operationTime`) minus the
/// time of the stream's resume token, that is how much of the oplog the stream has not
/// read yet (0 when it is caught up, even when idle).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// Events delivered.
    pub events: u64,
    /// Events delivered per second, over the last second or so.
    pub events_per_second: f64,
    /// `getMore` round trips.
    pub get_mores: u64,
    /// Resumes (successful or not).
    pub resumes: u64,
    /// Resume attempts that failed.
    pub failed_resumes: u64,
    /// Wall-clock lag of the last event delivered (see above), `None` before the first
    /// event or when its time cannot be read.
    pub lag: Option<Duration>,
    /// Server-side lag (see above), `None` until a reply with an `operationTime` and a
    /// token with a readable time were seen.
    pub server_lag: Option<Duration>,
    /// The cluster time of the last event delivered.
    pub last_event_cluster_time: Option<Timestamp>,
    /// The server of the stream's cursor, `None` while none is open.
    pub server: Option<ServerAddress>,
}

/// The counters a stream keeps for its [`StreamStats`]: per event a counter and a flag
/// (no clock read, no allocation, and no reference to the event: holding one would keep
/// the connection's read buffer from being reused); the last event of each batch has its
/// times read; clocks are read once per reply.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) events: u64,
    pub(crate) failed_resumes: u64,
    /// The times of the last event of a batch delivered: its cluster time, when it was
    /// written, and when the reply that brought it arrived.
    last_event: Option<LastEvent>,
    /// Events of a batch were delivered after `last_event`, whose times were not read:
    /// the last one's cluster time is then the stream's token's (its `_id`).
    mid_batch: Option<SystemTime>,
    /// When the last reply with events arrived.
    batch_received: SystemTime,
    /// The `operationTime` of the last reply.
    pub(crate) operation_time: Option<Timestamp>,
    /// The rate window: its start and the event count then.
    window: (Instant, u64),
    rate: f64,
}

/// The shortest window a rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The times of an event.
#[derive(Debug, Clone, Copy)]
struct LastEvent {
    cluster_time: Option<Timestamp>,
    written: Option<SystemTime>,
    received: SystemTime,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            events: 0,
            failed_resumes: 0,
            last_event: None,
            mid_batch: None,
            batch_received: SystemTime::UNIX_EPOCH,
            operation_time: None,
            window: (Instant::now(), 0),
            rate: 0.0,
        }
    }
}

impl Counters {
    /// A reply arrived (`with_events`: its batch is not empty).
    pub(crate) fn reply(&mut self, operation_time: Option<Timestamp>, with_events: bool) {
        if operation_time.is_some() {
            self.operation_time = operation_time;
        }
        if with_events {
            self.batch_received = SystemTime::now();
        }
        self.roll_window(Instant::now());
    }

    /// An event was delivered; `last_of_batch`: no other event of its batch is buffered
    /// (its times are read now, once per batch).
    pub(crate) fn event(&mut self, event: &SharedDoc, last_of_batch: bool) {
        self.events = self.events.saturating_add(1);
        if last_of_batch {
            self.last_event = Some(LastEvent {
                cluster_time: event_cluster_time(event),
                written: event_wall_time(event),
                received: self.batch_received,
            });
            self.mid_batch = None;
        } else {
            self.mid_batch = Some(self.batch_received);
        }
    }

    fn roll_window(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window.0);
        if elapsed >= RATE_WINDOW {
            self.rate = self.events.saturating_sub(self.window.1) as f64 / elapsed.as_secs_f64();
            self.window = (now, self.events);
        }
    }

    /// The cluster time of the last event delivered; `token_time` is the cluster time
    /// of the stream's resume token (the last event's `_id` in the middle of a batch).
    pub(crate) fn last_event_time(&self, token_time: Option<Timestamp>) -> Option<Timestamp> {
        match self.mid_batch {
            Some(_) => token_time,
            None => self.last_event.and_then(|e| e.cluster_time),
        }
    }

    /// The snapshot; `token_time` is the cluster time of the stream's resume token.
    pub(crate) fn snapshot(
        &self,
        get_mores: u64,
        resumes: u64,
        token_time: Option<Timestamp>,
        server: Option<ServerAddress>,
    ) -> StreamStats {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.window.0);
        // A window left open by an idle stream still counts: the rate decays.
        let events_per_second = if elapsed >= 2 * RATE_WINDOW {
            self.events.saturating_sub(self.window.1) as f64 / elapsed.as_secs_f64()
        } else {
            self.rate
        };
        let (written, received) = match self.mid_batch {
            // Mid-batch, the last event's time is its token's (seconds).
            Some(received) => (token_time.and_then(seconds), Some(received)),
            None => match self.last_event {
                Some(e) => (e.written, Some(e.received)),
                None => (None, None),
            },
        };
        let lag = match (written, received) {
            (Some(written), Some(received)) => {
                Some(received.duration_since(written).unwrap_or(Duration::ZERO))
            }
            _ => None,
        };
        let server_lag = match (self.operation_time, token_time) {
            (Some(op), Some(token)) => Some(Duration::from_secs(
                u64::from(op.time).saturating_sub(u64::from(token.time)),
            )),
            _ => None,
        };
        StreamStats {
            events: self.events,
            events_per_second,
            get_mores,
            resumes,
            failed_resumes: self.failed_resumes,
            lag,
            server_lag,
            last_event_cluster_time: self.last_event_time(token_time),
            server,
        }
    }
}

/// An event's `clusterTime`.
fn event_cluster_time(event: &SharedDoc) -> Option<Timestamp> {
    match event.as_raw().get("clusterTime") {
        Ok(Some(RawBsonRef::Timestamp(t))) => Some(t),
        _ => None,
    }
}

/// When an event was written: its `wallTime` (milliseconds), else its cluster time
/// (seconds).
fn event_wall_time(event: &SharedDoc) -> Option<SystemTime> {
    if let Ok(Some(RawBsonRef::DateTime(d))) = event.as_raw().get("wallTime") {
        let millis = u64::try_from(d.timestamp_millis()).ok()?;
        return SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis));
    }
    seconds(event_cluster_time(event)?)
}

/// A cluster time as a wall-clock instant (its seconds).
fn seconds(t: Timestamp) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::from(t.time)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn shared(d: bson::Document) -> SharedDoc {
        SharedDoc::from_document(&d).expect("doc")
    }

    #[test]
    fn lag_is_reception_minus_wall_time() {
        let mut c = Counters::default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        let written = now.as_millis() as i64 - 3_000;
        c.reply(
            Some(Timestamp {
                time: 100,
                increment: 1,
            }),
            true,
        );
        let event = shared(doc! {
            "_id": { "_data": "00" },
            "clusterTime": Timestamp { time: 95, increment: 3 },
            "wallTime": bson::DateTime::from_millis(written),
        });
        c.event(&event, true);
        let s = c.snapshot(
            4,
            1,
            Some(Timestamp {
                time: 95,
                increment: 3,
            }),
            None,
        );
        assert_eq!(s.events, 1);
        assert_eq!(s.get_mores, 4);
        assert_eq!(s.resumes, 1);
        let lag = s.lag.expect("a lag");
        assert!(
            lag >= Duration::from_millis(2_900) && lag < Duration::from_secs(60),
            "{lag:?}"
        );
        assert_eq!(s.server_lag, Some(Duration::from_secs(5)));
        assert_eq!(
            s.last_event_cluster_time,
            Some(Timestamp {
                time: 95,
                increment: 3
            })
        );
    }

    #[test]
    fn mid_batch_the_last_event_s_time_is_its_token_s() {
        let mut c = Counters::default();
        c.reply(None, true);
        let event = shared(doc! {
            "_id": { "_data": "00" },
            "clusterTime": Timestamp { time: 7, increment: 1 },
        });
        c.event(&event, true);
        c.event(&event, false);
        let token = Timestamp {
            time: 9,
            increment: 2,
        };
        let s = c.snapshot(1, 0, Some(token), None);
        assert_eq!(s.events, 2);
        assert_eq!(s.last_event_cluster_time, Some(token));
        assert!(s.lag.is_some());
        c.event(&event, true);
        let s = c.snapshot(1, 0, Some(token), None);
        assert_eq!(
            s.last_event_cluster_time,
            Some(Timestamp {
                time: 7,
                increment: 1
            })
        );
    }

    #[test]
    fn without_events_there_is_no_lag() {
        let c = Counters::default();
        let s = c.snapshot(0, 0, None, None);
        assert_eq!(s.lag, None);
        assert_eq!(s.server_lag, None);
        assert_eq!(s.events_per_second, 0.0);
    }
}
