//! `sip-filter`: a kernel-level (XDP) SIP firewall.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sip_filter::logging::init();
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            // Wrong input (a bad argument, nothing loaded) exits 2, like a usage error.
            if error.downcast_ref::<cli::UserError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
