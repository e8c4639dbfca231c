//! `cniscope`: see what every CNI plugin in a chain really did.

use cniscope::{agent, exec, kernel, replay, ui};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cniscope",
    version,
    about = "eBPF-observed CNI chain introspector"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the eBPF programs and stream what CNI plugins do as NDJSON on stdout.
    Agent(agent::AgentArgs),
    /// Run the agent's pipeline over a recording (`cniscope agent --record FILE`).
    Replay(replay::ReplayArgs),
    /// Run a CNI configuration list against a network namespace the way libcni does.
    Exec(exec::ExecArgs),
    /// The live terminal UI: invocations, timelines, details and network namespaces.
    Tui(ui::TuiArgs),
    /// Change a running agent through its socket (`cniscope ctl netlink off|on`).
    Ctl(agent::server::CtlArgs),
    /// Report what this kernel offers and whether the agent can run here.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CNISCOPE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
            }),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Agent(a) => agent::run(a),
        Cmd::Replay(a) => replay::run(&a),
        Cmd::Tui(a) => ui::run(a),
        Cmd::Ctl(a) => agent::server::ctl(&a),
        Cmd::Exec(a) => match exec::run(&a) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Cmd::Doctor { json } => {
            let checks = kernel::doctor::run_checks();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"checks": checks, "can_run": kernel::doctor::can_run(&checks)})
                );
            } else {
                kernel::doctor::print(&checks);
            }
            return if kernel::doctor::can_run(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cniscope: {e:#}");
            ExitCode::FAILURE
        }
    }
}
