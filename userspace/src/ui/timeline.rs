//! The timeline of one invocation: its steps as bars on a shared time axis, each followed (in
//! time order) by the netlink changes its process tree made, its delegates (IPAM) and the
//! processes it spawned, indented; nested chains (Multus) under the step that ran them; then the
//! commands cniscope-cni ran, from its tag.

use std::sync::Arc;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use serde_json::Value;

use super::model::{self, Invocation, Step};
use super::text::pad;
use super::theme::Theme;

/// A step's place in the tree: chain position, delegate, nested invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Step(usize),
    Delegate(usize),
    Nested(usize),
}

/// What a row opens in the detail view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Step(Vec<Seg>),
    Op(Vec<Seg>, usize),
    Spawned(Vec<Seg>, usize),
    TagCommand(usize),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    Warn,
    Plain,
}

#[derive(Debug, Clone)]
pub struct TlRow {
    pub depth: u16,
    pub label: String,
    /// A process's run, for its bar.
    pub span: Option<(u64, u64)>,
    /// A point in time (a netlink change), shown as an offset.
    pub at: Option<u64>,
    pub info: String,
    pub status: Status,
    pub target: Target,
}

/// The open timeline: the decoded invocation, its rows and the cursor.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The row's seq in the store.
    pub seq: u64,
    pub inv: Arc<Invocation>,
    pub rows: Vec<TlRow>,
    pub sel: usize,
    pub offset: usize,
    pub t0: u64,
    pub t1: u64,
}

/// Resolves a step path in `inv`.
pub fn resolve<'a>(inv: &'a Invocation, path: &[Seg]) -> Option<&'a Step> {
    let mut steps: &[Step] = &inv.steps;
    let mut cur: Option<&Step> = None;
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            Seg::Step(k) => cur = Some(steps.get(k)?),
            Seg::Delegate(k) => cur = Some(cur?.delegates.get(k)?),
            Seg::Nested(k) => {
                let nested = cur?.invocations.get(k)?;
                steps = &nested.steps;
                cur = None;
            }
        }
        i += 1;
    }
    cur
}

fn step_rows(s: &Step, path: Vec<Seg>, depth: u16, out: &mut Vec<TlRow>, t1: &mut u64) {
    let end = s.end_ns.unwrap_or(s.start_ns);
    *t1 = (*t1).max(end);
    let mut info = s
        .duration_ns
        .map(model::dur)
        .unwrap_or_else(|| "running?".into());
    let status = if !s.ok {
        info.push(' ');
        info.push_str(
            &s.exit
                .as_ref()
                .map(model::Exit::label)
                .unwrap_or_else(|| "FAIL".into()),
        );
        Status::Fail
    } else if !s.complete {
        info.push_str(" incomplete");
        Status::Warn
    } else {
        Status::Ok
    };
    out.push(TlRow {
        depth,
        label: s.plugin.clone(),
        span: Some((s.start_ns, end)),
        at: None,
        info,
        status,
        target: Target::Step(path.clone()),
    });
    // Children in time order; spawned processes carry no start time and come last.
    enum Child {
        Op(usize),
        Delegate(usize),
    }
    let mut kids: Vec<(u64, Child)> = s
        .netlink
        .iter()
        .enumerate()
        .map(|(i, o)| (o.ts_ns, Child::Op(i)))
        .chain(
            s.delegates
                .iter()
                .enumerate()
                .map(|(i, d)| (d.start_ns, Child::Delegate(i))),
        )
        .collect();
    kids.sort_by_key(|(t, _)| *t);
    for (_, k) in kids {
        match k {
            Child::Op(i) => {
                let o = &s.netlink[i];
                let err = o.outcome.is_error();
                out.push(TlRow {
                    depth: depth + 1,
                    label: format!("{} {}", if err { "✗" } else { "✓" }, o.op),
                    span: None,
                    at: Some(o.ts_ns),
                    info: o.outcome.label(),
                    status: if err { Status::Fail } else { Status::Plain },
                    target: Target::Op(path.clone(), i),
                });
            }
            Child::Delegate(i) => {
                let mut p = path.clone();
                p.push(Seg::Delegate(i));
                step_rows(&s.delegates[i], p, depth + 1, out, t1);
            }
        }
    }
    for (i, sp) in s.spawned.iter().enumerate() {
        let failed = sp.exit.as_ref().is_some_and(|e| e.code != Some(0));
        out.push(TlRow {
            depth: depth + 1,
            label: format!("$ {}", sp.argv.join(" ")),
            span: None,
            at: None,
            info: format!(
                "{} {}",
                sp.duration_ns.map(model::dur).unwrap_or_default(),
                sp.exit.as_ref().map(model::Exit::label).unwrap_or_default()
            )
            .trim()
            .to_string(),
            status: if failed { Status::Fail } else { Status::Plain },
            target: Target::Spawned(path.clone(), i),
        });
    }
    for (i, n) in s.invocations.iter().enumerate() {
        out.push(TlRow {
            depth: depth + 1,
            label: format!("↳ {} {} [{}]", n.command, n.ifname, n.chain.join(" › ")),
            span: None,
            at: None,
            info: n.verdict.summary.clone(),
            status: if n.verdict.ok {
                Status::Plain
            } else {
                Status::Fail
            },
            target: Target::None,
        });
        for (j, ns) in n.steps.iter().enumerate() {
            let mut p = path.clone();
            p.push(Seg::Nested(i));
            p.push(Seg::Step(j));
            step_rows(ns, p, depth + 2, out, t1);
        }
    }
}

/// The commands cniscope-cni recorded in its tag, if any.
pub fn tag_commands(inv: &Invocation) -> &[Value] {
    inv.tag
        .as_ref()
        .and_then(|t| t.get("commands"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

impl Timeline {
    pub fn build(seq: u64, inv: Arc<Invocation>) -> Self {
        let mut rows = Vec::new();
        let t0 = inv.start_ns;
        let mut t1 = inv.end_ns.unwrap_or(t0);
        for (i, s) in inv.steps.iter().enumerate() {
            step_rows(s, vec![Seg::Step(i)], 0, &mut rows, &mut t1);
        }
        let cmds = tag_commands(&inv);
        if !cmds.is_empty() {
            rows.push(TlRow {
                depth: 0,
                label: "cniscope-cni commands (tag)".into(),
                span: None,
                at: None,
                info: inv
                    .tag
                    .as_ref()
                    .and_then(|t| t.get("source"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                status: Status::Plain,
                target: Target::None,
            });
        }
        for (i, c) in cmds.iter().enumerate() {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
            let outcome = s("outcome");
            let code = c.get("exit_code").and_then(Value::as_i64);
            let first_out = s("stdout").lines().next().unwrap_or("").to_string();
            rows.push(TlRow {
                depth: 1,
                label: format!("$ {}", s("command")),
                span: None,
                at: None,
                info: match code {
                    Some(c) if c != 0 => format!("{outcome} exit {c}"),
                    _ if first_out.is_empty() => outcome.to_string(),
                    _ => format!("{outcome}: {first_out}"),
                },
                status: if outcome == "ran" && code.unwrap_or(0) == 0 {
                    Status::Plain
                } else {
                    Status::Fail
                },
                target: Target::TagCommand(i),
            });
        }
        Self {
            seq,
            inv,
            rows,
            sel: 0,
            offset: 0,
            t0,
            t1: t1.max(t0 + 1),
        }
    }
}

impl Timeline {
    /// Lines above the rows: the title, the verdict of a failure, the axis.
    pub fn head(&self) -> u16 {
        if self.inv.verdict.ok { 2 } else { 3 }
    }

    /// Rows of the body in a main area.
    pub fn body_height(&self, main: Rect) -> usize {
        usize::from(main.height.saturating_sub(self.head()))
    }
}

fn status_style(t: &Theme, s: Status) -> Style {
    match s {
        Status::Ok => t.normal(),
        Status::Fail => t.fail(),
        Status::Warn => t.warn(),
        Status::Plain => t.dim(),
    }
}

/// The axis: five ticks along `width` cells with their offsets; the total always shows at the
/// right end, and labels that would overlap are left out.
fn axis(width: usize, span_ns: u64) -> String {
    let mut cells: Vec<char> = vec!['─'; width];
    let put = |at: usize, l: &str, cells: &mut Vec<char>| {
        for (i, ch) in l.chars().enumerate() {
            if let Some(c) = cells.get_mut(at + i) {
                *c = ch;
            }
        }
    };
    for q in 0..=4u64 {
        let x = (width.saturating_sub(1) as u64 * q / 4) as usize;
        if let Some(c) = cells.get_mut(x) {
            *c = '┼';
        }
    }
    let total = model::dur(span_ns);
    let end_at = width.saturating_sub(total.chars().count());
    put(end_at, &total, &mut cells);
    let mut free_from = 0usize;
    for q in 0..4u64 {
        let x = (width.saturating_sub(1) as u64 * q / 4) as usize;
        let l = if q == 0 {
            "0".to_string()
        } else {
            model::dur(span_ns * q / 4)
        };
        let n = l.chars().count();
        if x + 1 < free_from || x + 1 + n >= end_at {
            continue;
        }
        put(x + 1, &l, &mut cells);
        free_from = x + 2 + n;
    }
    cells.into_iter().collect()
}

pub fn render(tl: &Timeline, f: &mut Frame, area: Rect, t: &Theme) {
    let w = usize::from(area.width);
    let lw = (w * 3 / 10).clamp(14, 32);
    let iw = (w / 5).clamp(8, 26);
    let bw = w.saturating_sub(lw + iw + 2).max(1);
    let span_ns = tl.t1 - tl.t0;
    let inv = &tl.inv;
    let who = inv
        .pod
        .as_ref()
        .and_then(model::Pod::label)
        .unwrap_or_else(|| inv.container_id.clone());
    let mut lines = Vec::with_capacity(usize::from(area.height));
    let verdict_style = if inv.verdict.ok { t.ok() } else { t.fail() };
    lines.push(Line::from(vec![
        Span::styled(
            format!("{} {} ", model::clock(&inv.ts), inv.command),
            t.heading(),
        ),
        Span::styled(format!("{who} "), t.accent()),
        Span::raw(format!(
            "{} {} {} ",
            inv.network.as_deref().unwrap_or("-"),
            inv.ifname,
            inv.duration_ns.map(model::dur).unwrap_or_default()
        )),
        Span::styled(if inv.verdict.ok { "ok" } else { "FAILED" }, verdict_style),
    ]));
    if !inv.verdict.ok {
        lines.push(Line::styled(inv.verdict.summary.clone(), t.fail()));
    }
    lines.push(Line::from(vec![
        Span::styled(pad("step", lw + 1), t.dim()),
        Span::styled(axis(bw, span_ns), t.dim()),
        Span::styled(format!(" {}", pad("took / outcome", iw)), t.dim()),
    ]));
    let h = tl.body_height(area);
    for (i, r) in tl.rows.iter().enumerate().skip(tl.offset).take(h) {
        let indent = "  ".repeat(usize::from(r.depth));
        let st = status_style(t, r.status);
        let mut spans = Vec::new();
        match (r.span, r.at) {
            (Some((s, e)), _) => {
                let x0 =
                    ((s.saturating_sub(tl.t0)) as u128 * bw as u128 / span_ns as u128) as usize;
                let x1 =
                    ((e.saturating_sub(tl.t0)) as u128 * bw as u128 / span_ns as u128) as usize;
                let x0 = x0.min(bw - 1);
                let x1 = x1.clamp(x0 + 1, bw);
                let fill = if r.depth == 0 { '█' } else { '▒' };
                let bar_style = if r.status == Status::Fail {
                    t.bar_fail()
                } else {
                    t.bar()
                };
                spans.push(Span::styled(pad(&format!("{indent}{}", r.label), lw), st));
                spans.push(Span::raw(" "));
                spans.push(Span::raw(" ".repeat(x0)));
                spans.push(Span::styled(fill.to_string().repeat(x1 - x0), bar_style));
                spans.push(Span::raw(" ".repeat(bw - x1)));
            }
            (None, at) => {
                let off = at
                    .map(|a| format!(" +{}", model::dur(a.saturating_sub(tl.t0))))
                    .unwrap_or_default();
                let text = format!("{indent}{}", r.label);
                let room = (lw + 1 + bw).saturating_sub(off.chars().count());
                spans.push(Span::styled(pad(&text, room), st));
                spans.push(Span::styled(off, t.dim()));
            }
        }
        spans.push(Span::styled(format!(" {}", pad(&r.info, iw)), st));
        let mut line = Line::from(spans);
        if i == tl.sel {
            line = line.style(t.selected());
        }
        lines.push(line);
    }
    if tl.rows.is_empty() {
        lines.push(Line::styled("  (no steps)", t.dim()));
    }
    f.render_widget(Paragraph::new(lines), area);
}
