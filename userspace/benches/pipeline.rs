//! Decode + correlate throughput on one core, over the committed real recordings
//! (`cargo bench -p cniscope --bench pipeline`). Reported as events per second; the baseline in
//! the same run is decoding alone.

use std::path::PathBuf;

use cniscope::agent::output::Batch;
use cniscope::clock::Clock;
use cniscope::correlate::correlator;
use cniscope::events::decode::decode;
use cniscope::pipeline::Pipeline;
use cniscope::record::{Fact, Frame, Reader};
use criterion::{Criterion, Throughput, criterion_group};

// The allocator the `cniscope` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records and the facts that follow each, from both fixtures.
fn load() -> Vec<(Vec<u8>, Vec<Fact>)> {
    let mut out = Vec::new();
    for name in ["chain-add-del.rec", "chain-fail.rec"] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        let f = std::fs::File::open(p).expect("fixture");
        let mut r = Reader::new(std::io::BufReader::new(f));
        while let Ok(Some(fr)) = r.next_frame() {
            match fr {
                Frame::Record(b) => out.push((b, Vec::new())),
                Frame::Facts(f) => {
                    if let Some(last) = out.last_mut() {
                        last.1.extend(f);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// One replay of `records` into `out` (cleared first), as `cniscope replay` runs it. With
/// `ndjson` false the invocations are built and dropped, not written: decode + correlate alone.
fn pass(records: &[(Vec<u8>, Vec<Fact>)], out: &mut Batch, ndjson: bool) -> usize {
    let mut p = Pipeline::replay(Clock::with_offset(0), false, correlator::Config::default());
    if !ndjson {
        p.collect = Some(Vec::new());
    }
    out.buf.clear();
    for (r, facts) in records {
        p.apply_facts(facts);
        p.push(&decode(r), out);
    }
    p.drain(out);
    match p.collect {
        Some(c) => c.len(),
        None => out.buf.len(),
    }
}

fn bench(c: &mut Criterion) {
    let records = load();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for (r, _) in &records {
                std::hint::black_box(decode(r));
            }
        })
    });
    // What the goal names: invocations built (and dropped), no lines written.
    let mut out = Batch::default();
    g.bench_function("decode+correlate", |b| {
        b.iter(|| std::hint::black_box(pass(&records, &mut out, false)))
    });
    // As `cniscope replay` runs: one output buffer, written out and cleared, never re-grown.
    g.bench_function("decode+correlate+ndjson", |b| {
        b.iter(|| std::hint::black_box(pass(&records, &mut out, true)))
    });
    g.finish();
}

criterion_group!(benches, bench);

/// `CNISCOPE_BENCH_PASSES=N`: run N passes and nothing else, for counting instructions under
/// `valgrind --tool=cachegrind` (this host's speed drifts; instruction counts do not). The
/// difference between two pass counts, divided, is the cost of one pass.
/// `CNISCOPE_BENCH_NDJSON=0` leaves the lines out (decode + correlate only).
fn main() {
    if let Some(n) = std::env::var("CNISCOPE_BENCH_PASSES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let ndjson = std::env::var("CNISCOPE_BENCH_NDJSON").as_deref() != Ok("0");
        let records = load();
        let mut out = Batch::default();
        let mut made = 0;
        for _ in 0..n {
            made = pass(&records, &mut out, ndjson);
        }
        let what = if ndjson { "bytes of NDJSON" } else { "outputs" };
        println!(
            "{n} passes of {} records, {made} {what} each",
            records.len()
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
