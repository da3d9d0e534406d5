//! The rollout path under faults, apart from the crash points of its life
//! (`rollout_crash.rs`): stale views (a Deployment status of the previous
//! template, the operator's own status replayed from before a decision, a
//! successor whose clock runs fast), a leader failover mid-rollout,
//! Prometheus misbehaving, and the live fuzz of `spec.rollout` mid-window.
//! One test binary, so that its tests, which mostly wait, run side by side.

#[path = "../operator_support/mod.rs"]
mod operator_support;

mod failover;
mod fuzz;
mod providers;
mod stale;
