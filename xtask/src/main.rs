//! `cargo xtask <cmd>`: what cargo alone cannot do.
//!
//! - `setup`: Debian packages, rust-src, and bpf-linker built against this toolchain's LLVM.
//! - `run`:   set up, build, and run the agent on this machine.
//! - `test`:  set up, then fmt, clippy, unit tests and the root/kernel integration tests.
//! - `bench`: the benchmarks recorded in BENCHMARKS.md.
//!
//! Everything is idempotent and says what it does; nothing is hard-coded about versions.

mod bench;
mod image;
mod setup;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command, echoing it, and fails with its status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn build_bins(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "cniscope", "-p", "cniscope-cni"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join(if release { "release" } else { "debug" }))
}

fn test() -> Result<()> {
    setup::setup()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let bins = build_bins(false)?;
    // Unit tests: fast, kernel-free.
    run(cargo().args(["test", "--workspace", "--exclude", "cniscope-tests"]))?;
    // Integration tests: root, the real kernel, real netns and plugins; one at a time because
    // they share the kernel's tracepoints and the host's network.
    let mut it = cargo();
    it.args(["test", "-p", "cniscope-tests", "--", "--test-threads=1"])
        .env("CNISCOPE_BIN_DIR", &bins);
    run(&mut it)?;
    Ok(())
}

fn main_job(args: &[String]) -> Result<()> {
    setup::setup()?;
    let bins = build_bins(true)?;
    let mut c = Command::new(bins.join("cniscope"));
    if !args.is_empty() {
        c.args(args);
    } else if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // The TUI, which runs its own agent when none answers on the socket.
        c.arg("tui");
    } else {
        c.arg("agent");
    }
    run(&mut c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("setup") => setup::setup(),
        Some("test") => test(),
        Some("run") => main_job(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("image") => image::image(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|run [cniscope args]|test|bench [dd|addel|routes|routes-paired|udp|cycles|rss|all|replay-ir]|image [opts]>\n\
                 \n  setup  install apt packages, rust-src and bpf-linker (idempotent)\
                 \n  run    set up, build (release) and run `cniscope tui` with its agent (or the given args)\
                 \n  test   set up, then fmt, clippy, unit tests, integration tests (root)\
                 \n  bench  benchmarks for BENCHMARKS.md\
                 \n  image  OCI image with cniscope and cniscope-cni, loaded into podman (localhost/cniscope:dev)"
            );
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
