//! The pin layout: `PIN_ROOT/<interface>/<map name>`, one directory per attached
//! interface, read by CLI commands in other shells.

use std::{
    io,
    path::{Path, PathBuf},
};

pub use sip_filter_common::maps::PIN_ROOT;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The directory a filter on `iface` pins its maps in.
pub fn interface_dir(root: &Path, iface: &str) -> PathBuf {
    root.join(iface)
}

/// Interfaces with a pinned filter under `root`, sorted.
pub fn pinned_interfaces(root: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(root) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
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

/// Removes a pin directory and the pins in it (unpinning frees maps nobody else holds).
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
