//! The `microseg` binary.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use clap::Parser;
use microseg_control::classify::{self, Engine};
use microseg_control::cli::{Cli, Command};

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cli.command {
        Command::Demo => {
            let as_expected = microseg_control::demo::run(&mut out)?;
            out.flush().context("writing output")?;
            if !as_expected {
                bail!("some demo checks did not come out as the policy says");
            }
        }
        Command::Classify {
            rules,
            trace,
            reference,
        } => {
            let engine = if reference {
                Engine::Reference
            } else {
                Engine::Compiled
            };
            classify::classify_trace(&read(&rules)?, &read(&trace)?, engine, &mut out)
                .with_context(|| format!("{} / {}", rules.display(), trace.display()))?;
        }
        Command::Trace { rules, count, seed } => {
            classify::generate_trace(&read(&rules)?, count, seed, &mut out)
                .with_context(|| rules.display().to_string())?;
        }
    }
    out.flush().context("writing output")?;
    Ok(())
}
