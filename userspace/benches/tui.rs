//! `cniscope tui` costs (`cargo bench -p cniscope --bench tui`): building and rendering a frame
//! with 10 000 retained invocations (goal ≤ 10 ms), and a key press through `update` to a
//! rendered frame, in each view. The invocations are copies of the real session in
//! `tests/fixtures/tui/session.ndjson` (bridge+host-local → tuning → portmap → cniscope-cni, a
//! failed ADD, DELs) with new ids and pods. Frames are drawn into ratatui's TestBackend: the
//! cost of writing the changed cells to a real terminal is not included.

use cniscope::ui::app::{Msg, State, update};
use cniscope::ui::prepare::prepare;
use cniscope::ui::theme::Theme;
use cniscope::ui::view::view;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::Value;

const SESSION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/tui/session.ndjson"
));

fn lines(n: usize) -> Vec<String> {
    let base: Vec<Value> = SESSION
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "invocation")
        .collect();
    (0..n)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            v["id"] = Value::from(format!("bench-{i}"));
            v["pod"]["name"] = Value::from(format!("pod-{i}"));
            v.to_string()
        })
        .collect()
}

fn key(s: &mut State, c: KeyCode) {
    update(s, Msg::Key(KeyEvent::new(c, KeyModifiers::NONE)));
}

fn loaded(w: u16, h: u16, all: &[String]) -> State {
    let mut s = State::new(10_000, Theme::colored(), "bench");
    update(&mut s, Msg::Resize(w, h));
    for l in all {
        update(&mut s, Msg::Data(prepare(l)));
    }
    for l in SESSION
        .lines()
        .filter(|l| l.contains("\"type\":\"netlink\""))
    {
        update(&mut s, Msg::Data(prepare(l)));
    }
    s
}

fn term(w: u16, h: u16) -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(w, h)).expect("test terminal")
}

fn bench(c: &mut Criterion) {
    let all = lines(10_000);
    let bytes: usize = all.iter().map(String::len).sum();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    let add = &all[0];
    g.bench_function("prepare one ADD line (source thread)", |b| {
        b.iter(|| prepare(add))
    });
    g.finish();
    eprintln!("10 000 invocation lines: {} MB of JSON", bytes / 1_000_000);

    let mut g = c.benchmark_group("frame, 10k invocations");
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        let mut s = loaded(w, h, &all);
        let mut t = term(w, h);
        g.bench_function(format!("invocations {w}x{h}"), |b| {
            b.iter(|| t.draw(|f| view(&s, f)).map(|_| ()))
        });
        key(&mut s, KeyCode::Enter);
        g.bench_function(format!("timeline {w}x{h}"), |b| {
            b.iter(|| t.draw(|f| view(&s, f)).map(|_| ()))
        });
        key(&mut s, KeyCode::Enter);
        g.bench_function(format!("detail {w}x{h}"), |b| {
            b.iter(|| t.draw(|f| view(&s, f)).map(|_| ()))
        });
        key(&mut s, KeyCode::Char('n'));
        g.bench_function(format!("netns {w}x{h}"), |b| {
            b.iter(|| t.draw(|f| view(&s, f)).map(|_| ()))
        });
        key(&mut s, KeyCode::Char('?'));
        g.bench_function(format!("help {w}x{h}"), |b| {
            b.iter(|| t.draw(|f| view(&s, f)).map(|_| ()))
        });
    }
    g.finish();

    // Key press → update → frame, what a person waits for after a key (the event loop draws
    // right after the key's message).
    let mut g = c.benchmark_group("key to frame, 10k invocations, 80x24");
    let mut s = loaded(80, 24, &all);
    let mut t = term(80, 24);
    let mut down = true;
    g.bench_function("j/k in the list", |b| {
        b.iter(|| {
            key(&mut s, if down { KeyCode::Down } else { KeyCode::Up });
            down = !down;
            t.draw(|f| view(&s, f)).map(|_| ())
        })
    });
    g.bench_function(
        "Enter: open a timeline (decode the invocation) and Esc",
        |b| {
            b.iter(|| {
                key(&mut s, KeyCode::Enter);
                t.draw(|f| view(&s, f)).map(|_| ())?;
                key(&mut s, KeyCode::Esc);
                t.draw(|f| view(&s, f)).map(|_| ())
            })
        },
    );
    key(&mut s, KeyCode::Enter);
    g.bench_function("Enter on a step: open its detail and Esc", |b| {
        b.iter(|| {
            key(&mut s, KeyCode::Enter);
            t.draw(|f| view(&s, f)).map(|_| ())?;
            key(&mut s, KeyCode::Esc);
            t.draw(|f| view(&s, f)).map(|_| ())
        })
    });
    key(&mut s, KeyCode::Esc);
    key(&mut s, KeyCode::Char('/'));
    let mut add = true;
    g.bench_function("a filter keystroke (re-filters all 10k)", |b| {
        b.iter(|| {
            key(
                &mut s,
                if add {
                    KeyCode::Char('9')
                } else {
                    KeyCode::Backspace
                },
            );
            add = !add;
            t.draw(|f| view(&s, f)).map(|_| ())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
