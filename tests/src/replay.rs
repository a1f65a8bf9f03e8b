//! `sip-filter replay` driven from a test: captures written from frames built here, the
//! binary run on them with `--json`, and tables of cases, each packet's expected verdict
//! beside the one replay reported, printed whole when any differs.

use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use pcap_file::pcap::{PcapPacket, PcapWriter};
use serde_json::Value;

use crate::{
    lab::{sip_filter, write_file, TempDir, DOMAIN},
    netns::{run_bounded, Finished},
};

/// How long one replay of a test's capture may take.
const REPLAY_DEADLINE: Duration = Duration::from_secs(120);

/// Writes `frames` (Ethernet) to a pcap file at `path`, a millisecond apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut writer = PcapWriter::new(file).expect("a pcap writer");
    for (i, frame) in frames.iter().enumerate() {
        let time = Duration::from_millis(1_700_000_000_000 + i as u64);
        writer
            .write_packet(&PcapPacket::new(time, frame.len() as u32, frame))
            .expect("a packet");
    }
}

/// [`replay_json`] with the lab's domain served (`--domain DOMAIN`), as the labs' filter
/// runs, then `extra`.
pub fn replay_lab_json(capture: &Path, extra: &[&str]) -> (Finished, Vec<Value>, Value) {
    replay_json(capture, &[&["--domain", DOMAIN][..], extra].concat())
}

/// What `sip-filter replay CAPTURE --json ARGS...` printed: the packet lines and the
/// summary. Fails the test unless the replay succeeded and printed only JSON lines.
pub fn replay_json(capture: &Path, args: &[&str]) -> (Finished, Vec<Value>, Value) {
    let mut command = Command::new(sip_filter());
    command.arg("replay").arg(capture).arg("--json").args(args);
    let finished = run_bounded(command, REPLAY_DEADLINE);
    assert!(finished.success(), "replay failed:\n{finished}");
    let mut lines: Vec<Value> = finished
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{finished}"))
        })
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{finished}");
    assert!(lines.iter().all(|line| line["type"] == "packet"));
    (finished, lines, summary)
}

/// What one packet must get from the replay.
#[derive(Clone, Debug)]
pub struct Expect {
    /// "pass" or "drop".
    verdict: &'static str,
    /// The reasons allowed (any of them); empty: any reason with that verdict.
    reasons: Vec<&'static str>,
    /// Reasons that are wrong even with the right verdict.
    not_reasons: Vec<&'static str>,
    /// The method replay names, when it matters ("ACK" judged as an ACK).
    method: Option<&'static str>,
    /// The bans this packet made; None: not checked.
    bans: Option<Vec<&'static str>>,
}

impl Expect {
    /// Passed or dropped for `reason` (its name: `pass_request`, `drop_fragment`...),
    /// making no ban.
    pub fn reason(reason: &'static str) -> Self {
        let verdict = if reason.starts_with("pass") {
            "pass"
        } else {
            "drop"
        };
        Self {
            verdict,
            reasons: vec![reason],
            not_reasons: vec![],
            method: None,
            bans: Some(vec![]),
        }
    }

    /// Dropped, whatever the reason the fix picks, making no ban.
    pub fn dropped() -> Self {
        Self {
            verdict: "drop",
            reasons: vec![],
            not_reasons: vec![],
            method: None,
            bans: Some(vec![]),
        }
    }

    /// Passed, whatever the reason, making no ban.
    pub fn passed() -> Self {
        Self {
            verdict: "pass",
            ..Self::dropped()
        }
    }

    /// But not for `reason`.
    pub fn except(mut self, reason: &'static str) -> Self {
        self.not_reasons.push(reason);
        self
    }

    /// Any of `reasons` (all passes or all drops): for the packets of a flood where the
    /// limit's exact size is not the point.
    pub fn any_of(reasons: &[&'static str]) -> Self {
        let mut expect = Self::reason(reasons[0]);
        expect.verdict = if reasons.iter().all(|r| r.starts_with("pass")) {
            "pass"
        } else if reasons.iter().all(|r| r.starts_with("drop")) {
            "drop"
        } else {
            "pass or drop"
        };
        expect.reasons = reasons.to_vec();
        expect.bans = None;
        expect
    }

    /// Whatever bans the packet makes.
    pub fn bans_unchecked(mut self) -> Self {
        self.bans = None;
        self
    }

    /// Named by replay as this method (`INVITE`, `ACK`...).
    pub fn method(mut self, method: &'static str) -> Self {
        self.method = Some(method);
        self
    }

    /// Making these bans (`scanner`, `domain`, `rate`).
    pub fn bans(mut self, bans: &[&'static str]) -> Self {
        self.bans = Some(bans.to_vec());
        self
    }

    /// Whether the packet must make a ban.
    pub fn makes_bans(&self) -> bool {
        self.bans.as_ref().is_some_and(|bans| !bans.is_empty())
    }

    fn matches(&self, got: &Value) -> bool {
        let verdict_ok = match self.verdict {
            "pass or drop" => true,
            verdict => got["verdict"] == verdict,
        };
        let reason_ok = (self.reasons.is_empty()
            || self.reasons.iter().any(|r| got["reason"] == *r))
            && !self.not_reasons.iter().any(|r| got["reason"] == *r);
        let method_ok = self.method.is_none_or(|m| got["method"] == m);
        let bans_ok = self.bans.as_ref().is_none_or(|bans| {
            let got: Vec<&str> = got["bans"]
                .as_array()
                .map(|b| b.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            got == *bans
        });
        verdict_ok && reason_ok && method_ok && bans_ok
    }

    fn describe(&self) -> String {
        let mut out = self.verdict.to_string();
        if self.reasons.is_empty() && self.not_reasons.is_empty() {
            out.push_str(" (any reason)");
        } else if self.reasons.is_empty() {
            write!(out, " (not {})", self.not_reasons.join(", not ")).expect("a String");
        } else {
            write!(out, " {}", self.reasons.join("|")).expect("a String");
        }
        if let Some(method) = self.method {
            write!(out, " {method}").expect("a String");
        }
        match &self.bans {
            Some(bans) if !bans.is_empty() => {
                write!(out, " [ban:{}]", bans.join(",")).expect("a String");
            }
            _ => {}
        }
        out
    }
}

/// What replay said of a packet, in [`Expect::describe`]'s form.
fn describe_got(got: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut out = format!("{} {}", text(&got["verdict"]), text(&got["reason"]));
    if got["method"].as_str().is_some_and(|m| m != "none") {
        write!(out, " {}", text(&got["method"])).expect("a String");
    }
    let bans: Vec<String> = got["bans"]
        .as_array()
        .map(|b| b.iter().map(text).collect())
        .unwrap_or_default();
    if !bans.is_empty() {
        write!(out, " [ban:{}]", bans.join(",")).expect("a String");
    }
    out
}

/// One packet of a capture and what it must get.
pub struct Case {
    pub name: String,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

/// A capture's packets in order, each with its expected verdict: the earlier ones' bans
/// and buckets apply to the later ones, as on a live filter.
#[derive(Default)]
pub struct Cases(Vec<Case>);

impl Cases {
    pub fn new() -> Self {
        Self::default()
    }

    /// One packet.
    pub fn add(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect) {
        self.0.push(Case {
            name: name.into(),
            frame,
            expect,
        });
    }

    /// Several packets (a datagram's fragments): the first gets `first`, the others
    /// `rest` (one row in the table while they get it).
    pub fn add_all(&mut self, name: &str, frames: Vec<Vec<u8>>, first: Expect, rest: Expect) {
        let count = frames.len();
        for (i, frame) in frames.into_iter().enumerate() {
            if i == 0 {
                self.add(format!("{name}: 1 of {count}"), frame, first.clone());
            } else {
                self.add(
                    format!("{name}: the other {}", count - 1),
                    frame,
                    rest.clone(),
                );
            }
        }
    }

    /// Writes the capture, replays it with `config` (a TOML file's text), and
    /// fails with the whole table (case, expected, got) unless every packet got what
    /// it must. Returns the summary, for checks of the bans left.
    #[track_caller]
    pub fn replay(&self, tag: &str, config: &str) -> Value {
        let dir = TempDir::new(&format!("adversarial-{tag}"));
        let capture = dir.path().join(format!("{tag}.pcap"));
        let frames: Vec<Vec<u8>> = self.0.iter().map(|case| case.frame.clone()).collect();
        write_pcap(&capture, &frames);
        let config = write_file(dir.path(), "config.toml", config);
        let config = config.to_str().expect("a UTF-8 path");
        let (finished, packets, summary) = replay_json(&capture, &["--config", config]);
        assert_eq!(
            packets.len(),
            self.0.len(),
            "{tag}: one line per packet\n{finished}"
        );
        let (table, wrong) = self.table(&packets);
        // Shown with `--nocapture`; on failure, in the panic message.
        println!("{tag} ({} packets):\n{table}", self.0.len());
        if wrong > 0 {
            panic!(
                "{tag}: {wrong} of {} packets did not get their verdict (✗)\n{table}\n\
                 bans made: {}, banned at the end: {}\n{}",
                self.0.len(),
                summary["bans_made"],
                summary["banned_at_end"],
                finished.stderr
            );
        }
        summary
    }

    /// The table of case, expected, got; rows in a run alike (a flood) shown once with
    /// their count. And how many packets got something else.
    fn table(&self, packets: &[Value]) -> (String, usize) {
        let rows: Vec<Row> = self
            .0
            .iter()
            .zip(packets)
            .map(|(case, got)| Row {
                ok: case.expect.matches(got),
                name: case.name.clone(),
                expected: case.expect.describe(),
                got: describe_got(got),
            })
            .collect();
        let wrong = rows.iter().filter(|row| !row.ok).count();
        // Runs of equal rows (a flood's packets) as one line, numbered first-last.
        let mut lines: Vec<(String, &Row)> = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let run = rows[i..].iter().take_while(|row| **row == rows[i]).count();
            let number = if run > 1 {
                format!("{}-{}", i + 1, i + run)
            } else {
                format!("{}", i + 1)
            };
            lines.push((number, &rows[i]));
            i += run;
        }
        let width = |f: fn(&(String, &Row)) -> usize, least: usize| {
            lines.iter().map(f).max().unwrap_or(0).max(least)
        };
        let number_width = width(|(number, _)| number.len(), 1);
        let name_width = width(|(_, row)| row.name.len(), 4);
        let expected_width = width(|(_, row)| row.expected.len(), 8);
        let mut out = format!(
            "  {:>number_width$}  {:name_width$}  {:expected_width$}  got\n",
            "#", "case", "expected"
        );
        for (number, row) in lines {
            let mark = if row.ok { " " } else { "✗" };
            writeln!(
                out,
                "{mark} {number:>number_width$}  {:name_width$}  {:expected_width$}  {}",
                row.name, row.expected, row.got
            )
            .expect("a String");
        }
        (out, wrong)
    }
}

/// A line of the table: whether the packet got what it must, the case, expected, got.
#[derive(PartialEq)]
struct Row {
    ok: bool,
    name: String,
    expected: String,
    got: String,
}

/// The bans left at the end of a replay: (source, reason), in replay's order.
pub fn banned_at_end(summary: &Value) -> Vec<(String, String)> {
    summary["banned_at_end"]
        .as_array()
        .map(|bans| {
            bans.iter()
                .map(|ban| {
                    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
                    (text(&ban["source"]), text(&ban["reason"]))
                })
                .collect()
        })
        .unwrap_or_default()
}
