//! `cargo xtask demo`: sip-filter against a real scanner and a real SIP server, in a few
//! seconds, leaving nothing behind.
//!
//! Two network namespaces joined by a veth pair: a client (198.18.0.1) and a server
//! (198.18.0.2) running Kamailio. The same scenario runs twice, without the filter and
//! with `sip-filter run --iface veth-server --domain pbx.example.test`: sipvicious's svmap
//! scans the server, then sipp sends a legitimate OPTIONS and REGISTER to
//! pbx.example.test. A table compares the two runs and shows the filter's counters.
//!
//! Exit status: 0 when the filter did its job (scanner unanswered, legitimate requests
//! answered, everything cleaned up), 1 when not (with why), 2 without root, 130 on
//! Ctrl-C (after cleaning up). `cargo run -p sip-filter-tests --bin demo`, as root.

use std::{
    fmt::Display,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::Context;
use serde_json::Value;
use sip_filter_tests::{
    lab::{
        counter, filter_stats, options_scenario, options_uri, register_scenario, register_uri,
        require_tools, scan, sip_filter_binary, sipp, start_filter, start_kamailio, stats_json,
        stop_filter, svmap, tear_down, PinRoot, Scan, TempDir, DOMAIN, LAB_TOOLS, SIP_PORT,
    },
    netns::{Finished, Lab, CLIENT_V4, LEGIT_CLIENT_V4, SERVER_IFACE, SERVER_V4, SIGINT},
};

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        eprintln!(
            "error: the demo needs root: it creates network namespaces and attaches an XDP \
             program.\nRun it as root: sudo cargo xtask demo"
        );
        return ExitCode::from(2);
    }
    stop_at_ctrl_c();
    let clock = Clock(Instant::now());
    match demo(&clock) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("interrupted: the lab is removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the demo; false when the filter did not behave as it should (already said why).
fn demo(clock: &Clock) -> anyhow::Result<bool> {
    println!(
        "sip-filter demo: a scanner (sipvicious's svmap) and a legitimate client (sipp)\n\
         against a SIP server (Kamailio), first without sip-filter, then with it.\n"
    );
    require_tools(LAB_TOOLS)?;
    clock.say("building sip-filter");
    let binary = sip_filter_binary(true)?;
    check_interrupted()?;

    clock.say(format!(
        "starting lab: network namespaces client (scanner {CLIENT_V4}, user agent {LEGIT_CLIENT_V4}) and server ({SERVER_V4})"
    ));
    // Dropped in reverse on an early return: processes, then pins, files, namespaces.
    let lab = Lab::new().context("building the lab")?;
    let dir = TempDir::new("demo");
    let pins = PinRoot::new("demo");
    let pin_dir = pins.link_pin(SERVER_IFACE);
    clock.say(format!(
        "starting Kamailio on {SERVER_V4}:{SIP_PORT}: it answers every request with 200 OK"
    ));
    let kamailio = start_kamailio(&lab, dir.path())?;
    check_interrupted()?;

    let open = Round::run(clock, &lab, &dir, "without the filter", "open")?;

    clock.say(format!(
        "attaching the filter: sip-filter run --iface {SERVER_IFACE} --domain {DOMAIN}"
    ));
    let (mut daemon, attached) =
        start_filter(&lab, binary, &pins, &dir.path().join("sip-filter.log"))?;
    // The log line's message alone: `ts=... level=info target=... msg="sip-filter attached to ..." iface=...`.
    let attached = attached
        .split_once("msg=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(&*attached, |(message, _)| message);
    clock.say(attached);
    check_interrupted()?;

    let filtered = Round::run(clock, &lab, &dir, "with the filter", "filtered")?;

    clock.say("reading the filter's counters: sip-filter stats --json");
    let stats = stats_json(&filter_stats(&lab, binary, &pins))?;

    clock.say("stopping the filter (SIGINT) and removing the lab");
    let stopped = stop_filter(&lab, &mut daemon, &pin_dir);
    let removed = tear_down(lab, pins, [daemon, kamailio]);
    let tmp = dir.path().to_path_buf();
    drop(dir);

    println!();
    print_table(&open, &filtered, &stats);
    println!();

    let mut problems = Problems::default();
    open.expect_found(&mut problems);
    filtered.expect_blocked(&mut problems);
    for round in [&open, &filtered] {
        round.expect_answered(&mut problems);
    }
    let probes = u64::try_from(filtered.scan.probes)?;
    let dropped = counter(&stats, "reasons", "drop_scanner")
        + counter(&stats, "reasons", "drop_unknown_domain");
    let passed = counter(&stats, "reasons", "pass_request");
    if dropped < probes || passed < 2 {
        problems.add(
            format!(
                "the counters disagree: drop_scanner + drop_unknown_domain {dropped} for \
                 {probes} scanner probe(s), pass_request {passed} for 2 legitimate requests"
            ),
            &stats,
        );
    }
    if let Err(e) = stopped {
        problems.add("the filter did not stop cleanly", format!("{e:#}"));
    }
    if let Err(e) = removed {
        problems.add("the lab was not removed cleanly", format!("{e:#}"));
    }
    if tmp.exists() {
        problems.add("a temporary directory is left", tmp.display());
    }

    if problems.0.is_empty() {
        println!(
            "sip-filter did its job: the scanner got no answer and learned nothing; the\n\
             legitimate OPTIONS and REGISTER to {DOMAIN} were answered; the filter\n\
             detached and the lab is gone ({:.1} s).\n\
             Next, on a real interface: sudo sip-filter run --iface eth0 --domain YOUR.DOMAIN\n\
             (README.md, \"Using it\").",
            clock.seconds()
        );
        Ok(true)
    } else {
        println!("FAILED: sip-filter did not behave as it should:");
        for (what, _) in &problems.0 {
            println!("  - {what}");
        }
        for (what, details) in &problems.0 {
            println!("\n===== {what} =====\n{}", details.trim_end());
        }
        Ok(false)
    }
}

/// One run of the scenario: the scanner, then the legitimate client.
struct Round {
    /// "without the filter", "with the filter".
    when: &'static str,
    svmap: Finished,
    scan: Scan,
    options: Finished,
    register: Finished,
}

impl Round {
    fn run(
        clock: &Clock,
        lab: &Lab,
        dir: &TempDir,
        when: &'static str,
        tag: &str,
    ) -> anyhow::Result<Round> {
        clock.say(format!(
            "{when}: scanning {SERVER_V4} with svmap (it waits 3 s for answers)"
        ));
        let svmap = svmap(lab);
        let scan = scan(&svmap);
        check_interrupted()?;
        clock.say(format!(
            "{when}: sipp: OPTIONS {}, REGISTER {}",
            options_uri(),
            register_uri()
        ));
        let target = format!("{SERVER_V4}:{SIP_PORT}");
        let call = |name: &str, scenario: String| {
            sipp(
                lab,
                dir.path(),
                &format!("{name}-{tag}"),
                &scenario,
                LEGIT_CLIENT_V4,
                &target,
            )
        };
        let options = call("options", options_scenario());
        let register = call("register", register_scenario());
        check_interrupted()?;
        Ok(Round {
            when,
            svmap,
            scan,
            options,
            register,
        })
    }

    fn found(&self) -> String {
        if !self.svmap.success() {
            return format!("svmap failed ({})", status(&self.svmap));
        }
        let answers = match self.scan.answers {
            0 => "no answer".to_string(),
            1 => "1 answer".to_string(),
            n => format!("{n} answers"),
        };
        let probes = match self.scan.probes {
            1 => "1 probe".to_string(),
            n => format!("{n} probes"),
        };
        let found = if self.scan.found { "yes" } else { "no" };
        format!("{found} ({probes}, {answers})")
    }

    fn learned(&self) -> String {
        match (&self.scan.user_agent, self.scan.found) {
            (Some(agent), _) => agent.clone(),
            (None, true) => "a SIP server (no User-Agent)".to_string(),
            (None, false) => "nothing".to_string(),
        }
    }

    /// Without the filter the scanner must find the server, or the lab is not working.
    fn expect_found(&self, problems: &mut Problems) {
        if !(self.svmap.success() && self.scan.answers >= 1 && self.scan.found) {
            problems.add(
                format!(
                    "{}, svmap did not find the server: the lab is not working",
                    self.when
                ),
                &self.svmap,
            );
        }
    }

    fn expect_blocked(&self, problems: &mut Problems) {
        if !self.svmap.success() || self.scan.probes == 0 {
            problems.add(
                format!("{}, svmap did not run or sent no probe", self.when),
                &self.svmap,
            );
        } else if self.scan.answers > 0 || self.scan.found {
            problems.add(
                format!(
                    "{}, the scanner was not blocked: it got {} answer(s) and learned {:?}",
                    self.when,
                    self.scan.answers,
                    self.learned()
                ),
                &self.svmap,
            );
        }
    }

    fn expect_answered(&self, problems: &mut Problems) {
        for (method, call) in [("OPTIONS", &self.options), ("REGISTER", &self.register)] {
            if !call.success() {
                problems.add(
                    format!("{}, the legitimate {method} was not answered", self.when),
                    call,
                );
            }
        }
    }
}

fn answered(call: &Finished) -> String {
    if call.success() {
        "answered (200 OK)".to_string()
    } else {
        format!("no answer ({})", status(call))
    }
}

fn status(finished: &Finished) -> String {
    match finished.code() {
        Some(code) => format!("exit {code}"),
        None => "killed at its deadline".to_string(),
    }
}

/// The two rounds side by side, then the counters of the filtered one.
fn print_table(open: &Round, filtered: &Round, stats: &Value) {
    let methods = match &stats["methods"] {
        Value::Object(methods) => methods
            .iter()
            .filter_map(|(name, count)| Some((name, count.as_u64()?)))
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "?".to_string(),
    };
    let probe = |round: &Round| round.scan.probe.clone().unwrap_or_else(|| "?".to_string());
    let none = || "-".to_string();
    let rows: Vec<[String; 3]> = vec![
        [
            String::new(),
            "without sip-filter".to_string(),
            "with sip-filter".to_string(),
        ],
        [
            "the scanner's probe".to_string(),
            probe(open),
            probe(filtered),
        ],
        [
            "scanner found the server?".to_string(),
            open.found(),
            filtered.found(),
        ],
        [
            "what the scanner learned".to_string(),
            open.learned(),
            filtered.learned(),
        ],
        [
            "legitimate OPTIONS".to_string(),
            answered(&open.options),
            answered(&filtered.options),
        ],
        [
            "legitimate REGISTER".to_string(),
            answered(&open.register),
            answered(&filtered.register),
        ],
        [
            "filter: drop_scanner".to_string(),
            none(),
            counter(stats, "reasons", "drop_scanner").to_string(),
        ],
        [
            "filter: drop_unknown_domain".to_string(),
            none(),
            counter(stats, "reasons", "drop_unknown_domain").to_string(),
        ],
        [
            "filter: sources banned".to_string(),
            none(),
            counter(stats, "bans_added", "scanner").to_string(),
        ],
        [
            "filter: pass_request".to_string(),
            none(),
            counter(stats, "reasons", "pass_request").to_string(),
        ],
        ["filter: requests by method".to_string(), none(), methods],
    ];
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (first, second) = (width(0), width(1));
    for (i, [label, without, with]) in rows.iter().enumerate() {
        println!("{label:<first$} | {without:<second$} | {with}");
        if i == 0 {
            println!(
                "{}-+-{}-+-{}",
                "-".repeat(first),
                "-".repeat(second),
                "-".repeat(width(2))
            );
        }
    }
}

/// What went wrong, each with the output that shows it.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, what: impl Into<String>, details: impl Display) {
        self.0.push((what.into(), details.to_string()));
    }
}

/// Progress lines, with the seconds since the start.
struct Clock(Instant);

impl Clock {
    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    fn say(&self, what: impl Display) {
        println!("[{:>5.1} s] {what}", self.seconds());
    }
}

/// Ctrl-C: the demo stops at the next step and removes the lab (its processes run in
/// their own process groups, so the terminal's SIGINT does not reach them).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Interrupted;

impl Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    Ok(())
}

extern "C" fn on_sigint(_signal: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn stop_at_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_sigint);
    }
}

extern "C" {
    fn geteuid() -> u32;
    fn signal(signal: i32, handler: extern "C" fn(i32)) -> usize;
}
