//! `update` driven by actions alone: state and commands, no terminal.

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::fixtures::*;
use crate::reset::{Effect, TimestampLookup};

fn enter() -> Action {
    key(KeyCode::Enter)
}

fn esc() -> Action {
    key(KeyCode::Esc)
}

fn jump(app: &mut App, to: &str) -> Vec<Command> {
    feed(app, [ch(':')].into_iter().chain(typed(to)).chain([enter()]))
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

#[test]
fn start_loads_the_cluster_then_the_view() {
    let mut app = App::new(config(false), NOW);
    assert_eq!(app.start(), vec![Command::LoadCluster]);
    assert_eq!(app.connection, Connection::Connecting);
    let cmds = update(&mut app, Action::ClusterLoaded(Ok(cluster())));
    assert_eq!(app.connection, Connection::Up);
    assert_eq!(cmds, vec![Command::LoadTopics]);
    assert!(app.topics.loading);
}

#[test]
fn unreachable_cluster_is_retried_with_backoff() {
    let mut app = App::new(config(false), NOW);
    app.start();
    let refused = || Action::ClusterLoaded(Err(IoError::unreachable("connection refused")));
    assert!(update(&mut app, refused()).is_empty());
    assert_eq!(
        app.connection,
        Connection::Unreachable {
            reason: "connection refused".into(),
            attempts: 1,
            next_retry_ms: NOW + 1000
        }
    );
    assert!(update(&mut app, Action::Tick { now_ms: NOW + 500 }).is_empty());
    assert_eq!(
        update(&mut app, Action::Tick { now_ms: NOW + 1000 }),
        vec![Command::LoadCluster]
    );
    // No second attempt while one is in flight.
    assert!(update(&mut app, Action::Tick { now_ms: NOW + 1500 }).is_empty());
    update(&mut app, refused());
    assert!(matches!(
        app.connection,
        Connection::Unreachable { attempts: 2, next_retry_ms, .. } if next_retry_ms == NOW + 1500 + 2000
    ));
    // Back up: the view loads again.
    let cmds = update(&mut app, Action::ClusterLoaded(Ok(cluster())));
    assert_eq!(app.connection, Connection::Up);
    assert_eq!(cmds, vec![Command::LoadTopics]);
}

#[test]
fn error_screen_takes_q_to_quit_and_r_to_retry_now() {
    let mut app = App::new(config(false), NOW);
    app.start();
    update(
        &mut app,
        Action::ClusterLoaded(Err(IoError::unreachable("timeout"))),
    );
    assert_eq!(feed(&mut app, [ch('r')]), vec![Command::LoadCluster]);
    assert!(
        feed(&mut app, [ch('c')]).is_empty(),
        "view keys are off on the error screen"
    );
    feed(&mut app, [ch('q')]);
    assert!(app.quit);
}

#[test]
fn a_load_that_cannot_reach_the_cluster_shows_the_error_screen() {
    let mut app = connected(false);
    update(
        &mut app,
        Action::TopicsLoaded(Err(IoError::unreachable("broken pipe"))),
    );
    assert!(matches!(app.connection, Connection::Unreachable { .. }));
    // Data already shown is kept, to be shown again once back.
    assert!(app.topics.data.is_some());
}

#[test]
fn api_errors_keep_the_connection_and_are_shown() {
    let mut app = connected(false);
    update(
        &mut app,
        Action::TopicsLoaded(Err(IoError::api("CLUSTER_AUTHORIZATION_FAILED"))),
    );
    assert_eq!(app.connection, Connection::Up);
    assert_eq!(
        app.topics.error.as_deref(),
        Some("CLUSTER_AUTHORIZATION_FAILED")
    );
}

#[test]
fn tick_refreshes_the_current_view_every_interval() {
    let mut app = connected(false);
    // connected() loaded topics at NOW - 3s; refresh is 2s.
    assert_eq!(
        update(&mut app, Action::Tick { now_ms: NOW }),
        vec![Command::LoadTopics]
    );
    assert!(
        update(
            &mut app,
            Action::Tick {
                now_ms: NOW + 5_000
            }
        )
        .is_empty(),
        "still loading"
    );
    update(&mut app, Action::TopicsLoaded(Ok(topics())));
    assert!(update(
        &mut app,
        Action::Tick {
            now_ms: NOW + 6_000
        }
    )
    .is_empty());
    assert_eq!(
        update(
            &mut app,
            Action::Tick {
                now_ms: NOW + 7_000
            }
        ),
        vec![Command::LoadTopics]
    );
}

#[test]
fn no_refresh_while_a_form_is_open() {
    let mut app = connected(false);
    feed(&mut app, [ch('c')]);
    assert!(update(
        &mut app,
        Action::Tick {
            now_ms: NOW + 60_000
        }
    )
    .is_empty());
}

#[test]
fn colon_jumps_by_name_and_alias() {
    let mut app = connected(false);
    assert_eq!(jump(&mut app, "groups"), vec![Command::LoadGroups]);
    assert_eq!(app.stack, vec![View::Groups]);
    assert_eq!(jump(&mut app, "c"), vec![Command::LoadCluster]);
    assert_eq!(app.view(), &View::Cluster);
    assert_eq!(
        jump(&mut app, "topics orders"),
        vec![
            Command::LoadTopicDetail {
                topic: "orders".into()
            },
            Command::LoadTopicConfigs {
                topic: "orders".into()
            }
        ]
    );
    assert_eq!(
        app.stack.len(),
        2,
        "a detail jump keeps its list underneath"
    );
}

#[test]
fn unknown_view_name_lists_the_names() {
    let mut app = connected(false);
    assert!(jump(&mut app, "pods").is_empty());
    assert_eq!(
        status(&app),
        "no view named \"pods\": try cluster, topics, groups, messages"
    );
    assert_eq!(app.view(), &View::Topics);
}

#[test]
fn messages_jump_without_a_topic_says_how() {
    let mut app = connected(false);
    jump(&mut app, "groups");
    assert!(jump(&mut app, "messages").is_empty());
    assert!(status(&app).contains(":messages TOPIC"));
    let cmds = jump(&mut app, "messages payments");
    assert!(matches!(&cmds[..], [Command::FetchMessages { topic, .. }] if topic == "payments"));
}

#[test]
fn enter_drills_in_and_esc_goes_back() {
    let mut app = connected(false);
    // Sorted: __consumer_offsets, audit.log-v2, orders, payments.
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down)]);
    let cmds = feed(&mut app, [enter()]);
    assert_eq!(
        app.view(),
        &View::TopicDetail {
            topic: "orders".into()
        }
    );
    assert_eq!(cmds.len(), 2);
    assert_eq!(feed(&mut app, [esc()]), vec![Command::LoadTopics]);
    assert_eq!(app.view(), &View::Topics);
    assert!(feed(&mut app, [esc()]).is_empty(), "the first view stays");
    assert_eq!(app.stack.len(), 1);
}

#[test]
fn filter_narrows_as_you_type_and_esc_clears_it_first() {
    let mut app = connected(false);
    feed(&mut app, [key(KeyCode::End)]);
    feed(&mut app, [ch('/')].into_iter().chain(typed("PAY")));
    assert_eq!(app.visible_topics().len(), 1);
    assert_eq!(app.list().selected, 0);
    feed(&mut app, [enter()]);
    assert_eq!(app.list().filter, "PAY");
    feed(&mut app, [esc()]);
    assert_eq!(app.list().filter, "");
    assert_eq!(app.visible_topics().len(), 4);
}

#[test]
fn selection_stays_within_the_list() {
    let mut app = connected(false);
    feed(&mut app, (0..10).map(|_| key(KeyCode::Down)));
    assert_eq!(app.list().selected, 3);
    feed(&mut app, [key(KeyCode::PageUp)]);
    assert_eq!(app.list().selected, 0);
    update(&mut app, Action::TopicsLoaded(Ok(topics()[..1].to_vec())));
    feed(&mut app, [key(KeyCode::End)]);
    assert_eq!(app.list().selected, 0);
}

#[test]
fn help_opens_and_closes() {
    let mut app = connected(false);
    feed(&mut app, [ch('?')]);
    assert_eq!(app.overlay, Some(Overlay::Help));
    feed(&mut app, [ch('j')]);
    assert_eq!(app.overlay, Some(Overlay::Help));
    feed(&mut app, [esc()]);
    assert_eq!(app.overlay, None);
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = connected(false);
    feed(&mut app, [ch('q')]);
    assert!(app.quit);
    let mut app = connected(false);
    feed(&mut app, [ch('c')]); // a form is open; ctrl-c still quits
    update(
        &mut app,
        Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
    );
    assert!(app.quit);
}

#[test]
fn read_only_offers_no_change() {
    let mut app = connected(true);
    for c in ['c', 'd', '+'] {
        assert!(feed(&mut app, [ch(c)]).is_empty());
        assert_eq!(app.overlay, None, "{c} opened something");
    }
    let mut app = on_billing(true);
    feed(&mut app, [ch('r'), ch('u')]);
    assert_eq!(app.overlay, None);
    // Browsing still works.
    let mut app = connected(true);
    assert!(matches!(
        &feed(&mut app, [ch('m')])[..],
        [Command::FetchMessages { .. }]
    ));
}

#[test]
fn delete_needs_the_topic_name_typed() {
    let mut app = connected(false);
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down), ch('d')]);
    assert!(feed(&mut app, typed("order").into_iter().chain([enter()])).is_empty());
    assert!(matches!(app.overlay, Some(Overlay::ConfirmDelete(_))));
    assert_eq!(
        feed(&mut app, [ch('s'), enter()]),
        vec![Command::DeleteTopic {
            name: "orders".into()
        }]
    );
    assert_eq!(app.overlay, None);
    assert_eq!(
        update(
            &mut app,
            Action::Changed {
                what: "deleted orders".into(),
                result: Ok(())
            }
        ),
        vec![Command::LoadTopics]
    );
    assert_eq!(status(&app), "deleted orders");
}

fn form_error(app: &App) -> String {
    match &app.overlay {
        Some(Overlay::Form(f)) => f.error.clone().unwrap_or_default(),
        other => panic!("no form: {other:?}"),
    }
}

/// Clears the focused field and types `s` into it.
fn retype(app: &mut App, s: &str) {
    feed(app, (0..40).map(|_| key(KeyCode::Backspace)));
    feed(app, typed(s));
}

#[test]
fn create_topic_form_validates_with_fixes() {
    let mut app = connected(false);
    feed(
        &mut app,
        [ch('c')]
            .into_iter()
            .chain(typed("new orders"))
            .chain([enter()]),
    );
    assert!(form_error(&app).contains("remove ' '"));
    retype(&mut app, "new-orders");
    feed(&mut app, [key(KeyCode::Tab)]);
    retype(&mut app, "0");
    feed(&mut app, [enter()]);
    assert!(form_error(&app).contains("partitions must be a whole number of at least 1"));
    retype(&mut app, "6");
    feed(&mut app, [key(KeyCode::Tab)]);
    retype(&mut app, "5");
    feed(&mut app, [enter()]);
    assert_eq!(
        form_error(&app),
        "replication factor 5 needs 5 brokers, the cluster has 3: use 3 or less"
    );
    retype(&mut app, "3");
    feed(&mut app, [key(KeyCode::Tab)]);
    retype(&mut app, "retention.ms");
    feed(&mut app, [enter()]);
    assert!(form_error(&app).contains("write configs as name=value"));
    retype(&mut app, "retention.ms=1000, cleanup.policy=compact");
    let cmds = feed(&mut app, [enter()]);
    assert_eq!(
        cmds,
        vec![Command::CreateTopic {
            name: "new-orders".into(),
            partitions: 6,
            replication_factor: 3,
            configs: vec![
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "compact".into())
            ],
        }]
    );
    assert_eq!(app.overlay, None);
}

#[test]
fn partitions_can_only_grow() {
    let mut app = connected(false);
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down), ch('+')]);
    retype(&mut app, "2");
    feed(&mut app, [enter()]);
    assert_eq!(
        form_error(&app),
        "partitions can only grow: topic orders has 3, you asked for 2"
    );
    retype(&mut app, "12");
    assert_eq!(
        feed(&mut app, [enter()]),
        vec![Command::AddPartitions {
            topic: "orders".into(),
            total: 12
        }]
    );
}

#[test]
fn edit_config_with_empty_value_deletes_it() {
    let mut app = connected(false);
    jump(&mut app, "topics orders");
    feed(
        &mut app,
        [ch('e')]
            .into_iter()
            .chain(typed("retention.ms"))
            .chain([enter()]),
    );
    assert_eq!(
        app.overlay, None,
        "an empty value is a valid request: back to the default"
    );
    let mut app2 = connected(false);
    jump(&mut app2, "topics orders");
    let cmds = feed(
        &mut app2,
        [ch('e')]
            .into_iter()
            .chain(typed("retention.ms"))
            .chain([key(KeyCode::Tab)])
            .chain(typed("1000"))
            .chain([enter()]),
    );
    assert_eq!(
        cmds,
        vec![Command::AlterConfig {
            topic: "orders".into(),
            change: ConfigChange::Set("retention.ms".into(), "1000".into())
        }]
    );
}

#[test]
fn produce_form_checks_the_partition_and_parses_headers() {
    let mut app = connected(false);
    jump(&mut app, "topics orders");
    update(
        &mut app,
        Action::TopicDetailLoaded {
            topic: "orders".into(),
            result: Ok(orders_detail()),
        },
    );
    feed(&mut app, [ch('p')].into_iter().chain(typed("k1")));
    feed(
        &mut app,
        [key(KeyCode::Tab)].into_iter().chain(typed(" v 1 ")),
    );
    feed(
        &mut app,
        [key(KeyCode::Tab)]
            .into_iter()
            .chain(typed("src=tui, trace=abc")),
    );
    feed(
        &mut app,
        [key(KeyCode::Tab)]
            .into_iter()
            .chain(typed("3"))
            .chain([enter()]),
    );
    assert_eq!(
        form_error(&app),
        "topic orders has partitions 0..2: pick one of them or leave it empty"
    );
    retype(&mut app, "2");
    assert_eq!(
        feed(&mut app, [enter()]),
        vec![Command::Produce {
            topic: "orders".into(),
            partition: Some(2),
            key: Some(b"k1".to_vec()),
            value: Some(b" v 1 ".to_vec()),
            headers: vec![
                ("src".into(), Some(b"tui".to_vec())),
                ("trace".into(), Some(b"abc".to_vec()))
            ],
        }]
    );
}

fn request_of(cmds: &[Command]) -> u64 {
    match cmds {
        [Command::FetchMessages { request, .. }] => *request,
        other => panic!("not one fetch: {other:?}"),
    }
}

#[test]
fn message_browser_pages_and_drops_stale_answers() {
    let mut app = connected(false);
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down)]);
    let cmds = feed(&mut app, [ch('m')]);
    assert_eq!(
        cmds,
        vec![Command::FetchMessages {
            request: 1,
            topic: "orders".into(),
            start: StartAt::Beginning,
            from: BTreeMap::new(),
            limit: PAGE,
        }]
    );
    update(
        &mut app,
        Action::MessagesLoaded {
            request: 1,
            result: Ok(messages_page()),
        },
    );
    let b = app.messages.as_ref().unwrap();
    assert_eq!((b.scanned, b.total, b.rows.len()), (4, Some(2_950), 4));
    let cmds = feed(&mut app, [ch('n')]);
    match &cmds[..] {
        [Command::FetchMessages {
            request: 2, from, ..
        }] => assert_eq!(from, &messages_page().next),
        other => panic!("{other:?}"),
    }
    // A new browse replaces the old one: the late page 2 is dropped.
    let r3 = request_of(&feed(&mut app, [ch('t')]));
    update(
        &mut app,
        Action::MessagesLoaded {
            request: 2,
            result: Ok(messages_page()),
        },
    );
    assert_eq!(app.messages.as_ref().unwrap().rows.len(), 0);
    assert_eq!(app.messages.as_ref().unwrap().start, StartAt::End);
    update(
        &mut app,
        Action::MessagesLoaded {
            request: r3,
            result: Ok(messages_page()),
        },
    );
    // Tail follows the newest message and keeps fetching on ticks.
    assert_eq!(app.list().selected, 3);
    let cmds = update(
        &mut app,
        Action::Tick {
            now_ms: NOW + 10_000,
        },
    );
    assert!(matches!(
        &cmds[..],
        [Command::FetchMessages {
            start: StartAt::End,
            ..
        }]
    ));
}

#[test]
fn browsing_from_the_beginning_does_not_refetch_on_ticks() {
    let mut app = connected(false);
    let r = request_of(&jump(&mut app, "messages orders"));
    update(
        &mut app,
        Action::MessagesLoaded {
            request: r,
            result: Ok(messages_page()),
        },
    );
    assert!(update(
        &mut app,
        Action::Tick {
            now_ms: NOW + 60_000
        }
    )
    .is_empty());
}

#[test]
fn message_filter_matches_key_or_value_and_counts() {
    let mut app = connected(false);
    let r = request_of(&jump(&mut app, "messages orders"));
    update(
        &mut app,
        Action::MessagesLoaded {
            request: r,
            result: Ok(messages_page()),
        },
    );
    feed(
        &mut app,
        [ch('/')].into_iter().chain(typed("SKU")).chain([enter()]),
    );
    let b = app.messages.as_ref().unwrap();
    assert_eq!(b.visible().len(), 1);
    assert_eq!(
        b.scanned, 4,
        "the count of scanned messages is independent of the filter"
    );
}

#[test]
fn seek_by_offset_and_by_time_ago() {
    let mut app = connected(false);
    jump(&mut app, "messages orders");
    let cmds = feed(
        &mut app,
        [ch('o')].into_iter().chain(typed("x")).chain([enter()]),
    );
    assert!(cmds.is_empty());
    assert!(form_error(&app).contains("type an offset"));
    retype(&mut app, "1200");
    let cmds = feed(&mut app, [enter()]);
    assert!(
        matches!(&cmds[..], [Command::FetchMessages { start: StartAt::Offset(1200), from, .. }] if from.is_empty())
    );
    let cmds = feed(
        &mut app,
        [ch('T')].into_iter().chain(typed("15m")).chain([enter()]),
    );
    assert!(
        matches!(&cmds[..], [Command::FetchMessages { start: StartAt::Timestamp(t), .. }] if *t == NOW - 900_000)
    );
    let cmds = feed(
        &mut app,
        [ch('T')]
            .into_iter()
            .chain(typed("2024-05-01T11:00:00Z"))
            .chain([enter()]),
    );
    assert!(
        matches!(&cmds[..], [Command::FetchMessages { start: StartAt::Timestamp(t), .. }] if *t == NOW - 3_600_000)
    );
}

#[test]
fn message_detail_opens_on_enter_and_moves() {
    let mut app = connected(false);
    let r = request_of(&jump(&mut app, "messages orders"));
    update(
        &mut app,
        Action::MessagesLoaded {
            request: r,
            result: Ok(messages_page()),
        },
    );
    feed(&mut app, [enter()]);
    assert_eq!(app.overlay, Some(Overlay::Message { index: 0 }));
    feed(&mut app, [key(KeyCode::Down)]);
    assert_eq!(app.overlay, Some(Overlay::Message { index: 1 }));
    feed(&mut app, [esc()]);
    assert_eq!(app.overlay, None);
    assert_eq!(app.list().selected, 1);
}

#[test]
fn lag_history_grows_with_each_group_load() {
    let app = on_billing(false);
    let h = &app.lag_history["billing"];
    assert_eq!(h.len(), 7);
    assert_eq!(h.latest(), Some(1050));
    assert_eq!(h.catch_up(), crate::model::CatchUp::In(180_000));
}

fn reset_dialog(app: &App) -> &ResetDialog {
    match &app.overlay {
        Some(Overlay::Reset(d)) => d,
        other => panic!("no reset dialog: {other:?}"),
    }
}

fn billing_inputs() -> ResetInputs {
    let offsets = billing_detail()
        .partitions
        .iter()
        .map(|p| {
            (
                (p.topic.clone(), p.partition),
                PartitionOffsets {
                    committed: p.committed,
                    start: 100 * i64::from(p.partition),
                    end: p.end.unwrap_or(0),
                    at_timestamp: TimestampLookup::NotLoaded,
                },
            )
        })
        .filter(|((_, p), _)| *p != 1)
        .collect();
    ResetInputs {
        state: "Empty".into(),
        members: vec![],
        offsets,
    }
}

/// Billing, strategy "shift by -1000" on partitions 0 and 2, preview shown.
pub(crate) fn billing_reset_preview() -> App {
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
    feed(&mut app, typed("-1000"));
    // Rows: orders, p0, p1, p2: unchoose p1.
    feed(&mut app, [key(KeyCode::Down), key(KeyCode::Down), ch(' ')]);
    let cmds = feed(&mut app, [enter()]);
    assert_eq!(
        cmds,
        vec![Command::LoadResetInputs {
            group: "billing".into(),
            partitions: vec![("orders".into(), 0), ("orders".into(), 2)],
            timestamp: None,
        }]
    );
    update(
        &mut app,
        Action::ResetInputsLoaded {
            group: "billing".into(),
            result: Ok(billing_inputs()),
        },
    );
    app
}

#[test]
fn reset_previews_applies_and_undoes() {
    let mut app = billing_reset_preview();
    let plan = match &reset_dialog(&app).stage {
        ResetStage::Preview(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(plan.rows.len(), 2);
    assert_eq!(plan.rows[0].new, 0);
    assert_eq!(plan.rows[0].effect, Effect::ReRead(900));
    assert_eq!(plan.rows[1].new, 200, "clamped to the log start");
    let cmds = feed(&mut app, [enter()]);
    let previous = BTreeMap::from([
        (("orders".to_string(), 0), 900),
        (("orders".to_string(), 2), 900),
    ]);
    assert_eq!(
        cmds,
        vec![Command::CommitOffsets {
            group: "billing".into(),
            offsets: BTreeMap::from([
                (("orders".to_string(), 0), 0),
                (("orders".to_string(), 2), 200)
            ]),
            purpose: CommitPurpose::Reset {
                previous: previous.clone()
            },
        }]
    );
    assert!(matches!(reset_dialog(&app).stage, ResetStage::Applying(_)));
    let cmds = update(
        &mut app,
        Action::OffsetsCommitted {
            group: "billing".into(),
            purpose: CommitPurpose::Reset {
                previous: previous.clone(),
            },
            result: Ok(()),
        },
    );
    assert_eq!(
        cmds,
        vec![Command::LoadGroupDetail {
            group: "billing".into()
        }]
    );
    assert_eq!(app.overlay, None);
    assert_eq!(status(&app), "reset 2 partition(s) of billing; u undoes it");
    let cmds = feed(&mut app, [ch('u')]);
    assert_eq!(
        cmds,
        vec![Command::CommitOffsets {
            group: "billing".into(),
            offsets: previous,
            purpose: CommitPurpose::Undo,
        }]
    );
    update(
        &mut app,
        Action::OffsetsCommitted {
            group: "billing".into(),
            purpose: CommitPurpose::Undo,
            result: Ok(()),
        },
    );
    assert_eq!(app.undo, None);
    assert_eq!(status(&app), "offsets of billing restored");
    feed(&mut app, [ch('u')]);
    assert_eq!(status(&app), "nothing to undo for this group");
}

#[test]
fn a_failed_reset_commit_returns_to_the_preview() {
    let mut app = billing_reset_preview();
    feed(&mut app, [enter()]);
    update(
        &mut app,
        Action::OffsetsCommitted {
            group: "billing".into(),
            purpose: CommitPurpose::Reset {
                previous: BTreeMap::new(),
            },
            result: Err(IoError::api("UNKNOWN_MEMBER_ID: the group is not empty")),
        },
    );
    let d = reset_dialog(&app);
    assert!(matches!(d.stage, ResetStage::Preview(_)));
    assert!(d
        .error
        .as_deref()
        .unwrap_or("")
        .contains("UNKNOWN_MEMBER_ID"));
    assert_eq!(app.undo, None);
}

#[test]
fn reset_is_refused_while_members_are_active() {
    let mut app = connected(false);
    jump(&mut app, "groups shipping");
    update(
        &mut app,
        Action::GroupDetailLoaded {
            group: "shipping".into(),
            result: Ok(shipping_detail()),
        },
    );
    feed(&mut app, [ch('r')]);
    let refusal = reset_dialog(&app).refusal.clone().unwrap();
    assert_eq!(refusal.members.len(), 2);
    assert_eq!(refusal.members[0], "ship-1@/10.0.0.7 (ship-1-5d1e)");
    assert!(feed(&mut app, [enter()]).is_empty());
    assert_eq!(app.overlay, None);
}

#[test]
fn reset_is_refused_when_members_joined_since_the_dialog_opened() {
    let mut app = on_billing(false);
    feed(&mut app, [ch('r'), enter()]);
    let mut inputs = billing_inputs();
    inputs.state = "PreparingRebalance".into();
    inputs.members = vec!["c@h (m)".into()];
    update(
        &mut app,
        Action::ResetInputsLoaded {
            group: "billing".into(),
            result: Ok(inputs),
        },
    );
    assert!(reset_dialog(&app).refusal.is_some());
}

#[test]
fn reset_strategy_values_are_checked_before_loading() {
    let mut app = on_billing(false);
    feed(&mut app, [ch('r'), key(KeyCode::Left)]);
    assert_eq!(reset_dialog(&app).strategy, STRATEGIES.len() - 1);
    let cmds = feed(&mut app, typed("soon").into_iter().chain([enter()]));
    assert!(cmds.is_empty());
    assert!(reset_dialog(&app)
        .error
        .as_deref()
        .unwrap_or("")
        .contains("e.g. 500ms"));
    feed(&mut app, (0..4).map(|_| key(KeyCode::Backspace)));
    let cmds = feed(&mut app, typed("1h").into_iter().chain([enter()]));
    assert!(
        matches!(&cmds[..], [Command::LoadResetInputs { timestamp: Some(t), .. }] if *t == NOW - 3_600_000)
    );
}

#[test]
fn reset_with_nothing_chosen_says_how_to_choose() {
    let mut app = on_billing(false);
    feed(&mut app, [ch('r'), ch(' '), enter()]);
    assert!(reset_dialog(&app)
        .error
        .as_deref()
        .unwrap_or("")
        .contains("select at least one topic with space"));
}

#[test]
fn reset_preview_of_datetime_uses_the_looked_up_offsets() {
    let mut app = on_billing(false);
    feed(
        &mut app,
        [ch('r')]
            .into_iter()
            .chain((0..4).map(|_| key(KeyCode::Right))),
    );
    let cmds = feed(
        &mut app,
        typed("2024-05-01T11:00:00Z").into_iter().chain([enter()]),
    );
    assert!(
        matches!(&cmds[..], [Command::LoadResetInputs { timestamp: Some(t), .. }] if *t == NOW - 3_600_000)
    );
    let mut inputs = billing_inputs();
    for (i, p) in inputs.offsets.values_mut().enumerate() {
        p.at_timestamp = if i == 0 {
            TimestampLookup::Found(500)
        } else {
            TimestampLookup::NoneAfter
        };
    }
    update(
        &mut app,
        Action::ResetInputsLoaded {
            group: "billing".into(),
            result: Ok(inputs),
        },
    );
    match &reset_dialog(&app).stage {
        ResetStage::Preview(p) => {
            assert_eq!(p.rows[0].new, 500);
            assert_eq!(p.rows[1].new, 1500);
        }
        other => panic!("{other:?}"),
    }
    // esc goes back to choosing, esc again closes.
    feed(&mut app, [esc()]);
    assert_eq!(reset_dialog(&app).stage, ResetStage::Choose);
    feed(&mut app, [esc()]);
    assert_eq!(app.overlay, None);
}
