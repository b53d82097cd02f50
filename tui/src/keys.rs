//! The key table: which key does what in which view. The same table drives `update`
//! and draws the footer and the help overlay, so help never lies.

use crossterm::event::KeyCode;

use crate::app::View;

/// What a key asks for, before `update` decides what it means in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Quit,
    Help,
    Jump,
    Filter,
    Back,
    Refresh,
    Open,
    Browse,
    Create,
    Delete,
    AddPartitions,
    EditConfig,
    Produce,
    FromBeginning,
    Tail,
    SeekOffset,
    SeekTime,
    LoadMore,
    Reset,
    Undo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub key: KeyCode,
    /// How the key is written in the footer and help.
    pub key_text: &'static str,
    pub label: &'static str,
    pub op: Op,
    /// Changes the cluster: never offered with `--read-only`.
    pub mutates: bool,
}

const fn b(key: KeyCode, key_text: &'static str, label: &'static str, op: Op) -> Binding {
    Binding {
        key,
        key_text,
        label,
        op,
        mutates: false,
    }
}

const fn m(key: KeyCode, key_text: &'static str, label: &'static str, op: Op) -> Binding {
    Binding {
        key,
        key_text,
        label,
        op,
        mutates: true,
    }
}

/// Keys that work in every view.
pub const GLOBAL: &[Binding] = &[
    b(KeyCode::Char(':'), ":", "view", Op::Jump),
    b(KeyCode::Char('/'), "/", "filter", Op::Filter),
    b(KeyCode::Char('?'), "?", "help", Op::Help),
    b(KeyCode::Esc, "esc", "back", Op::Back),
    b(KeyCode::Char('R'), "R", "refresh", Op::Refresh),
    b(KeyCode::Char('q'), "q", "quit", Op::Quit),
];

const CLUSTER: &[Binding] = &[];

const TOPICS: &[Binding] = &[
    b(KeyCode::Enter, "enter", "open", Op::Open),
    b(KeyCode::Char('m'), "m", "messages", Op::Browse),
    m(KeyCode::Char('c'), "c", "create", Op::Create),
    m(KeyCode::Char('+'), "+", "add partitions", Op::AddPartitions),
    m(KeyCode::Char('d'), "d", "delete", Op::Delete),
];

const TOPIC_DETAIL: &[Binding] = &[
    b(KeyCode::Char('m'), "m", "messages", Op::Browse),
    m(KeyCode::Char('p'), "p", "produce", Op::Produce),
    m(KeyCode::Char('e'), "e", "edit config", Op::EditConfig),
    m(KeyCode::Char('+'), "+", "add partitions", Op::AddPartitions),
];

const MESSAGES: &[Binding] = &[
    b(KeyCode::Enter, "enter", "show", Op::Open),
    b(KeyCode::Char('b'), "b", "start", Op::FromBeginning),
    b(KeyCode::Char('t'), "t", "tail", Op::Tail),
    b(KeyCode::Char('o'), "o", "offset", Op::SeekOffset),
    b(KeyCode::Char('T'), "T", "time", Op::SeekTime),
    b(KeyCode::Char('n'), "n", "more", Op::LoadMore),
    m(KeyCode::Char('p'), "p", "produce", Op::Produce),
];

const GROUPS: &[Binding] = &[b(KeyCode::Enter, "enter", "details", Op::Open)];

const GROUP_DETAIL: &[Binding] = &[
    m(KeyCode::Char('r'), "r", "reset offsets", Op::Reset),
    m(KeyCode::Char('u'), "u", "undo reset", Op::Undo),
];

/// The view's own keys, without those that change the cluster when read-only.
pub fn view_bindings(view: &View, read_only: bool) -> Vec<Binding> {
    let all = match view {
        View::Cluster => CLUSTER,
        View::Topics => TOPICS,
        View::TopicDetail { .. } => TOPIC_DETAIL,
        View::Messages { .. } => MESSAGES,
        View::Groups => GROUPS,
        View::GroupDetail { .. } => GROUP_DETAIL,
    };
    all.iter()
        .filter(|b| !(read_only && b.mutates))
        .copied()
        .collect()
}

/// The view's keys first, then the global ones.
pub fn lookup(view: &View, read_only: bool, key: KeyCode) -> Option<Op> {
    view_bindings(view, read_only)
        .iter()
        .chain(GLOBAL.iter())
        .find(|b| b.key == key)
        .map(|b| b.op)
}

/// Names `:` accepts, with their aliases, for the help overlay and the prompt.
pub const VIEW_NAMES: &[(&str, &[&str])] = &[
    ("cluster", &["c", "brokers"]),
    ("topics", &["t", "topic"]),
    ("groups", &["g", "group", "consumergroups", "cg"]),
    ("messages", &["m", "msgs"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_drops_every_mutating_key() {
        for view in [
            View::Cluster,
            View::Topics,
            View::TopicDetail { topic: "t".into() },
            View::Messages { topic: "t".into() },
            View::Groups,
            View::GroupDetail { group: "g".into() },
        ] {
            assert!(view_bindings(&view, true).iter().all(|b| !b.mutates));
        }
        assert_eq!(lookup(&View::Topics, true, KeyCode::Char('d')), None);
        assert_eq!(
            lookup(&View::Topics, false, KeyCode::Char('d')),
            Some(Op::Delete)
        );
    }

    #[test]
    fn no_key_is_bound_twice_in_a_view() {
        for view in [
            View::Topics,
            View::TopicDetail { topic: "t".into() },
            View::Messages { topic: "t".into() },
            View::GroupDetail { group: "g".into() },
        ] {
            let keys: Vec<KeyCode> = view_bindings(&view, false)
                .iter()
                .chain(GLOBAL.iter())
                .map(|b| b.key)
                .collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(k), "{view:?}: {k:?} bound twice");
            }
        }
    }
}
