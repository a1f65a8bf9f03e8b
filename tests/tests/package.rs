//! The Debian package, as an operator meets it: `cargo xtask deb` builds it (lintian
//! must find no error), then in a Debian 12 container booted with systemd
//! (tests/src/container.rs) it installs, starts, reloads, stops and purges.
//!
//! Installed: the binary, the unit (installed, not enabled), the configuration as a
//! conffile, man pages and completions. Started as shipped, with no interface set, the
//! start fails with exit status 2 and systemd does not retry it
//! (RestartPreventExitStatus=2). With an interface set, `systemctl start` returns only
//! once the XDP program is attached (Type=notify: checked from the host at once, not
//! after a wait), under the unit's hardening; a reload passes, a refused file fails the
//! reload and the daemon runs on; a stop detaches and saves the state. Purged while
//! running: the filter is stopped and detached, and the binary, unit, configuration and
//! state directory are gone. The container's root is volatile: nothing it installed
//! outlives it, on failure too.
//!
//! Needs root, debootstrap and systemd-nspawn (`cargo xtask setup --test-tools`).

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use sip_filter_tests::{
    container::{bookworm_root, BpfFs, Container},
    lab::{require_tools, xdp_attached, TempDir, QUICK},
    netns::{run_bounded, Host, Lab, SERVER_IFACE},
    privileged,
};

/// Building the release binary and the package, lintian included, on a busy machine.
const BUILD_DEADLINE: Duration = Duration::from_secs(3600);
const CONFIG: &str = "/etc/sip-filter/sip-filter.toml";
const UNIT: &str = "sip-filter";
/// Long enough for systemd to have restarted a failed start (RestartSec=2) had it meant to.
const RESTART_WINDOW: Duration = Duration::from_secs(6);

/// `cargo xtask deb`: the package's path, from its last line.
fn build_package() -> std::path::PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(workspace).args(["xtask", "deb"]);
    let built = run_bounded(command, BUILD_DEADLINE);
    assert!(built.success(), "{built}");
    let package = built
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("deb: "))
        .rfind(|path| path.ends_with(".deb"))
        .unwrap_or_else(|| panic!("`cargo xtask deb` named no package:\n{built}"));
    workspace.join(package)
}

fn assert_absent(container: &Container, path: &str, when: &str) {
    let found = container.run(&["test", "-e", path], QUICK);
    assert_eq!(found.code(), Some(1), "{path} is still there {when}");
}

#[test]
fn installs_starts_reloads_stops_and_purges_under_systemd() {
    if !privileged("installs_starts_reloads_stops_and_purges_under_systemd") {
        return;
    }
    require_tools(&["debootstrap", "systemd-nspawn", "nsenter", "ip"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let package = build_package();
    let root = bookworm_root().unwrap_or_else(|e| panic!("{e:#}"));

    let lab = Lab::new().expect("the lab builds");
    let dir = TempDir::new("package");
    let bpffs = BpfFs::mount(&dir.path().join("bpffs")).unwrap_or_else(|e| panic!("{e:#}"));
    let package_dir = package.parent().expect("the package is in a directory");
    let package_name = package
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a UTF-8 file name");
    let container = Container::boot(
        &root,
        lab.name(Host::Server),
        &bpffs,
        &[(package_dir, "/mnt/package")],
        &dir.path().join("console.log"),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let run = |args: &[&str]| container.run(args, QUICK);

    // Installed: what the package holds, the unit neither enabled nor started.
    container.run_ok(&["dpkg", "-i", &format!("/mnt/package/{package_name}")]);
    for path in [
        "/usr/bin/sip-filter",
        "/usr/lib/systemd/system/sip-filter.service",
        CONFIG,
        "/usr/share/man/man1/sip-filter.1.gz",
        "/usr/share/man/man1/sip-filter-run.1.gz",
        "/usr/share/bash-completion/completions/sip-filter",
        "/usr/share/zsh/vendor-completions/_sip-filter",
        "/usr/share/fish/vendor_completions.d/sip-filter.fish",
        "/usr/share/doc/sip-filter/README.md",
    ] {
        container.run_ok(&["test", "-f", path]);
    }
    let conffiles = container.run_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "sip-filter"]);
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles:?}");
    assert_eq!(container.unit_property(UNIT, "UnitFileState"), "disabled");
    assert_eq!(container.unit_property(UNIT, "ActiveState"), "inactive");
    let man = container.run_ok(&["sh", "-c", "zcat /usr/share/man/man1/sip-filter.1.gz"]);
    assert!(
        man.contains("explain"),
        "the man page lists the verbs:\n{man}"
    );

    // As shipped, no interface is set: a wrong configuration, which restarting cannot mend.
    let refused = run(&["systemctl", "start", UNIT]);
    assert!(!refused.success(), "{refused}");
    std::thread::sleep(RESTART_WINDOW);
    assert_eq!(container.unit_property(UNIT, "ExecMainStatus"), "2");
    assert_eq!(container.unit_property(UNIT, "NRestarts"), "0");
    let journal = container.run_ok(&["journalctl", "-u", UNIT, "--no-pager"]);
    assert!(journal.contains("no interface to attach to"), "{journal}");
    container.run_ok(&["systemctl", "reset-failed", UNIT]);

    // The operator's edit: the interface SIP arrives on.
    container.run_ok(&[
        "sed",
        "-i",
        &format!("s/^# interfaces = \\[\"eth0\"\\]$/interfaces = [\"{SERVER_IFACE}\"]/"),
        CONFIG,
    ]);
    let edited = container.run_ok(&["cat", CONFIG]);
    assert!(
        edited.contains(&format!("\ninterfaces = [\"{SERVER_IFACE}\"]")),
        "the shipped file's interfaces line changed:\n{edited}"
    );

    // Started: attached by the time `systemctl start` returns.
    container.run_ok(&["systemctl", "start", UNIT]);
    assert!(
        xdp_attached(&lab),
        "`systemctl start` returned before the XDP program was attached"
    );
    assert_eq!(container.unit_property(UNIT, "ActiveState"), "active");
    let status_text = container.unit_property(UNIT, "StatusText");
    assert!(
        status_text.starts_with(&format!("filtering on {SERVER_IFACE} (")),
        "{status_text}"
    );
    let status = container.run_ok(&["sip-filter", "status"]);
    assert!(status.contains("running"), "{status}");

    // Reloaded; a refused file fails the reload and the daemon runs on.
    container.run_ok(&["systemctl", "reload", UNIT]);
    container.run_ok(&["cp", CONFIG, "/root/good.toml"]);
    container.run_ok(&["sh", "-c", &format!("echo 'no_such_key = 1' >> {CONFIG}")]);
    let refused = run(&["systemctl", "reload", UNIT]);
    assert!(!refused.success(), "a bad file was reloaded:\n{refused}");
    assert_eq!(container.unit_property(UNIT, "ActiveState"), "active");
    assert!(xdp_attached(&lab));
    container.run_ok(&["cp", "/root/good.toml", CONFIG]);
    let status: Value =
        serde_json::from_str(&container.run_ok(&["sip-filter", "status", "--json"]))
            .expect("status --json prints JSON");
    assert_eq!(status["reloads"], 1, "{status}");

    // Stopped: detached, pins gone, state saved.
    container.run_ok(&["systemctl", "stop", UNIT]);
    assert!(!xdp_attached(&lab), "still attached after `systemctl stop`");
    assert_absent(&container, "/sys/fs/bpf/sip-filter", "after the stop");
    container.run_ok(&["test", "-f", "/var/lib/sip-filter/state.bin"]);

    // Purged while running: stopped and detached first, then everything goes.
    container.run_ok(&["systemctl", "start", UNIT]);
    assert!(xdp_attached(&lab));
    container.run_ok(&["dpkg", "--purge", "sip-filter"]);
    assert!(!xdp_attached(&lab), "still attached after the purge");
    for path in [
        "/usr/bin/sip-filter",
        "/usr/lib/systemd/system/sip-filter.service",
        "/etc/sip-filter",
        "/var/lib/sip-filter",
        "/run/sip-filter",
        "/sys/fs/bpf/sip-filter",
    ] {
        assert_absent(&container, path, "after the purge");
    }
    assert_eq!(container.unit_property(UNIT, "LoadState"), "not-found");

    drop(container);
    drop(bpffs);
    let left = lab.pids();
    assert!(left.is_empty(), "processes left in the lab: {left:?}");
}
