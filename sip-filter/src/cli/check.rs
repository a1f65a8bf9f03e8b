use sip_filter::check::warnings;

use super::{options::FilterOptions, UserError};

/// Check a configuration without loading it, as `run` would read it (like `nft -c` or
/// `nginx -t`): needs neither root nor a kernel.
///
/// A configuration `run` would refuse is
/// an error (exit status 2, the file, line and key named); one it would accept exits 0,
/// after a warning on stderr for each thing that is legal but suspicious (a port or
/// network listed twice, a network both trusted and denied, every address denied, host
/// bits set, domains equal but for case, a ban rule that cannot fire...). With
/// `[countries]`, its database is read too. The systemd
/// unit runs it before every start and reload.
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    filter: FilterOptions,
    /// Treat warnings as errors: exit status 2 if there is any.
    #[arg(long)]
    strict: bool,
}

pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let settings = args.filter.enforceable_settings()?;
    // `run` refuses a country database it cannot read: so does the check.
    let countries = match &settings.countries {
        Some(countries) => {
            let networks =
                sip_filter::countries::read(countries).map_err(|e| UserError(e.to_string()))?;
            format!(
                "; {} IPv4 and {} IPv6 network(s) of {} countr(ies) denied by [countries]",
                networks.v4.len(),
                networks.v6.len(),
                networks.per_country().len()
            )
        }
        None => String::new(),
    };
    // Issue 18: what `[destinations]` holds.
    let destinations = match &settings.destinations {
        Some(table) => format!(
            "; {} destination rule(s), call budgets {}",
            table.rules.len(),
            if table.budgets.any() { "on" } else { "off" }
        ),
        None => String::new(),
    };
    let (shown, text) = match &args.filter.config {
        Some(path) => (
            path.display().to_string(),
            // Read once more, only to place the warnings: the settings are checked.
            std::fs::read_to_string(path).ok(),
        ),
        None => ("the built-in defaults and flags".to_string(), None),
    };
    let found = warnings(&settings, text.as_deref());
    for warning in &found {
        match &args.filter.config {
            Some(_) => eprintln!("warning: {shown} {}", placed(&warning.to_string())),
            None => eprintln!("warning: {warning}"),
        }
    }
    if args.strict && !found.is_empty() {
        return Err(UserError(format!(
            "{shown}: {} warning(s), refused under --strict",
            found.len()
        ))
        .into());
    }
    let domains = if settings.domains.is_empty() {
        "the domain check off (no filter.domains)".to_string()
    } else {
        format!("{} domain(s) allowed", settings.domains.len())
    };
    println!(
        "{shown}: valid, {}; SIP on UDP {}, TCP {}, TLS {}; {domains}; {} trusted and {} denied network(s){countries}{destinations}; {} warning(s)",
        if settings.dry_run {
            "dry-run (counts, drops nothing)"
        } else {
            "enforcing"
        },
        ports(&settings.ports),
        ports(&settings.tcp_ports),
        ports(&settings.tls_ports),
        settings.allow.len(),
        settings.deny.len(),
        found.len()
    );
    Ok(())
}

/// `line 12: key: ...` after the file's name; a warning without a line reads `: key: ...`.
fn placed(warning: &str) -> String {
    if warning.starts_with("line ") {
        warning.to_string()
    } else {
        format!(": {warning}")
    }
}

fn ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(",")
}
