//! `view(&state, frame)`: the whole screen from the state, nothing else. The layout is one
//! function shared with `update`, so page sizes and scrolling agree with what is drawn.

use ratatui::Frame;
use ratatui::layout::Rect;

use super::app::{Mode, State, View};
use super::{bars, detail, help, list, netns, timeline};

pub struct Areas {
    pub header: Rect,
    pub main: Rect,
    pub filter: Option<Rect>,
    pub status: Rect,
}

/// Header line, main area, the filter bar (when shown) and the status line.
pub fn areas(size: Rect, filter_bar: bool) -> Areas {
    let h = size.height;
    let row = |y: u16| {
        Rect::new(
            size.x,
            size.y + y.min(h.saturating_sub(1)),
            size.width,
            1.min(h),
        )
    };
    let bottom = 1 + u16::from(filter_bar);
    let main_h = h.saturating_sub(1 + bottom);
    Areas {
        header: row(0),
        main: Rect::new(size.x, size.y + 1.min(h), size.width, main_h),
        filter: filter_bar.then(|| row(h.saturating_sub(2))),
        status: row(h.saturating_sub(1)),
    }
}

pub fn view(s: &State, f: &mut Frame) {
    let size = f.area();
    if size.width < 20 || size.height < 5 {
        bars::too_small(f, size, &s.theme);
        return;
    }
    let a = areas(size, s.filter_bar());
    bars::header(s, f, a.header);
    match s.view {
        View::Invocations => list::render(s, f, a.main),
        View::Timeline => match &s.timeline {
            Some(t) => timeline::render(t, f, a.main, &s.theme),
            None => bars::empty(f, a.main, &s.theme, "no invocation selected"),
        },
        View::Detail => match &s.detail {
            Some(d) => detail::render(d, f, a.main, &s.theme),
            None => bars::empty(
                f,
                a.main,
                &s.theme,
                "nothing opened: Enter on a timeline row",
            ),
        },
        View::Netns => netns::render(s, f, a.main),
    }
    if let Some(r) = a.filter {
        bars::filter(s, f, r);
    }
    bars::status(s, f, a.status);
    if s.mode == Mode::Help {
        help::render(f, size, &s.theme);
    }
}
