//! Round-trip times: the moving average and the minimum of recent samples.
//!
//! A server's monitor measures each hello round trip and feeds it to one [`RttEstimator`].
//! The SDAM specification's "Calculation of Average Round Trip Times" asks for an
//! exponentially weighted moving average with a weight of 0.2 for the new sample (the first
//! sample is taken as is), which server selection uses for the latency window, and the
//! minimum of the last 10 samples (reported as zero until there are two), which the client
//! side operations timeout uses.

use std::collections::VecDeque;
use std::time::Duration;

/// The weight of a new sample in the moving average.
const ALPHA: f64 = 0.2;

/// How many recent samples the minimum is taken over.
const MIN_WINDOW: usize = 10;

/// The round-trip-time statistics of one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RttEstimator {
    /// The moving average, `None` before the first sample.
    average: Option<Duration>,
    /// The last [`MIN_WINDOW`] samples, oldest first.
    recent: VecDeque<Duration>,
}

impl RttEstimator {
    /// An estimator with no samples.
    pub fn new() -> RttEstimator {
        RttEstimator::default()
    }

    /// An estimator whose moving average starts at `average` and whose minimum has no
    /// samples yet (a description restored from elsewhere, or a test's starting point).
    pub fn with_average(average: Duration) -> RttEstimator {
        RttEstimator {
            average: Some(average),
            recent: VecDeque::new(),
        }
    }

    /// Takes one measured round trip into account.
    pub fn add_sample(&mut self, sample: Duration) {
        self.average = Some(match self.average {
            None => sample,
            Some(previous) => {
                // In f64 nanoseconds, rounded: exact for any round trip below 104 days, and
                // the `as` conversion saturates instead of wrapping beyond that.
                let mixed = ALPHA * nanos_f64(sample) + (1.0 - ALPHA) * nanos_f64(previous);
                Duration::from_nanos(mixed.round() as u64)
            }
        });
        if self.recent.len() == MIN_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(sample);
    }

    /// The moving average, `None` before the first sample.
    pub fn average(&self) -> Option<Duration> {
        self.average
    }

    /// The smallest of the last 10 samples; zero while there are fewer than two samples
    /// (one sample says too little about the floor of the network's latency).
    pub fn min(&self) -> Duration {
        if self.recent.len() < 2 {
            return Duration::ZERO;
        }
        self.recent.iter().copied().min().unwrap_or(Duration::ZERO)
    }

    /// How many samples the minimum is currently taken over (at most 10).
    pub fn sample_count(&self) -> usize {
        self.recent.len()
    }

    /// Forgets every sample (the server was marked Unknown, or its monitor reconnected).
    pub fn reset(&mut self) {
        self.average = None;
        self.recent.clear();
    }
}

/// A duration as f64 nanoseconds.
fn nanos_f64(duration: Duration) -> f64 {
    duration.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn first_sample_is_the_average() {
        let mut rtt = RttEstimator::new();
        assert_eq!(rtt.average(), None);
        rtt.add_sample(ms(10));
        assert_eq!(rtt.average(), Some(ms(10)));
    }

    #[test]
    fn later_samples_weigh_one_fifth() {
        let mut rtt = RttEstimator::new();
        rtt.add_sample(ms(10));
        rtt.add_sample(ms(20));
        assert_eq!(rtt.average(), Some(ms(12)));
    }

    #[test]
    fn min_is_zero_until_two_samples() {
        let mut rtt = RttEstimator::new();
        assert_eq!(rtt.min(), Duration::ZERO);
        rtt.add_sample(ms(7));
        assert_eq!(rtt.min(), Duration::ZERO);
        rtt.add_sample(ms(9));
        assert_eq!(rtt.min(), ms(7));
    }

    #[test]
    fn min_forgets_samples_older_than_ten() {
        let mut rtt = RttEstimator::new();
        rtt.add_sample(ms(1));
        for _ in 0..9 {
            rtt.add_sample(ms(50));
        }
        assert_eq!(rtt.min(), ms(1));
        rtt.add_sample(ms(40));
        assert_eq!(rtt.sample_count(), 10);
        assert_eq!(rtt.min(), ms(40));
    }

    #[test]
    fn reset_forgets_everything() {
        let mut rtt = RttEstimator::new();
        rtt.add_sample(ms(3));
        rtt.add_sample(ms(4));
        rtt.reset();
        assert_eq!(rtt.average(), None);
        assert_eq!(rtt.min(), Duration::ZERO);
        rtt.add_sample(ms(8));
        assert_eq!(rtt.average(), Some(ms(8)));
    }
}
