//! What a change stream does when its resumes fail, and what it tells about them: the
//! [`ResumePolicy`] (bounded, jittered back-off between consecutive failed resumes),
//! the [`ResumeEvent`] of every resume, and [`HistoryLost`] / [`HistoryGap`] for a
//! token that fell off the oplog.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use brook_conn::ServerAddress;
use bson::Timestamp;

use crate::event::ResumeToken;

/// How a change stream answers resumes that fail.
///
/// A stream resumes once, at once, after each resumable error (the Change Streams
/// specification). When that resume's own `aggregate` fails too (no primary yet during
/// an election, a network partition), the specification hands the error to the
/// application: that is [`ResumePolicy::once`], the default. A policy made with
/// [`ResumePolicy::backoff`] tries again instead, after a delay that grows with each
/// consecutive failed resume (`initial_delay × multiplierⁿ`, at most `max_delay`, with
/// jitter so that a fleet of consumers does not stampede a new primary), until a resume
/// succeeds, the error is not one a later attempt can cure (an authentication failure,
/// `ChangeStreamHistoryLost`, a bad pipeline), or a cap is reached: `max_attempts`
/// failed resumes in a row, or `max_elapsed` since the first of them. Then the last
/// error is returned, as with `once`.
///
/// ```
/// use std::time::Duration;
/// use brook::ResumePolicy;
///
/// let policy = ResumePolicy::backoff()
///     .initial_delay(Duration::from_millis(50))
///     .max_delay(Duration::from_secs(5))
///     .max_elapsed(Some(Duration::from_secs(120)));
/// // The delay after 3 consecutive failed resumes, without jitter: 50 ms × 2².
/// assert_eq!(policy.clone().jitter(false).delay_after(3), Duration::from_millis(200));
/// // With jitter: between half of it and all of it.
/// let d = policy.delay_after(3);
/// assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePolicy {
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: bool,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
}

impl Default for ResumePolicy {
    /// [`ResumePolicy::once`].
    fn default() -> Self {
        ResumePolicy::once()
    }
}

impl ResumePolicy {
    /// The specification's behaviour: a failed resume ends the stream with its error.
    pub fn once() -> ResumePolicy {
        ResumePolicy {
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            multiplier: 1.0,
            jitter: false,
            max_attempts: Some(1),
            max_elapsed: None,
        }
    }

    /// Keep resuming with exponential back-off: 100 ms after the first failed resume,
    /// doubling up to 10 s, with jitter, for at most 5 minutes of consecutive failures.
    pub fn backoff() -> ResumePolicy {
        ResumePolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
            max_attempts: None,
            max_elapsed: Some(Duration::from_secs(300)),
        }
    }

    /// The delay after the first failed resume.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The longest delay between two attempts.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How much the delay grows after each failed resume (at least 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// Whether each delay is drawn at random between half of it and all of it (on by
    /// default for [`backoff`](Self::backoff)).
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Give up after this many consecutive failed resumes (`None`: no cap on the count).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Give up once this long has passed since the first of the consecutive failed
    /// resumes (`None`: no cap on the time).
    pub fn max_elapsed(mut self, elapsed: Option<Duration>) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// Whether another attempt may follow `failed` consecutive failed resumes, the
    /// first of which was `elapsed` ago.
    pub fn allows(&self, failed: u32, elapsed: Duration) -> bool {
        self.max_attempts.is_none_or(|max| failed < max)
            && self.max_elapsed.is_none_or(|max| elapsed < max)
    }

    /// The delay before the attempt that follows `failed` consecutive failed resumes
    /// (`failed` ≥ 1), jittered if the policy says so.
    pub fn delay_after(&self, failed: u32) -> Duration {
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = if grown.is_finite() {
            grown.min(self.max_delay.as_secs_f64())
        } else {
            self.max_delay.as_secs_f64()
        };
        let secs = if self.jitter {
            capped * (0.5 + 0.5 * unit_random())
        } else {
            capped
        };
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }
}

/// A number in [0, 1), from the standard library's randomly keyed hasher (no random
/// number crate for a jitter).
fn unit_random() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    // 53 random bits make an f64 in [0, 1).
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a change stream does when its resume token has fallen off the oplog (the
/// server answers 286 `ChangeStreamHistoryLost`, on a resume or when the stream is
/// opened from a stored token).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryLost {
    /// The stream ends with the error (the default):
    /// [`Error::is_history_lost`](crate::Error::is_history_lost).
    #[default]
    Fail,
    /// The stream starts again from "now" and reports the gap once, as an error with a
    /// [`HistoryGap`] ([`Error::history_gap`](crate::Error::history_gap)) returned by the
    /// next call, after which it goes on with the events that follow the restart. What
    /// happened in between is lost: the application re-reads (re-snapshots) what it
    /// keeps.
    RestartFromNow,
}

/// The events a stream could not deliver because its token fell off the oplog: those
/// after `last_delivered` and before `restarted_at`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryGap {
    /// The cluster time of the last event the stream delivered (or of the token it
    /// started from), if known.
    pub last_delivered: Option<Timestamp>,
    /// The token the server could no longer resume from.
    pub lost_token: Option<ResumeToken>,
    /// The cluster time the stream restarted at (the restart's `operationTime`), if
    /// known.
    pub restarted_at: Option<Timestamp>,
}

impl fmt::Display for HistoryGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: Option<Timestamp>| match t {
            Some(t) => format!("{}.{}", t.time, t.increment),
            None => "unknown".to_owned(),
        };
        write!(
            f,
            "the change stream's history was lost (its resume token fell off the oplog): \
             events after cluster time {} up to {} were not delivered; the stream restarted \
             from now",
            time(self.last_delivered),
            time(self.restarted_at),
        )
    }
}

/// The error that made a change stream resume, as the stream saw it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeCause {
    /// The error, as its `Display` reads.
    pub message: String,
    /// The server's error code, for a server error.
    pub code: Option<i32>,
    /// The server's error labels, for a server error.
    pub labels: Vec<String>,
}

impl fmt::Display for ResumeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a resume attempt ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeOutcome {
    /// The stream resumed: a new cursor is open on [`ResumeEvent::server`].
    Resumed,
    /// The resume's `aggregate` failed with this error; the policy tries again after
    /// `retry_in`, or (`None`) gave up and the stream ends with the error.
    Failed {
        /// The resume's error.
        error: String,
        /// When the next attempt goes out, if there is one.
        retry_in: Option<Duration>,
    },
}

/// One resume attempt of a change stream, reported to the handler set with
/// [`WatchBuilder::on_resume`](crate::WatchBuilder::on_resume) and kept as
/// [`ChangeStream::last_resume`](crate::ChangeStream::last_resume).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeEvent {
    /// The error that made the stream resume (for a second or later attempt, the first
    /// one's cause).
    pub cause: ResumeCause,
    /// The token the attempt resumed from (`resumeAfter` / `startAfter`), `None` when it
    /// resumed from an operation time or from "now".
    pub resumed_from: Option<ResumeToken>,
    /// The server the attempt went to, when one was selected.
    pub server: Option<ServerAddress>,
    /// 1 for the first attempt after the cause, 2 for the next…
    pub attempt: u32,
    /// How it ended.
    pub outcome: ResumeOutcome,
}

/// A resume handler: called on the task that polls the stream, after each resume
/// attempt. Keep it short (log, count, alert).
pub(crate) type ResumeHandler = Arc<dyn Fn(&ResumeEvent) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_never_allows_a_second_attempt() {
        let p = ResumePolicy::once();
        assert!(!p.allows(1, Duration::ZERO));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ResumePolicy::backoff()
            .jitter(false)
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1));
        assert_eq!(p.delay_after(1), Duration::from_millis(100));
        assert_eq!(p.delay_after(2), Duration::from_millis(200));
        assert_eq!(p.delay_after(4), Duration::from_millis(800));
        assert_eq!(p.delay_after(5), Duration::from_secs(1));
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let p = ResumePolicy::backoff().initial_delay(Duration::from_millis(400));
        for _ in 0..200 {
            let d = p.delay_after(1);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[test]
    fn caps_on_attempts_and_on_time() {
        let p = ResumePolicy::backoff()
            .max_attempts(Some(3))
            .max_elapsed(Some(Duration::from_secs(10)));
        assert!(p.allows(2, Duration::from_secs(1)));
        assert!(!p.allows(3, Duration::from_secs(1)));
        assert!(!p.allows(1, Duration::from_secs(10)));
        let unbounded = ResumePolicy::backoff().max_elapsed(None);
        assert!(unbounded.allows(1_000_000, Duration::from_secs(86_400)));
    }

    #[test]
    fn a_bad_multiplier_is_one() {
        let p = ResumePolicy::backoff()
            .jitter(false)
            .multiplier(f64::NAN)
            .initial_delay(Duration::from_millis(10));
        assert_eq!(p.delay_after(5), Duration::from_millis(10));
    }
}
