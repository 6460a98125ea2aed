//! Parallelism as an explicit argument (as faer does): how many threads a
//! run may use, and the thread pool they come from.

use crate::error::{Error, Result};

/// Most threads we accept; more is surely a typo.
const MAX_THREADS: usize = 1024;

/// The threads a [`Plan`](crate::engine::Plan) run may use. One thread runs
/// on the caller's thread; more use a dedicated rayon pool, created once.
pub struct Parallelism {
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

impl Parallelism {
    /// `threads` >= 1 threads.
    pub fn new(threads: usize) -> Result<Parallelism> {
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidConfig(format!(
                "threads must be between 1 and {MAX_THREADS}, got {threads}"
            )));
        }
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("mobilenet-{i}"))
                .build()
                .map_err(|e| {
                    Error::InvalidConfig(format!("cannot start {threads} threads: {e}"))
                })?;
            Some(pool)
        } else {
            None
        };
        Ok(Parallelism { threads, pool })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool (so rayon's parallel iterators in `f` use
    /// it), or directly on this thread for one thread.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

impl std::fmt::Debug for Parallelism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallelism")
            .field("threads", &self.threads)
            .finish()
    }
}
