use std::net::IpAddr;

use ipnet::IpNet;

use anyhow::Context;
use sip_filter::{
    filter::FilterError,
    pins::{ensure_bpffs, interface_dir, remove_dir},
    AttachMode, Filter, NotSipPolicy, Settings,
};
use tokio::signal::unix::{signal, SignalKind};

use super::{PinArgs, UserError};

/// Attach the filter to an interface and stay in the foreground.
///
/// Ctrl-C or SIGTERM detaches it and removes its pins. While it runs, `sip-filter stats`
/// in another shell reads its counters.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The interface SIP traffic arrives on.
    #[arg(long)]
    iface: String,
    /// An allowed Request-URI domain: a name (pbx.example.com) or a wildcard
    /// (*.example.com, any subdomain). Repeat for more. None: no domain check.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// One of the server's own addresses, allowed as an IP-literal Request-URI host
    /// (sip:100@198.51.100.7). Repeat for more.
    #[arg(long = "own-address", value_name = "IP")]
    own_addresses: Vec<IpAddr>,
    /// A UDP port SIP arrives on. Repeat for more (at most 8).
    #[arg(long = "port", value_name = "PORT", default_values_t = [5060])]
    ports: Vec<u16>,
    /// What to do with payloads on a SIP port that are neither SIP nor keep-alives.
    #[arg(long, value_enum, default_value_t = NotSipPolicy::Drop)]
    not_sip_payload: NotSipPolicy,
    /// Let requests whose Request-URI has no host (tel:, urn:) pass the domain check.
    #[arg(long)]
    allow_hostless_uri: bool,
    /// A trusted source network (CIDR or address): never denied or banned. Repeat for more.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_net)]
    allow: Vec<IpNet>,
    /// A source network to drop always. Repeat for more.
    #[arg(long = "deny", value_name = "CIDR", value_parser = parse_net)]
    deny: Vec<IpNet>,
    /// IPv6 sources are banned by this prefix length.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// auto: native, falling back to generic (skb) mode with a warning.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings {
        ports: args.ports,
        domains: args.domains,
        own_addresses: args.own_addresses,
        not_sip_payload: args.not_sip_payload,
        allow_hostless_uri: args.allow_hostless_uri,
        allow: args.allow,
        deny: args.deny,
        ipv6_prefix: args.ipv6_prefix,
        ..Settings::default()
    };
    // Refuse bad settings before anything touches the kernel.
    settings.validate().map_err(|e| UserError(e.to_string()))?;

    let mut filter = Filter::load().context("loading the XDP program")?;
    filter.configure(&settings)?;
    let mode = match filter.attach(&args.iface, args.xdp_mode) {
        Ok(mode) => mode,
        Err(FilterError::Attach {
            source: aya::programs::ProgramError::UnknownInterface { .. },
            ..
        }) => {
            return Err(UserError(format!(
                "no interface named {:?}: `ip link` lists them",
                args.iface
            ))
            .into())
        }
        Err(e) => {
            return Err(e).context(format!(
                "is another XDP program already attached to {}? `ip link show {}` tells",
                args.iface, args.iface
            ))
        }
    };

    let dir = interface_dir(&args.pins.pin_root, &args.iface);
    ensure_bpffs(&args.pins.pin_root)
        .with_context(|| format!("preparing {}", args.pins.pin_root.display()))?;
    // A directory left by a filter that did not stop cleanly: ours replaces it (the
    // attach above succeeded, so no live filter holds this interface).
    remove_dir(&dir).with_context(|| format!("removing stale pins in {}", dir.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Err(e) = filter.pin_maps(&dir) {
        let _ = remove_dir(&dir);
        return Err(e.into());
    }
    log::info!(
        "sip-filter attached to {} ({} mode); {} domain(s) allowed{}; maps pinned in {}",
        args.iface,
        mode.name(),
        settings.domains.len(),
        if settings.domains.is_empty() {
            " (domain check off)"
        } else {
            ""
        },
        dir.display()
    );

    let waited = wait_for_stop();
    let removed = remove_dir(&dir).with_context(|| format!("removing pins in {}", dir.display()));
    // The root too, once no filter is left in it (another interface's stays).
    let _ = std::fs::remove_dir(&args.pins.pin_root);
    drop(filter); // detaches
    log::info!("sip-filter detached from {}", args.iface);
    waited.and(removed)
}

/// A CIDR (`192.0.2.0/24`, `2001:db8::/32`) or a single address.
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("{text:?} is not an address or CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
        })
}

fn wait_for_stop() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("watching SIGINT")?,
            _ = terminate.recv() => {}
        }
        log::info!("stopping");
        Ok(())
    })
}
