//! The BPF map commands aya 0.14 does not offer: `BPF_MAP_GET_NEXT_KEY` from a given
//! key (which tells whether an LPM trie holds that exact prefix), and the batch
//! commands (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`,
//! kernel 5.6+ for hash maps; LPM tries gained the kernel's generic ones later, 6.18
//! has them): a million entries in a few system calls, where aya's iterators make two
//! per entry. Where the kernel lacks them for a map, each falls back to one key at a
//! time. Also what aya's `LinkInfo` does not tell: the interface an XDP link is on, and
//! how many entries an LPM trie holds without reading them ([`trie_len`]).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    sync::{Mutex, PoisonError},
};

use aya::{
    maps::{lpm_trie::Key, HashMap, IterableMap, LpmTrie, Map, MapData, MapError},
    sys::SyscallError,
    Pod,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel's `ENOTSUPP` (not `EOPNOTSUPP`): the map type has no batch operations.
const ENOTSUPP: i32 = 524;
/// Entries per batch system call: the kernel copies them in one go.
const BATCH: usize = 64 * 1024;

/// `bpf_attr` for the element commands (`map_fd`, `key`, `value` or `next_key`, `flags`).
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
    bpf_returning(command, attr).map(|_| ())
}

/// [`bpf`], returning what the command returns (a new file descriptor for some). Public
/// for the benchmark's live-frames sender, which loads and runs programs of its own:
/// `attr` must be a `repr(C)` prefix of `bpf_attr` for `command`.
pub fn bpf_returning<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
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
    Ok(result)
}

/// `bpf_attr` for `BPF_MAP_CREATE` (the fields before `inner_map_fd`).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;

/// How many entries the LPM trie `map` holds, without reading them: reading a trie
/// costs about 0.8 µs an entry (the kernel has no batch lookup of its own for tries, and
/// its generic one walks down from the root for each key), where this costs one read of
/// the map's `/proc/self/fdinfo`. Since Linux 6.4 the `memlock` the kernel reports there
/// is the trie's memory in use, its entry count times a node's size (intermediate nodes
/// are not counted); that size is measured once per key and value size on a scratch
/// trie, which also tells whether this kernel reports memory in use at all. None where
/// it does not (Linux 6.1 reports the capacity's footprint): the caller reads the
/// entries instead.
pub fn trie_len(map: &MapData) -> Result<Option<u64>, MapError> {
    let info = map.info()?;
    let Some(node_size) = trie_node_size(info.key_size(), info.value_size()) else {
        return Ok(None);
    };
    let memlock = fd_memlock(map.fd().as_fd()).map_err(syscall_error("fdinfo memlock"))?;
    Ok((memlock % node_size == 0).then_some(memlock / node_size))
}

/// A trie's key and value sizes, and the bytes it reports in use per entry (None: its
/// kernel does not report use).
type NodeSize = ((u32, u32), Option<u64>);

/// The bytes a trie with keys of `key_size` and values of `value_size` reports in use
/// per entry; None if this kernel does not report use. Measured once per process.
fn trie_node_size(key_size: u32, value_size: u32) -> Option<u64> {
    // By key and value size: the filter's tries have two shapes.
    static MEASURED: Mutex<Vec<NodeSize>> = Mutex::new(Vec::new());
    let mut measured = MEASURED.lock().unwrap_or_else(PoisonError::into_inner);
    let shape = (key_size, value_size);
    if let Some((_, node_size)) = measured.iter().find(|(known, _)| *known == shape) {
        return *node_size;
    }
    // A scratch trie that cannot be made (no memory, say) tells nothing: read entries.
    let node_size = measure_trie_node_size(key_size, value_size).unwrap_or(None);
    measured.push((shape, node_size));
    node_size
}

/// Creates a scratch trie, and reads its `memlock` empty, with one entry and with two:
/// 0, then n, then 2n where the kernel reports memory in use.
fn measure_trie_node_size(key_size: u32, value_size: u32) -> io::Result<Option<u64>> {
    let mut create = MapCreateAttr {
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        key_size,
        value_size,
        max_entries: 2,
        map_flags: BPF_F_NO_PREALLOC,
    };
    let fd = bpf_returning(BPF_MAP_CREATE, &mut create)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor, now owned here alone.
    let trie = unsafe { OwnedFd::from_raw_fd(fd) };
    let empty = fd_memlock(trie.as_fd())?;
    // Keys: the prefix length (u32), then the data; 0.0.0.0/0, then 128.0.0.0/1.
    let value = vec![0u8; value_size as usize];
    let mut key = vec![0u8; key_size as usize];
    update_raw(trie.as_fd(), &key, &value)?;
    let one = fd_memlock(trie.as_fd())?;
    key[..4].copy_from_slice(&1u32.to_ne_bytes());
    if let Some(first_byte) = key.get_mut(4) {
        *first_byte = 0x80;
    }
    update_raw(trie.as_fd(), &key, &value)?;
    let two = fd_memlock(trie.as_fd())?;
    Ok((empty == 0 && one > 0 && two == 2 * one).then_some(one))
}

fn update_raw(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        next_key: value.as_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// The `memlock` line of a BPF map's `/proc/self/fdinfo`.
fn fd_memlock(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock in the map's fdinfo"))
}

/// `bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The index of the interface the XDP link pinned at `pin` is attached to: 0 once it
/// is attached to none (its interface was deleted or moved to another namespace: the
/// link stays pinned, defunct, and filters nothing).
pub fn pinned_xdp_link_ifindex(pin: &Path) -> io::Result<u32> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut get = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf_returning(BPF_OBJ_GET, &mut get)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor, now owned here alone.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    // `struct bpf_link_info`: type, id and prog_id (u32 each), then a union aligned to
    // 8 bytes, whose `xdp` member is the ifindex (u32). The kernel writes at most
    // `info_len` bytes and wants any it does not know zeroed.
    const IFINDEX_AT: usize = 16;
    let mut info = [0u8; 64];
    let mut attr = InfoByFdAttr {
        bpf_fd: u32::try_from(link.as_raw_fd()).map_err(io::Error::other)?,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let mut ifindex = [0u8; 4];
    ifindex.copy_from_slice(&info[IFINDEX_AT..IFINDEX_AT + 4]);
    Ok(u32::from_ne_bytes(ifindex))
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

fn update_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<usize, (usize, io::Error)> {
    let fd = map.as_raw_fd() as u32;
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

fn update<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        next_key: value as *const V as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// The value stored at `key`, None if there is none.
fn lookup<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    // SAFETY: `V: Pod`: every bit pattern is a valid V.
    let mut value: V = unsafe { std::mem::zeroed() };
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        next_key: &mut value as *mut V as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a batch command failed because this kernel or map type lacks it (before
/// 5.6 the command is unknown: `EINVAL`), so the caller should go one key at a time.
fn batch_unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(ENOTSUPP | libc::EINVAL))
}

/// Every entry of a hash map or LPM trie, `BATCH` at a time (`BPF_MAP_LOOKUP_BATCH`);
/// one key at a time where the kernel has no batch lookup for the map. An entry
/// removed or added while this reads may be missed. Refuses a map whose key or value
/// is not the size of `K` or `V` (the kernel would write past the buffers).
pub fn entries<K: Pod, V: Pod>(map: &MapData) -> Result<Vec<(K, V)>, MapError> {
    let mut entries = Vec::new();
    for_each_entry(map, |key: &K, value: &V| entries.push((*key, *value)))?;
    Ok(entries)
}

/// Hands every entry of a hash map or LPM trie to `visit`, as [`entries`] reads them,
/// without keeping them: one batch's room, reused (a million entries would take tens
/// of MB, and the page faults of filling them a tenth of the time).
pub fn for_each_entry<K: Pod, V: Pod>(
    map: &MapData,
    mut visit: impl FnMut(&K, &V),
) -> Result<(), MapError> {
    check_sizes::<K, V>(map)?;
    let fd = map.fd().as_fd();
    match lookup_batch(fd, &mut visit) {
        // Refused at the first batch: nothing was visited yet.
        Err(e) if batch_unsupported(&e) => {
            walk(fd, &mut visit).map_err(syscall_error("bpf_map_get_next_key"))
        }
        read => read.map_err(syscall_error("bpf_map_lookup_batch")),
    }
}

/// The map behind a hash map, LRU hash map or LPM trie: the kinds these commands serve.
pub fn hash_or_trie(map: &Map) -> Option<&MapData> {
    match map {
        Map::HashMap(data) | Map::LruHashMap(data) | Map::LpmTrie(data) => Some(data),
        _ => None,
    }
}

/// Every entry of a hash map (or LRU hash map), as [`entries`] reads them.
pub fn hash_entries<K: Pod, V: Pod>(map: &Map) -> Result<Vec<(K, V)>, MapError> {
    let hash: HashMap<&MapData, K, V> = HashMap::try_from(map)?;
    entries(IterableMap::map(&hash))
}

/// Hands every entry of a hash map (or LRU hash map) to `visit`, as [`for_each_entry`].
pub fn hash_for_each<K: Pod, V: Pod>(map: &Map, visit: impl FnMut(&K, &V)) -> Result<(), MapError> {
    let hash: HashMap<&MapData, K, V> = HashMap::try_from(map)?;
    for_each_entry(IterableMap::map(&hash), visit)
}

/// Hands every entry of an LPM trie to `visit`, as [`for_each_entry`].
pub fn trie_for_each<K: Pod, V: Pod>(
    map: &Map,
    visit: impl FnMut(&Key<K>, &V),
) -> Result<(), MapError> {
    let trie: LpmTrie<&MapData, K, V> = LpmTrie::try_from(map)?;
    for_each_entry(IterableMap::map(&trie), visit)
}

/// Every entry of an LPM trie, as [`entries`] reads them.
pub fn trie_entries<K: Pod, V: Pod>(map: &Map) -> Result<Vec<(Key<K>, V)>, MapError> {
    let trie: LpmTrie<&MapData, K, V> = LpmTrie::try_from(map)?;
    entries(IterableMap::map(&trie))
}

/// Writes `keys[i] -> values[i]` (hash maps and LPM tries), `BATCH` at a time, or one
/// at a time where the kernel lacks `BPF_MAP_UPDATE_BATCH` for the map. An error says
/// after how many.
pub fn update_many<K: Pod, V: Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<usize, (usize, MapError)> {
    check_sizes::<K, V>(map).map_err(|e| (0, e))?;
    let fd = map.fd().as_fd();
    match update_batch(fd, keys, values) {
        Err((0, e)) if batch_unsupported(&e) => {
            for (done, (key, value)) in keys.iter().zip(values).enumerate() {
                update(fd, key, value)
                    .map_err(|e| (done, syscall_error("bpf_map_update_elem")(e)))?;
            }
            Ok(keys.len().min(values.len()))
        }
        written => written.map_err(|(done, e)| (done, syscall_error("bpf_map_update_batch")(e))),
    }
}

/// Removes `keys` (hash maps and LPM tries), `BATCH` at a time where the kernel has
/// `BPF_MAP_DELETE_BATCH` for the map; a key already gone is skipped. Returns how many
/// were removed.
pub fn delete_many<K: Pod>(map: &MapData, keys: &[K]) -> Result<usize, MapError> {
    let info = map.info()?;
    if info.key_size() as usize != std::mem::size_of::<K>() {
        return Err(MapError::InvalidKeySize {
            size: std::mem::size_of::<K>(),
            expected: info.key_size() as usize,
        });
    }
    delete_batch(map.fd().as_fd(), keys).map_err(syscall_error("bpf_map_delete_batch"))
}

/// Removes every entry of a hash map (LRU or per-CPU too) or LPM trie, whatever the size
/// of its keys: all keys read first, then deleted one at a time (a key gone meanwhile is
/// skipped). Returns how many were removed. For a map a few thousand entries long: tests
/// that run many cases through one loaded program.
pub fn remove_all(map: &MapData) -> Result<usize, MapError> {
    let key_size = map.info()?.key_size() as usize;
    let fd = map.fd().as_fd();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; key_size];
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: keys.last().map_or(0, |key| key.as_ptr() as u64),
            next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => keys.push(next),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(syscall_error("bpf_map_get_next_key")(e)),
        }
    }
    let mut removed = 0;
    for key in &keys {
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(()) => removed += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(syscall_error("bpf_map_delete_elem")(e)),
        }
    }
    Ok(removed)
}

/// Writes zeros to every slot of an array, each CPU's copy of it when `per_cpu`.
pub fn zero_array(map: &MapData, per_cpu: bool) -> Result<(), MapError> {
    let info = map.info()?;
    let value_size = info.value_size() as usize;
    let size = if per_cpu {
        let cpus = aya::util::nr_cpus().map_err(|(_, io_error)| {
            MapError::SyscallError(SyscallError {
                call: "reading the possible CPUs",
                io_error,
            })
        })?;
        // The kernel copies each CPU's value 8-byte aligned.
        value_size.next_multiple_of(8) * cpus
    } else {
        value_size
    };
    let zeros = vec![0u8; size];
    let fd = map.fd().as_fd();
    for index in 0..info.max_entries() {
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: &index as *const u32 as u64,
            next_key: zeros.as_ptr() as u64,
            ..ElemAttr::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(syscall_error("bpf_map_update_elem"))?;
    }
    Ok(())
}

fn check_sizes<K: Pod, V: Pod>(map: &MapData) -> Result<(), MapError> {
    let info = map.info()?;
    let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
    if key_size != std::mem::size_of::<K>() {
        return Err(MapError::InvalidKeySize {
            size: std::mem::size_of::<K>(),
            expected: key_size,
        });
    }
    if value_size != std::mem::size_of::<V>() {
        return Err(MapError::InvalidValueSize {
            size: std::mem::size_of::<V>(),
            expected: value_size,
        });
    }
    Ok(())
}

fn syscall_error(call: &'static str) -> impl Fn(io::Error) -> MapError {
    move |io_error| MapError::SyscallError(SyscallError { call, io_error })
}

fn lookup_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    visit: &mut impl FnMut(&K, &V),
) -> io::Result<()> {
    let mut keys: Vec<K> = Vec::with_capacity(BATCH);
    let mut values: Vec<V> = Vec::with_capacity(BATCH);
    // Where the next batch starts: a bucket number for hash maps, the last key read for
    // the kernel's generic batch (LPM tries): room for either.
    let mut position = vec![0u64; std::mem::size_of::<K>().div_ceil(8).max(1)];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { position.as_ptr() as u64 },
            out_batch: position.as_mut_ptr() as u64,
            // Room for BATCH of each.
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // The kernel says how many it copied, also with ENOENT at the end.
        let copied = (attr.count as usize).min(BATCH);
        let at_end = match result {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel wrote `copied` keys and values into the room reserved
        // (`set_len` only shortens or keeps within the capacity of BATCH), and any bytes
        // are a valid K and V (`Pod`).
        unsafe {
            keys.set_len(copied);
            values.set_len(copied);
        }
        for (key, value) in keys.iter().zip(&values) {
            visit(key, value);
        }
        if at_end {
            return Ok(());
        }
        first = false;
    }
}

/// Every entry, two system calls each: for kernels without batch lookups.
fn walk<K: Pod, V: Pod>(map: BorrowedFd<'_>, visit: &mut impl FnMut(&K, &V)) -> io::Result<()> {
    let mut key: Option<K> = None;
    while let Some(next) = next_key(map, key.as_ref())? {
        // Removed since its key was read: skip it.
        if let Some(value) = lookup(map, &next)? {
            visit(&next, &value);
        }
        key = Some(next);
    }
    Ok(())
}

fn delete_batch<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut removed = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        // On error the kernel says how many it removed before the key it stopped at.
        let done = (attr.count as usize).min(chunk.len());
        removed += done;
        rest = &rest[done..];
        match result {
            Ok(()) => {}
            // That key is gone already (expired and removed by the kernel, or by another
            // verb): step over it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = rest.get(1..).unwrap_or_default()
            }
            Err(e) if batch_unsupported(&e) && done == 0 => {
                return Ok(removed + delete_one_by_one(map, rest)?)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn delete_one_by_one<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut removed = 0;
    for key in keys {
        let mut attr = ElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: key as *const K as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(()) => removed += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
