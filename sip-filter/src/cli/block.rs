use std::{net::IpAddr, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use ipnet::IpNet;
use sip_filter::filter::{key_to_string, monotonic_now_ns, PinnedBans};
use sip_filter_common::maps::BanReason;

use super::{pinned_filters, PinArgs, UserError};

/// Ban or unban a source by hand on running filters (from another shell while
/// `sip-filter run` runs). A banned source's packets to the SIP ports are dropped
/// (counted as drop_banned) until the ban expires or is removed.
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
}

/// Which running filters: one interface's, or all.
#[derive(clap::Args)]
struct Where {
    /// Check that the filter is attached to this interface. One blocklist serves all
    /// the filter's interfaces: a ban applies on every one.
    #[arg(long)]
    iface: Option<String>,
    #[command(flatten)]
    pins: PinArgs,
}

/// Ban an address. An IPv6 address is banned by its prefix (the filter's ipv6_prefix,
/// /64 by default), like the filter's own bans.
#[derive(clap::Args)]
struct AddArgs {
    /// An IPv4 or IPv6 address (`ADDR/32`, `ADDR/128` or the filter's IPv6 prefix
    /// length are accepted too).
    address: String,
    /// How long, like 30s, 10m, 1h, 7d (or 1h30m); default: until removed.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Why: manual (the default) or feed.
    #[arg(long, default_value = "manual")]
    reason: String,
    #[command(flatten)]
    at: Where,
}

/// Lift the ban on an address (an IPv6 address: on its prefix).
#[derive(clap::Args)]
struct DelArgs {
    /// An IPv4 or IPv6 address, as for `block add`.
    address: String,
    #[command(flatten)]
    at: Where,
}

/// List the bans: by hand and automatic (rate, scanner, domain), with the time left.
/// Expired bans stay listed, as expired, until the source's next packet removes them.
#[derive(clap::Args)]
struct ListArgs {
    /// A JSON array of objects: iface (the interfaces the ban applies to, comma
    /// separated), address, reason, until_removed, seconds_left, expired.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

pub fn block(args: BlockArgs) -> anyhow::Result<()> {
    match args.command {
        BlockCommand::Add(args) => add(args),
        BlockCommand::Del(args) => del(args),
        BlockCommand::List(args) => list(args),
    }
}

fn add(args: AddArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.address)?;
    let ttl = args.ttl.as_deref().map(parse_duration).transpose()?;
    let reason = parse_reason(&args.reason)?;
    let mut filters = open_filters(&args.at)?;
    for (_, bans) in &filters {
        target.check(bans.ipv6_prefix())?;
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
    let mut filters = open_filters(&args.at)?;
    for (_, bans) in &filters {
        target.check(bans.ipv6_prefix())?;
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

/// One line of `block list`.
struct Entry {
    iface: String,
    address: String,
    reason: &'static str,
    /// None: until removed.
    left: Option<Duration>,
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = open_filters(&args.at)?;
    let now = monotonic_now_ns();
    let mut entries = Vec::new();
    for (iface, bans) in &filters {
        let listed = bans
            .list()
            .with_context(|| format!("reading the bans of {iface}"))?;
        for (key, ban) in listed {
            entries.push(Entry {
                iface: iface.clone(),
                address: key_to_string(key, bans.ipv6_prefix()),
                reason: BanReason::from_u32(ban.reason).name(),
                left: (ban.expires_ns != u64::MAX)
                    .then(|| Duration::from_nanos(ban.expires_ns.saturating_sub(now))),
            });
        }
    }
    if args.json {
        let array: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "iface": entry.iface,
                    "address": entry.address,
                    "reason": entry.reason,
                    "until_removed": entry.left.is_none(),
                    "seconds_left": entry.left.map(|left| left.as_secs()),
                    "expired": entry.left.is_some_and(|left| left.is_zero()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(array));
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no bans on {}",
            filters
                .iter()
                .map(|(iface, _)| iface.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    let width = entries
        .iter()
        .map(|entry| entry.address.len())
        .max()
        .unwrap_or(0)
        .max("ADDRESS".len());
    let iface_width = entries
        .iter()
        .map(|entry| entry.iface.len())
        .max()
        .unwrap_or(0)
        .max("IFACE".len());
    println!(
        "{:<iface_width$}  {:<width$}  {:<8}  LEFT",
        "IFACE", "ADDRESS", "REASON"
    );
    for entry in &entries {
        let left = match entry.left {
            None => "until removed".to_string(),
            Some(left) if left.is_zero() => {
                "expired (removed on the source's next packet)".to_string()
            }
            Some(left) => format_duration(left),
        };
        println!(
            "{:<iface_width$}  {:<width$}  {:<8}  {left}",
            entry.iface, entry.address, entry.reason
        );
    }
    Ok(())
}

/// The blocklist of the running filter, labelled with the interfaces it applies to:
/// one blocklist serves all of them (`--iface` only checks that it is one of them).
fn open_filters(at: &Where) -> anyhow::Result<Vec<(String, PinnedBans)>> {
    let interfaces = match &at.iface {
        Some(iface) => {
            pinned_filters(&at.pins, Some(iface))?;
            pinned_filters(&at.pins, None)?
        }
        None => pinned_filters(&at.pins, None)?,
    };
    let dir = at.pins.maps_dir();
    let bans = PinnedBans::open(&dir)
        .with_context(|| format!("opening the bans pinned in {}", dir.display()))?;
    Ok(vec![(interfaces.join(","), bans)])
}

/// An address as given: alone or with a prefix length.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    address: IpAddr,
    /// The length given after `/`, if any.
    prefix: Option<u8>,
}

impl Target {
    /// Refuses a prefix that is neither a single address nor the filter's IPv6 prefix.
    fn check(&self, ipv6_prefix: u32) -> Result<(), UserError> {
        let Some(prefix) = self.prefix else {
            return Ok(());
        };
        let ok = match self.address {
            IpAddr::V4(_) => prefix == 32,
            IpAddr::V6(_) => prefix == 128 || u32::from(prefix) == ipv6_prefix,
        };
        if ok {
            return Ok(());
        }
        Err(UserError(match self.address {
            IpAddr::V4(_) => format!(
                "{}/{prefix}: only single addresses can be banned (for networks use the deny list in the configuration)",
                self.address
            ),
            IpAddr::V6(_) => format!(
                "{}/{prefix}: IPv6 sources are banned by their /{ipv6_prefix} prefix; give an address or a /{ipv6_prefix} (for other networks use the deny list in the configuration)",
                self.address
            ),
        }))
    }

    /// For IPv6: a note that the whole prefix is affected.
    fn prefix_note(&self, ipv6_prefix: u32) -> String {
        match self.address {
            IpAddr::V6(_) if ipv6_prefix < 128 => {
                format!(" (IPv6 sources are banned by their /{ipv6_prefix} prefix)")
            }
            _ => String::new(),
        }
    }
}

/// `198.18.0.1`, `2001:db8::1`, `2001:db8::/64`, `198.18.0.1/32`.
fn parse_target(text: &str) -> Result<Target, UserError> {
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
        Err(_) => Err(UserError(format!(
            "{text:?} is not an IPv4 or IPv6 address (like 198.51.100.7 or 2001:db8::7)"
        ))),
    }
}

/// The reasons an operator may give; the others are the filter's own.
const MANUAL_REASONS: [BanReason; 2] = [BanReason::Manual, BanReason::Feed];

fn parse_reason(text: &str) -> Result<BanReason, UserError> {
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

/// `30s`, `10m`, `1h`, `7d`, or several of them (`1h30m`); never zero.
fn parse_duration(text: &str) -> Result<Duration, UserError> {
    let refuse = || {
        UserError(format!(
            "--ttl {text:?}: expected a duration like 30s, 10m, 1h, 7d or 1h30m"
        ))
    };
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(refuse());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(refuse)?;
        if digits == 0 {
            return Err(refuse());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| refuse())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(refuse()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(refuse)?;
    }
    // Far beyond any ban worth giving, but still an expiry the kernel can hold in ns.
    if total == 0 || total > 100 * 365 * 86_400 {
        return Err(refuse());
    }
    Ok(Duration::from_secs(total))
}

/// `3d 4h`, `59m 58s`, `12s`: the two largest units.
fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let parts: Vec<String> = units
        .iter()
        .scan(secs, |left, &(size, name)| {
            let n = *left / size;
            *left %= size;
            Some((n, name))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let secs = |text| parse_duration(text).map(|d| d.as_secs()).ok();
        assert_eq!(secs("30s"), Some(30));
        assert_eq!(secs("10m"), Some(600));
        assert_eq!(secs("1h"), Some(3600));
        assert_eq!(secs("7d"), Some(7 * 86_400));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs(" 2d12h "), Some(216_000));
        for bad in [
            "",
            "0s",
            "10",
            "s",
            "1x",
            "1 h",
            "-1h",
            "1.5h",
            "h1",
            "99999999999999999999d",
        ] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(3598)), "59m 58s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(
            format_duration(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)),
            "3d 4h"
        );
    }

    #[test]
    fn targets_parse_and_check() {
        let v4 = parse_target("198.18.0.1").unwrap();
        assert_eq!(v4.address, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v4.prefix, None);
        assert!(v4.check(64).is_ok());
        assert!(parse_target("198.18.0.1/32").unwrap().check(64).is_ok());
        assert!(parse_target("198.18.0.0/24").unwrap().check(64).is_err());

        let v6 = parse_target("2001:db8:5f::1").unwrap();
        assert!(v6.check(64).is_ok());
        assert!(v6.prefix_note(64).contains("/64"));
        assert!(parse_target("2001:db8:5f::/64").unwrap().check(64).is_ok());
        assert!(parse_target("2001:db8:5f::1/128")
            .unwrap()
            .check(64)
            .is_ok());
        assert!(parse_target("2001:db8:5f::/48").unwrap().check(64).is_err());
        assert!(parse_target("2001:db8:5f::/48").unwrap().check(48).is_ok());

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
