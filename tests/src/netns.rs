//! Throwaway network namespaces: a client and a server joined by a veth pair.
//!
//! [`Lab::new`] creates both namespaces (named after this process's pid, so concurrent
//! runs do not collide), the veth pair and the addresses; dropping the [`Lab`] kills
//! whatever still runs inside and deletes the namespaces, also when a test panics.
//! Commands enter a namespace with `nsenter --net=/run/netns/NAME`, which switches only
//! the network namespace: unlike `ip netns exec` it keeps the host's mounts, so a
//! daemon and a CLI started separately see the same pins on the host's bpffs.
//!
//! Traffic stays between the two namespaces' addresses; every command run through
//! [`Lab::run`] has a deadline, and every [`Background`] process is killed on drop.

use std::{
    fmt,
    fs::File,
    io::{Read, Write},
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// The client namespace's first address: the scanner's (svmap sends from it).
pub const CLIENT_V4: &str = "198.18.0.1";
/// A second address in the client namespace: the legitimate user agent's. A scanner's
/// source is banned, so a customer behind the same address would be too.
pub const LEGIT_CLIENT_V4: &str = "198.18.0.11";
pub const SERVER_V4: &str = "198.18.0.2";
pub const CLIENT_V6: &str = "2001:db8:5f::1";
pub const SERVER_V6: &str = "2001:db8:5f::2";
/// The veth ends; each lives in its own namespace, so the names never collide.
pub const CLIENT_IFACE: &str = "veth-client";
pub const SERVER_IFACE: &str = "veth-server";

/// A second veth pair, added by [`Lab::add_second_link`]: a daemon attached to both
/// server ends serves two interfaces.
pub const SECOND_CLIENT_IFACE: &str = "veth-client2";
pub const SECOND_SERVER_IFACE: &str = "veth-server2";
/// The client's address on the second pair: what it sends from this address reaches
/// [`SERVER_V4`] through the second pair.
pub const SECOND_CLIENT_V4: &str = "198.18.1.1";
pub const SECOND_SERVER_V4: &str = "198.18.1.2";

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// How long a [`Background`] process gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// One side of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Client,
    Server,
}

/// Two network namespaces joined by a veth pair: client 198.18.0.1/24 and
/// 2001:db8:5f::1/64 on [`CLIENT_IFACE`], server 198.18.0.2/24 and 2001:db8:5f::2/64
/// on [`SERVER_IFACE`].
pub struct Lab {
    client: String,
    server: String,
    /// The namespaces this lab made (and so may delete).
    created: Created,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            client: format!("{}{n}-client", own_prefix()),
            server: format!("{}{n}-server", own_prefix()),
            created: Created::default(),
        };
        // If a step fails, dropping `lab` removes what the steps before made.
        for name in [lab.client.clone(), lab.server.clone()] {
            lab.created.add(name)?;
        }
        let (client, server) = (lab.client.as_str(), lab.server.as_str());
        ip(&[
            "-n",
            client,
            "link",
            "add",
            CLIENT_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IFACE,
            "netns",
            server,
        ])?;
        for (ns, iface, v4, v6) in [
            (client, CLIENT_IFACE, CLIENT_V4, CLIENT_V6),
            (server, SERVER_IFACE, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", iface])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                iface,
                "nodad",
            ])?;
            if ns == client {
                let legit = format!("{LEGIT_CLIENT_V4}/24");
                ip(&["-n", ns, "addr", "add", &legit, "dev", iface])?;
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            without_tx_checksum_offload(ns, iface)?;
            ip(&["-n", ns, "link", "set", iface, "up"])?;
        }
        Ok(lab)
    }

    /// The namespace's name (under /run/netns).
    pub fn name(&self, host: Host) -> &str {
        match host {
            Host::Client => &self.client,
            Host::Server => &self.server,
        }
    }

    /// Both namespaces' names.
    pub fn names(&self) -> [String; 2] {
        [self.client.clone(), self.server.clone()]
    }

    /// `host`'s namespace, to run commands in.
    pub fn ns(&self, host: Host) -> Netns<'_> {
        Netns(self.name(host))
    }

    /// `program` to be run inside `host`'s network namespace (host mounts kept).
    pub fn command(&self, host: Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns(host).command(program)
    }

    /// Runs `program args` inside `host` to completion, killed at `timeout`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: Host,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        timeout: Duration,
    ) -> Finished {
        self.ns(host).run(program, args, timeout)
    }

    /// Starts `program args` inside `host` in the background, stdout and stderr to
    /// `log`. The process is stopped when the returned handle drops.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: Host,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        log: &Path,
    ) -> anyhow::Result<Background> {
        self.ns(host).spawn(label, program, args, log)
    }

    /// Processes running inside either namespace.
    pub fn pids(&self) -> Vec<i32> {
        self.created.pids()
    }

    /// Adds a second veth pair ([`SECOND_CLIENT_IFACE`]–[`SECOND_SERVER_IFACE`],
    /// 198.18.1.0/24) and routes what the client sends from [`SECOND_CLIENT_V4`] to the
    /// server's [`SERVER_V4`] through it (a source rule): the same server address,
    /// reached on another interface. Goes with the namespaces.
    pub fn add_second_link(&self) -> anyhow::Result<()> {
        let (client, server) = (self.client.as_str(), self.server.as_str());
        ip(&[
            "-n",
            client,
            "link",
            "add",
            SECOND_CLIENT_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            SECOND_SERVER_IFACE,
            "netns",
            server,
        ])?;
        for (ns, iface, v4) in [
            (client, SECOND_CLIENT_IFACE, SECOND_CLIENT_V4),
            (server, SECOND_SERVER_IFACE, SECOND_SERVER_V4),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", iface])?;
            without_tx_checksum_offload(ns, iface)?;
            ip(&["-n", ns, "link", "set", iface, "up"])?;
        }
        ip(&[
            "-n",
            client,
            "rule",
            "add",
            "from",
            SECOND_CLIENT_V4,
            "table",
            "100",
            "pref",
            "100",
        ])?;
        ip(&[
            "-n",
            client,
            "route",
            "add",
            &format!("{SERVER_V4}/32"),
            "dev",
            SECOND_CLIENT_IFACE,
            "table",
            "100",
        ])
    }

    /// Runs `ip -n NS args` in `host`'s namespace (a route, say).
    pub fn ip(&self, host: Host, args: &[&str]) -> anyhow::Result<()> {
        self.ns(host).ip(args)
    }

    /// Adds `addresses` (`ADDRESS/PREFIX`) to `host`'s veth end in one `ip -batch`;
    /// IPv6 ones without duplicate address detection, so they are usable at once. They
    /// go with the namespace.
    pub fn add_addresses(&self, host: Host, addresses: &[String]) -> anyhow::Result<()> {
        let iface = host.iface();
        let batch: String = addresses
            .iter()
            .map(|address| {
                let nodad = if address.contains(':') { " nodad" } else { "" };
                format!("addr add {address} dev {iface}{nodad}\n")
            })
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", self.name(host), "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ip (iproute2)")?;
        child
            .stdin
            .take()
            .context("ip's stdin is piped")?
            .write_all(batch.as_bytes())
            .context("writing to `ip -batch -`")?;
        let out = child.wait_with_output().context("waiting for ip")?;
        if !out.status.success() {
            bail!(
                "`ip -n {} -batch -` adding {} address(es) failed: {}",
                self.name(host),
                addresses.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs `f` on a thread of its own inside `host`'s namespace: [`Netns::in_namespace`].
    pub fn in_namespace<T: Send>(
        &self,
        host: Host,
        f: impl FnOnce() -> T + Send,
    ) -> anyhow::Result<T> {
        self.ns(host).in_namespace(f)
    }
}

/// One network namespace, by its name under /run/netns: where [`Lab`] and
/// [`crate::gateway::GatewayLab`] run their commands.
#[derive(Clone, Copy, Debug)]
pub struct Netns<'a>(pub &'a str);

impl Netns<'_> {
    pub fn name(&self) -> &str {
        self.0
    }

    /// `program` to be run inside this namespace with `nsenter --net` (host mounts kept).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.0))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `program args` inside to completion, killed at `timeout`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        timeout: Duration,
    ) -> Finished {
        let mut command = self.command(program);
        command.args(args);
        run_bounded(command, timeout)
    }

    /// Starts `program args` inside in the background, stdout and stderr to `log`. The
    /// process is stopped when the returned handle drops.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        log: &Path,
    ) -> anyhow::Result<Background> {
        let mut command = self.command(program);
        command.args(args);
        Background::spawn(label, command, log)
    }

    /// Runs `ip -n NAME args` (a route, say).
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", self.0];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a thread of its own that has entered this network namespace
    /// (setns(2) moves only the calling thread): the sockets `f` opens live there and
    /// keep living there wherever they are used. The caller's own threads stay where
    /// they are. A panic in `f` is passed on.
    pub fn in_namespace<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.0);
        let namespace = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|scope| {
            let entered = scope.spawn(|| {
                // SAFETY: setns has no memory-safety preconditions; the descriptor is
                // open for the whole call.
                if unsafe { libc_setns(namespace.as_raw_fd(), CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("entering {path}"));
                }
                Ok(f())
            });
            match entered.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Host {
    /// The lab's veth end in this host's namespace.
    pub fn iface(self) -> &'static str {
        match self {
            Host::Client => CLIENT_IFACE,
            Host::Server => SERVER_IFACE,
        }
    }
}

/// The namespaces a lab made, in order: on drop, whatever still runs inside is killed
/// and they are deleted, last made first.
#[derive(Default)]
pub struct Created(Vec<String>);

impl Created {
    /// Makes the namespace `name` (after sweeping those of dead test processes, once).
    pub fn add(&mut self, name: String) -> anyhow::Result<()> {
        if self.0.is_empty() {
            sweep_stale_namespaces();
        }
        ip(&["netns", "add", &name])?;
        self.0.push(name);
        Ok(())
    }

    /// Processes running inside any of them.
    pub fn pids(&self) -> Vec<i32> {
        self.0.iter().flat_map(|ns| netns_pids(ns)).collect()
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            // A process left inside (a leaked handle) would keep the namespace alive.
            for pid in netns_pids(ns) {
                eprintln!("netns {ns}: killing leftover process {pid}");
                send_signal(pid, SIGKILL);
            }
            let deleted = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .output();
            match deleted {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "`ip netns del {ns}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("`ip netns del {ns}` did not run: {e}"),
            }
        }
    }
}

/// `sip-filter-test-<pid>-`: what this process's namespaces, pin roots and temporary
/// directories are named with.
pub fn own_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

const PREFIX: &str = "sip-filter-test-";

/// Whether `name` was made by a test process that is gone (killed before its cleanup
/// ran: Ctrl-C, SIGKILL).
pub fn left_by_dead_test(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Deletes the namespaces of test processes that died before cleaning up.
fn sweep_stale_namespaces() {
    for ns in listed_namespaces() {
        if left_by_dead_test(&ns) {
            eprintln!("deleting namespace {ns}, left by a test process that is gone");
            for pid in netns_pids(&ns) {
                send_signal(pid, SIGKILL);
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// The namespaces `ip netns list` shows.
pub fn listed_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .expect("`ip netns list` runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Fails naming what is left if any of `namespaces` is still listed (after a lab was
/// dropped).
pub fn ensure_namespaces_gone(namespaces: &[String]) -> anyhow::Result<()> {
    let listed = listed_namespaces();
    anyhow::ensure!(
        namespaces.iter().all(|ns| !listed.contains(ns)),
        "namespaces left: {listed:?}"
    );
    Ok(())
}

/// The processes running inside the network namespace named `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stdin(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Turns transmit checksum offload off on `iface` in `ns`, so that what the lab's
/// programs send leaves with its UDP checksum complete, as it arrives from a real
/// network.
///
/// A veth advertises checksum offload: a datagram sent from a local socket then crosses
/// to the peer as CHECKSUM_PARTIAL, its checksum field holding only the pseudo-header's
/// sum, to be completed by "hardware" that never runs; the receiving stack trusts the
/// skb's flag, but an XDP program reads the bytes. The filter bans (or counts toward a
/// ban) only packets whose checksum it has verified (issue 19, class 4), so with
/// offload on, no lab scanner would ever be banned. Real NICs hand XDP received frames
/// with complete checksums.
pub fn without_tx_checksum_offload(ns: &str, iface: &str) -> anyhow::Result<()> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["--", "ethtool", "-K", iface, "tx", "off"])
        .stdin(Stdio::null())
        .output()
        .context("running ethtool (Debian package ethtool: `cargo xtask setup --test-tools`)")?;
    if !out.status.success() {
        bail!(
            "`ethtool -K {iface} tx off` in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command that ran to its end, or was killed at its deadline.
pub struct Finished {
    pub command: String,
    /// None: killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => describe(s),
            None => "killed at its deadline".to_string(),
        };
        writeln!(
            f,
            "$ {}\n  ({status}, after {:.2} s)",
            self.command,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("{status}"),
    }
}

fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Set by [`interrupt`] (a Ctrl-C handler): commands still running are cut short.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Cuts short every [`run_bounded`] command, now and later, as if its deadline had
/// passed: the demo's Ctrl-C handler calls it so that the demo gets to its cleanup
/// at once. Async-signal-safe (an atomic store).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Runs `command` to completion, capturing its output; at `timeout` (or at
/// [`interrupt`]) its process group is killed (and so is it if the test process dies
/// first).
pub fn run_bounded(mut command: Command, timeout: Duration) -> Finished {
    let shown = show(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_parent(&mut command, SIGKILL);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break Some(status);
        }
        if start.elapsed() >= timeout || interrupted() {
            send_signal(-pid_of(&child), SIGKILL);
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    Finished {
        command: shown,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A process running in the background, in its own process group, its output in a
/// log file. Dropping it stops the group: SIGTERM, then SIGKILL after a grace period.
/// If the test process dies without dropping it (Ctrl-C), the kernel sends it SIGTERM
/// (`PR_SET_PDEATHSIG`). When the thread is panicking, its log is printed.
pub struct Background {
    label: String,
    command: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Background {
    pub fn spawn(label: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let shown = show(&command);
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        die_with_parent(&mut command, SIGTERM);
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting `{shown}`"))?;
        Ok(Background {
            label: label.to_string(),
            command: shown,
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        pid_of(&self.child)
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waiting for a child");
        }
        self.status
    }

    /// Sends `signal` to the process itself.
    pub fn signal(&mut self, signal: i32) {
        if self.exited().is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for a log line containing `needle` and returns it; an
    /// error (with the log) if the process exits first or the time runs out.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({}) before logging {needle:?}; `{}` logged:\n{log}",
                    self.label,
                    describe(status),
                    self.command
                ));
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "{} did not log {needle:?} within {timeout:?}; `{}` logged:\n{log}",
                    self.label, self.command
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn stop(&mut self) {
        // The whole group: Kamailio's children too.
        let group = -self.pid();
        if self.exited().is_none() {
            send_signal(group, SIGTERM);
            if self.wait(STOP_GRACE).is_none() {
                eprintln!("{} ignored SIGTERM for {STOP_GRACE:?}: SIGKILL", self.label);
            }
        }
        // Leftover group members, or a leader that ignored SIGTERM.
        send_signal(group, SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "===== log of {} (`{}`) =====\n{}\n===== end of {} log =====",
                self.label,
                self.command,
                self.log().trim_end(),
                self.label
            );
        }
    }
}

/// Has the kernel send `signal` to the process when the thread that started it ends,
/// so that a test process killed before its cleanup (Ctrl-C) leaves nothing running.
fn die_with_parent(command: &mut Command, signal: i32) {
    let signal = std::ffi::c_ulong::try_from(signal).expect("a signal number");
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            // Kept across nsenter's exec of the program (neither is set-user-ID).
            if libc_prctl(PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("a pid fits an i32")
}

/// kill(2); a negative pid is a process group. False when nothing was signalled.
pub fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc_kill(pid, signal) == 0 }
}

/// Runs `f` on a thread of its own in a new network namespace of its own (unshare(2)
/// moves only the calling thread) with its loopback interface up and nothing else:
/// for kernel-side tests that need an interface but no tools (the VM has none). The
/// namespace goes when `f` returns. A panic in `f` is passed on.
pub fn in_private_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    thread::scope(|scope| {
        let entered = scope.spawn(|| -> anyhow::Result<T> {
            // SAFETY: unshare has no memory-safety preconditions.
            if unsafe { libc::unshare(CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("unshare(CLONE_NEWNET): a network namespace of our own");
            }
            loopback_up().context("bringing lo up in the new namespace")?;
            Ok(f())
        });
        match entered.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sets the calling thread's namespace's `lo` up (SIOCSIFFLAGS), as `ip link set lo up`.
fn loopback_up() -> std::io::Result<()> {
    // Binding the wildcard address needs no interface: a socket for the ioctls.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    let fd = socket.as_raw_fd();
    // SAFETY: the ioctls read and write the ifreq we own, on a socket we own.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

const PR_SET_PDEATHSIG: i32 = 1;
/// setns(2)'s namespace type: a network namespace.
const CLONE_NEWNET: i32 = 0x4000_0000;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
    #[link_name = "prctl"]
    fn libc_prctl(option: i32, ...) -> i32;
    #[link_name = "setns"]
    fn libc_setns(fd: i32, nstype: i32) -> i32;
}
