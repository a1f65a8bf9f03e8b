use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use sip_filter::{pins::anything_pinned, runtime::Runtime};

use super::{status::no_filter, PinArgs, UserError};

/// The running filter's allowed Request-URI domains.
#[derive(clap::Args)]
pub struct DomainsArgs {
    #[command(subcommand)]
    command: DomainsCommand,
}

#[derive(Subcommand)]
enum DomainsCommand {
    List(ListArgs),
}

/// List the allowed domains as the daemon loaded them (the kernel holds only their
/// hashes): the configuration file's, or the --domain flags', after the last reload.
#[derive(clap::Args)]
struct ListArgs {
    /// JSON: domains, domain_check, config_file.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn domains(args: DomainsArgs) -> anyhow::Result<()> {
    match args.command {
        DomainsCommand::List(args) => list(args),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let root = &args.pins.pin_root;
    let runtime_dir = args.pins.runtime_dir();
    let pinned = anything_pinned(root).with_context(|| format!("reading {}", root.display()))?;
    let runtime = match Runtime::read(&runtime_dir) {
        Ok(Some(runtime)) if pinned => runtime,
        _ if !pinned => return Err(no_filter(root).into()),
        _ => {
            return Err(UserError(format!(
                "the filter pinned in {} has no readable runtime file in {} (its daemon is not running): the kernel holds only hashes of the domains; `sip-filter run` again to know them",
                root.display(),
                runtime_dir.display()
            ))
            .into())
        }
    };
    if args.json {
        println!(
            "{}",
            json!({
                "domains": runtime.domains,
                "domain_check": !runtime.domains.is_empty(),
                "config_file": runtime.config_file,
            })
        );
    } else if runtime.domains.is_empty() {
        println!("no domains configured: the domain check is off");
    } else {
        for domain in &runtime.domains {
            println!("{domain}");
        }
    }
    Ok(())
}
