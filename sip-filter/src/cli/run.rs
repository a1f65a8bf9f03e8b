use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use aya::{
    maps::{MapData, RingBuf},
    programs::links::{FdLink, PinnedLink},
};
use prometheus::IntCounterVec;
use sip_filter::{
    countries::{CountryIndex, CountryLists},
    crowdsec::{report::SyncMetrics, signals::SignalQueue, CrowdsecSync},
    events::{self, Aggregator},
    filter::{monotonic_now_ns, FilterError},
    interfaces,
    learnt::PinnedLearnt,
    lists::{ListKind, PinnedList},
    metrics::{self, Locations, Metrics},
    pins::{
        anything_pinned, clsact_dir, ensure_bpffs, link_path, links_dir, maps_dir,
        pinned_interfaces, remove_all, tcx_dir,
    },
    runtime::{Interface, Runtime, RELOADS},
    service_manager,
    state::{self, Clocks, State, StateError, StateMaps},
    AttachedMode, Capacities, EgressMode, Filter, Settings,
};
use sip_filter_common::maps::MAX_OWN_ADDRESSES;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use super::{
    options::{DaemonOptions, DaemonSetup, FilterOptions},
    PinArgs, UserError,
};

/// Attach the filter to one or more interfaces and stay in the foreground (the daemon).
///
/// SIGHUP reloads the configuration file (a bad one is refused and the running
/// configuration stays); Ctrl-C or SIGTERM detaches the filter and removes its pins.
/// Bans and the allow/deny entries an operator added survive a restart (the state
/// file). While it runs, `sip-filter stats`, `status`, `block` in another shell read and
/// change it, and the filter's bans and drops (the first per source per second) are
/// logged.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    daemon: DaemonOptions,
    #[command(flatten)]
    filter: FilterOptions,
    /// How the egress program that watches the server's answers attaches beside XDP:
    /// auto: tcx (Linux 6.6+), falling back to a clsact qdisc filter on older kernels.
    #[arg(long, value_enum, default_value_t = EgressMode::Auto)]
    egress_mode: EgressMode,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Refuse bad settings, the whole file checked, before anything touches the kernel.
    let mut settings = args.filter.enforceable_settings()?;
    let setup = args.daemon.setup(&settings.daemon, &args.pins.pin_root)?;
    if let Some(unknown) = setup
        .interfaces
        .iter()
        .find(|iface| !interface_exists(iface))
    {
        return Err(UserError(format!(
            "no interface named {unknown:?}: `ip link` lists them"
        ))
        .into());
    }
    let root = args.pins.pin_root.clone();
    let runtime_dir = args.pins.runtime_dir();
    let state_path = setup.state_dir.join(state::FILE_NAME);

    if let Ok(Some(other)) = Runtime::read(&runtime_dir) {
        if other.daemon_alive() && other.pid != std::process::id() {
            return Err(UserError(format!(
                "a sip-filter daemon (pid {}) already runs with the pins in {}: stop it first (`sip-filter unload`) or give this one another --pin-root",
                other.pid,
                root.display()
            ))
            .into());
        }
    }
    // Bound now, so that a bad or busy address fails before the filter is attached.
    let metrics_listener = setup
        .metrics_addr
        .as_deref()
        .map(metrics::bind)
        .transpose()
        .map_err(|e| UserError(e.to_string()))?;

    let mut saved = load_state(&state_path);
    let legacy_path = setup.state_dir.join(state::LEGACY_FILE_NAME);
    let legacy = load_state(&legacy_path);
    saved = State::merged(Some(legacy), Some(saved)).unwrap_or_default();
    // Pins without a live daemon: one that crashed (its program is still attached
    // through the link pins). Its maps are newer than the state file: take them over.
    let stale = anything_pinned(&root).with_context(|| format!("reading {}", root.display()))?;
    if stale {
        log::warn!(pin_root:% = root.display();
            "pins left by a daemon that did not stop cleanly: taking over its bans, operator entries, registrations, lockouts and call budgets, then replacing it");
        match take_pinned_state(&root) {
            Ok(left) => saved.extend(left),
            Err(e) => log::warn!(pin_root:% = root.display();
                "cannot read the bans the previous daemon left, restoring from the state file only: {e:#}"),
        }
    }

    // Once every refusal is behind us: its log line is the start's, not an error's.
    take_interface_addresses(&mut settings, &setup.interfaces);
    let mut filter = Filter::load_with(Capacities {
        tracked_sources: settings.tracked_sources,
    })
    .context("loading the XDP program")?;
    filter.configure(&settings)?;
    let mut countries = CountryLists::indexed_in(runtime_dir.clone());
    CountryLists::read(settings.countries.as_ref())
        .and_then(|read| countries.apply(&filter, read))
        .map_err(|e| UserError(e.to_string()))?;
    // Before attaching: the program enforces the restored bans from its first packet.
    let restored = state::restore(&mut filter, &saved, Clocks::now())?;
    if !saved.is_empty() {
        log::info!(bans = restored.bans, allow = restored.allow, deny = restored.deny,
            registered = restored.registered, lockouts = restored.lockouts,
            call_budgets = restored.call_budgets,
            skipped = restored.skipped, state_file:% = state_path.display();
            "restored {} ban(s), {} operator list entr(ies), {} registered source(s), {} account lockout(s) and {} call budget(s)",
            restored.bans, restored.allow + restored.deny, restored.registered, restored.lockouts,
            restored.call_budgets);
    }
    if restored.call_budgets_off != 0 {
        log::info!(call_budgets = restored.call_budgets_off, state_file:% = state_path.display();
            "{} saved call budget(s) not restored: call budgets are off in the configuration, so no account stays blocked by them",
            restored.call_budgets_off);
    }
    let events = filter.take_events()?;
    let program_id = filter.program_id()?;

    ensure_bpffs(&root).with_context(|| format!("preparing {}", root.display()))?;
    if stale {
        // Detaches the old program (its links go with their pins); ours follows once the
        // kernel has let it go.
        let old_programs = pinned_link_programs(&root);
        remove_all(&root).with_context(|| format!("removing stale pins in {}", root.display()))?;
        wait_until_unloaded(&old_programs);
    }
    let pinned = attach_and_pin(&mut filter, &setup, args.egress_mode, &root)?;
    let mut runtime = Runtime {
        pid: std::process::id(),
        started_unix_ms: Clocks::now().unix_ms,
        pin_root: root.clone(),
        config_file: args.filter.config.clone(),
        state_file: state_path.clone(),
        program_id,
        interfaces: pinned
            .attached
            .iter()
            .map(|(name, mode, egress)| Interface {
                name: name.clone(),
                mode: mode.name().to_string(),
                requested: setup.xdp_mode.name().to_string(),
                egress: egress.to_string(),
            })
            .collect(),
        dry_run: false,
        domains: Vec::new(),
        own_addresses: Vec::new(),
        ports: Vec::new(),
        reloads: 0,
        reload_failures: 0,
        last_reload_error: None,
    };
    runtime.describe(&settings);
    if let Err(e) = runtime.write(&runtime_dir) {
        log::warn!(runtime_dir:% = runtime_dir.display();
            "cannot write the runtime file, so `sip-filter status` and `domains list` cannot read it: {e}");
    }
    for (iface, mode, egress) in &pinned.attached {
        log::info!(iface = iface.as_str(), mode = mode.name(), egress, program_id;
            "sip-filter attached to {iface} ({} mode; answers watched at egress with {egress})", mode.name());
    }
    log::info!(domains = settings.domains.len(), domain_check = !settings.domains.is_empty(),
        dry_run = settings.dry_run, pin_root:% = root.display(),
        config:% = args.filter.config.as_deref().map_or("none".into(), Path::to_string_lossy);
        "filtering: {} domain(s) allowed{}; maps pinned in {}", settings.domains.len(),
        if settings.domains.is_empty() { " (domain check off)" } else { "" },
        maps_dir(&root).display());
    if settings.dry_run {
        log::warn!(dry_run = true; "dry-run: verdicts are counted and reported, nothing is dropped or banned");
    }

    let crowdsec_metrics = match &settings.crowdsec {
        Some(_) => Some(SyncMetrics::new()?),
        None => None,
    };
    let events_aggregated = Aggregator::counter()?;
    let exporter = match metrics_listener {
        Some(listener) => {
            let locations = Locations {
                pin_root: root.clone(),
                runtime_dir: runtime_dir.clone(),
            };
            let metrics = Metrics::for_daemon(locations, &RELOADS, runtime.started_unix_ms)?;
            metrics.register(vec![Box::new(events_aggregated.clone())])?;
            if let Some(sync_metrics) = &crowdsec_metrics {
                metrics.register(sync_metrics.collectors())?;
            }
            Some((listener, Arc::new(metrics)))
        }
        None => None,
    };
    // Once the maps are pinned: the bouncer writes CrowdSec's decisions into them.
    let crowdsec = match (&settings.crowdsec, crowdsec_metrics) {
        (Some(crowdsec), Some(sync_metrics)) => Some(
            CrowdsecSync::start(crowdsec, &maps_dir(&root), &runtime_dir, sync_metrics)
                .context("starting the CrowdSec bouncer")?,
        ),
        _ => None,
    };
    let mut daemon = Daemon {
        args: &args,
        setup,
        filter,
        settings,
        runtime,
        runtime_dir,
        state_path,
        exporter,
        crowdsec,
        countries,
        events_aggregated,
    };
    let served = daemon.serve(events);
    // Saved before detaching: what the kernel banned up to the last moment.
    daemon.save_state();
    // Stops the sync and removes its status files, so the runtime directory can go.
    daemon.crowdsec.take();
    let interfaces = pinned.interfaces();
    let removed = pinned.remove();
    if let Err(e) = CountryIndex::remove(&daemon.runtime_dir) {
        log::warn!("cannot remove the country index: {e}");
    }
    if let Err(e) = Runtime::remove(&daemon.runtime_dir) {
        log::warn!("cannot remove the runtime file: {e}");
    }
    drop(daemon); // unloads the program
    log::info!(interfaces = interfaces.as_str(); "sip-filter detached from {interfaces}");
    served.and(removed)
}

/// With no own addresses configured, those of the interfaces the filter is attached
/// to: a trunk or a phone addressing the server by IP (`sip:DID@198.51.100.7`) reaches
/// it, as it would without the filter. Read again on every reload, so an address added
/// since counts.
fn take_interface_addresses(settings: &mut Settings, ifaces: &[String]) {
    if !settings.own_addresses.is_empty() {
        return;
    }
    let mut found = match interfaces::addresses_of(ifaces) {
        Ok(found) => found,
        Err(e) => {
            log::warn!("cannot read the interfaces' addresses, so no IP-literal Request-URI host is allowed (set filter.own_addresses): {e}");
            return;
        }
    };
    if found.len() > MAX_OWN_ADDRESSES as usize {
        log::warn!(found = found.len();
            "the interfaces have {} addresses, only the first {MAX_OWN_ADDRESSES} are taken as own addresses (set filter.own_addresses to choose)", found.len());
        found.truncate(MAX_OWN_ADDRESSES as usize);
    }
    let list = found
        .iter()
        .map(|(iface, address)| format!("{address} ({iface})"))
        .collect::<Vec<_>>()
        .join(", ");
    log::info!(own_addresses = list.as_str();
        "own addresses, allowed as IP-literal Request-URI hosts, taken from the interfaces: {}",
        if list.is_empty() { "none" } else { &list });
    settings.own_addresses = found.into_iter().map(|(_, address)| address).collect();
}

/// Whether the network namespace we run in has an interface named `name`.
fn interface_exists(name: &str) -> bool {
    std::ffi::CString::new(name).is_ok_and(|c_name| {
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        unsafe { libc::if_nametoindex(c_name.as_ptr()) != 0 }
    })
}

/// The state file's contents, or nothing: a missing file is a first start, a corrupt
/// one is set aside (never lost, never a reason not to filter).
fn load_state(path: &Path) -> State {
    match State::load(path) {
        Ok(Some(state)) => state,
        Ok(None) => {
            log::info!(state_file:% = path.display(); "no state file yet: starting without saved bans");
            State::default()
        }
        Err(StateError::Corrupt { reason, .. }) => {
            match state::set_aside(path) {
                Ok(aside) => {
                    log::error!(state_file:% = path.display(), kept_as:% = aside.display();
                    "the state file is corrupt ({reason}): starting without saved bans; the file is kept as {}", aside.display())
                }
                Err(e) => log::error!(state_file:% = path.display();
                    "the state file is corrupt ({reason}) and cannot be set aside ({e}): starting without saved bans"),
            }
            State::default()
        }
        Err(e) => {
            log::error!(state_file:% = path.display(); "{e}: starting without saved bans");
            State::default()
        }
    }
}

/// The programs of the XDP links pinned under `root` (a crashed daemon's), by id.
fn pinned_link_programs(root: &Path) -> Vec<u32> {
    pinned_interfaces(root)
        .unwrap_or_default()
        .iter()
        .filter_map(|iface| PinnedLink::from_pin(link_path(root, iface)).ok())
        .filter_map(|link| FdLink::from(link).info().ok())
        .map(|info| info.program_id())
        .collect()
}

/// How long a takeover waits for the kernel to free a crashed daemon's links.
const UNLOAD_WAIT: Duration = Duration::from_secs(10);

/// Waits (up to [`UNLOAD_WAIT`]) until the programs `ids` are unloaded: the kernel frees
/// an unpinned link in a work queue, later on a busy host, and until then the interface
/// refuses another XDP program (EBUSY).
fn wait_until_unloaded(ids: &[u32]) {
    let start = std::time::Instant::now();
    let loaded = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|info| ids.contains(&info.id()))
    };
    while !ids.is_empty() && loaded() {
        if start.elapsed() > UNLOAD_WAIT {
            log::warn!("the previous daemon's program is still attached after {UNLOAD_WAIT:?}: attaching anyway");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bans, operator entries, registrations, lockouts and call budgets in the maps a
/// crashed daemon left pinned (one that predates some pinned none: the rest is taken).
fn take_pinned_state(root: &Path) -> anyhow::Result<State> {
    let dir = maps_dir(root);
    let maps = state::pinned_maps(&dir)?;
    let learnt = PinnedLearnt::open(&dir)
        .inspect_err(|e| log::warn!("no registrations or lockouts to take over: {e}"))
        .ok();
    let call_budgets = state::pinned_call_budgets(&dir)
        .inspect_err(|e| log::warn!("no call budgets to take over: {e}"))
        .ok();
    let mut state_maps = StateMaps::from(&maps);
    state_maps.learnt = learnt.as_ref().map(PinnedLearnt::maps);
    state_maps.call_budgets = call_budgets.as_ref();
    Ok(State::take(&state_maps, Clocks::now())?)
}

/// What a running daemon pinned: removed (which detaches) on [`Pinned::remove`] or drop.
struct Pinned {
    root: PathBuf,
    /// Each interface, its XDP mode and its egress attachment's (`tcx` or `clsact`).
    attached: Vec<(String, AttachedMode, &'static str)>,
    /// Held until the pins are gone, so the program stays attached until then.
    links: Vec<PinnedLink>,
}

impl Pinned {
    fn interfaces(&self) -> String {
        self.attached
            .iter()
            .map(|(name, _, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn remove(mut self) -> anyhow::Result<()> {
        let removed = remove_all(&self.root)
            .with_context(|| format!("removing the pins in {}", self.root.display()));
        self.links.clear(); // the last references: the program detaches here
        self.root = PathBuf::new();
        removed
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if !self.root.as_os_str().is_empty() {
            let _ = remove_all(&self.root);
        }
    }
}

/// Pins the maps once, then attaches to each interface and pins its link, and the egress
/// program beside it (its tcx link, or the record of its clsact filter). On any failure,
/// what was done is undone (detached, unpinned).
fn attach_and_pin(
    filter: &mut Filter,
    setup: &DaemonSetup,
    egress_mode: EgressMode,
    root: &Path,
) -> anyhow::Result<Pinned> {
    let mut pinned = Pinned {
        root: root.to_path_buf(),
        attached: Vec::new(),
        links: Vec::new(),
    };
    let maps = maps_dir(root);
    std::fs::create_dir_all(&maps).with_context(|| format!("creating {}", maps.display()))?;
    filter.pin_maps(&maps)?;
    for dir in [links_dir(root), tcx_dir(root), clsact_dir(root)] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for iface in &setup.interfaces {
        let (mode, link) = match filter.attach(iface, setup.xdp_mode) {
            Ok(attached) => attached,
            Err(FilterError::Attach {
                source: aya::programs::ProgramError::UnknownInterface { .. },
                ..
            }) => {
                return Err(UserError(format!(
                    "no interface named {iface:?}: `ip link` lists them"
                ))
                .into())
            }
            Err(e) => {
                return Err(e).context(format!(
                "is another XDP program already attached to {iface}? `ip link show {iface}` tells"
            ))
            }
        };
        let path = link_path(root, iface);
        let link = link
            .pin(&path)
            .with_context(|| format!("pinning the link of {iface} at {}", path.display()))?;
        pinned.links.push(link);
        let (egress, egress_link) = filter
            .attach_egress_pinned(root, iface, egress_mode)
            .with_context(|| {
                format!("attaching the egress program (the answers' observer) to {iface}")
            })?;
        pinned.links.extend(egress_link);
        pinned.attached.push((iface.clone(), mode, egress));
    }
    Ok(pinned)
}

/// The running daemon: the loaded filter and what it was configured with.
struct Daemon<'a> {
    args: &'a RunArgs,
    /// What it was started with: fixed until it stops.
    setup: DaemonSetup,
    filter: Filter,
    settings: Settings,
    runtime: Runtime,
    runtime_dir: PathBuf,
    state_path: PathBuf,
    /// Served once [`Daemon::serve`] runs, if `--metrics-addr` was given.
    exporter: Option<(TcpListener, Arc<Metrics>)>,
    /// The CrowdSec bouncer and signal source, if `[crowdsec]` is configured.
    crowdsec: Option<CrowdsecSync>,
    /// The `[countries]` lists and the database version they came from.
    countries: CountryLists,
    /// `sip_filter_events_aggregated_total`, exported if metrics are served.
    events_aggregated: IntCounterVec,
}

impl Daemon<'_> {
    /// Logs the filter's events, reloads on SIGHUP, saves the state periodically and
    /// serves metrics if asked, until SIGINT or SIGTERM.
    fn serve(&mut self, events: RingBuf<MapData>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let ipv6_prefix = u32::from(self.settings.ipv6_prefix);
        // The kernel's bans go to CrowdSec too, if a machine is configured.
        let signals = self.crowdsec.as_ref().and_then(|c| c.signals().cloned());
        let mut aggregator = Aggregator::new(self.events_aggregated.clone());
        runtime.block_on(async {
            let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
            let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
            let mut hangup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
            // Attached, pinned, and SIGHUP no longer ends the process: ready.
            service_manager::ready(&self.service_status());
            if let Some((listener, metrics)) = self.exporter.take() {
                // Metrics are a view, not the filter: if they cannot be served, it keeps
                // running.
                tokio::spawn(async move {
                    let e = metrics::serve(listener, metrics).await;
                    log::warn!("metrics are not served: {e}");
                });
            }
            let period = self.setup.save_interval;
            let mut save = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Events are a log, not the filter: if they cannot be read, it keeps running.
            // SAFETY: the AsyncFd owns the ring buffer, which owns its map's file
            // descriptor and closes it only when dropped: the descriptor stays open, and
            // `as_raw_fd` returns that same one, for the AsyncFd's whole life.
            let mut events =
                unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
                    .inspect_err(|e| {
                        log::warn!(
                            "cannot watch the events ring buffer, so bans and drops are not logged: {e}"
                        )
                    })
                    .ok();
            {
                let reading = async {
                    if let Some(events) = events.as_mut() {
                        let Err(e) = log_events(events, &mut aggregator, ipv6_prefix, signals.as_ref()).await;
                        log::warn!("reading the events ring buffer failed, so bans and drops are no longer logged: {e}");
                    }
                    std::future::pending::<()>().await
                };
                tokio::pin!(reading);
                loop {
                    tokio::select! {
                        // Signals first: a stream of events cannot hold up the stop.
                        biased;
                        _ = interrupt.recv() => break,
                        _ = terminate.recv() => break,
                        _ = hangup.recv() => self.reload(),
                        _ = save.tick() => {
                            self.countries.reload_if_changed(&self.filter, self.settings.countries.as_ref());
                            self.sweep_expired_entries();
                            self.save_state();
                        }
                        () = &mut reading => {}
                    }
                }
            }
            service_manager::stopping();
            // What the kernel wrote just before the stop, without waiting for more.
            if let Some(events) = events.as_mut() {
                drain(events.get_mut(), &mut aggregator, ipv6_prefix, signals.as_ref());
            }
            aggregator.finish().iter().for_each(events::log_line);
            log::info!("stopping");
            Ok(())
        })
    }

    /// SIGHUP: the configuration file again, with the same flags over it. A refused
    /// file leaves the running configuration as it was.
    fn reload(&mut self) {
        let Some(config) = self.args.filter.config.clone() else {
            log::warn!("SIGHUP: started without --config, so there is nothing to reload");
            return;
        };
        service_manager::reloading();
        let outcome = self.try_reload();
        reload_finished(&outcome);
        match outcome {
            Ok(()) => {
                log::info!(config:% = config.display(), domains = self.settings.domains.len(),
                    dry_run = self.settings.dry_run;
                    "configuration reloaded from {}", config.display());
                self.runtime.last_reload_error = None;
            }
            Err(e) => {
                log::error!(config:% = config.display();
                    "configuration reload refused, the running configuration stays: {e}");
                self.runtime.last_reload_error = Some(e);
            }
        }
        self.runtime.describe(&self.settings);
        self.runtime.reloads = RELOADS.succeeded();
        self.runtime.reload_failures = RELOADS.failed();
        if let Err(e) = self.runtime.write(&self.runtime_dir) {
            log::warn!("cannot update the runtime file: {e}");
        }
        service_manager::ready(&self.service_status());
    }

    /// What `systemctl status` shows beside the unit's state.
    fn service_status(&self) -> String {
        let interfaces: Vec<String> = self
            .runtime
            .interfaces
            .iter()
            .map(|i| format!("{} ({})", i.name, i.mode))
            .collect();
        let dry_run = if self.settings.dry_run {
            ", dry-run: nothing dropped"
        } else {
            ""
        };
        format!(
            "filtering on {}; {} domain(s){dry_run}",
            interfaces.join(", "),
            self.settings.domains.len()
        )
    }

    fn try_reload(&mut self) -> Result<(), String> {
        let mut settings = self.args.filter.enforceable_settings().map_err(|e| e.0)?;
        let setup = self
            .args
            .daemon
            .setup(&settings.daemon, &self.args.pins.pin_root)
            .map_err(|e| e.0)?;
        for change in self.setup.changes(&setup) {
            log::warn!("{change} changed, but is read at start only: it takes effect when the daemon is restarted (the rest of the file is applied now)");
        }
        settings.daemon.clone_from(&self.settings.daemon);
        take_interface_addresses(&mut settings, &self.setup.interfaces);
        if settings.crowdsec != self.settings.crowdsec {
            log::warn!("the [crowdsec] table changed: it is read at start, so restart the daemon to apply it; the running bouncer keeps its settings");
            settings.crowdsec.clone_from(&self.settings.crowdsec);
        }
        if settings.ipv6_prefix != self.settings.ipv6_prefix {
            return Err(format!(
                "ipv6_prefix cannot change on reload (/{} to /{}): bans and buckets are keyed by it; restart the daemon to change it",
                self.settings.ipv6_prefix, settings.ipv6_prefix
            ));
        }
        if settings.tracked_sources != self.settings.tracked_sources {
            return Err(format!(
                "tracked_sources cannot change on reload ({} to {}): the kernel sizes that map when the program loads; restart the daemon to change it",
                self.settings.tracked_sources, settings.tracked_sources
            ));
        }
        // Read before anything changes: a database that cannot be read refuses the reload.
        let countries =
            CountryLists::read(settings.countries.as_ref()).map_err(|e| e.to_string())?;
        if let Err(e) = self.filter.configure(&settings) {
            // Written in part: put the running configuration back whole.
            if let Err(back) = self.filter.configure(&self.settings) {
                log::error!("restoring the running configuration failed too: {back}");
            }
            return Err(format!("the kernel refused it: {e}"));
        }
        self.settings = settings;
        if let Err(e) = self.countries.apply(&self.filter, countries) {
            return Err(format!("the country lists were not replaced: {e}"));
        }
        Ok(())
    }

    /// Removes the operator allow/deny entries that expired (the kernel already ignores
    /// them, but they hold room in the tries); a failure is logged, the filter goes on.
    fn sweep_expired_entries(&self) {
        let dir = self.args.pins.maps_dir();
        let now = monotonic_now_ns();
        for kind in [ListKind::Allow, ListKind::Deny] {
            let list = kind.name();
            match PinnedList::open(&dir, kind).and_then(|mut pinned| pinned.sweep_expired(now)) {
                Ok(0) => {}
                Ok(removed) => log::info!(list, removed;
                    "removed {removed} expired operator entr(ies) from the {list} list (CrowdSec's included)"),
                Err(e) => log::warn!(list;
                    "cannot remove the expired operator entries of the {list} list: {e}"),
            }
        }
    }

    /// Writes the state file (periodically, and on stop); a failure is logged, the
    /// filter goes on.
    fn save_state(&self) {
        let taken = StateMaps::of(&self.filter).and_then(|maps| State::take(&maps, Clocks::now()));
        let saved = match taken {
            Ok(state) => state.save(&self.state_path).map(|()| {
                // Version 1's file: what it held is in this one now.
                let legacy = self.state_path.with_file_name(state::LEGACY_FILE_NAME);
                if let Err(e) = std::fs::remove_file(&legacy) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        log::warn!(state_file:% = legacy.display(); "cannot remove the old state file: {e}");
                    }
                }
                state
            }),
            Err(e) => Err(e.into()),
        };
        match saved {
            Ok(state) => {
                log::debug!(state_file:% = self.state_path.display(), bans = state.bans.len(),
                allow = state.allow.len(), deny = state.deny.len(); "state saved")
            }
            Err(e) => log::warn!(state_file:% = self.state_path.display();
                "cannot save the state, a restart now would lose what changed since the last save: {e}"),
        }
    }
}

/// Where a reload's outcome is counted: [`RELOADS`] is what `status` (through the
/// runtime file) and metrics report.
fn reload_finished(outcome: &Result<(), String>) {
    RELOADS.record(outcome.is_ok());
}

/// Events logged per turn, before the signals are looked at again.
const EVENTS_PER_TURN: usize = 256;
/// How long the reader waits after emptying the ring buffer before it waits for more.
/// The ring buffer holds about 3,200 events: 10 ms of first drops from 100,000 sources
/// fill a third of it.
const EVENTS_PAUSE: Duration = Duration::from_millis(10);

/// Logs events as they arrive, and each second's aggregated lines when it is over;
/// returns only when the ring buffer cannot be polled. Cancel-safe: each event is
/// consumed as it is logged or aggregated.
async fn log_events(
    events: &mut AsyncFd<RingBuf<MapData>>,
    aggregator: &mut Aggregator,
    ipv6_prefix: u32,
    signals: Option<&SignalQueue>,
) -> Result<std::convert::Infallible, std::io::Error> {
    loop {
        // Armed only while an aggregate waits: an idle daemon has no timer to wake it.
        let flush_at = aggregator.next_flush_ns();
        let wait = Duration::from_nanos(flush_at.unwrap_or(0).saturating_sub(monotonic_now_ns()));
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard?;
                if drain(guard.get_inner_mut(), aggregator, ipv6_prefix, signals) {
                    // More waiting: let the runtime look at the signals, then go on.
                    drop(guard);
                    tokio::task::yield_now().await;
                } else {
                    // Empty: sleep until the kernel signals more, but not at once: the
                    // kernel wakes the reader for the first event after it caught up, so
                    // under a flood a short pause reads many events per wake-up.
                    guard.clear_ready();
                    drop(guard);
                    tokio::time::sleep(EVENTS_PAUSE).await;
                }
            }
            () = tokio::time::sleep(wait), if flush_at.is_some() => {
                aggregator.flush(monotonic_now_ns()).iter().for_each(events::log_line);
            }
        }
    }
}

/// Logs (or aggregates) up to [`EVENTS_PER_TURN`] events, handing every ban to
/// `signals`; true if more may be waiting.
fn drain(
    ring: &mut RingBuf<MapData>,
    aggregator: &mut Aggregator,
    ipv6_prefix: u32,
    signals: Option<&SignalQueue>,
) -> bool {
    for _ in 0..EVENTS_PER_TURN {
        let Some(record) = ring.next() else {
            return false;
        };
        let Some(event) = events::parse(&record) else {
            events::log_malformed(&record);
            continue;
        };
        let now = monotonic_now_ns();
        // The lines of a second that is over come before this event's.
        aggregator.flush(now).iter().for_each(events::log_line);
        if aggregator.admit(&event, now) {
            events::log_event(&event, now, ipv6_prefix);
        }
        if let Some(signals) = signals {
            signals.offer(&event, ipv6_prefix);
        }
    }
    true
}
