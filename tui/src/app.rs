//! Console state and the only function that changes it.
//!
//! `update(&mut App, Action) -> Vec<Command>`: input and I/O results come in as
//! `Action`s; I/O the runtime must start goes out as `Command`s, whose results come
//! back later as `Action`s. Nothing here touches a terminal or the network, so every
//! behaviour is unit-tested by feeding actions and looking at state and commands.

use std::collections::BTreeMap;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::format;
use crate::keys::{self, Op};
use crate::model::{
    ClusterOverview, ConfigRow, GroupDetail, GroupRow, LagHistory, MessageRow, TopicDetail,
    TopicRow,
};
use crate::reset::{self, PartitionOffsets, Plan, Refusal, Strategy, TopicPartition};

/// How many messages one fetch asks for, and how many the browser keeps.
pub const PAGE: usize = 200;
pub const MAX_KEPT_MESSAGES: usize = 5_000;

/// Settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub bootstrap: String,
    pub read_only: bool,
    pub refresh: Duration,
}

/// A screen of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Cluster,
    Topics,
    TopicDetail { topic: String },
    Messages { topic: String },
    Groups,
    GroupDetail { group: String },
}

impl View {
    pub fn title(&self) -> String {
        match self {
            View::Cluster => "cluster".into(),
            View::Topics => "topics".into(),
            View::TopicDetail { topic } => format!("topic {topic}"),
            View::Messages { topic } => format!("messages {topic}"),
            View::Groups => "groups".into(),
            View::GroupDetail { group } => format!("group {group}"),
        }
    }
}

/// Where the message browser starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// The last messages, then new ones as they arrive (tail).
    End,
    Offset(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl StartAt {
    pub fn describe(&self) -> String {
        match self {
            StartAt::Beginning => "from beginning".into(),
            StartAt::End => "tail (live)".into(),
            StartAt::Offset(o) => format!("from offset {o}"),
            StartAt::Timestamp(t) => format!("from {} UTC", format::timestamp_utc(*t)),
        }
    }
}

/// A Kafka error reported by a load or change: whether the cluster could not be
/// reached at all (then the error screen shows) or it answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    pub unreachable: bool,
    pub message: String,
}

impl IoError {
    pub fn unreachable(message: impl Into<String>) -> IoError {
        IoError {
            unreachable: true,
            message: message.into(),
        }
    }

    pub fn api(message: impl Into<String>) -> IoError {
        IoError {
            unreachable: false,
            message: message.into(),
        }
    }
}

/// One page of messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessagePage {
    pub rows: Vec<MessageRow>,
    /// Where each partition continues.
    pub next: BTreeMap<i32, i64>,
    /// Messages between the resolved start and the end of every partition: the M of
    /// "scanned N of M".
    pub total: i64,
}

/// What the offset-reset preview needs, read fresh from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetInputs {
    pub state: String,
    /// "client-id@host (member-id)" of active members.
    pub members: Vec<String>,
    pub offsets: BTreeMap<TopicPartition, PartitionOffsets>,
}

/// A change to a topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// Why offsets are being committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitPurpose {
    /// A reset; `previous` is what undo restores.
    Reset {
        previous: BTreeMap<TopicPartition, i64>,
    },
    Undo,
}

/// I/O for the runtime to perform; each one comes back as exactly one `Action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    LoadCluster,
    LoadTopics,
    LoadTopicDetail {
        topic: String,
    },
    LoadTopicConfigs {
        topic: String,
    },
    LoadGroups,
    LoadGroupDetail {
        group: String,
    },
    /// `from` empty: resolve `start`; otherwise continue from these positions.
    FetchMessages {
        request: u64,
        topic: String,
        start: StartAt,
        from: BTreeMap<i32, i64>,
        limit: usize,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    AddPartitions {
        topic: String,
        total: i32,
    },
    AlterConfig {
        topic: String,
        change: ConfigChange,
    },
    Produce {
        topic: String,
        partition: Option<i32>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    },
    /// Committed, start and end offsets (and offsets at `timestamp` when given) of the
    /// partitions, plus the group's members, for the reset preview.
    LoadResetInputs {
        group: String,
        partitions: Vec<TopicPartition>,
        timestamp: Option<i64>,
    },
    /// The executor must refuse (IoError) if the group has members by now.
    CommitOffsets {
        group: String,
        offsets: BTreeMap<TopicPartition, i64>,
        purpose: CommitPurpose,
    },
}

/// Everything that can change the state: input, time, and I/O results.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Key(KeyEvent),
    /// Wall clock in ms since the epoch; drives refresh, retries and status expiry.
    Tick {
        now_ms: i64,
    },
    ClusterLoaded(Result<ClusterOverview, IoError>),
    TopicsLoaded(Result<Vec<TopicRow>, IoError>),
    TopicDetailLoaded {
        topic: String,
        result: Result<TopicDetail, IoError>,
    },
    TopicConfigsLoaded {
        topic: String,
        result: Result<Vec<ConfigRow>, IoError>,
    },
    GroupsLoaded(Result<Vec<GroupRow>, IoError>),
    GroupDetailLoaded {
        group: String,
        result: Result<GroupDetail, IoError>,
    },
    MessagesLoaded {
        request: u64,
        result: Result<MessagePage, IoError>,
    },
    ResetInputsLoaded {
        group: String,
        result: Result<ResetInputs, IoError>,
    },
    OffsetsCommitted {
        group: String,
        purpose: CommitPurpose,
        result: Result<(), IoError>,
    },
    /// A create/delete/alter/produce finished; `what` says what in past tense.
    Changed {
        what: String,
        result: Result<(), IoError>,
    },
}

/// Data that arrives asynchronously: kept while reloading so the screen never blanks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<T> {
    pub data: Option<T>,
    pub loading: bool,
    /// When `data` was last replaced (ms since epoch).
    pub updated_ms: Option<i64>,
    pub error: Option<String>,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded {
            data: None,
            loading: false,
            updated_ms: None,
            error: None,
        }
    }
}

impl<T> Loaded<T> {
    fn set(&mut self, result: Result<T, IoError>, now_ms: i64) {
        self.loading = false;
        match result {
            Ok(d) => {
                self.data = Some(d);
                self.updated_ms = Some(now_ms);
                self.error = None;
            }
            Err(e) => self.error = Some(e.message),
        }
    }
}

/// Selection and filter of one list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListState {
    pub selected: usize,
    pub filter: String,
}

/// Whether the cluster answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Up,
    Unreachable {
        reason: String,
        attempts: u32,
        next_retry_ms: i64,
    },
}

/// The message browser of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBrowser {
    pub topic: String,
    pub start: StartAt,
    pub rows: Vec<MessageRow>,
    pub next: BTreeMap<i32, i64>,
    pub total: Option<i64>,
    /// Messages read so far, matching the filter or not.
    pub scanned: usize,
    pub request: u64,
    pub loading: bool,
    pub error: Option<String>,
    pub list: ListState,
}

impl MessageBrowser {
    fn new(topic: &str, start: StartAt) -> MessageBrowser {
        MessageBrowser {
            topic: topic.to_string(),
            start,
            rows: Vec::new(),
            next: BTreeMap::new(),
            total: None,
            scanned: 0,
            request: 0,
            loading: false,
            error: None,
            list: ListState::default(),
        }
    }

    /// Rows whose key or value contains the filter (as text), newest last.
    pub fn visible(&self) -> Vec<&MessageRow> {
        let f = self.list.filter.to_lowercase();
        self.rows
            .iter()
            .filter(|r| {
                f.is_empty()
                    || [&r.key, &r.value].iter().any(|b| {
                        b.as_deref()
                            .is_some_and(|b| String::from_utf8_lossy(b).to_lowercase().contains(&f))
                    })
            })
            .collect()
    }
}

/// A one-line prompt at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    /// `:` view name.
    Jump,
    /// `/` filter of the current list.
    Filter,
}

/// What a form is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    CreateTopic,
    AddPartitions {
        topic: String,
        current: usize,
    },
    EditConfig {
        topic: String,
    },
    Produce {
        topic: String,
        partitions: Option<usize>,
    },
    SeekOffset {
        topic: String,
    },
    SeekTime {
        topic: String,
    },
}

impl FormKind {
    pub fn title(&self) -> String {
        match self {
            FormKind::CreateTopic => "create topic".into(),
            FormKind::AddPartitions { topic, .. } => format!("add partitions to {topic}"),
            FormKind::EditConfig { topic } => format!("edit config of {topic}"),
            FormKind::Produce { topic, .. } => format!("produce to {topic}"),
            FormKind::SeekOffset { topic } => format!("browse {topic} from offset"),
            FormKind::SeekTime { topic } => format!("browse {topic} from time"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub error: Option<String>,
}

impl Form {
    fn new(kind: FormKind, fields: &[(&'static str, &str, &'static str)]) -> Form {
        Form {
            kind,
            fields: fields
                .iter()
                .map(|&(label, value, hint)| Field {
                    label,
                    value: value.to_string(),
                    hint,
                })
                .collect(),
            focus: 0,
            error: None,
        }
    }

    fn value(&self, i: usize) -> &str {
        self.fields.get(i).map(|f| f.value.trim()).unwrap_or("")
    }
}

/// The offset-reset strategies in the order ←/→ cycles through them.
pub const STRATEGIES: &[(&str, &str)] = &[
    ("earliest", ""),
    ("latest", ""),
    ("offset", "offset, e.g. 1200"),
    ("shift by", "N, e.g. -500 or 100"),
    ("datetime", "2024-05-01T12:00:00Z"),
    ("duration ago", "e.g. 15m, 2h, 1d"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetStage {
    Choose,
    Loading,
    Preview(Plan),
    Applying(Plan),
}

/// The offset-reset dialog of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetDialog {
    pub group: String,
    /// Set when the group has active members: the dialog shows them and nothing else.
    pub refusal: Option<Refusal>,
    /// Every partition the group has a committed offset on, and whether it is chosen.
    pub partitions: Vec<(TopicPartition, bool)>,
    /// Row under the cursor in `rows()`.
    pub cursor: usize,
    pub strategy: usize,
    pub arg: String,
    pub stage: ResetStage,
    pub error: Option<String>,
}

/// A row of the reset dialog's chooser: a whole topic or one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChooserRow {
    pub topic: String,
    pub partition: Option<i32>,
    /// All (topic row: all of its partitions), some, or none chosen.
    pub chosen: Chosen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    All,
    Some,
    None,
}

impl ResetDialog {
    pub fn rows(&self) -> Vec<ChooserRow> {
        let mut rows = Vec::new();
        let mut topics: Vec<&str> = self
            .partitions
            .iter()
            .map(|((t, _), _)| t.as_str())
            .collect();
        topics.dedup();
        for t in topics {
            let parts: Vec<&(TopicPartition, bool)> = self
                .partitions
                .iter()
                .filter(|((pt, _), _)| pt == t)
                .collect();
            let n = parts.iter().filter(|(_, c)| *c).count();
            rows.push(ChooserRow {
                topic: t.to_string(),
                partition: None,
                chosen: if n == parts.len() {
                    Chosen::All
                } else if n == 0 {
                    Chosen::None
                } else {
                    Chosen::Some
                },
            });
            for ((_, p), c) in parts {
                rows.push(ChooserRow {
                    topic: t.to_string(),
                    partition: Some(*p),
                    chosen: if *c { Chosen::All } else { Chosen::None },
                });
            }
        }
        rows
    }

    pub fn chosen(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, c)| *c)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    fn toggle(&mut self) {
        let Some(row) = self.rows().into_iter().nth(self.cursor) else {
            return;
        };
        let to = row.chosen != Chosen::All;
        for ((t, p), c) in &mut self.partitions {
            if *t == row.topic && row.partition.is_none_or(|rp| rp == *p) {
                *c = to;
            }
        }
    }

    /// The strategy with its argument parsed; the error names the fix.
    pub fn parse_strategy(&self) -> Result<Strategy, String> {
        let arg = self.arg.trim();
        match self.strategy {
            0 => Ok(Strategy::Earliest),
            1 => Ok(Strategy::Latest),
            2 => arg
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Strategy::ToOffset)
                .ok_or_else(|| format!("type the offset to move to, a whole number >= 0 (got {arg:?})")),
            3 => arg
                .parse::<i64>()
                .ok()
                .filter(|n| *n != 0)
                .map(Strategy::ShiftBy)
                .ok_or_else(|| {
                    format!("type how far to shift, e.g. -500 to re-read 500 or 100 to skip 100 (got {arg:?})")
                }),
            4 => format::parse_datetime(arg).map(Strategy::ToDatetime),
            _ => format::parse_duration(arg).map(|d| {
                Strategy::DurationAgo(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }),
        }
    }
}

/// The delete confirmation: the topic name must be typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmDelete {
    pub topic: String,
    pub typed: String,
}

/// At most one overlay is open; it takes the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Prompt {
        kind: PromptKind,
        input: String,
    },
    ConfirmDelete(ConfirmDelete),
    Form(Form),
    Reset(ResetDialog),
    /// The message at this index of the browser's visible rows.
    Message {
        index: usize,
    },
}

/// A line at the bottom saying what just happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    pub at_ms: i64,
}

/// What undo restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    pub group: String,
    pub previous: BTreeMap<TopicPartition, i64>,
}

/// The whole console state.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub config: AppConfig,
    pub now_ms: i64,
    pub connection: Connection,
    /// Non-empty; the last one is on screen.
    pub stack: Vec<View>,
    pub cluster: Loaded<ClusterOverview>,
    pub topics: Loaded<Vec<TopicRow>>,
    pub topic_detail: Loaded<TopicDetail>,
    pub groups: Loaded<Vec<GroupRow>>,
    pub group_detail: Loaded<GroupDetail>,
    pub lag_history: BTreeMap<String, LagHistory>,
    pub messages: Option<MessageBrowser>,
    pub lists: BTreeMap<&'static str, ListState>,
    pub overlay: Option<Overlay>,
    pub status: Option<Status>,
    pub undo: Option<Undo>,
    /// When the current view's data last arrived.
    pub last_refresh_ms: Option<i64>,
    pub next_request: u64,
    pub quit: bool,
}

const STATUS_TTL_MS: i64 = 8_000;
const MAX_RETRY_MS: i64 = 10_000;

impl App {
    pub fn new(config: AppConfig, now_ms: i64) -> App {
        App {
            config,
            now_ms,
            connection: Connection::Connecting,
            stack: vec![View::Topics],
            cluster: Loaded::default(),
            topics: Loaded::default(),
            topic_detail: Loaded::default(),
            groups: Loaded::default(),
            group_detail: Loaded::default(),
            lag_history: BTreeMap::new(),
            messages: None,
            lists: BTreeMap::new(),
            overlay: None,
            status: None,
            undo: None,
            last_refresh_ms: None,
            next_request: 1,
            quit: false,
        }
    }

    /// The commands to run at start.
    pub fn start(&mut self) -> Vec<Command> {
        self.cluster.loading = true;
        vec![Command::LoadCluster]
    }

    pub fn view(&self) -> &View {
        // The stack is never emptied: `back` keeps the last view.
        self.stack.last().unwrap_or(&View::Topics)
    }

    fn list_key(view: &View) -> &'static str {
        match view {
            View::Cluster => "cluster",
            View::Topics => "topics",
            View::TopicDetail { .. } => "topic",
            View::Messages { .. } => "messages",
            View::Groups => "groups",
            View::GroupDetail { .. } => "group",
        }
    }

    /// Selection and filter of the current view's list.
    pub fn list(&self) -> ListState {
        if let (View::Messages { .. }, Some(b)) = (self.view(), &self.messages) {
            return b.list.clone();
        }
        self.lists
            .get(Self::list_key(self.view()))
            .cloned()
            .unwrap_or_default()
    }

    fn list_mut(&mut self) -> &mut ListState {
        let key = Self::list_key(self.view());
        match (&mut self.messages, key) {
            (Some(b), "messages") => &mut b.list,
            _ => self.lists.entry(key).or_default(),
        }
    }

    /// Rows of the topics view after the filter.
    pub fn visible_topics(&self) -> Vec<&TopicRow> {
        let f = self
            .lists
            .get("topics")
            .map(|l| l.filter.to_lowercase())
            .unwrap_or_default();
        self.topics
            .data
            .iter()
            .flatten()
            .filter(|t| t.name.to_lowercase().contains(&f))
            .collect()
    }

    pub fn visible_groups(&self) -> Vec<&GroupRow> {
        let f = self
            .lists
            .get("groups")
            .map(|l| l.filter.to_lowercase())
            .unwrap_or_default();
        self.groups
            .data
            .iter()
            .flatten()
            .filter(|g| {
                g.group_id.to_lowercase().contains(&f) || g.state.to_lowercase().contains(&f)
            })
            .collect()
    }

    /// Number of rows in the current list, for moving the selection.
    fn list_len(&self) -> usize {
        match self.view() {
            View::Cluster => self.cluster.data.as_ref().map_or(0, |c| c.brokers.len()),
            View::Topics => self.visible_topics().len(),
            View::TopicDetail { .. } => self
                .topic_detail
                .data
                .as_ref()
                .map_or(0, |d| d.partitions.len()),
            View::Messages { .. } => self.messages.as_ref().map_or(0, |b| b.visible().len()),
            View::Groups => self.visible_groups().len(),
            View::GroupDetail { .. } => self
                .group_detail
                .data
                .as_ref()
                .map_or(0, |d| d.partitions.len()),
        }
    }

    fn selected_topic(&self) -> Option<String> {
        match self.view() {
            View::Topics => self
                .visible_topics()
                .get(self.list().selected)
                .map(|t| t.name.clone()),
            View::TopicDetail { topic } | View::Messages { topic } => Some(topic.clone()),
            _ => None,
        }
    }

    fn topic_partition_count(&self, topic: &str) -> Option<usize> {
        if let Some(d) = self.topic_detail.data.as_ref().filter(|d| d.name == topic) {
            return Some(d.partitions.len());
        }
        self.topics
            .data
            .iter()
            .flatten()
            .find(|t| t.name == topic)
            .map(|t| t.partitions)
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
            at_ms: self.now_ms,
        });
    }

    /// The commands that (re)load what the current view shows.
    fn load_view(&mut self) -> Vec<Command> {
        match self.view().clone() {
            View::Cluster => {
                self.cluster.loading = true;
                vec![Command::LoadCluster]
            }
            View::Topics => {
                self.topics.loading = true;
                vec![Command::LoadTopics]
            }
            View::TopicDetail { topic } => {
                self.topic_detail.loading = true;
                vec![
                    Command::LoadTopicDetail {
                        topic: topic.clone(),
                    },
                    Command::LoadTopicConfigs { topic },
                ]
            }
            View::Messages { .. } => self.fetch_messages(),
            View::Groups => {
                self.groups.loading = true;
                vec![Command::LoadGroups]
            }
            View::GroupDetail { group } => {
                self.group_detail.loading = true;
                vec![Command::LoadGroupDetail { group }]
            }
        }
    }

    fn view_loading(&self) -> bool {
        match self.view() {
            View::Cluster => self.cluster.loading,
            View::Topics => self.topics.loading,
            View::TopicDetail { .. } => self.topic_detail.loading,
            View::Messages { .. } => self.messages.as_ref().is_some_and(|b| b.loading),
            View::Groups => self.groups.loading,
            View::GroupDetail { .. } => self.group_detail.loading,
        }
    }

    /// Fetches the next page: continuing when positions are known, else from `start`.
    fn fetch_messages(&mut self) -> Vec<Command> {
        let request = self.next_request;
        let Some(b) = &mut self.messages else {
            return Vec::new();
        };
        self.next_request += 1;
        b.request = request;
        b.loading = true;
        vec![Command::FetchMessages {
            request,
            topic: b.topic.clone(),
            start: b.start,
            from: b.next.clone(),
            limit: PAGE,
        }]
    }

    fn open(&mut self, view: View) -> Vec<Command> {
        if self.view() != &view {
            self.stack.push(view);
        }
        self.overlay = None;
        self.load_view()
    }

    fn browse(&mut self, topic: &str, start: StartAt) -> Vec<Command> {
        self.messages = Some(MessageBrowser::new(topic, start));
        let view = View::Messages {
            topic: topic.to_string(),
        };
        if self.view() != &view {
            self.stack.push(view);
        }
        self.overlay = None;
        self.fetch_messages()
    }
}

/// Applies one action; returns the I/O to start.
pub fn update(app: &mut App, action: Action) -> Vec<Command> {
    match action {
        Action::Key(key) => on_key(app, key),
        Action::Tick { now_ms } => on_tick(app, now_ms),
        Action::ClusterLoaded(result) => {
            let was_up = app.connection == Connection::Up;
            match result {
                Err(e) if e.unreachable => {
                    app.cluster.loading = false;
                    unreachable(app, e.message);
                    Vec::new()
                }
                result => {
                    let ok = result.is_ok();
                    app.cluster.set(result, app.now_ms);
                    if ok {
                        app.connection = Connection::Up;
                        if app.view() == &View::Cluster {
                            app.last_refresh_ms = Some(app.now_ms);
                        }
                    }
                    if ok && !was_up && app.view() != &View::Cluster {
                        app.load_view()
                    } else {
                        Vec::new()
                    }
                }
            }
        }
        Action::TopicsLoaded(result) => {
            loaded(app, result, |a| &mut a.topics, |v| v == &View::Topics);
            clamp_selection(app);
            Vec::new()
        }
        Action::TopicDetailLoaded { topic, result } => {
            let current = app.topic_detail.data.as_ref().map(|d| d.name == topic);
            let configs = app
                .topic_detail
                .data
                .as_ref()
                .filter(|d| d.name == topic)
                .and_then(|d| d.configs.clone());
            let result = result.map(|mut d| {
                if d.configs.is_none() && current == Some(true) {
                    d.configs = configs;
                }
                d
            });
            loaded(
                app,
                result,
                |a| &mut a.topic_detail,
                |v| matches!(v, View::TopicDetail { topic: t } if *t == topic),
            );
            Vec::new()
        }
        Action::TopicConfigsLoaded { topic, result } => {
            match (result, app.topic_detail.data.as_mut()) {
                (Ok(c), Some(d)) if d.name == topic => d.configs = Some(c),
                (Ok(c), None) => {
                    app.topic_detail.data = Some(TopicDetail {
                        name: topic,
                        partitions: Vec::new(),
                        configs: Some(c),
                    })
                }
                (Ok(_), Some(_)) => {}
                (Err(e), _) => {
                    let text = format!("configs of {topic}: {}", e.message);
                    check_unreachable(app, &e);
                    app.say(text, true);
                }
            }
            Vec::new()
        }
        Action::GroupsLoaded(result) => {
            if let Ok(rows) = &result {
                let now = app.now_ms;
                for g in rows {
                    if let Some(lag) = g.total_lag {
                        app.lag_history
                            .entry(g.group_id.clone())
                            .or_default()
                            .push(now, lag);
                    }
                }
            }
            loaded(app, result, |a| &mut a.groups, |v| v == &View::Groups);
            clamp_selection(app);
            Vec::new()
        }
        Action::GroupDetailLoaded { group, result } => {
            if let Ok(d) = &result {
                let now = app.now_ms;
                app.lag_history
                    .entry(group.clone())
                    .or_default()
                    .push(now, d.total_lag());
            }
            loaded(
                app,
                result,
                |a| &mut a.group_detail,
                |v| matches!(v, View::GroupDetail { group: g } if *g == group),
            );
            Vec::new()
        }
        Action::MessagesLoaded { request, result } => {
            on_messages(app, request, result);
            Vec::new()
        }
        Action::ResetInputsLoaded { group, result } => {
            on_reset_inputs(app, &group, result);
            Vec::new()
        }
        Action::OffsetsCommitted {
            group,
            purpose,
            result,
        } => on_committed(app, group, purpose, result),
        Action::Changed { what, result } => match result {
            Ok(()) => {
                app.say(what, false);
                app.load_view()
            }
            Err(e) => {
                check_unreachable(app, &e);
                app.say(format!("failed: {}", e.message), true);
                Vec::new()
            }
        },
    }
}

/// Stores a load result; unreachable errors switch to the error screen.
fn loaded<T>(
    app: &mut App,
    result: Result<T, IoError>,
    slot: impl Fn(&mut App) -> &mut Loaded<T>,
    is_current: impl Fn(&View) -> bool,
) {
    if let Err(e) = &result {
        check_unreachable(app, e);
    } else if is_current(app.view()) {
        app.last_refresh_ms = Some(app.now_ms);
    }
    let now = app.now_ms;
    slot(app).set(result, now);
}

fn check_unreachable(app: &mut App, e: &IoError) {
    if e.unreachable {
        unreachable(app, e.message.clone());
    }
}

fn unreachable(app: &mut App, reason: String) {
    let attempts = match &app.connection {
        Connection::Unreachable { attempts, .. } => attempts + 1,
        _ => 1,
    };
    // 1s, 2s, 4s, ... at most 10s between attempts.
    let backoff = (1000i64 << attempts.saturating_sub(1).min(4)).min(MAX_RETRY_MS);
    app.connection = Connection::Unreachable {
        reason,
        attempts,
        next_retry_ms: app.now_ms + backoff,
    };
}

fn clamp_selection(app: &mut App) {
    let len = app.list_len();
    let l = app.list_mut();
    if l.selected >= len {
        l.selected = len.saturating_sub(1);
    }
}

fn on_tick(app: &mut App, now_ms: i64) -> Vec<Command> {
    app.now_ms = now_ms;
    if app
        .status
        .as_ref()
        .is_some_and(|s| !s.error && now_ms - s.at_ms > STATUS_TTL_MS)
    {
        app.status = None;
    }
    match &app.connection {
        Connection::Unreachable { next_retry_ms, .. } => {
            if now_ms >= *next_retry_ms && !app.cluster.loading {
                app.cluster.loading = true;
                vec![Command::LoadCluster]
            } else {
                Vec::new()
            }
        }
        Connection::Connecting => Vec::new(),
        Connection::Up => {
            let refresh = i64::try_from(app.config.refresh.as_millis()).unwrap_or(i64::MAX);
            let due = app
                .last_refresh_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= refresh);
            let browsing_history = matches!(
                (app.view(), &app.messages),
                (View::Messages { .. }, Some(b)) if b.start != StartAt::End
            );
            // Forms and dialogs keep their data still while the user reads it.
            let busy = app
                .overlay
                .as_ref()
                .is_some_and(|o| !matches!(o, Overlay::Help));
            if due && !app.view_loading() && !browsing_history && !busy {
                app.last_refresh_ms = Some(now_ms);
                app.load_view()
            } else {
                Vec::new()
            }
        }
    }
}

fn on_messages(app: &mut App, request: u64, result: Result<MessagePage, IoError>) {
    let now = app.now_ms;
    let Some(b) = &mut app.messages else {
        return;
    };
    if b.request != request {
        return; // a stale answer for a browse that was replaced
    }
    b.loading = false;
    match result {
        Ok(page) => {
            b.error = None;
            b.scanned += page.rows.len();
            if b.total.is_none() || b.next.is_empty() {
                b.total = Some(page.total);
            } else if b.start == StartAt::End {
                // Tail: new messages extend the range being watched.
                b.total = Some(b.total.unwrap_or(0) + page.rows.len() as i64);
            }
            b.rows.extend(page.rows);
            if b.rows.len() > MAX_KEPT_MESSAGES {
                let drop = b.rows.len() - MAX_KEPT_MESSAGES;
                b.rows.drain(..drop);
            }
            b.next = page.next;
            app.last_refresh_ms = Some(now);
            if b.start == StartAt::End {
                // Follow the newest message.
                b.list.selected = b.visible().len().saturating_sub(1);
            }
        }
        Err(e) => {
            b.error = Some(e.message.clone());
            check_unreachable(app, &e);
        }
    }
}

fn on_reset_inputs(app: &mut App, group: &str, result: Result<ResetInputs, IoError>) {
    let Some(Overlay::Reset(d)) = &mut app.overlay else {
        return;
    };
    if d.group != group || d.stage != ResetStage::Loading {
        return;
    }
    match result {
        Err(e) => {
            d.stage = ResetStage::Choose;
            d.error = Some(e.message.clone());
            check_unreachable(app, &e);
        }
        Ok(inputs) => {
            if let Err(refusal) = reset::check_inactive(&inputs.state, &inputs.members) {
                d.refusal = Some(refusal);
                d.stage = ResetStage::Choose;
                return;
            }
            let planned = d
                .parse_strategy()
                .and_then(|s| reset::plan(s, &inputs.offsets).map_err(|e| e.to_string()));
            match planned {
                Ok(plan) => {
                    d.error = None;
                    d.stage = ResetStage::Preview(plan);
                }
                Err(e) => {
                    d.error = Some(e);
                    d.stage = ResetStage::Choose;
                }
            }
        }
    }
}

fn on_committed(
    app: &mut App,
    group: String,
    purpose: CommitPurpose,
    result: Result<(), IoError>,
) -> Vec<Command> {
    match (result, purpose) {
        (Err(e), _) => {
            check_unreachable(app, &e);
            if let Some(Overlay::Reset(d)) = &mut app.overlay {
                if let ResetStage::Applying(plan) = &d.stage {
                    d.stage = ResetStage::Preview(plan.clone());
                }
                d.error = Some(e.message.clone());
            }
            app.say(
                format!("offsets of {group} not changed: {}", e.message),
                true,
            );
            Vec::new()
        }
        (Ok(()), CommitPurpose::Reset { previous }) => {
            let n = match &app.overlay {
                Some(Overlay::Reset(d)) => match &d.stage {
                    ResetStage::Applying(p) => p.rows.len(),
                    _ => 0,
                },
                _ => 0,
            };
            if matches!(&app.overlay, Some(Overlay::Reset(d)) if d.group == group) {
                app.overlay = None;
            }
            let undoable = !previous.is_empty();
            app.undo = undoable.then(|| Undo {
                group: group.clone(),
                previous,
            });
            let hint = if undoable && !app.config.read_only {
                "; u undoes it"
            } else {
                ""
            };
            app.say(format!("reset {n} partition(s) of {group}{hint}"), false);
            app.load_view()
        }
        (Ok(()), CommitPurpose::Undo) => {
            app.undo = None;
            app.say(format!("offsets of {group} restored"), false);
            app.load_view()
        }
    }
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return Vec::new();
    }
    if let Some(overlay) = app.overlay.take() {
        return on_overlay_key(app, overlay, key);
    }
    if let Connection::Unreachable { .. } = app.connection {
        return match key.code {
            KeyCode::Char('q') | KeyCode::Esc => {
                app.quit = true;
                Vec::new()
            }
            KeyCode::Char('r') | KeyCode::Char('R') if !app.cluster.loading => {
                app.cluster.loading = true;
                vec![Command::LoadCluster]
            }
            _ => Vec::new(),
        };
    }
    if move_selection(app, key.code) {
        return Vec::new();
    }
    let Some(op) = keys::lookup(app.view(), app.config.read_only, key.code) else {
        return Vec::new();
    };
    on_op(app, op)
}

/// Arrow keys, j/k, page and home/end move the selection of the current list.
fn move_selection(app: &mut App, code: KeyCode) -> bool {
    let len = app.list_len();
    let page = 10;
    let l = app.list_mut();
    let last = len.saturating_sub(1);
    l.selected = match code {
        KeyCode::Up | KeyCode::Char('k') => l.selected.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => (l.selected + 1).min(last),
        KeyCode::PageUp => l.selected.saturating_sub(page),
        KeyCode::PageDown => (l.selected + page).min(last),
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => last,
        _ => return false,
    };
    true
}

fn on_op(app: &mut App, op: Op) -> Vec<Command> {
    let read_only = app.config.read_only;
    match op {
        Op::Quit => {
            app.quit = true;
            Vec::new()
        }
        Op::Help => {
            app.overlay = Some(Overlay::Help);
            Vec::new()
        }
        Op::Jump => {
            app.overlay = Some(Overlay::Prompt {
                kind: PromptKind::Jump,
                input: String::new(),
            });
            Vec::new()
        }
        Op::Filter => {
            let input = app.list().filter;
            app.overlay = Some(Overlay::Prompt {
                kind: PromptKind::Filter,
                input,
            });
            Vec::new()
        }
        Op::Back => {
            if !app.list().filter.is_empty() {
                app.list_mut().filter.clear();
            } else if app.stack.len() > 1 {
                app.stack.pop();
                return app.load_view();
            }
            Vec::new()
        }
        Op::Refresh => {
            if app.view_loading() {
                Vec::new()
            } else {
                app.load_view()
            }
        }
        Op::Open => match app.view().clone() {
            View::Topics => match app.selected_topic() {
                Some(topic) => app.open(View::TopicDetail { topic }),
                None => Vec::new(),
            },
            View::Groups => {
                let sel = app.list().selected;
                match app.visible_groups().get(sel).map(|g| g.group_id.clone()) {
                    Some(group) => app.open(View::GroupDetail { group }),
                    None => Vec::new(),
                }
            }
            View::Messages { .. } => {
                let index = app.list().selected;
                if app.list_len() > index {
                    app.overlay = Some(Overlay::Message { index });
                }
                Vec::new()
            }
            _ => Vec::new(),
        },
        Op::Browse => match app.selected_topic() {
            Some(topic) => app.browse(&topic, StartAt::Beginning),
            None => Vec::new(),
        },
        Op::FromBeginning | Op::Tail => {
            let start = if op == Op::Tail {
                StartAt::End
            } else {
                StartAt::Beginning
            };
            match app.selected_topic() {
                Some(topic) => {
                    let filter = app.list().filter;
                    let cmds = app.browse(&topic, start);
                    app.list_mut().filter = filter;
                    cmds
                }
                None => Vec::new(),
            }
        }
        Op::LoadMore => {
            let loading = app.messages.as_ref().is_none_or(|b| b.loading);
            if loading {
                Vec::new()
            } else {
                app.fetch_messages()
            }
        }
        Op::SeekOffset | Op::SeekTime => {
            if let Some(topic) = app.selected_topic() {
                app.overlay = Some(Overlay::Form(if op == Op::SeekOffset {
                    Form::new(
                        FormKind::SeekOffset { topic },
                        &[("offset", "", "e.g. 1200")],
                    )
                } else {
                    Form::new(
                        FormKind::SeekTime { topic },
                        &[(
                            "time",
                            "",
                            "2024-05-01T12:00:00Z, or 15m for 15 minutes ago",
                        )],
                    )
                }));
            }
            Vec::new()
        }
        _ if read_only => Vec::new(),
        Op::Create => {
            app.overlay = Some(Overlay::Form(Form::new(
                FormKind::CreateTopic,
                &[
                    ("name", "", "letters, digits, . _ -"),
                    ("partitions", "1", "at least 1"),
                    ("replication factor", "1", "at most the number of brokers"),
                    ("configs", "", "key=value, comma separated"),
                ],
            )));
            Vec::new()
        }
        Op::Delete => {
            if let Some(topic) = app.selected_topic() {
                app.overlay = Some(Overlay::ConfirmDelete(ConfirmDelete {
                    topic,
                    typed: String::new(),
                }));
            }
            Vec::new()
        }
        Op::AddPartitions => {
            if let Some(topic) = app.selected_topic() {
                let current = app.topic_partition_count(&topic).unwrap_or(0);
                let suggested = (current + 1).to_string();
                app.overlay = Some(Overlay::Form(Form::new(
                    FormKind::AddPartitions { topic, current },
                    &[(
                        "total partitions",
                        &suggested,
                        "more than now; they can never shrink",
                    )],
                )));
            }
            Vec::new()
        }
        Op::EditConfig => {
            if let Some(topic) = app.selected_topic() {
                app.overlay = Some(Overlay::Form(Form::new(
                    FormKind::EditConfig { topic },
                    &[
                        ("key", "", "e.g. retention.ms"),
                        ("value", "", "empty: back to the default"),
                    ],
                )));
            }
            Vec::new()
        }
        Op::Produce => {
            if let Some(topic) = app.selected_topic() {
                let partitions = app.topic_partition_count(&topic);
                app.overlay = Some(Overlay::Form(Form::new(
                    FormKind::Produce { topic, partitions },
                    &[
                        ("key", "", "empty: no key"),
                        ("value", "", "text or JSON"),
                        ("headers", "", "name=value, comma separated"),
                        ("partition", "", "empty: chosen by key"),
                    ],
                )));
            }
            Vec::new()
        }
        Op::Reset => {
            open_reset(app);
            Vec::new()
        }
        Op::Undo => match (&app.undo, app.view()) {
            (Some(u), View::GroupDetail { group }) if u.group == *group => {
                vec![Command::CommitOffsets {
                    group: u.group.clone(),
                    offsets: u.previous.clone(),
                    purpose: CommitPurpose::Undo,
                }]
            }
            _ => {
                app.say("nothing to undo for this group", true);
                Vec::new()
            }
        },
    }
}

fn open_reset(app: &mut App) {
    let Some(d) = app.group_detail.data.as_ref() else {
        return;
    };
    if !matches!(app.view(), View::GroupDetail { group } if *group == d.group_id) {
        return;
    }
    let members: Vec<String> = d
        .members
        .iter()
        .map(|m| format!("{}@{} ({})", m.client_id, m.host, m.member_id))
        .collect();
    let mut partitions: Vec<(TopicPartition, bool)> = d
        .partitions
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), true))
        .collect();
    partitions.sort();
    app.overlay = Some(Overlay::Reset(ResetDialog {
        group: d.group_id.clone(),
        refusal: reset::check_inactive(&d.state, &members).err(),
        partitions,
        cursor: 0,
        strategy: 0,
        arg: String::new(),
        stage: ResetStage::Choose,
        error: None,
    }));
}

fn on_overlay_key(app: &mut App, overlay: Overlay, key: KeyEvent) -> Vec<Command> {
    match overlay {
        Overlay::Help => {
            if !matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            ) {
                app.overlay = Some(Overlay::Help);
            }
            Vec::new()
        }
        Overlay::Message { index } => {
            let len = app.list_len();
            let index = match key.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
                KeyCode::Down | KeyCode::Char('j') => (index + 1).min(len.saturating_sub(1)),
                KeyCode::Up | KeyCode::Char('k') => index.saturating_sub(1),
                _ => index,
            };
            app.list_mut().selected = index;
            app.overlay = Some(Overlay::Message { index });
            Vec::new()
        }
        Overlay::Prompt { kind, mut input } => match key.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter => match kind {
                PromptKind::Filter => {
                    app.list_mut().filter = input.trim().to_string();
                    app.list_mut().selected = 0;
                    Vec::new()
                }
                PromptKind::Jump => jump(app, input.trim()),
            },
            KeyCode::Backspace => {
                input.pop();
                if kind == PromptKind::Filter {
                    app.list_mut().filter = input.clone();
                    app.list_mut().selected = 0;
                }
                app.overlay = Some(Overlay::Prompt { kind, input });
                Vec::new()
            }
            KeyCode::Char(c) => {
                input.push(c);
                if kind == PromptKind::Filter {
                    // Filter as you type.
                    app.list_mut().filter = input.clone();
                    app.list_mut().selected = 0;
                }
                app.overlay = Some(Overlay::Prompt { kind, input });
                Vec::new()
            }
            _ => {
                app.overlay = Some(Overlay::Prompt { kind, input });
                Vec::new()
            }
        },
        Overlay::ConfirmDelete(mut c) => match key.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter if c.typed == c.topic => {
                app.say(format!("deleting {}", c.topic), false);
                vec![Command::DeleteTopic { name: c.topic }]
            }
            KeyCode::Enter => {
                app.overlay = Some(Overlay::ConfirmDelete(c));
                Vec::new()
            }
            KeyCode::Backspace => {
                c.typed.pop();
                app.overlay = Some(Overlay::ConfirmDelete(c));
                Vec::new()
            }
            KeyCode::Char(ch) => {
                c.typed.push(ch);
                app.overlay = Some(Overlay::ConfirmDelete(c));
                Vec::new()
            }
            _ => {
                app.overlay = Some(Overlay::ConfirmDelete(c));
                Vec::new()
            }
        },
        Overlay::Form(mut f) => match key.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Tab | KeyCode::Down => {
                f.focus = (f.focus + 1) % f.fields.len().max(1);
                app.overlay = Some(Overlay::Form(f));
                Vec::new()
            }
            KeyCode::BackTab | KeyCode::Up => {
                f.focus = (f.focus + f.fields.len().max(1) - 1) % f.fields.len().max(1);
                app.overlay = Some(Overlay::Form(f));
                Vec::new()
            }
            KeyCode::Enter => match submit_form(app, &f) {
                Ok(cmds) => cmds,
                Err(e) => {
                    f.error = Some(e);
                    app.overlay = Some(Overlay::Form(f));
                    Vec::new()
                }
            },
            KeyCode::Backspace => {
                if let Some(field) = f.fields.get_mut(f.focus) {
                    field.value.pop();
                }
                app.overlay = Some(Overlay::Form(f));
                Vec::new()
            }
            KeyCode::Char(c) => {
                if let Some(field) = f.fields.get_mut(f.focus) {
                    field.value.push(c);
                }
                app.overlay = Some(Overlay::Form(f));
                Vec::new()
            }
            _ => {
                app.overlay = Some(Overlay::Form(f));
                Vec::new()
            }
        },
        Overlay::Reset(d) => on_reset_key(app, d, key),
    }
}

fn on_reset_key(app: &mut App, mut d: ResetDialog, key: KeyEvent) -> Vec<Command> {
    if d.refusal.is_some() {
        // Only closing is offered while the group has members.
        if !matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
            app.overlay = Some(Overlay::Reset(d));
        }
        return Vec::new();
    }
    let mut cmds = Vec::new();
    match (&d.stage, key.code) {
        (_, KeyCode::Esc) => match &d.stage {
            ResetStage::Preview(_) => d.stage = ResetStage::Choose,
            _ => return Vec::new(),
        },
        (ResetStage::Choose, KeyCode::Up) => d.cursor = d.cursor.saturating_sub(1),
        (ResetStage::Choose, KeyCode::Down) => {
            d.cursor = (d.cursor + 1).min(d.rows().len().saturating_sub(1))
        }
        (ResetStage::Choose, KeyCode::Char(' ')) => d.toggle(),
        (ResetStage::Choose, KeyCode::Left) => {
            d.strategy = (d.strategy + STRATEGIES.len() - 1) % STRATEGIES.len();
            d.arg.clear();
            d.error = None;
        }
        (ResetStage::Choose, KeyCode::Right) | (ResetStage::Choose, KeyCode::Tab) => {
            d.strategy = (d.strategy + 1) % STRATEGIES.len();
            d.arg.clear();
            d.error = None;
        }
        (ResetStage::Choose, KeyCode::Backspace) => {
            d.arg.pop();
        }
        (ResetStage::Choose, KeyCode::Char(c)) if !STRATEGIES[d.strategy].1.is_empty() => {
            d.arg.push(c)
        }
        (ResetStage::Choose, KeyCode::Enter) => {
            let chosen = d.chosen();
            match d.parse_strategy() {
                Err(e) => d.error = Some(e),
                Ok(_) if chosen.is_empty() => {
                    d.error = Some(reset::PlanError::NothingSelected.to_string())
                }
                Ok(s) => {
                    d.error = None;
                    d.stage = ResetStage::Loading;
                    cmds.push(Command::LoadResetInputs {
                        group: d.group.clone(),
                        partitions: chosen,
                        timestamp: s.lookup_timestamp(app.now_ms),
                    });
                }
            }
        }
        (ResetStage::Preview(plan), KeyCode::Enter) => {
            if plan.changes_anything() {
                let plan = plan.clone();
                cmds.push(Command::CommitOffsets {
                    group: d.group.clone(),
                    offsets: plan.new_offsets(),
                    purpose: CommitPurpose::Reset {
                        previous: plan.previous_offsets(),
                    },
                });
                d.stage = ResetStage::Applying(plan);
            } else {
                d.error = Some("the plan changes no offset: pick another strategy (esc)".into());
            }
        }
        _ => {}
    }
    app.overlay = Some(Overlay::Reset(d));
    cmds
}

/// `:` jump; names and aliases from `keys::VIEW_NAMES`, `messages` takes a topic.
fn jump(app: &mut App, input: &str) -> Vec<Command> {
    let mut words = input.split_whitespace();
    let name = words.next().unwrap_or("").to_lowercase();
    let arg = words.next().map(str::to_string);
    let canonical = keys::VIEW_NAMES
        .iter()
        .find(|(n, aliases)| *n == name || aliases.contains(&name.as_str()))
        .map(|(n, _)| *n);
    let view = match (canonical, arg) {
        (Some("cluster"), _) => View::Cluster,
        (Some("topics"), None) => View::Topics,
        (Some("topics"), Some(topic)) => View::TopicDetail { topic },
        (Some("groups"), None) => View::Groups,
        (Some("groups"), Some(group)) => View::GroupDetail { group },
        (Some("messages"), arg) => {
            let topic = arg
                .or_else(|| app.selected_topic())
                .or_else(|| app.messages.as_ref().map(|b| b.topic.clone()));
            match topic {
                Some(t) => {
                    app.stack = vec![View::Topics];
                    return app.browse(&t, StartAt::Beginning);
                }
                None => {
                    app.say(
                        "which topic? type :messages TOPIC, or select one in :topics and press m",
                        true,
                    );
                    return Vec::new();
                }
            }
        }
        _ => {
            let names: Vec<&str> = keys::VIEW_NAMES.iter().map(|(n, _)| *n).collect();
            app.say(
                format!("no view named {name:?}: try {}", names.join(", ")),
                true,
            );
            return Vec::new();
        }
    };
    // Like k9s, a jump starts a new trail; detail views keep their list underneath.
    app.stack = match &view {
        View::TopicDetail { .. } => vec![View::Topics],
        View::GroupDetail { .. } => vec![View::Groups],
        _ => Vec::new(),
    };
    app.stack.push(view);
    app.load_view()
}

/// Turns a submitted form into commands, or says what to fix.
fn submit_form(app: &mut App, f: &Form) -> Result<Vec<Command>, String> {
    match &f.kind {
        FormKind::CreateTopic => {
            let name = f.value(0).to_string();
            validate_topic_name(&name)?;
            let partitions = parse_count(f.value(1), "partitions", "e.g. 6")?;
            let rf = parse_count(f.value(2), "replication factor", "e.g. 3")?;
            let brokers = app.cluster.data.as_ref().map(|c| c.brokers.len());
            if let Some(b) = brokers.filter(|b| *b > 0 && rf as usize > *b) {
                return Err(format!(
                    "replication factor {rf} needs {rf} brokers, the cluster has {b}: use {b} or less"
                ));
            }
            let configs = parse_pairs(f.value(3), "configs", "retention.ms=86400000")?;
            let rf =
                i16::try_from(rf).map_err(|_| "replication factor is too large".to_string())?;
            app.say(format!("creating {name}"), false);
            Ok(vec![Command::CreateTopic {
                name,
                partitions,
                replication_factor: rf,
                configs,
            }])
        }
        FormKind::AddPartitions { topic, current } => {
            let total = parse_count(f.value(0), "total partitions", "e.g. 12")?;
            if total as usize <= *current {
                return Err(format!(
                    "partitions can only grow: topic {topic} has {current}, you asked for {total}"
                ));
            }
            Ok(vec![Command::AddPartitions {
                topic: topic.clone(),
                total,
            }])
        }
        FormKind::EditConfig { topic } => {
            let key = f.value(0);
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err("type the config name, e.g. retention.ms".into());
            }
            let value = f.value(1);
            let change = if value.is_empty() {
                ConfigChange::Delete(key.to_string())
            } else {
                ConfigChange::Set(key.to_string(), value.to_string())
            };
            Ok(vec![Command::AlterConfig {
                topic: topic.clone(),
                change,
            }])
        }
        FormKind::Produce { topic, partitions } => {
            let key = Some(f.value(0))
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec());
            // The value is sent as typed, spaces included.
            let raw_value = f.fields.get(1).map(|x| x.value.as_str()).unwrap_or("");
            let value = Some(raw_value.as_bytes().to_vec());
            let headers = parse_pairs(f.value(2), "headers", "source=console")?
                .into_iter()
                .map(|(k, v)| (k, Some(v.into_bytes())))
                .collect();
            let partition = match f.value(3) {
                "" => None,
                p => {
                    let n: i32 = p.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        format!("partition must be a number >= 0 or empty (got {p:?})")
                    })?;
                    if let Some(count) = partitions.filter(|c| n as usize >= *c) {
                        return Err(format!(
                            "topic {topic} has partitions 0..{}: pick one of them or leave it empty",
                            count.saturating_sub(1)
                        ));
                    }
                    Some(n)
                }
            };
            Ok(vec![Command::Produce {
                topic: topic.clone(),
                partition,
                key,
                value,
                headers,
            }])
        }
        FormKind::SeekOffset { topic } => {
            let o: i64 = f.value(0).parse().ok().filter(|o| *o >= 0).ok_or_else(|| {
                format!("type an offset, a whole number >= 0 (got {:?})", f.value(0))
            })?;
            let topic = topic.clone();
            Ok(app.browse(&topic, StartAt::Offset(o)))
        }
        FormKind::SeekTime { topic } => {
            let v = f.value(0);
            let ts = match format::parse_datetime(v) {
                Ok(ts) => ts,
                Err(e) => match format::parse_duration(v) {
                    Ok(d) => app.now_ms - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2),
                    Err(_) => return Err(format!("{e}, or a duration ago such as 15m")),
                },
            };
            let topic = topic.clone();
            Ok(app.browse(&topic, StartAt::Timestamp(ts)))
        }
    }
}

fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("give the topic a name, e.g. orders".into());
    }
    if name == "." || name == ".." {
        return Err("a topic cannot be named . or ..: pick another name".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "topic names are at most 249 characters, this one has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic names use only letters, digits, '.', '_' and '-': remove {c:?}"
        ));
    }
    Ok(())
}

fn parse_count(s: &str, what: &str, example: &str) -> Result<i32, String> {
    s.parse::<i32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        format!("{what} must be a whole number of at least 1, {example} (got {s:?})")
    })
}

/// "a=1, b=2" -> pairs; empty -> none.
pub fn parse_pairs(s: &str, what: &str, example: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!(
                "write {what} as name=value, separated by commas (e.g. {example}); {p:?} has no name="
            )),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
