//! `sip-filter replay` on captures written here, no network needed: captures of every
//! link type reach the program as the NIC's Ethernet frames would; a brute force
//! captured on the server (requests in, 401s out) replays to the same lockout and ban;
//! answers pipelined in one TCP segment are each read; outgoing and truncated packets
//! are skipped and said so; bad input is one line and exit 2. (`e2e_replay` checks a
//! capture of a real lab against the attached filter's verdicts.)
//!
//! Needs root (replay loads the programs); in CI (`CI=true`) without it, fails.

use std::process::Command;

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
use sip_filter_tests::{
    lab::{assert_one_error_line, sip_filter, TempDir, DOMAIN, QUICK, SIP_PORT},
    netns::run_bounded,
    packets::{sip_request, udp4, udp6},
    privileged,
    replay::{replay_lab_json, write_pcap},
};

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
            let (finished, packets, summary) = replay_lab_json(&path, &[]);
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
    let (finished, packets, summary) = replay_lab_json(&path, &["--config", &config]);
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
    let (finished, packets, summary) = replay_lab_json(&path, &["--config", &config]);
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
    let (finished, packets, summary) = replay_lab_json(&path, &[]);
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
    let (finished, packets, _) = replay_lab_json(&whole, &[]);
    assert_eq!(
        (&packets[0]["verdict"], &packets[0]["reason"]),
        (&"answer".into(), &"not_answer".into()),
        "a request leaving is no answer: {}",
        finished.stdout
    );
    let config = dir.path().join("no-learning.toml");
    std::fs::write(&config, "[answers]\nlearn = false\n").expect("a config");
    let config = config.display().to_string();
    let (finished, packets, _) = replay_lab_json(&whole, &["--config", &config]);
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
