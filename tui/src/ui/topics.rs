//! The topics list and the topic detail (partitions, consumers, configs).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Row, Table, TableState};
use ratatui::Frame;

use super::{not_loaded, num, placeholder, DIM, HEADER_STYLE, SELECTED, WARN};
use crate::app::App;
use crate::format;

pub(super) fn draw_list(frame: &mut Frame, area: Rect, app: &App) {
    if app.topics.data.is_none() {
        let text = not_loaded(app.topics.loading, app.topics.error.as_ref(), "topics");
        return placeholder(frame, area, "topics", text);
    }
    let visible = app.visible_topics();
    let total = app.topics.data.as_ref().map_or(0, Vec::len);
    let header = Row::new(["NAME", "PARTS", "RF", "MESSAGES", "SIZE", "URP"]).style(HEADER_STYLE);
    let rows = visible.iter().map(|t| {
        let style = if t.internal { DIM } else { Style::new() };
        let urp = if t.under_replicated { "yes" } else { "" };
        let name = match &t.error {
            Some(e) => format!("{} ({e})", t.name),
            None => t.name.clone(),
        };
        Row::new([
            name,
            t.partitions.to_string(),
            t.replication_factor.to_string(),
            num(t.messages),
            t.size
                .map(format::bytes_human)
                .unwrap_or_else(|| "-".into()),
            urp.to_string(),
        ])
        .style(if t.under_replicated { WARN } else { style })
    });
    let widths = [
        Constraint::Min(20),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(4),
    ];
    let title = if visible.len() == total {
        format!(" topics ({total}) ")
    } else {
        format!(" topics ({} of {total}) ", visible.len())
    };
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.list().selected));
    frame.render_stateful_widget(t, area, &mut state);
}

pub(super) fn draw_detail(frame: &mut Frame, area: Rect, app: &App, topic: &str) {
    let detail = app.topic_detail.data.as_ref().filter(|d| d.name == topic);
    let Some(d) = detail.filter(|d| !d.partitions.is_empty()) else {
        let text = not_loaded(
            app.topic_detail.loading,
            app.topic_detail.error.as_ref(),
            "partitions",
        );
        return placeholder(frame, area, &format!("topic {topic}"), text);
    };
    let configs = d.configs.as_deref().unwrap_or(&[]);
    let overridden: Vec<_> = configs
        .iter()
        .filter(|c| c.source != "DEFAULT_CONFIG")
        .collect();
    let config_height = if d.configs.is_none() {
        3
    } else {
        (overridden.len() as u16 + 2).clamp(3, 8)
    };
    let [parts_area, config_area] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(config_height)]).areas(area);

    let row = d.row();
    let header = Row::new([
        "P",
        "LEADER",
        "REPLICAS",
        "ISR",
        "START",
        "END",
        "MSGS",
        "GROUPS (LAG)",
    ])
    .style(HEADER_STYLE);
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let rows = d.partitions.iter().map(|p| {
        let groups = p
            .consumers
            .iter()
            .map(|c| format!("{}({})", c.group, format::thousands(c.lag)))
            .collect::<Vec<_>>()
            .join(" ");
        let leader = if p.offline() {
            "none".into()
        } else {
            p.leader.to_string()
        };
        let style = if p.offline() || p.under_replicated() {
            WARN
        } else {
            Style::new()
        };
        Row::new([
            p.index.to_string(),
            leader,
            ids(&p.replicas),
            ids(&p.isr),
            num(p.start),
            num(p.end),
            num(p.messages()),
            groups,
        ])
        .style(style)
    });
    let widths = [
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Min(12),
    ];
    let title = format!(
        " {topic}: {} partitions, RF {}, {} messages{} ",
        row.partitions,
        row.replication_factor,
        num(row.messages),
        if row.under_replicated {
            ", under-replicated"
        } else {
            ""
        }
    );
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.list().selected));
    frame.render_stateful_widget(t, parts_area, &mut state);

    let block = Block::bordered().title(format!(
        " configs: {} set, {} default ",
        overridden.len(),
        configs.len() - overridden.len()
    ));
    if d.configs.is_none() {
        let text = Line::from(Span::styled("loading configs…", WARN));
        return frame.render_widget(
            ratatui::widgets::Paragraph::new(text).block(block),
            config_area,
        );
    }
    let rows = overridden.iter().map(|c| {
        let flags = match (c.read_only, c.sensitive) {
            (true, _) => "read-only",
            (_, true) => "sensitive",
            _ => "",
        };
        Row::new([
            c.name.clone(),
            c.shown_value().to_string(),
            c.source.clone(),
            flags.into(),
        ])
    });
    let widths = [
        Constraint::Min(20),
        Constraint::Min(12),
        Constraint::Length(22),
        Constraint::Length(9),
    ];
    let mut t = Table::new(rows, widths).block(block);
    if overridden.is_empty() {
        t = t.header(Row::new(["all defaults"]).style(DIM));
    }
    frame.render_widget(t, config_area);
}
