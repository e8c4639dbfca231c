//! Every key binding in one table: `update` looks keys up here and the help overlay (`?`) prints
//! it, so the two cannot disagree. Nothing needs a mouse; every action has a plain letter so it
//! works over `kubectl exec -it` and terminals that send odd codes for arrows.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Left,
    Right,
    Open,
    Back,
    Invocations,
    Timeline,
    Detail,
    Netns,
    Filter,
    ClearFilter,
    FailuresOnly,
    Follow,
    Pause,
    Focus,
    NextSection,
    PrevSection,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everywhere,
    /// Views that show a list to move in.
    Lists,
    Invocations,
    Detail,
    Netns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Code(KeyCode),
}

pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in the help overlay.
    pub label: &'static str,
    pub action: Action,
    pub scope: Scope,
    pub help: &'static str,
}

use Action as A;
use Key::{Char as C, Code, Ctrl};
use Scope as S;

#[rustfmt::skip]
pub const BINDINGS: &[Binding] = &[
    Binding { keys: &[C('q'), Ctrl('c')], label: "q", action: A::Quit, scope: S::Everywhere, help: "quit" },
    Binding { keys: &[C('?'), Code(KeyCode::F(1))], label: "?", action: A::Help, scope: S::Everywhere, help: "this help" },
    Binding { keys: &[C('i'), C('1')], label: "i 1", action: A::Invocations, scope: S::Everywhere, help: "invocations: newest first" },
    Binding { keys: &[C('t'), C('2')], label: "t 2", action: A::Timeline, scope: S::Everywhere, help: "timeline of the selection" },
    Binding { keys: &[C('d'), C('3')], label: "d 3", action: A::Detail, scope: S::Everywhere, help: "detail: config, result, diff" },
    Binding { keys: &[C('n'), C('4')], label: "n 4", action: A::Netns, scope: S::Everywhere, help: "netns: pods, change history" },
    Binding { keys: &[C('k'), Code(KeyCode::Up)], label: "k ↑", action: A::Up, scope: S::Everywhere, help: "up (stops following)" },
    Binding { keys: &[C('j'), Code(KeyCode::Down)], label: "j ↓", action: A::Down, scope: S::Everywhere, help: "down" },
    Binding { keys: &[Ctrl('u'), Ctrl('b'), Code(KeyCode::PageUp)], label: "PgUp ^u", action: A::PageUp, scope: S::Everywhere, help: "page up" },
    Binding { keys: &[Ctrl('d'), Ctrl('f'), Code(KeyCode::PageDown)], label: "PgDn ^d", action: A::PageDown, scope: S::Everywhere, help: "page down" },
    Binding { keys: &[C('g'), Code(KeyCode::Home)], label: "g Home", action: A::Top, scope: S::Everywhere, help: "top (newest; follows again)" },
    Binding { keys: &[C('G'), Code(KeyCode::End)], label: "G End", action: A::Bottom, scope: S::Everywhere, help: "bottom" },
    Binding { keys: &[C('h'), Code(KeyCode::Left)], label: "h ←", action: A::Left, scope: S::Detail, help: "scroll left" },
    Binding { keys: &[C('l'), Code(KeyCode::Right)], label: "l →", action: A::Right, scope: S::Detail, help: "scroll right" },
    Binding { keys: &[Code(KeyCode::Enter)], label: "Enter", action: A::Open, scope: S::Everywhere, help: "open: list→timeline→detail" },
    Binding { keys: &[Code(KeyCode::Esc), Code(KeyCode::Backspace)], label: "Esc", action: A::Back, scope: S::Everywhere, help: "back" },
    Binding { keys: &[C('/')], label: "/", action: A::Filter, scope: S::Everywhere, help: "filter pod: ns: plugin: cmd:" },
    Binding { keys: &[C('c')], label: "c", action: A::ClearFilter, scope: S::Everywhere, help: "clear the filter" },
    Binding { keys: &[C('x')], label: "x", action: A::FailuresOnly, scope: S::Everywhere, help: "failures only, on/off" },
    Binding { keys: &[C('f')], label: "f", action: A::Follow, scope: S::Invocations, help: "follow newest, on/off" },
    Binding { keys: &[C(' '), C('p')], label: "Space p", action: A::Pause, scope: S::Everywhere, help: "pause/resume the live stream" },
    Binding { keys: &[Code(KeyCode::Tab)], label: "Tab", action: A::Focus, scope: S::Netns, help: "netns: list ⇄ history" },
    Binding { keys: &[Code(KeyCode::Tab), C(']')], label: "Tab ]", action: A::NextSection, scope: S::Detail, help: "next section" },
    Binding { keys: &[Code(KeyCode::BackTab), C('[')], label: "S-Tab [", action: A::PrevSection, scope: S::Detail, help: "previous section" },
];

/// Whether a binding's scope covers `scope` (the current view's).
fn covers(b: Scope, here: Scope) -> bool {
    b == Scope::Everywhere || b == here || (b == Scope::Lists && here != Scope::Detail)
}

/// The action for a key press in a view of `scope`, if any.
pub fn lookup(ev: &KeyEvent, scope: Scope) -> Option<Action> {
    let pressed = if ev.modifiers.contains(KeyModifiers::CONTROL) {
        match ev.code {
            KeyCode::Char(c) => Key::Ctrl(c.to_ascii_lowercase()),
            other => Key::Code(other),
        }
    } else {
        match ev.code {
            KeyCode::Char(c) => Key::Char(c),
            other => Key::Code(other),
        }
    };
    BINDINGS
        .iter()
        .find(|b| covers(b.scope, scope) && b.keys.contains(&pressed))
        .map(|b| b.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(c, m)
    }

    #[test]
    fn lookups() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            lookup(&key(KeyCode::Char('q'), none), Scope::Invocations),
            Some(Action::Quit)
        );
        assert_eq!(
            lookup(
                &key(KeyCode::Char('c'), KeyModifiers::CONTROL),
                Scope::Detail
            ),
            Some(Action::Quit)
        );
        assert_eq!(
            lookup(&key(KeyCode::Char('c'), none), Scope::Detail),
            Some(Action::ClearFilter)
        );
        assert_eq!(
            lookup(&key(KeyCode::Tab, none), Scope::Netns),
            Some(Action::Focus)
        );
        assert_eq!(
            lookup(&key(KeyCode::Tab, none), Scope::Detail),
            Some(Action::NextSection)
        );
        assert_eq!(lookup(&key(KeyCode::Char('f'), none), Scope::Detail), None);
        assert_eq!(
            lookup(
                &key(KeyCode::Char('G'), KeyModifiers::SHIFT),
                Scope::Invocations
            ),
            Some(Action::Bottom)
        );
        assert_eq!(
            lookup(&key(KeyCode::Char('z'), none), Scope::Invocations),
            None
        );
    }

    #[test]
    fn every_action_has_help_and_keys() {
        for b in BINDINGS {
            assert!(!b.keys.is_empty() && !b.help.is_empty() && !b.label.is_empty());
        }
    }
}
