use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::json;
use sip_filter::{
    filter::{key_to_string, FilterError},
    replay::{summarize, Action, AnswerVerdict, Capture, CaptureError, Outcome, Replayer, Skip},
    Capacities, Filter,
};
use sip_filter_common::{maps::BanReason, Method, Reason};

use super::{options::FilterOptions, UserError};

/// Run every packet of a capture through the filter, to test a policy before deploying it.
///
/// Loads the real XDP program (not attached anywhere) with the configuration and flags
/// given, as `run` would, and runs each captured packet through it with
/// BPF_PROG_TEST_RUN, in order: bans and buckets a packet leaves apply to the later ones.
/// Prints each packet's verdict and reason, then a summary. Reads pcap and pcapng
/// (Ethernet, Linux cooked SLL/SLL2, raw IP, BSD loopback). Needs root, like `run`.
///
/// With learning from answers on (`[answers] learn`, the default), what the server sent
/// goes through the egress program instead, so a captured brute force replays to the
/// same lockouts and bans: the packets the capture marks as sent (a cooked capture, or
/// pcapng's direction flags) and, where it does not say, those from `own_addresses`.
///
/// Time: the kernel's clock runs on during the replay, not the capture's. By default
/// packets go through as fast as they can, so rate limits and windows see the whole
/// capture as one burst; --realtime waits between packets as the capture's timestamps
/// did.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The capture: a pcap or pcapng file (tcpdump -w, dumpcap, Wireshark).
    #[arg(value_name = "CAPTURE")]
    capture: PathBuf,
    #[command(flatten)]
    filter: FilterOptions,
    /// Keep the capture's pace: wait between packets as long as the timestamps say, so
    /// rate limits, windows and ban expiry see the traffic as the filter would have.
    #[arg(long)]
    realtime: bool,
    /// With --realtime: play this many times faster (0.5: half speed). Rates are seen
    /// this many times higher, windows and bans this many times longer.
    #[arg(long, value_name = "FACTOR", requires = "realtime", value_parser = parse_speed)]
    speed: Option<f64>,
    /// JSON lines: one object per packet ("type": "packet"), then one summary ("type":
    /// "summary").
    #[arg(long)]
    json: bool,
    /// Only the summary, no line per packet (for big captures).
    #[arg(long, alias = "quiet")]
    summary: bool,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 => Ok(speed),
        _ => Err(format!(
            "{text:?} is not a speed factor above 0 (like 2 or 0.5)"
        )),
    }
}

/// A reader that stops reading (`| head`) ends the replay quietly: see SIGPIPE in
/// `main`.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    // Everything the operator gave is checked before the kernel is touched.
    let settings = args.filter.settings()?;
    let path = args.capture.display().to_string();
    let mut capture = Capture::open(&args.capture).map_err(|e| capture_error(&path, e))?;

    let mut filter = Filter::load_with(Capacities {
        tracked_sources: settings.tracked_sources,
    })
    .map_err(needs_privileges)?;
    filter.configure(&settings)?;
    // The country lists too, as `run` has them.
    sip_filter::countries::CountryLists::read(settings.countries.as_ref())
        .and_then(|read| sip_filter::countries::CountryLists::default().apply(&filter, read))
        .map_err(|e| UserError(e.to_string()))?;
    let dry_run = settings.dry_run;
    let ipv6_prefix = u32::from(settings.ipv6_prefix);
    let mut replayer = Replayer::new(filter)?;
    if settings.auth.learn {
        replayer.learn_from_answers(settings.own_addresses.clone());
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut first_time = None;
    let speed = args.speed.unwrap_or(1.0);
    let mut judging = Duration::ZERO;
    let mut span = Duration::ZERO;

    let mut index = 0u64;
    let corrupt = loop {
        let record = match capture.next_record() {
            None => break None,
            Some(Ok(record)) => record,
            Some(Err(e)) => break Some(e),
        };
        index += 1;
        let first = *first_time.get_or_insert(record.time);
        // Timestamps going backwards (merged captures) count as no wait.
        let offset = record.time.saturating_sub(first);
        span = span.max(offset);
        if args.realtime {
            let due = offset.div_f64(speed);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let judged_at = Instant::now();
        let outcome = match &record.frame {
            Ok(frame) => replayer.run(frame, record.direction)?,
            Err(skip) => Err(*skip),
        };
        judging += judged_at.elapsed();
        tally.add(&outcome);
        if !args.summary {
            let frame = record.frame.as_deref().ok();
            let line = PacketLine {
                index,
                offset,
                frame,
                outcome: &outcome,
                dry_run,
            };
            if args.json {
                writeln!(out, "{}", line.json())?;
            } else {
                writeln!(out, "{}", line.text())?;
            }
        }
    };
    let elapsed = started.elapsed();

    let mut bans = replayer.filter().bans()?;
    bans.sort_by_key(|(key, _)| *key);
    let bans_left: Vec<(String, BanReason)> = bans
        .into_iter()
        .map(|(key, ban)| {
            (
                key_to_string(key, ipv6_prefix),
                BanReason::from_u32(ban.reason),
            )
        })
        .collect();
    let report = Report {
        capture: &path,
        tally: &tally,
        packets: index,
        elapsed,
        judging,
        span: first_time.map(|_| span),
        cut_off: capture.was_cut_off(),
        realtime: args.realtime.then_some(speed),
        dry_run,
        bans_left: &bans_left,
    };
    if args.json {
        writeln!(out, "{}", report.json())?;
    } else {
        if !args.summary {
            writeln!(out)?;
        }
        write!(out, "{}", report.text())?;
    }
    out.flush()?;
    match corrupt {
        None => Ok(()),
        Some(e) => Err(capture_error(&path, e).into()),
    }
}

fn capture_error(path: &str, error: CaptureError) -> UserError {
    match error {
        CaptureError::Open { .. } => UserError(error.to_string()),
        other => UserError(format!("{path}: {other}")),
    }
}

/// Loading needs privileges the caller may lack: say what to do, on one line.
fn needs_privileges(error: FilterError) -> anyhow::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                return UserError(
                    "replay loads the XDP program into the kernel to run it: run it as root (or with CAP_BPF and CAP_PERFMON)".into(),
                )
                .into();
            }
        }
        source = e.source();
    }
    anyhow::Error::new(error).context("loading the XDP program")
}

/// Counts as the replay goes.
#[derive(Default)]
struct Tally {
    by_action: BTreeMap<&'static str, u64>,
    by_reason: BTreeMap<&'static str, u64>,
    by_skip: BTreeMap<&'static str, u64>,
    by_method: BTreeMap<&'static str, u64>,
    bans: BTreeMap<&'static str, u64>,
    /// Packets the server sent, by what the egress program took them for.
    by_answer: BTreeMap<&'static str, u64>,
    lockouts: u64,
    registrations: u64,
    /// Bans (or counts toward one) skipped, by cause (`Verdict::ban_skipped`).
    bans_skipped: BTreeMap<&'static str, u64>,
    /// Dry-run: passed, but counted under a drop reason.
    would_drop: u64,
}

impl Tally {
    fn add(&mut self, outcome: &Result<Outcome, Skip>) {
        match outcome {
            Ok(Outcome::Answer(answer)) => {
                *self.by_action.entry("answer").or_default() += 1;
                for kind in &answer.kinds {
                    *self.by_answer.entry(kind.name()).or_default() += 1;
                }
                for ban in &answer.bans {
                    *self.bans.entry(ban.name()).or_default() += 1;
                }
                self.lockouts += answer.lockouts;
                self.registrations += u64::from(answer.registered);
            }
            Ok(Outcome::Request(verdict)) => {
                *self.by_action.entry(verdict.action.name()).or_default() += 1;
                *self.by_reason.entry(verdict.reason.name()).or_default() += 1;
                if verdict.method != Method::None {
                    *self.by_method.entry(verdict.method.name()).or_default() += 1;
                }
                if verdict.action == Action::Pass && verdict.reason.is_drop() {
                    self.would_drop += 1;
                }
                for ban in &verdict.bans {
                    *self.bans.entry(ban.name()).or_default() += 1;
                }
                if let Some(cause) = verdict.ban_skipped {
                    *self.bans_skipped.entry(cause).or_default() += 1;
                }
            }
            Err(skip) => {
                *self.by_action.entry("skipped").or_default() += 1;
                *self.by_skip.entry(skip.name()).or_default() += 1;
            }
        }
    }
}

struct PacketLine<'a> {
    index: u64,
    offset: Duration,
    frame: Option<&'a [u8]>,
    outcome: &'a Result<Outcome, Skip>,
    dry_run: bool,
}

/// What an answer led to, for the packet line's note.
fn answer_note(answer: &AnswerVerdict, would: &str) -> String {
    answer
        .bans
        .iter()
        .map(|ban| format!("{would}ban:{}", ban.name()))
        .chain((answer.lockouts > 0).then(|| format!("{would}lock:{}", answer.lockouts)))
        .chain(answer.registered.then(|| "registered".to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

impl PacketLine<'_> {
    fn verdict_words(&self) -> (&'static str, String, String) {
        let would = if self.dry_run { "would " } else { "" };
        match self.outcome {
            Ok(Outcome::Answer(answer)) => {
                ("answer", answer.kind_names(), answer_note(answer, would))
            }
            Ok(Outcome::Request(verdict)) => {
                let bans = verdict
                    .bans
                    .iter()
                    .map(|ban| format!("{would}ban:{}", ban.name()))
                    .chain(
                        verdict
                            .ban_skipped
                            .map(|cause| format!("ban skipped:{cause}")),
                    )
                    .collect::<Vec<_>>()
                    .join(",");
                let action = if verdict.action == Action::Pass && verdict.reason.is_drop() {
                    "pass (would drop)"
                } else {
                    verdict.action.name()
                };
                (action, verdict.reason.name().to_string(), bans)
            }
            Err(skip) => ("skipped", skip.name().to_string(), skip.detail()),
        }
    }

    fn text(&self) -> String {
        let summary = self.frame.map(summarize).unwrap_or_default();
        let (action, reason, note) = self.verdict_words();
        let route = if summary.source.is_empty() {
            String::new()
        } else {
            format!("{} → {}", summary.source, summary.destination)
        };
        let mut line = format!(
            "{:>7} {:>+11.6}  {:<44} {:<7} {:<20} {}",
            self.index,
            self.offset.as_secs_f64(),
            route,
            action,
            reason,
            summary.summary,
        );
        if !note.is_empty() {
            line.push_str("  [");
            line.push_str(&note);
            line.push(']');
        }
        line
    }

    fn json(&self) -> serde_json::Value {
        let summary = self.frame.map(summarize).unwrap_or_default();
        let mut value = json!({
            "type": "packet",
            "index": self.index,
            "time": self.offset.as_secs_f64(),
            "source": summary.source,
            "destination": summary.destination,
            "summary": summary.summary,
        });
        match self.outcome {
            Ok(Outcome::Answer(answer)) => {
                value["verdict"] = json!("answer");
                value["reason"] = json!(answer.kind_names());
                value["bans"] = json!(answer.bans.iter().map(|b| b.name()).collect::<Vec<_>>());
                value["lockouts"] = json!(answer.lockouts);
                value["registered"] = json!(answer.registered);
            }
            Ok(Outcome::Request(verdict)) => {
                value["verdict"] = json!(verdict.action.name());
                value["reason"] = json!(verdict.reason.name());
                value["method"] = json!(verdict.method.name());
                value["bans"] = json!(verdict.bans.iter().map(|b| b.name()).collect::<Vec<_>>());
                value["ban_skipped"] = json!(verdict.ban_skipped);
            }
            Err(skip) => {
                value["verdict"] = json!("skipped");
                value["reason"] = json!(skip.name());
                value["detail"] = json!(skip.detail());
            }
        }
        value
    }
}

/// Bans the text summary lists; `--json` has them all.
const BANS_LISTED: usize = 20;

struct Report<'a> {
    capture: &'a str,
    tally: &'a Tally,
    packets: u64,
    elapsed: Duration,
    /// Time spent in test runs and counter reads alone (no reading, printing, pacing).
    judging: Duration,
    span: Option<Duration>,
    cut_off: bool,
    realtime: Option<f64>,
    dry_run: bool,
    bans_left: &'a [(String, BanReason)],
}

impl Report<'_> {
    fn judged(&self) -> u64 {
        self.packets - self.tally.by_action.get("skipped").copied().unwrap_or(0)
    }

    fn rate(&self) -> f64 {
        let seconds = self.judging.as_secs_f64();
        if seconds > 0.0 {
            self.judged() as f64 / seconds
        } else {
            0.0
        }
    }

    fn text(&self) -> String {
        let mut text = format!(
            "{}: {} packets in {:.3} s ({:.0} packets/s judged{}){}\n",
            self.capture,
            self.packets,
            self.elapsed.as_secs_f64(),
            self.rate(),
            match self.realtime {
                Some(speed) => format!("; paced at {speed}x the capture's time"),
                None => "; not paced: time-based limits saw one burst".into(),
            },
            if self.dry_run {
                "; dry-run: nothing dropped or banned, verdicts counted as made"
            } else {
                ""
            },
        );
        if self.cut_off {
            text.push_str("warning: the capture ends inside a packet record (cut off while written): the packets before it were replayed\n");
        }
        let mut table = |title: &str, rows: &BTreeMap<&str, u64>| {
            if rows.is_empty() {
                return;
            }
            text.push_str(&format!("{title:<24} packets\n"));
            for (name, count) in rows {
                text.push_str(&format!("  {name:<22} {count:>7}\n"));
            }
        };
        table("verdict", &self.tally.by_action);
        table("reason", &self.tally.by_reason);
        table("skipped", &self.tally.by_skip);
        table("request method", &self.tally.by_method);
        table("answer (egress)", &self.tally.by_answer);
        let would = if self.dry_run { "would-be " } else { "" };
        table(&format!("{would}bans made"), &self.tally.bans);
        table("bans skipped", &self.tally.bans_skipped);
        if self.tally.lockouts + self.tally.registrations > 0 {
            text.push_str(&format!(
                "learnt from answers: {} account lockouts, {} registrations\n",
                self.tally.lockouts, self.tally.registrations
            ));
        }
        if self.tally.would_drop > 0 {
            text.push_str(&format!(
                "dry-run: {} packets passed that would have been dropped\n",
                self.tally.would_drop
            ));
        }
        if !self.bans_left.is_empty() {
            text.push_str(&format!(
                "banned at the end of the replay: {}\n",
                self.bans_left.len()
            ));
            for (source, reason) in self.bans_left.iter().take(BANS_LISTED) {
                text.push_str(&format!("  {source:<40} {}\n", reason.name()));
            }
            if self.bans_left.len() > BANS_LISTED {
                text.push_str(&format!(
                    "  ... and {} more (--json lists them all)\n",
                    self.bans_left.len() - BANS_LISTED
                ));
            }
        }
        text
    }

    fn json(&self) -> serde_json::Value {
        let reasons: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .map(|r| {
                let count = self.tally.by_reason.get(r.name()).copied().unwrap_or(0);
                (r.name().to_string(), json!(count))
            })
            .collect();
        json!({
            "type": "summary",
            "capture": self.capture,
            "packets": self.packets,
            "judged": self.judged(),
            "seconds": self.elapsed.as_secs_f64(),
            "packets_per_second": self.rate(),
            "capture_seconds": self.span.map(|s| s.as_secs_f64()),
            "realtime_speed": self.realtime,
            "dry_run": self.dry_run,
            "cut_off": self.cut_off,
            "verdicts": self.tally.by_action,
            "reasons": reasons,
            "skipped": self.tally.by_skip,
            "methods": self.tally.by_method,
            "answers": self.tally.by_answer,
            "lockouts": self.tally.lockouts,
            "registrations": self.tally.registrations,
            "bans_made": self.tally.bans,
            "bans_skipped": self.tally.bans_skipped,
            "would_drop": self.tally.would_drop,
            "banned_at_end": self.bans_left.iter().map(|(source, reason)| json!({"source": source, "reason": reason.name()})).collect::<Vec<_>>(),
        })
    }
}
