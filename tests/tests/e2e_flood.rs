//! End to end, in network namespaces, under load: the filter's token buckets, its
//! budget for all untrusted sources and its scanner bans, measured with real traffic
//! (sipp, sipvicious, and UDP sockets bound to many addresses of the client namespace)
//! against a real SIP responder (Kamailio, which answers every request it receives).
//!
//! What reached Kamailio is counted twice: by the answers the senders got back, and by
//! the filter's `pass_request`. Each flood is bounded in count and time, stops by
//! itself, and stays between the lab's two namespaces.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, sipvicious).

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_filter_tests::{
    lab::{
        counter, options_uri, register_scenario, register_uri, response_status, scan, server_for,
        sip_filter, sip_probe, sip_request, sipp_counter, start_filter_with_config, write_file,
        LabFixture, PinRoot, Transcript, DOMAIN, LAB_TOOLS, SIP_PORT,
    },
    netns::{run_bounded, Background, Finished, Host, Lab, CLIENT_V4, LEGIT_CLIENT_V4, SERVER_V4},
    privileged,
};

/// The User-Agent of the requests the tests' own sockets send: no scanner's.
const USER_AGENT: &str = "sip-filter-e2e";
/// The allowed error of an admitted count against the configured rate.
const TOLERANCE: f64 = 0.10;
/// How long a sender keeps reading answers after its last request.
const LINGER: Duration = Duration::from_millis(700);

/// The configuration every test starts from: the lab's domain, rate-overflow bans off
/// (a banned flooder would be dropped as banned, not by its bucket), then `rest`.
fn config(rest: &str) -> String {
    format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n{rest}\n[ban]\nrate_overflow_seconds = 0\n\
         rate_overflow_hits = 0\n"
    )
}

/// The filter with `text` as its configuration file (kept in `dir` as `name`).
fn start_filter(
    lab: &Lab,
    pins: &PinRoot,
    dir: &Path,
    name: &str,
    text: &str,
    transcript: &mut Transcript,
) -> Background {
    let file = write_file(dir, name, text);
    let (daemon, attached) = start_filter_with_config(
        lab,
        sip_filter(),
        pins,
        &file,
        &dir.join(format!("{name}.log")),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    transcript.note(format!("{name}:\n{}", text.trim_end()));
    transcript.note(attached);
    daemon
}

/// `count` measured against `expected`, as a relative error.
fn error(count: u64, expected: f64) -> f64 {
    (count as f64 - expected) / expected
}

fn within_tolerance(count: u64, expected: f64) -> bool {
    error(count, expected).abs() <= TOLERANCE
}

/// UDP sockets bound to addresses of the client namespace, sending SIP requests to the
/// server and counting the 200s that come back to each.
struct Senders {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    answered: Vec<u64>,
    sent: Vec<u64>,
    /// Datagrams that came back but were not a 200.
    other: u64,
    first_send: Option<Instant>,
    last_send: Option<Instant>,
}

impl Senders {
    /// Must run inside the client namespace ([`Lab::in_namespace`]).
    fn bind(addresses: &[IpAddr]) -> Self {
        let sockets: Vec<UdpSocket> = addresses
            .iter()
            .map(|&address| {
                let socket = UdpSocket::bind(SocketAddr::new(address, 0))
                    .unwrap_or_else(|e| panic!("binding a UDP socket to {address}: {e}"));
                socket.set_nonblocking(true).expect("a non-blocking socket");
                socket
            })
            .collect();
        let locals = sockets
            .iter()
            .map(|s| s.local_addr().expect("a bound socket"))
            .collect();
        let n = sockets.len();
        Senders {
            sockets,
            locals,
            answered: vec![0; n],
            sent: vec![0; n],
            other: 0,
            first_send: None,
            last_send: None,
        }
    }

    /// Sends one request from socket `i`.
    fn send(&mut self, i: usize, method: &str, request_uri: &str) {
        let local = self.locals[i];
        let call_id = format!("{}-{}-{}", local.port(), i, self.sent[i]);
        let request = sip_request(method, request_uri, local, &call_id, USER_AGENT);
        self.sockets[i]
            .send_to(request.as_bytes(), server_for(local.ip()))
            .unwrap_or_else(|e| panic!("sending from {local}: {e}"));
        self.sent[i] += 1;
        let now = Instant::now();
        self.first_send.get_or_insert(now);
        self.last_send = Some(now);
    }

    /// Reads whatever has come back, without waiting.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        for (i, socket) in self.sockets.iter().enumerate() {
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => match response_status(&buf[..n]) {
                        Some(200) => self.answered[i] += 1,
                        _ => self.other += 1,
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("receiving on {}: {e}", self.locals[i]),
                }
            }
        }
    }

    /// Keeps reading answers for `linger`.
    fn linger(&mut self, linger: Duration) {
        let until = Instant::now() + linger;
        while Instant::now() < until {
            self.drain();
            thread::sleep(Duration::from_millis(10));
        }
        self.drain();
    }

    fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    fn total_answered(&self) -> u64 {
        self.answered.iter().sum()
    }

    /// From the first request sent to the last.
    fn sending_time(&self) -> Duration {
        match (self.first_send, self.last_send) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }
}

/// Before the filter is attached: one OPTIONS from each of `addresses`, until every one
/// is answered. A fresh veth pair may leave the first neighbor solicitation unanswered
/// (seen with IPv6: the request then waits a second for the retry), so the neighbor
/// tables are filled before anything is measured.
fn warm_up(lab: &Lab, addresses: &[IpAddr]) {
    const PATIENCE: Duration = Duration::from_secs(5);
    let senders = lab
        .in_namespace(Host::Client, || {
            let mut senders = Senders::bind(addresses);
            let uri = options_uri();
            for i in 0..addresses.len() {
                senders.send(i, "OPTIONS", &uri);
            }
            let start = Instant::now();
            while senders.answered.contains(&0) && start.elapsed() < PATIENCE {
                thread::sleep(Duration::from_millis(10));
                senders.drain();
            }
            senders
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let silent: Vec<&SocketAddr> = senders
        .locals
        .iter()
        .zip(&senders.answered)
        .filter(|(_, &n)| n == 0)
        .map(|(local, _)| local)
        .collect();
    assert!(
        silent.is_empty(),
        "without the filter, OPTIONS from {silent:?} got no answer within {PATIENCE:?}"
    );
}

/// Sleeps until `at`.
fn sleep_until(at: Instant) {
    if let Some(left) = at.checked_duration_since(Instant::now()) {
        thread::sleep(left);
    }
}

/// What a sipp run's `-trace_msg` log says: the times of the first and last message
/// sent, and how many were sent.
struct SentTimes {
    count: usize,
    span: Duration,
}

/// Reads `<scenario>_<pid>_messages.log` in `dir`, where each message follows a line
/// `----------------------------------------------- 2026-11-23 14:23:46.432903`.
fn sipp_sent_times(dir: &Path) -> SentTimes {
    let log: PathBuf = std::fs::read_dir(dir)
        .expect("sipp's directory")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with("_messages.log"))
        .unwrap_or_else(|| panic!("no sipp message log in {}", dir.display()));
    let text = std::fs::read_to_string(&log).expect("sipp's message log");
    let mut stamps = Vec::new();
    let mut previous: Option<&str> = None;
    for line in text.lines() {
        if line.contains("message sent") {
            if let Some(stamp) = previous.and_then(|p| p.rsplit(' ').next()) {
                stamps.push(seconds_of_day(stamp).unwrap_or_else(|| {
                    panic!("cannot read the time {stamp:?} in {}", log.display())
                }));
            }
        }
        if line.starts_with("-----") {
            previous = Some(line);
        }
    }
    assert!(!stamps.is_empty(), "no message sent in {}", log.display());
    let (first, last) = (stamps[0], stamps[stamps.len() - 1]);
    // Across midnight the clock starts again.
    let span = if last >= first {
        last - first
    } else {
        last + 86_400.0 - first
    };
    SentTimes {
        count: stamps.len(),
        span: Duration::from_secs_f64(span),
    }
}

/// `14:23:46.432903` -> seconds since midnight.
fn seconds_of_day(stamp: &str) -> Option<f64> {
    let mut parts = stamp.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// A sipp scenario sent at a fixed rate: one request per call, each call waiting
/// `timeout_ms` for its 200 (no retransmissions with `-nr`: one call, one datagram).
fn sipp_flood_scenario(method: &str, request_uri: &str, timeout_ms: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{method} flood">
  <send>
    <![CDATA[

      {method} {request_uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:flood@{DOMAIN}>;tag=[pid]SIPpTag[call_number]
      To: <sip:flood@{DOMAIN}>
      Call-ID: [call_id]
      CSeq: 1 {method}
      Contact: <sip:flood@[local_ip]:[local_port]>
      Expires: 60
      User-Agent: {USER_AGENT}-flood
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="{timeout_ms}"/>
</scenario>
"#
    )
}

/// sipp from `local_ip` in the client namespace to the server: `calls` calls of
/// `scenario` at `rate` per second, each one datagram (`-nr`), traced in `dir`/`name`.
fn sipp_at_rate(
    lab: &Lab,
    dir: &Path,
    name: &str,
    scenario: &str,
    local_ip: &str,
    rate: u32,
    calls: u32,
) -> (Finished, PathBuf) {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).expect("a sipp directory");
    let file = write_file(&run_dir, &format!("{name}.xml"), scenario);
    let mut command = lab.command(Host::Client, "sipp");
    command.current_dir(&run_dir).args([
        "-sf",
        file.to_str().expect("a UTF-8 path"),
        "-i",
        local_ip,
        "-r",
        &rate.to_string(),
        "-m",
        &calls.to_string(),
        "-l",
        &calls.min(4000).to_string(),
        "-nr",
        "-nostdin",
        "-trace_msg",
        "-trace_err",
        "-timeout",
        "25s",
        &format!("{SERVER_V4}:{SIP_PORT}"),
    ]);
    (run_bounded(command, Duration::from_secs(30)), run_dir)
}

#[test]
fn a_sipp_flood_from_one_source_is_cut_to_the_configured_rate_while_a_legitimate_client_completes_all_its_registrations(
) {
    if !privileged("a_sipp_flood_from_one_source_is_cut_to_the_configured_rate_while_a_legitimate_client_completes_all_its_registrations") {
        return;
    }
    const RATE: u32 = 20;
    const BURST: u32 = 20;
    const FLOOD_RATE: u32 = 500;
    const FLOOD_CALLS: u32 = 2500;
    const LEGIT_RATE: u32 = 10;
    const LEGIT_CALLS: u32 = 20;
    let started = Instant::now();
    sip_filter();

    let mut rig = LabFixture::start("e2e-flood-rate", LAB_TOOLS);
    let both: Vec<IpAddr> = [CLIENT_V4, LEGIT_CLIENT_V4]
        .iter()
        .map(|a| a.parse().expect("an address"))
        .collect();
    warm_up(&rig.lab, &both);
    let mut daemon = start_filter(
        &rig.lab,
        &rig.pins,
        rig.dir.path(),
        "rate.toml",
        &config(&format!(
            "[rate_limit.register]\nrate = {RATE}\nburst = {BURST}\n"
        )),
        &mut rig.transcript,
    );

    // The flood from 198.18.0.1 and, a second into it, the legitimate client from
    // 198.18.0.11, each answered request counted by sipp.
    let flood_scenario = sipp_flood_scenario("REGISTER", &register_uri(), 1000);
    let legit_scenario = register_scenario();
    let ((flood, flood_dir), (legit, _)) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            sipp_at_rate(
                &rig.lab,
                rig.dir.path(),
                "flood",
                &flood_scenario,
                CLIENT_V4,
                FLOOD_RATE,
                FLOOD_CALLS,
            )
        });
        let legit = scope.spawn(|| {
            thread::sleep(Duration::from_secs(1));
            sipp_at_rate(
                &rig.lab,
                rig.dir.path(),
                "legit",
                &legit_scenario,
                LEGIT_CLIENT_V4,
                LEGIT_RATE,
                LEGIT_CALLS,
            )
        });
        (
            flood.join().expect("the flood thread"),
            legit.join().expect("the legitimate client's thread"),
        )
    });
    let flood = rig
        .transcript
        .keep("sipp REGISTER flood from 198.18.0.1", flood);
    let legit = rig
        .transcript
        .keep("sipp REGISTERs from 198.18.0.11", legit);
    let stats = rig
        .transcript
        .stats("stats after the flood", &rig.lab, &rig.pins);

    // Every legitimate registration was answered.
    let legit_ok = sipp_counter(&legit.stdout, "Successful call");
    let legit_failed = sipp_counter(&legit.stdout, "Failed call");
    assert!(
        legit.success() && legit_ok == Some(u64::from(LEGIT_CALLS)) && legit_failed == Some(0),
        "the legitimate client's {LEGIT_CALLS} REGISTERs should all be answered with 200 \
         (successful {legit_ok:?}, failed {legit_failed:?}):\n{legit}"
    );

    // The flood ran as asked, and only its bucket held it back.
    let sent = sipp_sent_times(&flood_dir);
    let flood_created = sipp_counter(&flood.stdout, "Outgoing calls created");
    let flood_answered = sipp_counter(&flood.stdout, "Successful call")
        .unwrap_or_else(|| panic!("no sipp statistics:\n{flood}"));
    assert!(
        flood.status.is_some()
            && flood_created == Some(u64::from(FLOOD_CALLS))
            && sent.count == FLOOD_CALLS as usize,
        "sipp should have sent {FLOOD_CALLS} REGISTERs (created {flood_created:?}, \
         traced {}):\n{flood}",
        sent.count
    );
    let span = sent.span.as_secs_f64();
    let send_rate = (sent.count - 1) as f64 / span;
    let passed = counter(&stats, "reasons", "pass_request");
    let limited = counter(&stats, "reasons", "drop_rate_limited");
    let flood_admitted = passed - u64::from(LEGIT_CALLS);
    let expected = f64::from(BURST) + f64::from(RATE) * span;
    rig.transcript.note(format!(
        "flood: {} REGISTERs in {span:.3} s ({send_rate:.1}/s); admitted by the filter \
         {flood_admitted}, answered by Kamailio {flood_answered}; expected burst + rate × \
         time = {BURST} + {RATE} × {span:.3} = {expected:.1}; error {:+.2}% (filter), \
         {:+.2}% (answers); admitted rate after the burst {:.2}/s (configured {RATE}/s)",
        sent.count,
        100.0 * error(flood_admitted, expected),
        100.0 * error(flood_answered, expected),
        (flood_admitted as f64 - f64::from(BURST)) / span,
    ));
    assert!(
        send_rate > 10.0 * f64::from(RATE),
        "the flood ({send_rate:.1}/s) should be far above the limit ({RATE}/s)"
    );
    assert_eq!(
        counter(&stats, "methods", "REGISTER"),
        u64::from(FLOOD_CALLS + LEGIT_CALLS),
        "every REGISTER should have reached the filter: {stats}"
    );
    assert_eq!(
        limited + flood_admitted,
        u64::from(FLOOD_CALLS),
        "every flood REGISTER not admitted should be rate-limited: {stats}"
    );
    assert_eq!(counter(&stats, "reasons", "drop_banned"), 0, "{stats}");
    assert_eq!(counter(&stats, "bans_added", "rate"), 0, "{stats}");
    assert!(
        flood_answered <= flood_admitted,
        "more answers ({flood_answered}) than requests admitted ({flood_admitted})"
    );
    assert!(
        within_tolerance(flood_admitted, expected) && within_tolerance(flood_answered, expected),
        "the flood should be admitted at {RATE}/s after a burst of {BURST}: \
         expected {expected:.1} ± {:.0}%, the filter admitted {flood_admitted}, Kamailio \
         answered {flood_answered}",
        100.0 * TOLERANCE
    );

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

/// REGISTERs from each of `addresses` in turn, `rounds` times over, `gap` apart; the
/// senders with their counts once the answers are in.
fn register_round_robin(lab: &Lab, addresses: &[IpAddr], rounds: u32, gap: Duration) -> Senders {
    lab.in_namespace(Host::Client, || {
        let mut senders = Senders::bind(addresses);
        let uri = register_uri();
        for _ in 0..rounds {
            for i in 0..addresses.len() {
                senders.send(i, "REGISTER", &uri);
                thread::sleep(gap);
                senders.drain();
            }
        }
        senders.linger(LINGER);
        senders
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn sources_rotating_inside_one_ipv6_64_share_one_bucket() {
    if !privileged("sources_rotating_inside_one_ipv6_64_share_one_bucket") {
        return;
    }
    const RATE: u32 = 1;
    const BURST: u32 = 5;
    const ADDRESSES: u16 = 20;
    const ROUNDS: u32 = 3;
    const GAP: Duration = Duration::from_millis(5);
    let started = Instant::now();
    sip_filter();

    let mut rig = LabFixture::start("e2e-flood-v6", LAB_TOOLS);

    // 2001:db8:5f::100 to ::113, all inside the lab's /64.
    let addresses: Vec<IpAddr> = (0..ADDRESSES)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x5f, 0, 0, 0, 0, 0x100 + i)))
        .collect();
    let cidrs: Vec<String> = addresses.iter().map(|a| format!("{a}/64")).collect();
    rig.lab
        .add_addresses(Host::Client, &cidrs)
        .unwrap_or_else(|e| panic!("{e:#}"));
    warm_up(&rig.lab, &addresses);
    let total = u64::from(ADDRESSES) * u64::from(ROUNDS);
    let limits = format!("[rate_limit.register]\nrate = {RATE}\nburst = {BURST}\n");

    let mut figures = BTreeMap::new();
    for prefix in [64u8, 128] {
        let text =
            config(&limits).replace("[filter]\n", &format!("[filter]\nipv6_prefix = {prefix}\n"));
        let mut daemon = start_filter(
            &rig.lab,
            &rig.pins,
            rig.dir.path(),
            &format!("prefix-{prefix}.toml"),
            &text,
            &mut rig.transcript,
        );
        let senders = register_round_robin(&rig.lab, &addresses, ROUNDS, GAP);
        let stats = rig.transcript.stats(
            &format!("stats, ipv6_prefix = {prefix}"),
            &rig.lab,
            &rig.pins,
        );
        let answered = senders.total_answered();
        let span = senders.sending_time().as_secs_f64();
        let passed = counter(&stats, "reasons", "pass_request");
        let limited = counter(&stats, "reasons", "drop_rate_limited");
        let per_address: Vec<u64> = senders.answered.clone();
        rig.transcript.note(format!(
            "ipv6_prefix = {prefix}: {} REGISTERs from {ADDRESSES} addresses in {span:.3} s; \
             answered {answered}, pass_request {passed}, drop_rate_limited {limited}; \
             answers per address {per_address:?}",
            senders.total_sent()
        ));
        assert_eq!(senders.total_sent(), total);
        assert_eq!(
            senders.other, 0,
            "only 200s should come back (prefix {prefix})"
        );
        assert_eq!(
            counter(&stats, "methods", "REGISTER"),
            total,
            "every REGISTER should have reached the filter: {stats}"
        );
        assert_eq!(passed + limited, total, "{stats}");
        assert_eq!(
            answered, passed,
            "every admitted REGISTER should be answered"
        );
        if prefix == 64 {
            // One bucket for the /64: its burst, plus what the rate adds meanwhile.
            let most = u64::from(BURST) + (f64::from(RATE) * span).floor() as u64 + 1;
            assert!(
                (u64::from(BURST)..=most).contains(&passed),
                "sources in one /64 should share one bucket: {passed} of {total} \
                 REGISTERs admitted, expected {BURST} to {most} (burst {BURST}, \
                 rate {RATE}/s over {span:.3} s)"
            );
        } else {
            // Each address its own bucket: ROUNDS (< BURST) requests each all pass.
            assert!(
                passed == total && per_address.iter().all(|&n| n == u64::from(ROUNDS)),
                "with ipv6_prefix = 128 each address should be admitted on its own: \
                 {passed} of {total} admitted, per address {per_address:?}"
            );
        }
        figures.insert(prefix, passed);
        rig.stop_filter(&mut daemon);
        drop(daemon);
    }
    rig.transcript.note(format!(
        "admitted of {total}: /64 {}, /128 {}",
        figures[&64], figures[&128]
    ));

    rig.tear_down([]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_flood_from_200_source_addresses_is_held_to_the_global_budget_while_a_trusted_source_keeps_passing(
) {
    if !privileged("a_flood_from_200_source_addresses_is_held_to_the_global_budget_while_a_trusted_source_keeps_passing") {
        return;
    }
    const RATE: u32 = 100;
    const BURST: u32 = 100;
    const SOURCES: u8 = 200;
    /// One OPTIONS every millisecond, round-robin over the sources: 1000/s for 3 s.
    const FLOOD_REQUESTS: u32 = 3000;
    const FLOOD_GAP: Duration = Duration::from_millis(1);
    /// The trusted source: one OPTIONS every 50 ms while the flood lasts.
    const TRUSTED_REQUESTS: u32 = 60;
    const TRUSTED_GAP: Duration = Duration::from_millis(50);
    let started = Instant::now();
    sip_filter();

    let mut rig = LabFixture::start("e2e-flood-budget", LAB_TOOLS);

    // 198.18.1.1 to 198.18.1.200 on the client, the way back to them on the server.
    let sources: Vec<IpAddr> = (1..=SOURCES)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)))
        .collect();
    let cidrs: Vec<String> = sources.iter().map(|a| format!("{a}/32")).collect();
    rig.lab
        .add_addresses(Host::Client, &cidrs)
        .unwrap_or_else(|e| panic!("{e:#}"));
    rig.lab
        .ip(
            Host::Server,
            &["route", "add", "198.18.1.0/24", "via", CLIENT_V4],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let legit: IpAddr = LEGIT_CLIENT_V4.parse().expect("an address");
    warm_up(&rig.lab, &[&sources[..], &[legit]].concat());

    let mut daemon = start_filter(
        &rig.lab,
        &rig.pins,
        rig.dir.path(),
        "budget.toml",
        &config(&format!(
            "[rate_limit.untrusted_total]\nrate = {RATE}\nburst = {BURST}\n\n\
             [lists]\nallow = [\"{LEGIT_CLIENT_V4}/32\"]\n"
        )),
        &mut rig.transcript,
    );

    let uri = options_uri();
    let (flood, trusted) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            rig.lab.in_namespace(Host::Client, || {
                let mut senders = Senders::bind(&sources);
                let start = Instant::now();
                for n in 0..FLOOD_REQUESTS {
                    sleep_until(start + FLOOD_GAP * n);
                    senders.send(n as usize % sources.len(), "OPTIONS", &uri);
                    if n % 50 == 49 {
                        senders.drain();
                    }
                }
                senders.linger(LINGER);
                senders
            })
        });
        let trusted = scope.spawn(|| {
            rig.lab.in_namespace(Host::Client, || {
                let mut senders = Senders::bind(&[legit]);
                let start = Instant::now();
                for n in 0..TRUSTED_REQUESTS {
                    sleep_until(start + TRUSTED_GAP * n);
                    senders.send(0, "OPTIONS", &uri);
                    senders.drain();
                }
                senders.linger(LINGER);
                senders
            })
        });
        (
            flood.join().expect("the flood thread"),
            trusted.join().expect("the trusted source's thread"),
        )
    });
    let flood = flood.unwrap_or_else(|e| panic!("{e:#}"));
    let trusted = trusted.unwrap_or_else(|e| panic!("{e:#}"));
    let stats = rig
        .transcript
        .stats("stats after the flood", &rig.lab, &rig.pins);

    let span = flood.sending_time().as_secs_f64();
    let send_rate = (flood.total_sent() - 1) as f64 / span;
    let passed = counter(&stats, "reasons", "pass_request");
    let over_budget = counter(&stats, "reasons", "drop_global_budget");
    let trusted_answered = trusted.total_answered();
    let admitted = passed - trusted.total_sent();
    let answered = flood.total_answered();
    let answered_sources = flood.answered.iter().filter(|&&n| n > 0).count();
    let expected = f64::from(BURST) + f64::from(RATE) * span;
    rig.transcript.note(format!(
        "budget: {} OPTIONS from {} sources in {span:.3} s ({send_rate:.1}/s); untrusted \
         admitted by the filter {admitted}, answered {answered} (to {answered_sources} \
         sources); drop_global_budget {over_budget}; expected burst + rate × time = \
         {BURST} + {RATE} × {span:.3} = {expected:.1}; error {:+.2}% (filter), {:+.2}% \
         (answers); admitted rate after the burst {:.2}/s (configured {RATE}/s); trusted \
         {trusted_answered} of {} answered",
        flood.total_sent(),
        sources.len(),
        100.0 * error(admitted, expected),
        100.0 * error(answered, expected),
        (admitted as f64 - f64::from(BURST)) / span,
        trusted.total_sent(),
    ));
    assert_eq!(flood.total_sent(), u64::from(FLOOD_REQUESTS));
    assert!(
        flood.sent.iter().all(|&n| n > 0),
        "every source should have sent"
    );
    assert!(
        trusted.total_sent() == u64::from(TRUSTED_REQUESTS)
            && trusted_answered == trusted.total_sent()
            && trusted.other == 0,
        "the trusted source's {} OPTIONS should all be answered with 200: {trusted_answered} \
         were",
        trusted.total_sent()
    );
    assert_eq!(
        counter(&stats, "methods", "OPTIONS"),
        u64::from(FLOOD_REQUESTS + TRUSTED_REQUESTS),
        "every OPTIONS should have reached the filter: {stats}"
    );
    assert!(over_budget > 0, "drop_global_budget should count: {stats}");
    assert_eq!(
        over_budget + admitted,
        u64::from(FLOOD_REQUESTS),
        "every flood request not admitted should be over the budget: {stats}"
    );
    assert_eq!(flood.other, 0, "only 200s should come back");
    assert!(
        answered <= admitted,
        "more answers ({answered}) than requests admitted ({admitted})"
    );
    assert!(
        within_tolerance(admitted, expected) && within_tolerance(answered, expected),
        "the untrusted sources together should be held to {RATE}/s after a burst of \
         {BURST}: expected {expected:.1} ± {:.0}%, the filter admitted {admitted}, \
         Kamailio answered {answered}",
        100.0 * TOLERANCE
    );

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

/// A second scanner address in the client namespace: svmap sends from it (`-b`), svwar
/// from 198.18.0.1 (it binds every address and so sends from the primary one). Two
/// sources, so that the second scanner meets the User-Agent check and not the first
/// one's ban.
const SECOND_SCANNER_V4: &str = "198.18.0.21";
const SVMAP_DEADLINE: Duration = Duration::from_secs(20);
const SVWAR_DEADLINE: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// svmap from [`SECOND_SCANNER_V4`] against the server's address (its Request-URI host,
/// `sip:100@198.18.0.2`: svmap 0.3.3 has no domain option).
fn svmap_from_second_scanner(lab: &Lab) -> Finished {
    lab.run(
        Host::Client,
        "svmap",
        &[
            "-vvv",
            "-b",
            SECOND_SCANNER_V4,
            "-x",
            SECOND_SCANNER_V4,
            "-p",
            &SIP_PORT.to_string(),
            SERVER_V4,
        ],
        SVMAP_DEADLINE,
    )
}

/// svwar guessing extensions 100 to 110 with REGISTERs for the allowed domain
/// (`REGISTER sip:pbx.example.test`), from 198.18.0.1.
fn svwar(lab: &Lab) -> Finished {
    lab.run(
        Host::Client,
        "svwar",
        &[
            "-vv",
            "-e100-110",
            "-m",
            "REGISTER",
            "--domain",
            DOMAIN,
            "-x",
            CLIENT_V4,
            "-p",
            &SIP_PORT.to_string(),
            SERVER_V4,
        ],
        SVWAR_DEADLINE,
    )
}

fn probe(lab: &Lab, from: &str, method: &str, uri: &str) -> Option<u16> {
    sip_probe(
        lab,
        from.parse().expect("an address"),
        method,
        uri,
        USER_AGENT,
        PROBE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn svmap_and_svwar_aimed_at_allowed_hosts_are_stopped_by_their_user_agent_and_banned() {
    if !privileged(
        "svmap_and_svwar_aimed_at_allowed_hosts_are_stopped_by_their_user_agent_and_banned",
    ) {
        return;
    }
    let started = Instant::now();
    sip_filter();

    let mut rig = LabFixture::start("e2e-flood-scanners", &[LAB_TOOLS, &["svwar"]].concat());
    rig.lab
        .add_addresses(Host::Client, &[format!("{SECOND_SCANNER_V4}/24")])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let svmap_target = format!("{SERVER_V4}:{SIP_PORT}");

    // Without the filter both scanners get answers: the lab and the scanners work.
    let open_map = rig
        .transcript
        .keep("svmap, no filter", svmap_from_second_scanner(&rig.lab));
    let open_scan = scan(&open_map);
    assert!(
        open_map.success() && open_scan.answers >= 1 && open_scan.found,
        "without the filter svmap should find {svmap_target}:\n{open_map}"
    );
    let open_war = rig.transcript.keep("svwar, no filter", svwar(&rig.lab));
    assert!(
        open_war.success() && open_war.stderr.contains("Ok SIP device found"),
        "without the filter svwar should get answers (`Ok SIP device found`):\n{open_war}"
    );

    // The Request-URIs both scanners use are allowed: the server's own address (svmap's
    // sip:100@198.18.0.2) and the domain (svwar's REGISTER sip:pbx.example.test). Only
    // their User-Agent (friendly-scanner) can stop them.
    let mut daemon = start_filter(
        &rig.lab,
        &rig.pins,
        rig.dir.path(),
        "scanners.toml",
        &format!(
            "[filter]\ndomains = [\"{DOMAIN}\"]\nown_addresses = [\"{SERVER_V4}\"]\n\n\
             [ban]\nscanner_seconds = 3600\n"
        ),
        &mut rig.transcript,
    );
    let svmap_uri = format!("sip:100@{SERVER_V4}");
    for (uri, method) in [(&svmap_uri, "OPTIONS"), (&register_uri(), "REGISTER")] {
        let status = probe(&rig.lab, LEGIT_CLIENT_V4, method, uri);
        rig.transcript.note(format!(
            "{method} {uri} from {LEGIT_CLIENT_V4} ({USER_AGENT}): {status:?}"
        ));
        assert_eq!(
            status,
            Some(200),
            "{method} {uri} with a plain User-Agent should be answered: the scanners' \
             Request-URI is allowed"
        );
    }
    let before = rig
        .transcript
        .stats("stats before the scanners", &rig.lab, &rig.pins);

    let closed_map = rig.transcript.keep(
        "svmap, filter attached",
        svmap_from_second_scanner(&rig.lab),
    );
    let closed_scan = scan(&closed_map);
    let after_map = rig
        .transcript
        .stats("stats after svmap", &rig.lab, &rig.pins);
    assert!(
        closed_map.success()
            && closed_scan.probes >= 1
            && closed_scan.answers == 0
            && !closed_scan.found
            && closed_map.stderr.contains("found nothing"),
        "behind the filter svmap should get no answer (probes {}, answers {}):\n{closed_map}",
        closed_scan.probes,
        closed_scan.answers
    );
    assert_eq!(
        closed_scan.probe.as_deref(),
        Some(format!("OPTIONS {svmap_uri}").as_str()),
        "svmap's probe"
    );

    let closed_war = rig
        .transcript
        .keep("svwar, filter attached", svwar(&rig.lab));
    let after_war = rig
        .transcript
        .stats("stats after svwar", &rig.lab, &rig.pins);
    assert!(
        closed_war.success()
            // Its first request unanswered: "socket error: timed out" (Python 3's
            // socket.timeout is a socket.error) or "No server response".
            && (closed_war.stderr.contains("timed out")
                || closed_war.stderr.contains("No server response"))
            && closed_war.stderr.contains("found nothing")
            && !closed_war.stderr.contains("Ok SIP device found"),
        "behind the filter svwar should get no answer and find no extension:\n{closed_war}"
    );

    let delta = |from: &Value, to: &Value, group: &str, name: &str| {
        counter(to, group, name) - counter(from, group, name)
    };
    let map_scanner = delta(&before, &after_map, "reasons", "drop_scanner");
    let map_bans = delta(&before, &after_map, "bans_added", "scanner");
    let war_scanner = delta(&after_map, &after_war, "reasons", "drop_scanner");
    let war_bans = delta(&after_map, &after_war, "bans_added", "scanner");
    rig.transcript.note(format!(
        "svmap: {} probe(s), drop_scanner +{map_scanner}, scanner bans +{map_bans}; \
         svwar: drop_scanner +{war_scanner}, scanner bans +{war_bans}",
        closed_scan.probes
    ));
    assert!(
        map_scanner >= 1 && map_bans == 1,
        "svmap's probe should be dropped for its User-Agent and its source banned once: \
         {after_map}"
    );
    assert!(
        war_scanner >= 1 && war_bans == 1,
        "svwar's probe should be dropped for its User-Agent and its source banned once: \
         {after_war}"
    );
    for name in ["drop_unknown_domain", "drop_rate_limited"] {
        assert_eq!(
            counter(&after_war, "reasons", name),
            0,
            "only the User-Agent check should have acted: {after_war}"
        );
    }

    // Afterwards both scanner addresses are banned; the legitimate one still passes.
    let options = options_uri();
    let mut answers = Vec::new();
    for from in [CLIENT_V4, SECOND_SCANNER_V4, LEGIT_CLIENT_V4] {
        let status = probe(&rig.lab, from, "OPTIONS", &options);
        rig.transcript.note(format!(
            "OPTIONS {options} from {from} ({USER_AGENT}): {status:?}"
        ));
        answers.push(status);
    }
    let after = rig
        .transcript
        .stats("stats after the legitimate requests", &rig.lab, &rig.pins);
    assert_eq!(
        answers,
        [None, None, Some(200)],
        "a legitimate request from a scanner's address should get no answer, one from \
         {LEGIT_CLIENT_V4} a 200 (from {CLIENT_V4}, {SECOND_SCANNER_V4}, {LEGIT_CLIENT_V4})"
    );
    assert_eq!(
        delta(&after_war, &after, "reasons", "drop_banned"),
        2,
        "the two legitimate requests from the scanners' addresses should be dropped as \
         banned: {after}"
    );
    assert_eq!(
        delta(&after_war, &after, "reasons", "pass_request"),
        1,
        "the request from {LEGIT_CLIENT_V4} should pass: {after}"
    );

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}
