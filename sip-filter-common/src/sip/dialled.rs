//! The number an INVITE dials (issue 18), normalised for the destination rules: read
//! from the Request-URI's user part (`sip:+44 20…@host`, `sip:0044…@host;user=phone`)
//! or a `tel:` URI's number, visual separators (`-`, `.`, `(`, `)`, an escaped space
//! `%20`) dropped, user parameters (`;npdi`, `;rn=…`) left out, and an international
//! call recognised by its `+` or by a configured international prefix (`00`, `011`).
//!
//! The result is the key of the destination rules' longest-prefix map: `+` and the
//! digits after the international prefix for an international call (`+4490…`), the
//! digits as dialled otherwise (`0900…`, `112`). A user part that is not a number (a
//! name, `*67…`, any other character) is [`DialledKind::Name`]: the rules do not apply
//! to it, and the kernel counts it.
//!
//! A plain number (digits, a `+` or not) is taken two words at a time; any other user
//! part in one pass over at most [`USER_BYTES`] bytes, each a loop step verified once
//! (see [`crate::bounded`]), its state in memory the kernel keeps in a per-CPU map value.

use super::Span;
use crate::{
    bounded::repeat,
    scan::{digit_bytes, low_bytes_mask, ScanBuf, Vol, HIGH},
};

/// Bytes of the rules' key: `+` and up to 15 digits (E.164's longest number); longer
/// numbers are matched on their first digits.
pub const NUMBER_BYTES: usize = 16;
/// Digits collected from a user part (a power of two: indexes are masked).
const DIGIT_SLOTS: usize = 32;
/// Bytes of a user part looked at; a longer user part is no number
/// ([`DialledKind::Name`]).
pub const USER_BYTES: usize = 48;
/// International prefixes that can be configured, and their longest length.
pub const MAX_INTERNATIONAL_PREFIXES: usize = 2;
pub const MAX_INTERNATIONAL_PREFIX_LEN: usize = 4;
/// The first byte of an international number's key.
pub const INTERNATIONAL: u8 = b'+';

/// What a Request-URI dials.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialledKind {
    /// No user part (`sip:host`): nothing is dialled.
    Nothing = 0,
    /// A user part that is not a number: a name, a service code, anything but digits
    /// and separators.
    Name,
    /// A number without an international prefix.
    National,
    /// A number with `+` or an international prefix.
    International,
}

impl DialledKind {
    pub fn from_u32(n: u32) -> DialledKind {
        match n {
            1 => DialledKind::Name,
            2 => DialledKind::National,
            3 => DialledKind::International,
            _ => DialledKind::Nothing,
        }
    }
}

/// The international prefixes in use (`00`, `011`), as digits; a length of 0 is unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InternationalPrefixes {
    pub digits: [[u8; MAX_INTERNATIONAL_PREFIX_LEN]; MAX_INTERNATIONAL_PREFIXES],
    pub lens: [u8; MAX_INTERNATIONAL_PREFIXES],
    pub _pad: [u8; 6],
}

impl InternationalPrefixes {
    /// From digit strings (host code; the configuration validated them: digits only, at
    /// most [`MAX_INTERNATIONAL_PREFIX_LEN`], at most [`MAX_INTERNATIONAL_PREFIXES`]).
    pub fn new(prefixes: &[&str]) -> Self {
        let mut out = Self::default();
        for (i, prefix) in prefixes.iter().take(MAX_INTERNATIONAL_PREFIXES).enumerate() {
            let bytes = prefix.as_bytes();
            let len = bytes.len().min(MAX_INTERNATIONAL_PREFIX_LEN);
            out.digits[i][..len].copy_from_slice(&bytes[..len]);
            out.lens[i] = len as u8;
        }
        out
    }
}

/// A normalised number: `key[..len]` is the rules' key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialled {
    pub kind: DialledKind,
    pub len: u32,
    pub key: [u8; NUMBER_BYTES],
}

impl Dialled {
    pub const NOTHING: Dialled = Dialled {
        kind: DialledKind::Nothing,
        len: 0,
        key: [0; NUMBER_BYTES],
    };

    /// The key as text (host code: tests, reports).
    pub fn text(&self) -> &str {
        let len = (self.len as usize).min(NUMBER_BYTES);
        core::str::from_utf8(&self.key[..len]).unwrap_or("")
    }
}

/// The normaliser's working memory (a per-CPU map value in the kernel: see
/// [`Vol`] for why).
#[repr(C)]
pub struct Dialling {
    digits: [Vol<u8>; DIGIT_SLOTS],
    /// Digits seen (more than are kept, for a long number).
    count: Vol<u32>,
    /// A leading `+` was seen.
    plus: Vol<u32>,
    /// Bytes of an escape still to pass over.
    skip: Vol<u32>,
    /// Something that is no digit nor separator was seen.
    not_number: Vol<u32>,
}

impl Default for Dialling {
    fn default() -> Self {
        Self::new()
    }
}

impl Dialling {
    pub const fn new() -> Self {
        Self {
            digits: [Vol::new(0); DIGIT_SLOTS],
            count: Vol::new(0),
            plus: Vol::new(0),
            skip: Vol::new(0),
            not_number: Vol::new(0),
        }
    }

    fn clear(&mut self) {
        for digit in self.digits.iter_mut() {
            digit.set(0);
        }
        self.count.set(0);
        self.plus.set(0);
        self.skip.set(0);
        self.not_number.set(0);
    }

    /// Takes the user part `start..end` whole if it is a plain number, as most are: up
    /// to [`NUMBER_BYTES`] digits, a `+` before them or not, nothing else. Two words
    /// then do what a loop step per byte would; false (nothing taken) otherwise.
    #[inline(always)]
    fn take_plain_number(&mut self, buf: &ScanBuf, start: usize, end: usize) -> bool {
        let plus = usize::from(buf.byte(start) == INTERNATIONAL);
        let from = start + plus;
        if from >= end || end - from > NUMBER_BYTES {
            return false;
        }
        let count = end - from;
        let (low, high) = (
            low_bytes_mask(count),
            low_bytes_mask(count.saturating_sub(8)),
        );
        let (first, second) = (buf.window(from) & low, buf.window(from + 8) & high);
        if digit_bytes(first) != HIGH & low || digit_bytes(second) != HIGH & high {
            return false;
        }
        for j in 0..8 {
            self.digits[j].set((first >> (8 * j)) as u8);
            self.digits[8 + j].set((second >> (8 * j)) as u8);
        }
        self.count.set(count as u32);
        self.plus.set(plus as u32);
        true
    }

    /// Takes the user part's byte at `at` (`end` ends the user part); false ends the
    /// pass (a `;` parameter, or a byte that makes it no number).
    #[inline(always)]
    fn step(&mut self, buf: &ScanBuf, at: usize, end: usize) -> bool {
        if at >= end {
            return false;
        }
        let skip = self.skip.get();
        if skip != 0 {
            self.skip.set(skip - 1);
            return true;
        }
        let byte = buf.byte(at);
        let count = self.count.get();
        match byte {
            b'0'..=b'9' => {
                self.digits[count as usize & (DIGIT_SLOTS - 1)].set(byte);
                // Digits past the slots are counted, not kept: the key holds fewer.
                if (count as usize) < DIGIT_SLOTS - 1 {
                    self.count.set(count + 1);
                }
                true
            }
            b'-' | b'.' | b'(' | b')' => true,
            b'+' if count == 0 && self.plus.get() == 0 => {
                self.plus.set(1);
                true
            }
            // An escaped space (`%20`), a visual separator some phones send.
            b'%' if at + 2 < end && buf.byte(at + 1) == b'2' && buf.byte(at + 2) == b'0' => {
                self.skip.set(2);
                true
            }
            // User parameters (RFC 3261 §19.1.1, RFC 4694's `;npdi;rn=`): the number ends.
            b';' => false,
            _ => {
                self.not_number.set(1);
                false
            }
        }
    }

    /// Whether the digits start with international prefix `i` and go on after it.
    /// Without a branch per digit: each branch would double the states the verifier
    /// walks.
    #[inline(always)]
    fn starts_with(&self, prefixes: &InternationalPrefixes, i: usize) -> bool {
        let len = usize::from(prefixes.lens[i & (MAX_INTERNATIONAL_PREFIXES - 1)]);
        let first = u32::from_le_bytes([
            self.digits[0].get(),
            self.digits[1].get(),
            self.digits[2].get(),
            self.digits[3].get(),
        ]);
        let prefix = u32::from_le_bytes(prefixes.digits[i & (MAX_INTERNATIONAL_PREFIXES - 1)]);
        let mask = (u64::from(u32::MAX) >> (32 - 8 * len.min(MAX_INTERNATIONAL_PREFIX_LEN))) as u32;
        len != 0 && self.count.get() as usize > len && (first ^ prefix) & mask == 0
    }

    /// The key: `lead` bytes (the international mark), then the digits kept from digit
    /// `from` on. Copied whole, without a branch per digit (see [`Dialling::starts_with`]):
    /// the slots past the last digit hold zeros ([`Dialling::clear`]), and the rules'
    /// map reads only the key's length anyway.
    #[inline(always)]
    fn key(&self, from: usize, lead: usize) -> ([u8; NUMBER_BYTES], u32) {
        let mut key = [0u8; NUMBER_BYTES];
        let count = self.count.get() as usize;
        let digits = count.saturating_sub(from).min(NUMBER_BYTES - lead);
        if lead != 0 {
            key[0] = INTERNATIONAL;
        }
        for (j, slot) in key.iter_mut().enumerate().skip(lead) {
            *slot = self.digits[(from + j - lead) & (DIGIT_SLOTS - 1)].get();
        }
        (key, (lead + digits) as u32)
    }
}

/// The number dialled by a user part `user` (a SIP URI's, or a `tel:` URI's number),
/// normalised with the `international` prefixes; `state` is working memory.
#[inline(always)]
pub fn dialled(
    buf: &ScanBuf,
    user: Span,
    international: &InternationalPrefixes,
    state: &mut Dialling,
) -> Dialled {
    if user.is_empty() {
        return Dialled::NOTHING;
    }
    state.clear();
    let (start, end) = (user.start(), user.end());
    if user.len() > USER_BYTES {
        state.not_number.set(1);
    } else if !state.take_plain_number(buf, start, end) {
        repeat(USER_BYTES as u32, &mut |i: u32| {
            state.step(buf, start + i as usize, end)
        });
    }
    if state.not_number.get() != 0 || state.count.get() == 0 {
        return Dialled {
            kind: DialledKind::Name,
            ..Dialled::NOTHING
        };
    }
    let prefix = if state.plus.get() != 0 {
        Some(0)
    } else if state.starts_with(international, 0) {
        Some(usize::from(international.lens[0]))
    } else if state.starts_with(international, 1) {
        Some(usize::from(international.lens[1]))
    } else {
        None
    };
    let (kind, (key, len)) = match prefix {
        Some(from) => (DialledKind::International, state.key(from, 1)),
        None => (DialledKind::National, state.key(0, 0)),
    };
    Dialled { kind, len, key }
}

#[cfg(test)]
mod tests;
