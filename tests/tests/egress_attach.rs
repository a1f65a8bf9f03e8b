//! The egress program attached by the library the daemon uses, in each mode the kernel
//! has, on the loopback interface of a network namespace of the test's own: no tools,
//! so that `cargo xtask vm-test` runs it under Debian 12's 6.1 kernel (clsact; tcx is
//! refused there with a clear error) as well as on the host (tcx and clsact).
//!
//! For each mode: datagrams leaving through the interface raise the egress counters, and
//! a TCP segment from the SIP port holding two answers has both read (the egress program
//! hands it to the stream program by tail call, issue 14); a daemon that died (its handles closed, its pins left) leaves the program attached and
//! counting; the next start removes the stale pins (and with them that attachment:
//! the old counters stop) and attaches once; removing the pins leaves nothing counting
//! and no clsact filter of ours.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use aya::programs::{tc, SchedClassifier, TcAttachType};
use sip_filter::{
    filter::{running_kernel, sum_answer_counters, TCX_KERNEL},
    pins::{clsact_dir, links_dir, maps_dir, remove_all, tcx_dir},
    EgressMode, Filter, FilterError, Settings,
};
use sip_filter_common::maps::{names, AnswerCounters, AnswerKind, EGRESS_PROGRAM_NAME};
use sip_filter_tests::{lab::PinRoot, netns::in_private_namespace, privileged};

const LOOPBACK: &str = "lo";
/// Datagrams sent per check.
const DATAGRAMS: u64 = 20;

#[test]
fn egress_attaches_in_each_mode_and_goes_with_its_pins() {
    if !privileged("egress_attaches_in_each_mode_and_goes_with_its_pins") {
        return;
    }
    let has_tcx = running_kernel().is_some_and(|version| version >= TCX_KERNEL);
    in_private_namespace(|| {
        let pins = PinRoot::new("egress-attach");
        let root = pins.path();
        if !has_tcx {
            // Asked for tcx where there is none: refused, saying so, nothing pinned.
            prepare(root);
            let mut filter = Filter::load().expect("the program loads");
            let refused = filter
                .attach_egress_pinned(root, LOOPBACK, EgressMode::Tcx)
                .expect_err("no tcx before 6.6");
            assert!(
                matches!(refused, FilterError::Attach { mode: "tcx", .. }),
                "{refused}"
            );
            remove_all(root).expect("nothing to remove");
        }
        let auto = if has_tcx { "tcx" } else { "clsact" };
        for (mode, expected) in [(EgressMode::Auto, auto), (EgressMode::Clsact, "clsact")] {
            println!("{mode:?}: expecting {expected}");
            check_mode(root, mode, expected, has_tcx);
        }
    })
    .expect("a network namespace of our own");
}

fn check_mode(root: &Path, mode: EgressMode, expected: &str, has_tcx: bool) {
    // The first daemon: attached, counting.
    let mut first = start(root, mode, expected);
    assert_counts(&first, "first start");
    assert_reads_a_segment(&first, "first start");

    // It dies: its handles close, its pins stay, and so does the attachment.
    first.link.take();
    assert_counts(&first, "after the crash");

    // The next start removes the stale pins first (as `run` does), then attaches once.
    remove_all(root).expect("the stale pins removed");
    let mut second = start(root, mode, expected);
    let first_before = answers(&first);
    assert_counts(&second, "second start");
    assert_eq!(
        answers(&first),
        first_before,
        "the stale attachment is gone: it counts no more"
    );

    // Stopped: nothing counts, nothing of ours attached.
    remove_all(root).expect("the pins removed");
    second.link.take();
    let before = answers(&second);
    send_datagrams();
    assert_eq!(answers(&second), before, "detached: nothing counts");
    if has_tcx {
        let (_, programs) = SchedClassifier::query_tcx(LOOPBACK, TcAttachType::Egress)
            .expect("tcx programs listed");
        assert!(programs.is_empty(), "tcx programs left: {programs:?}");
    }
    match tc::qdisc_detach_program(LOOPBACK, TcAttachType::Egress, EGRESS_PROGRAM_NAME) {
        // No filter of that name (or no clsact qdisc at all): nothing left.
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => panic!("a clsact filter of ours was left: {other:?}"),
    }
}

/// A loaded filter whose egress program is attached and pinned under `root`, with the
/// tcx link it holds (if tcx).
struct Started {
    filter: Filter,
    link: Option<aya::programs::links::PinnedLink>,
}

fn start(root: &Path, mode: EgressMode, expected: &str) -> Started {
    prepare(root);
    let mut filter = Filter::load().expect("the program loads");
    // The defaults: answers learnt, SIP over TCP on 5060.
    filter
        .configure(&Settings::default())
        .expect("the settings apply");
    filter.pin_maps(&maps_dir(root)).expect("the maps pinned");
    let (attached, link) = filter
        .attach_egress_pinned(root, LOOPBACK, mode)
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    assert_eq!(attached, expected, "{mode:?}");
    assert_eq!(link.is_some(), expected == "tcx");
    Started { filter, link }
}

/// The pin directories the daemon creates.
fn prepare(root: &Path) {
    for dir in [
        maps_dir(root),
        links_dir(root),
        tcx_dir(root),
        clsact_dir(root),
    ] {
        std::fs::create_dir_all(&dir).expect("a pin directory");
    }
}

/// Sends [`DATAGRAMS`] through the loopback interface and checks that `started`'s
/// egress counters grew by at least as many.
fn assert_counts(started: &Started, step: &str) {
    let before = answers(started);
    send_datagrams();
    let after = answers(started);
    assert!(
        after >= before + DATAGRAMS,
        "{step}: {DATAGRAMS} datagrams left, the counters went from {before} to {after}"
    );
}

/// The egress program's counters, all kinds summed.
fn answers(started: &Started) -> u64 {
    answer_counters(started).kinds.iter().sum()
}

fn answer_counters(started: &Started) -> AnswerCounters {
    let map = started
        .filter
        .map(names::ANSWER_COUNTERS)
        .expect("the answers' counters");
    sum_answer_counters(map).expect("the counters read")
}

/// The SIP port over TCP in the default settings.
const SIP_TCP_PORT: u16 = 5060;

/// Issue 14: a server on 127.0.0.1:5060 writes two answers in one segment; the egress
/// program and the stream program it tail-calls read both (no request was noted: both
/// are unpaired), the second as a later message of the segment.
fn assert_reads_a_segment(started: &Started, step: &str) {
    let answer = |call_id: &str| {
        format!(
            "SIP/2.0 401 Unauthorized\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let segment = answer("attach-1") + &answer("attach-2");
    let listener = TcpListener::bind(("127.0.0.1", SIP_TCP_PORT)).expect("the SIP TCP port");
    let mut client = TcpStream::connect(("127.0.0.1", SIP_TCP_PORT)).expect("connected");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let (mut server, _) = listener.accept().expect("accepted");
    let before = answer_counters(started);
    // One write of a few hundred bytes on an idle connection: one segment.
    server.write_all(segment.as_bytes()).expect("written");
    let mut received = vec![0u8; segment.len()];
    client.read_exact(&mut received).expect("received");
    let change = answer_counters(started).since(&before);
    assert_eq!(
        (change.of(AnswerKind::Unpaired), change.stream_later),
        (2, 1),
        "{step}: both answers of the segment read, {change:?}"
    );
}

/// [`DATAGRAMS`] UDP datagrams to a socket on 127.0.0.1, each received (so each left
/// through lo's egress).
fn send_datagrams() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("a receiver");
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("a sender");
    let to = receiver.local_addr().expect("an address");
    let mut buffer = [0u8; 64];
    for _ in 0..DATAGRAMS {
        sender.send_to(b"SIP/2.0 200 OK\r\n\r\n", to).expect("sent");
        receiver.recv_from(&mut buffer).expect("received");
    }
}
