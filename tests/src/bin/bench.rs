//! The benchmark (`cargo xtask bench`, as root): the per-packet cost of the real
//! program, by packet class, with BPF_PROG_TEST_RUN, beside two reference programs from
//! the same object measured in the same run on the same frame: `ref_drop` (a bare
//! XDP_DROP: what the test-run loop itself costs) and `ref_parse_headers` (Ethernet/IP/UDP
//! parsing only). Each figure is the median over several runs of many repeats each;
//! the three programs take turns within a run, so drift hits them alike. Figures, not a
//! test: these machines are shared and noisy.
//!
//! Flags: `--quick` (3 runs of 10,000 repeats), `--runs N`, `--repeat R`,
//! `--json FILE` (the results, machine-readable), `--class PART` (only the classes whose
//! name contains PART: to profile one path with `perf record`).

use std::{net::IpAddr, time::Duration};

use anyhow::{bail, Context};
use sip_filter::{
    filter::{load_reference, Reference},
    settings::BanRules,
    Filter, Settings,
};
use sip_filter_common::maps::BanReason;
use sip_filter_tests::packets::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Args {
    runs: usize,
    repeat: u32,
    json: Option<String>,
    /// Only the classes whose name contains this (for profiling one path).
    only: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 7,
        repeat: 1_000_000,
        json: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
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
            "--class" => args.only = Some(it.next().context("--class needs part of a name")?),
            "-h" | "--help" => {
                println!("bench [--quick] [--runs N (7)] [--repeat R (1000000)] [--json FILE] [--class PART-OF-NAME]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.runs == 0 || args.repeat == 0 {
        bail!("--runs and --repeat must be at least 1");
    }
    Ok(args)
}

struct Class {
    name: &'static str,
    frame: Vec<u8>,
    /// The real program's verdict: checked, so each class takes the path it names.
    expected: u32,
}

fn classes(banned: [u8; 4]) -> Vec<Class> {
    vec![
        Class {
            name: "non-SIP UDP (DNS)",
            frame: udp4(53, &[0u8; 40]),
            expected: XDP_PASS,
        },
        Class {
            name: "scanner OPTIONS (400 B)",
            frame: padded_to(
                400,
                "OPTIONS",
                "sip:100@198.18.0.9",
                &[
                    "Contact: <sip:100@198.18.0.1:5060>",
                    "Accept: application/sdp",
                    "User-Agent: friendly-scanner",
                ],
            ),
            expected: XDP_DROP,
        },
        Class {
            name: "allowed REGISTER",
            frame: udp4(
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
            ),
            expected: XDP_PASS,
        },
        Class {
            name: "unknown-domain INVITE",
            frame: udp4(
                SIP_PORT,
                &sip_request("INVITE", "sip:0097259@evil.test", &[]),
            ),
            expected: XDP_DROP,
        },
        Class {
            name: "allowed INVITE with SDP",
            frame: udp4(SIP_PORT, &invite_with_sdp("sip:bob@pbx.example.test")),
            expected: XDP_PASS,
        },
        Class {
            name: "allowed OPTIONS over IPv6",
            frame: udp6(
                SIP_PORT,
                &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
            ),
            expected: XDP_PASS,
        },
        Class {
            name: "banned source",
            frame: udp4_from(
                banned,
                SIP_PORT,
                &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
            ),
            expected: XDP_DROP,
        },
    ]
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

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut filter = Filter::load()?;
    // Bans off: every repeat of a class must take the same path (a scanner's first
    // packet would otherwise ban the source, and the rest would cost a ban lookup).
    filter.configure(&Settings {
        domains: vec!["pbx.example.test".into(), "*.voip.example.test".into()],
        own_addresses: vec![IpAddr::from(SERVER_V4)],
        ban: BanRules::off(),
        ..Settings::default()
    })?;
    let banned = [198, 51, 100, 66];
    filter.ban(IpAddr::from(banned), None, BanReason::Manual)?;
    let drop = load_reference("ref_drop")?;
    let parse = load_reference("ref_parse_headers")?;
    let run_ref = |reference: &Reference, frame: &[u8]| -> anyhow::Result<Duration> {
        let (action, per_run) = reference.run(frame, args.repeat)?;
        if reference.name() == "ref_drop" && action != XDP_DROP {
            bail!("ref_drop returned {action}");
        }
        Ok(per_run)
    };

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    println!(
        "BPF_PROG_TEST_RUN, kernel {kernel}: median of {} runs of {} repeats, ns/packet",
        args.runs, args.repeat
    );
    println!(
        "{:<27} {:>5} {:>6} {:>10} {:>6} {:>6} {:>10} {:>8}",
        "packet class", "bytes", "action", "sip_filter", "drop", "parse", "sf/parse", "sf/drop"
    );
    let mut results = Vec::new();
    let wanted = |class: &Class| {
        args.only
            .as_ref()
            .is_none_or(|part| class.name.contains(part.as_str()))
    };
    for class in classes(banned).into_iter().filter(wanted) {
        let (mut sf, mut dr, mut pa) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let (action, per_run) = filter.run(&class.frame, args.repeat)?;
            if action != class.expected {
                bail!(
                    "{}: sip_filter returned {action}, expected {}: the class does not take its path",
                    class.name,
                    class.expected
                );
            }
            sf.push(per_run.as_nanos());
            dr.push(run_ref(&drop, &class.frame)?.as_nanos());
            pa.push(run_ref(&parse, &class.frame)?.as_nanos());
        }
        let (sf_ns, drop_ns, parse_ns) =
            (median(sf.clone()), median(dr.clone()), median(pa.clone()));
        let (vs_parse, vs_drop) = (ratio(sf_ns, parse_ns), ratio(sf_ns, drop_ns));
        let action = if class.expected == XDP_DROP {
            "drop"
        } else {
            "pass"
        };
        println!(
            "{:<27} {:>5} {:>6} {:>10} {:>6} {:>6} {:>10} {:>8}",
            class.name,
            class.frame.len(),
            action,
            sf_ns,
            drop_ns,
            parse_ns,
            show(vs_parse),
            show(vs_drop)
        );
        results.push(serde_json::json!({
            "class": class.name,
            "bytes": class.frame.len(),
            "action": action,
            "sip_filter_ns": sf_ns,
            "ref_drop_ns": drop_ns,
            "ref_parse_headers_ns": parse_ns,
            "sip_filter_per_parse": vs_parse,
            "sip_filter_per_drop": vs_drop,
            "samples_ns": { "sip_filter": sf, "ref_drop": dr, "ref_parse_headers": pa },
        }));
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "method": "BPF_PROG_TEST_RUN; each figure the median of `runs` runs of `repeat` repeats; ns per packet",
            "kernel": kernel,
            "runs": args.runs,
            "repeat": args.repeat,
            "classes": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {path}"))?;
        println!("results written to {path}");
    }
    Ok(())
}
