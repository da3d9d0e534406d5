//! Crash points for the fault tests.
//!
//! `GANTRY_CRASH_AT=<point>[:<detail>][,...]` makes the operator kill
//! itself with SIGKILL the first time it reaches a named point in its work
//! (with the detail, when one is given), as a crashed node or an OOM kill
//! would stop it: no destructor runs, no Lease is released, no write after
//! it goes out. The tests start the operator with it, see it die at exactly
//! the moment they mean to test, and start it again without.
//!
//! Points:
//! - `decision-recorded:<Verified|Failed|RolledBack>`: the status records
//!   a verification decision that has not been told yet (no Event, no
//!   webhook), and, for a rollback, the Deployment still runs the failed
//!   revision.
//!
//! Unset (as in every deployment), a point costs a read of a static.

use std::sync::OnceLock;

/// The variable naming the points.
pub const VARIABLE: &str = "GANTRY_CRASH_AT";

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(VARIABLE)
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

fn parse(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn matches(points: &[String], point: &str, detail: &str) -> bool {
    points.iter().any(|p| {
        p == point
            || p.strip_prefix(point)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|d| d == detail)
    })
}

/// Kills the process here when `GANTRY_CRASH_AT` names `point` (alone or
/// with `detail`).
pub fn crash_point(point: &str, detail: &str) {
    if matches(points(), point, detail) {
        tracing::error!(point, detail, "crash point reached; killing the process");
        // Raised on the process itself: the kernel stops every thread at
        // once, exactly as an outside SIGKILL would.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, parse};

    #[test]
    fn points_match_alone_or_with_their_detail() {
        let points = parse("decision-recorded:RolledBack, other");
        assert!(matches(&points, "decision-recorded", "RolledBack"));
        assert!(!matches(&points, "decision-recorded", "Verified"));
        assert!(matches(&points, "other", "anything"));
        assert!(!matches(&points, "decision", "recorded:RolledBack"));
        assert!(matches(
            &parse("decision-recorded"),
            "decision-recorded",
            "Verified"
        ));
        assert!(parse("").is_empty());
    }
}
