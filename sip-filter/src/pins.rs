//! The pin layout, read by CLI commands in other shells. One program and one set of maps
//! serve every interface a daemon attaches to, so a source banned on one is banned on
//! all and has one bucket:
//!
//! ```text
//! PIN_ROOT/maps/<map name>     every map of names::PINNED, pinned once
//! PIN_ROOT/links/<interface>   the XDP link per attached interface: while it is pinned
//!                              the program stays attached, even if the daemon died
//! PIN_ROOT/tcx/<interface>     the egress program's tcx link (Linux 6.6+), the same way
//! PIN_ROOT/clsact/<interface>  or the egress program itself, recording that its clsact
//!                              filter is on the interface (netlink filters are no
//!                              bpf_links: they stay until removed, see remove_all)
//! ```
//!
//! bpffs holds no regular files: what the kernel does not say (the XDP mode per
//! interface, the configured domain names, the daemon's pid) is in the runtime file,
//! see [`crate::runtime`].

use std::{
    io,
    path::{Path, PathBuf},
};

pub use sip_filter_common::maps::PIN_ROOT;

use crate::filter::{detach_clsact, EGRESS_CLSACT, EGRESS_TCX};

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The directory the maps are pinned in, shared by every interface.
pub fn maps_dir(root: &Path) -> PathBuf {
    root.join("maps")
}

/// The directory of the link pins, one per attached interface.
pub fn links_dir(root: &Path) -> PathBuf {
    root.join("links")
}

/// Where the XDP link on `iface` is pinned.
pub fn link_path(root: &Path, iface: &str) -> PathBuf {
    links_dir(root).join(iface)
}

/// The directory of the egress program's tcx link pins, one per interface.
pub fn tcx_dir(root: &Path) -> PathBuf {
    root.join(EGRESS_TCX)
}

/// The directory of the egress program's clsact records, one per interface.
pub fn clsact_dir(root: &Path) -> PathBuf {
    root.join(EGRESS_CLSACT)
}

/// Where the egress program's tcx link on `iface` is pinned.
pub fn tcx_path(root: &Path, iface: &str) -> PathBuf {
    tcx_dir(root).join(iface)
}

/// Where the record of the egress program's clsact filter on `iface` is pinned.
pub fn clsact_path(root: &Path, iface: &str) -> PathBuf {
    clsact_dir(root).join(iface)
}

/// How the egress program is attached to each interface, from the pins under `root`
/// (`tcx` or `clsact`), sorted by interface.
pub fn egress_attachments(root: &Path) -> io::Result<Vec<(String, &'static str)>> {
    let mut found = Vec::new();
    for (dir, mode) in [
        (tcx_dir(root), EGRESS_TCX),
        (clsact_dir(root), EGRESS_CLSACT),
    ] {
        found.extend(names_in(&dir)?.into_iter().map(|iface| (iface, mode)));
    }
    found.sort();
    Ok(found)
}

/// Interfaces with a pinned link under `root`, sorted.
pub fn pinned_interfaces(root: &Path) -> io::Result<Vec<String>> {
    names_in(&links_dir(root))
}

/// The names of the entries of `dir` (none if it does not exist), sorted.
fn names_in(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Whether anything is pinned under `root` (maps or links). An error when `root` cannot
/// be looked into (a user who is not root), rather than "nothing".
pub fn anything_pinned(root: &Path) -> io::Result<bool> {
    for dir in [
        maps_dir(root),
        links_dir(root),
        tcx_dir(root),
        clsact_dir(root),
    ] {
        if dir.try_exists()? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes sure `root` is on a BPF filesystem, mounting one at `/sys/fs/bpf` when
/// nothing is mounted there (hosts without systemd do not mount it).
pub fn ensure_bpffs(root: &Path) -> io::Result<()> {
    let mount_point = Path::new("/sys/fs/bpf");
    if root.starts_with(mount_point) && !is_bpffs(mount_point)? {
        std::fs::create_dir_all(mount_point)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(mount_point)
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "mounting a BPF filesystem at {} failed ({status})",
                mount_point.display()
            )));
        }
    }
    std::fs::create_dir_all(root)
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into a zeroed statfs struct; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::NotFound {
            Ok(false)
        } else {
            Err(error)
        };
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Removes every pin under `root` and `root` itself: link pins first (unpinning a link
/// nobody holds detaches the program), then the clsact filters the records name (a
/// record goes once its filter is gone), then the maps (freed once nobody holds them).
pub fn remove_all(root: &Path) -> io::Result<()> {
    remove_dir(&links_dir(root))?;
    remove_dir(&tcx_dir(root))?;
    let clsact = clsact_dir(root);
    for iface in names_in(&clsact)? {
        detach_clsact(&iface).map_err(io::Error::other)?;
    }
    remove_dir(&clsact)?;
    remove_dir(&maps_dir(root))?;
    match std::fs::remove_dir(root) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a pin directory and the pins in it.
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The runtime directory that goes with a pin root: `/run/` and the root's last
/// component (`/sys/fs/bpf/sip-filter` -> `/run/sip-filter`), so a second instance
/// with a pin root of its own gets a runtime directory of its own.
pub fn default_runtime_dir(root: &Path) -> PathBuf {
    Path::new("/run").join(instance_name(root))
}

/// The state directory that goes with a pin root: `/var/lib/sip-filter` for the default.
pub fn default_state_dir(root: &Path) -> PathBuf {
    Path::new("/var/lib").join(instance_name(root))
}

fn instance_name(root: &Path) -> &std::ffi::OsStr {
    root.file_name()
        .unwrap_or_else(|| std::ffi::OsStr::new("sip-filter"))
}
