//! `knic-vhost`: argument parsing and a call; see `vhost_backend::cli`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vhost_backend::cli::{Args, capabilities_json, run};

fn main() -> ExitCode {
    // vhost-user "Backend program conventions": print and exit, ignoring everything else.
    if std::env::args_os().any(|a| a == "--print-capabilities") {
        return match writeln!(std::io::stdout(), "{}", capabilities_json()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error and each cause once, outermost first.
            let mut msg = format!("knic-vhost: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            ExitCode::FAILURE
        }
    }
}
