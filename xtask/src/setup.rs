//! Installs what building and testing need, printing each step; a quick no-op when all
//! is present. See shared/TOOLCHAIN.md for why this toolchain: rustup has no `rust-src`
//! here, so `-Z build-std` cannot work, and Debian's rustc ships a prebuilt BPF `core`.

use std::process::Command;

use anyhow::{bail, Context};

/// Debian packages the eBPF build needs.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Debian packages the tests drive: real scanners, SIP peers, network tools, a VM.
pub const TEST_PACKAGES: &[&str] = &[
    "sipvicious",
    "sip-tester",
    "kamailio",
    // Kamailio's TLS module: the TLS lab (`tests/tests/e2e_tls.rs`) serves SIP over TLS.
    "kamailio-tls-modules",
    "iptables",
    "nftables",
    "iproute2",
    // ethtool: the labs turn veth transmit checksum offload off (see
    // `tests/src/netns.rs`, `without_tx_checksum_offload`).
    "ethtool",
    "util-linux",
    "procps",
    "tcpdump",
    // dumpcap: captures as pcapng (tcpdump writes pcap only), for the replay test.
    "wireshark-common",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // Prometheus and promtool: the exporter is scraped by a real server, the alert
    // rules checked and unit-tested.
    "prometheus",
    // CrowdSec's Local API and cscli: the bouncer is tested against a real one. Its
    // postinst registers with CrowdSec's online API unless told not to: see
    // `preseed_crowdsec`.
    "crowdsec",
    // fail2ban: the password-guessing benchmark and its test run it beside sip-filter
    // (`tests/src/guessbench.rs`), its server in a lab's namespace; the package's own
    // service is stopped (`stop_fail2ban_service`).
    "fail2ban",
    // openssl: the TLS server, client and certificate of the transports lab.
    "openssl",
    // hping3: the transports lab's SYN flood.
    "hping3",
    // The Debian package's checker (`cargo xtask deb`, tests/tests/package.rs).
    LINTIAN,
    // The package's test boots a Debian 12 root with systemd in a container.
    "debootstrap",
    "systemd-container",
];

pub const LINTIAN: &str = "lintian";

/// cargo-deb, pinned: its asset and maintainer-script handling shape the package.
const CARGO_DEB_VERSION: &str = "3.8.0";

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup(test_tools: bool) -> anyhow::Result<()> {
    let mut wanted: Vec<&str> = BUILD_PACKAGES.to_vec();
    if test_tools {
        wanted.extend_from_slice(TEST_PACKAGES);
        preseed_crowdsec()?;
    }
    install_packages(&wanted)?;
    install_bpf_linker()?;
    if test_tools {
        install_cargo_fuzz()?;
        install_cargo_deb()?;
    }
    println!("setup: done");
    Ok(())
}

/// Debian's crowdsec postinst registers with CrowdSec's online API, which fails on a
/// host without Internet; this file, present before the install, opts out
/// (README.Debian). A failed install recovers with it and `dpkg --configure -a`.
fn preseed_crowdsec() -> anyhow::Result<()> {
    let file = std::path::Path::new("/etc/crowdsec/online_api_credentials.yaml");
    if file.exists() || is_installed("crowdsec") || !is_root() {
        return Ok(());
    }
    println!(
        "setup: {} (no online API: CrowdSec's postinst then works offline)",
        file.display()
    );
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    std::fs::write(file, "# no online API: offline host\n")
        .with_context(|| format!("writing {}", file.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn install_packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present ({})", wanted.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Run this as root (sudo cargo xtask setup), or install them with: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("setup: apt-get update");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    println!("setup: apt-get install {}", missing.join(" "));
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing Debian packages failed: see apt-get's messages above")?;
    if missing.contains(&"fail2ban") {
        stop_fail2ban_service()?;
    }
    Ok(())
}

/// Debian's fail2ban enables and starts its service (an sshd jail, banning with the
/// host's own firewall); the tests run only its server, in a lab's namespace. Stopped
/// and disabled where systemd runs (elsewhere the package started nothing).
fn stop_fail2ban_service() -> anyhow::Result<()> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    println!("setup: systemctl disable --now fail2ban (the tests run their own)");
    run(Command::new("systemctl").args(["disable", "--now", "fail2ban"]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    if reports_version(
        Command::new("bpf-linker").arg("--version"),
        BPF_LINKER_VERSION,
    ) {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} (built against LLVM 22, about a minute)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        // Without it the link fails with `unable to find library -lLLVM`.
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
    .context("installing bpf-linker failed; is ~/.cargo/bin on PATH?")
}

/// Whether `command` (a tool's `--version`) runs and names `version`.
fn reports_version(command: &mut Command, version: &str) -> bool {
    command
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(version))
        .unwrap_or(false)
}

/// cargo-fuzz, to build the parser's fuzz target (with rustup's nightly toolchain).
fn install_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: cargo install cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz failed")
}

/// cargo-deb, which `cargo xtask deb` builds the package with.
pub fn install_cargo_deb() -> anyhow::Result<()> {
    if reports_version(
        Command::new("cargo").args(["deb", "--version"]),
        CARGO_DEB_VERSION,
    ) {
        println!("setup: cargo-deb {CARGO_DEB_VERSION} present");
        return Ok(());
    }
    println!("setup: cargo install cargo-deb {CARGO_DEB_VERSION} (about 6 minutes to compile on 2 busy cores)");
    run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
    .context("installing cargo-deb failed; is ~/.cargo/bin on PATH?")
}

pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
