use anyhow::Context;
use sip_filter::{
    filter::{pinned_config, pinned_counters},
    pins::interface_dir,
    stats,
};
use sip_filter_common::{maps::FLAG_DRY_RUN, Counters};

use super::{pinned_filters, PinArgs};

/// Print the counters of running filters: packets by verdict reason and by SIP method.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Only this interface's filter (default: all, summed).
    #[arg(long)]
    iface: Option<String>,
    /// JSON, with `reasons` and `methods` objects.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let root = &args.pins.pin_root;
    let interfaces = pinned_filters(&args.pins, args.iface.as_ref())?;
    let mut total = Counters::default();
    let mut dry_run = false;
    for iface in &interfaces {
        let dir = interface_dir(root, iface);
        let counters = pinned_counters(&dir)
            .with_context(|| format!("reading the counters pinned in {}", dir.display()))?;
        total.add(&counters);
        // Counters of filters in dry-run count drops that did not happen: say so.
        dry_run |= pinned_config(&dir).is_ok_and(|config| config.has(FLAG_DRY_RUN));
    }
    if args.json {
        println!("{}", stats::to_json(&interfaces, &total, dry_run));
    } else {
        print!("{}", stats::to_text(&interfaces, &total, dry_run));
    }
    Ok(())
}
