//! The batch map commands (`sip_filter::bpf_sys`) at the maps' scale: a million entries
//! written, read back and removed, in the real program's blocklist (hash map) and deny
//! trie (LPM trie), and the trie's entries counted by the kernel (`bpf_sys::trie_len`)
//! through all of it. Loads the real program; needs root.

use std::time::Instant;

use aya::maps::{lpm_trie::Key, MapData};
use sip_filter::{bpf_sys, Filter, Settings};
use sip_filter_common::maps::{names, Ban, BanReason, ListEntry, SourceKey};
use sip_filter_tests::{assert_trie_len, privileged};

const ENTRIES: u32 = 1_000_000;

fn map_data<'a>(filter: &'a Filter, name: &'static str) -> &'a MapData {
    bpf_sys::hash_or_trie(filter.map(name).expect("the map")).expect("a hash map or trie")
}

#[test]
fn a_million_entries_round_trip_through_the_batch_commands() {
    if !privileged("a_million_entries_round_trip_through_the_batch_commands") {
        return;
    }
    let mut filter = Filter::load().expect("the XDP program loads");
    filter.configure(&Settings::default()).expect("configured");

    // The blocklist: each ban's expiry tells it apart.
    let keys: Vec<SourceKey> = (0..ENTRIES)
        .map(|i| sip_filter_common::sip::mapped_ipv4((0x0b00_0000 + i).to_be_bytes()))
        .collect();
    let bans: Vec<Ban> = (0..ENTRIES)
        .map(|i| Ban::new(u64::from(i) + 1, BanReason::Feed))
        .collect();
    let bans_map = map_data(&filter, names::BANS);
    let started = Instant::now();
    assert_eq!(
        bpf_sys::update_many(bans_map, &keys, &bans).expect("written"),
        keys.len()
    );
    let written = started.elapsed();
    let started = Instant::now();
    let mut read: Vec<(SourceKey, Ban)> = bpf_sys::entries(bans_map).expect("read");
    let took = started.elapsed();
    println!("{ENTRIES} bans: written in {written:.2?}, read in {took:.2?}");
    read.sort_unstable_by_key(|(key, _)| *key);
    let expected: Vec<(SourceKey, Ban)> = keys.iter().copied().zip(bans.iter().copied()).collect();
    assert!(read == expected, "the bans read back differ");

    // The deny trie: /28s, each with its own expiry.
    let nets: Vec<Key<[u8; 4]>> = (0..ENTRIES)
        .map(|i| Key::new(28, (0x2000_0000u32 + (i << 4)).to_be_bytes()))
        .collect();
    let entries: Vec<ListEntry> = (0..ENTRIES)
        .map(|i| ListEntry::from_operator(u64::from(i) + 1, BanReason::Feed as u32))
        .collect();
    let deny = map_data(&filter, names::DENY_V4);
    let started = Instant::now();
    assert_eq!(
        bpf_sys::update_many(deny, &nets, &entries).expect("written"),
        nets.len()
    );
    let written = started.elapsed();
    let started = Instant::now();
    let mut read: Vec<(Key<[u8; 4]>, ListEntry)> = bpf_sys::entries(deny).expect("read");
    let took = started.elapsed();
    let started = Instant::now();
    assert_trie_len(deny, nets.len(), "written");
    println!(
        "{ENTRIES} deny entries: written in {written:.2?}, read in {took:.2?}, counted in {:.2?}",
        started.elapsed()
    );
    assert_eq!(read.len(), nets.len());
    read.sort_unstable_by_key(|(key, _)| (key.data(), key.prefix_len()));
    for (i, (key, entry)) in read.iter().enumerate() {
        assert_eq!(
            (key.prefix_len(), key.data(), *entry),
            (nets[i].prefix_len(), nets[i].data(), entries[i]),
            "entry {i}"
        );
    }

    // Written again: replaced, not added. A /27 takes the place of the node that joins
    // two /28s (which the kernel does not count) and counts; removed, it leaves it.
    assert_eq!(
        bpf_sys::update_many(deny, &nets, &entries).expect("written"),
        nets.len()
    );
    assert_trie_len(deny, nets.len(), "written again");
    let joining = [Key::new(27, 0x2000_0000u32.to_be_bytes())];
    bpf_sys::update_many(deny, &joining, &entries[..1]).expect("written");
    assert_trie_len(deny, nets.len() + 1, "a /27 over two /28s");
    assert_eq!(bpf_sys::delete_many(deny, &joining).expect("removed"), 1);
    assert_trie_len(deny, nets.len(), "the /27 removed");

    // Removal: half of each, then the rest with a key already gone in the middle.
    let half = keys.len() / 2;
    assert_eq!(
        bpf_sys::delete_many(bans_map, &keys[..half]).expect("removed"),
        half
    );
    assert_eq!(
        bpf_sys::delete_many(deny, &nets[..half]).expect("removed"),
        half
    );
    assert_trie_len(deny, nets.len() - half, "half removed");
    let rest_and_gone: Vec<SourceKey> = keys[half..]
        .iter()
        .copied()
        .chain(std::iter::once(keys[0]))
        .collect();
    assert_eq!(
        bpf_sys::delete_many(bans_map, &rest_and_gone).expect("removed"),
        keys.len() - half,
        "the key already gone is skipped"
    );
    assert_eq!(
        bpf_sys::delete_many(deny, &nets[half..]).expect("removed"),
        nets.len() - half
    );
    assert!(bpf_sys::entries::<SourceKey, Ban>(bans_map)
        .expect("read")
        .is_empty());
    assert!(bpf_sys::entries::<Key<[u8; 4]>, ListEntry>(deny)
        .expect("read")
        .is_empty());
    assert_trie_len(deny, 0, "all removed");

    // A map of other sizes is refused, not overrun.
    assert!(bpf_sys::entries::<[u8; 4], Ban>(bans_map).is_err());
}
