//! The example Prometheus files in ops/prometheus: the alert rules are valid and fire
//! (and stay quiet) as their unit tests say, and the scrape configuration loads them.
//! Needs promtool (`cargo xtask setup --test-tools`: Debian package prometheus); no root.

use std::{path::PathBuf, process::Command, time::Duration};

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
