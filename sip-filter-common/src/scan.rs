//! The scan buffer: a bounded, word-aligned copy of a datagram's payload, and the
//! word-at-a-time (SWAR) primitives the parser builds on.
//!
//! Every access is masked to the buffer's power-of-two size, so the same code is
//! provably in bounds for the BPF verifier and cannot panic on the host.

/// Bytes in the buffer (a power of two, so indexes can be masked).
pub const BUF_BYTES: usize = 2048;
/// Words in the buffer.
pub const BUF_WORDS: usize = BUF_BYTES / 8;
/// The most payload bytes that are copied and examined. The last 64 bytes of the buffer
/// stay free so that the words just past the payload can be cleared (see
/// [`ScanBuf::clear_tail`]).
pub const SCAN_LEN: usize = BUF_BYTES - 8 * TAIL_WORDS;
/// Words cleared from the one holding the payload's end: a loop step that starts before
/// the end reads no stale byte, so it needs to compare with the end only once.
pub const TAIL_WORDS: usize = 8;

const BYTE_MASK: usize = BUF_BYTES - 1;
const WORD_MASK: usize = BUF_WORDS - 1;

/// `0x0101…01`
pub const ONES: u64 = 0x0101_0101_0101_0101;
/// `0x7f7f…7f`
pub const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// `0x8080…80`: the high bit of every byte, where the SWAR tests put their flags.
pub const HIGH: u64 = 0x8080_8080_8080_8080;
/// OR-ing this folds ASCII upper case letters onto lower case.
pub const ASCII_LOWER: u64 = 0x2020_2020_2020_2020;

/// A datagram's payload prefix, as the kernel program copies it into a per-CPU map value.
#[repr(C, align(8))]
#[derive(Clone)]
pub struct ScanBuf {
    pub words: [u64; BUF_WORDS],
    laundry: Laundry,
}

/// One word of memory for [`ScanBuf::search`].
#[repr(transparent)]
struct Laundry(core::cell::UnsafeCell<u64>);

// SAFETY: a ScanBuf is used by one thread at a time (the kernel's is per-CPU).
unsafe impl Sync for Laundry {}

impl Clone for Laundry {
    fn clone(&self) -> Self {
        Self(core::cell::UnsafeCell::new(0))
    }
}

impl Default for ScanBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScanBuf {
    pub const fn new() -> Self {
        Self {
            words: [0; BUF_WORDS],
            laundry: Laundry(core::cell::UnsafeCell::new(0)),
        }
    }

    /// Builds a buffer from a payload, as the kernel would (host tests, userspace).
    /// Returns the buffer and the number of bytes it holds (at most [`SCAN_LEN`]).
    pub fn from_payload(payload: &[u8]) -> (Self, usize) {
        let mut buf = Self::new();
        let len = payload.len().min(SCAN_LEN);
        buf.clear_tail(len);
        for (i, b) in payload.iter().take(len).enumerate() {
            buf.set_byte(i, *b);
        }
        (buf, len)
    }

    fn set_byte(&mut self, i: usize, b: u8) {
        let shift = (i & 7) * 8;
        let w = &mut self.words[(i >> 3) & WORD_MASK];
        *w = (*w & !(0xff << shift)) | (u64::from(b) << shift);
    }

    /// Clears the word holding byte `len` and the [`TAIL_WORDS`] - 1 after it, before a
    /// payload of `len` bytes is copied in: the copy then leaves zeros from `len` to the end of
    /// those words, so stale bytes of an earlier, longer packet never look like part of
    /// this one. (Cleared first, not masked after: reading back a word the copy just
    /// wrote in pieces stalls the CPU.) `len` must be at most [`SCAN_LEN`].
    #[inline(always)]
    pub fn clear_tail(&mut self, len: usize) {
        // Laundered: knowing `len <= SCAN_LEN`, the compiler would drop the masks below,
        // which are what proves the accesses in bounds to the verifier.
        let len = self.launder(len);
        let k = len >> 3;
        for w in 0..TAIL_WORDS {
            self.words[(k + w) & WORD_MASK] = 0;
        }
    }

    /// Returns `value` after a round trip through memory the BPF verifier does not
    /// track: parsing leaves the same field known differently on each of its many paths,
    /// and code that runs after it would be verified once per path; laundered, the
    /// paths merge. Free on the host.
    #[inline(always)]
    pub fn launder(&self, value: usize) -> usize {
        let slot = self.laundry.0.get();
        // SAFETY: the slot is ours, and only this thread uses this buffer.
        unsafe {
            core::ptr::write_volatile(slot, value as u64);
            core::ptr::read_volatile(slot) as usize
        }
    }

    /// Runs `step(0)`, `step(1)`, … (at most `count` steps, each verified once: see
    /// [`crate::bounded`]) until one returns a result; returns it, or `default`. The
    /// result comes back through memory the BPF verifier does not track, so the code
    /// after a search is verified once, not once per step the search could end at.
    #[inline(always)]
    pub fn search(
        &self,
        count: u32,
        default: usize,
        mut step: impl FnMut(usize) -> Option<usize>,
    ) -> usize {
        let slot = self.laundry.0.get();
        // SAFETY: the slot is ours, and only this thread uses this buffer.
        unsafe { core::ptr::write_volatile(slot, default as u64) };
        crate::bounded::repeat(count, &mut |i: u32| match step(i as usize) {
            Some(found) => {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(slot, found as u64) };
                false
            }
            None => true,
        });
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(slot) as usize }
    }

    /// The byte at `i` (masked into the buffer).
    #[inline(always)]
    pub fn byte(&self, i: usize) -> u8 {
        let i = i & BYTE_MASK;
        (self.words[i >> 3] >> ((i & 7) * 8)) as u8
    }

    /// The aligned word holding bytes `8k .. 8k+8`.
    #[inline(always)]
    pub fn word(&self, k: usize) -> u64 {
        self.words[k & WORD_MASK]
    }

    /// The 8 bytes starting at any offset `i`, little-endian (byte `i` is the low byte).
    /// In the kernel, one unaligned load (the program is built with LLVM's
    /// `allows-misaligned-mem-access`, and the verifier allows unaligned map value
    /// reads where the CPU does them well); for `i` past `BUF_BYTES - 8` it reads into
    /// the laundry word that follows the buffer, where the host's version wraps to the
    /// buffer's start: no parser reads there (payloads end at [`SCAN_LEN`]).
    #[cfg(target_arch = "bpf")]
    #[inline(always)]
    pub fn window(&self, i: usize) -> u64 {
        let at = (self as *const Self)
            .cast::<u8>()
            .wrapping_add(i & BYTE_MASK);
        // SAFETY: `at` is within the buffer, and the 8 bytes from it within `Self`
        // (`words` is followed by the 8-byte laundry word, `repr(C)`).
        unsafe { core::ptr::read_unaligned(at.cast::<u64>()) }
    }

    /// The 8 bytes starting at any offset `i`, little-endian (byte `i` is the low byte).
    #[cfg(not(target_arch = "bpf"))]
    #[inline(always)]
    pub fn window(&self, i: usize) -> u64 {
        let k = i >> 3;
        let shift = (i & 7) * 8;
        let lo = self.word(k) >> shift;
        if shift == 0 {
            lo
        } else {
            lo | (self.word(k + 1) << (64 - shift))
        }
    }
}

/// A parser variable kept in memory, read and written with volatile accesses.
///
/// Why: the BPF verifier tracks every constant exactly, and once a branch depends on
/// one it marks it "precise"; loop states differing in a precise value are never
/// merged, so a parsing loop whose counters start at a literal 0 is walked path by path
/// until the verifier gives up (1M instructions). In the kernel these variables live in
/// the per-CPU scratch map value, whose contents the verifier does not track: every
/// read is an unknown, bounded by the masks at its uses, and equivalent loop states
/// merge. The volatile accesses keep the compiler from caching them in registers.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vol<T: Copy>(T);

impl<T: Copy> Vol<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }
    #[inline(always)]
    pub fn get(&self) -> T {
        // SAFETY: a read of a value we own.
        unsafe { core::ptr::read_volatile(&self.0) }
    }
    #[inline(always)]
    pub fn set(&mut self, value: T) {
        // SAFETY: a write of a value we own.
        unsafe { core::ptr::write_volatile(&mut self.0, value) }
    }
}

/// The high bit of each byte of `w` in `lo..=hi` (both below 0x80), all eight bytes at
/// once. Per byte, on its low seven bits (no carry leaves a byte): the high bit says
/// ">= lo" in the first sum and "> hi" in the second; a byte with its own high bit set
/// is in no such range.
#[inline(always)]
pub const fn bytes_in_range(w: u64, lo: u8, hi: u8) -> u64 {
    let low = w & LOW7;
    let from_lo = low.wrapping_add(ONES.wrapping_mul(0x80 - lo as u64));
    let past_hi = low.wrapping_add(ONES.wrapping_mul(0x80 - hi as u64 - 1));
    from_lo & !past_hi & !w & HIGH
}

/// `w` with its ASCII capitals turned to small letters, all eight bytes at once; every
/// other byte is left as it is (so `[` and `{` stay apart).
#[inline(always)]
pub const fn ascii_lowercase_word(w: u64) -> u64 {
    w | (bytes_in_range(w, b'A', b'Z') >> 2)
}

/// The high bit of each byte of `w` that is an ASCII digit.
#[inline(always)]
pub const fn digit_bytes(w: u64) -> u64 {
    bytes_in_range(w, b'0', b'9')
}

/// A mask of the low `n` bytes of a word (`n` in 0..=8).
#[inline(always)]
pub const fn low_bytes_mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// The high bit of each byte of `w` that is zero. Exact: no false positives, unlike
/// the shorter `(x - ONES) & !x` trick, because no carry crosses a byte.
#[inline(always)]
pub const fn zero_bytes(w: u64) -> u64 {
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// The high bit of each byte of `w` equal to `b`.
#[inline(always)]
pub const fn bytes_equal(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (ONES.wrapping_mul(b as u64)))
}

/// The index (0..8) of the lowest byte flagged in a non-zero mask from [`zero_bytes`].
/// BPF has no count-trailing-zeros instruction: a multiply does it in three operations.
#[inline(always)]
pub const fn first_flagged_byte(mask: u64) -> usize {
    let lowest = mask & mask.wrapping_neg();
    ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// The little-endian word of up to 8 bytes, zero padded: for comparing with windows.
pub const fn word_of(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        w |= (s[i] as u64) << (i * 8);
        i += 1;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reads_across_words() {
        let (buf, len) = ScanBuf::from_payload(b"0123456789abcdefXYZ");
        assert_eq!(len, 19);
        assert_eq!(buf.window(0), word_of(b"01234567"));
        assert_eq!(buf.window(5), word_of(b"56789abc"));
        assert_eq!(buf.window(15), word_of(b"fXYZ"));
        assert_eq!(buf.byte(18), b'Z');
        assert_eq!(buf.byte(19), 0);
    }

    #[test]
    fn clear_tail_leaves_no_stale_bytes_after_the_copy() {
        let (mut buf, _) = ScanBuf::from_payload(&[b'x'; 100]);
        buf.clear_tail(13);
        for i in 0..13 {
            buf.set_byte(i, b'y');
        }
        assert_eq!(buf.byte(12), b'y');
        for i in 13..40 {
            assert_eq!(buf.byte(i), 0, "byte {i}");
        }
    }

    #[test]
    fn digit_bytes_flags_digits_only() {
        // Every byte value at every place, beside neighbours that could carry into it.
        for b in 0..=255u8 {
            for at in 0..8 {
                for neighbour in [0u8, b'0', b'9', b'/', b':', 0x7f, 0x80, 0xff] {
                    let mut bytes = [neighbour; 8];
                    bytes[at] = b;
                    let expected = bytes
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| b.is_ascii_digit())
                        .fold(0u64, |flags, (i, _)| flags | 0x80 << (8 * i));
                    assert_eq!(
                        digit_bytes(u64::from_le_bytes(bytes)),
                        expected,
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn lowercase_word_folds_capitals_only() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b'z', b, 0x80 | b, b'Z', b'@', b'[']);
            let expected = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'a',
                b'z',
                b.to_ascii_lowercase(),
                0x80 | b,
                b'z',
                b'@',
                b'[',
            ]);
            assert_eq!(ascii_lowercase_word(w), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn flagged_byte_index_is_exact() {
        for i in 0..8 {
            let w = word_of(b"abcdefgh") & !(0xff << (i * 8)) | (u64::from(b'\n') << (i * 8));
            let m = bytes_equal(w, b'\n');
            assert_eq!(first_flagged_byte(m), i);
        }
        // A byte 0x01 above a match must not be flagged (the classic trick's false positive).
        let w = word_of(b"\n\x0b\x0b\x0b\x0b\x0b\x0b\x0b");
        assert_eq!(bytes_equal(w, b'\n'), 0x80);
    }
}
