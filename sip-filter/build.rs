//! Builds the XDP program (`../sip-filter-ebpf`) so the binary can embed it.
//!
//! Rust's usual recipe (`-Z build-std=core`) needs rustup's `rust-src`; instead this uses
//! Debian's rustc, which ships a prebuilt `core` for `bpfel-unknown-none`, and bpf-linker.
//! `cargo xtask setup` installs both. The object goes to `target/bpf`, its own target
//! directory, since two compilers cannot share one.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Debian's compiler, from the `rustc-web` package.
const BPF_RUSTC: &str = "/usr/bin/rustc";
/// Debian's prebuilt `core` for the BPF target, from `libstd-rust-web-dev-bpf`.
const BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    if let Err(message) = build() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let workspace = manifest_dir
        .parent()
        .ok_or("sip-filter has no parent directory")?;
    let ebpf_dir = workspace.join("sip-filter-ebpf");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join(".cargo/config.toml"),
        workspace.join("sip-filter-common/src"),
        workspace.join("sip-filter-common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    check_toolchain()?;
    let target_dir = workspace.join("target").join("bpf");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&ebpf_dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC", BPF_RUSTC)
        // Debian's rustc is a stable release; the BPF target needs unstable options.
        .env("RUSTC_BOOTSTRAP", "1");
    // What the outer build set for the host compiler must not reach the BPF build
    // (clippy, for one, sets a wrapper that would run rustup's driver on Debian's rustc).
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTC_LINKER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(var);
    }
    // Extra `--cfg`s for the XDP program (`cargo xtask vm-test --expect-verifier-failure`
    // sets one). RUSTFLAGS replaces sip-filter-ebpf/.cargo/config.toml's: repeat those.
    println!("cargo:rerun-if-env-changed=SIP_FILTER_EBPF_CFG");
    if let Ok(cfgs) = env::var("SIP_FILTER_EBPF_CFG") {
        let mut flags = String::from(
            "-C debuginfo=2 -C link-arg=--btf -C link-arg=--cpu-features=+allows-misaligned-mem-access",
        );
        for cfg in cfgs.split_whitespace() {
            flags.push_str(&format!(" --cfg {cfg}"));
        }
        command.env("RUSTFLAGS", flags);
    }
    let status = command
        .status()
        .map_err(|e| format!("could not run cargo to build the XDP program: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the XDP program in {} failed ({status}); see the messages above",
            ebpf_dir.display()
        ));
    }
    let object = target_dir
        .join(TARGET)
        .join("release")
        .join("sip-filter-ebpf");
    std::fs::copy(&object, out_dir.join("sip-filter-ebpf"))
        .map_err(|e| format!("copying {}: {e}", object.display()))?;
    Ok(())
}

fn check_toolchain() -> Result<(), String> {
    let missing_linker = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err();
    if !Path::new(BPF_RUSTC).exists() || !Path::new(BPF_CORE_DIR).exists() || missing_linker {
        return Err(format!(
            "the eBPF toolchain is missing (needs {BPF_RUSTC}, {BPF_CORE_DIR} and bpf-linker on PATH).\n\
             Run `cargo xtask setup` (as root) to install it, then build again."
        ));
    }
    Ok(())
}
