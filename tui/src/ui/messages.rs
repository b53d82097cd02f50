//! The message browser and the single-message overlay.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::{num, placeholder, DIM, ERROR, HEADER_STYLE, SELECTED, WARN};
use crate::app::App;
use crate::format::{self, Rendered};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(b) = &app.messages else {
        let text = Line::from(Span::styled("no topic chosen: :topics, select one, m", DIM));
        return placeholder(frame, area, "messages", text);
    };
    let [info, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(3)]).areas(area);
    let visible = b.visible();
    // "scanned N of M" so an empty filtered result is never silent.
    let mut spans = vec![Span::styled(
        format!(" {} ", b.start.describe()),
        HEADER_STYLE,
    )];
    if !b.list.filter.is_empty() {
        spans.push(format!(" /{}: {} match", b.list.filter, visible.len()).into());
    }
    spans.push(Span::raw(format!(
        "  scanned {} of {}",
        format::thousands(b.scanned as i64),
        num(b.total)
    )));
    if b.loading {
        spans.push(Span::styled("  loading…", WARN));
    } else if b.total.is_some_and(|t| (b.scanned as i64) < t) && b.start != crate::app::StartAt::End
    {
        spans.push(Span::styled("  n: more", DIM));
    }
    if let Some(e) = &b.error {
        spans.push(Span::styled(format!("  {e}"), ERROR));
    }
    frame.render_widget(Line::from(spans), info);

    let header = Row::new(["P", "OFFSET", "TIMESTAMP (UTC)", "KEY", "VALUE"]).style(HEADER_STYLE);
    let rows = visible.iter().map(|m| {
        Row::new([
            m.partition.to_string(),
            m.offset.to_string(),
            format::timestamp_utc(m.timestamp),
            format::one_line(m.key.as_deref()),
            format::one_line(m.value.as_deref()),
        ])
    });
    let widths = [
        Constraint::Length(3),
        Constraint::Length(8),
        Constraint::Length(23),
        Constraint::Length(12),
        Constraint::Min(10),
    ];
    let title = format!(" {} ({} shown) ", b.topic, visible.len());
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(b.list.selected));
    frame.render_stateful_widget(t, table, &mut state);
}

pub(super) fn draw_detail(frame: &mut Frame, area: Rect, app: &App, index: usize) {
    let Some(b) = &app.messages else {
        return;
    };
    let visible = b.visible();
    let Some(m) = visible.get(index) else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("partition ", DIM),
        m.partition.to_string().into(),
        Span::styled("  offset ", DIM),
        m.offset.to_string().into(),
        Span::styled("  time ", DIM),
        format!("{} UTC", format::timestamp_utc(m.timestamp)).into(),
    ])];
    let key = format::render_bytes(m.key.as_deref());
    let key_label = match key {
        Rendered::Null => "key ".to_string(),
        _ => format!("key ({}) ", key.kind()),
    };
    lines.push(Line::from(vec![
        Span::styled(key_label, DIM),
        key.text().replace('\n', " ").into(),
    ]));
    for (name, value) in &m.headers {
        lines.push(Line::from(vec![
            Span::styled("header ", DIM),
            format!("{name}: {}", format::one_line(value.as_deref())).into(),
        ]));
    }
    let value = format::render_bytes(m.value.as_deref());
    let size = m.value.as_ref().map_or(0, Vec::len);
    lines.push(Line::from(Span::styled(
        format!(
            "value ({}, {})",
            value.kind(),
            format::bytes_human(size as u64)
        ),
        DIM,
    )));
    let body: Vec<Line> = match &value {
        Rendered::Null => vec![Line::from(Span::styled("(null)", DIM))],
        v => v
            .text()
            .lines()
            .map(|l| Line::from(l.to_string()))
            .collect(),
    };
    lines.extend(body);
    let popup = area;
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(
                " {} message {} of {} — ↑↓ next, esc closes ",
                b.topic,
                index + 1,
                visible.len()
            ))),
        popup,
    );
}
