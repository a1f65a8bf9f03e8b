//! End to end, in network namespaces: what the daemon tells systemd (`Type=notify` in
//! ops/sip-filter.service, sd_notify(3)), received on a unix datagram socket standing
//! in for systemd's (`NOTIFY_SOCKET`). READY=1 comes only once the XDP and egress
//! programs are attached and their links pinned, and nothing comes before it; a SIGHUP
//! reload is framed by RELOADING=1 and READY=1, a refused one too; SIGTERM sends
//! STOPPING=1. A start that fails (an unknown interface) never says it is ready.
//!
//! Needs root.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sip_filter_tests::{
    lab::{
        egress_attached_in, sip_filter, tear_down, write_file, xdp_attached, PinRoot, TempDir,
        ALLOW_EXAMPLE_DOMAINS, DOMAIN, QUICK,
    },
    netns::{Background, Host, Lab, SERVER_IFACE, SIGTERM},
    privileged,
};

/// The socket systemd would listen on, and what arrives on it.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        NotifySocket { socket, path }
    }

    /// The next notification, waiting up to `timeout` (None: nothing came).
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("a read timeout");
        let mut buffer = [0u8; 4096];
        let length = self.socket.recv(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
    }

    /// The next notification, which must come within [`QUICK`].
    fn expect(&self, what: &str, daemon: &Background) -> String {
        self.next(QUICK).unwrap_or_else(|| {
            panic!(
                "no notification ({what}) within {QUICK:?}; the daemon logged:\n{}",
                daemon.log()
            )
        })
    }
}

/// `sip-filter run ARGS --pin-root PINS` in the server namespace, NOTIFY_SOCKET set.
fn spawn_notifying(
    lab: &Lab,
    pins: &PinRoot,
    notify: &NotifySocket,
    args: &[&str],
    log: &Path,
) -> Background {
    let mut command: Command = lab.command(Host::Server, sip_filter());
    command
        .arg("run")
        .args(args)
        .args(["--pin-root", pins.arg()])
        .env("NOTIFY_SOCKET", &notify.path);
    Background::spawn("sip-filter run", command, log).expect("sip-filter starts")
}

/// The lab, a directory and a pin root named after `tag`, and the socket in the directory.
fn set_up(tag: &str) -> (Lab, TempDir, PinRoot, NotifySocket) {
    let lab = Lab::new().expect("the lab builds");
    let dir = TempDir::new(tag);
    let pins = PinRoot::new(tag);
    let notify = NotifySocket::bind(dir.path());
    (lab, dir, pins, notify)
}

fn lines(notification: &str) -> Vec<&str> {
    notification.lines().collect()
}

#[test]
fn ready_only_once_attached_then_reloading_and_stopping() {
    if !privileged("ready_only_once_attached_then_reloading_and_stopping") {
        return;
    }
    let (lab, dir, pins, notify) = set_up("notify-ready");
    let config = write_file(
        dir.path(),
        "sip-filter.toml",
        &format!("[filter]\ndomains = [\"{DOMAIN}\"]\n"),
    );
    let config_arg = config.to_str().expect("a UTF-8 path");
    let mut daemon = spawn_notifying(
        &lab,
        &pins,
        &notify,
        &[
            "--iface",
            SERVER_IFACE,
            ALLOW_EXAMPLE_DOMAINS,
            "--config",
            config_arg,
        ],
        &dir.path().join("sip-filter.log"),
    );

    // The first notification is READY=1, and when it arrives everything is in place.
    let ready = notify.expect("READY=1 after the start", &daemon);
    assert!(lines(&ready).contains(&"READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=filtering on {SERVER_IFACE} (")),
        "{ready:?}"
    );
    assert!(
        daemon.log().contains("sip-filter attached to"),
        "READY=1 before the attach was logged:\n{}",
        daemon.log()
    );
    assert!(xdp_attached(&lab), "READY=1 with no XDP program attached");
    let egress = egress_attached_in(lab.ns(Host::Server), SERVER_IFACE);
    assert_eq!(egress.tcx + egress.clsact, 1, "READY=1 with {egress:?}");
    assert!(
        pins.link_pin(SERVER_IFACE).exists(),
        "READY=1 before the link was pinned"
    );

    // A good reload, then a refused one: each ends ready again.
    for (step, contents) in [
        (
            "a good file",
            format!("[filter]\ndomains = [\"{DOMAIN}\", \"other.{DOMAIN}\"]\n"),
        ),
        ("a refused file", "[filter]\nno_such_key = 1\n".to_string()),
    ] {
        write_file(dir.path(), "sip-filter.toml", &contents);
        daemon.signal(libc::SIGHUP);
        let reloading = notify.expect("RELOADING=1", &daemon);
        assert!(
            lines(&reloading).contains(&"RELOADING=1"),
            "{step}: {reloading:?}"
        );
        assert!(
            reloading.contains("MONOTONIC_USEC="),
            "{step}: {reloading:?}"
        );
        let ready = notify.expect("READY=1 after the reload", &daemon);
        assert!(lines(&ready).contains(&"READY=1"), "{step}: {ready:?}");
    }
    assert!(
        daemon.log().contains("configuration reload refused"),
        "{}",
        daemon.log()
    );

    daemon.signal(SIGTERM);
    let stopping = notify.expect("STOPPING=1", &daemon);
    assert!(lines(&stopping).contains(&"STOPPING=1"), "{stopping:?}");
    let status = daemon.wait(QUICK).expect("the daemon stops on SIGTERM");
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(!pins.link_pin(SERVER_IFACE).exists());
    tear_down(lab, pins, [daemon]).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn a_start_that_fails_never_says_ready() {
    if !privileged("a_start_that_fails_never_says_ready") {
        return;
    }
    let (lab, dir, pins, notify) = set_up("notify-fail");
    let mut daemon = spawn_notifying(
        &lab,
        &pins,
        &notify,
        &[
            "--iface",
            "no-such-if0",
            ALLOW_EXAMPLE_DOMAINS,
            "--domain",
            DOMAIN,
        ],
        &dir.path().join("sip-filter.log"),
    );
    let status = daemon.wait(QUICK).expect("a refused start exits");
    assert_eq!(status.code(), Some(2), "{status}:\n{}", daemon.log());
    assert!(
        daemon.log().contains("no interface named"),
        "{}",
        daemon.log()
    );
    // Whatever it sent is queued by now: a short look is enough.
    let sent = notify.next(Duration::from_millis(200));
    assert_eq!(sent, None, "a refused start notified systemd");
    tear_down(lab, pins, [daemon]).unwrap_or_else(|e| panic!("{e:#}"));
}
