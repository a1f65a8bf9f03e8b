//! `cargo xtask fuzz`: every fuzz target for a number of executions (or seconds), on
//! every CPU, with the executions counted from libFuzzer's final statistics; the seeds
//! and the kept corpus (`--seed`); CI's short smoke of each target ([`smoke`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::{bench::bench_binary, setup::run, vm::workspace_root};

/// The fuzz targets: `fuzz/fuzz_targets/<name>.rs`, each a `[[bin]]` in
/// `fuzz/Cargo.toml`. A new target is one line here.
pub const TARGETS: &[&str] = &["sip", "pairing", "tls_client_hello", "stream"];

/// Executions in all when neither `--runs` nor `--seconds` is given, shared equally by
/// the targets run.
const DEFAULT_TOTAL_RUNS: u64 = 100_000_000;

/// CI's smoke: executions per target, on the kept corpus (a few seconds each).
const SMOKE_RUNS: u64 = 100_000;

/// An input running longer than this is reported as a hang (libFuzzer's `-timeout`).
const INPUT_TIMEOUT_SECONDS: u32 = 10;

/// The test binaries whose ignored `fuzz_seeds` test writes the tables' payloads.
const SEED_TESTS: [&str; 2] = ["prog_test_run", "answers_test_run"];

/// Captured ClientHellos (sip-filter-common's TLS tests), seeds as they are.
const TLS_FIXTURES: &str = "sip-filter-common/src/tls/data";

/// Where `--record` puts a run: the benchmark's results (key `fuzzing`) and report.
const RESULTS_JSON: &str = "BENCHMARKS.json";
const REPORT_MARKDOWN: &str = "BENCHMARKS.md";

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Executions per target, over all its workers [default: 100,000,000 in all,
    /// shared equally by the targets].
    #[arg(long, conflicts_with = "seconds")]
    runs: Option<u64>,
    /// Seconds per target, instead of a number of executions.
    #[arg(long)]
    seconds: Option<u64>,
    /// Workers per target [default: every CPU].
    #[arg(long)]
    jobs: Option<usize>,
    /// Only this target (repeatable).
    #[arg(long = "target", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
    /// Write the seeds (the test tables' payloads, the captured ClientHellos), then merge
    /// them, the kept corpus and what earlier runs found into a minimal kept corpus
    /// (fuzz/corpus/<target>, libFuzzer's -merge=1); no fuzzing.
    #[arg(long)]
    seed: bool,
    /// Write each target's figures into BENCHMARKS.json (`fuzzing`, in place of the
    /// target's last) and render BENCHMARKS.md again, if nothing crashed.
    #[arg(long, conflicts_with = "seed")]
    record: bool,
}

/// How much of a target to run.
#[derive(Clone, Copy)]
enum Budget {
    Runs(u64),
    Seconds(u64),
}

/// What one target's workers did.
struct Outcome {
    target: String,
    executions: u64,
    elapsed: Duration,
    crashes: Vec<String>,
}

/// Where the fuzz crate and its outputs live.
struct Layout {
    fuzz_dir: PathBuf,
    binaries: PathBuf,
}

impl Layout {
    fn new() -> anyhow::Result<Self> {
        let fuzz_dir = workspace_root()?.join("fuzz");
        let binaries = fuzz_dir.join("target").join(host_triple()?).join("release");
        Ok(Self { fuzz_dir, binaries })
    }
    fn binary(&self, target: &str) -> PathBuf {
        self.binaries.join(target)
    }
    /// The kept corpus, in the repository.
    fn corpus(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("corpus").join(target)
    }
    /// What runs find: new inputs go here, not into the kept corpus.
    fn found(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("target").join("found").join(target)
    }
    fn artifacts(&self, target: &str) -> PathBuf {
        self.fuzz_dir.join("artifacts").join(target)
    }
    fn logs(&self) -> PathBuf {
        self.fuzz_dir.join("target").join("logs")
    }
    fn seeds(&self) -> PathBuf {
        self.fuzz_dir.join("target").join("seeds")
    }
}

pub fn fuzz(args: FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    let layout = Layout::new()?;
    build(&layout)?;
    if args.seed {
        return seed(&layout, &targets);
    }
    let budget = match (args.runs, args.seconds) {
        (_, Some(seconds)) => Budget::Seconds(seconds),
        (Some(runs), None) => Budget::Runs(runs),
        (None, None) => Budget::Runs(DEFAULT_TOTAL_RUNS.div_ceil(targets.len() as u64)),
    };
    let jobs = match args.jobs {
        Some(jobs) => jobs.max(1),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for target in &targets {
        let outcome = run_target(&layout, target, budget, jobs)?;
        println!(
            "fuzz: {target}: {} executions in {:.0?}, {} crashes",
            thousands(outcome.executions),
            outcome.elapsed,
            outcome.crashes.len()
        );
        outcomes.push(outcome);
    }
    let elapsed = started.elapsed();
    report(&outcomes, elapsed, jobs);
    let crashes: Vec<&String> = outcomes.iter().flat_map(|o| &o.crashes).collect();
    if !crashes.is_empty() {
        bail!(
            "fuzzing found {} crashing inputs: {crashes:?} (reproduce one with \
             `cargo +nightly fuzz run TARGET FILE` in fuzz/)",
            crashes.len()
        );
    }
    if args.record {
        record(&outcomes, jobs)?;
    }
    Ok(())
}

/// `--record`: each target's run into BENCHMARKS.json, in place of its last one (the
/// targets not run keep theirs), and BENCHMARKS.md rendered again by the benchmark
/// (which keeps this part when it measures the rest).
fn record(outcomes: &[Outcome], jobs: usize) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let json_path = root.join(RESULTS_JSON);
    let mut doc: Value = if json_path.exists() {
        serde_json::from_str(&fs::read_to_string(&json_path)?)
            .with_context(|| format!("{} is not JSON", json_path.display()))?
    } else {
        json!({})
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (command, date) = (format!("cargo xtask {}", arguments.join(" ")), today()?);
    let mut rows: Vec<Value> = doc["fuzzing"]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| !outcomes.iter().any(|o| row["target"] == o.target.as_str()))
        .cloned()
        .collect();
    rows.extend(outcomes.iter().map(|o| {
        json!({
            "target": o.target,
            "executions": o.executions,
            "seconds": o.elapsed.as_secs_f64(),
            "crashes": o.crashes.len(),
            "workers": jobs,
            "command": command,
            "date": date,
        })
    }));
    rows.sort_by_key(|row| {
        let target = row["target"].as_str().unwrap_or_default();
        TARGETS
            .iter()
            .position(|t| *t == target)
            .unwrap_or(TARGETS.len())
    });
    let sum = |field: &str| {
        rows.iter()
            .filter_map(|row| row[field].as_f64())
            .sum::<f64>()
    };
    let total = json!({
        "target": "total",
        "executions": rows.iter().filter_map(|row| row["executions"].as_u64()).sum::<u64>(),
        "seconds": sum("seconds"),
        "crashes": rows.iter().filter_map(|row| row["crashes"].as_u64()).sum::<u64>(),
    });
    doc["fuzzing"] = json!({ "machine": machine(), "targets": rows, "total": total });
    fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("fuzz: recorded in {}", json_path.display());
    run(bench_binary()
        .current_dir(&root)
        .arg("--render")
        .arg(&json_path)
        .arg("--markdown")
        .arg(root.join(REPORT_MARKDOWN)))
}

/// Today's date (UTC), as `date` gives it.
fn today() -> anyhow::Result<String> {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .context("could not run date")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The CPU model, CPU count and kernel, from /proc.
fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "kernel": kernel.trim(),
    })
}

/// CI's smoke: each target built, then run [`SMOKE_RUNS`] times on its kept corpus.
pub fn smoke() -> anyhow::Result<()> {
    let layout = Layout::new()?;
    build(&layout)?;
    for target in TARGETS {
        let outcome = run_target(&layout, target, Budget::Runs(SMOKE_RUNS), 1)?;
        println!(
            "test: fuzz smoke: {target}: {} executions in {:.1?}",
            thousands(outcome.executions),
            outcome.elapsed
        );
        if !outcome.crashes.is_empty() {
            bail!("fuzz target {target} crashed: {:?}", outcome.crashes);
        }
    }
    Ok(())
}

/// Every target, in release with debug assertions (arithmetic overflow panics) and
/// without a sanitizer: the parsers are safe Rust, and ASan would cost half the
/// executions.
fn build(layout: &Layout) -> anyhow::Result<()> {
    println!("fuzz: cargo +nightly fuzz build --sanitizer none --debug-assertions");
    run(Command::new("cargo")
        .args([
            "+nightly",
            "fuzz",
            "build",
            "--sanitizer",
            "none",
            "--debug-assertions",
        ])
        .current_dir(&layout.fuzz_dir))
}

fn host_triple() -> anyhow::Result<String> {
    let output = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .context("could not run rustc +nightly -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// One target on `jobs` workers at once, each with its own libFuzzer seed, all reading
/// the kept corpus and sharing what they find.
fn run_target(
    layout: &Layout,
    target: &str,
    budget: Budget,
    jobs: usize,
) -> anyhow::Result<Outcome> {
    let (corpus, found, artifacts, logs) = (
        layout.corpus(target),
        layout.found(target),
        layout.artifacts(target),
        layout.logs(),
    );
    for dir in [&corpus, &found, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let base_seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |t| t.as_secs() as u32);
    let started = Instant::now();
    let mut workers: Vec<(Child, PathBuf)> = Vec::new();
    for worker in 0..jobs {
        let limit = match budget {
            // The first worker takes the remainder.
            Budget::Runs(runs) => {
                let share = runs / jobs as u64 + u64::from(worker == 0) * (runs % jobs as u64);
                format!("-runs={share}")
            }
            Budget::Seconds(seconds) => format!("-max_total_time={seconds}"),
        };
        let log = logs.join(format!("{target}-{worker}.log"));
        let log_file =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(layout.binary(target))
            .arg(&found)
            .arg(&corpus)
            .arg(limit)
            .arg(format!("-seed={}", base_seed.wrapping_add(worker as u32)))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("could not start the fuzz target {target}"))?;
        workers.push((child, log));
    }
    let mut outcome = Outcome {
        target: target.to_owned(),
        executions: 0,
        elapsed: Duration::ZERO,
        crashes: Vec::new(),
    };
    for (mut child, log) in workers {
        let status = child.wait().context("waiting for a fuzz worker")?;
        let text =
            fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        outcome.executions += executions(&text).with_context(|| {
            format!(
                "{target}: no execution count in {} ({status})",
                log.display()
            )
        })?;
        if !status.success() {
            outcome.crashes.push(
                written_unit(&text).unwrap_or_else(|| format!("{target}: see {}", log.display())),
            );
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// A worker's executions: its final statistics, else (a crash ends it before them) its
/// last status line (`#1234 NEW ...`).
fn executions(log: &str) -> Option<u64> {
    let stat = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    stat.or_else(|| {
        log.lines().rev().find_map(|line| {
            line.strip_prefix('#')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    })
}

/// The crashing input libFuzzer wrote (`Test unit written to PATH`).
fn written_unit(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        line.split_once("Test unit written to ")
            .map(|(_, path)| path.trim().to_owned())
    })
}

fn report(outcomes: &[Outcome], elapsed: Duration, jobs: usize) {
    println!(
        "\n{:<18} {:>15} {:>10} {:>10} {:>8}",
        "target", "executions", "seconds", "exec/s", "crashes"
    );
    let mut total = 0;
    for o in outcomes {
        let seconds = o.elapsed.as_secs_f64();
        println!(
            "{:<18} {:>15} {:>10.0} {:>10.0} {:>8}",
            o.target,
            thousands(o.executions),
            seconds,
            o.executions as f64 / seconds.max(0.001),
            o.crashes.len()
        );
        total += o.executions;
    }
    println!(
        "{:<18} {:>15} {:>10.0} {:>10} {:>8}",
        "total",
        thousands(total),
        elapsed.as_secs_f64(),
        "",
        outcomes.iter().map(|o| o.crashes.len()).sum::<usize>()
    );
    println!("({jobs} workers per target)");
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `--seed`: the seeds written, then each target's kept corpus remade from them, itself
/// and what runs found.
fn seed(layout: &Layout, targets: &[&str]) -> anyhow::Result<()> {
    let seeds = layout.seeds();
    if seeds.exists() {
        fs::remove_dir_all(&seeds).with_context(|| format!("emptying {}", seeds.display()))?;
    }
    fs::create_dir_all(&seeds)?;
    write_table_seeds(&seeds)?;
    let fixtures = workspace_root()?.join(TLS_FIXTURES);
    for entry in
        fs::read_dir(&fixtures).with_context(|| format!("reading {}", fixtures.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "bin") {
            if let Some(name) = path.file_name() {
                fs::copy(&path, seeds.join(name))?;
            }
        }
    }
    let written = fs::read_dir(&seeds)?.count();
    println!("fuzz: {written} seeds in {}", seeds.display());
    for target in targets {
        merge(layout, target, &seeds)?;
    }
    Ok(())
}

/// The test tables' payloads: the seeds tests run as root would send, written without
/// loading anything.
fn write_table_seeds(seeds: &Path) -> anyhow::Result<()> {
    let mut command = Command::new("cargo");
    command
        .current_dir(workspace_root()?)
        .args(["test", "--package", "sip-filter-tests"]);
    for test in SEED_TESTS {
        command.args(["--test", test]);
    }
    run(command
        .args(["--", "--ignored", "--exact", "fuzz_seeds"])
        .env("SIP_FILTER_FUZZ_SEEDS", seeds))
}

/// Remakes `target`'s kept corpus: the fewest inputs of the kept corpus, what runs found
/// and the seeds that cover every feature they cover together.
fn merge(layout: &Layout, target: &str, seeds: &Path) -> anyhow::Result<()> {
    let (corpus, found) = (layout.corpus(target), layout.found(target));
    let merged = layout.fuzz_dir.join("target").join("merged").join(target);
    if merged.exists() {
        fs::remove_dir_all(&merged)?;
    }
    for dir in [&corpus, &found, &merged] {
        fs::create_dir_all(dir)?;
    }
    run(Command::new(layout.binary(target))
        .arg("-merge=1")
        .arg(&merged)
        .arg(&corpus)
        .arg(&found)
        .arg(seeds)
        .stderr(Stdio::null()))?;
    fs::remove_dir_all(&corpus)?;
    fs::rename(&merged, &corpus)?;
    let (files, bytes) = fs::read_dir(&corpus)?.try_fold((0, 0), |(n, size), entry| {
        anyhow::Ok((n + 1, size + entry?.metadata()?.len()))
    })?;
    println!(
        "fuzz: {target}: kept corpus of {files} inputs, {} KB",
        bytes.div_ceil(1024)
    );
    Ok(())
}
