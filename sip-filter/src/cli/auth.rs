use std::net::IpAddr;

use anyhow::Context;
use clap::Subcommand;
use sip_filter::{
    filter::{key_to_string, monotonic_now_ns, pinned_config, source_key},
    learnt::{LockScope, Locked, PinnedLearnt},
};

use super::{
    lists::{left, left_text, Where},
    UserError,
};

/// What the running filter learnt from the server's answers: the sources holding a
/// registration (trusted for auth bans, metered in the registered class) and the
/// accounts locked after failed passwords, for one source or for every unregistered
/// source; and unlocking an account (README: "Learning from the server's answers").
#[derive(clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    Registered(RegisteredArgs),
    Locked(LockedArgs),
    Unlock(UnlockArgs),
}

/// List the sources holding a registration: the server accepted a credentialed
/// REGISTER from them. An IPv6 source is its prefix (the filter's ipv6_prefix).
#[derive(clap::Args)]
struct RegisteredArgs {
    /// A JSON array of objects: iface, address, account (the last registered from it),
    /// seconds_left.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

/// List the locked accounts: for one source (its other accounts keep working), or for
/// every source neither registered nor allow-listed (guessed from many addresses).
/// Their credentialed requests are dropped (drop_auth_lockout) until the lock ends.
#[derive(clap::Args)]
struct LockedArgs {
    /// A JSON array of objects: iface, account, source (an address, or null: every
    /// unregistered source), failures, drops, seconds_left.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Where,
}

/// Unlock an account: its lockouts (for every source and across sources, or for one
/// source) are lifted and its failures start over; says how many were lifted.
#[derive(clap::Args)]
struct UnlockArgs {
    /// The account as `auth locked` shows it (the digest username, else the From/To
    /// user; compared on its first 32 bytes, as the filter keeps it).
    account: String,
    /// Only its lockout for this source (an IPv6 address: its prefix).
    #[arg(long, value_name = "ADDRESS")]
    source: Option<String>,
    #[command(flatten)]
    at: Where,
}

pub fn auth(args: AuthArgs) -> anyhow::Result<()> {
    match args.command {
        AuthCommand::Registered(args) => registered(args),
        AuthCommand::Locked(args) => locked(args),
        AuthCommand::Unlock(args) => unlock(args),
    }
}

/// The running filter's maps of what it learnt, its interfaces (as a label) and its
/// IPv6 prefix.
fn open(at: &Where) -> anyhow::Result<(PinnedLearnt, String, u32)> {
    let label = at.interfaces_label()?;
    let dir = at.pins.maps_dir();
    let context = || format!("opening the maps pinned in {}", dir.display());
    let learnt = PinnedLearnt::open(&dir).with_context(context)?;
    let ipv6_prefix = pinned_config(&dir).with_context(context)?.ipv6_prefix;
    Ok((learnt, label, ipv6_prefix))
}

fn registered(args: RegisteredArgs) -> anyhow::Result<()> {
    let (learnt, iface, ipv6_prefix) = open(&args.at)?;
    let now = monotonic_now_ns();
    let sources = learnt
        .maps()
        .registered(now)
        .context("reading the registered sources")?;
    let listing = Listing {
        json: sources
            .iter()
            .map(|registered| {
                serde_json::json!({
                    "iface": iface,
                    "address": key_to_string(registered.key, ipv6_prefix),
                    "account": registered.account(),
                    "seconds_left": left(registered.registration.expires_ns, now)
                        .map(|left| left.as_secs()),
                })
            })
            .collect(),
        titles: ["ADDRESS", "ACCOUNT", "LEFT"],
        rows: sources
            .iter()
            .map(|registered| {
                [
                    key_to_string(registered.key, ipv6_prefix),
                    registered.account(),
                    left_text(left(registered.registration.expires_ns, now)),
                ]
            })
            .collect(),
    };
    listing.print(args.json, &format!("no registered sources on {iface}"));
    Ok(())
}

fn locked(args: LockedArgs) -> anyhow::Result<()> {
    let (learnt, iface, ipv6_prefix) = open(&args.at)?;
    let now = monotonic_now_ns();
    let accounts = learnt
        .maps()
        .locked(now)
        .context("reading the locked accounts")?;
    let source = |locked: &Locked| match locked.scope {
        LockScope::Source(key) => Some(key_to_string(key, ipv6_prefix)),
        LockScope::Unregistered => None,
    };
    let listing = Listing {
        json: accounts
            .iter()
            .map(|locked| {
                serde_json::json!({
                    "iface": iface,
                    "account": locked.account(),
                    "source": source(locked),
                    "failures": locked.lockout.failures,
                    "drops": locked.lockout.drops,
                    "seconds_left": left(locked.lockout.locked_until_ns, now)
                        .map(|left| left.as_secs()),
                })
            })
            .collect(),
        titles: ["ACCOUNT", "SOURCE", "FAILURES", "DROPS", "LEFT"],
        rows: accounts
            .iter()
            .map(|locked| {
                [
                    locked.account(),
                    source(locked).unwrap_or_else(|| "every unregistered source".to_string()),
                    locked.lockout.failures.to_string(),
                    locked.lockout.drops.to_string(),
                    left_text(left(locked.lockout.locked_until_ns, now)),
                ]
            })
            .collect(),
    };
    listing.print(args.json, &format!("no locked accounts on {iface}"));
    Ok(())
}

/// What a listing verb prints: as JSON, or as a table.
struct Listing<const N: usize> {
    json: Vec<serde_json::Value>,
    titles: [&'static str; N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Listing<N> {
    /// The JSON array, `empty` when there is nothing, or the table.
    fn print(&self, json: bool, empty: &str) {
        if json {
            println!("{}", serde_json::Value::Array(self.json.clone()));
        } else if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", table(&self.titles, &self.rows));
        }
    }
}

fn unlock(args: UnlockArgs) -> anyhow::Result<()> {
    if args.account.is_empty() {
        return Err(
            UserError("give the account to unlock, as `auth locked` shows it".into()).into(),
        );
    }
    let source = args
        .source
        .as_deref()
        .map(|text| {
            text.trim().parse::<IpAddr>().map_err(|_| {
                UserError(format!(
                    "--source {text:?} is not an IPv4 or IPv6 address (like 198.51.100.7 or 2001:db8::7)"
                ))
            })
        })
        .transpose()?;
    let (learnt, iface, ipv6_prefix) = open(&args.at)?;
    let key = source.map(|address| source_key(address.to_canonical(), ipv6_prefix));
    let lifted = learnt
        .maps()
        .unlock(&args.account, key, monotonic_now_ns())
        .with_context(|| format!("unlocking {} on {iface}", args.account))?;
    let whom = key.map_or("any source".to_string(), |key| {
        key_to_string(key, ipv6_prefix)
    });
    if lifted == 0 {
        println!("{} was not locked for {whom} on {iface}", args.account);
    } else {
        println!(
            "unlocked {} for {whom} on {iface}: {lifted} lockout(s) lifted",
            args.account
        );
    }
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(titles: &[&str; N], rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].len())
                .max()
                .unwrap_or(0)
                .max(titles[column].len())
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(titles.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_to_the_widest_cell() {
        let rows = [
            ["alice".to_string(), "198.51.100.7".to_string()],
            ["bob-the-phone".to_string(), "x".to_string()],
        ];
        assert_eq!(
            table(&["ACCOUNT", "SOURCE"], &rows),
            "ACCOUNT        SOURCE\nalice          198.51.100.7\nbob-the-phone  x\n"
        );
    }
}
