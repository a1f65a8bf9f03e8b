//! `cargo xtask profile`: where the XDP program spends its time, per function and per
//! machine instruction, while the benchmark runs one packet class.
//!
//! `perf annotate` cannot show JIT'd BPF without libopcodes, `bpftool prog dump jited`
//! needs libbfd, and these machines have no /proc/kcore; so this samples every CPU with
//! `perf record -e cpu-clock`, fetches the JIT image of each of the program's functions
//! with `BPF_OBJ_GET_INFO_BY_FD`, disassembles it with `objdump`, and counts samples per
//! instruction. Sampling in a VM skids: a sample often lands an instruction or two after
//! the one that cost (after a call, on the instruction after the return).

use std::{
    collections::HashMap,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::{
    setup::{install_packages, run},
    vm::{target_dir, workspace_root},
};

/// The XDP entry program, and every program sampled (the kernel keeps 15 bytes of a
/// name).
const ENTRY_PROGRAM: &str = "sip_filter";
const PROGRAMS: &[&str] = &[
    ENTRY_PROGRAM,
    "sip_filter_tcp",
    "sip_filter_tcp_",
    "sip_filter_tls",
    "sip_filter_invi",
];
/// How long the benchmark may take to load the programs.
const LOAD_WAIT_SECONDS: u64 = 120;

/// Debian packages the profile runs: perf and objdump.
const PROFILE_PACKAGES: &[&str] = &["linux-perf", "binutils"];

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// The packet class to run (part of its name, as `bench --class` takes it).
    #[arg(long, default_value = "scanner")]
    class: String,
    /// Seconds to sample.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds to wait, once the programs are loaded, before sampling: a part that
    /// loads filters of its own first (`destinations` loads five and a country
    /// database, about a minute) needs more than the default.
    #[arg(long, default_value_t = 2)]
    after: u64,
}

pub fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    install_packages(PROFILE_PACKAGES)?;
    let root = workspace_root()?;
    let target = target_dir(&root);
    let out = target.join("profile");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "sip-filter-tests",
        "--bin",
        "bench",
    ]))?;
    // Repeats enough to outlast the sampling; the bench is killed after it.
    let bench = Command::new(target.join("release/bench"))
        .args([
            "--class",
            &args.class,
            "--runs",
            "3",
            "--repeat",
            "50000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the benchmark")?;
    let mut bench = KillOnDrop(bench);
    // The bench loads the programs, then runs its class first. Loading verifies every
    // program, which takes more than a few seconds on a busy machine: wait for all of
    // them, then a moment for the class to start.
    let mut waited = 0;
    while PROGRAMS
        .iter()
        .any(|program| bench_programs(bench.0.id(), program).is_empty())
    {
        if let Some(status) = bench.0.try_wait()? {
            bail!("the benchmark stopped early ({status}): run `target/release/bench --class {}` to see why", args.class);
        }
        if waited >= LOAD_WAIT_SECONDS {
            bail!("the benchmark did not load its programs in {LOAD_WAIT_SECONDS} s");
        }
        sleep(Duration::from_secs(1));
        waited += 1;
    }
    sleep(Duration::from_secs(args.after));
    // The entry program and the programs it tail-calls (stream, TLS, INVITE), in every
    // filter the bench loaded (a part that compares filters runs several): a class that
    // goes through them spends its time there.
    let mut functions = Vec::new();
    for program in PROGRAMS {
        for (fd, info) in bench_programs(bench.0.id(), program) {
            functions.extend(jited_functions(&fd, &info)?);
        }
    }
    let data = out.join("perf.data");
    run(Command::new("perf").args([
        "record",
        "-q",
        "-e",
        "cpu-clock",
        "-F",
        "25000",
        "-a",
        "-o",
        &data.to_string_lossy(),
        "--",
        "sleep",
        &args.seconds.to_string(),
    ]))?;
    drop(bench);
    let samples = samples_by_address(&data)?;
    report(&functions, &samples, &out)?;
    // The helpers' own time is in kernel functions (map lookups, the payload copy).
    println!("\nkernel and BPF functions over all samples (the helpers show here):");
    let symbols = Command::new("perf")
        .args(["report", "--stdio", "--sort", "sym", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .context("running perf report")?;
    String::from_utf8_lossy(&symbols.stdout)
        .lines()
        .filter(|line| line.contains('%'))
        .take(25)
        .for_each(|line| println!("{line}"));
    Ok(())
}

/// Kills the benchmark however `profile` ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One JIT'd function of a program: its kernel address, symbol and machine code.
struct Function {
    address: u64,
    name: String,
    code: Vec<u8>,
}

/// The functions of the program `fd` holds (`info` its [`object_info`]), from the
/// kernel.
fn jited_functions(fd: &Fd, info: &[u8; INFO_SIZE]) -> anyhow::Result<Vec<Function>> {
    let jited_len = read_u32(info, INFO_JITED_PROG_LEN) as usize;
    let ksym_count = read_u32(info, INFO_NR_JITED_KSYMS) as usize;
    let len_count = read_u32(info, INFO_NR_JITED_FUNC_LENS) as usize;
    let mut code = vec![0u8; jited_len];
    let mut ksyms = vec![0u64; ksym_count];
    let mut lens = vec![0u32; len_count];
    let mut request = [0u8; INFO_SIZE];
    write_u32(&mut request, INFO_JITED_PROG_LEN, jited_len as u32);
    write_u64(
        &mut request,
        INFO_JITED_PROG_INSNS,
        code.as_mut_ptr() as u64,
    );
    write_u32(&mut request, INFO_NR_JITED_KSYMS, ksym_count as u32);
    write_u32(&mut request, INFO_NR_JITED_FUNC_LENS, len_count as u32);
    write_u64(&mut request, INFO_JITED_KSYMS, ksyms.as_mut_ptr() as u64);
    write_u64(&mut request, INFO_JITED_FUNC_LENS, lens.as_mut_ptr() as u64);
    object_info(fd.0, &mut request)?;
    let names = kallsyms()?;
    let mut functions = Vec::new();
    let mut offset = 0usize;
    for (address, len) in ksyms.iter().zip(&lens) {
        let len = *len as usize;
        let Some(bytes) = code.get(offset..offset + len) else {
            bail!("the kernel's function lengths exceed the JIT image");
        };
        functions.push(Function {
            address: *address,
            name: names
                .get(address)
                .cloned()
                .unwrap_or_else(|| format!("{address:#x}")),
            code: bytes.to_vec(),
        });
        offset += len;
    }
    Ok(functions)
}

// Offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h).
const INFO_SIZE: usize = 240;
const INFO_JITED_PROG_LEN: usize = 16;
const INFO_JITED_PROG_INSNS: usize = 24;
const INFO_NAME: usize = 64;
const INFO_NR_JITED_KSYMS: usize = 104;
const INFO_NR_JITED_FUNC_LENS: usize = 108;
const INFO_JITED_KSYMS: usize = 112;
const INFO_JITED_FUNC_LENS: usize = 120;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// A file descriptor closed on drop.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: a descriptor this process opened and owns.
        unsafe { libc::close(self.0) };
    }
}

fn bpf(command: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a `union bpf_attr` of the size given, alive for the call.
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), attr.len()) };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn object_info(fd: i32, info: &mut [u8; INFO_SIZE]) -> anyhow::Result<()> {
    let mut attr = [0u8; 16];
    write_u32(&mut attr, 0, fd as u32);
    write_u32(&mut attr, 4, INFO_SIZE as u32);
    write_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok(())
}

/// The programs named `name` (the kernel keeps 15 bytes of a name) that process `pid`
/// holds open, opened, with their [`object_info`]: by the ids in its descriptors'
/// fdinfo, not by name alone, as other tests on the machine load programs of the same
/// names. None while the process has not loaded them (or has ended).
fn bench_programs(pid: u32, name: &str) -> Vec<(Fd, [u8; INFO_SIZE])> {
    let fdinfo = format!("/proc/{pid}/fdinfo");
    let Ok(entries) = fs::read_dir(&fdinfo) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut found = Vec::new();
    for id in ids {
        let mut attr = [0u8; 12];
        write_u32(&mut attr, 0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) else {
            continue; // unloaded meanwhile
        };
        let fd = Fd(fd as i32);
        let mut info = [0u8; INFO_SIZE];
        if object_info(fd.0, &mut info).is_err() {
            continue;
        }
        let raw = &info[INFO_NAME..INFO_NAME + 16];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if &raw[..end] == name.as_bytes() {
            found.push((fd, info));
        }
    }
    found
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn write_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn write_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Kernel symbols of BPF functions, by address.
fn kallsyms() -> anyhow::Result<HashMap<u64, String>> {
    let text = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let name = fields.nth(1)?;
            name.starts_with("bpf_prog_")
                .then(|| (address, name.to_string()))
        })
        .collect())
}

/// Samples per instruction address, from `perf script`.
fn samples_by_address(data: &Path) -> anyhow::Result<HashMap<u64, u64>> {
    let output = Command::new("perf")
        .args(["script", "-F", "ip", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script")?;
    let mut samples = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Ok(address) = u64::from_str_radix(line.trim(), 16) {
            *samples.entry(address).or_insert(0) += 1;
        }
    }
    Ok(samples)
}

/// Writes each function's annotated disassembly and prints the functions by share.
fn report(functions: &[Function], samples: &HashMap<u64, u64>, out: &Path) -> anyhow::Result<()> {
    let total: u64 = samples.values().sum();
    let mut rows = Vec::new();
    for (index, function) in functions.iter().enumerate() {
        let image = out.join(format!("f{index}.bin"));
        fs::write(&image, &function.code)?;
        let listing = Command::new("objdump")
            .args(["-D", "-b", "binary", "-mi386:x86-64"])
            .arg(format!("--adjust-vma={:#x}", function.address))
            .arg(&image)
            .output()
            .context("running objdump")?;
        let mut annotated = format!("{}\n", function.name);
        let mut hits = 0;
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            let Some((address, _)) = line.trim().split_once(':') else {
                continue;
            };
            let Ok(address) = u64::from_str_radix(address, 16) else {
                continue;
            };
            let count = samples.get(&address).copied().unwrap_or(0);
            hits += count;
            annotated.push_str(&format!("{count:7} {}\n", line.trim()));
        }
        let listing_file = out.join(format!("f{index}.asm"));
        fs::write(&listing_file, annotated)?;
        rows.push((hits, index, function));
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    let in_program: u64 = rows.iter().map(|row| row.0).sum();
    println!(
        "profile: {in_program} of {total} samples ({:.0}%) in sip_filter's programs; \
         annotated listings in {}/f<N>.asm",
        100.0 * in_program as f64 / total.max(1) as f64,
        out.display()
    );
    for (hits, index, function) in rows {
        println!(
            "{:5.1}%  f{index:<3} {:6} B  {}",
            100.0 * hits as f64 / in_program.max(1) as f64,
            function.code.len(),
            function.name
        );
    }
    Ok(())
}
