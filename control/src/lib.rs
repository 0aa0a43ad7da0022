//! microseg's control plane: the command line and its commands today;
//! policy engine, API and telemetry as they land.

pub mod classify;
pub mod cli;
pub mod demo;
pub mod testbed;
