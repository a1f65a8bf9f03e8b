//! `cargo xtask deb`: the Debian package, from this tree. Release build, man pages and
//! shell completions from the binary's own command line (`sip-filter package-assets`),
//! `cargo deb --no-build` (its layout: `[package.metadata.deb]` in sip-filter/Cargo.toml),
//! then lintian, which must report no error.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::{
    setup::{install_cargo_deb, install_packages, run, setup, LINTIAN},
    vm::{target_dir, workspace_root},
};

pub fn deb() -> anyhow::Result<()> {
    let package = build_deb()?;
    println!("deb: {}", package.display());
    Ok(())
}

/// Builds the package and checks it with lintian; says where it is.
pub fn build_deb() -> anyhow::Result<PathBuf> {
    setup(false)?;
    install_packages(&[LINTIAN])?;
    install_cargo_deb()?;
    let workspace = workspace_root()?;
    let release_dir = target_dir(&workspace).join("release");
    println!("deb: cargo build --release -p sip-filter");
    run(Command::new("cargo").current_dir(&workspace).args([
        "build",
        "--release",
        "-p",
        "sip-filter",
    ]))?;
    // Where sip-filter/Cargo.toml's assets expect them.
    let assets = release_dir.join("package-assets");
    // Afresh: no page of a verb that is gone.
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("removing {}", assets.display()))?;
    }
    run(Command::new(release_dir.join("sip-filter"))
        .arg("package-assets")
        .arg("--out-dir")
        .arg(&assets))?;
    compress_man_pages(&assets.join("man"))?;
    println!("deb: cargo deb --no-build");
    let built = Command::new("cargo")
        .current_dir(&workspace)
        .args(["deb", "-p", "sip-filter", "--no-build"])
        .output()
        .context("running cargo deb")?;
    if !built.status.success() {
        bail!(
            "cargo deb failed ({}):\n{}",
            built.status,
            String::from_utf8_lossy(&built.stderr)
        );
    }
    // cargo deb prints the package's path, last.
    let stdout = String::from_utf8_lossy(&built.stdout);
    let package = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.ends_with(".deb"))
        .map(|line| workspace.join(line))
        .with_context(|| format!("cargo deb named no package in its output: {stdout}"))?;
    lintian(&package)?;
    Ok(package)
}

/// lintian's verdict: warnings are printed, an error fails the build.
fn lintian(package: &Path) -> anyhow::Result<()> {
    println!("deb: lintian {}", package.display());
    run(Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(package))
    .context("lintian found errors in the package (listed above)")
}

/// Debian policy (12.1): manual pages installed compressed, `gzip -9n`.
fn compress_man_pages(dir: &Path) -> anyhow::Result<()> {
    let pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
        .collect();
    if pages.is_empty() {
        bail!("no man pages in {}", dir.display());
    }
    run(Command::new("gzip").args(["-9nf"]).args(&pages))
}
