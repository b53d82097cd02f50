//! The cluster view: brokers and partition health.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{not_loaded, placeholder, DIM, ERROR, HEADER_STYLE, SELECTED, WARN};
use crate::app::App;

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(c) = &app.cluster.data else {
        let text = not_loaded(
            app.cluster.loading,
            app.cluster.error.as_ref(),
            "cluster metadata",
        );
        return placeholder(frame, area, "cluster", text);
    };
    let [summary, table] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(area);
    let health = |n: usize, what: &str, style| {
        if n == 0 {
            Span::styled(format!("0 {what}"), DIM)
        } else {
            Span::styled(format!("{n} {what}"), style)
        }
    };
    let lines = vec![
        Line::from(vec![
            "cluster id  ".into(),
            Span::raw(c.cluster_id.clone().unwrap_or_else(|| "-".into())),
            "   controller  ".into(),
            Span::raw(c.controller_id.to_string()),
        ]),
        Line::from(vec![
            format!(
                "{} topics, {} partitions   ",
                c.topic_count, c.partition_count
            )
            .into(),
            health(c.under_replicated, "under-replicated", WARN),
            ", ".into(),
            health(c.offline, "offline", ERROR),
        ]),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" cluster ")),
        summary,
    );
    let header = Row::new(["ID", "ADDRESS", "RACK", "ROLE", "LEADS"]).style(HEADER_STYLE);
    let rows = c.brokers.iter().map(|b| {
        Row::new([
            b.id.to_string(),
            b.address(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
            if b.id == c.controller_id {
                "controller".into()
            } else {
                String::new()
            },
            b.partitions_led.to_string(),
        ])
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Min(20),
        Constraint::Length(12),
        Constraint::Length(11),
        Constraint::Length(6),
    ];
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(format!(" brokers ({}) ", c.brokers.len())));
    let mut state = TableState::default().with_selected(Some(app.list().selected));
    frame.render_stateful_widget(t, table, &mut state);
}
