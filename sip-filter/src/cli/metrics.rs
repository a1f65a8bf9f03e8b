use std::sync::Arc;

use anyhow::Context;
use sip_filter::metrics::{self, Locations, Metrics};
use tokio::signal::unix::{signal, SignalKind};

use super::{PinArgs, UserError};

/// Serve Prometheus metrics of the running filter, from outside the daemon.
///
/// `sip-filter run --metrics-addr` serves them from the daemon itself. This reads the
/// maps pinned under the pin root at each scrape; reload metrics are the daemon's only.
#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Serve at http://HOST:PORT/metrics (like 127.0.0.1:9184).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    let listener = metrics::bind(&args.listen).map_err(|e| UserError(e.to_string()))?;
    let exporter = Arc::new(Metrics::for_pin_root(Locations {
        runtime_dir: args.pins.runtime_dir(),
        pin_root: args.pins.pin_root,
    })?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        tokio::select! {
            e = metrics::serve(listener, exporter) => Err(e).context("serving metrics"),
            _ = interrupt.recv() => Ok(()),
            _ = terminate.recv() => Ok(()),
        }
    })
}
