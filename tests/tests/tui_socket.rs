//! The TUI against a stand-in for the agent's socket (the same protocol: one subscribe line,
//! the history, `snapshot_end`, live lines): a dropped connection is shown and retried, and the
//! history a reconnect resends is not shown twice.

mod tui_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

use tui_support::{TempDir, Tmux, fixture};

/// Serves one client: checks its request, sends `lines` and `snapshot_end`, then `live`, and
/// closes when told.
fn serve_once(l: &UnixListener, history: &str, live: &[String], close: &mpsc::Receiver<()>) {
    let (mut s, _) = l.accept().expect("accept");
    let mut req = String::new();
    BufReader::new(&s).read_line(&mut req).expect("request");
    assert_eq!(req.trim(), r#"{"op":"subscribe"}"#);
    s.write_all(history.as_bytes()).expect("history");
    s.write_all(b"{\"type\":\"snapshot_end\"}\n")
        .expect("snapshot_end");
    for l in live {
        s.write_all(l.as_bytes()).expect("live");
        s.write_all(b"\n").expect("live");
    }
    let _ = close.recv_timeout(Duration::from_secs(60));
}

#[test]
fn disconnect_is_shown_and_retried_without_duplicates() {
    let dir = TempDir::new("cniscope-tui-sock-");
    let sock = dir.0.join("agent.sock");
    let history = std::fs::read_to_string(fixture("tui/session.ndjson")).expect("fixture");
    let one_more = history
        .lines()
        .find(|l| l.contains("\"type\":\"invocation\""))
        .map(|l| {
            l.replace("web-7d4f9", "late-1")
                .replacen("\"id\":\"", "\"id\":\"late-", 1)
        })
        .expect("an invocation line");

    // Started before the socket exists: it must wait and retry, not fail.
    let t = Tmux::tui(&["--socket", sock.to_str().unwrap_or("")]);
    t.wait_for(
        "the first failed connection",
        Duration::from_secs(10),
        |s| s.contains("DISCONNECTED"),
    );

    let (close_tx, close_rx) = mpsc::channel();
    let l = UnixListener::bind(&sock).expect("bind");
    let h2 = history.clone();
    let server = std::thread::spawn(move || serve_once(&l, &h2, &[], &close_rx));
    let s = t.wait_for("the history", Duration::from_secs(15), |s| {
        s.contains("4 inv")
    });
    assert!(
        s.contains("shop/web-7d4f9") && s.contains("FAIL tuning"),
        "{s}"
    );

    // The agent goes away: shown at once, the TUI keeps what it has.
    close_tx.send(()).expect("close");
    server.join().expect("server thread");
    std::fs::remove_file(&sock).expect("removing the socket");
    let s = t.wait_for("the disconnection", Duration::from_secs(10), |s| {
        s.contains("DISCONNECTED")
    });
    assert!(s.contains("4 inv") && s.contains("shop/api-5c8b"), "{s}");

    // It comes back with the same history and one new invocation.
    let (close_tx, close_rx) = mpsc::channel();
    let l = UnixListener::bind(&sock).expect("bind again");
    let server = std::thread::spawn(move || serve_once(&l, &history, &[one_more], &close_rx));
    let s = t.wait_for("the reconnection", Duration::from_secs(20), |s| {
        s.contains("shop/late-1")
    });
    assert!(
        s.contains("5 inv"),
        "history resent on reconnect was shown twice:\n{s}"
    );
    assert!(!s.contains("DISCONNECTED"), "{s}");
    t.keys(&["q"]);
    t.wait_for("a clean exit", Duration::from_secs(10), |s| {
        s.contains("EXITED 0")
    });
    close_tx.send(()).expect("close");
    server.join().expect("server thread");
}
