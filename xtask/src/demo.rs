//! The README's first command: sip-filter against a real scanner and a real SIP server.
//! The demo itself is `tests/src/bin/demo.rs`: it needs the sip-filter crates, whose
//! build script needs the toolchain that `setup` installs, so xtask only runs it.

use std::{os::unix::process::ExitStatusExt, process::Command};

use anyhow::Context;

use crate::setup::setup;

pub fn demo() -> anyhow::Result<()> {
    setup(true)?;
    println!("demo: cargo run -p sip-filter-tests --bin demo\n");
    let mut demo = Command::new("cargo")
        .args(["run", "--quiet", "-p", "sip-filter-tests", "--bin", "demo"])
        .spawn()
        .context("could not start cargo run")?;
    // Ctrl-C reaches the demo too (same process group): it stops at its next step and
    // removes its lab. Wait for that rather than returning to the shell meanwhile.
    ignore_sigint();
    let status = demo.wait().context("waiting for the demo")?;
    if status.success() {
        return Ok(());
    }
    // Its own message is printed: only its status is left to pass on.
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    std::process::exit(code)
}

fn ignore_sigint() {
    const SIGINT: i32 = 2;
    const SIG_IGN: usize = 1;
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions; the
    // demo, started before, keeps the default disposition.
    unsafe {
        signal(SIGINT, SIG_IGN);
    }
}

extern "C" {
    fn signal(signal: i32, handler: usize) -> usize;
}
