//! The README's test command: everything CI runs.

use std::process::Command;

use crate::setup::{run, setup};

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
    // One test binary at a time: the network tests share the host's network stack.
    run(Command::new("cargo").args(["test", "--workspace", "--", "--test-threads=1"]))?;
    println!("test: the parser's fuzz target builds (cargo +nightly fuzz build parse)");
    run(Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "parse"])
        .current_dir("fuzz"))?;
    if !args.no_vm {
        crate::vm::vm_test(crate::vm::VmArgs::default())?;
    }
    Ok(())
}
