//! The attack lab: attackers and a legitimate client on the outside, a gateway running
//! sip-filter, and a SIP server behind it, each in its own network namespace.
//!
//! ```text
//!  attacker0 (198.18.1.10, 2001:db8:5f:1::66) ─┐
//!  attacker1 (198.18.1.11)                     │
//!  attacker2 (198.18.1.12)                     ├─ switch ── gw-outside [gateway] gw-inside ── server
//!  attacker3 (198.18.1.13, 198.18.1.14)        │   (br0)    198.18.1.1         198.18.2.1     198.18.2.2
//!  legit     (198.18.1.50)                    ─┘            2001:db8:5f:1::1   2001:db8:5f:2::1  2001:db8:5f:2::2
//! ```
//!
//! The gateway is a router (IPv4 and IPv6 forwarding on) with sip-filter's XDP program
//! on its outside interface, [`OUTSIDE_IFACE`]: what the filter passes is routed to the
//! server, what it drops never reaches it. `run` has one `--iface`, so the outside is
//! one segment: a bridge in a namespace of its own, the "switch", joins the attackers',
//! the legitimate client's and the gateway's veths. Each host's interface is `eth0`,
//! each in its own namespace. The attackers are separate hosts because svwar and
//! svcrack (sipvicious 0.3.3) ignore `--bindingip`: they send from their host's first
//! address, whatever they are told. XDP attaches to a routed veth in native mode (the veth driver
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

use crate::netns::{own_prefix, without_tx_checksum_offload, Background, Created, Finished, Netns};

/// The gateway's interface towards the attackers and the legitimate client: sip-filter
/// attaches here.
pub const OUTSIDE_IFACE: &str = "gw-outside";
/// The gateway's interface towards the server.
pub const INSIDE_IFACE: &str = "gw-inside";
/// Every host's one interface (attacker, legit, server).
pub const HOST_IFACE: &str = "eth0";

/// The outside and inside networks.
pub const OUTSIDE_V4_NET: &str = "198.18.1.0/24";
pub const OUTSIDE_V6_NET: &str = "2001:db8:5f:1::/64";
pub const INSIDE_V4_NET: &str = "198.18.2.0/24";
pub const INSIDE_V6_NET: &str = "2001:db8:5f:2::/64";
pub const GATEWAY_OUTSIDE_V4: &str = "198.18.1.1";
pub const GATEWAY_OUTSIDE_V6: &str = "2001:db8:5f:1::1";
pub const GATEWAY_INSIDE_V4: &str = "198.18.2.1";
pub const GATEWAY_INSIDE_V6: &str = "2001:db8:5f:2::1";
/// The SIP server, behind the gateway.
pub const SERVER_V4: &str = "198.18.2.2";
pub const SERVER_V6: &str = "2001:db8:5f:2::2";
/// The attacker hosts' addresses, IPv4 and IPv6 (the outside /24 and /64), a host per
/// entry: [`Node::Attacker`]`(i)` has `ATTACKERS[i]`, its first address first.
pub const ATTACKERS: [&[&str]; 4] = [
    &["198.18.1.10", "2001:db8:5f:1::66"],
    &["198.18.1.11"],
    &["198.18.1.12"],
    &["198.18.1.13", "198.18.1.14"],
];
/// The legitimate client: its own host and address, never sharing a source with an
/// attacker.
pub const LEGIT_V4: &str = "198.18.1.50";

/// One namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// An index into [`ATTACKERS`].
    Attacker(usize),
    Legit,
    /// The outside segment's bridge.
    Switch,
    Gateway,
    Server,
}

const NODES: [Node; 8] = [
    Node::Attacker(0),
    Node::Attacker(1),
    Node::Attacker(2),
    Node::Attacker(3),
    Node::Legit,
    Node::Switch,
    Node::Gateway,
    Node::Server,
];

impl Node {
    /// Its namespace's suffix, and its port's name on the switch.
    fn tag(self) -> String {
        match self {
            Node::Attacker(i) => format!("attacker{i}"),
            Node::Legit => "legit".to_string(),
            Node::Switch => "switch".to_string(),
            Node::Gateway => "gateway".to_string(),
            Node::Server => "server".to_string(),
        }
    }
}

/// The namespaces, wired and addressed; see the module's documentation.
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
        let (legit, switch, gateway, server) = (
            self.ns(Node::Legit),
            self.ns(Node::Switch),
            self.ns(Node::Gateway),
            self.ns(Node::Server),
        );
        let outside: Vec<Node> = (0..ATTACKERS.len())
            .map(Node::Attacker)
            .chain([Node::Legit, Node::Gateway])
            .collect();
        // veth pairs: (namespace, interface) <-> (namespace, interface); each outside
        // host's peer on the switch is named after the host.
        let mut pairs: Vec<(Netns, &str, Netns, String)> = outside
            .iter()
            .map(|&node| {
                let iface = if node == Node::Gateway {
                    OUTSIDE_IFACE
                } else {
                    HOST_IFACE
                };
                (self.ns(node), iface, switch, node.tag())
            })
            .collect();
        pairs.push((gateway, INSIDE_IFACE, server, HOST_IFACE.to_string()));
        for (a, a_iface, b, b_iface) in &pairs {
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
            // Checksums complete on the wire, as from a real network: see
            // `without_tx_checksum_offload`.
            without_tx_checksum_offload(a.name(), a_iface)?;
            without_tx_checksum_offload(b.name(), b_iface)?;
        }
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        for node in &outside {
            switch.ip(&["link", "set", &node.tag(), "master", "br0", "up"])?;
        }
        switch.ip(&["link", "set", "br0", "up"])?;

        let with_prefix = |address: &&str| {
            let prefix = if address.contains(':') { 64 } else { 24 };
            format!("{address}/{prefix}")
        };
        let mut addressed: Vec<(Netns, &str, Vec<String>)> = ATTACKERS
            .iter()
            .enumerate()
            .map(|(i, addresses)| {
                let addresses = addresses.iter().map(with_prefix).collect();
                (self.ns(Node::Attacker(i)), HOST_IFACE, addresses)
            })
            .collect();
        addressed.extend([
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
        ]);
        for (ns, iface, addresses) in addressed {
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
        // Routes to the other side's networks only, no default route: nothing leaves
        // the lab, and a resolver inside (Kamailio looks up its own address's name at
        // start) fails at once instead of waiting 5 s for a nameserver it cannot reach.
        // Hosts without an IPv6 address (the legitimate client has none: one in the
        // attackers' /64 would share their bans) get no IPv6 route.
        let mut routed: Vec<(Netns, bool)> = ATTACKERS
            .iter()
            .enumerate()
            .map(|(i, addresses)| {
                let ipv6 = addresses.iter().any(|a| a.contains(':'));
                (self.ns(Node::Attacker(i)), ipv6)
            })
            .collect();
        routed.push((legit, false));
        for (ns, ipv6) in routed {
            ns.ip(&["route", "add", INSIDE_V4_NET, "via", GATEWAY_OUTSIDE_V4])?;
            if ipv6 {
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    INSIDE_V6_NET,
                    "via",
                    GATEWAY_OUTSIDE_V6,
                ])?;
            }
        }
        server.ip(&["route", "add", OUTSIDE_V4_NET, "via", GATEWAY_INSIDE_V4])?;
        server.ip(&[
            "-6",
            "route",
            "add",
            OUTSIDE_V6_NET,
            "via",
            GATEWAY_INSIDE_V6,
        ])?;
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
