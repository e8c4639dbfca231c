//! The TUI's state and its one pure transition, `update(state, msg)`: keys, terminal size,
//! prepared lines from the source and ticks all arrive as `Msg`s on one channel. No I/O here;
//! time comes in with the `Tick`.

use std::collections::VecDeque;

use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use tui_input::Input;

use super::detail::Detail;
use super::filter::Filter;
use super::keys::Scope;
use super::model::{AgentEvent, Stats};
use super::navigate;
use super::prepare::Prepared;
use super::store::{Inserted, Store};
use super::theme::Theme;
use super::timeline::Timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Invocations,
    Timeline,
    Detail,
    Netns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing in the filter bar.
    Filter,
    Help,
}

/// What the source says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMsg {
    Connecting(String),
    /// Reading. `snapshot`: history comes first, until `snapshot_end`.
    Connected {
        target: String,
        snapshot: bool,
    },
    Disconnected {
        reason: String,
        retry_ms: u64,
    },
    /// No more lines will come (end of a file, the replay or the agent exited).
    Ended(String),
    /// A line the agent or replay child logged on stderr.
    Log(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Starting,
    Connecting(String),
    Connected(String),
    Disconnected { reason: String, retry_ms: u64 },
    Ended(String),
}

#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize(u16, u16),
    Data(Prepared),
    Source(SourceMsg),
    /// Monotonic milliseconds since the TUI started.
    Tick(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsFocus {
    List,
    History,
}

/// Lines per second over the last five seconds.
#[derive(Debug, Default)]
struct Rate {
    window_start: u64,
    count: u64,
    secs: VecDeque<u64>,
}

pub struct State {
    pub theme: Theme,
    pub store: Store,
    pub view: View,
    pub mode: Mode,
    pub size: Rect,
    // Invocations list.
    pub sel: Option<u64>,
    pub follow: bool,
    pub list_offset: usize,
    pub paused: bool,
    pub(super) held: VecDeque<Prepared>,
    pub held_dropped: u64,
    // Filter.
    pub input: Input,
    pub filter_text: String,
    pub(super) filter_before: String,
    // Other views.
    pub timeline: Option<Timeline>,
    pub detail: Option<Detail>,
    /// The selected namespace (inode): kept by identity while the list reorders.
    pub netns_pick: Option<u32>,
    pub netns_focus: NetnsFocus,
    /// Selected change, counted from the newest.
    pub hist_sel: usize,
    // Status.
    pub source: String,
    pub conn: Conn,
    pub last_log: Option<String>,
    pub stats: Option<Stats>,
    pub lagged: u64,
    pub bad_lines: u64,
    pub agent_pid: Option<u32>,
    pub in_snapshot: bool,
    rate: Rate,
    pub rate_per_s: f64,
    pub quit: bool,
}

impl State {
    pub fn new(retain: usize, theme: Theme, source: impl Into<String>) -> Self {
        Self {
            theme,
            store: Store::new(retain),
            view: View::Invocations,
            mode: Mode::Normal,
            size: Rect::new(0, 0, 80, 24),
            sel: None,
            follow: true,
            list_offset: 0,
            paused: false,
            held: VecDeque::new(),
            held_dropped: 0,
            input: Input::default(),
            filter_text: String::new(),
            filter_before: String::new(),
            timeline: None,
            detail: None,
            netns_pick: None,
            netns_focus: NetnsFocus::List,
            hist_sel: 0,
            source: source.into(),
            conn: Conn::Starting,
            last_log: None,
            stats: None,
            lagged: 0,
            bad_lines: 0,
            agent_pid: None,
            in_snapshot: false,
            rate: Rate::default(),
            rate_per_s: 0.0,
            quit: false,
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The filter bar shows while typing or while a filter is on.
    pub fn filter_bar(&self) -> bool {
        self.mode == Mode::Filter || !self.store.filter().is_empty()
    }

    pub(super) fn main_area(&self) -> Rect {
        super::view::areas(self.size, self.filter_bar()).main
    }

    pub(super) fn scope(&self) -> Scope {
        match self.view {
            View::Invocations | View::Timeline => Scope::Invocations,
            View::Detail => Scope::Detail,
            View::Netns => Scope::Netns,
        }
    }
}

/// Keeps `sel` within `[offset, offset + height)`.
pub(super) fn scroll_to(offset: &mut usize, sel: usize, height: usize) {
    let height = height.max(1);
    if sel < *offset {
        *offset = sel;
    } else if sel >= *offset + height {
        *offset = sel + 1 - height;
    }
}

pub fn update(s: &mut State, msg: Msg) {
    match msg {
        Msg::Key(k) => navigate::key(s, k),
        Msg::Resize(w, h) => {
            s.size = Rect::new(0, 0, w, h);
            clamp_views(s);
        }
        Msg::Data(p) => {
            if s.paused {
                s.held.push_back(p);
                if s.held.len() > s.store.retain() {
                    s.held.pop_front();
                    s.held_dropped += 1;
                }
            } else {
                ingest(s, p);
            }
        }
        Msg::Source(m) => source(s, m),
        Msg::Tick(now) => tick(s, now),
    }
}

fn source(s: &mut State, m: SourceMsg) {
    s.conn = match m {
        SourceMsg::Connecting(t) => Conn::Connecting(t),
        SourceMsg::Connected { target, snapshot } => {
            s.in_snapshot = snapshot;
            Conn::Connected(target)
        }
        SourceMsg::Disconnected { reason, retry_ms } => {
            s.in_snapshot = false;
            Conn::Disconnected { reason, retry_ms }
        }
        SourceMsg::Ended(r) => Conn::Ended(r),
        SourceMsg::Log(l) => {
            s.last_log = Some(l);
            return;
        }
    };
}

fn tick(s: &mut State, now: u64) {
    let r = &mut s.rate;
    if now.saturating_sub(r.window_start) >= 1000 {
        r.secs.push_back(r.count);
        r.count = 0;
        r.window_start = now;
        while r.secs.len() > 5 {
            r.secs.pop_front();
        }
        s.rate_per_s = r.secs.iter().sum::<u64>() as f64 / r.secs.len() as f64;
    }
}

pub(super) fn ingest(s: &mut State, p: Prepared) {
    match p {
        Prepared::Invocation {
            row,
            facts,
            changes,
        } => {
            let res = s.store.insert_invocation(*row);
            if res != Inserted::Duplicate {
                let new = matches!(res, Inserted::New(_));
                for mut f in facts {
                    // A revision is the same run again.
                    f.cni_run &= new;
                    s.store.netns_facts(f);
                }
                for c in changes {
                    s.store.netns_change(c);
                }
            }
            match res {
                Inserted::New(seq) => {
                    count(s);
                    after_new_row(s, seq);
                }
                Inserted::Replaced(seq) => {
                    count(s);
                    if s.timeline.as_ref().is_some_and(|t| t.seq == seq) {
                        let sel = s.timeline.as_ref().map_or(0, |t| t.sel);
                        navigate::open_timeline(s, seq);
                        if let Some(t) = &mut s.timeline {
                            t.sel = sel.min(t.rows.len().saturating_sub(1));
                        }
                    }
                }
                Inserted::Duplicate => {}
            }
        }
        Prepared::Netlink { facts, change } => {
            count(s);
            s.store.netns_facts(facts);
            s.store.netns_change(change);
        }
        Prepared::Stats(st) => s.stats = Some(st),
        Prepared::Agent(AgentEvent {
            event,
            pid,
            capture,
        }) => {
            if event == "ready" {
                s.agent_pid = pid;
            }
            s.last_log = Some(match (pid, capture) {
                (_, Some(false)) => "rtnetlink capture paused: changes are not seen".into(),
                (_, Some(true)) => "rtnetlink capture resumed".into(),
                (Some(p), None) => format!("agent {event} (pid {p})"),
                (None, None) => format!("agent {event}"),
            });
        }
        Prepared::SnapshotEnd => s.in_snapshot = false,
        Prepared::Lagged(n) => s.lagged += n,
        Prepared::Ignored => {}
        Prepared::Bad(e) => {
            s.bad_lines += 1;
            s.last_log = Some(format!("unreadable line: {e}"));
        }
    }
}

fn count(s: &mut State) {
    if !s.in_snapshot {
        s.rate.count += 1;
    }
}

pub(super) fn list_height(s: &State) -> usize {
    usize::from(s.main_area().height.saturating_sub(1))
}

fn after_new_row(s: &mut State, seq: u64) {
    let newest = s.store.visible_row(0).map(|r| r.seq);
    let h = list_height(s);
    match s.sel.and_then(|seq| s.store.position(seq)) {
        _ if s.follow => {
            s.sel = newest;
            s.list_offset = 0;
        }
        Some(pos) => {
            // Keep the screen still while rows arrive above it.
            if newest == Some(seq) {
                s.list_offset += 1;
            }
            scroll_to(&mut s.list_offset, pos, h);
        }
        None => {
            // Nothing selected yet, or the selection was evicted: the oldest row shown.
            let n = s.store.visible_len();
            s.sel = n
                .checked_sub(1)
                .and_then(|p| s.store.visible_row(p))
                .map(|r| r.seq);
            scroll_to(&mut s.list_offset, n.saturating_sub(1), h);
        }
    }
}

/// After a resize or a filter change: no empty rows below the last item when the list is
/// longer than the screen, and the selection still in view.
pub(super) fn clamp_views(s: &mut State) {
    let h = list_height(s);
    s.list_offset = s.list_offset.min(s.store.visible_len().saturating_sub(h));
    if let Some(pos) = s.sel.and_then(|seq| s.store.position(seq)) {
        scroll_to(&mut s.list_offset, pos, h);
    }
    let main = s.main_area();
    if let Some(t) = &mut s.timeline {
        let th = t.body_height(main);
        t.offset = t.offset.min(t.rows.len().saturating_sub(th));
        scroll_to(&mut t.offset, t.sel, th);
    }
    if let Some(d) = &mut s.detail {
        d.scroll = d.scroll.min(d.lines.len().saturating_sub(1));
    }
}

pub(super) fn apply_filter(s: &mut State) {
    let fo = s.store.filter().failures_only;
    s.store.set_filter(Filter::parse(&s.filter_text, fo));
    reselect(s);
}

pub(super) fn reselect(s: &mut State) {
    if s.sel.and_then(|seq| s.store.position(seq)).is_none() || s.follow {
        s.sel = s.store.visible_row(0).map(|r| r.seq);
        s.list_offset = 0;
    }
    clamp_views(s);
}
