//! The `dockhand` binary: parse the command line, set up logging, run the server, `check`, or
//! one client command (`dockhand::client`).

#![warn(clippy::too_many_lines)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dockhand::cli::{check_report, Cli, Command};
use dockhand::config::Config;
use dockhand::handover::Inherited;
use dockhand::startup::App;

/// `dockhand node …` (what a Swarm job runs on a node), on the blocking pool.
async fn node(command: dockhand::cli::NodeCommand) -> anyhow::Result<String> {
    use dockhand::cli::NodeCommand;
    use dockhand::tree::node;
    tokio::task::spawn_blocking(move || match command {
        NodeCommand::Build {
            dir,
            repo,
            git_ref,
            commit,
            token_file,
        } => node::build(&dir, &repo, &git_ref, &commit, token_file),
        NodeCommand::Switch { dir, commit, touch } => node::switch(&dir, &commit, touch.as_deref()),
    })
    .await?
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(command) => dockhand::client::main(command).await,
        Command::Check { config } => match check_report(&config) {
            Ok(report) => {
                print!("{report}");
                match dockhand::cli::check_swarm_services(&config).await {
                    Ok(services) => {
                        print!("{services}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Node(command) => match node(command).await {
            Ok(said) => {
                println!("{said}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Reload { config } => match reload(&config).await {
            Ok((old, new)) => {
                println!(
                    "dockhand pid {old} handed its sockets to pid {new}, which now serves {}",
                    config.display()
                );
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
    dockhand::handover::remember_exe();
    raise_open_files_limit();
    let inherited = Inherited::from_env()?;
    let (config, warnings) = Config::load(path)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let app = App::build_with(config, inherited).await?;
    let sockets = app.handover_sockets()?;
    app.run(until_stopped_or_handed_over(path.to_path_buf(), sockets))
        .await
}

/// `dockhand reload`: validate the config here (its errors printed, nothing sent), then signal
/// the running server.
async fn reload(path: &std::path::Path) -> anyhow::Result<(i32, i32)> {
    let (config, _) = Config::load(path)?;
    dockhand::handover::reload_running(&config).await
}

/// SIGINT or SIGTERM; or SIGHUP with a valid config, once the next dockhand has taken the
/// sockets and is ready (an invalid config or a next process that fails keeps this one serving).
async fn until_stopped_or_handed_over(path: PathBuf, sockets: Vec<(String, OwnedFd)>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(t), Ok(h), Ok(u)) => (t, h, u),
        _ => {
            tracing::error!("cannot listen for SIGTERM/SIGHUP/SIGUSR1; only SIGINT stops dockhand");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {}
        }
        tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
        if let Err(e) = Config::load(&path) {
            tracing::error!("reload refused, still serving the previous config: {e:#}");
            continue;
        }
        let ready = async {
            usr1.recv().await;
        };
        match dockhand::handover::start_next(&sockets, ready).await {
            Ok(pid) => {
                tracing::info!(
                    pid,
                    "the new dockhand holds the sockets; this one drains and exits"
                );
                return;
            }
            Err(e) => tracing::error!("reload failed, still serving the previous config: {e:#}"),
        }
    }
}

/// Raise the soft limit on open files to the hard one: every client connection, proxied
/// upstream connection and fetch costs a descriptor, and the usual soft default (1,024) runs
/// out long before the machine does.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(to = ?limit.maximum, "raised the open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}
