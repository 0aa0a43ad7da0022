//! The `microseg` command line: argument definitions, parsed by clap so
//! that a bad flag names itself and changes nothing.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// microseg: a microsegmentation firewall on an AF_XDP software switch.
#[derive(Debug, Parser)]
#[command(name = "microseg", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Check a policy file (dry run); exit 1 if invalid.
    Validate { file: PathBuf },
    /// Apply a policy file (YAML, or JSON if it ends in .json).
    Apply {
        file: PathBuf,
        /// Refuse unless this version is in force (optimistic concurrency).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Print the policy in force.
    Get,
    /// Show what applying a file would change; exit 1 if anything.
    Diff { file: PathBuf },
    /// List the stored versions.
    History,
    /// Re-apply a stored version.
    Rollback { version: u64 },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: attach to the configured ports, enforce the rules
    /// file (reloaded on SIGHUP), serve the status API; stop on SIGINT or
    /// SIGTERM (needs root).
    Run {
        /// The configuration file (YAML; see docs/operations.md).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the veth-namespace demo testbed (needs root): sample policy,
    /// traffic, what was allowed and denied; then stay up until Ctrl-C.
    Demo {
        /// Exit (and clean up) right after the summary.
        #[arg(long)]
        once: bool,
    },
    /// Manage the policy of a running appliance through its API.
    Policy {
        /// The API (`http://HOST:PORT` or `https://HOST:PORT`).
        #[arg(long, global = true, default_value = "http://127.0.0.1:9870")]
        api: String,
        /// A file holding the token (a bare token, or a tokens-file line);
        /// else `$MICROSEG_TOKEN`.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// For an https API: the CA certificate(s) to trust (PEM; default:
        /// the system bundle).
        #[arg(long, global = true)]
        cacert: Option<PathBuf>,
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Classify a ClassBench trace: print, per trace line and in order, the
    /// 0-based index of the first matching rule, or -1.
    Classify {
        /// ClassBench filter file (`@src/len dst/len lo : hi lo : hi 0xPP/0xMM ...`).
        #[arg(long)]
        rules: PathBuf,
        /// Trace file (`sip dip sp dp proto [filter#]`, integers).
        #[arg(long)]
        trace: PathBuf,
        /// Answer with the linear reference classifier instead of the
        /// compiled one.
        #[arg(long)]
        reference: bool,
    },
    /// Generate a ClassBench trace from a rule file (deterministic per seed).
    Trace {
        /// ClassBench filter file.
        #[arg(long)]
        rules: PathBuf,
        /// Number of trace lines.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}
