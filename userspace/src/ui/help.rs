//! The help overlay: the key table from `keys.rs`, nothing written twice. Two columns when one
//! does not fit the terminal's height (80×24).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::keys::{BINDINGS, Binding, Scope};
use super::text::pad;
use super::theme::Theme;

fn entry<'a>(b: &Binding, width: usize, t: &Theme) -> Vec<Span<'a>> {
    let scope = match b.scope {
        Scope::Everywhere | Scope::Lists => "",
        Scope::Invocations => " (list)",
        Scope::Detail => " (detail)",
        Scope::Netns => " (netns)",
    };
    vec![
        Span::styled(format!(" {:<8}", b.label), t.key()),
        Span::raw(pad(&format!("{}{scope}", b.help), width.saturating_sub(9))),
    ]
}

pub fn render(f: &mut Frame, size: Rect, t: &Theme) {
    let n = BINDINGS.len();
    let two = n + 3 > usize::from(size.height);
    let per_col = if two { n.div_ceil(2) } else { n };
    let w = size.width.min(if two { 110 } else { 64 });
    let h = (per_col as u16 + 3).min(size.height);
    let area = Rect::new(
        size.x + (size.width - w) / 2,
        size.y + (size.height - h) / 2,
        w,
        h,
    );
    let inner = usize::from(w.saturating_sub(2));
    let col_w = if two { inner / 2 } else { inner };
    let mut lines: Vec<Line> = (0..per_col)
        .map(|i| {
            let mut spans = entry(&BINDINGS[i], col_w, t);
            if two && let Some(b) = BINDINGS.get(i + per_col) {
                spans.extend(entry(b, col_w, t));
            }
            Line::from(spans)
        })
        .collect();
    lines.push(Line::styled(" any key closes this help", t.dim()));
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        area,
    );
}
