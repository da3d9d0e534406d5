//! Counting allocations, for the benchmark's allocations per request.
//!
//! The gantry-server binary counts nothing: an atomic add per allocation is
//! a cost a production server need not pay. The benchmark builds the
//! `counting_allocations` example instead, the same process on an
//! instrumented allocator, which hands its counter to [`count_with`]; the
//! server then exports it on `/metrics` as `gantry_server_allocations_total`.

use std::sync::OnceLock;

static COUNTER: OnceLock<fn() -> u64> = OnceLock::new();

/// Makes `counter` (allocations so far, reallocations included) the
/// source of `gantry_server_allocations_total`. Call it before the server
/// starts; a second call is ignored.
pub fn count_with(counter: fn() -> u64) {
    let _ = COUNTER.set(counter);
}

/// Allocations so far, when a counter was given.
pub fn count() -> Option<u64> {
    COUNTER.get().map(|counter| counter())
}
