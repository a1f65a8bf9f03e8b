//! The packet path as a NIC with native XDP gives it (issue 16): the same floods and
//! set-ups, the frames sent by [`crate::livesend`] so that the server's veth receives
//! them as `xdp_frame`s, with no socket buffer. sip-filter drops them there; for
//! iptables, nftables and Kamailio the server's veth runs an XDP_PASS program (it needs
//! an XDP program, or GRO, for its NAPI poll) and builds the socket buffer after it, as
//! a NIC's driver does for the stack.
//!
//! Before the set-ups, a bare XDP_DROP program on the server's veth gives the floor:
//! what sending, receiving and dropping a frame costs with no policy at all.
//!
//! Each set-up and flood runs several times; each figure is the median over the runs.
//! CPU is counted three ways, from the same snapshots:
//! - all CPUs: Δ(user + nice + system + softirq) of `/proc/stat`'s `cpu` line, steal
//!   excluded: the sender, the receiver's NAPI poll, Kamailio, the daemon, the
//!   legitimate clients (sipp), and anything else the machine ran meanwhile;
//! - the flood's, per thread: the sending thread (which runs the receive path inline,
//!   in softirq, when it re-enables bottom halves), the ksoftirqd threads and the
//!   server namespace's processes; other work on a shared machine is not in it;
//! - the receiving side, as in the AF_PACKET section: softirq time of all CPUs (the
//!   veth's NAPI poll, XDP and the stack run there, on the sending CPU) plus the server
//!   namespace's processes. What a server behind a real NIC pays; tick-sampled, so
//!   rougher than the flood's.
//!
//! Dropped: the frames the client's veth handed to the server's as `xdp_frame`s
//! (`tx_queue_*_xdp_xmit`: frames the server's full ring refused never arrived and are
//! not counted) minus the flood packets Kamailio answered.

use std::path::Path;

use serde_json::{json, Value};

use super::{
    frame, legit_outcome, start_legit_clients, Flood, Options, Setup, Snapshot, FIRST_FLOOD_SOURCE,
    FLOODS, FLOOD_CPU, SERVER_CPU,
};
use crate::{
    lab::{filter_stats, reason_sum, stats_json, PinRoot},
    livesend::{ConstantXdp, LiveFlood, SendMethod, Sources, VethCounters, XDP_DROP, XDP_PASS},
    netns::{Host, Lab, CLIENT_IFACE, SERVER_IFACE},
};

/// What issue 16 asks of sip-filter's drops per CPU-second against each set-up.
fn target(setup: Setup) -> Option<f64> {
    match setup {
        Setup::Iptables | Setup::Nftables => Some(5.0),
        Setup::Kamailio => Some(50.0),
        Setup::SipFilter => None,
    }
}

/// Every run of every flood through `setup` (already in place), on the NIC-like path.
/// `filter`: the sip-filter binary and pins, when the set-up is sip-filter (its own
/// drop counters are read too).
pub(super) fn measure_setup(
    lab: &Lab,
    dir: &Path,
    setup: Setup,
    macs: ([u8; 6], [u8; 6]),
    options: &Options,
    filter: Option<(&Path, &PinRoot)>,
) -> anyhow::Result<Vec<Value>> {
    // Detached when dropped, after this set-up's runs. sip-filter's own program gives
    // the veth its NAPI poll.
    let _napi = if setup == Setup::SipFilter {
        None
    } else {
        Some(ConstantXdp::attach(
            lab.ns(Host::Server),
            SERVER_IFACE,
            XDP_PASS,
        )?)
    };
    let mut runs = Vec::new();
    for flood in &FLOODS {
        let frame = frame(flood, macs, 0);
        for run in 0..options.nic_runs {
            let arm = Arm {
                name: setup.name(),
                legit_clients: true,
                filter,
            };
            runs.push(measure_run(lab, dir, &arm, flood, &frame, options, run)?);
        }
    }
    Ok(runs)
}

/// The reference arm's name: a bare XDP_DROP on the server's veth, no policy.
const BARE_DROP: &str = "bare XDP_DROP";

/// The floor, before the set-ups: every flood's frames dropped by a bare XDP_DROP
/// program on the server's veth (no legitimate clients: they would be dropped too).
pub(super) fn measure_bare_drop(
    lab: &Lab,
    dir: &Path,
    macs: ([u8; 6], [u8; 6]),
    options: &Options,
) -> anyhow::Result<Vec<Value>> {
    print_heading(options);
    let _drop = ConstantXdp::attach(lab.ns(Host::Server), SERVER_IFACE, XDP_DROP)?;
    let arm = Arm {
        name: BARE_DROP,
        legit_clients: false,
        filter: None,
    };
    let mut runs = Vec::new();
    for flood in &FLOODS {
        let frame = frame(flood, macs, 0);
        for run in 0..options.nic_runs {
            runs.push(measure_run(lab, dir, &arm, flood, &frame, options, run)?);
        }
    }
    Ok(runs)
}

/// What one run measures.
struct Arm<'a> {
    name: &'static str,
    legit_clients: bool,
    /// The sip-filter binary and pins, when the arm is sip-filter (its own drop
    /// counters are read too).
    filter: Option<(&'a Path, &'a PinRoot)>,
}

/// The sum of sip-filter's `drop_*` counters.
fn filter_drops(lab: &Lab, (binary, pins): (&Path, &PinRoot)) -> anyhow::Result<u64> {
    let stats = stats_json(&filter_stats(lab, binary, pins))?;
    Ok(reason_sum(&stats, "drop_"))
}

fn measure_run(
    lab: &Lab,
    dir: &Path,
    arm: &Arm,
    flood: &Flood,
    frame: &[u8],
    options: &Options,
    run: usize,
) -> anyhow::Result<Value> {
    let filter = arm.filter;
    let (client, server) = (lab.ns(Host::Client), lab.ns(Host::Server));
    // How busy the machine was (other work lands in the all-CPU figure).
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok());
    let legit = if arm.legit_clients {
        start_legit_clients(lab, dir, options, options.nic_flood)?
    } else {
        Vec::new()
    };
    let filter_before = filter.map(|f| filter_drops(lab, f)).transpose()?;
    let sending_before = VethCounters::read(client, CLIENT_IFACE)?;
    let receiving_before = VethCounters::read(server, SERVER_IFACE)?;
    let before = Snapshot::take(lab)?;
    let sent = LiveFlood {
        ns: client,
        iface: CLIENT_IFACE,
        frame,
        sources: Sources {
            first: FIRST_FLOOD_SOURCE,
            count: flood.sources,
        },
        max_frames: options.max_packets,
        max_time: options.nic_flood,
        cpu: FLOOD_CPU,
        nice: 0,
    }
    .run()?;
    let after = Snapshot::take(lab)?;
    let sending = VethCounters::read(client, CLIENT_IFACE)?.since(&sending_before);
    let receiving = VethCounters::read(server, SERVER_IFACE)?.since(&receiving_before);
    let filter_dropped = match (filter, filter_before) {
        (Some(f), Some(before)) => Some(filter_drops(lab, f)?.saturating_sub(before)),
        _ => None,
    };
    let (successful, failed) = legit_outcome(legit)?;

    let arrived = sending.xdp_sent;
    let answered = after.answered.saturating_sub(before.answered);
    let dropped = arrived.saturating_sub(answered);
    let all_cpu = after.all_cpu_seconds - before.all_cpu_seconds;
    let receiving_cpu = after.cpu_seconds - before.cpu_seconds;
    // Sender (with the receive path it ran inline), deferred softirq work, Kamailio
    // and the daemon: all the flood costs, measured per thread, so other work on a
    // shared machine is not in it (but the softirq work an interrupt ran on top of
    // another process, rare here, is missed).
    let server_processes = receiving_cpu - (after.softirq_seconds - before.softirq_seconds);
    let flood_cpu = sent.thread_cpu.as_secs_f64()
        + (after.ksoftirqd_seconds - before.ksoftirqd_seconds)
        + server_processes;
    let per = |cpu: f64| if cpu > 0.0 { dropped as f64 / cpu } else { 0.0 };
    let offered = sent.frames as f64 / sent.elapsed.as_secs_f64();
    if sent.method != SendMethod::LiveFrames {
        println!("(sender: {})", sent.method.name());
    }
    println!(
        "{:<11} {:<16} {:>9.0} {:>10} {:>9} {:>8.2} {:>12.0} {:>8.2} {:>12.0} {:>8.2} {:>12.0} {:>5}/{}",
        arm.name,
        flood.name,
        offered,
        dropped,
        sending.xdp_send_errors,
        all_cpu,
        per(all_cpu),
        flood_cpu,
        per(flood_cpu),
        receiving_cpu,
        per(receiving_cpu),
        successful,
        successful + failed,
    );
    Ok(json!({
        "setup": arm.name,
        "flood": flood.name,
        "run": run,
        "sent": sent.frames,
        "sender": sent.method.name(),
        "seconds": sent.elapsed.as_secs_f64(),
        "offered_per_second": offered,
        "arrived_as_xdp_frames": arrived,
        "refused_ring_full": sending.xdp_send_errors,
        "received_by_napi": receiving.xdp_received,
        "xdp_drops": receiving.xdp_drops,
        "filter_drops": filter_dropped,
        "answered": answered,
        "dropped": dropped,
        "lost_at_socket": after.socket_drops.saturating_sub(before.socket_drops),
        "all_cpu_seconds": all_cpu,
        "steal_seconds": after.steal_seconds - before.steal_seconds,
        "softirq_cpu_seconds": after.softirq_seconds - before.softirq_seconds,
        "receiving_cpu_seconds": receiving_cpu,
        "flood_cpu_seconds": flood_cpu,
        "ksoftirqd_cpu_seconds": after.ksoftirqd_seconds - before.ksoftirqd_seconds,
        "dropped_per_flood_cpu_second": per(flood_cpu),
        "flood_cpu_ns_per_frame": if arrived > 0 { 1e9 * flood_cpu / arrived as f64 } else { 0.0 },
        "sender_thread_cpu_seconds": sent.thread_cpu.as_secs_f64(),
        "dropped_per_cpu_second": per(all_cpu),
        "dropped_per_receiving_cpu_second": per(receiving_cpu),
        "legit_calls": successful + failed,
        "legit_successful": successful,
        "load_average": load_average,
    }))
}

/// The column heads of the lines [`measure_run`] prints.
fn print_heading(options: &Options) {
    println!(
        "\nNIC-like path (live xdp_frames, no skb): {} runs of {} s per set-up and flood",
        options.nic_runs,
        options.nic_flood.as_secs_f64()
    );
    println!(
        "{:<11} {:<16} {:>9} {:>10} {:>9} {:>8} {:>12} {:>8} {:>12} {:>8} {:>12} {:>11}",
        "set-up",
        "flood",
        "offered/s",
        "dropped",
        "ring full",
        "all CPU",
        "dropped/CPUs",
        "flood CPU",
        "dropped/fl.",
        "recv CPU",
        "dropped/recv",
        "legit"
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// The NIC-like path's results: every run, the medians per set-up and flood, and
/// sip-filter's medians against the others'.
pub(super) fn summary(options: &Options, runs: &[Value]) -> Value {
    let mut medians: Vec<Value> = Vec::new();
    let arms = std::iter::once(BARE_DROP).chain(super::SETUPS.iter().map(|s| s.name()));
    for arm in arms {
        for flood in &FLOODS {
            let of: Vec<&Value> = runs
                .iter()
                .filter(|r| r["setup"] == arm && r["flood"] == flood.name)
                .collect();
            if of.is_empty() {
                continue;
            }
            let med = |key: &str| median(of.iter().filter_map(|r| r[key].as_f64()).collect());
            let sum = |key: &str| of.iter().filter_map(|r| r[key].as_u64()).sum::<u64>();
            let (successful, calls) = (sum("legit_successful"), sum("legit_calls"));
            // What the arm costs per frame beyond the floor (the sender's share, and
            // receiving and dropping a frame, cancel out).
            let floor = medians
                .iter()
                .find(|m| m["setup"] == BARE_DROP && m["flood"] == flood.name)
                .and_then(|m| m["flood_cpu_ns_per_frame"].as_f64());
            let per_frame = med("flood_cpu_ns_per_frame");
            medians.push(json!({
                "setup": arm,
                "flood_cpu_ns_per_frame": per_frame,
                "ns_per_frame_above_bare_drop": floor.map(|floor| per_frame - floor),
                "flood": flood.name,
                "runs": of.len(),
                "offered_per_second": med("offered_per_second"),
                "dropped": med("dropped"),
                "refused_ring_full": med("refused_ring_full"),
                "all_cpu_seconds": med("all_cpu_seconds"),
                "receiving_cpu_seconds": med("receiving_cpu_seconds"),
                "flood_cpu_seconds": med("flood_cpu_seconds"),
                "dropped_per_flood_cpu_second": med("dropped_per_flood_cpu_second"),
                "sender_thread_cpu_seconds": med("sender_thread_cpu_seconds"),
                "steal_seconds": med("steal_seconds"),
                "load_average": med("load_average"),
                "dropped_per_cpu_second": med("dropped_per_cpu_second"),
                "dropped_per_receiving_cpu_second": med("dropped_per_receiving_cpu_second"),
                "legit_calls": calls,
                "legit_successful": successful,
                "legit_success_rate": if calls > 0 { successful as f64 / calls as f64 } else { 0.0 },
            }));
        }
    }
    let mut ratios = Vec::new();
    for flood in &FLOODS {
        let of = |setup: Setup| {
            medians
                .iter()
                .find(|m| m["setup"] == setup.name() && m["flood"] == flood.name)
        };
        let Some(ours) = of(Setup::SipFilter) else {
            continue;
        };
        for other in [Setup::Iptables, Setup::Nftables, Setup::Kamailio] {
            let Some(theirs) = of(other) else { continue };
            let times = |key: &str| {
                let theirs = theirs[key].as_f64().unwrap_or(0.0);
                (theirs > 0.0).then(|| ours[key].as_f64().unwrap_or(0.0) / theirs)
            };
            let (all, flood_cpu, receiving) = (
                times("dropped_per_cpu_second"),
                times("dropped_per_flood_cpu_second"),
                times("dropped_per_receiving_cpu_second"),
            );
            let goal = target(other);
            let met = |times: Option<f64>| times.zip(goal).map(|(t, goal)| t >= goal);
            ratios.push(json!({
                "flood": flood.name,
                "versus": other.name(),
                "target_times": goal,
                "times_all_cpus": all,
                "target_met_all_cpus": met(all),
                "times_flood_cpu": flood_cpu,
                "target_met_flood_cpu": met(flood_cpu),
                "times_receiving": receiving,
                "target_met_receiving": met(receiving),
            }));
        }
    }
    json!({
        "method": "BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX out of the client's veth end, one thread pinned to the flood CPU, nice 0) into the server's veth end, which receives xdp_frames in its NAPI poll: sip-filter's XDP program, a bare XDP_DROP (the floor), or an XDP_PASS program before iptables, nftables and Kamailio; dropped = frames handed over (tx_queue xdp_xmit) - flood packets Kamailio answered; all-CPU = delta of user+nice+system+softirq of /proc/stat's cpu line (steal excluded); flood = the sending thread (getrusage RUSAGE_THREAD, the receive path it ran inline included) + ksoftirqd threads + the server namespace's processes; receiving = softirq of all CPUs + the server namespace's processes; medians over the runs",
        "machine": cpu_model(),
        "flood_seconds": options.nic_flood.as_secs_f64(),
        "runs_per_setup_and_flood": options.nic_runs,
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
    })
}

/// The CPU's model name, its clock and the kernel: which machine the figures come from
/// (this section may sit in a report whose other parts another machine wrote).
fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_once(':'))
            .map_or("?".to_string(), |(_, value)| value.trim().to_string())
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{} ({} MHz, vendor {}), {cpus} CPUs, Linux {}",
        field("model name"),
        field("cpu MHz"),
        field("vendor_id"),
        kernel.trim()
    )
}

fn times(value: &Value) -> String {
    value
        .as_f64()
        .map_or("-".into(), |times| format!("{times:.1}x"))
}

/// The NIC-like path's section of BENCHMARKS.md.
pub(super) fn markdown(nic: &Value) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Packet path, NIC-like: `xdp_frame`s, no socket buffer\n\n\
         Measured on: {}.{} The same lab, set-ups, floods and legitimate clients as the \
         AF_PACKET path; only the sender differs. The flood is sent with BPF_PROG_TEST_RUN in live-frames \
         mode (`BPF_F_TEST_XDP_LIVE_FRAMES`) by one thread pinned to CPU {FLOOD_CPU} (nice 0: \
         at 19 it starves behind other work on a shared machine): a small XDP program (`tests/src/livesend.rs`, raw BPF instructions) gives each \
         frame the next of the flood's source addresses, fixes the IPv4 and UDP checksums, \
         and returns XDP_TX, which sends it out of the client's veth end; the server's end \
         receives it as an `xdp_frame` in its NAPI poll, before any socket buffer exists, as \
         a NIC with native XDP hands frames to its program. sip-filter drops there. For \
         iptables, nftables and Kamailio the server's veth runs an XDP_PASS program (veth \
         needs an XDP program, or GRO, to receive `xdp_frame`s at all) and builds the socket \
         buffer after it, as a NIC's driver does for the stack. Kamailio is pinned to CPU \
         {SERVER_CPU}.\n\n\
         Each set-up and flood runs {} times for {} s; each figure is the median over the \
         runs (the legitimate calls are summed). Dropped: the frames the client's veth handed \
         over as `xdp_frame`s (`ethtool -S`: `tx_queue_0_xdp_xmit`; frames refused because \
         the server's 256-frame ring was full, `xdp_xmit_errors`, never arrived and are shown \
         apart) minus the flood packets Kamailio answered. CPU, three ways, from the same \
         snapshots: **all CPUs** is Δ(user + nice + system + softirq) of `/proc/stat`'s \
         `cpu` line, steal excluded: the sender, the receiver, Kamailio, the daemon, the \
         legitimate clients, and whatever else the machine ran meanwhile (on a shared \
         machine, other people's work: the load average is shown); **flood** is what the \
         flood cost, counted per thread: the sending thread (`getrusage(RUSAGE_THREAD)`: \
         its system call, and the receive path, which runs inline in softirq when it \
         re-enables bottom halves), the ksoftirqd threads (receive work the kernel deferred \
         to them) and the server namespace's processes (Kamailio, the daemon); \
         **receiving** is, as in the AF_PACKET section, the softirq time of all CPUs from \
         `/proc/stat` (the NAPI poll, XDP and the stack; sampled in ticks of 10 ms) plus \
         the server namespace's processes. On a real NIC the sender is another machine and \
         the receiving figure is the one a server pays; it is sampled in ticks, so rougher \
         than the flood figure, which adds the sender's cost per frame, about the same for \
         every set-up. The first rows are the floor, \
         not a filter: a bare XDP_DROP program on the server's veth (no legitimate \
         clients: it would drop them too); each set-up's flood CPU per frame above it is \
         what that set-up adds to receiving and dropping a frame, the sender's share \
         cancelled out.\n",
        nic["machine"].as_str().unwrap_or("?"),
        // Set by hand when this section was measured in a run of its own.
        nic["run_note"]
            .as_str()
            .map_or(String::new(), |note| format!(" {note}")),
        nic["runs_per_setup_and_flood"],
        nic["flood_seconds"],
    );
    let redirected = nic["runs"].as_array().into_iter().flatten().any(|run| {
        run["sender"]
            .as_str()
            .is_some_and(|sender| sender != SendMethod::LiveFrames.name())
    });
    if redirected {
        md.push_str(
            "\n**This run's sender was not the live one**: the kernel refused live-frames mode \
             (EPERM), so the flood went through a launcher veth pair in the client's namespace: \
             AF_PACKET frames into one end, the same rewriting program on the other end in \
             native mode, redirecting each frame out of the client's veth end. The server's \
             end receives the same `xdp_frame`s; the flood figures include a socket buffer per \
             frame on the sender's side, so they are not comparable with a live run's.\n",
        );
    }
    md.push_str(
        "| set-up | flood | offered pkt/s | dropped | ring full | CPU s: all CPUs / flood / receiving | dropped per CPU-second: all CPUs | flood | receiving | flood CPU ns per frame (above a bare drop) | load average | legitimate success |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for m in nic["medians"].as_array().into_iter().flatten() {
        let f = |key: &str| m[key].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} | {:.0} | {:.0} | {:.0} ({}) | {:.1} | {} |",
            m["setup"].as_str().unwrap_or("?"),
            m["flood"].as_str().unwrap_or("?"),
            f("offered_per_second"),
            f("dropped"),
            f("refused_ring_full"),
            f("all_cpu_seconds"),
            f("flood_cpu_seconds"),
            f("receiving_cpu_seconds"),
            f("dropped_per_cpu_second"),
            f("dropped_per_flood_cpu_second"),
            f("dropped_per_receiving_cpu_second"),
            f("flood_cpu_ns_per_frame"),
            m["ns_per_frame_above_bare_drop"]
                .as_f64()
                .map_or("-".into(), |ns| format!("{ns:+.0}")),
            f("load_average"),
            if m["legit_calls"].as_u64().unwrap_or(0) > 0 {
                format!(
                    "{} of {} ({:.1}%)",
                    m["legit_successful"],
                    m["legit_calls"],
                    100.0 * f("legit_success_rate")
                )
            } else {
                "-".into()
            },
        );
    }
    md.push_str(
        "\nTargets (issue 16): sip-filter drops at least 5x the packets per CPU-second of \
         iptables and nftables, and 50x Kamailio's.\n\n",
    );
    for r in nic["ratios"].as_array().into_iter().flatten() {
        let verdict = |key: &str| match r[key].as_bool() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "-",
        };
        let _ = writeln!(
            md,
            "- {}: sip-filter drops {} the packets per CPU-second of {} on all CPUs (target {}x: {}), {} per flood CPU-second ({}), {} per receiving CPU-second ({}).",
            r["flood"].as_str().unwrap_or("?"),
            times(&r["times_all_cpus"]),
            r["versus"].as_str().unwrap_or("?"),
            r["target_times"],
            verdict("target_met_all_cpus"),
            times(&r["times_flood_cpu"]),
            verdict("target_met_flood_cpu"),
            times(&r["times_receiving"]),
            verdict("target_met_receiving"),
        );
    }
    super::legit_success_markdown(&mut md, &nic["medians"]);
    md.push('\n');
    md
}
