//! The README's benchmark command. The benchmark itself is `tests/src/bin/bench.rs`: it
//! needs the sip-filter crates, whose build script needs the toolchain that `setup`
//! installs, so xtask only runs it.

use std::process::Command;

use crate::setup::{run, setup};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A quick pass (3 runs of 10,000 repeats) instead of 7 runs of 1,000,000.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (the median is reported).
    #[arg(long)]
    runs: Option<usize>,
    /// BPF_PROG_TEST_RUN repeats per run.
    #[arg(long)]
    repeat: Option<u32>,
    /// Also write the results, machine-readable, to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    setup(false)?;
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
    if let Some(json) = args.json {
        forwarded.extend(["--json".to_string(), json]);
    }
    println!(
        "bench: cargo run --release -p sip-filter-tests --bin bench -- {}\n",
        forwarded.join(" ")
    );
    run(Command::new("cargo")
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "sip-filter-tests",
            "--bin",
            "bench",
            "--",
        ])
        .args(&forwarded))
}
