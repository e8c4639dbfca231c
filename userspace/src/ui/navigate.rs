//! What keys do: moving in each view, switching views, opening a timeline, a detail document
//! or a namespace, filtering, following and pausing. Part of `update`: pure, no I/O.

use std::sync::Arc;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use tui_input::Input;
use tui_input::backend::crossterm::to_input_request;

use super::app::{
    Mode, NetnsFocus, State, View, apply_filter, clamp_views, ingest, list_height, reselect,
    scroll_to,
};
use super::detail::{self, Detail};
use super::filter::Filter;
use super::keys::{self, Action};
use super::timeline::{self, Target, Timeline};

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

pub(super) fn key(s: &mut State, k: KeyEvent) {
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

pub(super) fn open_timeline(s: &mut State, seq: u64) {
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
