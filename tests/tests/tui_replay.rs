//! `cniscope tui --replay FILE`: a committed recording (tests/fixtures/chain-add-del.rec, see
//! tests/fixtures/make.sh) replayed by `cniscope replay` as a child, shown in tmux at 80×24.

mod tui_support;

use std::time::Duration;

use tui_support::{Tmux, fixture};

#[test]
fn replay_shows_the_recorded_chain() {
    let rec = fixture("chain-add-del.rec");
    let t = Tmux::tui(&["--replay", rec.to_str().unwrap_or("")]);
    let s = t.wait_for("the replayed ADD and DEL", Duration::from_secs(30), |s| {
        s.contains("shop/web-7d4f9")
            && s.contains("ADD")
            && s.contains("DEL")
            && s.contains("ended")
    });
    assert!(s.contains("bridge›tuning›portm"), "{s}");
    // The ADD is the older row: the bottom one. Its timeline:
    t.keys(&["G", "Enter"]);
    // All on one settled screen (wait_for panics with the screen if they never appear).
    t.wait_for(
        "the ADD's timeline with its steps",
        Duration::from_secs(10),
        |s| {
            [
                "ADD shop/web-7d4f9 fixture-net eth0",
                "bridge",
                "host-local",
                "tuning",
                "✓ link add cnsfix0 type bridge",
            ]
            .iter()
            .all(|w| s.contains(w))
        },
    );
    // Its netns: the change made by hand after the ADD, marked as outside any plugin run.
    t.keys(&["n"]);
    let s = t.wait_for("the netns view", Duration::from_secs(10), |s| {
        s.contains("changes runs") && s.contains("route add 198.51.100.0/24")
    });
    assert!(s.contains("! ip["), "{s}");
    assert!(s.contains("route add 198.51.100.0/24"), "{s}");
    t.keys(&["q"]);
    t.wait_for("a clean exit", Duration::from_secs(10), |s| {
        s.contains("EXITED 0")
    });
}
