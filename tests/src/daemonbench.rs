//! The daemon with a million entries (issue 16, item 4): `sip-filter run` (release
//! build) on a lab interface with its Prometheus exporter, a blocklist feed imported
//! through it (`sip-filter block import`: a million bans, then a million bans and a
//! million deny entries), then scrapes of `/metrics` (each timed, the median reported)
//! and the stop (SIGINT until exit: the state file written, the program detached), each
//! against its target.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use crate::{
    lab::{
        require_tools, sip_filter_binary, sip_filter_release_binary, spawn_filter, tear_down,
        write_file, PinRoot, TempDir, DOMAIN,
    },
    netns::{Host, Lab, SIGINT},
};

/// Issue 16's targets: a stop with a million bans within 2 s, a scrape within 500 ms.
pub const STOP_TARGET: Duration = Duration::from_secs(2);
pub const SCRAPE_TARGET: Duration = Duration::from_millis(500);

/// Where the exporter listens, in the server's namespace.
const METRICS_ADDR: &str = "127.0.0.1:9186";

/// Generous bounds, for a loaded machine: the figures are measured, not bounded.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the stop's end is looked for.
const EXIT_POLL: Duration = Duration::from_millis(2);

pub struct Options {
    /// The feeds, one daemon each: bans (IPv4 addresses) and deny entries (IPv4 /28
    /// networks).
    pub feeds: Vec<Feed>,
    /// Scrapes timed per feed.
    pub scrapes: usize,
    /// The quick run: small feeds, and the daemon the tests built, not a release build.
    pub quick: bool,
}

#[derive(Clone, Copy)]
pub struct Feed {
    pub bans: u32,
    pub deny: u32,
}

impl Options {
    pub fn new(quick: bool) -> Self {
        let (entries, scrapes) = if quick { (20_000, 3) } else { (1_000_000, 7) };
        Options {
            feeds: vec![
                Feed {
                    bans: entries,
                    deny: 0,
                },
                Feed {
                    bans: entries,
                    deny: entries,
                },
            ],
            scrapes,
            quick,
        }
    }
}

/// The feed's text: addresses from 11.0.0.0 (they become bans), /28 networks from
/// 32.0.0.0 (deny entries).
fn feed_text(feed: Feed) -> String {
    let mut text = String::with_capacity((feed.bans + feed.deny) as usize * 20);
    text.push_str("# the daemon benchmark's feed\n");
    for i in 0..feed.bans {
        let _ = writeln!(text, "{}", Ipv4Addr::from(0x0b00_0000 + i));
    }
    for i in 0..feed.deny {
        let _ = writeln!(text, "{}/28", Ipv4Addr::from(0x2000_0000 + (i << 4)));
    }
    text
}

/// One GET of `/metrics` from inside the server's namespace: its time and its body.
fn scrape(lab: &Lab) -> anyhow::Result<(Duration, String)> {
    let url = format!("http://{METRICS_ADDR}/metrics");
    lab.in_namespace(Host::Server, || -> anyhow::Result<(Duration, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let started = Instant::now();
        let mut response = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let body = response.body_mut().read_to_string()?;
        Ok((started.elapsed(), body))
    })?
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub fn run(options: &Options) -> anyhow::Result<Value> {
    require_tools(&["nsenter", "ip"])?;
    ensure!(options.scrapes > 0, "at least one scrape");
    // The quick run (the tests') takes the daemon the other tests built: a cold release
    // build costs CI minutes, and its figures are not the point there.
    let (binary, build) = if options.quick {
        (sip_filter_binary(true)?, "the tests' build")
    } else {
        (sip_filter_release_binary(true)?, "release build")
    };
    let mut rows = Vec::new();
    for &feed in &options.feeds {
        rows.push(measure(binary, build, feed, options.scrapes)?);
    }
    Ok(json!({
        "build": build,
        "method": "sip-filter run (release build) on a veth in a network namespace with --metrics-addr; `sip-filter block import` of a feed of addresses (bans) and /28 networks (deny entries), --ttl 1d; GET /metrics from the same namespace, timed to the end of the body (the median of several); SIGINT, timed until the process exited (bans and deny entries read, the state file written and fsynced, the program detached)",
        "scrape_target_seconds": SCRAPE_TARGET.as_secs_f64(),
        "stop_target_seconds": STOP_TARGET.as_secs_f64(),
        "rows": rows,
    }))
}

/// One daemon: `feed` imported, scraped `scrapes` times, stopped.
fn measure(
    binary: &std::path::Path,
    build: &str,
    feed: Feed,
    scrapes_wanted: usize,
) -> anyhow::Result<Value> {
    let lab = Lab::new()?;
    let pins = PinRoot::new("bench-daemon");
    let dir = TempDir::new("bench-daemon");
    let (mut daemon, _) = spawn_filter(
        &lab,
        binary,
        &pins,
        &["--domain", DOMAIN, "--metrics-addr", METRICS_ADDR],
        &dir.path().join("sip-filter.log"),
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "\nthe daemon with {} bans and {} deny entries ({build})",
        feed.bans, feed.deny
    );
    let file = write_file(dir.path(), "feed.txt", &feed_text(feed));
    let file = file.to_str().context("a UTF-8 path")?;
    let imported = lab.run(
        Host::Server,
        binary,
        &[
            "block",
            "import",
            file,
            "--ttl",
            "1d",
            "--pin-root",
            pins.arg(),
        ],
        IMPORT_TIMEOUT,
    );
    ensure!(imported.success(), "{imported}");
    let import_s = imported.elapsed.as_secs_f64();
    println!("block import: {import_s:.2} s");

    let mut scrapes = Vec::new();
    let mut body_bytes = 0;
    for _ in 0..scrapes_wanted {
        let (took, body) = scrape(&lab)?;
        let active = body
            .lines()
            .filter(|line| line.starts_with("sip_filter_bans_active"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        ensure!(
            active == u64::from(feed.bans),
            "the scrape counts {active} active bans, not {}",
            feed.bans
        );
        body_bytes = body.len();
        scrapes.push(took.as_secs_f64());
    }
    let scrape_s = median(scrapes.clone());
    println!(
        "scrape: median {:.0} ms of {} ({:?} ms), {body_bytes} bytes",
        scrape_s * 1e3,
        scrapes.len(),
        scrapes
            .iter()
            .map(|s| (s * 1e3).round() as u64)
            .collect::<Vec<_>>()
    );

    let stopping = Instant::now();
    daemon.signal(SIGINT);
    let status = loop {
        if let Some(status) = daemon.exited() {
            break status;
        }
        if stopping.elapsed() > STOP_TIMEOUT {
            bail!(
                "sip-filter ignored SIGINT for {STOP_TIMEOUT:?}:\n{}",
                daemon.log()
            );
        }
        std::thread::sleep(EXIT_POLL);
    };
    let stop_s = stopping.elapsed().as_secs_f64();
    ensure!(
        status.success(),
        "sip-filter exited with {status}:\n{}",
        daemon.log()
    );
    println!("stop (SIGINT to exit, state saved): {stop_s:.2} s");
    tear_down(lab, pins, [daemon])?;
    drop(dir);
    Ok(json!({
        "bans": feed.bans,
        "deny_entries": feed.deny,
        "import_seconds": import_s,
        "scrape_seconds": scrapes,
        "scrape_median_seconds": scrape_s,
        "scrape_bytes": body_bytes,
        "stop_seconds": stop_s,
        "scrape_met": scrape_s <= SCRAPE_TARGET.as_secs_f64(),
        "stop_met": stop_s <= STOP_TARGET.as_secs_f64(),
    }))
}

/// The report's section.
pub fn markdown(doc: &Value) -> String {
    let met = |v: &Value| {
        if v.as_bool() == Some(true) {
            "met"
        } else {
            "missed"
        }
    };
    let seconds = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut md = format!(
        "## The daemon with a million entries\n\n{}. Targets (issue 16): a scrape within \
         {:.0} ms, a stop within {:.0} s.\n\n\
         | bans | deny entries | block import | scrape (median) | scrapes | stop |\n\
         |--:|--:|--:|--:|--|--:|\n",
        doc["method"].as_str().unwrap_or("?"),
        seconds(&doc["scrape_target_seconds"]) * 1e3,
        seconds(&doc["stop_target_seconds"]),
    );
    for r in doc["rows"].as_array().into_iter().flatten() {
        let scrapes: Vec<String> = r["scrape_seconds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{:.0}", seconds(s) * 1e3))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} s | {:.0} ms, {} | {} ms | {:.2} s, {} |",
            r["bans"],
            r["deny_entries"],
            seconds(&r["import_seconds"]),
            seconds(&r["scrape_median_seconds"]) * 1e3,
            met(&r["scrape_met"]),
            scrapes.join(", "),
            seconds(&r["stop_seconds"]),
            met(&r["stop_met"]),
        );
    }
    md.push('\n');
    md
}
