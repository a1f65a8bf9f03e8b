//! The loaded XDP program and its maps: load, configure, attach, pin, test-run, count.

use std::{
    io::Read,
    net::IpAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    thread,
    time::Duration,
};

use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, ProgramArray,
        RingBuf,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, TcAttachOptions, TcError},
        LinkOrder, Program, ProgramError, ProgramFd, SchedClassifier, TcAttachType, TestRun,
        TestRunOptions, TestRunResult, Xdp, XdpMode,
    },
    sys::SyscallError,
    Ebpf, EbpfError, EbpfLoader,
};
use ipnet::IpNet;
use sip_filter_common::{
    maps::{
        ipv6_prefix_key, names, registered_hint, AccountKey, AnswerCounters, Ban, BanReason,
        ListEntry, Lockout, Registration, SourceKey, ANSWER_PROGRAM_SLOT_STREAM,
        ANSWER_STREAM_PROGRAM_NAME, EGRESS_PROGRAM_NAME, LIST_ORIGIN_CONFIG, PROGRAM_NAME,
        TAIL_CALLED,
    },
    sip::mapped_ipv4,
    Counters, FilterConfig,
};

use crate::{
    bpf_sys,
    learnt::LearntMaps,
    lists::{v4_key, v6_key},
    settings::{Settings, SettingsError},
};

/// The XDP program, built by `build.rs` and embedded so that one file ships.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-filter-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] EbpfError),
    #[error("the kernel refused the XDP program (run as root, on Linux 6.1 or newer): {0}")]
    Load(#[source] ProgramError),
    #[error("the kernel refused the TC egress program {EGRESS_PROGRAM_NAME} (run as root, on Linux 6.1 or newer): {0}")]
    LoadEgress(#[source] ProgramError),
    #[error(
        "the kernel refused the program {name} (run as root, on Linux 6.1 or newer): {source}"
    )]
    LoadTailCalled {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the eBPF object has no {what} named {name}: the binary was built wrong")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("clearing map {name}: {source}")]
    Clear {
        name: String,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("attaching to {iface} in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the attachment to {iface} is not a bpf_link (Linux 5.9 or newer has them), so it cannot be pinned: {source}")]
    Link {
        iface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning the egress program at {path}, which records its clsact filter on {iface}: {source}")]
    PinEgress {
        iface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("removing the egress program's clsact filter from {iface}: {source}")]
    DetachClsact {
        iface: String,
        #[source]
        source: TcError,
    },
    #[error("pinning the egress link of {iface} at {path}: {source}")]
    PinLink {
        iface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] ProgramError),
    #[error("sip-filter needs Linux {}.{} or newer (its parser runs in bpf_loop); this kernel is {release}", MIN_KERNEL.0, MIN_KERNEL.1)]
    KernelTooOld { release: String },
    #[error("reading random bytes for the domain hash seed: {0}")]
    Seed(#[source] std::io::Error),
}

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    /// Native mode only: fail where the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, after the kernel allocates an skb.
    Skb,
}

impl AttachMode {
    /// As in the configuration (`daemon.xdp_mode`) and the runtime file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
    }
}

/// How to attach the egress program (the answers' observer) beside XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressMode {
    /// tcx, falling back to a clsact qdisc filter on kernels without tcx (before 6.6).
    #[default]
    Auto,
    /// tcx only (Linux 6.6 or newer): a bpf_link, pinned like the XDP link.
    Tcx,
    /// A filter on the interface's clsact qdisc (netlink), as kernels before 6.6 need.
    Clsact,
}

/// How the egress program ended up attached to an interface.
#[derive(Debug)]
pub enum EgressAttachment {
    /// A tcx bpf_link: attached while it, or its pin, lives.
    Tcx(FdLink),
    /// A filter on the clsact qdisc: attached until [`detach_clsact`] removes it, whatever
    /// becomes of the daemon. The program pinned at the path given to
    /// [`Filter::attach_egress`] records that it is there.
    Clsact,
}

impl EgressAttachment {
    pub fn name(&self) -> &'static str {
        match self {
            EgressAttachment::Tcx(_) => EGRESS_TCX,
            EgressAttachment::Clsact => EGRESS_CLSACT,
        }
    }
}

/// The egress attachment modes as `status`, the runtime file and metrics name them.
pub const EGRESS_TCX: &str = "tcx";
pub const EGRESS_CLSACT: &str = "clsact";

/// The clsact filter's priority: the last one tried (tc runs lower numbers first), so
/// that an observer ending the classification with `TC_ACT_OK` never keeps the
/// operator's own egress filters from running. tcx links go last for the same reason.
const CLSACT_PRIORITY: u16 = u16::MAX;

/// Map sizes fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Sources the per-source state (buckets, strike windows) is kept for: an LRU, so an
    /// attacker with more addresses pushes out the least recently seen ones.
    pub tracked_sources: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            tracked_sources: sip_filter_common::maps::MAX_SOURCES,
        }
    }
}

pub struct Filter {
    ebpf: Ebpf,
    /// The configured IPv6 source prefix, for [`Filter::source_key`].
    ipv6_prefix: u32,
    /// The domain hash seed, once configured: kept across reloads.
    seed: Option<u64>,
}

/// The program `name` of the object, as the kind `P` it must be (`what` names that kind
/// in the error when it is missing or of another kind).
fn program_named<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    what: &'static str,
) -> Result<&'a mut P, FilterError>
where
    &'a mut P: TryFrom<&'a mut Program>,
{
    let missing = || FilterError::Missing { what, name };
    ebpf.program_mut(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|_| missing())
}

/// Every program the filter runs: the XDP entry, the egress program, the tail-called ones.
fn program_names() -> impl Iterator<Item = &'static str> {
    [PROGRAM_NAME, EGRESS_PROGRAM_NAME]
        .into_iter()
        .chain(TAIL_CALLED.iter().map(|(name, _)| *name))
        .chain([ANSWER_STREAM_PROGRAM_NAME])
}

/// The error for the program `name` the kernel refused.
fn refused(name: &'static str, source: ProgramError) -> FilterError {
    match name {
        PROGRAM_NAME => FilterError::Load(source),
        EGRESS_PROGRAM_NAME => FilterError::LoadEgress(source),
        _ => FilterError::LoadTailCalled { name, source },
    }
}

/// Loads every program the filter runs into the kernel, on as many threads as there are
/// CPUs, the largest first. The verifier checks each program apart, and its time is most
/// of a start (seconds: several programs of hundreds of thousands of verified
/// instructions), so a restart leaves the server unguarded for less time.
fn verify_in_parallel(ebpf: &mut Ebpf) -> Result<(), FilterError> {
    let wanted: Vec<&'static str> = program_names().collect();
    // In the order of `wanted`, reversed: workers pop the XDP entry first.
    let mut queue: Vec<(&'static str, &mut Program)> = Vec::with_capacity(wanted.len());
    for (name, program) in ebpf.programs_mut() {
        if let Some(name) = wanted.iter().find(|wanted| **wanted == name) {
            queue.push((name, program));
        }
    }
    if let Some(name) = wanted
        .iter()
        .find(|wanted| !queue.iter().any(|(name, _)| name == *wanted))
    {
        return Err(FilterError::Missing {
            what: "program",
            name,
        });
    }
    queue.sort_by_key(|(name, _)| std::cmp::Reverse(wanted.iter().position(|w| w == name)));
    let queue = Mutex::new(queue);
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let workers = thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(wanted.len());
    thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    while let Some((name, program)) = next() {
                        match program {
                            Program::Xdp(program) => program.load(),
                            Program::SchedClassifier(program) => program.load(),
                            _ => {
                                return Err(FilterError::Missing {
                                    what: "XDP or TC program",
                                    name,
                                })
                            }
                        }
                        .map_err(|source| refused(name, source))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<()>, FilterError>>()
    })?;
    Ok(())
}

impl Filter {
    /// Loads the program into the kernel (the verifier runs here).
    pub fn load() -> Result<Self, FilterError> {
        Self::load_with(Capacities::default())
    }

    /// [`Filter::load`], with map sizes other than the program's defaults.
    pub fn load_with(capacities: Capacities) -> Result<Self, FilterError> {
        check_kernel()?;
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::SOURCES, capacities.tracked_sources)
            .load(EBPF_OBJECT)?;
        // Loaded from one object, so every program shares the XDP program's maps.
        verify_in_parallel(&mut ebpf)?;
        Self::fill_tail_call_slots(&mut ebpf)?;
        Ok(Self {
            ebpf,
            ipv6_prefix: sip_filter_common::maps::DEFAULT_IPV6_PREFIX,
            seed: None,
        })
    }

    fn program_in(ebpf: &mut Ebpf) -> Result<&mut Xdp, FilterError> {
        program_named(ebpf, PROGRAM_NAME, "XDP program")
    }

    /// Puts the programs the XDP program tail-calls into (SIP over TCP, TLS ClientHellos:
    /// [`TAIL_CALLED`]) and the one the egress program does (the answers of a TCP
    /// segment: [`ANSWER_STREAM_PROGRAM_NAME`]) in their slots, once loaded.
    fn fill_tail_call_slots(ebpf: &mut Ebpf) -> Result<(), FilterError> {
        let mut slots = Vec::new();
        for (name, slot) in TAIL_CALLED {
            let program: &mut Xdp = program_named(ebpf, name, "XDP program")?;
            slots.push((slot, tail_called_fd(program.fd(), name)?));
        }
        fill_program_array(ebpf, names::PROGRAMS, &slots)?;
        // A program array holds programs of one type: the egress side's has its own.
        let name = ANSWER_STREAM_PROGRAM_NAME;
        let program: &mut SchedClassifier = program_named(ebpf, name, "TC program")?;
        let fd = tail_called_fd(program.fd(), name)?;
        fill_program_array(
            ebpf,
            names::ANSWER_PROGRAMS,
            &[(ANSWER_PROGRAM_SLOT_STREAM, fd)],
        )
    }

    fn program(&mut self) -> Result<&mut Xdp, FilterError> {
        Self::program_in(&mut self.ebpf)
    }

    /// The loaded egress program.
    fn egress_program(&self) -> Result<&SchedClassifier, FilterError> {
        self.ebpf
            .program(EGRESS_PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .ok_or(FilterError::Missing {
                what: "TC program",
                name: EGRESS_PROGRAM_NAME,
            })
    }

    fn egress_program_in(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, FilterError> {
        program_named(ebpf, EGRESS_PROGRAM_NAME, "TC program")
    }

    /// Writes the settings into the maps. The first call picks a random domain hash
    /// seed; later calls (a reload) keep it, so the domain and scanner keys already in
    /// the maps stay valid. New entries go in before the config switches to them, and
    /// stale ones leave after: a reload never opens a window where a legitimate domain,
    /// own address or list entry is missing. Buckets, bans and counters are untouched.
    pub fn configure(&mut self, settings: &Settings) -> Result<(), FilterError> {
        let seed = match self.seed {
            Some(seed) => seed,
            None => random_seed()?,
        };
        let kernel = settings.to_kernel(seed)?;

        let stale_domains = insert_entries(
            self.map_mut(names::DOMAINS)?,
            names::DOMAINS,
            &kernel.domains,
        )?;
        let own: Vec<([u8; 16], u8)> = kernel.own_addresses.iter().map(|a| (*a, 1)).collect();
        let stale_own = insert_entries(
            self.map_mut(names::OWN_ADDRESSES)?,
            names::OWN_ADDRESSES,
            &own,
        )?;
        let stale_agents = insert_entries(
            self.map_mut(names::SCANNER_AGENTS)?,
            names::SCANNER_AGENTS,
            &kernel.scanner_agents,
        )?;
        for (v4_name, v6_name, entries) in [
            (names::ALLOW_V4, names::ALLOW_V6, &settings.allow),
            (names::DENY_V4, names::DENY_V6, &settings.deny),
        ] {
            self.replace_list(v4_name, v6_name, entries)?;
        }

        // The config in one write: it switches the domain check, ports, limits and the
        // scanner lengths over at once, with every entry it needs already in place.
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(names::CONFIG)?)
            .map_err(|source| FilterError::Map {
                name: names::CONFIG,
                source,
            })?;
        config
            .set(0, kernel.config, 0)
            .map_err(|source| FilterError::Map {
                name: names::CONFIG,
                source,
            })?;
        self.seed = Some(seed);
        self.ipv6_prefix = u32::from(settings.ipv6_prefix);
        crate::destinations::apply(self, settings.destinations.as_ref())?;

        remove_entries::<u64, u8>(
            self.map_mut(names::DOMAINS)?,
            names::DOMAINS,
            &stale_domains,
        )?;
        remove_entries::<[u8; 16], u8>(
            self.map_mut(names::OWN_ADDRESSES)?,
            names::OWN_ADDRESSES,
            &stale_own,
        )?;
        remove_entries::<u64, u8>(
            self.map_mut(names::SCANNER_AGENTS)?,
            names::SCANNER_AGENTS,
            &stale_agents,
        )?;
        Ok(())
    }

    /// Makes the configuration's part of a CIDR list (one trie per address family) hold
    /// exactly `entries`. New entries go in before stale ones leave, so a reload never
    /// opens a gap; entries an operator added at run time stay.
    fn replace_list(
        &mut self,
        v4_name: &'static str,
        v6_name: &'static str,
        entries: &[IpNet],
    ) -> Result<(), FilterError> {
        let v4_wanted: Vec<Key<[u8; 4]>> = entries
            .iter()
            .filter_map(|net| match net {
                IpNet::V4(net) => Some(v4_key(*net)),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6_wanted: Vec<Key<[u8; 16]>> = entries
            .iter()
            .filter_map(|net| match net {
                IpNet::V6(net) => Some(v6_key(*net)),
                IpNet::V4(_) => None,
            })
            .collect();
        replace_config_entries(self.map_mut(v4_name)?, v4_name, &v4_wanted)?;
        replace_config_entries(self.map_mut(v6_name)?, v6_name, &v6_wanted)
    }

    /// Puts every map back as a fresh load leaves it, the verified programs kept: hash
    /// maps, LRU maps and tries emptied, arrays zeroed (read-only constants and program
    /// arrays untouched), events not yet read dropped, the domain hash seed forgotten.
    /// For tests and benchmarks that run many cases through one loaded filter, since a
    /// load spends seconds in the verifier. Configure it again before use.
    pub fn clear_maps(&mut self) -> Result<(), FilterError> {
        for (name, map) in self.ebpf.maps_mut() {
            let cleared = match map {
                Map::HashMap(data)
                | Map::LruHashMap(data)
                | Map::PerCpuHashMap(data)
                | Map::PerCpuLruHashMap(data)
                | Map::LpmTrie(data) => bpf_sys::remove_all(data).map(drop),
                Map::Array(data) if !name.starts_with(".rodata") => {
                    bpf_sys::zero_array(data, false)
                }
                Map::PerCpuArray(data) => bpf_sys::zero_array(data, true),
                Map::RingBuf(_) => {
                    RingBuf::try_from(&mut *map).map(|mut events| while events.next().is_some() {})
                }
                _ => Ok(()),
            };
            cleared.map_err(|source| FilterError::Clear {
                name: name.to_string(),
                source,
            })?;
        }
        self.ipv6_prefix = sip_filter_common::maps::DEFAULT_IPV6_PREFIX;
        self.seed = None;
        Ok(())
    }

    /// The seed of the domain and account hashes, once configured.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The key `address` is banned under: IPv4 as is, IPv6 cut to the configured prefix.
    pub fn source_key(&self, address: IpAddr) -> SourceKey {
        source_key(address, self.ipv6_prefix)
    }

    /// Bans `address` (its IPv6 prefix) until `ttl` from now, or for good.
    pub fn ban(
        &mut self,
        address: IpAddr,
        ttl: Option<Duration>,
        reason: BanReason,
    ) -> Result<(), FilterError> {
        let expires_ns = match ttl {
            Some(ttl) => monotonic_now_ns().saturating_add(ttl.as_nanos() as u64),
            None => u64::MAX,
        };
        self.set_ban(self.source_key(address), expires_ns, reason)
    }

    /// Writes a ban entry as given (tests set expiries in the past with it).
    pub fn set_ban(
        &mut self,
        key: SourceKey,
        expires_ns: u64,
        reason: BanReason,
    ) -> Result<(), FilterError> {
        let mut bans: HashMap<_, SourceKey, Ban> = HashMap::try_from(self.map_mut(names::BANS)?)
            .map_err(|source| FilterError::Map {
                name: names::BANS,
                source,
            })?;
        let ban = Ban::new(expires_ns, reason);
        bans.insert(key, ban, 0).map_err(|source| FilterError::Map {
            name: names::BANS,
            source,
        })
    }

    /// Makes the kernel check lockouts until `until_ns` at least (it skips the lookups
    /// once the last lockout it knows of has ended): for lockouts written from here.
    pub fn extend_locks_until(&mut self, until_ns: u64) -> Result<(), FilterError> {
        let name = names::LOCKS_UNTIL;
        let map_error = |source| FilterError::Map { name, source };
        let mut latest: Array<_, u64> = Array::try_from(self.map_mut(name)?).map_err(map_error)?;
        if latest.get(&0, 0).map_err(map_error)? < until_ns {
            latest.set(0, until_ns, 0).map_err(map_error)?;
        }
        Ok(())
    }

    /// Writes saved registrations, per-source and across-sources lockouts (restoring the
    /// state file, before the program is attached); returns how many of each were
    /// written. Each registration's hint (see [`registered_hint`]) is set first, or the
    /// ingress program would never look the registration up.
    pub fn restore_learnt(
        &mut self,
        registrations: &[(SourceKey, Registration)],
        per_source: &[(AccountKey, Lockout)],
        across: &[(u64, Lockout)],
    ) -> Result<(usize, usize, usize), FilterError> {
        let keys: Vec<SourceKey> = registrations.iter().map(|(key, _)| *key).collect();
        self.hint_registered(&keys)?;
        LearntMaps::of(self)?.put(registrations, per_source, across)
    }

    /// Sets the hints of sources whose registrations are written from here. Only
    /// before the program is attached: the kernel sets hints for its own, and this
    /// read-modify-write of their words could undo one.
    fn hint_registered(&mut self, keys: &[SourceKey]) -> Result<(), FilterError> {
        let name = names::REGISTERED_HINTS;
        let map_error = |source| FilterError::Map { name, source };
        let mut hints: Array<_, u64> = Array::try_from(self.map_mut(name)?).map_err(map_error)?;
        for key in keys {
            let (word, byte) = registered_hint(key);
            let hint = 1u64 << (byte * 8);
            let held = hints.get(&word, 0).map_err(map_error)?;
            if held & hint == 0 {
                hints.set(word, held | hint, 0).map_err(map_error)?;
            }
        }
        Ok(())
    }

    /// The blocklist's entries.
    pub fn bans(&self) -> Result<Vec<(SourceKey, Ban)>, FilterError> {
        let map = self.ebpf.map(names::BANS).ok_or(FilterError::Missing {
            what: "map",
            name: names::BANS,
        })?;
        crate::bpf_sys::hash_entries(map).map_err(|source| FilterError::Map {
            name: names::BANS,
            source,
        })
    }

    /// Takes the ring buffer the program writes events to (bans, sampled drops; see
    /// [`crate::events`]), for the caller to read. Once: a second call finds no map.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, FilterError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(FilterError::Missing {
                what: "map",
                name: names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(|source| FilterError::Map {
            name: names::EVENTS,
            source,
        })
    }

    /// Attaches to `iface`. The attachment lasts as long as the returned link (or its
    /// pin: see [`FdLink::pin`]), not this `Filter`. `Auto` tries native mode and
    /// falls back to generic mode with a warning.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(AttachedMode, FdLink), FilterError> {
        let attach = |program: &mut Xdp, xdp_mode, mode_name| {
            let error = |source| FilterError::Attach {
                iface: iface.to_string(),
                mode: mode_name,
                source,
            };
            let id = program.attach(iface, xdp_mode).map_err(error)?;
            let link = program.take_link(id).map_err(error)?;
            // On kernels from 5.9 on XDP attachments are bpf_links, which can be pinned.
            FdLink::try_from(link).map_err(|source| FilterError::Link {
                iface: iface.to_string(),
                source,
            })
        };
        let program = self.program()?;
        match mode {
            AttachMode::Native => {
                attach(program, XdpMode::Driver, "native").map(|link| (AttachedMode::Native, link))
            }
            AttachMode::Skb => {
                attach(program, XdpMode::Skb, "skb").map(|link| (AttachedMode::Skb, link))
            }
            AttachMode::Auto => match attach(program, XdpMode::Driver, "native") {
                Ok(link) => Ok((AttachedMode::Native, link)),
                Err(
                    unknown @ FilterError::Attach {
                        source: ProgramError::UnknownInterface { .. },
                        ..
                    },
                ) => Err(unknown),
                Err(native_error) => {
                    log::warn!(
                        iface;
                        "{}; falling back to generic (skb) mode, which is slower",
                        error_chain(&native_error)
                    );
                    attach(program, XdpMode::Skb, "skb").map(|link| (AttachedMode::Skb, link))
                }
            },
        }
    }

    /// Attaches the egress program at `iface`'s egress. `Auto` tries tcx and falls back
    /// to a clsact filter where the kernel has no tcx (it refuses the link type with
    /// EINVAL before 6.6). For a clsact filter, the program is first pinned at
    /// `clsact_record`: what [`detach_clsact`] is called for when the pins are removed,
    /// by this daemon, `unload`, or the next start after a crash.
    pub fn attach_egress(
        &mut self,
        iface: &str,
        mode: EgressMode,
        clsact_record: &Path,
    ) -> Result<EgressAttachment, FilterError> {
        let program = Self::egress_program_in(&mut self.ebpf)?;
        match mode {
            EgressMode::Tcx => attach_tcx(program, iface),
            EgressMode::Clsact => attach_clsact(program, iface, clsact_record),
            EgressMode::Auto => match attach_tcx(program, iface) {
                Err(FilterError::Attach {
                    source: ProgramError::SyscallError(SyscallError { io_error, .. }),
                    ..
                }) if io_error.raw_os_error() == Some(libc::EINVAL) => {
                    log::info!(iface;
                        "the kernel has no tcx ({io_error}): the egress program goes on a clsact qdisc filter instead");
                    attach_clsact(program, iface, clsact_record)
                }
                attached => attached,
            },
        }
    }

    /// [`Filter::attach_egress`], pinned under the pin root `root` (see [`crate::pins`]):
    /// a tcx link at its pin, returned to hold until the pins are removed; a clsact
    /// filter with its record. Returns the mode's name (`tcx`, `clsact`) too.
    pub fn attach_egress_pinned(
        &mut self,
        root: &Path,
        iface: &str,
        mode: EgressMode,
    ) -> Result<(&'static str, Option<PinnedLink>), FilterError> {
        let attachment = self.attach_egress(iface, mode, &crate::pins::clsact_path(root, iface))?;
        let name = attachment.name();
        match attachment {
            EgressAttachment::Tcx(link) => {
                let path = crate::pins::tcx_path(root, iface);
                let pinned = link.pin(&path).map_err(|source| FilterError::PinLink {
                    iface: iface.to_string(),
                    path,
                    source,
                })?;
                Ok((name, Some(pinned)))
            }
            EgressAttachment::Clsact => Ok((name, None)),
        }
    }

    /// The loaded program's kernel id (what `bpftool prog` lists).
    pub fn program_id(&mut self) -> Result<u32, FilterError> {
        let info = self.program()?.info().map_err(FilterError::Load)?;
        Ok(info.id())
    }

    /// How many instructions the kernel's verifier processed to accept the program
    /// `name` (Linux 5.16+; `None` before): its budget is 1,000,000 for each program.
    pub fn verified_instructions(&self, name: &'static str) -> Result<Option<u32>, FilterError> {
        let program = self.ebpf.program(name).ok_or(FilterError::Missing {
            what: "program",
            name,
        })?;
        let info = program.info().map_err(FilterError::Load)?;
        Ok(info.verified_instruction_count())
    }

    /// A map of the loaded program, for reading (the state file).
    pub fn map(&self, name: &'static str) -> Result<&Map, FilterError> {
        self.ebpf
            .map(name)
            .ok_or(FilterError::Missing { what: "map", name })
    }

    /// A map of the loaded program, for writing (restoring the state file).
    pub fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, FilterError> {
        self.ebpf
            .map_mut(name)
            .ok_or(FilterError::Missing { what: "map", name })
    }

    /// Pins every map a CLI in another shell reads under `dir` (which must exist).
    pub fn pin_maps(&self, dir: &Path) -> Result<(), FilterError> {
        for name in names::PINNED {
            let map = self
                .ebpf
                .map(name)
                .ok_or(FilterError::Missing { what: "map", name })?;
            let path = dir.join(name);
            map.pin(&path)
                .map_err(|source| FilterError::Pin { name, path, source })?;
        }
        // Held by their pins, the program arrays keep their programs while the XDP and
        // egress programs stay attached after the daemon's exit.
        for name in [names::PROGRAMS, names::ANSWER_PROGRAMS] {
            let path = dir.join(name);
            self.map(name)?
                .pin(&path)
                .map_err(|source| FilterError::Pin { name, path, source })?;
        }
        // The INVITE program's (issue 18), for `top --destinations` and the metrics.
        for name in sip_filter_common::maps::destination_names::PINNED {
            let path = dir.join(name);
            self.map(name)?
                .pin(&path)
                .map_err(|source| FilterError::Pin { name, path, source })?;
        }
        Ok(())
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN; returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, FilterError> {
        Ok(self.run(frame, 1)?.0)
    }

    /// Runs the program `repeat` times on `frame`; returns the action and the kernel's
    /// mean time per run.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), FilterError> {
        run_program(&self.ebpf, PROGRAM_NAME, frame, repeat)
    }

    /// Runs the egress program once on `frame` (an answer going out) with
    /// BPF_PROG_TEST_RUN; returns its TC action.
    pub fn test_run_answer(&self, frame: &[u8]) -> Result<u32, FilterError> {
        Ok(self.run_answer(frame, 1)?.0)
    }

    /// Runs the egress program `repeat` times on `frame`; returns the TC action and the
    /// kernel's mean time per run.
    pub fn run_answer(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), FilterError> {
        timed_test_run(self.egress_program()?, frame, repeat)
    }

    /// The egress program's counters, summed over CPUs.
    pub fn answer_counters(&self) -> Result<AnswerCounters, FilterError> {
        sum_answer_counters(self.map(names::ANSWER_COUNTERS)?)
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, FilterError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or(FilterError::Missing {
            what: "map",
            name: names::COUNTERS,
        })?;
        sum_counters(map)
    }
}

/// An error with its causes: `attaching ... failed: bpf_link_create failed: Operation not supported`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let more = source.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = source.source();
    }
    text
}

/// The reference programs in the same object as `sip_filter`, for the benchmark: XDP
/// programs, measured beside the XDP program on its frames.
pub const REFERENCE_PROGRAMS: [&str; 6] = [
    "ref_drop",
    "ref_parse_headers",
    "ref_parse_update",
    "ref_scan",
    "ref_calls",
    "ref_scan_in_place",
];

/// The TC reference: a bare classifier, measured beside the egress program.
pub const TC_REFERENCE_PROGRAM: &str = "ref_tc_pass";

/// A reference program (see [`REFERENCE_PROGRAMS`], [`TC_REFERENCE_PROGRAM`]): loaded
/// from the same embedded object as the filter, never attached, only test-run.
pub struct Reference {
    ebpf: Ebpf,
    name: &'static str,
}

impl Reference {
    /// Loads the reference program `name` (alone) into the kernel.
    pub fn load(name: &'static str) -> Result<Self, FilterError> {
        check_kernel()?;
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
        let missing = FilterError::Missing {
            what: "XDP or TC program",
            name,
        };
        match ebpf.program_mut(name) {
            Some(Program::Xdp(program)) => program.load(),
            Some(Program::SchedClassifier(program)) => program.load(),
            _ => return Err(missing),
        }
        .map_err(FilterError::Load)?;
        Ok(Self { ebpf, name })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Like [`Filter::run`]: the action and the kernel's mean time per run.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), FilterError> {
        match self.ebpf.program(self.name) {
            Some(Program::SchedClassifier(program)) => timed_test_run(program, frame, repeat),
            _ => run_program(&self.ebpf, self.name, frame, repeat),
        }
    }
}

/// Loads the reference program `name` from the filter's object; see [`Reference`].
pub fn load_reference(name: &'static str) -> Result<Reference, FilterError> {
    Reference::load(name)
}

/// Test-runs the loaded XDP program `name` of `ebpf` `repeat` times on `frame`.
fn run_program(
    ebpf: &Ebpf,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, Duration), FilterError> {
    let program: &Xdp =
        ebpf.program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(FilterError::Missing {
                what: "XDP program",
                name,
            })?;
    timed_test_run(program, frame, repeat)
}

/// Test-runs `program` `repeat` times on `frame`: its return value and the kernel's
/// mean time per run.
fn timed_test_run<P>(program: &P, frame: &[u8], repeat: u32) -> Result<(u32, Duration), FilterError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let result = program.test_run(opts).map_err(FilterError::TestRun)?;
    Ok((result.return_value, result.duration))
}

/// Inserts `wanted` into a hash map; returns the keys that were there and are not
/// wanted any more, for [`remove_entries`] once the config no longer needs them.
fn insert_entries<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: &mut Map,
    name: &'static str,
    wanted: &[(K, V)],
) -> Result<Vec<K>, FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let mut hash: HashMap<_, K, V> = HashMap::try_from(map).map_err(map_error)?;
    for (key, value) in wanted {
        hash.insert(key, value, 0).map_err(map_error)?;
    }
    let wanted: std::collections::HashSet<&K> = wanted.iter().map(|(key, _)| key).collect();
    Ok(hash
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains(key))
        .collect())
}

/// Removes `stale` keys from a hash map (one gone already is fine).
fn remove_entries<K: aya::Pod, V: aya::Pod>(
    map: &mut Map,
    name: &'static str,
    stale: &[K],
) -> Result<(), FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let mut hash: HashMap<_, K, V> = HashMap::try_from(map).map_err(map_error)?;
    for key in stale {
        match hash.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(map_error(e)),
        }
    }
    Ok(())
}

/// Inserts `wanted` as configuration entries into one trie, then removes the
/// configuration entries not wanted any more.
fn replace_config_entries<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut Map,
    name: &'static str,
    wanted: &[Key<K>],
) -> Result<(), FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let mut trie: LpmTrie<_, K, ListEntry> = LpmTrie::try_from(map).map_err(map_error)?;
    for key in wanted {
        trie.insert(key, ListEntry::from_config(), 0)
            .map_err(map_error)?;
    }
    let wanted: std::collections::HashSet<(u32, K)> =
        wanted.iter().map(|w| (w.prefix_len(), w.data())).collect();
    let stale: Vec<Key<K>> = trie
        .iter()
        .filter_map(Result::ok)
        .filter(|(key, entry)| {
            entry.origin == LIST_ORIGIN_CONFIG && !wanted.contains(&(key.prefix_len(), key.data()))
        })
        .map(|(key, _)| key)
        .collect();
    for key in stale {
        trie.remove(&key).map_err(map_error)?;
    }
    Ok(())
}

/// A tcx link at `iface`'s egress, after any other program there.
fn attach_tcx(program: &mut SchedClassifier, iface: &str) -> Result<EgressAttachment, FilterError> {
    let error = |source| FilterError::Attach {
        iface: iface.to_string(),
        mode: EGRESS_TCX,
        source,
    };
    let options = TcAttachOptions::TcxOrder(LinkOrder::last());
    let id = program
        .attach_with_options(iface, TcAttachType::Egress, options)
        .map_err(error)?;
    let link = program.take_link(id).map_err(error)?;
    FdLink::try_from(link)
        .map(EgressAttachment::Tcx)
        .map_err(|source| FilterError::Link {
            iface: iface.to_string(),
            source,
        })
}

/// A filter on `iface`'s clsact qdisc (added if missing; one already there, whoever added
/// it, is shared), recorded at `record` before it is attached, so that no crash can
/// leave a filter nobody knows to remove.
fn attach_clsact(
    program: &mut SchedClassifier,
    iface: &str,
    record: &Path,
) -> Result<EgressAttachment, FilterError> {
    let error = |source| FilterError::Attach {
        iface: iface.to_string(),
        mode: EGRESS_CLSACT,
        source,
    };
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(error(e.into())),
    }
    program
        .pin(record)
        .map_err(|source| FilterError::PinEgress {
            iface: iface.to_string(),
            path: record.to_path_buf(),
            source,
        })?;
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: CLSACT_PRIORITY,
        ..NlOptions::default()
    });
    let id = match program.attach_with_options(iface, TcAttachType::Egress, options) {
        Ok(id) => id,
        Err(e) => {
            // Nothing attached: the record would only make `unload` look for it.
            let _ = std::fs::remove_file(record);
            return Err(error(e));
        }
    };
    let link = program.take_link(id).map_err(error)?;
    // Not detached when the link is dropped: the filter lasts until `detach_clsact`,
    // like the XDP link until its pin goes. The link is plain numbers: nothing leaks.
    std::mem::forget(link);
    Ok(EgressAttachment::Clsact)
}

/// Removes the egress program's clsact filters (by name) from `iface`; the qdisc stays,
/// as others' filters may hang on it. A filter or interface already gone is fine.
pub fn detach_clsact(iface: &str) -> Result<(), FilterError> {
    match tc::qdisc_detach_program(iface, TcAttachType::Egress, EGRESS_PROGRAM_NAME) {
        Ok(()) => Ok(()),
        Err(TcError::IoError(e))
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        Err(source) => Err(FilterError::DetachClsact {
            iface: iface.to_string(),
            source,
        }),
    }
}

/// Sums the per-CPU counters of a loaded or pinned counters map.
pub fn sum_counters(map: &Map) -> Result<Counters, FilterError> {
    sum_cpus(map, names::COUNTERS, Counters::add)
}

/// Opens the counters a running filter pinned in `dir`.
pub fn pinned_counters(dir: &Path) -> Result<Counters, FilterError> {
    sum_counters(&open_pinned(dir, names::COUNTERS)?)
}

/// A loaded tail-called program's file descriptor, for its program array.
fn tail_called_fd(
    fd: Result<&ProgramFd, ProgramError>,
    name: &'static str,
) -> Result<ProgramFd, FilterError> {
    fd.map_err(|source| FilterError::LoadTailCalled { name, source })?
        .try_clone()
        .map_err(|source| FilterError::LoadTailCalled {
            name,
            source: ProgramError::IOError(source),
        })
}

/// Puts each program of `slots` in its slot of the program array `name`.
fn fill_program_array(
    ebpf: &mut Ebpf,
    name: &'static str,
    slots: &[(u32, ProgramFd)],
) -> Result<(), FilterError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(FilterError::Missing { what: "map", name })?;
    let mut programs =
        ProgramArray::try_from(map).map_err(|source| FilterError::Map { name, source })?;
    for (slot, fd) in slots {
        programs
            .set(*slot, fd, 0)
            .map_err(|source| FilterError::Map { name, source })?;
    }
    Ok(())
}

/// Sums the per-CPU counters of a loaded or pinned egress counters map.
pub fn sum_answer_counters(map: &Map) -> Result<AnswerCounters, FilterError> {
    sum_cpus(map, names::ANSWER_COUNTERS, AnswerCounters::add)
}

/// Opens the egress program's counters a running filter pinned in `dir`.
pub fn pinned_answer_counters(dir: &Path) -> Result<AnswerCounters, FilterError> {
    sum_answer_counters(&open_pinned(dir, names::ANSWER_COUNTERS)?)
}

/// Sums slot 0 of the per-CPU array `map` (called `name`) over the CPUs.
fn sum_cpus<T: aya::Pod + Default>(
    map: &Map,
    name: &'static str,
    add: impl Fn(&mut T, &T),
) -> Result<T, FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let per_cpu: PerCpuArray<&MapData, T> = PerCpuArray::try_from(map).map_err(map_error)?;
    let mut total = T::default();
    for cpu in per_cpu.get(&0, 0).map_err(map_error)?.iter() {
        add(&mut total, cpu);
    }
    Ok(total)
}

/// The map `name` a running filter pinned in `dir`.
pub fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let data = MapData::from_pin(dir.join(name)).map_err(map_error)?;
    Map::from_map_data(data).map_err(map_error)
}

/// The configuration a running filter pinned in `dir`.
pub fn pinned_config(dir: &Path) -> Result<FilterConfig, FilterError> {
    let map_error = |source| FilterError::Map {
        name: names::CONFIG,
        source,
    };
    let data = MapData::from_pin(dir.join(names::CONFIG)).map_err(map_error)?;
    let map = Map::from_map_data(data).map_err(map_error)?;
    let config: Array<&MapData, FilterConfig> = Array::try_from(&map).map_err(map_error)?;
    config.get(&0, 0).map_err(map_error)
}

/// The dynamic blocklist a running filter pinned in its directory, for the `block` verbs.
pub struct PinnedBans {
    bans: HashMap<MapData, SourceKey, Ban>,
    ipv6_prefix: u32,
}

impl PinnedBans {
    /// Opens the blocklist pinned in `dir`, with the IPv6 prefix of the config pinned
    /// next to it.
    pub fn open(dir: &Path) -> Result<Self, FilterError> {
        let map_error = |source| FilterError::Map {
            name: names::BANS,
            source,
        };
        let ipv6_prefix = pinned_config(dir)?.ipv6_prefix;
        let data = MapData::from_pin(dir.join(names::BANS)).map_err(map_error)?;
        let bans =
            HashMap::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;
        Ok(Self { bans, ipv6_prefix })
    }

    /// The IPv6 prefix length sources are banned by (1..=128).
    pub fn ipv6_prefix(&self) -> u32 {
        self.ipv6_prefix
    }

    /// The key `address` is banned under on this filter.
    pub fn key(&self, address: IpAddr) -> SourceKey {
        source_key(address, self.ipv6_prefix)
    }

    /// Bans `address` (its IPv6 prefix) until `ttl` from now, or until removed; replaces
    /// a ban already there. Returns the key.
    pub fn add(
        &mut self,
        address: IpAddr,
        ttl: Option<Duration>,
        reason: BanReason,
    ) -> Result<SourceKey, FilterError> {
        let expires_ns = expires_after(ttl);
        let key = self.key(address);
        let ban = Ban::new(expires_ns, reason);
        self.bans
            .insert(key, ban, 0)
            .map_err(|source| FilterError::Map {
                name: names::BANS,
                source,
            })?;
        Ok(key)
    }

    /// Lifts the ban on `address` (its IPv6 prefix); returns the ban lifted, None if
    /// there was none.
    pub fn remove(&mut self, address: IpAddr) -> Result<Option<Ban>, FilterError> {
        let map_error = |source| FilterError::Map {
            name: names::BANS,
            source,
        };
        let key = self.key(address);
        let ban = match self.bans.get(&key, 0) {
            Ok(ban) => ban,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_error(e)),
        };
        match self.bans.remove(&key) {
            Ok(()) => Ok(Some(ban)),
            // The kernel removed it in between (it expired).
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(Some(ban))
            }
            Err(e) => Err(map_error(e)),
        }
    }

    /// The ban on `address` (its IPv6 prefix), expired or not; None if there is none.
    pub fn get(&self, address: IpAddr) -> Result<Option<Ban>, FilterError> {
        match self.bans.get(&self.key(address), 0) {
            Ok(ban) => Ok(Some(ban)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(FilterError::Map {
                name: names::BANS,
                source,
            }),
        }
    }

    /// Lifts the bans on `keys` in batches (one gone already is skipped); returns how
    /// many were lifted.
    pub fn remove_many(&mut self, keys: &[SourceKey]) -> Result<usize, FilterError> {
        let map = aya::maps::IterableMap::<SourceKey, Ban>::map(&self.bans);
        crate::bpf_sys::delete_many(map, keys).map_err(|source| FilterError::Map {
            name: names::BANS,
            source,
        })
    }

    /// Writes many bans at once (`BPF_MAP_UPDATE_BATCH`), replacing bans already there.
    /// On error, says how many were written.
    pub fn add_many(
        &mut self,
        keys: &[SourceKey],
        bans: &[Ban],
    ) -> Result<(), (usize, Box<FilterError>)> {
        let map = aya::maps::IterableMap::<SourceKey, Ban>::map(&self.bans);
        crate::bpf_sys::update_many(map, keys, bans)
            .map(|_| ())
            .map_err(|(done, source)| {
                (
                    done,
                    Box::new(FilterError::Map {
                        name: names::BANS,
                        source,
                    }),
                )
            })
    }

    /// The banned keys, unsorted.
    pub fn keys(&self) -> Result<Vec<SourceKey>, FilterError> {
        Ok(self.entries()?.into_iter().map(|(key, _)| key).collect())
    }

    /// The blocklist's entries, sorted by key.
    pub fn list(&self) -> Result<Vec<(SourceKey, Ban)>, FilterError> {
        let mut entries = self.entries()?;
        entries.sort_unstable_by_key(|(key, _)| *key);
        Ok(entries)
    }

    fn entries(&self) -> Result<Vec<(SourceKey, Ban)>, FilterError> {
        let map = aya::maps::IterableMap::<SourceKey, Ban>::map(&self.bans);
        crate::bpf_sys::entries(map).map_err(|source| FilterError::Map {
            name: names::BANS,
            source,
        })
    }
}

/// When something added now for `ttl` expires, on the kernel's clock (`u64::MAX`:
/// never, for no `ttl`).
pub fn expires_after(ttl: Option<Duration>) -> u64 {
    match ttl {
        Some(ttl) => monotonic_now_ns()
            .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
            .min(u64::MAX - 1),
        None => u64::MAX,
    }
}

/// How a ban key reads: an IPv4 address for IPv4-mapped keys, `PREFIX/len` for IPv6.
pub fn key_to_string(key: SourceKey, ipv6_prefix: u32) -> String {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => format!("{v6}/{}", ipv6_prefix.min(128)),
    }
}

/// The key `address` is tracked and banned under (see [`SourceKey`]).
pub fn source_key(address: IpAddr, ipv6_prefix: u32) -> SourceKey {
    match address {
        IpAddr::V4(v4) => mapped_ipv4(v4.octets()),
        IpAddr::V6(v6) => ipv6_prefix_key(v6.octets(), ipv6_prefix),
    }
}

/// Now on `CLOCK_MONOTONIC_COARSE`: the clock of the kernel's `bpf_ktime_get_coarse_ns`,
/// which ban expiries are compared with (the fine clock runs a few ms ahead of it).
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

fn random_seed() -> Result<u64, FilterError> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(FilterError::Seed)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// The oldest kernel the program can load on: `bpf_loop` came in 5.17. The oldest one
/// tested (`cargo xtask vm-test`) is 6.1.
const MIN_KERNEL: (u32, u32) = (5, 17);
const OLDEST_TESTED: (u32, u32) = (6, 1);

/// Refuses, with the version in the message, kernels the program cannot load on, instead
/// of leaving the operator a verifier log; warns about kernels older than tested.
fn check_kernel() -> Result<(), FilterError> {
    let release = kernel_release();
    let Some(version) = parse_release(&release) else {
        return Ok(()); // unusual release string: let the kernel decide
    };
    if version < MIN_KERNEL {
        return Err(FilterError::KernelTooOld { release });
    }
    if version < OLDEST_TESTED {
        log::warn!(
            "kernel {release} is older than the oldest tested ({}.{}); verdicts are tested there",
            OLDEST_TESTED.0,
            OLDEST_TESTED.1
        );
    }
    Ok(())
}

/// The running kernel's (major, minor) version, if its release string says.
pub fn running_kernel() -> Option<(u32, u32)> {
    parse_release(&kernel_release())
}

/// The first kernel with tcx, which [`EgressMode::Auto`] uses when it can.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `6.1.0-56-amd64` -> (6, 1).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels from 5.11 on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_keys_and_back() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let key = source_key(v4, 64);
        assert_eq!(
            key,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1]
        );
        assert_eq!(key_to_string(key, 64), "198.18.0.1");

        let v6: IpAddr = "2001:db8:5f:1:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let key = source_key(v6, 64);
        assert_eq!(key_to_string(key, 64), "2001:db8:5f:1::/64");
        assert_eq!(key, source_key("2001:db8:5f:1::9".parse().unwrap(), 64));
        assert_ne!(key, source_key("2001:db8:5f:2::9".parse().unwrap(), 64));
        assert_eq!(key_to_string(source_key(v6, 48), 48), "2001:db8:5f::/48");
        assert_eq!(
            key_to_string(source_key(v6, 128), 128),
            "2001:db8:5f:1:aaaa:bbbb:cccc:dddd/128"
        );
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.15.0").is_some_and(|v| v < MIN_KERNEL));
        assert!(parse_release("6.1.0").is_some_and(|v| v >= OLDEST_TESTED));
    }
}
