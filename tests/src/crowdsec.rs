//! A throw-away CrowdSec Local API (Debian's crowdsec 1.4.6) for a test, as
//! shared/CROWDSEC.md describes it: its own directory, port and SQLite file, no log
//! agent, no online API; started inside a namespace the test made, on its loopback.
//! Stopped (SIGTERM, by [`Background`]'s drop) and removed with the directory.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};

use crate::{
    lab::QUICK,
    netns::{Background, Finished, Netns},
};

/// What the fixture runs.
pub const CROWDSEC_TOOLS: &[&str] = &["crowdsec", "cscli", "curl"];

pub struct Lapi {
    pub process: Background,
    pub dir: PathBuf,
    pub url: String,
    pub bouncer_key: String,
    pub machine_id: String,
    pub password_file: PathBuf,
}

impl Lapi {
    /// Writes the configuration in `dir`, registers a bouncer and a machine, starts
    /// the LAPI in `ns` on 127.0.0.1:`port` and waits until it answers.
    pub fn start(ns: Netns, dir: &Path, port: u16) -> anyhow::Result<Lapi> {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("hub"))?;
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common: {{daemonize: false, log_media: stdout, log_level: warning}}\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n\
                 db_config: {{type: sqlite, db_path: {d}/data/crowdsec.db, use_wal: true}}\n\
                 api:\n  client: {{credentials_path: {d}/local_api_credentials.yaml}}\n  server: {{listen_uri: \"127.0.0.1:{port}\", profiles_path: {d}/profiles.yaml}}\n\
                 prometheus: {{enabled: false}}\n"
            ),
        )?;
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n")?;
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters: [\"Alert.Remediation == true && Alert.GetScope() == \\\"Ip\\\"\"]\ndecisions: [{type: ban, duration: 4h}]\non_success: break\n",
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let bouncer_key = format!("sipfilterbouncer{}", std::process::id());
        let machine_id = "gw1".to_string();
        let password = format!("sipfilterpw{}", std::process::id());
        let password_file = dir.join("machine.password");
        std::fs::write(&password_file, &password)?;
        let lapi = |ns: Netns, args: &[&str]| -> Finished { cscli(ns, dir, args) };
        let credentials = format!("{d}/local_api_credentials.yaml");
        let steps: [Vec<&str>; 3] = [
            vec![
                "bouncers",
                "add",
                "gw1-bouncer",
                "-k",
                &bouncer_key,
                "-o",
                "raw",
            ],
            vec![
                "machines",
                "add",
                &machine_id,
                "--password",
                &password,
                "-f",
                "/dev/null",
            ],
            vec![
                "machines",
                "add",
                "cli",
                "--auto",
                "-f",
                &credentials,
                "--url",
                &url,
            ],
        ];
        for step in steps {
            let done = lapi(ns, &step);
            ensure!(done.success(), "cscli {step:?}: {done}");
        }
        let process = run_lapi(ns, dir, &url, &bouncer_key)?;
        Ok(Lapi {
            process,
            dir: dir.to_path_buf(),
            url,
            bouncer_key,
            machine_id,
            password_file,
        })
    }

    /// Stops the LAPI (SIGTERM), as an outage.
    pub fn stop(&mut self) {
        self.process.signal(crate::netns::SIGTERM);
        let _ = self.process.wait(QUICK);
    }

    /// Starts it again on the same directory, port and database.
    pub fn restart(&mut self, ns: Netns) -> anyhow::Result<()> {
        self.process = run_lapi(ns, &self.dir, &self.url, &self.bouncer_key)?;
        Ok(())
    }

    /// `cscli ARGS` against this LAPI.
    pub fn cscli(&self, ns: Netns, args: &[&str]) -> Finished {
        cscli(ns, &self.dir, args)
    }
}

fn cscli(ns: Netns, dir: &Path, args: &[&str]) -> Finished {
    let config = dir.join("config.yaml");
    let mut all = vec!["-c", config.to_str().unwrap_or_default(), "--error"];
    all.extend_from_slice(args);
    ns.run("cscli", &all, QUICK)
}

/// Starts crowdsec on `dir`'s configuration in `ns` and waits until it answers.
fn run_lapi(ns: Netns, dir: &Path, url: &str, bouncer_key: &str) -> anyhow::Result<Background> {
    let config = dir.join("config.yaml");
    let mut process = ns
        .spawn(
            "crowdsec",
            "crowdsec",
            &["-c", config.to_str().context("a UTF-8 path")?],
            &dir.join("crowdsec.log"),
        )
        .context("crowdsec starts (installed by `cargo xtask setup --test-tools`)")?;
    let start = Instant::now();
    loop {
        let probe = ns.run(
            "curl",
            &[
                "-fs",
                "-o",
                "/dev/null",
                "-H",
                &format!("X-Api-Key: {bouncer_key}"),
                &format!("{url}/v1/decisions?ip=127.0.0.1"),
            ],
            QUICK,
        );
        if probe.success() {
            return Ok(process);
        }
        if let Some(status) = process.exited() {
            bail!("crowdsec exited ({status}):\n{}", process.log());
        }
        ensure!(
            start.elapsed() < QUICK,
            "the LAPI does not answer after {QUICK:?}:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
