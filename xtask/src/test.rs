//! The README's test command: everything CI runs.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{bail, Context};

use crate::{
    setup::{run, setup},
    vm::{target_dir, test_executables, workspace_root},
};

/// The test package's directory: cargo runs its tests from there.
const TEST_PACKAGE_DIR: &str = "tests";

/// Test files that only run the programs with BPF_PROG_TEST_RUN (or `replay`, which does
/// the same): no network namespace, no fixed address, pins of their own. They run one at
/// a time in a second process beside the network tests, which mostly wait on their labs,
/// and the 6.1 VM after them: about 20 of CI's minutes, taken off its length.
const BESIDE_THE_LABS: [&str; 10] = [
    "prog_test_run",
    "answers_test_run",
    "countries_test_run",
    "adversarial_replay",
    "replay_captures",
    "default_limits",
    "batch_maps",
    "countries_size",
    "destinations_test_run",
    "tls_test_run",
];

/// The 6.1 VM's hard timeout in `cargo xtask test`, beside everything else on a busy
/// machine (`cargo xtask vm-test` alone: `vm::DEFAULT_TIMEOUT_SECS`).
const VM_TIMEOUT_IN_CI_SECS: u64 = 1500;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the 6.1 kernel VM test (it boots qemu with software emulation).
    #[arg(long)]
    no_vm: bool,
}

pub fn test(args: TestArgs) -> anyhow::Result<()> {
    setup(true)?;
    println!("test: cargo fmt --check");
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo").args([
        "fmt",
        "--check",
        "--manifest-path",
        "sip-filter-ebpf/Cargo.toml",
    ]))?;
    println!("test: cargo clippy");
    run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("test: cargo test (unit, property, kernel and network-namespace tests)");
    let workspace = workspace_root()?;
    println!("test: building every test");
    let built = Command::new("cargo")
        .current_dir(&workspace)
        .args(["test", "--workspace", "--no-run"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo to build the tests")?;
    if !built.status.success() {
        bail!(
            "building the tests failed ({}): see cargo's messages above",
            built.status
        );
    }
    let beside = test_executables(&String::from_utf8_lossy(&built.stdout), &BESIDE_THE_LABS)?;
    let log = target_dir(&workspace).join("tests-beside-the-labs.log");
    let tests_dir = workspace.join(TEST_PACKAGE_DIR);
    // Then a short run of each fuzz target. Beside them, from the start, the 6.1 VM: qemu
    // keeps a CPU busy for minutes, the tests beside the labs the other, while the labs
    // mostly wait.
    let beside_the_labs = thread::spawn(move || {
        let tests = run_binaries(&beside, &tests_dir, &log);
        println!("test: a short run of each fuzz target on its kept corpus");
        (tests, crate::fuzz::smoke())
    });
    let vm = (!args.no_vm).then(|| {
        thread::spawn(|| {
            let mut vm = crate::vm::VmArgs::default();
            vm.console_on_failure_only = true;
            // Its own tests take 5-9 minutes under qemu on an idle machine; CI's is busy.
            vm.timeout = VM_TIMEOUT_IN_CI_SECS;
            crate::vm::vm_test(vm)
        })
    });
    // One test binary at a time: the network tests share the host's network stack. The
    // whole workspace, as built above (a narrower selection would unify features
    // differently, and build again).
    // Every test binary runs even after one fails: one failure must not hide the rest.
    let mut labs = Command::new("cargo");
    labs.current_dir(&workspace)
        .args(["test", "--no-fail-fast", "--workspace", "--lib", "--bins"]);
    for target in lab_test_targets(&workspace)? {
        labs.args(["--test", &target]);
    }
    labs.args(["--", "--test-threads=1"]);
    let labs_passed = run(&mut labs).and_then(|()| {
        run(Command::new("cargo")
            .current_dir(&workspace)
            .args(["test", "--workspace", "--doc"]))
    });
    let (tests, fuzzed) = beside_the_labs
        .join()
        .map_err(|_| anyhow::anyhow!("the thread running the tests beside the labs panicked"))?;
    let (failed, printed) = tests?;
    println!("test: the tests run beside the labs:\n{printed}");
    let vm = vm
        .map(|vm| {
            vm.join()
                .map_err(|_| anyhow::anyhow!("the thread running the 6.1 VM panicked"))
        })
        .transpose()?;
    labs_passed?;
    fuzzed?;
    if let Some(vm) = vm {
        vm?;
    }
    if !failed.is_empty() {
        bail!(
            "tests failed beside the labs: {} (their output is above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The test package's test files (tests/tests/*.rs) but those run beside the labs.
fn lab_test_targets(workspace: &Path) -> anyhow::Result<Vec<String>> {
    let dir = workspace.join(TEST_PACKAGE_DIR).join("tests");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .filter(|stem| !BESIDE_THE_LABS.contains(&stem.as_str()))
        .collect();
    targets.sort();
    Ok(targets)
}

/// Runs test executables one after the other, from `dir`, each one's output through
/// `log`; returns those that failed and what all of them printed (for the caller to show
/// once, so that it does not interleave with the labs').
fn run_binaries<'a>(
    binaries: &[(&'a str, PathBuf)],
    dir: &Path,
    log: &Path,
) -> anyhow::Result<(Vec<&'a str>, String)> {
    let mut failed = Vec::new();
    let mut printed = String::new();
    for (name, executable) in binaries {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let status = Command::new(executable)
            .current_dir(dir)
            .arg("--test-threads=1")
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("could not start {}", executable.display()))?;
        printed.push_str(&format!("test: {name} ({status})\n"));
        printed.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        if !status.success() {
            failed.push(*name);
        }
    }
    Ok((failed, printed))
}
