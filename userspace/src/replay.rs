//! `cniscope replay FILE`: the agent's pipeline over a recording, printing the same lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::agent::output::Batch;
use crate::clock::Clock;
use crate::correlate::correlator;
use crate::events::decode::decode;
use crate::pipeline::Pipeline;
use crate::record::{Fact, Frame, Reader};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A recording made with `cniscope agent --record FILE`.
    pub file: PathBuf,
    /// Also print every raw event, as `cniscope agent --events` does.
    #[arg(long)]
    pub events: bool,
    /// The quiet period that completes an invocation (ms), as the agent's `--quiet-ms`.
    #[arg(long, default_value_t = 1000)]
    pub quiet_ms: u64,
}

/// Replays `args.file` into `w`; returns the number of records.
pub fn replay_to(args: &ReplayArgs, w: &mut dyn Write) -> Result<u64> {
    let f = std::fs::File::open(&args.file)
        .with_context(|| format!("opening recording {}", args.file.display()))?;
    let mut rd = Reader::new(std::io::BufReader::new(f));
    let clock = match rd.next_frame()? {
        Some(Frame::Header(h)) => Clock::with_offset(h.clock_offset_ns.parse().unwrap_or(0)),
        _ => anyhow::bail!("{} is not a cniscope recording", args.file.display()),
    };
    let quiet_ns = args.quiet_ms * 1_000_000;
    let mut p = Pipeline::replay(
        clock,
        args.events,
        correlator::Config {
            quiet_ns,
            ..Default::default()
        },
    );
    let mut batch = Batch::default();
    let mut pending: Option<Vec<u8>> = None;
    let mut facts: Vec<Fact> = Vec::new();
    let mut records = 0u64;
    let mut last_ts = 0u64;
    let mut process = |p: &mut Pipeline, rec: Vec<u8>, facts: &[Fact], batch: &mut Batch| {
        p.apply_facts(facts);
        let ev = decode(&rec);
        last_ts = last_ts.max(ev.ts_ns());
        p.push(&ev, batch);
    };
    loop {
        let frame = rd.next_frame()?;
        match frame {
            Some(Frame::Record(b)) => {
                if let Some(prev) = pending.take() {
                    process(&mut p, prev, &facts, &mut batch);
                    facts.clear();
                }
                pending = Some(b);
                records += 1;
            }
            Some(Frame::Facts(f)) => facts.extend(f),
            Some(Frame::Tick(now)) => {
                match pending.take() {
                    Some(prev) => process(&mut p, prev, &facts, &mut batch),
                    None => p.apply_facts(&facts),
                }
                facts.clear();
                p.tick(now, &mut batch);
            }
            Some(Frame::Header(_)) | Some(Frame::Other(_)) => {}
            None => break,
        }
        if batch.buf.len() > 1 << 20 {
            w.write_all(batch.buf.as_bytes())?;
            // Keep the buffer's capacity: a long replay writes many megabytes.
            batch.buf.clear();
        }
    }
    if let Some(prev) = pending.take() {
        process(&mut p, prev, &facts, &mut batch);
    }
    // Time runs out at the end of the recording: complete what went quiet, then the rest.
    p.tick(last_ts.saturating_add(quiet_ns + 1), &mut batch);
    p.drain(&mut batch);
    w.write_all(batch.buf.as_bytes())?;
    w.flush()?;
    Ok(records)
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let n = replay_to(args, &mut lock)?;
    tracing::info!(records = n, "replayed {}", args.file.display());
    Ok(())
}
