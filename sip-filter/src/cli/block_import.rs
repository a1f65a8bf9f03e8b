use std::{collections::HashSet, path::PathBuf, time::Instant};

use anyhow::Context;
use ipnet::IpNet;
use sip_filter::{
    filter::expires_after,
    lists::{ListKind, PinnedList},
};
use sip_filter_common::maps::{
    Ban, ListEntry, SourceKey, LIST_ORIGIN_CONFIG, MAX_BANS, MAX_LIST_ENTRIES,
};

use super::{
    block::{open_filters, parse_reason, parse_target, Target},
    lists::{open_list, Ttl, Where},
    UserError,
};

/// Ban and deny many sources at once from a file (a blocklist feed): one address or
/// network per line, `#` starts a comment. Addresses are banned, networks denied, like
/// `block add`. The whole file is checked first: a bad line imports nothing.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The file to import; `-` reads standard input (`curl -s FEED | sip-filter block
    /// import -`).
    file: PathBuf,
    #[command(flatten)]
    ttl: Ttl,
    /// Why: feed (the default) or manual.
    #[arg(long, default_value = "feed")]
    reason: String,
    #[command(flatten)]
    at: Where,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let ttl = args.ttl.duration()?;
    let reason = parse_reason(&args.reason)?;
    let started = Instant::now();
    let from_stdin = args.file.as_os_str() == "-";
    let shown = if from_stdin {
        "standard input".to_string()
    } else {
        args.file.display().to_string()
    };
    let text = if from_stdin {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.file)
    }
    .map_err(|e| UserError(format!("cannot read {shown}: {e}")))?;
    let targets = parse_lines(&text).map_err(|(line, bad)| {
        UserError(format!(
            "{shown} line {line}: {bad:?} is not an IPv4 or IPv6 address or network (like 198.51.100.7 or 198.51.100.0/24); nothing was imported"
        ))
    })?;

    // Everything is checked on every filter before anything is written.
    let mut plans = Vec::new();
    for (iface, bans) in open_filters(&args.at)? {
        let deny = open_list(&args.at.pins, ListKind::Deny)?;
        let plan = Plan::new(&iface, bans, deny, &targets)?;
        plans.push((iface, plan));
    }
    let (ban, entry) = (
        Ban::new(expires_after(ttl), reason),
        ListEntry::from_operator(expires_after(ttl), reason as u32),
    );
    for (iface, mut plan) in plans {
        let bans = vec![ban; plan.ban_keys.len()];
        plan.bans
            .add_many(&plan.ban_keys, &bans)
            .map_err(|(done, e)| {
                anyhow::Error::new(e).context(format!(
                    "importing bans on {iface}: {done} of {} written",
                    plan.ban_keys.len()
                ))
            })?;
        for (done, net) in plan.nets.iter().enumerate() {
            plan.deny.insert(*net, entry).with_context(|| {
                format!(
                    "importing denied networks on {iface}: {done} of {} written",
                    plan.nets.len()
                )
            })?;
        }
        println!(
            "imported {} on {iface}: {} bans, {} denied networks{} ({:.1} s)",
            shown,
            plan.ban_keys.len(),
            plan.nets.len(),
            if plan.config_kept > 0 {
                format!(
                    ", {} left as the configuration's deny entries",
                    plan.config_kept
                )
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The targets of an import file; on error the line number and its text.
fn parse_lines(text: &str) -> Result<Vec<Target>, (usize, String)> {
    let mut targets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let target = parse_target(content).map_err(|_| (index + 1, content.to_string()))?;
        targets.push(target);
    }
    Ok(targets)
}

/// What an import writes on one filter, checked against the maps' room.
struct Plan {
    bans: sip_filter::filter::PinnedBans,
    deny: PinnedList,
    ban_keys: Vec<SourceKey>,
    nets: Vec<IpNet>,
    /// Networks the configuration already denies: left as they are, so a reload keeps
    /// owning them.
    config_kept: usize,
}

impl Plan {
    fn new(
        iface: &str,
        bans: sip_filter::filter::PinnedBans,
        deny: PinnedList,
        targets: &[Target],
    ) -> anyhow::Result<Plan> {
        let mut ban_keys = Vec::new();
        let mut nets = Vec::new();
        for target in targets {
            if target.is_single(bans.ipv6_prefix()) {
                ban_keys.push(bans.key(target.address));
            } else {
                nets.push(target.net());
            }
        }
        let mut seen = HashSet::new();
        ban_keys.retain(|key| seen.insert(*key));
        let banned: HashSet<SourceKey> = bans
            .keys()
            .with_context(|| format!("reading the bans of {iface}"))?
            .into_iter()
            .collect();
        let new_bans = ban_keys.iter().filter(|key| !banned.contains(*key)).count();
        if banned.len() + new_bans > MAX_BANS as usize {
            return Err(UserError(format!(
                "{iface} has {} bans and room for {MAX_BANS}: importing {new_bans} more would not fit; nothing was imported",
                banned.len()
            ))
            .into());
        }

        let listed = deny
            .entries()
            .with_context(|| format!("reading the deny list of {iface}"))?;
        let config: HashSet<IpNet> = listed
            .iter()
            .filter(|(_, entry)| entry.origin == LIST_ORIGIN_CONFIG)
            .map(|(net, _)| *net)
            .collect();
        let mut seen = HashSet::new();
        nets.retain(|net| seen.insert(*net));
        let before = nets.len();
        nets.retain(|net| !config.contains(net));
        let config_kept = before - nets.len();
        let present: HashSet<IpNet> = listed.iter().map(|(net, _)| *net).collect();
        for v4 in [true, false] {
            let family = |net: &IpNet| matches!(net, IpNet::V4(_)) == v4;
            let now = present.iter().filter(|net| family(net)).count();
            let more = nets
                .iter()
                .filter(|net| family(net) && !present.contains(*net))
                .count();
            if now + more > MAX_LIST_ENTRIES as usize {
                return Err(UserError(format!(
                    "the {} deny list of {iface} holds {now} networks and has room for {MAX_LIST_ENTRIES}: importing {more} more would not fit; nothing was imported",
                    if v4 { "IPv4" } else { "IPv6" }
                ))
                .into());
            }
        }
        Ok(Plan {
            bans,
            deny,
            ban_keys,
            nets,
            config_kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines_parse() {
        let text = "# a feed\n198.51.100.7\n\n  203.0.113.0/24  # a network\n2001:db8::1\n";
        let targets = parse_lines(text).unwrap();
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[1].net().to_string(), "203.0.113.0/24");
        assert_eq!(
            parse_lines("198.51.100.7\n198.51.100.300\n").unwrap_err(),
            (2, "198.51.100.300".to_string())
        );
        assert_eq!(
            parse_lines("1.2.3.4/40 # too long\n").unwrap_err(),
            (1, "1.2.3.4/40".to_string())
        );
    }
}
