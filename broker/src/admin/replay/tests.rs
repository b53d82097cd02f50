use super::*;

fn spec() -> ReplaySpec {
    ReplaySpec {
        source_topic: "orders".into(),
        partitions: None,
        dest_topic: "orders-copy".into(),
        start: Bound::Earliest,
        end: Bound::Latest,
        partitioning: Partitioning::Same,
        resume: None,
        same_cluster: true,
    }
}

fn part(log_start: i64, log_end: i64) -> ObservedPartition {
    ObservedPartition {
        log_start,
        log_end,
        start_by_time: None,
        end_by_time: None,
    }
}

/// Three source partitions: logs [0, 100), [10, 50), [0, 0); a
/// destination with `dest` partitions.
fn observed(dest: Option<i32>) -> Observed {
    Observed {
        source_partitions: Some(vec![0, 1, 2]),
        dest_partitions: dest,
        offsets: [(0, part(0, 100)), (1, part(10, 50)), (2, part(0, 0))].into(),
    }
}

fn ranges(p: &Plan) -> Vec<(i32, i64, i64)> {
    p.ranges
        .iter()
        .map(|r| (r.partition, r.start, r.end))
        .collect()
}

#[test]
fn bounds_parse_offsets_times_and_names() {
    assert_eq!(Bound::parse_start("earliest"), Ok(Bound::Earliest));
    assert_eq!(Bound::parse_start("1200"), Ok(Bound::Offset(1200)));
    assert_eq!(
        Bound::parse_start("@2026-11-21T10:00:00Z"),
        Ok(Bound::Timestamp(1_795_255_200_000))
    );
    assert_eq!(
        Bound::parse_start("@2026-11-21T12:00:00+02:00"),
        Ok(Bound::Timestamp(1_795_255_200_000))
    );
    assert_eq!(
        Bound::parse_end("@1795255200000"),
        Ok(Bound::Timestamp(1_795_255_200_000))
    );
    assert_eq!(Bound::parse_end("latest"), Ok(Bound::Latest));
    for bad in ["-3", "yesterday", "@2026-13-01T00:00:00Z", "@", "12x"] {
        let e = Bound::parse_start(bad).expect_err(bad);
        assert!(e.contains("write --start earliest"), "{bad}: {e}");
    }
    let e = Bound::parse_start("latest").expect_err("latest start");
    assert!(e.contains("would copy nothing"), "{e}");
    let e = Bound::parse_end("earliest").expect_err("earliest end");
    assert!(e.contains("write --end latest"), "{e}");
}

#[test]
fn end_before_start_is_refused_with_the_fix() {
    let e = check_bounds(Bound::Offset(10), Bound::Offset(5)).expect_err("backwards");
    assert!(e.contains("--end 5 is before --start 10"), "{e}");
    assert!(e.contains("exclusive"), "{e}");
    assert!(check_bounds(Bound::Offset(10), Bound::Offset(10)).is_ok());
    assert!(check_bounds(Bound::Timestamp(2), Bound::Timestamp(1)).is_err());
    assert!(check_bounds(Bound::Offset(10), Bound::Timestamp(1)).is_ok());
    let mut s = spec();
    s.start = Bound::Offset(10);
    s.end = Bound::Offset(5);
    assert!(matches!(
        plan(&s, &observed(Some(3))),
        Err(PlanError::Bounds(_))
    ));
}

#[test]
fn source_lists_parse() {
    assert_eq!(parse_source("orders"), Ok(("orders".into(), None)));
    assert_eq!(
        parse_source("orders:2,0,2"),
        Ok(("orders".into(), Some(vec![0, 2])))
    );
    assert!(parse_source("orders:a").is_err());
    assert!(parse_source(":1").is_err());
    assert!(parse_source("orders:").is_err());
}

#[test]
fn resume_state_round_trips_and_rejects_garbage() {
    let s: ResumeState = "orders.v2:0=12..40,orders.v2:3=40..40"
        .parse()
        .expect("parses");
    assert_eq!(s.topic, "orders.v2");
    assert_eq!(s.partitions, [(0, (12, 40)), (3, (40, 40))].into());
    assert_eq!(s.to_string(), "orders.v2:0=12..40,orders.v2:3=40..40");
    assert!(!s.is_done());
    for bad in [
        "",
        "orders:0=12",
        "orders:x=1..2",
        "orders:0=5..4",
        "a:0=1..2,b:1=1..2",
        "orders:0=1..2,orders:0=1..2",
        "orders=1..2",
    ] {
        let e = bad.parse::<ResumeState>().expect_err(bad);
        assert!(e.contains("--resume"), "{bad}: {e}");
    }
}

#[test]
fn whole_topic_plan_covers_each_log() {
    let p = plan(&spec(), &observed(Some(3))).expect("plans");
    assert_eq!(ranges(&p), [(0, 0, 100), (1, 10, 50), (2, 0, 0)]);
    assert_eq!(p.total_offsets(), 140);
    assert!(p.ranges.iter().all(|r| r.notes.is_empty()));
}

#[test]
fn offsets_are_clamped_to_the_log_and_explained() {
    let mut s = spec();
    s.start = Bound::Offset(5);
    s.end = Bound::Offset(70);
    let p = plan(&s, &observed(Some(3))).expect("plans");
    assert_eq!(ranges(&p), [(0, 5, 70), (1, 10, 50), (2, 0, 0)]);
    let notes = &p.ranges[1].notes;
    assert!(
        notes.iter().any(|n| n.contains("below the log start 10")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("past the last stable offset 50")),
        "{notes:?}"
    );
}

#[test]
fn times_resolve_through_list_offsets_and_missing_times_mean_the_end() {
    let mut s = spec();
    s.start = Bound::Timestamp(1_000);
    s.end = Bound::Timestamp(2_000);
    let mut o = observed(Some(3));
    o.offsets = [
        (
            0,
            ObservedPartition {
                start_by_time: Some(20),
                end_by_time: Some(60),
                ..part(0, 100)
            },
        ),
        (
            1,
            ObservedPartition {
                start_by_time: Some(30),
                end_by_time: Some(-1),
                ..part(10, 50)
            },
        ),
        (
            2,
            ObservedPartition {
                start_by_time: Some(-1),
                end_by_time: Some(-1),
                ..part(0, 0)
            },
        ),
    ]
    .into();
    let p = plan(&s, &o).expect("plans");
    assert_eq!(ranges(&p), [(0, 20, 60), (1, 30, 50), (2, 0, 0)]);
}

#[test]
fn bad_topics_and_partitions_name_the_fix() {
    let mut o = observed(Some(3));
    o.source_partitions = None;
    let e = plan(&spec(), &o).expect_err("no source").to_string();
    assert!(e.contains("source topic orders does not exist"), "{e}");

    let e = plan(&spec(), &observed(None))
        .expect_err("no dest")
        .to_string();
    assert!(e.contains("create it first"), "{e}");

    let mut s = spec();
    s.partitions = Some(vec![0, 7]);
    let e = plan(&s, &observed(Some(3)))
        .expect_err("no partition 7")
        .to_string();
    assert!(
        e.contains("has 3 partitions (0 to 2): there is no partition 7"),
        "{e}"
    );

    let e = plan(&spec(), &observed(Some(2)))
        .expect_err("too few")
        .to_string();
    assert!(e.contains("which has only 2"), "{e}");
    assert!(e.contains("--partitions 3"), "{e}");
    assert!(e.contains("--partitioning key or round-robin"), "{e}");
    let mut s = spec();
    s.partitioning = Partitioning::Key;
    assert!(plan(&s, &observed(Some(2))).is_ok());
    let mut s = spec();
    s.partitions = Some(vec![0, 1]);
    assert!(plan(&s, &observed(Some(2))).is_ok());

    let mut s = spec();
    s.dest_topic = "orders".into();
    let e = plan(&s, &observed(Some(3)))
        .expect_err("same topic")
        .to_string();
    assert!(e.contains("--to-bootstrap"), "{e}");
    s.same_cluster = false;
    assert!(plan(&s, &observed(Some(3))).is_ok());
}

#[test]
fn resume_replaces_the_bounds_and_must_match_the_source() {
    let mut s = spec();
    s.start = Bound::Offset(90);
    s.resume = Some("orders:0=40..80,orders:1=50..50".parse().expect("parses"));
    let p = plan(&s, &observed(Some(3))).expect("plans");
    assert_eq!(ranges(&p), [(0, 40, 80), (1, 50, 50)]);
    assert_eq!(
        p.resume_state().to_string(),
        "orders:0=40..80,orders:1=50..50"
    );

    s.resume = Some("payments:0=1..2".parse().expect("parses"));
    let e = plan(&s, &observed(Some(3))).expect_err("topic").to_string();
    assert!(
        e.contains("pass the --from of the interrupted replay"),
        "{e}"
    );

    s.resume = Some("orders:0=1..2".parse().expect("parses"));
    s.partitions = Some(vec![0, 1]);
    let e = plan(&s, &observed(Some(3)))
        .expect_err("partitions")
        .to_string();
    assert!(e.contains("drop the partition list"), "{e}");
}

fn rec(partition: i32, offset: i64, key: Option<&str>, len: usize) -> Record {
    Record {
        partition,
        offset,
        timestamp: 1_000 + offset,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(vec![b'v'; len]),
        headers: vec![("h".into(), Some(b"1".to_vec()))],
    }
}

fn test_plan(partitioning: Partitioning, dest_partitions: i32) -> Plan {
    Plan {
        source_topic: "a".into(),
        dest_topic: "b".into(),
        dest_partitions,
        partitioning,
        ranges: vec![],
    }
}

#[test]
fn same_partitioning_keeps_the_partition_and_splits_large_batches() {
    let records: Vec<Record> = (0..10).map(|i| rec(2, i, Some("k"), 100)).collect();
    let mut rr = 0;
    let out = assign(&test_plan(Partitioning::Same, 4), &records, &mut rr, 450);
    assert!(out.iter().all(|(p, _)| *p == 2));
    // 100 + 1 + 2 + 32 = 135 bytes each: 3 per batch under 450.
    let sizes: Vec<usize> = out.iter().map(|(_, b)| b.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    let flat: Vec<i64> = out
        .iter()
        .flat_map(|(_, b)| b.iter().map(|r| r.timestamp))
        .collect();
    assert_eq!(flat, (1_000..1_010).collect::<Vec<_>>(), "order kept");
}

#[test]
fn key_partitioning_follows_murmur2_and_round_robin_cycles() {
    let records = vec![
        rec(0, 0, Some("21"), 1),
        rec(0, 1, Some("foobar"), 1),
        rec(0, 2, None, 1),
        rec(0, 3, None, 1),
    ];
    let mut rr = 0;
    let out = assign(&test_plan(Partitioning::Key, 7), &records, &mut rr, 1 << 20);
    let dests: BTreeMap<i64, i32> = out
        .iter()
        .flat_map(|(p, b)| b.iter().map(move |r| (r.timestamp - 1_000, *p)))
        .collect();
    assert_eq!(dests[&0], partition_for_key(b"21", 7));
    assert_eq!(dests[&1], partition_for_key(b"foobar", 7));
    assert_eq!((dests[&2], dests[&3]), (0, 1), "no key: round robin");

    let mut rr = 0;
    let out = assign(
        &test_plan(Partitioning::RoundRobin, 3),
        &records,
        &mut rr,
        1 << 20,
    );
    let mut per: BTreeMap<i32, usize> = BTreeMap::new();
    for (p, b) in &out {
        *per.entry(*p).or_default() += b.len();
    }
    assert_eq!(per, [(0, 2), (1, 1), (2, 1)].into());
    assert_eq!(rr, 4);
}
