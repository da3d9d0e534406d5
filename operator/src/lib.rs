//! gantry-operator: keeps the children of every `GoServer` in the shape its
//! spec asks for.
//!
//! - [`crd`]: the resource types, the one source of the CRD schema.
//! - [`build`]: pure functions from a GoServer to its desired children.
//! - [`controller`]: fetch, validate, build, apply, prune, report.
//! - [`status`]: conditions and counters from the observed Deployment.

pub mod build;
pub mod crd;
pub mod error;

pub use error::{Error, Result};
