//! What the Local API's decision stream says, read strictly: the body of
//! `GET /v1/decisions/stream`, CrowdSec's Go durations, and which decisions the filter
//! applies (the configured filters) and as what network.
//!
//! A body is parsed whole before anything is applied: a LAPI answering garbage changes
//! nothing in the kernel.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use super::settings::CrowdsecSettings;

/// One decision as the stream carries it (1.4.6 sends exactly these fields; more are
/// ignored, so that a newer LAPI's additions do not break the bouncer).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Decision {
    pub id: i64,
    pub origin: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    /// Time left, as a Go duration counting down (`3h59m59.5s`; negative in `deleted`).
    pub duration: String,
    pub scenario: String,
}

/// A stream answer. The LAPI sends `null`, not `[]`, for an empty list; both keys are
/// required, so that an unrelated JSON object is not read as "no decisions".
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct DecisionStream {
    #[serde(deserialize_with = "null_as_empty")]
    pub new: Vec<Decision>,
    #[serde(deserialize_with = "null_as_empty")]
    pub deleted: Vec<Decision>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(Option::<Vec<Decision>>::deserialize(d)?.unwrap_or_default())
}

/// Reads a stream body; the error says what is wrong with it, and where.
pub fn parse_stream(body: &[u8]) -> Result<DecisionStream, String> {
    serde_json::from_slice(body).map_err(|e| {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(80)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "not a decision stream ({e}); the body ({} bytes) starts with {start:?}",
            body.len()
        )
    })
}

/// A Go duration (`300ms`, `-1.5h`, `3h59m59.514s`) in nanoseconds; None if it is not
/// one. CrowdSec writes decisions' remaining time, and operators write intervals, this
/// way.
pub fn parse_go_duration(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    // Beyond about 292 years Go itself refuses; so do we.
    if !total.is_finite() || total > 9.3e18 {
        return None;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

/// What the filter makes of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enforced: the network on the deny list, for the time left.
    Apply { net: IpNet, left: Duration },
    /// Left alone, and why (a metrics label: `type`, `scope`, `origin`, `scenario`,
    /// `invalid`, `expired`).
    Ignore(&'static str),
}

/// Which decisions the filter enforces: the `[crowdsec]` filters, as CrowdSec's
/// firewall bouncer reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionFilter {
    /// Lower case: `ip`, `range`.
    pub scopes: Vec<String>,
    /// Empty: any origin.
    pub origins: Vec<String>,
    /// Empty: any scenario; else one of these must be in the scenario's name.
    pub scenarios_containing: Vec<String>,
    pub scenarios_not_containing: Vec<String>,
}

impl DecisionFilter {
    pub fn of(settings: &CrowdsecSettings) -> Self {
        Self {
            scopes: settings.scopes.clone(),
            origins: settings.origins.clone(),
            scenarios_containing: settings.scenarios_containing.clone(),
            scenarios_not_containing: settings.scenarios_not_containing.clone(),
        }
    }

    /// Whether a decision passes the filters (its type and value not yet looked at).
    fn admits(&self, decision: &Decision) -> Result<(), &'static str> {
        let scope = decision.scope.to_ascii_lowercase();
        if !self.scopes.contains(&scope) {
            return Err("scope");
        }
        if !self.origins.is_empty()
            && !self
                .origins
                .iter()
                .any(|origin| origin.eq_ignore_ascii_case(&decision.origin))
        {
            return Err("origin");
        }
        let scenario = decision.scenario.to_ascii_lowercase();
        let contains = |part: &String| scenario.contains(&part.to_ascii_lowercase());
        if !self.scenarios_containing.is_empty() && !self.scenarios_containing.iter().any(contains)
        {
            return Err("scenario");
        }
        if self.scenarios_not_containing.iter().any(contains) {
            return Err("scenario");
        }
        Ok(())
    }

    /// What to do with a decision from the `new` list.
    pub fn judge(&self, decision: &Decision) -> Verdict {
        if !decision.kind.eq_ignore_ascii_case("ban") {
            return Verdict::Ignore("type");
        }
        if let Err(why) = self.admits(decision) {
            return Verdict::Ignore(why);
        }
        let Some(net) = network_of(decision) else {
            return Verdict::Ignore("invalid");
        };
        match parse_go_duration(&decision.duration) {
            None => Verdict::Ignore("invalid"),
            Some(nanos) if nanos <= 0 => Verdict::Ignore("expired"),
            Some(nanos) => Verdict::Apply {
                net,
                left: Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
            },
        }
    }
}

/// The network a decision covers: an `Ip` is a /32 or /128 (exactly that address, not
/// the filter's IPv6 prefix: CrowdSec asked for one address), a `Range` its CIDR.
pub fn network_of(decision: &Decision) -> Option<IpNet> {
    let value = decision.value.trim();
    if decision.scope.eq_ignore_ascii_case("ip") {
        value.parse::<IpAddr>().ok().map(IpNet::from)
    } else if decision.scope.eq_ignore_ascii_case("range") {
        value.parse::<IpNet>().ok().map(|net| net.trunc())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1.4.6's answers, as captured from a real LAPI.
    const STARTUP: &str = r#"{"deleted":null,"new":[{"duration":"59m58.997079827s","id":2,"origin":"cscli","scenario":"manual 'ban' from 'cli'","scope":"Range","type":"ban","value":"198.51.100.0/24"},{"duration":"59m58.997078531s","id":3,"origin":"cscli","scenario":"manual 'ban' from 'cli'","scope":"Ip","type":"ban","value":"2001:db8::7"},{"duration":"59m58.997077994s","id":4,"origin":"cscli","scenario":"manual 'ban' from 'cli'","scope":"Range","type":"ban","value":"2001:db8:1::/48"},{"duration":"59m58.99707761s","id":5,"origin":"cscli","scenario":"manual 'captcha' from 'cli'","scope":"Ip","type":"captcha","value":"203.0.113.8"},{"duration":"3h59m58.997077238s","id":1,"origin":"cscli","scenario":"sip-scan","scope":"Ip","type":"ban","value":"203.0.113.7"}]}"#;
    const DELETED: &str = r#"{"deleted":[{"duration":"-130.568553ms","id":1,"origin":"cscli","scenario":"sip-scan","scope":"Ip","type":"ban","value":"203.0.113.7"}],"new":null}"#;

    fn filter() -> DecisionFilter {
        DecisionFilter {
            scopes: vec!["ip".into(), "range".into()],
            origins: Vec::new(),
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
        }
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("4h"), Some(4 * 3600 * 1_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_go_duration("1.5m"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("-315.4ms"), Some(-315_400_000));
        assert_eq!(parse_go_duration("250us"), Some(250_000));
        assert_eq!(parse_go_duration("3µs"), Some(3_000));
        assert_eq!(
            parse_go_duration("3h59m59.514s"),
            Some((3 * 3600 + 59 * 60 + 59) * 1_000_000_000 + 514_000_000)
        );
        for bad in [
            "",
            "-",
            "10",
            "s",
            "1x",
            "1 s",
            "1d",
            "1h-2m",
            "..s",
            "9999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_startup_answer_parses_and_is_judged() {
        let stream = parse_stream(STARTUP.as_bytes()).unwrap();
        assert!(stream.deleted.is_empty());
        let verdicts: Vec<Verdict> = stream.new.iter().map(|d| filter().judge(d)).collect();
        let applied: Vec<IpNet> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Apply { net, .. } => Some(*net),
                Verdict::Ignore(_) => None,
            })
            .collect();
        assert_eq!(
            applied,
            [
                net("198.51.100.0/24"),
                net("2001:db8::7/128"),
                net("2001:db8:1::/48"),
                net("203.0.113.7/32")
            ]
        );
        assert_eq!(verdicts[3], Verdict::Ignore("type"));
        let Verdict::Apply { left, .. } = &verdicts[4] else {
            panic!("{verdicts:?}")
        };
        assert_eq!(left.as_secs(), 4 * 3600 - 2);
    }

    #[test]
    fn a_delta_with_deletions_parses() {
        let stream = parse_stream(DELETED.as_bytes()).unwrap();
        assert!(stream.new.is_empty());
        assert_eq!(stream.deleted[0].id, 1);
        assert_eq!(network_of(&stream.deleted[0]), Some(net("203.0.113.7/32")));
        let empty = parse_stream(br#"{"new":null,"deleted":null}"#).unwrap();
        assert_eq!(empty, DecisionStream::default());
    }

    #[test]
    fn garbage_is_refused_with_what_it_was() {
        for bad in [
            &b"<html>502 Bad Gateway</html>"[..],
            b"",
            b"[]",
            b"{\"new\": 5}",
            br#"{"new":[{"id":1}]}"#,
            br#"{"new":[{"duration":"1h","id":"x","origin":"o","scenario":"s","scope":"Ip","type":"ban","value":"1.2.3.4"}]}"#,
        ] {
            let e = parse_stream(bad).unwrap_err();
            assert!(e.starts_with("not a decision stream"), "{e}");
        }
        let e = parse_stream(b"<html>\n502</html>").unwrap_err();
        assert!(e.contains("\"<html> 502</html>\""), "{e}");
    }

    fn decision(scope: &str, value: &str, kind: &str, origin: &str, scenario: &str) -> Decision {
        Decision {
            id: 9,
            origin: origin.into(),
            kind: kind.into(),
            scope: scope.into(),
            value: value.into(),
            duration: "1h".into(),
            scenario: scenario.into(),
        }
    }

    #[test]
    fn filters_and_bad_values() {
        let ban = |scope, value| decision(scope, value, "ban", "crowdsec", "crowdsecurity/ssh-bf");
        assert!(matches!(
            filter().judge(&ban("ip", "192.0.2.1")),
            Verdict::Apply { .. }
        ));
        // Host bits of a range are cleared; a bad value is refused, not guessed at.
        assert_eq!(
            filter().judge(&ban("Range", "192.0.2.7/24")),
            Verdict::Apply {
                net: net("192.0.2.0/24"),
                left: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            filter().judge(&ban("Ip", "192.0.2.0/24")),
            Verdict::Ignore("invalid")
        );
        assert_eq!(
            filter().judge(&ban("Ip", "not-an-ip")),
            Verdict::Ignore("invalid")
        );
        assert_eq!(
            filter().judge(&ban("Country", "FR")),
            Verdict::Ignore("scope")
        );
        assert_eq!(
            filter().judge(&ban("AS", "64496")),
            Verdict::Ignore("scope")
        );
        let mut expired = ban("Ip", "192.0.2.1");
        expired.duration = "-2s".into();
        assert_eq!(filter().judge(&expired), Verdict::Ignore("expired"));
        expired.duration = "forever".into();
        assert_eq!(filter().judge(&expired), Verdict::Ignore("invalid"));

        let only_ips = DecisionFilter {
            scopes: vec!["ip".into()],
            ..filter()
        };
        assert_eq!(
            only_ips.judge(&ban("Range", "192.0.2.0/24")),
            Verdict::Ignore("scope")
        );
        let origins = DecisionFilter {
            origins: vec!["cscli".into(), "sip-filter".into()],
            ..filter()
        };
        assert_eq!(
            origins.judge(&ban("Ip", "192.0.2.1")),
            Verdict::Ignore("origin")
        );
        let cscli = decision("Ip", "192.0.2.1", "ban", "CSCLI", "manual");
        assert!(matches!(origins.judge(&cscli), Verdict::Apply { .. }));
        let sip_only = DecisionFilter {
            scenarios_containing: vec!["sip".into()],
            scenarios_not_containing: vec!["sip-filter/rate".into()],
            ..filter()
        };
        assert_eq!(
            sip_only.judge(&ban("Ip", "192.0.2.1")),
            Verdict::Ignore("scenario")
        );
        let scan = decision("Ip", "192.0.2.1", "ban", "sip-filter", "sip-filter/scanner");
        assert!(matches!(sip_only.judge(&scan), Verdict::Apply { .. }));
        let rate = decision("Ip", "192.0.2.1", "ban", "sip-filter", "sip-filter/rate");
        assert_eq!(sip_only.judge(&rate), Verdict::Ignore("scenario"));
        let captcha = decision("Ip", "192.0.2.1", "captcha", "crowdsec", "x");
        assert_eq!(filter().judge(&captcha), Verdict::Ignore("type"));
    }
}
