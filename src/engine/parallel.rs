//! Parallelism as an explicit argument (as faer does): how many threads a
//! run may use, and the thread pool they come from.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Most threads we accept; more is surely a typo.
const MAX_THREADS: usize = 1024;

/// The threads a run may use: a dedicated rayon pool of exactly that many
/// threads, created once. Rayon's parallel iterators called inside
/// [`install`](Self::install) use it, never rayon's global pool (which has a
/// thread per CPU), so one thread means one thread.
pub struct Parallelism {
    threads: usize,
    pool: rayon::ThreadPool,
}

impl Parallelism {
    /// `threads` >= 1 threads.
    pub fn new(threads: usize) -> Result<Parallelism> {
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidConfig(format!(
                "threads must be between 1 and {MAX_THREADS}, got {threads}"
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mobilenet-{i}"))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot start {threads} threads: {e}")))?;
        Ok(Parallelism { threads, pool })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool, so that rayon's parallel iterators in `f`
    /// use exactly [`threads`](Self::threads) threads (`f` runs on a pool
    /// thread: one hand-over per call).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

impl Parallelism {
    /// Like [`install`](Self::install), with the pool's other threads kept
    /// awake until `f` returns: each polls the pool for work to steal
    /// instead of going to sleep whenever a step ends.
    ///
    /// A run splits each layer across the threads, and layers at batch 1
    /// take 10 µs to 1 ms. An idle rayon thread sleeps after a few µs, and
    /// waking it can cost as much as such a layer: on a KVM guest (AMD
    /// EPYC, 2 vCPUs) a 95 µs piece of work split in two took 90 µs when
    /// the helper had slept and 55 µs when it kept polling. The pollers are
    /// the second half of a `rayon::join` with the run, so they need no
    /// heap job, and they stop when the run ends.
    ///
    /// With one thread `f` runs on the caller's thread, saving the hand-over
    /// to the pool (some µs, as much as a whole small layer): for callers
    /// such as the engine's runs, which split nothing at one thread. Rayon
    /// calls in `f` would then use rayon's global pool.
    pub fn install_awake<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.threads == 1 {
            return f();
        }
        self.pool.install(|| {
            let done = AtomicBool::new(false);
            let driver = rayon::current_thread_index();
            let (result, ()) = rayon::join(
                || {
                    // Set on return and on unwinding alike, so that a panic
                    // in `f` cannot leave the pollers running.
                    let _stop = SetOnDrop(&done);
                    f()
                },
                || poll_until(&done, driver, self.threads - 1),
            );
            result
        })
    }
}

/// Runs work stolen from the pool on `helpers` threads until `done`.
fn poll_until(done: &AtomicBool, driver: Option<usize>, helpers: usize) {
    if helpers > 1 {
        rayon::join(
            || poll_until(done, driver, 1),
            || poll_until(done, driver, helpers - 1),
        );
        return;
    }
    while !done.load(Ordering::Acquire) {
        // The run's own thread can pick a poller up while it waits for a
        // stolen piece of its work; it must not wait here for itself.
        if rayon::current_thread_index() == driver {
            return;
        }
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Parallelism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallelism")
            .field("threads", &self.threads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn install_awake_runs_parallel_work_and_returns_its_result() {
        for threads in 1..=4 {
            let par = Parallelism::new(threads).unwrap();
            for round in 0..50u64 {
                let sum: u64 =
                    par.install_awake(|| (0..10_000u64).into_par_iter().map(|i| i ^ round).sum());
                let want: u64 = (0..10_000u64).map(|i| i ^ round).sum();
                assert_eq!(sum, want, "threads {threads}");
            }
        }
    }

    #[test]
    fn install_confines_rayon_to_the_pool_even_at_one_thread() {
        for threads in 1..=3 {
            let par = Parallelism::new(threads).unwrap();
            let (seen, names) = par.install(|| {
                let seen = rayon::current_num_threads();
                let names: std::collections::BTreeSet<String> = (0..64)
                    .into_par_iter()
                    .map(|_| std::thread::current().name().unwrap_or("").to_string())
                    .collect();
                (seen, names)
            });
            assert_eq!(seen, threads);
            assert!(names.len() <= threads, "{names:?}");
            assert!(
                names.iter().all(|n| n.starts_with("mobilenet-")),
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_panic_in_the_run_stops_the_pollers() {
        let par = Parallelism::new(2).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            par.install_awake(|| -> u32 { panic!("a kernel bug") })
        }));
        // Reaching this line at all means the poller stopped: the join
        // waits for it before the panic can propagate.
        assert!(caught.is_err());
        assert_eq!(par.install_awake(|| 7), 7);
    }
}
