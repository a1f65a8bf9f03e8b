use std::{net::IpAddr, path::PathBuf, sync::Arc};

use ipnet::IpNet;

use anyhow::Context;
use aya::maps::{MapData, RingBuf};
use sip_filter::{
    config::{self, parse_net},
    events,
    filter::{monotonic_now_ns, FilterError},
    metrics::{self, Metrics, PinnedFilter},
    pins::{ensure_bpffs, interface_dir, remove_dir},
    AttachMode, Filter, NotSipPolicy, Settings,
};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use super::{PinArgs, UserError};

/// Attach the filter to an interface and stay in the foreground.
///
/// Ctrl-C or SIGTERM detaches it and removes its pins. While it runs, `sip-filter stats`
/// in another shell reads its counters, and the filter's bans and drops (the first per
/// source per second) are logged.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The interface SIP traffic arrives on.
    #[arg(long)]
    iface: String,
    /// A TOML configuration file (examples/sip-filter.toml documents every key). The
    /// flags below replace the file's value for what they set.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An allowed Request-URI domain: a name (pbx.example.com) or a wildcard
    /// (*.example.com, any subdomain). Repeat for more. None: no domain check.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// One of the server's own addresses, allowed as an IP-literal Request-URI host
    /// (sip:100@198.51.100.7). Repeat for more.
    #[arg(long = "own-address", value_name = "IP")]
    own_addresses: Vec<IpAddr>,
    /// A UDP port SIP arrives on. Repeat for more (at most 8). Default: 5060.
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// What to do with payloads on a SIP port that are neither SIP nor keep-alives.
    /// Default: drop.
    #[arg(long, value_enum)]
    not_sip_payload: Option<NotSipPolicy>,
    /// Let requests whose Request-URI has no host (tel:, urn:) pass the domain check.
    #[arg(long)]
    allow_hostless_uri: bool,
    /// A trusted source network (CIDR or address): never denied or banned. Repeat for more.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_net)]
    allow: Vec<IpNet>,
    /// A source network to drop always. Repeat for more.
    #[arg(long = "deny", value_name = "CIDR", value_parser = parse_net)]
    deny: Vec<IpNet>,
    /// IPv6 sources are banned by this prefix length. Default: 64.
    #[arg(long, value_name = "BITS")]
    ipv6_prefix: Option<u8>,
    /// auto: native, falling back to generic (skb) mode with a warning.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (like 127.0.0.1:9184).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    #[command(flatten)]
    pins: PinArgs,
}

impl RunArgs {
    /// The configuration file's settings (or the defaults), overridden by the flags given,
    /// all checked: nothing has touched the kernel yet.
    fn settings(&self) -> Result<Settings, UserError> {
        let mut settings = match &self.config {
            Some(path) => config::load(path).map_err(|e| UserError(e.to_string()))?,
            None => Settings::default(),
        };
        // A list flag replaces the file's list rather than adding to it.
        if !self.ports.is_empty() {
            settings.ports.clone_from(&self.ports);
        }
        if !self.domains.is_empty() {
            settings.domains.clone_from(&self.domains);
        }
        if !self.own_addresses.is_empty() {
            settings.own_addresses.clone_from(&self.own_addresses);
        }
        if !self.allow.is_empty() {
            settings.allow.clone_from(&self.allow);
        }
        if !self.deny.is_empty() {
            settings.deny.clone_from(&self.deny);
        }
        if let Some(policy) = self.not_sip_payload {
            settings.not_sip_payload = policy;
        }
        if self.allow_hostless_uri {
            settings.allow_hostless_uri = true;
        }
        if let Some(prefix) = self.ipv6_prefix {
            settings.ipv6_prefix = prefix;
        }
        settings.validate().map_err(|e| UserError(e.to_string()))?;
        Ok(settings)
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Refuse bad settings, the whole file checked, before anything touches the kernel.
    let settings = args.settings()?;
    // Bound now, so that a bad or busy address fails before the filter is attached.
    let metrics_listener = args
        .metrics_addr
        .as_deref()
        .map(metrics::bind)
        .transpose()
        .map_err(|e| UserError(e.to_string()))?;

    let mut filter = Filter::load().context("loading the XDP program")?;
    filter.configure(&settings)?;
    let events = filter.take_events()?;
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
    if settings.dry_run {
        log::warn!("dry-run: verdicts are counted and reported, nothing is dropped or banned");
    }

    let exporter = match metrics_listener {
        Some(listener) => {
            let own = PinnedFilter {
                iface: args.iface.clone(),
                dir: dir.clone(),
            };
            Some((listener, Arc::new(Metrics::for_daemon(vec![own])?)))
        }
        None => None,
    };

    let waited = wait_for_stop(events, u32::from(settings.ipv6_prefix), exporter);
    let removed = remove_dir(&dir).with_context(|| format!("removing pins in {}", dir.display()));
    // The root too, once no filter is left in it (another interface's stays).
    let _ = std::fs::remove_dir(&args.pins.pin_root);
    drop(filter); // detaches
    log::info!("sip-filter detached from {}", args.iface);
    waited.and(removed)
}

/// Logs the filter's events, and serves metrics if asked, until SIGINT or SIGTERM.
fn wait_for_stop(
    events: RingBuf<MapData>,
    ipv6_prefix: u32,
    exporter: Option<(std::net::TcpListener, Arc<Metrics>)>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        if let Some((listener, metrics)) = exporter {
            // Metrics are a view, not the filter: if they cannot be served, it keeps running.
            tokio::spawn(async move {
                let e = metrics::serve(listener, metrics).await;
                log::warn!("metrics are not served: {e}");
            });
        }
        // Events are a log, not the filter: if they cannot be read, it keeps running.
        // SAFETY: the AsyncFd owns the ring buffer, which owns its map's file descriptor
        // and closes it only when dropped: the descriptor stays open, and `as_raw_fd`
        // returns that same one, for the AsyncFd's whole life.
        let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .inspect_err(|e| {
                log::warn!(
                    "cannot watch the events ring buffer, so bans and drops are not logged: {e}"
                )
            })
            .ok();
        let reading = async {
            if let Some(events) = events.as_mut() {
                let Err(e) = log_events(events, ipv6_prefix).await;
                log::warn!("reading the events ring buffer failed, so bans and drops are no longer logged: {e}");
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            // Signals first: a stream of events cannot hold up the stop.
            biased;
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            () = reading => {}
        }
        // What the kernel wrote just before the stop, without waiting for more.
        if let Some(events) = events.as_mut() {
            drain(events.get_mut(), ipv6_prefix);
        }
        log::info!("stopping");
        Ok(())
    })
}

/// Events logged per turn, before the signals are looked at again.
const EVENTS_PER_TURN: usize = 256;

/// Logs events as they arrive; returns only when the ring buffer cannot be polled.
/// Cancel-safe: each event is consumed as it is logged.
async fn log_events(
    events: &mut AsyncFd<RingBuf<MapData>>,
    ipv6_prefix: u32,
) -> Result<std::convert::Infallible, std::io::Error> {
    loop {
        let mut guard = events.readable_mut().await?;
        if drain(guard.get_inner_mut(), ipv6_prefix) {
            // More waiting: let the runtime look at the signals, then go on.
            drop(guard);
            tokio::task::yield_now().await;
        } else {
            // Empty: sleep until the kernel signals more.
            guard.clear_ready();
        }
    }
}

/// Logs up to [`EVENTS_PER_TURN`] events; true if more may be waiting.
fn drain(ring: &mut RingBuf<MapData>, ipv6_prefix: u32) -> bool {
    for _ in 0..EVENTS_PER_TURN {
        let Some(record) = ring.next() else {
            return false;
        };
        events::log_record(&record, monotonic_now_ns(), ipv6_prefix);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;
    use sip_filter::settings::RateLimit;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        let argv = ["sip-filter", "--iface", "eth0"].iter().chain(flags);
        Command::try_parse_from(argv).unwrap().run
    }

    /// A configuration file of its own for each test, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("sip-filter-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const FILE: &str = r#"
[filter]
ports = [5060, 5080]
domains = ["file.example.test"]
own_addresses = ["198.51.100.7"]
non_sip_on_sip_port = "pass"
allow_hostless_uri = true
dry_run = true
ipv6_prefix = 48

[rate_limit.invite]
rate = 3
burst = 6

[lists]
allow = ["203.0.113.0/24"]
deny = ["192.0.2.0/24"]
"#;

    #[test]
    fn without_a_file_the_flags_and_defaults_apply() {
        let settings = args(&[]).settings().unwrap();
        assert_eq!(settings, Settings::default());
        let settings = args(&["--domain", "a.test", "--port", "5080"])
            .settings()
            .unwrap();
        assert_eq!(settings.domains, ["a.test"]);
        assert_eq!(settings.ports, [5080]);
    }

    #[test]
    fn the_file_applies_where_no_flag_is_given() {
        let file = TempFile::new("file-applies", FILE);
        let settings = args(&["--config", file.path()]).settings().unwrap();
        assert_eq!(settings.ports, [5060, 5080]);
        assert_eq!(settings.domains, ["file.example.test"]);
        assert_eq!(settings.not_sip_payload, NotSipPolicy::Pass);
        assert!(settings.allow_hostless_uri);
        assert!(settings.dry_run);
        assert_eq!(settings.ipv6_prefix, 48);
        assert_eq!(
            settings.rate_limits.invite,
            Some(RateLimit { rate: 3, burst: 6 })
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempFile::new("flags-override", FILE);
        let settings = args(&[
            "--config",
            file.path(),
            "--domain",
            "flag.example.test",
            "--domain",
            "*.flag.example.test",
            "--port",
            "5070",
            "--own-address",
            "2001:db8::7",
            "--not-sip-payload",
            "drop",
            "--ipv6-prefix",
            "64",
            "--allow",
            "198.18.0.0/15",
            "--deny",
            "198.51.100.0/24",
        ])
        .settings()
        .unwrap();
        // Replaced, not added to.
        assert_eq!(
            settings.domains,
            ["flag.example.test", "*.flag.example.test"]
        );
        assert_eq!(settings.ports, [5070]);
        assert_eq!(
            settings.own_addresses,
            ["2001:db8::7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(settings.not_sip_payload, NotSipPolicy::Drop);
        assert_eq!(settings.ipv6_prefix, 64);
        assert_eq!(settings.allow, ["198.18.0.0/15".parse::<IpNet>().unwrap()]);
        assert_eq!(settings.deny, ["198.51.100.0/24".parse::<IpNet>().unwrap()]);
        // What no flag sets stays the file's.
        assert!(settings.dry_run);
        assert!(settings.allow_hostless_uri);
        assert_eq!(
            settings.rate_limits.invite,
            Some(RateLimit { rate: 3, burst: 6 })
        );
    }

    #[test]
    fn a_bad_file_is_a_user_error_on_one_line() {
        let file = TempFile::new(
            "bad-file",
            "[filter]\nports = [5060]\n\n[rate_limit.invite]\nrate = 5\nburst = 0\n",
        );
        let error = args(&["--config", file.path(), "--domain", "a.test"])
            .settings()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} line 6: rate_limit.invite.burst: must be at least 1 (requests a source may send at once, above its rate)",
                file.path()
            )
        );
        // A flag cannot rescue a bad file: the whole file is checked.
        let file = TempFile::new("bad-domain", "[filter]\ndomains = [\"a b\"]\n");
        let error = args(&["--config", file.path(), "--domain", "a.test"])
            .settings()
            .unwrap_err();
        assert!(
            error.to_string().contains("line 2: filter.domains"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_is_a_user_error() {
        let error = args(&["--config", "/nonexistent/sip-filter.toml"])
            .settings()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/sip-filter.toml: cannot be read"),
            "{error}"
        );
    }

    #[test]
    fn bad_flags_are_still_refused() {
        let file = TempFile::new("bad-flag", FILE);
        let error = args(&["--config", file.path(), "--port", "0"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("port 0"), "{error}");
    }

    #[test]
    fn the_example_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sip-filter.toml");
        let settings = args(&["--config", example.to_str().unwrap()])
            .settings()
            .unwrap();
        assert_eq!(settings.domains, ["pbx.example.test", "*.example.test"]);
    }
}
