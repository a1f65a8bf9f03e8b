//! Side by side (issue 13): the brute force of the authentication lab's test (a), one
//! account guessed with an ordinary User-Agent, run against sip-filter (its built-in
//! rules) and against fail2ban (Debian's package, its `asterisk` jail as Debian ships
//! it: 10 failures in 10 minutes ban for 10 minutes, iptables), each in a lab of its
//! own with Kamailio on the filtered host.
//!
//! fail2ban follows Kamailio's log (`auth failure from ADDRESS for USER at EPOCH`, see
//! [`crate::auth_lab`]) with a filter written for that line, in the server's
//! namespace, with the backend Debian's package picks without its recommended
//! packages (polling, as `cargo xtask setup` installs it).
//!
//! For each: the guesses that reached Kamailio (failures it logged from the guesser)
//! and the time from the threshold (the failure at Kamailio that the tool acts on) to
//! the tool acting, read from the tools' own logs (sip-filter's event lines, fail2ban's
//! `Ban` line): both are written after the act, so the times are upper bounds.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sip_filter::settings::AuthRules;

use crate::{
    auth_lab::{
        accounts, brute_force_run, run_guesses, wrong_passwords, AuthLab, Client, Deployment,
        Guesses, Pace, Registrar,
    },
    lab::{require_tools, sip_filter_binary, KAMAILIO_TOOLS},
    netns::Background,
};

/// fail2ban's `asterisk` jail in Debian's jail.conf: 10 failures (its own `maxretry`),
/// within `findtime` (10 minutes, the default), ban for `bantime` (10 minutes).
pub const FAIL2BAN_MAXRETRY: usize = 10;

/// The account guessed: one of the registrar's.
const GUESSED: &str = "1000";

/// How long fail2ban may take to start its jail, and to ban once the guessing ended.
const FAIL2BAN_START: Duration = Duration::from_secs(60);
const FAIL2BAN_LATE_BAN: Duration = Duration::from_secs(30);

/// The attack's size and pace.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Passwords in the injection file: issue 13 (a) says 500.
    pub passwords: usize,
    pub pace: Pace,
}

impl Options {
    /// 500 passwords at 10 guesses a second (20 REGISTERs: under the built-in limits),
    /// or 100 for a quick pass: after the ban, nothing more reaches Kamailio either way.
    pub fn new(quick: bool) -> Self {
        Options {
            passwords: if quick { 100 } else { 500 },
            pace: Pace::per_second(10),
        }
    }
}

/// What one defence let through.
pub struct Outcome {
    pub defence: &'static str,
    /// The guesser's view and Kamailio's.
    pub guesses: Guesses,
    /// Failures at Kamailio that the defence acts on.
    pub threshold: usize,
    /// From the `threshold`th failure at Kamailio to the defence stopping the guesses
    /// (sip-filter: the account's lockout; fail2ban: its ban), in seconds.
    pub threshold_to_stop: Option<f64>,
    /// From the same failure to the source's ban, in seconds.
    pub threshold_to_ban: Option<f64>,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "defence": self.defence,
            "guesses_started": self.guesses.attempted,
            "guesses_reached_kamailio": self.guesses.failures_seen,
            "threshold_failures": self.threshold,
            "threshold_to_stop_seconds": self.threshold_to_stop,
            "threshold_to_ban_seconds": self.threshold_to_ban,
            "took_seconds": self.guesses.took.as_secs_f64(),
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.3} s"));
        write!(
            f,
            "{}: {} guesses reached Kamailio (threshold {}); threshold to stop {}, to ban {}; {}",
            self.defence,
            self.guesses.failures_seen,
            self.threshold,
            seconds(self.threshold_to_stop),
            seconds(self.threshold_to_ban),
            self.guesses
        )
    }
}

/// Both defences, one after the other: the `password_guessing` part of BENCHMARKS.json.
pub fn run(options: &Options) -> anyhow::Result<Value> {
    require_tools(&[KAMAILIO_TOOLS, &["sipp", "fail2ban-server", "iptables"]].concat())?;
    let binary = sip_filter_binary(true)?;
    let filter = against_sip_filter(binary, options, "guessbench-sip-filter")?;
    println!("{filter}");
    let fail2ban = against_fail2ban(options, "guessbench-fail2ban")?;
    println!("{fail2ban}");
    Ok(json!({
        "method": "The brute force of issue 13 (a) (sipp, User-Agent Linphone/5.2.0, one \
                   account, one guess = REGISTER, 401, REGISTER with credentials, 401) \
                   against Kamailio on the filtered host, with sip-filter's built-in rules, \
                   then with fail2ban's asterisk jail on Kamailio's auth-failure log line",
        "passwords": options.passwords,
        "guesses_per_second": f64::from(options.pace.calls) / options.pace.period.as_secs_f64(),
        "results": [filter.json(), fail2ban.json()],
    }))
}

/// The lab for one defence: Kamailio with the lab's accounts, on the filtered host.
fn start_lab(tag: &str) -> anyhow::Result<AuthLab> {
    AuthLab::start(
        Deployment::FilteredHost,
        &Registrar::new(accounts(1000, 10)),
        tag,
    )
}

/// The brute force from the lab's attacker, its guesses failing 1 s after their last
/// answer (a dropped guess must not hold up the pace).
fn guess(lab: &AuthLab, options: &Options) -> Guesses {
    let mut run = brute_force_run(GUESSED, &wrong_passwords(options.passwords), options.pace);
    run.recv_timeout = Duration::from_secs(1);
    run_guesses(lab, Client::Attacker, &run)
}

/// When Kamailio logged the `n`th (from 1) failure from `source`, seconds since the
/// epoch.
fn nth_failure_at(lab: &AuthLab, source: &str, n: usize) -> Option<f64> {
    let source: std::net::IpAddr = source.parse().ok()?;
    lab.auth_events()
        .into_iter()
        .filter(|e| e.kind == "failure" && e.source == source)
        .nth(n.checked_sub(1)?)
        .map(|e| e.at)
}

/// The brute force against sip-filter with its built-in rules (the `[answers]`
/// defaults, no rate limits).
pub fn against_sip_filter(binary: &Path, options: &Options, tag: &str) -> anyhow::Result<Outcome> {
    let lab = start_lab(tag)?;
    let (mut daemon, _) = lab.start_filter(binary, &lab.filter_config(""))?;
    let guesses = guess(&lab, options);
    let (_, source) = lab.client(Client::Attacker);
    let log = daemon.log();
    lab.stop_filter(&mut daemon)?;
    let threshold = AuthRules::default().lockout_failures as usize;
    let at_threshold = nth_failure_at(&lab, &source, threshold);
    let lockout = logged_at(&log, "locked account", &source);
    let ban = logged_at(&log, &format!("banned {source} "), "");
    Ok(Outcome {
        defence: "sip-filter",
        threshold,
        threshold_to_stop: since(at_threshold, lockout),
        threshold_to_ban: since(at_threshold, ban),
        guesses,
    })
}

/// The brute force against fail2ban, started in the server's namespace on Kamailio's
/// log before the first guess.
pub fn against_fail2ban(options: &Options, tag: &str) -> anyhow::Result<Outcome> {
    let lab = start_lab(tag)?;
    let (ns, _) = lab.filter_place();
    let mut fail2ban = Fail2ban::start(
        ns,
        &lab.dir.path().join("fail2ban"),
        &lab.kamailio_log_path(),
    )?;
    let guesses = guess(&lab, options);
    let (_, source) = lab.client(Client::Attacker);
    let ban = fail2ban.wait_for_ban(&source, FAIL2BAN_LATE_BAN);
    let at_threshold = nth_failure_at(&lab, &source, FAIL2BAN_MAXRETRY);
    let stopped = since(at_threshold, ban);
    drop(fail2ban);
    Ok(Outcome {
        defence: "fail2ban",
        threshold: FAIL2BAN_MAXRETRY,
        threshold_to_stop: stopped,
        threshold_to_ban: stopped,
        guesses,
    })
}

/// Seconds from `from` to `to`; never below 0: sip-filter's log has millisecond times,
/// Kamailio's microseconds, so an act within the same millisecond may read as before.
fn since(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some((to? - from?).max(0.0))
}

/// When sip-filter's log (logfmt, `ts=2026-12-06T04:30:01.234Z ...`) first logged a
/// line containing both `needle` and `also`, seconds since the epoch.
fn logged_at(log: &str, needle: &str, also: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|line| line.contains(needle) && line.contains(also))?;
    let (_, rest) = line.split_once("ts=")?;
    utc_epoch_seconds(rest.split_whitespace().next()?)
}

/// `2026-12-06T04:30:01.234Z` (sip-filter) or `2026-12-06 04:30:01,234` (fail2ban,
/// run with TZ=UTC) as seconds since the epoch.
pub fn utc_epoch_seconds(text: &str) -> Option<f64> {
    let civil: jiff::civil::DateTime = text.trim_end_matches('Z').parse().ok()?;
    let zoned = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_microsecond() as f64 / 1e6)
}

/// fail2ban-server in the foreground in a namespace, with a configuration directory of
/// its own: Debian's /etc/fail2ban, its `asterisk` jail enabled on Kamailio's log with
/// the [`FAILREGEX`] filter, nothing else enabled, its database in memory.
pub struct Fail2ban {
    server: Background,
    log: std::path::PathBuf,
}

/// The filter for the registrar's auth-failure line; `{NONE}`: the line's time is when
/// fail2ban reads it (the line's own epoch is no date format fail2ban knows).
pub const FAILREGEX: &str = r"auth failure from <HOST> for \S+ at \d+\.\d+$";

impl Fail2ban {
    /// Copies /etc/fail2ban to `dir`, writes the jail and the filter, starts the server
    /// in `ns` and waits until its jail has started.
    pub fn start(ns: crate::netns::Netns, dir: &Path, kamailio_log: &Path) -> anyhow::Result<Self> {
        let conf = dir.join("conf");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let copied = std::process::Command::new("cp")
            .args(["-a", "/etc/fail2ban"])
            .arg(&conf)
            .status()
            .context("copying /etc/fail2ban (installed by `cargo xtask setup --test-tools`)")?;
        ensure!(copied.success(), "cp -a /etc/fail2ban failed");
        // Debian enables the sshd jail here; this instance runs the asterisk jail only.
        let debian_jails = conf.join("jail.d/defaults-debian.conf");
        if debian_jails.exists() {
            std::fs::remove_file(&debian_jails)?;
        }
        let log = dir.join("fail2ban.log");
        let write = |name: &str, text: String| {
            std::fs::write(conf.join(name), text).with_context(|| format!("writing {name}"))
        };
        write(
            "fail2ban.local",
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\n\
                 dbfile = :memory:\n",
                log.display(),
                dir.join("fail2ban.sock").display(),
                dir.join("fail2ban.pid").display()
            ),
        )?;
        // Debian's asterisk jail (ports 5060 and 5061, TCP and UDP, iptables-multiport,
        // maxretry 10, findtime and bantime 10 minutes) reading the registrar's log.
        write(
            "jail.local",
            format!(
                "[asterisk]\nenabled = true\nfilter = kamailio-auth\nlogpath = {}\n",
                kamailio_log.display()
            ),
        )?;
        write(
            "filter.d/kamailio-auth.conf",
            format!("[Definition]\nfailregex = {FAILREGEX}\ndatepattern = {{NONE}}\n"),
        )?;
        let mut command = ns.command("fail2ban-server");
        command
            .args(["-f", "-x", "-c"])
            .arg(&conf)
            .args(["-s"])
            .arg(dir.join("fail2ban.sock"))
            .args(["-p"])
            .arg(dir.join("fail2ban.pid"))
            // Its log's times are local: UTC, to read them.
            .env("TZ", "UTC");
        let mut server = Background::spawn("fail2ban-server", command, &dir.join("server.log"))?;
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Jail 'asterisk' started") {
                break;
            }
            if let Some(status) = server.exited() {
                bail!(
                    "fail2ban-server exited ({status}):\n{}\n{text}",
                    server.log()
                );
            }
            ensure!(
                started.elapsed() < FAIL2BAN_START,
                "fail2ban's jail did not start within {FAIL2BAN_START:?}:\n{}\n{text}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Fail2ban { server, log })
    }

    /// When fail2ban banned `source` (its `Ban` line), waiting up to `wait` for it.
    pub fn wait_for_ban(&mut self, source: &str, wait: Duration) -> Option<f64> {
        let needle = format!("] Ban {source}");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains(&needle)) {
                // `2026-12-06 04:30:01,234 fail2ban.actions [...]`: its first 23 bytes.
                return utc_epoch_seconds(line.get(..23)?);
            }
            if started.elapsed() > wait || self.server.exited().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The report's section.
pub fn markdown(doc: &Value) -> String {
    let mut md = format!(
        "## Password guessing, side by side\n\n{} ({} passwords at {} guesses a second). \
         sip-filter locks the account for the guesser at its 5th failure (`answers.lockout_failures`) \
         and bans the source at its 10th attempt (failures and attempts the lockout dropped); \
         fail2ban bans at the 10th failure it reads in the log, which it polls once a second \
         (the backend Debian's package uses without its recommended python3-pyinotify). \
         \"Reached\" counts the failures \
         Kamailio logged from the guesser; times run from the failure at the threshold (Kamailio's \
         clock) to the line each tool logged (sip-filter's lockout and ban events, fail2ban's \
         `Ban`): upper bounds.\n\n\
         | defence | threshold | guesses that reached Kamailio | threshold to stop | threshold to ban |\n\
         |---|--:|--:|--:|--:|\n",
        doc["method"].as_str().unwrap_or("?"),
        doc["passwords"],
        doc["guesses_per_second"]
    );
    let seconds = |v: &Value| {
        v.as_f64()
            .map_or("never".to_string(), |s| format!("{s:.3} s"))
    };
    for r in doc["results"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r["defence"].as_str().unwrap_or("?"),
            r["threshold_failures"],
            r["guesses_reached_kamailio"],
            seconds(&r["threshold_to_stop_seconds"]),
            seconds(&r["threshold_to_ban_seconds"]),
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::utc_epoch_seconds;

    #[test]
    fn reads_both_tools_times() {
        let filter = utc_epoch_seconds("2026-12-06T04:30:01.234Z").unwrap();
        let fail2ban = utc_epoch_seconds("2026-12-06 04:30:01,734").unwrap();
        assert!(
            (fail2ban - filter - 0.5).abs() < 1e-6,
            "{filter} {fail2ban}"
        );
        assert_eq!(utc_epoch_seconds("1970-01-01T00:00:01Z"), Some(1.0));
        assert_eq!(utc_epoch_seconds("not a time"), None);
    }
}
