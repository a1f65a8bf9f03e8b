//! Per-packet cost of the real program, by packet class, with BPF_PROG_TEST_RUN:
//! the median over several runs of many repeats each. Figures, not a test: these
//! machines are shared and noisy. `cargo run --release -p sip-filter-tests --bin bench`
//! (as root). Reference programs for ratios come with the benchmark issue.

use std::net::IpAddr;

use sip_filter::{settings::BanRules, Filter, Settings};
use sip_filter_common::maps::BanReason;
use sip_filter_tests::packets::*;

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 7;

fn main() -> anyhow::Result<()> {
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
    let classes: Vec<(&str, Vec<u8>)> = vec![
        ("non-SIP UDP (DNS)", udp4(53, &[0u8; 40])),
        (
            "scanner OPTIONS, unknown host",
            udp4(
                SIP_PORT,
                &sip_request(
                    "OPTIONS",
                    "sip:100@198.18.0.9",
                    &["User-Agent: friendly-scanner"],
                ),
            ),
        ),
        (
            "allowed REGISTER",
            udp4(
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
        ),
        (
            "unknown-domain INVITE",
            udp4(
                SIP_PORT,
                &sip_request("INVITE", "sip:0097259@evil.test", &[]),
            ),
        ),
        (
            "allowed OPTIONS over IPv6",
            udp6(
                SIP_PORT,
                &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
            ),
        ),
        (
            "banned source",
            udp4_from(
                banned,
                SIP_PORT,
                &sip_request("OPTIONS", "sip:100@pbx.example.test", &[]),
            ),
        ),
    ];
    println!("{:<34} {:>8} {:>10}", "packet class", "bytes", "ns/packet");
    for (name, frame) in classes {
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let (_, per_run) = filter.run(&frame, REPEAT)?;
            samples.push(per_run.as_nanos());
        }
        samples.sort_unstable();
        println!("{name:<34} {:>8} {:>10}", frame.len(), samples[RUNS / 2]);
    }
    Ok(())
}
