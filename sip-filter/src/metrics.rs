//! The Prometheus exporter: `GET /metrics` in the text exposition format (0.0.4).
//!
//! The kernel's state is read when Prometheus scrapes, from the maps the running filters
//! pinned: no polling loop, and every value is as current as the scrape. What only the
//! daemon knows (configuration reloads, its version) lives in ordinary registered
//! metrics. README.md's "Metrics" section lists the series; `ops/prometheus/` has alert
//! rules for them.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    maps::{HashMap, LpmTrie, Map, MapData, MapError},
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
    maps::{names, Ban, BanReason, ListEntry, SourceKey, SourceState, FLAG_DRY_RUN},
    Counters, Method, Reason,
};

use crate::{
    filter::{monotonic_now_ns, pinned_config, pinned_counters, FilterError},
    pins::{interface_dir, pinned_interfaces},
};

/// The Content-Type of the text exposition format, as Prometheus's own clients send it.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running filter's pin directory, and the `iface` label its series carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedFilter {
    pub iface: String,
    pub dir: PathBuf,
}

/// Which filters a scrape reads.
#[derive(Clone, Debug)]
pub enum Filters {
    /// These (the daemon's own; [`Metrics::set_filters`] changes them).
    Listed(Vec<PinnedFilter>),
    /// Every filter pinned under this root, looked up at each scrape (`sip-filter metrics`).
    UnderRoot(PathBuf),
}

impl Filters {
    fn current(&self) -> Vec<PinnedFilter> {
        match self {
            Filters::Listed(filters) => filters.clone(),
            Filters::UnderRoot(root) => match pinned_interfaces(root) {
                Ok(interfaces) => interfaces
                    .into_iter()
                    .map(|iface| PinnedFilter {
                        dir: interface_dir(root, &iface),
                        iface,
                    })
                    .collect(),
                Err(e) => {
                    log::warn!("metrics: reading {}: {e}", root.display());
                    Vec::new()
                }
            },
        }
    }
}

/// The exporter's metrics: the kernel's, read at scrape time, and the daemon's own.
pub struct Metrics {
    registry: Registry,
    filters: Arc<RwLock<Filters>>,
    /// Only a daemon reloads; `sip-filter metrics` has none of these.
    reloads: Option<Reloads>,
}

struct Reloads {
    total: IntCounterVec,
    last_successful: IntGauge,
    last_success_seconds: Gauge,
}

impl Metrics {
    /// The daemon's exporter, for its own filters. The configuration it started with
    /// counts as the last successful load (Prometheus's own convention).
    pub fn for_daemon(filters: Vec<PinnedFilter>) -> Result<Self, prometheus::Error> {
        let mut metrics = Self::new(Filters::Listed(filters))?;
        let total = IntCounterVec::new(
            Opts::new(
                "sip_filter_config_reloads_total",
                "Configuration reloads (SIGHUP), by result: ok, or failed (the old configuration stays).",
            ),
            &["result"],
        )?;
        // Both series from the start, so that rate() and increase() see the first one.
        for result in ["ok", "failed"] {
            total.with_label_values(&[result]);
        }
        let last_successful = IntGauge::new(
            "sip_filter_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, 0 if it failed.",
        )?;
        last_successful.set(1);
        let last_success_seconds = Gauge::new(
            "sip_filter_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded, in seconds since the Unix epoch.",
        )?;
        last_success_seconds.set(unix_now_seconds());
        metrics.registry.register(Box::new(total.clone()))?;
        metrics
            .registry
            .register(Box::new(last_successful.clone()))?;
        metrics
            .registry
            .register(Box::new(last_success_seconds.clone()))?;
        metrics.reloads = Some(Reloads {
            total,
            last_successful,
            last_success_seconds,
        });
        Ok(metrics)
    }

    /// An exporter for whatever filters are pinned under `root`, for
    /// `sip-filter metrics`: no reload metrics, as it is not the daemon.
    pub fn for_pin_root(root: PathBuf) -> Result<Self, prometheus::Error> {
        Self::new(Filters::UnderRoot(root))
    }

    fn new(filters: Filters) -> Result<Self, prometheus::Error> {
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
        let filters = Arc::new(RwLock::new(filters));
        registry.register(Box::new(KernelCollector::new(Arc::clone(&filters))?))?;
        Ok(Self {
            registry,
            filters,
            reloads: None,
        })
    }

    /// Counts a configuration reload; a successful one also sets the time of the last
    /// successful load. A no-op on an exporter that is not the daemon's.
    pub fn record_reload(&self, ok: bool) {
        let Some(reloads) = &self.reloads else {
            return;
        };
        reloads
            .total
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        reloads.last_successful.set(i64::from(ok));
        if ok {
            reloads.last_success_seconds.set(unix_now_seconds());
        }
    }

    /// Replaces the filters scrapes read (after a reload changed the interfaces).
    pub fn set_filters(&self, filters: Vec<PinnedFilter>) {
        *self.filters.write().unwrap_or_else(PoisonError::into_inner) = Filters::Listed(filters);
    }

    /// Every series, in the text exposition format. Reads the kernel's maps: see
    /// [`KernelCollector`] for the cost.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

fn unix_now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
    )
}

/// The maps whose entries and capacity are exported: label, pinned name.
const OCCUPANCY: [(&str, &str); 9] = [
    ("bans", names::BANS),
    ("sources", names::SOURCES),
    ("allow_v4", names::ALLOW_V4),
    ("allow_v6", names::ALLOW_V6),
    ("deny_v4", names::DENY_V4),
    ("deny_v6", names::DENY_V6),
    ("domains", names::DOMAINS),
    ("own_addresses", names::OWN_ADDRESSES),
    ("scanner_agents", names::SCANNER_AGENTS),
];

/// What one scrape reads from one filter's maps.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snapshot {
    counters: Counters,
    dry_run: bool,
    /// Bans that still match, by [`BanReason`].
    bans_active: [u64; BanReason::COUNT],
    /// Per [`OCCUPANCY`] map: entries, capacity.
    maps: Vec<(&'static str, u64, u32)>,
}

impl Snapshot {
    /// Reads the filter pinned in `dir`. Counting entries walks each map's keys, one
    /// syscall per entry (two for the bans, whose values are read too): 3.4 s for a
    /// blocklist at its capacity of a million (tests/tests/metrics_full_blocklist.rs),
    /// milliseconds for the usual few thousand; which is why a scrape runs on a blocking
    /// thread.
    fn read(filter: &PinnedFilter) -> Result<Snapshot, FilterError> {
        let dir = &filter.dir;
        let counters = pinned_counters(dir)?;
        let dry_run = pinned_config(dir)?.has(FLAG_DRY_RUN);
        let mut bans_active = [0u64; BanReason::COUNT];
        let mut maps = Vec::with_capacity(OCCUPANCY.len());
        for (label, name) in OCCUPANCY {
            let map_error = |source| FilterError::Map { name, source };
            let data = MapData::from_pin(dir.join(name)).map_err(map_error)?;
            let capacity = data.info().map_err(map_error)?.max_entries();
            let map = Map::from_map_data(data).map_err(map_error)?;
            let entries = if name == names::BANS {
                count_bans(&map, monotonic_now_ns(), &mut bans_active)
            } else {
                count_entries(name, &map)
            }
            .map_err(map_error)?;
            maps.push((label, entries, capacity));
        }
        Ok(Snapshot {
            counters,
            dry_run,
            bans_active,
            maps,
        })
    }
}

/// Entries of the blocklist, adding those that still match at `now_ns` to `active` by
/// reason. An entry removed between two syscalls is skipped.
fn count_bans(
    map: &Map,
    now_ns: u64,
    active: &mut [u64; BanReason::COUNT],
) -> Result<u64, MapError> {
    let bans: HashMap<&MapData, SourceKey, Ban> = HashMap::try_from(map)?;
    let mut entries = 0;
    for (_, ban) in bans.iter().filter_map(Result::ok) {
        entries += 1;
        if now_ns < ban.expires_ns {
            active[BanReason::from_u32(ban.reason) as usize] += 1;
        }
    }
    Ok(entries)
}

/// Entries of one of the [`OCCUPANCY`] maps other than the blocklist, by its key type.
fn count_entries(name: &str, map: &Map) -> Result<u64, MapError> {
    match name {
        names::DOMAINS | names::SCANNER_AGENTS => hash_entries::<u64, u8>(map),
        names::OWN_ADDRESSES => hash_entries::<[u8; 16], u8>(map),
        names::SOURCES => hash_entries::<SourceKey, SourceState>(map),
        names::ALLOW_V4 | names::DENY_V4 => trie_entries::<[u8; 4]>(map),
        _ => trie_entries::<[u8; 16]>(map),
    }
}

fn hash_entries<K: Pod, V: Pod>(map: &Map) -> Result<u64, MapError> {
    let hash: HashMap<&MapData, K, V> = HashMap::try_from(map)?;
    Ok(hash.keys().filter(Result::is_ok).count() as u64)
}

fn trie_entries<K: Pod>(map: &Map) -> Result<u64, MapError> {
    let trie: LpmTrie<&MapData, K, ListEntry> = LpmTrie::try_from(map)?;
    Ok(trie.keys().filter(Result::is_ok).count() as u64)
}

/// The kernel's series, refilled from the pinned maps at each scrape.
struct KernelCollector {
    filters: Arc<RwLock<Filters>>,
    /// One scrape at a time: each resets and refills these.
    series: Mutex<KernelSeries>,
    descs: Vec<Desc>,
}

struct KernelSeries {
    packets: IntCounterVec,
    first_fragments: IntCounterVec,
    headers_truncated: IntCounterVec,
    events_lost: IntCounterVec,
    bans_added: IntCounterVec,
    bans_expired: IntCounterVec,
    bans_active: IntGaugeVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    dry_run: IntGaugeVec,
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
                &["iface", "verdict", "reason", "method"],
            )?,
            first_fragments: counter(
                "sip_filter_first_fragments_total",
                "First fragments of IP datagrams to a SIP port, judged like whole datagrams.",
                &["iface"],
            )?,
            headers_truncated: counter(
                "sip_filter_headers_truncated_total",
                "SIP messages whose header section did not end inside the scanned prefix.",
                &["iface"],
            )?,
            events_lost: counter(
                "sip_filter_events_lost_total",
                "Ban and drop events the ring buffer had no room for (not logged).",
                &["iface"],
            )?,
            bans_added: counter(
                "sip_filter_bans_added_total",
                "Bans the kernel added (in dry-run: would have added), by reason.",
                &["iface", "reason"],
            )?,
            bans_expired: counter(
                "sip_filter_bans_expired_total",
                "Bans the kernel found expired and removed, by reason.",
                &["iface", "reason"],
            )?,
            bans_active: gauge(
                "sip_filter_bans_active",
                "Bans that still match (not expired), by reason.",
                &["iface", "reason"],
            )?,
            map_entries: gauge(
                "sip_filter_map_entries",
                "Entries in a map (bans and lists include expired entries not yet removed).",
                &["iface", "map"],
            )?,
            map_capacity: gauge(
                "sip_filter_map_capacity_entries",
                "How many entries a map can hold (sources is an LRU: when full, the least recently seen source makes room).",
                &["iface", "map"],
            )?,
            dry_run: gauge(
                "sip_filter_dry_run",
                "1 if the filter is in dry-run (drops and bans counted, not made), else 0.",
                &["iface"],
            )?,
        })
    }

    fn collectors(&self) -> [&dyn Collector; 10] {
        [
            &self.packets,
            &self.first_fragments,
            &self.headers_truncated,
            &self.events_lost,
            &self.bans_added,
            &self.bans_expired,
            &self.bans_active,
            &self.map_entries,
            &self.map_capacity,
            &self.dry_run,
        ]
    }

    /// One filter's series from `snapshot`.
    fn fill(&self, iface: &str, snapshot: &Snapshot) {
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
                        .with_label_values(&[iface, verdict, reason.name(), method.name()])
                        .inc_by(count);
                }
            }
        }
        self.first_fragments
            .with_label_values(&[iface])
            .inc_by(counters.first_fragments);
        self.headers_truncated
            .with_label_values(&[iface])
            .inc_by(counters.headers_truncated);
        self.events_lost
            .with_label_values(&[iface])
            .inc_by(counters.events_lost);
        for reason in BanReason::ALL {
            let labels = [iface, reason.name()];
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
        for (map, entries, capacity) in &snapshot.maps {
            self.map_entries
                .with_label_values(&[iface, map])
                .set(gauge_value(*entries));
            self.map_capacity
                .with_label_values(&[iface, map])
                .set(i64::from(*capacity));
        }
        self.dry_run
            .with_label_values(&[iface])
            .set(i64::from(snapshot.dry_run));
    }

    fn reset(&self) {
        self.packets.reset();
        self.first_fragments.reset();
        self.headers_truncated.reset();
        self.events_lost.reset();
        self.bans_added.reset();
        self.bans_expired.reset();
        self.bans_active.reset();
        self.map_entries.reset();
        self.map_capacity.reset();
        self.dry_run.reset();
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl KernelCollector {
    fn new(filters: Arc<RwLock<Filters>>) -> Result<Self, prometheus::Error> {
        let series = KernelSeries::new()?;
        let descs = series
            .collectors()
            .iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        Ok(Self {
            filters,
            series: Mutex::new(series),
            descs,
        })
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let filters = self
            .filters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current();
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.reset();
        for filter in &filters {
            // A filter that cannot be read (stopping, say) is left out of this scrape;
            // the others are still exported.
            match Snapshot::read(filter) {
                Ok(snapshot) => series.fill(&filter.iface, &snapshot),
                Err(e) => log::warn!(
                    "metrics: reading the filter on {} ({}): {e}",
                    filter.iface,
                    filter.dir.display()
                ),
            }
        }
        series
            .collectors()
            .iter()
            .flat_map(|c| c.collect())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut counters = Counters::default();
        counters.packets[Reason::DropScanner as usize][Method::Options as usize] = 7;
        counters.packets[Reason::PassRequest as usize][Method::Register as usize] = 2;
        counters.packets[Reason::PassKeepalive as usize][Method::None as usize] = 3;
        counters.bans_added[BanReason::Scanner as usize] = 1;
        Snapshot {
            counters,
            dry_run: false,
            bans_active: [0, 0, 1, 0, 0],
            maps: vec![("bans", 1, 1 << 20), ("sources", 2, 1 << 18)],
        }
    }

    fn rendered(snapshot: &Snapshot) -> String {
        let series = KernelSeries::new().unwrap();
        series.fill("eth0", snapshot);
        let families: Vec<MetricFamily> = series
            .collectors()
            .iter()
            .flat_map(|c| c.collect())
            // As the registry does: a family with no series is left out.
            .filter(|family| !family.get_metric().is_empty())
            .collect();
        TextEncoder::new().encode_to_string(&families).unwrap()
    }

    #[test]
    fn counters_become_labelled_series() {
        let text = rendered(&snapshot());
        for line in [
            r#"sip_filter_packets_total{iface="eth0",method="OPTIONS",reason="drop_scanner",verdict="drop"} 7"#,
            r#"sip_filter_packets_total{iface="eth0",method="REGISTER",reason="pass_request",verdict="pass"} 2"#,
            r#"sip_filter_packets_total{iface="eth0",method="none",reason="pass_keepalive",verdict="pass"} 3"#,
            r#"sip_filter_bans_added_total{iface="eth0",reason="scanner"} 1"#,
            r#"sip_filter_bans_active{iface="eth0",reason="scanner"} 1"#,
            r#"sip_filter_map_entries{iface="eth0",map="sources"} 2"#,
            r#"sip_filter_map_capacity_entries{iface="eth0",map="bans"} 1048576"#,
            r#"sip_filter_dry_run{iface="eth0"} 0"#,
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
        // 5 request reasons × 15 methods, 9 other reasons × none.
        assert_eq!(packets.len(), 5 * 15 + 9, "{text}");
        assert!(packets.iter().all(|l| l.ends_with(" 0")));
        assert!(text.contains(
            r#"sip_filter_packets_total{iface="eth0",method="INVITE",reason="drop_rate_limited",verdict="drop"} 0"#
        ));
        assert!(!text.contains(r#"method="INVITE",reason="pass_keepalive""#));
        for reason in BanReason::ALL {
            let line = format!(
                r#"sip_filter_bans_expired_total{{iface="eth0",reason="{}"}} 0"#,
                reason.name()
            );
            assert!(text.contains(&line), "no {line:?}");
        }
    }

    #[test]
    fn an_unexpected_cell_is_still_exported() {
        let mut snapshot = Snapshot::default();
        snapshot.counters.packets[Reason::DropBanned as usize][Method::Invite as usize] = 4;
        let text = rendered(&snapshot);
        assert!(text.contains(
            r#"sip_filter_packets_total{iface="eth0",method="INVITE",reason="drop_banned",verdict="drop"} 4"#
        ));
    }

    #[test]
    fn reloads_are_counted() {
        let metrics = Metrics::for_daemon(Vec::new()).unwrap();
        let text = metrics.render().unwrap();
        assert!(
            text.contains("sip_filter_config_reloads_total{result=\"failed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sip_filter_config_last_reload_successful 1"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "sip_filter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        metrics.record_reload(false);
        metrics.record_reload(true);
        metrics.record_reload(false);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("sip_filter_config_reloads_total{result=\"failed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sip_filter_config_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sip_filter_config_last_reload_successful 0"),
            "{text}"
        );
        // No filter pinned: no kernel series, and no error.
        assert!(!text.contains("sip_filter_packets_total"));
    }

    #[test]
    fn the_standalone_exporter_has_no_reload_series() {
        let metrics = Metrics::for_pin_root("/nonexistent/sip-filter-pins".into()).unwrap();
        metrics.record_reload(true);
        let text = metrics.render().unwrap();
        assert!(text.contains("sip_filter_build_info"), "{text}");
        assert!(!text.contains("reload"), "{text}");
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
