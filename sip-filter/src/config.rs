//! The configuration file (`sip-filter run --config FILE`): TOML, read into [`Settings`].
//!
//! `examples/sip-filter.toml` documents every key. Every error names the file, the line,
//! the key (`rate_limit.invite.burst`) and what is wrong, and the whole file is checked
//! before anything is loaded into the kernel.

use std::{
    fmt,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use crate::{
    countries::{Country, CountrySettings},
    duration,
    filter::AttachMode,
    settings::{
        AuthRules, BanRules, DaemonSettings, NoSniPolicy, NotSipPolicy, RateLimit, RateLimits,
        Settings, SettingsError, TlsRules, TlsVersion, DEFAULT_SCANNER_USER_AGENTS,
        MIN_SAVE_INTERVAL, TRACKED_SOURCES,
    },
};
use sip_filter_common::{maps::MAX_PORTS, sip::Method};

/// The fastest rate a bucket can hold: the kernel spaces requests by whole nanoseconds.
pub const MAX_RATE: u32 = 1_000_000_000;

/// A refused configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the error has no place in the file (it could not be read).
    pub line: Option<usize>,
    /// The dotted key, like `rate_limit.invite.burst`, when the error belongs to one.
    pub key: Option<String>,
    /// What is wrong, and what is accepted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot be read: {e}"),
    })?;
    parse(&text, path)
}

/// Checks `text`, the contents of the configuration file `file` (named in errors).
pub fn parse(text: &str, file: &Path) -> Result<Settings, ConfigError> {
    let error = |span: Option<Range<usize>>, key: Option<String>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|span| line_of(text, span.start)),
        key,
        message,
    };
    if let Some((span, key, message)) = misshapen_section(text) {
        return Err(error(Some(span), Some(key), message));
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let key = span.as_ref().and_then(|span| key_at(text, span.start));
        error(span, key, plain_message(e.message()))
    })?;
    let settings = raw
        .settings()
        .map_err(|e| error(Some(e.span), Some(e.key), e.message))?;
    // What the checks above do not cover (and anything `Settings` learns to refuse later).
    settings.validate().map_err(|e| {
        let (span, key) = raw.place_of(&e);
        error(span, key, e.to_string())
    })?;
    Ok(settings)
}

/// A source network: a CIDR (`192.0.2.0/24`, `2001:db8::/32`) or a single address. Host
/// bits are cleared (`192.0.2.7/24` is `192.0.2.0/24`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("{text:?} is not an address or CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
        })
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key whose name or value holds byte `offset` of `text`, the innermost one;
/// failing that, the last key written on the line before `offset`. A document with
/// syntax errors is read as far as it can be.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (document, _) = DeTable::parse_recoverable(text);
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let mut search = KeySearch {
        offset,
        line_start,
        path: Vec::new(),
        holding: Vec::new(),
        on_line: None,
    };
    search.table(document.get_ref());
    let found = if search.holding.is_empty() {
        search.on_line?.1
    } else {
        search.holding
    };
    Some(found.join("."))
}

struct KeySearch {
    offset: usize,
    line_start: usize,
    path: Vec<String>,
    /// The deepest key whose name or value holds the offset.
    holding: Vec<String>,
    /// The key starting last on the offset's line before it, and where it starts.
    on_line: Option<(usize, Vec<String>)>,
}

impl KeySearch {
    /// Walks every table: a `[section]`'s span is its header, not its contents.
    fn table(&mut self, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            self.path.push(key.get_ref().to_string());
            // Syntax errors have empty spans, just past what was read.
            let holds = |span: Range<usize>| span.start <= self.offset && self.offset <= span.end;
            if (holds(key.span()) || holds(value.span())) && self.path.len() > self.holding.len() {
                self.holding.clone_from(&self.path);
            }
            let start = key.span().start;
            if (self.line_start..=self.offset).contains(&start)
                && self.on_line.as_ref().is_none_or(|(last, _)| start >= *last)
            {
                self.on_line = Some((start, self.path.clone()));
            }
            self.value(value.get_ref());
            self.path.pop();
        }
    }

    fn value(&mut self, value: &DeValue<'_>) {
        match value {
            DeValue::Table(table) => self.table(table),
            DeValue::Array(array) => {
                for item in array.iter() {
                    self.value(item.get_ref());
                }
            }
            _ => {}
        }
    }
}

/// A section written as an array (`[[filter]]`): serde would read it as a struct in
/// sequence form, and complain about its first element's first field.
fn misshapen_section(text: &str) -> Option<(Range<usize>, String, String)> {
    let document = DeTable::parse(text).ok()?;
    let mut sections: Vec<(String, &Spanned<DeValue<'_>>)> = Vec::new();
    for (key, value) in document.get_ref().iter() {
        sections.push((key.get_ref().to_string(), value));
        if let (true, DeValue::Table(classes)) = (key.get_ref() == "rate_limit", value.get_ref()) {
            for (class, limit) in classes.iter() {
                sections.push((format!("rate_limit.{}", class.get_ref()), limit));
            }
        }
    }
    sections.into_iter().find_map(|(key, value)| {
        matches!(value.get_ref(), DeValue::Array(_)).then(|| {
            let message = format!("must be a table, written once as [{key}], not an array");
            (value.span(), key, message)
        })
    })
}

/// serde's wording in the operator's terms.
fn plain_message(message: &str) -> String {
    let message = message.trim_end();
    let message = match message.strip_prefix("unknown field ") {
        Some(rest) => match rest.split_once(", ") {
            Some((_, expected)) => format!("unknown key, {expected}"),
            None => format!("unknown key {rest}"),
        },
        None => message.to_string(),
    };
    message
        .replace("missing field", "missing key")
        .replace("expected i64", "expected a whole number")
        .replace("expected a sequence", "expected an array")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
}

/// A semantic error, before it is placed in the file.
struct Refusal {
    span: Range<usize>,
    key: String,
    message: String,
}

fn refuse<T>(span: Range<usize>, key: &str, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        span,
        key: key.to_string(),
        message: message.into(),
    })
}

type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawFile {
    #[serde(default)]
    filter: RawFilter,
    #[serde(default)]
    rate_limit: RawRateLimits,
    #[serde(default)]
    scanner: RawScanner,
    #[serde(default)]
    ban: RawBan,
    #[serde(default)]
    lists: RawLists,
    #[serde(default)]
    answers: RawAnswers,
    crowdsec: Option<Spanned<crate::crowdsec::settings::RawCrowdsec>>,
    countries: Option<Spanned<RawCountries>>,
    #[serde(default)]
    daemon: RawDaemon,
    destinations: Option<Spanned<RawDestinations>>,
    #[serde(default)]
    tls: RawTls,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawFilter {
    ports: List<i64>,
    domains: List<String>,
    own_addresses: List<String>,
    not_sip_payload: Option<Spanned<String>>,
    /// The name `not_sip_payload` had first: still read.
    non_sip_on_sip_port: Option<Spanned<String>>,
    allow_hostless_uri: Option<bool>,
    drop_fragments: Option<bool>,
    dry_run: Option<bool>,
    allow_example_domains: Option<bool>,
    ipv6_prefix: Option<Spanned<i64>>,
    tracked_sources: Option<Spanned<i64>>,
    tcp_ports: List<i64>,
    tls_ports: List<i64>,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of [rate_limit.register], [rate_limit.invite], [rate_limit.other], [rate_limit.trusted], [rate_limit.answers], [rate_limit.untrusted_total], [rate_limit.registered], [rate_limit.connections], [rate_limit.untrusted_connections]"
)]
struct RawRateLimits {
    registered: Option<Spanned<RawLimit>>,
    register: Option<Spanned<RawLimit>>,
    invite: Option<Spanned<RawLimit>>,
    other: Option<Spanned<RawLimit>>,
    trusted: Option<Spanned<RawLimit>>,
    answers: Option<Spanned<RawLimit>>,
    untrusted_total: Option<Spanned<RawLimit>>,
    connections: Option<Spanned<RawLimit>>,
    untrusted_connections: Option<Spanned<RawLimit>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `rate` and `burst`, or `unlimited = true`"
)]
struct RawLimit {
    rate: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    unlimited: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawScanner {
    user_agents: List<String>,
    extra_user_agents: List<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawBan {
    scanner_seconds: Option<Spanned<RawDuration>>,
    unknown_domain_hits: Option<Spanned<i64>>,
    unknown_domain_window_seconds: Option<Spanned<RawDuration>>,
    unknown_domain_seconds: Option<Spanned<RawDuration>>,
    rate_overflow_hits: Option<Spanned<i64>>,
    rate_overflow_window_seconds: Option<Spanned<RawDuration>>,
    rate_overflow_seconds: Option<Spanned<RawDuration>>,
    connection_overflow_hits: Option<Spanned<i64>>,
    connection_overflow_window_seconds: Option<Spanned<RawDuration>>,
    connection_overflow_seconds: Option<Spanned<RawDuration>>,
    repeat_factor: Option<Spanned<i64>>,
    repeat_window_seconds: Option<Spanned<RawDuration>>,
    repeat_max_seconds: Option<Spanned<RawDuration>>,
    tls_refused_hits: Option<Spanned<i64>>,
    tls_refused_window_seconds: Option<Spanned<RawDuration>>,
    tls_refused_seconds: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawDaemon {
    interfaces: List<String>,
    xdp_mode: Option<Spanned<String>>,
    metrics_addr: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    save_interval: Option<Spanned<RawDuration>>,
}

/// A duration as written: a whole number of seconds (`3600`, the first form) or text
/// (`"1h"`, `"59m 58s"`; see [`crate::duration`]).
enum RawDuration {
    Seconds(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration {}", duration::FORMS)
            }
            fn visit_i64<E>(self, seconds: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(seconds))
            }
            fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<RawDuration, E> {
                i64::try_from(seconds)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::custom(format!("{seconds} seconds is out of range")))
            }
            fn visit_str<E>(self, text: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAnswers {
    learn: Option<bool>,
    lockout_failures: Option<Spanned<i64>>,
    lockout_window_seconds: Option<Spanned<RawDuration>>,
    lockout_seconds: Option<Spanned<RawDuration>>,
    ban_failures: Option<Spanned<i64>>,
    ban_window_seconds: Option<Spanned<RawDuration>>,
    ban_seconds: Option<Spanned<RawDuration>>,
    enumeration_users: Option<Spanned<i64>>,
    enumeration_window_seconds: Option<Spanned<RawDuration>>,
    enumeration_seconds: Option<Spanned<RawDuration>>,
    account_failures: Option<Spanned<i64>>,
    account_window_seconds: Option<Spanned<RawDuration>>,
    account_lockout_seconds: Option<Spanned<RawDuration>>,
    registration_cap_seconds: Option<Spanned<RawDuration>>,
    strict_methods: List<String>,
}

impl RawAnswers {
    /// The `[answers]` table, each key defaulting to [`AuthRules::default`].
    fn rules(&self) -> Result<AuthRules, Refusal> {
        let defaults = AuthRules::default();
        let key = |name: &str| format!("answers.{name}");
        Ok(AuthRules {
            learn: self.learn.unwrap_or(defaults.learn),
            lockout_failures: count(
                &self.lockout_failures,
                &key("lockout_failures"),
                defaults.lockout_failures,
            )?,
            lockout_window_seconds: duration_seconds(
                &self.lockout_window_seconds,
                &key("lockout_window_seconds"),
                defaults.lockout_window_seconds,
            )?,
            lockout_seconds: duration_seconds(
                &self.lockout_seconds,
                &key("lockout_seconds"),
                defaults.lockout_seconds,
            )?,
            ban_failures: count(
                &self.ban_failures,
                &key("ban_failures"),
                defaults.ban_failures,
            )?,
            ban_window_seconds: duration_seconds(
                &self.ban_window_seconds,
                &key("ban_window_seconds"),
                defaults.ban_window_seconds,
            )?,
            ban_seconds: duration_seconds(
                &self.ban_seconds,
                &key("ban_seconds"),
                defaults.ban_seconds,
            )?,
            enumeration_users: count(
                &self.enumeration_users,
                &key("enumeration_users"),
                defaults.enumeration_users,
            )?,
            enumeration_window_seconds: duration_seconds(
                &self.enumeration_window_seconds,
                &key("enumeration_window_seconds"),
                defaults.enumeration_window_seconds,
            )?,
            enumeration_seconds: duration_seconds(
                &self.enumeration_seconds,
                &key("enumeration_seconds"),
                defaults.enumeration_seconds,
            )?,
            account_failures: count(
                &self.account_failures,
                &key("account_failures"),
                defaults.account_failures,
            )?,
            account_window_seconds: duration_seconds(
                &self.account_window_seconds,
                &key("account_window_seconds"),
                defaults.account_window_seconds,
            )?,
            account_lockout_seconds: duration_seconds(
                &self.account_lockout_seconds,
                &key("account_lockout_seconds"),
                defaults.account_lockout_seconds,
            )?,
            registration_cap_seconds: duration_seconds(
                &self.registration_cap_seconds,
                &key("registration_cap_seconds"),
                defaults.registration_cap_seconds,
            )?,
            strict_methods: match &self.strict_methods {
                Some(methods) => methods
                    .get_ref()
                    .iter()
                    .map(strict_method)
                    .collect::<Result<_, _>>()?,
                None => defaults.strict_methods,
            },
        })
    }
}

/// A method named in `answers.strict_methods`: one the filter knows, not ACK (which is
/// never answered, so never learnt from) nor REGISTER (how a source becomes registered).
fn strict_method(name: &Spanned<String>) -> Result<Method, Refusal> {
    const KEY: &str = "answers.strict_methods";
    let wanted = name.get_ref();
    let method = Method::ALL
        .into_iter()
        .find(|m| *m != Method::None && m.name().eq_ignore_ascii_case(wanted));
    match method {
        Some(Method::Register | Method::Ack) => refuse(
            name.span(),
            KEY,
            format!("{wanted} cannot be reserved for registered sources: a source registers with REGISTER, and ACKs follow calls already answered"),
        ),
        Some(method) => Ok(method),
        None => refuse(
            name.span(),
            KEY,
            format!("{wanted:?} is not a SIP method the filter knows (INVITE, MESSAGE, SUBSCRIBE, OPTIONS, …)"),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawLists {
    allow: List<String>,
    deny: List<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawCountries {
    database: Option<Spanned<String>>,
    deny: List<String>,
    allow: List<String>,
}

impl RawCountries {
    /// The table, `span` where it is written.
    fn settings(&self, span: Range<usize>) -> Result<CountrySettings, Refusal> {
        let Some(database) = &self.database else {
            return refuse(
                span,
                "countries.database",
                "missing key: the path of a MaxMind-format country database (GeoLite2 Country or DB-IP Country Lite)",
            );
        };
        if database.get_ref().is_empty() {
            return refuse(
                database.span(),
                "countries.database",
                "empty: give the path of the country database",
            );
        }
        let codes = |list: &List<String>, key: &str| -> Result<Vec<Country>, Refusal> {
            let mut countries: Vec<Country> = Vec::new();
            for code in list.iter().flat_map(|list| list.get_ref()) {
                match Country::parse(code.get_ref()) {
                    Ok(country) if !countries.contains(&country) => countries.push(country),
                    Ok(_) => {}
                    Err(message) => return refuse(code.span(), key, message),
                }
            }
            Ok(countries)
        };
        let deny = codes(&self.deny, "countries.deny")?;
        let allow = codes(&self.allow, "countries.allow")?;
        if deny.is_empty() && allow.is_empty() {
            return refuse(
                span,
                "countries",
                "no country listed: name countries to drop in deny, or the only countries to let in in allow",
            );
        }
        if let Some(both) = allow.iter().find(|country| deny.contains(country)) {
            let at = self
                .allow
                .iter()
                .flat_map(|list| list.get_ref())
                .find(|code| Country::parse(code.get_ref()).ok() == Some(*both))
                .map_or(span, |code| code.span());
            return refuse(
                at,
                "countries.allow",
                format!("{both} is in both allow and deny: keep it in one"),
            );
        }
        Ok(CountrySettings {
            database: PathBuf::from(database.get_ref()),
            deny,
            allow,
        })
    }
}

// Issue 18: `[destinations]`, the destination rules and per-account call budgets.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawDestinations {
    international_prefixes: List<String>,
    account_calls_per_minute: Option<Spanned<i64>>,
    account_calls_per_hour: Option<Spanned<i64>>,
    account_limited_calls_per_minute: Option<Spanned<i64>>,
    account_limited_calls_per_hour: Option<Spanned<i64>>,
    account_block_seconds: Option<Spanned<RawDuration>>,
    rules: List<RawDestinationRule>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rule: prefix, action (deny, limit or allow), and calls_per_minute for limit"
)]
struct RawDestinationRule {
    prefix: Spanned<String>,
    action: Spanned<String>,
    calls_per_minute: Option<Spanned<i64>>,
}

impl RawDestinations {
    fn settings(&self) -> Result<crate::destinations::DestinationSettings, Refusal> {
        use crate::destinations::{
            parse_international_prefix, parse_prefix, Action, CallBudgets, DestinationSettings,
            Rule, DEFAULT_BLOCK_SECONDS, MAX_PREFIXES,
        };
        let defaults = DestinationSettings::default();
        let key = |name: &str| format!("destinations.{name}");
        let international_prefixes = match &self.international_prefixes {
            None => defaults.international_prefixes,
            Some(list) => {
                if list.get_ref().len() > MAX_PREFIXES {
                    return refuse(
                        list.span(),
                        "destinations.international_prefixes",
                        format!("at most {MAX_PREFIXES} international prefixes"),
                    );
                }
                let mut prefixes = Vec::new();
                for prefix in list.get_ref() {
                    let parsed = parse_international_prefix(prefix.get_ref()).or_else(|e| {
                        refuse(prefix.span(), "destinations.international_prefixes", e)
                    })?;
                    prefixes.push(parsed);
                }
                prefixes
            }
        };
        let mut rules: Vec<Rule> = Vec::new();
        let max_rules = sip_filter_common::maps::MAX_DESTINATION_RULES as usize;
        if let Some(list) = &self.rules {
            if list.get_ref().len() > max_rules {
                return refuse(
                    list.span(),
                    "destinations.rules",
                    format!("{} rules: at most {max_rules}", list.get_ref().len()),
                );
            }
            for raw in list.get_ref() {
                let raw = raw.get_ref();
                let prefix = parse_prefix(raw.prefix.get_ref())
                    .or_else(|e| refuse(raw.prefix.span(), "destinations.rules.prefix", e))?;
                if rules.iter().any(|rule| rule.prefix == prefix) {
                    return refuse(
                        raw.prefix.span(),
                        "destinations.rules.prefix",
                        format!("{prefix:?} has two rules: keep one"),
                    );
                }
                let rate = &raw.calls_per_minute;
                let action = match raw.action.get_ref().as_str() {
                    "deny" | "allow" if rate.is_some() => {
                        return refuse(
                            rate.as_ref().map_or(raw.action.span(), |r| r.span()),
                            "destinations.rules.calls_per_minute",
                            "only a limit rule has calls_per_minute",
                        );
                    }
                    "deny" => Action::Deny,
                    "allow" => Action::Allow,
                    "limit" => {
                        let Some(rate) = rate else {
                            return refuse(
                                raw.action.span(),
                                "destinations.rules.calls_per_minute",
                                "a limit rule needs calls_per_minute: new calls per minute, per source and per account",
                            );
                        };
                        let calls_per_minute = u32::try_from(*rate.get_ref())
                            .ok()
                            .filter(|n| *n > 0)
                            .map_or_else(
                                || {
                                    refuse(
                                        rate.span(),
                                        "destinations.rules.calls_per_minute",
                                        format!(
                                            "{} is out of range: 1 to {} (deny drops every call)",
                                            rate.get_ref(),
                                            u32::MAX
                                        ),
                                    )
                                },
                                Ok,
                            )?;
                        Action::Limit { calls_per_minute }
                    }
                    other => {
                        return refuse(
                            raw.action.span(),
                            "destinations.rules.action",
                            format!("{other:?} is not an action: deny, limit or allow"),
                        )
                    }
                };
                rules.push(Rule { prefix, action });
            }
        }
        let budgets = CallBudgets {
            per_minute: count(
                &self.account_calls_per_minute,
                &key("account_calls_per_minute"),
                0,
            )?,
            per_hour: count(
                &self.account_calls_per_hour,
                &key("account_calls_per_hour"),
                0,
            )?,
            limited_per_minute: count(
                &self.account_limited_calls_per_minute,
                &key("account_limited_calls_per_minute"),
                0,
            )?,
            limited_per_hour: count(
                &self.account_limited_calls_per_hour,
                &key("account_limited_calls_per_hour"),
                0,
            )?,
            block_seconds: u64::from(duration_seconds(
                &self.account_block_seconds,
                &key("account_block_seconds"),
                DEFAULT_BLOCK_SECONDS as u32,
            )?),
        };
        Ok(DestinationSettings {
            international_prefixes,
            rules,
            budgets,
        })
    }
}

/// A list of ports under `key`, each 1 to 65535, at most [`MAX_PORTS`]; empty only
/// where `may_be_empty` (a transport left uninspected).
fn port_list(
    key: &'static str,
    transport: &str,
    ports: &Spanned<Vec<Spanned<i64>>>,
    may_be_empty: bool,
) -> Result<Vec<u16>, Refusal> {
    if ports.get_ref().is_empty() && !may_be_empty {
        return refuse(
            ports.span(),
            key,
            "no port given: name at least one (leave the key out for 5060)",
        );
    }
    if ports.get_ref().len() > MAX_PORTS {
        return refuse(
            ports.span(),
            key,
            format!(
                "{} ports given, at most {MAX_PORTS} are supported",
                ports.get_ref().len()
            ),
        );
    }
    ports
        .get_ref()
        .iter()
        .map(|port| match u16::try_from(*port.get_ref()) {
            Ok(number @ 1..) => Ok(number),
            _ => refuse(
                port.span(),
                key,
                format!(
                    "{} is not a {transport} port a SIP server can listen on: give 1 to 65535",
                    port.get_ref()
                ),
            ),
        })
        .collect()
}

impl RawFile {
    fn settings(&self) -> Result<Settings, Refusal> {
        let defaults = Settings::default();
        let filter = &self.filter;
        let ports = match &filter.ports {
            Some(ports) => port_list("filter.ports", "UDP", ports, false)?,
            None => defaults.ports,
        };
        let tcp_ports = match &filter.tcp_ports {
            Some(ports) => port_list("filter.tcp_ports", "TCP", ports, true)?,
            None => defaults.tcp_ports,
        };
        let tls_ports = match &filter.tls_ports {
            Some(ports) => port_list("filter.tls_ports", "TCP", ports, true)?,
            None => defaults.tls_ports,
        };
        let domains = match &filter.domains {
            Some(domains) => domains
                .get_ref()
                .iter()
                .map(|d| d.get_ref().clone())
                .collect(),
            None => defaults.domains,
        };
        let own_addresses = match &filter.own_addresses {
            Some(addresses) => addresses
                .get_ref()
                .iter()
                .map(|address| {
                    address.get_ref().parse::<IpAddr>().or_else(|_| {
                        refuse(
                            address.span(),
                            "filter.own_addresses",
                            format!(
                                "{:?} is not an IP address: write one like 198.51.100.7 or 2001:db8::7, without a prefix length",
                                address.get_ref()
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            None => defaults.own_addresses,
        };
        let not_sip_payload = not_sip_policy(filter, defaults.not_sip_payload)?;
        let ipv6_prefix = match &filter.ipv6_prefix {
            Some(prefix) => match u8::try_from(*prefix.get_ref()) {
                Ok(bits @ 1..=128) => bits,
                _ => {
                    return refuse(
                        prefix.span(),
                        "filter.ipv6_prefix",
                        format!(
                            "{} is not a prefix length: give 1 to 128 (the default, 64, groups the addresses of one customer network)",
                            prefix.get_ref()
                        ),
                    )
                }
            },
            None => defaults.ipv6_prefix,
        };
        let tracked_sources = match &filter.tracked_sources {
            Some(count) => match u32::try_from(*count.get_ref()) {
                Ok(count) if TRACKED_SOURCES.contains(&count) => count,
                _ => {
                    return refuse(
                        count.span(),
                        "filter.tracked_sources",
                        format!(
                            "{} sources: give {} to {} (the default is {}; each costs about 330 bytes of kernel memory)",
                            count.get_ref(),
                            TRACKED_SOURCES.start(),
                            TRACKED_SOURCES.end(),
                            defaults.tracked_sources
                        ),
                    )
                }
            },
            None => defaults.tracked_sources,
        };
        let limits = &self.rate_limit;
        let built_in = defaults.rate_limits;
        let rate_limits = RateLimits {
            register: limit(&limits.register, "register", built_in.register)?,
            invite: limit(&limits.invite, "invite", built_in.invite)?,
            other: limit(&limits.other, "other", built_in.other)?,
            trusted: limit(&limits.trusted, "trusted", built_in.trusted)?,
            answers: limit(&limits.answers, "answers", built_in.answers)?,
            untrusted_total: limit(
                &limits.untrusted_total,
                "untrusted_total",
                built_in.untrusted_total,
            )?,
            registered: limit(&limits.registered, "registered", built_in.registered)?,
            connections: limit(&limits.connections, "connections", built_in.connections)?,
            untrusted_connections: limit(
                &limits.untrusted_connections,
                "untrusted_connections",
                built_in.untrusted_connections,
            )?,
        };
        let scanner_user_agents = scanner_user_agents(&self.scanner)?;
        let ban = &self.ban;
        let ban_defaults = BanRules::default();
        let ban = BanRules {
            scanner_seconds: duration_seconds(
                &ban.scanner_seconds,
                "ban.scanner_seconds",
                ban_defaults.scanner_seconds,
            )?,
            unknown_domain_hits: count(
                &ban.unknown_domain_hits,
                "ban.unknown_domain_hits",
                ban_defaults.unknown_domain_hits,
            )?,
            unknown_domain_window_seconds: duration_seconds(
                &ban.unknown_domain_window_seconds,
                "ban.unknown_domain_window_seconds",
                ban_defaults.unknown_domain_window_seconds,
            )?,
            unknown_domain_seconds: duration_seconds(
                &ban.unknown_domain_seconds,
                "ban.unknown_domain_seconds",
                ban_defaults.unknown_domain_seconds,
            )?,
            rate_overflow_hits: count(
                &ban.rate_overflow_hits,
                "ban.rate_overflow_hits",
                ban_defaults.rate_overflow_hits,
            )?,
            rate_overflow_window_seconds: duration_seconds(
                &ban.rate_overflow_window_seconds,
                "ban.rate_overflow_window_seconds",
                ban_defaults.rate_overflow_window_seconds,
            )?,
            rate_overflow_seconds: duration_seconds(
                &ban.rate_overflow_seconds,
                "ban.rate_overflow_seconds",
                ban_defaults.rate_overflow_seconds,
            )?,
            connection_overflow_hits: count(
                &ban.connection_overflow_hits,
                "ban.connection_overflow_hits",
                ban_defaults.connection_overflow_hits,
            )?,
            connection_overflow_window_seconds: duration_seconds(
                &ban.connection_overflow_window_seconds,
                "ban.connection_overflow_window_seconds",
                ban_defaults.connection_overflow_window_seconds,
            )?,
            connection_overflow_seconds: duration_seconds(
                &ban.connection_overflow_seconds,
                "ban.connection_overflow_seconds",
                ban_defaults.connection_overflow_seconds,
            )?,
            repeat_factor: count(
                &ban.repeat_factor,
                "ban.repeat_factor",
                ban_defaults.repeat_factor,
            )?,
            repeat_window_seconds: duration_seconds(
                &ban.repeat_window_seconds,
                "ban.repeat_window_seconds",
                ban_defaults.repeat_window_seconds,
            )?,
            repeat_max_seconds: duration_seconds(
                &ban.repeat_max_seconds,
                "ban.repeat_max_seconds",
                ban_defaults.repeat_max_seconds,
            )?,
        };
        Ok(Settings {
            ports,
            tcp_ports,
            tls_ports,
            domains,
            own_addresses,
            not_sip_payload,
            allow_hostless_uri: filter
                .allow_hostless_uri
                .unwrap_or(defaults.allow_hostless_uri),
            drop_fragments: filter.drop_fragments.unwrap_or(defaults.drop_fragments),
            allow: nets(&self.lists.allow, "lists.allow")?.unwrap_or(defaults.allow),
            deny: nets(&self.lists.deny, "lists.deny")?.unwrap_or(defaults.deny),
            ipv6_prefix,
            dry_run: filter.dry_run.unwrap_or(defaults.dry_run),
            allow_example_domains: filter
                .allow_example_domains
                .unwrap_or(defaults.allow_example_domains),
            tracked_sources,
            rate_limits,
            scanner_user_agents,
            ban,
            auth: self.answers.rules()?,
            crowdsec: self
                .crowdsec
                .as_ref()
                .map(|table| {
                    crate::crowdsec::settings::from_raw(table.get_ref(), table.span())
                        .map_err(|(span, key, message)| Refusal { span, key, message })
                })
                .transpose()?,
            countries: self
                .countries
                .as_ref()
                .map(|table| table.get_ref().settings(table.span()))
                .transpose()?,
            daemon: daemon(&self.daemon)?,
            destinations: self
                .destinations
                .as_ref()
                .map(|table| table.get_ref().settings())
                .transpose()?,
            tls: self.tls_rules()?,
        })
    }

    /// Where in the file the setting `error` is about was written, and its key.
    fn place_of(&self, error: &SettingsError) -> (Option<Range<usize>>, Option<String>) {
        let filter = &self.filter;
        #[allow(unreachable_patterns)] // a variant added to SettingsError later
        match error {
            SettingsError::NoPorts | SettingsError::TooManyPorts { .. } => {
                whole(&filter.ports, "filter.ports")
            }
            SettingsError::PortZero => {
                let zero = filter.ports.as_ref().and_then(|ports| {
                    ports
                        .get_ref()
                        .iter()
                        .find(|port| *port.get_ref() == 0)
                        .map(|port| port.span())
                });
                (zero, Some("filter.ports".to_string()))
            }
            SettingsError::BadDomain { entry } => {
                let at = filter.domains.as_ref().and_then(|domains| {
                    domains
                        .get_ref()
                        .iter()
                        .find(|domain| domain.get_ref() == entry)
                        .map(|domain| domain.span())
                });
                (at, Some("filter.domains".to_string()))
            }
            SettingsError::TooManyDomains { .. } => whole(&filter.domains, "filter.domains"),
            SettingsError::TooManyAddresses { .. } => {
                whole(&filter.own_addresses, "filter.own_addresses")
            }
            SettingsError::TooManyListEntries { list, .. } => {
                if *list == "deny" {
                    whole(&self.lists.deny, "lists.deny")
                } else {
                    whole(&self.lists.allow, "lists.allow")
                }
            }
            SettingsError::BadIpv6Prefix { .. } => (
                filter.ipv6_prefix.as_ref().map(|p| p.span()),
                Some("filter.ipv6_prefix".to_string()),
            ),
            SettingsError::BadTrackedSources { .. } => (
                filter.tracked_sources.as_ref().map(|c| c.span()),
                Some("filter.tracked_sources".to_string()),
            ),
            SettingsError::TooManyScannerAgents { .. } => match &self.scanner.extra_user_agents {
                Some(_) => whole(&self.scanner.extra_user_agents, "scanner.extra_user_agents"),
                None => whole(&self.scanner.user_agents, "scanner.user_agents"),
            },
            SettingsError::BadServerName { entry } => {
                let at = self.tls.server_names.as_ref().and_then(|names| {
                    names
                        .get_ref()
                        .iter()
                        .find(|name| name.get_ref() == entry)
                        .map(|name| name.span())
                });
                (at, Some("tls.server_names".to_string()))
            }
            SettingsError::TooManyServerNames { .. } => {
                whole(&self.tls.server_names, "tls.server_names")
            }
            _ => (None, None),
        }
    }
}

/// A whole list's place in the file.
fn whole<T>(list: &List<T>, key: &str) -> (Option<Range<usize>>, Option<String>) {
    (list.as_ref().map(|l| l.span()), Some(key.to_string()))
}

/// `[rate_limit.<class>]`: absent is the built-in `default`; `unlimited = true` is no
/// limit, said in so many words (a missing section must not silently mean none).
fn limit(
    raw: &Option<Spanned<RawLimit>>,
    class: &str,
    default: Option<RateLimit>,
) -> Result<Option<RateLimit>, Refusal> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let RawLimit {
        rate,
        burst,
        unlimited,
    } = raw.get_ref();
    let rate_key = format!("rate_limit.{class}.rate");
    let burst_key = format!("rate_limit.{class}.burst");
    let no_limit = format!("to have no limit, write `unlimited = true` in [rate_limit.{class}]");
    match (unlimited, rate, burst) {
        (Some(unlimited), None, None) if *unlimited.get_ref() => return Ok(None),
        (Some(unlimited), _, _) if *unlimited.get_ref() => {
            return refuse(
                unlimited.span(),
                &format!("rate_limit.{class}.unlimited"),
                "give either `unlimited = true` or `rate` and `burst`, not both",
            )
        }
        _ => {}
    }
    let (rate, burst) = match (rate, burst) {
        (Some(rate), Some(burst)) => (rate, burst),
        (rate, _) => {
            let key = if rate.is_some() { "burst" } else { "rate" };
            return refuse(
                raw.span(),
                &format!("rate_limit.{class}"),
                format!("missing key `{key}`: give `rate` and `burst`, or `unlimited = true`"),
            );
        }
    };
    if *rate.get_ref() == 0 && *burst.get_ref() == 0 {
        return refuse(
            rate.span(),
            &rate_key,
            format!("rate 0 and burst 0 would admit nothing: {no_limit}"),
        );
    }
    let rate_value = match u32::try_from(*rate.get_ref()) {
        Ok(value @ 1..=MAX_RATE) => value,
        _ => {
            return refuse(
                rate.span(),
                &rate_key,
                format!(
                    "{} is not a rate: give requests per second, 1 to {MAX_RATE} ({no_limit})",
                    rate.get_ref()
                ),
            )
        }
    };
    let burst_value = match u32::try_from(*burst.get_ref()) {
        Ok(value @ 1..) => value,
        Ok(_) => {
            return refuse(
                burst.span(),
                &burst_key,
                "must be at least 1 (requests a source may send at once, above its rate)",
            )
        }
        Err(_) => {
            return refuse(
                burst.span(),
                &burst_key,
                format!(
                    "{} is not a burst: give a number of requests, 1 to {}",
                    burst.get_ref(),
                    u32::MAX
                ),
            )
        }
    };
    Ok(Some(RateLimit {
        rate: rate_value,
        burst: burst_value,
    }))
}

/// A `[ban]` count: 0 to `u32::MAX`, 0 turning its rule off.
fn count(raw: &Option<Spanned<i64>>, key: &str, default: u32) -> Result<u32, Refusal> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    u32::try_from(*raw.get_ref()).or_else(|_| {
        refuse(
            raw.span(),
            key,
            format!(
                "{} is out of range: give 0 (turns the rule off) to {}",
                raw.get_ref(),
                u32::MAX
            ),
        )
    })
}

/// A duration or window in whole seconds (`[ban]`, `[answers]`), written as a number of seconds or as a
/// duration (`"1h"`): 0 to `u32::MAX` seconds, 0 turning its rule off.
fn duration_seconds(
    raw: &Option<Spanned<RawDuration>>,
    key: &str,
    default: u32,
) -> Result<u32, Refusal> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let out_of_range = |given: String| {
        refuse(
            raw.span(),
            key,
            format!(
                "{given} is out of range: give 0 (turns the rule off) to {} seconds, or a duration {}",
                u32::MAX,
                duration::FORMS
            ),
        )
    };
    match raw.get_ref() {
        RawDuration::Seconds(seconds) => {
            u32::try_from(*seconds).or_else(|_| out_of_range(seconds.to_string()))
        }
        RawDuration::Text(text) => {
            let length = duration::parse(text).or_else(|e| refuse(raw.span(), key, e))?;
            if length.subsec_nanos() != 0 {
                return refuse(raw.span(), key, format!("{text:?}: give whole seconds"));
            }
            u32::try_from(length.as_secs()).or_else(|_| out_of_range(format!("{text:?}")))
        }
    }
}

/// `filter.not_sip_payload`, or `filter.non_sip_on_sip_port`, its first name: one of them.
fn not_sip_policy(filter: &RawFilter, default: NotSipPolicy) -> Result<NotSipPolicy, Refusal> {
    const KEY: &str = "filter.not_sip_payload";
    const OLD_KEY: &str = "filter.non_sip_on_sip_port";
    let (policy, key) = match (&filter.not_sip_payload, &filter.non_sip_on_sip_port) {
        (Some(_), Some(old)) => {
            return refuse(
                old.span(),
                OLD_KEY,
                format!("is the old name of {KEY}, which is given too: keep only {KEY}"),
            )
        }
        (Some(policy), None) => (policy, KEY),
        (None, Some(policy)) => (policy, OLD_KEY),
        (None, None) => return Ok(default),
    };
    match policy.get_ref().as_str() {
        "drop" => Ok(NotSipPolicy::Drop),
        "pass" => Ok(NotSipPolicy::Pass),
        other => refuse(
            policy.span(),
            key,
            format!("{other:?} is not a policy: write \"drop\" or \"pass\""),
        ),
    }
}

/// `scanner.user_agents` (the built-in list when left out), then each of
/// `scanner.extra_user_agents` that is not already there (case-insensitively).
fn scanner_user_agents(scanner: &RawScanner) -> Result<Vec<String>, Refusal> {
    let mut agents: Vec<String> = match &scanner.user_agents {
        Some(agents) => agents
            .get_ref()
            .iter()
            .map(|agent| user_agent(agent, "scanner.user_agents"))
            .collect::<Result<_, _>>()?,
        None => DEFAULT_SCANNER_USER_AGENTS
            .iter()
            .map(|agent| agent.to_string())
            .collect(),
    };
    for extra in scanner.extra_user_agents.iter().flat_map(|l| l.get_ref()) {
        let extra = user_agent(extra, "scanner.extra_user_agents")?;
        if !agents
            .iter()
            .any(|known| known.eq_ignore_ascii_case(&extra))
        {
            agents.push(extra);
        }
    }
    Ok(agents)
}

/// The `[daemon]` table, each value checked for its form; what depends on the host (the
/// interfaces exist, the address can be bound) is checked by `run`.
fn daemon(raw: &RawDaemon) -> Result<DaemonSettings, Refusal> {
    let interfaces = match &raw.interfaces {
        Some(list) => interface_names(list)?,
        None => Vec::new(),
    };
    let xdp_mode = raw
        .xdp_mode
        .as_ref()
        .map(|mode| {
            <AttachMode as clap::ValueEnum>::from_str(mode.get_ref(), false).or_else(|_| {
                refuse(
                    mode.span(),
                    "daemon.xdp_mode",
                    format!(
                        "{:?} is not a mode: write \"auto\", \"native\" or \"skb\"",
                        mode.get_ref()
                    ),
                )
            })
        })
        .transpose()?;
    let metrics_addr = raw
        .metrics_addr
        .as_ref()
        .map(|address| {
            let text = address.get_ref();
            let port = text.rsplit_once(':').filter(|(host, _)| !host.is_empty());
            match port.map(|(_, port)| port.parse::<u16>()) {
                Some(Ok(1..)) => Ok(text.clone()),
                _ => refuse(
                    address.span(),
                    "daemon.metrics_addr",
                    format!("{text:?} is not HOST:PORT: write one like \"127.0.0.1:9184\" or \"[::1]:9184\""),
                ),
            }
        })
        .transpose()?;
    let state_dir = raw
        .state_dir
        .as_ref()
        .map(|dir| {
            let path = PathBuf::from(dir.get_ref());
            if path.is_absolute() {
                Ok(path)
            } else {
                refuse(
                    dir.span(),
                    "daemon.state_dir",
                    format!(
                        "{:?} is not an absolute path: write one like \"/var/lib/sip-filter\"",
                        dir.get_ref()
                    ),
                )
            }
        })
        .transpose()?;
    let save_interval = raw
        .save_interval
        .as_ref()
        .map(|interval| {
            const KEY: &str = "daemon.save_interval";
            let at_least = |given: String| {
                refuse(
                    interval.span(),
                    KEY,
                    format!("{given} is too short: give at least 1s (the state file is written at most once a second)"),
                )
            };
            match interval.get_ref() {
                RawDuration::Seconds(seconds @ 1..) => {
                    Ok(std::time::Duration::from_secs(seconds.unsigned_abs()))
                }
                RawDuration::Seconds(seconds) => at_least(seconds.to_string()),
                RawDuration::Text(text) => match duration::parse(text) {
                    Ok(length) if length >= MIN_SAVE_INTERVAL => Ok(length),
                    Ok(_) => at_least(format!("{text:?}")),
                    Err(e) => refuse(interval.span(), KEY, e),
                },
            }
        })
        .transpose()?;
    Ok(DaemonSettings {
        interfaces,
        xdp_mode,
        metrics_addr,
        state_dir,
        save_interval,
    })
}

/// Interface names as Linux allows them (1 to 15 bytes, no `/`, `:` or space), each once.
fn interface_names(list: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<String>, Refusal> {
    const KEY: &str = "daemon.interfaces";
    if list.get_ref().is_empty() {
        return refuse(
            list.span(),
            KEY,
            "no interface given: name at least one, or leave the key out and give --iface",
        );
    }
    let mut names: Vec<String> = Vec::new();
    for name in list.get_ref() {
        let text = name.get_ref();
        let valid = (1..=15).contains(&text.len())
            && text != "."
            && text != ".."
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            return refuse(
                name.span(),
                KEY,
                format!("{text:?} is not an interface name (`ip link` lists them)"),
            );
        }
        if names.contains(text) {
            return refuse(name.span(), KEY, format!("{text:?} is given twice"));
        }
        names.push(text.clone());
    }
    Ok(names)
}

fn user_agent(agent: &Spanned<String>, key: &str) -> Result<String, Refusal> {
    let text = agent.get_ref();
    if text.is_empty() || text == "*" {
        return refuse(
            agent.span(),
            key,
            "an empty prefix would match every User-Agent: remove it",
        );
    }
    if text.trim() != text || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return refuse(
            agent.span(),
            key,
            format!("{text:?} cannot match a User-Agent: give printable ASCII without leading or trailing spaces"),
        );
    }
    Ok(text.clone())
}

fn nets(raw: &List<String>, key: &str) -> Result<Option<Vec<IpNet>>, Refusal> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    raw.get_ref()
        .iter()
        .map(|entry| {
            parse_net(entry.get_ref()).or_else(|message| refuse(entry.span(), key, message))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

// Issue 14, item 4: the TLS ClientHello policy (README, "TLS").

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawTls {
    min_version: Option<Spanned<String>>,
    server_names: List<String>,
    no_sni: Option<Spanned<String>>,
}

impl RawFile {
    /// `[tls]`, and its ban rule in `[ban]`.
    fn tls_rules(&self) -> Result<TlsRules, Refusal> {
        let defaults = TlsRules::default();
        let raw = &self.tls;
        let min_version = match &raw.min_version {
            None => defaults.min_version,
            Some(text) if text.get_ref() == "any" => None,
            Some(text) => match TlsVersion::parse(text.get_ref()) {
                Some(version) => Some(version),
                None => {
                    return refuse(
                        text.span(),
                        "tls.min_version",
                        format!(
                            "{:?} is not a TLS version: write \"1.2\" (the default), \"1.3\", \"1.1\", \"1.0\" or \"any\"",
                            text.get_ref()
                        ),
                    )
                }
            },
        };
        let server_names = raw.server_names.as_ref().map(|names| {
            names
                .get_ref()
                .iter()
                .map(|name| name.get_ref().clone())
                .collect()
        });
        let no_sni = match &raw.no_sni {
            None => defaults.no_sni,
            Some(policy) => match policy.get_ref().as_str() {
                "pass" => NoSniPolicy::Pass,
                "drop" => NoSniPolicy::Drop,
                other => {
                    return refuse(
                        policy.span(),
                        "tls.no_sni",
                        format!("{other:?} is not a policy: write \"pass\" or \"drop\""),
                    )
                }
            },
        };
        let ban = &self.ban;
        Ok(TlsRules {
            min_version,
            server_names,
            no_sni,
            refused_hits: count(
                &ban.tls_refused_hits,
                "ban.tls_refused_hits",
                defaults.refused_hits,
            )?,
            refused_window_seconds: duration_seconds(
                &ban.tls_refused_window_seconds,
                "ban.tls_refused_window_seconds",
                defaults.refused_window_seconds,
            )?,
            refused_seconds: duration_seconds(
                &ban.tls_refused_seconds,
                "ban.tls_refused_seconds",
                defaults.refused_seconds,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::settings::DEFAULT_SCANNER_USER_AGENTS;

    const EXAMPLE: &str = include_str!("../../examples/sip-filter.toml");

    fn parsed(text: &str) -> Settings {
        match parse(text, Path::new("test.toml")) {
            Ok(settings) => settings,
            Err(e) => panic!("{text:?} refused: {e}"),
        }
    }

    /// Asserts `text` is refused at `line`, naming `key`, with a message containing `what`.
    #[track_caller]
    fn refused(text: &str, line: usize, key: &str, what: &str) -> ConfigError {
        let error = match parse(text, Path::new("test.toml")) {
            Ok(settings) => panic!("{text:?} accepted: {settings:?}"),
            Err(e) => e,
        };
        assert_eq!(error.line, Some(line), "{error}");
        assert_eq!(error.key.as_deref(), Some(key), "{error}");
        assert!(error.message.contains(what), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("test.toml line {line}: {key}: ")),
            "{error}"
        );
        error
    }

    /// The example with its commented-out settings (`# key = value`, `# [section]`)
    /// written in: what an operator gets by uncommenting everything.
    fn example_uncommented() -> String {
        EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting)
                    if (setting.starts_with('[') && setting.ends_with(']'))
                        || setting.split_once(" = ").is_some_and(|(key, _)| {
                            !key.is_empty()
                                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    setting
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_file_parses() {
        let settings = parsed(EXAMPLE);
        // As shipped: the defaults, every one. Site-specific values are commented out.
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.ports, [5060]);
        assert!(settings.domains.is_empty());
        assert!(settings.own_addresses.is_empty());
        assert_eq!(settings.not_sip_payload, NotSipPolicy::Drop);
        assert!(!settings.allow_hostless_uri);
        assert!(!settings.dry_run);
        assert_eq!(settings.ipv6_prefix, 64);
        assert_eq!(settings.tracked_sources, 262_144);
        assert_eq!(settings.rate_limits, RateLimits::built_in());
        assert_eq!(settings.scanner_user_agents, DEFAULT_SCANNER_USER_AGENTS);
        assert_eq!(settings.ban, BanRules::default());
        assert!(!settings.scanner_user_agents.iter().any(|ua| ua == "sipsak"));
    }

    /// Installed unchanged, the example enforces nothing that names a site: no example
    /// domain, no trusted or denied network. Its commented-out values are valid, and an
    /// example domain uncommented is refused for enforcing.
    #[test]
    fn the_example_file_is_safe_as_installed() {
        let installed = parsed(EXAMPLE);
        assert_eq!(installed.check_enforceable(), Ok(()));
        assert!(installed.domains.is_empty(), "{:?}", installed.domains);
        assert!(installed.allow.is_empty() && installed.deny.is_empty());
        // Without [crowdsec], whose key files exist only on a configured host.
        let uncommented = example_uncommented();
        let uncommented = parsed(uncommented.split("\n[crowdsec]").next().unwrap());
        assert_eq!(uncommented.domains, ["pbx.example.com", "*.example.com"]);
        assert_eq!(
            uncommented.own_addresses,
            [
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            ]
        );
        assert_eq!(
            uncommented.allow,
            ["203.0.113.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(uncommented.deny, ["192.0.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(
            uncommented.rate_limits.untrusted_total,
            Some(RateLimit {
                rate: 2000,
                burst: 4000
            })
        );
        assert!(matches!(
            uncommented.check_enforceable(),
            Err(SettingsError::ExampleDomains { .. })
        ));
    }

    /// The README's excerpts are valid too.
    #[test]
    fn the_readme_excerpts_parse() {
        let readme = include_str!("../../README.md");
        let mut excerpts = 0;
        for block in readme.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap();
            parsed(text);
            excerpts += 1;
        }
        assert!(excerpts > 0);
    }

    /// Every key the parser knows is in the example, so the example documents them all.
    #[test]
    fn the_example_file_has_every_key() {
        let uncommented = example_uncommented();
        let document = DeTable::parse(&uncommented).unwrap();
        let sections: &[(&str, &[&str])] = &[
            (
                "filter",
                &[
                    "ports",
                    "domains",
                    "own_addresses",
                    "not_sip_payload",
                    "allow_hostless_uri",
                    "drop_fragments",
                    "dry_run",
                    "allow_example_domains",
                    "ipv6_prefix",
                    "tracked_sources",
                    "tcp_ports",
                    "tls_ports",
                ],
            ),
            ("rate_limit.register", &["rate", "burst"]),
            ("rate_limit.invite", &["rate", "burst"]),
            ("rate_limit.other", &["rate", "burst"]),
            ("rate_limit.trusted", &["rate", "burst"]),
            ("rate_limit.answers", &["rate", "burst"]),
            ("rate_limit.untrusted_total", &["rate", "burst"]),
            ("rate_limit.connections", &["rate", "burst"]),
            ("rate_limit.untrusted_connections", &["rate", "burst"]),
            ("scanner", &["extra_user_agents", "user_agents"]),
            (
                "ban",
                &[
                    "scanner_seconds",
                    "unknown_domain_hits",
                    "unknown_domain_window_seconds",
                    "unknown_domain_seconds",
                    "rate_overflow_hits",
                    "rate_overflow_window_seconds",
                    "rate_overflow_seconds",
                    "connection_overflow_hits",
                    "connection_overflow_window_seconds",
                    "connection_overflow_seconds",
                    "repeat_factor",
                    "repeat_window_seconds",
                    "repeat_max_seconds",
                    "tls_refused_hits",
                    "tls_refused_window_seconds",
                    "tls_refused_seconds",
                ],
            ),
            ("tls", &["min_version", "server_names", "no_sni"]),
            ("lists", &["allow", "deny"]),
            ("countries", &["database", "deny", "allow"]),
            ("rate_limit.registered", &["rate", "burst"]),
            (
                "answers",
                &[
                    "learn",
                    "lockout_failures",
                    "lockout_window_seconds",
                    "lockout_seconds",
                    "ban_failures",
                    "ban_window_seconds",
                    "ban_seconds",
                    "enumeration_users",
                    "enumeration_window_seconds",
                    "enumeration_seconds",
                    "account_failures",
                    "account_window_seconds",
                    "account_lockout_seconds",
                    "registration_cap_seconds",
                    "strict_methods",
                ],
            ),
            (
                "daemon",
                &[
                    "interfaces",
                    "xdp_mode",
                    "metrics_addr",
                    "state_dir",
                    "save_interval",
                ],
            ),
        ];
        for (section, keys) in sections {
            let mut table = document.get_ref();
            for part in section.split('.') {
                table = table
                    .get(part)
                    .and_then(|v| v.get_ref().as_table())
                    .unwrap_or_else(|| panic!("no [{section}] in the example"));
            }
            for key in *keys {
                assert!(
                    table.contains_key(*key),
                    "no {section}.{key} in the example"
                );
            }
            assert_eq!(
                table.len(),
                keys.len(),
                "[{section}] has keys this test lacks"
            );
        }
        let top: Vec<_> = document
            .get_ref()
            .keys()
            .map(|k| k.get_ref().to_string())
            .collect();
        // And the [crowdsec] table (README.md has its every key), and [destinations]
        // (below).
        assert_eq!(top.len(), 11, "{top:?}");
        let destinations = document
            .get_ref()
            .get("destinations")
            .and_then(|v| v.get_ref().as_table())
            .expect("a [destinations] table in the example");
        for key in [
            "international_prefixes",
            "account_calls_per_minute",
            "account_calls_per_hour",
            "account_limited_calls_per_minute",
            "account_limited_calls_per_hour",
            "account_block_seconds",
            "rules",
        ] {
            assert!(
                destinations.contains_key(key),
                "no destinations.{key} in the example"
            );
        }
        assert_eq!(
            destinations.len(),
            7,
            "[destinations] has keys this test lacks"
        );
        let rules = destinations
            .get("rules")
            .and_then(|v| v.get_ref().as_array())
            .expect("[[destinations.rules]] in the example");
        let limit = rules
            .iter()
            .filter_map(|rule| rule.get_ref().as_table())
            .find(|rule| rule.contains_key("calls_per_minute"))
            .expect("a limit rule in the example");
        for key in ["prefix", "action", "calls_per_minute"] {
            assert!(
                limit.contains_key(key),
                "no destinations.rules.{key} in the example"
            );
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parsed(""), Settings::default());
        assert_eq!(
            parsed("# nothing\n\n[filter]\n[ban]\n"),
            Settings::default()
        );
    }

    #[test]
    fn absent_keys_keep_their_defaults() {
        let settings = parsed(
            "[filter]\ndomains = [\"pbx.example.test\"]\n[ban]\nscanner_seconds = 60\n[rate_limit.invite]\nrate = 1\nburst = 3\n",
        );
        let defaults = Settings::default();
        assert_eq!(settings.domains, ["pbx.example.test"]);
        assert_eq!(settings.ports, defaults.ports);
        assert_eq!(settings.ipv6_prefix, defaults.ipv6_prefix);
        assert_eq!(settings.scanner_user_agents, defaults.scanner_user_agents);
        assert_eq!(
            settings.ban,
            BanRules {
                scanner_seconds: 60,
                ..BanRules::default()
            }
        );
        // Only the class given changes; the others keep the built-in limits.
        assert_eq!(
            settings.rate_limits,
            RateLimits {
                invite: Some(RateLimit { rate: 1, burst: 3 }),
                ..RateLimits::built_in()
            }
        );
    }

    #[test]
    fn every_value_is_read() {
        let settings = parsed(
            r#"
[filter]
ports = [5060, 5080]
tcp_ports = [5060, 5070]
tls_ports = []
own_addresses = ["2001:DB8:0:0::7"]
not_sip_payload = "pass"
allow_hostless_uri = true
dry_run = true
ipv6_prefix = 56
[scanner]
user_agents = ["sipsak"]
[ban]
unknown_domain_hits = 0
rate_overflow_hits = 7
rate_overflow_window_seconds = 8
rate_overflow_seconds = 9
[lists]
allow = ["192.0.2.7/24", "2001:db8::1"]
"#,
        );
        assert_eq!(settings.ports, [5060, 5080]);
        assert_eq!(settings.tcp_ports, [5060, 5070]);
        assert!(settings.tls_ports.is_empty(), "TLS left uninspected");
        assert_eq!(
            settings.own_addresses,
            ["2001:db8::7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(settings.not_sip_payload, NotSipPolicy::Pass);
        assert!(settings.allow_hostless_uri);
        assert!(settings.dry_run);
        assert_eq!(settings.ipv6_prefix, 56);
        // Replaces the default list, not added to it.
        assert_eq!(settings.scanner_user_agents, ["sipsak"]);
        assert_eq!(settings.ban.unknown_domain_hits, 0);
        assert_eq!(
            (
                settings.ban.rate_overflow_hits,
                settings.ban.rate_overflow_window_seconds,
                settings.ban.rate_overflow_seconds
            ),
            (7, 8, 9)
        );
        // Host bits cleared; a single address is a /32 or /128.
        assert_eq!(
            settings.allow,
            [
                "192.0.2.0/24".parse::<IpNet>().unwrap(),
                "2001:db8::1/128".parse::<IpNet>().unwrap()
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        refused(
            "[filter]\nports = [5060\n",
            2,
            "filter.ports",
            "unclosed array",
        );
        refused(
            "[filter]\ndomains = [\n  \"a.test\",\n",
            3, // where the last entry ends
            "filter.domains",
            "unclosed array",
        );
        refused(
            "[filter]\nports = [5060]\n\n[filter]\n",
            4,
            "filter",
            "duplicate key",
        );
        refused("[filter]\ndry_run = = true\n", 2, "filter.dry_run", "");
        // No key to name when the header itself is broken.
        let e = parse("\n[filter\n", Path::new("test.toml")).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("unclosed table"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        refused(
            "[filter]\nports = [5060]\ndomain = [\"a.test\"]\n",
            3,
            "filter.domain",
            "unknown key, expected one of `ports`, `domains`",
        );
        refused(
            "\n[filtre]\n",
            2,
            "filtre",
            "expected one of `filter`, `rate_limit`",
        );
        refused(
            "[rate_limit.invite]\nrate = 5\nburts = 20\n",
            3,
            "rate_limit.invite.burts",
            "expected one of `rate`, `burst`, `unlimited`",
        );
        refused(
            "[rate_limit.invites]\nrate = 5\nburst = 20\n",
            1,
            "rate_limit.invites",
            "unknown key",
        );
        refused("[ban]\nscanner = 5\n", 2, "ban.scanner", "scanner_seconds");
        refused(
            "[lists]\nblock = []\n",
            2,
            "lists.block",
            "`allow` or `deny`",
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        refused(
            "[filter]\nports = 5060\n",
            2,
            "filter.ports",
            "invalid type: integer `5060`, expected an array",
        );
        refused(
            "[filter]\ndry_run = \"no\"\n",
            2,
            "filter.dry_run",
            "expected a boolean",
        );
        refused(
            "[rate_limit.invite]\nrate = 2.5\nburst = 5\n",
            2,
            "rate_limit.invite.rate",
            "expected a whole number",
        );
        refused(
            "[filter]\ndomains = [\"a.test\", 5]\n",
            2,
            "filter.domains",
            "expected a string",
        );
        refused("filter = 1\n", 1, "filter", "expected a table");
        refused(
            "[rate_limit.invite]\nrate = 5\n",
            1,
            "rate_limit.invite",
            "missing key `burst`",
        );
        refused(
            "[[filter]]\n",
            1,
            "filter",
            "must be a table, written once as [filter]",
        );
        refused(
            "[[rate_limit.invite]]\nrate = 1\nburst = 1\n",
            1,
            "rate_limit.invite",
            "must be a table",
        );
    }

    #[test]
    fn ports_are_checked() {
        refused(
            "[filter]\ntcp_ports = [5060, 0]\n",
            2,
            "filter.tcp_ports",
            "0 is not a TCP port",
        );
        refused(
            "[filter]\ntls_ports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n",
            2,
            "filter.tls_ports",
            "9 ports given, at most 8",
        );
        refused(
            "[filter]\nports = [0]\n",
            2,
            "filter.ports",
            "give 1 to 65535",
        );
        refused(
            "[filter]\nports = [\n  5060,\n  70000,\n]\n",
            4,
            "filter.ports",
            "70000 is not a UDP port",
        );
        refused("[filter]\nports = [-1]\n", 2, "filter.ports", "-1 is not");
        refused(
            "[filter]\nports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n",
            2,
            "filter.ports",
            "9 ports given, at most 8",
        );
        refused(
            "[filter]\nports = []\n",
            2,
            "filter.ports",
            "name at least one",
        );
    }

    #[test]
    fn addresses_and_networks_are_checked() {
        refused(
            "[filter]\nown_addresses = [\"198.51.100.7/32\"]\n",
            2,
            "filter.own_addresses",
            "\"198.51.100.7/32\" is not an IP address",
        );
        refused(
            "[lists]\nallow = [\n  \"203.0.113.0/24\",\n  \"203.0.113.0/33\",\n]\n",
            4,
            "lists.allow",
            "\"203.0.113.0/33\" is not an address or CIDR",
        );
        refused(
            "[lists]\ndeny = [\"pbx.example.test\"]\n",
            2,
            "lists.deny",
            "is not an address or CIDR",
        );
    }

    #[test]
    fn domains_are_checked_where_they_are_written() {
        // Settings::validate() finds these; the error still points at the entry.
        refused(
            "[filter]\ndomains = [\n  \"pbx.example.test\",\n  \"sip:pbx.example.test\",\n]\n",
            4,
            "filter.domains",
            "domain \"sip:pbx.example.test\" cannot be allowed",
        );
        let many: Vec<String> = (0..4097).map(|i| format!("\"d{i}.test\"")).collect();
        refused(
            &format!("[filter]\n\ndomains = [{}]\n", many.join(", ")),
            3,
            "filter.domains",
            "4097 domains given",
        );
    }

    #[test]
    fn policies_and_prefixes_are_checked() {
        refused(
            "[filter]\nnon_sip_on_sip_port = \"dorp\"\n",
            2,
            "filter.non_sip_on_sip_port",
            "write \"drop\" or \"pass\"",
        );
        for bad in ["0", "129", "-64", "1000"] {
            refused(
                &format!("[filter]\nipv6_prefix = {bad}\n"),
                2,
                "filter.ipv6_prefix",
                "give 1 to 128",
            );
        }
        for bad in ["0", "1023", "-5", "4194305", "99999999999"] {
            refused(
                &format!("[filter]\ntracked_sources = {bad}\n"),
                2,
                "filter.tracked_sources",
                "give 1024 to 4194304",
            );
        }
        let settings = parsed("[filter]\ntracked_sources = 1048576\n");
        assert_eq!(settings.tracked_sources, 1 << 20);
    }

    #[test]
    fn rate_limits_are_checked() {
        refused(
            "[rate_limit.invite]\nrate = 0\nburst = 0\n",
            2,
            "rate_limit.invite.rate",
            "rate 0 and burst 0 would admit nothing: to have no limit, write `unlimited = true` in [rate_limit.invite]",
        );
        let e = refused(
            "[rate_limit.invite]\nrate = 5\nburst = 0\n",
            3,
            "rate_limit.invite.burst",
            "must be at least 1",
        );
        assert!(e
            .to_string()
            .starts_with("test.toml line 3: rate_limit.invite.burst: must be at least 1"));
        refused(
            "[rate_limit.register]\nrate = 0\nburst = 5\n",
            2,
            "rate_limit.register.rate",
            "1 to 1000000000",
        );
        refused(
            "[rate_limit.untrusted_total]\nrate = 1000000001\nburst = 5\n",
            2,
            "rate_limit.untrusted_total.rate",
            "is not a rate",
        );
        refused(
            "[rate_limit.trusted]\nrate = 1\nburst = 4294967296\n",
            3,
            "rate_limit.trusted.burst",
            "is not a burst",
        );
        refused(
            "[rate_limit.other]\nrate = -5\nburst = 10\n",
            2,
            "rate_limit.other.rate",
            "-5 is not a rate",
        );
        // Inline tables and dotted keys are the same thing.
        refused(
            "[rate_limit]\ninvite = { rate = 5, burst = 0 }\n",
            2,
            "rate_limit.invite.burst",
            "must be at least 1",
        );
    }

    #[test]
    fn a_class_is_unlimited_only_when_the_file_says_so() {
        let settings = parsed("[rate_limit.register]\nunlimited = true\n");
        assert_eq!(
            settings.rate_limits,
            RateLimits {
                register: None,
                ..RateLimits::built_in()
            }
        );
        refused(
            "[rate_limit.register]\nrate = 5\nburst = 20\nunlimited = true\n",
            4,
            "rate_limit.register.unlimited",
            "not both",
        );
        refused(
            "[rate_limit.register]\nunlimited = false\n",
            1,
            "rate_limit.register",
            "missing key `rate`",
        );
        refused(
            "[rate_limit.register]\nburst = 5\n",
            1,
            "rate_limit.register",
            "missing key `rate`",
        );
        let settings = parsed("[filter]\nallow_example_domains = true\n");
        assert!(settings.allow_example_domains);
    }

    /// Repeat offenders: on by default (doubling within a day, up to a week), set in
    /// `[ban]`, written into the kernel's ban rules; a factor of 0 or 1 turns it off.
    #[test]
    fn repeat_offenders_are_configured_in_the_ban_table() {
        let built_in = Settings::default().to_kernel(1).unwrap().config.bans;
        assert_eq!(built_in.repeat_factor, 2);
        assert_eq!(built_in.repeat_window_ns, 86_400 * 1_000_000_000);
        assert_eq!(built_in.repeat_max_ns, 7 * 86_400 * 1_000_000_000);
        let bans = parsed(
            "[ban]\nrepeat_factor = 3\nrepeat_window_seconds = \"2h\"\n\
             repeat_max_seconds = \"1d\"\n",
        )
        .to_kernel(1)
        .unwrap()
        .config
        .bans;
        assert_eq!(bans.repeat_factor, 3);
        assert_eq!(bans.repeat_window_ns, 7200 * 1_000_000_000);
        assert_eq!(bans.repeat_max_ns, 86_400 * 1_000_000_000);
        refused(
            "[ban]\nrepeat_factor = -2\n",
            2,
            "ban.repeat_factor",
            "out of range",
        );
    }

    /// `[rate_limit.connections]` and `[rate_limit.untrusted_connections]` (SYNs): on by
    /// default, set like the other classes, written into the kernel's connections slot
    /// and its own global budget (not the requests'); the ban on SYN overflow is off
    /// unless given a duration.
    #[test]
    fn the_connection_limits_are_configured_like_the_others() {
        use sip_filter_common::maps::{Limit, CLASS_CONNECTIONS};
        let built_in = Settings::default().to_kernel(1).unwrap().config;
        assert_eq!(built_in.limits[CLASS_CONNECTIONS], Limit::new(2, 100));
        assert_eq!(built_in.untrusted_connections, Limit::new(500, 5000));
        assert_eq!(built_in.bans.connection_overflow_ns, 0, "off by default");
        let settings = parsed(
            "[rate_limit.connections]\nrate = 1\nburst = 20\n\
             [rate_limit.untrusted_connections]\nunlimited = true\n\
             [ban]\nconnection_overflow_seconds = 600\n",
        );
        let kernel = settings.to_kernel(1).unwrap().config;
        assert_eq!(kernel.limits[CLASS_CONNECTIONS], Limit::new(1, 20));
        assert!(!kernel.untrusted_connections.is_set());
        assert!(!kernel.untrusted_total.is_set());
        assert_eq!(kernel.bans.connection_overflow_ns, 600_000_000_000);
        assert_eq!(kernel.bans.connection_overflow_hits, 100);
        assert_eq!(kernel.bans.connection_overflow_window_ns, 300_000_000_000);
        refused(
            "[rate_limit.connections]\nrate = 0\nburst = 5\n",
            2,
            "rate_limit.connections.rate",
            "is not a rate",
        );
    }

    /// `[rate_limit.answers]` (responses and keep-alives): on by default, set or turned
    /// off like the other classes, and written into the kernel's answers slot.
    #[test]
    fn the_answers_class_is_configured_like_the_others() {
        use sip_filter_common::maps::{Limit, CLASS_ANSWERS, CLASS_CONNECTIONS, CLASS_REGISTERED};
        let built_in = RateLimits::built_in().answers;
        assert_eq!(
            built_in,
            Some(RateLimit {
                rate: 50,
                burst: 400
            })
        );
        let settings = parsed("[rate_limit.answers]\nrate = 20\nburst = 100\n");
        assert_eq!(
            settings.rate_limits,
            RateLimits {
                answers: Some(RateLimit {
                    rate: 20,
                    burst: 100
                }),
                ..RateLimits::built_in()
            }
        );
        let kernel = settings.to_kernel(1).unwrap().config;
        assert_eq!(kernel.limits[CLASS_ANSWERS], Limit::new(20, 100));
        // Slot 5 is the connections class, slot 6 the registered class: both on by default.
        assert_eq!(CLASS_CONNECTIONS, CLASS_ANSWERS + 1);
        assert!(kernel.limits[CLASS_CONNECTIONS].is_set());
        assert!(kernel.limits[CLASS_REGISTERED].is_set());
        let off = parsed("[rate_limit.answers]\nunlimited = true\n");
        assert_eq!(off.rate_limits.answers, None);
        assert!(!off.to_kernel(1).unwrap().config.limits[CLASS_ANSWERS].is_set());
        refused(
            "[rate_limit.answers]\nrate = 50\nburst = 0\n",
            3,
            "rate_limit.answers.burst",
            "must be at least 1",
        );
    }

    #[test]
    fn ban_rules_and_user_agents_are_checked() {
        refused(
            "[ban]\nscanner_seconds = 60\nunknown_domain_seconds = -1\n",
            3,
            "ban.unknown_domain_seconds",
            "give 0 (turns the rule off) to 4294967295",
        );
        refused(
            "[ban]\nrate_overflow_hits = 4294967296\n",
            2,
            "ban.rate_overflow_hits",
            "out of range",
        );
        refused(
            "[scanner]\nuser_agents = [\"sipvicious\", \"\"]\n",
            2,
            "scanner.user_agents",
            "an empty prefix would match every User-Agent",
        );
        refused(
            "[scanner]\nuser_agents = [\"*\"]\n",
            2,
            "scanner.user_agents",
            "an empty prefix would match every User-Agent",
        );
        refused(
            "[scanner]\nuser_agents = [\" sipvicious\"]\n",
            2,
            "scanner.user_agents",
            "printable ASCII",
        );
    }

    #[test]
    fn the_countries_table_is_read() {
        let settings = parsed(
            "[countries]\ndatabase = \"/var/lib/GeoIP/GeoLite2-Country.mmdb\"\ndeny = [\"kp\", \"IR\", \"KP\"]\n",
        );
        let countries = settings.countries.unwrap();
        assert_eq!(
            countries.database,
            Path::new("/var/lib/GeoIP/GeoLite2-Country.mmdb")
        );
        // Upper-cased, each once.
        assert_eq!(countries.deny, [Country(*b"KP"), Country(*b"IR")]);
        assert!(countries.allow.is_empty());
        let allow_only = parsed("[countries]\ndatabase = \"c.mmdb\"\nallow = [\"DE\"]\n");
        assert_eq!(allow_only.countries.unwrap().allow, [Country(*b"DE")]);
        assert_eq!(parsed("").countries, None);
    }

    #[test]
    fn bad_countries_tables_are_refused_where_written() {
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\ndeny = [\"DE\", \"UK\"]\n",
            3,
            "countries.deny",
            "the United Kingdom is GB",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\nallow = [\"DEU\"]\n",
            3,
            "countries.allow",
            "ISO 3166-1 alpha-2",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\ndeny = [\"ZZ\"]\n",
            3,
            "countries.deny",
            "not an ISO 3166-1 alpha-2 country code",
        );
        refused(
            "[countries]\ndeny = [\"KP\"]\n",
            1,
            "countries.database",
            "missing key",
        );
        refused(
            "[countries]\ndatabase = \"\"\ndeny = [\"KP\"]\n",
            2,
            "countries.database",
            "empty",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\n",
            1,
            "countries",
            "no country listed",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\ndeny = [\"FR\"]\nallow = [\"DE\", \"fr\"]\n",
            4,
            "countries.allow",
            "FR is in both allow and deny",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\ndeny = \"KP\"\n",
            3,
            "countries.deny",
            "expected an array",
        );
        refused(
            "[countries]\ndatabase = \"c.mmdb\"\nblock = [\"KP\"]\n",
            3,
            "countries.block",
            "unknown key",
        );
    }

    #[test]
    fn the_crowdsec_table_is_read_with_defaults() {
        let dir = std::env::temp_dir().join(format!("sip-filter-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("bouncer.key");
        std::fs::write(&key_file, "file-key\n").unwrap();
        let password_file = dir.join("machine.password");
        std::fs::write(&password_file, "pw\n").unwrap();
        let settings =
            parsed("[crowdsec]\napi_url = \"http://127.0.0.1:8080/\"\napi_key = \"k1\"\n");
        let crowdsec = settings.crowdsec.unwrap();
        assert_eq!(crowdsec.api_url, "http://127.0.0.1:8080");
        assert_eq!(crowdsec.api_key, "k1");
        assert_eq!(crowdsec.update_frequency.as_secs(), 10);
        assert_eq!(crowdsec.resync_frequency.as_secs(), 300);
        assert_eq!(crowdsec.scopes, ["ip", "range"]);
        assert!(crowdsec.machine.is_none());
        // The key stays out of Debug output.
        assert!(!format!("{crowdsec:?}").contains("k1"));
        let settings = parsed(&format!(
            "[crowdsec]\napi_url = \"http://lapi.example.test:8080\"\napi_key_file = \"{}\"\nupdate_frequency = \"500ms\"\nresync_frequency = \"1m\"\nscopes = [\"Ip\"]\norigins = [\"cscli\", \"crowdsec\"]\nscenarios_not_containing = [\"http\"]\nmachine_id = \"gw1\"\npassword_file = \"{}\"\n",
            key_file.display(),
            password_file.display()
        ));
        let crowdsec = settings.crowdsec.unwrap();
        assert_eq!(crowdsec.api_key, "file-key");
        assert_eq!(crowdsec.update_frequency.as_millis(), 500);
        assert_eq!(crowdsec.resync_frequency.as_secs(), 60);
        // The forms of the rest of the file, and Go's.
        for (written, seconds) in [("4m 30s", 270), ("4m30.5s", 270), ("90", 90)] {
            let settings = parsed(&format!(
                "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nresync_frequency = \"{written}\"\n"
            ));
            assert_eq!(
                settings.crowdsec.unwrap().resync_frequency.as_secs(),
                seconds
            );
        }
        assert_eq!(crowdsec.scopes, ["ip"]);
        assert_eq!(crowdsec.origins, ["cscli", "crowdsec"]);
        let machine = crowdsec.machine.unwrap();
        assert_eq!(
            (machine.machine_id.as_str(), machine.password.as_str()),
            ("gw1", "pw")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_crowdsec_values_are_refused_at_their_line() {
        refused(
            "\n[crowdsec]\napi_key = \"k\"\n",
            2,
            "crowdsec.api_url",
            "missing key",
        );
        refused(
            "[crowdsec]\napi_url = \"http://127.0.0.1:8080\"\n",
            1,
            "crowdsec.api_key",
            "cscli bouncers add",
        );
        refused(
            "[crowdsec]\napi_url = \"127.0.0.1:8080\"\napi_key = \"k\"\n",
            2,
            "crowdsec.api_url",
            "not an http:// URL",
        );
        refused(
            "[crowdsec]\napi_url = \"https://lapi:8080\"\napi_key = \"k\"\n",
            2,
            "crowdsec.api_url",
            "TLS",
        );
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nupdate_frequency = \"10x\"\n",
            4,
            "crowdsec.update_frequency",
            "like \"10s\"",
        );
        refused("[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nupdate_frequency = \"1m\"\nresync_frequency = \"10s\"\n", 5, "crowdsec.resync_frequency", "at least update_frequency");
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nscopes = [\"country\"]\n",
            4,
            "crowdsec.scopes",
            "\"ip\", \"range\"",
        );
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key_file = \"/nonexistent/key\"\n",
            3,
            "crowdsec.api_key_file",
            "cannot be read",
        );
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nmachine_id = \"gw1\"\n",
            4,
            "crowdsec.password_file",
            "missing key",
        );
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"a key\"\n",
            3,
            "crowdsec.api_key",
            "spaces",
        );
        refused(
            "[crowdsec]\napi_url = \"http://l:8080\"\napi_key = \"k\"\nupdate_frequncy = \"1s\"\n",
            4,
            "crowdsec.update_frequncy",
            "unknown key",
        );
    }

    /// `[daemon]`: what `run` attaches to and where it keeps things, each key read.
    #[test]
    fn the_daemon_table_is_read() {
        use std::time::Duration;
        assert_eq!(parsed("[daemon]\n").daemon, DaemonSettings::default());
        let settings = parsed(
            "[daemon]\ninterfaces = [\"eth0\", \"bond0.100\"]\nxdp_mode = \"skb\"\nmetrics_addr = \"[::1]:9184\"\nstate_dir = \"/srv/sip-filter\"\nsave_interval = \"5m\"\n",
        );
        assert_eq!(
            settings.daemon,
            DaemonSettings {
                interfaces: vec!["eth0".into(), "bond0.100".into()],
                xdp_mode: Some(AttachMode::Skb),
                metrics_addr: Some("[::1]:9184".into()),
                state_dir: Some(PathBuf::from("/srv/sip-filter")),
                save_interval: Some(Duration::from_secs(300)),
            }
        );
        // The filter's settings are the defaults still.
        assert_eq!(
            Settings {
                daemon: DaemonSettings::default(),
                ..settings
            },
            Settings::default()
        );
        for (mode, expected) in [("auto", AttachMode::Auto), ("native", AttachMode::Native)] {
            let settings = parsed(&format!("[daemon]\nxdp_mode = \"{mode}\"\n"));
            assert_eq!(settings.daemon.xdp_mode, Some(expected));
        }
        // Seconds, the form `--save-interval` took first.
        let settings = parsed("[daemon]\nsave_interval = 90\n");
        assert_eq!(settings.daemon.save_interval, Some(Duration::from_secs(90)));
    }

    #[test]
    fn bad_daemon_values_are_refused_at_their_line() {
        refused(
            "[daemon]\ninterfaces = []\n",
            2,
            "daemon.interfaces",
            "name at least one",
        );
        refused(
            "[daemon]\ninterfaces = [\n  \"eth0\",\n  \"eth0\",\n]\n",
            4,
            "daemon.interfaces",
            "\"eth0\" is given twice",
        );
        for bad in ["", "a-name-longer-than-15", "eth0:1", "eth 0", "../x", "."] {
            refused(
                &format!("[daemon]\ninterfaces = [{bad:?}]\n"),
                2,
                "daemon.interfaces",
                "is not an interface name",
            );
        }
        refused(
            "[daemon]\nxdp_mode = \"generic\"\n",
            2,
            "daemon.xdp_mode",
            "write \"auto\", \"native\" or \"skb\"",
        );
        for bad in [
            "9184",
            ":9184",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:http",
        ] {
            refused(
                &format!("[daemon]\nmetrics_addr = {bad:?}\n"),
                2,
                "daemon.metrics_addr",
                "is not HOST:PORT",
            );
        }
        refused(
            "[daemon]\nstate_dir = \"var/lib/sip-filter\"\n",
            2,
            "daemon.state_dir",
            "not an absolute path",
        );
        for bad in ["0", "\"500ms\"", "-5"] {
            refused(
                &format!("[daemon]\nsave_interval = {bad}\n"),
                2,
                "daemon.save_interval",
                "too short",
            );
        }
        refused(
            "[daemon]\nsave_interval = \"1 lightyear\"\n",
            2,
            "daemon.save_interval",
            "like 30s, 10m, 1h",
        );
        refused(
            "[daemon]\niface = [\"eth0\"]\n",
            2,
            "daemon.iface",
            "unknown key",
        );
    }

    /// Every ban duration and window reads `1h`, `10m`, `59m 58s` (as `block list`
    /// prints) and whole seconds, the first form.
    #[test]
    fn ban_durations_are_read_in_either_form() {
        let settings = parsed(
            "[ban]\nscanner_seconds = \"1h\"\nunknown_domain_window_seconds = \"10m\"\nunknown_domain_seconds = \"59m 58s\"\nrate_overflow_window_seconds = 10\nrate_overflow_seconds = \"1d 2h\"\n",
        );
        assert_eq!(
            settings.ban,
            BanRules {
                scanner_seconds: 3600,
                unknown_domain_window_seconds: 600,
                unknown_domain_seconds: 3598,
                rate_overflow_window_seconds: 10,
                rate_overflow_seconds: 93_600,
                ..BanRules::default()
            }
        );
        assert_eq!(
            parsed("[ban]\nscanner_seconds = \"0s\"\n")
                .ban
                .scanner_seconds,
            0
        );
        assert_eq!(
            parsed("[ban]\nscanner_seconds = 4294967295\n")
                .ban
                .scanner_seconds,
            u32::MAX
        );
        for key in [
            "scanner_seconds",
            "unknown_domain_window_seconds",
            "unknown_domain_seconds",
            "rate_overflow_window_seconds",
            "rate_overflow_seconds",
            "connection_overflow_window_seconds",
            "connection_overflow_seconds",
            "repeat_window_seconds",
            "repeat_max_seconds",
        ] {
            let at = format!("ban.{key}");
            refused(
                &format!("[ban]\n{key} = \"1.5s\"\n"),
                2,
                &at,
                "whole seconds",
            );
            refused(&format!("[ban]\n{key} = \"1x\"\n"), 2, &at, "like 30s, 10m");
            refused(&format!("[ban]\n{key} = \"-1h\"\n"), 2, &at, "negative");
            refused(
                &format!("[ban]\n{key} = \"1 month\"\n"),
                2,
                &at,
                "not a duration",
            );
            refused(&format!("[ban]\n{key} = -1\n"), 2, &at, "out of range");
            refused(&format!("[ban]\n{key} = 1.5\n"), 2, &at, "a duration like");
            refused(&format!("[ban]\n{key} = true\n"), 2, &at, "a duration like");
        }
        // And those of [answers].
        for key in [
            "lockout_window_seconds",
            "lockout_seconds",
            "ban_window_seconds",
            "ban_seconds",
            "enumeration_window_seconds",
            "enumeration_seconds",
            "account_window_seconds",
            "account_lockout_seconds",
            "registration_cap_seconds",
        ] {
            let settings = parsed(&format!("[answers]\n{key} = \"59m 58s\"\n"));
            let rules = format!("{:?}", settings.auth);
            assert!(rules.contains(&format!("{key}: 3598")), "{key}: {rules}");
            let at = format!("answers.{key}");
            refused(
                &format!("[answers]\n{key} = \"1x\"\n"),
                2,
                &at,
                "like 30s, 10m",
            );
            refused(&format!("[answers]\n{key} = -1\n"), 2, &at, "out of range");
        }
        refused(
            "[ban]\nunknown_domain_hits = \"5\"\n",
            2,
            "ban.unknown_domain_hits",
            "expected a whole number",
        );
    }

    /// `extra_user_agents` adds to the built-in list, or to `user_agents` when that
    /// replaces it; an entry already there is not added twice.
    #[test]
    fn extra_user_agents_add_to_the_list() {
        let settings =
            parsed("[scanner]\nextra_user_agents = [\"evil-dialer\", \"SIPVicious\", \"scan*\"]\n");
        let mut expected: Vec<String> = DEFAULT_SCANNER_USER_AGENTS
            .iter()
            .map(|agent| agent.to_string())
            .collect();
        expected.extend(["evil-dialer".to_string(), "scan*".to_string()]);
        assert_eq!(settings.scanner_user_agents, expected);
        let settings = parsed(
            "[scanner]\nuser_agents = [\"sipvicious\"]\nextra_user_agents = [\"evil-dialer\"]\n",
        );
        assert_eq!(settings.scanner_user_agents, ["sipvicious", "evil-dialer"]);
        assert_eq!(
            parsed("[scanner]\nextra_user_agents = []\n").scanner_user_agents,
            DEFAULT_SCANNER_USER_AGENTS
        );
        refused(
            "[scanner]\nextra_user_agents = [\"evil\", \"\"]\n",
            2,
            "scanner.extra_user_agents",
            "an empty prefix would match every User-Agent",
        );
        let many: Vec<String> = (0..243).map(|i| format!("\"scanner{i}\"")).collect();
        refused(
            &format!("[scanner]\n\nextra_user_agents = [{}]\n", many.join(", ")),
            3,
            "scanner.extra_user_agents",
            "257 scanner User-Agents given, at most 256",
        );
    }

    /// The example names the built-in list as it is.
    #[test]
    fn the_example_names_the_built_in_user_agents() {
        let prose: String = EXAMPLE
            .lines()
            .map(|line| line.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join(" ");
        let list = DEFAULT_SCANNER_USER_AGENTS.join(", ");
        assert!(
            prose.contains(&format!(
                "The built-in list, from the public community lists: {list}."
            )),
            "the example's built-in list differs from {list}"
        );
    }

    /// One name for the policy in flag, file and reason (`not_sip_payload`), its first
    /// name in the file still read.
    #[test]
    fn the_not_sip_payload_policy_has_one_name_and_its_old_one() {
        assert_eq!(
            parsed("[filter]\nnot_sip_payload = \"pass\"\n").not_sip_payload,
            NotSipPolicy::Pass
        );
        assert_eq!(
            parsed("[filter]\nnon_sip_on_sip_port = \"pass\"\n").not_sip_payload,
            NotSipPolicy::Pass
        );
        assert_eq!(
            parsed("[filter]\nnot_sip_payload = \"drop\"\n").not_sip_payload,
            NotSipPolicy::Drop
        );
        refused(
            "[filter]\nnot_sip_payload = \"dorp\"\n",
            2,
            "filter.not_sip_payload",
            "write \"drop\" or \"pass\"",
        );
        refused(
            "[filter]\nnot_sip_payload = \"drop\"\nnon_sip_on_sip_port = \"pass\"\n",
            3,
            "filter.non_sip_on_sip_port",
            "old name of filter.not_sip_payload",
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let path = Path::new("/nonexistent/sip-filter.toml");
        let e = load(path).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (None, None));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sip-filter.toml: cannot be read: "),
            "{e}"
        );
    }
}

// Issue 18: the `[destinations]` table.
#[cfg(test)]
mod destination_tests {
    use std::path::Path;

    use super::parse;
    use crate::destinations::{Action, CallBudgets, Rule};

    fn refused(text: &str, line: usize, key: &str, what: &str) {
        let error = match parse(text, Path::new("test.toml")) {
            Ok(settings) => panic!("{text:?} accepted: {:?}", settings.destinations),
            Err(e) => e,
        };
        assert_eq!(error.line, Some(line), "{error}");
        assert_eq!(error.key.as_deref(), Some(key), "{error}");
        assert!(error.message.contains(what), "{error}");
    }

    #[test]
    fn the_destinations_table_is_read() {
        let text = "[destinations]\ninternational_prefixes = [\"011\"]\naccount_calls_per_minute = 10\n\
                    account_limited_calls_per_hour = 20\naccount_block_seconds = \"30m\"\n\
                    [[destinations.rules]]\nprefix = \"+1900\"\naction = \"deny\"\n\
                    [[destinations.rules]]\nprefix = \"+\"\naction = \"limit\"\ncalls_per_minute = 5\n\
                    [[destinations.rules]]\nprefix = \"+49\"\naction = \"allow\"\n";
        let settings = parse(text, Path::new("t.toml")).unwrap();
        let destinations = settings.destinations.unwrap();
        assert_eq!(destinations.international_prefixes, ["011"]);
        assert_eq!(
            destinations.budgets,
            CallBudgets {
                per_minute: 10,
                limited_per_hour: 20,
                block_seconds: 1800,
                ..CallBudgets::default()
            }
        );
        assert_eq!(
            destinations.rules,
            [
                Rule {
                    prefix: "+1900".into(),
                    action: Action::Deny
                },
                Rule {
                    prefix: "+".into(),
                    action: Action::Limit {
                        calls_per_minute: 5
                    }
                },
                Rule {
                    prefix: "+49".into(),
                    action: Action::Allow
                },
            ]
        );
        let defaults = parse("[destinations]\n", Path::new("t.toml"))
            .unwrap()
            .destinations
            .unwrap();
        assert_eq!(defaults.international_prefixes, ["00"]);
        assert_eq!(defaults.budgets.block_seconds, 3600);
        assert!(!defaults.budgets.any());
    }

    #[test]
    fn bad_destination_rules_are_refused_where_written() {
        let rule = |body: &str| format!("[destinations]\n[[destinations.rules]]\n{body}");
        refused(
            &rule("prefix = \"+44 20\"\naction = \"deny\"\n"),
            3,
            "destinations.rules.prefix",
            "not a prefix",
        );
        refused(
            &rule("prefix = \"+44\"\naction = \"block\"\n"),
            4,
            "destinations.rules.action",
            "deny, limit or allow",
        );
        refused(
            &rule("prefix = \"+44\"\naction = \"limit\"\n"),
            4,
            "destinations.rules.calls_per_minute",
            "needs calls_per_minute",
        );
        refused(
            &rule("prefix = \"+44\"\naction = \"limit\"\ncalls_per_minute = 0\n"),
            5,
            "destinations.rules.calls_per_minute",
            "out of range",
        );
        refused(
            &rule("prefix = \"+44\"\naction = \"deny\"\ncalls_per_minute = 3\n"),
            5,
            "destinations.rules.calls_per_minute",
            "only a limit rule",
        );
        refused(
            &rule("prefix = \"+44\"\naction = \"deny\"\n[[destinations.rules]]\nprefix = \"+44\"\naction = \"allow\"\n"),
            6,
            "destinations.rules.prefix",
            "two rules",
        );
        refused(
            "[destinations]\ninternational_prefixes = [\"+\"]\n",
            2,
            "destinations.international_prefixes",
            "not an international prefix",
        );
        refused(
            "[destinations]\ninternational_prefixes = [\"00\", \"011\", \"0011\"]\n",
            2,
            "destinations.international_prefixes",
            "at most 2",
        );
        refused(
            "[destinations]\naccount_calls_per_hour = -1\n",
            2,
            "destinations.account_calls_per_hour",
            "out of range",
        );
    }
}
