//! `sluice`: parses the command line and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sluice_tui::app::{Action, AppConfig, Command, IoError};
use sluice_tui::cli::Cli;
use sluice_tui::runtime::{self, Perform};

const NOT_WIRED: &str = "the Kafka client is not wired into this build yet";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(cmd) = &cli.command {
        // TODO(integration): implement over sluice_broker::client (see io.rs).
        eprintln!("sluice {}: not wired yet: {NOT_WIRED}", cmd.name());
        return ExitCode::from(2);
    }
    let Some(bootstrap) = &cli.bootstrap else {
        // TODO(integration): start the bundled broker on --data-dir and open the console.
        eprintln!("error: the bundled broker is not wired yet: pass --bootstrap HOST:PORT");
        return ExitCode::from(2);
    };
    let config = AppConfig {
        bootstrap: bootstrap.to_arg(),
        read_only: cli.read_only,
        refresh: cli.refresh,
    };
    // TODO(integration): replace with `io::perform` over a connected client.
    let perform: Perform = Arc::new(|cmd: Command| Box::pin(async move { not_wired(cmd) }));
    match runtime::run(config, perform).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: terminal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every load fails as unreachable, so the console shows its error screen.
fn not_wired(cmd: Command) -> Action {
    let e = IoError::unreachable(NOT_WIRED);
    match cmd {
        Command::LoadCluster => Action::ClusterLoaded(Err(e)),
        Command::LoadTopics => Action::TopicsLoaded(Err(e)),
        Command::LoadGroups => Action::GroupsLoaded(Err(e)),
        other => Action::Changed {
            what: format!("{other:?}"),
            result: Err(e),
        },
    }
}
