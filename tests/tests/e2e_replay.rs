//! `sip-filter replay`: a capture recorded (tcpdump as pcap, dumpcap as pcapng) on the
//! client's side while svmap scanned and sipp sent legitimate requests, replayed
//! through the program, gets the verdicts the attached filter gave the same packets.
//! Also: captures of the other link types (built here) reach the program as the NIC's
//! Ethernet frames would, and bad input is one line and exit 2.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, sipvicious, tcpdump, wireshark-common).

use std::{path::Path, process::Command, time::Instant};

use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        PcapNgWriter,
    },
    DataLink,
};
use serde_json::Value;
use sip_filter_common::Reason;
use sip_filter_tests::{
    lab::{
        assert_one_error_line, filter_stats, legitimate_calls, sip_filter, sip_probe, stats_json,
        svmap, LabFixture, TempDir, DOMAIN, LAB_TOOLS, QUICK, SIP_PORT,
    },
    netns::{
        run_bounded, Background, Finished, Host, Lab, CLIENT_IFACE, LEGIT_CLIENT_V4, SERVER_V4,
        SERVER_V6, SIGINT,
    },
    packets::{sip_request, udp4, udp6},
    privileged,
    replay::{replay_json, write_pcap},
};

/// The capture filter: what the server's XDP program is asked about, SIP to it. (The
/// live filter also sees ARP, neighbour discovery and ICMP errors, all `pass_not_sip`,
/// which a capture of SIP leaves out.)
fn sip_to_server() -> String {
    format!("udp dst port {SIP_PORT} and (dst host {SERVER_V4} or dst host {SERVER_V6})")
}

/// A capture program running in the client namespace.
struct Capturing {
    process: Background,
    file: std::path::PathBuf,
}

/// Starts tcpdump (pcap) or dumpcap (pcapng) on the client's interface and waits until
/// it listens.
fn start_capture(lab: &Lab, dir: &Path, pcapng: bool) -> Capturing {
    let (program, file, ready) = if pcapng {
        ("dumpcap", dir.join("capture.pcapng"), "Capturing on")
    } else {
        ("tcpdump", dir.join("capture.pcap"), "listening on")
    };
    let path = file.to_str().expect("a UTF-8 path").to_string();
    let filter = sip_to_server();
    let args: Vec<&str> = if pcapng {
        vec!["-i", CLIENT_IFACE, "-f", &filter, "-w", &path]
    } else {
        // -U: each packet written as it comes, so a stop loses none.
        vec!["-i", CLIENT_IFACE, "-n", "-U", "-w", &path, &filter]
    };
    let mut process = lab
        .spawn(
            Host::Client,
            program,
            program,
            &args,
            &dir.join(format!("{program}.log")),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    process
        .wait_for_log(ready, QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    Capturing { process, file }
}

/// Stops a capture with SIGINT (it flushes and closes the file), within QUICK.
fn stop_capture(capture: &mut Capturing) {
    capture.process.signal(SIGINT);
    let status = capture.process.wait(QUICK);
    assert!(
        status.is_some_and(|s| s.success()),
        "the capture did not stop cleanly on SIGINT ({status:?}):\n{}",
        capture.process.log()
    );
}

/// `sip-filter replay CAPTURE --domain DOMAIN --json EXTRA...`: the packet lines and
/// the summary.
fn replay(capture: &Path, extra: &[&str]) -> (Finished, Vec<Value>, Value) {
    replay_json(capture, &[&["--domain", DOMAIN][..], extra].concat())
}

fn reasons_of(stats: &Value) -> Vec<(&'static str, u64)> {
    Reason::ALL
        .iter()
        .map(|r| (r.name(), stats["reasons"][r.name()].as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn a_capture_replays_to_the_verdicts_the_attached_filter_gave() {
    if !privileged("a_capture_replays_to_the_verdicts_the_attached_filter_gave") {
        return;
    }
    let started = Instant::now();
    let binary = sip_filter();

    let mut rig = LabFixture::start("e2e-replay", &[LAB_TOOLS, &["tcpdump", "dumpcap"]].concat());
    let (mut daemon, attached) = rig.start_filter();
    println!("{attached} ({:.2} s)", started.elapsed().as_secs_f64());

    // Both captures record the same traffic, on the client's side: XDP drops packets
    // on the server's interface before a capture there would see them.
    let mut pcap = start_capture(&rig.lab, rig.dir.path(), false);
    let mut pcapng = start_capture(&rig.lab, rig.dir.path(), true);
    let before = stats_json(
        &rig.transcript
            .keep("stats before", filter_stats(&rig.lab, binary, &rig.pins)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // svmap twice (its probe bans its source; the second is dropped as banned), then
    // legitimate requests, and one for a domain the server does not serve.
    for step in ["svmap", "svmap again"] {
        let scan = rig.transcript.keep(step, svmap(&rig.lab));
        assert!(scan.success(), "{scan}");
    }
    for (step, _, call) in legitimate_calls(&mut rig.transcript, &rig.lab, rig.dir.path()) {
        assert!(call.success(), "{step} should be answered:\n{call}");
    }
    let unknown = sip_probe(
        &rig.lab,
        LEGIT_CLIENT_V4.parse().expect("an address"),
        "OPTIONS",
        "sip:alice@elsewhere.test",
        "sip-filter-e2e",
        std::time::Duration::from_secs(1),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(unknown, None, "an unknown domain should get no answer");

    let after = stats_json(
        &rig.transcript
            .keep("stats after", filter_stats(&rig.lab, binary, &rig.pins)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    stop_capture(&mut pcap);
    stop_capture(&mut pcapng);
    rig.stop_filter(&mut daemon);
    println!(
        "traffic captured ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    // What the attached filter counted, reason by reason, during the captures.
    let live: Vec<(&str, u64)> = reasons_of(&after)
        .into_iter()
        .zip(reasons_of(&before))
        .map(|((name, after), (_, before))| (name, after - before))
        .collect();
    rig.transcript
        .note(format!("live counter deltas: {live:?}"));
    let count = |counts: &[(&str, u64)], name: &str| {
        counts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    };
    assert!(count(&live, "drop_scanner") >= 1, "{live:?}");
    assert!(count(&live, "drop_banned") >= 1, "{live:?}");
    assert!(count(&live, "pass_request") >= 3, "{live:?}");
    assert!(count(&live, "drop_unknown_domain") >= 1, "{live:?}");

    // The pcap paced as captured, the pcapng as fast as it goes: this traffic is far
    // below every rate limit, so both must give the live verdicts.
    for (capture, extra) in [(&pcap.file, &["--realtime"][..]), (&pcapng.file, &[][..])] {
        let (finished, packets, summary) = replay(capture, extra);
        rig.transcript
            .note(format!("{}: {summary}", capture.display()));
        let replayed = reasons_of(&summary);
        for (name, live_count) in &live {
            let replayed_count = count(&replayed, name);
            if *name == "pass_not_sip" {
                // ARP and neighbour discovery reached the live filter, not the capture.
                assert_eq!(replayed_count, 0, "{}", finished);
                continue;
            }
            assert_eq!(
                replayed_count, *live_count,
                "{}: {name}: replayed {replayed_count}, live {live_count}\nlive {live:?}\nreplay {summary}\n{}",
                capture.display(),
                finished.stdout
            );
        }
        assert_eq!(summary["verdicts"]["skipped"], Value::Null, "{summary}");
        assert_eq!(summary["bans_made"]["scanner"], 1, "{summary}");
        assert_eq!(
            summary["banned_at_end"][0]["source"], "198.18.0.1",
            "{summary}"
        );
        // Packet by packet: the ban comes before the banned ones, and the legitimate
        // requests name their method.
        let first = |reason: &str| {
            packets
                .iter()
                .position(|p| p["reason"] == reason)
                .unwrap_or_else(|| panic!("no {reason} packet:\n{}", finished.stdout))
        };
        assert!(first("drop_scanner") < first("drop_banned"));
        assert_eq!(packets[first("drop_scanner")]["bans"][0], "scanner");
        assert_eq!(packets[first("drop_scanner")]["verdict"], "drop");
        assert!(packets.iter().any(|p| p["reason"] == "pass_request"
            && p["method"] == "REGISTER"
            && p["verdict"] == "pass"));
        println!(
            "{}: {} packets replayed, reasons equal to the live filter's ({:.2} s)",
            capture.display(),
            packets.len(),
            started.elapsed().as_secs_f64()
        );
    }

    // The text form, for a person: one line per packet and the summary tables.
    let mut command = Command::new(sip_filter());
    command
        .arg("replay")
        .arg(&pcap.file)
        .args(["--domain", DOMAIN]);
    let text = run_bounded(command, QUICK);
    assert!(text.success(), "{text}");
    println!("{}", text.stdout);
    assert!(
        text.stdout.contains("drop_scanner") && text.stdout.contains("[ban:scanner]"),
        "{text}"
    );

    // Dry-run: the same verdicts counted, nothing dropped, no ban made, so svmap's
    // second probe is a scanner again rather than banned.
    let config = rig.dir.path().join("dry-run.toml");
    std::fs::write(&config, "[filter]\ndry_run = true\n").expect("a config file");
    let config = config.to_str().expect("a UTF-8 path");
    let (finished, packets, summary) = replay(&pcap.file, &["--config", config]);
    assert!(
        packets.iter().all(|p| p["verdict"] == "pass"),
        "{}",
        finished.stdout
    );
    assert_eq!(summary["reasons"]["drop_banned"], 0, "{summary}");
    assert_eq!(
        summary["reasons"]["drop_scanner"],
        count(&live, "drop_scanner") + count(&live, "drop_banned"),
        "{summary}"
    );
    assert_eq!(summary["banned_at_end"], Value::Array(vec![]), "{summary}");

    rig.tear_down([daemon, pcap.process, pcapng.process]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

/// A scanner's OPTIONS and a legitimate one, over IPv4 and IPv6, as Ethernet frames.
fn sample_frames() -> Vec<Vec<u8>> {
    let scanner = sip_request(
        "OPTIONS",
        "sip:100@198.18.0.2",
        &["User-Agent: friendly-scanner"],
    );
    let legitimate = sip_request("OPTIONS", &format!("sip:alice@{DOMAIN}"), &[]);
    vec![
        udp4(SIP_PORT, &legitimate),
        udp6(SIP_PORT, &legitimate),
        udp4(SIP_PORT, &scanner),
        udp4(SIP_PORT, &legitimate),
    ]
}

/// The same frames with another link-layer header instead of Ethernet's.
fn relinked(link: DataLink, frame: &[u8]) -> Vec<u8> {
    let ethertype = [frame[12], frame[13]];
    let ip = &frame[14..];
    let mut out = Vec::new();
    match link {
        DataLink::ETHERNET => return frame.to_vec(),
        DataLink::LINUX_SLL => {
            out.extend_from_slice(&[0, 0, 0, 1, 0, 6]); // to us, ARPHRD_ETHER, 6-byte address
            out.extend_from_slice(&frame[6..12]);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&ethertype);
        }
        DataLink::LINUX_SLL2 => {
            out.extend_from_slice(&ethertype);
            out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]); // ifindex 2, ARPHRD_ETHER, to us
            out.extend_from_slice(&frame[6..12]);
            out.extend_from_slice(&[0, 0]);
        }
        DataLink::NULL => {
            let family: u32 = if ethertype == [0x08, 0x00] { 2 } else { 10 };
            out.extend_from_slice(&family.to_ne_bytes());
        }
        _ => {} // raw IP
    }
    out.extend_from_slice(ip);
    out
}

#[test]
fn every_link_type_reaches_the_program_as_ethernet() {
    if !privileged("every_link_type_reaches_the_program_as_ethernet") {
        return;
    }
    let dir = TempDir::new("replay-links");
    for link in [
        DataLink::ETHERNET,
        DataLink::LINUX_SLL,
        DataLink::LINUX_SLL2,
        DataLink::RAW,
        DataLink::NULL,
    ] {
        for pcapng in [false, true] {
            let path = dir.path().join(format!(
                "{link:?}.{}",
                if pcapng { "pcapng" } else { "pcap" }
            ));
            let file = std::fs::File::create(&path).expect("a capture file");
            let frames: Vec<Vec<u8>> = sample_frames()
                .iter()
                .map(|frame| relinked(link, frame))
                .collect();
            let time = |i: usize| std::time::Duration::from_millis(1_700_000_000_000 + i as u64);
            if pcapng {
                let mut writer = PcapNgWriter::new(file).expect("a pcapng writer");
                writer
                    .write_pcapng_block(InterfaceDescriptionBlock::new(link, 0xffff))
                    .expect("an interface");
                for (i, data) in frames.iter().enumerate() {
                    let block = EnhancedPacketBlock {
                        interface_id: 0,
                        // pcap-file writes the count as is: in the default unit, µs.
                        timestamp: std::time::Duration::from_nanos(time(i).as_micros() as u64),
                        original_len: data.len() as u32,
                        data: data.into(),
                        options: vec![],
                    };
                    writer.write_pcapng_block(block).expect("a packet");
                }
            } else {
                let header = PcapHeader {
                    datalink: link,
                    ..Default::default()
                };
                let mut writer = PcapWriter::with_header(file, header).expect("a pcap writer");
                for (i, data) in frames.iter().enumerate() {
                    writer
                        .write_packet(&PcapPacket::new(time(i), data.len() as u32, data))
                        .expect("a packet");
                }
            }
            let (finished, packets, summary) = replay(&path, &[]);
            let reasons: Vec<&str> = packets
                .iter()
                .map(|p| p["reason"].as_str().unwrap_or_default())
                .collect();
            assert_eq!(
                reasons,
                [
                    "pass_request",
                    "pass_request",
                    "drop_scanner",
                    "drop_banned"
                ],
                "{link:?} pcapng={pcapng}:\n{}",
                finished.stdout
            );
            assert_eq!(
                packets[0]["source"], "198.18.0.1:40000",
                "{}",
                finished.stdout
            );
            assert_eq!(packets[1]["destination"], "[2001:db8:5f::2]:5060");
            assert_eq!(packets[3]["time"], 0.003, "{}", finished.stdout);
            assert_eq!(summary["packets"], 4);
        }
    }
}

/// A brute force captured on the server (requests in, the server's 401s out) replays
/// through both programs: the answers go through the egress program, which locks the
/// account and then bans the source, as the attached filter would have.
#[test]
fn a_captured_brute_force_replays_to_the_same_lockout_and_ban() {
    use sip_filter_tests::packets::{answer4_to, challenge, register, register_answer, udp4_from};
    if !privileged("a_captured_brute_force_replays_to_the_same_lockout_and_ban") {
        return;
    }
    let dir = TempDir::new("replay-answers");
    let guesser = [198, 51, 100, 77];
    let mut frames = Vec::new();
    for guess in 0..8 {
        let call = format!("guess-{guess}");
        let request = register("1001", &call, 1, true);
        frames.push(udp4_from(guesser, SIP_PORT, &request));
        let answer = register_answer(401, "Unauthorized", &call, 1, &[&challenge(false)]);
        frames.push(answer4_to(guesser, &answer));
    }
    let path = dir.path().join("brute-force.pcap");
    write_pcap(&path, &frames);
    let config = dir.path().join("sip-filter.toml");
    std::fs::write(
        &config,
        "[filter]\nown_addresses = [\"198.18.0.2\"]\n\
         [answers]\nlockout_failures = 3\nban_failures = 5\n",
    )
    .expect("a config");
    let config = config.display().to_string();
    let (finished, packets, summary) = replay(&path, &["--config", &config]);
    let got: Vec<(String, String)> = packets
        .iter()
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
            (text(&p["verdict"]), text(&p["reason"]))
        })
        .collect();
    let pair = |verdict: &str, reason: &str| (verdict.to_string(), reason.to_string());
    let mut want = Vec::new();
    for _ in 0..3 {
        // Guessed, and the server's 401 read as a failed password.
        want.extend([pair("pass", "pass_request"), pair("answer", "failure")]);
    }
    for _ in 0..2 {
        // Locked out: dropped, so never answered (the capture's 401 finds no request).
        want.extend([
            pair("drop", "drop_auth_lockout"),
            pair("answer", "unpaired"),
        ]);
    }
    for _ in 0..3 {
        want.extend([pair("drop", "drop_banned"), pair("answer", "unpaired")]);
    }
    assert_eq!(got, want, "{}", finished.stdout);
    assert_eq!(packets[5]["lockouts"], 1, "{}", finished.stdout);
    assert_eq!(summary["lockouts"], 1, "{summary}");
    assert_eq!(summary["answers"]["failure"], 3, "{summary}");
    assert_eq!(
        sip_filter_tests::replay::banned_at_end(&summary),
        [("198.51.100.77".to_string(), "auth".to_string())],
        "{summary}"
    );
}

/// Issue 14: a guesser pipelining REGISTERs over TCP gets the server's 401s back in one
/// segment; replayed, the egress program reads both, and the packet line names each
/// message's kind.
#[test]
fn pipelined_answers_over_tcp_replay_one_kind_each() {
    use sip_filter_tests::packets::{
        answer_tcp4_to, challenge, register, register_answer, tcp4_from, Segment,
    };
    if !privileged("pipelined_answers_over_tcp_replay_one_kind_each") {
        return;
    }
    let dir = TempDir::new("replay-tcp-answers");
    let guesser = [198, 51, 100, 78];
    let calls = ["pipelined-1", "pipelined-2"];
    let mut frames: Vec<Vec<u8>> = calls
        .iter()
        .map(|call| {
            let request = register("1001", call, 1, true);
            tcp4_from(guesser, SIP_PORT, Segment::Established, &request)
        })
        .collect();
    let answers: Vec<u8> = calls
        .iter()
        .flat_map(|call| register_answer(401, "Unauthorized", call, 1, &[&challenge(false)]))
        .collect();
    frames.push(answer_tcp4_to(guesser, &answers));
    let path = dir.path().join("pipelined.pcap");
    write_pcap(&path, &frames);
    let config = dir.path().join("sip-filter.toml");
    std::fs::write(&config, "[filter]\nown_addresses = [\"198.18.0.2\"]\n").expect("a config");
    let config = config.display().to_string();
    let (finished, packets, summary) = replay(&path, &["--config", &config]);
    assert_eq!(packets.len(), 3, "{}", finished.stdout);
    assert_eq!(packets[2]["verdict"], "answer", "{}", finished.stdout);
    assert_eq!(
        packets[2]["reason"], "failure+failure",
        "{}",
        finished.stdout
    );
    assert_eq!(summary["answers"]["failure"], 2, "{summary}");
}

#[test]
fn outgoing_and_truncated_packets_are_skipped_and_said_so() {
    if !privileged("outgoing_and_truncated_packets_are_skipped_and_said_so") {
        return;
    }
    let dir = TempDir::new("replay-skips");
    let path = dir.path().join("skips.pcap");
    let file = std::fs::File::create(&path).expect("a capture file");
    let header = PcapHeader {
        datalink: DataLink::LINUX_SLL2,
        snaplen: 64,
        ..Default::default()
    };
    let mut writer = PcapWriter::with_header(file, header).expect("a pcap writer");
    let frame = &sample_frames()[0];
    let mut outgoing = relinked(DataLink::LINUX_SLL2, frame);
    outgoing[10] = 4; // PACKET_OUTGOING
    let incoming = relinked(DataLink::LINUX_SLL2, frame);
    let time = std::time::Duration::from_secs(1_700_000_000);
    writer
        .write_packet(&PcapPacket::new(
            time,
            outgoing.len() as u32,
            &outgoing[..64],
        ))
        .expect("a packet");
    writer
        .write_packet(&PcapPacket::new(
            time,
            incoming.len() as u32,
            &incoming[..64],
        ))
        .expect("a packet");
    drop(writer);
    let (finished, packets, summary) = replay(&path, &[]);
    assert_eq!(packets[0]["reason"], "truncated", "{}", finished.stdout);
    assert_eq!(packets[1]["reason"], "truncated", "{}", finished.stdout);
    // Whole, what the host sent goes through the egress program (learning from answers,
    // the default); with learning off it is skipped: XDP sees only what arrives.
    let whole = dir.path().join("outgoing.pcap");
    let mut writer = PcapWriter::with_header(
        std::fs::File::create(&whole).expect("a capture file"),
        PcapHeader {
            datalink: DataLink::LINUX_SLL2,
            ..Default::default()
        },
    )
    .expect("a pcap writer");
    writer
        .write_packet(&PcapPacket::new(time, outgoing.len() as u32, &outgoing))
        .expect("a packet");
    drop(writer);
    let (finished, packets, _) = replay(&whole, &[]);
    assert_eq!(
        (&packets[0]["verdict"], &packets[0]["reason"]),
        (&"answer".into(), &"not_answer".into()),
        "a request leaving is no answer: {}",
        finished.stdout
    );
    let config = dir.path().join("no-learning.toml");
    std::fs::write(&config, "[answers]\nlearn = false\n").expect("a config");
    let config = config.display().to_string();
    let (finished, packets, _) = replay(&whole, &["--config", &config]);
    assert_eq!(packets[0]["reason"], "outgoing", "{}", finished.stdout);
    assert_eq!(summary["verdicts"]["skipped"], 2, "{summary}");
    let (text, ..) = {
        let mut command = Command::new(sip_filter());
        command.arg("replay").arg(&path);
        let finished = run_bounded(command, QUICK);
        assert!(finished.success(), "{finished}");
        (finished.stdout, ())
    };
    assert!(text.contains("captured 64 of"), "{text}");
}

#[test]
fn bad_captures_exit_2_with_one_line() {
    let dir = TempDir::new("replay-bad");
    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all\n").expect("a file");
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").expect("a file");
    let missing = dir.path().join("missing.pcap");
    let header_cut = dir.path().join("header-cut.pcap");
    std::fs::write(&header_cut, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).expect("a file");
    for (path, says) in [
        (&garbage, "not a pcap or pcapng capture"),
        (&empty, "not a pcap or pcapng capture"),
        (&header_cut, "not a pcap or pcapng capture"),
        (&missing, "cannot be read"),
        (&dir.path().to_path_buf(), "cannot be read"),
    ] {
        let mut command = Command::new(sip_filter());
        command.arg("replay").arg(path).args(["--domain", DOMAIN]);
        let finished = run_bounded(command, QUICK);
        assert_one_error_line(&finished, says);
        assert!(finished.stdout.is_empty(), "{finished}");
    }
}

#[test]
fn replay_without_privileges_exits_2_with_one_line() {
    if !privileged("replay_without_privileges_exits_2_with_one_line") {
        return;
    }
    let dir = TempDir::new("replay-unprivileged");
    let path = dir.path().join("one.pcap");
    write_pcap(&path, &sample_frames()[..1]);
    // Readable by nobody.
    let mut chmod = Command::new("chmod");
    chmod.args(["a+rx"]).arg(dir.path()).arg(&path);
    assert!(run_bounded(chmod, QUICK).success());
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(sip_filter())
        .arg("replay")
        .arg(&path);
    let finished = run_bounded(command, QUICK);
    assert_one_error_line(&finished, "run it as root");
}
