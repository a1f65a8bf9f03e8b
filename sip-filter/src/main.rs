//! `sip-filter`: a kernel-level (XDP) SIP firewall.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sip_filter::logging::init();
    let args = cli::Cli::parse();
    if !args.is_server() {
        // A one-shot command whose reader goes away (`sip-filter block list | head`) ends
        // quietly, as other Unix tools do, rather than panicking in `println!` (Rust
        // ignores SIGPIPE by default).
        // SAFETY: resets one signal's disposition to the default, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let command = args.name();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (status, line) = cli::report(&error, command);
            // The journal's priority too: this line is why a service failed.
            let priority = sip_filter::logging::journal_prefix(log::Level::Error);
            eprintln!("{priority}{line}");
            ExitCode::from(status)
        }
    }
}
