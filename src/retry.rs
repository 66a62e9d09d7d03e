//! The one retry policy of every HTTP call (registries, their token endpoints, GitHub):
//! exponential backoff with jitter, `--retries` times, honouring the wait a service asks for.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// A wait a registry asks for longer than this is shortened to it: registries send
/// `Retry-After` for brief overloads, and a request's retries should not outlast a run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An error that may go away when the same request is made again.
pub trait Transient: Display {
    /// Whether the same request may succeed later.
    fn is_retryable(&self) -> bool;
    /// How long the service asked to wait before the next attempt, if it said.
    fn retry_after(&self) -> Option<Duration>;
    /// The longest asked-for wait honoured as asked; longer ones are shortened to it.
    /// GitHub's rate limits are checked against `--deadline` before they get here, so
    /// they lift this cap.
    fn max_retry_after(&self) -> Duration {
        MAX_RETRY_AFTER
    }
}

/// How failed requests are retried: exponential backoff with jitter, honouring the
/// service's requested wait (`Retry-After`, rate-limit resets).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--retries`).
    pub retries: usize,
    /// The first delay; later ones double, up to `max_delay`.
    pub min_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// `retries` retries with the delays every client uses: 250 ms doubling up to 30 s.
    pub fn new(retries: usize) -> Self {
        RetryPolicy {
            retries,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }

    /// The delay before retry number `n` (0-based) when `error` asked for `asked` and the
    /// backoff proposes `backoff`: the service's word wins, within the error's cap.
    fn delay<E: Transient>(error: &E, backoff: Duration) -> Duration {
        error
            .retry_after()
            .map_or(backoff, |asked| asked.min(error.max_retry_after()))
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are spent; `what` prefixes
    /// the retry warnings where the error itself does not say what was being done.
    /// (Registry calls use `run`, the same over the registry's error type.)
    pub async fn retry<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, E>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter();
        op.retry(backoff)
            .when(E::is_retryable)
            .adjust(|e, delay| delay.map(|d| Self::delay(e, d)))
            .notify(|e, delay| match what {
                "" => tracing::warn!("{e}; retrying in {delay:.1?}"),
                _ => tracing::warn!("{what}: {e}; retrying in {delay:.1?}"),
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Fail {
        retryable: bool,
        after: Option<Duration>,
        cap: Duration,
    }

    impl Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fail")
        }
    }

    impl Transient for Fail {
        fn is_retryable(&self) -> bool {
            self.retryable
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
        fn max_retry_after(&self) -> Duration {
            self.cap
        }
    }

    fn fail(retryable: bool) -> Fail {
        Fail {
            retryable,
            after: None,
            cap: MAX_RETRY_AFTER,
        }
    }

    #[test]
    fn the_asked_wait_wins_within_the_cap() {
        let backoff = Duration::from_millis(300);
        assert_eq!(RetryPolicy::delay(&fail(true), backoff), backoff);
        let asked = Fail {
            after: Some(Duration::from_secs(7)),
            ..fail(true)
        };
        assert_eq!(RetryPolicy::delay(&asked, backoff), Duration::from_secs(7));
        let long = Fail {
            after: Some(Duration::from_secs(600)),
            ..fail(true)
        };
        assert_eq!(RetryPolicy::delay(&long, backoff), MAX_RETRY_AFTER);
        let uncapped = Fail {
            cap: Duration::MAX,
            ..long
        };
        assert_eq!(
            RetryPolicy::delay(&uncapped, backoff),
            Duration::from_secs(600)
        );
    }

    #[tokio::test]
    async fn retries_are_counted_and_permanent_errors_stop_at_once() {
        let policy = RetryPolicy {
            retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let calls = AtomicUsize::new(0);
        let out: Result<(), Fail> = policy
            .retry("x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(fail(true))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt and 3 retries");
        calls.store(0, Ordering::SeqCst);
        let out: Result<(), Fail> = policy
            .retry("x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(fail(false))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let out = policy
            .retry("x", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(fail(true)),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(out.ok(), Some(7));
    }
}
