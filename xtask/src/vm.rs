//! Boots Debian 12's 6.1 kernel under qemu and runs the kernel-side tests there (issue:
//! the oldest supported kernel). Its verifier is stricter than newer kernels' in places,
//! so a green run on the host says nothing about 6.1 (see shared/TOOLCHAIN.md).
//!
//! The kernel image comes from Debian (`apt-get download`) and is kept in `target/vm`;
//! the test binary, its shared libraries and a static busybox go into an initramfs whose
//! `/init` runs the tests and prints [`RESULT_MARKER`] with their exit code. qemu runs
//! with software emulation (a KVM boot hangs on these machines) under a hard timeout.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::setup::{install_packages, run};

/// Debian packages this command drives (also in `setup::TEST_PACKAGES`).
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];
/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";
/// The busybox applets `/init` uses.
const APPLETS: &[&str] = &["sh", "mount", "mkdir", "uname", "poweroff", "insmod"];
/// The modules of Debian's kernel the egress program's clsact attachment needs (the
/// clsact qdisc, the bpf classifier; neither depends on another), loaded by `/init`: a
/// Debian system loads them on demand, the initramfs has no modprobe.
const TC_MODULES: &[&str] = &["sch_ingress", "cls_bpf"];
/// The kernel-side test binaries run in the VM, in this order: the programs fed frames
/// (`tests/tests/prog_test_run.rs`), the egress program attached in each mode the
/// kernel has (`tests/tests/egress_attach.rs`: clsact on 6.1), the answers read at
/// egress (datagrams and TCP segments), countries, destinations and TLS. None needs any
/// tool.
const TEST_TARGETS: &[&str] = &[
    "prog_test_run",
    "egress_attach",
    "answers_test_run",
    "countries_test_run",
    "destinations_test_run",
    "tls_test_run",
];
const TEST_PACKAGE: &str = "sip-filter-tests";
/// What `prog_test_run`'s verifier budget test prints before the count.
const VERIFIED_MARKER: &str = "instructions verified:";
/// The line `/init` prints with the tests' exit code.
const RESULT_MARKER: &str = "SIP_FILTER_VM_RESULT=";
/// What the loader's error holds when the kernel refused the program (aya's `LoadError`).
const VERIFIER_LOG_MARKER: &str = "verifier_log:";
/// Extra `--cfg`s for the XDP program's build, read by `sip-filter/build.rs`.
const EBPF_CFG_ENV: &str = "SIP_FILTER_EBPF_CFG";
/// The cfg that builds the XDP program with a `bpf_xdp_load_bytes` length that 6.18's
/// verifier accepts and 6.1's refuses (see `sip-filter-ebpf/src/main.rs`)...
const REGRESSION_CFG: &str = "sip_filter_verifier_regression_6_1";
/// ...and the message 6.1's verifier refuses it with.
const REGRESSION_MESSAGE: &str = "min value is outside of the allowed memory range";
/// Generous: under software emulation on a busy 2-core machine `prog_test_run` alone took
/// over 300 s once, `egress_attach` loads the program three more times, and with a
/// build beside it the whole run passed 600 s.
const DEFAULT_TIMEOUT_SECS: u64 = 900;

#[derive(clap::Args)]
pub struct VmArgs {
    /// Build the XDP program with a construct 6.1's verifier refuses (the
    /// `sip_filter_verifier_regression_6_1` cfg) and succeed only if the VM run fails with
    /// that verifier message: shows that this test catches what the host's kernel lets by.
    #[arg(long)]
    expect_verifier_failure: bool,
    /// Seconds the VM may run (boot and tests) before qemu is killed and the test fails.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Run only the tests whose name contains this (to read one verifier log).
    #[arg(long)]
    filter: Option<String>,
    /// Keep the VM's console to itself unless the run fails (`cargo xtask test` runs the VM
    /// beside other tests, whose output it would otherwise interleave with).
    #[arg(skip)]
    pub console_on_failure_only: bool,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            expect_verifier_failure: false,
            timeout: DEFAULT_TIMEOUT_SECS,
            filter: None,
            console_on_failure_only: false,
        }
    }
}

pub fn vm_test(args: VmArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(filter) = &args.filter {
        // It goes into /init's command line: test names are identifiers.
        if !filter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bail!("--filter {filter:?}: give part of a test name (letters, digits, _)");
        }
    }
    install_packages(VM_PACKAGES)?;
    let workspace = workspace_root()?;
    let vm_dir = target_dir(&workspace).join("vm");
    create_dir(&vm_dir)?;

    let kernel = kernel_image(&vm_dir)?;
    let cfg = if args.expect_verifier_failure {
        println!("vm-test: building the XDP program with --cfg {REGRESSION_CFG} (refused by 6.1)");
        Some(REGRESSION_CFG)
    } else {
        None
    };
    let build_started = Instant::now();
    let test_binaries = build_test_binaries(&workspace, cfg)?;
    let build_time = build_started.elapsed();
    let initrd = build_initramfs(
        &vm_dir,
        &test_binaries,
        &kernel.modules,
        args.filter.as_deref(),
    )?;
    let prepared = started.elapsed();

    println!(
        "vm-test: booting {} under qemu (software emulation, timeout {} s)",
        kernel.release, args.timeout
    );
    let vm_started = Instant::now();
    let echo = !args.console_on_failure_only;
    let output = boot(
        &kernel.image,
        &initrd,
        Duration::from_secs(args.timeout),
        echo,
    )?;
    let passed = result_code(&output) == Some(0) && !args.expect_verifier_failure;
    if !echo && !passed {
        for line in output.lines() {
            println!("vm| {line}");
        }
    }
    let vm_time = vm_started.elapsed();
    let timing = format!(
        "preparation {:.1} s (of which cargo build {:.1} s), VM {:.1} s, total {:.1} s",
        prepared.as_secs_f64(),
        build_time.as_secs_f64(),
        vm_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let rc = result_code(&output).with_context(|| {
        format!(
            "the VM stopped without printing {RESULT_MARKER}<code> (kernel panic, or /init failed): see its output above"
        )
    })?;
    let verifier = verifier_summary(&output);
    if let Some(summary) = &verifier {
        println!(
            "vm-test: the {} verifier refused the XDP program:\n{summary}",
            kernel.release
        );
    }
    if args.expect_verifier_failure {
        if rc == 0 {
            bail!("the tests passed on {} although the XDP program was built with {REGRESSION_CFG}, which its verifier must refuse ({timing})", kernel.release);
        }
        if verifier.is_none() || !output.contains(REGRESSION_MESSAGE) {
            bail!(
                "the tests failed on {} (exit code {rc}), but not with the verifier message expected for {REGRESSION_CFG} (`{REGRESSION_MESSAGE}`): see the output above ({timing})",
                kernel.release
            );
        }
        println!(
            "vm-test: as expected, {} refused the {REGRESSION_CFG} build (`{REGRESSION_MESSAGE}`); {timing}",
            kernel.release
        );
        return Ok(());
    }
    if rc != 0 {
        bail!(
            "the kernel-side tests failed on {} (exit code {rc}): see the output above ({timing})",
            kernel.release
        );
    }
    // What the verifier budget test printed (`--show-output`): the headroom left.
    for line in output.lines().filter(|line| line.contains(VERIFIED_MARKER)) {
        println!("vm-test: {}", line.trim_start_matches("vm| "));
    }
    println!(
        "vm-test: the kernel-side tests passed on {}; {timing}",
        kernel.release
    );
    Ok(())
}

pub fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

pub fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

struct Kernel {
    /// `6.1.0-<N>-amd64`
    release: String,
    image: PathBuf,
    /// [`TC_MODULES`]' files, in that order.
    modules: Vec<PathBuf>,
}

/// Debian 12's newest 6.1 kernel image, downloaded and unpacked into `vm_dir` once.
fn kernel_image(vm_dir: &Path) -> anyhow::Result<Kernel> {
    let mut package = newest_kernel_package()?;
    if package.is_none() {
        println!("vm-test: apt knows no linux-image-6.1.0-*-amd64; apt-get update");
        run(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed (it needs root)")?;
        package = newest_kernel_package()?;
    }
    let cached = newest_cached_kernel(vm_dir)?;
    let package = match (package, cached) {
        (Some(package), cached) => {
            if !is_cached(vm_dir, &package) {
                if let Err(error) = fetch_kernel(vm_dir, &package) {
                    // Offline, say: an older image from an earlier run still tests 6.1.
                    let cached = cached.ok_or(error)?;
                    println!("vm-test: could not fetch {package}; using {cached} from the cache");
                    return cached_kernel(vm_dir, &cached);
                }
            }
            package
        }
        (None, Some(cached)) => cached,
        (None, None) => {
            bail!("no linux-image-6.1.0-*-amd64 package in apt's lists, and none in the cache")
        }
    };
    cached_kernel(vm_dir, &package)
}

/// Whether the cache holds `package`'s image and [`TC_MODULES`] (caches of earlier
/// versions of this command hold the image only).
fn is_cached(vm_dir: &Path, package: &str) -> bool {
    let (release, image) = cached_image(vm_dir, package);
    image.is_file()
        && cached_modules(vm_dir, package, &release)
            .iter()
            .all(|module| module.is_file())
}

/// Where [`TC_MODULES`] of `package` (of `release`) are in the cache.
fn cached_modules(vm_dir: &Path, package: &str, release: &str) -> Vec<PathBuf> {
    TC_MODULES
        .iter()
        .map(|module| {
            vm_dir.join(package).join(format!(
                "lib/modules/{release}/kernel/net/sched/{module}.ko"
            ))
        })
        .collect()
}

/// The release (`6.1.0-<N>-amd64`) and image path of `package` in the cache.
fn cached_image(vm_dir: &Path, package: &str) -> (String, PathBuf) {
    let release = package.trim_start_matches("linux-image-").to_string();
    let image = vm_dir
        .join(package)
        .join("boot")
        .join(format!("vmlinuz-{release}"));
    (release, image)
}

fn cached_kernel(vm_dir: &Path, package: &str) -> anyhow::Result<Kernel> {
    let (release, image) = cached_image(vm_dir, package);
    let modules = cached_modules(vm_dir, package, &release);
    if let Some(missing) = std::iter::once(&image)
        .chain(&modules)
        .find(|file| !file.is_file())
    {
        bail!("{package} holds no {}", missing.display());
    }
    println!("vm-test: kernel {release} from {}", image.display());
    Ok(Kernel {
        release,
        image,
        modules,
    })
}

/// Downloads `package` and unpacks its /boot and [`TC_MODULES`] into `vm_dir/<package>`.
fn fetch_kernel(vm_dir: &Path, package: &str) -> anyhow::Result<()> {
    println!("vm-test: apt-get download {package}");
    let download = vm_dir.join("download");
    remove_dir_if_present(&download)?;
    create_dir(&download)?;
    run(Command::new("apt-get")
        .current_dir(&download)
        // Root's apt otherwise warns that its sandbox user cannot write here.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download", package]))
    .with_context(|| format!("downloading {package} failed"))?;
    let deb = fs::read_dir(&download)
        .with_context(|| format!("listing {}", download.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;

    // Only /boot and the modules /init loads: the VM boots from our initramfs. Unpacked
    // beside the cache and then renamed, so an interrupted run leaves no half cache.
    let unpacking = vm_dir.join("unpacking");
    remove_dir_if_present(&unpacking)?;
    create_dir(&unpacking)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start dpkg-deb")?;
    let tarfile = dpkg.stdout.take().context("dpkg-deb has no stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&unpacking)
        .arg("--wildcards")
        .arg("./boot")
        .args(
            TC_MODULES
                .iter()
                .map(|module| format!("./lib/modules/*/kernel/net/sched/{module}.ko")),
        )
        .stdin(tarfile)
        .status()
        .context("could not start tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !tar.success() {
        bail!(
            "unpacking {} failed (dpkg-deb {dpkg}, tar {tar})",
            deb.display()
        );
    }
    let dir = vm_dir.join(package);
    remove_dir_if_present(&dir)?;
    fs::rename(&unpacking, &dir)
        .with_context(|| format!("renaming {} to {}", unpacking.display(), dir.display()))?;
    remove_dir_if_present(&download)?;
    println!("vm-test: {package} unpacked into {}", dir.display());
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The `linux-image-6.1.0-<N>-amd64` with the highest N that apt knows about.
fn newest_kernel_package() -> anyhow::Result<Option<String>> {
    let output = Command::new("apt-cache")
        .args([
            "search",
            "--names-only",
            r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        ])
        .output()
        .context("could not run apt-cache")?;
    if !output.status.success() {
        bail!("apt-cache search failed ({})", output.status);
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(newest_abi(
        listing
            .lines()
            .filter_map(|line| line.split_whitespace().next()),
    ))
}

fn newest_cached_kernel(vm_dir: &Path) -> anyhow::Result<Option<String>> {
    let names: Vec<String> = fs::read_dir(vm_dir)
        .with_context(|| format!("listing {}", vm_dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| is_cached(vm_dir, name))
        .collect();
    Ok(newest_abi(names.iter().map(String::as_str)))
}

/// Of package names `linux-image-6.1.0-<N>-amd64`, the one with the highest N.
fn newest_abi<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-amd64")?;
            Some((abi.parse::<u32>().ok()?, name))
        })
        .max()
        .map(|(_, name)| name.to_string())
}

/// Builds the kernel-side test binaries and returns each target's name and path (from
/// cargo's JSON messages), in [`TEST_TARGETS`]' order.
fn build_test_binaries(
    workspace: &Path,
    cfg: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let targets: Vec<String> = TEST_TARGETS.iter().map(|t| format!("--test {t}")).collect();
    println!(
        "vm-test: cargo test -p {TEST_PACKAGE} {} --no-run",
        targets.join(" ")
    );
    let mut command = Command::new("cargo");
    command
        .current_dir(workspace)
        .args(["test", "-p", TEST_PACKAGE, "--no-run"]);
    for target in TEST_TARGETS {
        command.args(["--test", target]);
    }
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    match cfg {
        Some(cfg) => command.env(EBPF_CFG_ENV, cfg),
        None => command.env_remove(EBPF_CFG_ENV),
    };
    let output = command
        .output()
        .context("could not run cargo to build the tests")?;
    if !output.status.success() {
        bail!(
            "building the kernel-side tests failed ({}): see cargo's messages above",
            output.status
        );
    }
    test_executables(&String::from_utf8_lossy(&output.stdout), TEST_TARGETS)
}

/// Where cargo built the test targets `targets` (their executables), read from its JSON
/// messages (`--message-format=json...`), in `targets`' order.
pub fn test_executables<'a>(
    messages: &str,
    targets: &[&'a str],
) -> anyhow::Result<Vec<(&'a str, PathBuf)>> {
    targets
        .iter()
        .map(|target| {
            let executable = messages
                .lines()
                .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
                .filter(|line| {
                    json_string(line, r#""target":{"#, "name").as_deref() == Some(*target)
                })
                .find_map(|line| json_string(line, "", "executable"))
                .with_context(|| format!("cargo reported no executable for the {target} test"))?;
            Ok((*target, PathBuf::from(executable)))
        })
        .collect()
}

/// The string value of `"key"` at its first occurrence after `after` in one line of cargo's
/// JSON. Enough for cargo's messages (xtask has no JSON parser); refuses escapes rather
/// than misread them.
fn json_string(line: &str, after: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(after)? + after.len()..];
    let needle = format!(r#""{key}":""#);
    let value = &rest[rest.find(&needle)? + needle.len()..];
    let value = &value[..value.find('"')?];
    (!value.contains('\\')).then(|| value.to_string())
}

/// The initramfs: busybox, the test binaries with their shared libraries, the kernel
/// modules (`modules`, [`TC_MODULES`]' files) and `/init`.
fn build_initramfs(
    vm_dir: &Path,
    test_binaries: &[(&str, PathBuf)],
    modules: &[PathBuf],
    filter: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let root = vm_dir.join("initramfs");
    remove_dir_if_present(&root)?;
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        create_dir(&root.join(dir))?;
    }
    let busybox_libs = shared_libraries(Path::new(BUSYBOX))?;
    if !busybox_libs.is_empty() {
        bail!("{BUSYBOX} is not static (it needs {busybox_libs:?}): install busybox-static");
    }
    copy_into(&root, Path::new(BUSYBOX), Path::new("bin/busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .with_context(|| format!("linking the {applet} applet"))?;
    }
    for (module, file) in TC_MODULES.iter().zip(modules) {
        copy_into(
            &root,
            file,
            &Path::new("modules").join(format!("{module}.ko")),
        )?;
    }
    for (target, binary) in test_binaries {
        copy_into(&root, binary, Path::new(target))?;
        for library in shared_libraries(binary)? {
            let inside = library
                .strip_prefix("/")
                .with_context(|| format!("ldd listed a relative path: {}", library.display()))?;
            copy_into(&root, &library, inside)?;
        }
    }
    let init = root.join("init");
    fs::write(&init, init_script(filter)).with_context(|| format!("writing {}", init.display()))?;
    set_executable(&init)?;

    let initrd = vm_dir.join("initrd.gz");
    pack(&root, &initrd)?;
    let size = fs::metadata(&initrd)
        .with_context(|| format!("reading {}", initrd.display()))?
        .len();
    println!(
        "vm-test: initramfs {} ({:.1} MB)",
        initrd.display(),
        size as f64 / 1e6
    );
    Ok(initrd)
}

fn init_script(filter: Option<&str>) -> String {
    let filter = filter.unwrap_or_default();
    let modules: String = TC_MODULES
        .iter()
        .map(|module| format!("insmod /modules/{module}.ko\n"))
        .collect();
    // Every binary runs; the code printed is the last failure's (0 if none failed).
    let runs: String = TEST_TARGETS
        .iter()
        .map(|target| {
            format!("CI=true /{target} --test-threads=1 --show-output {filter} || rc=$?\n")
        })
        .collect();
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm-test`: runs the kernel-side tests, prints their exit code.
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console, so the kernel could give /init no console.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /sys/fs/bpf
mount -t bpf bpf /sys/fs/bpf
echo "vm: Linux $(uname -r)"
{modules}cd /tmp
rc=0
{runs}echo "{RESULT_MARKER}$rc"
poweroff -f
"#
    )
}

/// What `ldd` lists for `binary`: its shared libraries and the dynamic loader (none for a
/// static binary).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("could not run ldd")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // ldd fails on a static binary.
        let message = String::from_utf8_lossy(&output.stderr);
        if listing.contains("not a dynamic executable")
            || message.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed ({}): {message}",
            binary.display(),
            output.status
        );
    }
    let mut libraries = Vec::new();
    for line in listing.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, the loader as
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`, or `linux-vdso.so.1 (0x...)` (in the
        // kernel: nothing to copy).
        let path = match line.split_once("=>") {
            Some((name, path)) => {
                let path = path.trim();
                if path.starts_with("not found") {
                    bail!(
                        "{} needs {}, which ldd did not find",
                        binary.display(),
                        name.trim()
                    );
                }
                path
            }
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Copies `source` (following symlinks) to `inside` under `root`.
fn copy_into(root: &Path, source: &Path, inside: &Path) -> anyhow::Result<()> {
    let destination = root.join(inside);
    if let Some(parent) = destination.parent() {
        create_dir(parent)?;
    }
    fs::copy(source, &destination)
        .with_context(|| format!("copying {} to {}", source.display(), destination.display()))?;
    Ok(())
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// `root` as a gzipped newc cpio archive (what the kernel unpacks as its initramfs).
fn pack(root: &Path, initrd: &Path) -> anyhow::Result<()> {
    let mut names = Vec::new();
    list_tree(root, Path::new(""), &mut names)?;
    let archive =
        fs::File::create(initrd).with_context(|| format!("creating {}", initrd.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cpio")?;
    let cpio_out = cpio.stdout.take().context("cpio has no stdout")?;
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n"])
        .stdin(cpio_out)
        .stdout(archive)
        .spawn()
        .context("could not start gzip")?;
    {
        let mut stdin = cpio.stdin.take().context("cpio has no stdin")?;
        for name in &names {
            writeln!(stdin, "{}", name.display()).context("writing cpio's file list")?;
        }
    }
    let cpio = cpio.wait().context("waiting for cpio")?;
    let gzip = gzip.wait().context("waiting for gzip")?;
    if !cpio.success() || !gzip.success() {
        bail!(
            "packing {} failed (cpio {cpio}, gzip {gzip})",
            initrd.display()
        );
    }
    Ok(())
}

/// Every path under `dir` (relative to the archive root), each directory before its contents.
fn list_tree(root: &Path, dir: &Path, names: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(dir))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", root.join(dir).display()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = dir.join(entry.file_name());
        names.push(name.clone());
        if entry.file_type().context("reading a file type")?.is_dir() {
            list_tree(root, &name, names)?;
        }
    }
    Ok(())
}

/// Boots the VM, streaming its console to stdout, and returns the console output. Fails if
/// qemu does not stop within `timeout`.
fn boot(kernel: &Path, initrd: &Path, timeout: Duration, echo: bool) -> anyhow::Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args([
            "-accel",
            "tcg",
            // The tests keep a loaded filter for the next (tests/src/loaded.rs) beside
            // those they load: two sets of preallocated maps did not fit in 1 GB.
            "-m",
            "2048",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64")?;
    let console = qemu.stdout.take().context("qemu has no stdout")?;
    let reader = thread::spawn(move || {
        let mut console = BufReader::new(console);
        let mut output = String::new();
        let mut line = Vec::new();
        let stdout = std::io::stdout();
        loop {
            line.clear();
            match console.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).replace('\r', "");
                    if echo {
                        let mut out = stdout.lock();
                        // A closed stdout must not stop the capture.
                        let _ = write!(out, "vm| {text}");
                        let _ = out.flush();
                    }
                    output.push_str(&text);
                }
            }
        }
        output
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = qemu.try_wait().context("waiting for qemu")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            qemu.kill().context("killing qemu")?;
            qemu.wait().context("waiting for the killed qemu")?;
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let output = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the thread reading qemu's console panicked"))?;
    let failed = !status.is_some_and(|status| status.success());
    if echo {
        println!();
    } else if failed {
        // Quiet until now: what the VM printed is all there is to read of its failure.
        for line in output.lines() {
            println!("vm| {line}");
        }
    }
    match status {
        None => bail!(
            "the VM did not stop within {} s: qemu killed (see its output above)",
            timeout.as_secs()
        ),
        Some(status) if !status.success() => {
            bail!("qemu failed ({status}): see its messages above")
        }
        Some(_) => Ok(output),
    }
}

/// The tests' exit code, from the marker line `/init` prints.
fn result_code(output: &str) -> Option<i32> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix(RESULT_MARKER))
        .find_map(|code| code.trim().parse().ok())
}

/// The end of each distinct verifier log in `output`: the source line and instruction the
/// verifier refused and its message. The whole log is in the output above it.
fn verifier_summary(output: &str) -> Option<String> {
    let lines: Vec<&str> = output.lines().collect();
    let mut summaries: Vec<String> = Vec::new();
    for (end, line) in lines.iter().enumerate() {
        if !line.starts_with("verification time") {
            continue;
        }
        // Back from the statistics to the last instruction the verifier looked at...
        let Some(refused) = (0..end).rev().find(|&i| is_instruction(lines[i])) else {
            continue;
        };
        let mut summary = Vec::new();
        // ...and further back, over the instructions before it, to its source line.
        let mut i = refused;
        while i > 0 && is_instruction(lines[i - 1]) {
            i -= 1;
        }
        if i > 0 && lines[i - 1].starts_with("; ") && lines[i - 1].trim() != ";" {
            summary.push(lines[i - 1].to_string());
            if i < refused {
                summary.push(format!("  ... {} instruction(s) later:", refused - i));
            }
        }
        summary.extend(lines[refused..end].iter().map(|line| line.to_string()));
        let summary = summary
            .iter()
            .map(|line| format!("    {line}"))
            .collect::<Vec<_>>()
            .join("\n");
        if !summaries.contains(&summary) {
            summaries.push(summary);
        }
    }
    if summaries.is_empty() && output.contains(VERIFIER_LOG_MARKER) {
        summaries.push("    (the log has no statistics line: see the output above)".into());
    }
    (!summaries.is_empty()).then(|| summaries.join("\n"))
}

/// A verifier log line for an instruction: `1641: (73) *(u8 *)(r10 -93) = r7`.
fn is_instruction(line: &str) -> bool {
    line.split_once(": (")
        .is_some_and(|(index, _)| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_abi() {
        let names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-55-amd64",
            "linux-image-6.1.0-rt-amd64",
            "linux-image-amd64",
        ];
        assert_eq!(
            newest_abi(names.into_iter()).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
    }

    #[test]
    fn reads_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#sip-filter-tests@0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"prog_test_run","src_path":"/w/tests/tests/prog_test_run.rs"},"executable":"/w/target/debug/deps/prog_test_run-0123","fresh":true}"#;
        assert_eq!(
            json_string(line, r#""target":{"#, "name").as_deref(),
            Some("prog_test_run")
        );
        assert_eq!(
            json_string(line, "", "executable").as_deref(),
            Some("/w/target/debug/deps/prog_test_run-0123")
        );
    }

    #[test]
    fn summarizes_the_verifier_log() {
        let log = "verifier_log: 0: R1=ctx() R10=fp0\n; let a = b;\n1640: (6b) *(u16 *)(r10 -120) = r3\n1641: (73) *(u8 *)(r10 -93) = r7\ninvalid size of register spill\nverification time 15455 usec\nstack depth 344\n";
        // Each test prints the same log: summarized once.
        let output = format!("x\n{log}y\n{log}");
        assert_eq!(
            verifier_summary(&output).as_deref(),
            Some("    ; let a = b;\n      ... 1 instruction(s) later:\n    1641: (73) *(u8 *)(r10 -93) = r7\n    invalid size of register spill")
        );
        assert_eq!(result_code("a\nSIP_FILTER_VM_RESULT=101\r\n"), Some(101));
        assert_eq!(result_code("a\n"), None);
    }
}
