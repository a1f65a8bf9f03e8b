//! Command-line verbs, one file each; their doc comments are their `--help`.

mod allow;
mod block;
mod block_import;
mod lists;
mod run;
mod stats;
mod top;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sip_filter::pins::PIN_ROOT;

#[derive(Parser)]
#[command(
    name = "sip-filter",
    version,
    about = "A kernel-level SIP firewall: an XDP program drops SIP scanners and unknown-domain requests before the server sees them."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Stats(stats::StatsArgs),
    Block(block::BlockArgs),
    Allow(allow::AllowArgs),
    Top(top::TopArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Stats(args) => stats::stats(args),
        Command::Block(args) => block::block(args),
        Command::Allow(args) => allow::allow(args),
        Command::Top(args) => top::top(args),
    }
}

/// An error in what the operator asked for (exit status 2), not a failure of the system.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Where pins live; tests point it elsewhere.
#[derive(clap::Args, Clone)]
pub struct PinArgs {
    /// Directory under which running filters pin their maps, one subdirectory per interface.
    #[arg(long, env = "SIP_FILTER_PIN_ROOT", default_value = PIN_ROOT, hide_default_value = false)]
    pub pin_root: PathBuf,
}

/// The interfaces whose pinned filters a command reads: `iface` alone, or every one
/// pinned under the root. An error the operator can act on when there is none.
pub fn pinned_filters(pins: &PinArgs, iface: Option<&String>) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    use sip_filter::pins::{interface_dir, pinned_interfaces};
    let root = &pins.pin_root;
    let interfaces = match iface {
        Some(iface) => {
            if !interface_dir(root, iface).is_dir() {
                return Err(UserError(format!(
                    "no filter is loaded on {iface}: start one with `sip-filter run --iface {iface} --domain YOUR.DOMAIN`"
                ))
                .into());
            }
            vec![iface.clone()]
        }
        None => pinned_interfaces(root).with_context(|| format!("reading {}", root.display()))?,
    };
    if interfaces.is_empty() {
        return Err(UserError(format!(
            "no filter is loaded (nothing pinned in {}): start one with `sip-filter run --iface IFACE --domain YOUR.DOMAIN`",
            root.display()
        ))
        .into());
    }
    Ok(interfaces)
}
