//! One upstream request per key however many clients ask at once: the first caller's
//! request runs in its own task, and callers that arrive meanwhile await its result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::errors::ApiError;

type Pending<V> = Shared<BoxFuture<'static, Result<V, ApiError>>>;

/// Requests in flight, by key.
pub struct Coalescer<V: Clone> {
    pending: Arc<Mutex<HashMap<String, Pending<V>>>>,
}

impl<V: Clone> Default for Coalescer<V> {
    fn default() -> Self {
        Coalescer {
            pending: Arc::default(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Coalescer<V> {
    /// The result of `make()` for `key`, started now unless one is in flight; also says
    /// whether this call joined one in flight.
    pub async fn run<F>(&self, key: String, make: impl FnOnce() -> F) -> (Result<V, ApiError>, bool)
    where
        F: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        let (pending, joined) = {
            let mut map = self.pending.lock().expect("coalescer");
            match map.get(&key) {
                Some(p) => (p.clone(), true),
                None => {
                    let task = tokio::spawn(make());
                    let (map_ref, k) = (self.pending.clone(), key.clone());
                    let fut = async move {
                        let out = task.await.unwrap_or_else(|e| {
                            Err(ApiError::new(500, "UNKNOWN", format!("fetch task: {e}")))
                        });
                        map_ref.lock().expect("coalescer").remove(&k);
                        out
                    }
                    .boxed()
                    .shared();
                    map.insert(key, fut.clone());
                    (fut, false)
                }
            }
        };
        (pending.await, joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let coalescer = Arc::new(Coalescer::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let (c, runs) = (coalescer.clone(), runs.clone());
            tokio::spawn(async move {
                c.run("k".into(), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Ok(7)
                })
                .await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let joined = results.iter().filter(|r| r.as_ref().unwrap().1).count();
        assert!(results.iter().all(|r| r.as_ref().unwrap().0 == Ok(7)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 7);
        // Once finished, the next call runs again.
        let (again, joined) = coalescer.run("k".into(), || async { Ok(8) }).await;
        assert_eq!((again, joined), (Ok(8), false));
    }
}
