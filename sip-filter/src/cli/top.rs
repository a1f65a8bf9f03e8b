use anyhow::Context;
use sip_filter::drops::pinned_source_drops;

use super::lists::Where;

/// Show the sources dropped most, with the reasons: banned and denied sources, scanners,
/// unknown-domain probes, sources over their rate limit or the global budget; a denied
/// country (`[countries]`) is one row, `country XX`, for all its networks. Counted
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
    #[command(flatten)]
    at: Where,
}

pub fn top(args: TopArgs) -> anyhow::Result<()> {
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
