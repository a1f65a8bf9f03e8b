//! A NIC-like sender for the packet-path benchmark and its test: frames that reach the
//! receiving veth's XDP program as `xdp_frame`s, with no socket buffer, as a physical
//! NIC's native XDP sees them (see `shared/NICPATH.md` for how this was verified).
//!
//! An AF_PACKET socket builds a socket buffer for every frame before the peer's XDP
//! runs, so on that path XDP pays for the buffer like netfilter does. Here the sender is
//! `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): the kernel
//! runs a small XDP program on page-pool frames holding our frame, and its `XDP_TX`
//! becomes a transmission out of the sending veth (`ingress_ifindex`), whose peer
//! receives `xdp_frame`s in its NAPI poll. The receiving end needs NAPI: an XDP program
//! (the filter's, or [`ConstantXdp`]'s `XDP_PASS` for the set-ups that filter later in
//! the stack).
//!
//! Some kernels refuse live-frames mode outright (6.18.44-fc-v1300 answers EPERM even
//! for a bare `XDP_DROP` program, as root with CAP_BPF and CAP_NET_ADMIN). The flood then
//! goes through a launcher veth pair instead ([`SendMethod::Redirected`]): the receiving
//! side is the same, the sender's CPU is not.
//!
//! Live frames are not rewritten per packet, so the sender's program varies the source
//! itself: source address = first + (counter % count), from a per-CPU counter, with
//! the IPv4 header checksum and the UDP checksum updated incrementally (RFC 1624).
//!
//! The programs are a handful of raw BPF instructions loaded with `bpf(2)`: no clang,
//! no object file.

use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};

use sip_filter::bpf_sys::bpf_returning as bpf;

use crate::netns::Netns;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`, for `BPF_LINK_CREATE`.
const BPF_XDP: u32 = 37;
/// Native (driver) mode only: generic mode would build the very skb we avoid.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

/// Frames per batch in the kernel's live-frames loop (its default; at most 256). The
/// receiving veth's ring holds 256 frames: a batch is flushed to it, then its NAPI poll
/// runs when the sender's bottom halves are enabled again.
const LIVE_BATCH: u32 = 64;
/// How long one `BPF_PROG_TEST_RUN` call should last. Each call sets up a page pool and
/// fills its pages with the frame (about 0.4 ms of CPU here, measured): long calls make
/// that a few nanoseconds per frame; calls of bounded time let a flood stop on time
/// whatever a frame costs (from tens of nanoseconds to tens of microseconds, by set-up).
const CALL_TIME: Duration = Duration::from_millis(50);
/// Repeats of the first call, and the bounds of the later ones (sized on the rate so
/// far to last about [`CALL_TIME`]).
const FIRST_REPEATS: u64 = 16_384;
const MIN_REPEATS: u64 = 16_384;
const MAX_REPEATS: u64 = 1 << 22;

// Where the sender's program rewrites the frame: Ethernet (14 bytes), then an IPv4
// header without options (the frames are ours), then UDP.
/// The IPv4 header checksum.
const IP_CHECKSUM_AT: i16 = 14 + 10;
/// The low 16 bits of the IPv4 source address (the high 16 bits stay: see [`Sources`]).
const SOURCE_LOW_AT: i16 = 14 + 12 + 2;
/// The UDP checksum.
const UDP_CHECKSUM_AT: i16 = 14 + 20 + 6;
/// The bytes the program touches, all within the first ones.
const REWRITTEN_END: i32 = UDP_CHECKSUM_AT as i32 + 2;

/// The source addresses a flood cycles through: `first`, `first + 1`, ...,
/// `first + count - 1`, all with the same upper 16 bits (the program rewrites only the
/// lower half of the address, so one 16-bit word of each checksum changes).
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    pub first: Ipv4Addr,
    pub count: u32,
}

impl Sources {
    fn check(&self) -> anyhow::Result<()> {
        let low = u32::from(self.first) & 0xffff;
        ensure!(
            self.count >= 1 && low + self.count <= 0x1_0000,
            "{} sources from {} cross a /16 boundary: the sender rewrites only the low 16 bits",
            self.count,
            self.first
        );
        Ok(())
    }
}

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const AND: u8 = 0x50;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
/// With `END`: convert to big endian (network order).
const TO_BE: u8 = 0x08;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `ld_imm64`'s source register when its immediate is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_REDIRECT: i32 = 23;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R10: u8 = 10;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A program being written, with forward jumps to named places patched at the end.
#[derive(Default)]
struct Assembler {
    insns: Vec<Insn>,
    /// (instruction index, label) of each jump still to patch.
    jumps: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Assembler {
    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }
    /// `dst = imm` (32-bit, zero-extended).
    fn mov32_imm(&mut self, dst: u8, imm: i32) {
        self.push(insn(ALU | MOV | K, dst, 0, 0, imm));
    }
    fn mov64_reg(&mut self, dst: u8, src: u8) {
        self.push(insn(ALU64 | MOV | X, dst, src, 0, 0));
    }
    fn mov32_reg(&mut self, dst: u8, src: u8) {
        self.push(insn(ALU | MOV | X, dst, src, 0, 0));
    }
    fn alu32_imm(&mut self, op: u8, dst: u8, imm: i32) {
        self.push(insn(ALU | op | K, dst, 0, 0, imm));
    }
    fn alu32_reg(&mut self, op: u8, dst: u8, src: u8) {
        self.push(insn(ALU | op | X, dst, src, 0, 0));
    }
    fn add64_imm(&mut self, dst: u8, imm: i32) {
        self.push(insn(ALU64 | ADD | K, dst, 0, 0, imm));
    }
    fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.push(insn(LDX | size | MEM, dst, src, off, 0));
    }
    fn store_reg(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.push(insn(STX | size | MEM, dst, src, off, 0));
    }
    fn store_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) {
        self.push(insn(ST | size | MEM, dst, 0, off, imm));
    }
    /// `dst = map` (the two-instruction `ld_imm64` with a map's descriptor).
    fn load_map(&mut self, dst: u8, map: &OwnedFd) {
        self.push(insn(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, map.as_raw_fd()));
        self.push(insn(0, 0, 0, 0, 0));
    }
    fn jump_imm(&mut self, op: u8, dst: u8, imm: i32, to: &'static str) {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(JMP | op | K, dst, 0, 0, imm));
    }
    fn jump_reg(&mut self, op: u8, dst: u8, src: u8, to: &'static str) {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(JMP | op | X, dst, src, 0, 0));
    }
    fn call(&mut self, helper: i32) {
        self.push(insn(JMP | CALL, 0, 0, 0, helper));
    }
    fn exit(&mut self) {
        self.push(insn(JMP | EXIT, 0, 0, 0, 0));
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    /// `sum` (a one's complement sum of 16-bit words, below 2^32) folded to 16 bits,
    /// using `scratch`: twice is enough for any such sum.
    fn fold16(&mut self, sum: u8, scratch: u8) {
        for _ in 0..2 {
            self.mov32_reg(scratch, sum);
            self.alu32_imm(RSH, scratch, 16);
            self.alu32_imm(AND, sum, 0xffff);
            self.alu32_reg(ADD, sum, scratch);
        }
    }
    fn finish(mut self) -> anyhow::Result<Vec<Insn>> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = self
                .labels
                .iter()
                .find(|(name, _)| *name == to)
                .map(|(_, index)| *index)
                .with_context(|| format!("no label {to}"))?;
            // A jump's offset counts from the instruction after it.
            self.insns[at].off = i16::try_from(target as isize - at as isize - 1)?;
        }
        Ok(self.insns)
    }
}

/// The sender's program: give the frame the next source address, fix both checksums,
/// and send it (`XDP_TX`, out of the interface named as `ingress_ifindex`).
///
/// The checksum update (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m'), where m and m' are
/// the old and new 16-bit words. One's complement sums do not depend on byte order, so
/// the words are used as loaded; the new word is stored in network order. Recycled
/// live frames keep what the program wrote last time, so the old word is read from the
/// frame, never assumed.
fn sender_program(
    counter: &OwnedFd,
    sources: Sources,
    redirect_to: Option<u32>,
) -> anyhow::Result<Vec<Insn>> {
    let first_low = (u32::from(sources.first) & 0xffff) as i32;
    let count = i32::try_from(sources.count)?;
    let mut a = Assembler::default();
    a.mov64_reg(R6, R1); // r6 = ctx (struct xdp_md)
                         // r0 = &counter[0] (this CPU's)
    a.store_imm(W, R10, -4, 0);
    a.load_map(R1, counter);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, -4);
    a.call(HELPER_MAP_LOOKUP_ELEM);
    a.jump_imm(JEQ, R0, 0, "send");
    // r7 = counter++ % count + first's low half, in network order
    a.load(W, R7, R0, 0);
    a.mov32_reg(R8, R7);
    a.alu32_imm(ADD, R8, 1);
    a.store_reg(W, R0, 0, R8);
    a.alu32_imm(MOD, R7, count);
    a.alu32_imm(ADD, R7, first_low);
    a.push(insn(ALU | END | TO_BE, R7, 0, 0, 16));
    // r2 = data, r3 = data_end; the frame must hold every byte rewritten
    a.load(W, R2, R6, 0);
    a.load(W, R3, R6, 4);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, REWRITTEN_END);
    a.jump_reg(JGT, R4, R3, "send");
    // r5 = ~old + new: what both checksums gain
    a.load(H, R5, R2, SOURCE_LOW_AT);
    a.store_reg(H, R2, SOURCE_LOW_AT, R7);
    a.alu32_imm(XOR, R5, 0xffff);
    a.alu32_reg(ADD, R5, R7);
    // The IPv4 header checksum.
    a.load(H, R0, R2, IP_CHECKSUM_AT);
    a.alu32_imm(XOR, R0, 0xffff);
    a.alu32_reg(ADD, R0, R5);
    a.fold16(R0, R1);
    a.alu32_imm(XOR, R0, 0xffff);
    a.store_reg(H, R2, IP_CHECKSUM_AT, R0);
    // The UDP checksum (the source address is in its pseudo-header), unless absent (0).
    a.load(H, R0, R2, UDP_CHECKSUM_AT);
    a.jump_imm(JEQ, R0, 0, "send");
    a.alu32_imm(XOR, R0, 0xffff);
    a.alu32_reg(ADD, R0, R5);
    a.fold16(R0, R1);
    a.alu32_imm(XOR, R0, 0xffff);
    // A computed 0 is sent as 0xffff: 0 would mean "no checksum" (RFC 768).
    a.jump_imm(JNE, R0, 0, "store_udp");
    a.mov32_imm(R0, 0xffff);
    a.label("store_udp");
    a.store_reg(H, R2, UDP_CHECKSUM_AT, R0);
    a.label("send");
    match redirect_to {
        // Out of that interface (`bpf_redirect(ifindex, 0)` answers XDP_REDIRECT).
        Some(ifindex) => {
            a.mov32_imm(R1, i32::try_from(ifindex)?);
            a.mov32_imm(R2, 0);
            a.call(HELPER_REDIRECT);
        }
        None => a.mov32_imm(R0, XDP_TX),
    }
    a.exit();
    a.finish()
}

/// `r0 = verdict; exit`.
fn constant_program(verdict: i32) -> Vec<Insn> {
    let mut a = Assembler::default();
    a.mov32_imm(R0, verdict);
    a.exit();
    a.insns
}

/// `bpf(2)`'s answer as an owned descriptor.
fn bpf_fd<T>(command: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(command, attr)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the command returned a new descriptor, owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the last field.
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `struct xdp_md`, the test run's context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Loads an XDP program; the verifier's log in the error if it refuses it.
fn load_xdp(name: &str, insns: &[Insn]) -> anyhow::Result<OwnedFd> {
    let license = CString::new("GPL")?;
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: u32::try_from(insns.len())?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    bpf_fd(BPF_PROG_LOAD, &mut attr).with_context(|| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        format!(
            "loading the XDP program {name}; the verifier said:\n{}",
            String::from_utf8_lossy(&log[..end])
        )
    })
}

/// The interface's index in the calling thread's network namespace.
fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface)?;
    // SAFETY: a NUL-terminated name that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(index != 0, "no interface {iface} in this namespace");
    Ok(index)
}

/// The sender: its program and its per-CPU counter of frames sent.
pub struct LiveSender {
    program: OwnedFd,
    counter: OwnedFd,
}

impl LiveSender {
    /// Loads the sender's program for `sources`.
    pub fn new(sources: Sources) -> anyhow::Result<Self> {
        Self::loaded(sources, None)
    }

    /// Loads the sender's program for `sources`, redirecting each frame out of the
    /// interface `ifindex` instead of `XDP_TX` (see [`SendMethod::Redirected`]).
    fn redirecting(sources: Sources, ifindex: u32) -> anyhow::Result<Self> {
        Self::loaded(sources, Some(ifindex))
    }

    fn loaded(sources: Sources, redirect_to: Option<u32>) -> anyhow::Result<Self> {
        sources.check()?;
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        };
        let counter = bpf_fd(BPF_MAP_CREATE, &mut attr).context("creating the sender's counter")?;
        let program = load_xdp(
            "sf_livesend",
            &sender_program(&counter, sources, redirect_to)?,
        )?;
        Ok(LiveSender { program, counter })
    }

    /// Frames the program has run on, on every CPU.
    fn frames(&self) -> anyhow::Result<u64> {
        // A per-CPU map's value has a slot for each possible CPU.
        let cpus = aya::util::nr_cpus().map_err(|(path, error)| {
            anyhow::Error::new(error).context(format!("reading {path}"))
        })?;
        let mut values = vec![0u64; cpus];
        let key = 0u32;
        let mut attr = MapElemAttr {
            map_fd: self.counter.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: values.as_mut_ptr() as u64,
            flags: 0,
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("reading the sender's counter")?;
        // Each CPU's 4-byte count, in an 8-byte slot.
        Ok(values.iter().map(|slot| *slot & 0xffff_ffff).sum())
    }

    /// Runs the program once on `frame` without sending (an ordinary test run): the
    /// frame as the next live frame would leave. For checking the rewriting.
    pub fn rewrite_once(&self, frame: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = TestRunAttr {
            prog_fd: self.program.as_raw_fd() as u32,
            data_size_in: u32::try_from(frame.len())?,
            data_size_out: out.len() as u32,
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("a test run of the sender's program")?;
        ensure!(
            attr.retval == XDP_TX as u32,
            "the sender's program returned {}",
            attr.retval
        );
        out.truncate(attr.data_size_out as usize);
        Ok(out)
    }

    /// Sends `repeat` copies of `frame` (each with the next source) out of the interface
    /// `ifindex` of the calling thread's namespace, as live frames.
    fn send(&self, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<()> {
        let mut context = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex: ifindex,
            ..Default::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: self.program.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: &mut context as *mut XdpMd as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: LIVE_BATCH,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
    }
}

/// How a live flood is bounded, and where it runs.
pub struct LiveFlood<'a> {
    /// The namespace of the sending interface.
    pub ns: Netns<'a>,
    pub iface: &'a str,
    /// One Ethernet frame: IPv4 without options, then UDP (its source is rewritten).
    pub frame: &'a [u8],
    pub sources: Sources,
    /// Stops after this many frames, or this long, whichever comes first.
    pub max_frames: u64,
    pub max_time: Duration,
    /// The CPU the sender is pinned to (the receiver's NAPI poll runs there too).
    pub cpu: usize,
    /// The sending thread's nice value. 19 lets the softirq thread that drains the
    /// receiving veth's 256-frame ring run first when the kernel defers the receive
    /// path to it, but starves the sender behind any other work on its CPU: 0 on a
    /// shared machine.
    pub nice: i32,
}

/// What a live flood sent, and what the sending thread cost.
#[derive(Clone, Copy, Debug)]
pub struct LiveSent {
    /// Frames the program ran on and sent (some may have found the peer's ring full:
    /// the sending veth's `xdp_xmit_errors`).
    pub frames: u64,
    pub elapsed: Duration,
    /// The sending thread's user and system time (`getrusage(RUSAGE_THREAD)`).
    pub thread_cpu: Duration,
    pub method: SendMethod,
}

/// How a flood's frames were put on the sending veth. Either way the receiving veth
/// gets `xdp_frame`s and runs its XDP program on them with no socket buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMethod {
    /// `BPF_PROG_TEST_RUN` in live-frames mode: no socket buffer on either side.
    LiveFrames,
    /// The kernel refused live frames (EPERM even for a bare `XDP_DROP` program: some
    /// 6.18 builds do): AF_PACKET frames into a launcher veth pair in the sending
    /// namespace, whose far end's native XDP program rewrites each frame as the live
    /// sender's does and redirects it out of the sending veth (`ndo_xdp_xmit`). The
    /// sender then pays a socket buffer per frame, so its CPU figures are not the live
    /// sender's; the receiving side is the same.
    Redirected,
}

impl SendMethod {
    pub fn name(self) -> &'static str {
        match self {
            SendMethod::LiveFrames => "live frames",
            SendMethod::Redirected => "redirected from a launcher veth (live frames refused)",
        }
    }
}

impl LiveFlood<'_> {
    /// Sends as fast as one CPU does, from a thread that has entered the sending
    /// namespace (`ingress_ifindex` is resolved there).
    pub fn run(&self) -> anyhow::Result<LiveSent> {
        let sender = LiveSender::new(self.sources)?;
        ensure!(
            self.frame.len() >= REWRITTEN_END as usize,
            "a {}-byte frame is too short",
            self.frame.len()
        );
        let live = self
            .ns
            .in_namespace(|| -> anyhow::Result<Option<LiveSent>> {
                let index = ifindex(self.iface)?;
                self.settle_sending_thread()?;
                let cpu_before = thread_cpu();
                let (mut frames, start) = (0u64, Instant::now());
                let mut per_call = FIRST_REPEATS;
                while frames < self.max_frames && start.elapsed() < self.max_time {
                    let repeat = (self.max_frames - frames).min(per_call) as u32;
                    match sender.send(self.frame, index, repeat) {
                        Ok(()) => {}
                        Err(e) if frames == 0 && e.raw_os_error() == Some(libc::EPERM) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(e).context("BPF_PROG_TEST_RUN in live-frames mode"),
                    }
                    frames += u64::from(repeat);
                    let rate = frames as f64 / start.elapsed().as_secs_f64().max(1e-6);
                    per_call =
                        ((rate * CALL_TIME.as_secs_f64()) as u64).clamp(MIN_REPEATS, MAX_REPEATS);
                }
                Ok(Some(LiveSent {
                    frames,
                    elapsed: start.elapsed(),
                    thread_cpu: thread_cpu().saturating_sub(cpu_before),
                    method: SendMethod::LiveFrames,
                }))
            })??;
        match live {
            Some(sent) => Ok(sent),
            None => self.run_redirected(),
        }
    }

    /// Pins the calling (sending) thread to the flood's CPU, at the flood's nice value.
    fn settle_sending_thread(&self) -> anyhow::Result<()> {
        pin_to_cpu(self.cpu)?;
        // SAFETY: plain system call; on Linux PRIO_PROCESS with 0 is this thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) } != 0 {
            return Err(io::Error::last_os_error()).context("setting the sender's nice value");
        }
        Ok(())
    }

    /// [`SendMethod::Redirected`].
    fn run_redirected(&self) -> anyhow::Result<LiveSent> {
        let launcher = Launcher::new(self.ns)?;
        let out = self.ns.in_namespace(|| ifindex(self.iface))??;
        let sender = LiveSender::redirecting(self.sources, out)?;
        let _attached = launcher.attach(&sender)?;
        let counted_before = sender.frames()?;
        self.ns.in_namespace(|| -> anyhow::Result<LiveSent> {
            self.settle_sending_thread()?;
            let socket = crate::pathbench::PacketSocket::open(LAUNCHER_IN)?;
            let cpu_before = thread_cpu();
            let start = Instant::now();
            let mut written = 0u64;
            while written < self.max_frames && start.elapsed() < self.max_time {
                let left = usize::try_from(self.max_frames - written).unwrap_or(usize::MAX);
                written += socket.send_copies(self.frame, left)?;
            }
            // The launcher's poll runs on this CPU before the system call returns; a
            // moment for any straggler before counting.
            std::thread::sleep(Duration::from_millis(50));
            Ok(LiveSent {
                frames: sender.frames()?.saturating_sub(counted_before),
                elapsed: start.elapsed(),
                thread_cpu: thread_cpu().saturating_sub(cpu_before),
                method: SendMethod::Redirected,
            })
        })?
    }
}

/// The launcher veth pair of [`SendMethod::Redirected`]: frames written into
/// [`LAUNCHER_IN`] arrive at [`LAUNCHER_OUT`], where the sender's program runs. Removed
/// when dropped.
struct Launcher<'a> {
    ns: Netns<'a>,
}

const LAUNCHER_IN: &str = "sf-launch-in";
const LAUNCHER_OUT: &str = "sf-launch-out";

impl<'a> Launcher<'a> {
    fn new(ns: Netns<'a>) -> anyhow::Result<Self> {
        // A pair left by an interrupted run goes first.
        let _ = ns.ip(&["link", "del", LAUNCHER_IN]);
        ns.ip(&[
            "link",
            "add",
            LAUNCHER_IN,
            "type",
            "veth",
            "peer",
            "name",
            LAUNCHER_OUT,
        ])?;
        let launcher = Launcher { ns };
        // Nothing but the flood may cross the pair: the program counts, rewrites and
        // redirects every frame, and the test compares its count with the veth's.
        for iface in [LAUNCHER_IN, LAUNCHER_OUT] {
            let status = ns
                .command("sysctl")
                .args(["-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")])
                .status()
                .context("running sysctl")?;
            ensure!(
                status.success(),
                "disabling IPv6 on {iface} failed ({status})"
            );
        }
        ns.ip(&["link", "set", LAUNCHER_IN, "up"])?;
        ns.ip(&["link", "set", LAUNCHER_OUT, "up"])?;
        Ok(launcher)
    }

    /// The sender's program on [`LAUNCHER_OUT`], native mode, until the link is dropped.
    fn attach(&self, sender: &LiveSender) -> anyhow::Result<OwnedFd> {
        attach_native(self.ns, LAUNCHER_OUT, &sender.program, "the sender")
    }
}

impl Drop for Launcher<'_> {
    fn drop(&mut self) {
        let _ = self.ns.ip(&["link", "del", LAUNCHER_IN]);
    }
}

/// The calling thread's user and system time.
pub fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0)
    // pins the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error()).context("pinning the live sender");
        }
    }
    Ok(())
}

/// A two-instruction XDP program returning one verdict, attached in native mode to a
/// receiving veth. `XDP_PASS`, for the set-ups that filter later (iptables, nftables,
/// Kamailio): it gives the veth the NAPI poll that receives `xdp_frame`s (veth builds
/// the socket buffer after it, as a NIC's driver would). `XDP_DROP`: the floor, what
/// receiving and dropping a frame costs with no policy at all. Detached when dropped
/// (its link is not pinned).
pub struct ConstantXdp {
    _link: OwnedFd,
}

impl ConstantXdp {
    pub fn attach(ns: Netns, iface: &str, verdict: i32) -> anyhow::Result<Self> {
        let name = if verdict == XDP_DROP {
            "sf_drop"
        } else {
            "sf_pass"
        };
        let program = load_xdp(name, &constant_program(verdict))?;
        let link = attach_native(ns, iface, &program, name)?;
        Ok(ConstantXdp { _link: link })
    }
}

/// Attaches `program` (called `name` in errors) to `iface` of `ns` in native mode, until
/// the returned link is dropped.
fn attach_native(ns: Netns, iface: &str, program: &OwnedFd, name: &str) -> anyhow::Result<OwnedFd> {
    ns.in_namespace(|| -> anyhow::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: program.as_raw_fd() as u32,
            target_ifindex: ifindex(iface)?,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        bpf_fd(BPF_LINK_CREATE, &mut attr)
            .with_context(|| format!("attaching {name} to {iface}, native mode"))
    })?
}

/// The veth counters `ethtool -S` shows, summed over queues: what a flood's frames met.
#[derive(Clone, Copy, Debug, Default)]
pub struct VethCounters {
    /// Frames (and socket buffers) its NAPI poll received (`rx_queue_*_xdp_packets`).
    pub xdp_received: u64,
    /// Of those, dropped by its XDP program (`rx_queue_*_xdp_drops`).
    pub xdp_drops: u64,
    /// `xdp_frame`s it sent to its peer (`tx_queue_*_xdp_xmit`).
    pub xdp_sent: u64,
    /// `xdp_frame`s its peer's full ring refused (`tx_queue_*_xdp_xmit_errors`).
    pub xdp_send_errors: u64,
}

impl VethCounters {
    pub fn read(ns: Netns, iface: &str) -> anyhow::Result<Self> {
        let shown = ns.run("ethtool", &["-S", iface], Duration::from_secs(30));
        ensure!(shown.success(), "{shown}");
        let mut counters = VethCounters::default();
        for line in shown.stdout.lines() {
            let Some((name, value)) = line.trim().split_once(": ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            let queue_counter = |prefix: &str, suffix: &str| {
                name.starts_with(prefix)
                    && name
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.split_once('_'))
                        .is_some_and(|(queue, rest)| queue.parse::<u32>().is_ok() && rest == suffix)
            };
            if queue_counter("rx_queue_", "xdp_packets") {
                counters.xdp_received += value;
            } else if queue_counter("rx_queue_", "xdp_drops") {
                counters.xdp_drops += value;
            } else if queue_counter("tx_queue_", "xdp_xmit") {
                counters.xdp_sent += value;
            } else if queue_counter("tx_queue_", "xdp_xmit_errors") {
                counters.xdp_send_errors += value;
            }
        }
        Ok(counters)
    }

    /// What rose since `before`.
    pub fn since(&self, before: &VethCounters) -> VethCounters {
        VethCounters {
            xdp_received: self.xdp_received.saturating_sub(before.xdp_received),
            xdp_drops: self.xdp_drops.saturating_sub(before.xdp_drops),
            xdp_sent: self.xdp_sent.saturating_sub(before.xdp_sent),
            xdp_send_errors: self.xdp_send_errors.saturating_sub(before.xdp_send_errors),
        }
    }
}

/// A counter of the `Ip:` line of `/proc/net/snmp` in `ns` (`InReceives`: IPv4 packets
/// that reached the IP layer, i.e. had a socket buffer built and handed to the stack).
pub fn ip_counter(ns: Netns, name: &str) -> anyhow::Result<u64> {
    let shown = ns.run("cat", &["/proc/net/snmp"], Duration::from_secs(30));
    ensure!(shown.success(), "{shown}");
    let mut ip = shown.stdout.lines().filter(|line| line.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        anyhow::bail!("no Ip lines in /proc/net/snmp:\n{}", shown.stdout);
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, value)| value.parse().ok())
        .with_context(|| format!("no Ip {name} in /proc/net/snmp"))
}
