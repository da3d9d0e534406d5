//! The comparative judge: a revision's samples against its baseline's.
//!
//! `stats` holds the statistics, pinned to reference implementations;
//! `classify` turns one metric's two sets of samples into High, Low, Pass
//! or `NoData`, and the metrics into a score; `baseline` applies them to a
//! verification and its baseline in status.

pub mod baseline;
pub mod classify;
pub mod stats;

pub use classify::{
    Allowance, Bad, Class, Comparison, Judged, Outcome, Score, Scored, classify, score,
};
