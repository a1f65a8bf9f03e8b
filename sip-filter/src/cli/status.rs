use std::path::Path;

use anyhow::Context;
use aya::{
    maps::{Map, MapData, MapInfo},
    programs::links::{FdLink, PinnedLink},
};
use serde_json::json;
use sip_filter::{
    crowdsec::report::{read_status, Side, Status},
    filter::{monotonic_now_ns, pinned_config},
    learnt::{Learnt, PinnedLearnt},
    metrics::map_entries,
    pins::{anything_pinned, egress_attachments, link_path, pinned_interfaces},
    runtime::Runtime,
    state::Clocks,
};
use sip_filter_common::maps::{names, FLAG_DRY_RUN};

use super::{NoFilter, PinArgs};

/// Show the running filter: the daemon, its interfaces with the XDP mode and the egress
/// program's attachment (tcx or clsact) on each, the program id, dry-run or not, the
/// registered sources and locked accounts it learnt from the server's answers, and how
/// full each map is.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// JSON: daemon, interfaces (name, mode, egress, program_id), program_id, dry_run,
    /// auth (registered, locked_for_source, locked_everywhere; null if unreadable), maps
    /// (name, entries, capacity),
    /// crowdsec (the bouncer's and signal source's last pulls and pushes, errors)...
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pins: PinArgs,
}

/// One pinned map's occupancy.
struct Occupancy {
    name: &'static str,
    /// None for arrays (every slot always exists) and maps that cannot be counted.
    entries: Option<u64>,
    capacity: u32,
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let root = &args.pins.pin_root;
    if !anything_pinned(root).with_context(|| format!("reading {}", root.display()))? {
        return Err(no_filter(root).into());
    }
    let runtime_dir = args.pins.runtime_dir();
    let runtime = Runtime::read(&runtime_dir)
        .with_context(|| format!("reading the runtime file in {}", runtime_dir.display()))?;
    let alive = runtime.as_ref().is_some_and(Runtime::daemon_alive);
    let crowdsec = read_status(&runtime_dir).filter(|_| alive);

    let interfaces =
        pinned_interfaces(root).with_context(|| format!("reading {}", root.display()))?;
    // Kernel facts first: the program each pinned link runs.
    let mut program_ids = Vec::new();
    for iface in &interfaces {
        let id = PinnedLink::from_pin(link_path(root, iface))
            .ok()
            .and_then(|link| FdLink::from(link).info().ok())
            .map(|info| info.program_id());
        program_ids.push(id);
    }
    // From the pins: how the egress program is attached, even without the runtime file.
    let egress = egress_attachments(root).with_context(|| format!("reading {}", root.display()))?;
    let egress_of = |iface: &str| -> &str {
        egress
            .iter()
            .find(|(name, _)| name == iface)
            .map_or("none", |(_, mode)| mode)
    };
    let mode_of = |iface: &str| -> String {
        runtime
            .as_ref()
            .and_then(|r| r.interfaces.iter().find(|i| i.name == iface))
            .map_or_else(|| "unknown".to_string(), |i| i.mode.clone())
    };
    let program_id = program_ids
        .iter()
        .flatten()
        .next()
        .copied()
        .or(runtime.as_ref().map(|r| r.program_id));
    let maps_dir = args.pins.maps_dir();
    let dry_run = pinned_config(&maps_dir)
        .map(|config| config.has(FLAG_DRY_RUN))
        .ok();
    // None from the pins of a filter that predates them.
    let learnt = PinnedLearnt::open(&maps_dir)
        .and_then(|learnt| learnt.maps().count(monotonic_now_ns()))
        .ok();
    let maps: Vec<Occupancy> = names::PINNED
        .iter()
        .map(|name| occupancy(&maps_dir, name))
        .collect::<anyhow::Result<_>>()?;

    if args.json {
        let value = json!({
            "daemon": {
                "running": alive,
                "pid": runtime.as_ref().map(|r| r.pid),
            },
            "pin_root": root,
            "runtime_dir": runtime_dir,
            "config_file": runtime.as_ref().and_then(|r| r.config_file.clone()),
            "state_file": runtime.as_ref().map(|r| r.state_file.clone()),
            "program_id": program_id,
            "dry_run": dry_run,
            "auth": learnt.map(|learnt| json!({
                "registered": learnt.registered,
                "locked_for_source": learnt.locked_for_source,
                "locked_everywhere": learnt.locked_everywhere,
            })),
            "interfaces": interfaces.iter().zip(&program_ids).map(|(iface, id)| json!({
                "name": iface,
                "mode": mode_of(iface),
                "egress": egress_of(iface),
                "program_id": id,
            })).collect::<Vec<_>>(),
            "maps": maps.iter().map(|map| json!({
                "name": map.name,
                "entries": map.entries,
                "capacity": map.capacity,
            })).collect::<Vec<_>>(),
            "reloads": runtime.as_ref().map(|r| r.reloads),
            "reload_failures": runtime.as_ref().map(|r| r.reload_failures),
            "last_reload_error": runtime.as_ref().and_then(|r| r.last_reload_error.clone()),
            "crowdsec": crowdsec,
        });
        println!("{value}");
        return Ok(());
    }

    let daemon = match &runtime {
        Some(r) if alive => format!("running, pid {}", r.pid),
        Some(r) => format!(
            "not running (pid {} is gone); the program stays attached through its pinned links: `sip-filter unload` removes it, `sip-filter run` takes over",
            r.pid
        ),
        None => "not running (no runtime file); the program stays attached through its pinned links: `sip-filter unload` removes it, `sip-filter run` takes over".to_string(),
    };
    println!("daemon:      {daemon}");
    if let Some(r) = &runtime {
        let config = r
            .config_file
            .as_ref()
            .map_or("none (flags only)".to_string(), |c| c.display().to_string());
        println!("config:      {config}");
        println!(
            "reloads:     {} done, {} refused{}",
            r.reloads,
            r.reload_failures,
            r.last_reload_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (last: {e})"))
        );
        println!("state file:  {}", r.state_file.display());
    }
    println!(
        "program:     id {}",
        program_id.map_or("unknown".to_string(), |id| id.to_string())
    );
    let shown: Vec<String> = interfaces
        .iter()
        .map(|iface| format!("{iface} ({}; egress {})", mode_of(iface), egress_of(iface)))
        .collect();
    println!(
        "interfaces:  {}",
        if shown.is_empty() {
            "none attached".to_string()
        } else {
            shown.join(", ")
        }
    );
    println!(
        "dry-run:     {}",
        match dry_run {
            Some(true) => "yes: drops are counted, nothing is dropped or banned",
            Some(false) => "no",
            None => "unknown",
        }
    );
    println!(
        "auth:        {}",
        learnt.map_or("unknown".to_string(), auth_line)
    );
    if let Some(crowdsec) = &crowdsec {
        print_crowdsec(crowdsec, Clocks::now().unix_ms);
    }
    println!("pins:        {}", root.display());
    println!("maps:");
    println!("  {:<14} {:>9} {:>9}  USE", "NAME", "ENTRIES", "CAPACITY");
    for map in &maps {
        let (entries, used) = match map.entries {
            Some(n) => (
                n.to_string(),
                format!("{:.1}%", 100.0 * n as f64 / f64::from(map.capacity.max(1))),
            ),
            None => ("-".to_string(), "array".to_string()),
        };
        println!(
            "  {:<14} {:>9} {:>9}  {used}",
            map.name, entries, map.capacity
        );
    }
    Ok(())
}

/// The CrowdSec sync's lines: pulls, pushes, errors, and how old each is.
fn print_crowdsec(status: &Status, now_ms: u64) {
    let ago = |ms: Option<u64>| {
        ms.map_or("never".to_string(), |ms| {
            format!(
                "{:.0?} ago",
                std::time::Duration::from_millis(now_ms.saturating_sub(ms))
            )
        })
    };
    let health = |side: &Side| match (side.consecutive_failures, &side.last_error) {
        (0, _) => format!("ok, {} error(s) since the start", side.errors),
        (n, Some(e)) => format!("FAILING ({n} in a row; the last: {e})"),
        (n, None) => format!("FAILING ({n} in a row)"),
    };
    let bouncer = &status.bouncer;
    println!(
        "crowdsec:    {}: {} decision(s) enforced; last successful pull {} (full: {}), {}",
        status.api_url,
        status.active,
        ago(bouncer.last_success_unix_ms),
        ago(bouncer.last_full_unix_ms),
        health(bouncer)
    );
    match &status.signals {
        Some(side) => println!(
            "             pushes: last successful {}, {} ban(s) pushed, {} queued, {}",
            ago(side.last_success_unix_ms),
            status.pushed,
            status.queued,
            health(side)
        ),
        None => println!("             pushes: off (no machine_id configured)"),
    }
}

/// `3 registered source(s); 2 account(s) locked for one source, 1 for every
/// unregistered source`.
fn auth_line(learnt: Learnt) -> String {
    format!(
        "{} registered source(s); {} account(s) locked for one source, {} for every unregistered source",
        learnt.registered, learnt.locked_for_source, learnt.locked_everywhere
    )
}

pub fn no_filter(root: &Path) -> NoFilter {
    NoFilter(format!(
        "no filter is loaded (nothing pinned in {}): start one with `sip-filter run --iface IFACE --domain YOUR.DOMAIN`",
        root.display()
    ))
}

/// How many entries a pinned map holds, against its capacity.
fn occupancy(dir: &Path, name: &'static str) -> anyhow::Result<Occupancy> {
    let path = dir.join(name);
    let info = MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let entries = map_entries(name, &Map::from_map_data(data)?)
        .with_context(|| format!("counting the entries of {}", path.display()))?;
    Ok(Occupancy {
        name,
        entries,
        capacity: info.max_entries(),
    })
}
