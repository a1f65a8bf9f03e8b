//! The two BPF map commands aya 0.14 does not offer: `BPF_MAP_GET_NEXT_KEY` from a
//! given key (which tells whether an LPM trie holds that exact prefix) and
//! `BPF_MAP_UPDATE_BATCH` (a million hash map entries in a few system calls).

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::Pod;

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `bpf_attr` for the element commands (`map_fd`, `key`, `next_key`, `flags`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// `bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a `repr(C)` prefix of `bpf_attr` for `command`, zero-filled
    // where unused; the pointers in it point to live buffers of the map's sizes.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The key after `key` (the first key when `key` is None); None at the end.
pub fn next_key<K: Pod>(map: impl AsFd, key: Option<&K>) -> io::Result<Option<K>> {
    // SAFETY: `K: Pod`: every bit pattern, zeros included, is a valid K.
    let mut next: K = unsafe { std::mem::zeroed() };
    let mut attr = ElemAttr {
        map_fd: map.as_fd().as_raw_fd() as u32,
        key: key.map_or(0, |key| key as *const K as u64),
        next_key: &mut next as *mut K as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(()) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `keys[i] -> values[i]` in batches (hash maps; not LPM tries, which have no
/// batch operations). Returns how many were written; an error says after how many.
pub fn update_batch<K: Pod, V: Pod>(
    map: impl AsFd,
    keys: &[K],
    values: &[V],
) -> Result<usize, (usize, io::Error)> {
    /// Entries per system call: the kernel copies them in one go.
    const BATCH: usize = 64 * 1024;
    let fd = map.as_fd().as_raw_fd() as u32;
    let mut done = 0;
    for (keys, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len().min(values.len()) as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        // The kernel reports how many it wrote, also on error.
        done += attr.count as usize;
        result.map_err(|e| (done, e))?;
    }
    Ok(done)
}
