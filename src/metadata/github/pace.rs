//! Pacing of GitHub's content-creating requests (every blob, tree, commit and ref update)
//! within its documented secondary limits: 80 per minute and 500 per hour. Pure: the
//! caller passes the clock, so it is tested without waiting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests allowed in one window.
    pub requests: usize,
    /// The window's length.
    pub window: Duration,
}

/// GitHub's documented secondary limits on content-creating requests.
pub const GITHUB_LIMITS: [Window; 2] = [
    Window {
        requests: 80,
        window: Duration::from_secs(60),
    },
    Window {
        requests: 500,
        window: Duration::from_secs(3600),
    },
];

/// Remembers when content-creating requests were sent and says how long the next one
/// must wait so that no window holds more than its limit.
#[derive(Debug)]
pub struct Pacer {
    windows: Vec<Window>,
    /// Send times of the requests still inside the longest window, oldest first.
    sent: VecDeque<Instant>,
}

impl Pacer {
    /// A pacer keeping every one of `windows`.
    pub fn new(windows: &[Window]) -> Self {
        Pacer {
            windows: windows.to_vec(),
            sent: VecDeque::new(),
        }
    }

    /// Reserves the next slot at or after `now`; returns how long to wait for it. The slot
    /// counts as used from then on, so concurrent callers are spaced out too.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let longest = self.windows.iter().map(|w| w.window).max();
        if let Some(longest) = longest {
            while self
                .sent
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= longest)
            {
                self.sent.pop_front();
            }
        }
        let mut at = now;
        for w in &self.windows {
            if w.requests == 0 || self.sent.len() < w.requests {
                continue;
            }
            // The request `requests` places back must have left the window by then.
            let oldest = self.sent[self.sent.len() - w.requests];
            at = at.max(oldest + w.window);
        }
        // Slots are handed out in order, so `sent` stays sorted.
        let at = self.sent.back().map_or(at, |&last| at.max(last));
        self.sent.push_back(at);
        at - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn requests_within_the_limits_go_at_once() {
        let mut pacer = Pacer::new(&GITHUB_LIMITS);
        let t0 = Instant::now();
        for i in 0..80 {
            assert_eq!(
                pacer.reserve(t0 + SEC * i / 4),
                Duration::ZERO,
                "request {i}"
            );
        }
    }

    #[test]
    fn the_81st_request_in_a_minute_waits_for_the_first_to_leave_the_window() {
        let mut pacer = Pacer::new(&GITHUB_LIMITS);
        let t0 = Instant::now();
        for _ in 0..80 {
            pacer.reserve(t0);
        }
        assert_eq!(pacer.reserve(t0 + 10 * SEC), 50 * SEC);
        // The next one queues behind it, in the window after.
        assert_eq!(pacer.reserve(t0 + 10 * SEC), 50 * SEC);
        // A minute later the window is free again.
        assert_eq!(pacer.reserve(t0 + 200 * SEC), Duration::ZERO);
    }

    #[test]
    fn the_hourly_limit_spreads_a_long_stream_of_requests() {
        let mut pacer = Pacer::new(&GITHUB_LIMITS);
        let t0 = Instant::now();
        let mut now = t0;
        let mut last = t0;
        for _ in 0..1000 {
            let wait = pacer.reserve(now);
            last = now + wait;
            now = last;
        }
        // 500 in the first hour, 500 in the second: the last goes out after an hour.
        assert!(last - t0 >= 3600 * SEC, "{:?}", last - t0);
        assert!(last - t0 <= 3960 * SEC, "{:?}", last - t0);
        // And no minute ever holds more than 80.
        let mut pacer = Pacer::new(&GITHUB_LIMITS);
        let times: Vec<Instant> = (0..300).map(|_| t0 + pacer.reserve(t0)).collect();
        for (i, &t) in times.iter().enumerate() {
            let in_minute = times[i..].iter().filter(|&&u| u - t < 60 * SEC).count();
            assert!(in_minute <= 80, "{in_minute} requests in a minute");
        }
    }

    #[test]
    fn a_low_test_limit_is_kept_too() {
        let mut pacer = Pacer::new(&[Window {
            requests: 2,
            window: 10 * SEC,
        }]);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..5).map(|_| pacer.reserve(t0)).collect();
        assert_eq!(
            waits,
            [Duration::ZERO, Duration::ZERO, 10 * SEC, 10 * SEC, 20 * SEC]
        );
    }
}
