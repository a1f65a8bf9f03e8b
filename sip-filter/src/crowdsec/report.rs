//! What the CrowdSec sync tells the operator: Prometheus series (the daemon's exporter
//! serves them), and two files in the daemon's runtime directory that `status` and
//! `block list` read: `crowdsec.json` (pulls, pushes, errors; rewritten each pull) and
//! `crowdsec-decisions.json` (each decision's scenario and origin, by network;
//! rewritten when the set changes).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use prometheus::{core::Collector, Gauge, IntCounter, IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};

use super::sync::{Applied, Tally};
use crate::state::write_atomically;

pub const STATUS_FILE: &str = "crowdsec.json";
pub const DECISIONS_FILE: &str = "crowdsec-decisions.json";

/// At most this many values of a label that comes from the LAPI (an origin, a
/// decision type); more are counted as `other`, so a LAPI cannot blow up the series.
const MAX_LABEL_VALUES: usize = 16;

/// The sync's series. Cheap to clone: each is a handle on the same counter.
#[derive(Clone)]
pub struct SyncMetrics {
    applied: IntCounterVec,
    removed: IntCounter,
    ignored: IntCounterVec,
    active: IntGauge,
    pulls: IntCounterVec,
    pull_errors: IntCounterVec,
    last_pull_success: Gauge,
    pushes: IntCounterVec,
    pushed: IntCounter,
    push_queue: IntGauge,
    push_dropped: IntCounter,
    last_push_success: Gauge,
    seen_labels: std::sync::Arc<Mutex<BTreeSet<String>>>,
}

impl SyncMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let name = |n: &str, help: &str| Opts::new(format!("sip_filter_crowdsec_{n}"), help);
        Ok(Self {
            applied: IntCounterVec::new(
                name("decisions_applied_total", "CrowdSec ban decisions written to the deny list, by the decision's origin (crowdsec, cscli, sip-filter, CAPI, ...)."),
                &["origin"],
            )?,
            removed: IntCounter::with_opts(name("decisions_removed_total", "CrowdSec decisions removed from the deny list (deleted, or missing from a full pull)."))?,
            ignored: IntCounterVec::new(
                name("decisions_ignored_total", "CrowdSec decisions not applied, by decision type and why: type (not a ban), scope, origin, scenario (filtered out), invalid, expired, others (the configuration or an operator lists the network)."),
                &["type", "why"],
            )?,
            active: IntGauge::with_opts(name("decisions_active", "CrowdSec decisions on the deny list now."))?,
            pulls: IntCounterVec::new(
                name("pulls_total", "Pulls of the decision stream, by kind (full, delta) and result (ok, error)."),
                &["kind", "result"],
            )?,
            pull_errors: IntCounterVec::new(
                name("pull_errors_total", "Failed pulls, by error: unreachable, timeout, forbidden, status, too_large, malformed, kernel."),
                &["error"],
            )?,
            last_pull_success: Gauge::with_opts(name("last_pull_success_timestamp_seconds", "When the last pull succeeded, in seconds since the Unix epoch (0: never). time() minus it is the sync's age."))?,
            pushes: IntCounterVec::new(
                name("pushes_total", "Pushes of the filter's own bans to the LAPI (one or more alerts each), by result."),
                &["result"],
            )?,
            pushed: IntCounter::with_opts(name("pushed_decisions_total", "The filter's own bans the LAPI accepted."))?,
            push_queue: IntGauge::with_opts(name("push_queue", "The filter's own bans waiting to be pushed."))?,
            push_dropped: IntCounter::with_opts(name("push_dropped_total", "The filter's own bans never pushed: the queue was full while the LAPI was away."))?,
            last_push_success: Gauge::with_opts(name("last_push_success_timestamp_seconds", "When the last push succeeded, in seconds since the Unix epoch (0: never)."))?,
            seen_labels: Default::default(),
        })
    }

    /// Every series, for the exporter's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.applied.clone()),
            Box::new(self.removed.clone()),
            Box::new(self.ignored.clone()),
            Box::new(self.active.clone()),
            Box::new(self.pulls.clone()),
            Box::new(self.pull_errors.clone()),
            Box::new(self.last_pull_success.clone()),
            Box::new(self.pushes.clone()),
            Box::new(self.pushed.clone()),
            Box::new(self.push_queue.clone()),
            Box::new(self.push_dropped.clone()),
            Box::new(self.last_push_success.clone()),
        ]
    }

    /// `value` as a label, or `other` once enough distinct ones were seen.
    fn label(&self, value: &str) -> String {
        let mut seen = self
            .seen_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.contains(value) || seen.len() < MAX_LABEL_VALUES {
            seen.insert(value.to_string());
            value.to_string()
        } else {
            "other".to_string()
        }
    }

    pub fn pulled(&self, full: bool, tally: &Tally, active: usize, now_unix_ms: u64) {
        let kind = if full { "full" } else { "delta" };
        self.pulls.with_label_values(&[kind, "ok"]).inc();
        for (origin, n) in &tally.added {
            self.applied
                .with_label_values(&[self.label(origin).as_str()])
                .inc_by(*n);
        }
        self.removed.inc_by(tally.removed);
        for ((kind, why), n) in &tally.ignored {
            self.ignored
                .with_label_values(&[self.label(kind).as_str(), why])
                .inc_by(*n);
        }
        if tally.left_to_others > 0 {
            self.ignored
                .with_label_values(&["ban", "others"])
                .inc_by(tally.left_to_others);
        }
        if tally.failed > 0 {
            self.pull_errors
                .with_label_values(&["kernel"])
                .inc_by(tally.failed);
        }
        self.active.set(active as i64);
        self.last_pull_success.set(now_unix_ms as f64 / 1000.0);
    }

    pub fn pull_failed(&self, full: bool, error_kind: &str) {
        let kind = if full { "full" } else { "delta" };
        self.pulls.with_label_values(&[kind, "error"]).inc();
        self.pull_errors.with_label_values(&[error_kind]).inc();
    }

    pub fn pushed(&self, decisions: u64, now_unix_ms: u64) {
        self.pushes.with_label_values(&["ok"]).inc();
        self.pushed.inc_by(decisions);
        self.last_push_success.set(now_unix_ms as f64 / 1000.0);
    }

    pub fn push_failed(&self) {
        self.pushes.with_label_values(&["error"]).inc();
    }

    pub fn queue(&self, waiting: usize, dropped: u64) {
        self.push_queue.set(waiting as i64);
        self.push_dropped.inc_by(dropped);
    }
}

/// `crowdsec.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub api_url: String,
    pub update_frequency_ms: u64,
    pub resync_frequency_ms: u64,
    pub bouncer: Side,
    /// None when no machine is configured (the filter's bans are not pushed).
    pub signals: Option<Side>,
    /// CrowdSec decisions on the deny list.
    pub active: u64,
    /// The filter's own bans waiting to be pushed.
    pub queued: u64,
    /// Bans pushed and accepted since the start.
    pub pushed: u64,
}

/// One direction's health: the bouncer's pulls, or the signal source's pushes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    pub last_attempt_unix_ms: Option<u64>,
    pub last_success_unix_ms: Option<u64>,
    /// The last full pull (the bouncer only).
    pub last_full_unix_ms: Option<u64>,
    /// How long the last successful pull or push took, applying included.
    pub last_duration_ms: Option<u64>,
    pub errors: u64,
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
}

/// What `block list` shows beside a CrowdSec entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub scenario: String,
    pub origin: String,
    pub id: i64,
}

/// The status, shared by the bouncer's and the signal source's threads; each change is
/// written to the runtime directory.
pub struct Reporter {
    runtime_dir: PathBuf,
    status: Mutex<Status>,
}

impl Reporter {
    pub fn new(runtime_dir: &Path, status: Status) -> Self {
        Self {
            runtime_dir: runtime_dir.to_path_buf(),
            status: Mutex::new(status),
        }
    }

    /// Changes the status and writes it (a failure is logged at debug: the status file
    /// is a view, the sync goes on without it).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut status);
        let written = serde_json::to_vec_pretty(&*status)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomically(&self.runtime_dir.join(STATUS_FILE), &json));
        if let Err(e) = written {
            log::debug!("cannot write {STATUS_FILE}: {e}");
        }
    }

    /// Writes the decisions' notes.
    pub fn decisions(&self, applied: &BTreeMap<ipnet::IpNet, Applied>) {
        let notes: BTreeMap<String, Note> = applied
            .iter()
            .map(|(net, applied)| {
                (
                    net.to_string(),
                    Note {
                        scenario: applied.scenario.clone(),
                        origin: applied.origin.clone(),
                        id: applied.id,
                    },
                )
            })
            .collect();
        let written = serde_json::to_vec(&notes)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomically(&self.runtime_dir.join(DECISIONS_FILE), &json));
        if let Err(e) = written {
            log::debug!("cannot write {DECISIONS_FILE}: {e}");
        }
    }

    /// Removes both files (the daemon stops).
    pub fn remove(&self) {
        for name in [STATUS_FILE, DECISIONS_FILE] {
            let _ = std::fs::remove_file(self.runtime_dir.join(name));
        }
    }
}

/// The status file of the daemon whose runtime directory is `runtime_dir`, if it runs a
/// bouncer.
pub fn read_status(runtime_dir: &Path) -> Option<Status> {
    let bytes = std::fs::read(runtime_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The notes of the decisions on the deny list, by network (`192.0.2.1/32`).
pub fn read_notes(runtime_dir: &Path) -> BTreeMap<String, Note> {
    std::fs::read(runtime_dir.join(DECISIONS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
