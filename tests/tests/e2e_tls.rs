//! End to end, in network namespaces: the TLS ClientHello policy (issue 14, item 4)
//! before a real TLS server. Kamailio serves SIP over TLS on 5061 with a self-signed
//! certificate made here; the client is `openssl s_client` (Debian's sipp is built
//! without TLS), each run bounded by `timeout`. SIP over TLS (a REGISTER and an INVITE
//! on one connection) is answered; handshakes with the served name, without a name and
//! in TLS 1.3 complete; a foreign name and a TLS 1.1 ClientHello are dropped, and
//! repeated refused handshakes ban the source, after which its good handshakes fail too.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio with
//! kamailio-tls-modules, openssl).

use std::path::Path;

use sip_filter_tests::{
    lab::{counter, kamailio_globals, LabFixture, TempDir, DOMAIN, QUICK},
    netns::{Finished, Host, Lab, CLIENT_V4, SERVER_V4},
    privileged,
};

/// The filter's default TLS port.
const TLS_PORT: u16 = 5061;
/// How long a handshake that must complete may take (a busy 2-core machine).
const HANDSHAKE_TIMEOUT: &str = "15";
/// How long a handshake that must not complete is given: its ClientHello is dropped,
/// and TCP resends it meanwhile (counted as one refusal).
const REFUSED_TIMEOUT: &str = "4";

/// A self-signed certificate for [`DOMAIN`] and its key, in `dir` (made on the host:
/// no network involved).
fn make_certificate(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem").to_string_lossy().into_owned();
    let key = dir.join("key.pem").to_string_lossy().into_owned();
    let subject = format!("/CN={DOMAIN}");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .args([subject.as_str(), "-keyout", &key, "-out", &cert])
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "openssl req: {made:?}");
    (cert, key)
}

/// Kamailio answering every request with a stateless 200, over UDP (the lab waits for
/// it) and TLS.
fn kamailio_tls(cert: &str, key: &str) -> String {
    let globals = kamailio_globals(2, 1, &[SERVER_V4]).replace("disable_tcp=yes", "disable_tcp=no");
    format!(
        r#"{globals}enable_tls=yes
listen=tls:{SERVER_V4}:{TLS_PORT}
loadmodule "sl.so"
loadmodule "tls.so"
modparam("tls", "certificate", "{cert}")
modparam("tls", "private_key", "{key}")
modparam("tls", "tls_method", "TLSv1.2+")
modparam("tls", "verify_certificate", 0)
modparam("tls", "require_certificate", 0)

request_route {{
    sl_send_reply("200", "OK");
}}
"#
    )
}

/// A request over TLS, CRLF line ends as `printf` writes them.
fn request(method: &str, uri: &str, n: u32) -> String {
    format!(
        "{method} {uri} SIP/2.0\\r\\nVia: SIP/2.0/TLS {CLIENT_V4};branch=z9hG4bK-tls{n}\\r\\n\
         From: <sip:alice@{DOMAIN}>;tag={n}\\r\\nTo: <sip:alice@{DOMAIN}>\\r\\n\
         Call-ID: tls{n}@{CLIENT_V4}\\r\\nCSeq: {n} {method}\\r\\n\
         Contact: <sip:alice@{CLIENT_V4};transport=tls>\\r\\nMax-Forwards: 70\\r\\n\
         Content-Length: 0\\r\\n\\r\\n"
    )
}

/// A REGISTER and an INVITE on one TLS connection, the answers printed; bounded.
fn sip_over_tls(lab: &Lab) -> Finished {
    let requests = format!(
        "{}{}",
        request("REGISTER", &format!("sip:{DOMAIN}"), 1),
        request("INVITE", &format!("sip:bob@{DOMAIN}"), 2)
    );
    let script = format!(
        "printf '{requests}' | timeout 8 openssl s_client -connect {SERVER_V4}:{TLS_PORT} \
         -servername {DOMAIN} -quiet -ign_eof 2>&1; true"
    );
    lab.run(Host::Client, "bash", &["-c", &script], QUICK)
}

/// A handshake from the client to the server's 5061, with `options`, bounded.
fn handshake(lab: &Lab, timeout: &str, options: &[&str]) -> Finished {
    let connect = format!("{SERVER_V4}:{TLS_PORT}");
    let mut args = vec![
        timeout, "openssl", "s_client", "-connect", &connect, "-brief",
    ];
    args.extend_from_slice(options);
    lab.run(Host::Client, "timeout", &args, QUICK)
}

fn established(finished: &Finished) -> bool {
    finished.success() && finished.stderr.contains("CONNECTION ESTABLISHED")
}

#[test]
fn client_hellos_are_judged_before_a_real_tls_server() {
    if !privileged("client_hellos_are_judged_before_a_real_tls_server") {
        return;
    }
    let cert_dir = TempDir::new("e2e-tls-cert");
    let (cert, key) = make_certificate(cert_dir.path());
    let mut rig = LabFixture::start_with(
        "e2e-tls",
        &[
            "nsenter", "ip", "ss", "kamailio", "openssl", "timeout", "bash",
        ],
        |_| Ok(()),
        &kamailio_tls(&cert, &key),
    );
    let mut daemon = rig.start_filter_with(&format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n\
         [tls]\nmin_version = \"1.2\"\n\n\
         [ban]\ntls_refused_hits = 3\ntls_refused_window_seconds = \"1m\"\n\
         tls_refused_seconds = \"10m\"\n"
    ));

    // SIP over TLS: a registration and a call's INVITE are answered.
    let sip = rig
        .transcript
        .keep("REGISTER and INVITE over TLS", sip_over_tls(&rig.lab));
    assert_eq!(
        sip.stdout.matches("SIP/2.0 200").count(),
        2,
        "both requests answered over TLS: {sip}"
    );
    // Good handshakes: the served name, no name (a phone set up with an IP address),
    // TLS 1.3 only, TLS 1.2 only.
    for (step, options) in [
        ("served name", &["-servername", DOMAIN][..]),
        ("no server name", &["-noservername"][..]),
        ("TLS 1.3", &["-servername", DOMAIN, "-tls1_3"][..]),
        ("TLS 1.2", &["-servername", DOMAIN, "-tls1_2"][..]),
    ] {
        let done = rig.transcript.keep(
            &format!("handshake, {step}"),
            handshake(&rig.lab, HANDSHAKE_TIMEOUT, options),
        );
        assert!(established(&done), "{step}: {done}");
    }
    let stats = rig
        .transcript
        .stats("stats after the good handshakes", &rig.lab, &rig.pins);
    assert!(counter(&stats, "reasons", "pass_tls_hello") >= 5, "{stats}");
    assert_eq!(counter(&stats, "reasons", "drop_tls_sni"), 0, "{stats}");

    // Refused: a foreign name; TLS 1.1 (Debian's OpenSSL offers it at security level 0
    // only). Each is one refusal, however often TCP resends it.
    let foreign = rig.transcript.keep(
        "handshake, a foreign name",
        handshake(
            &rig.lab,
            REFUSED_TIMEOUT,
            &["-servername", "evil.example.net"],
        ),
    );
    assert!(!established(&foreign), "{foreign}");
    let old = rig.transcript.keep(
        "handshake, TLS 1.1",
        handshake(
            &rig.lab,
            REFUSED_TIMEOUT,
            &[
                "-servername",
                DOMAIN,
                "-tls1_1",
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ],
        ),
    );
    assert!(!established(&old), "{old}");
    let stats = rig
        .transcript
        .stats("stats after two refusals", &rig.lab, &rig.pins);
    assert!(counter(&stats, "reasons", "drop_tls_sni") >= 1, "{stats}");
    assert!(
        counter(&stats, "reasons", "drop_tls_version") >= 1,
        "{stats}"
    );
    assert_eq!(
        counter(&stats, "bans_added", "tls"),
        0,
        "two refusals: no ban yet: {stats}"
    );

    // The third refused handshake bans the source: now even its good one fails.
    let third = rig.transcript.keep(
        "handshake, a foreign name again",
        handshake(
            &rig.lab,
            REFUSED_TIMEOUT,
            &["-servername", "www.example.net"],
        ),
    );
    assert!(!established(&third), "{third}");
    let stats = rig
        .transcript
        .stats("stats after three refusals", &rig.lab, &rig.pins);
    assert_eq!(counter(&stats, "bans_added", "tls"), 1, "{stats}");
    let banned = rig.transcript.keep(
        "handshake, served name, banned",
        handshake(&rig.lab, REFUSED_TIMEOUT, &["-servername", DOMAIN]),
    );
    assert!(
        !established(&banned),
        "a banned source completed a handshake: {banned}"
    );
    let stats = rig
        .transcript
        .stats("stats when banned", &rig.lab, &rig.pins);
    assert!(counter(&stats, "reasons", "drop_banned") >= 1, "{stats}");

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
}
