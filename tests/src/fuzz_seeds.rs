//! Seeds for the fuzz targets (`cargo xtask fuzz --seed`): the payloads of the frames the
//! test tables send, written one file each into the directory `SIP_FILTER_FUZZ_SEEDS`
//! names. `cargo xtask fuzz` merges them into each target's kept corpus (`-merge=1`).

use std::path::PathBuf;

/// The environment variable naming the directory the seeds go to.
pub const SEEDS_DIR_VARIABLE: &str = "SIP_FILTER_FUZZ_SEEDS";

/// The transport payload (UDP or TCP) of an Ethernet frame; None if it has none.
pub fn transport_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let payload = match packet.transport? {
        etherparse::TransportSlice::Udp(udp) => udp.payload().to_vec(),
        etherparse::TransportSlice::Tcp(tcp) => tcp.payload().to_vec(),
        _ => return None,
    };
    (!payload.is_empty()).then_some(payload)
}

/// FNV-1a: a stable file name for a seed.
fn name_of(seed: &[u8]) -> String {
    let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Writes each frame's transport payload and each payload given as such; returns how
/// many files were written. Panics (a test's way) without `SIP_FILTER_FUZZ_SEEDS`.
pub fn write_seeds(frames: &[Vec<u8>], payloads: &[Vec<u8>]) -> usize {
    let dir = PathBuf::from(
        std::env::var_os(SEEDS_DIR_VARIABLE)
            .unwrap_or_else(|| panic!("{SEEDS_DIR_VARIABLE} names no directory")),
    );
    std::fs::create_dir_all(&dir).expect("the seeds directory can be made");
    let mut written = 0;
    for seed in frames
        .iter()
        .filter_map(|frame| transport_payload(frame))
        .chain(payloads.iter().filter(|p| !p.is_empty()).cloned())
    {
        std::fs::write(dir.join(name_of(&seed)), &seed).expect("a seed is written");
        written += 1;
    }
    written
}
