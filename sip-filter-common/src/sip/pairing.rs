//! What pairs the server's answer with the request it answers, and what the answer says
//! about authentication (issue 13): the transaction's identity (Call-ID and CSeq, which
//! RFC 3261 §8.2.6.2 has the server copy into its answer), the account a request names
//! (its digest username, else its To user; for an INVITE's call budget, else its From
//! user), a call's identity across a challenge, a challenge's `stale` flag, and how long
//! a registration was granted.
//!
//! Every function reads the parser's [`ScanBuf`] through spans the parse recorded, with
//! loops bounded for the BPF verifier, and is shared by the kernel programs and host
//! tests.

use super::{find_byte, find_flagged, not_blank, value_of, Header, Scratch, Span};
use crate::{
    domain::mix,
    scan::{
        ascii_lowercase_word, bytes_equal, first_flagged_byte, low_bytes_mask, word_of,
        ASCII_LOWER, BUF_WORDS, HIGH,
    },
    ScanBuf,
};

/// Bytes at each end of a Call-ID or CSeq value that make a transaction's identity, with
/// the value's length (see [`transaction_id`]).
pub const ID_END_BYTES: usize = 16;
/// Bytes of an account name kept (in maps and events) and hashed.
pub const ACCOUNT_BYTES: usize = 32;
/// Words of an account name.
pub const ACCOUNT_WORDS: usize = ACCOUNT_BYTES / 8;

/// An account as a request names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// A seeded hash of the name (its first [`ACCOUNT_BYTES`] and its length): the key of
    /// lockouts. 0 when the request names no account.
    pub key: u64,
    /// The name's first [`ACCOUNT_BYTES`], zero padded, for events and the operator.
    pub name: [u64; ACCOUNT_WORDS],
}

impl Account {
    /// The account `span` holds (a digest username or a URI's user part).
    #[inline(always)]
    pub fn of(buf: &ScanBuf, span: Span, seed: u64) -> Account {
        // The same key as [`Account::from_name`] of [`Account::name_of`], made word by
        // word as the name is read: written as those two calls, the INVITE program gave
        // wrong keys on 6.1 (call budgets not found; 6.18 ran the same code right: a
        // fault of 6.1's verifier, by all signs).
        let len = span.len();
        if len == 0 {
            return Account::default();
        }
        let mut name = [0u64; ACCOUNT_WORDS];
        let mut key = mix(seed, len as u64);
        for (i, word) in name.iter_mut().enumerate() {
            let left = len.saturating_sub(i * 8);
            *word = buf.window(span.start() + i * 8) & low_bytes_mask(left);
            key = mix(key, *word);
        }
        Account { key: key | 1, name }
    }

    /// The first [`ACCOUNT_BYTES`] of the name `span` holds, zero padded, and its whole
    /// length: what the ingress program notes for a request's answer, leaving the key
    /// to be made ([`Account::from_name`]) only where it is needed.
    #[inline(always)]
    pub fn name_of(buf: &ScanBuf, span: Span) -> ([u64; ACCOUNT_WORDS], usize) {
        let len = span.len();
        let mut name = [0u64; ACCOUNT_WORDS];
        for (i, word) in name.iter_mut().enumerate() {
            let left = len.saturating_sub(i * 8);
            *word = buf.window(span.start() + i * 8) & low_bytes_mask(left);
        }
        (name, len)
    }

    /// The account of a name [`Account::name_of`] took, keyed with `seed`: a hash of its
    /// length and its words. No account (key 0) for an empty name.
    #[inline(always)]
    pub fn from_name(name: [u64; ACCOUNT_WORDS], len: usize, seed: u64) -> Account {
        if len == 0 {
            return Account::default();
        }
        let mut key = mix(seed, len as u64);
        for word in name {
            key = mix(key, word);
        }
        // 0 means "no account".
        Account { key: key | 1, name }
    }

    /// The name as bytes, without the padding (host code).
    pub fn name_bytes(name: &[u64; ACCOUNT_WORDS]) -> ([u8; ACCOUNT_BYTES], usize) {
        let mut bytes = [0u8; ACCOUNT_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(name) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let len = bytes.iter().position(|b| *b == 0).unwrap_or(ACCOUNT_BYTES);
        (bytes, len)
    }

    /// The key [`Account::of`] gives the name held in `name` (host code: saved lockouts
    /// are keyed again under a new seed). None for a name of [`ACCOUNT_BYTES`] or more:
    /// it may have been cut, and the key covers the whole name's length.
    pub fn key_of_name(name: &[u64; ACCOUNT_WORDS], seed: u64) -> Option<u64> {
        let (_, len) = Self::name_bytes(name);
        if len == 0 || len >= ACCOUNT_BYTES {
            return None;
        }
        Some(Self::from_name(*name, len, seed).key)
    }
}

/// What [`pair_hash`] takes from `span`: its length and its first and last
/// [`ID_END_BYTES`] bytes (all of it when it is no longer than both), in two seeded
/// chains, the head's and the tail's. Four reads, no loop, and no chain longer than
/// three [`mix`]es: the CPU runs the chains side by side (one chain through all eight
/// words of a transaction made each request wait on eight multiplications in a row:
/// issue 13's bookkeeping is on every request's path).
#[inline(always)]
fn ends_lanes(buf: &ScanBuf, span: Span, seed: u64) -> (u64, u64) {
    let len = span.len();
    let head = mix(
        mix(
            mix(seed, len as u64),
            buf.window(span.start()) & low_bytes_mask(len),
        ),
        buf.window(span.start() + 8) & low_bytes_mask(len.saturating_sub(8)),
    );
    // The last 16 bytes, overlapping the first 16 in a value under 32 bytes long; none
    // (all masked off) in a value the head holds whole. Hashed either way, not returned
    // early: where the tail was a constant 0 on one way and a hash on the other, 6.1's
    // verifier kept the ways apart further on (its XDP program's count went from 348k
    // to 536k instructions; 465k this way).
    let tail = span.end().saturating_sub(ID_END_BYTES);
    let kept = 0u64.wrapping_sub(u64::from(len > ID_END_BYTES));
    let tail = mix(
        mix(seed ^ TAIL_LANE, buf.window(tail) & kept),
        buf.window(tail + 8) & kept,
    );
    (head, tail)
}

/// Sets a tail's chain apart from a head's.
const TAIL_LANE: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seeded hash of two values, each by [`ends_lanes`]: the four chains, each turned by
/// its own amount so that no two cancel, mixed once more. Never 0.
#[inline(always)]
fn pair_hash(buf: &ScanBuf, first: Span, second: Span, seed: u64) -> u64 {
    let (first_head, first_tail) = ends_lanes(buf, first, seed);
    let (second_head, second_tail) = ends_lanes(buf, second, seed.rotate_left(32));
    mix(
        first_head
            ^ first_tail.rotate_left(16)
            ^ second_head.rotate_left(32)
            ^ second_tail.rotate_left(48),
        seed,
    ) | 1
}

/// A transaction's identity: its Call-ID and CSeq values (the length and the first and
/// last [`ID_END_BYTES`] of each), hashed with `seed`. 0 when either is missing: such a
/// request cannot be paired.
///
/// Not the whole Call-ID: what a user agent varies from call to call is at one end (a
/// random prefix before `@host`, or a counter at the end), and the CSeq is hashed whole.
/// Two transactions that still collide must come from the same source (the key holds
/// it), so a sender who makes them collide confuses only its own answers.
#[inline(always)]
pub fn transaction_id(buf: &ScanBuf, call_id: Span, cseq: Span, seed: u64) -> u64 {
    if call_id.is_empty() || cseq.is_empty() {
        return 0;
    }
    pair_hash(buf, call_id, cseq, seed)
}

/// [`transaction_id`] of the message the parser left in `scratch` (recorded with its
/// Call-ID and CSeq).
#[inline(always)]
pub fn transaction_of(scratch: &Scratch, seed: u64) -> u64 {
    let buf = &scratch.buf;
    transaction_id(
        buf,
        value_of(buf, scratch.header(Header::CallId)),
        value_of(buf, scratch.header(Header::CSeq)),
        seed,
    )
}

/// The value of the parameter `name` (at most 8 bytes, lower case) in a header value:
/// `username` in `Digest username="alice", realm=…`, `stale` in a challenge, `expires`
/// in a Contact. Names match without regard to case and must follow a blank, a comma or
/// a semicolon (or start the value); a quoted value is returned without its quotes.
/// [`Span::ABSENT`] if the parameter is not within the first [`PARAM_SEARCH_BYTES`].
#[inline(always)]
pub fn param_value(buf: &ScanBuf, value: Span, name: &[u8]) -> Span {
    let name_len = name.len().min(8);
    let name_word = word_of(name);
    let first = name_word as u8;
    let (from, to) = (
        value.start(),
        value.end().min(value.start() + PARAM_SEARCH_BYTES),
    );
    if from >= to {
        return Span::ABSENT;
    }
    // Where the name starts: a window per step, each of its bytes that could begin it.
    let at = buf.search((PARAM_SEARCH_BYTES / 8) as u32, usize::MAX, |i| {
        let base = from + i * 8;
        if base >= to {
            return Some(usize::MAX);
        }
        let mut candidates = bytes_equal(buf.window(base) | ASCII_LOWER, first);
        for _ in 0..8 {
            if candidates == 0 {
                break;
            }
            let at = base + first_flagged_byte(candidates);
            candidates &= candidates - 1;
            if at + name_len > to {
                return Some(usize::MAX);
            }
            let word = ascii_lowercase_word(buf.window(at)) & low_bytes_mask(name_len);
            let before = if at == from { b' ' } else { buf.byte(at - 1) };
            if word == name_word && matches!(before, b' ' | b'\t' | b',' | b';' | b'<') {
                return Some(at + name_len);
            }
        }
        None
    });
    if at >= to {
        return Span::ABSENT;
    }
    // `name` [blanks] `=` [blanks] value.
    let equals = skip_blanks_to(buf, at, to);
    if equals >= to || buf.byte(equals) != b'=' {
        return Span::ABSENT;
    }
    let start = skip_blanks_to(buf, equals + 1, to);
    if start >= to {
        return Span::ABSENT;
    }
    if buf.byte(start) == b'"' {
        let end = find_byte(buf, start + 1, to, b'"');
        return Span::new(start + 1, end);
    }
    let end = find_flagged(buf, start, to, |w| {
        bytes_equal(w, b',') | bytes_equal(w, b';') | bytes_equal(w, b'>') | !not_blank(w) & HIGH
    });
    Span::new(start, end)
}

/// How far into a header value [`param_value`] looks.
pub const PARAM_SEARCH_BYTES: usize = 512;
const _: () = assert!(PARAM_SEARCH_BYTES / 8 <= BUF_WORDS);

#[inline(always)]
fn skip_blanks_to(buf: &ScanBuf, from: usize, to: usize) -> usize {
    find_flagged(buf, from, to, not_blank)
}

/// The digest username a request's credentials name (`Authorization: Digest
/// username="alice", …`). Most clients name it first, as RFC 2617's example does: that
/// is read in place, without [`param_value`]'s search (a loop: a call per step).
#[inline(always)]
pub fn digest_username(buf: &ScanBuf, credentials: Span) -> Span {
    const DIGEST_U: u64 = word_of(b"digest u");
    const SERNAME: u64 = word_of(b"sername=");
    const QUOTED_VALUE: usize = b"Digest username=\"".len();
    // To the value's end (not capped at `PARAM_SEARCH_BYTES` as the search is: only a
    // username of some 500 bytes would end differently, and the cap costs the verifier).
    let (from, to) = (credentials.start(), credentials.end());
    if from + QUOTED_VALUE < to
        && ascii_lowercase_word(buf.window(from)) == DIGEST_U
        && ascii_lowercase_word(buf.window(from + 8)) == SERNAME
        && buf.byte(from + QUOTED_VALUE - 1) == b'"'
    {
        let start = from + QUOTED_VALUE;
        return Span::new(start, find_byte(buf, start, to, b'"'));
    }
    param_value(buf, credentials, b"username")
}

/// Whether a challenge says `stale=true` (RFC 2617 §3.2.1: the credentials were good, the
/// nonce old). Quoted or not, any case.
#[inline(always)]
pub fn is_stale(buf: &ScanBuf, challenge: Span) -> bool {
    let value = param_value(buf, challenge, b"stale");
    value.len() == 4
        && ascii_lowercase_word(buf.window(value.start())) & low_bytes_mask(4) == word_of(b"true")
}

/// The user part of the URI in a From or To value (`"Bob" <sip:bob@example.com>;tag=1`
/// → `bob`); [`Span::ABSENT`] if it has none (`sip:example.com`). A display name is
/// not told from the URI: one holding a `<` hides it (see [`caller_user`]).
#[inline(always)]
pub fn uri_user(buf: &ScanBuf, value: Span) -> Span {
    let (from, to) = (value.start(), value.end());
    if from >= to {
        return Span::ABSENT;
    }
    // After a `<` if there is one (a display name may precede it), else from the start.
    let angle = find_byte(buf, from, to, b'<');
    let uri = if angle < to { angle + 1 } else { from };
    user_part(buf, uri, to)
}

/// The user part of the URI starting at `uri`: after its scheme's colon (within
/// `sips:`'s length), up to an `@`.
#[inline(always)]
fn user_part(buf: &ScanBuf, uri: usize, to: usize) -> Span {
    let colon = find_byte(buf, uri, to.min(uri + 5), b':');
    if colon >= to.min(uri + 5) {
        return Span::ABSENT;
    }
    let start = colon + 1;
    let limit = to.min(start + ACCOUNT_SEARCH_BYTES);
    let end = find_flagged(buf, start, limit, |w| {
        bytes_equal(w, b'@') | bytes_equal(w, b'>') | bytes_equal(w, b';')
    });
    if end >= limit || buf.byte(end) != b'@' {
        return Span::ABSENT;
    }
    Span::new(start, end)
}

/// Where the URI of a From value starts, and where its header parameters may (after the
/// `>` of a name-addr, else anywhere: an addr-spec has no URI parameters, RFC 3261
/// §20.10). A quoted display name is skipped first, so a `<` or `;tag=` inside it is not
/// taken for the URI's; an escaped quote (`\"`) ends it early, and the value then reads
/// as having no URI. `None` for a value with no URI where one must be.
#[inline(always)]
fn name_addr(buf: &ScanBuf, value: Span) -> Option<(usize, usize)> {
    let (from, to) = (value.start(), value.end());
    if from >= to {
        return None;
    }
    let after_name = if buf.byte(from) == b'"' {
        find_byte(buf, from + 1, to, b'"') + 1
    } else {
        from
    };
    if after_name >= to {
        return None;
    }
    let angle = find_byte(buf, after_name, to, b'<');
    if angle >= to {
        // An addr-spec: no display name can precede it.
        return (after_name == from).then_some((from, from));
    }
    let close = find_byte(buf, angle + 1, to, b'>');
    (close < to).then_some((angle + 1, close + 1))
}

/// The caller a From value names, the account of a request without credentials: its
/// URI's user part (`"Alice <2>" <sips:alice@pbx>;tag=1` → `alice`), or the number of a
/// `tel:` URI (`<tel:+4930123;isub=1>` → `+4930123`), the caller's identity there.
/// [`Span::ABSENT`] for a URI without a user (`<sip:pbx.example.test>`, no one's
/// account) and for RFC 3323's `anonymous` user (a withheld caller: every such call
/// would share one account).
#[inline(always)]
pub fn caller_user(buf: &ScanBuf, from: Span) -> Span {
    const TEL: u64 = word_of(b"tel:");
    const ANONYMOU: u64 = word_of(b"anonymou");
    let Some((uri, _)) = name_addr(buf, from) else {
        return Span::ABSENT;
    };
    let to = from.end();
    let user = if ascii_lowercase_word(buf.window(uri)) & low_bytes_mask(4) == TEL {
        let start = uri + 4;
        let limit = to.min(start + ACCOUNT_SEARCH_BYTES);
        let end = find_flagged(buf, start, limit, |w| {
            bytes_equal(w, b';') | bytes_equal(w, b'>') | !not_blank(w) & HIGH
        });
        Span::new(start, end)
    } else {
        user_part(buf, uri, to)
    };
    let anonymous = user.len() == 9
        && ascii_lowercase_word(buf.window(user.start())) == ANONYMOU
        && buf.byte(user.start() + 8) | 0x20 == b's';
    if user.is_empty() || anonymous {
        return Span::ABSENT;
    }
    user
}

/// The `tag` parameter of a From value (RFC 3261 §19.3), looked for after its URI only;
/// [`Span::ABSENT`] if it has none.
#[inline(always)]
pub fn from_tag(buf: &ScanBuf, from: Span) -> Span {
    match name_addr(buf, from) {
        Some((_, params)) => param_value(buf, Span::new(params, from.end()), b"tag"),
        None => Span::ABSENT,
    }
}

/// A call's identity across the INVITEs that set it up: its Call-ID and its From tag,
/// hashed with `seed` as [`transaction_id`] hashes its values. The CSeq is left out: a
/// request resent with credentials after a challenge keeps the Call-ID and the From,
/// with a higher CSeq (RFC 3261 §8.1.3.5, §22.2). 0 without a Call-ID.
#[inline(always)]
pub fn call_identity(buf: &ScanBuf, call_id: Span, from_tag: Span, seed: u64) -> u64 {
    if call_id.is_empty() {
        return 0;
    }
    pair_hash(buf, call_id, from_tag, seed)
}

/// How far [`uri_user`] looks for the `@` that ends a user part.
const ACCOUNT_SEARCH_BYTES: usize = 128;

/// A decimal number at the start of `span` (up to 9 digits, after blanks); `None` if it
/// does not start with a digit.
#[inline(always)]
pub fn decimal(buf: &ScanBuf, span: Span) -> Option<u32> {
    let start = skip_blanks_to(buf, span.start(), span.end());
    let mut value: u32 = 0;
    let mut digits = 0;
    for i in 0..9 {
        if start + i >= span.end() {
            break;
        }
        let byte = buf.byte(start + i);
        if !byte.is_ascii_digit() {
            break;
        }
        value = value * 10 + u32::from(byte - b'0');
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// How long a 2xx to a REGISTER granted, in seconds: its Expires header, else the
/// `expires` parameter of its (first) Contact. `None` if it says neither.
#[inline(always)]
pub fn granted_expiry(buf: &ScanBuf, expires: Span, contact: Span) -> Option<u32> {
    if expires.is_present() {
        if let Some(seconds) = decimal(buf, expires) {
            return Some(seconds);
        }
    }
    let param = param_value(buf, contact, b"expires");
    if param.is_present() {
        return decimal(buf, param);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse, Header, Payload, SipMessage};

    fn parsed(text: &str) -> (ScanBuf, SipMessage) {
        let (buf, len) = ScanBuf::from_payload(text.as_bytes());
        let mut scratch = crate::sip::Scratch::new();
        scratch.buf = buf.clone();
        let Payload::Sip(message) = parse(&mut scratch, len, true) else {
            panic!("not SIP: {text}");
        };
        (scratch.buf.clone(), message)
    }

    fn text(buf: &ScanBuf, span: Span) -> String {
        (span.start()..span.end())
            .map(|i| char::from(buf.byte(i)))
            .collect()
    }

    /// What `find` finds in `value`, a header value alone in the buffer, as text.
    fn found_in(value: &str, find: impl Fn(&ScanBuf, Span) -> Span) -> Option<String> {
        let (buf, len) = ScanBuf::from_payload(value.as_bytes());
        let found = find(&buf, Span::new(0, len));
        found.is_present().then(|| text(&buf, found))
    }

    const REGISTER: &str = "REGISTER sip:pbx.example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776\r\n\
        From: \"Alice\" <sip:alice@pbx.example.test>;tag=1928\r\n\
        To: <sip:alice@pbx.example.test>\r\n\
        Call-ID: a84b4c76e66710@192.0.2.10\r\n\
        CSeq: 2 REGISTER\r\n\
        Proxy-Authorization: Digest username=\"alice\", realm=\"pbx\", nonce=\"x\", response=\"y\"\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn a_request_names_its_account_and_transaction() {
        let (buf, m) = parsed(REGISTER);
        let credentials = m.header(Header::Credentials);
        assert_eq!(text(&buf, digest_username(&buf, credentials)), "alice");
        assert_eq!(text(&buf, uri_user(&buf, m.header(Header::To))), "alice");
        let id = transaction_id(&buf, m.header(Header::CallId), m.header(Header::CSeq), 7);
        assert_ne!(id, 0);
        // The answer copies Call-ID and CSeq (here in compact form and other case).
        let (answer_buf, answer) = parsed(
            "SIP/2.0 401 Unauthorized\r\ni: a84b4c76e66710@192.0.2.10\r\ncseq: 2 REGISTER\r\n\
             WWW-Authenticate: Digest realm=\"pbx\", nonce=\"z\", stale=TRUE\r\n\r\n",
        );
        let answer_id = transaction_id(
            &answer_buf,
            answer.header(Header::CallId),
            answer.header(Header::CSeq),
            7,
        );
        assert_eq!(answer_id, id);
        assert!(is_stale(&answer_buf, answer.header(Header::Challenge)));
        // Another CSeq, another transaction; another seed, another id.
        let other = REGISTER.replace("CSeq: 2", "CSeq: 3");
        let (other_buf, o) = parsed(&other);
        let other_id = transaction_id(
            &other_buf,
            o.header(Header::CallId),
            o.header(Header::CSeq),
            7,
        );
        assert_ne!(other_id, id);
        assert_ne!(
            transaction_id(&buf, m.header(Header::CallId), m.header(Header::CSeq), 8),
            id
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The username read in place is the one the search finds, whatever surrounds it.
        #[test]
        fn digest_username_read_in_place_is_the_searched_one(
            head in proptest::sample::select(vec![
                "Digest username=\"", "dIGEST USERNAME=\"", "Digest username=",
                "Digest  username=\"", "Digest realm=\"x\", username=\"", "Digest username =\"", "",
            ]),
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Digest", " ", "username", "=", "\"", "alice", ",", "realm", "\t",
                ]),
                0..8,
            ),
            offset in 0usize..12,
        ) {
            let value = format!("{head}{}", pieces.concat());
            let text = format!("{}{value}\r\n", "x".repeat(offset));
            let (buf, _) = ScanBuf::from_payload(text.as_bytes());
            let span = Span::new(offset, offset + value.len());
            proptest::prop_assert_eq!(
                digest_username(&buf, span),
                param_value(&buf, span, b"username"),
                "{:?}",
                value
            );
        }
    }

    proptest::proptest! {
        /// The key made as the name is read is the one made from the name noted (the
        /// INVITE program's and the egress program's ways to an account's key).
        #[test]
        fn an_accounts_key_is_the_same_either_way(
            name in "[a-z0-9+.@_-]{0,40}",
            offset in 0usize..12,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let text = format!("{}{name}\r\n", "x".repeat(offset));
            let (buf, _) = ScanBuf::from_payload(text.as_bytes());
            let span = Span::new(offset, offset + name.len());
            let (words, len) = Account::name_of(&buf, span);
            proptest::prop_assert_eq!(Account::of(&buf, span, seed), Account::from_name(words, len, seed));
        }
    }

    #[test]
    fn accounts_compare_by_name() {
        let (buf, m) = parsed(REGISTER);
        let by_username = Account::of(
            &buf,
            digest_username(&buf, m.header(Header::Credentials)),
            3,
        );
        let by_to = Account::of(&buf, uri_user(&buf, m.header(Header::To)), 3);
        assert_eq!(by_username, by_to);
        let (name, len) = Account::name_bytes(&by_username.name);
        assert_eq!(&name[..len], b"alice");
        assert_eq!(
            Account::key_of_name(&by_username.name, 3),
            Some(by_username.key)
        );
        assert_ne!(
            Account::key_of_name(&by_username.name, 4),
            Some(by_username.key)
        );
        let cut = [u64::from_le_bytes(*b"aaaaaaaa"); ACCOUNT_WORDS];
        assert_eq!(Account::key_of_name(&cut, 3), None, "perhaps cut");
        assert_eq!(Account::of(&buf, Span::ABSENT, 3).key, 0);
    }

    #[test]
    fn parameters_are_found_wherever_they_are() {
        let cases = [
            (
                "Digest realm=\"x\",username=\"bob\"",
                "username",
                Some("bob"),
            ),
            (
                "Digest  USERNAME = \"b o b\" , realm=x",
                "username",
                Some("b o b"),
            ),
            ("Digest xusername=\"no\"", "username", None),
            (
                "Digest realm=\"x\", nonce=\"y\", stale=false",
                "stale",
                Some("false"),
            ),
            ("Digest realm=\"x\", stale=\"true\"", "stale", Some("true")),
            ("<sip:a@b>;expires=3600", "expires", Some("3600")),
            ("<sip:a@b>", "expires", None),
        ];
        for (value, name, expected) in cases {
            let found = found_in(value, |buf, span| param_value(buf, span, name.as_bytes()));
            assert_eq!(found.as_deref(), expected, "{name} in {value}");
        }
    }

    #[test]
    fn stale_is_true_only_when_it_says_so() {
        for (value, stale) in [
            ("Digest realm=\"x\", stale=true", true),
            ("Digest realm=\"x\", stale=\"TRUE\", qop=auth", true),
            ("Digest realm=\"x\", stale=false", false),
            ("Digest realm=\"x\", stale=truex", false),
            ("Digest realm=\"x\"", false),
        ] {
            let (buf, len) = ScanBuf::from_payload(value.as_bytes());
            assert_eq!(is_stale(&buf, Span::new(0, len)), stale, "{value}");
        }
    }

    #[test]
    fn uri_users() {
        for (value, user) in [
            ("<sip:1000@pbx>;tag=x", Some("1000")),
            ("\"A <b>\" <sips:carol@pbx>", None), // a `<` in the display name
            ("sip:dave@pbx;tag=1", Some("dave")),
            ("<sip:pbx.example.test>", None),
            ("<tel:+4930123>", None),
        ] {
            assert_eq!(found_in(value, uri_user).as_deref(), user, "{value}");
        }
    }

    #[test]
    fn callers_named_by_from() {
        for (value, user) in [
            ("<sip:1000@pbx>;tag=x", Some("1000")),
            ("sip:dave@pbx;tag=1", Some("dave")),
            ("Alice <sips:alice@pbx>", Some("alice")),
            // A quoted display name may hold a `<`, a `>` or a `;tag=`.
            ("\"A <b>\" <sips:carol@pbx>;tag=9", Some("carol")),
            ("\"x;tag=1>\"<sip:erin@pbx>", Some("erin")),
            // A tel: URI's number is its caller.
            ("<tel:+4930123;isub=1>;tag=2", Some("+4930123")),
            ("tel:+1-212-555-0100;tag=2", Some("+1-212-555-0100")),
            ("<TEL:0301234>", Some("0301234")),
            // No user: no one's account.
            ("<sip:pbx.example.test>;tag=1", None),
            ("<tel:>", None),
            // A withheld caller (RFC 3323) is no account.
            (
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1",
                None,
            ),
            ("<sip:Anonymous@pbx>", None),
            ("<sip:anonymous1@pbx>", Some("anonymous1")),
            // Malformed: an unclosed display name or angle bracket, an escaped quote.
            ("\"Alice <sip:alice@pbx>", None),
            ("<sip:alice@pbx", None),
            ("\"A \\\" <b>\" <sip:x@pbx>", None),
            ("", None),
        ] {
            assert_eq!(found_in(value, caller_user).as_deref(), user, "{value}");
        }
    }

    #[test]
    fn from_tags_after_the_uri() {
        for (value, tag) in [
            ("<sip:1000@pbx>;tag=a1", Some("a1")),
            ("<sip:1000@pbx;tag=uri-param>;tag=a2", Some("a2")),
            ("\"x;tag=name\" <sip:1000@pbx>;TAG=a3;other=1", Some("a3")),
            ("sip:1000@pbx ; tag = a4", Some("a4")),
            ("<sip:1000@pbx;tag=uri-param>", None),
            ("<sip:1000@pbx>", None),
        ] {
            assert_eq!(found_in(value, from_tag).as_deref(), tag, "{value}");
        }
    }

    /// The INVITE resent after a challenge (a higher CSeq, credentials) and a
    /// retransmission are the same call; another Call-ID or From tag is another call.
    #[test]
    fn a_call_keeps_its_identity_through_the_challenge() {
        let invite = |call_id: &str, tag: &str, cseq: u32, credentials: bool| {
            let credentials = if credentials {
                "Proxy-Authorization: Digest username=\"1000\", realm=\"pbx\"\r\n"
            } else {
                ""
            };
            format!(
                "INVITE sip:+4930123@pbx SIP/2.0\r\nFrom: \"Alice\" <sip:alice@pbx>;tag={tag}\r\n\
                 To: <sip:+4930123@pbx>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n\
                 {credentials}Content-Length: 0\r\n\r\n"
            )
        };
        let identity = |text: &str| {
            let (buf, m) = parsed(text);
            let from = m.header(Header::From);
            call_identity(&buf, m.header(Header::CallId), from_tag(&buf, from), 7)
        };
        let first = identity(&invite("c1@192.0.2.1", "t1", 1, false));
        assert_ne!(first, 0);
        assert_eq!(identity(&invite("c1@192.0.2.1", "t1", 2, true)), first);
        assert_ne!(identity(&invite("c2@192.0.2.1", "t1", 1, false)), first);
        assert_ne!(identity(&invite("c1@192.0.2.1", "t2", 1, false)), first);
        // The account: the digest username wins over the From user.
        let (buf, m) = parsed(&invite("c1@192.0.2.1", "t1", 2, true));
        let from_user = caller_user(&buf, m.header(Header::From));
        assert_eq!(text(&buf, from_user), "alice");
        let username = digest_username(&buf, m.header(Header::Credentials));
        assert_eq!(text(&buf, username), "1000");
        let (buf, m) = parsed("INVITE sip:1@pbx SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_eq!(
            call_identity(&buf, m.header(Header::CallId), Span::ABSENT, 7),
            0
        );
    }

    #[test]
    fn granted_expiry_from_expires_then_contact() {
        let (buf, m) = parsed(
            "SIP/2.0 200 OK\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:alice@192.0.2.10>;expires=1800\r\n\r\n",
        );
        let expiry = granted_expiry(&buf, m.header(Header::Expires), m.header(Header::Contact));
        assert_eq!(expiry, Some(1800));
        let (buf, m) = parsed(
            "SIP/2.0 200 OK\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\nExpires: 600\r\n\
             Contact: <sip:alice@192.0.2.10>;expires=1800\r\n\r\n",
        );
        let expiry = granted_expiry(&buf, m.header(Header::Expires), m.header(Header::Contact));
        assert_eq!(expiry, Some(600));
        let (buf, m) = parsed("SIP/2.0 200 OK\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\n\r\n");
        let expiry = granted_expiry(&buf, m.header(Header::Expires), m.header(Header::Contact));
        assert_eq!(expiry, None);
    }
}
