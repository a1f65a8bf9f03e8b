//! The runtime file, `RUNTIME_DIR/daemon.json`: what `status`, `domains list` and
//! `unload` need that the kernel does not tell (bpffs holds no regular files): the
//! daemon's pid, the XDP mode per interface, the configuration file and the domain
//! names as loaded (the kernel holds only their hashes). Written atomically when the
//! daemon has attached and after each reload; removed when it stops.
//!
//! Also the reload counters ([`RELOADS`]), which the daemon bumps in one place
//! ([`Reloads::record`]) for whoever reports them (the runtime file, metrics).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::state::write_atomically;

/// The file's name inside the runtime directory.
pub const FILE_NAME: &str = "daemon.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub pid: u32,
    pub started_unix_ms: u64,
    pub pin_root: PathBuf,
    pub config_file: Option<PathBuf>,
    pub state_file: PathBuf,
    /// The XDP program's kernel id.
    pub program_id: u32,
    pub interfaces: Vec<Interface>,
    pub dry_run: bool,
    /// The allowed Request-URI domains as configured (empty: the check is off).
    pub domains: Vec<String>,
    pub own_addresses: Vec<String>,
    pub ports: Vec<u16>,
    pub reloads: u64,
    pub reload_failures: u64,
    /// The last reload's outcome: None when it succeeded (or there was none).
    pub last_reload_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// `native` or `skb`.
    pub mode: String,
    /// The mode asked for (`daemon.xdp_mode`): `auto`, `native` or `skb` (empty in files
    /// written before it was recorded). Skb mode asked for is a choice; under `auto` it
    /// is a fallback worth an alert.
    #[serde(default)]
    pub requested: String,
    /// How the egress program is attached: `tcx` or `clsact` (empty in files written
    /// before it existed).
    #[serde(default)]
    pub egress: String,
}

impl Runtime {
    /// Takes the configuration's parts it reports from `settings` (at start, on reload).
    pub fn describe(&mut self, settings: &crate::Settings) {
        self.dry_run = settings.dry_run;
        self.domains.clone_from(&settings.domains);
        self.own_addresses = settings
            .own_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        self.ports.clone_from(&settings.ports);
    }

    pub fn path(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(FILE_NAME)
    }

    /// Writes the file atomically (readers never see half of it).
    pub fn write(&self, runtime_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomically(&Self::path(runtime_dir), &json)
    }

    /// The file's contents; None when there is none.
    pub fn read(runtime_dir: &Path) -> std::io::Result<Option<Runtime>> {
        match std::fs::read(Self::path(runtime_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the file, and the directory once empty.
    pub fn remove(runtime_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(runtime_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let _ = std::fs::remove_dir(runtime_dir);
        Ok(())
    }

    /// Whether the daemon that wrote the file still runs (its pid is alive and is a
    /// sip-filter, not a process that reused the pid).
    pub fn daemon_alive(&self) -> bool {
        process_is_sip_filter(self.pid)
    }
}

/// Whether `pid` is a running sip-filter process.
pub fn process_is_sip_filter(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "sip-filter")
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| zombie(&stat))
}

/// A `/proc/PID/stat` line of a process that has exited but not been reaped.
fn zombie(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Configuration reloads (SIGHUP) since the daemon started.
pub struct Reloads {
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Whether the last reload was refused (false before any).
    last_failed: AtomicBool,
    /// When the last successful reload was, in ms since the Unix epoch; 0 before any.
    last_success_unix_ms: AtomicU64,
}

/// The daemon's reload counters: read them with [`Reloads::succeeded`] and
/// [`Reloads::failed`].
pub static RELOADS: Reloads = Reloads::new();

impl Reloads {
    /// No reload yet (the daemon has [`RELOADS`]; tests make their own).
    pub const fn new() -> Self {
        Self {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_failed: AtomicBool::new(false),
            last_success_unix_ms: AtomicU64::new(0),
        }
    }

    /// The one place a reload's outcome is counted.
    pub fn record(&self, ok: bool) {
        if ok {
            self.last_success_unix_ms
                .store(crate::state::Clocks::now().unix_ms, Ordering::Relaxed);
        }
        self.last_failed.store(!ok, Ordering::Relaxed);
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the last reload was refused (the configuration before it stays).
    pub fn last_failed(&self) -> bool {
        self.last_failed.load(Ordering::Relaxed)
    }

    /// When the last successful reload was (ms since the Unix epoch), if there was one.
    pub fn last_success_unix_ms(&self) -> Option<u64> {
        Some(self.last_success_unix_ms.load(Ordering::Relaxed)).filter(|&ms| ms != 0)
    }
}

impl Default for Reloads {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_are_not_alive() {
        assert!(zombie("123 (sip-filter) Z 1 123 123 0 -1"));
        assert!(!zombie("123 (sip filter) S 1 123 123 0 -1"));
        // The test binary is not a sip-filter.
        assert!(!process_is_sip_filter(std::process::id()));
    }
}
