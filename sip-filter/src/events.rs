//! The kernel's events (bans, and the first drop per source per second) as log lines an
//! operator reads, `banned 198.51.100.1 for 3600 s: scanner User-Agent`, with fields a
//! log pipeline reads: `event=ban src=198.51.100.1 reason=scanner ttl_s=3600
//! dry_run=false`.
//!
//! Pure functions: [`parse`] decodes a ring buffer record, [`describe`] words it,
//! [`fields`] gives its fields, and [`log_record`] logs both under [`TARGET`]. `sip-filter run` reads
//! the ring buffer and hands each record to [`log_record`].

use std::{
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv6Addr},
};

use sip_filter_common::{
    maps::{ipv6_prefix_key, BanReason, Event, EventKind, Reason, DROP_EVENT_INTERVAL_NS},
    sip::{
        pairing::{Account, ACCOUNT_WORDS},
        Method,
    },
};

/// The log target of event lines (`RUST_LOG=info,sip_filter::events=warn` silences them).
pub const TARGET: &str = "sip_filter::events";

/// An [`Event`] read from a ring buffer record; `None` if the record is too short.
/// Decoded field by field: a record's bytes carry no alignment guarantee.
pub fn parse(record: &[u8]) -> Option<Event> {
    if record.len() < size_of::<Event>() {
        return None;
    }
    let u32_at = |offset: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            record.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |offset: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            record.get(offset..offset + 8)?.try_into().ok()?,
        ))
    };
    let source_at = offset_of!(Event, source);
    let account_at = offset_of!(Event, account);
    let mut account = [0u64; ACCOUNT_WORDS];
    for (i, word) in account.iter_mut().enumerate() {
        *word = u64_at(account_at + 8 * i)?;
    }
    Some(Event {
        source: record.get(source_at..source_at + 16)?.try_into().ok()?,
        kind: u32_at(offset_of!(Event, kind))?,
        reason: u32_at(offset_of!(Event, reason))?,
        method: u32_at(offset_of!(Event, method))?,
        dry_run: u32_at(offset_of!(Event, dry_run))?,
        expires_ns: u64_at(offset_of!(Event, expires_ns))?,
        account,
    })
}

/// How loud an event is: bans and drops at info (drops are sampled by the kernel, one
/// per source per second), anything this version does not know at debug.
pub fn level(event: &Event) -> log::Level {
    match kind(event) {
        Some(EventKind::Ban | EventKind::Drop | EventKind::Lockout) => log::Level::Info,
        Some(EventKind::Registered) => log::Level::Debug,
        None => log::Level::Debug,
    }
}

/// The event in words. `now_ns` is `CLOCK_MONOTONIC_COARSE` now (ban expiries are on
/// that clock); `ipv6_prefix` is the prefix length IPv6 sources are tracked and banned
/// by.
pub fn describe(event: &Event, now_ns: u64, ipv6_prefix: u32) -> String {
    let source = source_address(event.source);
    let dry_run = event.dry_run != 0;
    match kind(event) {
        Some(EventKind::Ban) => {
            let verb = if dry_run { "would ban" } else { "banned" };
            let scope = match prefix_of(source, ipv6_prefix) {
                Some(prefix) => format!(" (its /{ipv6_prefix}, {prefix}/{ipv6_prefix})"),
                None => String::new(),
            };
            let duration = if event.expires_ns == u64::MAX {
                "until removed".to_string()
            } else {
                format!("for {} s", seconds_left(event.expires_ns, now_ns))
            };
            let dry = if dry_run { " (dry-run)" } else { "" };
            format!(
                "{verb} {source}{scope} {duration}: {}{dry}",
                ban_reason(event.reason)
            )
        }
        Some(EventKind::Drop) => {
            let verb = if dry_run {
                "would drop (dry-run, passed)"
            } else {
                "dropping"
            };
            let from = match prefix_of(source, ipv6_prefix) {
                Some(_) => format!("its /{ipv6_prefix}"),
                None => "it".to_string(),
            };
            let would = if dry_run { "would-drops" } else { "drops" };
            format!(
                "{verb} {source}: {}{}; further {would} from {from} this second are not logged",
                drop_reason(event.reason),
                drop_method(event.reason, event.method),
            )
        }
        Some(EventKind::Lockout) => {
            let verb = if dry_run {
                "would lock (dry-run)"
            } else {
                "locked"
            };
            let account = account_name(&event.account);
            let left = seconds_left(event.expires_ns, now_ns);
            if event.source == [0; 16] {
                format!(
                    "{verb} account {account:?} for {left} s for every source neither \
                     registered nor allow-listed: failed passwords from many sources"
                )
            } else {
                format!(
                    "{verb} account {account:?} for {left} s for {source}: failed passwords \
                     (its other accounts are unaffected)"
                )
            }
        }
        Some(EventKind::Registered) => format!(
            "{source} registered (account {:?}) for {} s: it skips the untrusted budget \
             and is never banned for failed passwords",
            account_name(&event.account),
            seconds_left(event.expires_ns, now_ns)
        ),
        None => format!(
            "event of unknown kind {} from {source} (reason {}, method {})",
            event.kind, event.reason, event.method
        ),
    }
}

/// The event as `key=value` fields, in a stable order and with stable names (the
/// reasons as the metrics' `reason` labels name them): `event` (ban, drop, lockout,
/// registered, unknown), `src`, `prefix` (the IPv6 network tracked, when wider than the
/// address), `reason`, `method` (drops of requests), `account`, `scope` (lockouts:
/// source, or unregistered for every source neither registered nor allow-listed),
/// `ttl_s` (seconds left; none for a ban until removed), `dry_run`.
pub fn fields(event: &Event, now_ns: u64, ipv6_prefix: u32) -> Vec<(&'static str, String)> {
    let source = source_address(event.source);
    let ttl = seconds_left(event.expires_ns, now_ns).to_string();
    let mut fields = vec![(
        "event",
        kind(event).map_or("unknown", kind_name).to_string(),
    )];
    let with_source = |fields: &mut Vec<(&'static str, String)>| {
        fields.push(("src", source.to_string()));
        if let Some(prefix) = prefix_of(source, ipv6_prefix) {
            fields.push(("prefix", format!("{prefix}/{ipv6_prefix}")));
        }
    };
    match kind(event) {
        Some(EventKind::Ban) => {
            with_source(&mut fields);
            let reason = BanReason::ALL
                .get(event.reason as usize)
                .map_or_else(|| event.reason.to_string(), |r| r.name().to_string());
            fields.push(("reason", reason));
            if event.expires_ns != u64::MAX {
                fields.push(("ttl_s", ttl));
            }
        }
        Some(EventKind::Drop) => {
            with_source(&mut fields);
            let reason = Reason::from_number(u64::from(event.reason))
                .map_or_else(|| event.reason.to_string(), |r| r.name().to_string());
            fields.push(("reason", reason));
            let method = Method::ALL
                .get(event.method as usize)
                .map_or_else(|| event.method.to_string(), |m| m.name().to_string());
            fields.push(("method", method));
        }
        Some(EventKind::Lockout) => {
            let everywhere = event.source == [0; 16];
            if !everywhere {
                with_source(&mut fields);
            }
            fields.push(("account", account_name(&event.account)));
            let scope = if everywhere { "unregistered" } else { "source" };
            fields.push(("scope", scope.to_string()));
            fields.push(("ttl_s", ttl));
        }
        Some(EventKind::Registered) => {
            with_source(&mut fields);
            fields.push(("account", account_name(&event.account)));
            fields.push(("ttl_s", ttl));
        }
        None => {
            with_source(&mut fields);
            fields.push(("kind", event.kind.to_string()));
            fields.push(("reason", event.reason.to_string()));
        }
    }
    fields.push(("dry_run", (event.dry_run != 0).to_string()));
    fields
}

/// Decodes `record` and logs it; a short record is skipped with a debug line.
pub fn log_record(record: &[u8], now_ns: u64, ipv6_prefix: u32) {
    match parse(record) {
        Some(event) => {
            let fields = fields(&event, now_ns, ipv6_prefix);
            let pairs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(key, value)| (*key, value.as_str()))
                .collect();
            // The `log!` macros take only fields named in the source.
            log::logger().log(
                &log::Record::builder()
                    .args(format_args!("{}", describe(&event, now_ns, ipv6_prefix)))
                    .level(level(&event))
                    .target(TARGET)
                    .module_path_static(Some(module_path!()))
                    .file_static(Some(file!()))
                    .line(Some(line!()))
                    .key_values(&pairs)
                    .build(),
            );
        }
        None => log::debug!(
            target: TARGET,
            "skipped a malformed event: {} bytes, expected {}",
            record.len(),
            size_of::<Event>()
        ),
    }
}

/// Seconds from `now_ns` to `expires_ns`, to the nearest: the event is read a few ms
/// after it was made.
fn seconds_left(expires_ns: u64, now_ns: u64) -> u64 {
    expires_ns
        .saturating_sub(now_ns)
        .saturating_add(500_000_000)
        / 1_000_000_000
}

/// An account name as the kernel carries it (zero padded, at most 32 bytes), printable.
pub fn account_name(words: &[u64; ACCOUNT_WORDS]) -> String {
    let (bytes, len) = Account::name_bytes(words);
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

fn kind(event: &Event) -> Option<EventKind> {
    [
        EventKind::Drop,
        EventKind::Ban,
        EventKind::Lockout,
        EventKind::Registered,
    ]
    .into_iter()
    .find(|kind| *kind as u32 == event.kind)
}

/// An event kind's name in the `event` field.
fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Drop => "drop",
        EventKind::Ban => "ban",
        EventKind::Lockout => "lockout",
        EventKind::Registered => "registered",
    }
}

/// IPv4 when the address is IPv4-mapped (`::ffff:a.b.c.d`), else IPv6.
fn source_address(source: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(source);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The network an IPv6 source is tracked and banned by, when that is more than the
/// address itself.
fn prefix_of(source: IpAddr, ipv6_prefix: u32) -> Option<Ipv6Addr> {
    match source {
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            Some(Ipv6Addr::from(ipv6_prefix_key(v6.octets(), ipv6_prefix)))
        }
        _ => None,
    }
}

fn ban_reason(n: u32) -> String {
    let Some(reason) = BanReason::ALL.get(n as usize) else {
        return format!("ban reason {n}");
    };
    match reason {
        BanReason::Manual => "added by an operator",
        BanReason::Rate => "repeatedly over its rate limit",
        BanReason::Scanner => "scanner User-Agent",
        BanReason::Domain => "repeated requests for unknown domains",
        BanReason::Feed => "on a blocklist feed",
        BanReason::Auth => "failed passwords",
        BanReason::Enumeration => "many distinct accounts refused or failed (user enumeration)",
        BanReason::Connections => "repeatedly over its connection rate (SYNs)",
    }
    .to_string()
}

fn drop_reason(n: u32) -> String {
    let Some(reason) = Reason::from_number(u64::from(n)) else {
        return format!("reason {n}");
    };
    match reason {
        Reason::DropNotSipPayload => "not SIP",
        Reason::DropUnknownDomain => "unknown domain",
        Reason::DropDenied => "on the deny list",
        Reason::DropBanned => "banned",
        Reason::DropScanner => "scanner User-Agent",
        Reason::DropRateLimited => "over its rate limit",
        Reason::DropGlobalBudget => "untrusted sources over their global budget",
        Reason::DropFragment => "a first fragment that cannot be judged",
        Reason::DropHeaderChain => "headers that cannot be walked",
        Reason::DropMalformed => "SIP-like but malformed",
        Reason::PassSegment => "a TCP segment starting no message",
        Reason::DropAuthLockout => "credentials for an account locked after failed passwords",
        Reason::DropUnregistered => "strict mode: a method reserved for registered sources",
        Reason::DropConnectionRate => "new connections over its connection rate",
        Reason::DropConnectionBudget => {
            "new connections over the untrusted sources' connection budget"
        }
        // Not drops: never sent as drop events, named as in `stats` if they were.
        pass => pass.name(),
    }
    .to_string()
}

/// ` (INVITE)`; nothing for non-requests.
/// A drop's method, as [`method`]; a rate-limit drop without one is the answers class
/// (responses and keep-alives), which is said.
fn drop_method(reason: u32, method_number: u32) -> String {
    if reason == Reason::DropRateLimited as u32 && method_number == Method::None as u32 {
        return " (answers: responses and keep-alives)".to_string();
    }
    method(method_number)
}

fn method(n: u32) -> String {
    match Method::ALL.get(n as usize) {
        Some(Method::None) => String::new(),
        Some(Method::Other) => " (other method)".to_string(),
        Some(method) => format!(" ({})", method.name()),
        None => format!(" (method {n})"),
    }
}

// "this second" in drop lines is the kernel's interval between drop events.
const _: () = assert!(DROP_EVENT_INTERVAL_NS == 1_000_000_000);

#[cfg(test)]
mod tests {
    use sip_filter_common::sip::mapped_ipv4;

    use super::*;

    const NOW: u64 = 5_000_000_000_000;
    const SECOND: u64 = 1_000_000_000;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        mapped_ipv4(a)
    }

    fn v6(text: &str) -> [u8; 16] {
        text.parse::<Ipv6Addr>().unwrap().octets()
    }

    fn ban(source: [u8; 16], reason: BanReason, expires_ns: u64) -> Event {
        Event {
            source,
            kind: EventKind::Ban as u32,
            reason: reason as u32,
            method: Method::None as u32,
            dry_run: 0,
            expires_ns,
            account: [0; 4],
        }
    }

    fn drop(source: [u8; 16], reason: Reason, method: Method) -> Event {
        Event {
            source,
            kind: EventKind::Drop as u32,
            reason: reason as u32,
            method: method as u32,
            dry_run: 0,
            expires_ns: 0,
            account: [0; 4],
        }
    }

    /// The record the kernel writes: the struct's bytes, in its `repr(C)` layout.
    fn record(event: &Event) -> Vec<u8> {
        let mut bytes = vec![0u8; size_of::<Event>()];
        let mut put = |offset: usize, field: &[u8]| {
            bytes[offset..offset + field.len()].copy_from_slice(field);
        };
        put(offset_of!(Event, source), &event.source);
        put(offset_of!(Event, kind), &event.kind.to_ne_bytes());
        put(offset_of!(Event, reason), &event.reason.to_ne_bytes());
        put(offset_of!(Event, method), &event.method.to_ne_bytes());
        put(offset_of!(Event, dry_run), &event.dry_run.to_ne_bytes());
        put(
            offset_of!(Event, expires_ns),
            &event.expires_ns.to_ne_bytes(),
        );
        bytes
    }

    #[test]
    fn a_scanner_ban() {
        let event = ban(
            v4([198, 51, 100, 1]),
            BanReason::Scanner,
            NOW + 3600 * SECOND - 3_000_000, // read 3 ms after the ban
        );
        assert_eq!(
            describe(&event, NOW, 64),
            "banned 198.51.100.1 for 3600 s: scanner User-Agent"
        );
        assert_eq!(level(&event), log::Level::Info);
    }

    #[test]
    fn the_other_ban_reasons() {
        let line = |reason| {
            describe(
                &ban(v4([192, 0, 2, 9]), reason, NOW + 600 * SECOND),
                NOW,
                64,
            )
        };
        assert_eq!(
            line(BanReason::Domain),
            "banned 192.0.2.9 for 600 s: repeated requests for unknown domains"
        );
        assert_eq!(
            line(BanReason::Rate),
            "banned 192.0.2.9 for 600 s: repeatedly over its rate limit"
        );
        let mut unknown = ban(v4([192, 0, 2, 9]), BanReason::Rate, NOW + 600 * SECOND);
        unknown.reason = 77;
        assert_eq!(
            describe(&unknown, NOW, 64),
            "banned 192.0.2.9 for 600 s: ban reason 77"
        );
    }

    #[test]
    fn a_ban_in_dry_run() {
        let mut event = ban(v4([198, 51, 100, 1]), BanReason::Scanner, NOW + 60 * SECOND);
        event.dry_run = 1;
        assert_eq!(
            describe(&event, NOW, 64),
            "would ban 198.51.100.1 for 60 s: scanner User-Agent (dry-run)"
        );
    }

    #[test]
    fn an_ipv6_ban_names_the_prefix_banned() {
        let event = ban(
            v6("2001:db8:5f:1:aaaa:bbbb:cccc:dddd"),
            BanReason::Scanner,
            NOW + 3600 * SECOND,
        );
        assert_eq!(
            describe(&event, NOW, 64),
            "banned 2001:db8:5f:1:aaaa:bbbb:cccc:dddd (its /64, 2001:db8:5f:1::/64) for 3600 s: scanner User-Agent"
        );
        // Keyed by the whole address: nothing more to say.
        assert_eq!(
            describe(&event, NOW, 128),
            "banned 2001:db8:5f:1:aaaa:bbbb:cccc:dddd for 3600 s: scanner User-Agent"
        );
    }

    #[test]
    fn ban_durations() {
        let source = v4([203, 0, 113, 5]);
        let line = |expires| describe(&ban(source, BanReason::Rate, expires), NOW, 64);
        assert!(line(u64::MAX).starts_with("banned 203.0.113.5 until removed: "));
        // Already over when read (a clock step, a slow reader): not a huge number.
        assert!(line(NOW - SECOND).starts_with("banned 203.0.113.5 for 0 s: "));
        assert!(line(NOW + SECOND * 3 / 2).starts_with("banned 203.0.113.5 for 2 s: "));
    }

    #[test]
    fn a_drop() {
        let event = drop(
            v4([203, 0, 113, 5]),
            Reason::DropUnknownDomain,
            Method::Invite,
        );
        assert_eq!(
            describe(&event, NOW, 64),
            "dropping 203.0.113.5: unknown domain (INVITE); further drops from it this second are not logged"
        );
        assert_eq!(level(&event), log::Level::Info);
    }

    #[test]
    fn drops_in_dry_run_from_ipv6_and_of_odd_methods() {
        let mut event = drop(v6("2001:db8::1"), Reason::DropRateLimited, Method::Register);
        event.dry_run = 1;
        assert_eq!(
            describe(&event, NOW, 64),
            "would drop (dry-run, passed) 2001:db8::1: over its rate limit (REGISTER); further would-drops from its /64 this second are not logged"
        );
        let other = drop(v4([192, 0, 2, 1]), Reason::DropRateLimited, Method::Other);
        assert!(describe(&other, NOW, 64).contains("over its rate limit (other method);"));
        let answers = drop(v4([192, 0, 2, 1]), Reason::DropRateLimited, Method::None);
        assert!(describe(&answers, NOW, 64)
            .contains("over its rate limit (answers: responses and keep-alives);"));
        let none = drop(v4([192, 0, 2, 1]), Reason::DropNotSipPayload, Method::None);
        assert!(describe(&none, NOW, 64).starts_with("dropping 192.0.2.1: not SIP; "));
        let mut odd = none;
        odd.method = 99;
        odd.reason = 99;
        assert!(describe(&odd, NOW, 64).starts_with("dropping 192.0.2.1: reason 99 (method 99); "));
    }

    #[test]
    fn an_unknown_kind_is_described_quietly() {
        let mut event = drop(v4([192, 0, 2, 1]), Reason::DropDenied, Method::None);
        event.kind = 9;
        assert_eq!(
            describe(&event, NOW, 64),
            "event of unknown kind 9 from 192.0.2.1 (reason 9, method 0)"
        );
        assert_eq!(level(&event), log::Level::Debug);
    }

    /// `fields` as the log line writes them.
    fn logfmt(event: &Event, ipv6_prefix: u32) -> String {
        fields(event, NOW, ipv6_prefix)
            .iter()
            .map(|(key, value)| format!("{key}={}", crate::logging::quote(value)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn bans_and_drops_have_fields_named_as_the_metrics_labels() {
        let scanner = ban(
            v4([198, 51, 100, 1]),
            BanReason::Scanner,
            NOW + 3600 * SECOND,
        );
        assert_eq!(
            logfmt(&scanner, 64),
            "event=ban src=198.51.100.1 reason=scanner ttl_s=3600 dry_run=false"
        );
        let mut forever = ban(v6("2001:db8:5f:1::7"), BanReason::Manual, u64::MAX);
        forever.dry_run = 1;
        assert_eq!(
            logfmt(&forever, 64),
            "event=ban src=2001:db8:5f:1::7 prefix=2001:db8:5f:1::/64 reason=manual dry_run=true"
        );
        let unknown_domain = drop(
            v4([203, 0, 113, 5]),
            Reason::DropUnknownDomain,
            Method::Invite,
        );
        assert_eq!(
            logfmt(&unknown_domain, 64),
            "event=drop src=203.0.113.5 reason=drop_unknown_domain method=INVITE dry_run=false"
        );
        let mut odd = drop(v4([192, 0, 2, 1]), Reason::DropDenied, Method::None);
        (odd.reason, odd.method) = (99, 98);
        assert_eq!(
            logfmt(&odd, 64),
            "event=drop src=192.0.2.1 reason=99 method=98 dry_run=false"
        );
        odd.kind = 9;
        assert_eq!(
            logfmt(&odd, 128),
            "event=unknown src=192.0.2.1 kind=9 reason=99 dry_run=false"
        );
    }

    #[test]
    fn lockouts_and_registrations_name_the_account() {
        let mut account = [0u64; ACCOUNT_WORDS];
        account[0] = u64::from_le_bytes(*b"alice 2\0");
        let lockout = Event {
            kind: EventKind::Lockout as u32,
            expires_ns: NOW + 900 * SECOND,
            account,
            ..ban(v4([192, 0, 2, 7]), BanReason::Auth, 0)
        };
        assert_eq!(
            logfmt(&lockout, 64),
            "event=lockout src=192.0.2.7 account=\"alice 2\" scope=source ttl_s=900 dry_run=false"
        );
        let everywhere = Event {
            source: [0; 16],
            ..lockout
        };
        assert_eq!(
            logfmt(&everywhere, 64),
            "event=lockout account=\"alice 2\" scope=unregistered ttl_s=900 dry_run=false"
        );
        let registered = Event {
            kind: EventKind::Registered as u32,
            expires_ns: NOW + 3600 * SECOND,
            ..lockout
        };
        assert_eq!(
            logfmt(&registered, 64),
            "event=registered src=192.0.2.7 account=\"alice 2\" ttl_s=3600 dry_run=false"
        );
    }

    #[test]
    fn records_parse_and_short_ones_are_refused() {
        let event = Event {
            dry_run: 1,
            ..ban(v6("2001:db8::1"), BanReason::Domain, 0x0102_0304_0506_0708)
        };
        let bytes = record(&event);
        assert_eq!(parse(&bytes), Some(event));
        for len in 0..bytes.len() {
            assert_eq!(parse(&bytes[..len]), None, "{len} bytes");
        }
        // Longer than this version's event (a newer kernel program's): its prefix.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xee; 8]);
        assert_eq!(parse(&longer), Some(event));
        // Logging a short record must not panic.
        log_record(&bytes[..7], NOW, 64);
        log_record(&bytes, NOW, 64);
    }
}
