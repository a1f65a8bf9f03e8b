//! Log lines in logfmt, one event per line, so that journald, Loki or `grep` can pick
//! fields out: `ts=2026-11-23T14:24:38.466Z level=info target=sip_filter::daemon
//! msg="configuration reloaded" config=/etc/sip-filter.toml domains=2`. The level comes
//! from `RUST_LOG` (default `info`).
//!
//! Under systemd, each line also starts with its syslog priority (`<4>` for a warning,
//! as sd-daemon(3) describes), which journald strips and records, so that
//! `journalctl -p warning` finds warnings and errors.

use std::{
    fmt::Write as _,
    io::Write as _,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    sync::OnceLock,
};

/// Whether stderr is systemd's journal stream, decided once by [`init`].
static TO_JOURNAL: OnceLock<bool> = OnceLock::new();

/// Installs the logger; `RUST_LOG` sets the level (`info` when unset).
pub fn init() {
    let _ = TO_JOURNAL.set(stderr_is_journal());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let mut line = format!(
                "{}ts={} level={} target={} msg={}",
                journal_prefix(record.level()),
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

/// The sd-daemon(3) priority prefix for a line at `level` when stderr is the journal
/// (`<3>` for errors, `<4>` warnings, `<6>` info, `<7>` debug), else nothing: a
/// terminal or a file gets plain lines.
pub fn journal_prefix(level: log::Level) -> &'static str {
    if !TO_JOURNAL.get().copied().unwrap_or(false) {
        return "";
    }
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Whether stderr is the stream systemd connected to the journal. systemd.exec(5):
/// `JOURNAL_STREAM` holds that stream's `DEVICE:INODE`, and a process whose stderr was
/// redirected elsewhere (`sip-filter run 2>file` in a unit's shell) inherits the
/// variable but not the stream, so both must match.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = device_and_inode(std::io::stderr().as_fd()) else {
        return false;
    };
    stream
        .to_str()
        .is_some_and(|stream| journal_stream_is(stream, stat))
}

/// `fstat(2)` of `fd`: its device and inode.
fn device_and_inode(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` to the pointer, valid for that size.
    if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    Ok((stat.st_dev, stat.st_ino))
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` (both decimal) names `(device, inode)`.
pub fn journal_stream_is(stream: &str, (device, inode): (u64, u64)) -> bool {
    stream.split_once(':').is_some_and(|(dev, ino)| {
        dev.parse::<u64>().ok() == Some(device) && ino.parse::<u64>().ok() == Some(inode)
    })
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

    #[test]
    fn the_journal_stream_must_name_the_same_device_and_inode() {
        assert!(journal_stream_is("8:4242", (8, 4242)));
        assert!(!journal_stream_is("8:4242", (8, 4243)));
        assert!(!journal_stream_is("9:4242", (8, 4242)));
        for malformed in ["", "8", "8:", ":4242", "8:4242:1", "x:y", " 8:4242"] {
            assert!(!journal_stream_is(malformed, (8, 4242)), "{malformed:?}");
        }
    }
}
