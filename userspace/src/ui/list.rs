//! The invocations list: newest first, one line each — time, pod (or container id), command,
//! chain, verdict, duration. Only the rows on screen are built, so 10 000 retained invocations
//! cost no more per frame than 20.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::app::State;
use super::model;
use super::store::Row;
use super::text::pad;

/// Column widths for a terminal width: narrower terminals drop the milliseconds, then the
/// chain, then the duration; the pod always stays.
#[derive(Debug, Clone, Copy)]
struct Cols {
    time: usize,
    cmd: usize,
    who: usize,
    chain: usize,
    verdict: usize,
    dur: usize,
}

fn cols(w: usize) -> Cols {
    let time = if w >= 70 { 12 } else { 8 };
    let cmd = 5;
    let verdict = if w >= 70 { 12 } else { 8 };
    let dur = if w >= 50 { 7 } else { 0 };
    let with_chain = w >= 60;
    let n = 4 + usize::from(dur > 0) + usize::from(with_chain);
    let rem = w.saturating_sub(time + cmd + verdict + dur + (n - 1));
    let (who, chain) = if with_chain {
        let who = (rem / 2).clamp(10.min(rem), 40);
        (who, rem - who)
    } else {
        (rem, 0)
    };
    Cols {
        time,
        cmd,
        who,
        chain,
        verdict,
        dur,
    }
}

fn join(
    c: &Cols,
    time: &str,
    cmd: &str,
    who: &str,
    chain: &str,
    verdict: &str,
    dur: &str,
) -> String {
    let mut out = String::with_capacity(c.time + c.cmd + c.who + c.chain + c.verdict + c.dur + 6);
    out.push_str(&pad(time.get(..c.time).unwrap_or(time), c.time));
    out.push(' ');
    out.push_str(&pad(cmd, c.cmd));
    out.push(' ');
    out.push_str(&pad(who, c.who));
    if c.chain > 0 {
        out.push(' ');
        out.push_str(&pad(chain, c.chain));
    }
    out.push(' ');
    out.push_str(&pad(verdict, c.verdict));
    if c.dur > 0 {
        out.push(' ');
        out.push_str(&format!("{dur:>w$}", w = c.dur));
    }
    out
}

fn line(r: &Row, c: &Cols) -> String {
    let dur = r.duration_ns.map(model::dur).unwrap_or_default();
    join(c, &r.time, &r.command, &r.who, &r.chain, &r.verdict, &dur)
}

pub fn render(s: &State, f: &mut Frame, area: Rect) {
    let t = &s.theme;
    let c = cols(usize::from(area.width));
    let mut lines = Vec::with_capacity(usize::from(area.height));
    lines.push(Line::styled(
        join(
            &c,
            "time (UTC)  ",
            "cmd",
            "pod / container",
            "chain",
            "verdict",
            "took",
        ),
        t.heading(),
    ));
    let h = usize::from(area.height.saturating_sub(1));
    if s.store.visible_len() == 0 {
        let msg = if s.store.is_empty() {
            format!("  waiting for invocations from {} …", s.source)
        } else {
            format!(
                "  no invocation matches the filter ({} kept); c clears it",
                s.store.len()
            )
        };
        lines.push(Line::styled(msg, t.dim()));
    }
    for pos in s.list_offset..(s.list_offset + h).min(s.store.visible_len()) {
        let Some(r) = s.store.visible_row(pos) else {
            break;
        };
        let style = if Some(r.seq) == s.sel {
            t.selected()
        } else if !r.ok {
            t.fail()
        } else if r.partial {
            t.warn()
        } else {
            t.normal()
        };
        lines.push(Line::styled(line(r, &c), style));
    }
    f.render_widget(Paragraph::new(lines), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fill_the_width() {
        for w in [30, 40, 55, 65, 80, 120, 200] {
            let c = cols(w);
            let r = Row {
                time: "08:57:08.809".into(),
                ..Row::default()
            };
            assert_eq!(line(&r, &c).chars().count(), w, "width {w}");
        }
        assert_eq!(cols(40).chain, 0);
        assert!(cols(40).who >= 10);
    }
}
