//! Shared pieces of the privileged tests and the demo: the root check, packet
//! builders, throwaway network namespaces, and the lab built in them (Kamailio, sipp,
//! svmap, the sip-filter binary).

pub mod attack;
pub mod auth_lab;
pub mod container;
pub mod crowdsec;
pub mod daemonbench;
pub mod fuzz_seeds;
pub mod gateway;
pub mod geo;
pub mod guessbench;
pub mod lab;
pub mod livesend;
pub mod netns;
pub mod packets;
pub mod pathbench;
pub mod prometheus;
pub mod record_route;
pub mod replay;

/// Whether this process may load BPF programs and create namespaces. Without them a
/// test fails loudly in CI (`CI=true`) and is skipped, with a message, elsewhere.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root (BPF and network namespaces) and CI=true: refusing to skip");
    }
    eprintln!("SKIPPED {test}: needs root (run `sudo cargo xtask test`)");
    false
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
