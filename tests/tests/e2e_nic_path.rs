//! The NIC-like packet path (issue 16): frames reach the filter's XDP program as
//! `xdp_frame`s, with no socket buffer, and the filter drops a scanner flood there,
//! before the kernel builds one.
//!
//! The flood is sent with `BPF_PROG_TEST_RUN` in live-frames mode from the client
//! namespace ([`sip_filter_tests::livesend`]): its program gives each frame the next of
//! 4096 source addresses (fixing both checksums) and transmits it out of the client's
//! veth end; the server's end receives it in its NAPI poll, where the filter runs. (On
//! a kernel that refuses live frames, the sender's program runs on a launcher veth
//! instead and redirects each frame out of the client's end: the server's end receives
//! the same `xdp_frame`s; see `livesend::SendMethod`.) The
//! evidence that no socket buffer was built: the client's veth handed the frames over
//! as `xdp_frame`s (`tx_queue_0_xdp_xmit`), the server's veth dropped as many in XDP
//! (`rx_queue_0_xdp_drops`), the filter's own drop counters rose by as many, and the
//! server namespace's IP layer received nothing (`/proc/net/snmp` Ip InReceives).
//!
//! The flood is bounded in count (a few hundred thousand frames) and time, stops by
//! itself, and stays in the two namespaces the test creates. Needs root and ethtool.

use std::{net::Ipv4Addr, time::Duration};

use etherparse::{Ipv4Header, UdpHeader};
use sip_filter_tests::{
    lab::{
        filter_stats, reason_sum, require_tools, sip_filter, start_filter_with_config, stats_json,
        stop_filter, write_file, PinRoot, TempDir, DOMAIN,
    },
    livesend::{ip_counter, LiveFlood, LiveSender, Sources, VethCounters},
    netns::{Host, Lab, CLIENT_IFACE, SERVER_IFACE, SERVER_V4},
    pathbench::{mac_of, scanner_options_frame, FIRST_FLOOD_SOURCE},
    privileged,
};

const FLOOD_FRAMES: u64 = 300_000;
/// A bound the flood does not reach on an idle machine (it takes about half a second);
/// on a busy one it may, and the checks below hold for whatever was sent.
const FLOOD_TIME: Duration = Duration::from_secs(10);
const SOURCES: u32 = 4096;
/// Packets other than the flood's the server's veth may see meanwhile (IPv6 neighbour
/// discovery and the like): none are IPv4 to the SIP port.
const STRAY: u64 = 50;

/// The live sender's rewriting, checked in an ordinary test run: each frame leaves
/// with the next source address and correct IPv4 and UDP checksums (the filter bans
/// only sources of packets whose checksum it verified, and the kernel drops a wrong
/// IPv4 header checksum).
fn check_rewriting(frame: &[u8], sources: Sources) {
    let sender = LiveSender::new(sources).expect("the sender's program loads");
    for n in 0..(sources.count + 3) {
        let out = sender
            .rewrite_once(frame)
            .unwrap_or_else(|e| panic!("a test run: {e:?}"));
        let (ip, rest) = Ipv4Header::from_slice(&out[14..]).expect("an IPv4 header");
        let expected = Ipv4Addr::from(u32::from(sources.first) + n % sources.count);
        assert_eq!(Ipv4Addr::from(ip.source), expected, "frame {n}");
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "frame {n}: the IPv4 header checksum"
        );
        let (udp, payload) = UdpHeader::from_slice(rest).expect("a UDP header");
        let payload = &payload[..usize::from(udp.length) - UdpHeader::LEN];
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv4(&ip, payload).expect("a checksum"),
            "frame {n}: the UDP checksum"
        );
    }
}

#[test]
fn scanner_flood_is_dropped_on_xdp_frames_before_any_socket_buffer() {
    if !privileged("scanner_flood_is_dropped_on_xdp_frames_before_any_socket_buffer") {
        return;
    }
    require_tools(&["nsenter", "ip", "ethtool"]).unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new().expect("the lab builds");
    let dir = TempDir::new("nic-path");
    let pins = PinRoot::new("nic-path");
    let macs = (
        mac_of(&lab, Host::Client).expect("the client's MAC"),
        mac_of(&lab, Host::Server).expect("the server's MAC"),
    );
    let frame = scanner_options_frame(macs);
    check_rewriting(
        &frame,
        Sources {
            first: FIRST_FLOOD_SOURCE,
            count: 5,
        },
    );

    let config = write_file(
        dir.path(),
        "sip-filter.toml",
        &format!("[filter]\ndomains = [\"{DOMAIN}\"]\nown_addresses = [\"{SERVER_V4}\"]\n"),
    );
    let (mut daemon, attached) = start_filter_with_config(
        &lab,
        sip_filter(),
        &pins,
        &config,
        &dir.path().join("sip-filter.log"),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{attached}");
    assert!(
        attached.contains("native"),
        "the filter must run in native mode for frames to arrive as xdp_frames: {attached}"
    );

    let (client, server) = (lab.ns(Host::Client), lab.ns(Host::Server));
    let stats = || stats_json(&filter_stats(&lab, sip_filter(), &pins)).expect("stats");
    let drops_before = reason_sum(&stats(), "drop_");
    let sending_before = VethCounters::read(client, CLIENT_IFACE).expect("ethtool -S");
    let receiving_before = VethCounters::read(server, SERVER_IFACE).expect("ethtool -S");
    let ip_before = ip_counter(server, "InReceives").expect("Ip InReceives");

    let sent = LiveFlood {
        ns: client,
        iface: CLIENT_IFACE,
        frame: &frame,
        sources: Sources {
            first: FIRST_FLOOD_SOURCE,
            count: SOURCES,
        },
        max_frames: FLOOD_FRAMES,
        max_time: FLOOD_TIME,
        cpu: 0,
        nice: 0,
    }
    .run()
    .expect("the live flood runs");
    // The receiving NAPI poll runs before the sender's system call returns; a moment
    // for any straggler.
    std::thread::sleep(Duration::from_millis(200));

    let after = stats();
    let drops = reason_sum(&after, "drop_") - drops_before;
    let sending = VethCounters::read(client, CLIENT_IFACE)
        .expect("ethtool -S")
        .since(&sending_before);
    let receiving = VethCounters::read(server, SERVER_IFACE)
        .expect("ethtool -S")
        .since(&receiving_before);
    let ip_received = ip_counter(server, "InReceives").expect("Ip InReceives") - ip_before;
    let summary = format!(
        "sent {} frames ({}) in {:.2} s ({:.0}/s, sender thread {:.2} CPU s); sending veth: \
         {} xdp_frames handed over, {} refused (ring full); receiving veth: {} received in \
         its NAPI poll, {} dropped by XDP; the filter's drops: {drops}; Ip InReceives in \
         the server namespace: {ip_received}; reasons: {}",
        sent.frames,
        sent.method.name(),
        sent.elapsed.as_secs_f64(),
        sent.frames as f64 / sent.elapsed.as_secs_f64(),
        sent.thread_cpu.as_secs_f64(),
        sending.xdp_sent,
        sending.xdp_send_errors,
        receiving.xdp_received,
        receiving.xdp_drops,
        after["reasons"],
    );
    println!("{summary}");

    assert!(
        sent.frames >= FLOOD_FRAMES / 10,
        "the sender sent too little before its time was up: {summary}"
    );
    assert_eq!(
        sending.xdp_sent + sending.xdp_send_errors,
        sent.frames,
        "every frame sent left as an xdp_frame (or found the ring full): {summary}"
    );
    assert!(
        receiving.xdp_received >= FLOOD_FRAMES / 10,
        "too few frames arrived: {summary}"
    );
    assert!(
        sending.xdp_sent <= receiving.xdp_received
            && receiving.xdp_received <= sending.xdp_sent + STRAY,
        "the receiving veth got the xdp_frames handed over, and next to nothing else: {summary}"
    );
    assert!(
        drops <= receiving.xdp_received && drops + STRAY >= receiving.xdp_received,
        "the filter dropped what arrived: {summary}"
    );
    assert_eq!(
        receiving.xdp_drops, drops,
        "the veth's XDP drops are the filter's: {summary}"
    );
    assert!(
        ip_received <= STRAY,
        "flood frames reached the IP layer: {summary}"
    );
    // A ban needs a verified checksum: the rewritten frames carry right ones.
    let banned = after["reasons"]["drop_banned"].as_u64().unwrap_or(0);
    assert!(
        banned >= drops / 2,
        "the scanners' sources were not banned (wrong checksums?): {summary}"
    );

    stop_filter(&lab, &mut daemon, &pins.link_pin(SERVER_IFACE))
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(daemon);
    drop(pins);
    drop(dir);
    drop(lab);
}
