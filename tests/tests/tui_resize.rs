//! `cniscope tui --ndjson FILE` with 10 000 invocations (copies of the real session in
//! tests/fixtures/tui/session.ndjson with new ids and pods), through terminal resizes in tmux:
//! large, narrow, too small and back.

mod tui_support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use tui_support::{TempDir, Tmux, fixture};

fn ten_thousand(path: &std::path::Path) {
    let text = std::fs::read_to_string(fixture("tui/session.ndjson")).expect("session fixture");
    let base: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "invocation")
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("creating the file"));
    for i in 0..10_000usize {
        let mut v = base[i % base.len()].clone();
        v["id"] = Value::from(format!("big-{i}"));
        v["pod"]["name"] = Value::from(format!("pod-{i}"));
        writeln!(f, "{v}").expect("writing");
    }
    f.flush().expect("flushing");
}

fn width(screen: &str) -> usize {
    screen.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn ten_thousand_invocations_through_resizes() {
    let dir = TempDir::new("cniscope-tui-big-");
    let file = dir.0.join("big.ndjson");
    ten_thousand(&file);
    let t = Tmux::tui(&["--ndjson", file.to_str().unwrap_or("")]);
    let start = Instant::now();
    let s = t.wait_for("10 000 invocations", Duration::from_secs(300), |s| {
        s.contains("10000 inv")
    });
    eprintln!("10 000 invocations loaded in {:?}", start.elapsed());
    assert!(s.contains("shop/pod-9999"), "{s}");
    // To the oldest, then through sizes; the selection stays in view.
    t.keys(&["End"]);
    t.wait_for("the oldest row", Duration::from_secs(10), |s| {
        s.contains("shop/pod-0 ")
    });
    t.resize(160, 50);
    let s = t.wait_for("160 columns", Duration::from_secs(10), |s| {
        width(s) > 120 && s.contains("shop/pod-0 ")
    });
    assert!(
        s.contains("shop/pod-40"),
        "a taller screen shows more rows:\n{s}"
    );
    t.resize(40, 12);
    let s = t.wait_for("40 columns", Duration::from_secs(10), |s| {
        width(s) <= 40 && s.contains("shop/pod-0 ")
    });
    assert!(!s.contains("EXITED"), "{s}");
    t.resize(12, 4);
    t.wait_for("the too-small notice", Duration::from_secs(10), |s| {
        s.contains("terminal too")
    });
    t.resize(80, 24);
    // Every view at the end, then quit.
    for k in ["Enter", "Enter", "n", "?", "Escape", "i"] {
        t.keys(&[k]);
    }
    let s = t.wait_for("the list again", Duration::from_secs(10), |s| {
        s.contains("shop/pod-0 ") && s.contains("10000 inv")
    });
    assert!(!s.contains("EXITED"), "{s}");
    t.keys(&["q"]);
    t.wait_for("a clean exit", Duration::from_secs(10), |s| {
        s.contains("EXITED 0")
    });
}
