//! The Local API client: the [`Lapi`] trait the sync engine uses (pull decisions, push
//! bans), and [`HttpLapi`], its implementation over HTTP.
//!
//! HTTP with ureq 3 (already the workspace's client for tests), blocking, on the
//! bouncer's and the signal source's own threads: a pull every few seconds needs no
//! async client, a slow LAPI then never holds up the daemon's signals or event log, and
//! ureq's global timeout and body limit bound every call. No CrowdSec crate exists.

use std::time::Duration;

use serde_json::{json, Value};

use super::{decisions::DecisionStream, settings::CrowdsecSettings};

/// The largest answer read: about 850,000 decisions (a full pull of 21,000 is 3 MB).
/// A bigger one is refused whole rather than read into memory.
pub const MAX_BODY_BYTES: u64 = 128 << 20;

/// What the sync engine needs from a Local API.
pub trait Lapi {
    /// The decisions: all of them (`startup`), or what changed since this key's last
    /// pull.
    fn pull(&mut self, startup: bool) -> Result<DecisionStream, LapiError>;
    /// Pushes the filter's own bans as alerts carrying decisions (machine credentials).
    fn push(&mut self, alerts: &[Value]) -> Result<(), LapiError>;
}

#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    #[error("cannot reach the Local API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the Local API at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the Local API refused the {what} (HTTP {status}): {hint}")]
    Refused {
        what: &'static str,
        status: u16,
        hint: &'static str,
    },
    #[error("the Local API answered HTTP {status} to {request}: {body}")]
    Status {
        request: &'static str,
        status: u16,
        body: String,
    },
    #[error("the Local API's answer is larger than {MAX_BODY_BYTES} bytes: refused")]
    TooLarge,
    #[error("the Local API answered garbage: {0}")]
    Malformed(String),
    #[error("no machine credentials (machine_id, password_file) are configured")]
    NoMachine,
}

impl LapiError {
    /// The metrics label of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LapiError::Unreachable { .. } => "unreachable",
            LapiError::Timeout { .. } => "timeout",
            LapiError::Refused { .. } => "forbidden",
            LapiError::Status { .. } => "status",
            LapiError::TooLarge => "too_large",
            LapiError::Malformed(_) => "malformed",
            LapiError::NoMachine => "no_machine",
        }
    }
}

/// A Local API over HTTP.
pub struct HttpLapi {
    agent: ureq::Agent,
    url: String,
    api_key: String,
    timeout: Duration,
    machine: Option<super::settings::Machine>,
    /// The machine's JWT, once logged in (it lasts an hour: renewed on a 401).
    token: Option<String>,
}

const USER_AGENT: &str = concat!("sip-filter/", env!("CARGO_PKG_VERSION"));

impl HttpLapi {
    pub fn new(settings: &CrowdsecSettings) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            // Statuses are answers to classify, not transport errors.
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .build()
            .into();
        Self {
            agent,
            url: settings.api_url.clone(),
            api_key: settings.api_key.clone(),
            timeout: settings.timeout,
            machine: settings.machine.clone(),
            token: None,
        }
    }

    fn transport(&self, e: ureq::Error) -> LapiError {
        match e {
            ureq::Error::Timeout(_) => LapiError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            },
            ureq::Error::BodyExceedsLimit(_) => LapiError::TooLarge,
            ureq::Error::Protocol(e) => LapiError::Malformed(format!("not HTTP: {e}")),
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => LapiError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            },
            other => LapiError::Unreachable {
                url: self.url.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// The body of an answer, at most [`MAX_BODY_BYTES`].
    fn body(&self, response: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, LapiError> {
        // Refused before a byte is read, when the LAPI says how big it is.
        let announced = response
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY_BYTES) {
            return Err(LapiError::TooLarge);
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(e))
    }

    /// Logs the machine in: a JWT for the alerts.
    fn login(&mut self) -> Result<String, LapiError> {
        let machine = self.machine.as_ref().ok_or(LapiError::NoMachine)?;
        let request = json!({
            "machine_id": machine.machine_id,
            "password": machine.password,
            "scenarios": [],
        });
        let mut response = self
            .agent
            .post(format!("{}/v1/watchers/login", self.url))
            .header("Content-Type", "application/json")
            .send(request.to_string())
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let body = self.body(&mut response)?;
        if status == 401 || status == 403 {
            return Err(LapiError::Refused {
                what: "machine login",
                status,
                hint: "check machine_id and the password in password_file against `cscli machines list`",
            });
        }
        if status != 200 {
            return Err(status_error("the machine login", status, &body));
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| LapiError::Malformed(format!("login answer: {e}")))?;
        let token = answer["token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| LapiError::Malformed("login answer without a token".into()))?;
        Ok(token.to_string())
    }

    fn post_alerts(&mut self, token: &str, body: &str) -> Result<u16, LapiError> {
        let mut response = self
            .agent
            .post(format!("{}/v1/alerts", self.url))
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {token}"))
            .send(body)
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let answer = self.body(&mut response)?;
        match status {
            200 | 201 => Ok(status),
            401 => Ok(401),
            _ => Err(status_error("the alerts", status, &answer)),
        }
    }
}

fn status_error(request: &'static str, status: u16, body: &[u8]) -> LapiError {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    LapiError::Status {
        request,
        status,
        body: text.trim().to_string(),
    }
}

impl Lapi for HttpLapi {
    fn pull(&mut self, startup: bool) -> Result<DecisionStream, LapiError> {
        let url = format!(
            "{}/v1/decisions/stream?startup={startup}&scopes=ip,range",
            self.url
        );
        let mut response = self
            .agent
            .get(url)
            .header("X-Api-Key", &self.api_key)
            .call()
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let body = self.body(&mut response)?;
        match status {
            200 => super::decisions::parse_stream(&body).map_err(LapiError::Malformed),
            401 | 403 => Err(LapiError::Refused {
                what: "bouncer key",
                status,
                hint: "check api_key (or api_key_file) against `cscli bouncers list`; `cscli bouncers add NAME` makes one",
            }),
            _ => Err(status_error("the decision stream", status, &body)),
        }
    }

    fn push(&mut self, alerts: &[Value]) -> Result<(), LapiError> {
        let body = Value::Array(alerts.to_vec()).to_string();
        let token = match self.token.clone() {
            Some(token) => token,
            None => self.login()?,
        };
        self.token = Some(token.clone());
        if self.post_alerts(&token, &body)? == 401 {
            // The JWT expired (an hour): log in again, once.
            let token = self.login()?;
            self.token = Some(token.clone());
            if self.post_alerts(&token, &body)? == 401 {
                self.token = None;
                return Err(LapiError::Refused {
                    what: "machine's fresh token",
                    status: 401,
                    hint: "is the machine validated? `cscli machines list` shows it",
                });
            }
        }
        Ok(())
    }
}
