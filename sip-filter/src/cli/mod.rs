//! Command-line verbs, one file each; their doc comments are their `--help`.

mod allow;
mod auth;
mod block;
mod block_import;
mod check;
mod domains;
mod explain;
mod lists;
mod metrics;
mod options;
mod package_assets;
mod replay;
mod run;
mod stats;
mod status;
mod top;
mod unload;

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
    Check(check::CheckArgs),
    Stats(stats::StatsArgs),
    Block(block::BlockArgs),
    Explain(explain::ExplainArgs),
    Allow(allow::AllowArgs),
    Auth(auth::AuthArgs),
    Top(top::TopArgs),
    Status(status::StatusArgs),
    Unload(unload::UnloadArgs),
    Domains(domains::DomainsArgs),
    Replay(replay::ReplayArgs),
    Metrics(metrics::MetricsArgs),
    #[command(hide = true)]
    PackageAssets(package_assets::PackageAssetsArgs),
}

impl Cli {
    /// A long-running server (`run`, `metrics`): a peer that goes away must be an error it
    /// handles (EPIPE), not a SIGPIPE that ends it.
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Run(_) | Command::Metrics(_))
    }

    /// The verb, as typed (for messages).
    pub fn name(&self) -> &'static str {
        match self.command {
            Command::Run(_) => "run",
            Command::Check(_) => "check",
            Command::Stats(_) => "stats",
            Command::Block(_) => "block",
            Command::Explain(_) => "explain",
            Command::Allow(_) => "allow",
            Command::Auth(_) => "auth",
            Command::Top(_) => "top",
            Command::Status(_) => "status",
            Command::Unload(_) => "unload",
            Command::Domains(_) => "domains",
            Command::Replay(_) => "replay",
            Command::Metrics(_) => "metrics",
            Command::PackageAssets(_) => "package-assets",
        }
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::check(args),
        Command::Stats(args) => stats::stats(args),
        Command::Block(args) => block::block(args),
        Command::Explain(args) => explain::explain(args),
        Command::Allow(args) => allow::allow(args),
        Command::Auth(args) => auth::auth(args),
        Command::Top(args) => top::top(args),
        Command::Status(args) => status::status(args),
        Command::Unload(args) => unload::unload(args),
        Command::Domains(args) => domains::domains(args),
        Command::Replay(args) => replay::replay(args),
        Command::Metrics(args) => metrics::metrics(args),
        Command::PackageAssets(args) => package_assets::package_assets(args),
    }
}

/// An error in what the operator asked for (exit status 2), not a failure of the system.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// No filter is running where the verb looked (exit status 3): scripts and monitoring can
/// tell "not running" from a failure or a wrong argument.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoFilter(pub String);

/// Exit statuses: 0 done, 1 a failure of the system, 2 a wrong argument or
/// configuration ([`UserError`]), 3 no filter running ([`NoFilter`]), 4 permission
/// denied to a user who is not root.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NO_FILTER: u8 = 3;
    pub const NOT_ROOT: u8 = 4;
}

/// What `error` means for the exit status (see [`exit`]), and the line to print.
pub fn report(error: &anyhow::Error, command: &str) -> (u8, String) {
    let denied = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    // SAFETY: a syscall without arguments.
    if denied && unsafe { libc::geteuid() } != 0 {
        return (
            exit::NOT_ROOT,
            format!(
                "error: permission denied: `sip-filter {command}` reads and changes the running filter's pinned maps, which only root (or a holder of CAP_BPF and CAP_NET_ADMIN) may: try `sudo sip-filter {command}`"
            ),
        );
    }
    let status = if error.downcast_ref::<NoFilter>().is_some() {
        exit::NO_FILTER
    } else if error.downcast_ref::<UserError>().is_some() {
        exit::USAGE
    } else {
        exit::FAILURE
    };
    (status, format!("error: {error:#}"))
}

/// Where pins live; tests point it elsewhere.
#[derive(clap::Args, Clone)]
pub struct PinArgs {
    /// Directory under which the running filter pins its maps (`maps/`, shared by all
    /// its interfaces) and its links (`links/IFACE`, one per interface).
    #[arg(long, env = "SIP_FILTER_PIN_ROOT", default_value = PIN_ROOT, hide_default_value = false)]
    pub pin_root: PathBuf,
    /// Directory of the daemon's runtime file (pid, XDP modes, domains as loaded).
    /// Default: /run/ and the pin root's last component, /run/sip-filter.
    #[arg(long, env = "SIP_FILTER_RUNTIME_DIR", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
}

impl PinArgs {
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_dir
            .clone()
            .unwrap_or_else(|| sip_filter::pins::default_runtime_dir(&self.pin_root))
    }

    /// Where the maps shared by every interface are pinned.
    pub fn maps_dir(&self) -> PathBuf {
        sip_filter::pins::maps_dir(&self.pin_root)
    }
}

/// The interfaces the running filter is attached to: `iface` alone (checked to be one
/// of them), or all of them. They share one set of maps ([`PinArgs::maps_dir`]): read or
/// write those once, not once per interface. An error the operator can act on when
/// nothing is attached.
pub fn pinned_filters(pins: &PinArgs, iface: Option<&String>) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    use sip_filter::pins::{link_path, pinned_interfaces};
    let root = &pins.pin_root;
    let interfaces = match iface {
        Some(iface) => {
            if !link_path(root, iface).exists() {
                let attached = pinned_interfaces(root).unwrap_or_default();
                let message = format!(
                    "no filter is loaded on {iface}: start one with `sip-filter run --iface {iface} --domain YOUR.DOMAIN`"
                );
                // Running elsewhere: a wrong argument, not "no filter running".
                return Err(if attached.is_empty() {
                    NoFilter(message).into()
                } else {
                    UserError(format!("{message} (it runs on {})", attached.join(", "))).into()
                });
            }
            vec![iface.clone()]
        }
        None => pinned_interfaces(root).with_context(|| format!("reading {}", root.display()))?,
    };
    if interfaces.is_empty() {
        return Err(NoFilter(format!(
            "no filter is loaded (nothing pinned in {}): start one with `sip-filter run --iface IFACE --domain YOUR.DOMAIN`",
            root.display()
        ))
        .into());
    }
    Ok(interfaces)
}
