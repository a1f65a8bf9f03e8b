use clap::Subcommand;
use sip_filter::lists::ListKind;

use super::lists::{self, open_lists, parse_net, Ttl, Where};

/// Trust sources on running filters (from another shell while `sip-filter run` runs):
/// an allowed source is never denied, banned or judged a scanner, and is exempt from
/// the untrusted sources' budget (it has a bucket of its own).
#[derive(clap::Args)]
pub struct AllowArgs {
    #[command(subcommand)]
    command: AllowCommand,
}

#[derive(Subcommand)]
enum AllowCommand {
    Add(AddArgs),
    Del(DelArgs),
    List(ListArgs),
}

/// Trust an address or network.
#[derive(clap::Args)]
struct AddArgs {
    /// An IPv4 or IPv6 address or network, like 198.51.100.7 or 198.51.100.0/24.
    address: String,
    #[command(flatten)]
    ttl: Ttl,
    #[command(flatten)]
    at: Where,
}

/// Stop trusting an address or network an operator allowed (the configuration file's
/// entries are changed there).
#[derive(clap::Args)]
struct DelArgs {
    /// The address or network, exactly as added.
    address: String,
    #[command(flatten)]
    at: Where,
}

/// List the allow list: the configuration's entries and operators', with the time left.
/// Expired operator entries are removed as they are found.
#[derive(clap::Args)]
struct ListArgs {
    /// A JSON array of objects: iface, address, kind (allow), origin (operator,
    /// config), until_removed, seconds_left, expired.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

pub fn allow(args: AllowArgs) -> anyhow::Result<()> {
    match args.command {
        AllowCommand::Add(args) => {
            let net = parse_net(&args.address)?;
            let ttl = args.ttl.duration()?;
            let mut allows = open_lists(&args.at, ListKind::Allow)?;
            lists::add(&mut allows, net, ttl, 0)
        }
        AllowCommand::Del(args) => {
            let net = parse_net(&args.address)?;
            let mut allows = open_lists(&args.at, ListKind::Allow)?;
            lists::remove(&mut allows, net)
        }
        AllowCommand::List(args) => {
            let mut allows = open_lists(&args.at, ListKind::Allow)?;
            let rows = lists::list_rows(&mut allows, &Default::default())?;
            let interfaces: Vec<&str> = allows.iter().map(|(iface, _)| iface.as_str()).collect();
            lists::print_rows(
                &rows,
                args.json,
                &format!("no allowed sources on {}", interfaces.join(", ")),
            );
            Ok(())
        }
    }
}
