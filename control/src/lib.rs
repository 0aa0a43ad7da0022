//! microseg's control plane: command line today; policy engine, API and
//! telemetry as they land.

pub mod cli;
