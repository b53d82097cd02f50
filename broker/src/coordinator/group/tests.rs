use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::cluster::image::PartitionState;
use crate::config::TopicConfig;

const PARTITIONS: i32 = 3;

fn open_partitions(dir: &std::path::Path) -> Vec<Arc<Partition>> {
    (0..PARTITIONS)
        .map(|i| {
            Arc::new(
                Partition::open(
                    dir,
                    Arc::from(OFFSETS_TOPIC),
                    i,
                    TopicConfig::default().log_config(),
                )
                .unwrap(),
            )
        })
        .collect()
}

/// Broker 1 leads `p` in `epoch`, with the ISR `isr`.
fn lead(p: &Partition, epoch: i32, isr: Vec<i32>) {
    p.become_leader(
        &PartitionState {
            replicas: isr.clone(),
            isr,
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding: vec![],
            removing: vec![],
        },
        now_ms(),
    );
}

fn unloaded(delay_ms: u64, min_insync: i32) -> GroupCoordinator {
    GroupCoordinator::new(
        PARTITIONS,
        Flusher::start(),
        delay_ms,
        10_080,
        min_insync,
        Duration::from_secs(5),
    )
}

/// A coordinator leading every partition in epoch 0, loaded.
async fn coordinator_over(partitions: &[Arc<Partition>], delay_ms: u64) -> GroupCoordinator {
    let c = unloaded(delay_ms, 1);
    for (i, p) in (0..).zip(partitions) {
        lead(p, 0, vec![1]);
        c.elect(i, p.clone(), 0);
    }
    for i in 0..PARTITIONS {
        assert!(c.wait_loaded(i).await);
    }
    c
}

async fn coordinator(dir: &std::path::Path, delay_ms: u64) -> GroupCoordinator {
    coordinator_over(&open_partitions(dir), delay_ms).await
}

fn entry(partition: i32, offset: i64) -> CommitEntry {
    CommitEntry {
        topic: "t".into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: "m".into(),
    }
}

fn join_req(group: &str, member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: String::new(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        // Consumer protocol subscription v0: topics ["t"], null user data.
        protocols: vec![(
            "range".into(),
            Bytes::from_static(b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"),
        )],
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

/// Joins with an empty id, then with the id the group hands out.
async fn join_new(c: &GroupCoordinator, group: &str) -> oneshot::Receiver<JoinResult> {
    let r = c.join(join_req(group, "", None)).await.unwrap();
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"));
    c.join(join_req(group, &r.member_id, None))
}

async fn sync(c: &GroupCoordinator, group: &str, r: &JoinResult) -> SyncResult {
    let assignments = r
        .members
        .iter()
        .map(|(id, _, _)| (id.clone(), Bytes::from(format!("for-{id}"))))
        .collect();
    c.sync(
        group,
        r.generation,
        &r.member_id,
        None,
        None,
        None,
        assignments,
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_members_join_sync_and_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let a = join_new(&c, "g").await.await.unwrap();
    assert_eq!(a.error, None);
    assert_eq!(a.generation, 1);
    assert_eq!(a.leader, a.member_id);
    assert_eq!(a.members.len(), 1);
    assert_eq!(a.protocol.as_deref(), Some("range"));
    sync(&c, "g", &a).await.unwrap();
    assert_eq!(c.describe("g").unwrap().state, State::Stable);

    // A second member joins: the first learns of the rebalance by heartbeat.
    let b_wait = join_new(&c, "g").await;
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Err(GroupError::RebalanceInProgress)
    );
    let a2 = c.join(join_req("g", &a.member_id, None)).await.unwrap();
    let b = b_wait.await.unwrap();
    assert_eq!(a2.generation, 2);
    assert_eq!(b.generation, 2);
    assert_eq!(a2.leader, a.member_id);
    assert_eq!(a2.members.len(), 2);
    assert!(b.members.is_empty());
    let b_sync = c.sync("g", 2, &b.member_id, None, None, None, Vec::new());
    let a_assignment = sync(&c, "g", &a2).await.unwrap().2;
    assert_eq!(a_assignment, Bytes::from(format!("for-{}", a.member_id)));
    let b_assignment = b_sync.await.unwrap().unwrap().2;
    assert_eq!(b_assignment, Bytes::from(format!("for-{}", b.member_id)));
    assert_eq!(c.heartbeat("g", 2, &b.member_id, None), Ok(()));
    assert_eq!(
        c.heartbeat("g", 1, &b.member_id, None),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", 2, "nobody", None),
        Err(GroupError::UnknownMemberId)
    );
    let d = c.describe("g").unwrap();
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.protocol, "range");
}

#[tokio::test(start_paused = true)]
async fn bad_joins_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let r = c.join(join_req("", "", None)).await.unwrap();
    assert_eq!(r.error, Some(GroupError::InvalidGroupId));
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    let mut other = join_req("g", "", None);
    other.protocol_type = "connect".into();
    let r = c.join(other).await.unwrap();
    assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
    let mut other = join_req("g", "", None);
    other.protocols = vec![("custom".into(), Bytes::new())];
    let r = c.join(other).await.unwrap();
    assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn session_timeout_removes_member_and_empties_group() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(9_000)).await;
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));
    tokio::time::sleep(Duration::from_millis(9_000)).await;
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, State::Empty);
    assert!(d.members.is_empty());
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn member_that_does_not_rejoin_is_dropped_at_rebalance_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    let b_wait = join_new(&c, "g").await;
    // `a` keeps heartbeating but never rejoins.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        let _ = c.heartbeat("g", 1, &a.member_id, None);
    }
    let b = b_wait.await.unwrap();
    assert_eq!(b.error, None);
    assert_eq!(b.generation, 2);
    assert_eq!(b.leader, b.member_id);
    assert_eq!(b.members.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn initial_rebalance_delay_gathers_members() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 3_000).await;
    let a = join_new(&c, "g").await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let b = join_new(&c, "g").await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.generation, 1);
    assert_eq!(b.generation, 1);
    assert_eq!(a.members.len() + b.members.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn static_member_rejoins_without_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let a = c.join(join_req("g", "", Some("i1"))).await.unwrap();
    assert_eq!(a.error, None);
    sync(&c, "g", &a).await.unwrap();
    let again = c.join(join_req("g", "", Some("i1"))).await.unwrap();
    assert_eq!(again.error, None);
    assert_ne!(again.member_id, a.member_id);
    assert_eq!(again.generation, 1);
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    let (_, _, assignment) = c
        .sync("g", 1, &again.member_id, Some("i1"), None, None, Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(assignment, Bytes::from(format!("for-{}", a.member_id)));
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, Some("i1")),
        Err(GroupError::FencedInstanceId)
    );
    let left = c.leave("g", &[(String::new(), Some("i1".into()))]).unwrap();
    assert_eq!(left, vec![None]);
    assert_eq!(c.describe("g").unwrap().state, State::Empty);
}

#[tokio::test(start_paused = true)]
async fn offsets_and_groups_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    // Admin commit to a group without members.
    c.commit("admin", -1, "", None, vec![entry(0, 5)])
        .unwrap()
        .await
        .unwrap();
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    c.commit("g", 1, &a.member_id, None, vec![entry(0, 7), entry(1, 9)])
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        c.commit("g", -1, "", None, vec![entry(0, 0)]).err(),
        Some(GroupError::UnknownMemberId)
    );
    assert_eq!(
        c.commit("g", 0, &a.member_id, None, vec![entry(0, 0)])
            .err(),
        Some(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.commit("nope", 3, "x", None, vec![entry(0, 0)]).err(),
        Some(GroupError::IllegalGeneration)
    );
    drop(c);

    let c = coordinator(dir.path(), 0).await;
    let all = c.fetch_offsets("g", None).unwrap();
    assert_eq!(all.len(), 1);
    let parts: Vec<_> = all[0]
        .1
        .iter()
        .map(|(p, c)| (*p, c.as_ref().unwrap().offset))
        .collect();
    assert_eq!(parts, vec![(0, 7), (1, 9)]);
    assert_eq!(all[0].1[0].1.as_ref().unwrap().metadata, "m");
    let some = c
        .fetch_offsets("admin", Some(vec![("t".into(), vec![0, 3])]))
        .unwrap();
    assert_eq!(some[0].1[0].1.as_ref().unwrap().offset, 5);
    assert!(some[0].1[1].1.is_none());
    // The member is back, Stable, and keeps its generation.
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, State::Stable);
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));

    // Deleting: refused while it has members, then tombstones survive reopen.
    assert_eq!(
        c.delete_groups(&["g".into()]).0,
        vec![Some(GroupError::NonEmptyGroup)]
    );
    let (r, durable) = c.delete_groups(&["admin".into(), "missing".into()]);
    durable.await.unwrap();
    assert_eq!(r, vec![None, Some(GroupError::GroupIdNotFound)]);
    let (r, durable) = c
        .delete_offsets("g", &[("t".into(), 0), ("other".into(), 0)])
        .unwrap();
    durable.await.unwrap();
    assert_eq!(r, vec![Some(GroupError::GroupSubscribedToTopic), None]);
    drop(c);
    let c = coordinator(dir.path(), 0).await;
    assert!(c.list().iter().all(|g| g.group_id != "admin"));
    assert!(c.fetch_offsets("admin", None).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn empty_group_offsets_expire_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let entry = CommitEntry {
        topic: "t".into(),
        partition: 0,
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
    };
    c.commit("g", -1, "", None, vec![entry])
        .unwrap()
        .await
        .unwrap();
    let now = now_ms();
    c.expire_offsets(now + 60_000);
    assert_eq!(c.fetch_offsets("g", None).unwrap().len(), 1);
    c.expire_offsets(now + 10_080 * 60_000 + 1);
    assert!(c.fetch_offsets("g", None).unwrap().is_empty());
    assert!(c.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn group_on_a_resigned_partition_gets_not_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0).await;
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    // A second member waits in JoinGroup for `a` to rejoin.
    let b_wait = join_new(&c, "g").await;
    let index = c.partition_for("g");
    c.resign(index, 0);

    let b = b_wait.await.unwrap();
    assert_eq!(b.error, Some(GroupError::NotCoordinator));
    assert!(!c.wait_loaded(index).await);
    let nc = Some(GroupError::NotCoordinator);
    assert_eq!(c.join(join_req("g", "", None)).await.unwrap().error, nc);
    assert_eq!(
        c.sync("g", 1, &a.member_id, None, None, None, Vec::new())
            .await
            .unwrap()
            .err(),
        nc
    );
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None).err(), nc);
    assert_eq!(c.leave("g", &[(a.member_id.clone(), None)]).err(), nc);
    assert_eq!(
        c.commit("g", 1, &a.member_id, None, vec![entry(0, 1)])
            .err(),
        nc
    );
    assert_eq!(c.fetch_offsets("g", None).err(), nc);
    assert_eq!(c.describe("g").err(), nc);
    assert_eq!(c.delete_groups(&["g".into()]).0, vec![nc.clone()]);
    assert_eq!(c.delete_offsets("g", &[("t".into(), 0)]).err(), nc);
    assert!(c.list().is_empty());
    // Groups of the partitions still led are untouched.
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|g| c.partition_for(g) != index)
        .unwrap();
    let o = join_new(&c, &other).await.await.unwrap();
    assert_eq!(o.error, None);
}

#[tokio::test(start_paused = true)]
async fn elect_after_resign_reloads_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = open_partitions(dir.path());
    let c = coordinator_over(&partitions, 0).await;
    c.commit("g", -1, "", None, vec![entry(0, 42)])
        .unwrap()
        .await
        .unwrap();
    let index = c.partition_for("g");
    c.resign(index, 0);
    assert_eq!(
        c.fetch_offsets("g", None).err(),
        Some(GroupError::NotCoordinator)
    );

    // Leadership comes back in a later epoch.
    let p = &partitions[usize::try_from(index).unwrap()];
    lead(p, 1, vec![1]);
    c.elect(index, p.clone(), 1);
    assert!(c.wait_loaded(index).await);
    let all = c.fetch_offsets("g", None).unwrap();
    assert_eq!(all[0].1[0].1.as_ref().unwrap().offset, 42);
    assert_eq!(c.list().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_while_loading_get_load_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = open_partitions(dir.path());
    let c = unloaded(0, 1);
    let index = c.partition_for("g");
    let p = &partitions[usize::try_from(index).unwrap()];
    lead(p, 0, vec![1]);
    // The load runs on the runtime, which this test does not yield to
    // before the requests below.
    c.elect(index, p.clone(), 0);
    let loading = Some(GroupError::CoordinatorLoadInProgress);
    assert_eq!(
        c.join(join_req("g", "", None)).await.unwrap().error,
        loading
    );
    assert_eq!(
        c.commit("g", -1, "", None, vec![entry(0, 1)]).err(),
        loading
    );
    assert_eq!(c.fetch_offsets("g", None).err(), loading);
    assert_eq!(c.describe("g").err(), loading);
    // A heartbeat is answered blindly, as Kafka does while loading.
    assert_eq!(c.heartbeat("g", 1, "m", None), Ok(()));

    assert!(c.wait_loaded(index).await);
    c.commit("g", -1, "", None, vec![entry(0, 1)])
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn commit_loses_leadership_before_replication_gets_not_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = open_partitions(dir.path());
    let c = unloaded(0, 1);
    let index = c.partition_for("g");
    let p = &partitions[usize::try_from(index).unwrap()];
    // Broker 2 is in the ISR but never fetches: nothing gets replicated.
    lead(p, 0, vec![1, 2]);
    c.elect(index, p.clone(), 0);
    assert!(c.wait_loaded(index).await);

    let mut durable = c.commit("g", -1, "", None, vec![entry(0, 1)]).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut durable)
            .await
            .is_err(),
        "acknowledged before the ISR had it"
    );
    p.become_follower(&PartitionState {
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader: 2,
        leader_epoch: 1,
        partition_epoch: 1,
        adding: vec![],
        removing: vec![],
    });
    assert_eq!(durable.await, Err(GroupError::NotCoordinator));
    // Until the resign arrives, new writes are refused by the log.
    assert_eq!(
        c.commit("g", -1, "", None, vec![entry(0, 2)]).err(),
        Some(GroupError::NotCoordinator)
    );
}

#[tokio::test(start_paused = true)]
async fn commit_without_enough_replicas_gets_coordinator_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = open_partitions(dir.path());
    let c = unloaded(0, 2);
    let index = c.partition_for("g");
    let p = &partitions[usize::try_from(index).unwrap()];
    lead(p, 0, vec![1]);
    c.elect(index, p.clone(), 0);
    assert!(c.wait_loaded(index).await);
    assert_eq!(
        c.commit("g", -1, "", None, vec![entry(0, 1)]).err(),
        Some(GroupError::CoordinatorNotAvailable)
    );

    // Enough replicas in the ISR, but the follower never catches up.
    lead(p, 0, vec![1, 2]);
    let durable = c.commit("g", -1, "", None, vec![entry(0, 1)]).unwrap();
    assert_eq!(durable.await, Err(GroupError::CoordinatorNotAvailable));
}

#[tokio::test(start_paused = true)]
async fn elections_and_resigns_follow_the_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = open_partitions(dir.path());
    let c = coordinator_over(&partitions, 0).await;
    let a = join_new(&c, "g").await.await.unwrap();
    sync(&c, "g", &a).await.unwrap();
    let index = c.partition_for("g");
    let p = &partitions[usize::try_from(index).unwrap()];

    // The same epoch again keeps the group as it is.
    c.elect(index, p.clone(), 0);
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));

    // A newer epoch reloads it from the log: still there, still Stable.
    lead(p, 1, vec![1]);
    c.elect(index, p.clone(), 1);
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Ok(()),
        "heartbeats are answered blindly while loading"
    );
    assert_eq!(
        c.describe("g").err(),
        Some(GroupError::CoordinatorLoadInProgress)
    );
    assert!(c.wait_loaded(index).await);
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));

    // A resign from an older epoch is stale.
    c.resign(index, 0);
    assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Ok(()));
    c.resign(index, 1);
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Err(GroupError::NotCoordinator)
    );
}
