//! The `microseg` binary.

use anyhow::bail;
use clap::Parser;
use microseg_control::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            bail!("the demo needs the AF_XDP switch, which is not built yet (issue 5)")
        }
    }
}
