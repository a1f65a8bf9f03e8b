//! Counters as operators read them: a text table or JSON.

use serde_json::{json, Map, Value};
use sip_filter_common::{
    maps::{AnswerCounters, AnswerKind, BanReason, Transport},
    Counters, Method, Reason,
};

/// JSON: `reasons` (reason -> packets), `methods` (request method -> packets, whatever
/// the verdict), and totals.
pub fn to_json(interfaces: &[String], counters: &Counters, dry_run: bool) -> Value {
    let reasons: Map<String, Value> = Reason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(counters.reason_total(*r))))
        .collect();
    let methods: Map<String, Value> = Method::ALL
        .iter()
        .filter(|m| **m != Method::None)
        .map(|m| (m.name().to_string(), json!(counters.method_total(*m))))
        .collect();
    let by_ban_reason = |values: &[u64]| -> Map<String, Value> {
        BanReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), json!(values[*r as usize])))
            .collect()
    };
    let (passed, dropped) = totals(counters);
    json!({
        "interfaces": interfaces,
        "dry_run": dry_run,
        "packets": passed + dropped,
        "passed": passed,
        "dropped": dropped,
        "reasons": reasons,
        "methods": methods,
        "first_fragments": counters.first_fragments,
        "headers_truncated": counters.headers_truncated,
        "bans_added": by_ban_reason(&counters.bans_added),
        "bans_expired": by_ban_reason(&counters.bans_expired),
        "events_lost": counters.events_lost,
        "ban_skipped": {
            "bad_checksum": counters.ban_skipped_bad_checksum,
            "fragment": counters.ban_skipped_fragment,
        },
        "transports": transports_json(counters),
    })
}

// Issue 14: verdicts by transport.

/// `transport -> reason -> verdicts`, the reasons counted only.
fn transports_json(counters: &Counters) -> Value {
    let rows: Map<String, Value> = Transport::ALL
        .iter()
        .map(|t| {
            let reasons: Map<String, Value> = Reason::ALL
                .iter()
                .filter(|r| counters.transport_total(*t, **r) != 0)
                .map(|r| {
                    (
                        r.name().to_string(),
                        json!(counters.transport_total(*t, *r)),
                    )
                })
                .collect();
            (t.name().to_string(), Value::Object(reasons))
        })
        .collect();
    Value::Object(rows)
}

/// The text table's lines for the transports: every reason counted.
fn transports_text(counters: &Counters) -> String {
    let mut out = String::from(
        "
by transport and reason   packets
",
    );
    for transport in Transport::ALL {
        for reason in Reason::ALL {
            let n = counters.transport_total(transport, reason);
            if n > 0 {
                let label = format!("{} {}", transport.name(), reason.name());
                out.push_str(&format!("  {label:<24}{n:>9}\n"));
            }
        }
    }
    out
}

fn totals(counters: &Counters) -> (u64, u64) {
    Reason::ALL.iter().fold((0, 0), |(passed, dropped), r| {
        let n = counters.reason_total(*r);
        if r.is_drop() {
            (passed, dropped + n)
        } else {
            (passed + n, dropped)
        }
    })
}

/// A table for people: every reason, and the methods seen.
/// `dry_run`: drops were counted but nothing was dropped.
pub fn to_text(interfaces: &[String], counters: &Counters, dry_run: bool) -> String {
    let (passed, dropped) = totals(counters);
    let mut out = format!(
        "sip-filter on {}: {} packets, {} passed, {} {}\n\nverdict reason            packets\n",
        interfaces.join(", "),
        passed + dropped,
        passed,
        dropped,
        if dry_run {
            "would have been dropped (dry-run: all passed)"
        } else {
            "dropped"
        }
    );
    for reason in Reason::ALL {
        out.push_str(&format!(
            "  {:<24}{:>9}\n",
            reason.name(),
            counters.reason_total(reason)
        ));
    }
    out.push_str("\nrequests by method        packets\n");
    for method in Method::ALL.iter().filter(|m| **m != Method::None) {
        let n = counters.method_total(*method);
        if n > 0 {
            out.push_str(&format!("  {:<24}{:>9}\n", method.name(), n));
        }
    }
    out.push_str(&format!(
        "\nfirst fragments judged    {:>9}\nheaders past scan window  {:>9}\nbans added                {:>9}\nbans expired              {:>9}\nban skipped: bad checksum {:>9}\nban skipped: fragment     {:>9}\n",
        counters.first_fragments,
        counters.headers_truncated,
        counters.bans_added.iter().sum::<u64>(),
        counters.bans_expired.iter().sum::<u64>(),
        counters.ban_skipped_bad_checksum,
        counters.ban_skipped_fragment,
    ));
    out.push_str(&transports_text(counters));
    out
}

/// The egress program's counters: kind -> packets (`stats --json`'s `answers`).
pub fn answers_json(answers: &AnswerCounters) -> Value {
    let kinds: Map<String, Value> = AnswerKind::ALL
        .iter()
        .map(|kind| (kind.name().to_string(), json!(answers.of(*kind))))
        .collect();
    Value::Object(kinds)
}

/// The egress program's walk through TCP segments (`stats --json`'s `answers_tcp`).
pub fn answers_tcp_json(answers: &AnswerCounters) -> Value {
    let rows: Map<String, Value> = answers
        .stream_rows()
        .iter()
        .map(|(name, n)| (name.to_string(), json!(n)))
        .collect();
    Value::Object(rows)
}

/// The egress program's counters, as a section of the table: by kind (over TCP, a
/// segment's every message read counts), then the walk through TCP segments.
pub fn answers_text(answers: &AnswerCounters) -> String {
    let mut out = "
packets leaving, by kind   packets
"
    .to_string();
    for kind in AnswerKind::ALL {
        out.push_str(&format!(
            "  {:<24}{:>9}
",
            kind.name(),
            answers.of(kind)
        ));
    }
    out.push_str(&format!("\n{:<26}{:>9}\n", "answers over tcp", "count"));
    for (name, n) in answers.stream_rows() {
        out.push_str(&format!("  {name:<24}{n:>9}\n"));
    }
    out
}

/// Packets per second by reason, from the counters' change over `seconds`.
pub fn rates_json(delta: &Counters, seconds: f64) -> Value {
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let reasons: Map<String, Value> = Reason::ALL
        .iter()
        .map(|r| {
            let rate = (per_second(delta.reason_total(*r)) * 10.0).round() / 10.0;
            (r.name().to_string(), json!(rate))
        })
        .collect();
    let (passed, dropped) = totals(delta);
    json!({
        "seconds": seconds,
        "packets": per_second(passed + dropped),
        "passed": per_second(passed),
        "dropped": per_second(dropped),
        "reasons": reasons,
    })
}

/// One screen of `stats --watch`: every reason's total and its rate over the last
/// interval (`delta` over `seconds`).
pub fn to_watch_text(
    interfaces: &[String],
    counters: &Counters,
    delta: &Counters,
    seconds: f64,
    dry_run: bool,
) -> String {
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let (passed, dropped) = totals(counters);
    let (passed_now, dropped_now) = totals(delta);
    let mut out = format!(
        "sip-filter on {}{}: {:.0} packets/s, {:.0} passed/s, {:.0} dropped/s (totals {}, {}, {})\n  {:<24}{:>12}{:>12}\n",
        interfaces.join(", "),
        if dry_run { " (dry-run: nothing dropped)" } else { "" },
        per_second(passed_now + dropped_now),
        per_second(passed_now),
        per_second(dropped_now),
        passed + dropped,
        passed,
        dropped,
        "verdict reason",
        "packets",
        "per second",
    );
    for reason in Reason::ALL {
        out.push_str(&format!(
            "  {:<24}{:>12}{:>12.1}\n",
            reason.name(),
            counters.reason_total(reason),
            per_second(delta.reason_total(reason))
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        let mut c = Counters::default();
        c.packets[Reason::DropScanner as usize][Method::Options as usize] = 3;
        c.packets[Reason::PassRequest as usize][Method::Register as usize] = 2;
        c.bans_added[BanReason::Scanner as usize] = 1;
        c
    }

    #[test]
    fn json_has_reasons_methods_and_bans() {
        let json = to_json(&["eth0".into()], &counters(), false);
        assert_eq!(json["reasons"]["drop_scanner"], 3);
        assert_eq!(json["methods"]["OPTIONS"], 3);
        assert_eq!(json["methods"]["REGISTER"], 2);
        assert_eq!(json["bans_added"]["scanner"], 1);
        assert_eq!(json["dropped"], 3);
        assert_eq!(json["dry_run"], false);
    }

    #[test]
    fn watch_rates_are_per_second() {
        let text = to_watch_text(&["eth0".into()], &counters(), &counters(), 0.5, false);
        assert!(text.contains("10 packets/s"), "{text}");
        let scanner = text
            .lines()
            .find(|line| line.contains("drop_scanner"))
            .unwrap();
        assert!(scanner.ends_with("6.0"), "{scanner}");
        assert_eq!(rates_json(&counters(), 0.5)["reasons"]["drop_scanner"], 6.0);
    }

    #[test]
    fn dry_run_says_nothing_was_dropped() {
        let text = to_text(&["eth0".into()], &counters(), true);
        assert!(
            text.contains("3 would have been dropped (dry-run: all passed)"),
            "{text}"
        );
        assert!(to_text(&["eth0".into()], &counters(), false).contains("3 dropped"));
        assert_eq!(
            to_json(&["eth0".into()], &counters(), true)["dry_run"],
            true
        );
    }
}
