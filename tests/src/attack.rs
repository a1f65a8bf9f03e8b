//! What runs in the [`GatewayLab`]: Kamailio as a registrar with digest authentication
//! on the server, sipvicious (svmap, svwar, svcrack) and a sipp flood on the attacker,
//! sipp registrations and calls on the legitimate client, and sip-filter on the
//! gateway's outside interface. Shared by the lab's test (`tests/e2e_lab.rs`) and the
//! demo (`src/bin/demo.rs`).
//!
//! What reached the server is read from Kamailio's own log: its script logs one line
//! per request it receives (`sip-request METHOD from ADDRESS`), before anything else,
//! so nothing that reached it goes uncounted and no capture tool is needed.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;

use crate::{
    auth_lab::{
        credentials_line, guess_rows, guess_scenario, message_rows, Credentials, Pace, SippRun,
        ORDINARY_USER_AGENT,
    },
    gateway::{
        GatewayLab, Node, ATTACKERS, HOST_IFACE, LEGIT_V4, OUTSIDE_IFACE, SERVER_V4, SERVER_V6,
    },
    lab::{
        kamailio_globals, scan_of, sipp_counter, sipp_in, spawn_filter_in, start_kamailio_in,
        PinRoot, Scan, DOMAIN, SIP_PORT,
    },
    netns::{Background, Finished},
};

/// A registrar account: the extension is the SIP user name.
#[derive(Clone, Copy, Debug)]
pub struct Account {
    pub extension: &'static str,
    pub password: &'static str,
}

/// The legitimate client's accounts: it registers both and calls one from the other.
pub const ALICE: Account = Account {
    extension: "1000",
    password: "Wq8-tulip-horse",
};
pub const BOB: Account = Account {
    extension: "1001",
    password: "Rz4-maple-river",
};
/// An account with a password from every wordlist: what svcrack goes for.
pub const WEAK: Account = Account {
    extension: "1002",
    password: "letmein",
};
const ACCOUNTS: [Account; 3] = [ALICE, BOB, WEAK];

/// svcrack's wordlist: common passwords, the weak account's among them (bounded: one
/// REGISTER each).
pub const WORDLIST: &[&str] = &[
    "123456", "password", "1234", "12345", "000000", "111111", "1000", "1001", "1002", "admin",
    "qwerty", "abc123", "sip", "voip", "secret", "pass", "changeme", "welcome", "letmein",
    "monkey", "dragon", "master",
];

/// The extensions svwar tries.
pub const SVWAR_RANGE: &str = "990-1010";

/// Who is who among the attacker hosts: one per tool, so that each is banned on its
/// own.
pub const SVMAP_HOST: Node = Node::Attacker(0);
pub const SVWAR_HOST: Node = Node::Attacker(1);
pub const SVCRACK_HOST: Node = Node::Attacker(2);
pub const FLOOD_HOST: Node = Node::Attacker(3);
pub const SVMAP_V4: &str = ATTACKERS[0][0];
pub const SVMAP_V6: &str = ATTACKERS[0][1];
pub const SVWAR_V4: &str = ATTACKERS[1][0];
pub const SVCRACK_V4: &str = ATTACKERS[2][0];
pub const FLOOD_V4: [&str; 2] = [ATTACKERS[3][0], ATTACKERS[3][1]];
/// The password guesser: sipp with a phone's User-Agent, from an address added to the
/// svcrack host ([`add_guesser_address`]), so that its ban is its own.
pub const GUESSER_HOST: Node = Node::Attacker(2);
pub const GUESSER_V4: &str = "198.18.1.15";
/// Guesses a second: each is two REGISTERs, under [`filter_config`]'s 5/s, so only
/// the server's answers can stop it.
pub const GUESSER_RATE: u32 = 2;

/// The sender behind a source address, for the tables.
pub fn role(address: &str) -> &'static str {
    match address {
        a if a == SVMAP_V4 || a == SVMAP_V6 => "svmap",
        a if a == SVWAR_V4 => "svwar",
        a if a == SVCRACK_V4 => "svcrack",
        a if FLOOD_V4.contains(&a) => "sipp flood",
        a if a == GUESSER_V4 => "password guesser",
        a if a == LEGIT_V4 => "legitimate",
        _ => "other",
    }
}

/// Kamailio script lines shared by the lab's servers: `$var(user)` looked up among
/// `accounts` for its password (404 for anyone else), then a REGISTER challenged (401)
/// and, with the password, stored.
pub fn kamailio_accounts(accounts: &[Account]) -> String {
    let cases: String = accounts
        .iter()
        .map(|a| {
            format!(
                "        case \"{}\": $var(password) = \"{}\"; break;\n",
                a.extension, a.password
            )
        })
        .collect();
    format!(
        r#"    switch ($var(user)) {{
{cases}        default:
            sl_send_reply("404", "Not Found");
            exit;
    }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("{DOMAIN}", "$var(password)", "0")) {{
            www_challenge("{DOMAIN}", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
"#
    )
}

/// The registrar: REGISTER is challenged (401) and, with the account's password,
/// stored (200); INVITE is challenged (407) and, authenticated, answered 180 and 200
/// when the callee is registered (480 when not); ACK is absorbed; OPTIONS and BYE get
/// 200. An unknown user gets 404, which is what lets svwar tell extensions apart.
/// Everything is stateless: Kamailio answers calls itself, as a PBX's voicemail would.
///
/// The challenge offers `qop=auth`: sipvicious 0.3.3's svcrack answers a challenge
/// without qop with `qop=auth` but no cnonce, which Kamailio rejects as malformed.
pub fn registrar_config() -> String {
    let accounts = kamailio_accounts(&ACCOUNTS);
    let globals = kamailio_globals(2, 2, &[SERVER_V4, SERVER_V6]);
    format!(
        r#"{globals}
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

request_route {{
    xlog("L_NOTICE", "sip-request $rm from $si\n");
    if (is_method("ACK")) {{ exit; }}
    if (is_method("OPTIONS|BYE")) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("REGISTER")) {{ $var(user) = $tU; }} else {{ $var(user) = $fU; }}
    if ($au != $null) {{ $var(user) = $au; }}
{accounts}    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("{DOMAIN}", "$var(password)", "0")) {{
            proxy_challenge("{DOMAIN}", "1");
            exit;
        }}
        if (!registered("location")) {{
            sl_send_reply("480", "Temporarily Unavailable");
            exit;
        }}
        sl_send_reply("180", "Ringing");
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"#
    )
}

/// Starts the registrar in the server namespace, its config and log in `dir`.
pub fn start_registrar(lab: &GatewayLab, dir: &Path) -> anyhow::Result<Background> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    start_kamailio_in(lab.ns(Node::Server), &registrar_config(), dir, SERVER_V4)
}

/// The requests Kamailio logged receiving: per source address, per method.
pub fn requests_seen(kamailio_log: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut seen: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in kamailio_log.lines() {
        let Some((_, request)) = line.split_once("sip-request ") else {
            continue;
        };
        if let Some((method, source)) = request.trim().split_once(" from ") {
            *seen
                .entry(source.to_string())
                .or_default()
                .entry(method.to_string())
                .or_default() += 1;
        }
    }
    seen
}

/// The total of [`requests_seen`] from the sources of `role_name` ([`role`]).
pub fn seen_from(seen: &BTreeMap<String, BTreeMap<String, u64>>, role_name: &str) -> u64 {
    seen.iter()
        .filter(|(source, _)| role(source) == role_name)
        .flat_map(|(_, methods)| methods.values())
        .sum()
}

fn header_lines(user: &str, to: &str, cseq: &str, extra: &str) -> String {
    request_headers(
        user,
        to,
        cseq,
        &format!("<sip:{user}@[local_ip]:[local_port]>"),
        extra,
        "lab-phone",
    )
}

/// A sipp request's headers after its request line: From `user`, To `to`, a Contact
/// of `contact`, `extra` lines (indented like these), a User-Agent of `user_agent`.
pub(crate) fn request_headers(
    user: &str,
    to: &str,
    cseq: &str,
    contact: &str,
    extra: &str,
    user_agent: &str,
) -> String {
    format!(
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         \x20     Max-Forwards: 70\n\
         \x20     From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
         \x20     To: <sip:{to}@{DOMAIN}>\n\
         \x20     Call-ID: [call_id]\n\
         \x20     CSeq: {cseq}\n\
         \x20     Contact: {contact}\n\
         {extra}\
         \x20     User-Agent: {user_agent}\n\
         \x20     Content-Length: 0\n"
    )
}

/// A sipp `<send>` of `request_line` and `headers`, retransmitted every 500 ms if
/// `retrans` (UDP).
pub(crate) fn send(request_line: &str, headers: &str, retrans: bool) -> String {
    let retrans = if retrans { " retrans=\"500\"" } else { "" };
    format!(
        "  <send{retrans}>\n    <![CDATA[\n\n      {request_line}\n{headers}\n    ]]>\n  </send>\n"
    )
}

/// A sipp scenario file named `name` with `steps`.
pub(crate) fn scenario(name: &str, steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"{name}\">\n{}</scenario>\n",
        steps.concat()
    )
}

/// A registration as a phone makes it: REGISTER, 401 with a challenge, REGISTER with
/// the digest of `account`'s password, 200.
pub fn register_scenario(account: Account) -> String {
    let user = account.extension;
    let line = format!("REGISTER sip:{DOMAIN} SIP/2.0");
    let expires = "      Expires: 300\n";
    let credentials = format!(
        "      [authentication username={user} password={}]\n{expires}",
        account.password
    );
    scenario(
        &format!("REGISTER {user} with digest authentication"),
        &[
            send(
                &line,
                &header_lines(user, user, "1 REGISTER", expires),
                true,
            ),
            "  <recv response=\"401\" auth=\"true\"/>\n".to_string(),
            send(
                &line,
                &header_lines(user, user, "2 REGISTER", &credentials),
                true,
            ),
            "  <recv response=\"200\"/>\n".to_string(),
        ],
    )
}

/// A call from `caller` to `callee`: INVITE, 407, ACK, INVITE with the caller's
/// credentials, 180, 200, ACK, BYE, 200.
pub fn call_scenario(caller: Account, callee: Account) -> String {
    let (from, to) = (caller.extension, callee.extension);
    let invite = format!("INVITE sip:{to}@{DOMAIN} SIP/2.0");
    let ack = format!("ACK sip:{to}@{DOMAIN} SIP/2.0");
    let bye = format!("BYE sip:{to}@{DOMAIN} SIP/2.0");
    let credentials = format!(
        "      [authentication username={from} password={}]\n",
        caller.password
    );
    // In-dialog requests carry the To tag of the answer.
    let in_dialog = |cseq: &str| {
        format!(
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             \x20     Max-Forwards: 70\n\
             \x20     From: <sip:{from}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
             \x20     [last_To:]\n\
             \x20     Call-ID: [call_id]\n\
             \x20     CSeq: {cseq}\n\
             \x20     Content-Length: 0\n"
        )
    };
    scenario(
        &format!("call {from} -> {to}"),
        &[
            send(&invite, &header_lines(from, to, "1 INVITE", ""), true),
            "  <recv response=\"407\" auth=\"true\"/>\n".to_string(),
            send(&ack, &in_dialog("1 ACK"), false),
            send(
                &invite,
                &header_lines(from, to, "2 INVITE", &credentials),
                true,
            ),
            "  <recv response=\"100\" optional=\"true\"/>\n".to_string(),
            "  <recv response=\"180\" optional=\"true\"/>\n".to_string(),
            "  <recv response=\"200\"/>\n".to_string(),
            send(&ack, &in_dialog("2 ACK"), false),
            "  <pause milliseconds=\"200\"/>\n".to_string(),
            send(&bye, &in_dialog("3 BYE"), true),
            "  <recv response=\"200\"/>\n".to_string(),
        ],
    )
}

/// The flood: REGISTERs for the first account without credentials, sent and not
/// waited for, with a plain User-Agent (no scanner's).
pub fn flood_scenario() -> String {
    let user = ALICE.extension;
    scenario(
        "REGISTER flood",
        &[send(
            &format!("REGISTER sip:{DOMAIN} SIP/2.0"),
            &header_lines(user, user, "1 REGISTER", "      Expires: 300\n"),
            false,
        )],
    )
}

/// The server's SIP address for sipp: `198.18.2.2:5060`.
pub fn server_target() -> String {
    format!("{SERVER_V4}:{SIP_PORT}")
}

/// `calls` runs of `scenario` from the legitimate client at `rate` per second.
pub fn legit_sipp(
    lab: &GatewayLab,
    dir: &Path,
    name: &str,
    scenario: &str,
    calls: u32,
    rate: u32,
) -> Finished {
    let (calls, rate) = (calls.to_string(), rate.to_string());
    sipp_in(
        lab.ns(Node::Legit),
        dir,
        name,
        scenario,
        LEGIT_V4,
        &server_target(),
        &[
            "-m",
            &calls,
            "-r",
            &rate,
            "-l",
            "10",
            "-recv_timeout",
            "5000",
            "-max_retrans",
            "5",
            "-timeout",
            "25s",
            "-timeout_error",
        ],
        Duration::from_secs(30),
    )
}

/// Calls that succeeded and calls made, from sipp's final statistics.
pub fn sipp_outcome(finished: &Finished) -> (u64, u64) {
    let ok = sipp_counter(&finished.stdout, "Successful call").unwrap_or(0);
    let failed = sipp_counter(&finished.stdout, "Failed call").unwrap_or(0);
    (ok, ok + failed)
}

/// The flood from `from`, in the background: `calls` REGISTERs at `rate` per second,
/// its output in `dir`/`name`.log.
pub fn start_flood(
    lab: &GatewayLab,
    dir: &Path,
    name: &str,
    from: &str,
    calls: u32,
    rate: u32,
) -> anyhow::Result<Background> {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let file = run_dir.join("flood.xml");
    std::fs::write(&file, flood_scenario()).context("writing the flood scenario")?;
    let mut command = lab.command(FLOOD_HOST, "sipp");
    command.current_dir(&run_dir).args([
        "-sf",
        file.to_str().context("a UTF-8 path")?,
        "-i",
        from,
        "-m",
        &calls.to_string(),
        "-r",
        &rate.to_string(),
        "-nostdin",
        "-timeout",
        "30s",
        &server_target(),
    ]);
    Background::spawn(name, command, &dir.join(format!("{name}.log")))
}

const SCANNER_DEADLINE: Duration = Duration::from_secs(40);

/// svmap from `from` against the server's address in `from`'s family. `-x` is the
/// address its Via names: bracketed for IPv6, or svmap 0.3.3 writes `ADDR:PORT`
/// unbracketed and Kamailio refuses the request as malformed.
pub fn svmap(lab: &GatewayLab, from: &str) -> Finished {
    let port = SIP_PORT.to_string();
    let via = if from.contains(':') {
        format!("[{from}]")
    } else {
        from.to_string()
    };
    let mut args = vec!["-vvv", "-b", from, "-x", &via, "-p", &port];
    if from.contains(':') {
        args.extend(["-6", SERVER_V6]);
    } else {
        args.push(SERVER_V4);
    }
    lab.run(SVMAP_HOST, "svmap", &args, SCANNER_DEADLINE)
}

/// What an [`svmap`] run did; svmap writes the IPv6 target unbracketed too.
pub fn svmap_scan(finished: &Finished, ipv6: bool) -> Scan {
    let server = if ipv6 { SERVER_V6 } else { SERVER_V4 };
    scan_of(finished, &format!("{server}:{SIP_PORT}"))
}

/// svwar guessing extensions [`SVWAR_RANGE`] with REGISTERs for the lab's domain (from
/// its host's only address: it ignores `-b`).
pub fn svwar(lab: &GatewayLab) -> Finished {
    lab.run(
        SVWAR_HOST,
        "svwar",
        &[
            "-v",
            &format!("-e{SVWAR_RANGE}"),
            "-m",
            "REGISTER",
            "--domain",
            DOMAIN,
            "-b",
            SVWAR_V4,
            "-x",
            SVWAR_V4,
            "-p",
            &SIP_PORT.to_string(),
            SERVER_V4,
        ],
        SCANNER_DEADLINE,
    )
}

/// svcrack guessing `extension`'s password from [`WORDLIST`] (written to `dir`).
pub fn svcrack(lab: &GatewayLab, dir: &Path, extension: &str) -> Finished {
    let wordlist = dir.join("wordlist.txt");
    std::fs::write(&wordlist, WORDLIST.join("\n") + "\n").expect("the wordlist is written");
    lab.run(
        SVCRACK_HOST,
        "svcrack",
        &[
            "-v",
            "-u",
            extension,
            "-d",
            wordlist.to_str().expect("a UTF-8 path"),
            "--domain",
            DOMAIN,
            "-b",
            SVCRACK_V4,
            "-x",
            SVCRACK_V4,
            "-p",
            &SIP_PORT.to_string(),
            SERVER_V4,
        ],
        SCANNER_DEADLINE,
    )
}

/// The rows of a sipvicious result table (`| 1000 | reqauth |`): each row's cells.
pub fn result_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect::<Vec<_>>()
        })
        // Without the header row.
        .filter(|cells| {
            cells
                .first()
                .is_some_and(|c| c != "Extension" && c != "SIP Device")
        })
        .collect()
}

/// The extensions svwar reported.
pub fn extensions_found(svwar: &Finished) -> Vec<String> {
    result_rows(&svwar.stdout)
        .into_iter()
        .filter_map(|cells| cells.into_iter().next())
        .collect()
}

/// The `extension:password` pairs svcrack reported.
pub fn passwords_found(svcrack: &Finished) -> Vec<String> {
    result_rows(&svcrack.stdout)
        .into_iter()
        .filter(|cells| cells.len() >= 2)
        .map(|cells| format!("{}:{}", cells[0], cells[1]))
        .collect()
}

/// Gives the password guesser its address; it goes with the namespaces.
pub fn add_guesser_address(lab: &GatewayLab) -> anyhow::Result<()> {
    lab.ns(GUESSER_HOST).ip(&[
        "addr",
        "add",
        &format!("{GUESSER_V4}/24"),
        "dev",
        HOST_IFACE,
    ])
}

/// The password guesser: [`WEAK`]'s password guessed from [`WORDLIST`] (the weak one
/// is among the last) at [`GUESSER_RATE`], with an ordinary User-Agent
/// ([`guess_scenario`]); each guess fails 2 s after its last answer.
pub fn guess_password(lab: &GatewayLab, dir: &Path, name: &str) -> anyhow::Result<Finished> {
    let lines = WORDLIST
        .iter()
        .map(|password| credentials_line(&Credentials::new(WEAK.extension, *password)))
        .collect();
    let mut run = SippRun::new(
        name,
        guess_scenario(ORDINARY_USER_AGENT),
        lines,
        Pace::per_second(GUESSER_RATE),
    );
    run.recv_timeout = Duration::from_secs(2);
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let options = run.options(&run_dir)?;
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    Ok(sipp_in(
        lab.ns(GUESSER_HOST),
        dir,
        name,
        &run.scenario,
        GUESSER_V4,
        &server_target(),
        &options,
        run.time_bound() + Duration::from_secs(15),
    ))
}

/// Guesses of [`guess_password`] the server accepted (a 200: the password found).
pub fn guesses_accepted(guesser: &Finished) -> u64 {
    message_rows(&guesser.stdout)
        .get(guess_rows::ACCEPTED)
        .map_or(0, |(_, count)| *count)
}

/// The filter's configuration in the lab: the lab's domain, tighter rate limits than
/// the built-in ones (5/s, burst 20: every lab client has an address of its own, no
/// office shares one), the default bans. The run passes `--allow-example-domains`
/// (`spawn_filter_in`): the lab's domain is a reserved `.test` name.
pub fn filter_config() -> String {
    format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n\
         [rate_limit.register]\nrate = 5\nburst = 20\n\n\
         [rate_limit.invite]\nrate = 5\nburst = 20\n\n\
         [rate_limit.other]\nrate = 20\nburst = 100\n"
    )
}

/// Where the gateway's filter serves Prometheus metrics (the gateway's loopback).
pub const GATEWAY_METRICS_ADDR: &str = "127.0.0.1:9184";

/// `sip-filter run --iface gw-outside --config CONFIG --metrics-addr ...` on the gateway
/// (the config written to `dir`), once attached, with the line saying so.
pub fn start_gateway_filter(
    lab: &GatewayLab,
    binary: &Path,
    pins: &PinRoot,
    dir: &Path,
) -> anyhow::Result<(Background, String)> {
    let config = dir.join("sip-filter.toml");
    std::fs::write(&config, filter_config()).context("writing the filter's configuration")?;
    let config = config.to_str().context("a UTF-8 path")?;
    spawn_filter_in(
        lab.ns(Node::Gateway),
        OUTSIDE_IFACE,
        binary,
        pins,
        &["--config", config, "--metrics-addr", GATEWAY_METRICS_ADDR],
        &dir.join("sip-filter.log"),
    )
    .map_err(anyhow::Error::msg)
}

/// The gateway filter's Prometheus exposition (`GET /metrics`, from inside the gateway).
pub fn gateway_metrics(lab: &GatewayLab) -> anyhow::Result<String> {
    let url = format!("http://{GATEWAY_METRICS_ADDR}/metrics");
    lab.ns(Node::Gateway).in_namespace(|| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(crate::lab::QUICK))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .with_context(|| format!("GET {url}"))
    })?
}

/// `sip-filter VERB... --json` for the gateway's filter (`stats`, `block list`).
pub fn filter_json(lab: &GatewayLab, binary: &Path, pins: &PinRoot, verb: &[&str]) -> Finished {
    let mut args = verb.to_vec();
    args.extend(["--json", "--iface", OUTSIDE_IFACE, "--pin-root", pins.arg()]);
    lab.run(Node::Gateway, binary, &args, crate::lab::QUICK)
}
