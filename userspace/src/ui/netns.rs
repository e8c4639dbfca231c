//! The netns view: every network namespace seen, most recently changed first, with its pod and
//! cniscope-cni tag; below, the selected one's full change history, newest first — the changes
//! plugins made during CNI runs and, marked `!`, those made by anything else afterwards.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use serde_json::Value;

use super::app::{NetnsFocus, State};
use super::model;
use super::navigate;
use super::text::pad;

/// Rows of the namespace list (for `n` namespaces, at most a third of the area) and of the
/// history, for a main area.
pub fn heights(main: Rect, n: usize) -> (usize, usize) {
    let most = usize::from((main.height / 3).max(3)) - 1;
    let list = n.clamp(1, most);
    (list, usize::from(main.height).saturating_sub(list + 1 + 3))
}

/// First row shown so that `sel` is visible in `h` rows.
fn offset(sel: usize, h: usize) -> usize {
    sel.saturating_sub(h.saturating_sub(1))
}

pub fn render(s: &State, f: &mut Frame, area: Rect) {
    let t = &s.theme;
    let w = usize::from(area.width);
    let (list_h, hist_h) = heights(area, s.store.netns_order.len());
    let focus_style = |on: bool| if on { t.tab_active() } else { t.heading() };
    let mut lines: Vec<Line> = Vec::with_capacity(usize::from(area.height));
    let name_w = (w / 4).clamp(10, 24);
    let pod_w = (w / 3).clamp(10, 32);
    lines.push(Line::styled(
        pad(
            &format!(
                "{} {} {:>7} {:>4}  last change",
                pad("netns", name_w),
                pad("pod", pod_w),
                "changes",
                "runs"
            ),
            w,
        ),
        focus_style(s.netns_focus == NetnsFocus::List),
    ));
    let order = &s.store.netns_order;
    let sel = navigate::netns_index(s).unwrap_or(0);
    for (i, inode) in order
        .iter()
        .enumerate()
        .skip(offset(sel, list_h))
        .take(list_h)
    {
        let Some(n) = s.store.netns.get(inode) else {
            continue;
        };
        let last = n
            .history
            .back()
            .map(|c| model::clock(&c.op.ts).to_string())
            .unwrap_or_default();
        let text = format!(
            "{} {} {:>7} {:>4}  {}",
            pad(&n.name, name_w),
            pad(n.pod.as_deref().unwrap_or("-"), pod_w),
            n.history.len(),
            n.cni_runs,
            last
        );
        let style = if i == sel { t.selected() } else { t.normal() };
        lines.push(Line::styled(text, style));
    }
    if order.is_empty() {
        lines.push(Line::styled("  no network namespace seen yet", t.dim()));
    }
    while lines.len() < list_h + 1 {
        lines.push(Line::raw(""));
    }
    let cur = navigate::selected_netns(s);
    // The selected namespace: pod and tag.
    match cur {
        Some(n) => {
            lines.push(Line::from(vec![
                Span::styled(format!("{} ", n.name), t.accent()),
                Span::styled(format!("inode {} ", n.inode), t.dim()),
                Span::raw(format!("pod {}", n.pod.as_deref().unwrap_or("unknown"))),
            ]));
            lines.push(tag_line(n.tag.as_deref(), t));
        }
        None => {
            lines.push(Line::raw(""));
            lines.push(Line::raw(""));
        }
    }
    let by_w = (w * 3 / 10).clamp(10, 30);
    let out_w = (w / 6).clamp(6, 22);
    let op_w = w.saturating_sub(TIME + 1 + 2 + by_w + 1 + 1 + out_w);
    lines.push(Line::styled(
        pad(
            &format!(
                "{}   {} {} {}",
                pad("time (UTC)", TIME),
                pad("by", by_w),
                pad("change", op_w),
                "outcome"
            ),
            w,
        ),
        focus_style(s.netns_focus == NetnsFocus::History),
    ));
    if let Some(n) = cur {
        let len = n.history.len();
        for k in (0..len).skip(offset(s.hist_sel, hist_h)).take(hist_h) {
            let Some(c) = n.history.get(len - 1 - k) else {
                break;
            };
            let err = c.op.outcome.is_error();
            let text = format!(
                "{} {} {} {} {}",
                pad(model::clock(&c.op.ts), TIME),
                if c.in_cni { " " } else { "!" },
                pad(&c.source, by_w),
                pad(&c.op.op, op_w),
                pad(&c.op.outcome.label(), out_w)
            );
            let style = if s.netns_focus == NetnsFocus::History && k == s.hist_sel {
                t.selected()
            } else if err {
                t.fail()
            } else if !c.in_cni {
                t.warn()
            } else {
                t.normal()
            };
            lines.push(Line::styled(text, style));
        }
        if len == 0 {
            lines.push(Line::styled("  no changes recorded", t.dim()));
        }
    }
    f.render_widget(Paragraph::new(lines), area);
}

const TIME: usize = 12;

fn tag_line<'a>(tag: Option<&Value>, t: &super::theme::Theme) -> Line<'a> {
    let Some(tag) = tag else {
        return Line::styled("no cniscope-cni tag", t.dim());
    };
    let s = |k: &str| tag.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let cmds: Vec<String> = tag
        .get("commands")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{} ({})",
                        c.get("command").and_then(Value::as_str).unwrap_or("?"),
                        c.get("outcome").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Line::from(vec![
        Span::styled("tag ", t.dim()),
        Span::raw(format!("{} {} ", s("network"), s("ifname"))),
        Span::styled(format!("[{}] ", s("source")), t.dim()),
        Span::raw(cmds.join("; ")),
    ])
}
