//! The comparative judge: a revision's samples against its baseline's.
//!
//! `stats` holds the statistics, pinned to reference implementations.

pub mod stats;
