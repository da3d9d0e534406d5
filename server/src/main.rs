//! `gantry-server`: reads the configuration, sets up logging, serves until
//! SIGTERM. Exit status: 0 after a clean drain, 2 for an invalid
//! configuration, 1 for any other failure.

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a request makes many small,
/// short-lived allocations (headers, log fields, metric labels), which glibc
/// spends noticeably longer on (`malloc_consolidate`, `_int_free` in a
/// profile of the benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gantry_server::process::main()
}
