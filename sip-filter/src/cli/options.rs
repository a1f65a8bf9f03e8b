//! The policy flags `run` and `replay` share: a configuration file and the flags that
//! override it, merged into checked [`Settings`] in one place; and `run`'s own flags,
//! merged with the file's `[daemon]` table into a [`DaemonSetup`].

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use sip_filter::{
    config::{self, parse_net},
    duration,
    pins::default_state_dir,
    settings::{DaemonSettings, MIN_SAVE_INTERVAL},
    AttachMode, NotSipPolicy, Settings,
};

use super::UserError;

#[derive(clap::Args)]
pub struct FilterOptions {
    /// A TOML configuration file (examples/sip-filter.toml documents every key). The
    /// flags below replace the file's value for what they set.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An allowed Request-URI domain: a name (pbx.example.com) or a wildcard
    /// (*.example.com, any subdomain). Repeat for more. None: no domain check.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// One of the server's own addresses, allowed as an IP-literal Request-URI host
    /// (sip:100@198.51.100.7). Repeat for more.
    #[arg(long = "own-address", value_name = "IP")]
    pub own_addresses: Vec<IpAddr>,
    /// A UDP port SIP arrives on. Repeat for more (at most 8). Default: 5060.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// A TCP port carrying SIP in the clear. Repeat for more (at most 8). Default: 5060.
    #[arg(long = "tcp-port", value_name = "PORT")]
    pub tcp_ports: Vec<u16>,
    /// A TCP port carrying SIP over TLS. Repeat for more (at most 8). Default: 5061.
    #[arg(long = "tls-port", value_name = "PORT")]
    pub tls_ports: Vec<u16>,
    /// What to do with payloads on a SIP port that are neither SIP nor keep-alives.
    /// Default: drop.
    #[arg(long, value_enum)]
    pub not_sip_payload: Option<NotSipPolicy>,
    /// Let requests whose Request-URI has no host (tel:, urn:) pass the domain check.
    #[arg(long)]
    pub allow_hostless_uri: bool,
    /// A trusted source network (CIDR or address): never denied or banned. Repeat for more.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_net)]
    pub allow: Vec<IpNet>,
    /// A source network to drop always. Repeat for more.
    #[arg(long = "deny", value_name = "CIDR", value_parser = parse_net)]
    pub deny: Vec<IpNet>,
    /// IPv6 sources are banned by this prefix length. Default: 64.
    #[arg(long, value_name = "BITS")]
    pub ipv6_prefix: Option<u8>,
    /// Enforce even with reserved example domains (*.test, example.com...): for test
    /// labs. Without it `run` refuses them unless in dry-run.
    #[arg(long)]
    pub allow_example_domains: bool,
}

impl FilterOptions {
    /// The configuration file's settings (or the defaults), overridden by the flags given,
    /// all checked: nothing has touched the kernel yet.
    pub fn settings(&self) -> Result<Settings, UserError> {
        let mut settings = match &self.config {
            Some(path) => config::load(path).map_err(|e| UserError(e.to_string()))?,
            None => Settings::default(),
        };
        // A list flag replaces the file's list rather than adding to it.
        if !self.ports.is_empty() {
            settings.ports.clone_from(&self.ports);
        }
        if !self.tcp_ports.is_empty() {
            settings.tcp_ports.clone_from(&self.tcp_ports);
        }
        if !self.tls_ports.is_empty() {
            settings.tls_ports.clone_from(&self.tls_ports);
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
        if self.allow_example_domains {
            settings.allow_example_domains = true;
        }
        settings.validate().map_err(|e| UserError(e.to_string()))?;
        Ok(settings)
    }

    /// [`Self::settings`], refused if they are not fit to enforce on live traffic
    /// ([`Settings::check_enforceable`]): what `run` and its reloads apply.
    pub fn enforceable_settings(&self) -> Result<Settings, UserError> {
        let settings = self.settings()?;
        settings.check_enforceable().map_err(|e| {
            match (&self.config, self.domains.is_empty()) {
                // The domains are the file's: say which file to edit.
                (Some(path), true) => UserError(format!("{}: {e}", path.display())),
                _ => UserError(e.to_string()),
            }
        })?;
        Ok(settings)
    }
}

/// `run`'s own flags: each replaces the file's `[daemon]` key of the same name.
#[derive(clap::Args)]
pub struct DaemonOptions {
    /// An interface SIP traffic arrives on. Repeat for more: they share one program and
    /// one set of maps (a source banned on one is banned on all, one bucket per source).
    /// Default: the file's daemon.interfaces; one or the other is required.
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// auto: native, falling back to generic (skb) mode with a warning. Default: the
    /// file's daemon.xdp_mode, else auto.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<AttachMode>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (like 127.0.0.1:9184).
    /// Default: the file's daemon.metrics_addr, else not served.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Directory of the state file (bans and operator entries kept across restarts).
    /// Default: the file's daemon.state_dir, else /var/lib/ and the pin root's last
    /// component, /var/lib/sip-filter.
    #[arg(long, env = "SIP_FILTER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How often the state file is written while running (it is also written on stop),
    /// like 30s, 1m or 5m (a bare number is seconds): what a crash can lose. Expired
    /// operator allow/deny entries are removed as often. Default: the file's
    /// daemon.save_interval, else 1m.
    #[arg(long, value_name = "DURATION", value_parser = save_interval)]
    pub save_interval: Option<Duration>,
}

/// How often the state file is written when neither the flag nor the file says.
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(60);

fn save_interval(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        interval if interval >= MIN_SAVE_INTERVAL => Ok(interval),
        _ => Err(format!(
            "{text:?} is too short: give at least 1s (the state file is written at most once a second)"
        )),
    }
}

/// What the daemon runs with: its flags over the file's `[daemon]` table over the
/// defaults. Fixed at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSetup {
    pub interfaces: Vec<String>,
    pub xdp_mode: AttachMode,
    pub metrics_addr: Option<String>,
    pub state_dir: PathBuf,
    pub save_interval: Duration,
}

impl DaemonOptions {
    /// The flags given over `file` (the configuration's `[daemon]`), over the defaults;
    /// the state directory's is named after `pin_root`.
    pub fn setup(&self, file: &DaemonSettings, pin_root: &Path) -> Result<DaemonSetup, UserError> {
        let interfaces = if self.ifaces.is_empty() {
            file.interfaces.clone()
        } else {
            self.ifaces.clone()
        };
        if interfaces.is_empty() {
            return Err(UserError(
                "no interface to attach to: give --iface IFACE, or daemon.interfaces in the configuration file".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = interfaces.iter().find(|iface| !seen.insert(*iface)) {
            return Err(UserError(format!("--iface {twice} is given twice")));
        }
        Ok(DaemonSetup {
            interfaces,
            xdp_mode: self.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
            metrics_addr: self.metrics_addr.clone().or(file.metrics_addr.clone()),
            state_dir: self
                .state_dir
                .clone()
                .or(file.state_dir.clone())
                .unwrap_or_else(|| default_state_dir(pin_root)),
            save_interval: self
                .save_interval
                .or(file.save_interval)
                .unwrap_or(DEFAULT_SAVE_INTERVAL),
        })
    }
}

impl DaemonSetup {
    /// What differs in `next` (a reloaded file's), one line per setting: none of them
    /// can change while the daemon runs.
    pub fn changes(&self, next: &DaemonSetup) -> Vec<String> {
        fn change<T: PartialEq>(
            key: &str,
            now: &T,
            next: &T,
            show: impl Fn(&T) -> String,
        ) -> Option<String> {
            (now != next).then(|| format!("daemon.{key} ({} to {})", show(now), show(next)))
        }
        let mode = |mode: &AttachMode| {
            clap::ValueEnum::to_possible_value(mode)
                .map_or_else(String::new, |value| value.get_name().to_string())
        };
        [
            change("interfaces", &self.interfaces, &next.interfaces, |list| {
                list.join(",")
            }),
            change("xdp_mode", &self.xdp_mode, &next.xdp_mode, mode),
            change(
                "metrics_addr",
                &self.metrics_addr,
                &next.metrics_addr,
                |address| address.clone().unwrap_or_else(|| "not served".into()),
            ),
            change("state_dir", &self.state_dir, &next.state_dir, |dir| {
                dir.display().to_string()
            }),
            change(
                "save_interval",
                &self.save_interval,
                &next.save_interval,
                |interval| format!("{interval:?}"),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::Parser;
    use sip_filter::settings::RateLimit;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        filter: FilterOptions,
        #[command(flatten)]
        daemon: DaemonOptions,
    }

    fn command(flags: &[&str]) -> Command {
        let argv = ["sip-filter"].iter().chain(flags);
        Command::try_parse_from(argv).unwrap()
    }

    fn args(flags: &[&str]) -> FilterOptions {
        command(flags).filter
    }

    /// What `run` would start with, given `flags`.
    fn setup(flags: &[&str]) -> Result<DaemonSetup, UserError> {
        let command = command(flags);
        let settings = command.filter.settings()?;
        command
            .daemon
            .setup(&settings.daemon, Path::new("/sys/fs/bpf/sip-filter"))
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
not_sip_payload = "pass"
allow_hostless_uri = true
dry_run = true
ipv6_prefix = 48

[rate_limit.invite]
rate = 3
burst = 6

[lists]
allow = ["203.0.113.0/24"]
deny = ["192.0.2.0/24"]

[daemon]
interfaces = ["eth1", "eth2"]
xdp_mode = "skb"
metrics_addr = "127.0.0.1:9100"
state_dir = "/srv/sip-filter"
save_interval = "5m"
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
    fn the_daemon_runs_with_the_files_settings_where_no_flag_is_given() {
        let file = TempFile::new("daemon-file", FILE);
        assert_eq!(
            setup(&["--config", file.path()]).unwrap(),
            DaemonSetup {
                interfaces: vec!["eth1".into(), "eth2".into()],
                xdp_mode: AttachMode::Skb,
                metrics_addr: Some("127.0.0.1:9100".into()),
                state_dir: PathBuf::from("/srv/sip-filter"),
                save_interval: Duration::from_secs(300),
            }
        );
        // Without a file: the flags, else the defaults.
        assert_eq!(
            setup(&["--iface", "eth0"]).unwrap(),
            DaemonSetup {
                interfaces: vec!["eth0".into()],
                xdp_mode: AttachMode::Auto,
                metrics_addr: None,
                state_dir: PathBuf::from("/var/lib/sip-filter"),
                save_interval: DEFAULT_SAVE_INTERVAL,
            }
        );
    }

    #[test]
    fn daemon_flags_override_the_file() {
        let file = TempFile::new("daemon-flags", FILE);
        let overridden = setup(&[
            "--config",
            file.path(),
            "--iface",
            "eth0",
            "--xdp-mode",
            "native",
            "--metrics-addr",
            "[::1]:9184",
            "--state-dir",
            "/var/lib/other",
            "--save-interval",
            "59m 58s",
        ])
        .unwrap();
        assert_eq!(
            overridden,
            DaemonSetup {
                interfaces: vec!["eth0".into()],
                xdp_mode: AttachMode::Native,
                metrics_addr: Some("[::1]:9184".into()),
                state_dir: PathBuf::from("/var/lib/other"),
                save_interval: Duration::from_secs(3598),
            }
        );
        // One flag overrides its key alone.
        let one = setup(&["--config", file.path(), "--xdp-mode", "auto"]).unwrap();
        assert_eq!(one.xdp_mode, AttachMode::Auto);
        assert_eq!(one.interfaces, ["eth1", "eth2"]);
        // A bare number is seconds, as --save-interval took first.
        let seconds = setup(&["--config", file.path(), "--save-interval", "30"]).unwrap();
        assert_eq!(seconds.save_interval, Duration::from_secs(30));
    }

    #[test]
    fn an_interface_is_needed_from_the_flags_or_the_file_and_once() {
        let error = setup(&[]).unwrap_err().to_string();
        assert!(
            error.contains("give --iface IFACE, or daemon.interfaces"),
            "{error}"
        );
        let error = setup(&["--iface", "eth0", "--iface", "eth0"])
            .unwrap_err()
            .to_string();
        assert_eq!(error, "--iface eth0 is given twice");
        for bad in ["0", "500ms", "1x"] {
            let argv = ["sip-filter", "--iface", "eth0", "--save-interval", bad];
            assert!(Command::try_parse_from(argv).is_err(), "{bad}");
        }
    }

    /// A reload names each daemon setting the file changed: none applies before a restart.
    #[test]
    fn changed_daemon_settings_are_named() {
        let file = TempFile::new("daemon-changes", FILE);
        let running = setup(&["--config", file.path()]).unwrap();
        assert!(running.changes(&running.clone()).is_empty());
        let edited = TempFile::new(
            "daemon-changes-edited",
            &FILE
                .replace("\"eth1\", \"eth2\"", "\"eth1\"")
                .replace("\"skb\"", "\"native\""),
        );
        let next = setup(&["--config", edited.path()]).unwrap();
        assert_eq!(
            running.changes(&next),
            [
                "daemon.interfaces (eth1,eth2 to eth1)",
                "daemon.xdp_mode (skb to native)",
            ]
        );
        // A flag holds its setting whatever the file says.
        let pinned = setup(&[
            "--config",
            edited.path(),
            "--iface",
            "eth1",
            "--iface",
            "eth2",
        ])
        .unwrap();
        assert_eq!(
            running.changes(&pinned),
            ["daemon.xdp_mode (skb to native)"]
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
        // Safe as installed: nothing site-specific is set, so the defaults apply.
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn example_domains_are_refused_for_enforcing_with_the_file_named() {
        let file = TempFile::new(
            "example-domains",
            "[filter]\ndomains = [\"pbx.example.test\"]\n",
        );
        // Judging a capture (`replay`) may use them.
        args(&["--config", file.path()]).settings().unwrap();
        let error = args(&["--config", file.path()])
            .enforceable_settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "{}: filter.domains has reserved example domains (pbx.example.test)",
                file.path()
            )),
            "{error}"
        );
        let error = args(&["--domain", "*.example.com"])
            .enforceable_settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("filter.domains has reserved example domains (*.example.com)"),
            "{error}"
        );
        for allowed in [
            args(&["--config", file.path(), "--allow-example-domains"]),
            args(&["--domain", "pbx.example.test", "--allow-example-domains"]),
        ] {
            assert!(allowed.enforceable_settings().is_ok());
        }
    }
}
