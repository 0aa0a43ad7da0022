//! microseg's control plane: the command line and its commands today;
//! policy engine, API and telemetry as they land.

pub mod alerts;
pub mod api;
pub mod appliance;
pub mod classify;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod engine;
pub mod explain;
mod file_error;
pub mod flows;
pub mod huge_pages;
pub mod impact;
pub mod inspect;
pub mod learn;
pub mod map;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod quarantine;
pub mod reach;
pub mod rules;
pub mod store;
pub mod syntax;
#[cfg(test)]
mod test_support;
pub mod testbed;
pub mod visibility;
pub use file_error::FileError;
