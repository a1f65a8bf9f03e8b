//! What `block` and `allow` share: opening running filters' lists, adding and removing
//! operator entries, and the rows `block list` and `allow list` print.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use ipnet::IpNet;
use sip_filter::countries::Country;
use sip_filter::{
    crowdsec::report::Note,
    filter::{expires_after, monotonic_now_ns},
    lists::{origin_name, ListKind, PinnedList},
};
use sip_filter_common::maps::{
    country_code, BanReason, ListEntry, LIST_ORIGIN_CONFIG, LIST_ORIGIN_COUNTRY,
    LIST_ORIGIN_CROWDSEC,
};

use super::{
    block::{format_duration, parse_duration},
    pinned_filters, PinArgs, UserError,
};

/// Which running filter: checked to be attached to one interface, or wherever it is.
#[derive(clap::Args)]
pub struct Where {
    /// Check that the filter is attached to this interface. One blocklist and one pair
    /// of allow/deny lists serve all the filter's interfaces: an entry applies on every
    /// one.
    #[arg(long)]
    pub iface: Option<String>,
    #[command(flatten)]
    pub pins: PinArgs,
}

impl Where {
    /// The interfaces the filter's maps serve, comma separated (after checking that
    /// `--iface`, if given, is one of them): the label of what a verb reads or writes.
    pub fn interfaces_label(&self) -> anyhow::Result<String> {
        if let Some(iface) = &self.iface {
            pinned_filters(&self.pins, Some(iface))?;
        }
        Ok(pinned_filters(&self.pins, None)?.join(","))
    }
}

/// `--ttl`: how long an added entry lasts (`allow add`, `block add`, `block import`).
#[derive(clap::Args)]
pub struct Ttl {
    /// How long, like 30s, 10m, 1h, 7d, 1h30m or 59m 58s (as `block list` prints it; a
    /// bare number is seconds); default: until removed.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
}

impl Ttl {
    /// The duration given, or None: until removed.
    pub fn duration(&self) -> Result<Option<Duration>, UserError> {
        self.ttl
            .as_deref()
            .map(|text| parse_duration("--ttl", text))
            .transpose()
    }
}

/// The running filter's `kind` list, labelled with the interfaces it serves.
pub fn open_lists(at: &Where, kind: ListKind) -> anyhow::Result<Vec<(String, PinnedList)>> {
    let label = at.interfaces_label()?;
    Ok(vec![(label, open_list(&at.pins, kind)?)])
}

/// The running filter's `kind` list (one for all its interfaces).
pub fn open_list(pins: &PinArgs, kind: ListKind) -> anyhow::Result<PinnedList> {
    let dir = pins.maps_dir();
    PinnedList::open(&dir, kind).with_context(|| {
        format!(
            "opening the {} list pinned in {}",
            kind.name(),
            dir.display()
        )
    })
}

/// `198.51.100.0/24`, `2001:db8::/48`, or a single address (a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, UserError> {
    let text = text.trim();
    if let Ok(address) = text.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(address));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| not_an_address(text))
}

pub fn not_an_address(text: &str) -> UserError {
    UserError(format!(
        "{text:?} is not an IPv4 or IPv6 address or network (like 198.51.100.7, 198.51.100.0/24 or 2001:db8::/48)"
    ))
}

/// A note for an operator entry about to replace the configuration's: refused, since a
/// reload would then not know the entry any more.
fn config_owned(kind: ListKind, net: IpNet) -> UserError {
    UserError(format!(
        "{net} is on the {kind} list of the filter's configuration file: change it there (`[lists] {kind}`) and reload the filter",
        kind = kind.name()
    ))
}

/// Adds `net` to every list as an operator entry; refuses (before changing anything)
/// where the configuration already has it.
pub fn add(
    lists: &mut [(String, PinnedList)],
    net: IpNet,
    ttl: Option<Duration>,
    reason: u32,
) -> anyhow::Result<()> {
    for (_, list) in lists.iter() {
        if let Some(entry) = list.get(net)? {
            if entry.origin == LIST_ORIGIN_CONFIG {
                return Err(config_owned(list.kind(), net).into());
            }
        }
    }
    let entry = ListEntry::from_operator(expires_after(ttl), reason);
    let how_long = match ttl {
        Some(ttl) => format!("for {}", format_duration(ttl)),
        None => "until removed".to_string(),
    };
    for (iface, list) in lists.iter_mut() {
        list.insert(net, entry).with_context(|| {
            format!("adding {net} to the {} list of {iface}", list.kind().name())
        })?;
        println!(
            "{} {net} on {iface} {how_long}",
            match list.kind() {
                ListKind::Allow => "allowed (trusted)",
                ListKind::Deny => "denied",
            }
        );
    }
    Ok(())
}

/// Removes the operator entry for exactly `net` from every list; refuses (before
/// changing anything) where it is the configuration's.
pub fn remove(lists: &mut [(String, PinnedList)], net: IpNet) -> anyhow::Result<()> {
    for (_, list) in lists.iter() {
        if let Some(entry) = list.get(net)? {
            if entry.origin == LIST_ORIGIN_CONFIG {
                return Err(config_owned(list.kind(), net).into());
            }
        }
    }
    for (iface, list) in lists.iter_mut() {
        let kind = list.kind().name();
        if list
            .remove(net)
            .with_context(|| format!("removing {net} from the {kind} list of {iface}"))?
        {
            println!("removed {net} from the {kind} list of {iface}");
        } else {
            println!("{net} was not on the {kind} list of {iface}");
        }
    }
    Ok(())
}

/// One line of `block list` or `allow list`.
pub struct Row {
    pub iface: String,
    /// An address, an IPv6 prefix, or a network.
    pub address: String,
    /// `ban`, `deny` or `allow`.
    pub kind: &'static str,
    /// `operator`, `config`, `crowdsec`, or `filter` (the filter's own bans).
    pub origin: &'static str,
    /// A ban reason, a CrowdSec scenario, or `-`.
    pub reason: String,
    /// None: until removed.
    pub left: Option<Duration>,
    /// Packets dropped because of it (bans and deny entries).
    pub drops: Option<u64>,
}

impl Row {
    /// A row for a list entry; a CrowdSec entry's reason is its scenario, from `notes`
    /// (what the daemon's bouncer wrote).
    pub fn of_entry(
        iface: &str,
        kind: ListKind,
        net: IpNet,
        entry: &ListEntry,
        now: u64,
        notes: &BTreeMap<String, Note>,
    ) -> Row {
        let reason = match (kind, entry.origin) {
            (ListKind::Deny, LIST_ORIGIN_CROWDSEC) => notes
                .get(&net.to_string())
                .map_or_else(|| "crowdsec".to_string(), |note| note.scenario.clone()),
            (ListKind::Deny, LIST_ORIGIN_COUNTRY) => {
                Country(country_code(entry.reason)).to_string()
            }
            (ListKind::Deny, origin) if origin != LIST_ORIGIN_CONFIG => {
                BanReason::from_u32(entry.reason).name().to_string()
            }
            _ => "-".to_string(),
        };
        Row {
            iface: iface.to_string(),
            address: net.to_string(),
            kind: kind.name(),
            origin: origin_name(entry.origin),
            reason,
            left: left(entry.expires_ns, now),
            drops: (kind == ListKind::Deny).then_some(entry.drops),
        }
    }
}

impl Row {
    /// The object `--json` prints for it (`block list`, `allow list`, `explain`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "iface": self.iface,
            "address": self.address,
            "kind": self.kind,
            "origin": self.origin,
            "reason": self.reason,
            "until_removed": self.left.is_none(),
            "seconds_left": self.left.map(|left| left.as_secs()),
            "expired": self.left.is_some_and(|left| left.is_zero()),
            "drops": self.drops,
        })
    }

    /// `until removed`, `expired` or the time left (`59m 58s`).
    pub fn left_text(&self) -> String {
        left_text(self.left)
    }
}

/// `until removed` (None), `expired` or the time left (`59m 58s`).
pub fn left_text(left: Option<Duration>) -> String {
    match left {
        None => "until removed".to_string(),
        Some(left) if left.is_zero() => "expired".to_string(),
        Some(left) => format_duration(left),
    }
}

/// The time left until `expires_ns`; None for never.
pub fn left(expires_ns: u64, now: u64) -> Option<Duration> {
    (expires_ns != u64::MAX).then(|| Duration::from_nanos(expires_ns.saturating_sub(now)))
}

/// The rows of the `kind` lists, after sweeping out expired operator entries (the kernel
/// already ignores them); says on stderr how many went. `notes`: the CrowdSec
/// decisions' scenarios, by network.
pub fn list_rows(
    lists: &mut [(String, PinnedList)],
    notes: &BTreeMap<String, Note>,
) -> anyhow::Result<Vec<Row>> {
    let now = monotonic_now_ns();
    let mut rows = Vec::new();
    for (iface, list) in lists.iter_mut() {
        let kind = list.kind();
        let swept = list
            .sweep_expired(now)
            .with_context(|| format!("sweeping the {} list of {iface}", kind.name()))?;
        if swept > 0 {
            eprintln!(
                "removed {swept} expired entries from the {} list of {iface}",
                kind.name()
            );
        }
        let entries = list
            .entries()
            .with_context(|| format!("reading the {} list of {iface}", kind.name()))?;
        rows.extend(
            entries
                .iter()
                .map(|(net, entry)| Row::of_entry(iface, kind, *net, entry, now, notes)),
        );
    }
    Ok(rows)
}

/// Prints rows as a JSON array or a table; `empty` when there are none.
pub fn print_rows(rows: &[Row], json: bool, empty: &str) {
    if json {
        let array: Vec<serde_json::Value> = rows.iter().map(Row::to_json).collect();
        println!("{}", serde_json::Value::Array(array));
        return;
    }
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    let width = |title: &str, cell: fn(&Row) -> usize| {
        rows.iter().map(cell).max().unwrap_or(0).max(title.len())
    };
    let iface_width = width("IFACE", |row| row.iface.len());
    let address_width = width("ADDRESS", |row| row.address.len());
    let mut out = format!(
        "{:<iface_width$}  {:<address_width$}  {:<5}  {:<8}  {:<8}  {:>9}  LEFT\n",
        "IFACE", "ADDRESS", "KIND", "ORIGIN", "REASON", "DROPS"
    );
    for row in rows {
        let left = row.left_text();
        let drops = row.drops.map_or("-".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "{:<iface_width$}  {:<address_width$}  {:<5}  {:<8}  {:<8}  {drops:>9}  {left}\n",
            row.iface, row.address, row.kind, row.origin, row.reason
        ));
    }
    print!("{out}");
}
