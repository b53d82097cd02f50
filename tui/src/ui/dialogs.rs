//! Dialogs: delete confirmation, forms, and the offset-reset dialog.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::{centered, key, num, DIM, ERROR, HEADER_STYLE, SELECTED, WARN};
use crate::app::{Chosen, ConfirmDelete, Form, ResetDialog, ResetStage, STRATEGIES};
use crate::reset::{Clamp, Effect};

fn popup(frame: &mut Frame, area: Rect, width: u16, height: u16) -> Rect {
    let r = centered(area, width.min(area.width), height.min(area.height));
    frame.render_widget(Clear, r);
    r
}

pub(super) fn confirm_delete(frame: &mut Frame, area: Rect, c: &ConfirmDelete) {
    let matches = c.typed == c.topic;
    let lines = vec![
        Line::from(vec![
            "Delete topic ".into(),
            Span::styled(c.topic.clone(), ERROR),
            " and all its messages?".into(),
        ]),
        Line::from("This cannot be undone. Type the topic name to confirm:"),
        Line::from(""),
        Line::from(vec![
            Span::styled("> ", DIM),
            Span::raw(c.typed.clone()),
            Span::raw("█"),
        ]),
        Line::from(""),
        Line::from(if matches {
            vec![
                key("enter"),
                " delete  ".into(),
                key("esc"),
                " cancel".into(),
            ]
        } else {
            vec![
                Span::styled("enter works once the name matches  ", DIM),
                key("esc"),
                " cancel".into(),
            ]
        }),
    ];
    let r = popup(frame, area, 64, 8);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" delete topic ")
                .border_style(ERROR),
        ),
        r,
    );
}

pub(super) fn form(frame: &mut Frame, area: Rect, f: &Form) {
    let label_width = f.fields.iter().map(|x| x.label.len()).max().unwrap_or(0);
    let mut lines = Vec::new();
    for (i, field) in f.fields.iter().enumerate() {
        let focused = i == f.focus;
        let marker = if focused { "› " } else { "  " };
        let mut spans = vec![
            Span::styled(marker, HEADER_STYLE),
            format!("{:<label_width$}  ", field.label).into(),
        ];
        if focused {
            spans.push(Span::styled(field.value.clone(), SELECTED));
            spans.push("█".into());
        } else {
            spans.push(field.value.clone().into());
        }
        lines.push(Line::from(spans));
        if focused {
            lines.push(Line::from(Span::styled(
                format!("  {:<label_width$}  {}", "", field.hint),
                DIM,
            )));
        }
    }
    lines.push(Line::from(""));
    if let Some(e) = &f.error {
        lines.push(Line::from(Span::styled(e.clone(), ERROR)));
    }
    lines.push(Line::from(vec![
        key("tab"),
        " next field  ".into(),
        key("enter"),
        " submit  ".into(),
        key("esc"),
        " cancel".into(),
    ]));
    let height = lines.len() as u16 + 2;
    let r = popup(frame, area, 70, height);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {} ", f.kind.title()))),
        r,
    );
}

pub(super) fn reset(frame: &mut Frame, area: Rect, d: &ResetDialog) {
    let r = popup(frame, area, area.width, area.height);
    let block = Block::bordered().title(format!(" reset offsets of {} ", d.group));
    let inner = block.inner(r);
    frame.render_widget(block, r);

    if let Some(refusal) = &d.refusal {
        let mut lines = vec![
            Line::from(Span::styled(
                "Refused: the group has active members.",
                ERROR,
            )),
            Line::from(refusal.to_string()),
            Line::from(""),
        ];
        lines.extend(
            refusal
                .members
                .iter()
                .map(|m| Line::from(vec![Span::styled("  • ", DIM), m.clone().into()])),
        );
        lines.push(Line::from(""));
        lines.push(Line::from(vec![key("esc"), " close".into()]));
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        return;
    }

    match &d.stage {
        ResetStage::Choose | ResetStage::Loading => choose(frame, inner, d),
        ResetStage::Preview(plan) | ResetStage::Applying(plan) => {
            let [info, table, keys] = Layout::vertical([
                Constraint::Length(2),
                Constraint::Min(3),
                Constraint::Length(2),
            ])
            .areas(inner);
            let strategy = match d.arg.trim() {
                "" => plan.strategy.name().to_string(),
                arg => format!("{} {arg}", plan.strategy.name()),
            };
            frame.render_widget(
                Paragraph::new(vec![
                    Line::from(vec![
                        Span::styled("preview: ", HEADER_STYLE),
                        strategy.into(),
                        format!(", {} partition(s)", plan.rows.len()).into(),
                    ]),
                    Line::from(vec![
                        Span::styled(format!("{} re-read", num(Some(plan.total_reread()))), WARN),
                        ", ".into(),
                        Span::styled(format!("{} skipped", num(Some(plan.total_skipped()))), WARN),
                        Span::styled(
                            if plan.rows.iter().any(|r| r.clamped.is_some()) {
                                "  (to start/end: the target was outside the log)"
                            } else {
                                ""
                            },
                            DIM,
                        ),
                    ]),
                ]),
                info,
            );
            let header =
                Row::new(["TOPIC", "P", "CURRENT", "", "NEW", "EFFECT"]).style(HEADER_STYLE);
            let rows = plan.rows.iter().map(|row| {
                let effect = match row.effect {
                    Effect::ReRead(n) => format!("re-read {}", num(Some(n))),
                    Effect::Skip(n) => format!("skip {}", num(Some(n))),
                    Effect::Unchanged => "unchanged".into(),
                    Effect::NoCommittedOffset => "no offset before".into(),
                };
                let clamp = match row.clamped {
                    Some(Clamp::ToStart) => " (to start)",
                    Some(Clamp::ToEnd) => " (to end)",
                    None => "",
                };
                Row::new([
                    row.topic.clone(),
                    row.partition.to_string(),
                    num(row.current),
                    "→".into(),
                    row.new.to_string(),
                    format!("{effect}{clamp}"),
                ])
            });
            let widths = [
                Constraint::Max(20),
                Constraint::Length(4),
                Constraint::Length(10),
                Constraint::Length(1),
                Constraint::Length(10),
                Constraint::Fill(1),
            ];
            frame.render_widget(Table::new(rows, widths).header(header), table);
            let mut lines = Vec::new();
            if let Some(e) = &d.error {
                lines.push(Line::from(Span::styled(e.clone(), ERROR)));
            }
            lines.push(Line::from(if matches!(d.stage, ResetStage::Applying(_)) {
                vec![Span::styled("committing…", WARN)]
            } else {
                vec![key("enter"), " apply  ".into(), key("esc"), " back".into()]
            }));
            frame.render_widget(Paragraph::new(lines), keys);
        }
    }
}

fn choose(frame: &mut Frame, area: Rect, d: &ResetDialog) {
    let [strategy_area, list_area, keys_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);
    let (name, hint) = STRATEGIES[d.strategy % STRATEGIES.len()];
    let mut lines = vec![Line::from(vec![
        Span::styled("strategy ", DIM),
        key("‹"),
        Span::styled(format!(" {name} "), HEADER_STYLE),
        key("›"),
        Span::styled(
            format!("  ({} of {})", d.strategy + 1, STRATEGIES.len()),
            DIM,
        ),
    ])];
    if hint.is_empty() {
        lines.push(Line::from(Span::styled("no value needed", DIM)));
    } else {
        lines.push(Line::from(vec![
            Span::styled("value    ", DIM),
            Span::styled(d.arg.clone(), SELECTED),
            "█".into(),
            Span::styled(format!("  {hint}"), DIM),
        ]));
    }
    if let Some(e) = &d.error {
        lines.push(Line::from(Span::styled(e.clone(), ERROR)));
    }
    frame.render_widget(Paragraph::new(lines), strategy_area);

    let rows = d.rows();
    let height = list_area.height.saturating_sub(1) as usize;
    let skip = d.cursor.saturating_sub(height.saturating_sub(1));
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "partitions ({} of {} chosen)",
            d.chosen().len(),
            d.partitions.len()
        ),
        HEADER_STYLE,
    ))];
    for (i, row) in rows.iter().enumerate().skip(skip).take(height) {
        let mark = match row.chosen {
            Chosen::All => "[x]",
            Chosen::Some => "[~]",
            Chosen::None => "[ ]",
        };
        let cursor = if i == d.cursor { "›" } else { " " };
        let text = match row.partition {
            None => format!("{cursor}{mark} {}", row.topic),
            Some(p) => format!("{cursor}    {mark} partition {p}"),
        };
        let style = if i == d.cursor {
            SELECTED
        } else {
            ratatui::style::Style::new()
        };
        lines.push(Line::from(Span::styled(text, style)));
    }
    frame.render_widget(Paragraph::new(lines), list_area);

    let keys = if d.stage == ResetStage::Loading {
        Line::from(Span::styled("reading offsets…", WARN))
    } else {
        Line::from(vec![
            key("space"),
            " choose  ".into(),
            key("←→"),
            " strategy  ".into(),
            key("enter"),
            " preview  ".into(),
            key("esc"),
            " cancel".into(),
        ])
    };
    frame.render_widget(keys, keys_area);
}
