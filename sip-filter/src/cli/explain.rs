use std::{net::IpAddr, time::Duration};

use anyhow::Context;
use sip_filter::{
    crowdsec::report::read_notes,
    events::account_name,
    explain::{explain as read_explanation, Bucket, Explanation, ListMatch, Verdict},
    filter::key_to_string,
    learnt::LockScope,
    lists::ListKind,
};
use sip_filter_common::Reason;

use super::{
    block::{ban_row, format_duration},
    lists::{left, left_text, Row, Where},
    UserError,
};

/// Say why an address is blocked, or not ("why is this customer blocked?"), from the
/// running filter's maps.
///
/// Shows the allow and deny entries covering it, its ban (reason,
/// origin, time left, drops), its rate-limit buckets, its strikes toward an automatic
/// ban, its drops by reason, whether it is registered and which accounts are locked
/// for it, and a one-line verdict on its next packet. An IPv6 address
/// is banned and tracked by its prefix (the filter's ipv6_prefix, /64 by default): the
/// prefix is what is shown. Nothing is changed.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// An IPv4 or IPv6 address (a customer's public address).
    address: String,
    /// One JSON object: address, key (what bans and state are kept under), iface,
    /// dry_run, verdict {dropped, reason, limited, text}, allow and deny (the entries
    /// covering it, longest first, as in `block list --json`, with `effective`), ban
    /// (or null), tracked, buckets, global_budget, strikes, drops (reason -> packets),
    /// automatic_bans and last_ban_s (repeat offenders: its remembered automatic bans),
    /// registered (account, seconds_left; or null), locked (account, source: an
    /// address or null for every unregistered source, failures, drops, seconds_left).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let address: IpAddr = args.address.trim().parse().map_err(|_| {
        UserError(format!(
            "{:?} is not an IPv4 or IPv6 address (like 198.51.100.7 or 2001:db8::7); explain looks at one address, not a network",
            args.address
        ))
    })?;
    let iface = args.at.interfaces_label()?;
    let dir = args.at.pins.maps_dir();
    let found = read_explanation(&dir, address)
        .with_context(|| format!("reading the maps pinned in {}", dir.display()))?;
    let rows = Rows::of(&found, &iface, &args.at);
    let verdict = found.verdict();
    if args.json {
        println!("{}", json(&found, &rows, &verdict, &iface));
    } else {
        print!("{}", text(&found, &rows, &verdict, &iface));
    }
    Ok(())
}

/// The list entries and the ban, as `block list` shows them.
struct Rows {
    allow: Vec<Row>,
    deny: Vec<Row>,
    ban: Option<Row>,
}

impl Rows {
    fn of(found: &Explanation, iface: &str, at: &Where) -> Rows {
        let notes = read_notes(&at.pins.runtime_dir());
        let rows = |kind, matches: &[ListMatch]| -> Vec<Row> {
            matches
                .iter()
                .map(|m| Row::of_entry(iface, kind, m.network, &m.entry, found.now_ns, &notes))
                .collect()
        };
        Rows {
            allow: rows(ListKind::Allow, &found.allow),
            deny: rows(ListKind::Deny, &found.deny),
            ban: found.ban.as_ref().map(|ban| {
                ban_row(
                    iface,
                    found.key,
                    ban,
                    found.config.ipv6_prefix,
                    found.now_ns,
                )
            }),
        }
    }
}

/// The one line an operator reads first.
fn verdict_line(found: &Explanation, rows: &Rows, verdict: &Verdict) -> String {
    let mut line = match verdict.reason {
        Some(_) => {
            let left = if verdict.reason == Some(Reason::DropDenied) {
                rows.deny.first().map(Row::left_text)
            } else {
                rows.ban.as_ref().map(Row::left_text)
            };
            match left.as_deref() {
                Some("until removed") | None => {
                    format!("would be dropped: {}, until removed", verdict.cause)
                }
                Some(left) => format!("would be dropped: {}, {left} left", verdict.cause),
            }
        }
        None if verdict.limited.is_empty() => format!("would pass: {}", verdict.cause),
        None => {
            let classes: Vec<String> = verdict
                .limited
                .iter()
                .map(|bucket| {
                    let what = match bucket.class {
                        "register" => "a REGISTER",
                        "invite" => "an INVITE",
                        "other" => "another request",
                        "answers" => "a response or keep-alive",
                        "untrusted_total" => "any request (the untrusted sources' common budget)",
                        _ => "any request",
                    };
                    format!(
                        "{what} would be dropped: its {} bucket is empty, admits again in {}",
                        bucket.class,
                        short_duration(bucket.admits_in)
                    )
                })
                .collect();
            format!(
                "{}; otherwise would pass: {}",
                classes.join("; "),
                verdict.cause
            )
        }
    };
    if found.dry_run() {
        line = format!("{line} (dry-run: only counted, nothing is dropped)");
    }
    line
}

fn text(found: &Explanation, rows: &Rows, verdict: &Verdict, iface: &str) -> String {
    let mut out = String::new();
    let key = found.key_text();
    let keyed = if key == found.address.to_string() {
        String::new()
    } else {
        format!(" (banned and tracked as {key})")
    };
    out.push_str(&format!("{}{keyed} on {iface}\n", found.address));
    out.push_str(&format!(
        "verdict: {}\n",
        verdict_line(found, rows, verdict)
    ));
    for (title, kind_rows, effective) in [
        ("allow list", &rows.allow, found.trusted_by().is_some()),
        ("deny list", &rows.deny, found.denied_by().is_some()),
    ] {
        if kind_rows.is_empty() {
            out.push_str(&format!("{title}: no entry covers it\n"));
        }
        let trusted = found.trusted_by().is_some();
        for (index, row) in kind_rows.iter().enumerate() {
            let note = match (index, effective) {
                (0, true) => "",
                (0, false) if trusted && title == "deny list" => {
                    " (not applied: trusted sources are never denied)"
                }
                (0, false) => " (expired: ignored)",
                _ => " (a longer entry takes precedence)",
            };
            out.push_str(&format!("{title}: {}{note}\n", describe(row)));
        }
    }
    match &rows.ban {
        Some(row) if found.trusted_by().is_some() => out.push_str(&format!(
            "ban: {} (not applied: trusted sources are never banned)\n",
            describe(row)
        )),
        Some(row) => out.push_str(&format!("ban: {}\n", describe(row))),
        None => out.push_str("ban: none\n"),
    }
    if found.state.is_none() {
        out.push_str(
            "source state: not tracked (no request from it lately, or forgotten: the filter keeps the most recently seen sources)\n",
        );
    }
    let buckets: Vec<String> = found.buckets().iter().map(describe_bucket).collect();
    if !buckets.is_empty() {
        out.push_str(&format!("buckets: {}\n", buckets.join("; ")));
    }
    if found.trusted_by().is_none() {
        if let Some(budget) = found.global_budget() {
            out.push_str(&format!(
                "global budget of untrusted sources: {}\n",
                describe_bucket(&budget)
            ));
        }
    }
    let strikes: Vec<String> = found
        .strikes()
        .iter()
        // A rule that is off and counted nothing says nothing.
        .filter(|strikes| strikes.threshold > 0 || strikes.hits > 0)
        .map(|strikes| {
            if strikes.threshold == 0 {
                format!("{} {} (rule off)", strikes.rule, strikes.hits)
            } else if strikes.hits == 0 {
                format!("{} 0 of {}", strikes.rule, strikes.threshold)
            } else {
                format!(
                    "{} {} of {} (the window ends in {})",
                    strikes.rule,
                    strikes.hits,
                    strikes.threshold,
                    short_duration(strikes.window_left)
                )
            }
        })
        .collect();
    if !strikes.is_empty() {
        out.push_str(&format!("strikes toward a ban: {}\n", strikes.join("; ")));
    }
    if let Some(state) = found.state.filter(|state| state.bans > 0) {
        let rules = &found.config.bans;
        let growth = if rules.repeat_factor > 1 {
            format!(
                "; a new one within {} of its end lasts {}x as long, up to {}",
                short_duration(Duration::from_nanos(rules.repeat_window_ns)),
                rules.repeat_factor,
                short_duration(Duration::from_nanos(rules.repeat_max_ns)),
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "banned automatically {} time(s) (the last for {}){growth}\n",
            state.bans,
            short_duration(Duration::from_nanos(state.last_ban_ns)),
        ));
    }
    let drops: Vec<String> = found
        .drops()
        .iter()
        .map(|(reason, n)| format!("{} {n}", reason.name()))
        .collect();
    out.push_str(&format!(
        "drops: {}\n",
        if drops.is_empty() {
            "none counted".to_string()
        } else {
            drops.join(", ")
        }
    ));
    out.push_str(&format!(
        "registered: {}\n",
        found
            .registration
            .map_or("no".to_string(), |registration| format!(
                "yes, last as {} ({} left)",
                account_name(&registration.account),
                left_text(left(registration.expires_ns, found.now_ns))
            ))
    ));
    let locked: Vec<String> = found
        .locked()
        .iter()
        .map(|locked| {
            format!(
                "{} ({}, {} failures, {} drops, {} left)",
                locked.account(),
                match locked.scope {
                    LockScope::Source(_) => "for this source",
                    LockScope::Unregistered => "for every unregistered source",
                },
                locked.lockout.failures,
                locked.lockout.drops,
                left_text(left(locked.lockout.locked_until_ns, found.now_ns))
            )
        })
        .collect();
    out.push_str(&format!(
        "locked accounts: {}\n",
        if locked.is_empty() {
            "none".to_string()
        } else {
            locked.join("; ")
        }
    ));
    out
}

/// `198.18.0.0/24 (operator, feed, 59m 58s left, 3 drops)`.
fn describe(row: &Row) -> String {
    let mut parts = vec![row.origin.to_string()];
    if row.reason != "-" {
        parts.push(row.reason.clone());
    }
    parts.push(match row.left_text().as_str() {
        "until removed" => "until removed".to_string(),
        "expired" => "expired".to_string(),
        left => format!("{left} left"),
    });
    if let Some(drops) = row.drops {
        parts.push(format!("{drops} drops"));
    }
    format!("{} ({})", row.address, parts.join(", "))
}

/// `register 118 of 120 (10/s), full in 200ms`.
fn describe_bucket(bucket: &Bucket) -> String {
    let mut text = format!(
        "{} {} of {} ({}/s)",
        bucket.class, bucket.available, bucket.burst, bucket.rate
    );
    if bucket.available == 0 {
        text.push_str(&format!(
            ", admits again in {}",
            short_duration(bucket.admits_in)
        ));
    } else if !bucket.full_in.is_zero() {
        text.push_str(&format!(", full in {}", short_duration(bucket.full_in)));
    }
    text
}

/// Below a second in milliseconds, above it as `block list` shows time left.
fn short_duration(duration: Duration) -> String {
    if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format_duration(duration)
    }
}

fn json(found: &Explanation, rows: &Rows, verdict: &Verdict, iface: &str) -> serde_json::Value {
    let entries = |rows: &[Row], effective: bool| -> Vec<serde_json::Value> {
        rows.iter()
            .enumerate()
            .map(|(index, row)| {
                let mut value = row.to_json();
                value["effective"] = serde_json::json!(index == 0 && effective);
                value
            })
            .collect()
    };
    let bucket = |bucket: &Bucket| {
        serde_json::json!({
            "class": bucket.class,
            "rate": bucket.rate,
            "burst": bucket.burst,
            "available": bucket.available,
            "admits_in_ms": bucket.admits_in.as_millis() as u64,
            "full_in_ms": bucket.full_in.as_millis() as u64,
        })
    };
    let drops: serde_json::Map<String, serde_json::Value> = found
        .drops()
        .iter()
        .map(|(reason, n)| (reason.name().to_string(), serde_json::json!(n)))
        .collect();
    serde_json::json!({
        "address": found.address.to_string(),
        "key": found.key_text(),
        "iface": iface,
        "dry_run": found.dry_run(),
        "verdict": {
            "dropped": verdict.reason.is_some(),
            "reason": verdict.reason.map(|reason| reason.name()),
            "limited": verdict.limited.iter().map(|b| b.class).collect::<Vec<_>>(),
            "text": verdict_line(found, rows, verdict),
        },
        "allow": entries(&rows.allow, found.trusted_by().is_some()),
        "deny": entries(&rows.deny, found.denied_by().is_some()),
        "ban": rows.ban.as_ref().map(Row::to_json),
        "tracked": found.state.is_some(),
        "buckets": found.buckets().iter().map(bucket).collect::<Vec<_>>(),
        "global_budget": found.global_budget().as_ref().map(bucket),
        "strikes": found.strikes().iter().map(|s| serde_json::json!({
            "rule": s.rule,
            "hits": s.hits,
            "threshold": s.threshold,
            "window_left_s": s.window_left.as_secs(),
        })).collect::<Vec<_>>(),
        "drops": drops,
        "automatic_bans": found.state.map_or(0, |state| state.bans),
        "last_ban_s": found.state.map_or(0, |state| state.last_ban_ns / 1_000_000_000),
        "registered": found.registration.map(|registration| serde_json::json!({
            "account": account_name(&registration.account),
            "seconds_left": left(registration.expires_ns, found.now_ns).map(|left| left.as_secs()),
        })),
        "locked": found.locked().iter().map(|locked| serde_json::json!({
            "account": locked.account(),
            "source": match locked.scope {
                LockScope::Source(key) => Some(key_to_string(key, found.config.ipv6_prefix)),
                LockScope::Unregistered => None,
            },
            "failures": locked.lockout.failures,
            "drops": locked.lockout.drops,
            "seconds_left": left(locked.lockout.locked_until_ns, found.now_ns).map(|left| left.as_secs()),
        })).collect::<Vec<_>>(),
    })
}
