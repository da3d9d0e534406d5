//! The operator's clock: the apiserver's.
//!
//! Every time the operator writes into a status (when a revision became
//! available, when it was last measured, when a drain ends) is read by the
//! next operator too, after a restart or a leader change. If replicas'
//! clocks disagreed, a successor whose clock runs ahead would find a
//! verification's window over early and count samples closer together than
//! `interval` (a replica 60 s fast passed a revision on two samples a
//! second apart). So times come from one clock for every replica: the
//! apiserver's, as the `Date` header of its answers gives it. The offset of
//! the local clock from it is the smallest `local − Date` of the recent
//! answers (a `Date` is whole seconds and written before the answer
//! travels, so each difference overstates the offset by up to a second and
//! the network's delay; the smallest is the closest). Until the first
//! answer, the local clock stands.
//!
//! Tests shift the local clock with `GANTRY_CLOCK_OFFSET` (see
//! [`crate::fault`]).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Answers whose offsets are kept.
const KEPT: usize = 64;

/// The recent `local − Date` differences, in milliseconds.
static OFFSETS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// The local clock, in milliseconds since the epoch, shifted by the test
/// offset when one is set.
fn local_millis() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(now.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_add(crate::fault::clock_offset_millis())
}

/// Notes an answer of the apiserver written at `date` (an HTTP date).
pub fn observe(date: &str) {
    let Ok(date) = httpdate::parse_http_date(date) else {
        return;
    };
    let Ok(date) = date.duration_since(UNIX_EPOCH) else {
        return;
    };
    let date = i64::try_from(date.as_millis()).unwrap_or(i64::MAX);
    record(local_millis().saturating_sub(date));
}

fn record(offset: i64) {
    let mut offsets = OFFSETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if offsets.len() == KEPT {
        offsets.remove(0);
    }
    offsets.push(offset);
}

/// How far the local clock runs ahead of the apiserver's, in milliseconds.
fn offset() -> i64 {
    OFFSETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .min()
        .copied()
        .unwrap_or(0)
}

/// Now, by the apiserver's clock, in milliseconds since the epoch.
pub fn now_millis() -> i64 {
    local_millis().saturating_sub(offset())
}

/// Now, to the second: condition and status times are stored in seconds,
/// so a finer time would make every status differ from the stored one.
pub fn now() -> Time {
    let seconds = now_millis().div_euclid(1000);
    Time(Timestamp::from_second(seconds).unwrap_or_else(|_| Timestamp::now()))
}

/// Now, with its milliseconds, for Events.
pub fn now_precise() -> Timestamp {
    Timestamp::from_millisecond(now_millis()).unwrap_or_else(|_| Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_of_the_recent_offsets_wins() {
        let lock = || OFFSETS.lock().unwrap();
        lock().clear();
        assert_eq!(offset(), 0);
        for offset in [60_400, 60_050, 60_900, 60_120] {
            record(offset);
        }
        assert_eq!(offset(), 60_050);
        for _ in 0..KEPT {
            record(100);
        }
        assert_eq!(lock().len(), KEPT);
        assert_eq!(offset(), 100);
        lock().clear();
    }
}
