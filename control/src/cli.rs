//! The `microseg` command line: argument definitions, parsed by clap so
//! that a bad flag names itself and changes nothing.

use clap::{Parser, Subcommand};

/// microseg: a microsegmentation firewall on an AF_XDP software switch.
#[derive(Debug, Parser)]
#[command(name = "microseg", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the veth-namespace demo testbed (needs root).
    Demo,
}
