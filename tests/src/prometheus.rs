//! A real Prometheus server (Debian package `prometheus`) scraping the filter's exporter
//! inside a lab namespace, and plain HTTP GETs made from inside a namespace.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{
    lab::{write_file, QUICK},
    netns::{Background, Netns},
};

/// Where the lab's Prometheus listens: the namespace's loopback, new with the
/// namespace, so no other program holds the port and nothing outside reaches it.
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

/// An HTTP answer: status, Content-Type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GET `url` from inside `ns`, with `query` parameters.
pub fn get(ns: Netns, url: &str, query: &[(&str, &str)]) -> Result<Answer, String> {
    ns.in_namespace(|| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(QUICK))
            .build()
            .into();
        let mut request = agent.get(url);
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        Ok(Answer {
            status: response.status().as_u16(),
            content_type,
            body,
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Prometheus running in a namespace, scraping one exporter every second (job
/// `sip-filter`) with the project's alert rules loaded; stopped when dropped.
pub struct Prometheus<'a> {
    pub process: Background,
    ns: Netns<'a>,
}

impl<'a> Prometheus<'a> {
    /// Starts it in `ns`, its configuration and data in `dir`, scraping `target`
    /// (`HOST:PORT`) and loading ops/prometheus/alerts.yml (a real server must accept
    /// them too).
    pub fn start(ns: Netns<'a>, dir: &Path, target: &str) -> anyhow::Result<Self> {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ops/prometheus/alerts.yml")
            .canonicalize()
            .context("ops/prometheus/alerts.yml")?;
        let config = write_file(
            dir,
            "prometheus.yml",
            &format!(
                r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: sip-filter
    static_configs:
      - targets: ["{target}"]
"#,
                rules = rules.display()
            ),
        );
        let data = dir.join("prometheus-data");
        let process = ns.spawn(
            "prometheus",
            "prometheus",
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address={PROMETHEUS_ADDR}"),
            ],
            &dir.join("prometheus.log"),
        )?;
        Ok(Prometheus { process, ns })
    }

    /// GET `path` of its HTTP API (`/api/v1/...`) with `query` parameters.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Answer, String> {
        get(self.ns, &format!("http://{PROMETHEUS_ADDR}{path}"), query)
    }

    /// The result of the instant query `expr` (`data.result`, an array of series);
    /// an error when Prometheus does not answer, or refuses the query.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .get("/api/v1/query", &[("query", expr)])
            .map_err(anyhow::Error::msg)?;
        let json: Value = serde_json::from_str(&answer.body)
            .with_context(|| format!("{expr}: not JSON: {}", answer.body))?;
        if json["status"] != "success" {
            bail!("{expr}: {}", answer.body);
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Polls `done` every 250 ms until it returns Some, for up to `deadline`; panics
    /// with `what`, the last error and Prometheus's log if it does not, or if
    /// Prometheus exits.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&Self) -> anyhow::Result<Option<T>>,
    ) -> (T, Duration) {
        let waiting = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(status) = self.process.exited() {
                panic!("prometheus exited ({status}):\n{}", self.process.log());
            }
            match done(self) {
                Ok(Some(value)) => return (value, waiting.elapsed()),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            assert!(
                waiting.elapsed() < deadline,
                "{what}: not within {deadline:?}; last error: {last}\nPrometheus's log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
