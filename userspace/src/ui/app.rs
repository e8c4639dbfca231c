//! The TUI's state and its one pure transition, `update(state, msg)`: keys, terminal size,
//! prepared lines from the source and ticks all arrive as `Msg`s on one channel. No I/O here;
//! time comes in with the `Tick`.

use std::collections::VecDeque;
use std::sync::Arc;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use tui_input::Input;
use tui_input::backend::crossterm::to_input_request;

use super::detail::{self, Detail};
use super::filter::Filter;
use super::keys::{self, Action, Scope};
use super::model::{AgentEvent, Stats};
use super::store::{Inserted, Prepared, Store};
use super::theme::Theme;
use super::timeline::{self, Target, Timeline};

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
    held: VecDeque<Prepared>,
    pub held_dropped: u64,
    // Filter.
    pub input: Input,
    pub filter_text: String,
    filter_before: String,
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

    fn main_area(&self) -> Rect {
        super::view::areas(self.size, self.filter_bar()).main
    }

    fn scope(&self) -> Scope {
        match self.view {
            View::Invocations | View::Timeline => Scope::Invocations,
            View::Detail => Scope::Detail,
            View::Netns => Scope::Netns,
        }
    }
}

/// Keeps `sel` within `[offset, offset + height)`.
fn scroll_to(offset: &mut usize, sel: usize, height: usize) {
    let height = height.max(1);
    if sel < *offset {
        *offset = sel;
    } else if sel >= *offset + height {
        *offset = sel + 1 - height;
    }
}

/// A cursor move in a list of `len` items.
fn moved(cur: usize, len: usize, a: Action, page: usize) -> usize {
    let last = len.saturating_sub(1);
    match a {
        Action::Up => cur.saturating_sub(1),
        Action::Down => (cur + 1).min(last),
        Action::PageUp => cur.saturating_sub(page.max(1)),
        Action::PageDown => (cur + page.max(1)).min(last),
        Action::Top => 0,
        Action::Bottom => last,
        _ => cur,
    }
}

pub fn update(s: &mut State, msg: Msg) {
    match msg {
        Msg::Key(k) => key(s, k),
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

fn ingest(s: &mut State, p: Prepared) {
    match p {
        Prepared::Invocation {
            row,
            facts,
            changes,
        } => {
            for f in facts {
                s.store.netns_facts(f);
            }
            for c in changes {
                s.store.netns_change(c);
            }
            match s.store.insert_invocation(*row) {
                Inserted::New(seq) => {
                    count(s);
                    after_new_row(s, seq);
                }
                Inserted::Replaced(seq) => {
                    count(s);
                    if s.timeline.as_ref().is_some_and(|t| t.seq == seq) {
                        let sel = s.timeline.as_ref().map_or(0, |t| t.sel);
                        open_timeline(s, seq);
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
        Prepared::Agent(AgentEvent { event, pid }) => {
            if event == "ready" {
                s.agent_pid = pid;
            }
            s.last_log = Some(match pid {
                Some(p) => format!("agent {event} (pid {p})"),
                None => format!("agent {event}"),
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

fn list_height(s: &State) -> usize {
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
fn clamp_views(s: &mut State) {
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

fn apply_filter(s: &mut State) {
    let fo = s.store.filter().failures_only;
    s.store.set_filter(Filter::parse(&s.filter_text, fo));
    reselect(s);
}

fn reselect(s: &mut State) {
    if s.sel.and_then(|seq| s.store.position(seq)).is_none() || s.follow {
        s.sel = s.store.visible_row(0).map(|r| r.seq);
        s.list_offset = 0;
    }
    clamp_views(s);
}

fn key(s: &mut State, k: KeyEvent) {
    if k.kind != crossterm::event::KeyEventKind::Press {
        return;
    }
    let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
    match s.mode {
        Mode::Help => {
            s.mode = Mode::Normal;
            if ctrl_c {
                s.quit = true;
            }
        }
        Mode::Filter => match k.code {
            _ if ctrl_c => s.quit = true,
            KeyCode::Esc => {
                s.filter_text = std::mem::take(&mut s.filter_before);
                s.mode = Mode::Normal;
                apply_filter(s);
            }
            KeyCode::Enter => s.mode = Mode::Normal,
            _ => {
                if let Some(req) = to_input_request(&Event::Key(k)) {
                    s.input.handle(req);
                    if s.input.value() != s.filter_text {
                        s.filter_text = s.input.value().to_string();
                        apply_filter(s);
                    }
                }
            }
        },
        Mode::Normal => {
            if let Some(a) = keys::lookup(&k, s.scope()) {
                action(s, a);
            }
        }
    }
}

fn action(s: &mut State, a: Action) {
    match a {
        Action::Quit => s.quit = true,
        Action::Help => s.mode = Mode::Help,
        Action::Invocations => s.view = View::Invocations,
        Action::Timeline => {
            if let Some(seq) = s.sel {
                if s.timeline.as_ref().is_none_or(|t| t.seq != seq) {
                    open_timeline(s, seq);
                }
                if s.timeline.is_some() {
                    s.view = View::Timeline;
                }
            }
        }
        Action::Detail => open_detail(s),
        Action::Netns => {
            if s.view == View::Invocations {
                preselect_netns(s);
            }
            s.view = View::Netns;
        }
        Action::Filter => {
            s.filter_before = s.filter_text.clone();
            s.input = Input::new(s.filter_text.clone());
            s.mode = Mode::Filter;
        }
        Action::ClearFilter => {
            s.filter_text.clear();
            s.store.set_filter(Filter::default());
            reselect(s);
        }
        Action::FailuresOnly => {
            let fo = !s.store.filter().failures_only;
            s.store.set_filter(Filter::parse(&s.filter_text, fo));
            reselect(s);
        }
        Action::Follow => {
            s.follow = !s.follow;
            if s.follow {
                s.sel = s.store.visible_row(0).map(|r| r.seq);
                s.list_offset = 0;
            }
        }
        Action::Pause => {
            s.paused = !s.paused;
            if !s.paused {
                while let Some(p) = s.held.pop_front() {
                    ingest(s, p);
                }
            }
        }
        Action::Open => match s.view {
            View::Invocations => action(s, Action::Timeline),
            View::Timeline => open_detail(s),
            View::Netns => match s.netns_focus {
                NetnsFocus::List => s.netns_focus = NetnsFocus::History,
                NetnsFocus::History => open_detail(s),
            },
            View::Detail => {}
        },
        Action::Back => match s.view {
            View::Detail => {
                s.view = s.detail.as_ref().map_or(View::Invocations, |d| d.from);
            }
            View::Netns if s.netns_focus == NetnsFocus::History => {
                s.netns_focus = NetnsFocus::List;
            }
            View::Timeline | View::Netns => s.view = View::Invocations,
            View::Invocations => {
                if !s.store.filter().is_empty() {
                    action(s, Action::ClearFilter);
                }
            }
        },
        Action::Focus => {
            s.netns_focus = match s.netns_focus {
                NetnsFocus::List => NetnsFocus::History,
                NetnsFocus::History => NetnsFocus::List,
            }
        }
        Action::NextSection | Action::PrevSection => {
            if let Some(d) = &mut s.detail {
                let cur = d.scroll;
                let next = if a == Action::NextSection {
                    d.sections().find(|&i| i > cur)
                } else {
                    d.sections().filter(|&i| i < cur).last()
                };
                d.scroll = next.unwrap_or(if a == Action::NextSection { cur } else { 0 });
            }
        }
        Action::Left => {
            if let Some(d) = &mut s.detail {
                d.hscroll = d.hscroll.saturating_sub(8);
            }
        }
        Action::Right => {
            if let Some(d) = &mut s.detail {
                d.hscroll += 8;
            }
        }
        Action::Up
        | Action::Down
        | Action::PageUp
        | Action::PageDown
        | Action::Top
        | Action::Bottom => movement(s, a),
    }
}

fn movement(s: &mut State, a: Action) {
    let main = s.main_area();
    match s.view {
        View::Invocations => {
            let n = s.store.visible_len();
            if n == 0 {
                return;
            }
            let h = list_height(s);
            let cur = s.sel.and_then(|seq| s.store.position(seq)).unwrap_or(0);
            let pos = moved(cur, n, a, h);
            s.follow = pos == 0 && matches!(a, Action::Top);
            s.sel = s.store.visible_row(pos).map(|r| r.seq);
            scroll_to(&mut s.list_offset, pos, h);
        }
        View::Timeline => {
            if let Some(t) = &mut s.timeline {
                let h = t.body_height(main);
                t.sel = moved(t.sel, t.rows.len(), a, h);
                scroll_to(&mut t.offset, t.sel, h);
            }
        }
        View::Detail => {
            if let Some(d) = &mut s.detail {
                let h = usize::from(main.height);
                let max = d.lines.len().saturating_sub(h);
                d.scroll = match a {
                    Action::Up => d.scroll.saturating_sub(1),
                    Action::Down => (d.scroll + 1).min(max),
                    Action::PageUp => d.scroll.saturating_sub(h),
                    Action::PageDown => (d.scroll + h).min(max),
                    Action::Top => 0,
                    _ => max,
                };
            }
        }
        View::Netns => {
            let (list_h, hist_h) = super::netns::heights(main, s.store.netns_order.len());
            match s.netns_focus {
                NetnsFocus::List => {
                    let order = &s.store.netns_order;
                    let cur = netns_index(s).unwrap_or(0);
                    let pos = moved(cur, order.len(), a, list_h);
                    if pos != cur {
                        s.hist_sel = 0;
                    }
                    s.netns_pick = order.get(pos).copied();
                }
                NetnsFocus::History => {
                    let n = selected_netns(s).map_or(0, |n| n.history.len());
                    s.hist_sel = moved(s.hist_sel.min(n.saturating_sub(1)), n, a, hist_h);
                }
            }
        }
    }
}

/// Index of the selected namespace in the list.
pub fn netns_index(s: &State) -> Option<usize> {
    let pick = s.netns_pick?;
    s.store.netns_order.iter().position(|&i| i == pick)
}

/// The selected namespace: the picked one, else the most recently changed.
pub fn selected_netns(s: &State) -> Option<&super::store::Netns> {
    let inode = match netns_index(s) {
        Some(i) => s.store.netns_order[i],
        None => *s.store.netns_order.first()?,
    };
    s.store.netns.get(&inode)
}

fn preselect_netns(s: &mut State) {
    let Some(inode) = s
        .sel
        .and_then(|seq| s.store.row(seq))
        .and_then(|r| r.invocation())
        .and_then(|i| i.netns_inode)
    else {
        return;
    };
    if s.store.netns.contains_key(&inode) {
        s.netns_pick = Some(inode);
        s.hist_sel = 0;
    }
}

fn open_timeline(s: &mut State, seq: u64) {
    if let Some(inv) = s.store.row(seq).and_then(|r| r.invocation()) {
        s.timeline = Some(Timeline::build(seq, Arc::new(inv)));
        clamp_views(s);
    }
}

fn open_detail(s: &mut State) {
    let from = s.view;
    let doc = match s.view {
        View::Detail => return,
        View::Invocations => s
            .sel
            .and_then(|seq| s.store.row(seq))
            .and_then(|r| r.invocation())
            .map(|inv| {
                (
                    format!("{} {}", inv.command, inv.id),
                    detail::invocation_doc(&inv),
                )
            }),
        View::Timeline => s.timeline.as_ref().and_then(|t| {
            let row = t.rows.get(t.sel)?;
            let inv = &t.inv;
            match &row.target {
                Target::Step(p) => {
                    let st = timeline::resolve(inv, p)?;
                    Some((st.plugin.clone(), detail::step_doc(inv, st)))
                }
                Target::Op(p, i) => {
                    let st = timeline::resolve(inv, p)?;
                    let o = st.netlink.get(*i)?;
                    Some((
                        o.op.clone(),
                        detail::op_doc(o, &format!("{} {}", st.plugin, inv.command)),
                    ))
                }
                Target::Spawned(p, i) => {
                    let st = timeline::resolve(inv, p)?;
                    let sp = st.spawned.get(*i)?;
                    Some((sp.argv.join(" "), detail::spawned_doc(sp, &st.plugin)))
                }
                Target::TagCommand(i) => {
                    let c = timeline::tag_commands(inv).get(*i)?;
                    Some(("cniscope-cni command".into(), detail::tag_command_doc(c)))
                }
                Target::None => Some((
                    format!("{} {}", inv.command, inv.id),
                    detail::invocation_doc(inv),
                )),
            }
        }),
        View::Netns => selected_netns(s).and_then(|n| {
            let len = n.history.len();
            let c = n.history.get(len.checked_sub(s.hist_sel + 1)?)?;
            Some((c.op.op.clone(), detail::op_doc(&c.op, &c.source)))
        }),
    };
    if let Some((title, lines)) = doc {
        s.detail = Some(Detail::new(title, lines, from));
        s.view = View::Detail;
    } else if s.detail.is_some() {
        s.view = View::Detail;
    }
}
