use std::time::{Duration, Instant};

use anyhow::Context;
use sip_filter::{
    filter::{pinned_answer_counters, pinned_config, pinned_counters},
    stats,
};
use sip_filter_common::{
    maps::{AnswerCounters, FLAG_DRY_RUN},
    Counters,
};

use super::{block::parse_duration, pinned_filters, PinArgs};

/// Print the counters of running filters: packets by verdict reason and by SIP method,
/// and what the egress program saw leave (by kind).
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Check that the filter is attached to this interface. The counters are the
    /// filter's, shared by all its interfaces.
    #[arg(long)]
    iface: Option<String>,
    /// JSON, with `reasons`, `methods` and `answers` objects (with --watch: one object
    /// per line, with `rates` too).
    #[arg(long)]
    json: bool,
    /// Print again every interval, with packets per second by reason, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// How often --watch prints, like 1s, 500ms, 10s or 1m.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    interval: String,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let interfaces = pinned_filters(&args.pins, args.iface.as_ref())?;
    if args.watch {
        let interval = parse_duration("--interval", &args.interval)?;
        return watch(&args, &interfaces, interval);
    }
    let (total, answers, dry_run) = read(&args.pins)?;
    if args.json {
        let mut json = stats::to_json(&interfaces, &total, dry_run);
        json["answers"] = stats::answers_json(&answers);
        json["answers_tcp"] = stats::answers_tcp_json(&answers);
        println!("{json}");
    } else {
        print!("{}", stats::to_text(&interfaces, &total, dry_run));
        print!("{}", stats::answers_text(&answers));
    }
    Ok(())
}

/// The filter's counters (one set of maps for all its interfaces), the egress program's,
/// and whether it is in dry-run.
fn read(pins: &PinArgs) -> anyhow::Result<(Counters, AnswerCounters, bool)> {
    let dir = pins.maps_dir();
    let counters = pinned_counters(&dir)
        .with_context(|| format!("reading the counters pinned in {}", dir.display()))?;
    let answers = pinned_answer_counters(&dir)
        .with_context(|| format!("reading the answers' counters pinned in {}", dir.display()))?;
    // Counters of a filter in dry-run count drops that did not happen: say so.
    let dry_run = pinned_config(&dir).is_ok_and(|config| config.has(FLAG_DRY_RUN));
    Ok((counters, answers, dry_run))
}

/// Prints the counters with rates every `interval` until Ctrl-C (or SIGTERM), then
/// returns normally.
fn watch(args: &StatsArgs, interfaces: &[String], interval: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the timer")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let (mut previous, _, _) = read(&args.pins)?;
        let mut previous_at = Instant::now();
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            let (now, answers, dry_run) = read(&args.pins)?;
            let now_at = Instant::now();
            let delta = now.since(&previous);
            let seconds = now_at.duration_since(previous_at).as_secs_f64();
            if args.json {
                let mut json = stats::to_json(interfaces, &now, dry_run);
                json["rates"] = stats::rates_json(&delta, seconds);
                json["answers"] = stats::answers_json(&answers);
                json["answers_tcp"] = stats::answers_tcp_json(&answers);
                println!("{json}");
            } else {
                print!(
                    "{}",
                    stats::to_watch_text(interfaces, &now, &delta, seconds, dry_run)
                );
            }
            (previous, previous_at) = (now, now_at);
        }
    })
}
