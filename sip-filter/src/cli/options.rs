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
