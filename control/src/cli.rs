//! The `microseg` command line: argument definitions, parsed by clap so
//! that a bad flag names itself and changes nothing.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// microseg: a microsegmentation firewall on an AF_XDP software switch.
#[derive(Debug, Parser)]
#[command(name = "microseg", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a running appliance's API.
#[derive(Debug, Args)]
pub struct ApiOptions {
    /// The API (`http://HOST:PORT` or `https://HOST:PORT`).
    #[arg(long, global = true, default_value = "http://127.0.0.1:9870")]
    pub api: String,
    /// A file holding the token (a bare token, or a tokens-file line);
    /// else `$MICROSEG_TOKEN`.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// For an https API: the CA certificate(s) to trust (PEM; default:
    /// the system bundle).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// Quarantine a workload (by name) or an address.
    Add {
        target: String,
        /// Lift it by itself after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Why (kept with it, shown in alerts).
        #[arg(long)]
        reason: Option<String>,
        /// Break-glass traffic that stays allowed, `FROM=SERVICE[,SERVICE]`
        /// (`role=jump=tcp/22` or `10.0.0.9/32=tcp/22`); repeatable.
        #[arg(long = "allow")]
        allow: Vec<String>,
    },
    /// The quarantines in force.
    List,
    /// Lift the quarantine of a target.
    Lift { target: String },
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
        #[command(flatten)]
        api: ApiOptions,
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Why a flow is (or would be) allowed or denied: the deciding rule,
    /// the rules it shadows, the connection's state.
    Explain {
        #[command(flatten)]
        api: ApiOptions,
        /// The opener: a workload name or an address.
        src: Option<String>,
        /// The other end: a workload name or an address.
        dst: Option<String>,
        /// `tcp/PORT`, `udp/PORT`, `icmp`, `icmp/TYPE`, `icmpv6`.
        service: Option<String>,
        /// The source port (default 49152).
        #[arg(long)]
        sport: Option<u16>,
        /// Explain a recorded flow (its id in `microseg flows`) instead.
        #[arg(long, conflicts_with_all = ["src", "dst", "service", "sport"])]
        flow: Option<u64>,
    },
    /// Isolate a workload or address, list quarantines, lift one.
    Quarantine {
        #[command(flatten)]
        api: ApiOptions,
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Compliance evidence: can workloads matching FROM reach those
    /// matching TO under the policy in force (every protocol and port),
    /// which rules allow it, and was such traffic seen. Writes a Markdown
    /// report.
    Report {
        #[command(flatten)]
        api: ApiOptions,
        /// The first zone: a label selector (`env=dev`), workload name,
        /// CIDR or address.
        #[arg(long)]
        from: String,
        /// The second zone.
        #[arg(long)]
        to: String,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Recorded flows, newest last.
    Flows {
        #[command(flatten)]
        api: ApiOptions,
        /// Opener: workload name, address or CIDR.
        #[arg(long)]
        src: Option<String>,
        /// Other end: workload name, address or CIDR.
        #[arg(long)]
        dst: Option<String>,
        /// allowed, denied, would_deny or cut.
        #[arg(long)]
        verdict: Option<String>,
        /// Most flows shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
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
