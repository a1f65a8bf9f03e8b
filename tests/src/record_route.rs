//! The record-routing proxy lab (issue 19): Kamailio on the server as a registrar and a
//! stateful proxy that record-routes calls and loose-routes what follows them, and two
//! phones (sipp) in the client namespace, each on an address of its own, that register
//! and call each other through it. Used by `tests/e2e_record_route.rs`.
//!
//! Behind such a proxy a phone's in-dialog requests (ACK, re-INVITE, UPDATE, INFO, BYE)
//! carry the peer's Contact, an IP address that is no served domain, as their
//! Request-URI, and the proxy's Record-Route as their Route (RFC 3261 §12.2.1.1):
//!
//! ```text
//! INVITE sip:1001@198.18.0.12:5060 SIP/2.0
//! Route: <sip:198.18.0.2;lr;ftag=...>
//! ```
//!
//! What reached the proxy is read from Kamailio's own log: it logs every request it
//! receives (`sip-request METHOD from ADDRESS`, as [`crate::attack`]'s registrar does)
//! and every in-dialog request it loose-routes (`in-dialog METHOD from ADDRESS to URI`).

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use crate::{
    attack::{kamailio_accounts, register_scenario, Account, ALICE, BOB},
    lab::{kamailio_globals, sipp_in, LabFixture, DOMAIN, QUICK, SIP_PORT},
    netns::{Finished, Host, Lab, Netns, LEGIT_CLIENT_V4, SERVER_V4, SERVER_V6},
};

/// The phone that calls, and its address in the client namespace.
pub const CALLER: Account = ALICE;
pub const CALLER_V4: &str = LEGIT_CLIENT_V4;
/// The phone that answers (and hangs up), on an address added to the client namespace.
pub const CALLEE: Account = BOB;
pub const CALLEE_V4: &str = "198.18.0.12";
/// Both phones' SIP port, fixed: the callee registers the Contact its calls come to, so
/// its registration and its calls must use the same port.
pub const PHONE_PORT: u16 = 5060;
/// What the lab needs besides the sip-filter binary.
pub const TOOLS: &[&str] = &["nsenter", "ip", "ss", "kamailio", "sipp"];

/// How the proxy names itself in its Record-Route, and so in the phones' Route headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyName {
    /// `record_route()`: the address it received the INVITE on, Kamailio's default.
    Address,
    /// The served domain (`record_route_preset`, with the domain as an alias).
    Domain,
}

impl ProxyName {
    /// The host the proxy's Record-Route names.
    pub fn host(self) -> &'static str {
        match self {
            ProxyName::Address => SERVER_V4,
            ProxyName::Domain => DOMAIN,
        }
    }

    /// A tag for directories and pin roots.
    pub fn tag(self) -> &'static str {
        match self {
            ProxyName::Address => "address",
            ProxyName::Domain => "domain",
        }
    }
}

/// The proxy: REGISTER is challenged (401) and stored with the account's password;
/// an INVITE is challenged (407), then record-routed and relayed statefully to the
/// callee's registered Contact. Requests with a To tag follow their Route headers
/// (`loose_route()`) or, without any, get 404, as RFC 3261 §16.4 has it.
pub fn proxy_config(name: ProxyName) -> String {
    let accounts = kamailio_accounts(&[CALLER, CALLEE]);
    let globals = kamailio_globals(2, 2, &[SERVER_V4, SERVER_V6]);
    let (alias, record_route) = match name {
        ProxyName::Address => (String::new(), "record_route();".to_string()),
        // The alias makes loose_route() take a Route naming the domain as its own.
        ProxyName::Domain => (
            format!("alias=\"{DOMAIN}\"\n"),
            format!("record_route_preset(\"{DOMAIN}\");"),
        ),
    };
    format!(
        r#"{globals}{alias}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("usrloc", "db_mode", 0)

request_route {{
    xlog("L_NOTICE", "sip-request $rm from $si\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "in-dialog $rm from $si to $ru\n");
            route(RELAY);
        }}
        # The ACK of a challenge (absorbed) or of a relayed failure.
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ route(RELAY); }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ route(RELAY); }}
        exit;
    }}
    t_check_trans();
    remove_hf("Route");
    if (is_method("REGISTER")) {{ $var(user) = $tU; }} else {{ $var(user) = $fU; }}
{accounts}    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("{DOMAIN}", "$var(password)", "0")) {{
            proxy_challenge("{DOMAIN}", "1");
            exit;
        }}
        consume_credentials();
        if (!lookup("location")) {{
            sl_send_reply("480", "Temporarily Unavailable");
            exit;
        }}
        {record_route}
        route(RELAY);
    }}
    sl_send_reply("405", "Method Not Allowed");
}}

route[RELAY] {{
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"#
    )
}

/// The filter's configuration: the served domain (and, when the proxy record-routes by
/// address, that address as an own address), rate limits as the example configuration
/// has them, the default ban rules (5 unknown-domain requests in 60 s ban for 600 s).
pub fn filter_config(name: ProxyName) -> String {
    let own_addresses = match name {
        ProxyName::Address => format!("own_addresses = [\"{SERVER_V4}\"]\n"),
        ProxyName::Domain => String::new(),
    };
    format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n{own_addresses}\n\
         [rate_limit.register]\nrate = 5\nburst = 20\n\n\
         [rate_limit.invite]\nrate = 5\nburst = 20\n\n\
         [rate_limit.other]\nrate = 20\nburst = 100\n"
    )
}

/// The lab with the proxy instead of the plain responder: the fixture's Kamailio is the
/// proxy (record-routing by `name`), and the callee's address is added to the client
/// namespace. Panics saying what failed (a test's set-up).
pub fn start_lab(tag: &str, name: ProxyName) -> LabFixture {
    LabFixture::start_with(
        tag,
        TOOLS,
        |lab| lab.add_addresses(Host::Client, &[format!("{CALLEE_V4}/24")]),
        &proxy_config(name),
    )
}

/// A `<send>` of `message` (its lines; sipp drops their indentation), retransmitted
/// every 500 ms until the next `<recv>` matches when `retrans`.
fn send(message: &str, retrans: bool) -> String {
    let retrans = if retrans { " retrans=\"500\"" } else { "" };
    format!("  <send{retrans}>\n    <![CDATA[\n\n{message}\n    ]]>\n  </send>\n")
}

fn scenario(name: &str, steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"{name}\">\n{}</scenario>\n",
        steps.concat()
    )
}

/// A pause, so that the proxy (two workers) cannot deliver the next request before the
/// previous one, which a phone would reject as out of order.
fn pause() -> String {
    "  <pause milliseconds=\"200\"/>\n".to_string()
}

/// An audio offer or answer; `version` goes up with each change (a re-INVITE's hold).
fn sdp(version: u32, port: u16, direction: &str) -> String {
    format!(
        "      Content-Type: application/sdp\n\
         \x20     Content-Length: [len]\n\
         \n\
         \x20     v=0\n\
         \x20     o=- 1 {version} IN IP4 [local_ip]\n\
         \x20     s=-\n\
         \x20     c=IN IP4 [local_ip]\n\
         \x20     t=0 0\n\
         \x20     m=audio {port} RTP/AVP 0\n\
         \x20     a=rtpmap:0 PCMU/8000\n\
         \x20     a={direction}\n"
    )
}

const NO_BODY: &str = "      Content-Length: 0\n";

/// The caller's side of one call, through the proxy: INVITE, 407, ACK, INVITE with
/// credentials, 100/180/200 (its Record-Route kept: `rrs`), ACK; a re-INVITE putting
/// the call on hold, 200, ACK; an UPDATE, 200; an INFO (a DTMF digit), 200; then the
/// callee's BYE, answered 200. Every request after the 200 is in-dialog: its
/// Request-URI is the callee's Contact (`[next_url]`) and its Route the proxy's
/// Record-Route (`[routes]`).
pub fn caller_scenario() -> String {
    let (from, to) = (CALLER.extension, CALLEE.extension);
    let initial = |cseq: u32, credentials: &str| {
        format!(
            "      INVITE sip:{to}@{DOMAIN} SIP/2.0\n\
             \x20     Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             \x20     Max-Forwards: 70\n\
             \x20     From: <sip:{from}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
             \x20     To: <sip:{to}@{DOMAIN}>\n\
             \x20     Call-ID: [call_id]\n\
             \x20     CSeq: {cseq} INVITE\n\
             \x20     Contact: <sip:{from}@[local_ip]:[local_port]>\n\
             {credentials}\
             \x20     User-Agent: lab-phone\n\
             {}",
            sdp(1, 40000, "sendrecv")
        )
    };
    let in_dialog = |method: &str, cseq: u32, body: &str| {
        format!(
            "      {method} [next_url] SIP/2.0\n\
             \x20     Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
             \x20     [routes]\n\
             \x20     Max-Forwards: 70\n\
             \x20     From: <sip:{from}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
             \x20     [last_To:]\n\
             \x20     Call-ID: [call_id]\n\
             \x20     CSeq: {cseq} {method}\n\
             \x20     Contact: <sip:{from}@[local_ip]:[local_port]>\n\
             \x20     User-Agent: lab-phone\n\
             {body}"
        )
    };
    // The ACK of the 407 goes to the proxy that sent it, in the INVITE's transaction.
    let challenge_ack = format!(
        "      ACK sip:{to}@{DOMAIN} SIP/2.0\n\
         \x20     Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         \x20     Max-Forwards: 70\n\
         \x20     From: <sip:{from}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]\n\
         \x20     [last_To:]\n\
         \x20     Call-ID: [call_id]\n\
         \x20     CSeq: 1 ACK\n\
         \x20     User-Agent: lab-phone\n\
         {NO_BODY}"
    );
    let credentials = format!(
        "      [authentication username={from} password={}]\n",
        CALLER.password
    );
    let dtmf = "      Content-Type: application/dtmf-relay\n\
                \x20     Content-Length: [len]\n\
                \n\
                \x20     Signal=5\n\
                \x20     Duration=160\n";
    let ok_to_bye = "      SIP/2.0 200 OK\n\
                     \x20     [last_Via:]\n\
                     \x20     [last_From:]\n\
                     \x20     [last_To:]\n\
                     \x20     [last_Call-ID:]\n\
                     \x20     [last_CSeq:]\n\
                     \x20     User-Agent: lab-phone\n\
                     \x20     Content-Length: 0\n";
    scenario(
        &format!("call {from} -> {to} through a record-routing proxy"),
        &[
            send(&initial(1, ""), true),
            "  <recv response=\"407\" auth=\"true\"/>\n".to_string(),
            send(&challenge_ack, false),
            send(&initial(2, &credentials), true),
            "  <recv response=\"100\" optional=\"true\"/>\n".to_string(),
            "  <recv response=\"180\" optional=\"true\"/>\n".to_string(),
            "  <recv response=\"200\" rrs=\"true\"/>\n".to_string(),
            send(&in_dialog("ACK", 2, NO_BODY), false),
            pause(),
            send(&in_dialog("INVITE", 3, &sdp(2, 40000, "sendonly")), true),
            "  <recv response=\"100\" optional=\"true\"/>\n".to_string(),
            "  <recv response=\"200\"/>\n".to_string(),
            send(&in_dialog("ACK", 3, NO_BODY), false),
            pause(),
            send(&in_dialog("UPDATE", 4, NO_BODY), true),
            "  <recv response=\"200\"/>\n".to_string(),
            send(&in_dialog("INFO", 5, dtmf), true),
            "  <recv response=\"200\"/>\n".to_string(),
            "  <recv request=\"BYE\"/>\n".to_string(),
            send(ok_to_bye, false),
        ],
    )
}

/// The callee's side of one call: the INVITE (its Record-Route and the caller's
/// Contact kept: `rrs`; the caller's From kept for the BYE's To), 180, 200 with the
/// Record-Route copied and a Contact that is its own address; ACK; the re-INVITE, 200,
/// ACK; the UPDATE, 200; the INFO, 200; then it hangs up: BYE to the caller's Contact,
/// routed through the proxy, and its 200.
pub fn callee_scenario() -> String {
    let user = CALLEE.extension;
    let answer = |status: &str, to: &str, record_route: &str, body: &str| {
        format!(
            "      SIP/2.0 {status}\n\
             \x20     [last_Via:]\n\
             {record_route}\
             \x20     [last_From:]\n\
             \x20     {to}\n\
             \x20     [last_Call-ID:]\n\
             \x20     [last_CSeq:]\n\
             \x20     Contact: <sip:{user}@[local_ip]:[local_port]>\n\
             \x20     User-Agent: lab-phone\n\
             {body}"
        )
    };
    let tagged = "[last_To:];tag=[pid]SIPpTag01[call_number]";
    let record_route = "      [last_Record-Route:]\n";
    let bye = format!(
        "      BYE [next_url] SIP/2.0\n\
         \x20     Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         \x20     [routes]\n\
         \x20     Max-Forwards: 70\n\
         \x20     From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag01[call_number]\n\
         \x20     To:[$caller]\n\
         \x20     Call-ID: [call_id]\n\
         \x20     CSeq: 1 BYE\n\
         \x20     User-Agent: lab-phone\n\
         {NO_BODY}"
    );
    let invite = "  <recv request=\"INVITE\" rrs=\"true\">\n    <action>\n      \
                  <ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" check_it=\"true\" \
                  assign_to=\"caller\"/>\n    </action>\n  </recv>\n";
    let recv = |method: &str| format!("  <recv request=\"{method}\"/>\n");
    scenario(
        &format!("{user} answers through a record-routing proxy"),
        &[
            invite.to_string(),
            send(&answer("180 Ringing", tagged, record_route, NO_BODY), false),
            send(
                &answer("200 OK", tagged, record_route, &sdp(1, 40002, "sendrecv")),
                true,
            ),
            recv("ACK"),
            recv("INVITE"),
            send(
                &answer("200 OK", "[last_To:]", "", &sdp(2, 40002, "recvonly")),
                true,
            ),
            recv("ACK"),
            recv("UPDATE"),
            send(&answer("200 OK", "[last_To:]", "", NO_BODY), false),
            recv("INFO"),
            send(&answer("200 OK", "[last_To:]", "", NO_BODY), false),
            pause(),
            send(&bye, true),
            "  <recv response=\"200\"/>\n".to_string(),
        ],
    )
}

/// The server's SIP address for sipp.
fn proxy_target() -> String {
    format!("{SERVER_V4}:{SIP_PORT}")
}

/// `phone` registers from `address`, port [`PHONE_PORT`]: REGISTER, 401, REGISTER with
/// its digest, 200.
pub fn register(lab: &Lab, dir: &Path, phone: Account, address: &str) -> Finished {
    let port = PHONE_PORT.to_string();
    sipp_in(
        lab.ns(Host::Client),
        dir,
        &format!("register-{}", phone.extension),
        &register_scenario(phone),
        address,
        &proxy_target(),
        &[
            "-p",
            &port,
            "-m",
            "1",
            "-recv_timeout",
            "5000",
            "-max_retrans",
            "5",
            "-timeout",
            "10s",
            "-timeout_error",
        ],
        Duration::from_secs(15),
    )
}

/// How long either phone may take for all its calls: sipp's own `-timeout`, then the
/// deadline at which it is killed.
const CALLS_TIMEOUT: &str = "20s";
const CALLS_DEADLINE: Duration = Duration::from_secs(25);

/// `calls` calls from the caller to the callee, `rate` a second, each phone a sipp of
/// its own: the callee first, listening on its registered Contact, then the caller.
/// Returns how each finished (caller, callee).
pub fn calls(lab: &Lab, dir: &Path, calls: u32, rate: u32) -> anyhow::Result<(Finished, Finished)> {
    let client = lab.ns(Host::Client);
    let (port, calls, rate) = (PHONE_PORT.to_string(), calls.to_string(), rate.to_string());
    let common = [
        "-p",
        &port,
        "-m",
        &calls,
        "-recv_timeout",
        "5000",
        "-max_retrans",
        "5",
        "-timeout",
        CALLS_TIMEOUT,
        "-timeout_error",
    ];
    std::thread::scope(|scope| {
        let callee = scope.spawn(|| {
            sipp_in(
                client,
                dir,
                "callee",
                &callee_scenario(),
                CALLEE_V4,
                &proxy_target(),
                &common,
                CALLS_DEADLINE,
            )
        });
        let listening = wait_for_phone(client, &format!("{CALLEE_V4}:{PHONE_PORT}"), || {
            callee.is_finished()
        });
        let caller = listening.map(|()| {
            let options = [&common[..], &["-r", &rate, "-l", &calls]].concat();
            sipp_in(
                client,
                dir,
                "caller",
                &caller_scenario(),
                CALLER_V4,
                &proxy_target(),
                &options,
                CALLS_DEADLINE,
            )
        });
        let callee = match callee.join() {
            Ok(finished) => finished,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        caller
            .map(|caller| (caller, callee))
            .map_err(|e| anyhow::anyhow!("{e:#}"))
    })
}

/// Waits until a UDP socket listens on `address` (`IP:PORT`) in `ns`, or `gone()`.
fn wait_for_phone(ns: Netns, address: &str, gone: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let sockets = ns.run("ss", &["-H", "-u", "-l", "-n"], QUICK);
        anyhow::ensure!(sockets.success(), "{sockets}");
        if sockets.stdout.contains(address) {
            return Ok(());
        }
        anyhow::ensure!(
            !gone(),
            "the callee's sipp ended before listening on {address}"
        );
        anyhow::ensure!(
            start.elapsed() < QUICK,
            "nothing listens on {address} after {QUICK:?}:\n{sockets}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One row of sipp's message table: a message of the scenario, whether it is one the
/// phone receives, and how many were sent or received (retransmissions not counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// The method or status code: `INVITE`, `200`.
    pub label: String,
    pub received: bool,
    pub count: u64,
}

/// The rows of sipp's message table, in scenario order. The arrow points at the label
/// for a message received: `200 <----------` as a client, `----------> INVITE` as a
/// server. The last table only: sipp prints it once when it ends, and the error traces
/// appended after it have none.
pub fn message_rows(stdout: &str) -> Vec<MessageRow> {
    let table = stdout
        .rfind("Messages  Retrans")
        .map_or("", |start| &stdout[start..]);
    table
        .lines()
        .take_while(|line| !line.contains("Test Terminated"))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (label, received, count) = match words.as_slice() {
                [label, "<----------", count, ..] => (label, true, count),
                [label, "---------->", count, ..] => (label, false, count),
                ["---------->", label, count, ..] => (label, true, count),
                ["<----------", label, count, ..] => (label, false, count),
                _ => return None,
            };
            Some(MessageRow {
                label: label.to_string(),
                received,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// The in-dialog requests the proxy loose-routed: per source address, per method.
pub fn routed_in_dialog(kamailio_log: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut routed: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in kamailio_log.lines() {
        let Some((_, request)) = line.split_once("in-dialog ") else {
            continue;
        };
        let Some((method, rest)) = request.split_once(" from ") else {
            continue;
        };
        let source = rest.split(" to ").next().unwrap_or(rest).trim();
        *routed
            .entry(source.to_string())
            .or_default()
            .entry(method.to_string())
            .or_default() += 1;
    }
    routed
}

/// Requests that name a foreign host both as their Request-URI and as their topmost
/// Route: two in a dialog (To tag), one of them with a Route naming the proxy further
/// down, and an INVITE out of any dialog. None of them is routed to the proxy (RFC 3261 §16.4 looks at the topmost Route only), so
/// each is an unknown domain. Each is a (description, datagram) pair.
pub fn foreign_requests(local: SocketAddr, proxy_host: &str) -> Vec<(String, String)> {
    let foreign_uri = "sip:1001@203.0.113.9:5060";
    let cases = [
        (
            "an in-dialog BYE routed to a foreign proxy",
            "BYE",
            "<sip:203.0.113.7;lr>".to_string(),
            ";tag=foreign-dialog",
        ),
        (
            "an in-dialog INFO whose Route names the proxy second",
            "INFO",
            format!("<sip:203.0.113.7;lr>, <sip:{proxy_host};lr>"),
            ";tag=foreign-dialog",
        ),
        (
            "an INVITE out of a dialog routed to a foreign proxy",
            "INVITE",
            "<sip:203.0.113.7;lr>".to_string(),
            "",
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(n, (what, method, route, to_tag))| {
            let request = format!(
                "{method} {foreign_uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-foreign-{n};rport\r\n\
                 Route: {route}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:1000@{DOMAIN}>;tag=foreign-{n}\r\n\
                 To: <sip:1001@{DOMAIN}>{to_tag}\r\n\
                 Call-ID: foreign-{n}@{local}\r\n\
                 CSeq: 7 {method}\r\n\
                 User-Agent: lab-phone\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            (what.to_string(), request)
        })
        .collect()
}

/// The entries of `block list --json` (bans and deny entries) for `address` alone.
pub fn blocked<'a>(block_list: &'a serde_json::Value, address: &str) -> Vec<&'a serde_json::Value> {
    block_list
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| {
                    entry["address"]
                        .as_str()
                        .is_some_and(|a| a == address || a == format!("{address}/32"))
                })
                .collect()
        })
        .unwrap_or_default()
}
