//! Scale: 10 000 invocations (copies of the session's real ones with new ids, pods and times),
//! terminal resizes from large to too small and back, and the retention bound.

use serde_json::Value;

use super::app::{Msg, State, update};
use super::prepare::prepare;
use super::tests::{SESSION, screen};
use super::theme::Theme;

/// `n` invocation lines made from the session's real ones.
pub(super) fn invocation_lines(n: usize, prefix: &str) -> Vec<String> {
    let base: Vec<Value> = SESSION
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "invocation")
        .collect();
    (0..n)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            v["id"] = Value::from(format!("{prefix}-{i}"));
            v["container_id"] = Value::from(format!("{prefix}{i:08}"));
            v["pod"]["name"] = Value::from(format!("{prefix}-{i}"));
            v["ts"] = Value::from(format!(
                "2026-11-23T{:02}:{:02}:{:02}.{:03}000000Z",
                (i / 3_600_000) % 24,
                (i / 60_000) % 60,
                (i / 1000) % 60,
                i % 1000
            ));
            v.to_string()
        })
        .collect()
}

#[test]
fn ten_thousand_invocations_and_resizes() {
    let mut s = State::new(10_000, Theme::plain(), "test");
    update(&mut s, Msg::Resize(80, 24));
    for l in invocation_lines(10_500, "pod") {
        update(&mut s, Msg::Data(prepare(&l)));
    }
    // Bounded: the oldest 500 were dropped.
    assert_eq!(s.store.len(), 10_000);
    assert_eq!(s.store.evicted, 500);
    let sc = screen(&s);
    assert!(sc.contains("shop/pod-10499"), "{sc}");
    assert!(sc.contains("10000 inv"), "{sc}");
    // To the oldest kept, then through sizes.
    update(
        &mut s,
        Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::End,
            crossterm::event::KeyModifiers::NONE,
        )),
    );
    for (w, h) in [(200, 60), (40, 12), (10, 3), (1, 1), (80, 24)] {
        update(&mut s, Msg::Resize(w, h));
        let sc = screen(&s);
        if w >= 40 {
            assert!(
                sc.contains("pod-500"),
                "{w}x{h}: oldest kept row not shown:\n{sc}"
            );
        } else {
            assert!(
                sc.contains("terminal too small") || w < 18,
                "{w}x{h}:\n{sc}"
            );
        }
    }
    insta::assert_snapshot!("ten_thousand_bottom_80x24", screen(&s));
    // Every view at a small size after the resizes.
    for k in ["t", "d", "n", "i"] {
        super::tests::press_pub(&mut s, k);
        update(&mut s, Msg::Resize(40, 12));
        let _ = screen(&s);
        update(&mut s, Msg::Resize(80, 24));
        let _ = screen(&s);
    }
}
