//! `cniscope tui`: the live terminal UI (ratatui + crossterm).
//!
//! One loop: keys, terminal resizes, prepared lines from the source and ticks arrive on one
//! channel; [`app::update`] changes the [`app::State`] (pure, unit-tested); [`view::view`]
//! draws it (no I/O while drawing). Sources run on their own threads ([`source`]).
//!
//! Where lines come from, in order: `--ndjson FILE` (`-`: stdin); `--replay FILE` (a recording,
//! replayed by `cniscope replay FILE` as a child); `--spawn-agent`; `--socket PATH` (wait for
//! that agent, reconnecting); else the default socket when an agent answers there, and when none
//! does, the TUI runs `cniscope agent --no-socket` itself as a child (root needed) and stops it
//! with SIGINT on exit.

pub mod app;
pub mod bars;
pub mod detail;
pub mod filter;
pub mod help;
pub mod keys;
pub mod list;
pub mod model;
pub mod navigate;
pub mod netns;
pub mod prepare;
pub mod source;
pub mod store;
pub mod terminal;
pub mod text;
pub mod theme;
pub mod timeline;
pub mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_big;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event};

use app::{Msg, State};
use source::Source;

/// The agent's default socket.
pub const DEFAULT_SOCKET: &str = "/run/cniscope/agent.sock";

#[derive(Debug, Clone, clap::Args)]
pub struct TuiArgs {
    /// The agent's socket. Given explicitly, the TUI waits for that agent (reconnecting);
    /// by default it uses /run/cniscope/agent.sock when an agent answers there, and otherwise
    /// runs the agent itself.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Read NDJSON lines (what `cniscope agent > FILE` writes) from FILE, followed as it grows;
    /// `-` reads stdin.
    #[arg(long, conflicts_with_all = ["replay", "spawn_agent", "socket"])]
    pub ndjson: Option<PathBuf>,
    /// Show a recording made with `cniscope agent --record FILE`.
    #[arg(long, conflicts_with_all = ["spawn_agent", "socket"])]
    pub replay: Option<PathBuf>,
    /// Run `cniscope agent` as a child even when an agent's socket answers.
    #[arg(long, conflicts_with = "socket")]
    pub spawn_agent: bool,
    /// An extra argument for the agent the TUI runs (repeatable), e.g. `--agent-arg=--no-hold`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Invocations kept in memory (the oldest are dropped).
    #[arg(long, default_value_t = 10_000)]
    pub retain: usize,
    /// No colours (also with NO_COLOR set, or TERM=dumb).
    #[arg(long)]
    pub no_color: bool,
}

fn agent_source(args: &TuiArgs) -> Result<Source> {
    let exe = std::env::current_exe().context("finding the cniscope binary")?;
    let mut a: Vec<String> = ["agent", "--no-socket", "--stats-interval", "2"]
        .map(String::from)
        .to_vec();
    a.extend(args.agent_args.iter().cloned());
    Ok(Source::Command {
        label: "own agent".into(),
        program: exe,
        args: a,
    })
}

/// Picks the source (see the module docs).
pub fn choose(args: &TuiArgs) -> Result<Source> {
    if let Some(p) = &args.ndjson {
        return Ok(Source::File(p.clone()));
    }
    if let Some(r) = &args.replay {
        let exe = std::env::current_exe().context("finding the cniscope binary")?;
        return Ok(Source::Command {
            label: format!(
                "replay {}",
                r.file_name().map_or_else(
                    || r.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            program: exe,
            args: vec!["replay".into(), r.display().to_string()],
        });
    }
    if args.spawn_agent {
        return agent_source(args);
    }
    if let Some(p) = &args.socket {
        return Ok(Source::Socket(p.clone()));
    }
    let p = PathBuf::from(DEFAULT_SOCKET);
    if std::os::unix::net::UnixStream::connect(&p).is_ok() {
        Ok(Source::Socket(p))
    } else {
        agent_source(args)
    }
}

pub fn run(args: TuiArgs) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "cniscope tui needs a terminal (with kubectl: `kubectl exec -it`); \
             for lines on stdout use `cniscope agent`"
        );
    }
    let theme = theme::Theme::from_env(args.no_color);
    let src = choose(&args)?;
    let mut state = State::new(args.retain, theme, src.label());
    // The terminal first: if it cannot be set up, no source (or agent child) has started.
    let mut guard = terminal::TerminalGuard::new().context("setting up the terminal")?;
    let (tx, rx) = sync_channel::<Msg>(4096);
    let handle = source::start(src, tx.clone()).context("starting the source thread")?;
    let res = keys_then_loop(tx, &mut guard, &mut state, &rx);
    drop(guard);
    // Senders fail from here on, so a source blocked on a full channel lets go.
    drop(rx);
    handle.stop();
    res
}

/// Starts the input thread and runs the loop until `q`.
fn keys_then_loop(
    tx: std::sync::mpsc::SyncSender<Msg>,
    guard: &mut terminal::TerminalGuard,
    state: &mut State,
    rx: &Receiver<Msg>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("cniscope-tui-keys".into())
        .spawn(move || {
            loop {
                let msg = match event::read() {
                    Ok(Event::Key(k)) => Msg::Key(k),
                    Ok(Event::Resize(w, h)) => Msg::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })
        .context("starting the input thread")?;
    let size = guard.terminal.size().context("terminal size")?;
    app::update(state, Msg::Resize(size.width, size.height));
    event_loop(guard, state, rx)
}

/// At most this long is spent applying queued messages before a frame is drawn.
const BATCH: Duration = Duration::from_millis(30);
const TICK_MS: u64 = 250;

fn event_loop(
    guard: &mut terminal::TerminalGuard,
    state: &mut State,
    rx: &Receiver<Msg>,
) -> Result<()> {
    let start = Instant::now();
    let mut last_tick = 0u64;
    let mut dirty = true;
    loop {
        if dirty {
            guard
                .terminal
                .draw(|f| view::view(state, f))
                .context("drawing")?;
            dirty = false;
        }
        match rx.recv_timeout(Duration::from_millis(TICK_MS)) {
            Ok(m) => {
                app::update(state, m);
                dirty = true;
                let until = Instant::now() + BATCH;
                while Instant::now() < until {
                    match rx.try_recv() {
                        Ok(m) => app::update(state, m),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last_tick) >= TICK_MS {
            app::update(state, Msg::Tick(now));
            last_tick = now;
            dirty = true;
        }
        if state.quit {
            return Ok(());
        }
    }
}
