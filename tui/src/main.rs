//! `sluice`: parses the command line, starts the bundled broker when no
//! cluster is named, and hands over to the console.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_broker::alloc::GuardedAlloc;
use sluice_tui::app::AppConfig;
use sluice_tui::bundled::{self, DEFAULT_DATA_DIR};
use sluice_tui::cli::Cli;
use sluice_tui::{commands, io, runtime};

// The bundled broker decodes untrusted requests in this process.
#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let (Some(cmd), Some(bootstrap)) = (&cli.command, &cli.bootstrap) {
        return match commands::run(&bootstrap.to_arg(), cli.output, cmd).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice {}: {e:#}", cmd.name());
                ExitCode::FAILURE
            }
        };
    }
    let (bootstrap, bundled) = match &cli.bootstrap {
        Some(b) => (b.to_arg(), None),
        None => {
            let dir = cli
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            match bundled::start(&dir).await {
                Ok(b) => (b.addr.to_string(), Some(b)),
                Err(e) => {
                    eprintln!(
                        "error: cannot start the bundled broker on {}: {e:#}",
                        dir.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let config = AppConfig {
        bootstrap: bootstrap.clone(),
        read_only: cli.read_only,
        refresh: cli.refresh,
    };
    let result = runtime::run(config, io::connecting_performer(bootstrap)).await;
    if let Some(b) = bundled {
        if let Err(e) = b.stop().await {
            eprintln!("error: {e:#}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: terminal: {e}");
            ExitCode::FAILURE
        }
    }
}
