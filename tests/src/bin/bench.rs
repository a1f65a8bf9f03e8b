//! The benchmark (`cargo xtask bench`, as root). Three parts, one run:
//!
//! 1. Per packet, by class, with BPF_PROG_TEST_RUN: the real program beside reference
//!    programs from the same object, measured in the same run on the same frame:
//!    `ref_drop` (a bare XDP_DROP: what the test-run loop itself costs),
//!    `ref_parse_headers` (Ethernet/IP/UDP parsing only), `ref_parse_update` (parsing,
//!    one per-source LRU update and a per-CPU counter), `ref_scan` (parsing, the
//!    payload copy and one pass over its bytes in `bpf_loop`), `ref_calls` (parsing
//!    and 16 `bpf_loop` steps: the price of a call) and `ref_scan_in_place` (parsing
//!    and the same pass over the payload where it lies, in a plain loop: no copy, no
//!    call). Each figure is the median over several runs of many repeats; the programs
//!    take turns within a run, so drift hits them alike. Each class's figure is set against its target (issue #5).
//! 2. State growth: the same, for a banned, a denied and an allowed source, with small
//!    and large blocklists, deny lists and tracked-source tables.
//! 3. The packet path ([`sip_filter_tests::pathbench`]): floods through sip-filter,
//!    iptables, nftables and Kamailio's own modules in network namespaces.
//! 4. Password guessing side by side ([`sip_filter_tests::guessbench`]): a brute force
//!    of a Kamailio registrar stopped by sip-filter, then by fail2ban.
//! 5. The daemon with a million entries ([`sip_filter_tests::daemonbench`]): a million
//!    bans and a million deny entries imported through `sip-filter block import`, then
//!    a Prometheus scrape and the stop timed against their targets.
//!
//! Figures, not a test: these machines are shared and noisy. The results go to the
//! terminal, and with `--json FILE` / `--markdown FILE` to files (`cargo xtask bench`
//! writes BENCHMARKS.json and BENCHMARKS.md).
//!
//! Flags: `--quick` (3 runs of 10,000 repeats, small tables, a tiny path benchmark),
//! `--runs N`, `--repeat R`, `--json FILE`, `--markdown FILE`, `--no-growth`,
//! `--no-path`, `--no-guessing`, `--guessing-only` (part 4 alone, written into the
//! `--json` file's earlier results and the report rendered again), `--no-daemon`,
//! `--daemon-only` (part 5 alone, likewise), `--class PART` (only the classes whose name contains PART, nothing
//! else: to profile one path with `perf record`), `--render JSON --markdown FILE` (the
//! report of an earlier run, measuring nothing).

use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, MapData};
use serde_json::{json, Value};
use sip_filter::{
    bpf_sys,
    filter::{
        load_reference, monotonic_now_ns, Capacities, Reference, REFERENCE_PROGRAMS,
        TC_REFERENCE_PROGRAM,
    },
    settings::{BanRules, RateLimit, RateLimits},
    state::{self, Clocks, State, StateMaps},
    Filter, Settings,
};
use sip_filter_common::maps::{
    names, Ban, BanReason, ListEntry, SourceKey, SourceState, MAX_BANS, MAX_LIST_ENTRIES,
    MAX_SOURCES,
};
use sip_filter_common::{
    bounded::REF_CALLS, sip::MAX_EXAMINED_LINES, tls::builder::Hello, SCAN_LEN,
};
use sip_filter_tests::{daemonbench, guessbench, packets::*, pathbench};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Args {
    runs: usize,
    repeat: u32,
    quick: bool,
    json: Option<String>,
    markdown: Option<String>,
    growth: bool,
    /// Only the state save (what a stop costs).
    state_save_only: bool,
    path: bool,
    guessing: bool,
    /// Only the password guessing, merged into the `--json` file's earlier results.
    guessing_only: bool,
    daemon: bool,
    /// Only the daemon with a million entries, merged likewise.
    daemon_only: bool,
    /// Only the classes whose name contains this (for profiling one path).
    only: Option<String>,
    /// Write the report of an earlier run's JSON (with `--markdown`), measuring nothing.
    render: Option<String>,
    /// Each path flood's length, in place of the default (or `--quick`'s).
    flood_seconds: Option<u64>,
    /// Runs per set-up and flood of the NIC-like path (0: leave it out).
    nic_runs: Option<usize>,
    /// Each NIC-like flood's length.
    nic_seconds: Option<u64>,
    /// Only the packet paths (no per-packet tables, state growth, answers or guessing).
    path_only: bool,
}

const USAGE: &str = "bench [--quick] [--runs N (7)] [--repeat R (1000000)] [--json FILE] \
                     [--markdown FILE] [--no-growth] [--state-save-only] [--no-path] [--no-guessing] \
                     [--guessing-only] [--no-daemon] [--daemon-only] [--class PART-OF-NAME] \
                     [--flood-seconds S] [--nic-runs N (5; 0: no NIC-like path)] [--nic-seconds S (4)] \
                     [--path-only] \
                     [--render JSON --markdown FILE]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 7,
        repeat: 1_000_000,
        quick: false,
        json: None,
        markdown: None,
        growth: true,
        state_save_only: false,
        path: true,
        guessing: true,
        guessing_only: false,
        daemon: true,
        daemon_only: false,
        only: None,
        render: None,
        flood_seconds: None,
        nic_runs: None,
        nic_seconds: None,
        path_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                args.quick = true;
                args.runs = 3;
                args.repeat = 10_000;
            }
            "--runs" => {
                args.runs = it.next().context("--runs needs a number")?.parse()?;
            }
            "--repeat" => {
                args.repeat = it.next().context("--repeat needs a number")?.parse()?;
            }
            "--json" => args.json = Some(it.next().context("--json needs a file name")?),
            "--markdown" => {
                args.markdown = Some(it.next().context("--markdown needs a file name")?)
            }
            "--render" => args.render = Some(it.next().context("--render needs a JSON file")?),
            "--no-growth" => args.growth = false,
            "--state-save-only" => args.state_save_only = true,
            "--no-path" => args.path = false,
            "--no-guessing" => args.guessing = false,
            "--guessing-only" => args.guessing_only = true,
            "--no-daemon" => args.daemon = false,
            "--daemon-only" => args.daemon_only = true,
            "--flood-seconds" => {
                let seconds = it.next().context("--flood-seconds needs a number")?;
                args.flood_seconds = Some(seconds.parse()?);
            }
            "--nic-runs" => {
                args.nic_runs = Some(it.next().context("--nic-runs needs a number")?.parse()?);
            }
            "--nic-seconds" => {
                let seconds = it.next().context("--nic-seconds needs a number")?;
                args.nic_seconds = Some(seconds.parse()?);
            }
            "--path-only" => {
                args.path_only = true;
                args.growth = false;
                args.guessing = false;
                args.daemon = false;
            }
            "--class" => {
                args.only = Some(it.next().context("--class needs part of a name")?);
                args.growth = false;
                args.path = false;
                args.guessing = false;
                args.daemon = false;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: {USAGE})"),
        }
    }
    if args.runs == 0 || args.repeat == 0 {
        bail!("--runs and --repeat must be at least 1");
    }
    Ok(args)
}

/// What issue #5 asks of a class's figure.
#[derive(Clone, Copy)]
enum Target {
    /// At most this many ns per packet.
    Ns(u128),
    /// At most this many times `ref_parse_headers` on the same frame.
    TimesParse(f64),
}

struct Class {
    name: &'static str,
    frame: Vec<u8>,
    /// The real program's verdict: checked, so each class takes the path it names.
    expected: u32,
    target: Option<Target>,
}

fn classes(banned: [u8; 4]) -> Vec<Class> {
    vec![
        Class {
            name: "non-SIP UDP (DNS)",
            frame: udp4(53, &[0u8; 40]),
            expected: XDP_PASS,
            target: Some(Target::TimesParse(2.0)),
        },
        Class {
            name: "scanner OPTIONS (400 B)",
            frame: scanner_options_400(),
            expected: XDP_DROP,
            target: Some(Target::Ns(100)),
        },
        Class {
            name: "allowed REGISTER",
            frame: register_frame(CLIENT_V4),
            expected: XDP_PASS,
            target: Some(Target::Ns(120)),
        },
        Class {
            name: "unknown-domain INVITE",
            frame: udp4(
                SIP_PORT,
                &sip_request("INVITE", "sip:0097259@evil.test", &[]),
            ),
            expected: XDP_DROP,
            target: None,
        },
        Class {
            name: "allowed INVITE with SDP",
            frame: udp4(SIP_PORT, &invite_with_sdp("sip:bob@pbx.example.test")),
            expected: XDP_PASS,
            target: Some(Target::Ns(200)),
        },
        Class {
            name: "allowed OPTIONS over IPv6",
            frame: udp6(
                SIP_PORT,
                &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
            ),
            expected: XDP_PASS,
            target: None,
        },
        Class {
            // The parser's worst case that passes: as many short lines it must examine
            // as its budget allows, then short lines it skips filling the window.
            name: "worst case: short To-like lines filling the window",
            frame: udp4(
                SIP_PORT,
                &short_lines_request(MAX_EXAMINED_LINES - SIP_REQUEST_EXAMINED_LINES),
            ),
            expected: XDP_PASS,
            target: None,
        },
        Class {
            // One examined line more than the budget allows: dropped as malformed.
            name: "over the line budget: short To-like lines",
            frame: udp4(SIP_PORT, &short_lines_request(SCAN_LEN)),
            expected: XDP_DROP,
            target: None,
        },
        Class {
            name: "banned source",
            frame: options_from(banned),
            expected: XDP_DROP,
            target: None,
        },
        Class {
            // A new connection, metered in its source's bucket and the untrusted
            // sources' budget (both set so wide that every repeat passes: see `main`).
            name: "SYN to the TCP SIP port",
            frame: tcp4_from(CLIENT_V4, SIP_PORT, Segment::Syn, b""),
            expected: XDP_PASS,
            target: Some(Target::Ns(40)),
        },
        Class {
            // Issue 14, item 4: a current browser-like ClientHello of about 1.5 KB
            // (post-quantum key share, GREASE), its server name after the key share:
            // the copy, the whole walk, the versions and the name's hash and lookups.
            name: "TLS ClientHello (1.5 KB, post-quantum)",
            frame: tcp4_from(
                CLIENT_V4,
                5061,
                Segment::Established,
                &Hello::post_quantum("pbx.example.test", true).build(),
            ),
            expected: XDP_PASS,
            target: Some(Target::Ns(150)),
        },
        // Issue 14: SIP over TCP, through the TCP and TCP policy programs.
        Class {
            name: "scanner OPTIONS over TCP (400 B)",
            frame: over_tcp(&scanner_options_400()),
            expected: XDP_DROP,
            target: Some(Target::Ns(100)),
        },
        Class {
            name: "allowed REGISTER over TCP",
            frame: over_tcp(&register_frame(CLIENT_V4)),
            expected: XDP_PASS,
            target: Some(Target::Ns(120)),
        },
        Class {
            name: "TCP to a port that is not SIP",
            frame: tcp4_from(CLIENT_V4, 443, Segment::Established, &[0u8; 40]),
            expected: XDP_PASS,
            target: Some(Target::TimesParse(2.0)),
        },
    ]
}

/// A scanner's OPTIONS in a 400-byte UDP frame.
fn scanner_options_400() -> Vec<u8> {
    padded_to(
        400,
        "OPTIONS",
        "sip:100@198.18.0.9",
        &[
            "Contact: <sip:100@198.18.0.1:5060>",
            "Accept: application/sdp",
            "User-Agent: friendly-scanner",
        ],
    )
}

/// The UDP frame's payload in an established connection's segment to the SIP port.
fn over_tcp(udp_frame: &[u8]) -> Vec<u8> {
    let payload = &udp_frame[udp_header_at(udp_frame) + 8..];
    tcp4_from(CLIENT_V4, SIP_PORT, Segment::Established, payload)
}

fn register_frame(source: [u8; 4]) -> Vec<u8> {
    udp4_from(
        source,
        SIP_PORT,
        &sip_request(
            "REGISTER",
            "sip:pbx.example.test",
            &[
                "User-Agent: Linphone/5.2.0",
                "Contact: <sip:alice@198.18.0.1:5060>",
                "Expires: 3600",
            ],
        ),
    )
}

fn options_from(source: [u8; 4]) -> Vec<u8> {
    udp4_from(
        source,
        SIP_PORT,
        &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
    )
}

/// An IPv4 SIP request whose frame is `frame_len` bytes, padded with an X-Pad header
/// after `headers`.
fn padded_to(frame_len: usize, method: &str, uri: &str, headers: &[&str]) -> Vec<u8> {
    let bare = udp4(SIP_PORT, &sip_request(method, uri, headers)).len();
    let pad_header = "X-Pad: \r\n".len();
    let pad = "p".repeat(frame_len.saturating_sub(bare + pad_header));
    let pad = format!("X-Pad: {pad}");
    let mut all: Vec<&str> = headers.to_vec();
    all.push(&pad);
    udp4(SIP_PORT, &sip_request(method, uri, &all))
}

/// What one call costs: `ref_calls` less header parsing, over its loop steps.
fn per_call_ns(calls_ns: u128, parse_ns: u128) -> f64 {
    calls_ns.saturating_sub(parse_ns) as f64 / f64::from(REF_CALLS)
}

fn median(mut samples: Vec<u128>) -> u128 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ratio(a: u128, b: u128) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn show(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.1}x"))
}

/// A class's figure against its target: whether it is met, and the words for it.
fn against(target: Target, sf_ns: u128, parse_ns: u128) -> (bool, String) {
    match target {
        Target::Ns(limit) if sf_ns <= limit => (true, format!("met: {sf_ns} <= {limit} ns")),
        Target::Ns(limit) => (
            false,
            format!(
                "missed by {} ns ({sf_ns} > {limit} ns, {:.2}x the target)",
                sf_ns - limit,
                sf_ns as f64 / limit as f64
            ),
        ),
        Target::TimesParse(limit) => match ratio(sf_ns, parse_ns) {
            Some(r) if r <= limit => (true, format!("met: {r:.2}x <= {limit}x header parsing")),
            Some(r) => (
                false,
                format!(
                    "missed by {:.2}x ({r:.2}x > {limit}x header parsing)",
                    r - limit
                ),
            ),
            None => (false, "not measurable: header parsing took 0 ns".into()),
        },
    }
}

/// The real program and the references, measured on the same frames.
struct Bench {
    filter: Filter,
    references: Vec<Reference>,
    runs: usize,
    repeat: u32,
}

impl Bench {
    /// Median ns per packet of the real program on `frame` (its verdict checked).
    fn filter_ns(&self, name: &str, frame: &[u8], expected: u32) -> anyhow::Result<Vec<u128>> {
        let mut samples = Vec::new();
        for _ in 0..self.runs {
            let (action, per_run) = self.filter.run(frame, self.repeat)?;
            if action != expected {
                bail!(
                    "{name}: sip_filter returned {action}, expected {expected}: the class does not take its path"
                );
            }
            samples.push(per_run.as_nanos());
        }
        Ok(samples)
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.state_save_only {
        state_save(args.quick)?;
        return Ok(());
    }
    if args.guessing_only || args.daemon_only {
        return part_only(&args);
    }
    if let Some(json) = &args.render {
        let markdown_file = args
            .markdown
            .as_ref()
            .context("--render needs --markdown FILE")?;
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(json).with_context(|| format!("reading {json}"))?,
        )?;
        std::fs::write(markdown_file, markdown(&doc))
            .with_context(|| format!("writing {markdown_file}"))?;
        return Ok(());
    }
    let started = Instant::now();
    let mut filter = Filter::load()?;
    // Bans off: every repeat of a class must take the same path (a scanner's first
    // packet would otherwise ban the source, and the rest would cost a ban lookup).
    // Connections metered, in buckets no run empties (a billion a second, and a burst
    // of four billion): the SYN class measures its buckets, and always passes.
    let unbounded = Some(RateLimit {
        rate: 1_000_000_000,
        burst: u32::MAX,
    });
    filter.configure(&bench_settings(RateLimits {
        connections: unbounded,
        untrusted_connections: unbounded,
        ..RateLimits::none()
    }))?;
    let banned = [198, 51, 100, 66];
    filter.ban(IpAddr::from(banned), None, BanReason::Manual)?;
    let references = REFERENCE_PROGRAMS
        .into_iter()
        .map(load_reference)
        .collect::<Result<Vec<_>, _>>()?;
    let mut bench = Bench {
        filter,
        references,
        runs: args.runs,
        repeat: args.repeat,
    };

    let machine = machine();
    println!(
        "BPF_PROG_TEST_RUN on {} ({} CPUs), kernel {}: median of {} runs of {} repeats, ns/packet",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        args.runs,
        args.repeat
    );
    println!(
        "{:<27} {:>5} {:>6} {:>10} {:>5} {:>6} {:>7} {:>5} {:>8} {:>5} {:>9}  target",
        "packet class",
        "bytes",
        "action",
        "sip_filter",
        "drop",
        "parse",
        "+update",
        "scan",
        "in place",
        "call",
        "sf/parse"
    );
    let mut results = Vec::new();
    let wanted = |class: &Class| {
        !args.path_only
            && args
                .only
                .as_ref()
                .is_none_or(|part| class.name.contains(part.as_str()))
    };
    for class in classes(banned).into_iter().filter(wanted) {
        let mut sf = Vec::new();
        let mut refs: Vec<Vec<u128>> = vec![Vec::new(); bench.references.len()];
        for _ in 0..args.runs {
            let mut one = bench.filter_ns(class.name, &class.frame, class.expected)?;
            sf.append(&mut one);
            for (reference, samples) in bench.references.iter().zip(refs.iter_mut()) {
                let (action, per_run) = reference.run(&class.frame, args.repeat)?;
                if reference.name() == "ref_drop" && action != XDP_DROP {
                    bail!("ref_drop returned {action}");
                }
                samples.push(per_run.as_nanos());
            }
        }
        let sf_ns = median(sf.clone());
        let ref_ns: Vec<u128> = refs.iter().map(|s| median(s.clone())).collect();
        let (drop_ns, parse_ns) = (ref_ns[0], ref_ns[1]);
        let vs_parse = ratio(sf_ns, parse_ns);
        let call_ns = per_call_ns(ref_ns[4], parse_ns);
        let action = if class.expected == XDP_DROP {
            "drop"
        } else {
            "pass"
        };
        let target = class.target.map(|t| against(t, sf_ns, parse_ns));
        println!(
            "{:<27} {:>5} {:>6} {:>10} {:>5} {:>6} {:>7} {:>5} {:>8} {:>5.1} {:>9}  {}",
            class.name,
            class.frame.len(),
            action,
            sf_ns,
            drop_ns,
            parse_ns,
            ref_ns[2],
            ref_ns[3],
            ref_ns[5],
            call_ns,
            show(vs_parse),
            target.as_ref().map_or("-", |(_, words)| words.as_str())
        );
        let mut samples = serde_json::Map::new();
        samples.insert("sip_filter".into(), json!(sf));
        let mut entry = json!({
            "class": class.name,
            "bytes": class.frame.len(),
            "action": action,
            "sip_filter_ns": sf_ns,
            "sip_filter_per_parse": vs_parse,
            "sip_filter_per_drop": ratio(sf_ns, drop_ns),
            "call_ns": call_ns,
        });
        for ((reference, ns), runs) in bench.references.iter().zip(&ref_ns).zip(refs) {
            entry[format!("{}_ns", reference.name())] = json!(ns);
            samples.insert(reference.name().into(), json!(runs));
        }
        entry["samples_ns"] = Value::Object(samples);
        if let (Some(t), Some((met, words))) = (class.target, target) {
            entry["target"] = json!({
                "limit": match t {
                    Target::Ns(ns) => format!("<= {ns} ns"),
                    Target::TimesParse(x) => format!("<= {x}x ref_parse_headers"),
                },
                "met": met,
                "verdict": words,
            });
        }
        results.push(entry);
    }

    let (growth, save) = if args.growth {
        (
            state_growth(&mut bench, &banned, args.quick)?,
            state_save(args.quick)?,
        )
    } else {
        (Value::Null, Value::Null)
    };
    // The maps the growth part filled go with the filter, before the lab starts.
    drop(bench);
    let answers = if !args.path_only
        && args
            .only
            .as_ref()
            .is_none_or(|part| "answers".contains(part.as_str()))
    {
        answers_cost(args.runs, args.repeat)?
    } else {
        Value::Null
    };
    let destinations = if args.only.as_ref().is_none_or(|part| {
        "destinations".contains(part.as_str())
            || DESTINATION_STEPS
                .iter()
                .any(|step| step.contains(part.as_str()))
    }) {
        destinations_cost(args.runs, args.repeat, args.quick, args.only.as_deref())?
    } else {
        Value::Null
    };
    let path = if args.path {
        let mut options = pathbench::Options::new(args.quick);
        if let Some(seconds) = args.flood_seconds {
            options.flood = Duration::from_secs(seconds);
        }
        if let Some(runs) = args.nic_runs {
            options.nic_runs = runs;
        }
        if let Some(seconds) = args.nic_seconds {
            options.nic_flood = Duration::from_secs(seconds);
        }
        pathbench::run(&options)?
    } else {
        Value::Null
    };

    let guessing = if args.guessing {
        guessbench::run(&guessbench::Options::new(args.quick))?
    } else {
        Value::Null
    };

    let daemon = if args.daemon {
        daemonbench::run(&daemonbench::Options::new(args.quick))?
    } else {
        Value::Null
    };

    let mut doc = json!({
        "method": "BPF_PROG_TEST_RUN; each figure the median of `runs` runs of `repeat` repeats; ns per packet",
        "machine": machine,
        "runs": args.runs,
        "repeat": args.repeat,
        "quick": args.quick,
        "classes": results,
        "state_growth": growth,
        "state_save": save,
        "answers": answers,
        "destinations": destinations,
        "packet_path": path,
        "password_guessing": guessing,
        "daemon": daemon,
        "seconds": started.elapsed().as_secs(),
    });
    // Measured by `cargo xtask fuzz --record`, not here: kept from the earlier results.
    if let Some(fuzzing) = earlier_results(&args)?
        .and_then(|mut earlier| Some(earlier.get_mut("fuzzing")?.take()).filter(Value::is_object))
    {
        doc["fuzzing"] = fuzzing;
    }
    write_results(&args, &doc)
}

/// What learning from answers (issue 13) costs: the egress program per packet leaving,
/// beside a bare TC classifier in the same runs, and what the ingress bookkeeping (noting
/// each passed request's transaction) adds to a request: the same frames through the XDP
/// program with `[answers] learn` on and off, switched run by run.
fn answers_cost(runs: usize, repeat: u32) -> anyhow::Result<Value> {
    const TC_ACT_OK: u32 = 0;
    const BOOKKEEPING_TARGET_NS: u128 = 15;
    // One filter, its configuration switched between runs: both figures come from the
    // same program and maps, so what differs is the bookkeeping alone (with two filters
    // loaded side by side, the difference moved by tens of ns from one process to the
    // next, with where their programs and maps happened to lie).
    let mut learning = Filter::load()?;
    let configured = |filter: &mut Filter, learn: bool| -> anyhow::Result<()> {
        let mut settings = bench_settings(RateLimits::none());
        settings.auth.learn = learn;
        filter.configure(&settings)?;
        Ok(())
    };
    let bare = load_reference(TC_REFERENCE_PROGRAM)?;
    let client = [198, 51, 100, 20];
    println!("\nanswers (issue 13), ns/packet");
    println!(
        "{:<36} {:>5} {:>9} {:>9} {:>7}  target",
        "request through XDP", "bytes", "learn on", "learn off", "added"
    );
    let mut requests = Vec::new();
    for (name, payload) in [
        (
            "REGISTER with credentials",
            register("alice", "bench-1", 2, true),
        ),
        (
            "REGISTER without credentials",
            register("alice", "bench-1", 1, false),
        ),
    ] {
        let frame = udp4_from(client, SIP_PORT, &payload);
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (learn, samples) in [(true, &mut on), (false, &mut off)] {
                configured(&mut learning, learn)?;
                let (action, per_run) = learning.run(&frame, repeat)?;
                if action != XDP_PASS {
                    bail!("{name}: sip_filter returned {action}, expected a pass");
                }
                samples.push(per_run.as_nanos());
            }
        }
        let (on_ns, off_ns) = (median(on.clone()), median(off.clone()));
        let added = on_ns.saturating_sub(off_ns);
        let met = added <= BOOKKEEPING_TARGET_NS;
        let verdict = if met {
            "met".to_string()
        } else {
            format!("missed ({added} > {BOOKKEEPING_TARGET_NS} ns)")
        };
        println!(
            "{name:<36} {:>5} {on_ns:>9} {off_ns:>9} {added:>7}  <= {BOOKKEEPING_TARGET_NS} ns: {verdict}",
            frame.len()
        );
        requests.push(json!({
            "class": name, "bytes": frame.len(), "learn_on_ns": on_ns, "learn_off_ns": off_ns,
            "added_ns": added,
            "target": {"limit": format!("<= {BOOKKEEPING_TARGET_NS} ns added"), "met": met},
            "samples_ns": {"learn_on": on, "learn_off": off},
        }));
    }
    configured(&mut learning, true)?;
    println!(
        "{:<36} {:>5} {:>9} {:>9} {:>7}",
        "packet through egress", "bytes", "egress", "bare TC", "added"
    );
    let mut answers = Vec::new();
    let call = "bench-2";
    for (name, frame) in [
        (
            "401 challenge to REGISTER",
            answer4_to(
                client,
                &register_answer(401, "Unauthorized", call, 1, &[&challenge(false)]),
            ),
        ),
        (
            "200 OK to REGISTER, Contact expires",
            answer4_to(
                client,
                &register_answer(
                    200,
                    "OK",
                    call,
                    2,
                    &["Contact: <sip:alice@198.18.0.1:40000>;expires=3600"],
                ),
            ),
        ),
        (
            "RTP from a media port (not SIP)",
            from_server4(10_000, client, &[0x80; 172]),
        ),
    ] {
        let (mut egress, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (action, per_run) = learning.run_answer(&frame, repeat)?;
            if action != TC_ACT_OK {
                bail!("{name}: the egress program returned {action}, not TC_ACT_OK");
            }
            egress.push(per_run.as_nanos());
            floor.push(bare.run(&frame, repeat)?.1.as_nanos());
        }
        let (egress_ns, floor_ns) = (median(egress.clone()), median(floor.clone()));
        println!(
            "{name:<36} {:>5} {egress_ns:>9} {floor_ns:>9} {:>7}",
            frame.len(),
            egress_ns.saturating_sub(floor_ns)
        );
        answers.push(json!({
            "class": name, "bytes": frame.len(), "egress_ns": egress_ns, "bare_tc_ns": floor_ns,
            "added_ns": egress_ns.saturating_sub(floor_ns),
            "samples_ns": {"egress": egress, "bare_tc": floor},
        }));
    }
    Ok(json!({"requests": requests, "answers": answers}))
}

/// `--guessing-only` or `--daemon-only`: that part measured again, put into the
/// `--json` file's earlier results (or alone, when there is none), the report rendered
/// again. The file is written anew: a float of the earlier results may come back with
/// its last digit changed (serde_json's parsing is not exactly round-trip).
fn part_only(args: &Args) -> anyhow::Result<()> {
    let mut doc = earlier_results(args)?.unwrap_or_else(|| json!({ "machine": machine() }));
    if args.guessing_only {
        doc["password_guessing"] = guessbench::run(&guessbench::Options::new(args.quick))?;
    }
    if args.daemon_only {
        doc["daemon"] = daemonbench::run(&daemonbench::Options::new(args.quick))?;
    }
    write_results(args, &doc)
}

/// The `--json` file's results, if there are any.
fn earlier_results(args: &Args) -> anyhow::Result<Option<Value>> {
    match &args.json {
        Some(path) if std::path::Path::new(path).exists() => Ok(Some(
            serde_json::from_str(
                &std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
            )
            .with_context(|| format!("{path} is not JSON"))?,
        )),
        _ => Ok(None),
    }
}

/// The results to `--json`, the report to `--markdown`.
fn write_results(args: &Args, doc: &Value) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(doc)? + "\n")
            .with_context(|| format!("writing {path}"))?;
        println!("results written to {path}");
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(doc)).with_context(|| format!("writing {path}"))?;
        println!("report written to {path}");
    }
    Ok(())
}

/// The settings every figure is taken with: two domains, the server's address, bans
/// off (see `main`), and `limits`.
fn bench_settings(rate_limits: RateLimits) -> Settings {
    Settings {
        domains: vec!["pbx.example.test".into(), "*.voip.example.test".into()],
        own_addresses: vec![IpAddr::from(SERVER_V4)],
        ban: BanRules::off(),
        rate_limits,
        ..Settings::default()
    }
}

/// The CPU model, CPU count and kernel, from /proc.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let mhz = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, mhz)| mhz.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let hypervisor = cpuinfo.contains(" hypervisor");
    json!({ "cpu": cpu, "mhz": mhz, "cpus": cpus, "kernel": kernel, "virtual_machine": hypervisor })
}

/// The i-th of a run of IPv4 addresses starting at `base`.
fn nth_address(base: [u8; 4], i: u32) -> [u8; 4] {
    u32::from_be_bytes(base).wrapping_add(i).to_be_bytes()
}

/// Entries of the tables the growth part fills, small and large.
struct Sizes {
    blocklist: [u32; 2],
    sources: [u32; 2],
}

/// Per-packet cost with few and many entries in the blocklist (`SF_BANS`) and the deny
/// trie (`SF_DENY_V4`, /32 entries), and few and many tracked sources (`SF_SOURCES`, the
/// LRU the rate limits keep their buckets in), for a banned source (a hit in the
/// blocklist), a denied one (a hit in the trie) and an allowed REGISTER (a miss in
/// both, then its bucket among the tracked sources).
fn state_growth(bench: &mut Bench, banned: &[u8; 4], quick: bool) -> anyhow::Result<Value> {
    let sizes = if quick {
        Sizes {
            blocklist: [1_000, 20_000],
            sources: [1_000, 20_000],
        }
    } else {
        Sizes {
            blocklist: [1_000, 1_000_000],
            sources: [1_000, 1_000_000],
        }
    };
    // Limits that never bite, so that every allowed request finds its bucket.
    let never = Some(RateLimit {
        rate: 1_000_000_000,
        burst: 1_000_000_000,
    });
    // A program of its own, whose source LRU holds a million sources and then some (it
    // evicts before it is quite full: its free lists are per CPU).
    let largest = sizes.sources[1].max(sizes.blocklist[1]);
    bench.filter = Filter::load_with(Capacities {
        tracked_sources: (largest + largest / 8).max(MAX_SOURCES),
    })?;
    bench
        .filter
        .ban(IpAddr::from(*banned), None, BanReason::Manual)?;
    let denied = [203, 0, 113, 7];
    let mut settings = bench_settings(RateLimits {
        register: never,
        invite: never,
        other: never,
        ..RateLimits::none()
    });
    settings.deny = vec![IpAddr::from(denied).into()];
    bench.filter.configure(&settings)?;

    println!(
        "\nstate growth: ns/packet (median of {} runs of {} repeats)",
        bench.runs, bench.repeat
    );
    println!(
        "{:>10} {:>10} {:>14} {:>14} {:>16}  fill",
        "blocklist", "sources", "banned source", "denied source", "allowed REGISTER"
    );
    let probes = [
        ("banned source", options_from(*banned), XDP_DROP),
        ("denied source", options_from(denied), XDP_DROP),
        ("allowed REGISTER", register_frame(CLIENT_V4), XDP_PASS),
    ];
    let (mut bans_in, mut deny_in, mut sources_in) = (0u32, 0u32, 0u32);
    let mut rows = Vec::new();
    for (blocklist, sources) in [
        (sizes.blocklist[0], sizes.sources[0]),
        (sizes.blocklist[1], sizes.sources[0]),
        (sizes.blocklist[1], sizes.sources[1]),
    ] {
        let fill = Instant::now();
        bans_in = fill_bans(&mut bench.filter, bans_in, blocklist)?;
        deny_in = fill_deny(&mut bench.filter, deny_in, blocklist)?;
        sources_in = fill_sources(&mut bench.filter, sources_in, sources)?;
        let fill_seconds = fill.elapsed().as_secs_f64();
        let mut row = json!({ "blocklist_entries": blocklist, "deny_entries": blocklist, "tracked_sources": sources });
        let mut figures = Vec::new();
        for (name, frame, expected) in &probes {
            let ns = median(bench.filter_ns(name, frame, *expected)?);
            row[format!("{name}_ns").replace(' ', "_")] = json!(ns);
            figures.push(ns);
        }
        println!(
            "{:>10} {:>10} {:>14} {:>14} {:>16}  {fill_seconds:.1} s",
            blocklist, sources, figures[0], figures[1], figures[2]
        );
        rows.push(row);
    }
    Ok(json!({
        "method": "the real program with BPF_PROG_TEST_RUN, after filling SF_BANS (hash) and SF_DENY_V4 (LPM trie, /32 entries) to `blocklist_entries` and SF_SOURCES (LRU) to `tracked_sources` from userspace; rate limits set but never reached, so every allowed request updates its source's bucket",
        "rows": rows,
    }))
}

/// Bans the addresses 10.0.0.0 + n for n in `from..to` (none is the banned probe).
fn fill_bans(filter: &mut Filter, from: u32, to: u32) -> anyhow::Result<u32> {
    let mut bans: HashMap<_, SourceKey, Ban> = HashMap::try_from(filter.map_mut(names::BANS)?)?;
    for i in from..to {
        let key = sip_filter_common::sip::mapped_ipv4(nth_address([10, 0, 0, 0], i));
        let ban = Ban::new(u64::MAX, BanReason::Feed);
        bans.insert(key, ban, 0)
            .with_context(|| format!("ban {} of {to}", i + 1))?;
    }
    Ok(to.max(from))
}

/// Denies the /32s 11.0.0.0 + n for n in `from..to`.
fn fill_deny(filter: &mut Filter, from: u32, to: u32) -> anyhow::Result<u32> {
    let mut trie: LpmTrie<_, [u8; 4], ListEntry> =
        LpmTrie::try_from(filter.map_mut(names::DENY_V4)?)?;
    let entry = ListEntry::from_operator(u64::MAX, BanReason::Feed as u32);
    for i in from..to {
        trie.insert(&Key::new(32, nth_address([11, 0, 0, 0], i)), entry, 0)
            .with_context(|| format!("deny entry {} of {to}", i + 1))?;
    }
    Ok(to.max(from))
}

/// Tracks the sources 12.0.0.0 + n for n in `from..to`.
fn fill_sources(filter: &mut Filter, from: u32, to: u32) -> anyhow::Result<u32> {
    let mut sources: HashMap<_, SourceKey, SourceState> =
        HashMap::try_from(filter.map_mut(names::SOURCES)?)?;
    for i in from..to {
        let key = sip_filter_common::sip::mapped_ipv4(nth_address([12, 0, 0, 0], i));
        sources
            .insert(key, SourceState::default(), 0)
            .with_context(|| format!("source {} of {to}", i + 1))?;
    }
    Ok(to.max(from))
}

/// What the daemon's stop costs: reading the bans and the operator's deny entries out of
/// the maps and writing the state file (fsync included), with a million of each, and at
/// the largest sizes the maps hold (1,048,576 bans, as many deny entries per family).
fn state_save(quick: bool) -> anyhow::Result<Value> {
    let sizes: &[(u32, u32, u32)] = if quick {
        &[(20_000, 20_000, 0)]
    } else {
        &[
            (1_000_000, 1_000_000, 0),
            (MAX_BANS, MAX_LIST_ENTRIES, MAX_LIST_ENTRIES),
        ]
    };
    let dir = std::env::temp_dir().join(format!("sip-filter-bench-state-{}", std::process::id()));
    let path = dir.join(state::FILE_NAME);
    println!("\nstate save (what a stop costs): read in batches, written, fsynced");
    let mut rows = Vec::new();
    for &(bans, deny_v4, deny_v6) in sizes {
        let mut filter = Filter::load()?;
        filter.configure(&bench_settings(RateLimits::none()))?;
        let expires = monotonic_now_ns() + 86_400_000_000_000;
        let keys: Vec<SourceKey> = (0..bans)
            .map(|i| sip_filter_common::sip::mapped_ipv4(nth_address([10, 0, 0, 0], i)))
            .collect();
        let values = vec![Ban::new(expires, BanReason::Feed); keys.len()];
        bpf_sys::update_many(map_data(&filter, names::BANS)?, &keys, &values)
            .map_err(|(_, e)| e)?;
        let entry = ListEntry::from_operator(expires, BanReason::Feed as u32);
        let v4: Vec<Key<[u8; 4]>> = (0..deny_v4)
            .map(|i| Key::new(28, (0x2000_0000u32 + (i << 4)).to_be_bytes()))
            .collect();
        bpf_sys::update_many(
            map_data(&filter, names::DENY_V4)?,
            &v4,
            &vec![entry; v4.len()],
        )
        .map_err(|(_, e)| e)?;
        let v6: Vec<Key<[u8; 16]>> = (0..deny_v6)
            .map(|i| {
                let mut net = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                net[4..8].copy_from_slice(&i.to_be_bytes());
                Key::new(64, net)
            })
            .collect();
        bpf_sys::update_many(
            map_data(&filter, names::DENY_V6)?,
            &v6,
            &vec![entry; v6.len()],
        )
        .map_err(|(_, e)| e)?;

        let reading = Instant::now();
        let taken = State::take(&StateMaps::of(&filter)?, Clocks::now())?;
        let read_s = reading.elapsed().as_secs_f64();
        let writing = Instant::now();
        taken.save(&path)?;
        let write_s = writing.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&path)?.len();
        anyhow::ensure!(
            taken.bans.len() == bans as usize && taken.deny.len() == (deny_v4 + deny_v6) as usize,
            "took {} bans and {} deny entries",
            taken.bans.len(),
            taken.deny.len()
        );
        println!(
            "{bans:>8} bans, {deny_v4:>8} + {deny_v6:>8} deny entries (v4 + v6): read {read_s:.2} s, write {write_s:.2} s, total {:.2} s, {:.0} MB",
            read_s + write_s,
            bytes as f64 / 1e6
        );
        rows.push(json!({
            "bans": bans, "deny_v4": deny_v4, "deny_v6": deny_v6,
            "read_seconds": read_s, "write_seconds": write_s,
            "stop_save_seconds": read_s + write_s, "file_bytes": bytes,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "method": "State::take (BPF_MAP_LOOKUP_BATCH on SF_BANS and the deny tries) then State::save (binary, written to a temporary file, fsynced, renamed), as the daemon does on SIGTERM; release build",
        "rows": rows,
    }))
}

fn map_data<'a>(filter: &'a Filter, name: &'static str) -> anyhow::Result<&'a MapData> {
    bpf_sys::hash_or_trie(filter.map(name)?)
        .with_context(|| format!("{name} is no hash map or trie"))
}

/// BENCHMARKS.md: the method, the machine, the tables, the targets.
fn markdown(doc: &Value) -> String {
    let mut md = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        md,
        "# Benchmarks\n\nWritten by `cargo xtask bench`{} (as root); the same figures are in \
         BENCHMARKS.json. Figures from a shared, virtual machine are noisy: re-run the command \
         on yours.\n",
        if doc["quick"] == true {
            " **--quick** (few, short runs: the figures are rough)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} ({} MHz), {} CPUs{}, Linux {}.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["mhz"].as_str().unwrap_or("?"),
        m["cpus"],
        if m["virtual_machine"] == true {
            ", a virtual machine"
        } else {
            ""
        },
        m["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "## Per packet\n\nThe XDP program run by the kernel on one frame with \
         BPF_PROG_TEST_RUN, {} repeats per run; each figure is the median of {} runs, in ns per \
         packet. The reference programs are in the same object and run in the same runs on \
         the same frames: `drop` is a bare XDP_DROP (the test-run loop's own cost, included \
         in every figure), `parse` parses Ethernet/VLAN/IP/UDP headers like the real program, \
         `+update` adds one per-source LRU update and a per-CPU counter, `scan` adds the \
         payload copy the real program makes (`bpf_xdp_load_bytes`, up to {} bytes) and one \
         pass over every byte a word at a time in `bpf_loop`; `in place` is the same pass over \
         the payload where it lies in the frame, in a plain bounded loop (no copy, no call): \
         the floor of a filter that reads its packet in place; `call` is what one call and its \
         return cost, from `ref_calls` (header parsing, then {} `bpf_loop` steps that each add \
         one to a counter) less `parse`, over the steps: every loop step, helper call and \
         out-of-line function of the real program pays it. Bans are off here (a scanner's \
         first packet would ban its source, and every repeat after it would be the `banned \
         source` class).\n",
        doc["repeat"], doc["runs"], SCAN_LEN, REF_CALLS
    );
    md.push_str(
        "| class | bytes | verdict | sip-filter | drop | parse | +update | scan | in place | call | sip-filter / parse | target |\n\
         |---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for c in doc["classes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c["class"].as_str().unwrap_or("?"),
            c["bytes"],
            c["action"].as_str().unwrap_or("?"),
            c["sip_filter_ns"],
            c["ref_drop_ns"],
            c["ref_parse_headers_ns"],
            c["ref_parse_update_ns"],
            c["ref_scan_ns"],
            c.get("ref_scan_in_place_ns").unwrap_or(&Value::Null),
            c["call_ns"]
                .as_f64()
                .map_or("-".into(), |ns| format!("{ns:.1}")),
            show(c["sip_filter_per_parse"].as_f64()),
            c["target"]["verdict"].as_str().unwrap_or("-"),
        );
    }
    let targets: Vec<&Value> = doc["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["target"].is_object())
        .collect();
    let missed: Vec<String> = targets
        .iter()
        .filter(|c| c["target"]["met"] == false)
        .map(|c| {
            format!(
                "{}: {}",
                c["class"].as_str().unwrap_or("?"),
                c["target"]["verdict"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nTargets (issue #5): non-SIP traffic within 2x of header parsing; a 400-byte scanner \
         OPTIONS at 100 ns or less; an allowed REGISTER at 120 ns or less; a 1300-byte INVITE \
         (the `allowed INVITE with SDP` class) at 200 ns or less. {} of {} met{}\n",
        targets.len() - missed.len(),
        targets.len(),
        if missed.is_empty() {
            ".".to_string()
        } else {
            format!("; missed: {}.", missed.join("; "))
        }
    );
    if let (Some(requests), Some(answers)) = (
        doc["answers"]["requests"].as_array(),
        doc["answers"]["answers"].as_array(),
    ) {
        md.push_str(
            "## Learning from answers\n\nWhat issue 13 costs, in the same kind of runs. Ingress: \
             the same request through the XDP program with `[answers] learn` on and off \
             (one filter, switched run by run); the difference is the bookkeeping (the \
             transaction's hash, the account's name, the lockout check, noting it in its \
             slot, and the registration check of the rate classes). Egress: the TC \
             program beside a bare TC classifier (`ref_tc_pass`) on the same packet; after \
             the first repeat the answer finds its transaction taken, as a retransmission \
             would.\n\n| request | bytes | learn on | learn off | added | target |\n\
             |---|---|---|---|---|---|\n",
        );
        for row in requests {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} {} |",
                row["class"].as_str().unwrap_or("?"),
                row["bytes"],
                row["learn_on_ns"],
                row["learn_off_ns"],
                row["added_ns"],
                row["target"]["limit"].as_str().unwrap_or("?"),
                if row["target"]["met"] == true {
                    "met"
                } else {
                    "**missed**"
                }
            );
        }
        md.push_str(
            "\n| packet leaving | bytes | egress | bare TC | added |\n|---|---|---|---|---|\n",
        );
        for row in answers {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                row["class"].as_str().unwrap_or("?"),
                row["bytes"],
                row["egress_ns"],
                row["bare_tc_ns"],
                row["added_ns"]
            );
        }
        md.push('\n');
    }
    if let Some(rows) = doc["state_growth"]["rows"].as_array() {
        md.push_str(
            "## State growth\n\nThe real program, as above, after filling its tables from \
             userspace: the blocklist (`SF_BANS`, a hash map) and the IPv4 deny list \
             (`SF_DENY_V4`, an LPM trie, here of /32 entries) to the same size, and the tracked \
             sources (`SF_SOURCES`, the LRU the rate limits keep their buckets in; limits set \
             high enough never to drop). For this part the program is loaded with its source \
             LRU enlarged to hold the largest count (`Filter::load_with`; the default holds \
             262,144). ns per packet.\n\n\
             | blocklist and deny entries | tracked sources | banned source | denied source | allowed REGISTER |\n\
             |--:|--:|--:|--:|--:|\n",
        );
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                r["blocklist_entries"],
                r["tracked_sources"],
                r["banned_source_ns"],
                r["denied_source_ns"],
                r["allowed_REGISTER_ns"]
            );
        }
        md.push('\n');
    }
    let destinations = &doc["destinations"];
    // Every step ran (not one alone, for a profile).
    if destinations["rules"].is_number() {
        let _ = writeln!(
            md,
            "## An allowed INVITE with destination rules and source countries\n\n\
             The same INVITE (1300 bytes, with credentials, dialling a number under an `allow` \
             rule, from a source among the denied countries' networks) through filters that \
             each add one thing to the one before, runs alternated: {} rules, call budgets, \
             {} denied countries ({} networks in the deny tries).\n\n\
             | filter | ns/INVITE | added |\n|---|---|---|",
            destinations["rules"],
            destinations["denied_countries"],
            destinations["country_entries"],
        );
        for step in destinations["steps"].as_array().into_iter().flatten() {
            let added = step["added_ns"]
                .as_i64()
                .map_or("".to_string(), |ns| format!("{ns:+}"));
            let _ = writeln!(
                md,
                "| {} | {} | {added} |",
                step["filter"].as_str().unwrap_or("?"),
                step["ns"]
            );
        }
        md.push('\n');
    }
    if doc["packet_path"].is_object() {
        md.push_str(&pathbench::markdown(&doc["packet_path"]));
    }
    if doc["password_guessing"].is_object() {
        md.push_str(&guessbench::markdown(&doc["password_guessing"]));
    }
    if doc["daemon"].is_object() {
        md.push_str(&daemonbench::markdown(&doc["daemon"]));
    }
    if doc["fuzzing"].is_object() {
        md.push_str(&fuzzing_markdown(&doc["fuzzing"]));
    }
    md
}

/// The last long fuzzing run of each target (`cargo xtask fuzz --record`).
fn fuzzing_markdown(doc: &Value) -> String {
    let m = &doc["machine"];
    let mut md = format!(
        "## Fuzzing\n\nThe last long run of each fuzz target, as `cargo xtask fuzz --record` \
         wrote it, on {} ({} CPUs), Linux {}. Executions are libFuzzer's own count, summed \
         over the target's workers (one per CPU), starting from the kept corpus \
         (fuzz/corpus); the time is the run's wall clock, on a machine shared with other \
         work.\n\n\
         | target | executions | time | executions/s | crashes | run |\n\
         |---|--:|--:|--:|--:|---|\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        m["kernel"].as_str().unwrap_or("?"),
    );
    let thousands = |n: u64| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        out
    };
    let mut rows: Vec<&Value> = doc["targets"].as_array().into_iter().flatten().collect();
    rows.push(&doc["total"]);
    for r in rows {
        let executions = r["executions"].as_u64().unwrap_or(0);
        let seconds = r["seconds"].as_f64().unwrap_or(f64::NAN);
        let run = match (r["command"].as_str(), r["date"].as_str()) {
            (Some(command), Some(date)) => format!("`{command}`, {date}"),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} min | {:.0} | {} | {run} |",
            r["target"].as_str().unwrap_or("?"),
            thousands(executions),
            seconds / 60.0,
            executions as f64 / seconds,
            r["crashes"]
        );
    }
    md.push('\n');
    md
}

// Issue 18: an allowed INVITE's cost with the destination rules and source countries.

/// The filters [`destinations_cost`] compares, each adding one thing to the one before,
/// so that the differences split the INVITE's cost: the INVITE program itself (the
/// account, the number, the call's memory, one rule), the trie's size, the budgets, the
/// countries.
const DESTINATION_STEPS: [&str; 5] = [
    "without [destinations]",
    "one rule",
    "10,000 rules",
    "10,000 rules and budgets",
    "and 100 denied countries",
];

/// What an allowed INVITE costs with 10,000 destination rules and call budgets loaded,
/// and with 100 denied countries' networks too, beside the same INVITE without either:
/// through filters that each add one thing to the one before ([`DESTINATION_STEPS`]),
/// runs alternated. The INVITE dials a number under an `allow` rule, with credentials,
/// so it takes the rules' lookup and the account's budget; its source sits among the
/// denied countries' networks (allowed), so the deny trie's walk is a full one. `only`:
/// the `--class` given, which may name one step to run alone (to profile it).
fn destinations_cost(
    runs: usize,
    repeat: u32,
    quick: bool,
    only: Option<&str>,
) -> anyhow::Result<Value> {
    use sip_filter::{
        countries::{self, all_countries, Country, CountrySettings},
        destinations::{Action, CallBudgets, DestinationSettings, Rule},
    };
    use sip_filter_tests::geo::{realistic_networks, write_country_database, write_networks};

    const RULES: usize = 10_000;
    const DENIED_COUNTRIES: usize = 100;
    let uri = "sip:+4930123456@pbx.example.test";
    let mut text = String::from_utf8(invite_with_sdp(uri))?;
    text = text.replacen(
        "Content-Type:",
        "Proxy-Authorization: Digest username=\"1000\", realm=\"pbx.example.test\", nonce=\"n1\", uri=\"sip:+4930123456@pbx.example.test\", response=\"00112233445566778899aabbccddeeff\"\r\nContent-Type:",
        1,
    );
    let source = [1, 0, 2, 7]; // the second /24 of the generated networks: not denied
    let frame = udp4_from(source, SIP_PORT, text.as_bytes());

    let mut rules: Vec<Rule> = (0..RULES - 2)
        .map(|i| Rule {
            prefix: format!("+2{i:05}"),
            action: if i % 10 == 0 {
                Action::Limit {
                    calls_per_minute: 10,
                }
            } else {
                Action::Deny
            },
        })
        .collect();
    rules.push(Rule {
        prefix: "+".into(),
        action: Action::Limit {
            calls_per_minute: u32::MAX,
        },
    });
    let allow_dialled = Rule {
        prefix: "+49".into(),
        action: Action::Allow,
    };
    rules.push(allow_dialled.clone());
    let budgets = CallBudgets {
        per_minute: u32::MAX,
        per_hour: u32::MAX,
        limited_per_minute: u32::MAX,
        limited_per_hour: u32::MAX,
        block_seconds: 60,
    };
    let plain = bench_settings(RateLimits::none());
    let with = |rules: Vec<Rule>, budgets: CallBudgets| Settings {
        destinations: Some(DestinationSettings {
            rules,
            budgets,
            ..DestinationSettings::default()
        }),
        ..plain.clone()
    };
    let no_budgets = CallBudgets {
        block_seconds: 60,
        ..CallBudgets::default()
    };
    let [without, one_rule, many_rules, and_budgets, and_countries] = DESTINATION_STEPS;
    let steps = [
        (without, plain.clone()),
        (one_rule, with(vec![allow_dialled], no_budgets)),
        (many_rules, with(rules.clone(), no_budgets)),
        (and_budgets, with(rules.clone(), budgets)),
        (and_countries, with(rules, budgets)),
    ];
    // Without a step named, all of them (`--class destinations`).
    let named = only.filter(|part| !"destinations".contains(part));
    let mut filters = Vec::new();
    for (name, settings) in steps {
        if named.is_some_and(|part| !name.contains(part)) {
            continue;
        }
        let mut filter = Filter::load()?;
        filter.configure(&settings)?;
        filters.push((name, filter));
    }
    let mut entries = 0;
    if let Some((_, filter)) = filters.iter().find(|(name, _)| *name == and_countries) {
        let dir = std::env::temp_dir().join(format!("sip-filter-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let database = dir.join("countries.mmdb");
        let codes: Vec<String> = all_countries().map(|c| c.to_string()).collect();
        let (v4, v6) = if quick {
            (40_000, 20_000)
        } else {
            (400_000, 200_000)
        };
        let networks = realistic_networks(v4, v6, &codes);
        let written: Vec<(ipnet::IpNet, &str)> =
            networks.iter().map(|(n, c)| (*n, c.as_str())).collect();
        write_country_database(&database, &written);
        let denied: Vec<Country> = all_countries().step_by(2).take(DENIED_COUNTRIES).collect();
        let read = countries::read(&CountrySettings {
            database,
            deny: denied,
            allow: Vec::new(),
        })?;
        entries = read.v4.len() + read.v6.len();
        write_networks(filter, &read);
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut samples: Vec<Vec<u128>> = vec![Vec::new(); filters.len()];
    for _ in 0..runs {
        for ((_, filter), out) in filters.iter().zip(samples.iter_mut()) {
            let (action, per_run) = filter.run(&frame, repeat)?;
            if action != XDP_PASS {
                bail!("the allowed INVITE was not passed ({action})");
            }
            out.push(per_run.as_nanos());
        }
    }
    let medians: Vec<u128> = samples.iter().cloned().map(median).collect();
    println!("\nallowed INVITE (+49, credentials), ns/packet, runs alternated");
    println!("{:<28} {:>9} {:>7}", "filter", "INVITE", "added");
    let mut split = Vec::new();
    for (i, ((name, _), ns)) in filters.iter().zip(&medians).enumerate() {
        // What the step adds to the one before it, when every step ran.
        let added = match i.checked_sub(1) {
            Some(before) if named.is_none() => Some(*ns as i128 - medians[before] as i128),
            _ => None,
        };
        match added {
            Some(added) => println!("{name:<28} {ns:>9} {added:>+7}"),
            None => println!("{name:<28} {ns:>9}"),
        }
        split.push(json!({"filter": name, "ns": ns, "added_ns": added, "samples_ns": samples[i]}));
    }
    let mut summary = json!({ "steps": split });
    if named.is_none() {
        summary["rules"] = json!(RULES);
        summary["denied_countries"] = json!(DENIED_COUNTRIES);
        summary["country_entries"] = json!(entries);
    }
    Ok(summary)
}
