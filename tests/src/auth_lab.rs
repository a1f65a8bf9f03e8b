//! The authentication lab (issue 13): Kamailio as a registrar with digest
//! authentication, phones that register and call through it, and the attackers who
//! guess its passwords and users, in either deployment the filter has:
//!
//! - [`Deployment::FilteredHost`]: Kamailio on the filtered host itself (the server
//!   namespace of [`Lab`]); the filter on [`SERVER_IFACE`], every client in the client
//!   namespace, each role from an address of its own.
//! - [`Deployment::BehindGateway`]: Kamailio behind the gateway of [`GatewayLab`]; the
//!   filter on the gateway's [`OUTSIDE_IFACE`], the attacker and the phones on hosts
//!   of their own outside.
//!
//! The registrar ([`Registrar`]) keeps its accounts in an `htable` filled at start
//! from the generated configuration, with no database server. Its answers are those of
//! the servers the filter must learn from: a REGISTER is challenged (401), an INVITE
//! too (407) and then routed to the callee's registered contact (location lookup,
//! record-routed); a wrong password is re-challenged (Asterisk, Kamailio) or refused
//! with 403 (FreeSWITCH, [`WrongPassword`]); an unknown user is answered like a wrong
//! password (servers that hide which users exist) or with 404 or 403
//! ([`UnknownUser`]); a nonce older than `nonce_expire` is re-challenged with
//! `stale=true`.
//!
//! Kamailio logs one line per request (`sip-request METHOD from ADDRESS`, read by
//! [`crate::attack::requests_seen`]) and one per authentication outcome, in a fixed
//! format a log-reading tool (fail2ban) can match:
//! `auth KIND from ADDRESS for USER at EPOCH.MICROS`, KIND one of `challenge`,
//! `failure`, `stale`, `success`, `unknown` ([`auth_events`]).
//!
//! The clients are sipp scenarios driven by injection files (`-inf`), one line per
//! call: [`register`] (phones, one account each), [`call`], [`brute_force`] (one
//! account, many passwords) and [`enumerate`] (many users). Every run is bounded in
//! calls (`-m`), in time (`-timeout`) and as a process (killed at a deadline).

use std::{
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use serde_json::Value;

use crate::{
    attack::{request_headers, scenario, send},
    gateway::{self, GatewayLab, Node, OUTSIDE_IFACE},
    lab::{
        filter_stats_in, kamailio_globals, kamailio_globals_with_tcp, sipp_counter, sipp_in,
        spawn_filter_in, start_kamailio_in, stats_json, stop_filter_in, PinRoot, TempDir, DOMAIN,
        QUICK, SIP_PORT,
    },
    netns::{self, Background, Finished, Host, Lab, Netns, SERVER_IFACE},
};

/// The digest realm: the served domain.
pub const REALM: &str = DOMAIN;
/// An ordinary phone's User-Agent: what the phones and the attackers send (no
/// scanner's name for the filter to recognise).
pub const ORDINARY_USER_AGENT: &str = "Linphone/5.2.0";
/// The port a callee's sipp answers calls on (the Contact it registers).
pub const CALLEE_PORT: u16 = 5070;
/// How long a phone's registration lasts (the Expires it asks for).
pub const REGISTRATION_EXPIRES: u32 = 300;

/// One account of the registrar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Panics on a user or password that the lab's files cannot carry: a sipp
    /// injection line (`;` separates fields; `[`, `]` and spaces end a keyword's
    /// values) or a Kamailio string (`"`).
    fn assert_writable(&self) {
        for value in [&self.user, &self.password] {
            assert!(
                !value.is_empty() && !value.contains([';', '[', ']', ' ', '"', '\\']),
                "{value:?} cannot be written in the lab's sipp and Kamailio files"
            );
        }
    }
}

/// `count` accounts, users `first`, `first + 1`, ... each with a password of its own
/// (`Pw-USER-lab`), which no guess list of [`wrong_passwords`] contains.
pub fn accounts(first: u32, count: u32) -> Vec<Credentials> {
    (first..first + count)
        .map(|user| Credentials::new(user.to_string(), format!("Pw-{user}-lab")))
        .collect()
}

/// `count` distinct passwords, common ones first, then numbered: a guesser's list,
/// none of them an account's password from [`accounts`].
pub fn wrong_passwords(count: usize) -> Vec<String> {
    const COMMON: &[&str] = &[
        "123456", "password", "1234", "12345", "000000", "111111", "admin", "qwerty", "abc123",
        "sip", "voip", "secret", "pass", "changeme", "welcome", "letmein", "monkey", "dragon",
    ];
    COMMON
        .iter()
        .map(|p| p.to_string())
        .chain((0..).map(|n| format!("guess{n:05}")))
        .take(count)
        .collect()
}

/// How the registrar answers a wrong password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrongPassword {
    /// 401 with a fresh challenge (Asterisk, Kamailio).
    Rechallenge,
    /// 403 Forbidden (FreeSWITCH).
    Forbidden,
}

/// How the registrar answers a request naming a user it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownUser {
    /// Like a known user with a wrong password: challenged, then refused as
    /// [`WrongPassword`] says (servers that hide which users exist).
    LikeWrongPassword,
    /// 404 Not Found at once, credentials or not (what svwar tells users apart by).
    NotFound,
    /// 403 Forbidden at once.
    Forbidden,
}

/// The registrar's accounts and answers.
#[derive(Clone, Debug)]
pub struct Registrar {
    pub accounts: Vec<Credentials>,
    pub wrong_password: WrongPassword,
    pub unknown_user: UnknownUser,
    /// A nonce's lifetime (Kamailio's default: 300 s); a credential with an older one
    /// is re-challenged with `stale=true`. Whole seconds.
    pub nonce_expire: Option<Duration>,
    /// Whether it listens on TCP 5060 too, and the lab's clients (phones, attackers)
    /// speak TCP to it (sipp `-t t1`; issue 14). Else UDP only.
    pub over_tcp: bool,
}

impl Registrar {
    /// `accounts`, wrong passwords re-challenged, unknown users answered alike, the
    /// default nonce lifetime.
    pub fn new(accounts: Vec<Credentials>) -> Self {
        Registrar {
            accounts,
            wrong_password: WrongPassword::Rechallenge,
            unknown_user: UnknownUser::LikeWrongPassword,
            nonce_expire: None,
            over_tcp: false,
        }
    }

    pub fn wrong_password(mut self, answer: WrongPassword) -> Self {
        self.wrong_password = answer;
        self
    }

    pub fn unknown_user(mut self, answer: UnknownUser) -> Self {
        self.unknown_user = answer;
        self
    }

    pub fn nonce_expire(mut self, lifetime: Duration) -> Self {
        self.nonce_expire = Some(lifetime);
        self
    }

    pub fn over_tcp(mut self) -> Self {
        self.over_tcp = true;
        self
    }

    /// The Kamailio configuration, listening on `addresses`, UDP 5060 (and TCP 5060
    /// [`Registrar::over_tcp`]).
    pub fn config(&self, addresses: &[&str]) -> String {
        // Four workers: an office re-registering at once is answered without a queue.
        let globals = if self.over_tcp {
            kamailio_globals_with_tcp(2, 4, addresses)
        } else {
            kamailio_globals(2, 4, addresses)
        };
        let nonce_expire = self
            .nonce_expire
            .map(|lifetime| {
                format!(
                    "modparam(\"auth\", \"nonce_expire\", {})\n",
                    lifetime.as_secs().max(1)
                )
            })
            .unwrap_or_default();
        let accounts: String = self
            .accounts
            .iter()
            .map(|a| {
                a.assert_writable();
                format!("    $sht(accounts=>{}) = \"{}\";\n", a.user, a.password)
            })
            .collect();
        let unknown = match self.unknown_user {
            // A password no digest can match: unknown users fail like wrong passwords.
            UnknownUser::LikeWrongPassword => {
                format!("        $var(password) = \"{}\";\n", unguessable())
            }
            UnknownUser::NotFound => refuse("unknown", "404", "Not Found"),
            UnknownUser::Forbidden => refuse("unknown", "403", "Forbidden"),
        };
        let wrong_password = match self.wrong_password {
            WrongPassword::Rechallenge => challenge("1"),
            WrongPassword::Forbidden => "        sl_send_reply(\"403\", \"Forbidden\");\n".into(),
        };
        let challenge_fresh = challenge("1");
        // 16: the challenge says `stale=true` (Kamailio's auth module).
        let challenge_stale = challenge("17");
        let log_challenge = auth_log("challenge");
        let log_stale = auth_log("stale");
        let log_failure = auth_log("failure");
        let log_success = auth_log("success");
        format!(
            r#"{globals}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "htable.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("htable", "htable", "accounts=>size=10;")
{nonce_expire}
event_route[htable:mod-init] {{
{accounts}}}

request_route {{
    xlog("L_NOTICE", "sip-request $rm from $si\n");
    # In-dialog requests (ACK, BYE of an answered call) follow the recorded route.
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not Found");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("ACK")) {{ exit; }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (!is_method("REGISTER|INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    # The account: the digest user name, else the To (REGISTER) or From (INVITE) user.
    if (is_method("REGISTER")) {{ $var(user) = $tU; }} else {{ $var(user) = $fU; }}
    if ($au != $null) {{ $var(user) = $au; }}
    if ($sht(accounts=>$var(user)) == $null) {{
{unknown}    }} else {{
        $var(password) = $sht(accounts=>$var(user));
    }}
    if (is_method("REGISTER")) {{
        pv_www_authenticate("{REALM}", "$var(password)", "0");
    }} else {{
        pv_proxy_authenticate("{REALM}", "$var(password)", "0");
    }}
    # 1: authenticated; -5: no credentials; -4: the nonce expired; else a failure
    # (-2: wrong password, -1, -6, -8: malformed, reused or mismatched credentials).
    $var(rc) = $rc;
    if ($var(rc) == -5) {{
{log_challenge}{challenge_fresh}        exit;
    }}
    if ($var(rc) == -4) {{
{log_stale}{challenge_stale}        exit;
    }}
    if ($var(rc) != 1) {{
{log_failure}{wrong_password}        exit;
    }}
{log_success}    consume_credentials();
    if (is_method("REGISTER")) {{
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply("480", "Temporarily Unavailable");
        exit;
    }}
    record_route();
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"#
        )
    }
}

/// The script line logging an authentication outcome (see the module's documentation).
fn auth_log(kind: &str) -> String {
    format!("        xlog(\"L_NOTICE\", \"auth {kind} from $si for $var(user) at $TV(Sn)\\n\");\n")
}

/// The script lines refusing the request with `code`, logged as `kind`.
fn refuse(kind: &str, code: &str, reason: &str) -> String {
    format!(
        "{}        sl_send_reply(\"{code}\", \"{reason}\");\n        exit;\n",
        auth_log(kind)
    )
}

/// The script lines challenging the request (401 for a REGISTER, 407 otherwise) with
/// Kamailio's challenge `flags` (1: qop=auth; 16: stale=true).
fn challenge(flags: &str) -> String {
    format!(
        "        if (is_method(\"REGISTER\")) {{ www_challenge(\"{REALM}\", \"{flags}\"); }}\n\
         \x20       else {{ proxy_challenge(\"{REALM}\", \"{flags}\"); }}\n"
    )
}

/// A password for unknown users that no guess matches: fresh per process and time.
fn unguessable() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("no-such-account-{}-{nanos}", std::process::id())
}

/// One authentication outcome Kamailio logged.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthEvent {
    /// `challenge`, `failure`, `stale`, `success` or `unknown`.
    pub kind: String,
    pub source: IpAddr,
    pub user: String,
    /// Seconds since the epoch, as Kamailio's clock read them.
    pub at: f64,
}

/// The authentication outcomes in a Kamailio log, in order.
pub fn auth_events(kamailio_log: &str) -> Vec<AuthEvent> {
    kamailio_log
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("auth ")?;
            let (kind, rest) = rest.split_once(" from ")?;
            let (source, rest) = rest.split_once(" for ")?;
            let (user, at) = rest.split_once(" at ")?;
            Some(AuthEvent {
                kind: kind.to_string(),
                source: source.parse().ok()?,
                user: user.to_string(),
                at: at.trim().parse().ok()?,
            })
        })
        .collect()
}

/// How many of `events` are of `kind` from `source`.
pub fn count_events(events: &[AuthEvent], kind: &str, source: &str) -> usize {
    let source: Option<IpAddr> = source.parse().ok();
    events
        .iter()
        .filter(|e| e.kind == kind && Some(e.source) == source)
        .count()
}

/// Which lab the registrar runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// Kamailio and the filter on the same host.
    FilteredHost,
    /// Kamailio behind a gateway running the filter.
    BehindGateway,
}

/// A client of the lab: each has its own address (and, behind the gateway, its own
/// host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The guesser.
    Attacker,
    /// The phones: an office's, all from one address.
    Office,
    /// The phone that receives calls, registered from an address of its own.
    Callee,
    /// The attacker's host from its `n`th extra address, once
    /// [`AuthLab::add_sources`] added it: a guesser among many.
    Source(u8),
}

enum Topology {
    Host(Lab),
    Gateway(GatewayLab),
}

/// Addresses added for [`Client::Callee`] (neither lab has one to spare).
const HOST_CALLEE_V4: &str = "198.18.0.12";
const GATEWAY_CALLEE_V4: &str = "198.18.1.51";
/// Where [`AuthLab::add_sources`] numbers its extra addresses from.
const HOST_EXTRA_SOURCES: &str = "198.18.0.";
const GATEWAY_EXTRA_SOURCES: &str = "198.18.1.";
const EXTRA_SOURCES_FIRST: u8 = 100;

/// The lab: namespaces, the registrar running, a directory for configurations and
/// logs, a pin root for the filter. Fields drop in order: Kamailio, the pins, the
/// files, the namespaces.
pub struct AuthLab {
    pub kamailio: Background,
    pub pins: PinRoot,
    pub dir: TempDir,
    topology: Topology,
    pub deployment: Deployment,
    /// Whether its clients speak TCP to the registrar ([`Registrar::over_tcp`]).
    pub over_tcp: bool,
    /// sipp runs so far: each has a directory of its own.
    runs: AtomicU32,
}

impl AuthLab {
    /// Builds `deployment`'s namespaces, gives the callee its address and starts
    /// `registrar`; `tag` names the directory and the pin root.
    pub fn start(deployment: Deployment, registrar: &Registrar, tag: &str) -> anyhow::Result<Self> {
        let topology = match deployment {
            Deployment::FilteredHost => {
                let lab = Lab::new()?;
                lab.add_addresses(Host::Client, &[format!("{HOST_CALLEE_V4}/24")])?;
                Topology::Host(lab)
            }
            Deployment::BehindGateway => {
                let lab = GatewayLab::new()?;
                lab.ns(Node::Legit).ip(&[
                    "addr",
                    "add",
                    &format!("{GATEWAY_CALLEE_V4}/24"),
                    "dev",
                    gateway::HOST_IFACE,
                ])?;
                Topology::Gateway(lab)
            }
        };
        let dir = TempDir::new(tag);
        let pins = PinRoot::new(tag);
        let [server_v4, server_v6] = match deployment {
            Deployment::FilteredHost => [netns::SERVER_V4, netns::SERVER_V6],
            Deployment::BehindGateway => [gateway::SERVER_V4, gateway::SERVER_V6],
        };
        let server = match &topology {
            Topology::Host(lab) => lab.ns(Host::Server),
            Topology::Gateway(lab) => lab.ns(Node::Server),
        };
        let kamailio_dir = dir.path().join("kamailio");
        std::fs::create_dir_all(&kamailio_dir)
            .with_context(|| format!("creating {}", kamailio_dir.display()))?;
        let kamailio = start_kamailio_in(
            server,
            &registrar.config(&[server_v4, server_v6]),
            &kamailio_dir,
            server_v4,
        )?;
        Ok(AuthLab {
            kamailio,
            pins,
            dir,
            topology,
            deployment,
            over_tcp: registrar.over_tcp,
            runs: AtomicU32::new(0),
        })
    }

    /// The registrar's IPv4 and IPv6 addresses.
    pub fn server_addresses(&self) -> [&'static str; 2] {
        match self.deployment {
            Deployment::FilteredHost => [netns::SERVER_V4, netns::SERVER_V6],
            Deployment::BehindGateway => [gateway::SERVER_V4, gateway::SERVER_V6],
        }
    }

    /// The registrar's address and port for sipp: `ADDRESS:5060`.
    pub fn server_target(&self) -> String {
        format!("{}:{SIP_PORT}", self.server_addresses()[0])
    }

    /// A filter configuration for this lab: its domain, the registrar's addresses as
    /// the server's own (behind the gateway the filter's interfaces do not have them,
    /// and in-dialog requests, routed by Kamailio's Record-Route, name them), then
    /// `extra` (sections of rate limits, auth rules).
    pub fn filter_config(&self, extra: &str) -> String {
        let [v4, v6] = self.server_addresses();
        format!(
            "[filter]\ndomains = [\"{DOMAIN}\"]\nown_addresses = [\"{v4}\", \"{v6}\"]\n\n{extra}"
        )
    }

    /// The namespace `client` runs in and its address.
    pub fn client(&self, client: Client) -> (Netns<'_>, String) {
        let (ns, address) = match (&self.topology, client) {
            (Topology::Host(lab), Client::Attacker) => (lab.ns(Host::Client), netns::CLIENT_V4),
            (Topology::Host(lab), Client::Office) => (lab.ns(Host::Client), netns::LEGIT_CLIENT_V4),
            (Topology::Host(lab), Client::Callee) => (lab.ns(Host::Client), HOST_CALLEE_V4),
            (Topology::Gateway(lab), Client::Attacker) => {
                (lab.ns(Node::Attacker(2)), gateway::ATTACKERS[2][0])
            }
            (Topology::Gateway(lab), Client::Office) => (lab.ns(Node::Legit), gateway::LEGIT_V4),
            (Topology::Gateway(lab), Client::Callee) => (lab.ns(Node::Legit), GATEWAY_CALLEE_V4),
            (_, Client::Source(n)) => {
                let (ns, _) = self.client(Client::Attacker);
                return (ns, self.extra_source(n));
            }
        };
        (ns, address.to_string())
    }

    /// The `n`th address [`AuthLab::add_sources`] adds.
    fn extra_source(&self, n: u8) -> String {
        let prefix = match self.deployment {
            Deployment::FilteredHost => HOST_EXTRA_SOURCES,
            Deployment::BehindGateway => GATEWAY_EXTRA_SOURCES,
        };
        format!("{prefix}{}", u16::from(EXTRA_SOURCES_FIRST) + u16::from(n))
    }

    /// Adds `count` (at most 100) more addresses to the attacker's host, for guessers
    /// from many sources ([`Client::Source`] 0 to `count - 1`); returns them. They go
    /// with the namespaces.
    pub fn add_sources(&self, count: u8) -> anyhow::Result<Vec<String>> {
        ensure!(count <= 100, "at most 100 extra sources, not {count}");
        let (ns, _) = self.client(Client::Attacker);
        let iface = match self.deployment {
            Deployment::FilteredHost => netns::CLIENT_IFACE,
            Deployment::BehindGateway => gateway::HOST_IFACE,
        };
        let sources: Vec<String> = (0..count).map(|n| self.extra_source(n)).collect();
        for source in &sources {
            ns.ip(&["addr", "add", &format!("{source}/24"), "dev", iface])?;
        }
        Ok(sources)
    }

    /// The namespace and interface the filter runs on.
    pub fn filter_place(&self) -> (Netns<'_>, &'static str) {
        match &self.topology {
            Topology::Host(lab) => (lab.ns(Host::Server), SERVER_IFACE),
            Topology::Gateway(lab) => (lab.ns(Node::Gateway), OUTSIDE_IFACE),
        }
    }

    /// `sip-filter run --config CONFIG` (the configuration `toml`, written to the
    /// directory) where the filter runs, once attached, with the line saying so.
    pub fn start_filter(&self, binary: &Path, toml: &str) -> anyhow::Result<(Background, String)> {
        let config = self.dir.path().join("sip-filter.toml");
        std::fs::write(&config, toml).context("writing the filter's configuration")?;
        let (ns, iface) = self.filter_place();
        spawn_filter_in(
            ns,
            iface,
            binary,
            &self.pins,
            &["--config", config.to_str().context("a UTF-8 path")?],
            &self.dir.path().join("sip-filter.log"),
        )
        .map_err(|e| anyhow::anyhow!("{e}\nwith the configuration:\n{toml}"))
    }

    /// `sip-filter stats --json` of the lab's filter.
    pub fn filter_stats(&self, binary: &Path) -> anyhow::Result<Value> {
        let (ns, iface) = self.filter_place();
        stats_json(&filter_stats_in(ns, iface, binary, &self.pins))
    }

    /// `sip-filter ARGS --pin-root PINS` where the filter runs (`auth locked`,
    /// `explain`): a verb on the lab's filter.
    pub fn filter_verb(&self, binary: &Path, args: &[&str]) -> Finished {
        let (ns, _) = self.filter_place();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--pin-root", self.pins.arg()]);
        ns.run(binary, &all, QUICK)
    }

    /// Stops the filter (SIGINT) and checks that it detached and removed its pins.
    pub fn stop_filter(&self, daemon: &mut Background) -> anyhow::Result<()> {
        let (ns, iface) = self.filter_place();
        stop_filter_in(ns, iface, daemon, &self.pins.link_pin(iface))
    }

    /// Stops the filter, removes the lab, and fails if any of its namespaces is left.
    pub fn tear_down(self, mut daemon: Background) -> anyhow::Result<()> {
        self.stop_filter(&mut daemon)?;
        drop(daemon);
        let namespaces = self.names();
        drop(self);
        crate::netns::ensure_namespaces_gone(&namespaces)
    }

    /// Kamailio's log (stdout and stderr): what a log-reading tool would follow.
    pub fn kamailio_log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("kamailio").join("kamailio.log")
    }

    /// The authentication outcomes Kamailio has logged so far.
    pub fn auth_events(&self) -> Vec<AuthEvent> {
        auth_events(&self.kamailio.log())
    }

    /// Processes running in any of the lab's namespaces.
    pub fn pids(&self) -> Vec<i32> {
        match &self.topology {
            Topology::Host(lab) => lab.pids(),
            Topology::Gateway(lab) => lab.pids(),
        }
    }

    /// Every namespace's name.
    pub fn names(&self) -> Vec<String> {
        match &self.topology {
            Topology::Host(lab) => lab.names().to_vec(),
            Topology::Gateway(lab) => lab.names(),
        }
    }

    /// sipp running `run` from `client`: one call per injection line, paced, at most
    /// `concurrent` at once; each call fails after `recv_timeout` without an answer,
    /// the whole run ends within its pace and a margin. Its files stay in the
    /// directory, under the run's name and number (a name may be run again).
    pub fn sipp(&self, client: Client, run: &SippRun) -> SippOutcome {
        let (ns, local) = self.client(client);
        let name = self.numbered(&run.name);
        let run_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&run_dir).expect("a sipp directory");
        let mut options = run
            .options(&run_dir)
            .expect("the injection file is written");
        options.extend(self.transport_options());
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        // The process's own bound, past sipp's `-timeout`.
        let deadline = run.time_bound() + Duration::from_secs(15);
        SippOutcome::of(sipp_in(
            ns,
            self.dir.path(),
            &name,
            &run.scenario,
            &local,
            &self.server_target(),
            &options,
            deadline,
        ))
    }

    /// sipp in the background from `client` (a callee waiting for calls, a flood
    /// running while the test does something else); see [`AuthLab::sipp`].
    pub fn spawn_sipp(&self, client: Client, run: &SippRun) -> anyhow::Result<Background> {
        let (ns, local) = self.client(client);
        let name = self.numbered(&run.name);
        let run_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let scenario_file = run_dir.join(format!("{name}.xml"));
        std::fs::write(&scenario_file, &run.scenario).context("writing the scenario")?;
        let mut command = ns.command("sipp");
        command
            .current_dir(&run_dir)
            .args(["-sf", scenario_file.to_str().context("a UTF-8 path")?])
            .args(["-i", &local])
            .args(run.options(&run_dir)?)
            .args(self.transport_options())
            .args(["-nostdin", "-trace_err", &self.server_target()]);
        Background::spawn(&name, command, &run_dir.join("sipp.log"))
    }

    /// sipp's transport option: one TCP connection per sipp (`-t t1`) when the lab
    /// speaks TCP, else sipp's default, UDP.
    fn transport_options(&self) -> Vec<String> {
        if self.over_tcp {
            vec!["-t".into(), "t1".into()]
        } else {
            Vec::new()
        }
    }

    /// `name` with the run's number: `03-brute-force`.
    fn numbered(&self, name: &str) -> String {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        format!("{n:02}-{name}")
    }
}

/// How fast sipp starts calls: `calls` every `period`.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub calls: u32,
    pub period: Duration,
}

impl Pace {
    pub fn per_second(calls: u32) -> Self {
        Pace {
            calls,
            period: Duration::from_secs(1),
        }
    }

    /// How long `count` calls take to start at this pace.
    pub fn duration_of(&self, count: usize) -> Duration {
        let periods = u32::try_from(count.div_ceil(self.calls.max(1) as usize)).unwrap_or(u32::MAX);
        self.period * periods
    }
}

/// One sipp run: a scenario, its injection lines, how many calls at what pace.
#[derive(Clone, Debug)]
pub struct SippRun {
    /// Names its directory: unique within a lab.
    pub name: String,
    pub scenario: String,
    /// One line per call, fields separated by `;` (`-inf`, read in order).
    pub injection: Vec<String>,
    pub pace: Pace,
    /// At most this many calls at once (`-l`).
    pub concurrent: u32,
    /// A call fails after this long without an awaited message (`-recv_timeout`).
    pub recv_timeout: Duration,
    /// Extra options (`-p PORT` for a callee).
    pub extra: Vec<String>,
}

/// How long past its pace a run may take: the last calls' answers, retransmissions.
const SIPP_MARGIN: Duration = Duration::from_secs(30);

impl SippRun {
    pub fn new(name: &str, scenario: String, injection: Vec<String>, pace: Pace) -> Self {
        SippRun {
            name: name.to_string(),
            scenario,
            injection,
            pace,
            concurrent: 20,
            recv_timeout: Duration::from_secs(5),
            extra: Vec::new(),
        }
    }

    /// The bound on the whole run (sipp's `-timeout`).
    pub fn time_bound(&self) -> Duration {
        self.pace.duration_of(self.injection.len()) + self.recv_timeout + SIPP_MARGIN
    }

    /// sipp's options but the scenario, the address and the target; writes the
    /// injection file to `run_dir`.
    pub fn options(&self, run_dir: &Path) -> anyhow::Result<Vec<String>> {
        let injection = run_dir.join("injection.csv");
        let lines: String = self.injection.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&injection, format!("SEQUENTIAL\n{lines}"))
            .context("writing the injection file")?;
        let mut options: Vec<String> = [
            "-inf",
            injection.to_str().context("a UTF-8 path")?,
            "-m",
            &self.injection.len().to_string(),
            "-r",
            &self.pace.calls.to_string(),
            "-rp",
            &self.pace.period.as_millis().to_string(),
            "-l",
            &self.concurrent.to_string(),
            "-recv_timeout",
            &self.recv_timeout.as_millis().to_string(),
            "-max_retrans",
            "3",
            "-timeout",
            &format!("{}s", self.time_bound().as_secs()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        options.extend(self.extra.iter().cloned());
        Ok(options)
    }
}

/// What a sipp run did: its output, its calls, the messages of its scenario's rows.
pub struct SippOutcome {
    pub finished: Finished,
    pub successful: u64,
    pub failed: u64,
    /// Each row of sipp's message table, in the scenario's order: its label
    /// (`REGISTER ---------->`, `401 <----------`) and its message count.
    pub rows: Vec<(String, u64)>,
}

impl SippOutcome {
    /// Panics if sipp exited without running its scenario (an address not in its
    /// namespace, a bad scenario): a broken lab, not an outcome.
    fn of(finished: Finished) -> Self {
        // sipp's exit status on a fatal error: 255.
        assert_ne!(
            finished.code(),
            Some(255),
            "sipp did not run its scenario:\n{finished}"
        );
        SippOutcome {
            successful: sipp_counter(&finished.stdout, "Successful call").unwrap_or(0),
            failed: sipp_counter(&finished.stdout, "Failed call").unwrap_or(0),
            rows: message_rows(&finished.stdout),
            finished,
        }
    }

    /// The outcome of `run`, started with [`AuthLab::spawn_sipp`], once it ends (it is
    /// stopped if it outlasts its bound).
    pub fn of_background(mut sipp: Background, run: &SippRun) -> Self {
        let started = Instant::now();
        let status = sipp.wait(run.time_bound());
        let outcome = SippOutcome::of(Finished {
            command: format!("sipp {} (in the background)", run.name),
            status,
            stdout: sipp.log(),
            stderr: String::new(),
            elapsed: started.elapsed(),
        });
        drop(sipp);
        outcome
    }

    /// The count of the scenario's row `index` (0 when sipp printed no table).
    pub fn row(&self, index: usize) -> u64 {
        self.rows.get(index).map_or(0, |(_, count)| *count)
    }
}

/// The rows of the last message table sipp printed, in the scenario's order: a
/// client's (`401 <----------  12  0 ...`), a server's (`----------> INVITE  1 ...`)
/// and pauses (`Pause [    200ms]  1`).
pub fn message_rows(stdout: &str) -> Vec<(String, u64)> {
    let Some((_, table)) = stdout.rsplit_once("Messages  Retrans") else {
        return Vec::new();
    };
    table
        .lines()
        // The rest of the header line, then rows up to the closing rule.
        .skip(1)
        .take_while(|line| {
            !line.trim_start().starts_with("----------") || line.contains("---------->")
        })
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let is_arrow = |cell: &&str| cell.contains("---------");
            // A server's row starts with its arrow: the label is the arrow and the
            // message after it.
            let label_end = if cells.first().is_some_and(is_arrow) {
                1
            } else {
                cells
                    .iter()
                    .position(|cell| is_arrow(cell) || cell.ends_with(']'))?
            };
            let label = cells.get(..=label_end)?.join(" ");
            let count = cells[label_end + 1..]
                .iter()
                .find_map(|cell| cell.parse().ok())
                .unwrap_or(0);
            Some((label, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::message_rows;

    #[test]
    fn message_rows_reads_client_server_and_pause_rows() {
        let client = "
                                 Messages  Retrans   Timeout   Unexpected-Msg
      INVITE ---------->         1         0         0
         407 <----------         1         0         0         0
         200 <----------  E-RTD1 1         0         0         0
       Pause [    200ms]         1                             0
         BYE ---------->         1         3         0
         200 <----------         0         0         1         0
------------------------------ Test Terminated --------------------------------
";
        let rows = message_rows(client);
        let counts: Vec<u64> = rows.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [1, 1, 1, 1, 1, 0], "{rows:?}");
        assert_eq!(rows[1].0, "407 <----------");
        assert_eq!(rows[3].0, "Pause [ 200ms]");
        let server = "
                                 Messages  Retrans   Timeout   Unexpected-Msg
  ----------> INVITE             1         0         0         0

  <---------- 180                1         0
  ----------> ACK                0         0         1         0
------------------------------ Test Terminated --------------------------------
";
        let rows = message_rows(server);
        assert_eq!(
            rows,
            [
                ("----------> INVITE".to_string(), 1),
                ("<---------- 180".to_string(), 1),
                ("----------> ACK".to_string(), 0)
            ]
        );
        assert!(message_rows("no table").is_empty());
    }
}

/// The `[authentication]` keyword of an injection line: sipp expands keywords inside a
/// field, but not a field inside a keyword.
fn authentication(credentials: &Credentials) -> String {
    format!(
        "[authentication username={} password={}]",
        credentials.user, credentials.password
    )
}

fn recv(response: u16, attributes: &str) -> String {
    format!("  <recv response=\"{response}\"{attributes}/>\n")
}

/// A phone's registration, from an injection line `USER;[authentication ...]`:
/// REGISTER, 401, REGISTER with credentials, 200. With `reregister_after`, it then
/// waits and registers again with the same challenge, as a phone does; a 401 then
/// (`stale=true` once the nonce expired) gets one more answer with credentials.
/// `contact_port`: the port its Contact names (a callee's), else sipp's own.
pub fn register_scenario(reregister_after: Option<Duration>, contact_port: Option<u16>) -> String {
    let line = format!("REGISTER sip:{DOMAIN} SIP/2.0");
    // A callee names its transport: the registrar reaches it over the same one.
    let contact = match contact_port {
        Some(port) => format!("<sip:[field0]@[local_ip]:{port};transport=[transport]>"),
        None => "<sip:[field0]@[local_ip]:[local_port]>".to_string(),
    };
    let expires = format!("      Expires: {REGISTRATION_EXPIRES}\n");
    let credentials = format!("      [field1]\n{expires}");
    let register = |cseq: u32, extra: &str| {
        send(
            &line,
            &request_headers(
                "[field0]",
                "[field0]",
                &format!("{cseq} REGISTER"),
                &contact,
                extra,
                ORDINARY_USER_AGENT,
            ),
            true,
        )
    };
    let mut steps = vec![
        register(1, &expires),
        recv(401, " auth=\"true\""),
        register(2, &credentials),
        recv(200, ""),
    ];
    if let Some(pause) = reregister_after {
        steps.extend([
            format!("  <pause milliseconds=\"{}\"/>\n", pause.as_millis()),
            register(3, &credentials),
            recv(200, " optional=\"true\" next=\"registered\""),
            recv(401, " auth=\"true\""),
            register(4, &credentials),
            recv(200, ""),
            "  <label id=\"registered\"/>\n".to_string(),
        ]);
    }
    scenario("a phone registers with digest authentication", &steps)
}

/// A guess, from an injection line `USER;[authentication ...]`: REGISTER without
/// credentials; a 404 or 403 (an unknown user refused) ends it; else the 401's
/// challenge is answered with the line's credentials, and any final answer (200,
/// 403, 401) ends it. Rows: 0 REGISTER, 1 404, 2 403 (user refused), 3 401
/// (challenge), 4 REGISTER (the guess), 5 200, 6 403, 7 401 (guess refused).
///
/// Nothing is retransmitted, as svcrack does not: each guess is one REGISTER on the
/// wire (what reached the server is countable), and no late duplicate of the challenge
/// can pass for the guess's answer (Kamailio answers statelessly, each time with a new
/// nonce). A guess the network or the filter drops fails after `recv_timeout`.
pub fn guess_scenario(user_agent: &str) -> String {
    let line = format!("REGISTER sip:{DOMAIN} SIP/2.0");
    let contact = "<sip:[field0]@[local_ip]:[local_port]>";
    let expires = format!("      Expires: {REGISTRATION_EXPIRES}\n");
    let credentials = format!("      [field1]\n{expires}");
    let register = |cseq: &str, extra: &str| {
        send(
            &line,
            &request_headers("[field0]", "[field0]", cseq, contact, extra, user_agent),
            false,
        )
    };
    scenario(
        "a password guess",
        &[
            register("1 REGISTER", &expires),
            recv(404, " optional=\"true\" next=\"answered\""),
            recv(403, " optional=\"true\" next=\"answered\""),
            recv(401, " auth=\"true\""),
            register("2 REGISTER", &credentials),
            recv(200, " optional=\"true\" next=\"answered\""),
            recv(403, " optional=\"true\" next=\"answered\""),
            recv(401, ""),
            "  <label id=\"answered\"/>\n".to_string(),
        ],
    )
}

/// One request without credentials, from an injection line `USER`: `method` to
/// `request_uri` with `user_agent`, answered by `answer` (a scanner's OPTIONS, a request
/// for another domain). Not retransmitted: what reached the server is countable.
pub fn request_scenario(method: &str, request_uri: &str, user_agent: &str, answer: u16) -> String {
    scenario(
        &format!("{method} {request_uri} from {user_agent}"),
        &[
            send(
                &format!("{method} {request_uri} SIP/2.0"),
                &request_headers(
                    "[field0]",
                    "[field0]",
                    &format!("1 {method}"),
                    "<sip:[field0]@[local_ip]:[local_port]>",
                    "",
                    user_agent,
                ),
                false,
            ),
            recv(answer, ""),
        ],
    )
}

/// Row indexes of [`guess_scenario`].
pub mod guess_rows {
    pub const CHALLENGED: usize = 3;
    pub const GUESSES_SENT: usize = 4;
    pub const USER_NOT_FOUND: usize = 1;
    pub const USER_FORBIDDEN: usize = 2;
    pub const ACCEPTED: usize = 5;
    pub const FORBIDDEN: usize = 6;
    pub const RECHALLENGED: usize = 7;
}

/// A call, from an injection line `CALLER;[authentication ...];CALLEE`: INVITE, 407,
/// ACK, INVITE with credentials, (100, 180,) 200, ACK and BYE along the recorded
/// route, 200.
pub fn call_scenario() -> String {
    let invite = "INVITE sip:[field2]@pbx.example.test SIP/2.0";
    let contact = "<sip:[field0]@[local_ip]:[local_port]>";
    let headers = |cseq: &str, extra: &str| {
        request_headers(
            "[field0]",
            "[field2]",
            cseq,
            contact,
            extra,
            ORDINARY_USER_AGENT,
        )
    };
    let in_dialog = |method: &str, cseq: &str| {
        send(
            &format!("{method} [next_url] SIP/2.0"),
            &format!(
                "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
                 \x20     [routes]\n\
                 \x20     Max-Forwards: 70\n\
                 \x20     From: <sip:[field0]@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
                 \x20     [last_To:]\n\
                 \x20     Call-ID: [call_id]\n\
                 \x20     CSeq: {cseq}\n\
                 \x20     Content-Length: 0\n"
            ),
            method == "BYE",
        )
    };
    let ack_challenge = format!(
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         \x20     Max-Forwards: 70\n\
         \x20     From: <sip:[field0]@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
         \x20     [last_To:]\n\
         \x20     Call-ID: [call_id]\n\
         \x20     CSeq: 1 ACK\n\
         \x20     Content-Length: 0\n"
    );
    scenario(
        "a call with digest authentication",
        &[
            send(invite, &headers("1 INVITE", ""), true),
            recv(407, " auth=\"true\""),
            send(
                "ACK sip:[field2]@pbx.example.test SIP/2.0",
                &ack_challenge,
                false,
            ),
            send(invite, &headers("2 INVITE", "      [field1]\n"), true),
            recv(100, " optional=\"true\""),
            recv(180, " optional=\"true\""),
            recv(200, " rrs=\"true\""),
            in_dialog("ACK", "2 ACK"),
            "  <pause milliseconds=\"200\"/>\n".to_string(),
            in_dialog("BYE", "3 BYE"),
            recv(200, ""),
        ],
    )
}

/// The callee's side of [`call_scenario`], answering on [`CALLEE_PORT`]: INVITE,
/// 180, 200, ACK, BYE, 200.
pub fn answer_scenario() -> String {
    let reply = |status: &str, with_contact: bool| {
        let contact = if with_contact {
            "      Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
        } else {
            ""
        };
        format!(
            "  <send>\n    <![CDATA[\n\n      SIP/2.0 {status}\n\
             \x20     [last_Via:]\n\
             \x20     [last_Record-Route:]\n\
             \x20     [last_From:]\n\
             \x20     [last_To:];tag=[pid]SIPpTag01[call_number]\n\
             \x20     [last_Call-ID:]\n\
             \x20     [last_CSeq:]\n\
             {contact}\
             \x20     Content-Length: 0\n\n    ]]>\n  </send>\n"
        )
    };
    scenario(
        "a phone answers a call",
        &[
            "  <recv request=\"INVITE\" rrs=\"true\"/>\n".to_string(),
            reply("180 Ringing", true),
            reply("200 OK", true),
            "  <recv request=\"ACK\"/>\n".to_string(),
            "  <recv request=\"BYE\"/>\n".to_string(),
            reply("200 OK", false),
        ],
    )
}

/// The injection line of a phone or a guess: `USER;[authentication ...]`.
pub fn credentials_line(credentials: &Credentials) -> String {
    credentials.assert_writable();
    format!("{};{}", credentials.user, authentication(credentials))
}

/// What a run of guesses did, as the guesser saw it and as Kamailio logged it.
pub struct Guesses {
    pub sipp: SippOutcome,
    /// Guesses started (one per injection line).
    pub attempted: u64,
    /// Guesses that got a final answer.
    pub answered: u64,
    /// Guesses sent with credentials (after a challenge).
    pub sent: u64,
    /// Answers to the credentials: 200, 403, 401.
    pub accepted: u64,
    pub forbidden: u64,
    pub rechallenged: u64,
    /// Requests refused before any challenge (404 or 403: an unknown user).
    pub users_refused: u64,
    /// Kamailio's log, from the guesser's address: credentials it judged (failures
    /// and successes), and challenges it sent.
    pub failures_seen: usize,
    pub successes_seen: usize,
    pub challenges_seen: usize,
    pub took: Duration,
}

impl Guesses {
    fn of(lab: &AuthLab, source: &str, sipp: SippOutcome, took: Duration) -> Self {
        use guess_rows::*;
        let events = lab.auth_events();
        Guesses {
            attempted: sipp.successful + sipp.failed,
            answered: sipp.successful,
            sent: sipp.row(GUESSES_SENT),
            accepted: sipp.row(ACCEPTED),
            forbidden: sipp.row(FORBIDDEN),
            rechallenged: sipp.row(RECHALLENGED),
            users_refused: sipp.row(USER_NOT_FOUND) + sipp.row(USER_FORBIDDEN),
            failures_seen: count_events(&events, "failure", source),
            successes_seen: count_events(&events, "success", source),
            challenges_seen: count_events(&events, "challenge", source),
            sipp,
            took,
        }
    }
}

impl std::fmt::Display for Guesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} guesses in {:.1} s: {} answered, {} sent with credentials \
             (200: {}, 403: {}, 401: {}), {} users refused; Kamailio logged {} failures, \
             {} successes, {} challenges from the guesser",
            self.attempted,
            self.took.as_secs_f64(),
            self.answered,
            self.sent,
            self.accepted,
            self.forbidden,
            self.rechallenged,
            self.users_refused,
            self.failures_seen,
            self.successes_seen,
            self.challenges_seen
        )
    }
}

/// A brute force from `client`: one guess of `user`'s password per line of
/// `passwords`, at `pace`, with an ordinary User-Agent. Bounded: one call per
/// password, each failing 5 s after its last answer, the run by its pace.
pub fn brute_force(
    lab: &AuthLab,
    client: Client,
    user: &str,
    passwords: &[String],
    pace: Pace,
) -> Guesses {
    run_guesses(lab, client, &brute_force_run(user, passwords, pace))
}

/// The run of [`brute_force`], to adjust (its `recv_timeout`) before [`run_guesses`].
pub fn brute_force_run(user: &str, passwords: &[String], pace: Pace) -> SippRun {
    let lines = passwords
        .iter()
        .map(|password| credentials_line(&Credentials::new(user, password.as_str())))
        .collect();
    guess_run(&format!("brute-force-{user}"), lines, pace)
}

/// An enumeration from `client`: one REGISTER per user of `users`, each guessing the
/// user name as its password (the commonest weak password), at `pace`, with an
/// ordinary User-Agent; see [`brute_force`].
pub fn enumerate(lab: &AuthLab, client: Client, users: &[String], pace: Pace) -> Guesses {
    let lines = users
        .iter()
        .map(|user| credentials_line(&Credentials::new(user.as_str(), user.as_str())))
        .collect();
    run_guesses(lab, client, &guess_run("enumeration", lines, pace))
}

fn guess_run(name: &str, lines: Vec<String>, pace: Pace) -> SippRun {
    SippRun::new(name, guess_scenario(ORDINARY_USER_AGENT), lines, pace)
}

/// Runs `run` (of [`guess_scenario`]) from `client`: what the guesser saw, and what
/// Kamailio logged from its address.
pub fn run_guesses(lab: &AuthLab, client: Client, run: &SippRun) -> Guesses {
    let (_, source) = lab.client(client);
    let start = Instant::now();
    let sipp = lab.sipp(client, run);
    Guesses::of(lab, &source, sipp, start.elapsed())
}

/// `accounts` registering from `client` at 10 a second (one call each); with
/// `reregister_after`, each registers again after that pause (see
/// [`register_scenario`]).
pub fn register(
    lab: &AuthLab,
    client: Client,
    name: &str,
    accounts: &[Credentials],
    reregister_after: Option<Duration>,
) -> SippOutcome {
    lab.sipp(client, &register_run(name, accounts, reregister_after))
}

/// The run of [`register`], to adjust (its pace, `-trace_msg`) before
/// [`AuthLab::sipp`].
pub fn register_run(
    name: &str,
    accounts: &[Credentials],
    reregister_after: Option<Duration>,
) -> SippRun {
    let lines = accounts.iter().map(credentials_line).collect();
    let scenario = register_scenario(reregister_after, None);
    SippRun::new(name, scenario, lines, Pace::per_second(10))
}

/// Both sides of a [`call`].
pub struct CallOutcome {
    pub caller: SippOutcome,
    /// The callee's sipp, which answers one call and ends.
    pub callee: SippOutcome,
}

impl CallOutcome {
    /// Whether the call was set up and torn down on both sides.
    pub fn completed(&self) -> bool {
        self.caller.successful == 1 && self.callee.successful == 1
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "=== caller ===\n{}\n=== callee ===\n{}",
            self.caller.finished, self.callee.finished
        )
    }
}

/// A call from `caller` (its phone at [`Client::Office`]) to `callee`, who first
/// registers from [`Client::Callee`] with a Contact on [`CALLEE_PORT`] and answers
/// there; Kamailio challenges the INVITE (407) and routes it to the callee.
pub fn call(
    lab: &AuthLab,
    name: &str,
    caller: &Credentials,
    callee: &Credentials,
) -> anyhow::Result<CallOutcome> {
    let registration = lab.sipp(
        Client::Callee,
        &SippRun::new(
            &format!("{name}-callee-registers"),
            register_scenario(None, Some(CALLEE_PORT)),
            vec![credentials_line(callee)],
            Pace::per_second(1),
        ),
    );
    ensure!(
        registration.successful == 1,
        "the callee {} should register:\n{}",
        callee.user,
        registration.finished
    );
    let mut answering = SippRun::new(
        &format!("{name}-callee-answers"),
        answer_scenario(),
        vec![credentials_line(callee)],
        Pace::per_second(1),
    );
    answering.extra = vec!["-p".into(), CALLEE_PORT.to_string()];
    let callee_side = lab.spawn_sipp(Client::Callee, &answering)?;
    let caller_side = lab.sipp(
        Client::Office,
        &SippRun::new(
            &format!("{name}-caller"),
            call_scenario(),
            vec![format!("{};{}", credentials_line(caller), callee.user)],
            Pace::per_second(1),
        ),
    );
    let callee = SippOutcome::of_background(callee_side, &answering);
    Ok(CallOutcome {
        caller: caller_side,
        callee,
    })
}
