use anyhow::Context;
use sip_filter::{
    filter::{pinned_config, pinned_counters},
    stats,
};
use sip_filter_common::maps::FLAG_DRY_RUN;

use super::{pinned_filters, PinArgs};

/// Print the counters of running filters: packets by verdict reason and by SIP method.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Check that the filter is attached to this interface. The counters are the
    /// filter's, shared by all its interfaces.
    #[arg(long)]
    iface: Option<String>,
    /// JSON, with `reasons` and `methods` objects.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let interfaces = pinned_filters(&args.pins, args.iface.as_ref())?;
    let dir = args.pins.maps_dir();
    let total = pinned_counters(&dir)
        .with_context(|| format!("reading the counters pinned in {}", dir.display()))?;
    // Counters of a filter in dry-run count drops that did not happen: say so.
    let dry_run = pinned_config(&dir).is_ok_and(|config| config.has(FLAG_DRY_RUN));
    if args.json {
        println!("{}", stats::to_json(&interfaces, &total, dry_run));
    } else {
        print!("{}", stats::to_text(&interfaces, &total, dry_run));
    }
    Ok(())
}
