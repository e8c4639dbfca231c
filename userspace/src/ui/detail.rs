//! The detail view: one document per thing opened — a step (its stdin config and stdout result
//! pretty-printed, stderr, the CNI error, what it changed in the result, its netlink changes), a
//! netlink change (the raw op as the agent printed it), a spawned process, a cniscope-cni
//! command, or a whole invocation. Documents are built once when opened, not per frame.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use serde_json::Value;

use super::model::{self, Invocation, Op, Spawned, Step, Text};
use super::text::skip_chars;
use super::theme::Theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Heading,
    Text,
    Dim,
    Added,
    Removed,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocLine {
    pub kind: Kind,
    pub text: String,
}

/// An open document and where it is scrolled to.
#[derive(Debug, Clone)]
pub struct Detail {
    pub title: String,
    pub lines: Vec<DocLine>,
    pub scroll: usize,
    pub hscroll: usize,
    /// The view Esc returns to.
    pub from: super::app::View,
}

impl Detail {
    pub fn new(title: String, lines: Vec<DocLine>, from: super::app::View) -> Self {
        Self {
            title,
            lines,
            scroll: 0,
            hscroll: 0,
            from,
        }
    }

    /// Line indexes of the section headings.
    pub fn sections(&self) -> impl Iterator<Item = usize> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kind == Kind::Heading)
            .map(|(i, _)| i)
    }
}

#[derive(Default)]
struct Doc(Vec<DocLine>);

impl Doc {
    fn push(&mut self, kind: Kind, text: impl Into<String>) {
        self.0.push(DocLine {
            kind,
            text: text.into(),
        });
    }
    fn heading(&mut self, t: impl Into<String>) {
        if !self.0.is_empty() {
            self.push(Kind::Text, "");
        }
        self.push(Kind::Heading, t);
    }
    fn kv(&mut self, k: &str, v: impl AsRef<str>) {
        self.push(Kind::Text, format!("{k:<10} {}", v.as_ref()));
    }
    fn block(&mut self, kind: Kind, text: &str) {
        for l in text.lines() {
            self.push(kind, l.replace('\t', "    "));
        }
    }
    /// Pretty JSON when `t` is JSON (key order kept), else the text as it is.
    fn text(&mut self, t: &Text) {
        if t.binary {
            self.push(Kind::Dim, "(not UTF-8; base64)");
            self.block(Kind::Text, &t.text);
            return;
        }
        if t.text.trim().is_empty() {
            self.push(Kind::Dim, "(empty)");
            return;
        }
        match serde_json::from_str::<Value>(&t.text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
        {
            Some(p) => self.block(Kind::Text, &p),
            None => self.block(Kind::Text, &t.text),
        }
    }
    fn json(&mut self, v: &Value) {
        match serde_json::to_string_pretty(v) {
            Ok(p) => self.block(Kind::Text, &p),
            Err(_) => self.push(Kind::Text, v.to_string()),
        }
    }
}

fn op_line(o: &Op) -> String {
    format!(
        "{} {:<28} {} [{} {}]",
        if o.outcome.is_error() { "✗" } else { "✓" },
        o.op,
        o.outcome.label(),
        o.comm,
        o.netns_name.as_deref().unwrap_or("?")
    )
}

pub fn step_doc(inv: &Invocation, s: &Step) -> Vec<DocLine> {
    let mut d = Doc::default();
    d.heading(format!("{} {} (step {})", s.plugin, inv.command, s.index));
    d.kv("path", &s.path);
    d.kv("pid", format!("{} (parent {})", s.pid, s.ppid));
    d.kv("started", &s.start);
    d.kv(
        "took",
        s.duration_ns.map(model::dur).unwrap_or_else(|| "?".into()),
    );
    d.push(
        if s.ok { Kind::Text } else { Kind::Error },
        format!(
            "{:<10} {} {}",
            "exit",
            s.exit
                .as_ref()
                .map(model::Exit::label)
                .unwrap_or_else(|| "not seen".into()),
            if s.ok { "(ok)" } else { "(FAILED)" }
        ),
    );
    d.kv(
        "captured",
        format!(
            "{}{}",
            if s.complete { "complete" } else { "INCOMPLETE" },
            if s.held { ", held at exec" } else { "" }
        ),
    );
    for p in &s.problems {
        d.push(Kind::Error, format!("problem    {p}"));
    }
    if let Some(e) = &s.error {
        d.heading("CNI error");
        d.0.extend(json_lines(e, Kind::Error));
    }
    d.heading("stdin (config)");
    d.text(&s.stdin);
    d.heading("stdout (result)");
    d.text(&s.stdout);
    d.heading("stderr");
    d.text(&s.stderr);
    if let Some(diff) = &s.diff {
        d.heading("diff (prevResult → result)");
        if diff.unchanged {
            d.push(Kind::Dim, "unchanged: the result is the prevResult");
        }
        for (side, kind, sign) in [
            (&diff.added, Kind::Added, '+'),
            (&diff.removed, Kind::Removed, '-'),
        ] {
            for (name, items) in [
                ("interface", &side.interfaces),
                ("ip", &side.ips),
                ("route", &side.routes),
                ("dns", &side.dns),
            ] {
                for i in items {
                    d.push(kind, format!("{sign} {name:<9} {i}"));
                }
            }
        }
    }
    if !s.netlink.is_empty() {
        d.heading(format!("netlink ({})", s.netlink.len()));
        for o in &s.netlink {
            d.push(
                if o.outcome.is_error() {
                    Kind::Error
                } else {
                    Kind::Text
                },
                op_line(o),
            );
        }
    }
    if !s.delegates.is_empty() {
        d.heading(format!("delegates ({})", s.delegates.len()));
        for x in &s.delegates {
            d.push(
                if x.ok { Kind::Text } else { Kind::Error },
                format!(
                    "{} pid {} {}",
                    x.plugin,
                    x.pid,
                    x.duration_ns.map(model::dur).unwrap_or_default()
                ),
            );
        }
    }
    if !s.spawned.is_empty() {
        d.heading(format!("spawned ({})", s.spawned.len()));
        for x in &s.spawned {
            d.push(Kind::Text, format!("$ {}", x.argv.join(" ")));
        }
    }
    d.0
}

fn json_lines(v: &Value, kind: Kind) -> Vec<DocLine> {
    let mut d = Doc::default();
    d.json(v);
    d.0.into_iter()
        .map(|l| DocLine { kind, text: l.text })
        .collect()
}

pub fn op_doc(o: &Op, source: &str) -> Vec<DocLine> {
    let mut d = Doc::default();
    d.heading(format!("netlink: {}", o.op));
    d.kv(
        "by",
        format!("{source} — {} pid {} tgid {}", o.comm, o.pid, o.tgid),
    );
    d.kv(
        "netns",
        format!("{} ({})", o.netns_name.as_deref().unwrap_or("?"), o.netns),
    );
    d.kv("at", &o.ts);
    d.push(
        if o.outcome.is_error() {
            Kind::Error
        } else {
            Kind::Text
        },
        format!("{:<10} {}", "outcome", o.outcome.label()),
    );
    d.heading("raw op");
    match serde_json::to_value(o) {
        Ok(v) => d.json(&v),
        Err(e) => d.push(Kind::Error, e.to_string()),
    }
    d.0
}

pub fn spawned_doc(s: &Spawned, parent: &str) -> Vec<DocLine> {
    let mut d = Doc::default();
    d.heading(format!("spawned by {parent}: {}", s.filename));
    d.kv("argv", s.argv.join(" "));
    d.kv("pid", format!("{} (parent {})", s.tgid, s.ppid));
    d.kv(
        "took",
        s.duration_ns.map(model::dur).unwrap_or_else(|| "?".into()),
    );
    d.kv(
        "exit",
        s.exit.as_ref().map(model::Exit::label).unwrap_or_default(),
    );
    d.0
}

pub fn tag_command_doc(c: &Value) -> Vec<DocLine> {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut d = Doc::default();
    d.heading(format!("cniscope-cni: {}", s("command")));
    for k in ["action", "outcome"] {
        d.kv(k, s(k));
    }
    if let Some(code) = c.get("exit_code") {
        d.kv("exit", code.to_string());
    }
    if let Some(ms) = c.get("duration_ms").and_then(Value::as_f64) {
        d.kv("took", format!("{ms:.1}ms"));
    }
    d.heading("stdout");
    d.block(Kind::Text, &s("stdout"));
    d.heading("stderr");
    d.block(Kind::Text, &s("stderr"));
    d.heading("raw");
    d.json(c);
    d.0
}

pub fn invocation_doc(inv: &Invocation) -> Vec<DocLine> {
    let mut d = Doc::default();
    d.heading(format!("{} {}", inv.command, inv.id));
    if let Some(p) = &inv.pod {
        d.kv("pod", p.label().unwrap_or_default());
        if let Some(u) = &p.uid {
            d.kv("pod uid", u);
        }
    }
    d.kv("container", &inv.container_id);
    d.kv("network", inv.network.as_deref().unwrap_or("-"));
    d.kv("ifname", &inv.ifname);
    d.kv(
        "netns",
        format!(
            "{} ({})",
            inv.netns.as_deref().unwrap_or("-"),
            inv.netns_inode.map(|i| i.to_string()).unwrap_or_default()
        ),
    );
    d.kv(
        "runtime",
        format!(
            "{} pid {}",
            inv.runtime.comm.as_deref().unwrap_or("?"),
            inv.runtime.pid
        ),
    );
    d.kv("started", &inv.ts);
    d.kv(
        "took",
        inv.duration_ns
            .map(model::dur)
            .unwrap_or_else(|| "?".into()),
    );
    d.kv("chain", inv.chain.join(" › "));
    d.kv(
        "revision",
        format!(
            "{}{}",
            inv.revision,
            if inv.partial { " (partial)" } else { "" }
        ),
    );
    d.heading("verdict");
    d.push(
        if inv.verdict.ok {
            Kind::Added
        } else {
            Kind::Error
        },
        inv.verdict.summary.clone(),
    );
    if let Some(s) = &inv.slowest {
        d.kv(
            "slowest",
            format!(
                "{} (step {}) {}",
                s.plugin,
                s.index,
                model::dur(s.duration_ns)
            ),
        );
    }
    for f in &inv.verdict.netlink_errors {
        d.push(
            Kind::Error,
            format!(
                "kernel refused {} ({}): {} {}",
                f.op,
                f.plugin,
                f.error.as_deref().unwrap_or(""),
                f.extack.as_deref().unwrap_or("")
            ),
        );
    }
    d.heading("steps");
    for s in &inv.steps {
        d.push(
            if s.ok { Kind::Text } else { Kind::Error },
            format!(
                "{} {:<14} {:>8} {} netlink {}",
                s.index,
                s.plugin,
                s.duration_ns.map(model::dur).unwrap_or_default(),
                s.exit.as_ref().map(model::Exit::label).unwrap_or_default(),
                s.netlink.len()
            ),
        );
    }
    if let Some(tag) = &inv.tag {
        d.heading("cniscope-cni tag");
        d.json(tag);
    }
    d.0
}

pub fn render(dt: &Detail, f: &mut Frame, area: Rect, t: &Theme) {
    let h = usize::from(area.height);
    let lines: Vec<Line> = dt
        .lines
        .iter()
        .skip(dt.scroll)
        .take(h)
        .map(|l| {
            let style = match l.kind {
                Kind::Heading => t.heading(),
                Kind::Text => t.normal(),
                Kind::Dim => t.dim(),
                Kind::Added => t.added(),
                Kind::Removed => t.removed(),
                Kind::Error => t.fail(),
            };
            Line::styled(skip_chars(&l.text, dt.hscroll).to_string(), style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}
