//! The kernel's events (bans, and the first drop per source per second) as log lines an
//! operator reads, `banned 198.51.100.1 for 3600 s: scanner User-Agent`, with fields a
//! log pipeline reads: `event=ban src=198.51.100.1 reason=scanner ttl_s=3600
//! transport=udp dry_run=false`.
//!
//! Pure functions: [`parse`] decodes a ring buffer record, [`describe`] words it,
//! [`fields`] gives its fields, and [`log_event`] logs both under [`TARGET`].
//! `sip-filter run` reads the ring buffer and hands each event to an [`Aggregator`],
//! which bounds the lines in total: past [`DROP_LINES_PER_SECOND`] drops (or
//! [`NOTICE_LINES_PER_SECOND`] bans, lockouts and registrations) in a second, the rest
//! of that second is one line per class (`event=drops_aggregated`).

use std::{
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv6Addr},
};

use sip_filter_common::{
    maps::{
        ipv6_prefix_key, BanReason, Event, EventKind, Reason, Transport, DROP_EVENT_INTERVAL_NS,
    },
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
    let u16_at = |offset: usize| -> Option<u16> {
        Some(u16::from_ne_bytes(
            record.get(offset..offset + 2)?.try_into().ok()?,
        ))
    };
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
        dry_run: u16_at(offset_of!(Event, dry_run))?,
        transport: u16_at(offset_of!(Event, transport))?,
        expires_ns: u64_at(offset_of!(Event, expires_ns))?,
        account,
    })
}

/// How loud an event is: bans and drops at info (drops are sampled by the kernel, one
/// per source per second), anything this version does not know at debug.
pub fn level(event: &Event) -> log::Level {
    match kind(event) {
        Some(EventKind::Ban | EventKind::Drop | EventKind::Lockout) => log::Level::Info,
        Some(EventKind::CallBudget) => log::Level::Warn,
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
        Some(EventKind::CallBudget) => {
            let verb = if dry_run {
                "would block (dry-run)"
            } else {
                "blocked"
            };
            format!(
                "{verb} account {:?}'s INVITEs for {} s from every source: over its call \
                 budget (the INVITE that breached it came from {source})",
                account_name(&event.account),
                seconds_left(event.expires_ns, now_ns)
            )
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
/// registered, call_budget, unknown), `src`, `prefix` (the IPv6 network tracked, when wider than the
/// address), `reason`, `method` (drops of requests), `account`, `scope` (lockouts:
/// source, or unregistered for every source neither registered nor allow-listed),
/// `ttl_s` (seconds left; none for a ban until removed), `transport` (of the packet that
/// made it: udp, tcp, tls; the answer's for lockouts and registrations), `dry_run`.
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
            fields.push(("reason", reason_name(event)));
            if event.expires_ns != u64::MAX {
                fields.push(("ttl_s", ttl));
            }
        }
        Some(EventKind::Drop) => {
            with_source(&mut fields);
            fields.push(("reason", reason_name(event)));
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
        Some(EventKind::CallBudget) => {
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
    fields.push(("transport", transport_name(event.transport)));
    fields.push(("dry_run", (event.dry_run != 0).to_string()));
    fields
}

/// A [`Transport`] number's name; a number this version does not know, as is.
fn transport_name(n: u16) -> String {
    Transport::ALL
        .get(usize::from(n))
        .map_or_else(|| n.to_string(), |transport| transport.name().to_string())
}

/// A short record's debug line.
pub fn log_malformed(record: &[u8]) {
    log::debug!(
        target: TARGET,
        "skipped a malformed event: {} bytes, expected {}",
        record.len(),
        size_of::<Event>()
    );
}

/// Logs `event` on a line of its own, as [`describe`] and [`fields`] make it; nothing is
/// formatted when its level is not logged.
pub fn log_event(event: &Event, now_ns: u64, ipv6_prefix: u32) {
    let level = level(event);
    if !log::log_enabled!(target: TARGET, level) {
        return;
    }
    log_line(&Line {
        level,
        message: describe(event, now_ns, ipv6_prefix),
        fields: fields(event, now_ns, ipv6_prefix),
    });
}

/// Logs `line` under [`TARGET`], its fields as key-values.
pub fn log_line(line: &Line) {
    let pairs: Vec<(&str, &str)> = line
        .fields
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    // The `log!` macros take only fields named in the source.
    log::logger().log(
        &log::Record::builder()
            .args(format_args!("{}", line.message))
            .level(line.level)
            .target(TARGET)
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .key_values(&pairs)
            .build(),
    );
}

/// A log line made by this module: words, level and fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub level: log::Level,
    pub message: String,
    pub fields: Vec<(&'static str, String)>,
}

/// An event's `reason` field: its drop reason or ban reason as the metrics' labels name
/// it, the number when this version does not know it; lockouts and registrations, which
/// have none, by their kind.
fn reason_name(event: &Event) -> String {
    match kind(event) {
        Some(EventKind::Ban) => BanReason::ALL
            .get(event.reason as usize)
            .map_or_else(|| event.reason.to_string(), |r| r.name().to_string()),
        Some(EventKind::Drop) => Reason::from_number(u64::from(event.reason))
            .map_or_else(|| event.reason.to_string(), |r| r.name().to_string()),
        Some(other) => kind_name(other).to_string(),
        None => event.reason.to_string(),
    }
}

/// Drop lines logged one by one in a second before the rest of that second is
/// aggregated: a small incident reads line by line as before, a flood from thousands of
/// sources as one line a second.
pub const DROP_LINES_PER_SECOND: u32 = 20;
/// The same for bans and lockouts, and apart for registrations: rarer and each worth
/// reading, so a higher budget.
pub const NOTICE_LINES_PER_SECOND: u32 = 100;
/// How many sources an aggregated line names.
pub const TOP_SOURCES: usize = 5;
/// Distinct sources one aggregate keeps, whatever the flood (about 3 MB): past it the
/// events are still counted, their sources no longer.
const MAX_SOURCES_PER_INTERVAL: usize = 65_536;
/// An aggregate's interval: the kernel's own between two drop events of a source.
const INTERVAL_NS: u64 = DROP_EVENT_INTERVAL_NS;

/// Events that share a budget of lines, and their aggregated line's `event` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Drops,
    /// Bans and lockouts.
    Bans,
    /// Registrations, and kinds this version does not know: debug lines.
    Registrations,
}

impl Class {
    const ALL: [Class; 3] = [Class::Drops, Class::Bans, Class::Registrations];

    fn of(event: &Event) -> Class {
        match kind(event) {
            Some(EventKind::Drop) => Class::Drops,
            Some(EventKind::Ban | EventKind::Lockout | EventKind::CallBudget) => Class::Bans,
            Some(EventKind::Registered) | None => Class::Registrations,
        }
    }

    fn budget(self) -> u32 {
        match self {
            Class::Drops => DROP_LINES_PER_SECOND,
            Class::Bans | Class::Registrations => NOTICE_LINES_PER_SECOND,
        }
    }

    fn event_name(self) -> &'static str {
        match self {
            Class::Drops => "drops_aggregated",
            Class::Bans => "bans_aggregated",
            Class::Registrations => "registrations_aggregated",
        }
    }

    fn level(self) -> log::Level {
        match self {
            Class::Drops | Class::Bans => log::Level::Info,
            Class::Registrations => log::Level::Debug,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One source in an aggregate.
#[derive(Clone, Copy, Debug)]
struct SourceTally {
    events: u64,
    /// Its place among the aggregate's sources, first seen first: ties in the top go to
    /// the earliest.
    order: u64,
    /// Its first aggregated event's kind and reason.
    kind: u32,
    reason: u32,
}

/// A class's events in the current interval.
#[derive(Default)]
struct Tally {
    /// Lines logged one by one.
    logged: u32,
    /// Events counted here instead.
    aggregated: u64,
    sources: std::collections::HashMap<[u8; 16], SourceTally>,
    /// Aggregated events by (kind, reason), in first-seen order.
    reasons: Vec<((u32, u32), u64)>,
    dry_run: bool,
}

/// Bounds the event lines in total: each [`Class`] logs its first lines of a second one
/// by one ([`Class::budget`]); the rest of that second is counted, by source and reason,
/// and logged as one line when the second is over. Only the log is bounded: every
/// event is still handed on (bans to CrowdSec), and the kernel's maps never see this.
pub struct Aggregator {
    /// When the current interval began (`CLOCK_MONOTONIC_COARSE`, ns); `None` before
    /// the first event.
    started_ns: Option<u64>,
    tallies: [Tally; 3],
    /// Aggregated lines of intervals that are over, not yet taken.
    finished: Vec<Line>,
    /// `sip_filter_events_aggregated_total`, one series per [`AGGREGATED_KINDS`]: looked
    /// up once, not per event.
    counters: [prometheus::IntCounter; AGGREGATED_KINDS.len()],
}

/// The `kind` labels of `sip_filter_events_aggregated_total`, [`kind_name`]'s and
/// `unknown`.
const AGGREGATED_KINDS: [&str; 6] = [
    "drop",
    "ban",
    "lockout",
    "registered",
    "call_budget",
    "unknown",
];

impl Aggregator {
    /// `sip_filter_events_aggregated_total`, every kind at 0 (so that `increase()` sees
    /// the first ones): register it with the exporter and give it to [`Aggregator::new`].
    pub fn counter() -> Result<prometheus::IntCounterVec, prometheus::Error> {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sip_filter_events_aggregated_total",
                "Kernel events logged in an aggregated line rather than one line each, by kind \
                 (drop, ban, lockout, registered, call_budget, unknown): past 20 drop lines or \
                 100 ban and lockout lines in a second.",
            ),
            &["kind"],
        )?;
        // Every known kind from the start; `unknown` only once one is seen.
        for kind in &AGGREGATED_KINDS[..AGGREGATED_KINDS.len() - 1] {
            counter.with_label_values(&[kind]);
        }
        Ok(counter)
    }

    pub fn new(counter: prometheus::IntCounterVec) -> Self {
        Self {
            started_ns: None,
            tallies: Default::default(),
            finished: Vec::new(),
            counters: AGGREGATED_KINDS.map(|kind| counter.with_label_values(&[kind])),
        }
    }

    /// Whether `event`, arriving at `now_ns`, gets a line of its own; if not, it is
    /// counted into its class's aggregate.
    pub fn admit(&mut self, event: &Event, now_ns: u64) -> bool {
        self.roll(now_ns);
        let class = Class::of(event);
        let tally = &mut self.tallies[class.index()];
        if tally.logged < class.budget() {
            tally.logged += 1;
            return true;
        }
        let order = tally.aggregated;
        tally.aggregated += 1;
        tally.dry_run |= event.dry_run != 0;
        let room = tally.sources.len() < MAX_SOURCES_PER_INTERVAL;
        match tally.sources.entry(event.source) {
            std::collections::hash_map::Entry::Occupied(mut seen) => seen.get_mut().events += 1,
            std::collections::hash_map::Entry::Vacant(new) if room => {
                new.insert(SourceTally {
                    events: 1,
                    order,
                    kind: event.kind,
                    reason: event.reason,
                });
            }
            std::collections::hash_map::Entry::Vacant(_) => {}
        }
        let key = (event.kind, event.reason);
        match tally.reasons.iter_mut().find(|(seen, _)| *seen == key) {
            Some((_, count)) => *count += 1,
            None => tally.reasons.push((key, 1)),
        }
        let series = kind(event).map_or(AGGREGATED_KINDS.len() - 1, |known| known as usize);
        self.counters[series].inc();
        false
    }

    /// The aggregated lines of the intervals over by `now_ns` (at most one per class).
    pub fn flush(&mut self, now_ns: u64) -> Vec<Line> {
        self.roll(now_ns);
        std::mem::take(&mut self.finished)
    }

    /// Every aggregated line, the current interval's too (when the daemon stops).
    pub fn finish(&mut self) -> Vec<Line> {
        self.close_interval();
        self.started_ns = None;
        std::mem::take(&mut self.finished)
    }

    /// When the current interval's aggregated lines are due, if it has any.
    pub fn next_flush_ns(&self) -> Option<u64> {
        let pending = self.tallies.iter().any(|tally| tally.aggregated > 0);
        self.started_ns
            .filter(|_| pending)
            .map(|started| started.saturating_add(INTERVAL_NS))
    }

    /// Closes the interval if it is over by `now_ns`; the next event starts the next.
    fn roll(&mut self, now_ns: u64) {
        match self.started_ns {
            Some(started) if now_ns < started.saturating_add(INTERVAL_NS) => {}
            Some(_) => {
                self.close_interval();
                self.started_ns = Some(now_ns);
            }
            None => self.started_ns = Some(now_ns),
        }
    }

    fn close_interval(&mut self) {
        for class in Class::ALL {
            let tally = std::mem::take(&mut self.tallies[class.index()]);
            if tally.aggregated > 0 {
                self.finished.push(aggregated_line(class, &tally));
            }
        }
    }
}

/// A class's aggregate as a line: `event=drops_aggregated events=4076 sources=4076
/// logged=20 reasons=drop_scanner:4076 top="198.19.0.21 (drop_scanner, 1), ..."`.
fn aggregated_line(class: Class, tally: &Tally) -> Line {
    let label = |kind: u32, reason: u32| {
        reason_name(&Event {
            source: [0; 16],
            kind,
            reason,
            method: 0,
            dry_run: 0,
            transport: 0,
            expires_ns: 0,
            account: [0; ACCOUNT_WORDS],
        })
    };
    let mut top: Vec<(&[u8; 16], &SourceTally)> = tally.sources.iter().collect();
    let busiest_first = |a: &(&[u8; 16], &SourceTally), b: &(&[u8; 16], &SourceTally)| {
        b.1.events.cmp(&a.1.events).then(a.1.order.cmp(&b.1.order))
    };
    if top.len() > TOP_SOURCES {
        top.select_nth_unstable_by(TOP_SOURCES - 1, busiest_first);
        top.truncate(TOP_SOURCES);
    }
    top.sort_unstable_by(busiest_first);
    let top = top
        .iter()
        .map(|(source, seen)| {
            format!(
                "{} ({}, {})",
                source_address(**source),
                label(seen.kind, seen.reason),
                seen.events
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut reasons = tally.reasons.clone();
    reasons.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    let reasons = reasons
        .iter()
        .map(|((kind, reason), count)| format!("{}:{count}", label(*kind, *reason)))
        .collect::<Vec<_>>()
        .join(",");
    let capped = tally.sources.len() >= MAX_SOURCES_PER_INTERVAL;
    let sources = if capped {
        format!("at least {}", tally.sources.len())
    } else {
        tally.sources.len().to_string()
    };
    let what = match class {
        Class::Drops => "drop events",
        Class::Bans => "bans and lockouts",
        Class::Registrations => "registrations and unknown events",
    };
    let mut fields = vec![
        ("event", class.event_name().to_string()),
        ("events", tally.aggregated.to_string()),
        ("sources", tally.sources.len().to_string()),
    ];
    if capped {
        fields.push(("sources_capped", "true".to_string()));
    }
    fields.extend([
        ("logged", tally.logged.to_string()),
        ("reasons", reasons),
        ("top", top.clone()),
        ("dry_run", tally.dry_run.to_string()),
    ]);
    Line {
        level: class.level(),
        message: format!(
            "{} more {what} from {sources} sources in the last second, past the {} logged \
             one by one; top {TOP_SOURCES}: {top}",
            tally.aggregated, tally.logged
        ),
        fields,
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
        EventKind::CallBudget,
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
        EventKind::CallBudget => "call_budget",
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
        BanReason::Tls => "repeated TLS handshakes refused (ClientHellos dropped)",
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
        Reason::DropDestinationDenied => "an INVITE to a denied destination",
        Reason::DropDestinationLimited => "an INVITE over its destination's calls per minute",
        Reason::DropCallBudget => "an INVITE from an account over its call budget",
        Reason::DropTlsVersion => {
            "a TLS ClientHello offering no version as high as tls.min_version"
        }
        Reason::DropTlsSni => "a TLS ClientHello naming a server not on the TLS name allowlist",
        Reason::DropTlsNoSni => "a TLS ClientHello naming no server (tls.no_sni = \"drop\")",
        Reason::DropTlsMalformed => "a malformed TLS ClientHello",
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
            transport: Transport::Udp as u16,
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
            transport: Transport::Udp as u16,
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
        put(offset_of!(Event, transport), &event.transport.to_ne_bytes());
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
            "event=ban src=198.51.100.1 reason=scanner ttl_s=3600 transport=udp dry_run=false"
        );
        let mut forever = ban(v6("2001:db8:5f:1::7"), BanReason::Manual, u64::MAX);
        forever.dry_run = 1;
        assert_eq!(
            logfmt(&forever, 64),
            "event=ban src=2001:db8:5f:1::7 prefix=2001:db8:5f:1::/64 reason=manual transport=udp dry_run=true"
        );
        let unknown_domain = Event {
            transport: Transport::Tcp as u16,
            ..drop(
                v4([203, 0, 113, 5]),
                Reason::DropUnknownDomain,
                Method::Invite,
            )
        };
        assert_eq!(
            logfmt(&unknown_domain, 64),
            "event=drop src=203.0.113.5 reason=drop_unknown_domain method=INVITE transport=tcp \
             dry_run=false"
        );
        let mut odd = drop(v4([192, 0, 2, 1]), Reason::DropDenied, Method::None);
        (odd.reason, odd.method, odd.transport) = (99, 98, 97);
        assert_eq!(
            logfmt(&odd, 64),
            "event=drop src=192.0.2.1 reason=99 method=98 transport=97 dry_run=false"
        );
        odd.kind = 9;
        assert_eq!(
            logfmt(&odd, 128),
            "event=unknown src=192.0.2.1 kind=9 reason=99 transport=97 dry_run=false"
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
            "event=lockout src=192.0.2.7 account=\"alice 2\" scope=source ttl_s=900 transport=udp \
             dry_run=false"
        );
        let everywhere = Event {
            source: [0; 16],
            ..lockout
        };
        assert_eq!(
            logfmt(&everywhere, 64),
            "event=lockout account=\"alice 2\" scope=unregistered ttl_s=900 transport=udp \
             dry_run=false"
        );
        let registered = Event {
            kind: EventKind::Registered as u32,
            expires_ns: NOW + 3600 * SECOND,
            ..lockout
        };
        assert_eq!(
            logfmt(&registered, 64),
            "event=registered src=192.0.2.7 account=\"alice 2\" ttl_s=3600 transport=udp \
             dry_run=false"
        );
    }

    #[test]
    fn records_parse_and_short_ones_are_refused() {
        let event = Event {
            dry_run: 1,
            transport: Transport::Tls as u16,
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
        log_malformed(&bytes[..7]);
        log_event(&event, NOW, 64);
    }

    /// An aggregator with a counter of its own, and the counter to read.
    fn aggregator() -> (Aggregator, prometheus::IntCounterVec) {
        let counter = Aggregator::counter().unwrap();
        (Aggregator::new(counter.clone()), counter)
    }

    fn aggregated(counter: &prometheus::IntCounterVec, kind: &str) -> u64 {
        counter.with_label_values(&[kind]).get()
    }

    fn field<'a>(line: &'a Line, key: &str) -> &'a str {
        line.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    }

    /// The n-th flood source, 198.19.x.y.
    fn flood_source(n: u32) -> [u8; 16] {
        v4((u32::from_be_bytes([198, 19, 0, 1]) + n).to_be_bytes())
    }

    #[test]
    fn the_counters_kinds_follow_the_event_kinds() {
        for kind in [
            EventKind::Drop,
            EventKind::Ban,
            EventKind::Lockout,
            EventKind::Registered,
            EventKind::CallBudget,
        ] {
            assert_eq!(AGGREGATED_KINDS[kind as usize], kind_name(kind));
        }
        let (mut aggregator, counter) = aggregator();
        let mut odd = drop(v4([192, 0, 2, 1]), Reason::DropDenied, Method::None);
        odd.kind = 9;
        for _ in 0..=NOTICE_LINES_PER_SECOND {
            aggregator.admit(&odd, NOW);
        }
        assert_eq!(aggregated(&counter, "unknown"), 1);
    }

    #[test]
    fn a_small_incident_is_logged_line_by_line() {
        let (mut aggregator, counter) = aggregator();
        for n in 0..DROP_LINES_PER_SECOND {
            let event = drop(flood_source(n), Reason::DropScanner, Method::Options);
            assert!(aggregator.admit(&event, NOW + u64::from(n)), "drop {n}");
        }
        // A second later, a fresh budget.
        let later = drop(flood_source(0), Reason::DropScanner, Method::Options);
        assert!(aggregator.admit(&later, NOW + SECOND));
        assert_eq!(aggregator.next_flush_ns(), None);
        assert_eq!(aggregator.flush(NOW + 10 * SECOND), vec![]);
        assert_eq!(aggregator.finish(), vec![]);
        assert_eq!(aggregated(&counter, "drop"), 0);
    }

    #[test]
    fn a_flood_from_4096_sources_is_20_lines_and_one_aggregate_a_second() {
        const SOURCES: u32 = 4096;
        let (mut aggregator, counter) = aggregator();
        let mut lines = 0;
        let mut aggregates = Vec::new();
        for second in 0..3u64 {
            for n in 0..SOURCES {
                // Spread over the second, as the kernel sends them.
                let now = NOW + second * SECOND + u64::from(n) * (SECOND / u64::from(SOURCES));
                aggregates.extend(aggregator.flush(now));
                let reason = if n % 4 == 0 {
                    Reason::DropBanned
                } else {
                    Reason::DropScanner
                };
                if aggregator.admit(&drop(flood_source(n), reason, Method::Options), now) {
                    lines += 1;
                }
            }
        }
        assert_eq!(aggregator.next_flush_ns(), Some(NOW + 3 * SECOND));
        // Not due before its second is over; due after.
        assert_eq!(aggregator.flush(NOW + 3 * SECOND - 1), vec![]);
        aggregates.extend(aggregator.flush(NOW + 3 * SECOND));
        assert_eq!(aggregator.next_flush_ns(), None);
        assert_eq!(lines, 3 * DROP_LINES_PER_SECOND);
        assert_eq!(aggregates.len(), 3, "{aggregates:#?}");
        let past = u64::from(SOURCES - DROP_LINES_PER_SECOND);
        assert_eq!(aggregated(&counter, "drop"), 3 * past);
        let line = &aggregates[0];
        assert_eq!(line.level, log::Level::Info);
        assert_eq!(field(line, "event"), "drops_aggregated");
        assert_eq!(field(line, "events"), past.to_string());
        assert_eq!(field(line, "sources"), past.to_string());
        assert_eq!(field(line, "logged"), "20");
        // Sources 20.. were aggregated; every fourth (20, 24, ...) was banned.
        assert_eq!(
            field(line, "reasons"),
            format!("drop_scanner:{}", past * 3 / 4) + &format!(",drop_banned:{}", past / 4)
        );
        // Ties go to the first seen.
        assert_eq!(
            field(line, "top"),
            "198.19.0.21 (drop_banned, 1), 198.19.0.22 (drop_scanner, 1), \
             198.19.0.23 (drop_scanner, 1), 198.19.0.24 (drop_scanner, 1), \
             198.19.0.25 (drop_banned, 1)"
        );
        assert_eq!(
            line.message,
            format!(
                "{past} more drop events from {past} sources in the last second, past the 20 \
                 logged one by one; top 5: {}",
                field(line, "top")
            )
        );
        assert!(aggregates.iter().all(|l| *l == aggregates[0]));
    }

    #[test]
    fn the_top_sources_are_the_busiest() {
        let (mut aggregator, _) = aggregator();
        let busy = v6("2001:db8::bad");
        let mut events = vec![];
        for n in 0..DROP_LINES_PER_SECOND + 10 {
            events.push(drop(
                flood_source(n),
                Reason::DropRateLimited,
                Method::Register,
            ));
        }
        for _ in 0..7 {
            events.push(drop(busy, Reason::DropDenied, Method::Invite));
        }
        events.push(drop(
            flood_source(25),
            Reason::DropRateLimited,
            Method::Register,
        ));
        for event in &events {
            aggregator.admit(event, NOW);
        }
        let lines = aggregator.finish();
        assert_eq!(lines.len(), 1);
        assert_eq!(field(&lines[0], "events"), "18");
        assert_eq!(field(&lines[0], "sources"), "11");
        assert_eq!(
            field(&lines[0], "top"),
            "2001:db8::bad (drop_denied, 7), 198.19.0.26 (drop_rate_limited, 2), \
             198.19.0.21 (drop_rate_limited, 1), 198.19.0.22 (drop_rate_limited, 1), \
             198.19.0.23 (drop_rate_limited, 1)"
        );
        assert_eq!(
            field(&lines[0], "reasons"),
            "drop_rate_limited:11,drop_denied:7"
        );
    }

    #[test]
    fn bans_lockouts_and_registrations_have_budgets_of_their_own() {
        let (mut aggregator, counter) = aggregator();
        let budget = NOTICE_LINES_PER_SECOND;
        // Drops past their budget do not take the bans'.
        for n in 0..DROP_LINES_PER_SECOND + 5 {
            aggregator.admit(
                &drop(flood_source(n), Reason::DropScanner, Method::Options),
                NOW,
            );
        }
        let mut logged = 0;
        for n in 0..budget + 50 {
            let event = ban(flood_source(n), BanReason::Scanner, NOW + 3600 * SECOND);
            logged += u32::from(aggregator.admit(&event, NOW));
        }
        let lockout = Event {
            kind: EventKind::Lockout as u32,
            ..ban(flood_source(7), BanReason::Auth, NOW + 900 * SECOND)
        };
        assert!(!aggregator.admit(&lockout, NOW));
        let registered = Event {
            kind: EventKind::Registered as u32,
            ..lockout
        };
        assert!(aggregator.admit(&registered, NOW));
        assert_eq!(logged, budget);
        let mut dry = ban(flood_source(999), BanReason::Rate, NOW + 60 * SECOND);
        dry.dry_run = 1;
        assert!(!aggregator.admit(&dry, NOW));
        assert_eq!(aggregated(&counter, "drop"), 5);
        assert_eq!(aggregated(&counter, "ban"), 51);
        assert_eq!(aggregated(&counter, "lockout"), 1);
        assert_eq!(aggregated(&counter, "registered"), 0);
        let lines = aggregator.flush(NOW + SECOND);
        let events: Vec<&str> = lines.iter().map(|l| field(l, "event")).collect();
        assert_eq!(events, ["drops_aggregated", "bans_aggregated"]);
        let bans = &lines[1];
        assert_eq!(field(bans, "events"), "52");
        assert_eq!(field(bans, "sources"), "52");
        assert_eq!(field(bans, "reasons"), "scanner:50,lockout:1,rate:1");
        assert_eq!(field(bans, "dry_run"), "true");
        assert!(bans.message.starts_with(
            "52 more bans and lockouts from 52 sources in the last second, past the 100 logged"
        ));
        assert!(field(bans, "top").starts_with("198.19.0.101 (scanner, 1), "));
    }

    #[test]
    fn one_aggregate_holds_a_bounded_number_of_sources() {
        let (mut aggregator, counter) = aggregator();
        let flood = MAX_SOURCES_PER_INTERVAL as u32 + 1000;
        for n in 0..flood + DROP_LINES_PER_SECOND {
            aggregator.admit(
                &drop(flood_source(n), Reason::DropScanner, Method::Options),
                NOW,
            );
        }
        let lines = aggregator.finish();
        assert_eq!(field(&lines[0], "events"), flood.to_string());
        assert_eq!(
            field(&lines[0], "sources"),
            MAX_SOURCES_PER_INTERVAL.to_string()
        );
        assert_eq!(field(&lines[0], "sources_capped"), "true");
        assert!(lines[0].message.contains(" from at least 65536 sources "));
        assert_eq!(aggregated(&counter, "drop"), u64::from(flood));
    }
}

// Issue 18: the call budget's event.
#[cfg(test)]
mod call_budget_tests {
    use sip_filter_common::{
        maps::{Event, EventKind},
        sip::pairing::ACCOUNT_WORDS,
        Method, Reason,
    };

    use super::{describe, fields, level};

    #[test]
    fn a_call_budget_event_names_the_account_and_its_block() {
        let mut account = [0u64; ACCOUNT_WORDS];
        account[0] = u64::from_le_bytes(*b"1000\0\0\0\0");
        let mut source = [0u8; 16];
        source[10..12].copy_from_slice(&[0xff, 0xff]);
        source[12..].copy_from_slice(&[198, 51, 100, 7]);
        let event = Event {
            source,
            kind: EventKind::CallBudget as u32,
            reason: Reason::DropCallBudget as u32,
            method: Method::Invite as u32,
            dry_run: 0,
            transport: 0,
            expires_ns: 3_700_000_000_000,
            account,
        };
        let now = 100_000_000_000;
        assert_eq!(level(&event), log::Level::Warn);
        assert_eq!(
            describe(&event, now, 64),
            "blocked account \"1000\"'s INVITEs for 3600 s from every source: over its call \
             budget (the INVITE that breached it came from 198.51.100.7)"
        );
        let fields = fields(&event, now, 64);
        for (key, value) in [
            ("event", "call_budget"),
            ("src", "198.51.100.7"),
            ("account", "1000"),
            ("ttl_s", "3600"),
        ] {
            assert!(
                fields.iter().any(|(k, v)| *k == key && v == value),
                "{key}={value} not in {fields:?}"
            );
        }
    }
}
