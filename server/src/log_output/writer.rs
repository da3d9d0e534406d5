//! Lines written to standard output in batches by a thread of their own;
//! see the [parent module](super).

use std::io::{self, Write as _};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a batch waits before the batch is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Past this many bytes waiting, the logging thread writes them itself.
pub const MAX_PENDING: usize = 1 << 20;

/// Standard output, written in batches by a thread of its own; see the
/// module documentation. Cloning shares the one buffer and thread.
#[derive(Clone, Debug)]
pub struct LogWriter(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Wakes the writing thread when a line arrives in an empty buffer.
    arrived: Condvar,
    /// Held while a batch is taken and written, so batches reach standard
    /// output in the order they were taken. It keeps the buffer of the
    /// batch written last, emptied, to take the next batch's place: a new
    /// one would grow again, copying, to a batch's size every batch.
    output: Mutex<Vec<u8>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole, so a panic elsewhere
    // while one was held does not make it unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogWriter {
    /// Starts the thread that writes to standard output.
    pub fn stdout() -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                loop {
                    {
                        let mut pending = lock(&writer.pending);
                        while pending.is_empty() {
                            pending = writer
                                .arrived
                                .wait(pending)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                    std::thread::sleep(FLUSH_INTERVAL);
                    write_pending(&writer);
                }
            })?;
        Ok(Self(shared))
    }

    /// Writes every line logged so far; for the end of the process.
    pub fn flush(&self) {
        write_pending(&self.0);
    }
}

fn write_pending(shared: &Shared) {
    let mut batch = lock(&shared.output);
    std::mem::swap(&mut *batch, &mut *lock(&shared.pending));
    if !batch.is_empty() {
        // Nowhere to report a failed write of the log: it is dropped, as
        // tracing-subscriber drops it.
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&batch).and_then(|()| stdout.flush());
    }
    batch.clear();
}

/// What one log line is written through.
#[derive(Debug)]
pub struct LineWriter<'a>(&'a Shared);

impl io::Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = lock(&self.0.pending);
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        if pending.len() > MAX_PENDING {
            drop(pending);
            write_pending(self.0);
        } else if was_empty {
            self.0.arrived.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.0)
    }
}
