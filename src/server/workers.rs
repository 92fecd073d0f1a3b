//! The stream workers: a fixed set of threads, one per core, that run every
//! operation on a stream's state (model steps, reloads, evictions) off the
//! async reactor.
//!
//! Why not tokio's blocking pool: a `spawn_blocking` per operation wakes a
//! parked pool thread, and its completion wakes the reactor, so each model
//! step cost several context switches, which on a small VM were a fifth of
//! the server's CPU under load (`perf` of `cargo bench --bench load`). These
//! threads take the next queued job without parking while there is work,
//! and there are only as many as cores: more would only evict each other's
//! models from the CPU caches and stretch latency tails.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job panicked; the worker thread lives on.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The job was dropped without running (its worker is gone).
    #[error("the stream workers have stopped")]
    Stopped,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
}

/// A handle to the workers; dropping it stops them once the queued jobs
/// are done.
pub struct Workers {
    shared: Arc<Shared>,
    /// Every job is tracked here until it is done, so shutdown waits for
    /// it even if the request that queued it went away.
    tasks: TaskTracker,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workers {
    /// Start `threads` worker threads (at least one), named `name`, whose
    /// jobs `tasks` tracks.
    pub fn start(threads: usize, name: &str, tasks: TaskTracker) -> std::io::Result<Workers> {
        let shared = Arc::new(Shared::default());
        for _ in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || work(&shared))?;
        }
        Ok(Workers { shared, tasks })
    }

    /// Run `job` on a worker, in the order jobs were queued, and wait
    /// (without blocking the thread) for its result. The job runs to its
    /// end even if this future is dropped.
    pub async fn run<R, F>(&self, job: F) -> Result<R, JobError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let token = self.tasks.token();
        let job: Job = Box::new(move || {
            let _token = token;
            let result = catch_unwind(AssertUnwindSafe(job)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".to_owned());
                JobError::Panicked(message)
            });
            // The caller may have gone away: the job's effect stands.
            let _ = tx.send(result);
        });
        // Not stopped: that happens only when this handle is dropped.
        lock(&self.shared.queue).jobs.push_back(job);
        self.shared.work.notify_one();
        rx.await.unwrap_or(Err(JobError::Stopped))
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("queued", &lock(&self.shared.queue).jobs.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        lock(&self.shared.queue).stopped = true;
        self.shared.work.notify_all();
    }
}

/// A worker thread: run queued jobs until stopped and the queue is empty.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.stopped {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_return_their_results() {
        let workers = Workers::start(2, "test-worker", TaskTracker::new()).unwrap();
        let name = workers
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-worker"));
        assert_eq!(workers.run(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_workers_live_on() {
        let workers = Workers::start(1, "test-worker", TaskTracker::new()).unwrap();
        let err = workers.run(|| panic!("boom")).await.unwrap_err();
        assert!(
            matches!(&err, JobError::Panicked(m) if m == "boom"),
            "{err}"
        );
        assert_eq!(workers.run(|| 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn one_worker_runs_jobs_in_queued_order() {
        let workers = Arc::new(Workers::start(1, "test-worker", TaskTracker::new()).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..50)
            .map(|i| {
                let seen = Arc::clone(&seen);
                workers.run(move || seen.lock().unwrap().push(i))
            })
            .collect();
        for r in futures_util::future::join_all(runs).await {
            r.unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_dropped_caller_still_runs_its_job_and_the_tracker_waits_for_it() {
        let tasks = TaskTracker::new();
        let workers = Workers::start(1, "test-worker", tasks.clone()).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&done);
        let slow = workers.run(move || {
            std::thread::sleep(Duration::from_millis(200));
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Poll once so the job is queued, then drop the caller.
        assert!(tokio::time::timeout(Duration::from_millis(1), slow)
            .await
            .is_err());
        tasks.close();
        tasks.wait().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
