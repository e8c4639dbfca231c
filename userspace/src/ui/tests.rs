//! Rendering tests: the committed real session (`tests/fixtures/tui/session.ndjson`, made by
//! `tests/fixtures/tui/make.sh`) through `update` and `view` into ratatui's TestBackend, at the
//! 80×24 a `kubectl exec -it` terminal often has. Snapshots (insta) are the screens as text.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::app::{Conn, Msg, SourceMsg, State, View, update};
use super::prepare::prepare;
use super::theme::Theme;

pub(super) const SESSION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/tui/session.ndjson"
));

fn state(theme: Theme, w: u16, h: u16) -> State {
    let mut s = State::new(10_000, theme, "file session.ndjson");
    update(&mut s, Msg::Resize(w, h));
    update(
        &mut s,
        Msg::Source(SourceMsg::Connected {
            target: "file session.ndjson".into(),
            snapshot: false,
        }),
    );
    s
}

fn feed(s: &mut State, text: &str) {
    for l in text.lines() {
        update(s, Msg::Data(prepare(l)));
    }
}

fn session(w: u16, h: u16) -> State {
    let mut s = state(Theme::plain(), w, h);
    feed(&mut s, SESSION);
    s
}

pub(super) fn press_pub(s: &mut State, keys: &str) {
    press(s, keys)
}

fn press(s: &mut State, keys: &str) {
    for c in keys.chars() {
        let code = match c {
            '\n' => KeyCode::Enter,
            '\u{1b}' => KeyCode::Esc,
            '\t' => KeyCode::Tab,
            c => KeyCode::Char(c),
        };
        update(s, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }
}

fn terminal(s: &State) -> Terminal<TestBackend> {
    let mut t = match Terminal::new(TestBackend::new(s.size.width, s.size.height)) {
        Ok(t) => t,
        Err(e) => panic!("test terminal: {e}"),
    };
    if let Err(e) = t.draw(|f| super::view::view(s, f)) {
        panic!("draw: {e}");
    }
    t
}

/// The screen as text, trailing spaces cut.
pub(super) fn screen(s: &State) -> String {
    let t = terminal(s);
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn empty_data_renders() {
    let s = state(Theme::plain(), 80, 24);
    let sc = screen(&s);
    assert!(
        sc.contains("waiting for invocations from file session.ndjson"),
        "{sc}"
    );
    insta::assert_snapshot!("empty_80x24", sc);
}

#[test]
fn invocations_newest_first_with_failures() {
    let s = session(80, 24);
    assert_eq!(s.store.len(), 4);
    let sc = screen(&s);
    let rows: Vec<&str> = sc.lines().skip(2).take(4).collect();
    assert!(
        rows[0].contains("DEL") && rows[0].contains("shop/web-7d4f9"),
        "{sc}"
    );
    assert!(
        rows[2].contains("ADD") && rows[2].contains("FAIL tuning"),
        "{sc}"
    );
    assert!(
        rows[3].contains("ADD") && rows[3].contains("bridge›tuning"),
        "{sc}"
    );
    insta::assert_snapshot!("invocations_80x24", sc);
}

#[test]
fn failures_are_coloured_and_no_color_has_none() {
    let mut s = state(Theme::colored(), 80, 24);
    feed(&mut s, SESSION);
    let t = terminal(&s);
    let buf = t.backend().buffer();
    // Row 4 (header, column titles, two DELs): the failed ADD, red.
    let fail_row = 4;
    assert!(
        (0..80).any(|x| buf[(x, fail_row)].fg == Color::Red),
        "failed row not red"
    );
    let s = session(80, 24);
    let t = terminal(&s);
    let buf = t.backend().buffer();
    for y in 0..24 {
        for x in 0..80 {
            let c = &buf[(x, y)];
            assert!(
                c.fg == Color::Reset && c.bg == Color::Reset,
                "colour at {x},{y} without colours"
            );
        }
    }
}

#[test]
fn timeline_of_the_add() {
    let mut s = session(80, 24);
    press(&mut s, "G\n");
    assert_eq!(s.view, View::Timeline);
    let sc = screen(&s);
    for want in [
        "ADD shop/web-7d4f9",
        "bridge",
        "✓ link add tuifix0 type bridge",
        "host-local",
    ] {
        assert!(sc.contains(want), "missing {want:?}:\n{sc}");
    }
    insta::assert_snapshot!("timeline_add_80x24", sc);
    // The end of the timeline: portmap, cniscope-cni with its `ip` commands and its tag.
    press(&mut s, "G");
    let sc = screen(&s);
    for want in [
        "$ ip route add 192.0.3.0/24 dev eth0",
        "cniscope-cni commands (tag)",
        "$ ip route",
    ] {
        assert!(sc.contains(want), "missing {want:?}:\n{sc}");
    }
    insta::assert_snapshot!("timeline_add_end_80x24", sc);
}

#[test]
fn timeline_of_the_failed_add() {
    let mut s = session(100, 30);
    press(&mut s, "jj\n");
    let sc = screen(&s);
    assert!(sc.contains("tuning (step 1) failed"), "{sc}");
    assert!(sc.contains("✗ link add tuifix0 type bridge"), "{sc}");
    assert!(sc.contains("error 17 File exists"), "{sc}");
    assert!(sc.contains("exit 1"), "{sc}");
    insta::assert_snapshot!("timeline_failed_100x30", sc);
}

#[test]
fn detail_of_a_step_and_of_an_op() {
    let mut s = session(80, 24);
    press(&mut s, "G\n\n");
    assert_eq!(s.view, View::Detail);
    let sc = screen(&s);
    assert!(sc.contains("bridge ADD (step 0)"), "{sc}");
    assert!(sc.contains("stdin (config)"), "{sc}");
    assert!(sc.contains("\"type\": \"bridge\""), "{sc}");
    insta::assert_snapshot!("detail_bridge_80x24", sc);
    // Tab walks the sections: stdin, stdout, stderr, diff.
    press(&mut s, "\t\t\t\t");
    let sc = screen(&s);
    assert!(sc.contains("diff (prevResult → result)"), "{sc}");
    assert!(
        sc.contains("+ ip        10.254.91.2/24 gw 10.254.91.1"),
        "{sc}"
    );
    insta::assert_snapshot!("detail_bridge_diff_80x24", sc);
    // Back to the timeline, down to the first netlink op, open it: the raw op.
    press(&mut s, "\u{1b}j\n");
    let sc = screen(&s);
    assert!(sc.contains("netlink: link add tuifix0 type bridge"), "{sc}");
    assert!(sc.contains("\"object\": \"link\""), "{sc}");
    insta::assert_snapshot!("detail_op_80x24", sc);
}

#[test]
fn netns_view_has_history_after_the_run() {
    let mut s = session(80, 24);
    // From the selected ADD, `n` opens its namespace.
    press(&mut s, "Gn");
    assert_eq!(s.view, View::Netns);
    let sc = screen(&s);
    assert!(sc.contains("tuifix-web"), "{sc}");
    assert!(sc.contains("shop/web-7d4f9"), "{sc}");
    // The hand-made changes after the ADD (marked !) and the plugins' own.
    assert!(sc.contains("! ip["), "{sc}");
    assert!(sc.contains("link set dev eth0 mtu 1400"), "{sc}");
    assert!(sc.contains("route add 198.51.100.0/24"), "{sc}");
    assert!(sc.contains("cniscope-cni ADD · ip"), "{sc}");
    assert!(
        sc.contains("tag shop-net eth0 [CNI_ARGS CNISCOPE_COMMANDS]"),
        "{sc}"
    );
    insta::assert_snapshot!("netns_80x24", sc);
    // Enter moves to the history, Enter again opens the newest change.
    press(&mut s, "\n\n");
    assert_eq!(s.view, View::Detail);
    assert!(screen(&s).contains("netlink: "));
}

#[test]
fn help_overlay_lists_the_key_table() {
    let mut s = session(80, 24);
    press(&mut s, "?");
    let sc = screen(&s);
    for b in super::keys::BINDINGS {
        assert!(sc.contains(b.help), "help lacks {:?}:\n{sc}", b.help);
    }
    insta::assert_snapshot!("help_80x24", sc);
    press(&mut s, "z");
    assert!(!screen(&s).contains("any key closes"));
}

#[test]
fn filter_by_text_and_failures() {
    let mut s = session(80, 24);
    press(&mut s, "/pod:api");
    assert_eq!(s.store.visible_len(), 2);
    press(&mut s, "\n");
    let sc = screen(&s);
    assert!(sc.contains("filter: pod:api  (2 of 4 shown"), "{sc}");
    insta::assert_snapshot!("filter_80x24", sc);
    press(&mut s, "x");
    assert_eq!(s.store.visible_len(), 1);
    press(&mut s, "c");
    assert_eq!(s.store.visible_len(), 4, "c clears the text and x");
    // Esc while typing restores the filter from before.
    press(&mut s, "/plugin:nope\u{1b}");
    assert_eq!(s.store.visible_len(), 4);
}

#[test]
fn status_bar_shows_source_stats_and_disconnection() {
    let mut s = session(80, 24);
    let sc = screen(&s);
    let last = sc.lines().last().unwrap_or("");
    assert!(
        last.contains("file session.ndjson") && last.contains("4 inv · lost 0"),
        "{last}"
    );
    update(
        &mut s,
        Msg::Source(SourceMsg::Disconnected {
            reason: "Connection refused".into(),
            retry_ms: 2000,
        }),
    );
    assert!(matches!(s.conn, Conn::Disconnected { .. }));
    let sc = screen(&s);
    assert!(
        sc.contains("DISCONNECTED (Connection refused), retry 2.0s"),
        "{sc}"
    );
}

#[test]
fn a_reconnect_resending_history_adds_nothing() {
    let mut s = session(80, 24);
    let counts = |s: &State| {
        let mut v: Vec<(u32, usize, u32)> = s
            .store
            .netns
            .values()
            .map(|n| (n.inode, n.history.len(), n.cni_runs))
            .collect();
        v.sort();
        v
    };
    let before = counts(&s);
    feed(&mut s, SESSION);
    assert_eq!(s.store.len(), 4);
    let after = counts(&s);
    assert_eq!(before, after);
}

#[test]
fn pause_holds_lines_and_follow_keeps_the_newest() {
    let mut s = state(Theme::plain(), 80, 24);
    let lines: Vec<&str> = SESSION.lines().collect();
    feed(&mut s, lines[1]);
    press(&mut s, " ");
    feed(&mut s, &lines[2..].join("\n"));
    assert_eq!(s.store.len(), 1);
    assert!(screen(&s).contains("PAUSED +"));
    press(&mut s, " ");
    assert_eq!(s.store.len(), 4);
    // Following: the newest is selected.
    assert_eq!(s.sel, s.store.visible_row(0).map(|r| r.seq));
    // Not following: the selection stays on its row as new ones arrive.
    press(&mut s, "j");
    let sel = s.sel;
    let mut more = super::tests_big::invocation_lines(2, "later");
    more.truncate(2);
    feed(&mut s, &more.join("\n"));
    assert_eq!(s.sel, sel);
    assert_eq!(s.store.len(), 6);
}

#[test]
fn a_paused_rtnetlink_capture_is_said_in_the_status_line() {
    let mut s = session(80, 24);
    feed(
        &mut s,
        r#"{"type":"agent","event":"netlink_capture","ts":"2026-11-23T19:29:45.429898529Z","capture":false}"#,
    );
    assert_eq!(
        s.last_log.as_deref(),
        Some("rtnetlink capture paused: changes are not seen")
    );
    assert!(
        screen(&s).contains("rtnetlink capture paused"),
        "{}",
        screen(&s)
    );
    feed(
        &mut s,
        r#"{"type":"agent","event":"netlink_capture","ts":"2026-11-23T19:29:46.0Z","capture":true}"#,
    );
    assert_eq!(s.last_log.as_deref(), Some("rtnetlink capture resumed"));
}
