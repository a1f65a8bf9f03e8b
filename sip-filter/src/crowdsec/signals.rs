//! The signal source: the filter's own bans (scanner, domain, rate), as the kernel
//! reports them on its ring buffer, pushed to the Local API as alerts carrying
//! decisions, scenario `sip-filter/<reason>`, so that other gateways and CrowdSec's
//! other bouncers enforce them.
//!
//! Batched: the first ban waits at most [`BATCH_DELAY`] for others, and one alert per
//! scenario carries them all (1.4.6 deletes old alerts with their decisions past
//! `flush.max_items`: fewer, bigger alerts last longer). While the LAPI is away they
//! queue, at most [`MAX_QUEUED`]. A retry may post a batch the LAPI had partly stored:
//! a decision twice is harmless. Only the kernel's own bans come here: CrowdSec's
//! decisions live on the deny list, which raises no ban events, so nothing is echoed.

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv6Addr},
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sip_filter_common::maps::{ipv6_prefix_key, BanReason, Event, EventKind};

use super::{api::Lapi, backoff, report::Reporter, report::SyncMetrics, Outage};
use crate::{filter::monotonic_now_ns, state::Clocks};

/// How long the first ban of a batch waits for others.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Bans kept while the LAPI is away; older ones make room for newer.
pub const MAX_QUEUED: usize = 100_000;
/// Bans per push at most (one alert of 10,000 decisions takes 1.4.6 about 0.9 s).
const MAX_PER_PUSH: usize = 5_000;
/// The channel from the event reader: it never blocks on a slow push.
pub const CHANNEL_CAPACITY: usize = 4096;
/// CrowdSec has no "forever": a ban until removed is pushed for a year.
const LONGEST: Duration = Duration::from_secs(365 * 86_400);

/// A ban the kernel made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnBan {
    /// The source's address, IPv6 cut to the prefix the filter bans by.
    pub address: IpAddr,
    /// 32 for IPv4; the filter's IPv6 prefix for IPv6.
    pub prefix: u32,
    pub reason: BanReason,
    /// On the kernel's clock; `u64::MAX`: until removed.
    pub expires_ns: u64,
}

impl OwnBan {
    /// The ban an event reports; None for drops and dry-run would-bans.
    pub fn of_event(event: &Event, ipv6_prefix: u32) -> Option<OwnBan> {
        if event.kind != EventKind::Ban as u32 || event.dry_run != 0 {
            return None;
        }
        let v6 = Ipv6Addr::from(event.source);
        let (address, prefix) = match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), 32),
            None => {
                let prefix = ipv6_prefix.min(128);
                let key = ipv6_prefix_key(event.source, prefix);
                (IpAddr::V6(Ipv6Addr::from(key)), prefix)
            }
        };
        Some(OwnBan {
            address,
            prefix,
            reason: BanReason::from_u32(event.reason),
            expires_ns: event.expires_ns,
        })
    }

    /// CrowdSec's scope and value: an address (`Ip`), or the IPv6 prefix (`Range`).
    fn scope_value(&self) -> (&'static str, String) {
        match self.address {
            IpAddr::V6(v6) if self.prefix < 128 => ("Range", format!("{v6}/{}", self.prefix)),
            address => ("Ip", address.to_string()),
        }
    }
}

/// Where the event reader hands bans to the signal source.
#[derive(Clone)]
pub struct SignalQueue {
    sender: SyncSender<OwnBan>,
    metrics: SyncMetrics,
}

impl SignalQueue {
    pub fn new(sender: SyncSender<OwnBan>, metrics: SyncMetrics) -> Self {
        Self { sender, metrics }
    }

    /// Queues the ban `event` reports, if it is one; never blocks.
    pub fn offer(&self, event: &Event, ipv6_prefix: u32) {
        let Some(ban) = OwnBan::of_event(event, ipv6_prefix) else {
            return;
        };
        match self.sender.try_send(ban) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.queue(0, 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The alerts for `bans`, one per scenario. `now_ns` is the kernel's clock now.
pub fn alerts(bans: &[OwnBan], machine_id: &str, now_unix_ms: u64, now_ns: u64) -> Vec<Value> {
    let now = rfc3339(now_unix_ms / 1000);
    let mut by_reason: BTreeMap<&'static str, Vec<&OwnBan>> = BTreeMap::new();
    for ban in bans {
        by_reason.entry(ban.reason.name()).or_default().push(ban);
    }
    by_reason
        .into_iter()
        .filter_map(|(reason, bans)| {
            let scenario = format!("sip-filter/{reason}");
            let decisions: Vec<Value> = bans
                .iter()
                .filter_map(|ban| {
                    let left = if ban.expires_ns == u64::MAX {
                        LONGEST
                    } else {
                        Duration::from_nanos(ban.expires_ns.checked_sub(now_ns)?).min(LONGEST)
                    };
                    // Under a second left: not worth telling the fleet.
                    let seconds = left.as_secs();
                    if seconds == 0 {
                        return None;
                    }
                    let (scope, value) = ban.scope_value();
                    Some(json!({
                        "origin": "sip-filter",
                        "type": "ban",
                        "scope": scope,
                        "value": value,
                        "duration": format!("{seconds}s"),
                        "scenario": scenario,
                    }))
                })
                .collect();
            let first = decisions.first()?;
            let source = json!({"scope": first["scope"], "value": first["value"]});
            Some(json!({
                "scenario": scenario,
                "scenario_hash": "",
                "scenario_version": "",
                "message": format!("sip-filter {machine_id}: {} source(s) banned ({reason})", decisions.len()),
                "events_count": decisions.len(),
                // Expiry is stop_at plus the duration: stop_at is now (UTC).
                "start_at": now,
                "stop_at": now,
                "capacity": 0,
                "leakspeed": "0",
                "simulated": false,
                "events": [],
                "source": source,
                "decisions": decisions,
            }))
        })
        .collect()
}

/// `2026-12-05T07:23:34Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The signal source's thread: batches what `bans` brings and pushes it, until the
/// sender side is dropped (the daemon stops), then pushes what is left once.
pub fn run(
    mut lapi: impl Lapi,
    machine_id: &str,
    bans: Receiver<OwnBan>,
    reporter: &Reporter,
    metrics: &SyncMetrics,
) {
    let mut queue: VecDeque<OwnBan> = VecDeque::new();
    let mut outage = Outage::new("push");
    let mut open = true;
    while open {
        // Wait for a ban, then for the rest of its batch.
        if queue.is_empty() {
            match bans.recv() {
                Ok(ban) => queue.push_back(ban),
                Err(_) => break,
            }
        }
        open = gather(&bans, &mut queue, Instant::now() + BATCH_DELAY, metrics);
        let batch: Vec<OwnBan> = queue.iter().take(MAX_PER_PUSH).cloned().collect();
        let started = Instant::now();
        let clocks = Clocks::now();
        let alerts = alerts(&batch, machine_id, clocks.unix_ms, monotonic_now_ns());
        let pushed = if alerts.is_empty() {
            Ok(())
        } else {
            lapi.push(&alerts)
        };
        match pushed {
            Ok(()) => {
                queue.drain(..batch.len());
                metrics.pushed(batch.len() as u64, clocks.unix_ms);
                metrics.queue(queue.len(), 0);
                outage.recovered(queue.len());
                log::debug!(bans = batch.len(), alerts = alerts.len(); "crowdsec: pushed {} ban(s)", batch.len());
                reporter.update(|status| {
                    if let Some(side) = status.signals.as_mut() {
                        side.last_attempt_unix_ms = Some(clocks.unix_ms);
                        side.last_success_unix_ms = Some(clocks.unix_ms);
                        side.last_duration_ms = Some(started.elapsed().as_millis() as u64);
                        side.consecutive_failures = 0;
                    }
                    status.queued = queue.len() as u64;
                    status.pushed += batch.len() as u64;
                });
            }
            Err(e) => {
                metrics.push_failed();
                let message = e.to_string();
                outage.failed(&message, queue.len());
                reporter.update(|status| {
                    if let Some(side) = status.signals.as_mut() {
                        side.last_attempt_unix_ms = Some(clocks.unix_ms);
                        side.errors += 1;
                        side.consecutive_failures = outage.failures();
                        side.last_error = Some(message.clone());
                    }
                    status.queued = queue.len() as u64;
                });
                if open {
                    let wait = backoff(outage.failures(), BATCH_DELAY);
                    open = gather(&bans, &mut queue, Instant::now() + wait, metrics);
                }
            }
        }
    }
}

/// Takes bans from `bans` into `queue` until `deadline`; false once the sender is
/// gone. The queue keeps the newest [`MAX_QUEUED`].
fn gather(
    bans: &Receiver<OwnBan>,
    queue: &mut VecDeque<OwnBan>,
    deadline: Instant,
    metrics: &SyncMetrics,
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match bans.recv_timeout(left) {
            Ok(ban) => {
                queue.push_back(ban);
                if queue.len() > MAX_QUEUED {
                    queue.pop_front();
                    metrics.queue(queue.len(), 1);
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        if left.is_zero() {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use sip_filter_common::{maps::Transport, sip::mapped_ipv4};

    use super::*;

    const NOW_NS: u64 = 5_000_000_000_000;
    const SECOND: u64 = 1_000_000_000;

    fn event(source: [u8; 16], reason: BanReason, expires_ns: u64) -> Event {
        Event {
            source,
            kind: EventKind::Ban as u32,
            reason: reason as u32,
            method: 0,
            dry_run: 0,
            transport: Transport::Udp as u16,
            expires_ns,
            account: [0; 4],
        }
    }

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_455_414), "2026-12-05T07:23:34Z");
    }

    #[test]
    fn bans_become_alerts_one_per_scenario() {
        let v6: Ipv6Addr = "2001:db8:5f:1:aaaa::9".parse().unwrap();
        let bans: Vec<OwnBan> = [
            event(
                mapped_ipv4([203, 0, 113, 99]),
                BanReason::Scanner,
                NOW_NS + 3600 * SECOND,
            ),
            event(
                mapped_ipv4([203, 0, 113, 98]),
                BanReason::Scanner,
                NOW_NS + 60 * SECOND,
            ),
            event(v6.octets(), BanReason::Rate, NOW_NS + 300 * SECOND),
            // Over already: left out.
            event(
                mapped_ipv4([203, 0, 113, 97]),
                BanReason::Domain,
                NOW_NS - SECOND,
            ),
        ]
        .iter()
        .filter_map(|e| OwnBan::of_event(e, 64))
        .collect();
        let alerts = alerts(&bans, "gw1", 1_796_455_414_000, NOW_NS);
        assert_eq!(alerts.len(), 2, "{alerts:#?}");
        let rate = &alerts[0];
        assert_eq!(rate["scenario"], "sip-filter/rate");
        assert_eq!(rate["decisions"][0]["scope"], "Range");
        assert_eq!(rate["decisions"][0]["value"], "2001:db8:5f:1::/64");
        assert_eq!(rate["decisions"][0]["duration"], "300s");
        let scanner = &alerts[1];
        assert_eq!(scanner["scenario"], "sip-filter/scanner");
        assert_eq!(scanner["events_count"], 2);
        assert_eq!(scanner["stop_at"], "2026-12-05T07:23:34Z");
        assert_eq!(
            scanner["source"],
            json!({"scope": "Ip", "value": "203.0.113.99"})
        );
        let decision = &scanner["decisions"][1];
        assert_eq!(decision["origin"], "sip-filter");
        assert_eq!(decision["type"], "ban");
        assert_eq!(decision["value"], "203.0.113.98");
        assert_eq!(decision["duration"], "60s");
        // Every field 1.4.6 requires is there.
        for field in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
            "source",
            "decisions",
        ] {
            assert!(scanner.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn dry_run_bans_and_drops_are_not_pushed() {
        let mut dry = event(mapped_ipv4([192, 0, 2, 1]), BanReason::Scanner, u64::MAX);
        dry.dry_run = 1;
        assert_eq!(OwnBan::of_event(&dry, 64), None);
        let mut drop = dry;
        drop.dry_run = 0;
        drop.kind = EventKind::Drop as u32;
        assert_eq!(OwnBan::of_event(&drop, 64), None);
        let forever = event(mapped_ipv4([192, 0, 2, 1]), BanReason::Scanner, u64::MAX);
        let ban = OwnBan::of_event(&forever, 64).unwrap();
        let alerts = alerts(&[ban], "gw1", 0, NOW_NS);
        assert_eq!(alerts[0]["decisions"][0]["duration"], "31536000s");
    }
}
