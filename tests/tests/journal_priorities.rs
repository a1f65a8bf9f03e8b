//! Under systemd, each log line carries its syslog priority as an sd-daemon(3) prefix
//! (`<6>` info, `<4>` warning, `<3>` error), which journald records, so that
//! `journalctl -p warning` finds the warnings; in a terminal or a file, plain lines.
//! systemd tells a service its stream through `JOURNAL_STREAM=DEVICE:INODE`: these
//! tests point it at the file the real binary's stderr goes to, as systemd points it at
//! its socket, and at another file. No root: `sip-filter metrics` serves a pin root
//! without a filter (a scrape of a pin root it cannot read logs a warning), and refuses
//! a bad address with an error.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use sip_filter_tests::{
    lab::{sip_filter, TempDir, QUICK},
    netns::Background,
};

/// `DEVICE:INODE` of `path`, as systemd writes `JOURNAL_STREAM`.
fn journal_stream_of(path: &Path) -> String {
    let metadata = std::fs::metadata(path).expect("the log file");
    format!("{}:{}", metadata.dev(), metadata.ino())
}

/// A pin root whose `links` is a file, not a directory: each scrape warns that it
/// cannot read the links.
fn unreadable_pin_root(dir: &Path) -> PathBuf {
    let root = dir.join("pins");
    std::fs::create_dir_all(&root).expect("the pin root");
    std::fs::write(root.join("links"), b"not a directory").expect("links");
    root
}

/// `sip-filter ARGS` with stdout and stderr to `log`, created first so that its inode
/// is known, and `JOURNAL_STREAM` set to `stream`, or to the log's own when None.
fn spawn_logging_to(log: &Path, stream: Option<&str>, args: &[&str]) -> Background {
    File::create(log).expect("the log file");
    let own = journal_stream_of(log);
    let mut command = Command::new(sip_filter());
    command
        .args(args)
        .env("JOURNAL_STREAM", stream.unwrap_or(&own));
    let process = Background::spawn("sip-filter", command, log).expect("sip-filter starts");
    assert_eq!(
        journal_stream_of(log),
        own,
        "the log kept its inode when opened again"
    );
    process
}

/// Starts `sip-filter metrics` on a free port, scrapes it once, and returns its log
/// once the warning of that scrape is in it.
fn exporter_log(dir: &Path, log: &Path, stream: Option<&str>) -> String {
    let root = unreadable_pin_root(dir);
    let run = dir.join("run");
    let mut exporter = spawn_logging_to(
        log,
        stream,
        &[
            "metrics",
            "--listen",
            "127.0.0.1:0",
            "--pin-root",
            root.to_str().expect("a UTF-8 path"),
            "--runtime-dir",
            run.to_str().expect("a UTF-8 path"),
        ],
    );
    let serving = exporter
        .wait_for_log("serving metrics on", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    let url = serving
        .split("serving metrics on ")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no address in {serving:?}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(QUICK))
        .build()
        .into();
    let answer = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(answer.status().as_u16(), 200);
    exporter
        .wait_for_log("metrics: reading the links pinned in", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    exporter.signal(libc::SIGTERM);
    assert!(
        exporter.wait(QUICK).is_some(),
        "sip-filter metrics did not stop on SIGTERM:\n{}",
        exporter.log()
    );
    exporter.log()
}

/// The line of `log` containing `needle`.
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
}

#[test]
fn lines_to_the_journal_carry_their_priority() {
    let dir = TempDir::new("journal-priorities");
    let log = exporter_log(dir.path(), &dir.path().join("journal.log"), None);
    let info = line_with(&log, "serving metrics on");
    assert!(info.starts_with("<6>ts="), "{info}");
    assert!(info.contains(" level=info "), "{info}");
    let warning = line_with(&log, "metrics: reading the links pinned in");
    assert!(warning.starts_with("<4>ts="), "{warning}");
    assert!(warning.contains(" level=warn "), "{warning}");
    assert!(
        log.lines().all(|line| line.starts_with('<')),
        "every line has a priority:\n{log}"
    );

    // A command that fails says why in one line, at error priority: what
    // `journalctl -p err` shows when a unit's start fails.
    let mut refused = spawn_logging_to(
        &dir.path().join("refused.log"),
        None,
        &["metrics", "--listen", "no-port-here"],
    );
    let status = refused
        .wait(QUICK)
        .unwrap_or_else(|| panic!("sip-filter metrics did not exit:\n{}", refused.log()));
    assert_eq!(status.code(), Some(2), "{}", refused.log());
    let error = refused.log();
    assert!(
        error.starts_with("<3>error: ") && error.contains("no-port-here"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn lines_elsewhere_are_plain() {
    let dir = TempDir::new("journal-elsewhere");
    // systemd set JOURNAL_STREAM for a stream, but stderr goes to a file (a unit's
    // `ExecStart=sh -c 'sip-filter run 2>file'`): the variable names another inode.
    let other = dir.path().join("other");
    File::create(&other).expect("another file");
    let log = exporter_log(
        dir.path(),
        &dir.path().join("file.log"),
        Some(&journal_stream_of(&other)),
    );
    assert!(
        line_with(&log, "serving metrics on").starts_with("ts="),
        "{log}"
    );
    assert!(
        line_with(&log, "metrics: reading the links pinned in").starts_with("ts="),
        "{log}"
    );
    assert!(!log.contains("<6>") && !log.contains("<4>"), "{log}");
}
