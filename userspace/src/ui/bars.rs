//! The header (views, as tabs), the filter bar and the status bar (source and connection, how
//! much is kept, event rate, lost records, follow/pause).

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::app::{Conn, Mode, State, View};
use super::text::{fit, pad};
use super::theme::Theme;

pub fn header(s: &State, f: &mut Frame, area: Rect) {
    let t = &s.theme;
    let mut spans = vec![Span::styled(" cniscope ", t.heading())];
    for (v, k, name) in [
        (View::Invocations, "i", "Invocations"),
        (View::Timeline, "t", "Timeline"),
        (View::Detail, "d", "Detail"),
        (View::Netns, "n", "Netns"),
    ] {
        let style = if s.view == v {
            t.tab_active()
        } else {
            t.normal()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!("{k}:{name}"), style));
    }
    let extra = match s.view {
        View::Timeline => s
            .timeline
            .as_ref()
            .map(|tl| format!("  {}/{}", (tl.sel + 1).min(tl.rows.len()), tl.rows.len())),
        View::Detail => s
            .detail
            .as_ref()
            .map(|d| format!("  {}", fit(&d.title, 40))),
        _ => None,
    };
    if let Some(e) = extra {
        spans.push(Span::styled(e, t.dim()));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let keys = "? help  q quit ";
    let w = usize::from(area.width);
    if used + keys.len() < w {
        spans.push(Span::raw(" ".repeat(w - used - keys.len())));
        spans.push(Span::styled(keys, t.dim()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub fn filter(s: &State, f: &mut Frame, area: Rect) {
    let t = &s.theme;
    let w = usize::from(area.width);
    if s.mode == Mode::Filter {
        let prefix = "/ ";
        let room = w.saturating_sub(prefix.len() + 1).max(1);
        let scroll = s.input.visual_scroll(room);
        let shown: String = s.input.value().chars().skip(scroll).take(room).collect();
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(prefix, t.key()),
                Span::raw(shown),
            ])),
            area,
        );
        let x = area.x + (prefix.len() + s.input.visual_cursor().saturating_sub(scroll)) as u16;
        f.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    } else {
        let fo = if s.store.filter().failures_only {
            " [failures only]"
        } else {
            ""
        };
        let text = format!(
            "filter: {}{}  ({} of {} shown; / edit, c clear)",
            s.filter_text,
            fo,
            s.store.visible_len(),
            s.store.len()
        );
        f.render_widget(
            Paragraph::new(Line::styled(fit(&text, w), t.accent())),
            area,
        );
    }
}

pub fn status(s: &State, f: &mut Frame, area: Rect) {
    let t = &s.theme;
    let w = usize::from(area.width);
    let (conn, conn_style) = match &s.conn {
        Conn::Starting => ("starting".to_string(), t.warn()),
        Conn::Connecting(x) => (format!("connecting {x}"), t.warn()),
        Conn::Connected(x) => (x.clone(), t.ok()),
        Conn::Disconnected { reason, retry_ms } => (
            format!(
                "DISCONNECTED ({reason}), retry {:.1}s",
                *retry_ms as f64 / 1000.0
            ),
            t.fail(),
        ),
        Conn::Ended(x) => (x.clone(), t.warn()),
    };
    let mut right = format!("{} inv", s.store.len());
    if let Some(st) = &s.stats {
        right.push_str(&format!(" · lost {}", st.lost + st.agent.output_dropped));
    }
    if s.lagged > 0 {
        right.push_str(&format!(" · lagged {}", s.lagged));
    }
    right.push_str(&format!(" · {:.1}/s", s.rate_per_s));
    right.push_str(if s.paused {
        " · PAUSED"
    } else if s.follow {
        " · follow"
    } else {
        ""
    });
    if s.paused && s.held() > 0 {
        right.push_str(&format!(" +{}", s.held()));
    }
    right.push(' ');
    let mut left = format!(" {conn}");
    if let Some(l) = &s.last_log {
        left.push_str(" | ");
        left.push_str(l);
    }
    let rw = right.chars().count();
    let lw = w.saturating_sub(rw);
    let line = Line::from(vec![
        Span::styled(pad(&left, lw), conn_style.patch(t.status())),
        Span::styled(fit(&right, w), t.status()),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

pub fn empty(f: &mut Frame, area: Rect, t: &Theme, msg: &str) {
    f.render_widget(
        Paragraph::new(Line::styled(format!("  {msg}"), t.dim())),
        area,
    );
}

pub fn too_small(f: &mut Frame, area: Rect, t: &Theme) {
    f.render_widget(
        Paragraph::new(Line::styled("terminal too small", t.warn())),
        area,
    );
}
