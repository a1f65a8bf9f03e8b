//! The example Prometheus files in ops/prometheus: the alert rules are valid and fire
//! (and stay quiet) as their unit tests say, and the scrape configuration loads them.
//! Every alert's `runbook_url` is a heading of README.md. Needs promtool (`cargo xtask setup --test-tools`: Debian package prometheus); no root.

use std::{collections::HashSet, path::PathBuf, process::Command, time::Duration};

use sip_filter_tests::{lab::require_tools, netns::run_bounded};

fn ops_prometheus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus")
}

fn promtool(args: &[&str]) {
    require_tools(&["promtool"]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut command = Command::new("promtool");
    command.current_dir(ops_prometheus()).args(args);
    let finished = run_bounded(command, Duration::from_secs(60));
    assert!(finished.success(), "promtool {args:?}:\n{finished}");
    println!("promtool {args:?}:\n{}", finished.stdout.trim_end());
}

#[test]
fn the_alert_rules_are_valid() {
    promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn the_alert_rules_fire_as_their_unit_tests_say() {
    promtool(&["test", "rules", "alerts_test.yml"]);
}

#[test]
fn the_example_scrape_configuration_is_valid() {
    promtool(&["check", "config", "prometheus.yml"]);
}

/// Where every `runbook_url` points: README.md at the project's repository.
const RUNBOOK_PREFIX: &str = "https://github.com/sip-filter/sip-filter/blob/main/README.md#";

/// The anchors GitHub gives README.md's headings (those outside code blocks):
/// lowercased, punctuation other than `-` and `_` dropped, spaces as `-`, and `-1`,
/// `-2`... after repeats.
fn readme_anchors() -> HashSet<String> {
    let readme =
        std::fs::read_to_string(ops_prometheus().join("../../README.md")).expect("README.md");
    let mut anchors = HashSet::new();
    let mut in_code = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_code || !heading.trim_start_matches('#').starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut anchor = slug.clone();
        let mut repeat = 0;
        while anchors.contains(&anchor) {
            repeat += 1;
            anchor = format!("{slug}-{repeat}");
        }
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn every_alert_has_a_runbook_in_the_readme() {
    let anchors = readme_anchors();
    // Headings the README links to already, so that the slugs are GitHub's.
    for known in [
        "a-customer-is-blocked-explain",
        "sizing-rate-limits",
        "connection-rate",
    ] {
        assert!(anchors.contains(known), "{known} not among {anchors:?}");
    }
    let rules = std::fs::read_to_string(ops_prometheus().join("alerts.yml")).expect("alerts.yml");
    // Per alert, in order: its name and its runbook_urls.
    let mut alerts: Vec<(String, Vec<String>)> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts.push((name.to_string(), Vec::new()));
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            let (_, urls) = alerts.last_mut().expect("a runbook_url inside an alert");
            urls.push(url.trim_matches('"').to_string());
        }
    }
    assert!(alerts.len() >= 13, "{alerts:?}");
    for (name, urls) in &alerts {
        let [url] = &urls[..] else {
            panic!("{name} should have one runbook_url: {urls:?}");
        };
        let anchor = url
            .strip_prefix(RUNBOOK_PREFIX)
            .unwrap_or_else(|| panic!("{name}'s runbook_url is not under {RUNBOOK_PREFIX}: {url}"));
        assert!(
            anchors.contains(anchor),
            "{name}'s runbook_url names #{anchor}, which no heading of README.md has"
        );
    }
    println!(
        "{} alerts, each with its runbook in README.md",
        alerts.len()
    );
}
