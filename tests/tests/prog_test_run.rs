//! The real XDP program in the kernel, fed packets with BPF_PROG_TEST_RUN: a table of
//! frames, each with the verdict and the one counter it must move.

use std::net::IpAddr;

use sip_filter::{Filter, NotSipPolicy, Settings};
use sip_filter_common::{Counters, Method, Reason};
use sip_filter_tests::{packets::*, privileged};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    reason: Reason,
    method: Method,
}

fn case(name: &'static str, frame: Vec<u8>, reason: Reason, method: Method) -> Case {
    Case {
        name,
        frame,
        reason,
        method,
    }
}

fn settings() -> Settings {
    Settings {
        domains: vec!["pbx.example.test".into(), "*.voip.example.test".into()],
        own_addresses: vec![IpAddr::from(SERVER_V4), IpAddr::from(SERVER_V6)],
        not_sip_payload: NotSipPolicy::Drop,
        ..Settings::default()
    }
}

fn cases() -> Vec<Case> {
    use Method::*;
    use Reason::*;
    let options = |uri| sip_request("OPTIONS", uri, &[]);
    vec![
        case(
            "allowed OPTIONS",
            udp4(SIP_PORT, &options("sip:100@pbx.example.test")),
            PassRequest,
            Options,
        ),
        case(
            "unknown domain OPTIONS",
            udp4(SIP_PORT, &options("sip:100@evil.test")),
            DropUnknownDomain,
            Options,
        ),
        case("not a SIP port", udp4(53, b"anything"), PassNotSip, None),
    ]
}

#[test]
fn packet_table() {
    if !privileged("packet_table") {
        return;
    }
    let mut filter = Filter::load().expect("the XDP program loads");
    filter.configure(&settings()).expect("settings apply");
    let mut failures = Vec::new();
    for case in cases() {
        let before = filter.counters().expect("counters read");
        let action = filter
            .test_run(&case.frame)
            .expect("BPF_PROG_TEST_RUN runs");
        let delta = filter.counters().expect("counters read").since(&before);
        let mut expected = Counters::default();
        expected.packets[case.reason as usize][case.method as usize] = 1;
        let expected_action = if case.reason.is_drop() {
            XDP_DROP
        } else {
            XDP_PASS
        };
        if action != expected_action || delta.packets != expected.packets {
            failures.push(format!(
                "{}: action {action} (expected {expected_action}), counted {:?} (expected {} {})",
                case.name,
                moved(&delta),
                case.reason.name(),
                case.method.name()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn moved(delta: &Counters) -> Vec<String> {
    let mut out = Vec::new();
    for reason in Reason::ALL {
        for method in Method::ALL {
            let n = delta.packets[reason as usize][method as usize];
            if n != 0 {
                out.push(format!("{} {} +{n}", reason.name(), method.name()));
            }
        }
    }
    out
}
