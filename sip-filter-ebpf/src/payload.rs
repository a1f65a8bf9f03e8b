//! The one payload copy: the UDP or TCP payload's first bytes into the per-CPU scan buffer,
//! made by the filter (`judge`) and, so that it measures the same thing, by the
//! benchmark's `ref_scan`.

use crate::headers::Frame;
use sip_filter_common::{scan::BUF_BYTES, ScanBuf, SCAN_LEN};

/// Copies up to [`SCAN_LEN`] of the `payload_len` bytes at `payload_offset` into `buf`
/// and clears what follows them (`ScanBuf::clear_tail`). Returns the bytes held; `None`
/// if the kernel refused the copy.
#[allow(unexpected_cfgs)] // sip_filter_verifier_regression_6_1, set through build.rs
#[inline(always)]
pub fn load_payload(
    ctx: &impl Frame,
    payload_offset: u32,
    payload_len: u32,
    buf: &mut ScanBuf,
) -> Option<usize> {
    let len = if payload_len > SCAN_LEN as u32 {
        SCAN_LEN as u32
    } else {
        payload_len
    };
    // Before the copy, not after: see `ScanBuf::clear_tail`.
    buf.clear_tail(len as usize);
    if len > 0 {
        // Written so that 6.1's verifier also sees 1..=BUF_BYTES (it learns no lower
        // bound from a `!= 0` branch). Laundered first: knowing `len` is 1..=SCAN_LEN,
        // LLVM would fold the mask away and pass `len` itself, unbounded below on 6.1.
        let unknown_len = buf.launder(len as usize) as u32;
        #[cfg(not(sip_filter_verifier_regression_6_1))]
        let load_len = (unknown_len.wrapping_sub(1) & (BUF_BYTES as u32 - 1)) + 1;
        // The form 6.1 refuses (6.18 accepts it), built only by
        // `cargo xtask vm-test --expect-verifier-failure` to show that test catches it.
        #[cfg(sip_filter_verifier_regression_6_1)]
        let load_len = unknown_len & (BUF_BYTES as u32 - 1);
        #[cfg(sip_filter_verifier_regression_6_1)]
        if load_len == 0 {
            return None;
        }
        // SAFETY: `buf` is BUF_BYTES long and `load_len` at most that.
        let loaded = unsafe { ctx.load(payload_offset, buf.words.as_mut_ptr().cast(), load_len) };
        if loaded != 0 {
            return None;
        }
    }
    Some(len as usize)
}
