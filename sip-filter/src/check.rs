//! `sip-filter check`'s warnings: what a configuration may legally say but an operator
//! almost certainly did not mean (a port twice, a network both trusted and denied, every
//! address denied...). Errors are [`crate::config`]'s and [`Settings::validate`]'s: a
//! configuration reaching here is one the daemon accepts.

use std::{collections::HashMap, fmt, net::IpAddr};

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use crate::{config::line_of, settings::is_example_domain, Settings};

/// Something legal but suspicious, with where the file says it (when it does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line in the configuration file; None when the value is a flag's or a
    /// default.
    pub line: Option<usize>,
    /// The dotted key, like `lists.deny`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The warnings on `settings`, placed in `text` (the configuration file they were read
/// from, if any). Flags may have replaced what the file says: a warning is placed only
/// where the file holds the value it is about.
pub fn warnings(settings: &Settings, text: Option<&str>) -> Vec<Warning> {
    let file = FileValues::new(text.unwrap_or(""));
    let mut found = Vec::new();
    let mut warn = |line: Option<usize>, key: &str, message: String| {
        found.push(Warning {
            line,
            key: key.to_string(),
            message,
        })
    };

    // Ports named twice, or a TCP port read both in the clear and as TLS.
    for (key, ports) in [
        ("filter.ports", &settings.ports),
        ("filter.tcp_ports", &settings.tcp_ports),
        ("filter.tls_ports", &settings.tls_ports),
    ] {
        for (port, second) in repeated(ports.iter()) {
            let line = file.line_of_nth(key, second, |v| integer(v) == Some(i64::from(*port)));
            warn(line, key, format!("port {port} is listed twice"));
        }
    }
    for port in settings
        .tls_ports
        .iter()
        .filter(|port| settings.tcp_ports.contains(port))
    {
        let line = file.line_of_nth("filter.tls_ports", 0, |v| {
            integer(v) == Some(i64::from(*port))
        });
        warn(
            line,
            "filter.tls_ports",
            format!("TCP port {port} is in both filter.tcp_ports and filter.tls_ports: SIP in the clear and TLS cannot share a port"),
        );
    }

    // Domains that are one name: case and a trailing dot do not matter.
    let normal = |entry: &String| entry.trim_end_matches('.').to_ascii_lowercase();
    for (entry, second) in repeated(settings.domains.iter().map(normal)) {
        let line = file.line_of_nth("filter.domains", second, |v| {
            string(v).is_some_and(|s| normal(&s.to_string()) == entry)
        });
        let spellings: Vec<&str> = settings
            .domains
            .iter()
            .filter(|d| normal(d) == entry)
            .map(String::as_str)
            .collect();
        warn(
            line,
            "filter.domains",
            format!(
                "{} name one domain (case and a trailing dot do not matter): keep one",
                spellings.join(" and ")
            ),
        );
    }
    let examples: Vec<&str> = settings
        .domains
        .iter()
        .filter(|entry| is_example_domain(entry))
        .map(String::as_str)
        .collect();
    if !examples.is_empty() && settings.allow_example_domains && !settings.dry_run {
        warn(
            file.line_of_key("filter.allow_example_domains"),
            "filter.allow_example_domains",
            format!(
                "enforcing reserved example domains ({}): every real request to any other domain is dropped. Right for a test lab only",
                examples.join(", ")
            ),
        );
    }

    // The lists, from the file's own text: parsing them cleared any host bits.
    for key in ["lists.allow", "lists.deny"] {
        for (text, line) in file.strings(key) {
            if let Ok(net) = text.trim().parse::<IpNet>() {
                if net.trunc() != net {
                    warn(
                        Some(line),
                        key,
                        format!(
                            "{text} has host bits set: it is read as {}. Write that, or the address alone if one host was meant",
                            net.trunc()
                        ),
                    );
                }
            }
        }
    }
    for (key, nets) in [
        ("lists.allow", &settings.allow),
        ("lists.deny", &settings.deny),
    ] {
        for (net, second) in repeated(nets.iter()) {
            let line = file.line_of_nth(key, second, |v| parsed_net(v) == Some(*net));
            warn(line, key, format!("{net} is listed twice"));
        }
    }
    for net in settings.deny.iter().filter(|net| net.prefix_len() == 0) {
        let line = file.line_of_nth("lists.deny", 0, |v| parsed_net(v) == Some(*net));
        warn(
            line,
            "lists.deny",
            format!(
                "{net} denies every {} source: only the allow list's sources reach the server",
                family(net)
            ),
        );
    }
    for net in settings.allow.iter().filter(|net| net.prefix_len() == 0) {
        let line = file.line_of_nth("lists.allow", 0, |v| parsed_net(v) == Some(*net));
        warn(
            line,
            "lists.allow",
            format!("{net} trusts every {} source: no deny entry, ban, scanner or domain check applies to any of them", family(net)),
        );
    }
    for denied in &settings.deny {
        let line = file.line_of_nth("lists.deny", 0, |v| parsed_net(v) == Some(*denied));
        if settings.allow.contains(denied) {
            warn(
                line,
                "lists.deny",
                format!("{denied} is in both lists.allow and lists.deny: the allow list wins, so the deny entry does nothing"),
            );
        } else if let Some(trusted) = settings
            .allow
            .iter()
            .find(|allowed| allowed.contains(denied) && allowed.prefix_len() > 0)
        {
            warn(
                line,
                "lists.deny",
                format!("{denied} lies inside the trusted {trusted} (lists.allow): trusted sources are never denied, so the deny entry does nothing"),
            );
        }
    }
    for address in &settings.own_addresses {
        if let Some(denied) = settings.deny.iter().find(|net| net.contains(address)) {
            let line = file.line_of_nth("filter.own_addresses", 0, |v| {
                string(v).and_then(|s| s.parse::<IpAddr>().ok()) == Some(*address)
            });
            warn(
                line,
                "filter.own_addresses",
                format!("{address}, one of the server's own addresses, is denied by {denied}: SIP it sends to itself, or a peer on the same host, is dropped"),
            );
        }
    }

    // Ban rules that cannot fire, or fire without meaning to.
    let rules = &settings.ban;
    for (hits_key, hits, seconds_key, seconds, window_key, window) in [
        (
            "ban.unknown_domain_hits",
            rules.unknown_domain_hits,
            "ban.unknown_domain_seconds",
            rules.unknown_domain_seconds,
            "ban.unknown_domain_window_seconds",
            rules.unknown_domain_window_seconds,
        ),
        (
            "ban.rate_overflow_hits",
            rules.rate_overflow_hits,
            "ban.rate_overflow_seconds",
            rules.rate_overflow_seconds,
            "ban.rate_overflow_window_seconds",
            rules.rate_overflow_window_seconds,
        ),
        (
            "ban.tls_refused_hits",
            settings.tls.refused_hits,
            "ban.tls_refused_seconds",
            settings.tls.refused_seconds,
            "ban.tls_refused_window_seconds",
            settings.tls.refused_window_seconds,
        ),
    ] {
        if hits > 0 && seconds == 0 {
            warn(
                file.line_of_key(seconds_key),
                seconds_key,
                format!("a ban of 0 seconds turns the rule off, yet {hits_key} is {hits}: give a ban length, or set {hits_key} = 0 to say the rule is off"),
            );
        }
        if hits > 1 && seconds > 0 && window == 0 {
            warn(
                file.line_of_key(window_key),
                window_key,
                format!("a window of 0 seconds can never hold {hits} hits ({hits_key}): the rule never bans"),
            );
        }
    }
    let limits = &settings.rate_limits;
    let per_source = [limits.register, limits.invite, limits.other, limits.answers];
    if rules.rate_overflow_hits > 0
        && rules.rate_overflow_seconds > 0
        && per_source.iter().all(Option::is_none)
    {
        warn(
            file.line_of_key("ban.rate_overflow_hits"),
            "ban.rate_overflow_hits",
            "no per-source rate limit is set ([rate_limit.register], .invite, .other and .answers are unlimited), so no source ever overflows one and this rule never bans".to_string(),
        );
    }
    if settings.ipv6_prefix > 64 {
        warn(
            file.line_of_key("filter.ipv6_prefix"),
            "filter.ipv6_prefix",
            format!(
                "IPv6 sources keyed by /{}: one customer network (a /64) holds {} keys, so an attacker rotating addresses in it escapes its bans and rate limits",
                settings.ipv6_prefix,
                if settings.ipv6_prefix >= 128 { "2^64".to_string() } else { format!("2^{}", settings.ipv6_prefix - 64) }
            ),
        );
    }
    // The TLS policy (issue 14, item 4): a list of its own that holds a served domain's
    // reserved example names is as unsafe as the domains themselves.
    if let Some(names) = &settings.tls.server_names {
        let examples: Vec<&str> = names
            .iter()
            .filter(|entry| is_example_domain(entry))
            .map(String::as_str)
            .collect();
        if !examples.is_empty() && !settings.dry_run {
            warn(
                file.line_of_key("tls.server_names"),
                "tls.server_names",
                format!(
                    "reserved example names ({}) in the TLS name allowlist: every real ClientHello naming your server is dropped. Right for a test lab only",
                    examples.join(", ")
                ),
            );
        }
    }
    // Hook for issue 13 and later settings: add checks here, each with a test.
    found
}

/// The items of `values` seen before, each with the index of its repeat among the
/// items equal to it (1 for the second, ...), in order.
fn repeated<T: Eq + std::hash::Hash + Clone>(values: impl Iterator<Item = T>) -> Vec<(T, usize)> {
    let mut seen: HashMap<T, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for value in values {
        let count = seen.entry(value.clone()).or_insert(0);
        if *count == 1 {
            repeats.push((value, 1));
        }
        *count += 1;
    }
    repeats
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn integer(value: &DeValue<'_>) -> Option<i64> {
    let integer = value.as_integer()?;
    i64::from_str_radix(&integer.as_str().replace('_', ""), integer.radix()).ok()
}

fn string<'a>(value: &'a DeValue<'_>) -> Option<&'a str> {
    value.as_str()
}

fn parsed_net(value: &DeValue<'_>) -> Option<IpNet> {
    crate::config::parse_net(string(value)?.trim()).ok()
}

/// The configuration file's values with their places, read only to say where a
/// warning's value is written (the settings themselves come from [`crate::config`]).
struct FileValues<'t> {
    text: &'t str,
    document: Option<toml::Spanned<DeTable<'t>>>,
}

impl<'t> FileValues<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            document: DeTable::parse(text).ok(),
        }
    }

    /// The value at a dotted key, with its byte span.
    fn value(&self, dotted: &str) -> Option<(&DeValue<'t>, std::ops::Range<usize>)> {
        let mut table = self.document.as_ref()?.get_ref();
        let mut parts = dotted.split('.').peekable();
        while let Some(part) = parts.next() {
            let (_, value) = table.iter().find(|(key, _)| key.get_ref() == part)?;
            if parts.peek().is_none() {
                return Some((value.get_ref(), value.span()));
            }
            table = value.get_ref().as_table()?;
        }
        None
    }

    fn line_of_key(&self, dotted: &str) -> Option<usize> {
        self.value(dotted)
            .map(|(_, span)| line_of(self.text, span.start))
    }

    /// The line of the `nth` (0-based) item of the array at `dotted` that `matches`.
    fn line_of_nth(
        &self,
        dotted: &str,
        nth: usize,
        matches: impl Fn(&DeValue<'_>) -> bool,
    ) -> Option<usize> {
        let (value, _) = self.value(dotted)?;
        value
            .as_array()?
            .iter()
            .filter(|item| matches(item.get_ref()))
            .nth(nth)
            .map(|item| line_of(self.text, item.span().start))
    }

    /// The strings of the array at `dotted`, as written, with their lines.
    fn strings(&self, dotted: &str) -> Vec<(String, usize)> {
        let Some((value, _)) = self.value(dotted) else {
            return Vec::new();
        };
        value
            .as_array()
            .map(|array| {
                array
                    .iter()
                    .filter_map(|item| {
                        let text = string(item.get_ref())?;
                        Some((text.to_string(), line_of(self.text, item.span().start)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn check(text: &str) -> Vec<Warning> {
        let settings = crate::config::parse(text, Path::new("test.toml")).unwrap();
        warnings(&settings, Some(text))
    }

    fn one(text: &str) -> Warning {
        let found = check(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        found.into_iter().next().unwrap()
    }

    #[test]
    fn a_plain_configuration_has_none() {
        let text = "[filter]\ndomains = [\"pbx.company.de\"]\n[lists]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"192.0.2.0/24\", \"203.0.112.0/24\"]\n";
        assert_eq!(check(text), []);
        assert_eq!(warnings(&Settings::default(), None), []);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sip-filter.toml");
        let settings = crate::config::load(&example).unwrap();
        let text = std::fs::read_to_string(&example).unwrap();
        assert_eq!(warnings(&settings, Some(&text)), []);
    }

    #[test]
    fn duplicate_ports_are_placed_on_the_second() {
        let found = one("[filter]\nports = [5060,\n  5080,\n  5060]\n");
        assert_eq!(found.line, Some(4));
        assert_eq!(found.key, "filter.ports");
        assert!(
            found.message.contains("port 5060 is listed twice"),
            "{found}"
        );
        let found = one("[filter]\ntcp_ports = [5060]\ntls_ports = [5060]\n");
        assert_eq!(
            (found.line, found.key.as_str()),
            (Some(3), "filter.tls_ports")
        );
    }

    #[test]
    fn domains_equal_but_for_case() {
        let found = one("[filter]\ndomains = [\"pbx.company.de\", \"PBX.Company.de.\"]\n");
        assert_eq!(found.line, Some(2));
        assert!(
            found.message.contains("pbx.company.de and PBX.Company.de."),
            "{found}"
        );
    }

    #[test]
    fn list_warnings() {
        let found = one("[lists]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.0/24\"]\n");
        assert_eq!((found.line, found.key.as_str()), (Some(3), "lists.deny"));
        assert!(found.message.contains("in both"), "{found}");

        let found = one("[lists]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.128/25\"]\n");
        assert!(
            found.message.contains("inside the trusted 203.0.113.0/24"),
            "{found}"
        );

        let found = one("[lists]\ndeny = [\n\"192.0.2.0/24\",\n\"0.0.0.0/0\"]\n");
        assert_eq!(found.line, Some(4));
        assert!(found.message.contains("every IPv4 source"), "{found}");
        let found = one("[lists]\ndeny = [\"::/0\"]\n");
        assert!(found.message.contains("every IPv6 source"), "{found}");
        let found = one("[lists]\nallow = [\"0.0.0.0/0\"]\n");
        assert!(
            found.message.contains("trusts every IPv4 source"),
            "{found}"
        );

        let found =
            one("[filter]\nown_addresses = [\"192.0.2.7\"]\n[lists]\ndeny = [\"192.0.2.0/24\"]\n");
        assert_eq!(
            (found.line, found.key.as_str()),
            (Some(2), "filter.own_addresses")
        );
        assert!(found.message.contains("denied by 192.0.2.0/24"), "{found}");

        let found = one("[lists]\nallow = [\"192.0.2.7/24\"]\n");
        assert_eq!((found.line, found.key.as_str()), (Some(2), "lists.allow"));
        assert!(
            found
                .message
                .contains("192.0.2.7/24 has host bits set: it is read as 192.0.2.0/24"),
            "{found}"
        );
        // Host bits, and then a repeat once they are cleared.
        let found = check("[lists]\ndeny = [\"192.0.2.0/24\", \"192.0.2.9/24\"]\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[1].message.contains("192.0.2.0/24 is listed twice"),
            "{found:#?}"
        );
    }

    #[test]
    fn ban_rules_that_cannot_fire() {
        let found = one("[ban]\nscanner_seconds = 60\nunknown_domain_seconds = 0\n");
        assert_eq!(
            (found.line, found.key.as_str()),
            (Some(3), "ban.unknown_domain_seconds")
        );
        assert!(found.message.contains("turns the rule off"), "{found}");
        assert_eq!(
            check("[ban]\nunknown_domain_seconds = 0\nunknown_domain_hits = 0\n"),
            []
        );
        let found = one("[ban]\nrate_overflow_window_seconds = 0\n");
        assert!(found.message.contains("never bans"), "{found}");
        let text = "[rate_limit.register]\nunlimited = true\n[rate_limit.invite]\nunlimited = true\n[rate_limit.other]\nunlimited = true\n[rate_limit.answers]\nunlimited = true\n";
        let found = one(text);
        assert_eq!(found.key, "ban.rate_overflow_hits");
        let found = one("[ban]\ntls_refused_seconds = 0\n");
        assert_eq!(
            (found.line, found.key.as_str()),
            (Some(2), "ban.tls_refused_seconds")
        );
    }

    #[test]
    fn example_names_in_the_tls_allowlist() {
        let found = one("[tls]\nserver_names = [\"sip.example.com\"]\n");
        assert_eq!(
            (found.line, found.key.as_str()),
            (Some(2), "tls.server_names")
        );
        assert_eq!(check("[tls]\nserver_names = [\"sip.carrier.net\"]\n"), []);
    }

    #[test]
    fn enforcing_example_domains_and_wide_ipv6_keys() {
        let found =
            one("[filter]\ndomains = [\"pbx.example.test\"]\nallow_example_domains = true\n");
        assert_eq!(found.line, Some(3));
        assert_eq!(
            check("[filter]\ndomains = [\"pbx.example.test\"]\nallow_example_domains = true\ndry_run = true\n"),
            []
        );
        let found = one("[filter]\nipv6_prefix = 128\n");
        assert!(found.message.contains("2^64"), "{found}");
    }

    #[test]
    fn warnings_without_a_file_have_no_line() {
        let settings = Settings {
            ports: vec![5060, 5060],
            ..Settings::default()
        };
        let found = warnings(&settings, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, None);
        assert_eq!(
            found[0].to_string(),
            "filter.ports: port 5060 is listed twice"
        );
    }
}
