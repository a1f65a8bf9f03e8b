//! The `[crowdsec]` table of the configuration file, with the names CrowdSec's firewall
//! bouncer uses (`api_url`, `api_key`, `update_frequency`, `scopes`, `origins`, ...), so
//! that they are familiar. Read by `config.rs`, which places each refusal at its line.

use std::{fmt, ops::Range, path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::decisions::parse_go_duration;

/// What the bouncer and the signal source are configured with.
#[derive(Clone, PartialEq, Eq)]
pub struct CrowdsecSettings {
    /// The Local API's base URL, without a trailing `/` (`http://127.0.0.1:8080`).
    pub api_url: String,
    /// The bouncer key (`cscli bouncers add NAME`), from `api_key` or `api_key_file`.
    pub api_key: String,
    /// How often decisions are pulled (deltas).
    pub update_frequency: Duration,
    /// How often the whole set is pulled again and the kernel's entries reconciled with
    /// it (1.4.6's deltas can miss decisions).
    pub resync_frequency: Duration,
    /// The longest one request to the LAPI may take, connection included.
    pub timeout: Duration,
    /// Decision scopes applied, lower case: `ip`, `range`.
    pub scopes: Vec<String>,
    /// Decision origins applied (`crowdsec`, `cscli`, `sip-filter`, `CAPI`, ...); empty:
    /// all.
    pub origins: Vec<String>,
    pub scenarios_containing: Vec<String>,
    pub scenarios_not_containing: Vec<String>,
    /// The signal source's machine credentials (`cscli machines add`); None: the
    /// filter's own bans are not pushed.
    pub machine: Option<Machine>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Machine {
    pub machine_id: String,
    pub password: String,
}

// Secrets stay out of logs and panics.
impl fmt::Debug for CrowdsecSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrowdsecSettings")
            .field("api_url", &self.api_url)
            .field("api_key", &"<hidden>")
            .field("update_frequency", &self.update_frequency)
            .field("resync_frequency", &self.resync_frequency)
            .field("timeout", &self.timeout)
            .field("scopes", &self.scopes)
            .field("origins", &self.origins)
            .field("scenarios_containing", &self.scenarios_containing)
            .field("scenarios_not_containing", &self.scenarios_not_containing)
            .field(
                "machine_id",
                &self.machine.as_ref().map(|m| m.machine_id.as_str()),
            )
            .finish()
    }
}

pub const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
pub const DEFAULT_RESYNC_FREQUENCY: Duration = Duration::from_secs(300);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const SCOPES: [&str; 2] = ["ip", "range"];

type List = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCrowdsec {
    api_url: Option<Spanned<String>>,
    api_key: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    update_frequency: Option<Spanned<String>>,
    resync_frequency: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    scopes: List,
    origins: List,
    scenarios_containing: List,
    scenarios_not_containing: List,
    machine_id: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
}

/// A refused value: where, which key (`crowdsec.api_url`), why.
pub type Refusal = (Range<usize>, String, String);

fn refuse<T>(span: Range<usize>, key: &str, message: impl Into<String>) -> Result<T, Refusal> {
    Err((span, format!("crowdsec.{key}"), message.into()))
}

/// Checks the table (its span: `table`); secrets are read from their files here, so
/// that a missing file stops the start, not the first pull.
pub fn from_raw(raw: &RawCrowdsec, table: Range<usize>) -> Result<CrowdsecSettings, Refusal> {
    let Some(url) = &raw.api_url else {
        return refuse(
            table,
            "api_url",
            "missing key: the Local API's address, like \"http://127.0.0.1:8080/\"",
        );
    };
    let api_url = check_url(url.get_ref()).or_else(|e| refuse(url.span(), "api_url", e))?;
    let api_key = match (&raw.api_key, &raw.api_key_file) {
        (Some(key), None) => check_secret(key.get_ref(), "the key")
            .or_else(|e| refuse(key.span(), "api_key", e))?,
        (None, Some(file)) => {
            read_secret(file.get_ref()).or_else(|e| refuse(file.span(), "api_key_file", e))?
        }
        (Some(key), Some(_)) => {
            return refuse(key.span(), "api_key", "give api_key or api_key_file, not both")
        }
        (None, None) => {
            return refuse(
                table,
                "api_key",
                "missing key: the bouncer key `cscli bouncers add NAME` printed, as api_key = \"...\" or in a file named by api_key_file",
            )
        }
    };
    let update_frequency = interval(
        &raw.update_frequency,
        "update_frequency",
        DEFAULT_UPDATE_FREQUENCY,
        Duration::from_millis(100)..=Duration::from_secs(3600),
    )?;
    let resync_frequency = interval(
        &raw.resync_frequency,
        "resync_frequency",
        DEFAULT_RESYNC_FREQUENCY,
        Duration::from_secs(1)..=Duration::from_secs(86_400),
    )?;
    if resync_frequency < update_frequency {
        let span = raw
            .resync_frequency
            .as_ref()
            .map_or(table.clone(), |r| r.span());
        return refuse(
            span,
            "resync_frequency",
            "must be at least update_frequency: a full pull is the delta's backstop",
        );
    }
    let timeout = interval(
        &raw.timeout,
        "timeout",
        DEFAULT_TIMEOUT,
        Duration::from_millis(100)..=Duration::from_secs(300),
    )?;
    let scopes = match &raw.scopes {
        None => SCOPES.map(String::from).to_vec(),
        Some(list) => {
            let mut scopes = Vec::new();
            for scope in list.get_ref() {
                let lower = scope.get_ref().to_ascii_lowercase();
                if !SCOPES.contains(&lower.as_str()) {
                    return refuse(
                        scope.span(),
                        "scopes",
                        format!(
                            "{:?} is not a scope the filter can enforce: give \"ip\", \"range\" or both",
                            scope.get_ref()
                        ),
                    );
                }
                scopes.push(lower);
            }
            if scopes.is_empty() {
                return refuse(list.span(), "scopes", "no scope given: the bouncer would apply nothing (leave the key out for [\"ip\", \"range\"])");
            }
            scopes
        }
    };
    let machine = match (&raw.machine_id, &raw.password_file) {
        (None, None) => None,
        (Some(id), Some(file)) => {
            let machine_id = check_secret(id.get_ref(), "the machine id")
                .or_else(|e| refuse(id.span(), "machine_id", e))?;
            let password = read_secret(file.get_ref())
                .or_else(|e| refuse(file.span(), "password_file", e))?;
            Some(Machine {
                machine_id,
                password,
            })
        }
        (Some(id), None) => {
            return refuse(id.span(), "password_file", "missing key: machine_id needs the machine's password, in a file named by password_file")
        }
        (None, Some(file)) => {
            return refuse(file.span(), "machine_id", "missing key: password_file needs the machine's name (`cscli machines add NAME`)")
        }
    };
    Ok(CrowdsecSettings {
        api_url,
        api_key,
        update_frequency,
        resync_frequency,
        timeout,
        scopes,
        origins: strings(&raw.origins),
        scenarios_containing: strings(&raw.scenarios_containing),
        scenarios_not_containing: strings(&raw.scenarios_not_containing),
        machine,
    })
}

fn strings(list: &List) -> Vec<String> {
    list.as_ref()
        .map(|list| list.get_ref().iter().map(|s| s.get_ref().clone()).collect())
        .unwrap_or_default()
}

/// `http://HOST:PORT/` or `http://HOST:PORT/PATH/`, without the trailing slash.
fn check_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: TLS to the Local API is not supported yet; use http:// to a LAPI on this host or reach a remote one through a tunnel"
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} is not an http:// URL (like \"http://127.0.0.1:8080/\")"
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(format!(
            "{url:?} has no usable host (like \"http://127.0.0.1:8080/\")"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A key, id or password: printable ASCII, no spaces (it goes into an HTTP header).
fn check_secret(text: &str, what: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} holds spaces or characters other than printable ASCII"
        ));
    }
    Ok(text.to_string())
}

/// The first line of the file at `path`, checked.
fn read_secret(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|e| format!("{path} cannot be read: {e}"))?;
    check_secret(text.lines().next().unwrap_or_default(), path)
}

fn interval(
    raw: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    bounds: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, Refusal> {
    let Some(text) = raw else {
        return Ok(default);
    };
    // The forms of the rest of the file (`1m 30s`), or a Go duration as CrowdSec's own
    // bouncers take (`1m30.5s`).
    let duration = crate::duration::parse(text.get_ref()).ok().or_else(|| {
        parse_go_duration(text.get_ref().trim())
            .and_then(|n| u64::try_from(n).ok())
            .map(Duration::from_nanos)
    });
    match duration {
        Some(d) if bounds.contains(&d) => Ok(d),
        _ => refuse(
            text.span(),
            key,
            format!(
                "{:?}: give a duration from {:?} to {:?}, like \"10s\", \"500ms\" or \"5m\"",
                text.get_ref(),
                bounds.start(),
                bounds.end()
            ),
        ),
    }
}
