//! Sharing bans with CrowdSec: sip-filter as a bouncer (decisions from a Local API
//! become deny-list entries in the kernel) and as a signal source (the filter's own
//! bans are pushed to the LAPI as alerts).
//!
//! - [`settings`]: the `[crowdsec]` table of the configuration file.
//! - [`api`]: the [`api::Lapi`] trait (pull decisions, push bans) and its HTTP client.
//! - [`decisions`]: the stream's JSON, Go durations, the decision filters.
//! - [`sync`]: the bouncer's engine: deltas applied, full pulls reconciled.
//! - [`signals`]: the signal source: bans batched into alerts.
//! - [`report`]: metrics and the status files `status` and `block list` read.
//!
//! Each direction runs on a thread of its own with blocking HTTP ([`CrowdsecSync`]):
//! a slow or absent LAPI never holds up the daemon's signals, event log or the kernel,
//! which keeps enforcing whatever it holds.

pub mod api;
pub mod decisions;
pub mod report;
pub mod settings;
pub mod signals;
pub mod sync;

use std::{
    path::Path,
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    filter::{monotonic_now_ns, FilterError},
    lists::{ListKind, PinnedList},
    state::Clocks,
};
use api::{HttpLapi, Lapi};
use decisions::DecisionFilter;
use report::{Reporter, Side, Status, SyncMetrics};
use settings::CrowdsecSettings;
use signals::SignalQueue;
use sync::Bouncer;

/// The longest wait between retries while the LAPI is away (or `update_frequency`, if
/// longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before retry number `failures` (1, 2, ...): `base` doubled each time, at
/// most [`MAX_BACKOFF`] (or `base`).
pub fn backoff(failures: u64, base: Duration) -> Duration {
    let base = base.max(Duration::from_millis(100));
    let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(16) as u32);
    doubled.min(MAX_BACKOFF.max(base))
}

/// An outage's log lines: the first failure (and any failure saying something new) at
/// error level, the rest at debug, and the recovery once, with how long it lasted.
pub struct Outage {
    what: &'static str,
    failures: u64,
    since: Option<Instant>,
    last_logged: String,
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            since: None,
            last_logged: String::new(),
        }
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// `held`: what the filter keeps meanwhile (enforced decisions, queued bans).
    pub fn failed(&mut self, message: &str, held: usize) {
        self.failures += 1;
        self.since.get_or_insert_with(Instant::now);
        let what = self.what;
        if message != self.last_logged {
            let meanwhile = match what {
                "pull" => {
                    format!("the filter keeps enforcing the {held} CrowdSec decision(s) it has")
                }
                _ => format!("{held} ban(s) wait in the queue"),
            };
            log::error!(target: "sip_filter::crowdsec", failures = self.failures;
                "crowdsec: {what} failed: {message}; {meanwhile}, and retries with backoff (said once, until it changes or recovers)");
            self.last_logged = message.to_string();
        } else {
            log::debug!(target: "sip_filter::crowdsec", failures = self.failures; "crowdsec: {what} failed again: {message}");
        }
    }

    pub fn recovered(&mut self, held: usize) {
        if let Some(since) = self.since.take() {
            log::info!(target: "sip_filter::crowdsec", failures = self.failures;
                "crowdsec: {} works again after {} failure(s) over {:.0?} ({held} held)",
                self.what, self.failures, since.elapsed());
        }
        self.failures = 0;
        self.last_logged.clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("the bouncer cannot open the deny list: {0}")]
    DenyList(#[from] FilterError),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
}

/// The running sync: the bouncer's thread, and the signal source's if a machine is
/// configured. Dropping it stops both (a request in flight ends within `timeout`; the
/// process may exit first, which loses nothing the kernel holds).
pub struct CrowdsecSync {
    stop: Option<Sender<()>>,
    signals: Option<SignalQueue>,
    reporter: Arc<Reporter>,
}

impl CrowdsecSync {
    /// Opens the deny list pinned in `maps_dir` and starts pulling (and pushing).
    pub fn start(
        settings: &CrowdsecSettings,
        maps_dir: &Path,
        runtime_dir: &Path,
        metrics: SyncMetrics,
    ) -> Result<Self, CrowdsecError> {
        let list = PinnedList::open(maps_dir, ListKind::Deny)?;
        let reporter = Arc::new(Reporter::new(
            runtime_dir,
            Status {
                api_url: settings.api_url.clone(),
                update_frequency_ms: settings.update_frequency.as_millis() as u64,
                resync_frequency_ms: settings.resync_frequency.as_millis() as u64,
                signals: settings.machine.as_ref().map(|_| Side::default()),
                ..Status::default()
            },
        ));
        reporter.update(|_| {});
        let (stop, stopped) = mpsc::channel();
        let bouncer = Bouncer::new(list, DecisionFilter::of(settings));
        {
            let (lapi, settings) = (HttpLapi::new(settings), settings.clone());
            let (reporter, metrics) = (reporter.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("crowdsec-pull".into())
                .spawn(move || pull_loop(lapi, bouncer, &settings, &reporter, &metrics, &stopped))
                .map_err(|e| CrowdsecError::Thread("crowdsec-pull", e))?;
        }
        let signals = match &settings.machine {
            Some(machine) => {
                let (sender, receiver) = mpsc::sync_channel(signals::CHANNEL_CAPACITY);
                let lapi = HttpLapi::new(settings);
                let machine_id = machine.machine_id.clone();
                let (reporter, thread_metrics) = (reporter.clone(), metrics.clone());
                std::thread::Builder::new()
                    .name("crowdsec-push".into())
                    .spawn(move || {
                        signals::run(lapi, &machine_id, receiver, &reporter, &thread_metrics)
                    })
                    .map_err(|e| CrowdsecError::Thread("crowdsec-push", e))?;
                Some(SignalQueue::new(sender, metrics))
            }
            None => None,
        };
        log::info!(target: "sip_filter::crowdsec", api_url = settings.api_url.as_str(),
            signals = settings.machine.is_some();
            "crowdsec: pulling decisions from {} every {:?} (in full every {:?}){}",
            settings.api_url, settings.update_frequency, settings.resync_frequency,
            if settings.machine.is_some() { "; pushing the filter's own bans" } else { "" });
        Ok(Self {
            stop: Some(stop),
            signals,
            reporter,
        })
    }

    /// Where the event reader hands the kernel's bans, if they are pushed.
    pub fn signals(&self) -> Option<&SignalQueue> {
        self.signals.as_ref()
    }
}

impl Drop for CrowdsecSync {
    fn drop(&mut self) {
        self.stop.take();
        self.signals.take();
        self.reporter.remove();
    }
}

/// The bouncer's thread: a full pull first, then deltas every `update_frequency`, a
/// full pull every `resync_frequency` and after any failure (a delta may have been
/// lost with it), until `stop` says so or is dropped.
fn pull_loop<L: Lapi>(
    mut lapi: L,
    mut bouncer: Bouncer<PinnedList>,
    settings: &CrowdsecSettings,
    reporter: &Reporter,
    metrics: &SyncMetrics,
    stop: &Receiver<()>,
) {
    let mut need_full = true;
    let mut last_full = Instant::now();
    let mut outage = Outage::new("pull");
    loop {
        let full = need_full || last_full.elapsed() >= settings.resync_frequency;
        let started = Instant::now();
        let outcome = lapi
            .pull(full)
            .map_err(|e| (e.kind(), e.to_string()))
            .and_then(|stream| {
                let now_ns = monotonic_now_ns();
                if full {
                    bouncer
                        .resync(&stream, now_ns)
                        .map_err(|e| ("kernel", format!("reading the deny list: {e}")))
                } else {
                    Ok(bouncer.apply_delta(&stream, now_ns))
                }
            });
        let now_ms = Clocks::now().unix_ms;
        let took = started.elapsed();
        match outcome {
            Ok(tally) => {
                if full {
                    need_full = false;
                    last_full = Instant::now();
                }
                let active = bouncer.applied().len();
                metrics.pulled(full, &tally, active, now_ms);
                outage.recovered(active);
                if tally.changed() {
                    log::info!(target: "sip_filter::crowdsec", added = tally.added_total(),
                        renewed = tally.renewed, removed = tally.removed, active, full,
                        ms = took.as_millis() as u64;
                        "crowdsec: {} decision(s) added, {} removed, {} active ({} pull in {took:.1?})",
                        tally.added_total(), tally.removed, active,
                        if full { "full" } else { "delta" });
                }
                if let Some(first) = &tally.first_failure {
                    log::warn!(target: "sip_filter::crowdsec", failed = tally.failed;
                        "crowdsec: {} decision(s) could not be written to the deny list (is it full?): {first}", tally.failed);
                }
                if tally.changed() || full {
                    reporter.decisions(bouncer.applied());
                }
                reporter.update(|status| {
                    let side = &mut status.bouncer;
                    side.last_attempt_unix_ms = Some(now_ms);
                    side.last_success_unix_ms = Some(now_ms);
                    if full {
                        side.last_full_unix_ms = Some(now_ms);
                    }
                    side.last_duration_ms = Some(took.as_millis() as u64);
                    side.consecutive_failures = 0;
                    status.active = active as u64;
                });
            }
            Err((kind, message)) => {
                need_full = true;
                metrics.pull_failed(full, kind);
                outage.failed(&message, bouncer.applied().len());
                reporter.update(|status| {
                    let side = &mut status.bouncer;
                    side.last_attempt_unix_ms = Some(now_ms);
                    side.errors += 1;
                    side.consecutive_failures = outage.failures();
                    side.last_error = Some(message.clone());
                });
            }
        }
        let wait = match outage.failures() {
            0 => settings.update_frequency,
            failures => backoff(
                failures,
                settings.update_frequency.min(Duration::from_secs(1)),
            ),
        };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let second = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, second).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // A slow update_frequency is never shortened past itself.
        assert_eq!(backoff(1, Duration::from_secs(120)).as_secs(), 120);
        assert_eq!(backoff(u64::MAX, second).as_secs(), 60);
    }
}
