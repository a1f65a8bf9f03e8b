use anyhow::Context;
use sip_filter::{
    destinations::{account_text, source_text, DestinationReport, RuleReport},
    drops::pinned_source_drops,
    filter::monotonic_now_ns,
};
use sip_filter_common::maps::{CALLER_ACCOUNT, CALLER_SOURCE, DESTINATION_LIMIT};

use super::lists::Where;

/// Show the sources dropped most, with the reasons: banned and denied sources, scanners,
/// unknown-domain probes, sources over their rate limit or the global budget, new
/// connections over the connection rate or budget, TLS refused for its server name; a
/// denied country (`[countries]`) is one row, `country XX`, for all its networks. Counted
/// by the kernel per source since the filter started (forgotten sources: the least
/// recently seen of 262,144 tracked; bans: when they end; deny entries: when rewritten).
#[derive(clap::Args)]
pub struct TopArgs {
    /// How many sources.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// A JSON array of objects: iface (the filter's interfaces, comma separated),
    /// source, dropped, reasons (reason -> packets), banned (ban reason or null),
    /// denied_by (config, operator, crowdsec, country or null).
    #[arg(long)]
    json: bool,
    /// Instead: the most-dialled destination prefixes (`[destinations]` rules), with
    /// their calls and drops, the sources and accounts calling them most, and the
    /// accounts blocked for their call budget. With --json: an object of iface, rules
    /// (prefix, action, calls_per_minute, calls, dropped, sources and accounts: name,
    /// calls, dropped) and blocked_accounts (account, seconds_left, breaches, drops).
    #[arg(long)]
    destinations: bool,
    #[command(flatten)]
    at: Where,
}

pub fn top(args: TopArgs) -> anyhow::Result<()> {
    if args.destinations {
        return top_destinations(&args);
    }
    let interfaces = args.at.interfaces_label()?;
    let dir = args.at.pins.maps_dir();
    let mut rows = pinned_source_drops(&dir)
        .with_context(|| format!("reading the drops by source pinned in {}", dir.display()))?;
    rows.sort_by_key(|source| std::cmp::Reverse(source.total()));
    rows.truncate(args.limit);
    if args.json {
        let array: Vec<serde_json::Value> = rows
            .iter()
            .map(|source| {
                let reasons: serde_json::Map<String, serde_json::Value> = source
                    .reasons
                    .iter()
                    .map(|(reason, n)| (reason.name().to_string(), serde_json::json!(n)))
                    .collect();
                serde_json::json!({
                    "iface": interfaces,
                    "source": source.source,
                    "dropped": source.total(),
                    "reasons": reasons,
                    "banned": source.ban.map(|reason| reason.name()),
                    "denied_by": source.denied_by,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(array));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no drops by source on {interfaces}");
        return Ok(());
    }
    let source_width = rows
        .iter()
        .map(|source| source.source.len())
        .max()
        .unwrap_or(0)
        .max("SOURCE".len());
    // One set of counters for all the interfaces: say which once, not on every row.
    let mut out = format!(
        "drops by source on {interfaces}\n{:<source_width$}  {:>10}  REASONS\n",
        "SOURCE", "DROPPED"
    );
    for source in &rows {
        let mut reasons: Vec<String> = source
            .reasons
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason.name()))
            .collect();
        if let Some(ban) = source.ban {
            reasons.push(format!("(banned: {})", ban.name()));
        }
        if let Some(origin) = source.denied_by {
            reasons.push(format!("(deny list: {origin})"));
        }
        out.push_str(&format!(
            "{:<source_width$}  {:>10}  {}\n",
            source.source,
            source.total(),
            reasons.join(", ")
        ));
    }
    print!("{out}");
    Ok(())
}

// Issue 18: `top --destinations`.

/// A rule's callers most calls first, at most `limit`: name, calls, dropped.
fn top_callers(
    report: &DestinationReport,
    rule: u32,
    kind: u32,
    limit: usize,
) -> Vec<(String, u32, u32)> {
    let mut callers: Vec<(String, u32, u32)> = report
        .callers
        .iter()
        .filter(|(key, _)| key.rule == rule && key.kind == kind)
        .map(|(_, calls)| {
            let name = if kind == CALLER_ACCOUNT {
                account_text(&calls.name)
            } else {
                source_text(&calls.name)
            };
            (name, calls.calls, calls.dropped)
        })
        .collect();
    callers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    callers.truncate(limit);
    callers
}

/// Callers shown per rule in the table.
const CALLERS_SHOWN: usize = 3;

fn top_destinations(args: &TopArgs) -> anyhow::Result<()> {
    let interfaces = args.at.interfaces_label()?;
    let dir = args.at.pins.maps_dir();
    let now = monotonic_now_ns();
    let report = DestinationReport::read_pinned(&dir, now).with_context(|| {
        format!(
            "reading the destination rules pinned in {} (is a filter with [destinations] running?)",
            dir.display()
        )
    })?;
    let mut rules: Vec<&RuleReport> = report.rules.iter().filter(|r| r.calls != 0).collect();
    rules.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.prefix.cmp(&b.prefix)));
    rules.truncate(args.limit);
    let callers = |rule: &RuleReport, kind: u32, limit: usize| {
        top_callers(&report, rule.rule.id, kind, limit)
    };
    if args.json {
        let as_json = |list: Vec<(String, u32, u32)>| -> Vec<serde_json::Value> {
            list.into_iter()
                .map(|(name, calls, dropped)| {
                    serde_json::json!({"name": name, "calls": calls, "dropped": dropped})
                })
                .collect()
        };
        let rules: Vec<serde_json::Value> = rules
            .iter()
            .map(|rule| {
                serde_json::json!({
                    "prefix": rule.prefix,
                    "action": rule.action(),
                    "calls_per_minute": (rule.rule.action == DESTINATION_LIMIT).then_some(rule.rule.per_minute),
                    "calls": rule.calls,
                    "dropped": rule.dropped,
                    "sources": as_json(callers(rule, CALLER_SOURCE, args.limit)),
                    "accounts": as_json(callers(rule, CALLER_ACCOUNT, args.limit)),
                })
            })
            .collect();
        let blocked: Vec<serde_json::Value> = report
            .blocked
            .iter()
            .map(|blocked| {
                serde_json::json!({
                    "account": blocked.account,
                    "seconds_left": blocked.until_ns.saturating_sub(now) / 1_000_000_000,
                    "breaches": blocked.breaches,
                    "drops": blocked.drops,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"iface": interfaces, "rules": rules, "blocked_accounts": blocked})
        );
        return Ok(());
    }
    let mut out = String::new();
    if rules.is_empty() {
        out.push_str(&format!(
            "no calls to a destination rule's prefix on {interfaces}\n"
        ));
    } else {
        let width = rules
            .iter()
            .map(|rule| rule.prefix.len())
            .max()
            .unwrap_or(0)
            .max("PREFIX".len());
        out.push_str(&format!(
            "most-dialled prefixes on {interfaces}\n{:<width$}  {:<6}  {:>8}  {:>8}  TOP SOURCES; TOP ACCOUNTS (calls/dropped)\n",
            "PREFIX", "ACTION", "CALLS", "DROPPED"
        ));
        let shown = |list: Vec<(String, u32, u32)>| {
            let parts: Vec<String> = list
                .into_iter()
                .map(|(name, calls, dropped)| format!("{name} {calls}/{dropped}"))
                .collect();
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        };
        for rule in &rules {
            out.push_str(&format!(
                "{:<width$}  {:<6}  {:>8}  {:>8}  {}; {}\n",
                rule.prefix,
                rule.action(),
                rule.calls,
                rule.dropped,
                shown(callers(rule, CALLER_SOURCE, CALLERS_SHOWN)),
                shown(callers(rule, CALLER_ACCOUNT, CALLERS_SHOWN)),
            ));
        }
    }
    let counters = &report.counters;
    out.push_str(&format!(
        "new INVITEs: {} ({} national, {} international, {} to names, {} without a user part; {} to numbers no rule covers; {} without an account, {} named by their From user; {} of a call counted already)\n",
        counters.invites,
        counters.dialled[2],
        counters.dialled[3],
        counters.dialled[1],
        counters.dialled[0],
        counters.unmatched,
        counters.no_account,
        counters.from_accounts,
        counters.repeats
    ));
    for blocked in &report.blocked {
        out.push_str(&format!(
            "account {:?} blocked for {} s more (call budget breached {} time(s), {} INVITE(s) dropped)\n",
            blocked.account,
            blocked.until_ns.saturating_sub(now) / 1_000_000_000,
            blocked.breaches,
            blocked.drops
        ));
    }
    print!("{out}");
    Ok(())
}
