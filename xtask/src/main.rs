//! `cargo xtask`: what cargo cannot do alone. Each command installs what it needs first.

mod bench;
mod deb;
mod demo;
mod fuzz;
mod profile;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sip-filter's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up, then measure the XDP program's per-packet cost by packet class with
    /// BPF_PROG_TEST_RUN, beside reference programs (a bare XDP_DROP; header parsing
    /// only): medians over several runs, and ratios. Needs root.
    Bench(bench::BenchArgs),
    /// Build the Debian package (target/debian/sip-filter_*.deb): release build, man
    /// pages and shell completions, `cargo deb`, then lintian, which must find no error.
    /// Installs cargo-deb and lintian first.
    Deb(deb::DebArgs),
    /// Show sip-filter at work, in network namespaces: a real scanner (sipvicious) and a
    /// legitimate client (sipp) against a real SIP server (Kamailio), without and with the
    /// filter. Sets up first; needs root.
    Demo,
    /// Run every fuzz target (fuzz/fuzz_targets) on every CPU, by default 10^8
    /// executions in all, and report the executions and crashes per target; `--seed`
    /// remakes the kept corpus (fuzz/corpus) from the test tables. Needs rustup's nightly.
    Fuzz(fuzz::FuzzArgs),
    /// Run the benchmark's packet class (`--class`) and sample every CPU with perf: the
    /// XDP program's time per function and per machine instruction (annotated listings
    /// in target/profile). Needs root.
    Profile(profile::ProfileArgs),
    /// Install the eBPF toolchain (Debian's rustc with a BPF core, LLVM 22, bpf-linker) and,
    /// with --test-tools, the tools the tests drive. Quick when everything is present.
    Setup {
        /// Also install the test tools (sipvicious, sipp, Kamailio, qemu, ...).
        #[arg(long)]
        test_tools: bool,
    },
    /// Set up, then run every test: formatting, clippy, unit and property tests, the
    /// real XDP program in the kernel, network-namespace tests, the 6.1 kernel in a VM.
    Test(test::TestArgs),
    /// Boot Debian 12's 6.1 kernel in qemu and run the kernel-side tests there.
    VmTest(vm::VmArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::bench(args),
        Command::Profile(args) => profile::profile(args),
        Command::Deb(args) => deb::deb(args),
        Command::Demo => demo::demo(),
        Command::Fuzz(args) => fuzz::fuzz(args),
        Command::Setup { test_tools } => setup::setup(test_tools),
        Command::Test(args) => test::test(args),
        Command::VmTest(args) => vm::vm_test(args),
    }
}
