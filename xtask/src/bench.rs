//! The README's benchmark command. The benchmark itself is `tests/src/bin/bench.rs`: it
//! needs the sip-filter crates, whose build script needs the toolchain that `setup`
//! installs, so xtask only runs it. It writes BENCHMARKS.md and BENCHMARKS.json at the
//! top of the workspace unless told otherwise.

use std::process::Command;

use crate::setup::{install_packages, run, setup};

/// Debian packages the packet-path benchmark drives (also in `setup::TEST_PACKAGES`).
const PATH_PACKAGES: &[&str] = &[
    "kamailio",
    "sip-tester",
    "iptables",
    "nftables",
    "iproute2",
    "util-linux",
];

/// Debian packages the password-guessing comparison drives (also in
/// `setup::TEST_PACKAGES`).
const GUESSING_PACKAGES: &[&str] = &["kamailio", "sip-tester", "fail2ban", "iptables"];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A quick pass (3 runs of 10,000 repeats, small tables, 1 s floods) instead of 7
    /// runs of 1,000,000, tables of a million entries and 10 s floods.
    #[arg(long)]
    quick: bool,
    /// Leave out the packet-path benchmark (floods through sip-filter, iptables,
    /// nftables and Kamailio in network namespaces).
    #[arg(long)]
    no_path: bool,
    /// Leave out the state-growth figures (large blocklists and source tables).
    #[arg(long)]
    no_growth: bool,
    /// Leave out the password-guessing comparison (a brute force of Kamailio stopped by
    /// sip-filter, then by fail2ban).
    #[arg(long)]
    no_guessing: bool,
    /// Only the password-guessing comparison, written into the earlier results of the
    /// JSON file, the report rendered again.
    #[arg(long, conflicts_with = "no_guessing")]
    guessing_only: bool,
    /// Runs per set-up and flood of the NIC-like packet path (live `xdp_frame`s; the
    /// median is reported); 0 leaves it out.
    #[arg(long)]
    nic_runs: Option<usize>,
    /// Only the packet paths (AF_PACKET and NIC-like): no per-packet tables, state
    /// growth or password guessing.
    #[arg(long, conflicts_with = "guessing_only")]
    path_only: bool,
    /// Leave out the daemon with a million entries (a million bans and deny entries
    /// imported, then a Prometheus scrape and the stop timed).
    #[arg(long)]
    no_daemon: bool,
    /// Only the daemon with a million entries, written into the earlier results of the
    /// JSON file, the report rendered again.
    #[arg(long, conflicts_with_all = ["no_daemon", "guessing_only"])]
    daemon_only: bool,
    /// Runs per figure (the median is reported).
    #[arg(long)]
    runs: Option<usize>,
    /// BPF_PROG_TEST_RUN repeats per run.
    #[arg(long)]
    repeat: Option<u32>,
    /// Where to write the results, machine-readable.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.json")]
    json: String,
    /// Where to write the report: method, machine, tables, targets.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    markdown: String,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    setup(false)?;
    if !args.no_path && !args.guessing_only && !args.daemon_only {
        install_packages(PATH_PACKAGES)?;
    }
    if !args.no_guessing && !args.path_only && !args.daemon_only {
        install_packages(GUESSING_PACKAGES)?;
    }
    let mut forwarded = Vec::new();
    if args.quick {
        forwarded.push("--quick".to_string());
    }
    if let Some(runs) = args.runs {
        forwarded.extend(["--runs".to_string(), runs.to_string()]);
    }
    if let Some(repeat) = args.repeat {
        forwarded.extend(["--repeat".to_string(), repeat.to_string()]);
    }
    if let Some(runs) = args.nic_runs {
        forwarded.extend(["--nic-runs".to_string(), runs.to_string()]);
    }
    if args.path_only {
        forwarded.push("--path-only".to_string());
    }
    if args.no_path {
        forwarded.push("--no-path".to_string());
    }
    if args.no_growth {
        forwarded.push("--no-growth".to_string());
    }
    if args.no_guessing {
        forwarded.push("--no-guessing".to_string());
    }
    if args.guessing_only {
        forwarded.push("--guessing-only".to_string());
    }
    if args.no_daemon {
        forwarded.push("--no-daemon".to_string());
    }
    if args.daemon_only {
        forwarded.push("--daemon-only".to_string());
    }
    // Relative to where the command was run, not to tests/ (where cargo runs the binary).
    let here = std::env::current_dir()?;
    for (flag, file) in [("--json", &args.json), ("--markdown", &args.markdown)] {
        forwarded.extend([flag.to_string(), here.join(file).display().to_string()]);
    }
    println!(
        "bench: cargo run --release -p sip-filter-tests --bin bench -- {}\n",
        forwarded.join(" ")
    );
    run(bench_binary().args(&forwarded))
}

/// `cargo run` of the benchmark's binary (tests/src/bin/bench.rs), release build, ready
/// for its arguments: the benchmark runs it, and so does `fuzz --record` to render
/// BENCHMARKS.md.
pub fn bench_binary() -> Command {
    let mut command = Command::new("cargo");
    command.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "sip-filter-tests",
        "--bin",
        "bench",
        "--",
    ]);
    command
}
