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
pub mod loaded;
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

/// The kernel's count of `trie`'s entries (`bpf_sys::trie_len`) is `expected`: from
/// 6.4, which reports a map's memory in use; before (Debian 12's 6.1, in
/// `cargo xtask vm-test`), trie_len must say that it cannot tell rather than guess.
pub fn assert_trie_len(trie: &aya::maps::MapData, expected: usize, when: &str) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release.split(['.', '-']).map(|n| n.trim().parse::<u32>());
    let version = (
        numbers.next().and_then(Result::ok).unwrap_or(0),
        numbers.next().and_then(Result::ok).unwrap_or(0),
    );
    match sip_filter::bpf_sys::trie_len(trie).expect("trie_len") {
        Some(entries) => {
            assert!(version >= (6, 4), "kernel {release}: trie_len guessed");
            assert_eq!(entries, expected as u64, "{when}");
        }
        None => assert!(
            version < (6, 4),
            "kernel {release} reports memory in use, but trie_len could not tell ({when})"
        ),
    }
}
