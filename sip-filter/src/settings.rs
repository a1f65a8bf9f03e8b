//! What an operator configures, validated before anything touches the kernel.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use sip_filter_common::{
    domain::{allowlist_key, DOMAIN_SNI_EXACT, DOMAIN_SNI_WILDCARD, DOMAIN_WILDCARD},
    maps::{
        AuthConfig, BanConfig, FilterConfig, Limit, CLASS_ANSWERS, CLASS_CONNECTIONS, CLASS_INVITE,
        CLASS_OTHER, CLASS_REGISTER, CLASS_REGISTERED, CLASS_TRUSTED, DEFAULT_IPV6_PREFIX,
        FLAG_ALLOW_HOSTLESS_URI, FLAG_ANSWERS, FLAG_DOMAIN_CHECK, FLAG_DROP_FRAGMENTS,
        FLAG_DROP_NOT_SIP_PAYLOAD, FLAG_DRY_RUN, MAX_DOMAINS, MAX_LIST_ENTRIES, MAX_OWN_ADDRESSES,
        MAX_PORTS, MAX_SCANNER_AGENTS, MAX_SCANNER_AGENT_LEN, MAX_SOURCES,
    },
    maps::{TlsConfig, TLS_DROP_NO_SNI, TLS_SNI_CHECK, TLS_SNI_OWN_LIST},
    scanner::{agent_key, agent_pattern},
    sip::{mapped_ipv4, Method},
};

use crate::filter::AttachMode;

/// What to do with a payload on a SIP port that is not SIP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NotSipPolicy {
    /// Drop it: nothing but SIP and keep-alives is expected on a SIP port.
    #[default]
    Drop,
    /// Let it through to the server.
    Pass,
}

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub burst: u32,
}

/// The request classes each source has a bucket for; `None` is no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub register: Option<RateLimit>,
    pub invite: Option<RateLimit>,
    /// Every other request method.
    pub other: Option<RateLimit>,
    /// Trusted (allow-listed) sources: their own optional bucket, all methods.
    pub trusted: Option<RateLimit>,
    /// What an untrusted source sends that is not a request: SIP responses and
    /// keep-alives (CRLF, STUN), one bucket. Trusted sources are not metered in it.
    pub answers: Option<RateLimit>,
    /// All untrusted sources together: caps a distributed flood.
    pub untrusted_total: Option<RateLimit>,
    /// Registered sources (learnt from the server's answers): their own bucket, all
    /// methods, instead of the untrusted budget.
    pub registered: Option<RateLimit>,
    /// New TCP connections (a SYN without ACK) to the TCP and TLS SIP ports, per
    /// untrusted source. Trusted sources are not metered.
    pub connections: Option<RateLimit>,
    /// New TCP connections of all untrusted sources together.
    pub untrusted_connections: Option<RateLimit>,
}

/// What the server's answers lead to (issue 13; README, "Learning from answers"). A
/// threshold of 0 turns its rule off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRules {
    /// Pair answers with requests and learn from them at all.
    pub learn: bool,
    /// This many failed passwords of one account from one source within the window lock
    /// that account for that source...
    pub lockout_failures: u32,
    pub lockout_window_seconds: u32,
    /// ...for this long.
    pub lockout_seconds: u32,
    /// This many failed passwords from one unregistered source (any accounts, counting
    /// attempts a lockout dropped) within the window ban it (reason `auth`)...
    pub ban_failures: u32,
    pub ban_window_seconds: u32,
    /// ...for this long.
    pub ban_seconds: u32,
    /// This many distinct accounts failed or refused from one unregistered source
    /// within the window ban it (reason `enumeration`)...
    pub enumeration_users: u32,
    pub enumeration_window_seconds: u32,
    /// ...for this long.
    pub enumeration_seconds: u32,
    /// This many failed passwords of one account from all sources together within the
    /// window lock it for every source neither registered nor allow-listed...
    pub account_failures: u32,
    pub account_window_seconds: u32,
    /// ...for this long.
    pub account_lockout_seconds: u32,
    /// The longest a registration makes its source registered.
    pub registration_cap_seconds: u32,
    /// Strict mode: these methods are dropped from sources neither registered nor
    /// allow-listed. Empty: off.
    pub strict_methods: Vec<Method>,
}

impl Default for AuthRules {
    /// The anchors (README, "Learning from answers"): fail2ban bans after 10 failures in
    /// 10 minutes, CrowdSec after 5 and after 5 distinct users, Kamailio's htable recipe
    /// locks an account after 3 failures for 15 minutes.
    fn default() -> Self {
        Self {
            learn: true,
            lockout_failures: 5,
            lockout_window_seconds: 600,
            lockout_seconds: 900,
            ban_failures: 10,
            ban_window_seconds: 600,
            ban_seconds: 3600,
            enumeration_users: 10,
            enumeration_window_seconds: 600,
            enumeration_seconds: 3600,
            account_failures: 20,
            account_window_seconds: 600,
            account_lockout_seconds: 900,
            registration_cap_seconds: 3600,
            strict_methods: Vec::new(),
        }
    }
}

impl AuthRules {
    /// Learning off: answers are not looked at.
    pub fn off() -> Self {
        Self {
            learn: false,
            ..Self::default()
        }
    }
}

/// When sources are banned automatically. A zero turns a rule off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRules {
    /// A scanner User-Agent bans its source for this long.
    pub scanner_seconds: u32,
    /// This many unknown-domain requests within the window ban a source...
    pub unknown_domain_hits: u32,
    pub unknown_domain_window_seconds: u32,
    /// ...for this long.
    pub unknown_domain_seconds: u32,
    /// This many requests over a source's rate limit within the window ban it...
    pub rate_overflow_hits: u32,
    pub rate_overflow_window_seconds: u32,
    /// ...for this long.
    pub rate_overflow_seconds: u32,
    /// This many SYNs over a source's connection bucket within the window ban it...
    pub connection_overflow_hits: u32,
    pub connection_overflow_window_seconds: u32,
    /// ...for this long; 0 (the default) leaves the rule off: a SYN's source address is
    /// unproven (README, "Connection rate").
    pub connection_overflow_seconds: u32,
    /// Repeat offenders: a source banned again within this window of its last automatic
    /// ban's end is banned this many times as long as that ban (0 or 1: off)...
    pub repeat_factor: u32,
    pub repeat_window_seconds: u32,
    /// ...up to this long.
    pub repeat_max_seconds: u32,
}

impl RateLimits {
    /// No limit on any class: for measuring the program, and tests of other rules.
    pub const fn none() -> Self {
        Self {
            register: None,
            invite: None,
            other: None,
            trusted: None,
            answers: None,
            untrusted_total: None,
            registered: None,
            connections: None,
            untrusted_connections: None,
        }
    }

    /// What a source gets when the configuration says nothing: room for an office of
    /// 50 phones behind one NAT address (README, "Sizing rate limits"), while a flood
    /// from one address is dropped past its burst and then banned by the overflow rule.
    pub const fn built_in() -> Self {
        Self {
            // Cold boot or a re-registration storm: a REGISTER and its answer to the
            // challenge per phone, 2 x 50, and a fifth more for softphones and retries.
            register: Some(RateLimit {
                rate: 10,
                burst: 120,
            }),
            // A call is an INVITE and its answer to the challenge: 25 call attempts at
            // once from one address; toll fraud trying numbers is held to 10 a second.
            invite: Some(RateLimit {
                rate: 10,
                burst: 50,
            }),
            // A cold-booting phone subscribes to its BLF keys (5 SUBSCRIBEs each: 250
            // for 50 phones), besides OPTIONS, NOTIFY and in-dialog requests.
            other: Some(RateLimit {
                rate: 50,
                burst: 300,
            }),
            // Only against a trusted peer running away: a PBX qualifying 2,000
            // extensions with OPTIONS at once passes twice over.
            trusted: Some(RateLimit {
                rate: 1000,
                burst: 4000,
            }),
            // Responses and keep-alives: after a power cut every phone answers the
            // server's qualify OPTIONS, its MWI NOTIFY and the first NOTIFY of each of
            // 5 BLF subscriptions (7 x 50), besides a keep-alive each: 8 x 50 at once.
            // A busy office answers about 20 a second; a flood of answers from one
            // address is held to 50 a second (README, "Sizing rate limits").
            answers: Some(RateLimit {
                rate: 50,
                burst: 400,
            }),
            // What the server can answer is not knowable here: off unless configured.
            untrusted_total: None,
            // An office of 50 phones that holds a registration and re-registers within
            // 2 s after an outage: per phone a REGISTER, its answer to the challenge
            // and 5 BLF SUBSCRIBEs, 7 x 50 = 350, with room to spare.
            registered: Some(RateLimit {
                rate: 50,
                burst: 400,
            }),
            // New connections: an office of 50 phones behind one address reconnecting
            // after an outage, over TCP and TLS or with a retransmitted SYN each, at
            // once: 2 x 50. Sustained, twice what 50 phones need that each reconnect
            // every 50 s (README, "Connection rate").
            connections: Some(RateLimit {
                rate: 2,
                burst: 100,
            }),
            // All untrusted sources: 5,000 phones reconnecting at once after an outage,
            // then 500 TLS handshakes a second (about half a core of the server's).
            untrusted_connections: Some(RateLimit {
                rate: 500,
                burst: 5000,
            }),
        }
    }
}

impl BanRules {
    /// No automatic bans (the durations and windows keep their defaults).
    pub fn off() -> Self {
        Self {
            scanner_seconds: 0,
            unknown_domain_hits: 0,
            rate_overflow_hits: 0,
            ..Self::default()
        }
    }
}

impl Default for BanRules {
    fn default() -> Self {
        Self {
            scanner_seconds: 3600,
            unknown_domain_hits: 5,
            unknown_domain_window_seconds: 60,
            unknown_domain_seconds: 600,
            rate_overflow_hits: 100,
            rate_overflow_window_seconds: 10,
            rate_overflow_seconds: 300,
            // FreePBX's anchor: 100 connections in 300 s block the source. Off (no
            // duration) unless configured.
            connection_overflow_hits: 100,
            connection_overflow_window_seconds: 300,
            connection_overflow_seconds: 0,
            // fail2ban's recidive jail: 5 bans within a day ban for a week. Here each ban
            // within a day of the last doubles, so the fifth 10-minute ban lasts 160 min
            // and a persistent scanner reaches the week after a dozen.
            repeat_factor: 2,
            repeat_window_seconds: 86_400,
            repeat_max_seconds: 7 * 86_400,
        }
    }
}

/// User-Agent prefixes of SIP scanners, from the public community lists. Matched
/// case-insensitively against the start of the User-Agent value. Tools that operators
/// also use for legitimate tests (sipsak, PortSIP softphones) are left out.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "vaxsipuseragent",
    "pplsip",
    "sundayddr",
    "iwar",
    "smap",
    "sipptk",
    "siparmyknife",
    "voiper",
    "sipsscan",
];

/// The daemon's own settings, from the file's `[daemon]` table: where and how `run`
/// attaches, serves metrics and keeps its state. Each is read at start only; the flags
/// of `run` override them. Empty or `None`: not in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The interfaces SIP arrives on (`--iface`).
    pub interfaces: Vec<String>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<AttachMode>,
    /// Where Prometheus metrics are served, `HOST:PORT` (`--metrics-addr`).
    pub metrics_addr: Option<String>,
    /// The state file's directory (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// How often the state file is written (`--save-interval`).
    pub save_interval: Option<Duration>,
}

/// The state file is written at most this often.
pub const MIN_SAVE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Destination UDP ports carrying SIP.
    pub ports: Vec<u16>,
    /// Destination TCP ports carrying SIP in the clear: the source policy applies to
    /// every segment, and requests that start a segment are judged as over UDP. Empty:
    /// TCP is not inspected.
    pub tcp_ports: Vec<u16>,
    /// Destination TCP ports carrying SIP over TLS: the source policy applies to every
    /// segment. Empty: not inspected.
    pub tls_ports: Vec<u16>,
    /// Allowed Request-URI domains: exact names and `*.suffix` wildcards. Empty turns
    /// the domain check off.
    pub domains: Vec<String>,
    /// The server's own addresses, allowed as IP-literal Request-URI hosts.
    pub own_addresses: Vec<IpAddr>,
    pub not_sip_payload: NotSipPolicy,
    /// Let Request-URIs without a host (`tel:`, `urn:`) through the domain check.
    pub allow_hostless_uri: bool,
    /// Drop every first fragment from untrusted sources, rather than judging those
    /// that show a whole start line (later fragments go with their first).
    pub drop_fragments: bool,
    /// Trusted sources: never denied or banned.
    pub allow: Vec<IpNet>,
    /// Sources always dropped.
    pub deny: Vec<IpNet>,
    /// IPv6 sources are tracked and banned by this prefix (attackers rotate inside it).
    pub ipv6_prefix: u8,
    /// Every drop becomes a pass, counted as a would-drop; bans become would-bans.
    pub dry_run: bool,
    /// Enforce even with reserved example domains (`*.test`, `example.com`) in
    /// `domains`: for test labs. Without it the daemon refuses to enforce them, since an
    /// example left in a copied configuration drops every real request.
    pub allow_example_domains: bool,
    /// Sources whose buckets and strike windows the kernel keeps (an LRU: more sources
    /// push out the least recently seen). Fixed when the program loads.
    pub tracked_sources: u32,
    pub rate_limits: RateLimits,
    /// Scanner User-Agent prefixes (case-insensitive): the built-in list, or the file's
    /// `scanner.user_agents` instead, and `scanner.extra_user_agents` added to either.
    pub scanner_user_agents: Vec<String>,
    pub ban: BanRules,
    /// The `[answers]` table: what the server's answers lead to.
    pub auth: AuthRules,
    /// The `[crowdsec]` table: pull CrowdSec's decisions (and push the filter's bans).
    pub crowdsec: Option<crate::crowdsec::settings::CrowdsecSettings>,
    /// The `[countries]` table: deny sources by country, from a country database.
    pub countries: Option<crate::countries::CountrySettings>,
    /// The `[daemon]` table: read by `run` at start, ignored by `replay`.
    pub daemon: DaemonSettings,
    /// The `[destinations]` table: destination rules and per-account call budgets.
    pub destinations: Option<crate::destinations::DestinationSettings>,
    /// The `[tls]` table, and its ban rule from `[ban]` (issue 14, item 4).
    pub tls: TlsRules,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ports: vec![5060],
            tcp_ports: vec![5060],
            tls_ports: vec![5061],
            domains: Vec::new(),
            own_addresses: Vec::new(),
            not_sip_payload: NotSipPolicy::Drop,
            allow_hostless_uri: false,
            drop_fragments: false,
            allow: Vec::new(),
            deny: Vec::new(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX as u8,
            dry_run: false,
            allow_example_domains: false,
            tracked_sources: MAX_SOURCES,
            rate_limits: RateLimits::built_in(),
            scanner_user_agents: DEFAULT_SCANNER_USER_AGENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ban: BanRules::default(),
            auth: AuthRules::default(),
            crowdsec: None,
            countries: None,
            daemon: DaemonSettings::default(),
            destinations: None,
            tls: TlsRules::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("no SIP port given: name at least one (the default is 5060)")]
    NoPorts,
    #[error("{count} SIP ports given, at most {MAX_PORTS} are supported")]
    TooManyPorts { count: usize },
    #[error("port 0 is not a port a SIP server can listen on")]
    PortZero,
    #[error("{count} {transport} ports given, at most {MAX_PORTS} are supported")]
    TooManyTransportPorts {
        transport: &'static str,
        count: usize,
    },
    #[error("{transport} port 0 is not a port a SIP server can listen on")]
    TransportPortZero { transport: &'static str },
    #[error("domain {entry:?} cannot be allowed: write a name like pbx.example.com or a wildcard like *.example.com")]
    BadDomain { entry: String },
    #[error("{count} domains given, at most {MAX_DOMAINS} are supported")]
    TooManyDomains { count: usize },
    #[error("{count} own addresses given, at most {MAX_OWN_ADDRESSES} are supported")]
    TooManyAddresses { count: usize },
    #[error("the {list} list has {count} entries of one address family, at most {MAX_LIST_ENTRIES} are supported")]
    TooManyListEntries { list: &'static str, count: usize },
    #[error("rate limit {class}: rate and burst must both be at least 1 (got rate {rate}, burst {burst})")]
    BadRateLimit {
        class: &'static str,
        rate: u32,
        burst: u32,
    },
    #[error("scanner User-Agent {agent:?}: give 1 to {MAX_SCANNER_AGENT_LEN} bytes")]
    BadScannerAgent { agent: String },
    #[error("{count} scanner User-Agents given, at most {MAX_SCANNER_AGENTS} are supported")]
    TooManyScannerAgents { count: usize },
    #[error("IPv6 prefix /{prefix} cannot key sources: give 1 to 128 (the default, 64, groups the addresses of one customer network)")]
    BadIpv6Prefix { prefix: u8 },
    #[error("filter.domains has reserved example domains ({}) that no real server is reached by: an example left in place would drop every real request and ban its source. Write your own domains; or set filter.dry_run = true to only count; or, for a test lab, filter.allow_example_domains = true (--allow-example-domains)", domains.join(", "))]
    ExampleDomains { domains: Vec<String> },
    #[error("tls.server_names {entry:?} cannot be allowed: write a name like pbx.example.com or a wildcard like *.example.com")]
    BadServerName { entry: String },
    #[error("{count} domains and TLS server names given, at most {MAX_DOMAINS} are supported")]
    TooManyServerNames { count: usize },
    #[error("{count} tracked sources: give {} to {} (the default is {MAX_SOURCES}; each costs about 330 bytes of kernel memory)", TRACKED_SOURCES.start(), TRACKED_SOURCES.end())]
    BadTrackedSources { count: u32 },
}

/// How many sources the kernel may be asked to track: enough for a small site, at most
/// about 600 MB of kernel memory.
pub const TRACKED_SOURCES: std::ops::RangeInclusive<u32> = 1024..=(1 << 22);

/// The kernel's view of [`Settings`]: the config entry and the map contents.
pub struct KernelSettings {
    pub config: FilterConfig,
    /// Domain map entries: key and flags (several entries may share a key).
    pub domains: Vec<(u64, u8)>,
    /// Own addresses, IPv4 mapped into IPv6.
    pub own_addresses: Vec<[u8; 16]>,
    /// Scanner User-Agent entries: key and kind (see `sip_filter_common::scanner`).
    pub scanner_agents: Vec<(u64, u8)>,
}

impl Settings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.to_kernel(0).map(|_| ())
    }

    /// Whether these settings may be enforced on live traffic (`run`; `replay` judges a
    /// capture and may use anything): not with reserved example domains, unless in
    /// dry-run or told so.
    pub fn check_enforceable(&self) -> Result<(), SettingsError> {
        if self.dry_run || self.allow_example_domains {
            return Ok(());
        }
        let domains: Vec<String> = self
            .domains
            .iter()
            .filter(|entry| is_example_domain(entry))
            .cloned()
            .collect();
        if domains.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::ExampleDomains { domains })
        }
    }

    /// Converts to what the kernel program reads, hashing domains with `seed`.
    pub fn to_kernel(&self, seed: u64) -> Result<KernelSettings, SettingsError> {
        if self.ports.is_empty() {
            return Err(SettingsError::NoPorts);
        }
        if self.ports.len() > MAX_PORTS {
            return Err(SettingsError::TooManyPorts {
                count: self.ports.len(),
            });
        }
        if self.ports.contains(&0) {
            return Err(SettingsError::PortZero);
        }
        for (transport, ports) in [("TCP", &self.tcp_ports), ("TLS", &self.tls_ports)] {
            if ports.len() > MAX_PORTS {
                return Err(SettingsError::TooManyTransportPorts {
                    transport,
                    count: ports.len(),
                });
            }
            if ports.contains(&0) {
                return Err(SettingsError::TransportPortZero { transport });
            }
        }
        if self.domains.len() > MAX_DOMAINS as usize {
            return Err(SettingsError::TooManyDomains {
                count: self.domains.len(),
            });
        }
        if self.own_addresses.len() > MAX_OWN_ADDRESSES as usize {
            return Err(SettingsError::TooManyAddresses {
                count: self.own_addresses.len(),
            });
        }
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            let v4 = entries.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
            let count = v4.max(entries.len() - v4);
            if count > MAX_LIST_ENTRIES as usize {
                return Err(SettingsError::TooManyListEntries { list, count });
            }
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(SettingsError::BadIpv6Prefix {
                prefix: self.ipv6_prefix,
            });
        }
        if !TRACKED_SOURCES.contains(&self.tracked_sources) {
            return Err(SettingsError::BadTrackedSources {
                count: self.tracked_sources,
            });
        }
        let mut domains: Vec<(u64, u8)> = Vec::with_capacity(self.domains.len());
        for entry in &self.domains {
            if !is_domain_entry(entry) {
                return Err(SettingsError::BadDomain {
                    entry: entry.clone(),
                });
            }
            let (key, flag) =
                allowlist_key(entry, seed).ok_or_else(|| SettingsError::BadDomain {
                    entry: entry.clone(),
                })?;
            // `example.com` and `*.example.com` share a key: merge their flags.
            match domains.iter_mut().find(|(k, _)| *k == key) {
                Some((_, flags)) => *flags |= flag,
                None => domains.push((key, flag)),
            }
        }
        let mut config = FilterConfig {
            port_count: self.ports.len() as u32,
            domain_seed: seed,
            ipv6_prefix: u32::from(self.ipv6_prefix),
            ..FilterConfig::default()
        };
        for (slot, port) in config.ports.iter_mut().zip(&self.ports) {
            *slot = *port;
        }
        config.tcp_port_count = self.tcp_ports.len() as u32;
        for (slot, port) in config.tcp_ports.iter_mut().zip(&self.tcp_ports) {
            *slot = *port;
        }
        config.tls_port_count = self.tls_ports.len() as u32;
        for (slot, port) in config.tls_ports.iter_mut().zip(&self.tls_ports) {
            *slot = *port;
        }
        if !domains.is_empty() {
            config.flags |= FLAG_DOMAIN_CHECK;
        }
        if self.not_sip_payload == NotSipPolicy::Drop {
            config.flags |= FLAG_DROP_NOT_SIP_PAYLOAD;
        }
        if self.allow_hostless_uri {
            config.flags |= FLAG_ALLOW_HOSTLESS_URI;
        }
        if self.drop_fragments {
            config.flags |= FLAG_DROP_FRAGMENTS;
        }
        for (class, index, limit) in [
            ("register", CLASS_REGISTER, self.rate_limits.register),
            ("invite", CLASS_INVITE, self.rate_limits.invite),
            ("other", CLASS_OTHER, self.rate_limits.other),
            ("trusted", CLASS_TRUSTED, self.rate_limits.trusted),
            ("answers", CLASS_ANSWERS, self.rate_limits.answers),
            ("registered", CLASS_REGISTERED, self.rate_limits.registered),
            (
                "connections",
                CLASS_CONNECTIONS,
                self.rate_limits.connections,
            ),
        ] {
            config.limits[index] = kernel_limit(class, limit)?;
        }
        config.untrusted_total = kernel_limit("untrusted_total", self.rate_limits.untrusted_total)?;
        config.untrusted_connections = kernel_limit(
            "untrusted_connections",
            self.rate_limits.untrusted_connections,
        )?;
        let seconds = |s: u32| u64::from(s) * 1_000_000_000;
        config.bans = BanConfig {
            scanner_ns: seconds(self.ban.scanner_seconds),
            unknown_domain_ns: seconds(self.ban.unknown_domain_seconds),
            unknown_domain_window_ns: seconds(self.ban.unknown_domain_window_seconds),
            rate_overflow_ns: seconds(self.ban.rate_overflow_seconds),
            rate_overflow_window_ns: seconds(self.ban.rate_overflow_window_seconds),
            unknown_domain_hits: self.ban.unknown_domain_hits,
            rate_overflow_hits: self.ban.rate_overflow_hits,
            connection_overflow_ns: seconds(self.ban.connection_overflow_seconds),
            connection_overflow_window_ns: seconds(self.ban.connection_overflow_window_seconds),
            connection_overflow_hits: self.ban.connection_overflow_hits,
            repeat_factor: self.ban.repeat_factor,
            repeat_window_ns: seconds(self.ban.repeat_window_seconds),
            repeat_max_ns: seconds(self.ban.repeat_max_seconds),
        };
        if self.dry_run {
            config.flags |= FLAG_DRY_RUN;
        }
        if self.auth.learn {
            config.flags |= FLAG_ANSWERS;
        }
        let auth = &self.auth;
        config.auth = AuthConfig {
            lockout_failures: auth.lockout_failures,
            ban_failures: auth.ban_failures,
            lockout_window_ns: seconds(auth.lockout_window_seconds),
            lockout_ns: seconds(auth.lockout_seconds),
            ban_window_ns: seconds(auth.ban_window_seconds),
            ban_ns: seconds(auth.ban_seconds),
            enumeration_users: auth.enumeration_users,
            account_failures: auth.account_failures,
            enumeration_window_ns: seconds(auth.enumeration_window_seconds),
            enumeration_ns: seconds(auth.enumeration_seconds),
            account_window_ns: seconds(auth.account_window_seconds),
            account_lockout_ns: seconds(auth.account_lockout_seconds),
            registration_cap_ns: seconds(auth.registration_cap_seconds),
            strict_methods: auth
                .strict_methods
                .iter()
                .fold(0, |bits, method| bits | 1 << (*method as u32)),
            _pad: 0,
        };
        if self.scanner_user_agents.len() > MAX_SCANNER_AGENTS as usize {
            return Err(SettingsError::TooManyScannerAgents {
                count: self.scanner_user_agents.len(),
            });
        }
        let mut scanner_agents = Vec::with_capacity(self.scanner_user_agents.len());
        for agent in &self.scanner_user_agents {
            let (prefix, kind) = agent_pattern(agent);
            let (key, len, slot) =
                agent_key(prefix, seed).ok_or_else(|| SettingsError::BadScannerAgent {
                    agent: agent.clone(),
                })?;
            scanner_agents.push((key, kind));
            config.scanner_lengths[slot] |= 1 << len;
        }
        let own_addresses = self
            .own_addresses
            .iter()
            .map(|address| match address {
                IpAddr::V4(v4) => mapped_ipv4(v4.octets()),
                IpAddr::V6(v6) => v6.octets(),
            })
            .collect();
        config.tls = self.tls.to_kernel(seed, &self.domains, &mut domains)?;
        Ok(KernelSettings {
            config,
            domains,
            own_addresses,
            scanner_agents,
        })
    }
}

fn kernel_limit(class: &'static str, limit: Option<RateLimit>) -> Result<Limit, SettingsError> {
    match limit {
        None => Ok(Limit::NONE),
        Some(RateLimit { rate, burst }) if rate >= 1 && burst >= 1 => Ok(Limit::new(rate, burst)),
        Some(RateLimit { rate, burst }) => Err(SettingsError::BadRateLimit { class, rate, burst }),
    }
}

/// Names reserved for examples and tests, never a real server's (RFC 2606, RFC 6761),
/// with every name under them.
const EXAMPLE_DOMAINS: &[&str] = &[
    "test",
    "example",
    "invalid",
    "localhost",
    "example.com",
    "example.net",
    "example.org",
];

/// Whether a domain entry (`pbx.example.test`, `*.example.com`) lies in a reserved
/// example domain.
pub fn is_example_domain(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    EXAMPLE_DOMAINS.iter().any(|reserved| {
        name == *reserved
            || name
                .strip_suffix(reserved)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

/// A host name (RFC 3261 `hostname`, letters, digits, `-` and `.`), optionally preceded
/// by `*.`.
fn is_domain_entry(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_domains(domains: &[&str]) -> Settings {
        Settings {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn good_domains_are_accepted() {
        let settings = with_domains(&["pbx.example.test", "*.example.test", "Example.TEST."]);
        let kernel = settings.to_kernel(7).unwrap();
        assert_eq!(kernel.config.flags & FLAG_DOMAIN_CHECK, FLAG_DOMAIN_CHECK);
        // `*.example.test` and `example.test` merged into one entry.
        assert_eq!(kernel.domains.len(), 2);
    }

    #[test]
    fn bad_domains_are_refused_by_name() {
        for bad in [
            "",
            "*",
            "exa mple.test",
            "a..b",
            "*.*.test",
            "sip:pbx.test",
            "x@y",
        ] {
            assert_eq!(
                with_domains(&[bad]).validate(),
                Err(SettingsError::BadDomain { entry: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ports_are_checked() {
        let with_ports = |ports: Vec<u16>| Settings {
            ports,
            ..Settings::default()
        };
        assert_eq!(with_ports(vec![]).validate(), Err(SettingsError::NoPorts));
        assert_eq!(with_ports(vec![0]).validate(), Err(SettingsError::PortZero));
        assert_eq!(
            with_ports((5060..5070).collect()).validate(),
            Err(SettingsError::TooManyPorts { count: 10 })
        );
    }

    #[test]
    fn reserved_example_domains_are_recognised() {
        for example in [
            "pbx.example.test",
            "*.example.test",
            "test",
            "PBX.Example.COM.",
            "example.net",
            "*.example.org",
            "sip.example",
            "a.b.invalid",
            "localhost",
            "pbx.localhost",
        ] {
            assert!(is_example_domain(example), "{example}");
        }
        for real in [
            "pbx.example.co.uk",
            "myexample.com",
            "contest.io",
            "example.com.au",
            "testing",
            "sip.latest",
            "*.voip.company.de",
        ] {
            assert!(!is_example_domain(real), "{real}");
        }
    }

    #[test]
    fn example_domains_are_enforced_only_when_allowed_or_in_dry_run() {
        let lab = with_domains(&["pbx.company.de", "pbx.example.test", "*.example.com"]);
        assert_eq!(
            lab.check_enforceable(),
            Err(SettingsError::ExampleDomains {
                domains: vec!["pbx.example.test".into(), "*.example.com".into()]
            })
        );
        let message = lab.check_enforceable().unwrap_err().to_string();
        assert!(
            message.contains("(pbx.example.test, *.example.com)")
                && message.contains("allow_example_domains = true"),
            "{message}"
        );
        // Still valid settings: `replay` may judge a capture with them.
        assert_eq!(lab.validate(), Ok(()));
        let allowed = Settings {
            allow_example_domains: true,
            ..lab.clone()
        };
        assert_eq!(allowed.check_enforceable(), Ok(()));
        let dry_run = Settings {
            dry_run: true,
            ..lab
        };
        assert_eq!(dry_run.check_enforceable(), Ok(()));
        assert_eq!(
            with_domains(&["pbx.company.de"]).check_enforceable(),
            Ok(())
        );
        assert_eq!(Settings::default().check_enforceable(), Ok(()));
    }

    #[test]
    fn empty_allowlist_turns_the_check_off() {
        let kernel = Settings::default().to_kernel(1).unwrap();
        assert_eq!(kernel.config.flags & FLAG_DOMAIN_CHECK, 0);
        assert_eq!(
            kernel.config.flags & FLAG_DROP_NOT_SIP_PAYLOAD,
            FLAG_DROP_NOT_SIP_PAYLOAD
        );
    }
}

// Issue 14, item 4: the TLS ClientHello policy (README, "TLS").

/// A TLS version, as `tls.min_version` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls1_0,
    Tls1_1,
    Tls1_2,
    Tls1_3,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 4] = [
        TlsVersion::Tls1_0,
        TlsVersion::Tls1_1,
        TlsVersion::Tls1_2,
        TlsVersion::Tls1_3,
    ];

    /// As written in the configuration: `1.2`.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls1_0 => "1.0",
            TlsVersion::Tls1_1 => "1.1",
            TlsVersion::Tls1_2 => "1.2",
            TlsVersion::Tls1_3 => "1.3",
        }
    }

    /// On the wire: `0x0303` for TLS 1.2.
    pub fn wire(self) -> u16 {
        match self {
            TlsVersion::Tls1_0 => sip_filter_common::tls::TLS1_0,
            TlsVersion::Tls1_1 => sip_filter_common::tls::TLS1_0 + 1,
            TlsVersion::Tls1_2 => sip_filter_common::tls::TLS1_2,
            TlsVersion::Tls1_3 => sip_filter_common::tls::TLS1_3,
        }
    }

    /// `1.2` or `TLS1.2` (any case); `None` for anything else.
    pub fn parse(text: &str) -> Option<TlsVersion> {
        let text = text.trim();
        let number = match text.get(..3) {
            Some(prefix) if prefix.eq_ignore_ascii_case("tls") => &text[3..],
            _ => text,
        };
        Self::ALL.into_iter().find(|v| v.name() == number)
    }
}

/// What to do with a ClientHello that names no server (no SNI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoSniPolicy {
    /// Pass it (the default): phones configured with the server's IP address send none.
    #[default]
    Pass,
    Drop,
}

/// The TLS ClientHello policy: the `[tls]` table, and its ban rule (`[ban] tls_refused_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRules {
    /// The version a client must offer at least (its highest offered); `None`: any.
    pub min_version: Option<TlsVersion>,
    /// The server names (SNI) allowed: `None` is the served domains (`filter.domains`;
    /// no check when there are none), a list is its own (empty: no check).
    pub server_names: Option<Vec<String>>,
    pub no_sni: NoSniPolicy,
    /// This many ClientHellos dropped within the window ban their source...
    pub refused_hits: u32,
    pub refused_window_seconds: u32,
    /// ...for this long (0: never).
    pub refused_seconds: u32,
}

impl Default for TlsRules {
    fn default() -> Self {
        Self {
            // RFC 8996 deprecated TLS 1.0 and 1.1; every SIP phone sold since 2015 offers 1.2.
            min_version: Some(TlsVersion::Tls1_2),
            server_names: None,
            no_sni: NoSniPolicy::Pass,
            // A phone refused retries every few seconds at most; a TLS scanner tries
            // dozens of versions and names in a row.
            refused_hits: 20,
            refused_window_seconds: 60,
            refused_seconds: 600,
        }
    }
}

impl TlsRules {
    /// The kernel's [`TlsConfig`]; a list of server names of its own goes into the
    /// domain map's `domains` entries, flagged apart from the served domains.
    fn to_kernel(
        &self,
        seed: u64,
        served: &[String],
        domains: &mut Vec<(u64, u8)>,
    ) -> Result<TlsConfig, SettingsError> {
        let mut config = TlsConfig {
            refused_ns: u64::from(self.refused_seconds) * 1_000_000_000,
            refused_window_ns: u64::from(self.refused_window_seconds) * 1_000_000_000,
            refused_hits: self.refused_hits,
            min_version: self.min_version.map_or(0, TlsVersion::wire),
            flags: 0,
        };
        if self.no_sni == NoSniPolicy::Drop {
            config.flags |= TLS_DROP_NO_SNI;
        }
        match &self.server_names {
            None if !served.is_empty() => config.flags |= TLS_SNI_CHECK,
            None => {}
            Some(names) if names.is_empty() => {}
            Some(names) => {
                config.flags |= TLS_SNI_CHECK | TLS_SNI_OWN_LIST;
                for entry in names {
                    let bad = || SettingsError::BadServerName {
                        entry: entry.clone(),
                    };
                    if !is_domain_entry(entry) {
                        return Err(bad());
                    }
                    let (key, flag) = allowlist_key(entry, seed).ok_or_else(bad)?;
                    // The same key's flags, shifted to the server names' own bits.
                    let flag = if flag == DOMAIN_WILDCARD {
                        DOMAIN_SNI_WILDCARD
                    } else {
                        DOMAIN_SNI_EXACT
                    };
                    match domains.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, flags)) => *flags |= flag,
                        None => domains.push((key, flag)),
                    }
                }
                if domains.len() > MAX_DOMAINS as usize {
                    return Err(SettingsError::TooManyServerNames {
                        count: domains.len(),
                    });
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use sip_filter_common::domain::DOMAIN_EXACT;

    #[test]
    fn tls_versions_parse_as_written() {
        assert_eq!(TlsVersion::parse("1.3"), Some(TlsVersion::Tls1_3));
        assert_eq!(TlsVersion::parse("TLS1.2"), Some(TlsVersion::Tls1_2));
        assert_eq!(TlsVersion::parse("tls1.0"), Some(TlsVersion::Tls1_0));
        assert_eq!(TlsVersion::parse("1.4"), None);
        assert_eq!(TlsVersion::parse(""), None);
        assert_eq!(TlsVersion::Tls1_1.wire(), 0x0302);
    }

    #[test]
    fn server_names_default_to_the_served_domains() {
        let served = Settings {
            domains: vec!["pbx.example.com".into()],
            ..Settings::default()
        };
        let kernel = served.to_kernel(1).expect("valid");
        assert_eq!(kernel.config.tls.flags, TLS_SNI_CHECK);
        assert_eq!(kernel.config.tls.min_version, 0x0303);
        // No domains: no name check, unless a list of its own is given.
        let kernel = Settings::default().to_kernel(1).expect("valid");
        assert_eq!(kernel.config.tls.flags, 0);
        let own = Settings {
            domains: vec!["pbx.example.com".into()],
            tls: TlsRules {
                server_names: Some(vec!["pbx.example.com".into(), "*.tls.example.com".into()]),
                no_sni: NoSniPolicy::Drop,
                min_version: None,
                ..TlsRules::default()
            },
            ..Settings::default()
        };
        let kernel = own.to_kernel(1).expect("valid");
        assert_eq!(
            kernel.config.tls.flags,
            TLS_SNI_CHECK | TLS_SNI_OWN_LIST | TLS_DROP_NO_SNI
        );
        assert_eq!(kernel.config.tls.min_version, 0);
        // The served domain and the same server name share an entry.
        assert_eq!(kernel.domains.len(), 2);
        assert!(kernel
            .domains
            .iter()
            .any(|(_, flags)| *flags == DOMAIN_EXACT | DOMAIN_SNI_EXACT));
        assert!(kernel
            .domains
            .iter()
            .any(|(_, flags)| *flags == DOMAIN_SNI_WILDCARD));
        let bad = Settings {
            tls: TlsRules {
                server_names: Some(vec!["bad name".into()]),
                ..TlsRules::default()
            },
            ..Settings::default()
        };
        assert_eq!(
            bad.validate(),
            Err(SettingsError::BadServerName {
                entry: "bad name".into()
            })
        );
    }
}
