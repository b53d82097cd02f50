//! Drawing: a pure function of `&App` into a ratatui `Frame`.
//!
//! Layout: a two-line header (address, brokers, read-only badge, where you are, last
//! refresh), the current view, a status/prompt line and a footer of keys taken from
//! the same table `update` uses. Overlays (help, dialogs, forms) draw on top.

mod cluster;
mod dialogs;
mod groups;
mod messages;
mod topics;

#[cfg(test)]
mod tests;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{App, Connection, Overlay, PromptKind, View};
use crate::format;
use crate::keys;

pub(crate) const HEADER_STYLE: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
pub(crate) const SELECTED: Style = Style::new()
    .bg(Color::DarkGray)
    .add_modifier(Modifier::BOLD);
pub(crate) const DIM: Style = Style::new().fg(Color::DarkGray);
pub(crate) const WARN: Style = Style::new().fg(Color::Yellow);
pub(crate) const ERROR: Style = Style::new().fg(Color::Red);

/// Draws the whole console.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, status, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, app);
    if let Connection::Unreachable {
        reason,
        attempts,
        next_retry_ms,
    } = &app.connection
    {
        draw_unreachable(frame, body, app, reason, *attempts, *next_retry_ms);
        let keys = Line::from(vec![
            " ".into(),
            key("r"),
            " retry now  ".into(),
            key("q"),
            " quit".into(),
        ]);
        frame.render_widget(keys, footer);
        return;
    }
    match app.view() {
        View::Cluster => cluster::draw(frame, body, app),
        View::Topics => topics::draw_list(frame, body, app),
        View::TopicDetail { topic } => topics::draw_detail(frame, body, app, topic),
        View::Messages { .. } => messages::draw(frame, body, app),
        View::Groups => groups::draw_list(frame, body, app),
        View::GroupDetail { group } => groups::draw_detail(frame, body, app, group),
    }
    draw_status(frame, status, app);
    draw_footer(frame, footer, app);
    match &app.overlay {
        Some(Overlay::Help) => draw_help(frame, body, app),
        Some(Overlay::ConfirmDelete(c)) => dialogs::confirm_delete(frame, body, c),
        Some(Overlay::Form(f)) => dialogs::form(frame, body, f),
        Some(Overlay::Reset(d)) => dialogs::reset(frame, body, d),
        Some(Overlay::Message { index }) => messages::draw_detail(frame, body, app, *index),
        Some(Overlay::Prompt { .. }) | None => {}
    }
}

pub(crate) fn key(k: &str) -> Span<'static> {
    Span::styled(
        k.to_string(),
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
    )
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let brokers = app.cluster.data.as_ref().map(|c| c.brokers.len());
    let mut top = vec![
        Span::styled(
            " sluice ",
            Style::new().fg(Color::Black).bg(Color::Cyan).bold(),
        ),
        " ".into(),
        Span::raw(app.config.bootstrap.clone()).bold(),
    ];
    if let Some(id) = app.cluster.data.as_ref().and_then(|c| c.cluster_id.clone()) {
        top.push(Span::styled(format!("  cluster {id}"), DIM));
    }
    match brokers {
        Some(n) => top.push(format!("  {n} broker{}", if n == 1 { "" } else { "s" }).into()),
        None => top.push(Span::styled("  brokers: ?", DIM)),
    }
    if app.config.read_only {
        top.push("  ".into());
        top.push(Span::styled(
            " READ-ONLY ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ));
    }
    let crumbs: Vec<String> = app.stack.iter().map(View::title).collect();
    let freshness = freshness(app);
    let [top_area, bottom_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    frame.render_widget(Line::from(top), top_area);
    let [crumb_area, fresh_area] = Layout::horizontal([
        Constraint::Min(10),
        Constraint::Length(freshness.width() as u16 + 1),
    ])
    .areas(bottom_area);
    frame.render_widget(
        Line::from(vec![
            " ".into(),
            Span::styled(crumbs.join(" › "), HEADER_STYLE),
        ]),
        crumb_area,
    );
    frame.render_widget(freshness.right_aligned(), fresh_area);
}

/// "refreshed 3s ago", "loading…", or "stale since 12:00:01" when the last load failed.
fn freshness(app: &App) -> Line<'static> {
    let loading = match app.view() {
        View::Cluster => app.cluster.loading,
        View::Topics => app.topics.loading,
        View::TopicDetail { .. } => app.topic_detail.loading,
        View::Messages { .. } => app.messages.as_ref().is_some_and(|b| b.loading),
        View::Groups => app.groups.loading,
        View::GroupDetail { .. } => app.group_detail.loading,
    };
    let age = app
        .last_refresh_ms
        .map(|t| format::duration_human(app.now_ms - t));
    let mut spans = Vec::new();
    if loading {
        spans.push(Span::styled("loading… ", WARN));
    }
    match (&app.connection, age) {
        (Connection::Connecting, _) => spans.push(Span::styled("connecting…", WARN)),
        (Connection::Unreachable { .. }, Some(a)) => {
            spans.push(Span::styled(format!("stale for {a}"), ERROR))
        }
        (_, Some(a)) => spans.push(Span::styled(format!("refreshed {a} ago"), DIM)),
        (_, None) => {}
    }
    Line::from(spans)
}

fn draw_unreachable(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    reason: &str,
    attempts: u32,
    next_retry_ms: i64,
) {
    let wait = (next_retry_ms - app.now_ms).max(0);
    let next = if app.cluster.loading {
        "retrying now…".to_string()
    } else {
        format!("retrying in {}", format::duration_human(wait + 999))
    };
    let text = vec![
        Line::from(Span::styled("Cannot reach the cluster", ERROR.bold())),
        Line::from(""),
        Line::from(vec!["address  ".into(), Span::raw(app.config.bootstrap.clone()).bold()]),
        Line::from(vec!["reason   ".into(), Span::styled(reason.to_string(), ERROR)]),
        Line::from(""),
        Line::from(format!(
            "attempt {attempts} failed, {next}. Check that a broker listens there and that the address is right (--bootstrap HOST:PORT)."
        )),
    ];
    let block = Block::bordered().title(" unreachable ").border_style(ERROR);
    let width = area.width.min(76);
    let popup = centered(area, width, 10);
    frame.render_widget(
        Paragraph::new(text).block(block).wrap(Wrap { trim: false }),
        popup,
    );
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    if let Some(Overlay::Prompt { kind, input }) = &app.overlay {
        let (lead, hint) = match kind {
            PromptKind::Jump => (
                ":",
                "  cluster, topics [TOPIC], groups [GROUP], messages [TOPIC]",
            ),
            PromptKind::Filter => ("/", "  enter keep, esc cancel"),
        };
        frame.render_widget(
            Line::from(vec![
                key(lead),
                Span::raw(input.clone()),
                Span::raw("█"),
                Span::styled(hint, DIM),
            ]),
            area,
        );
        return;
    }
    if let Some(s) = &app.status {
        let style = if s.error {
            ERROR
        } else {
            Style::new().fg(Color::Green)
        };
        frame.render_widget(
            Line::from(Span::styled(format!(" {}", s.text), style)),
            area,
        );
        return;
    }
    let filter = app.list().filter;
    if !filter.is_empty() {
        frame.render_widget(
            Line::from(vec![
                Span::styled(" filter ", DIM),
                Span::raw(format!("/{filter}")),
                Span::styled("  (esc clears)", DIM),
            ]),
            area,
        );
    }
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let mut view = vec![Span::raw(" ")];
    for b in keys::view_bindings(app.view(), app.config.read_only) {
        view.push(key(b.key_text));
        view.push(format!(" {}  ", b.label).into());
    }
    // All four global keys when they fit, else just help and quit: `?` lists the rest.
    let globals = |which: &[&str]| {
        let mut spans = Vec::new();
        if view.len() > 1 {
            spans.push(Span::styled("│ ", DIM));
        }
        for b in keys::GLOBAL.iter().filter(|b| which.contains(&b.key_text)) {
            spans.push(key(b.key_text));
            spans.push(format!(" {}  ", b.label).into());
        }
        spans
    };
    let width = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>();
    let mut tail = globals(&[":", "/", "?", "q"]);
    for fewer in [&["?", "q"][..], &["?"][..]] {
        if width(&view) + width(&tail) <= area.width as usize + 2 {
            break;
        }
        tail = globals(fewer);
    }
    view.extend(tail);
    frame.render_widget(Line::from(view), area);
}

fn draw_help(frame: &mut Frame, area: Rect, app: &App) {
    let mut lines = vec![Line::from(Span::styled(app.view().title(), HEADER_STYLE))];
    let view_keys = keys::view_bindings(app.view(), app.config.read_only);
    if view_keys.is_empty() {
        lines.push(Line::from(Span::styled("  (no keys of its own)", DIM)));
    }
    for b in view_keys {
        lines.push(Line::from(vec![
            "  ".into(),
            key(b.key_text),
            format!(
                "{:width$}{}",
                "",
                b.label,
                width = 7 - b.key_text.chars().count().min(7)
            )
            .into(),
        ]));
    }
    lines.push(Line::from(Span::styled("everywhere", HEADER_STYLE)));
    for b in keys::GLOBAL {
        lines.push(Line::from(vec![
            "  ".into(),
            key(b.key_text),
            format!(
                "{:width$}{}",
                "",
                b.label,
                width = 7 - b.key_text.chars().count().min(7)
            )
            .into(),
        ]));
    }
    lines.push(Line::from(vec![
        "  ".into(),
        key("↑↓ jk"),
        "  move, pgup/pgdn g/G jump".into(),
    ]));
    let names: Vec<&str> = keys::VIEW_NAMES.iter().map(|(n, _)| *n).collect();
    lines.push(Line::from(vec![
        Span::styled("views  ", HEADER_STYLE),
        format!(":{}", names.join("  :")).into(),
    ]));
    if app.config.read_only {
        lines.push(Line::from(Span::styled(
            "read-only: keys that change the cluster are not offered",
            WARN,
        )));
    }
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = centered(area, 60.min(area.width), height);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" help — esc closes ")),
        popup,
    );
}

/// A `width` x `height` rectangle in the middle of `area`.
pub(crate) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    h
}

/// A one-line "nothing here" / "loading" / error message inside a block.
pub(crate) fn placeholder(frame: &mut Frame, area: Rect, title: &str, text: Line<'static>) {
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}

/// Placeholder text for data that has not arrived.
pub(crate) fn not_loaded(loading: bool, error: Option<&String>, what: &str) -> Line<'static> {
    match error {
        Some(e) => Line::from(Span::styled(format!("could not load {what}: {e}"), ERROR)),
        None if loading => Line::from(Span::styled(format!("loading {what}…"), WARN)),
        None => Line::from(Span::styled(format!("no {what} yet"), DIM)),
    }
}

/// "12,345" or "-" for unknown numbers.
pub(crate) fn num(n: Option<i64>) -> String {
    n.map(format::thousands).unwrap_or_else(|| "-".into())
}

/// A text sparkline of the last `width` values, for table cells.
pub(crate) fn mini_sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = relative(&values[values.len().saturating_sub(width)..]);
    // A constant lag is drawn as a level line at half height.
    let max = match tail.iter().copied().max().unwrap_or(0) {
        1 => 2,
        m => m,
    };
    tail.iter()
        .map(|&v| BARS[v.saturating_mul(7).checked_div(max).unwrap_or(0).min(7) as usize])
        .collect()
}

/// Values lifted off a baseline just under their minimum, so that a lag moving
/// between 1,050 and 1,400 shows its trend instead of eight full bars.
pub(crate) fn relative(values: &[u64]) -> Vec<u64> {
    let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
        return Vec::new();
    };
    let base = min.saturating_sub((max - min) / 7 + 1);
    values.iter().map(|v| v - base).collect()
}
