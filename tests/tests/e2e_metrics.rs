//! End to end, in network namespaces: `sip-filter run --metrics-addr` serves Prometheus
//! metrics that agree with `sip-filter stats` and `status`, count the SIGHUP reloads the
//! daemon counts, pass `promtool check metrics`, and are scraped by a real Prometheus
//! server, whose query API returns the filter's count. A bad or busy metrics address
//! stops the start before anything is attached. An interface deleted under the filter
//! is exported as detached.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio, sipvicious,
//! sip-tester, prometheus).

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_filter_common::maps::{MAX_BANS, MAX_SOURCES};
use sip_filter_tests::{
    lab::{
        assert_one_error_line, counter, options_scenario, sample_sum, scan, sip_filter, sipp,
        spawn_filter, svmap, write_file, xdp_attached, LabFixture, PinRoot, Transcript,
        ALLOW_EXAMPLE_DOMAINS, DOMAIN, KAMAILIO_TOOLS, LAB_TOOLS, QUICK, SIP_PORT,
    },
    netns::{
        run_bounded, Host, Lab, LEGIT_CLIENT_V4, SECOND_SERVER_IFACE, SERVER_IFACE, SERVER_V4,
    },
    privileged,
    prometheus::{self, Answer, Prometheus},
};

/// On the server namespace's loopback, as Prometheus's: the namespace is new, so no
/// other program holds the port, and nothing outside it can reach it.
const METRICS_ADDR: &str = "127.0.0.1:9184";
/// `sip-filter metrics --listen`, beside the daemon's exporter.
const STANDALONE_ADDR: &str = "127.0.0.1:9185";
/// How long Prometheus gets to start, scrape, and answer with the filter's count.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(30);
/// The domain a reload switches to.
const NEW_DOMAIN: &str = "new.example.test";

/// GET `url` from inside the server namespace, with `query` parameters.
fn get(lab: &Lab, url: &str, query: &[(&str, &str)]) -> Result<Answer, String> {
    prometheus::get(lab.ns(Host::Server), url, query)
}

/// The value of `name`, a series without labels; None if there is none.
fn plain_sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The reload series of one scrape.
#[derive(Debug)]
struct Reloads {
    ok: u64,
    failed: u64,
    /// `sip_filter_config_last_reload_successful`.
    last_ok: u64,
    /// When the configuration in force was loaded (seconds since the epoch).
    loaded_at: f64,
}

fn reloads(exposition: &str) -> Reloads {
    let total = |result: &str| {
        sample_sum(
            exposition,
            "sip_filter_config_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
        .unwrap_or_else(|| panic!("no reloads {result} in:\n{exposition}"))
    };
    let plain = |name: &str| {
        plain_sample(exposition, name).unwrap_or_else(|| panic!("no {name} in:\n{exposition}"))
    };
    Reloads {
        ok: total("ok"),
        failed: total("failed"),
        last_ok: plain("sip_filter_config_last_reload_successful") as u64,
        loaded_at: plain("sip_filter_config_last_reload_success_timestamp_seconds"),
    }
}

/// GET the daemon's /metrics (200 expected), kept in the transcript as `step`.
fn scrape(transcript: &mut Transcript, lab: &Lab, step: &str) -> String {
    let answer =
        get(lab, &format!("http://{METRICS_ADDR}/metrics"), &[]).unwrap_or_else(|e| panic!("{e}"));
    transcript.note(format!(
        "GET /metrics {step}: {}\n{}",
        answer.status, answer.body
    ));
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// `sip-filter status --json`.
fn status_json(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot) -> Value {
    let status = transcript.keep(
        "status --json",
        lab.run(
            Host::Server,
            sip_filter(),
            &["status", "--json", "--pin-root", pins.arg()],
            QUICK,
        ),
    );
    assert!(status.success(), "{status}");
    serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{status}"))
}

/// A configuration file allowing `domain`.
fn config(domain: &str) -> String {
    format!("[filter]\ndomains = [\"{domain}\"]\n")
}

/// `sip-filter run` on the server's interface with `--metrics-addr ADDRESS`, expected to
/// refuse to start: exit 2, one line naming the address, nothing attached or pinned.
fn refused_start(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, address: &str) -> String {
    let run = transcript.keep(
        &format!("run --metrics-addr {address}"),
        lab.run(
            Host::Server,
            sip_filter(),
            &[
                "run",
                "--iface",
                SERVER_IFACE,
                "--domain",
                DOMAIN,
                ALLOW_EXAMPLE_DOMAINS,
                "--metrics-addr",
                address,
                "--pin-root",
                pins.arg(),
            ],
            QUICK,
        ),
    );
    let line = assert_one_error_line(&run, address);
    assert!(!xdp_attached(lab), "an XDP program was attached:\n{run}");
    assert!(
        !pins.maps_dir().exists() && !pins.link_pin(SERVER_IFACE).exists(),
        "pins were made:\n{run}"
    );
    line
}

#[test]
fn prometheus_scrapes_the_filters_counters() {
    if !privileged("prometheus_scrapes_the_filters_counters") {
        return;
    }
    let started = Instant::now();
    let binary = sip_filter();

    let mut rig = LabFixture::start(
        "e2e-metrics",
        &[LAB_TOOLS, &["prometheus", "promtool"]].concat(),
    );

    // A bad address, and a port already taken, stop the start before the filter attaches.
    let error = refused_start(&mut rig.transcript, &rig.lab, &rig.pins, "no-port-here");
    assert!(error.contains("HOST:PORT"), "{error}");
    let error = rig
        .lab
        .in_namespace(Host::Server, || {
            let _taken = TcpListener::bind(METRICS_ADDR).expect("the port is free");
            refused_start(&mut rig.transcript, &rig.lab, &rig.pins, METRICS_ADDR)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(error.contains("another program listens there"), "{error}");

    let config_file = write_file(rig.dir.path(), "sip-filter.toml", &config(DOMAIN));
    let (mut daemon, attached) = spawn_filter(
        &rig.lab,
        binary,
        &rig.pins,
        &[
            "--config",
            config_file.to_str().expect("a UTF-8 path"),
            "--metrics-addr",
            METRICS_ADDR,
        ],
        &rig.dir.path().join("sip-filter.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(attached);
    let serving = daemon
        .wait_for_log("serving metrics on", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        serving.contains(&format!("http://{METRICS_ADDR}/metrics")),
        "{serving}"
    );

    // A scanner, dropped and banned; a legitimate OPTIONS, passed.
    let scanned = rig.transcript.keep("svmap", svmap(&rig.lab));
    let probes = scan(&scanned).probes;
    assert!(
        scanned.success() && probes >= 1 && scan(&scanned).answers == 0,
        "svmap should probe and get no answer:\n{scanned}"
    );
    let target = format!("{SERVER_V4}:{SIP_PORT}");
    let options = rig.transcript.keep(
        "sipp OPTIONS",
        sipp(
            &rig.lab,
            rig.dir.path(),
            "options",
            &options_scenario(),
            LEGIT_CLIENT_V4,
            &target,
        ),
    );
    assert!(options.success(), "{options}");

    // The exporter, scraped directly, agrees with `stats`.
    let stats = rig.transcript.stats("stats", &rig.lab, &rig.pins);
    let metrics_url = format!("http://{METRICS_ADDR}/metrics");
    let scrape_started = Instant::now();
    let scraped = get(&rig.lab, &metrics_url, &[]).unwrap_or_else(|e| panic!("{e}"));
    let scrape_time = scrape_started.elapsed();
    rig.transcript.note(format!(
        "GET /metrics: {} {} ({} bytes, {} ms)\n{}",
        scraped.status,
        scraped.content_type,
        scraped.body.len(),
        scrape_time.as_millis(),
        scraped.body
    ));
    assert_eq!(scraped.status, 200);
    assert_eq!(
        scraped.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = &scraped.body;
    let drop_scanner = counter(&stats, "reasons", "drop_scanner");
    assert!(
        drop_scanner >= u64::try_from(probes).expect("a count"),
        "{stats}"
    );
    let value = |name: &str, labels: &[&str]| {
        sample_sum(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{text}"))
    };
    // The maps are read once for the filter, whatever its interfaces: only the
    // interface series name one.
    assert!(
        text.lines().filter(|l| l.contains("iface=")).all(|l| {
            l.starts_with("sip_filter_interface_info{")
                || l.starts_with("sip_filter_interface_attached{")
        }),
        "{text}"
    );
    // The interface, in the XDP mode and the egress attachment `status` reports for it.
    let status = status_json(&mut rig.transcript, &rig.lab, &rig.pins);
    let mode = status["interfaces"][0]["mode"].as_str().expect("a mode");
    let egress = status["interfaces"][0]["egress"]
        .as_str()
        .expect("an egress");
    assert_eq!(status["interfaces"][0]["name"], SERVER_IFACE, "{status}");
    // The lab's daemon runs with the default `xdp_mode = "auto"`.
    let interface_info = format!(
        "sip_filter_interface_info{{egress=\"{egress}\",iface=\"{SERVER_IFACE}\",mode=\"{mode}\",requested=\"auto\"}} 1"
    );
    assert!(
        text.lines().any(|l| l == interface_info),
        "no {interface_info:?} in:\n{text}"
    );
    let attached = format!("sip_filter_interface_attached{{iface=\"{SERVER_IFACE}\"}} 1");
    assert!(
        text.lines().any(|l| l == attached),
        "no {attached:?} in:\n{text}"
    );
    assert_eq!(
        value(
            "sip_filter_packets_total",
            &[r#"reason="drop_scanner""#, r#"verdict="drop""#]
        ),
        drop_scanner
    );
    assert_eq!(
        value("sip_filter_packets_total", &[r#"reason="pass_request""#]),
        counter(&stats, "reasons", "pass_request")
    );
    assert!(
        value(
            "sip_filter_packets_total",
            &[
                r#"reason="pass_request""#,
                r#"method="OPTIONS""#,
                r#"verdict="pass""#
            ]
        ) >= 1
    );
    // Series that counted nothing are there at 0, so that rate() sees their first rise.
    assert_eq!(
        value(
            "sip_filter_packets_total",
            &[r#"reason="drop_rate_limited""#, r#"method="INVITE""#]
        ),
        0
    );
    let scanner_bans = stats["bans_added"]["scanner"].as_u64().expect("a count");
    assert!(scanner_bans >= 1, "{stats}");
    assert_eq!(
        value("sip_filter_bans_added_total", &[r#"reason="scanner""#]),
        scanner_bans
    );
    assert_eq!(
        value("sip_filter_bans_active", &[r#"reason="scanner""#]),
        scanner_bans
    );
    assert_eq!(
        value("sip_filter_map_entries", &[r#"map="bans""#]),
        scanner_bans
    );
    assert_eq!(
        value("sip_filter_map_capacity_entries", &[r#"map="bans""#]),
        u64::from(MAX_BANS)
    );
    // The default scanner User-Agents; no source state (no rate limit is configured).
    assert!(value("sip_filter_map_entries", &[r#"map="scanner_agents""#]) >= 1);
    assert_eq!(
        value("sip_filter_map_capacity_entries", &[r#"map="sources""#]),
        u64::from(MAX_SOURCES)
    );
    assert_eq!(value("sip_filter_map_entries", &[r#"map="domains""#]), 1);
    // The requests that passed were noted for their answers; nothing was learnt from
    // answers yet, and the series say so at 0.
    assert!(
        plain_sample(text, "sip_filter_auth_requests_noted_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        plain_sample(text, "sip_filter_registered_sources"),
        Some(0.0),
        "{text}"
    );
    for scope in [r#"scope="source""#, r#"scope="unregistered""#] {
        assert_eq!(value("sip_filter_locked_accounts", &[scope]), 0);
        assert_eq!(value("sip_filter_auth_lockouts_total", &[scope]), 0);
    }
    assert_eq!(
        plain_sample(text, "sip_filter_dry_run"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample_sum(
            text,
            "sip_filter_config_reloads_total",
            &[r#"result="failed""#]
        ),
        Some(0)
    );
    assert!(text.contains(&format!(
        "sip_filter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    let not_found =
        get(&rig.lab, &format!("http://{METRICS_ADDR}/"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not_found.status, 404);

    // Reloads: /metrics says what the daemon counted, as `status` does.
    let at_start = reloads(text);
    assert_eq!((at_start.ok, at_start.failed, at_start.last_ok), (0, 0, 1));
    write_file(rig.dir.path(), "sip-filter.toml", &config(NEW_DOMAIN));
    daemon.signal(libc::SIGHUP);
    rig.transcript.note(
        daemon
            .wait_for_log("configuration reloaded", QUICK)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let reloaded = reloads(&scrape(
        &mut rig.transcript,
        &rig.lab,
        "after a good SIGHUP",
    ));
    assert_eq!((reloaded.ok, reloaded.failed, reloaded.last_ok), (1, 0, 1));
    assert!(
        reloaded.loaded_at > at_start.loaded_at,
        "the configuration in force is the reloaded one: {reloaded:?} after {at_start:?}"
    );
    write_file(
        rig.dir.path(),
        "sip-filter.toml",
        "[filter]\ndomains = [\"a b\"]\n",
    );
    daemon.signal(libc::SIGHUP);
    rig.transcript.note(
        daemon
            .wait_for_log("configuration reload refused", QUICK)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let refused = reloads(&scrape(&mut rig.transcript, &rig.lab, "after a bad SIGHUP"));
    assert_eq!((refused.ok, refused.failed, refused.last_ok), (1, 1, 0));
    assert_eq!(
        refused.loaded_at, reloaded.loaded_at,
        "the configuration in force is still the one reloaded before"
    );
    let status = status_json(&mut rig.transcript, &rig.lab, &rig.pins);
    assert_eq!(
        (&status["reloads"], &status["reload_failures"]),
        (&Value::from(1), &Value::from(1)),
        "{status}"
    );

    // The same series from outside the daemon, without the reload ones.
    let mut standalone = rig
        .lab
        .spawn(
            Host::Server,
            "sip-filter metrics",
            binary,
            &[
                "metrics",
                "--listen",
                STANDALONE_ADDR,
                "--pin-root",
                rig.pins.arg(),
            ],
            &rig.dir.path().join("sip-filter-metrics.log"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    standalone
        .wait_for_log("serving metrics on", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    let outside = get(&rig.lab, &format!("http://{STANDALONE_ADDR}/metrics"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outside.status, 200);
    assert_eq!(
        sample_sum(
            &outside.body,
            "sip_filter_packets_total",
            &[r#"reason="drop_scanner""#]
        ),
        Some(drop_scanner),
        "{}",
        outside.body
    );
    assert!(!outside.body.contains("reload"), "{}", outside.body);
    assert!(
        outside.body.lines().any(|l| l == interface_info),
        "{}",
        outside.body
    );
    drop(standalone);

    // promtool's linter: names, types, help texts, units.
    let exposition = write_file(rig.dir.path(), "metrics.txt", text);
    let mut command = Command::new("sh");
    command.args([
        "-c",
        r#"promtool check metrics < "$1""#,
        "sh",
        exposition.to_str().expect("a UTF-8 path"),
    ]);
    let checked = rig
        .transcript
        .keep("promtool check metrics", run_bounded(command, QUICK));
    assert!(
        checked.success() && checked.stdout.trim().is_empty() && checked.stderr.trim().is_empty(),
        "promtool check metrics should find nothing to say:\n{checked}"
    );

    // A real Prometheus server scrapes the exporter; its query API returns the count.
    let mut prometheus = Prometheus::start(rig.lab.ns(Host::Server), rig.dir.path(), METRICS_ADDR)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let query = r#"sum(sip_filter_packets_total{reason="drop_scanner"})"#;
    let (last, seen) = prometheus.wait_for(
        &format!("Prometheus returning {drop_scanner} for {query}"),
        PROMETHEUS_DEADLINE,
        |prometheus| {
            let result = prometheus.query(query)?;
            let value = result
                .first()
                .and_then(|series| series["value"][1].as_str())
                .and_then(|v| v.parse::<u64>().ok());
            anyhow::ensure!(value == Some(drop_scanner), "{result:?}");
            Ok(Some(format!("{result:?}")))
        },
    );
    rig.transcript.note(format!(
        "Prometheus returned {query} = {drop_scanner} after {:.1} s: {last}",
        seen.as_secs_f64()
    ));
    // The rules it loaded are the project's (a rule group it could not load is absent).
    let rules_answer = prometheus
        .get("/api/v1/rules", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rules_answer.body.contains("SipFilterBanStorm"),
        "{}",
        rules_answer.body
    );
    // The refused reload fires its alert (it has no `for`: at the first evaluation).
    let ((), firing) = prometheus.wait_for(
        "SipFilterReloadFailed firing",
        PROMETHEUS_DEADLINE,
        |prometheus| {
            let answer = prometheus
                .get("/api/v1/alerts", &[])
                .map_err(anyhow::Error::msg)?;
            let json: Value = serde_json::from_str(&answer.body).unwrap_or_default();
            let fired = json["data"]["alerts"].as_array().is_some_and(|alerts| {
                alerts.iter().any(|alert| {
                    alert["labels"]["alertname"] == "SipFilterReloadFailed"
                        && alert["state"] == "firing"
                })
            });
            anyhow::ensure!(fired, "{}", answer.body);
            Ok(Some(()))
        },
    );
    rig.transcript.note(format!(
        "SipFilterReloadFailed firing after {:.1} s more",
        firing.as_secs_f64()
    ));

    drop(prometheus);
    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
    println!(
        "scrape {} ms; Prometheus agreed after {:.1} s; done in {:.1} s",
        scrape_time.as_millis(),
        seen.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// `sip_filter_interface_attached{iface=IFACE} VALUE` of `exposition`, or None.
fn attached(exposition: &str, iface: &str) -> Option<u64> {
    sample_sum(
        exposition,
        "sip_filter_interface_attached",
        &[&format!("iface=\"{iface}\"")],
    )
}

#[test]
fn an_interface_deleted_under_the_filter_is_exported_as_detached() {
    if !privileged("an_interface_deleted_under_the_filter_is_exported_as_detached") {
        return;
    }
    let mut rig = LabFixture::start("e2e-metrics-detached", KAMAILIO_TOOLS);
    rig.lab.add_second_link().expect("the second veth pair");
    let (mut daemon, attached_line) = spawn_filter(
        &rig.lab,
        sip_filter(),
        &rig.pins,
        &[
            "--iface",
            SECOND_SERVER_IFACE,
            "--domain",
            DOMAIN,
            "--metrics-addr",
            METRICS_ADDR,
        ],
        &rig.dir.path().join("sip-filter.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(attached_line);
    daemon
        .wait_for_log("serving metrics on", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    let both = scrape(&mut rig.transcript, &rig.lab, "attached to both");
    assert_eq!(attached(&both, SERVER_IFACE), Some(1), "{both}");
    assert_eq!(attached(&both, SECOND_SERVER_IFACE), Some(1), "{both}");

    // The second interface goes away (a rebuilt VLAN, a container's veth): its link
    // stays pinned, attached to nothing.
    rig.lab
        .ip(Host::Server, &["link", "del", SECOND_SERVER_IFACE])
        .expect("the second veth pair deleted");
    let after = scrape(&mut rig.transcript, &rig.lab, "after deleting the second");
    assert_eq!(attached(&after, SERVER_IFACE), Some(1), "{after}");
    assert_eq!(attached(&after, SECOND_SERVER_IFACE), Some(0), "{after}");
    assert!(
        after.contains(&format!("iface=\"{SECOND_SERVER_IFACE}\",mode=")),
        "its link is still pinned, so still listed:\n{after}"
    );
    // Stopping still detaches and unpins everything, the defunct link included.
    rig.stop_filter(&mut daemon);
    assert!(
        !rig.pins.link_pin(SECOND_SERVER_IFACE).exists(),
        "{}",
        daemon.log()
    );
    rig.tear_down([daemon]);
}
