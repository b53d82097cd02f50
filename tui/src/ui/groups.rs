//! The consumer groups list and the group detail (members, lag, history).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::{
    mini_sparkline, not_loaded, num, placeholder, relative, DIM, HEADER_STYLE, SELECTED, WARN,
};
use crate::app::App;
use crate::format;
use crate::model::CatchUp;

pub(super) fn draw_list(frame: &mut Frame, area: Rect, app: &App) {
    if app.groups.data.is_none() {
        let text = not_loaded(app.groups.loading, app.groups.error.as_ref(), "groups");
        return placeholder(frame, area, "groups", text);
    }
    let visible = app.visible_groups();
    let total = app.groups.data.as_ref().map_or(0, Vec::len);
    let header =
        Row::new(["GROUP", "STATE", "TYPE", "MEMBERS", "LAG", "TREND"]).style(HEADER_STYLE);
    let rows = visible.iter().map(|g| {
        let trend = app
            .lag_history
            .get(&g.group_id)
            .map(|h| mini_sparkline(&h.sparkline(), 10))
            .unwrap_or_default();
        Row::new([
            g.group_id.clone(),
            g.state.clone(),
            g.protocol_type.clone(),
            g.members
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            num(g.total_lag),
            trend,
        ])
    });
    let widths = [
        Constraint::Min(18),
        Constraint::Length(20),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(12),
        Constraint::Length(10),
    ];
    let title = if visible.len() == total {
        format!(" groups ({total}) ")
    } else {
        format!(" groups ({} of {total}) ", visible.len())
    };
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.list().selected));
    frame.render_stateful_widget(t, area, &mut state);
}

pub(super) fn draw_detail(frame: &mut Frame, area: Rect, app: &App, group: &str) {
    let Some(d) = app
        .group_detail
        .data
        .as_ref()
        .filter(|d| d.group_id == group)
    else {
        let text = not_loaded(
            app.group_detail.loading,
            app.group_detail.error.as_ref(),
            "the group",
        );
        return placeholder(frame, area, &format!("group {group}"), text);
    };
    let history = app.lag_history.get(group);
    let members_height = (d.members.len().max(1) as u16 + 3).min(7);
    let [info, spark, members, parts] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(3),
        Constraint::Length(members_height),
        Constraint::Min(4),
    ])
    .areas(area);

    let age = d
        .lag_age_ms(app.now_ms)
        .map(|a| format!("{} behind", format::duration_human(a)))
        .unwrap_or_else(|| "-".into());
    let eta = match history.map(|h| h.catch_up()) {
        Some(CatchUp::CaughtUp) => Span::raw("caught up"),
        Some(CatchUp::In(ms)) => Span::raw(format!("~{}", format::duration_human(ms))),
        Some(CatchUp::Never) => Span::styled("not catching up", WARN),
        Some(CatchUp::Unknown) | None => Span::styled("measuring…", DIM),
    };
    let lines = vec![
        Line::from(vec![
            Span::styled(" state ", DIM),
            d.state.clone().into(),
            Span::styled("  protocol ", DIM),
            format!(
                "{}/{}",
                d.protocol_type,
                if d.protocol.is_empty() {
                    "-"
                } else {
                    &d.protocol
                }
            )
            .into(),
            Span::styled("  members ", DIM),
            d.members.len().to_string().into(),
        ]),
        Line::from(vec![
            Span::styled(" lag ", DIM),
            Span::styled(format::thousands(d.total_lag()), HEADER_STYLE),
            Span::styled(" messages, ", DIM),
            age.into(),
            Span::styled("  catch-up ", DIM),
            eta,
        ]),
    ];
    frame.render_widget(Paragraph::new(lines), info);

    let data = history.map(|h| h.sparkline()).unwrap_or_default();
    let samples = data.len();
    let width = spark.width.saturating_sub(2) as usize;
    let window = &data[data.len().saturating_sub(width)..];
    let tail = relative(window);
    let range = match (window.iter().min(), window.iter().max()) {
        (Some(lo), Some(hi)) if lo != hi => format!(
            ", {} to {}",
            format::thousands(*lo as i64),
            format::thousands(*hi as i64)
        ),
        _ => String::new(),
    };
    let top = match tail.iter().copied().max().unwrap_or(0) {
        1 => 2, // constant: a level line at half height
        m => m,
    };
    frame.render_widget(
        Sparkline::default()
            .data(&tail)
            .max(top)
            .style(Style::new().fg(ratatui::style::Color::Cyan))
            .block(Block::bordered().title(format!(
                " lag history ({samples} sample{}{range}) ",
                if samples == 1 { "" } else { "s" }
            ))),
        spark,
    );

    let header = Row::new(["CLIENT", "HOST", "ASSIGNMENT"]).style(HEADER_STYLE);
    let rows: Vec<Row> = if d.members.is_empty() {
        vec![Row::new(["(no active members)".to_string()]).style(DIM)]
    } else {
        d.members
            .iter()
            .map(|m| Row::new([m.client_id.clone(), m.host.clone(), m.assignment_text()]))
            .collect()
    };
    let widths = [
        Constraint::Length(20),
        Constraint::Length(18),
        Constraint::Min(10),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" members ({}) ", d.members.len()))),
        members,
    );

    let header = Row::new(["TOPIC", "P", "COMMITTED", "END", "LAG"]).style(HEADER_STYLE);
    let rows = d.partitions.iter().map(|p| {
        let style = if p.lag().unwrap_or(0) > 0 {
            WARN
        } else {
            Style::new()
        };
        Row::new([
            p.topic.clone(),
            p.partition.to_string(),
            num(p.committed),
            num(p.end),
            num(p.lag()),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Min(16),
        Constraint::Length(4),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(10),
    ];
    let mut undo_hint = String::new();
    if app.undo.as_ref().is_some_and(|u| u.group == group) && !app.config.read_only {
        undo_hint = " — u undoes the last reset ".into();
    }
    let t = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .highlight_symbol("›")
        .block(Block::bordered().title(format!(" offsets ({}) {undo_hint}", d.partitions.len())));
    let mut state = TableState::default().with_selected(Some(app.list().selected));
    frame.render_stateful_widget(t, parts, &mut state);
}
