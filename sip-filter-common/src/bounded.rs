//! Loops the BPF verifier checks one body at a time.
//!
//! A plain bounded loop is verified by walking it: every iteration, and every path
//! through every iteration whose state differs from those already seen. A parser's
//! loops branch on every byte, and in sequence they multiply: a SIP parser written as
//! plain loops passes the host's tests and then exceeds the verifier's 1M-instruction
//! budget. In the kernel, [`repeat`] runs its body through the `bpf_loop` helper
//! (Linux 5.17+), whose callback is verified as a function of its own; the kernel then
//! inlines the loop into direct calls (6.0+). State that crosses iterations lives in the
//! per-CPU scratch map value (see [`crate::scan::Vol`]), so every iteration starts
//! from the same, unknown, state. On the host the same bodies run in a plain loop.

/// Loop steps the benchmark's `ref_calls` reference program makes, to price one call.
pub const REF_CALLS: u32 = 16;

/// A loop body: `run` is called with 0, 1, 2, … and returns whether to go on.
pub trait LoopBody {
    fn run(&mut self, index: u32) -> bool;
}

/// Calls `body.run(i)` for `i` in `0..count` until it returns false.
#[inline(always)]
pub fn repeat<B: LoopBody>(count: u32, body: &mut B) {
    #[cfg(target_arch = "bpf")]
    {
        const BPF_FUNC_LOOP: usize = 181;
        // SAFETY: the helper's signature (include/uapi/linux/bpf.h); `body` outlives the
        // call, and `trampoline::<B>` reads it as a `B`.
        unsafe {
            let bpf_loop: unsafe extern "C" fn(
                u32,
                extern "C" fn(u64, *mut core::ffi::c_void) -> i64,
                *mut core::ffi::c_void,
                u64,
            ) -> i64 = core::mem::transmute(BPF_FUNC_LOOP);
            bpf_loop(count, trampoline::<B>, (body as *mut B).cast(), 0);
        }
    }
    #[cfg(not(target_arch = "bpf"))]
    for index in 0..count {
        if !body.run(index) {
            break;
        }
    }
}

/// Runs `body` once, verified on its own (see the module's documentation).
#[inline(always)]
pub fn isolated<B: LoopBody>(body: &mut B) {
    repeat(1, body)
}

#[cfg(target_arch = "bpf")]
extern "C" fn trampoline<B: LoopBody>(index: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `repeat` passes a `*mut B` as the context.
    let body = unsafe { &mut *context.cast::<B>() };
    if body.run(index as u32) {
        0
    } else {
        1
    }
}

impl<F: FnMut(u32) -> bool> LoopBody for F {
    #[inline(always)]
    fn run(&mut self, index: u32) -> bool {
        self(index)
    }
}
