//! The `dockhand` binary: parse the command line, set up logging, run the server, `check`, or
//! one client command (`dockhand::client`).

use std::process::ExitCode;

use clap::Parser;
use dockhand::cli::{check_report, Cli, Command};
use dockhand::config::Config;
use dockhand::startup::App;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(command) => dockhand::client::main(command).await,
        Command::Check { config } => match check_report(&config) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            dockhand::telemetry::init();
            match serve(&config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let (config, warnings) = Config::load(path)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let app = App::build(config).await?;
    app.run(shutdown_signal()).await
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
