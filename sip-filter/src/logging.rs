//! Log lines in logfmt, one event per line, so that journald, Loki or `grep` can pick
//! fields out: `ts=2026-11-23T14:24:38.466Z level=info target=sip_filter::daemon
//! msg="configuration reloaded" config=/etc/sip-filter.toml domains=2`. The level comes
//! from `RUST_LOG` (default `info`).

use std::{fmt::Write as _, io::Write as _};

/// Installs the logger; `RUST_LOG` sets the level (`info` when unset).
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let mut line = format!(
                "ts={} level={} target={} msg={}",
                buf.timestamp_millis(),
                record.level().as_str().to_ascii_lowercase(),
                record.target(),
                quote(&record.args().to_string())
            );
            let mut fields = Fields(&mut line);
            let _ = record.key_values().visit(&mut fields);
            writeln!(buf, "{line}")
        })
        .init();
}

/// Appends ` key=value` per structured field of a record.
struct Fields<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let _ = write!(self.0, " {}={}", key.as_str(), quote(&value.to_string()));
        Ok(())
    }
}

/// A logfmt value: bare when it is one plain word, else in double quotes with `"` and
/// `\` escaped and line breaks written as `\n`, so that one record stays one line.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("eth0"), "eth0");
        assert_eq!(quote("198.51.100.7"), "198.51.100.7");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a=b"), "\"a=b\"");
        assert_eq!(quote("say \"hi\"\nbye"), "\"say \\\"hi\\\"\\nbye\"");
    }
}
