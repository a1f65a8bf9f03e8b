//! A Debian 12 system booted with systemd as its PID 1 (systemd-nspawn), for what needs
//! a real service manager: the Debian package's unit, started, reloaded and stopped.
//!
//! The root is debootstrapped once into the target directory and booted with
//! `--volatile=overlay`: whatever the test installs or writes lands in a tmpfs and is
//! gone when the container stops, so the host and the cached root stay as they were.
//! The container shares a lab namespace's network (its interfaces, for XDP) and gets a
//! bpffs instance of its own, so its pins never meet the host's.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};

use crate::{
    lab::QUICK,
    netns::{run_bounded, Background, Finished, SIGTERM},
};

/// What the root holds besides debootstrap's minimal base: systemd to boot, D-Bus for
/// systemctl, and what the package depends on.
const ROOT_PACKAGES: &str = "systemd,systemd-sysv,dbus,procps";
/// Debootstrapping the root: a few minutes, once per target directory.
const DEBOOTSTRAP_DEADLINE: Duration = Duration::from_secs(1200);
/// Booting to `systemctl is-system-running --wait`.
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// A Debian 12 root with systemd, in the target directory (built on first use).
pub fn bookworm_root() -> anyhow::Result<PathBuf> {
    let cache = target_dir().join("nspawn");
    let root = cache.join("bookworm");
    // Written last: a root without it is an interrupted debootstrap.
    let complete = cache.join("bookworm.complete");
    if complete.exists() {
        return Ok(root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    eprintln!(
        "debootstrap of Debian 12 with systemd into {} (a few minutes, once)",
        root.display()
    );
    let mut command = Command::new("debootstrap");
    command
        .args(["--variant=minbase", &format!("--include={ROOT_PACKAGES}")])
        .arg("bookworm")
        .arg(&root);
    let finished = run_bounded(command, DEBOOTSTRAP_DEADLINE);
    ensure!(finished.success(), "debootstrap failed:\n{finished}");
    std::fs::write(&complete, "").with_context(|| format!("writing {}", complete.display()))?;
    Ok(root)
}

fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A bpffs instance of its own, mounted on a directory; unmounted on drop (its pins go).
pub struct BpfFs(PathBuf);

impl BpfFs {
    pub fn mount(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mounted = run_bounded(
            {
                let mut command = Command::new("mount");
                command.args(["-t", "bpf", "bpf"]).arg(dir);
                command
            },
            QUICK,
        );
        ensure!(mounted.success(), "{mounted}");
        Ok(BpfFs(dir.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let mut command = Command::new("umount");
        command.arg(&self.0);
        let unmounted = run_bounded(command, QUICK);
        if !unmounted.success() {
            eprintln!("cannot unmount {}:\n{unmounted}", self.0.display());
        }
    }
}

/// A booted container; stopped (systemd shuts it down) on drop.
pub struct Container {
    nspawn: Background,
    leader: i32,
}

impl Container {
    /// Boots `root` (volatile) in the network namespace `netns`, with `bpffs` as its
    /// /sys/fs/bpf and each `(host path, container path)` of `read_only` bound, the
    /// console to `log`. Returns once systemd has finished booting.
    pub fn boot(
        root: &Path,
        netns: &str,
        bpffs: &BpfFs,
        read_only: &[(&Path, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("--directory")
            .arg(root)
            .args(["--boot", "--volatile=overlay", "--quiet"])
            // No service manager on the host to register with or ask for a scope.
            .args(["--register=no", "--keep-unit"])
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.path().display()))
            // What the daemon needs, which nspawn withholds by default: its
            // capabilities, and bpf(2) past nspawn's own system call filter.
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_ADMIN")
            .arg("--system-call-filter=bpf");
        for (host, inside) in read_only {
            command.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let nspawn = Background::spawn("systemd-nspawn", command, log)?;
        let leader = wait_for_leader(nspawn.pid(), &nspawn)?;
        let container = Container { nspawn, leader };
        container.wait_until_booted()?;
        Ok(container)
    }

    /// Until systemd says the boot is over; it answers once its socket is up.
    fn wait_until_booted(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let booted = self.run(&["systemctl", "is-system-running", "--wait"], BOOT_DEADLINE);
            // "degraded": a unit that does not fit a container failed; the boot is over.
            if booted.stdout.contains("running") || booted.stdout.contains("degraded") {
                return Ok(());
            }
            if start.elapsed() >= BOOT_DEADLINE {
                bail!(
                    "the container did not boot within {BOOT_DEADLINE:?}:\n{booted}\nconsole:\n{}",
                    self.nspawn.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` inside (all its namespaces), killed at `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Finished {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .args(args);
        run_bounded(command, timeout)
    }

    /// [`Container::run`], which must succeed within [`QUICK`]; its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let finished = self.run(args, QUICK);
        assert!(finished.success(), "{finished}");
        finished.stdout
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.run_ok(&["systemctl", "show", "-p", property, "--value", unit])
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM to nspawn: systemd inside shuts down (the units' ExecStop, SIGTERM).
        self.nspawn.signal(SIGTERM);
        if self.nspawn.wait(BOOT_DEADLINE).is_none() {
            eprintln!(
                "the container did not shut down within {BOOT_DEADLINE:?}:\n{}",
                self.nspawn.log()
            );
        }
    }
}

/// The container's PID 1, as the host sees it: nspawn's child.
fn wait_for_leader(nspawn: i32, process: &Background) -> anyhow::Result<i32> {
    let start = Instant::now();
    while start.elapsed() < QUICK {
        let children = std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
            .unwrap_or_default();
        // Once it runs systemd: before, it may still be nspawn's own child.
        let leader = children.split_whitespace().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
        });
        if let Some(leader) = leader.and_then(|pid| pid.parse().ok()) {
            return Ok(leader);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "systemd-nspawn started no container within {QUICK:?}:\n{}",
        process.log()
    )
}
