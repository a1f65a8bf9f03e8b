//! The policy flags `run` and `replay` share: a configuration file and the flags that
//! override it, merged into checked [`Settings`] in one place.

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use sip_filter::{
    config::{self, parse_net},
    NotSipPolicy, Settings,
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
    }

    fn args(flags: &[&str]) -> FilterOptions {
        let argv = ["sip-filter"].iter().chain(flags);
        Command::try_parse_from(argv).unwrap().filter
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
