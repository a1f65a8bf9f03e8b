use proptest::prelude::*;

use super::*;
use crate::sip::{parse_wanted, Payload, Scratch, ALL_HEADERS};

fn prefixes() -> InternationalPrefixes {
    InternationalPrefixes::new(&["00", "011"])
}

/// The number an INVITE with this Request-URI dials.
fn of_uri(uri: &str) -> Dialled {
    let message = format!("INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n");
    let mut scratch = Scratch::new();
    let len = scratch.fill(message.as_bytes());
    let Payload::Sip(sip) = parse_wanted::<ALL_HEADERS>(&mut scratch, len, true) else {
        panic!("{uri}: not parsed");
    };
    dialled(
        &scratch.buf,
        sip.uri.user,
        &prefixes(),
        &mut Dialling::new(),
    )
}

#[test]
fn numbers_are_normalised() {
    use DialledKind::*;
    for (uri, kind, key) in [
        ("sip:+4490123456@pbx.example", International, "+4490123456"),
        ("sip:004490123456@pbx.example", International, "+4490123456"),
        ("sip:01144207946@pbx.example", International, "+44207946"),
        ("tel:+1-900-555-0100", International, "+19005550100"),
        (
            "tel:+1-900-555-0100;phone-context=+1",
            International,
            "+19005550100",
        ),
        (
            "sip:+44(0)20.7946.0000@pbx;user=phone",
            International,
            "+4402079460000",
        ),
        ("sip:+44%2020%207946@pbx", International, "+44207946"),
        (
            "sip:+4930123;npdi;rn=+4930999@pbx;user=phone",
            International,
            "+4930123",
        ),
        ("sip:030123456@pbx.example", National, "030123456"),
        ("sip:0900-123456@pbx.example", National, "0900123456"),
        ("sip:112@pbx.example", National, "112"),
        // An international prefix alone is the number dialled, not a prefix.
        ("sip:00@pbx.example", National, "00"),
        ("sip:011@pbx.example", National, "011"),
        // E.164 numbers are at most 15 digits: the key keeps the first 15.
        (
            "sip:+123456789012345678@pbx",
            International,
            "+123456789012345",
        ),
        ("sip:1234567890123456789@pbx", National, "1234567890123456"),
        ("sip:alice@pbx.example", Name, ""),
        ("sip:*67123@pbx.example", Name, ""),
        ("sip:12a3@pbx.example", Name, ""),
        ("sip:+@pbx.example", Name, ""),
        ("sip:1+2@pbx.example", Name, ""),
        ("sip:%41@pbx.example", Name, ""),
        ("sip:pbx.example", Nothing, ""),
    ] {
        let found = of_uri(uri);
        assert_eq!((found.kind, found.text()), (kind, key), "{uri}");
    }
}

#[test]
fn user_parts_past_the_limit_are_no_number() {
    let long = "1".repeat(USER_BYTES + 1);
    assert_eq!(of_uri(&format!("sip:{long}@pbx")).kind, DialledKind::Name);
    let longest = "1".repeat(USER_BYTES);
    assert_eq!(
        of_uri(&format!("sip:{longest}@pbx")).kind,
        DialledKind::National
    );
}

#[test]
fn without_international_prefixes_only_plus_is_international() {
    let message = "INVITE sip:0044123@pbx SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n";
    let mut scratch = Scratch::new();
    let len = scratch.fill(message.as_bytes());
    let Payload::Sip(sip) = parse_wanted::<ALL_HEADERS>(&mut scratch, len, true) else {
        panic!("not parsed");
    };
    let none = InternationalPrefixes::default();
    let found = dialled(&scratch.buf, sip.uri.user, &none, &mut Dialling::new());
    assert_eq!(
        (found.kind, found.text()),
        (DialledKind::National, "0044123")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Separators anywhere between the digits change nothing; the key holds only `+`
    /// and digits, and is never longer than its bytes.
    #[test]
    fn separators_do_not_change_the_number(
        digits in "[0-9]{1,20}",
        separators in proptest::collection::vec(prop_oneof![Just("-"), Just("."), Just("("), Just(")"), Just("%20"), Just("")], 20),
        plus in any::<bool>(),
    ) {
        let mut spaced = String::new();
        for (digit, separator) in digits.chars().zip(separators.iter().cycle()) {
            spaced.push(digit);
            spaced.push_str(separator);
        }
        let sign = if plus { "+" } else { "" };
        // Longer user parts are no number, by definition (another test).
        prop_assume!(sign.len() + spaced.len() <= USER_BYTES);
        let plain = of_uri(&format!("sip:{sign}{digits}@pbx"));
        let separated = of_uri(&format!("sip:{sign}{spaced}@pbx"));
        prop_assert_eq!(plain, separated);
        prop_assert!(plain.len as usize <= NUMBER_BYTES);
        let text = plain.text();
        prop_assert!(text.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'+')));
        if plus {
            prop_assert_eq!(plain.kind, DialledKind::International);
            let kept = 1 + digits.len().min(NUMBER_BYTES - 1);
            prop_assert_eq!(&text[1..], &digits[..kept - 1]);
        }
    }

    /// Any user part gives a defined answer and a key of `+` and digits.
    #[test]
    fn any_user_part_is_judged(user in "[ -~]{0,60}") {
        let message = format!("INVITE sip:{user}@pbx SIP/2.0\r\n\r\n");
        let mut scratch = Scratch::new();
        let len = scratch.fill(message.as_bytes());
        if let Payload::Sip(sip) = parse_wanted::<ALL_HEADERS>(&mut scratch, len, true) {
            let found = dialled(&scratch.buf, sip.uri.user, &prefixes(), &mut Dialling::new());
            prop_assert!(found.len as usize <= NUMBER_BYTES);
            let digits_only = found.text().bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'+'));
            prop_assert!(digits_only);
        }
    }
}
