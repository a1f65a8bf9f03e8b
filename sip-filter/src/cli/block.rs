use std::{net::IpAddr, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use ipnet::IpNet;
use sip_filter::{
    crowdsec::report::read_notes,
    filter::{key_to_string, monotonic_now_ns, PinnedBans},
    lists::{ListKind, PinnedList},
};
use sip_filter_common::maps::{Ban, BanReason, SourceKey, LIST_ORIGIN_OPERATOR};

use super::{
    block_import::{self, ImportArgs},
    lists::{self, open_list, Row, Ttl, Where},
    UserError,
};

/// Ban or unban sources by hand on running filters (from another shell while
/// `sip-filter run` runs): single addresses go on the dynamic blocklist, networks on the
/// deny list. Their packets to the SIP ports are dropped (drop_banned, drop_denied)
/// until the entry expires or is removed.
#[derive(clap::Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    command: BlockCommand,
}

#[derive(Subcommand)]
enum BlockCommand {
    Add(AddArgs),
    Del(DelArgs),
    List(ListArgs),
    Import(ImportArgs),
    Flush(FlushArgs),
}

/// Ban an address, or deny a network. An IPv6 address is banned by its prefix (the
/// filter's ipv6_prefix, /64 by default), like the filter's own bans.
#[derive(clap::Args)]
struct AddArgs {
    /// An IPv4 or IPv6 address (banned), or a network in CIDR form like 198.51.100.0/24
    /// (denied). `ADDR/32`, `ADDR/128` and the filter's IPv6 prefix length are bans.
    address: String,
    #[command(flatten)]
    ttl: Ttl,
    /// Why: manual (the default) or feed.
    #[arg(long, default_value = "manual")]
    reason: String,
    #[command(flatten)]
    at: Where,
}

/// Lift the ban on an address (an IPv6 address: on its prefix), or remove a network
/// an operator denied. The configuration file's deny entries are changed there.
#[derive(clap::Args)]
struct DelArgs {
    /// An IPv4 or IPv6 address or network, as for `block add`.
    address: String,
    #[command(flatten)]
    at: Where,
}

/// List the bans (by hand and automatic: scanner, domain, rate, auth, enumeration,
/// connections) and the deny list (the configuration's and operators'; the denied
/// countries' networks with `--origin country`), with reasons, drops and the time left.
/// Expired operator deny entries are removed as they are found; an expired ban stays
/// listed, as expired, until the source's next packet removes it.
#[derive(clap::Args)]
struct ListArgs {
    /// A JSON array of objects: iface (the interfaces the entry applies to, comma
    /// separated), address, kind (ban, deny), origin (operator, config, filter,
    /// crowdsec, country), reason (a CrowdSec entry's: its scenario; a country entry's:
    /// its country),
    /// until_removed, seconds_left, expired, drops.
    #[arg(long)]
    json: bool,
    /// Only entries with this reason: a ban reason (manual, feed, scanner, domain, rate,
    /// auth, enumeration, connections), or a CrowdSec scenario.
    #[arg(long)]
    reason: Option<String>,
    /// Only entries of this origin.
    #[arg(long, value_enum)]
    origin: Option<Origin>,
    /// At most this many entries (the rest are counted on stderr).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    at: Where,
}

/// Who put an entry there.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Origin {
    /// `block add`, `block import`.
    Operator,
    /// The filter's own bans (scanner, domain, rate, auth, enumeration, connections).
    Filter,
    /// The configuration file's deny list.
    Config,
    /// CrowdSec decisions.
    Crowdsec,
    /// The networks of the countries `[countries]` denies.
    Country,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Operator => "operator",
            Origin::Filter => "filter",
            Origin::Config => "config",
            Origin::Crowdsec => "crowdsec",
            Origin::Country => "country",
        }
    }
}

/// Lift every ban, or those of one reason or origin, and remove the deny entries
/// operators added (`block add NETWORK`, `block import`) that match; says how many.
/// The configuration file's deny entries stay (they are changed there), and so do
/// CrowdSec's (its decisions are deleted with `cscli decisions delete`).
#[derive(clap::Args)]
struct FlushArgs {
    /// Only these: manual, feed (an operator's); scanner, domain, rate, auth, enumeration, connections (the filter's).
    #[arg(long)]
    reason: Option<String>,
    /// Only these: operator or filter.
    #[arg(long, value_enum)]
    origin: Option<Origin>,
    #[command(flatten)]
    at: Where,
}

pub fn block(args: BlockArgs) -> anyhow::Result<()> {
    match args.command {
        BlockCommand::Add(args) => add(args),
        BlockCommand::Del(args) => del(args),
        BlockCommand::List(args) => list(args),
        BlockCommand::Import(args) => block_import::import(args),
        BlockCommand::Flush(args) => flush(args),
    }
}

/// Deny lists by interface.
type DenyLists = Vec<(String, PinnedList)>;

/// The filters `at` names, each with its blocklist, and its deny list when `target`
/// is a network there (whether it is depends on the filter's IPv6 prefix).
fn open_for(at: &Where, target: &Target) -> anyhow::Result<(Vec<(String, PinnedBans)>, DenyLists)> {
    let (mut bans, mut denies) = (Vec::new(), Vec::new());
    for (iface, filter_bans) in open_filters(at)? {
        if target.is_single(filter_bans.ipv6_prefix()) {
            bans.push((iface, filter_bans));
        } else {
            denies.push((iface, open_list(&at.pins, ListKind::Deny)?));
        }
    }
    Ok((bans, denies))
}

fn add(args: AddArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.address)?;
    let ttl = args.ttl.duration()?;
    let reason = parse_reason(&args.reason)?;
    let (mut filters, mut denies) = open_for(&args.at, &target)?;
    if !denies.is_empty() {
        lists::add(&mut denies, target.net(), ttl, reason as u32)?;
    }
    let how_long = match ttl {
        Some(ttl) => format!("for {}", format_duration(ttl)),
        None => "until removed".to_string(),
    };
    for (iface, bans) in &mut filters {
        let key = bans
            .add(target.address, ttl, reason)
            .with_context(|| format!("banning {} on {iface}", target.address))?;
        println!(
            "banned {}{} on {iface} {how_long} (reason {})",
            key_to_string(key, bans.ipv6_prefix()),
            target.prefix_note(bans.ipv6_prefix()),
            reason.name()
        );
    }
    Ok(())
}

fn del(args: DelArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.address)?;
    let (mut filters, mut denies) = open_for(&args.at, &target)?;
    if !denies.is_empty() {
        lists::remove(&mut denies, target.net())?;
    }
    for (iface, bans) in &mut filters {
        let shown = format!(
            "{}{}",
            key_to_string(bans.key(target.address), bans.ipv6_prefix()),
            target.prefix_note(bans.ipv6_prefix())
        );
        let removed = bans
            .remove(target.address)
            .with_context(|| format!("unbanning {} on {iface}", target.address))?;
        match removed {
            Some(ban) => println!(
                "unbanned {shown} on {iface} (was reason {})",
                BanReason::from_u32(ban.reason).name()
            ),
            None => println!("{shown} was not banned on {iface}"),
        }
    }
    Ok(())
}

/// Bans the filter made itself (the others are an operator's).
fn ban_origin(reason: BanReason) -> &'static str {
    match reason {
        BanReason::Manual | BanReason::Feed => "operator",
        BanReason::Rate
        | BanReason::Scanner
        | BanReason::Domain
        | BanReason::Auth
        | BanReason::Enumeration
        | BanReason::Connections
        | BanReason::Tls => "filter",
    }
}

/// A ban as `block list` and `explain` show it.
pub(super) fn ban_row(iface: &str, key: SourceKey, ban: &Ban, ipv6_prefix: u32, now: u64) -> Row {
    let reason = BanReason::from_u32(ban.reason);
    Row {
        iface: iface.to_string(),
        address: key_to_string(key, ipv6_prefix),
        kind: "ban",
        origin: ban_origin(reason),
        reason: reason.name().to_string(),
        left: lists::left(ban.expires_ns, now),
        drops: Some(ban.drops),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = open_filters(&args.at)?;
    let mut denies = lists::open_lists(&args.at, ListKind::Deny)?;
    let now = monotonic_now_ns();
    let mut rows = Vec::new();
    for (iface, bans) in &filters {
        let listed = bans
            .list()
            .with_context(|| format!("reading the bans of {iface}"))?;
        rows.extend(
            listed
                .iter()
                .map(|(key, ban)| ban_row(iface, *key, ban, bans.ipv6_prefix(), now)),
        );
    }
    let notes = read_notes(&args.at.pins.runtime_dir());
    rows.extend(lists::list_rows(&mut denies, &notes)?);
    // A denied country is thousands of networks: listed only when asked for.
    if args.origin != Some(Origin::Country) {
        let before = rows.len();
        rows.retain(|row| row.origin != Origin::Country.name());
        let hidden = before - rows.len();
        if hidden > 0 {
            eprintln!("{hidden} networks of denied countries not shown (`block list --origin country` lists them, `top` sums their drops by country)");
        }
    }
    let interfaces: Vec<&str> = filters.iter().map(|(iface, _)| iface.as_str()).collect();
    let filtered = args.reason.is_some() || args.origin.is_some();
    rows.retain(|row| {
        args.reason
            .as_deref()
            .is_none_or(|reason| row.reason.eq_ignore_ascii_case(reason.trim()))
            && args.origin.is_none_or(|origin| row.origin == origin.name())
    });
    if let Some(limit) = args.limit {
        if rows.len() > limit {
            eprintln!("{} more not shown (--limit {limit})", rows.len() - limit);
            rows.truncate(limit);
        }
    }
    lists::print_rows(
        &rows,
        args.json,
        &format!(
            "no {}bans or denied networks on {}",
            if filtered { "matching " } else { "" },
            interfaces.join(", ")
        ),
    );
    Ok(())
}

fn flush(args: FlushArgs) -> anyhow::Result<()> {
    match args.origin {
        Some(Origin::Config) => {
            return Err(UserError(
                "the configuration's deny entries are changed in its file (`[lists] deny`), then `systemctl reload sip-filter`".to_string(),
            )
            .into())
        }
        Some(Origin::Crowdsec) => {
            return Err(UserError(
                "CrowdSec's entries follow its decisions: delete them there (`cscli decisions delete --ip ADDRESS`), and the bouncer removes them".to_string(),
            )
            .into())
        }
        Some(Origin::Country) => {
            return Err(UserError(
                "the country entries follow the `[countries]` table: change it in the configuration file, then `systemctl reload sip-filter`".to_string(),
            )
            .into())
        }
        _ => {}
    }
    let reason = args
        .reason
        .as_deref()
        .map(|text| {
            BanReason::ALL
                .into_iter()
                .find(|reason| reason.name().eq_ignore_ascii_case(text.trim()))
                .ok_or_else(|| {
                    UserError(format!(
                        "--reason {text:?}: the reasons are {}",
                        BanReason::ALL.map(BanReason::name).join(", ")
                    ))
                })
        })
        .transpose()?;
    let wanted = |ban_reason: BanReason| {
        reason.is_none_or(|reason| reason == ban_reason)
            && args
                .origin
                .is_none_or(|origin| origin.name() == ban_origin(ban_reason))
    };
    let mut denies = lists::open_lists(&args.at, ListKind::Deny)?;
    for (iface, mut bans) in open_filters(&args.at)? {
        let keys: Vec<SourceKey> = bans
            .list()
            .with_context(|| format!("reading the bans of {iface}"))?
            .into_iter()
            .filter(|(_, ban)| wanted(BanReason::from_u32(ban.reason)))
            .map(|(key, _)| key)
            .collect();
        let lifted = bans
            .remove_many(&keys)
            .with_context(|| format!("lifting bans on {iface}"))?;
        let mut removed = 0;
        for (_, deny) in denies.iter_mut() {
            // Operator entries only: their reason is manual or feed.
            let nets: Vec<IpNet> = deny
                .entries()
                .with_context(|| format!("reading the deny list of {iface}"))?
                .into_iter()
                .filter(|(_, entry)| {
                    entry.origin == LIST_ORIGIN_OPERATOR
                        && wanted(BanReason::from_u32(entry.reason))
                })
                .map(|(net, _)| net)
                .collect();
            removed += deny
                .remove_many(&nets)
                .with_context(|| format!("removing denied networks on {iface}"))?;
        }
        println!("flushed {lifted} bans and {removed} denied networks on {iface}");
    }
    Ok(())
}

/// The blocklist of the running filter, labelled with the interfaces it applies to:
/// one blocklist serves all of them (`--iface` only checks that it is one of them).
pub(super) fn open_filters(at: &Where) -> anyhow::Result<Vec<(String, PinnedBans)>> {
    let label = at.interfaces_label()?;
    let dir = at.pins.maps_dir();
    let bans = PinnedBans::open(&dir)
        .with_context(|| format!("opening the bans pinned in {}", dir.display()))?;
    Ok(vec![(label, bans)])
}

/// An address as given: alone or with a prefix length.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) address: IpAddr,
    /// The length given after `/`, if any.
    pub(super) prefix: Option<u8>,
}

impl Target {
    /// Is it one source on a filter whose IPv6 prefix is `ipv6_prefix` (banned), rather
    /// than a network (denied)?
    pub(super) fn is_single(&self, ipv6_prefix: u32) -> bool {
        match (self.address, self.prefix) {
            (_, None) => true,
            (IpAddr::V4(_), Some(prefix)) => prefix == 32,
            (IpAddr::V6(_), Some(prefix)) => prefix == 128 || u32::from(prefix) == ipv6_prefix,
        }
    }

    /// As a network (its host bits cleared).
    pub(super) fn net(&self) -> IpNet {
        let prefix = self.prefix.unwrap_or(match self.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        });
        IpNet::new(self.address, prefix)
            .map(|net| net.trunc())
            .unwrap_or_else(|_| IpNet::from(self.address))
    }

    /// For IPv6: a note that the whole prefix is affected.
    pub(super) fn prefix_note(&self, ipv6_prefix: u32) -> String {
        match self.address {
            IpAddr::V6(_) if ipv6_prefix < 128 => {
                format!(" (IPv6 sources are banned by their /{ipv6_prefix} prefix)")
            }
            _ => String::new(),
        }
    }
}

/// `198.18.0.1`, `2001:db8::1`, `2001:db8::/64`, `198.18.0.1/32`.
pub(super) fn parse_target(text: &str) -> Result<Target, UserError> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(Target {
            address,
            prefix: None,
        });
    }
    match text.parse::<IpNet>() {
        Ok(net) => Ok(Target {
            address: net.addr(),
            prefix: Some(net.prefix_len()),
        }),
        Err(_) => Err(lists::not_an_address(text)),
    }
}

/// The reasons an operator may give; the others are the filter's own.
const MANUAL_REASONS: [BanReason; 2] = [BanReason::Manual, BanReason::Feed];

pub(super) fn parse_reason(text: &str) -> Result<BanReason, UserError> {
    MANUAL_REASONS
        .into_iter()
        .find(|reason| reason.name().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| {
            UserError(format!(
                "--reason {text:?}: accepted reasons are {}",
                MANUAL_REASONS.map(BanReason::name).join(", ")
            ))
        })
}

/// The duration given to `flag` (`--ttl 1h`, `--interval 10s`, `59m 58s` as `block
/// list` prints it): never zero.
pub(super) fn parse_duration(flag: &str, text: &str) -> Result<Duration, UserError> {
    match sip_filter::duration::parse(text) {
        Ok(duration) if duration.is_zero() => Err(UserError(format!(
            "{flag} {text:?}: give more than zero, {}",
            sip_filter::duration::FORMS
        ))),
        Ok(duration) => Ok(duration),
        Err(e) => Err(UserError(format!("{flag} {e}"))),
    }
}

/// How `block list` and the verbs print a duration (`59m 58s`).
pub(super) use sip_filter::duration::format as format_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_durations_but_not_zero() {
        let secs = |text| parse_duration("--ttl", text).map(|d| d.as_secs());
        assert_eq!(secs("59m 58s").unwrap(), 3598);
        assert_eq!(secs("1h30m").unwrap(), 5400);
        assert_eq!(secs("90").unwrap(), 90);
        for bad in ["", "0s", "0", "1x", "-1h", "1.5x", "99999999999999999999d"] {
            let error = secs(bad).unwrap_err().to_string();
            assert!(error.starts_with("--ttl \""), "{bad:?}: {error}");
            assert!(error.contains("like 30s"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn targets_parse_and_route() {
        let v4 = parse_target("198.18.0.1").unwrap();
        assert_eq!(v4.address, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v4.prefix, None);
        assert!(v4.is_single(64));
        assert!(parse_target("198.18.0.1/32").unwrap().is_single(64));
        let net = parse_target("198.18.0.9/24").unwrap();
        assert!(!net.is_single(64));
        assert_eq!(net.net().to_string(), "198.18.0.0/24");

        let v6 = parse_target("2001:db8:5f::1").unwrap();
        assert!(v6.is_single(64));
        assert!(v6.prefix_note(64).contains("/64"));
        assert!(parse_target("2001:db8:5f::/64").unwrap().is_single(64));
        assert!(parse_target("2001:db8:5f::1/128").unwrap().is_single(64));
        assert!(!parse_target("2001:db8:5f::/48").unwrap().is_single(64));
        assert!(parse_target("2001:db8:5f::/48").unwrap().is_single(48));
        assert_eq!(
            parse_target("2001:db8:5f::1/48").unwrap().net().to_string(),
            "2001:db8:5f::/48"
        );

        for bad in [
            "not-an-address",
            "",
            "198.18.0",
            "198.18.0.1/33",
            "pbx.example",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_parse() {
        assert_eq!(parse_reason("manual").unwrap(), BanReason::Manual);
        assert_eq!(parse_reason("feed").unwrap(), BanReason::Feed);
        let refused = parse_reason("scanner").unwrap_err().to_string();
        assert!(refused.contains("manual, feed"), "{refused}");
    }
}
