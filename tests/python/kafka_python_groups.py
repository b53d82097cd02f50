#!/usr/bin/env python3
"""kafka-python (3.0.x) consumer groups against a Sluice broker.

Run by tests/tests/groups.rs in three ways:

    kafka_python_groups.py member --bootstrap H:P --group G --topic T [--client-id C]
        [--instance-id I] [--strategy range|roundrobin|sticky|cooperative-sticky]
        [--session-timeout-ms 6000] [--heartbeat-interval-ms 500] [--commit]
    kafka_python_groups.py admin-groups --bootstrap H:P --group G --topic T
    kafka_python_groups.py alter-offsets --bootstrap H:P --group G --topic T --partitions N --offset O

`member` is a KafkaConsumer in group G subscribed to T, speaking the line
protocol of sluice_tests::member (one event per line on stdout, see
tests/src/member.rs) until it reads `close` or end-of-file on stdin; the test
kills it with SIGKILL to simulate a crash.

`admin-groups` checks ListGroups / DescribeGroups / OffsetFetch / OffsetDelete /
DeleteGroups with KafkaAdminClient around one live consumer, and
`alter-offsets` commits offsets for an empty group (generation -1). Both exit 0
and print "ALL CHECKS PASSED" on success; on failure they print which check
failed, what was sent and what came back, and exit 1.
"""

import argparse
import logging
import sys
import threading
import time
import traceback

import kafka
import kafka.errors as Errors
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.structs import OffsetAndMetadata

ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}

COMMIT_EVERY = 50


# --------------------------------------------------------------------------
# member: the line protocol of tests/src/member.rs

_out_lock = threading.Lock()


def emit(event, rest=""):
    ts = int(time.time() * 1000)
    line = f"{event} {ts} {rest}" if rest else f"{event} {ts}"
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def plist(parts):
    parts = sorted(parts)
    return ",".join(str(p) for p in parts) if parts else "-"


def one_line(text):
    return str(text).replace("\n", " ").replace("\r", " ")


class Member:
    def __init__(self, args):
        self.args = args
        self.topic = args.topic
        self.current = set()
        self.pending = {}  # partition -> next offset to commit
        self.protocol_printed = False
        configs = dict(
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            client_id=args.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
            partition_assignment_strategy=[ASSIGNORS[args.strategy]],
            fetch_max_wait_ms=100,
            request_timeout_ms=30000,
        )
        if args.instance_id:
            configs["group_instance_id"] = args.instance_id
        self.consumer = KafkaConsumer(**configs)

    def commit_pending(self, only=None):
        if not self.args.commit:
            return
        chosen = {p: o for p, o in self.pending.items() if only is None or p in only}
        if not chosen:
            return
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in chosen.items()}
        try:
            self.consumer.commit(offsets)
        except Exception as e:  # noqa: BLE001 - reported, retried on the next idle poll
            emit("COMMIT_FAILED", one_line(f"{type(e).__name__}: {e}"))
            return
        for p, o in chosen.items():
            if self.pending.get(p) == o:
                del self.pending[p]
        emit("COMMITTED", ",".join(f"{p}={o}" for p, o in sorted(chosen.items())))

    def listener(self):
        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                parts = {tp.partition for tp in revoked if tp.topic == member.topic}
                member.commit_pending(only=parts)
                for p in parts:
                    member.pending.pop(p, None)
                member.current -= parts
                emit("REVOKED", plist(parts))
                emit("ASSIGNMENT", plist(member.current))

            def on_partitions_assigned(self, assigned):
                parts = {tp.partition for tp in assigned if tp.topic == member.topic}
                if not member.protocol_printed:
                    member.protocol_printed = True
                    cooperative = member.args.strategy == "cooperative-sticky"
                    emit("PROTOCOL", "cooperative" if cooperative else "eager")
                member.current |= parts
                emit("ASSIGNED", plist(parts))
                emit("ASSIGNMENT", plist(member.current))

            def on_partitions_lost(self, lost):
                parts = {tp.partition for tp in lost if tp.topic == member.topic}
                for p in parts:
                    member.pending.pop(p, None)
                member.current -= parts
                emit("REVOKED", plist(parts))
                emit("ASSIGNMENT", plist(member.current))

        return Listener()

    def run(self):
        stop = threading.Event()

        def read_stdin():
            for line in sys.stdin:
                if line.strip() == "close":
                    break
            stop.set()

        threading.Thread(target=read_stdin, daemon=True).start()
        # Load the topic's metadata before joining. kafka-python 3.0.12 leads
        # its first generation with whatever metadata it has; without the
        # topic it assigns nothing and rejoins when the metadata arrives; under
        # CPU load such a member was seen (with kafka-python DEBUG logs) to
        # spin in its poll loop with need_rejoin False, sending neither
        # JoinGroup nor Heartbeat, until the broker expired its session.
        deadline = time.monotonic() + 30
        while not self.consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                raise SystemExit(f"no metadata for topic {self.topic}")
            time.sleep(0.05)
        self.consumer.subscribe([self.topic], listener=self.listener())
        emit("SUBSCRIBED")
        since_commit = 0
        while not stop.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=100)
            except Exception as e:  # noqa: BLE001 - report and keep polling, as rdkafka does
                emit("ERROR", one_line(f"{type(e).__name__}: {e}"))
                continue
            if not batches:
                self.commit_pending()
                since_commit = 0
                continue
            for tp, records in batches.items():
                for r in records:
                    value = "(null)" if r.value is None else r.value.decode("utf-8", "replace")
                    value = "".join("_" if c.isspace() else c for c in value)
                    emit("MSG", f"{tp.partition} {r.offset} {value}")
                    if self.args.commit:
                        self.pending[tp.partition] = r.offset + 1
                        since_commit += 1
            if since_commit >= COMMIT_EVERY:
                self.commit_pending()
                since_commit = 0
        self.commit_pending()
        # LeaveGroup for dynamic members.
        self.consumer.close(autocommit=False)
        emit("CLOSED")
        return 0


def member_main(args):
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Member(args).run()


# --------------------------------------------------------------------------
# admin-groups and alter-offsets

def step(msg):
    print(f"--- {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(what, probe, timeout=30.0):
    deadline = time.monotonic() + timeout
    pause = 0.01
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    raise AssertionError(f"timed out waiting for {what}; last probe: {last!r}")


def assigned_partitions(member_assignment, topic):
    """Partitions of `topic` in a DescribeGroups member assignment, decoded
    by kafka-python into an object or a dict."""
    if member_assignment is None:
        return set()
    if hasattr(member_assignment, "partitions"):
        return {tp.partition for tp in member_assignment.partitions() if tp.topic == topic}
    if isinstance(member_assignment, dict):
        out = set()
        for entry in member_assignment.get("assigned_partitions", []):
            if isinstance(entry, dict):
                if entry.get("topic") == topic:
                    out |= set(entry.get("partitions", []))
            else:
                name, parts = entry
                if name == topic:
                    out |= set(parts)
        return out
    raise AssertionError(f"cannot read member_assignment {member_assignment!r}")


def group_names(admin):
    return [g["group_id"] for g in admin.list_groups()]


def admin_groups(args):
    bootstrap, topic, group = args.bootstrap, args.topic, args.group
    partitions = 3
    per_partition = 10
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-tests-kpy-groups-admin",
                             request_timeout_ms=30000)
    consumer = None
    try:
        step(f"create topic {topic} ({partitions} partitions) and produce {per_partition} records to each")
        res = admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
        errors = [t for t in res["topics"] if t.get("error_code", 0) != 0]
        check(not errors, f"CreateTopics returned errors: {errors}")
        wait_for("the topic in metadata",
                 lambda: [t for t in admin.describe_topics([topic])
                          if t.get("error_code", 0) == 0 and len(t.get("partitions", [])) == partitions])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                 client_id="sluice-tests-kpy-groups-producer")
        try:
            for i in range(partitions * per_partition):
                producer.send(topic, value=f"v{i}".encode(), partition=i % partitions).get(timeout=30)
        finally:
            producer.close(timeout=10)

        step(f"a consumer in group {group} reads everything and commits")
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id="kpy-groups-member",
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 session_timeout_ms=6000, heartbeat_interval_ms=500,
                                 partition_assignment_strategy=[RangePartitionAssignor])
        consumer.subscribe([topic])
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < partitions * per_partition and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for r in records:
                    got[(tp.partition, r.offset)] = r.value
        check(len(got) == partitions * per_partition,
              f"consumed {len(got)} records, want {partitions * per_partition}; assignment {consumer.assignment()}")
        consumer.commit()
        check(len(consumer.assignment()) == partitions, f"assignment {consumer.assignment()}")

        step("ListGroups shows the group as a consumer group")
        groups = admin.list_groups()
        print(groups)
        mine = [g for g in groups if g["group_id"] == group]
        check(len(mine) == 1, f"ListGroups: {group} listed {len(mine)} times in {groups}")
        check(mine[0].get("protocol_type") == "consumer", f"ListGroups protocol_type: {mine[0]}")
        if "group_state" in mine[0]:
            check(mine[0]["group_state"] == "Stable", f"ListGroups group_state: {mine[0]}")

        step("DescribeGroups shows one Stable member with all partitions")
        desc = admin.describe_groups([group])
        print(desc)
        d = desc[group]
        check(d["error"] is None, f"DescribeGroups error: {d}")
        check(d["group_state"] == "Stable", f"DescribeGroups state {d['group_state']!r}, want 'Stable'")
        check(d["protocol_type"] == "consumer", f"DescribeGroups protocol_type {d['protocol_type']!r}")
        check(d["protocol_data"] == "range", f"DescribeGroups protocol_data {d['protocol_data']!r}, want 'range'")
        check(len(d["members"]) == 1, f"DescribeGroups members: {d['members']}")
        m = d["members"][0]
        check(m["client_id"] == "kpy-groups-member", f"member client_id {m['client_id']!r}")
        check(m["member_id"], f"member without member_id: {m}")
        parts = assigned_partitions(m["member_assignment"], topic)
        check(parts == set(range(partitions)), f"member assignment {parts}, want all {partitions}")

        step("OffsetFetch through the admin client")
        offsets = admin.list_group_offsets(group)[group]
        print(offsets)
        for p in range(partitions):
            oam = offsets.get(TopicPartition(topic, p))
            check(oam is not None and oam.offset == per_partition,
                  f"committed offset of {topic}/{p}: {oam}, want {per_partition}")

        step("DeleteGroups refuses a group with a live member; OffsetDelete refuses a subscribed topic")
        res = admin.delete_groups([group])
        print(res)
        check(res.get(group) == "NonEmptyGroupError", f"delete_groups on a live group: {res}, want NonEmptyGroupError")
        try:
            res = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
        except Errors.KafkaError as e:
            raise AssertionError(f"OffsetDelete on a subscribed topic raised {e!r}; "
                                 "want partition error GroupSubscribedToTopicError") from e
        print(res)
        check(res.get(TopicPartition(topic, 0)) is Errors.GroupSubscribedToTopicError,
              f"OffsetDelete on a subscribed topic: {res}")
        check(admin.describe_groups([group])[group]["group_state"] == "Stable",
              "the refused deletes changed the group's state")

        step("the consumer leaves: the group is Empty, still listed, offsets kept")
        consumer.close(autocommit=False)
        consumer = None
        d = wait_for("the group to become Empty",
                     lambda: (lambda d: d if d["group_state"] == "Empty" else None)(
                         admin.describe_groups([group])[group]))
        print(d)
        check(d["members"] == [], f"Empty group still has members: {d['members']}")
        check(group in group_names(admin), f"Empty group {group} not listed: {admin.list_groups()}")
        offsets = admin.list_group_offsets(group)[group]
        check(all(offsets.get(TopicPartition(topic, p)) is not None
                  and offsets[TopicPartition(topic, p)].offset == per_partition for p in range(partitions)),
              f"offsets after the member left: {offsets}")

        step("OffsetDelete of partition 0 on the empty group")
        res = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
        print(res)
        check(res.get(TopicPartition(topic, 0)) is Errors.NoError, f"OffsetDelete: {res}")
        offsets = admin.list_group_offsets(group)[group]
        print(offsets)
        p0 = offsets.get(TopicPartition(topic, 0))
        check(p0 is None or p0.offset == -1, f"partition 0 still committed after OffsetDelete: {p0}")
        p1 = offsets.get(TopicPartition(topic, 1))
        check(p1 is not None and p1.offset == per_partition, f"partition 1 lost by OffsetDelete of 0: {p1}")

        step("DeleteGroups on the empty group")
        res = admin.delete_groups([group])
        print(res)
        check(res.get(group) == "OK", f"delete_groups on an empty group: {res}")
        names = group_names(admin)
        check(group not in names, f"deleted group still listed: {names}")
        desc = admin.describe_groups([group])[group]
        print(desc)
        check(desc["group_state"] == "Dead" or desc["error"] is not None and "GroupIdNotFound" in desc["error"],
              f"DescribeGroups of a deleted group: {desc}, want state Dead or GROUP_ID_NOT_FOUND")
        check(not desc["members"], f"deleted group has members: {desc['members']}")
        offsets = admin.list_group_offsets(group)[group]
        check(all(o.offset == -1 for o in offsets.values()), f"deleted group still has offsets: {offsets}")
        res = admin.delete_groups([group])
        print(res)
        check(res.get(group) == "GroupIdNotFoundError", f"deleting it again: {res}, want GroupIdNotFoundError")
    finally:
        if consumer is not None:
            consumer.close(autocommit=False)
        admin.close()


def alter_offsets(args):
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="sluice-tests-kpy-groups-admin",
                             request_timeout_ms=30000)
    try:
        offsets = {TopicPartition(args.topic, p): OffsetAndMetadata(args.offset, "", -1)
                   for p in range(args.partitions)}
        step(f"alter_group_offsets {args.group} -> {args.offset} on {args.partitions} partitions")
        res = admin.alter_group_offsets(args.group, offsets)
        print(res)
        bad = {tp: e for tp, e in res.items() if e is not Errors.NoError}
        check(not bad, f"alter_group_offsets errors: {bad}")
        check(len(res) == args.partitions, f"alter_group_offsets answered {len(res)} partitions: {res}")
        got = admin.list_group_offsets(args.group)[args.group]
        print(got)
        for tp in offsets:
            check(got.get(tp) is not None and got[tp].offset == args.offset,
                  f"after alter_group_offsets {tp}: {got.get(tp)}, want {args.offset}")
    finally:
        admin.close()


def checked(fn, args):
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"kafka-python {kafka.__version__}, broker {args.bootstrap}", flush=True)
    try:
        fn(args)
    except Exception:  # noqa: BLE001 - report everything, then fail
        traceback.print_exc()
        print("FAILED", flush=True)
        return 1
    print("ALL CHECKS PASSED", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("member")
    m.add_argument("--bootstrap", required=True)
    m.add_argument("--group", required=True)
    m.add_argument("--topic", required=True)
    m.add_argument("--client-id", default="kpy-group-member")
    m.add_argument("--instance-id")
    m.add_argument("--strategy", default="range", choices=sorted(ASSIGNORS))
    m.add_argument("--session-timeout-ms", type=int, default=6000)
    m.add_argument("--heartbeat-interval-ms", type=int, default=500)
    m.add_argument("--commit", action="store_true")
    a = sub.add_parser("admin-groups")
    a.add_argument("--bootstrap", required=True)
    a.add_argument("--group", required=True)
    a.add_argument("--topic", required=True)
    o = sub.add_parser("alter-offsets")
    o.add_argument("--bootstrap", required=True)
    o.add_argument("--group", required=True)
    o.add_argument("--topic", required=True)
    o.add_argument("--partitions", type=int, required=True)
    o.add_argument("--offset", type=int, required=True)
    args = ap.parse_args()
    if args.cmd == "member":
        return member_main(args)
    if args.cmd == "admin-groups":
        return checked(admin_groups, args)
    return checked(alter_offsets, args)


if __name__ == "__main__":
    sys.exit(main())
