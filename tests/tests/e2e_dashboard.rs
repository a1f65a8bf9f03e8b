//! The Grafana dashboard (ops/grafana/sip-filter.json) against a real Prometheus: the
//! filter runs in front of a registrar (the authentication lab, filtered host), a real
//! Prometheus scrapes its exporter every second, a source bursts OPTIONS over its rate
//! limit, phones register (challenges, successes, registered sources) and an attacker
//! guesses a password (failures, a lockout, a ban, drops); then every panel's every query, with the dashboard's
//! variables substituted as Grafana would, must return data through Prometheus's HTTP
//! API, and the panels this traffic drives must show it. (The daemon's event lines for
//! that ban and lockout carry their fields.) The dashboard also covers
//! every series the exporter serves, and is one Grafana can import (unique panel ids,
//! every query on the `$datasource` variable).
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, prometheus).

use std::{collections::HashSet, path::Path, time::Duration, time::Instant};

use serde_json::Value;
use sip_filter_tests::{
    auth_lab::{
        accounts, brute_force, register, wrong_passwords, AuthLab, Client, Deployment, Pace,
        Registrar, SippRun,
    },
    lab::{options_scenario, require_tools, sip_filter, KAMAILIO_TOOLS},
    netns::ensure_namespaces_gone,
    privileged,
    prometheus::{get, Prometheus},
};

/// The exporter, on the filtered host's loopback (a namespace of its own).
const METRICS_ADDR: &str = "127.0.0.1:9184";
/// How long Prometheus gets to start and scrape, and each query to show its data.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);
/// What `$__rate_interval` stands for: every sample since Prometheus started, so the
/// traffic is inside it however slowly this machine ran.
const RATE_INTERVAL: &str = "10m";

/// The filter's configuration beyond the lab's: the exporter; a REGISTER rate the
/// guesses (two REGISTERs each, 10 a second) stay under, so that only the answers stop
/// them (as in e2e_auth_lab); and a small bucket for other methods, which a burst of
/// [`OPTIONS_BURST`] overflows.
fn extra_config() -> String {
    format!(
        "[daemon]\nmetrics_addr = \"{METRICS_ADDR}\"\n\n\
         [rate_limit.register]\nrate = 50\nburst = 200\n\n\
         [rate_limit.other]\nrate = 5\nburst = 10\n"
    )
}

/// OPTIONS sent at 100 a second from one source: over its bucket of 10.
const OPTIONS_BURST: usize = 40;

/// A panel's query, as read from the dashboard.
struct PanelQuery {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/grafana/sip-filter.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every panel's queries; panics where the dashboard is not one Grafana imports as
/// meant: panel ids repeated, a panel outside the 24-column grid, a query without an
/// expression or not on the `$datasource` variable.
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|variable| variable["name"].as_str())
        .collect();
    assert!(variables.contains(&"datasource"), "{variables:?}");
    let mut ids = HashSet::new();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("a title").to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id repeated"
        );
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().expect("gridPos.x") + grid["w"].as_u64().expect("w");
        assert!(right <= 24, "{title}: past the grid's 24 columns");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("an expr");
            assert!(!expr.trim().is_empty(), "{title}: an empty query");
            queries.push(PanelQuery {
                panel: title.clone(),
                expr: expr.to_string(),
            });
        }
    }
    queries
}

/// `expr` as Grafana sends it for one instance of the `sip-filter` job.
fn substituted(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$instance", &regex_escaped(METRICS_ADDR))
        .replace("$job", "sip-filter");
    assert!(!expr.contains('$'), "a variable left unsubstituted: {expr}");
    expr
}

/// `text` matched literally by a PromQL regular expression (`=~`), as Grafana escapes
/// a single value.
fn regex_escaped(text: &str) -> String {
    text.replace('.', "\\\\.")
}

/// The largest value among a query's series.
fn largest(result: &[Value]) -> f64 {
    result
        .iter()
        .filter_map(|series| series["value"][1].as_str()?.parse::<f64>().ok())
        .fold(f64::NAN, f64::max)
}

/// The panels this test's traffic must show, each with a query of theirs that must be
/// above 0 (a substring of the expression picks it).
const DRIVEN: &[(&str, &str)] = &[
    ("Packets by verdict", "sip_filter_packets_total"),
    ("Drops by reason", "sip_filter_packets_total"),
    ("Rate-limit and budget drops", "sip_filter_packets_total"),
    (
        "Bans added and expired by reason",
        "sip_filter_bans_added_total",
    ),
    ("Active bans by reason", "sip_filter_bans_active"),
    ("Active bans", "sip_filter_bans_active"),
    ("Answers by kind", "sip_filter_answers_total"),
    (
        "Lockouts and locked accounts",
        "sip_filter_auth_lockouts_total",
    ),
    ("Registered sources", "sip_filter_registered_sources"),
    ("Registrations", "sip_filter_auth_registrations_total"),
    ("Exporter up", "up"),
    (
        "Interfaces: XDP mode and attachment",
        "sip_filter_interface_attached",
    ),
    // Issue 14: the lab's traffic is over UDP.
    ("Packets by transport", "sip_filter_transport_packets_total"),
];

#[test]
fn every_dashboard_panel_shows_data_from_a_real_prometheus() {
    if !privileged("every_dashboard_panel_shows_data_from_a_real_prometheus") {
        return;
    }
    let started = Instant::now();
    let dashboard = dashboard();
    let queries = panel_queries(&dashboard);
    require_tools(&[KAMAILIO_TOOLS, &["sipp", "prometheus"]].concat())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let office = accounts(1000, 10);
    let lab = AuthLab::start(
        Deployment::FilteredHost,
        &Registrar::new(accounts(1000, 20)),
        "e2e-dashboard",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (mut daemon, attached) = lab
        .start_filter(sip_filter(), &lab.filter_config(&extra_config()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{attached}");
    daemon
        .wait_for_log("serving metrics on", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ns, _) = lab.filter_place();
    let mut prometheus =
        Prometheus::start(ns, lab.dir.path(), METRICS_ADDR).unwrap_or_else(|e| panic!("{e:#}"));
    // Its first scrape before any traffic: the counters' rise is then seen by rate().
    let ((), first_scrape) = prometheus.wait_for(
        "Prometheus scraping the filter",
        PROMETHEUS_DEADLINE,
        |prometheus| {
            let up = prometheus.query("up{job=\"sip-filter\"}")?;
            anyhow::ensure!(largest(&up) == 1.0, "up: {up:?}");
            Ok(Some(()))
        },
    );
    println!(
        "Prometheus scraping after {:.1} s",
        first_scrape.as_secs_f64()
    );

    let traffic = Instant::now();
    let burst = lab.sipp(
        Client::Callee,
        &SippRun::new(
            "options-burst",
            options_scenario(),
            vec!["-".to_string(); OPTIONS_BURST],
            Pace::per_second(100),
        ),
    );
    assert!(
        burst.failed > 0,
        "the burst should overflow its bucket:\n{}",
        burst.finished
    );
    let registered = register(&lab, Client::Office, "office", &office, None);
    assert_eq!(
        registered.successful,
        office.len() as u64,
        "every phone should register:\n{}",
        registered.finished
    );
    let guesses = brute_force(
        &lab,
        Client::Attacker,
        "1015",
        &wrong_passwords(60),
        Pace::per_second(10),
    );
    println!(
        "traffic: {OPTIONS_BURST} OPTIONS at once ({} answered), {} phones registered, \
         then {guesses} ({:.1} s)",
        burst.successful,
        office.len(),
        traffic.elapsed().as_secs_f64()
    );

    // The daemon logged the ban and the lockout with their fields, for log pipelines.
    let (_, attacker) = lab.client(Client::Attacker);
    for (event, fields) in [
        ("event=ban ", format!("src={attacker} reason=auth ttl_s=")),
        (
            "event=lockout ",
            format!("src={attacker} account=1015 scope=source ttl_s="),
        ),
    ] {
        let line = daemon
            .wait_for_log(event, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            line.contains(&format!("{event}{fields}")) && line.ends_with(" dry_run=false"),
            "{line}"
        );
    }

    // The dashboard covers every series the exporter serves.
    let exposition = get(ns, &format!("http://{METRICS_ADDR}/metrics"), &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .body;
    let exported: HashSet<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let dashboard_text = dashboard.to_string();
    let missing: Vec<&&str> = exported
        .iter()
        .filter(|name| !dashboard_text.contains(**name))
        .collect();
    assert!(missing.is_empty(), "series on no panel: {missing:?}");

    // Every query returns data; the ones the traffic drives, above 0.
    let queried = Instant::now();
    for query in &queries {
        let expr = substituted(&query.expr);
        let must_rise = DRIVEN
            .iter()
            .any(|(panel, metric)| *panel == query.panel && query.expr.contains(metric));
        let (value, took) = prometheus.wait_for(
            &format!("panel {:?}: {expr} returning data", query.panel),
            PROMETHEUS_DEADLINE,
            |prometheus| {
                let result = prometheus.query(&expr)?;
                anyhow::ensure!(!result.is_empty(), "no series");
                let value = largest(&result);
                anyhow::ensure!(!must_rise || value > 0.0, "0 in {result:?}");
                Ok(Some(value))
            },
        );
        println!(
            "{:<40} {value:>10.3} ({:.1} s) {expr}",
            query.panel,
            took.as_secs_f64()
        );
    }
    for (panel, metric) in DRIVEN {
        assert!(
            queries
                .iter()
                .any(|query| query.panel == *panel && query.expr.contains(metric)),
            "no panel {panel:?} querying {metric}"
        );
    }
    let queries_took = queried.elapsed();

    drop(prometheus);
    lab.stop_filter(&mut daemon)
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(daemon);
    let namespaces = lab.names();
    drop(lab);
    ensure_namespaces_gone(&namespaces).unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "{} queries of {} panels returned data in {:.1} s; done in {:.1} s",
        queries.len(),
        queries
            .iter()
            .map(|q| &q.panel)
            .collect::<HashSet<_>>()
            .len(),
        queries_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
