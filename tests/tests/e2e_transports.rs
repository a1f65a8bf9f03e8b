//! End to end, in network namespaces: a source banned over UDP can open neither TCP nor
//! TLS, and a TCP connection opened before its source's ban stops carrying messages
//! (issue 14, item 1: the source policy on every transport; XDP runs before conntrack,
//! so there is no ESTABLISHED bypass). Kamailio answers OPTIONS over UDP and TCP 5060;
//! `openssl s_server` answers TLS on 5061; the client side is bash's `/dev/tcp` and
//! `openssl s_client`, each bounded by `timeout`. And a SYN flood from one source is
//! held to its connection bucket while another client still connects (issue 14, item
//! 2): `hping3` floods, sipp connects over TCP; `top` and the daemon's log show the
//! flood's drops.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio, openssl,
//! hping3, sipp).

use std::time::Duration;

use sip_filter_tests::{
    lab::{
        counter, json_array, kamailio_globals_with_tcp, options_scenario, sip_filter, sipp_in,
        LabFixture, PinRoot, DOMAIN, QUICK, SIP_PORT,
    },
    netns::{Finished, Host, Lab, CLIENT_V4, LEGIT_CLIENT_V4, SERVER_V4},
    privileged,
};

/// The TLS port `openssl s_server` listens on (the filter's default TLS port).
const TLS_PORT: u16 = 5061;
/// How long a client waits for an answer it expects (generous: a busy 2-core machine).
const ANSWER_TIMEOUT: &str = "15";
/// How long a client listens for an answer that must not come, once its first answer
/// showed the path works: Kamailio answers in milliseconds.
const SILENCE_TIMEOUT: &str = "4";
/// How long a TLS handshake may take, and a banned one is given.
const HANDSHAKE_TIMEOUT: &str = "15";

/// Kamailio answering every request with a stateless 200, over UDP and TCP.
fn kamailio_udp_and_tcp() -> String {
    let globals = kamailio_globals_with_tcp(2, 1, &[SERVER_V4]);
    format!(
        r#"{globals}loadmodule "sl.so"

request_route {{
    sl_send_reply("200", "OK");
}}
"#
    )
}

/// An OPTIONS over TCP, CRLF line ends, tagged `n` (its Call-ID and CSeq).
fn options(n: u32) -> String {
    format!(
        "OPTIONS sip:alice@{DOMAIN} SIP/2.0\\r\\nVia: SIP/2.0/TCP {CLIENT_V4};branch=z9hG4bK-tcp{n}\\r\\n\
         From: <sip:probe@{DOMAIN}>;tag={n}\\r\\nTo: <sip:alice@{DOMAIN}>\\r\\n\
         Call-ID: tcp{n}@{CLIENT_V4}\\r\\nCSeq: {n} OPTIONS\\r\\nMax-Forwards: 70\\r\\n\
         Content-Length: 0\\r\\n\\r\\n"
    )
}

/// A bash script for the client: connects to the server's TCP 5060, sends OPTIONS 1 and
/// prints the status line of the answer as `answer 1: ...`; then, if `flag` is given,
/// waits for that file to appear, sends OPTIONS 2 on the same connection and prints
/// `answer 2: ...` or `answer 2: none`.
fn tcp_client(flag: Option<&str>) -> String {
    let mut script = format!(
        "exec 3<>/dev/tcp/{SERVER_V4}/{SIP_PORT} || {{ echo 'connect: refused or timed out'; exit 7; }}\n\
         echo connected\n\
         printf '{}' >&3\n\
         if read -t {ANSWER_TIMEOUT} -r line <&3; then echo \"answer 1: $line\"; else echo 'answer 1: none'; fi\n",
        options(1)
    );
    if let Some(flag) = flag {
        script.push_str(&format!(
            "while [ ! -e {flag} ]; do sleep 0.1; done\n\
             printf '{}' >&3\n\
             # Skip what is left of the first answer, then look for a second status line.\n\
             answered=none\n\
             while read -t {SILENCE_TIMEOUT} -r line <&3; do case \"$line\" in SIP/2.0*) answered=\"$line\";; esac; done\n\
             echo \"answer 2: $answered\"\n",
            options(2)
        ));
    }
    script
}

/// `tcp_client` run to completion in the client namespace (bounded by `timeout`).
fn tcp_options(lab: &Lab) -> Finished {
    lab.run(
        Host::Client,
        "timeout",
        &["20", "bash", "-c", &tcp_client(None)],
        QUICK,
    )
}

/// A TLS handshake from the client namespace to the server's 5061, bounded.
fn tls_handshake(lab: &Lab) -> Finished {
    let connect = format!("{SERVER_V4}:{TLS_PORT}");
    lab.run(
        Host::Client,
        "timeout",
        &[
            HANDSHAKE_TIMEOUT,
            "openssl",
            "s_client",
            "-connect",
            &connect,
            "-servername",
            DOMAIN,
            "-brief",
        ],
        QUICK,
    )
}

fn block(lab: &Lab, pins: &PinRoot, args: &[&str]) -> Finished {
    let mut all: Vec<&str> = vec!["block"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    lab.run(Host::Server, sip_filter(), &all, QUICK)
}

#[test]
fn a_ban_covers_tcp_and_tls_and_established_connections() {
    if !privileged("a_ban_covers_tcp_and_tls_and_established_connections") {
        return;
    }
    let mut rig = LabFixture::start_with(
        "e2e-transports",
        &[
            "nsenter", "ip", "ss", "kamailio", "openssl", "timeout", "bash",
        ],
        |_| Ok(()),
        &kamailio_udp_and_tcp(),
    );
    // A TLS server: a self-signed certificate made here, `s_server` answering on 5061.
    let dir = rig.dir.path().to_path_buf();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = rig.lab.run(
        Host::Server,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={DOMAIN}"),
            "-keyout",
            key.to_str().expect("UTF-8"),
            "-out",
            cert.to_str().expect("UTF-8"),
        ],
        QUICK,
    );
    assert!(made.success(), "{made}");
    let accept = format!("{SERVER_V4}:{TLS_PORT}");
    let mut tls_server = rig
        .lab
        .spawn(
            Host::Server,
            "openssl s_server",
            "openssl",
            &[
                "s_server",
                "-accept",
                &accept,
                "-cert",
                cert.to_str().expect("UTF-8"),
                "-key",
                key.to_str().expect("UTF-8"),
                "-naccept",
                "100",
                "-quiet",
            ],
            &dir.join("s_server.log"),
        )
        .expect("s_server starts");
    std::thread::sleep(Duration::from_millis(500));
    assert!(tls_server.exited().is_none(), "{}", tls_server.log());

    let (mut daemon, attached) = rig.start_filter();
    rig.transcript.note(attached);

    // Before the ban: TCP is answered, the TLS handshake completes.
    let before = rig
        .transcript
        .keep("OPTIONS over TCP", tcp_options(&rig.lab));
    assert!(before.stdout.contains("answer 1: SIP/2.0 200"), "{before}");
    let handshake = rig
        .transcript
        .keep("TLS handshake", tls_handshake(&rig.lab));
    assert!(
        handshake.success() && handshake.stderr.contains("CONNECTION ESTABLISHED"),
        "{handshake}"
    );

    // A connection opened before the ban: its first OPTIONS is answered.
    let flag = dir.join("banned");
    let flag_arg = flag.to_str().expect("UTF-8").to_string();
    let mut open = rig
        .lab
        .spawn(
            Host::Client,
            "open TCP connection",
            "timeout",
            &["90", "bash", "-c", &tcp_client(Some(&flag_arg))],
            &dir.join("open-connection.log"),
        )
        .expect("the client starts");
    let first = open
        .wait_for_log("answer 1:", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(first.contains("SIP/2.0 200"), "{first}");

    // Banned (as a UDP scanner would be): nothing gets through on any transport.
    let added = rig.transcript.keep(
        "block add",
        block(&rig.lab, &rig.pins, &["add", CLIENT_V4, "--ttl", "1h"]),
    );
    assert!(added.success(), "{added}");
    std::fs::write(&flag, b"").expect("the flag file");
    let second = open
        .wait_for_log("answer 2:", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        second.contains("answer 2: none"),
        "the established connection still carried a message after the ban: {second}\n{}",
        open.log()
    );
    let refused = rig
        .transcript
        .keep("OPTIONS over TCP, banned", tcp_options(&rig.lab));
    assert!(
        !refused.stdout.contains("connected"),
        "a banned source opened a TCP connection: {refused}"
    );
    let refused_tls = rig
        .transcript
        .keep("TLS handshake, banned", tls_handshake(&rig.lab));
    assert!(
        !refused_tls.success() && !refused_tls.stderr.contains("CONNECTION ESTABLISHED"),
        "a banned source completed a TLS handshake: {refused_tls}"
    );

    // Lifted: both work again.
    let deleted = rig
        .transcript
        .keep("block del", block(&rig.lab, &rig.pins, &["del", CLIENT_V4]));
    assert!(deleted.success(), "{deleted}");
    let again = rig
        .transcript
        .keep("OPTIONS over TCP, unbanned", tcp_options(&rig.lab));
    assert!(again.stdout.contains("answer 1: SIP/2.0 200"), "{again}");

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon, open, tls_server]);
}

/// The flood's source's connection bucket: a burst of 20, refilled at 1 a second.
const FLOOD_BURST: u64 = 20;
/// SYNs in the flood, 10 ms apart: 3 s of it.
const FLOOD_SYNS: u64 = 300;

/// A SYN flood from one source (`hping3`, bounded in count and time) is held to its
/// connection bucket: its burst passes, then one SYN a second, and the rest is
/// `drop_connection_rate`; meanwhile another client of the same network connects over
/// TCP and gets its SIP answer (sipp, `-t t1`). No ban: the connection-overflow ban is
/// off by default.
#[test]
fn a_syn_flood_is_held_to_its_bucket() {
    if !privileged("a_syn_flood_is_held_to_its_bucket") {
        return;
    }
    let mut rig = LabFixture::start_with(
        "e2e-syn-flood",
        &[
            "nsenter", "ip", "ss", "kamailio", "hping3", "sipp", "timeout",
        ],
        |_| Ok(()),
        &kamailio_udp_and_tcp(),
    );
    let mut daemon = rig.start_filter_with(&format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n\
         [rate_limit.connections]\nrate = 1\nburst = {FLOOD_BURST}\n"
    ));

    let count = FLOOD_SYNS.to_string();
    let (flood, legit) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            rig.lab.run(
                Host::Client,
                "timeout",
                &[
                    "60", "hping3", "-S", "-p", "5060", "-c", &count, "-i", "u10000", "-a",
                    CLIENT_V4, SERVER_V4,
                ],
                QUICK,
            )
        });
        // A second into the flood, its burst long spent: another client connects.
        std::thread::sleep(Duration::from_secs(1));
        let target = format!("{SERVER_V4}:{SIP_PORT}");
        let legit = sipp_in(
            rig.lab.ns(Host::Client),
            rig.dir.path(),
            "legit-tcp",
            &options_scenario(),
            LEGIT_CLIENT_V4,
            &target,
            &[
                "-t",
                "t1",
                "-m",
                "1",
                "-l",
                "1",
                "-timeout",
                "30s",
                "-timeout_error",
            ],
            QUICK,
        );
        (flood.join().expect("the flood's thread"), legit)
    });
    let flood = rig.transcript.keep("hping3 SYN flood", flood);
    let legit = rig.transcript.keep("sipp OPTIONS over TCP", legit);
    assert!(
        flood
            .to_string()
            .contains(&format!("{FLOOD_SYNS} packets transmitted")),
        "the flood was not sent whole: {flood}"
    );
    assert!(
        legit.success(),
        "the other client did not get its answer over TCP during the flood: {legit}"
    );

    let stats = rig
        .transcript
        .stats("stats after the flood", &rig.lab, &rig.pins);
    let dropped = counter(&stats, "reasons", "drop_connection_rate");
    let passed = FLOOD_SYNS - dropped;
    // The bucket's burst, and one a second for as long as the flood lasted (its run
    // time is an upper bound: hping3 waits for answers after the last SYN).
    let refilled = flood.elapsed.as_secs() + 1;
    rig.transcript.note(format!(
        "flood: {FLOOD_SYNS} SYNs in {:.1} s, {passed} passed, {dropped} dropped",
        flood.elapsed.as_secs_f64()
    ));
    assert!(
        (FLOOD_BURST..=FLOOD_BURST + refilled).contains(&passed),
        "{passed} of the flood's SYNs passed: expected its burst of {FLOOD_BURST} and at \
         most {refilled} refills: {stats}"
    );
    assert_eq!(
        counter(&stats, "reasons", "drop_connection_budget"),
        0,
        "{stats}"
    );

    // The operator's view (issue 14): `top` names the flooder and its SYNs dropped, and
    // the daemon logged its first drop as a TCP one.
    let top = rig
        .transcript
        .verb_ok(&rig.lab, &rig.pins, &["top", "--json"]);
    let rows = json_array(&top);
    let flooder = rows
        .iter()
        .find(|row| row["source"] == CLIENT_V4)
        .unwrap_or_else(|| panic!("no row for {CLIENT_V4} in top: {top}"));
    assert_eq!(
        flooder["reasons"]["drop_connection_rate"].as_u64(),
        Some(dropped),
        "{top}"
    );
    let line = daemon
        .wait_for_log(&format!("event=drop src={CLIENT_V4} "), QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line.contains(" reason=drop_connection_rate ") && line.contains(" transport=tcp "),
        "{line}"
    );

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
}
