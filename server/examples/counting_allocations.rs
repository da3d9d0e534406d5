//! gantry-server with every allocation counted, for `cargo xtask bench
//! server`: the same process as the binary (`gantry_server::process::main`)
//! on `stats_alloc`'s instrumented system allocator, so that `/metrics`
//! carries `gantry_server_allocations_total`. How many allocations a
//! request makes does not depend on the allocator; how long they take
//! does, so the benchmark's timings come from the binary, on mimalloc.

use std::alloc::System;
use std::process::ExitCode;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let stats = ALLOCATOR.stats();
    u64::try_from(stats.allocations + stats.reallocations).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    gantry_server::allocations::count_with(allocations);
    gantry_server::process::main()
}
