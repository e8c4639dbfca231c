//! Decode + correlate throughput on one core, over the committed real recordings
//! (`cargo bench -p cniscope --bench pipeline`). Reported as events per second; the baseline in
//! the same run is decoding alone.

use std::path::PathBuf;

use cniscope::agent::output::Batch;
use cniscope::clock::Clock;
use cniscope::correlate::correlator;
use cniscope::events::decode::decode;
use cniscope::netlink::names::Names;
use cniscope::pipeline::{Pipeline, ReplayLookups};
use cniscope::record::{Fact, Frame, Reader};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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
    g.bench_function("decode+correlate+ndjson", |b| {
        b.iter(|| {
            let mut p = Pipeline::new(
                Clock::with_offset(0),
                false,
                4096,
                correlator::Config::default(),
                Box::new(ReplayLookups::default()),
            );
            p.names = Names::offline();
            let mut out = Batch::default();
            for (r, facts) in &records {
                p.apply_facts(facts);
                p.push(&decode(r), &mut out);
            }
            p.drain(&mut out);
            std::hint::black_box(out.buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
