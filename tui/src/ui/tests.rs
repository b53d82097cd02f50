//! Every view rendered into a `TestBackend` at 80x24 and 120x40 from fixed state.

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::draw;
use crate::app::{Action, App, IoError};
use crate::fixtures::*;
use crate::model::TopicDetail;

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().to_string()
}

/// Snapshots `app` at both sizes.
fn snap(name: &str, app: &App) {
    insta::assert_snapshot!(format!("{name}_80x24"), render(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_120x40"), render(app, 120, 40));
}

#[test]
fn connecting() {
    let mut app = App::new(config(false), NOW);
    app.start();
    snap("connecting", &app);
}

#[test]
fn unreachable_error_screen() {
    let mut app = App::new(config(false), NOW);
    app.start();
    feed(
        &mut app,
        [Action::ClusterLoaded(Err(IoError::unreachable(
            "connect to localhost:9092: connection refused (os error 111)",
        )))],
    );
    snap("unreachable", &app);
}

#[test]
fn cluster_view() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch(':')]
            .into_iter()
            .chain(typed("cluster"))
            .chain([key(KeyCode::Enter)]),
    );
    feed(&mut app, [Action::ClusterLoaded(Ok(cluster()))]);
    snap("cluster", &app);
}

#[test]
fn topics_view() {
    snap("topics", &connected(false));
}

#[test]
fn topics_read_only() {
    snap("topics_read_only", &connected(true));
}

#[test]
fn topics_filtered() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch('/')]
            .into_iter()
            .chain(typed("or"))
            .chain([key(KeyCode::Enter)]),
    );
    snap("topics_filtered", &app);
}

fn on_orders() -> App {
    let mut app = connected(false);
    feed(
        &mut app,
        [key(KeyCode::Down), key(KeyCode::Down), key(KeyCode::Enter)],
    );
    feed(
        &mut app,
        [Action::TopicDetailLoaded {
            topic: "orders".into(),
            result: Ok(TopicDetail {
                configs: None,
                ..orders_detail()
            }),
        }],
    );
    feed(
        &mut app,
        [Action::TopicConfigsLoaded {
            topic: "orders".into(),
            result: Ok(orders_detail().configs.unwrap_or_default()),
        }],
    );
    app
}

#[test]
fn topic_detail() {
    let app = on_orders();
    assert_eq!(app.view().title(), "topic orders");
    snap("topic_detail", &app);
}

fn browsing() -> App {
    let mut app = on_orders();
    let cmds = feed(&mut app, [ch('m')]);
    let request = match &cmds[0] {
        crate::app::Command::FetchMessages { request, .. } => *request,
        other => panic!("unexpected {other:?}"),
    };
    feed(
        &mut app,
        [Action::MessagesLoaded {
            request,
            result: Ok(messages_page()),
        }],
    );
    app
}

#[test]
fn messages() {
    snap("messages", &browsing());
}

#[test]
fn messages_filtered_shows_scanned_of_total() {
    let mut app = browsing();
    feed(
        &mut app,
        [ch('/')]
            .into_iter()
            .chain(typed("order-1"))
            .chain([key(KeyCode::Enter)]),
    );
    snap("messages_filtered", &app);
    feed(
        &mut app,
        [ch('/')]
            .into_iter()
            .chain(typed("9zz"))
            .chain([key(KeyCode::Enter)]),
    );
    snap("messages_filtered_empty", &app);
}

#[test]
fn message_detail_json() {
    let mut app = browsing();
    feed(&mut app, [key(KeyCode::Home), key(KeyCode::Enter)]);
    snap("message_json", &app);
}

#[test]
fn message_detail_binary() {
    let mut app = browsing();
    feed(
        &mut app,
        [
            key(KeyCode::Home),
            key(KeyCode::Down),
            key(KeyCode::Down),
            key(KeyCode::Enter),
        ],
    );
    snap("message_binary", &app);
}

#[test]
fn groups_view() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch(':')]
            .into_iter()
            .chain(typed("groups"))
            .chain([key(KeyCode::Enter)]),
    );
    for (i, lag) in [1400, 1200, 1050].iter().enumerate() {
        app.now_ms = NOW + 2_000 * i as i64;
        let mut rows = crate::fixtures::groups();
        rows[0].total_lag = Some(*lag);
        feed(&mut app, [Action::GroupsLoaded(Ok(rows))]);
    }
    snap("groups", &app);
}

#[test]
fn group_detail() {
    snap("group_detail", &on_billing(false));
}

#[test]
fn group_detail_with_members() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch(':')]
            .into_iter()
            .chain(typed("groups shipping"))
            .chain([key(KeyCode::Enter)]),
    );
    feed(
        &mut app,
        [Action::GroupDetailLoaded {
            group: "shipping".into(),
            result: Ok(shipping_detail()),
        }],
    );
    snap("group_detail_members", &app);
}

#[test]
fn help_overlay() {
    let mut app = connected(false);
    feed(&mut app, [ch('?')]);
    snap("help", &app);
}

#[test]
fn jump_prompt() {
    let mut app = connected(false);
    feed(&mut app, [ch(':')].into_iter().chain(typed("gro")));
    snap("jump_prompt", &app);
}

#[test]
fn create_topic_form_with_error() {
    let mut app = connected(false);
    feed(&mut app, [ch('c')].into_iter().chain(typed("new orders")));
    feed(&mut app, [key(KeyCode::Enter)]);
    snap("create_topic_form", &app);
}

#[test]
fn produce_form() {
    let mut app = on_orders();
    feed(&mut app, [ch('p')].into_iter().chain(typed("order-20")));
    feed(
        &mut app,
        [key(KeyCode::Tab)].into_iter().chain(typed(r#"{"id":20}"#)),
    );
    snap("produce_form", &app);
}

#[test]
fn confirm_delete() {
    let mut app = connected(false);
    feed(
        &mut app,
        [key(KeyCode::Down), key(KeyCode::Down), ch('d')]
            .into_iter()
            .chain(typed("ord")),
    );
    snap("confirm_delete", &app);
}

#[test]
fn reset_dialog_choose() {
    let mut app = on_billing(false);
    feed(
        &mut app,
        [
            ch('r'),
            key(KeyCode::Right),
            key(KeyCode::Right),
            key(KeyCode::Right),
        ],
    );
    feed(&mut app, typed("-100"));
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down), ch(' ')]);
    snap("reset_choose", &app);
}

#[test]
fn reset_dialog_preview() {
    let app = crate::app::tests::billing_reset_preview();
    snap("reset_preview", &app);
}

#[test]
fn reset_dialog_refused_while_members_are_active() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch(':')]
            .into_iter()
            .chain(typed("groups shipping"))
            .chain([key(KeyCode::Enter)]),
    );
    feed(
        &mut app,
        [Action::GroupDetailLoaded {
            group: "shipping".into(),
            result: Ok(shipping_detail()),
        }],
    );
    feed(&mut app, [ch('r')]);
    snap("reset_refused", &app);
}
