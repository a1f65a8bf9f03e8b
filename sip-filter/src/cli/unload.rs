use std::time::{Duration, Instant};

use anyhow::Context;
use sip_filter::{
    pins::{anything_pinned, pinned_interfaces, remove_all},
    runtime::{process_is_sip_filter, Runtime},
};

use super::{NoFilter, PinArgs};

/// Detach the filter and remove its pins. A running daemon is stopped first (SIGTERM:
/// it saves its state and cleans up); pins a daemon that died left behind are removed.
#[derive(clap::Args)]
pub struct UnloadArgs {
    /// How long to wait for the daemon to stop, like 10s or 1m (a bare number is
    /// seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = sip_filter::duration::parse)]
    timeout: Duration,
    #[command(flatten)]
    pins: PinArgs,
}

pub fn unload(args: UnloadArgs) -> anyhow::Result<()> {
    let root = &args.pins.pin_root;
    let runtime_dir = args.pins.runtime_dir();
    let runtime = Runtime::read(&runtime_dir).ok().flatten();
    let live = runtime.as_ref().filter(|r| r.daemon_alive());
    let pinned = || anything_pinned(root).with_context(|| format!("reading {}", root.display()));
    if live.is_none() && !pinned()? {
        if runtime.is_some() {
            let _ = Runtime::remove(&runtime_dir);
        }
        return Err(NoFilter(format!(
            "no filter is loaded (nothing pinned in {}, no daemon running): nothing to unload",
            root.display()
        ))
        .into());
    }
    if let Some(daemon) = live {
        stop(daemon.pid, args.timeout)?;
        println!("stopped the sip-filter daemon (pid {})", daemon.pid);
    }
    // What is left: everything, if the daemon had died.
    if pinned()? {
        let interfaces = pinned_interfaces(root).unwrap_or_default();
        remove_all(root).with_context(|| format!("removing the pins in {}", root.display()))?;
        if interfaces.is_empty() {
            println!("removed the pins in {}", root.display());
        } else {
            println!(
                "detached from {} and removed the pins in {}",
                interfaces.join(", "),
                root.display()
            );
        }
    }
    Runtime::remove(&runtime_dir)
        .with_context(|| format!("removing the runtime file in {}", runtime_dir.display()))?;
    Ok(())
}

/// SIGTERM, then waits for the process to be gone.
fn stop(pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let signed = i32::try_from(pid).context("a pid fits an i32")?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(signed, libc::SIGTERM) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(error).context(format!("signalling the daemon (pid {pid})"));
        }
    }
    let start = Instant::now();
    while process_is_sip_filter(pid) {
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "the daemon (pid {pid}) did not stop within {} after SIGTERM; its log says why (`journalctl -u sip-filter`)",
                sip_filter::duration::format(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
