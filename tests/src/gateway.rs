//! The attack lab: attackers and a legitimate client on the outside, a gateway running
//! sip-filter, and a SIP server behind it, each in its own network namespace.
//!
//! ```text
//!  attacker (198.18.1.10-14, 2001:db8:5f:1::66-67) ─┐
//!                                                  switch ── gw-outside [gateway] gw-inside ── server
//!  legit    (198.18.1.50)                          ─┘   (br0)  198.18.1.1     198.18.2.1    198.18.2.2
//!                                                               2001:db8:5f:1::1 :2::1      2001:db8:5f:2::2
//! ```
//!
//! The gateway is a router (IPv4 and IPv6 forwarding on) with sip-filter's XDP program
//! on its outside interface, [`OUTSIDE_IFACE`]: what the filter passes is routed to the
//! server, what it drops never reaches it. `run` has one `--iface`, so the outside is
//! one segment: a bridge in a fifth namespace, the "switch", joins the attacker's, the
//! legitimate client's and the gateway's veths. Each host's interface is `eth0`, each in
//! its own namespace. XDP attaches to a routed veth in native mode (the veth driver
//! runs it on the receiving end; nothing is redirected, so its peer needs no program).
//!
//! Namespaces are named after this process's pid, like [`crate::netns::Lab`]'s, and go
//! the same way: dropping the [`GatewayLab`] kills what still runs inside and deletes
//! them (the veths and the bridge with them), also when a test panics; those of a test
//! process that died first are swept by the next lab.

use std::{
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::Context;

use crate::netns::{own_prefix, Background, Created, Finished, Netns};

/// The gateway's interface towards the attackers and the legitimate client: sip-filter
/// attaches here.
pub const OUTSIDE_IFACE: &str = "gw-outside";
/// The gateway's interface towards the server.
pub const INSIDE_IFACE: &str = "gw-inside";
/// Every host's one interface (attacker, legit, server).
pub const HOST_IFACE: &str = "eth0";

pub const GATEWAY_OUTSIDE_V4: &str = "198.18.1.1";
pub const GATEWAY_OUTSIDE_V6: &str = "2001:db8:5f:1::1";
pub const GATEWAY_INSIDE_V4: &str = "198.18.2.1";
pub const GATEWAY_INSIDE_V6: &str = "2001:db8:5f:2::1";
/// The SIP server, behind the gateway.
pub const SERVER_V4: &str = "198.18.2.2";
pub const SERVER_V6: &str = "2001:db8:5f:2::2";
/// The attacker host's IPv4 addresses: one per tool, so each is banned on its own.
pub const ATTACKER_V4: [&str; 5] = [
    "198.18.1.10",
    "198.18.1.11",
    "198.18.1.12",
    "198.18.1.13",
    "198.18.1.14",
];
/// The attacker host's IPv6 addresses (one /64, which the filter treats as one source).
pub const ATTACKER_V6: [&str; 2] = ["2001:db8:5f:1::66", "2001:db8:5f:1::67"];
/// The legitimate client: its own host and address, never sharing a source with an
/// attacker.
pub const LEGIT_V4: &str = "198.18.1.50";

/// One namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Attacker,
    Legit,
    /// The outside segment's bridge.
    Switch,
    Gateway,
    Server,
}

const NODES: [Node; 5] = [
    Node::Attacker,
    Node::Legit,
    Node::Switch,
    Node::Gateway,
    Node::Server,
];

impl Node {
    fn tag(self) -> &'static str {
        match self {
            Node::Attacker => "attacker",
            Node::Legit => "legit",
            Node::Switch => "switch",
            Node::Gateway => "gateway",
            Node::Server => "server",
        }
    }
}

/// The five namespaces, wired and addressed; see the module's documentation.
pub struct GatewayLab {
    /// In [`NODES`]' order.
    names: Vec<String>,
    created: Created,
}

impl GatewayLab {
    pub fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let names: Vec<String> = NODES
            .iter()
            .map(|node| format!("{}gw{n}-{}", own_prefix(), node.tag()))
            .collect();
        // If a step fails, dropping `lab` removes what the steps before made.
        let mut lab = GatewayLab {
            names,
            created: Created::default(),
        };
        for name in lab.names.clone() {
            lab.created.add(name)?;
        }
        lab.wire().context("wiring the gateway lab")?;
        Ok(lab)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (attacker, legit, switch, gateway, server) = (
            self.ns(Node::Attacker),
            self.ns(Node::Legit),
            self.ns(Node::Switch),
            self.ns(Node::Gateway),
            self.ns(Node::Server),
        );
        // veth pairs: (namespace, interface) <-> (namespace, interface).
        for (a, a_iface, b, b_iface) in [
            (attacker, HOST_IFACE, switch, "attacker"),
            (legit, HOST_IFACE, switch, "legit"),
            (gateway, OUTSIDE_IFACE, switch, "gateway"),
            (gateway, INSIDE_IFACE, server, HOST_IFACE),
        ] {
            a.ip(&[
                "link",
                "add",
                a_iface,
                "type",
                "veth",
                "peer",
                "name",
                b_iface,
                "netns",
                b.name(),
            ])?;
        }
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        for port in ["attacker", "legit", "gateway"] {
            switch.ip(&["link", "set", port, "master", "br0", "up"])?;
        }
        switch.ip(&["link", "set", "br0", "up"])?;

        let mut attacker_addresses: Vec<String> =
            ATTACKER_V4.iter().map(|a| format!("{a}/24")).collect();
        attacker_addresses.extend(ATTACKER_V6.iter().map(|a| format!("{a}/64")));
        for (ns, iface, addresses) in [
            (attacker, HOST_IFACE, attacker_addresses),
            (legit, HOST_IFACE, vec![format!("{LEGIT_V4}/24")]),
            (
                gateway,
                OUTSIDE_IFACE,
                vec![
                    format!("{GATEWAY_OUTSIDE_V4}/24"),
                    format!("{GATEWAY_OUTSIDE_V6}/64"),
                ],
            ),
            (
                gateway,
                INSIDE_IFACE,
                vec![
                    format!("{GATEWAY_INSIDE_V4}/24"),
                    format!("{GATEWAY_INSIDE_V6}/64"),
                ],
            ),
            (
                server,
                HOST_IFACE,
                vec![format!("{SERVER_V4}/24"), format!("{SERVER_V6}/64")],
            ),
        ] {
            for address in &addresses {
                let mut args = vec!["addr", "add", address, "dev", iface];
                // Usable at once, without duplicate address detection's wait.
                if address.contains(':') {
                    args.push("nodad");
                }
                ns.ip(&args)?;
            }
            ns.ip(&["link", "set", iface, "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        // The legitimate client has IPv4 only: an address in the attackers' /64 would
        // share their bans.
        for (ns, v4, v6) in [
            (attacker, GATEWAY_OUTSIDE_V4, Some(GATEWAY_OUTSIDE_V6)),
            (legit, GATEWAY_OUTSIDE_V4, None),
            (server, GATEWAY_INSIDE_V4, Some(GATEWAY_INSIDE_V6)),
        ] {
            ns.ip(&["route", "add", "default", "via", v4])?;
            if let Some(v6) = v6 {
                ns.ip(&["-6", "route", "add", "default", "via", v6])?;
            }
        }
        let sysctl = gateway.run(
            "sysctl",
            &[
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
            Duration::from_secs(10),
        );
        anyhow::ensure!(sysctl.success(), "turning forwarding on: {sysctl}");
        Ok(())
    }

    /// The namespace `node` runs in.
    pub fn ns(&self, node: Node) -> Netns<'_> {
        let index = NODES.iter().position(|n| *n == node).unwrap_or(0);
        Netns(&self.names[index])
    }

    /// Every namespace's name.
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// `program` to be run inside `node`'s namespace.
    pub fn command(&self, node: Node, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns(node).command(program)
    }

    /// Runs `program args` inside `node` to completion, killed at `timeout`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        node: Node,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        timeout: Duration,
    ) -> Finished {
        self.ns(node).run(program, args, timeout)
    }

    /// Starts `program args` inside `node` in the background, its output in `log`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        node: Node,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[S],
        log: &Path,
    ) -> anyhow::Result<Background> {
        self.ns(node).spawn(label, program, args, log)
    }

    /// Processes running inside any of the lab's namespaces.
    pub fn pids(&self) -> Vec<i32> {
        self.created.pids()
    }
}
