//! `sip-filter package-assets`: the man pages and shell completions, generated from this
//! very command line, so they never drift from `--help`. `cargo xtask deb` runs it
//! before `cargo deb`; a source install can run it too.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The shells whose completions are written, each to the directory of its name.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the man pages (`man/sip-filter.1`, one `sip-filter-VERB.1` per verb) and the
/// shell completions (`completions/bash/`, `zsh/`, `fish/`) under --out-dir.
#[derive(clap::Args)]
pub struct PackageAssetsArgs {
    /// Created if missing; files already there are replaced.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub fn package_assets(args: PackageAssetsArgs) -> anyhow::Result<()> {
    let man_dir = created(&args.out_dir.join("man"))?;
    clap_mangen::generate_to(Cli::command(), &man_dir)
        .with_context(|| format!("writing the man pages to {}", man_dir.display()))?;
    for shell in SHELLS {
        let dir = created(&args.out_dir.join("completions").join(shell.to_string()))?;
        clap_complete::generate_to(shell, &mut Cli::command(), "sip-filter", &dir)
            .with_context(|| format!("writing the {shell} completions to {}", dir.display()))?;
    }
    println!(
        "man pages and shell completions written to {}",
        args.out_dir.display()
    );
    Ok(())
}

fn created(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}
