//! Quorum tests: real TCP on 127.0.0.1:0, real files in temp dirs.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, StorageError, Vote};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use super::log_store::{self, LogStore, LOG_FILE};
use super::network;
use super::state_machine::{StateMachine, SNAPSHOT_FILE};
use super::wire::{self, Rpc, RpcReply, WireError, MAX_FRAME};
use super::*;
use crate::cluster::image::{MetadataImage, MetadataRecord, PartitionState};
use crate::cluster::messages::{ControllerError, ControllerRequest, ControllerResponse};

const HEARTBEAT_MS: u64 = 50;
const ELECTION_MS: u64 = 300;
/// Generous: CI machines are slow, and every wait ends as soon as its
/// condition holds.
const WAIT: Duration = Duration::from_secs(30);

/// Answers every request with the id of the node that handled it.
struct TestService {
    node: i32,
    calls: AtomicUsize,
}

impl ControllerService for TestService {
    fn handle(
        &self,
        _req: ControllerRequest,
    ) -> Pin<Box<dyn Future<Output = ControllerResponse> + Send + 'static>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let node = self.node;
        Box::pin(async move {
            ControllerResponse::Partition(PartitionState {
                replicas: vec![],
                isr: vec![],
                leader: node,
                leader_epoch: 0,
                partition_epoch: 0,
                adding: vec![],
                removing: vec![],
            })
        })
    }
}

fn request() -> ControllerRequest {
    ControllerRequest::DeleteTopics { names: vec![] }
}

fn handled_by(resp: &ControllerResponse) -> Option<i32> {
    match resp {
        ControllerResponse::Partition(p) => Some(p.leader),
        _ => None,
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::CreateTopic {
        name: name.to_string(),
        id: Uuid::new_v4(),
        configs: BTreeMap::new(),
        partitions: vec![],
    }
}

struct Node {
    addr: String,
    quorum: Quorum,
    service: Arc<TestService>,
}

struct Cluster {
    tmp: TempDir,
    voters: BTreeMap<i32, String>,
    nodes: BTreeMap<i32, Node>,
    /// Addresses of started nodes, kept across a stop for the restart.
    addrs: BTreeMap<i32, String>,
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    (listener, addr)
}

/// `RUST_LOG=sluice_broker=debug,openraft=info` shows what a failing test did.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

impl Cluster {
    /// Starts `voters` as the voters of a new quorum.
    async fn start(voters: &[i32], tuning: Tuning) -> Cluster {
        init_tracing();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in voters {
            let (listener, addr) = bind().await;
            listeners.insert(*id, listener);
            addrs.insert(*id, addr);
        }
        let mut cluster = Cluster {
            tmp: tempfile::tempdir().expect("tempdir"),
            voters: addrs.clone(),
            nodes: BTreeMap::new(),
            addrs,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, listener, tuning).await;
        }
        cluster
    }

    fn dir(&self, id: i32) -> PathBuf {
        self.tmp
            .path()
            .join(format!("node-{id}"))
            .join("__cluster_metadata")
    }

    async fn start_node(&mut self, id: i32, listener: TcpListener, tuning: Tuning) -> &Node {
        let addr = listener.local_addr().expect("local addr").to_string();
        let service = Arc::new(TestService {
            node: id,
            calls: AtomicUsize::new(0),
        });
        let config = QuorumConfig {
            node_id: id,
            dir: self.dir(id),
            voters: self.voters.clone(),
            heartbeat_interval_ms: HEARTBEAT_MS,
            election_timeout_min_ms: ELECTION_MS,
        };
        let quorum = Quorum::start_tuned(config, tuning, Some(listener), service.clone())
            .await
            .expect("quorum starts");
        self.addrs.insert(id, addr.clone());
        self.nodes.insert(
            id,
            Node {
                addr,
                quorum,
                service,
            },
        );
        &self.nodes[&id]
    }

    /// Starts a node that is not a voter.
    async fn start_learner(&mut self, id: i32) -> &Node {
        let (listener, _) = bind().await;
        self.start_node(id, listener, Tuning::default()).await
    }

    /// Starts a stopped node again from its directory, on its old address.
    async fn restart(&mut self, id: i32, tuning: Tuning) -> &Node {
        let addr = self.addrs[&id].clone();
        let listener = TcpListener::bind(&addr)
            .await
            .expect("rebind the old address");
        self.start_node(id, listener, tuning).await
    }

    async fn stop(&mut self, id: i32) {
        let node = self.nodes.remove(&id).expect("node is running");
        node.quorum.shutdown().await;
    }

    fn quorum(&self, id: i32) -> &Quorum {
        &self.nodes[&id].quorum
    }

    /// Waits until exactly one running node leads and every running node
    /// knows it.
    async fn leader(&self) -> i32 {
        eventually("one leader known by every node", || {
            let leaders: Vec<i32> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.quorum.is_leader())
                .map(|(id, _)| *id)
                .collect();
            match leaders.as_slice() {
                [one] if self.nodes.values().all(|n| n.quorum.leader() == Some(*one)) => Some(*one),
                _ => None,
            }
        })
        .await
    }

    fn followers(&self, leader: i32) -> Vec<i32> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| *id != leader)
            .collect()
    }

    async fn shutdown(self) {
        for node in self.nodes.values() {
            node.quorum.shutdown().await;
        }
    }
}

/// Re-checks `check` whenever time passes, until it yields or `WAIT` ends.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the image of `quorum` satisfies `pred`.
async fn image_where(
    quorum: &Quorum,
    what: &str,
    pred: impl FnMut(&Arc<MetadataImage>) -> bool,
) -> Arc<MetadataImage> {
    let mut rx = quorum.watch();
    let waited = tokio::time::timeout(WAIT, rx.wait_for(pred)).await;
    match waited {
        Ok(Ok(image)) => image.clone(),
        _ => panic!("timed out waiting for {what}"),
    }
}

async fn has_topics(quorum: &Quorum, names: &[&str]) -> Arc<MetadataImage> {
    image_where(quorum, &format!("topics {names:?}"), |i| {
        names.iter().all(|n| i.topic(n).is_some())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_quorum_elects_itself_and_applies_a_proposal() {
    let cluster = Cluster::start(&[1], Tuning::default()).await;
    assert_eq!(cluster.leader().await, 1);
    let q = cluster.quorum(1);
    let mut watch = q.watch();
    watch.borrow_and_update();

    let image = q.propose(vec![topic("orders")]).await.expect("propose");
    assert!(image.topic("orders").is_some());
    assert!(image.applied_index > 0);
    assert_eq!(q.image().applied_index, image.applied_index);
    assert!(
        watch.has_changed().expect("watch open"),
        "the watch fires on apply"
    );
    q.ensure_current().await.expect("the only voter is current");
    let resp = q.call_controller(request(), WAIT).await;
    assert_eq!(handled_by(&resp), Some(1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_elect_one_leader_and_replicate_a_proposal() {
    let cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let leader = cluster.leader().await;
    let mut leaders = cluster.quorum(leader).leader_watch();
    assert_eq!(*leaders.borrow_and_update(), Some(leader));

    let image = cluster
        .quorum(leader)
        .propose(vec![topic("a"), topic("b")])
        .await
        .expect("propose");
    for id in [1, 2, 3] {
        let replica = has_topics(cluster.quorum(id), &["a", "b"]).await;
        assert_eq!(
            replica.topics.keys().collect::<Vec<_>>(),
            image.topics.keys().collect::<Vec<_>>()
        );
    }
    let follower = cluster.followers(leader)[0];
    match cluster.quorum(follower).propose(vec![topic("c")]).await {
        Err(QuorumError::NotLeader(Some(l))) => assert_eq!(l, leader),
        other => panic!("a follower must refuse to propose, got {other:?}"),
    }
    assert!(matches!(
        cluster.quorum(follower).ensure_current().await,
        Err(QuorumError::NotLeader(_))
    ));
    cluster
        .quorum(leader)
        .ensure_current()
        .await
        .expect("the leader is current");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_controller_from_a_follower_reaches_the_leaders_service() {
    let cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];

    let resp = cluster
        .quorum(follower)
        .call_controller(request(), WAIT)
        .await;
    assert_eq!(handled_by(&resp), Some(leader), "got {resp:?}");
    assert_eq!(
        cluster.nodes[&leader].service.calls.load(Ordering::SeqCst),
        1
    );
    assert_eq!(
        cluster.nodes[&follower]
            .service
            .calls
            .load(Ordering::SeqCst),
        0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_controller_gives_up_with_no_controller_after_its_timeout() {
    let mut cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let leader = cluster.leader().await;
    let followers = cluster.followers(leader);
    cluster.stop(leader).await;
    cluster.stop(followers[0]).await;
    // One voter of three cannot elect anyone.
    let started = tokio::time::Instant::now();
    let resp = cluster
        .quorum(followers[1])
        .call_controller(request(), Duration::from_millis(800))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up late: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            resp,
            ControllerResponse::Error(ControllerError::NoController(_))
        ),
        "got {resp:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_shutdown_elects_a_new_leader_that_accepts_proposals() {
    let mut cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let old = cluster.leader().await;
    cluster
        .quorum(old)
        .propose(vec![topic("before")])
        .await
        .expect("propose");
    for id in cluster.followers(old) {
        has_topics(cluster.quorum(id), &["before"]).await;
    }
    cluster.stop(old).await;

    let new = cluster.leader().await;
    assert_ne!(new, old);
    cluster
        .quorum(new)
        .propose(vec![topic("after")])
        .await
        .expect("propose on the new leader");
    for id in cluster.followers(new) {
        has_topics(cluster.quorum(id), &["before", "after"]).await;
        let resp = cluster.quorum(id).call_controller(request(), WAIT).await;
        assert_eq!(handled_by(&resp), Some(new), "got {resp:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_has_its_image_before_start_returns_and_catches_up() {
    let mut cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    cluster
        .quorum(leader)
        .propose(vec![topic("one")])
        .await
        .expect("propose");
    let seen = has_topics(cluster.quorum(follower), &["one"]).await;
    cluster.stop(follower).await;

    cluster
        .quorum(leader)
        .propose(vec![topic("two")])
        .await
        .expect("propose while it is down");
    let restarted = &cluster.restart(follower, Tuning::default()).await.quorum;
    let at_start = restarted.image();
    assert!(
        at_start.topic("one").is_some(),
        "the image is restored from disk"
    );
    assert!(at_start.applied_index >= seen.applied_index);
    has_topics(restarted, &["one", "two"]).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torn_log_tail_is_truncated_on_restart() {
    let mut cluster = Cluster::start(&[1], Tuning::default()).await;
    cluster.leader().await;
    cluster
        .quorum(1)
        .propose(vec![topic("a")])
        .await
        .expect("propose");
    cluster
        .quorum(1)
        .propose(vec![topic("b")])
        .await
        .expect("propose");
    cluster.stop(1).await;

    let log = cluster.dir(1).join(LOG_FILE);
    let good_len = std::fs::metadata(&log).expect("log").len();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        // A record header announcing 1000 bytes, then only a few of them:
        // what a crash in the middle of an append leaves.
        file.write_all(&1000u32.to_be_bytes()).expect("write");
        file.write_all(&[0xde, 0xad, 0xbe, 0xef, b'{', b'"'])
            .expect("write");
    }

    let q = cluster.restart(1, Tuning::default()).await.quorum.clone();
    assert!(q.image().topic("a").is_some() && q.image().topic("b").is_some());
    assert_eq!(std::fs::metadata(&log).expect("log").len(), good_len);
    cluster.leader().await;
    q.propose(vec![topic("c")])
        .await
        .expect("the log takes appends again");
    cluster.stop(1).await;

    let q = cluster.restart(1, Tuning::default()).await.quorum.clone();
    let image = q.image();
    assert!(["a", "b", "c"].iter().all(|t| image.topic(t).is_some()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_added_with_add_learner_receives_the_image() {
    let mut cluster = Cluster::start(&[1, 2, 3], Tuning::default()).await;
    let leader = cluster.leader().await;
    cluster
        .quorum(leader)
        .propose(vec![topic("x")])
        .await
        .expect("propose");

    let learner = cluster.start_learner(4).await;
    let (learner_q, learner_addr) = (learner.quorum.clone(), learner.addr.clone());
    assert_eq!(learner_q.leader(), None, "nobody told the learner yet");
    // Before it is added it still reaches the controller, by asking voters.
    let resp = learner_q.call_controller(request(), WAIT).await;
    assert_eq!(handled_by(&resp), Some(leader), "got {resp:?}");

    let follower = cluster.followers(leader)[0];
    assert!(matches!(
        cluster
            .quorum(follower)
            .add_learner(4, learner_addr.clone())
            .await,
        Err(QuorumError::NotLeader(_))
    ));
    cluster
        .quorum(leader)
        .add_learner(4, learner_addr.clone())
        .await
        .expect("add learner");
    // Adding it again is a no-op.
    cluster
        .quorum(leader)
        .add_learner(4, learner_addr)
        .await
        .expect("add learner again");
    has_topics(&learner_q, &["x"]).await;
    cluster
        .quorum(leader)
        .propose(vec![topic("y")])
        .await
        .expect("propose");
    has_topics(&learner_q, &["x", "y"]).await;
    eventually("the learner knows the leader", || {
        (learner_q.leader() == Some(leader)).then_some(())
    })
    .await;
    assert!(!learner_q.is_leader());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_node_catches_up_through_install_snapshot_after_the_log_is_purged() {
    let eager = Tuning {
        snapshot_every: 5,
        keep_in_snapshot: 0,
    };
    let mut cluster = Cluster::start(&[1, 2, 3], eager).await;
    let leader = cluster.leader().await;
    let lagging = cluster.followers(leader)[0];
    cluster
        .quorum(leader)
        .propose(vec![topic("t0")])
        .await
        .expect("propose");
    has_topics(cluster.quorum(lagging), &["t0"]).await;
    cluster.stop(lagging).await;
    let lagging_dir = cluster.dir(lagging);
    assert!(
        !lagging_dir.join(SNAPSHOT_FILE).exists(),
        "too few entries for a snapshot yet"
    );
    let lagging_last = {
        let mut store = LogStore::open(&lagging_dir, None).expect("open the stopped node's log");
        store
            .get_log_state()
            .await
            .expect("log state")
            .last_log_id
            .map(|l| l.index)
    };

    let names: Vec<String> = (1..=20).map(|i| format!("t{i}")).collect();
    for name in &names {
        cluster
            .quorum(leader)
            .propose(vec![topic(name)])
            .await
            .expect("propose");
    }
    let raft = cluster.quorum(leader).raft().clone();
    eventually("the leader purges past the stopped node's log", || {
        let purged = raft.metrics().borrow().purged.map(|p| p.index);
        (purged > lagging_last).then_some(())
    })
    .await;

    // The restarted node builds no snapshot of its own, so a snapshot file
    // in its directory can only come from the leader.
    let lazy = Tuning {
        snapshot_every: 1_000_000,
        keep_in_snapshot: 0,
    };
    let q = cluster.restart(lagging, lazy).await.quorum.clone();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("t0");
    has_topics(&q, &all).await;
    assert!(
        lagging_dir.join(SNAPSHOT_FILE).exists(),
        "installed a snapshot from the leader"
    );
    // And keeps replicating after it.
    cluster
        .quorum(leader)
        .propose(vec![topic("later")])
        .await
        .expect("propose");
    has_topics(&q, &["later"]).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_frames_close_the_connection_and_the_port_keeps_serving() {
    let cluster = Cluster::start(&[1], Tuning::default()).await;
    cluster.leader().await;
    let addr = cluster.nodes[&1].addr.clone();

    // Over the frame limit: refused from the length alone.
    let mut raw = TcpStream::connect(&addr).await.expect("connect");
    raw.write_all(&(u32::MAX).to_be_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the connection is closed");

    // Well framed, but not JSON of a request.
    let mut raw = TcpStream::connect(&addr).await.expect("connect");
    raw.write_all(&5u32.to_be_bytes()).await.expect("write");
    raw.write_all(b"hello").await.expect("write");
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the connection is closed");

    // A proper request on a new connection is still served.
    let peers = network::Peers::new(99, tokio_util::sync::CancellationToken::new());
    let reply = peers
        .peer(1, &addr)
        .call(Rpc::Controller(request()), WAIT)
        .await
        .expect("call");
    match reply {
        RpcReply::Controller(resp) => assert_eq!(handled_by(&resp), Some(1)),
        other => panic!("unexpected reply {other:?}"),
    }
    // A request meant for another node is refused, not served.
    let reply = peers
        .peer(7, &addr)
        .call(Rpc::Controller(request()), WAIT)
        .await
        .expect("call");
    assert!(matches!(reply, RpcReply::WrongNode(1)), "got {reply:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn frames_over_the_limit_are_refused_before_reading_them() {
    let mut huge = std::io::Cursor::new(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
    let read = wire::read_frame::<wire::Request, _>(&mut huge).await;
    assert!(matches!(read, Err(WireError::TooLarge(n)) if n == MAX_FRAME + 1));

    let frame = wire::encode(&wire::Response {
        id: 7,
        reply: RpcReply::NotLeader(Some(3)),
    })
    .expect("encode");
    let mut cursor = std::io::Cursor::new(frame);
    let back = wire::read_frame::<wire::Response, _>(&mut cursor)
        .await
        .expect("read");
    assert!(matches!(
        back,
        Some(wire::Response {
            id: 7,
            reply: RpcReply::NotLeader(Some(3))
        })
    ));
    let eof = wire::read_frame::<wire::Response, _>(&mut cursor)
        .await
        .expect("read");
    assert!(eof.is_none(), "a clean end between frames");
}

fn entry(term: u64, index: u64, name: &str) -> Entry {
    Entry {
        log_id: openraft::LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Proposal(vec![topic(name)])),
    }
}

async fn reopen(dir: &Path) -> (LogStore, Vec<Entry>) {
    let mut store = LogStore::open(dir, None).expect("open");
    let entries = store.try_get_log_entries(..).await.expect("read");
    (store, entries)
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen_truncate_and_purge() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    {
        let mut store = LogStore::open(dir, None).expect("open");
        let entries: Vec<Entry> = (0..6).map(|i| entry(1, i, &format!("t{i}"))).collect();
        store.blocking_append(entries).await.expect("append");
        store
            .save_vote(&Vote::new_committed(1, 1))
            .await
            .expect("vote");
        store
            .save_committed(Some(entry(1, 3, "").log_id))
            .await
            .expect("committed");
    }
    let (mut store, entries) = reopen(dir).await;
    assert_eq!(indexes(&entries), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new_committed(1, 1))
    );
    assert_eq!(
        store
            .read_committed()
            .await
            .expect("committed")
            .map(|c| c.index),
        Some(3)
    );

    store
        .truncate(entry(1, 4, "").log_id)
        .await
        .expect("truncate");
    store
        .blocking_append([entry(2, 4, "new")])
        .await
        .expect("append");
    store.purge(entry(1, 1, "").log_id).await.expect("purge");
    drop(store);

    let (mut store, entries) = reopen(dir).await;
    assert_eq!(indexes(&entries), vec![2, 3, 4]);
    assert_eq!(
        entries[2].log_id.leader_id.term, 2,
        "the truncated entry was replaced"
    );
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(4));

    // Purging everything keeps the purge point, so the next index is known.
    store
        .purge(entry(2, 4, "").log_id)
        .await
        .expect("purge all");
    drop(store);
    let (mut store, entries) = reopen(dir).await;
    assert!(entries.is_empty());
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
    store
        .blocking_append([entry(2, 5, "next")])
        .await
        .expect("append after a full purge");
    drop(store);
    let (_, entries) = reopen(dir).await;
    assert_eq!(indexes(&entries), vec![5]);
}

#[test]
fn corrupt_record_ends_the_log_where_it_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut store = LogStore::open(tmp.path(), None).expect("open");
        let entries: Vec<Entry> = (0..3).map(|i| entry(1, i, "t")).collect();
        store.blocking_append(entries).await.expect("append");
    });
    let path = tmp.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let whole = log_store::parse(&bytes);
    assert_eq!(whole.entries.len(), 3);
    assert!(whole.problem.is_none());
    // Flip a byte inside the last record's payload: its checksum fails.
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    let parsed = log_store::parse(&bytes);
    assert_eq!(parsed.entries.len(), 2);
    assert!(parsed.problem.is_some_and(|p| p.contains("checksum")));
    std::fs::write(&path, &bytes).expect("write");
    rt.block_on(async {
        let (_, entries) = reopen(tmp.path()).await;
        assert_eq!(indexes(&entries), vec![0, 1]);
    });
    assert_eq!(
        std::fs::metadata(&path).expect("log").len() as usize,
        parsed.valid_len,
        "the corrupt tail is cut off the file"
    );
}

struct FileStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for FileStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opened = StateMachine::open(tmp.path()).expect("state machine");
        // The purge guard is left out: the suite purges logs it never
        // snapshotted, which the guard (rightly) waits on.
        let log = LogStore::open(tmp.path(), None).expect("log store");
        Ok((tmp, log, opened.state_machine))
    }
}

#[test]
fn storage_passes_the_openraft_suite() {
    Suite::test_all(FileStores).expect("suite");
}
