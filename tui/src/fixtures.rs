//! Fixed cluster data for the update tests and the view snapshots.

use std::collections::BTreeMap;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{update, Action, App, AppConfig, Command, MessagePage};
use crate::model::*;

/// 2024-05-01 12:00:00 UTC.
pub const NOW: i64 = 1_714_564_800_000;

pub fn config(read_only: bool) -> AppConfig {
    AppConfig {
        bootstrap: "localhost:9092".into(),
        read_only,
        refresh: Duration::from_secs(2),
    }
}

pub fn cluster() -> ClusterOverview {
    let broker = |id, host: &str, rack: Option<&str>, led| BrokerRow {
        id,
        host: host.into(),
        port: 9092,
        rack: rack.map(str::to_string),
        partitions_led: led,
    };
    ClusterOverview {
        cluster_id: Some("sl-7f3a".into()),
        controller_id: 1,
        brokers: vec![
            broker(1, "broker-1.local", Some("eu-1a"), 5),
            broker(2, "broker-2.local", Some("eu-1b"), 4),
            broker(3, "broker-3.local", None, 3),
        ],
        topic_count: 4,
        partition_count: 12,
        under_replicated: 1,
        offline: 0,
    }
}

pub fn orders_partitions() -> Vec<PartitionRow> {
    (0..3)
        .map(|i| PartitionRow {
            index: i,
            leader: i + 1,
            replicas: vec![i + 1, (i + 1) % 3 + 1],
            isr: if i == 2 {
                vec![3]
            } else {
                vec![i + 1, (i + 1) % 3 + 1]
            },
            offline_replicas: vec![],
            start: Some(100 * i64::from(i)),
            end: Some(1_000 + 250 * i64::from(i)),
            consumers: vec![ConsumerLag {
                group: "billing".into(),
                committed: 900,
                lag: 100 + 250 * i64::from(i),
            }],
        })
        .collect()
}

pub fn topics() -> Vec<TopicRow> {
    let mut rows = vec![
        TopicRow::from_partitions("orders", false, &orders_partitions(), Some(3_481_600)),
        TopicRow {
            name: "payments".into(),
            partitions: 6,
            replication_factor: 3,
            messages: Some(1_204_331),
            size: Some(734_003_200),
            ..TopicRow::default()
        },
        TopicRow {
            name: "audit.log-v2".into(),
            partitions: 1,
            replication_factor: 1,
            messages: Some(0),
            size: None,
            ..TopicRow::default()
        },
        TopicRow {
            name: "__consumer_offsets".into(),
            internal: true,
            partitions: 50,
            replication_factor: 3,
            messages: Some(4_210),
            size: Some(81_920),
            ..TopicRow::default()
        },
    ];
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

pub fn orders_detail() -> TopicDetail {
    TopicDetail {
        name: "orders".into(),
        partitions: orders_partitions(),
        configs: Some(vec![
            ConfigRow {
                name: "retention.ms".into(),
                value: Some("86400000".into()),
                source: "DYNAMIC_TOPIC_CONFIG".into(),
                read_only: false,
                sensitive: false,
            },
            ConfigRow {
                name: "cleanup.policy".into(),
                value: Some("delete".into()),
                source: "DEFAULT_CONFIG".into(),
                read_only: false,
                sensitive: false,
            },
        ]),
    }
}

pub fn groups() -> Vec<GroupRow> {
    vec![
        GroupRow {
            group_id: "billing".into(),
            state: "Empty".into(),
            protocol_type: "consumer".into(),
            members: Some(0),
            total_lag: Some(1050),
        },
        GroupRow {
            group_id: "shipping".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            members: Some(2),
            total_lag: Some(12),
        },
    ]
}

pub fn billing_detail() -> GroupDetail {
    GroupDetail {
        group_id: "billing".into(),
        state: "Empty".into(),
        protocol_type: "consumer".into(),
        protocol: String::new(),
        members: vec![],
        partitions: orders_partitions()
            .iter()
            .map(|p| GroupPartitionRow {
                topic: "orders".into(),
                partition: p.index,
                committed: Some(900),
                end: p.end,
                oldest_unconsumed_ts: Some(NOW - 95_000 - 1000 * i64::from(p.index)),
            })
            .collect(),
    }
}

pub fn shipping_detail() -> GroupDetail {
    GroupDetail {
        group_id: "shipping".into(),
        state: "Stable".into(),
        protocol_type: "consumer".into(),
        protocol: "range".into(),
        members: vec![
            MemberRow {
                member_id: "ship-1-5d1e".into(),
                instance_id: None,
                client_id: "ship-1".into(),
                host: "/10.0.0.7".into(),
                assignment: vec![("payments".into(), vec![0, 1, 2])],
            },
            MemberRow {
                member_id: "ship-2-99ab".into(),
                instance_id: Some("ship-b".into()),
                client_id: "ship-2".into(),
                host: "/10.0.0.8".into(),
                assignment: vec![("payments".into(), vec![3, 4, 5])],
            },
        ],
        partitions: (0..6)
            .map(|p| GroupPartitionRow {
                topic: "payments".into(),
                partition: p,
                committed: Some(200_000 + i64::from(p)),
                end: Some(200_002 + i64::from(p)),
                oldest_unconsumed_ts: Some(NOW - 400),
            })
            .collect(),
    }
}

pub fn messages_page() -> MessagePage {
    let rows = vec![
        MessageRow {
            partition: 0,
            offset: 0,
            timestamp: NOW - 3_600_000,
            key: Some(b"order-17".to_vec()),
            value: Some(
                br#"{"id":17,"items":[{"sku":"A-1","qty":2}],"total":19.9,"paid":true}"#.to_vec(),
            ),
            headers: vec![("source".into(), Some(b"web".to_vec()))],
        },
        MessageRow {
            partition: 0,
            offset: 1,
            timestamp: NOW - 3_500_000,
            key: Some(b"order-18".to_vec()),
            value: Some(b"plain text note, not json".to_vec()),
            headers: vec![],
        },
        MessageRow {
            partition: 1,
            offset: 100,
            timestamp: NOW - 3_400_000,
            key: None,
            value: Some(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, b'o', b'k']),
            headers: vec![],
        },
        MessageRow {
            partition: 2,
            offset: 200,
            timestamp: NOW - 3_300_000,
            key: Some(b"order-19".to_vec()),
            value: None,
            headers: vec![],
        },
    ];
    MessagePage {
        next: BTreeMap::from([(0, 2), (1, 101), (2, 201)]),
        total: 2_950,
        rows,
    }
}

pub fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ch(c: char) -> Action {
    key(KeyCode::Char(c))
}

/// Feeds the actions in order; returns all commands issued.
pub fn feed(app: &mut App, actions: impl IntoIterator<Item = Action>) -> Vec<Command> {
    actions.into_iter().flat_map(|a| update(app, a)).collect()
}

pub fn typed(s: &str) -> Vec<Action> {
    s.chars().map(ch).collect()
}

/// Connected, on the topics view, everything loaded, refreshed 3s ago.
pub fn connected(read_only: bool) -> App {
    let mut app = App::new(config(read_only), NOW - 3_000);
    app.start();
    feed(
        &mut app,
        [
            Action::ClusterLoaded(Ok(cluster())),
            Action::TopicsLoaded(Ok(topics())),
        ],
    );
    app.now_ms = NOW;
    app
}

/// The group detail of `billing` with a lag history of falling lag.
pub fn on_billing(read_only: bool) -> App {
    let mut app = connected(read_only);
    feed(
        &mut app,
        [ch(':')]
            .into_iter()
            .chain(typed("groups billing"))
            .chain([key(KeyCode::Enter)]),
    );
    for (i, lag) in [1400i64, 1310, 1200, 1150, 1120, 1080].iter().enumerate() {
        app.now_ms = NOW - 60_000 + 10_000 * i as i64;
        let mut d = billing_detail();
        d.partitions[0].committed = Some(1950 - lag);
        feed(
            &mut app,
            [Action::GroupDetailLoaded {
                group: "billing".into(),
                result: Ok(d),
            }],
        );
    }
    app.now_ms = NOW;
    feed(
        &mut app,
        [Action::GroupDetailLoaded {
            group: "billing".into(),
            result: Ok(billing_detail()),
        }],
    );
    app
}
