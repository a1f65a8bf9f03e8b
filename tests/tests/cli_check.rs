//! `sip-filter check`: a configuration checked without root or a kernel, as the systemd
//! unit runs it before every start and reload. A good file exits 0 in silence; each
//! suspicious setting exits 0 with one warning naming the line and key; a bad file exits
//! 2 with one error line. Run as nobody when the tests run as root (as in CI), so that
//! "needs no root" is what is tested.

use std::{path::Path, process::Command};

use sip_filter_tests::{
    lab::{assert_one_error_line, sip_filter, write_file, TempDir, QUICK},
    netns::{run_bounded, Finished},
};

/// `sip-filter check ARGS`, as nobody if we are root.
fn check(args: &[&str]) -> Finished {
    // SAFETY: a syscall without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all"])
            .arg(sip_filter());
        command
    } else {
        Command::new(sip_filter())
    };
    command.arg("check").args(args);
    run_bounded(command, QUICK)
}

fn check_file(dir: &Path, name: &str, text: &str) -> Finished {
    let path = write_file(dir, name, text);
    check(&["--config", path.to_str().expect("a UTF-8 path")])
}

const GOOD: &str = r#"
[filter]
ports = [5060, 5080]
domains = ["pbx.company.de", "*.company.de"]
own_addresses = ["192.0.2.7"]

[rate_limit.invite]
rate = 5
burst = 20

[lists]
allow = ["203.0.113.0/24"]
deny = ["198.51.100.0/24"]
"#;

#[test]
fn a_good_configuration_passes_in_silence() {
    let dir = TempDir::new("check-good");
    let finished = check_file(dir.path(), "good.toml", GOOD);
    assert!(finished.success(), "{finished}");
    assert_eq!(finished.stderr, "", "{finished}");
    assert!(
        finished.stdout.contains("valid, enforcing")
            && finished.stdout.contains("SIP on UDP 5060,5080")
            && finished.stdout.contains("2 domain(s) allowed")
            && finished.stdout.contains("0 warning(s)"),
        "{finished}"
    );
    // The shipped example, as installed (copied: nobody may not reach the checkout).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sip-filter.toml");
    let text = std::fs::read_to_string(example).expect("the example reads");
    let finished = check_file(dir.path(), "sip-filter.toml", &text);
    assert!(
        finished.success() && finished.stderr.is_empty(),
        "{finished}"
    );
}

#[test]
fn each_suspicious_setting_gets_one_warning_with_its_line() {
    let dir = TempDir::new("check-warnings");
    for (name, text, line_and_key, says) in [
        (
            "ports",
            "[filter]\nports = [5060, 5080, 5060]\n",
            "line 2: filter.ports",
            "port 5060 is listed twice",
        ),
        (
            "allow-and-deny",
            "[lists]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.0/24\"]\n",
            "line 3: lists.deny",
            "in both lists.allow and lists.deny",
        ),
        (
            "deny-all",
            "[lists]\ndeny = [\"0.0.0.0/0\"]\n",
            "line 2: lists.deny",
            "denies every IPv4 source",
        ),
        (
            "deny-all-v6",
            "[lists]\ndeny = [\"::/0\"]\n",
            "line 2: lists.deny",
            "denies every IPv6 source",
        ),
        (
            "host-bits",
            "[lists]\nallow = [\n  \"192.0.2.0/24\",\n  \"198.51.100.7/24\",\n]\n",
            "line 4: lists.allow",
            "198.51.100.7/24 has host bits set: it is read as 198.51.100.0/24",
        ),
        (
            "domain-case",
            "[filter]\ndomains = [\"pbx.company.de\",\n\"PBX.Company.DE\"]\n",
            "line 3: filter.domains",
            "pbx.company.de and PBX.Company.DE name one domain",
        ),
        (
            "zero-ban",
            "[ban]\nunknown_domain_hits = 5\nunknown_domain_seconds = 0\n",
            "line 3: ban.unknown_domain_seconds",
            "turns the rule off",
        ),
        (
            "example-enforced",
            "[filter]\ndomains = [\"pbx.example.test\"]\nallow_example_domains = true\n",
            "line 3: filter.allow_example_domains",
            "enforcing reserved example domains (pbx.example.test)",
        ),
    ] {
        let finished = check_file(dir.path(), &format!("{name}.toml"), text);
        assert!(finished.success(), "{name}: {finished}");
        let lines: Vec<&str> = finished.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one warning\n{finished}");
        assert!(
            lines[0].starts_with("warning: ")
                && lines[0].contains(&format!("{name}.toml {line_and_key}: "))
                && lines[0].contains(says),
            "{name}: expected `{line_and_key}: ...{says}...`\n{finished}"
        );
        assert!(finished.stdout.contains("1 warning(s)"), "{finished}");

        // --strict refuses what warns.
        let path = dir.path().join(format!("{name}.toml"));
        let strict = check(&["--strict", "--config", path.to_str().expect("UTF-8")]);
        assert_eq!(strict.code(), Some(2), "{name} --strict: {strict}");
    }
}

#[test]
fn a_bad_configuration_exits_2_with_one_clear_line() {
    let dir = TempDir::new("check-bad");
    for (name, text, mentions) in [
        (
            "burst",
            "[rate_limit.invite]\nrate = 5\nburst = 0\n",
            "line 3: rate_limit.invite.burst: must be at least 1",
        ),
        (
            "typo",
            "[filter]\nport = [5060]\n",
            "line 2: filter.port: unknown key",
        ),
        ("syntax", "[filter\nports = [5060]\n", "line 1"),
        (
            "network",
            "[lists]\ndeny = [\"198.51.100.0/33\"]\n",
            "lists.deny",
        ),
        // What `run` refuses to enforce, `check` refuses too.
        (
            "example",
            "[filter]\ndomains = [\"pbx.example.test\"]\n",
            "reserved example domains (pbx.example.test)",
        ),
    ] {
        let finished = check_file(dir.path(), &format!("{name}.toml"), text);
        let line = assert_one_error_line(&finished, mentions);
        assert!(line.contains(&format!("{name}.toml")), "{finished}");
        assert!(finished.stdout.is_empty(), "{finished}");
    }
    let missing = check(&["--config", "/nonexistent/sip-filter.toml"]);
    assert_one_error_line(&missing, "/nonexistent/sip-filter.toml: cannot be read");
}

/// The unit checks before starting and before signalling a reload: its check commands
/// are ones the binary accepts, and the reload's check comes before the signal.
#[test]
fn the_unit_checks_before_start_and_reload() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/sip-filter.service"),
    )
    .expect("the unit file");
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let start_pre = values("ExecStartPre");
    let reload = values("ExecReload");
    assert_eq!(start_pre.len(), 1, "{start_pre:?}");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert_eq!(
        reload[0], start_pre[0],
        "the reload checks as the start does"
    );
    assert!(reload[1].contains("kill -HUP $MAINPID"), "{reload:?}");
    let run = values("ExecStart");
    let config = run[0]
        .split_once("--config ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("ExecStart names its --config");

    // Its check, run on files standing in for the one the unit names.
    let words: Vec<&str> = start_pre[0].split_whitespace().collect();
    assert!(
        words[0].ends_with("/sip-filter") && words[1] == "check",
        "{words:?}"
    );
    assert!(
        words.contains(&config),
        "the check reads ExecStart's {config}: {words:?}"
    );
    let dir = TempDir::new("check-unit");
    for (name, text, exit) in [("good", GOOD, 0), ("bad", "[filter]\nports = []\n", 2)] {
        let path = write_file(dir.path(), &format!("{name}.toml"), text);
        let args: Vec<&str> = words[2..]
            .iter()
            .map(|word| {
                if *word == config {
                    path.to_str().expect("UTF-8")
                } else {
                    word
                }
            })
            .collect();
        let finished = check(&args[..]);
        assert_eq!(finished.code(), Some(exit), "{name}: {finished}");
    }
}

/// With `[countries]`, the check reads the database as `run` would: one it can read is
/// summed up, one it cannot (garbled, missing) is an error naming it.
#[test]
fn the_country_database_is_read_by_the_check() {
    let dir = TempDir::new("check-countries");
    let database = dir.path().join("countries.mmdb");
    sip_filter_tests::geo::write_country_database(
        &database,
        &[
            ("203.0.113.0/24".parse().unwrap(), "FR"),
            ("2001:db8:f0::/48".parse().unwrap(), "FR"),
            ("198.51.100.0/24".parse().unwrap(), "DE"),
        ],
    );
    let config = format!(
        "[countries]\ndatabase = \"{}\"\ndeny = [\"FR\"]\n",
        database.display()
    );
    let finished = check_file(dir.path(), "countries.toml", &config);
    assert!(finished.success(), "{finished}");
    assert!(
        finished
            .stdout
            .contains("1 IPv4 and 1 IPv6 network(s) of 1 countr(ies) denied by [countries]"),
        "{finished}"
    );
    sip_filter_tests::geo::write_bytes(&database, b"not a country database\n");
    let finished = check_file(dir.path(), "countries.toml", &config);
    let line = assert_one_error_line(&finished, &database.display().to_string());
    assert!(line.contains("cannot be read"), "{line}");
    std::fs::remove_file(&database).unwrap();
    let finished = check_file(dir.path(), "countries.toml", &config);
    assert_one_error_line(&finished, "No such file");
}
