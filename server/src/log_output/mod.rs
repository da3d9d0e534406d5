//! How log lines are made and written.
//!
//! [`JsonLines`] formats a JSON line with the fields tracing-subscriber's
//! JSON format gives (`timestamp`, `level`, the event's fields, `target`,
//! and `spans`, the fields of every enclosing span with its `name`). It
//! differs in one respect: tracing-subscriber renders a span's fields to a
//! JSON object once, when the span opens, and then parses that text back
//! for every line logged inside the span; here the rendered object is
//! copied into the line as it is, and [`JsonSpanFields`] renders that
//! object directly rather than through a `serde_json` map. The lines are
//! the same (a unit test compares the two formats); the timestamp's date
//! and time of day are formatted once a second.
//!
//! [`LogWriter`] collects the lines in memory and a thread of its own writes
//! them to standard output, [`FLUSH_INTERVAL`] after the first line of a
//! batch: the thread serving requests never waits for a write, and a busy
//! server makes one `write` per batch instead of one per line. A line
//! reaches standard output within about [`FLUSH_INTERVAL`]; a process killed
//! outright (SIGKILL) loses at most that much of its log. When the batch
//! grows past [`MAX_PENDING`] (standard output is not keeping up) the thread
//! that logs writes it itself, so memory stays bounded and nothing is
//! dropped.
//!
//! The two halves live apart: [`format`] makes the lines, [`writer`] writes them.

mod format;
mod writer;

pub use format::{JsonLines, JsonSpanFields};
pub use writer::{FLUSH_INTERVAL, LineWriter, LogWriter, MAX_PENDING};
