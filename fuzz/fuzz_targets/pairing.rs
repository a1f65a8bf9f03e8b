//! Arbitrary bytes into what pairs an answer with its request (`sip::pairing`): the
//! transaction's identity, the account a request names (and an INVITE's From user and
//! call identity), a challenge's `stale`, the expiry a registration was granted, a
//! header parameter; and the From header the INVITE program finds unrecorded. Checks that the kernel's
//! parses (a request's policy headers, an answer's headers) give the same transaction
//! as the full parse, that an answer copying the request's Call-ID and CSeq pairs with
//! it, and that every span found lies within the value it was looked for in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    parse,
    sip::{
        find_from_header,
        pairing::{
            call_identity, caller_user, decimal, digest_username, from_tag, granted_expiry,
            is_stale, param_value, transaction_id, transaction_of, uri_user, Account,
            ACCOUNT_BYTES,
        },
        parse_in_place, HeaderSet, Kind, ANSWER_HEADERS, POLICY_HEADERS,
    },
    Header, Payload, ScanBuf, Scratch, SipMessage, Span, SCAN_LEN,
};

/// The seed the transaction and account hashes are keyed with (the kernel's is random).
const SEED: u64 = 0x5eed_5eed_5eed_5eed;

/// `found` lies within `within` (or is absent).
fn check_within(found: Span, within: Span) {
    if found.is_present() {
        assert!(
            within.start() <= found.start() && found.start() <= found.end(),
            "{found:?} in {within:?}"
        );
        assert!(found.end() <= within.end(), "{found:?} beyond {within:?}");
    }
}

/// The transaction a parse recording only `WANTED` gives, if it finds SIP.
fn kernel_transaction<const WANTED: HeaderSet>(
    scratch: &mut Scratch,
    len: usize,
    whole: bool,
) -> Option<u64> {
    (parse_in_place::<WANTED>(scratch, len, whole) == Kind::Sip)
        .then(|| transaction_of(scratch, SEED))
}

/// What the kernel reads from a request: its transaction and the account it names.
fn check_request_fields(buf: &ScanBuf, msg: &SipMessage) {
    let credentials = msg.header(Header::Credentials);
    let username = digest_username(buf, credentials);
    check_within(username, credentials);
    let to = msg.header(Header::To);
    let to_user = uri_user(buf, to);
    check_within(to_user, to);
    // An INVITE's account without credentials, and its call's identity.
    let from = msg.header(Header::From);
    let caller = caller_user(buf, from);
    check_within(caller, from);
    let tag = from_tag(buf, from);
    check_within(tag, from);
    let call = call_identity(buf, msg.header(Header::CallId), tag, SEED);
    assert_eq!(call == 0, msg.header(Header::CallId).is_empty());
    for named in [username, to_user, caller] {
        let account = Account::of(buf, named, SEED);
        assert_eq!(account.key == 0, named.is_empty(), "{named:?}");
        if named.is_empty() {
            continue;
        }
        // A name held whole (shorter than the bytes kept, without a zero byte, which
        // the kept name's padding could not tell apart) is keyed again the same way.
        let (bytes, len) = Account::name_bytes(&account.name);
        if named.len() < ACCOUNT_BYTES && len == named.len() {
            assert_eq!(
                Account::key_of_name(&account.name, SEED),
                Some(account.key),
                "{:?}",
                &bytes[..len]
            );
        }
    }
}

/// What the egress program reads from an answer.
fn check_answer_fields(buf: &ScanBuf, msg: &SipMessage) {
    let _ = is_stale(buf, msg.header(Header::Challenge));
    let contact = msg.header(Header::Contact);
    check_within(param_value(buf, contact, b"expires"), contact);
    if let Some(seconds) = granted_expiry(buf, msg.header(Header::Expires), contact) {
        assert!(seconds < 1_000_000_000, "{seconds}: at most 9 digits");
    }
}

/// The bytes of `span` in `buf`.
fn bytes_of(buf: &ScanBuf, span: Span) -> Vec<u8> {
    (span.start()..span.end()).map(|i| buf.byte(i)).collect()
}

/// An answer copying the message's Call-ID and CSeq values (RFC 3261 §8.2.6.2) has the
/// same transaction, wherever the values lie in it.
fn check_answer_pairs(buf: &ScanBuf, msg: &SipMessage, id: u64) {
    let (call_id, cseq) = (
        bytes_of(buf, msg.header(Header::CallId)),
        bytes_of(buf, msg.header(Header::CSeq)),
    );
    // Values the parse recorded from folded lines hold line ends: not copied as such.
    if [&call_id, &cseq]
        .iter()
        .any(|v| v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)))
    {
        return;
    }
    let mut answer = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.1\r\ncseq: ".to_vec();
    answer.extend_from_slice(&cseq);
    answer.extend_from_slice(b"\r\ni: ");
    answer.extend_from_slice(&call_id);
    answer.extend_from_slice(b"\r\n\r\n");
    if answer.len() > SCAN_LEN {
        return;
    }
    let mut scratch = Scratch::new();
    let len = scratch.fill(&answer);
    if let Some(answer_id) = kernel_transaction::<ANSWER_HEADERS>(&mut scratch, len, true) {
        assert_eq!(answer_id, id, "{:?}", String::from_utf8_lossy(&answer));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut scratch = Scratch::new();
    let len = scratch.fill(data);
    // A parameter of any name (up to 8 bytes, as the kernel's are) in the whole window.
    if let Some((&name_len, rest)) = data.split_first() {
        let name = &rest[..rest.len().min(usize::from(name_len % 9))];
        let whole = Span::new(0, len);
        check_within(param_value(&scratch.buf, whole, name), whole);
        let _ = decimal(&scratch.buf, whole);
    }
    for whole in [false, true] {
        let Payload::Sip(msg) = parse(&mut scratch, len, whole) else {
            continue;
        };
        let buf = scratch.buf.clone();
        let id = transaction_id(
            &buf,
            msg.header(Header::CallId),
            msg.header(Header::CSeq),
            SEED,
        );
        assert_eq!(
            id == 0,
            msg.header(Header::CallId).is_empty() || msg.header(Header::CSeq).is_empty()
        );
        if msg.is_request() {
            check_request_fields(&buf, &msg);
        } else {
            check_answer_fields(&buf, &msg);
        }
        // The kernel's parses, the request's and the answer's, pair the same way (one
        // stopped at its line budget saw the first lines only: the policy drops it).
        let policy = kernel_transaction::<POLICY_HEADERS>(&mut scratch, len, whole);
        assert!(policy == Some(id) || scratch.over_line_budget());
        // The From the INVITE program finds in the policy parse's scratch is the full
        // parse's, up to its line's end (the full parse follows a folded value).
        if policy.is_some() {
            let found = find_from_header(&scratch);
            let recorded = msg.header(Header::From);
            // (An empty first line's value is not moved to a continuation's start.)
            if !found.is_empty() {
                assert_eq!(found.start, recorded.start, "{found:?} {recorded:?}");
                assert!(found.end <= recorded.end, "{found:?} {recorded:?}");
            }
        }
        let answer = kernel_transaction::<ANSWER_HEADERS>(&mut scratch, len, whole);
        assert!(answer == Some(id) || scratch.over_line_budget());
        if id != 0 {
            check_answer_pairs(&buf, &msg, id);
        }
    }
});
