//! The Prometheus exporter: `GET /metrics` in the text exposition format (0.0.4).
//!
//! Everything is read when Prometheus scrapes: the kernel's state from the maps the
//! daemon pinned once for all its interfaces (`PIN_ROOT/maps`), the interfaces from its
//! link pins and runtime file (and, from there, which networks it wrote for denied
//! countries: [`CountryIndex`]), the reloads from the daemon's own counters
//! ([`crate::runtime::RELOADS`]). No polling loop, no second copy of any count, and
//! every value is as current as the scrape. README.md's "Metrics" section lists the
//! series; `ops/prometheus/` has alert rules for them.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::{
    maps::{lpm_trie::Key, IterableMap, LpmTrie, Map, MapData, MapError},
    Pod,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method as HttpMethod, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sip_filter_common::{
    maps::{
        names, AccountKey, AnswerCounters, AnswerKind, Ban, BanReason, ListEntry, Lockout,
        Registration, SourceKey, SourceState, Transport, FLAG_DRY_RUN, MAX_ANSWER_STREAM_MESSAGES,
    },
    Counters, Method, Reason,
};

use crate::{
    bpf_sys,
    countries::{Country, CountryIndex},
    filter::{
        monotonic_now_ns, pinned_answer_counters, pinned_config, pinned_counters, FilterError,
    },
    learnt::{Learnt, PinnedLearnt},
    lists::{v4_key, v6_key},
    pins::{egress_attachments, link_path, maps_dir, pinned_interfaces},
    runtime::{Reloads, Runtime},
};

/// The Content-Type of the text exposition format, as Prometheus's own clients send it.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a scrape reads the daemon's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locations {
    /// The pin root: the maps under `maps/`, one link per attached interface in `links/`.
    pub pin_root: PathBuf,
    /// The daemon's runtime directory: its `daemon.json` has each interface's XDP mode.
    pub runtime_dir: PathBuf,
}

/// The exporter's metrics: the kernel's and the daemon's, read at scrape time.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The daemon's exporter: also its configuration reloads, read from `reloads` (the
    /// daemon's [`crate::runtime::RELOADS`]). The configuration it started with, loaded
    /// at `loaded_unix_ms`, counts as the last successful load (Prometheus's own
    /// convention).
    pub fn for_daemon(
        locations: Locations,
        reloads: &'static Reloads,
        loaded_unix_ms: u64,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Self::new(locations)?;
        metrics
            .registry
            .register(Box::new(ReloadCollector::new(reloads, loaded_unix_ms)?))?;
        Ok(metrics)
    }

    /// An exporter for whatever filter is pinned at `locations`, for
    /// `sip-filter metrics`: no reload metrics, as it is not the daemon.
    pub fn for_pin_root(locations: Locations) -> Result<Self, prometheus::Error> {
        Self::new(locations)
    }

    fn new(locations: Locations) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sip_filter_build_info",
                "Always 1; the labels say which sip-filter this is.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(KernelCollector::new(locations)?))?;
        Ok(Self { registry })
    }

    /// Adds series kept elsewhere (the CrowdSec sync's), read at each scrape.
    pub fn register(&self, collectors: Vec<Box<dyn Collector>>) -> Result<(), prometheus::Error> {
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// Every series, in the text exposition format. Reads the kernel's maps: see
    /// [`Snapshot::read`] for the cost.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// The daemon's reload series, refilled from its [`Reloads`] at each scrape.
struct ReloadCollector {
    reloads: &'static Reloads,
    loaded_unix_ms: u64,
    /// One scrape at a time: each resets and refills these.
    series: Mutex<ReloadSeries>,
    descs: Vec<Desc>,
}

struct ReloadSeries {
    total: IntCounterVec,
    last_successful: IntGauge,
    last_success_seconds: Gauge,
}

impl ReloadSeries {
    fn collectors(&self) -> [&dyn Collector; 3] {
        [
            &self.total,
            &self.last_successful,
            &self.last_success_seconds,
        ]
    }
}

/// What a collector made of `collectors` describes (computed once: `desc` lends it).
fn descs_of(collectors: &[&dyn Collector]) -> Vec<Desc> {
    collectors.iter().flat_map(|c| c.desc()).cloned().collect()
}

/// What a collector made of `collectors` reports this scrape.
fn collect_all(collectors: &[&dyn Collector]) -> Vec<MetricFamily> {
    collectors.iter().flat_map(|c| c.collect()).collect()
}

impl ReloadCollector {
    fn new(reloads: &'static Reloads, loaded_unix_ms: u64) -> Result<Self, prometheus::Error> {
        let series = ReloadSeries {
            total: IntCounterVec::new(
                Opts::new(
                    "sip_filter_config_reloads_total",
                    "Configuration reloads (SIGHUP), by result: ok, or failed (the old configuration stays).",
                ),
                &["result"],
            )?,
            last_successful: IntGauge::new(
                "sip_filter_config_last_reload_successful",
                "1 if the last configuration load or reload succeeded, 0 if it failed.",
            )?,
            last_success_seconds: Gauge::new(
                "sip_filter_config_last_reload_success_timestamp_seconds",
                "When the configuration in force was loaded, in seconds since the Unix epoch.",
            )?,
        };
        let descs = descs_of(&series.collectors());
        Ok(Self {
            reloads,
            loaded_unix_ms,
            series: Mutex::new(series),
            descs,
        })
    }
}

impl Collector for ReloadCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.total.reset();
        // Both results from the start, so that rate() and increase() see the first one.
        series
            .total
            .with_label_values(&["ok"])
            .inc_by(self.reloads.succeeded());
        series
            .total
            .with_label_values(&["failed"])
            .inc_by(self.reloads.failed());
        series
            .last_successful
            .set(i64::from(!self.reloads.last_failed()));
        let loaded_ms = self
            .reloads
            .last_success_unix_ms()
            .unwrap_or(self.loaded_unix_ms);
        series.last_success_seconds.set(loaded_ms as f64 / 1000.0);
        collect_all(&series.collectors())
    }
}

/// An interface of the filter, as the exporter reports it.
#[derive(Debug, PartialEq)]
struct InterfaceState {
    name: String,
    /// Its XDP mode from the daemon's runtime file; `unknown` if that says nothing of
    /// it, as after a crash that took the file.
    mode: String,
    /// The mode asked for, from the same file (`auto`, `native`, `skb`); `unknown` as
    /// `mode` is.
    requested: String,
    /// Its egress attachment from the pins (`tcx`, `clsact`; `none` for a filter
    /// started before the egress program).
    egress: &'static str,
    /// Whether its XDP link is pinned (what `sip_filter_interface_info` lists).
    pinned: bool,
    /// Whether that link is attached to a live interface: false for a link left
    /// defunct by a deleted interface, an unreadable pin, or an interface the daemon
    /// attached whose link pin is gone.
    attached: bool,
}

/// The interfaces the filter is attached to (its link pins under `locations.pin_root`),
/// and those the daemon's runtime file says it attached.
fn interfaces(locations: &Locations) -> Vec<InterfaceState> {
    let pinned = match pinned_interfaces(&locations.pin_root) {
        Ok(interfaces) => interfaces,
        Err(e) => {
            log::warn!(
                "metrics: reading the links pinned in {}: {e}",
                locations.pin_root.display()
            );
            return Vec::new();
        }
    };
    let modes: Vec<(String, String, String)> = match Runtime::read(&locations.runtime_dir) {
        Ok(runtime) => runtime
            .into_iter()
            .flat_map(|runtime| runtime.interfaces)
            .map(|interface| {
                let requested = match interface.requested.as_str() {
                    "" => "unknown".to_string(),
                    _ => interface.requested,
                };
                (interface.name, interface.mode, requested)
            })
            .collect(),
        Err(e) => {
            log::warn!(
                "metrics: reading the runtime file in {}: {e}",
                locations.runtime_dir.display()
            );
            Vec::new()
        }
    };
    let egress = egress_attachments(&locations.pin_root).unwrap_or_else(|e| {
        log::warn!(
            "metrics: reading the egress pins in {}: {e}",
            locations.pin_root.display()
        );
        Vec::new()
    });
    let mut names: Vec<&String> = pinned
        .iter()
        .chain(modes.iter().map(|(name, _, _)| name))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|iface| {
            let (mode, requested) = modes.iter().find(|(name, _, _)| name == iface).map_or_else(
                || ("unknown".to_string(), "unknown".to_string()),
                |(_, mode, requested)| (mode.clone(), requested.clone()),
            );
            let egress = egress
                .iter()
                .find(|(name, _)| name == iface)
                .map_or("none", |(_, mode)| mode);
            let is_pinned = pinned.contains(iface);
            let attached = is_pinned && link_attached(&link_path(&locations.pin_root, iface));
            InterfaceState {
                name: iface.clone(),
                mode,
                requested,
                egress,
                pinned: is_pinned,
                attached,
            }
        })
        .collect()
}

/// Whether the XDP link pinned at `pin` is on an interface (a warning when the pin
/// cannot be read: it proves nothing).
fn link_attached(pin: &Path) -> bool {
    match bpf_sys::pinned_xdp_link_ifindex(pin) {
        Ok(ifindex) => ifindex != 0,
        Err(e) => {
            log::warn!(
                "metrics: reading the XDP link pinned at {}: {e}",
                pin.display()
            );
            false
        }
    }
}

/// The reasons the request policy gives, counted with the request's method; every
/// other reason is counted with [`Method::None`] (see `judge` and `request_policy` in
/// the kernel program).
const fn counted_by_method(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::PassRequest
            | Reason::DropUnknownDomain
            | Reason::DropScanner
            | Reason::DropRateLimited
            | Reason::DropGlobalBudget
            | Reason::DropAuthLockout
            | Reason::DropUnregistered
            | Reason::DropDestinationDenied
            | Reason::DropDestinationLimited
            | Reason::DropCallBudget
    )
}

/// The maps whose entries and capacity are exported: label, pinned name.
const OCCUPANCY: [(&str, &str); 12] = [
    ("bans", names::BANS),
    ("sources", names::SOURCES),
    ("allow_v4", names::ALLOW_V4),
    ("allow_v6", names::ALLOW_V6),
    ("deny_v4", names::DENY_V4),
    ("deny_v6", names::DENY_V6),
    ("domains", names::DOMAINS),
    ("own_addresses", names::OWN_ADDRESSES),
    ("scanner_agents", names::SCANNER_AGENTS),
    ("registered", names::REGISTERED),
    ("lockouts", names::LOCKOUTS),
    ("account_lockouts", names::ACCOUNTS),
];

/// What one scrape reads from the filter's maps.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snapshot {
    counters: Counters,
    /// The egress program's counters.
    answers: AnswerCounters,
    /// Registered sources and locked accounts that still apply.
    learnt: Learnt,
    dry_run: bool,
    /// Bans that still match, by [`BanReason`].
    bans_active: [u64; BanReason::COUNT],
    /// Per [`OCCUPANCY`] map: entries, capacity.
    maps: Vec<(&'static str, u64, u32)>,
    /// Per denied country (`[countries]`): its networks in the deny tries, and the
    /// packets they dropped.
    countries: BTreeMap<Country, (u64, u64)>,
}

impl Snapshot {
    /// Reads the maps pinned in `dir`. The hash maps are read in batches
    /// (`BPF_MAP_LOOKUP_BATCH`), and not kept: a million bans in 0.3-0.4 s on a 2-vCPU
    /// VM (the kernel's cost). The tries are not read: the kernel says how many entries
    /// each holds ([`bpf_sys::trie_len`]), and the countries' networks and drops are
    /// looked up one network at a time from the index the daemon keeps in
    /// `runtime_dir` ([`CountryIndex`]), unless they are over half a trie. Where either
    /// is missing (a kernel before 6.4, an exporter beside no daemon) the tries are read
    /// whole, 0.8 s a million entries; which is why a scrape runs on a blocking thread.
    fn read(dir: &Path, runtime_dir: &Path) -> Result<Snapshot, FilterError> {
        let counters = pinned_counters(dir)?;
        let answers = pinned_answer_counters(dir)?;
        let learnt = PinnedLearnt::open(dir)?.maps().count(monotonic_now_ns())?;
        let dry_run = pinned_config(dir)?.has(FLAG_DRY_RUN);
        let index = CountryIndex::read(runtime_dir).unwrap_or_else(|e| {
            log::warn!(
                "metrics: reading {}: {e}; reading the deny lists whole instead",
                CountryIndex::path(runtime_dir).display()
            );
            None
        });
        let mut bans_active = [0u64; BanReason::COUNT];
        let mut maps = Vec::with_capacity(OCCUPANCY.len());
        let mut countries = BTreeMap::new();
        for (label, name) in OCCUPANCY {
            let map_error = |source| FilterError::Map { name, source };
            let data = MapData::from_pin(dir.join(name)).map_err(map_error)?;
            let capacity = data.info().map_err(map_error)?.max_entries();
            let map = Map::from_map_data(data).map_err(map_error)?;
            let entries = match name {
                names::BANS => count_bans(&map, monotonic_now_ns(), &mut bans_active),
                names::DENY_V4 => {
                    let indexed = index.as_ref().map(|index| index.v4.as_slice());
                    count_deny(&map, indexed, v4_key, &mut countries)
                }
                names::DENY_V6 => {
                    let indexed = index.as_ref().map(|index| index.v6.as_slice());
                    count_deny(&map, indexed, v6_key, &mut countries)
                }
                _ => map_entries(name, &map).and_then(|entries| {
                    entries.ok_or(MapError::InvalidName {
                        name: name.to_string(),
                    })
                }),
            }
            .map_err(map_error)?;
            maps.push((label, entries, capacity));
        }
        Ok(Snapshot {
            counters,
            answers,
            learnt,
            dry_run,
            bans_active,
            maps,
            countries,
        })
    }
}

/// Entries of a deny trie, adding its country entries' networks and drops to
/// `countries` (the drops by country are the kernel's per-entry counts, summed). The
/// networks `indexed` (the daemon's [`CountryIndex`]) are looked up where the kernel
/// counts the trie's entries and they are at most half of them (a lookup is a system
/// call: it costs about what reading two entries in a batch does); otherwise the trie
/// is read whole.
fn count_deny<K: Pod, N: Copy>(
    map: &Map,
    indexed: Option<&[(N, Country)]>,
    key: impl Fn(N) -> Key<K>,
    countries: &mut BTreeMap<Country, (u64, u64)>,
) -> Result<u64, MapError> {
    let trie: LpmTrie<&MapData, K, ListEntry> = LpmTrie::try_from(map)?;
    let data = IterableMap::map(&trie);
    if let (Some(indexed), Some(entries)) = (indexed, bpf_sys::trie_len(data)?) {
        if indexed.len() as u64 <= entries / 2 {
            count_countries(&trie, indexed, key, countries)?;
            return Ok(entries);
        }
    }
    let mut entries = 0;
    bpf_sys::for_each_entry(data, |_: &Key<K>, entry: &ListEntry| {
        entries += 1;
        tally_country(entry, countries);
    })?;
    Ok(entries)
}

/// Adds the networks of `indexed` that a deny trie still holds as country entries of
/// their countries, and their drops, to `countries`: one lookup a network.
fn count_countries<K: Pod, N: Copy>(
    trie: &LpmTrie<&MapData, K, ListEntry>,
    indexed: &[(N, Country)],
    key: impl Fn(N) -> Key<K>,
    countries: &mut BTreeMap<Country, (u64, u64)>,
) -> Result<(), MapError> {
    for (net, country) in indexed {
        // The longest prefix of at most the network's length: the network's own entry
        // if the trie holds it; another one if not, which is not a country entry of
        // this country (country networks do not overlap).
        match trie.get(&key(*net), 0) {
            Ok(entry) if Country::of_entry(&entry) == Some(*country) => {
                tally_country(&entry, countries)
            }
            Ok(_) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Counts `entry` with its country's networks and drops if it is a country entry.
fn tally_country(entry: &ListEntry, countries: &mut BTreeMap<Country, (u64, u64)>) {
    if let Some(country) = Country::of_entry(entry) {
        let (networks, drops) = countries.entry(country).or_default();
        *networks += 1;
        *drops += entry.drops;
    }
}

/// Entries of the blocklist, adding those that still match at `now_ns` to `active` by
/// reason. Read in batches (`BPF_MAP_LOOKUP_BATCH`).
fn count_bans(
    map: &Map,
    now_ns: u64,
    active: &mut [u64; BanReason::COUNT],
) -> Result<u64, MapError> {
    let mut entries = 0;
    bpf_sys::hash_for_each(map, |_: &SourceKey, ban: &Ban| {
        entries += 1;
        if now_ns < ban.expires_ns {
            active[BanReason::from_u32(ban.reason) as usize] += 1;
        }
    })?;
    Ok(entries)
}

/// How many entries one of the filter's maps holds (`name`, pinned or not): a hash map
/// read in batches, a trie as the kernel counts it (read whole where it does not tell);
/// None for a map whose entries are not counted (arrays, ring buffers, program arrays).
/// For `sip_filter_map_entries` and `sip-filter status`.
pub fn map_entries(name: &str, map: &Map) -> Result<Option<u64>, MapError> {
    Ok(Some(match name {
        names::BANS => hash_entries::<SourceKey, Ban>(map)?,
        names::DOMAINS | names::SCANNER_AGENTS => hash_entries::<u64, u8>(map)?,
        names::OWN_ADDRESSES => hash_entries::<[u8; 16], u8>(map)?,
        names::SOURCES => hash_entries::<SourceKey, SourceState>(map)?,
        names::REGISTERED => hash_entries::<SourceKey, Registration>(map)?,
        names::LOCKOUTS => hash_entries::<AccountKey, Lockout>(map)?,
        names::ACCOUNTS => hash_entries::<u64, Lockout>(map)?,
        names::ALLOW_V4 | names::DENY_V4 => count_trie::<[u8; 4]>(map)?,
        names::ALLOW_V6 | names::DENY_V6 => count_trie::<[u8; 16]>(map)?,
        _ => return Ok(None),
    }))
}

fn hash_entries<K: Pod, V: Pod>(map: &Map) -> Result<u64, MapError> {
    let mut entries = 0;
    bpf_sys::hash_for_each(map, |_: &K, _: &V| entries += 1)?;
    Ok(entries)
}

/// Entries of an allow or deny trie: as the kernel counts them, or read whole where it
/// does not tell.
fn count_trie<K: Pod>(map: &Map) -> Result<u64, MapError> {
    let trie: LpmTrie<&MapData, K, ListEntry> = LpmTrie::try_from(map)?;
    let data = IterableMap::map(&trie);
    if let Some(entries) = bpf_sys::trie_len(data)? {
        return Ok(entries);
    }
    let mut entries = 0;
    bpf_sys::for_each_entry(data, |_: &Key<K>, _: &ListEntry| entries += 1)?;
    Ok(entries)
}

/// The kernel's series, refilled from the pinned maps at each scrape, and the attached
/// interfaces.
struct KernelCollector {
    locations: Locations,
    /// One scrape at a time: each resets and refills these.
    series: Mutex<KernelSeries>,
    /// The INVITE program's (issue 18).
    destinations: Mutex<DestinationSeries>,
    descs: Vec<Desc>,
}

struct KernelSeries {
    packets: IntCounterVec,
    answers: IntCounterVec,
    first_fragments: IntCounterVec,
    headers_truncated: IntCounterVec,
    events_lost: IntCounterVec,
    ban_skipped: IntCounterVec,
    bans_added: IntCounterVec,
    bans_expired: IntCounterVec,
    bans_active: IntGaugeVec,
    requests_noted: IntCounterVec,
    requests_unpairable: IntCounterVec,
    requests_displaced: IntCounterVec,
    // Issue 14: the egress program's walk through TCP segments.
    answers_later_in_segment: IntCounterVec,
    answers_cut: IntCounterVec,
    answer_segments_unread: IntCounterVec,
    lockouts: IntCounterVec,
    registrations: IntCounterVec,
    registered_sources: IntGaugeVec,
    locked_accounts: IntGaugeVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    country_drops: IntCounterVec,
    country_networks: IntGaugeVec,
    /// A vector without labels, like the counters: no filter pinned, no series.
    dry_run: IntGaugeVec,
    interface_info: IntGaugeVec,
    interface_attached: IntGaugeVec,
    // Issue 14: verdicts by transport.
    transport_packets: IntCounterVec,
}

impl KernelSeries {
    fn new() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            packets: counter(
                "sip_filter_packets_total",
                "Packets judged, by verdict (drop or pass; in dry-run drops are counted but passed), reason and SIP request method (none for what is not a request).",
                &["verdict", "reason", "method"],
            )?,
            answers: counter(
                "sip_filter_answers_total",
                "Packets the egress program saw leave through the filtered interfaces, by what it made of them (kind). Over TCP, each message of a segment the program read.",
                &["kind"],
            )?,
            first_fragments: counter(
                "sip_filter_first_fragments_total",
                "First fragments of IP datagrams to a SIP port, judged like whole datagrams.",
                &[],
            )?,
            headers_truncated: counter(
                "sip_filter_headers_truncated_total",
                "SIP messages whose header section did not end inside the scanned prefix.",
                &[],
            )?,
            events_lost: counter(
                "sip_filter_events_lost_total",
                "Ban and drop events the ring buffer had no room for (not logged).",
                &[],
            )?,
            ban_skipped: counter(
                "sip_filter_ban_skipped_total",
                "Bans, and counts toward a ban, not made because the packet could not be trusted to come from its source address, by cause: bad_checksum (a wrong UDP or IPv4 header checksum, or UDP checksum 0 over IPv6: the kernel would have dropped it), fragment (a first fragment, whose checksum XDP cannot verify). The packets are still dropped.",
                &["cause"],
            )?,
            bans_added: counter(
                "sip_filter_bans_added_total",
                "Bans the kernel added (in dry-run: would have added), by reason.",
                &["reason"],
            )?,
            bans_expired: counter(
                "sip_filter_bans_expired_total",
                "Bans the kernel found expired and removed, by reason.",
                &["reason"],
            )?,
            bans_active: gauge(
                "sip_filter_bans_active",
                "Bans that still match (not expired), by reason.",
                &["reason"],
            )?,
            requests_noted: counter(
                "sip_filter_auth_requests_noted_total",
                "Requests the XDP program noted for pairing with their answers (source, Call-ID, CSeq, credentials, account).",
                &[],
            )?,
            requests_unpairable: counter(
                "sip_filter_auth_requests_unpairable_total",
                "Requests that could not be noted for their answers: no Call-ID or CSeq in the scanned prefix.",
                &[],
            )?,
            requests_displaced: counter(
                "sip_filter_auth_requests_displaced_total",
                "Noted requests that took the table slot of another request still awaiting its answer (whose answer then counts as unpaired).",
                &[],
            )?,
            answers_later_in_segment: counter(
                "sip_filter_answers_later_in_segment_total",
                "Messages leaving over TCP that the egress program read after the first of their segment (each also in sip_filter_answers_total).",
                &[],
            )?,
            answers_cut: counter(
                "sip_filter_answers_cut_total",
                "Messages leaving over TCP whose header section the segment's end cut: not paired nor learnt from (counted not_answer in sip_filter_answers_total).",
                &[],
            )?,
            answer_segments_unread: counter(
                "sip_filter_answer_segments_unread_total",
                &format!("TCP segments leaving from a SIP port with more after the {MAX_ANSWER_STREAM_MESSAGES} messages the egress program reads per segment: the rest was not read."),
                &[],
            )?,
            lockouts: counter(
                "sip_filter_auth_lockouts_total",
                "Accounts locked after failed passwords, by scope: source (for one source), unregistered (for every source neither registered nor allow-listed).",
                &["scope"],
            )?,
            registrations: counter(
                "sip_filter_auth_registrations_total",
                "Registrations learnt: 2xx answers to credentialed REGISTERs.",
                &[],
            )?,
            registered_sources: gauge(
                "sip_filter_registered_sources",
                "Sources holding a registration that has not expired.",
                &[],
            )?,
            locked_accounts: gauge(
                "sip_filter_locked_accounts",
                "Accounts locked now, by scope: source (for one source; an account locked for two sources counts twice), unregistered (for every unregistered source).",
                &["scope"],
            )?,
            map_entries: gauge(
                "sip_filter_map_entries",
                "Entries in a map (bans and lists include expired entries not yet removed).",
                &["map"],
            )?,
            map_capacity: gauge(
                "sip_filter_map_capacity_entries",
                "How many entries a map can hold (sources is an LRU: when full, the least recently seen source makes room).",
                &["map"],
            )?,
            country_drops: counter(
                "sip_filter_country_drops_total",
                "Packets dropped by the networks of a denied country ([countries]), by country (ISO 3166 code). A network the database stops listing takes its count with it.",
                &["country"],
            )?,
            country_networks: gauge(
                "sip_filter_country_networks",
                "Networks of a denied country ([countries]) in the deny lists, by country.",
                &["country"],
            )?,
            dry_run: gauge(
                "sip_filter_dry_run",
                "1 if the filter is in dry-run (drops and bans counted, not made), else 0.",
                &[],
            )?,
            interface_attached: gauge(
                "sip_filter_interface_attached",
                "1 if the filter's XDP program is attached to the interface, 0 if its link was left attached to none (the interface was deleted or moved to another namespace) or is gone while the daemon's runtime file lists the interface.",
                &["iface"],
            )?,
            interface_info: gauge(
                "sip_filter_interface_info",
                "Always 1, for each interface the filter is attached to; mode is its XDP mode (native, skb; unknown without the daemon's runtime file), requested the mode configured (auto, native, skb; unknown likewise, or from a daemon that did not record it), egress how the egress program watching the answers is attached (tcx, clsact; none for a filter started before it existed).",
                &["iface", "mode", "requested", "egress"],
            )?,
            transport_packets: counter(
                "sip_filter_transport_packets_total",
                "Packets to a SIP port judged, by transport (udp, tcp, tls; other: not known to be to a SIP port), verdict and reason (sip_filter_packets_total has the methods). Over TCP each message of a segment is counted.",
                &["transport", "verdict", "reason"],
            )?,
        })
    }

    fn collectors(&self) -> [&dyn Collector; 27] {
        [
            &self.packets,
            &self.answers,
            &self.first_fragments,
            &self.headers_truncated,
            &self.events_lost,
            &self.ban_skipped,
            &self.bans_added,
            &self.bans_expired,
            &self.bans_active,
            &self.requests_noted,
            &self.requests_unpairable,
            &self.requests_displaced,
            &self.answers_later_in_segment,
            &self.answers_cut,
            &self.answer_segments_unread,
            &self.lockouts,
            &self.registrations,
            &self.registered_sources,
            &self.locked_accounts,
            &self.map_entries,
            &self.map_capacity,
            &self.country_drops,
            &self.country_networks,
            &self.dry_run,
            &self.interface_info,
            &self.interface_attached,
            &self.transport_packets,
        ]
    }

    /// The kernel's series from `snapshot`.
    fn fill(&self, snapshot: &Snapshot) {
        let counters = &snapshot.counters;
        for reason in Reason::ALL {
            let verdict = if reason.is_drop() { "drop" } else { "pass" };
            for method in Method::ALL {
                let count = counters.packets[reason as usize][method as usize];
                // Every series that can be counted exists from the start, at 0, so that
                // rate() sees its first increase; any other cell only once it is not 0.
                let possible = counted_by_method(reason) == (method != Method::None);
                if possible || count != 0 {
                    self.packets
                        .with_label_values(&[verdict, reason.name(), method.name()])
                        .inc_by(count);
                }
            }
        }
        for kind in AnswerKind::ALL {
            self.answers
                .with_label_values(&[kind.name()])
                .inc_by(snapshot.answers.of(kind));
        }
        self.first_fragments
            .with_label_values(&NO_LABELS)
            .inc_by(counters.first_fragments);
        self.headers_truncated
            .with_label_values(&NO_LABELS)
            .inc_by(counters.headers_truncated);
        self.events_lost
            .with_label_values(&NO_LABELS)
            .inc_by(counters.events_lost);
        self.ban_skipped
            .with_label_values(&["bad_checksum"])
            .inc_by(counters.ban_skipped_bad_checksum);
        self.ban_skipped
            .with_label_values(&["fragment"])
            .inc_by(counters.ban_skipped_fragment);
        for reason in BanReason::ALL {
            let labels = [reason.name()];
            self.bans_added
                .with_label_values(&labels)
                .inc_by(counters.bans_added[reason as usize]);
            self.bans_expired
                .with_label_values(&labels)
                .inc_by(counters.bans_expired[reason as usize]);
            self.bans_active
                .with_label_values(&labels)
                .set(gauge_value(snapshot.bans_active[reason as usize]));
        }
        let (answers, learnt) = (&snapshot.answers, &snapshot.learnt);
        self.requests_noted
            .with_label_values(&NO_LABELS)
            .inc_by(answers.requests_noted);
        self.requests_unpairable
            .with_label_values(&NO_LABELS)
            .inc_by(answers.requests_unpairable);
        self.requests_displaced
            .with_label_values(&NO_LABELS)
            .inc_by(answers.requests_displaced);
        for (series, n) in [
            (&self.answers_later_in_segment, answers.stream_later),
            (&self.answers_cut, answers.stream_cut),
            (&self.answer_segments_unread, answers.stream_unread),
        ] {
            series.with_label_values(&NO_LABELS).inc_by(n);
        }
        self.registrations
            .with_label_values(&NO_LABELS)
            .inc_by(answers.registrations);
        self.registered_sources
            .with_label_values(&NO_LABELS)
            .set(gauge_value(learnt.registered));
        for (scope, lockouts, locked) in [
            ("source", answers.lockouts, learnt.locked_for_source),
            (
                "unregistered",
                answers.account_lockouts,
                learnt.locked_everywhere,
            ),
        ] {
            self.lockouts.with_label_values(&[scope]).inc_by(lockouts);
            self.locked_accounts
                .with_label_values(&[scope])
                .set(gauge_value(locked));
        }
        for (country, (networks, drops)) in &snapshot.countries {
            let labels = [country.to_string()];
            self.country_drops.with_label_values(&labels).inc_by(*drops);
            self.country_networks
                .with_label_values(&labels)
                .set(gauge_value(*networks));
        }
        for (map, entries, capacity) in &snapshot.maps {
            self.map_entries
                .with_label_values(&[map])
                .set(gauge_value(*entries));
            self.map_capacity
                .with_label_values(&[map])
                .set(i64::from(*capacity));
        }
        self.dry_run
            .with_label_values(&NO_LABELS)
            .set(i64::from(snapshot.dry_run));
        self.fill_transports(counters);
    }

    /// Issue 14: every transport's reasons exist from the start at 0 (rate() sees the
    /// first increase); `other`'s only once counted.
    fn fill_transports(&self, counters: &Counters) {
        for transport in Transport::ALL {
            for reason in Reason::ALL {
                let count = counters.transport_total(transport, reason);
                if transport != Transport::Other || count != 0 {
                    let verdict = if reason.is_drop() { "drop" } else { "pass" };
                    self.transport_packets
                        .with_label_values(&[transport.name(), verdict, reason.name()])
                        .inc_by(count);
                }
            }
        }
    }

    fn reset(&self) {
        self.packets.reset();
        self.answers.reset();
        self.first_fragments.reset();
        self.headers_truncated.reset();
        self.events_lost.reset();
        self.ban_skipped.reset();
        self.bans_added.reset();
        self.bans_expired.reset();
        self.bans_active.reset();
        self.requests_noted.reset();
        self.requests_unpairable.reset();
        self.requests_displaced.reset();
        self.answers_later_in_segment.reset();
        self.answers_cut.reset();
        self.answer_segments_unread.reset();
        self.lockouts.reset();
        self.registrations.reset();
        self.registered_sources.reset();
        self.locked_accounts.reset();
        self.map_entries.reset();
        self.map_capacity.reset();
        self.country_drops.reset();
        self.country_networks.reset();
        self.dry_run.reset();
        self.interface_info.reset();
        self.interface_attached.reset();
        self.transport_packets.reset();
    }
}

/// The one series of a vector without labels (the filter's totals).
const NO_LABELS: [&str; 0] = [];

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl KernelCollector {
    fn new(locations: Locations) -> Result<Self, prometheus::Error> {
        let series = KernelSeries::new()?;
        let destinations = DestinationSeries::new()?;
        let mut descs = descs_of(&series.collectors());
        descs.extend(descs_of(&destinations.collectors()));
        Ok(Self {
            locations,
            series: Mutex::new(series),
            destinations: Mutex::new(destinations),
            descs,
        })
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.reset();
        // Read once: every interface shares these maps. None pinned (no filter
        // running), or unreadable (one stopping, say): no kernel series this scrape.
        let maps = maps_dir(&self.locations.pin_root);
        if maps.exists() {
            match Snapshot::read(&maps, &self.locations.runtime_dir) {
                Ok(snapshot) => series.fill(&snapshot),
                Err(e) => log::warn!("metrics: reading the maps in {}: {e}", maps.display()),
            }
        }
        for interface in interfaces(&self.locations) {
            if interface.pinned {
                series
                    .interface_info
                    .with_label_values(&[
                        &interface.name,
                        &interface.mode,
                        &interface.requested,
                        interface.egress,
                    ])
                    .set(1);
            }
            series
                .interface_attached
                .with_label_values(&[&interface.name])
                .set(i64::from(interface.attached));
        }
        let destinations = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        destinations.reset();
        if maps.exists() {
            destinations.refill(&maps);
        }
        let mut families = collect_all(&series.collectors());
        families.extend(collect_all(&destinations.collectors()));
        families
    }
}

/// Why the exporter could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("metrics address {0:?} is not HOST:PORT (like 127.0.0.1:9184 or [::]:9184)")]
    BadAddress(String),
    #[error("cannot serve metrics on {address}: {source}{hint}")]
    Bind {
        address: String,
        source: std::io::Error,
        hint: &'static str,
    },
}

/// Binds the exporter's address now, before the filter is attached, so that a bad or
/// busy address fails the start; [`serve`] answers on it later.
pub fn bind(address: &str) -> Result<TcpListener, ListenError> {
    let bad = || ListenError::BadAddress(address.to_string());
    let addresses: Vec<SocketAddr> = address.to_socket_addrs().map_err(|_| bad())?.collect();
    if addresses.is_empty() {
        return Err(bad());
    }
    let listener = TcpListener::bind(&addresses[..]).map_err(|source| ListenError::Bind {
        address: address.to_string(),
        hint: match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another program listens there: `ss -ltnp` names it; pick another port)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (no interface has that address: `ip addr` lists them)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            }
            _ => "",
        },
        source,
    })?;
    // Tokio takes it over in `serve`.
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Bind {
            address: address.to_string(),
            source,
            hint: "",
        })?;
    Ok(listener)
}

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers HTTP/1 on `listener` (from [`bind`]) until the runtime stops; must run on a
/// Tokio runtime. Returns only if the listener cannot be handed to Tokio.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Error {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Ok(address) = listener.local_addr() {
        log::info!("serving metrics on http://{address}/metrics");
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: a scraper retries; the filter goes on.
                log::warn!("metrics: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, Arc::clone(&metrics)));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("metrics: connection ended: {e}");
            }
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if !matches!(*request.method(), HttpMethod::GET | HttpMethod::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    // Reading the maps is syscalls, seconds for a full blocklist: off the
    // runtime's thread, so the daemon's signals and events are not held up.
    Ok(
        match tokio::task::spawn_blocking(move || metrics.render()).await {
            Ok(Ok(body)) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
                response
            }
            Ok(Err(e)) => {
                log::warn!("metrics: encoding failed: {e}");
                text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))
            }
            Err(e) => {
                log::warn!("metrics: the scrape failed: {e}");
                text(StatusCode::INTERNAL_SERVER_ERROR, "the scrape failed\n")
            }
        },
    )
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

// Issue 18: the destination rules' and call budgets' series, read from the INVITE
// program's pinned maps at each scrape.

struct DestinationSeries {
    invites: IntCounterVec,
    unmatched: IntCounterVec,
    rule_calls: IntCounterVec,
    rule_drops: IntCounterVec,
    budget_breaches: IntCounterVec,
    blocked_accounts: IntGaugeVec,
    accounts: IntCounterVec,
    repeats: IntCounterVec,
}

impl DestinationSeries {
    fn new() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            invites: counter(
                "sip_filter_destination_invites_total",
                "New INVITEs (outside a dialog) that met the destination rules and call budgets ([destinations]), by what they dialled: nothing (no user part), name (not a number: the rules do not apply), national or international.",
                &["dialled"],
            )?,
            unmatched: counter(
                "sip_filter_destination_unmatched_total",
                "Dialled numbers no destination rule covers.",
                &[],
            )?,
            rule_calls: counter(
                "sip_filter_destination_rule_calls_total",
                "INVITEs dialling a number a destination rule covers, by the rule's prefix and action (rules that matched at least once).",
                &["prefix", "action"],
            )?,
            rule_drops: counter(
                "sip_filter_destination_rule_drops_total",
                "Of those, dropped by the rule: deny, or limit over its calls per minute.",
                &["prefix", "action"],
            )?,
            budget_breaches: counter(
                "sip_filter_call_budget_breaches_total",
                "Accounts that breached their call budget (each then blocked for account_block_seconds).",
                &[],
            )?,
            blocked_accounts: IntGaugeVec::new(
                Opts::new(
                    "sip_filter_call_budget_blocked",
                    "1 for each account blocked now after breaching its call budget, by account: its INVITEs are dropped from every source.",
                ),
                &["account"],
            )?,
            accounts: counter(
                "sip_filter_destination_accounts_total",
                "New INVITEs by what named their account for the call budgets and limit rules: digest (the credentials' username), from (no credentials: the From user), none (neither: a From without a user, or anonymous).",
                &["named_by"],
            )?,
            repeats: counter(
                "sip_filter_destination_repeated_invites_total",
                "New INVITEs of a call counted already (a retransmission, or the INVITE resent with credentials after a challenge): the meters and budgets count a call once.",
                &[],
            )?,
        })
    }

    fn collectors(&self) -> [&dyn Collector; 8] {
        [
            &self.invites,
            &self.unmatched,
            &self.rule_calls,
            &self.rule_drops,
            &self.budget_breaches,
            &self.blocked_accounts,
            &self.accounts,
            &self.repeats,
        ]
    }

    fn fill(&self, report: &crate::destinations::DestinationReport) {
        for (kind, count) in ["nothing", "name", "national", "international"]
            .into_iter()
            .zip(report.counters.dialled)
        {
            self.invites.with_label_values(&[kind]).inc_by(count);
        }
        self.unmatched
            .with_label_values(&NO_LABELS)
            .inc_by(report.counters.unmatched);
        self.budget_breaches
            .with_label_values(&NO_LABELS)
            .inc_by(report.counters.budget_breaches);
        let counters = &report.counters;
        let by_digest = counters
            .invites
            .saturating_sub(counters.no_account + counters.from_accounts);
        for (named_by, count) in [
            ("digest", by_digest),
            ("from", counters.from_accounts),
            ("none", counters.no_account),
        ] {
            self.accounts.with_label_values(&[named_by]).inc_by(count);
        }
        self.repeats
            .with_label_values(&NO_LABELS)
            .inc_by(counters.repeats);
        for rule in report.rules.iter().filter(|rule| rule.calls != 0) {
            let labels = [rule.prefix.as_str(), rule.action()];
            self.rule_calls
                .with_label_values(&labels)
                .inc_by(rule.calls);
            self.rule_drops
                .with_label_values(&labels)
                .inc_by(rule.dropped);
        }
        for blocked in &report.blocked {
            self.blocked_accounts
                .with_label_values(&[blocked.account.as_str()])
                .set(1);
        }
    }

    fn reset(&self) {
        self.invites.reset();
        self.unmatched.reset();
        self.rule_calls.reset();
        self.rule_drops.reset();
        self.budget_breaches.reset();
        self.blocked_accounts.reset();
        self.accounts.reset();
        self.repeats.reset();
    }
}

impl DestinationSeries {
    /// Refilled from the INVITE program's maps pinned in `maps`.
    fn refill(&self, maps: &Path) {
        match crate::destinations::DestinationReport::read_pinned(maps, monotonic_now_ns()) {
            Ok(report) => self.fill(&report),
            Err(e) => log::warn!(
                "metrics: reading the destination maps in {}: {e}",
                maps.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut counters = Counters::default();
        counters.packets[Reason::DropScanner as usize][Method::Options as usize] = 7;
        counters.packets[Reason::PassRequest as usize][Method::Register as usize] = 2;
        counters.packets[Reason::PassKeepalive as usize][Method::None as usize] = 3;
        counters.bans_added[BanReason::Scanner as usize] = 1;
        let mut answers = AnswerCounters {
            requests_noted: 40,
            requests_unpairable: 1,
            requests_displaced: 2,
            lockouts: 3,
            account_lockouts: 1,
            registrations: 12,
            stream_later: 6,
            stream_cut: 2,
            stream_unread: 1,
            ..AnswerCounters::default()
        };
        answers.kinds[AnswerKind::Failure as usize] = 5;
        Snapshot {
            counters,
            answers,
            learnt: Learnt {
                registered: 9,
                locked_for_source: 2,
                locked_everywhere: 1,
            },
            dry_run: false,
            bans_active: [0, 0, 1, 0, 0, 0, 0, 0, 0],
            maps: vec![("bans", 1, 1 << 20), ("sources", 2, 1 << 18)],
            countries: BTreeMap::from([(Country(*b"FR"), (1200, 34))]),
        }
    }

    fn rendered(snapshot: &Snapshot) -> String {
        let series = KernelSeries::new().unwrap();
        series.fill(snapshot);
        text_of(&series)
    }

    /// What a scrape of `series` as filled serves.
    fn text_of(series: &KernelSeries) -> String {
        let families: Vec<MetricFamily> = series
            .collectors()
            .iter()
            .flat_map(|c| c.collect())
            // As the registry does: a family with no series is left out.
            .filter(|family| !family.get_metric().is_empty())
            .collect();
        TextEncoder::new().encode_to_string(&families).unwrap()
    }

    /// Each scrape resets every series and fills it again: a series the reset missed
    /// would add the kernel's total once more per scrape.
    #[test]
    fn a_second_scrape_reads_the_same() {
        let series = KernelSeries::new().unwrap();
        // A vector lists its series in no set order: compare them sorted.
        let sorted = |series: &KernelSeries| {
            let mut lines: Vec<String> = text_of(series).lines().map(String::from).collect();
            lines.sort_unstable();
            lines
        };
        series.fill(&snapshot());
        let first = sorted(&series);
        series.reset();
        series.fill(&snapshot());
        assert_eq!(sorted(&series), first);
    }

    #[test]
    fn counters_become_labelled_series() {
        let text = rendered(&snapshot());
        for line in [
            r#"sip_filter_packets_total{method="OPTIONS",reason="drop_scanner",verdict="drop"} 7"#,
            r#"sip_filter_packets_total{method="REGISTER",reason="pass_request",verdict="pass"} 2"#,
            r#"sip_filter_packets_total{method="none",reason="pass_keepalive",verdict="pass"} 3"#,
            r#"sip_filter_bans_added_total{reason="scanner"} 1"#,
            r#"sip_filter_bans_active{reason="scanner"} 1"#,
            r#"sip_filter_answers_total{kind="failure"} 5"#,
            r#"sip_filter_answers_total{kind="not_answer"} 0"#,
            r#"sip_filter_map_entries{map="sources"} 2"#,
            r#"sip_filter_map_capacity_entries{map="bans"} 1048576"#,
            r#"sip_filter_country_drops_total{country="FR"} 34"#,
            r#"sip_filter_country_networks{country="FR"} 1200"#,
            "sip_filter_dry_run 0",
            "sip_filter_auth_requests_noted_total 40",
            "sip_filter_auth_requests_unpairable_total 1",
            r#"sip_filter_auth_lockouts_total{scope="source"} 3"#,
            r#"sip_filter_auth_lockouts_total{scope="unregistered"} 1"#,
            "sip_filter_auth_registrations_total 12",
            "sip_filter_answers_later_in_segment_total 6",
            "sip_filter_answers_cut_total 2",
            "sip_filter_answer_segments_unread_total 1",
            "sip_filter_registered_sources 9",
            r#"sip_filter_locked_accounts{scope="source"} 2"#,
            r#"sip_filter_locked_accounts{scope="unregistered"} 1"#,
            "# TYPE sip_filter_registered_sources gauge",
            "# TYPE sip_filter_auth_lockouts_total counter",
            "# TYPE sip_filter_packets_total counter",
            "# TYPE sip_filter_bans_active gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn every_series_that_can_count_is_there_at_zero() {
        let text = rendered(&Snapshot::default());
        let packets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sip_filter_packets_total{"))
            .collect();
        // 10 request reasons × 15 methods (3 of them issue 18's), 23 other reasons × none
        // (6 of them TLS's, 2 TCP's).
        assert_eq!(packets.len(), 10 * 15 + 23, "{text}");
        // Issue 14: every reason of udp, tcp and tls; none of other.
        let transports = text
            .lines()
            .filter(|l| l.starts_with("sip_filter_transport_packets_total{"))
            .count();
        assert_eq!(transports, 3 * Reason::COUNT, "{text}");
        assert!(text.contains(
            r#"sip_filter_transport_packets_total{reason="drop_scanner",transport="tcp",verdict="drop"} 0"#
        ));
        assert!(packets.iter().all(|l| l.ends_with(" 0")));
        assert!(text.contains(
            r#"sip_filter_packets_total{method="INVITE",reason="drop_rate_limited",verdict="drop"} 0"#
        ));
        assert!(!text.contains(r#"method="INVITE",reason="pass_keepalive""#));
        for reason in BanReason::ALL {
            let line = format!(
                r#"sip_filter_bans_expired_total{{reason="{}"}} 0"#,
                reason.name()
            );
            assert!(text.contains(&line), "no {line:?}");
        }
        for kind in AnswerKind::ALL {
            let line = format!(r#"sip_filter_answers_total{{kind="{}"}} 0"#, kind.name());
            assert!(
                text.lines().any(|l| l == line),
                "no {line:?} in:
{text}"
            );
        }
    }

    #[test]
    fn an_unexpected_cell_is_still_exported() {
        let mut snapshot = Snapshot::default();
        snapshot.counters.packets[Reason::DropBanned as usize][Method::Invite as usize] = 4;
        let text = rendered(&snapshot);
        assert!(text.contains(
            r#"sip_filter_packets_total{method="INVITE",reason="drop_banned",verdict="drop"} 4"#
        ));
    }

    /// A pin root and runtime directory of the test's own, on the ordinary file system
    /// (no maps: only the link pins' names and the runtime file are read), removed on drop.
    struct TestDirs(Locations);

    impl TestDirs {
        fn new(tag: &str) -> Self {
            let base = std::env::temp_dir()
                .join(format!("sip-filter-metrics-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            Self(Locations {
                pin_root: base.join("pins"),
                runtime_dir: base.join("run"),
            })
        }
    }

    impl Drop for TestDirs {
        fn drop(&mut self) {
            if let Some(base) = self.0.pin_root.parent() {
                let _ = std::fs::remove_dir_all(base);
            }
        }
    }

    #[test]
    fn reloads_are_the_daemons_counters() {
        static RELOADS: Reloads = Reloads::new();
        let dirs = TestDirs::new("reloads");
        let loaded_ms = 1_700_000_000_250;
        let metrics = Metrics::for_daemon(dirs.0.clone(), &RELOADS, loaded_ms).unwrap();
        let text = metrics.render().unwrap();
        for line in [
            r#"sip_filter_config_reloads_total{result="failed"} 0"#,
            r#"sip_filter_config_reloads_total{result="ok"} 0"#,
            "sip_filter_config_last_reload_successful 1",
            "sip_filter_config_last_reload_success_timestamp_seconds 1700000000.25",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.contains(&format!(
            "sip_filter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        RELOADS.record(false);
        RELOADS.record(true);
        RELOADS.record(false);
        let text = metrics.render().unwrap();
        for line in [
            r#"sip_filter_config_reloads_total{result="failed"} 2"#,
            r#"sip_filter_config_reloads_total{result="ok"} 1"#,
            "sip_filter_config_last_reload_successful 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // The configuration in force is the one the successful reload loaded.
        let reloaded_ms = RELOADS.last_success_unix_ms().unwrap();
        assert!(reloaded_ms > loaded_ms);
        assert!(text.contains(&format!(
            "sip_filter_config_last_reload_success_timestamp_seconds {}",
            reloaded_ms as f64 / 1000.0
        )));
        // No filter pinned: no kernel series, and no error.
        assert!(!text.contains("sip_filter_packets_total"), "{text}");
        assert!(!text.contains("sip_filter_dry_run"), "{text}");
        assert!(!text.contains("sip_filter_interface_info"), "{text}");
    }

    #[test]
    fn the_standalone_exporter_has_no_reload_series() {
        let dirs = TestDirs::new("standalone");
        let metrics = Metrics::for_pin_root(dirs.0.clone()).unwrap();
        let text = metrics.render().unwrap();
        assert!(text.contains("sip_filter_build_info"), "{text}");
        assert!(!text.contains("reload"), "{text}");
    }

    #[test]
    fn interfaces_are_the_link_pins_with_the_runtime_files_modes() {
        let dirs = TestDirs::new("interfaces");
        let root = &dirs.0.pin_root;
        for (dir, ifaces) in [
            (crate::pins::links_dir(root), &["eth0", "br0", "eth1"][..]),
            (crate::pins::tcx_dir(root), &["eth0"]),
            (crate::pins::clsact_dir(root), &["br0"]),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            for iface in ifaces {
                std::fs::write(dir.join(iface), b"").unwrap();
            }
        }
        std::fs::create_dir_all(&dirs.0.runtime_dir).unwrap();
        let interface = |name: &str, mode: &str, requested: &str| crate::runtime::Interface {
            name: name.into(),
            mode: mode.into(),
            requested: requested.into(),
            egress: String::new(),
        };
        Runtime {
            pid: 1,
            started_unix_ms: 0,
            pin_root: dirs.0.pin_root.clone(),
            config_file: None,
            state_file: PathBuf::new(),
            program_id: 1,
            interfaces: vec![
                interface("eth0", "native", "auto"),
                interface("br0", "skb", "skb"),
                interface("gone0", "native", ""),
            ],
            dry_run: false,
            domains: Vec::new(),
            own_addresses: Vec::new(),
            ports: Vec::new(),
            reloads: 0,
            reload_failures: 0,
            last_reload_error: None,
        }
        .write(&dirs.0.runtime_dir)
        .unwrap();
        let text = Metrics::for_pin_root(dirs.0.clone())
            .unwrap()
            .render()
            .unwrap();
        let series_of = |name: &str| -> Vec<&str> {
            let prefix = format!("{name}{{");
            text.lines().filter(|l| l.starts_with(&prefix)).collect()
        };
        let info = series_of("sip_filter_interface_info");
        assert_eq!(
            info,
            [
                r#"sip_filter_interface_info{egress="clsact",iface="br0",mode="skb",requested="skb"} 1"#,
                // Attached (its link is pinned), but the runtime file does not say how,
                // and no egress pin: a filter from before the egress program.
                r#"sip_filter_interface_info{egress="none",iface="eth1",mode="unknown",requested="unknown"} 1"#,
                r#"sip_filter_interface_info{egress="tcx",iface="eth0",mode="native",requested="auto"} 1"#,
            ],
            "{text}"
        );
        // These pins are plain files, not links: none is attached; nor is an interface
        // the runtime file names whose link pin is gone (it has no info series).
        let attached = series_of("sip_filter_interface_attached");
        assert_eq!(
            attached,
            [
                r#"sip_filter_interface_attached{iface="br0"} 0"#,
                r#"sip_filter_interface_attached{iface="eth0"} 0"#,
                r#"sip_filter_interface_attached{iface="eth1"} 0"#,
                r#"sip_filter_interface_attached{iface="gone0"} 0"#,
            ],
            "{text}"
        );
        assert!(!text.contains(r#"iface="gone0",mode"#), "{text}");
    }

    #[test]
    fn bad_addresses_are_refused_with_what_to_write() {
        for address in ["nonsense", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:99999"] {
            let error = bind(address).unwrap_err();
            assert!(
                matches!(error, ListenError::BadAddress(_)),
                "{address}: {error}"
            );
            assert!(error.to_string().contains("HOST:PORT"), "{error}");
        }
        let taken = bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let error = bind(&address).unwrap_err();
        assert!(
            error.to_string().contains("another program listens there"),
            "{error}"
        );
    }
}
