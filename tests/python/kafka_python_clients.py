#!/usr/bin/env python3
"""kafka-python (3.0.x) against a Sluice broker: admin, producer, consumer.

Run by the Rust test `kafka_python_admin_and_clients` (tests/tests/wire.rs):

    python3 tests/python/kafka_python_clients.py --bootstrap 127.0.0.1:PORT --topic NAME

Exits 0 and prints "ALL CHECKS PASSED" on success; on failure prints which
check failed, what was sent and what came back, and exits 1. Consumers use
assign + seek, never a group.
"""

import argparse
import logging
import sys
import time
import traceback

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

PARTITIONS = 3
CREATE_CONFIGS = {"retention.ms": "3600000", "max.message.bytes": "1048576"}


def step(msg):
    print(f"--- {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def topic_configs(admin, topic, config_filter="modified"):
    res = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter=config_filter
    )
    return res.get("topic", {}).get(topic, {})


def value_of(configs, key):
    entry = configs.get(key)
    return None if entry is None else entry.get("value")


def wait_for(what, probe, timeout=20.0):
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


def admin_checks(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-tests-kpy-admin",
                             request_timeout_ms=30000)
    try:
        manager = getattr(admin, "_manager", None)
        step(f"broker version guessed by kafka-python: {getattr(manager, 'broker_version', '?')}")

        step(f"create topic {topic} with {PARTITIONS} partitions and configs {CREATE_CONFIGS}")
        res = admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1, "configs": CREATE_CONFIGS}}
        )
        print(res)
        errors = [t for t in res["topics"] if t.get("error_code", 0) != 0]
        check(not errors, f"CreateTopics returned errors: {errors}")

        step("describe the topic")
        described = wait_for(
            "the new topic in metadata",
            lambda: [t for t in admin.describe_topics([topic])
                     if t.get("error_code", 0) == 0 and len(t.get("partitions", [])) == PARTITIONS],
        )
        print(described)
        parts = sorted(p["partition_index"] for p in described[0]["partitions"])
        check(parts == list(range(PARTITIONS)), f"partitions {parts}, want 0..{PARTITIONS - 1}")
        check(topic in admin.list_topics(), f"{topic} missing from list_topics()")

        step("describe configs (modified)")
        configs = topic_configs(admin, topic)
        print(configs)
        for k, v in CREATE_CONFIGS.items():
            check(value_of(configs, k) == v,
                  f"DescribeConfigs {k}: {value_of(configs, k)!r}, created with {v!r}")

        step("describe configs (all) includes defaults")
        all_configs = topic_configs(admin, topic, config_filter="all")
        check("cleanup.policy" in all_configs,
              f"DescribeConfigs without keys should list defaults such as cleanup.policy; got {sorted(all_configs)}")

        step("alter retention.ms (incremental when advertised, else AlterConfigs)")
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "7200000"})])
        print(res)
        check(res.get("topic", {}).get(topic) == "OK", f"alter_configs result {res}")
        configs = topic_configs(admin, topic)
        check(value_of(configs, "retention.ms") == "7200000",
              f"retention.ms after alter: {value_of(configs, 'retention.ms')!r}, want '7200000'")

        step("legacy AlterConfigs (incremental=False) keeps the other modified configs")
        res = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "10800000"})], incremental=False
        )
        print(res)
        check(res.get("topic", {}).get(topic) == "OK", f"alter_configs(incremental=False) result {res}")
        configs = topic_configs(admin, topic)
        check(value_of(configs, "retention.ms") == "10800000",
              f"retention.ms after AlterConfigs: {value_of(configs, 'retention.ms')!r}")
        check(value_of(configs, "max.message.bytes") == "1048576",
              f"max.message.bytes lost by AlterConfigs: {value_of(configs, 'max.message.bytes')!r}")
    finally:
        admin.close()


def client_checks(bootstrap, topic):
    step("produce with KafkaProducer (acks=all, gzip)")
    # Idempotence (InitProducerId) belongs to the transactions work, not to this
    # suite; kafka-python 3.0 turns it on by default for brokers it takes for >= 3.0.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                             enable_idempotence=False,
                             client_id="sluice-tests-kpy-producer", request_timeout_ms=30000)
    base_ts = int(time.time() * 1000) - 60_000
    sent = {}
    try:
        for i in range(60):
            partition = i % PARTITIONS
            key = f"key-{i}".encode()
            value = f"value-{i}-".encode() + bytes(range(i % 256))
            headers = [("i", str(i).encode()), ("empty", b"")]
            md = producer.send(topic, key=key, value=value, headers=headers, partition=partition,
                               timestamp_ms=base_ts + i).get(timeout=30)
            check(md.partition == partition, f"record {i} went to partition {md.partition}, sent to {partition}")
            sent[(md.partition, md.offset)] = (key, value, headers, base_ts + i)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    for p in range(PARTITIONS):
        offsets = sorted(o for (pp, o) in sent if pp == p)
        check(offsets == list(range(len(offsets))), f"partition {p} offsets {offsets}, want 0..{len(offsets) - 1}")

    step("consume with KafkaConsumer: assign + seek, no group")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id="sluice-tests-kpy-consumer",
                             consumer_timeout_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        print(f"beginning {begins} end {ends}")
        for tp in tps:
            check(begins[tp] == 0, f"beginning offset of {tp}: {begins[tp]}")
            check(ends[tp] == len([1 for (p, _) in sent if p == tp.partition]), f"end offset of {tp}: {ends[tp]}")
        # Seek into the middle of partition 1, the rest from the start.
        seek_to = {tp: (2 if tp.partition == 1 else 0) for tp in tps}
        for tp, off in seek_to.items():
            consumer.seek(tp, off)
        got = {}
        deadline = time.monotonic() + 30
        want = sum(ends[tp] - seek_to[tp] for tp in tps)
        while len(got) < want and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    got[(tp.partition, r.offset)] = r
        check(len(got) == want, f"consumed {len(got)} records, want {want}")
        for (p, o), r in got.items():
            check(o >= seek_to[TopicPartition(topic, p)], f"record at {p}/{o} is before the seek position")
            key, value, headers, ts = sent[(p, o)]
            check(r.key == key, f"{p}/{o}: key {r.key!r}, sent {key!r}")
            check(r.value == value, f"{p}/{o}: value {r.value!r}, sent {value!r}")
            check(list(r.headers) == headers, f"{p}/{o}: headers {r.headers!r}, sent {headers!r}")
            check(r.timestamp == ts, f"{p}/{o}: timestamp {r.timestamp}, sent {ts}")

        step("offsets_for_times")
        tp0 = TopicPartition(topic, 0)
        first_ts_p0 = min(ts for (p, _), (_, _, _, ts) in sent.items() if p == 0)
        res = consumer.offsets_for_times({tp0: first_ts_p0 + 1})
        check(res[tp0] is not None and res[tp0].offset == 1, f"offsets_for_times p0 ts+1: {res}")
    finally:
        consumer.close(autocommit=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"kafka-python {kafka.__version__}, broker {args.bootstrap}", flush=True)
    try:
        admin_checks(args.bootstrap, args.topic)
        client_checks(args.bootstrap, args.topic)
    except Exception:  # noqa: BLE001 - report everything, then fail
        traceback.print_exc()
        print("FAILED", flush=True)
        return 1
    print("ALL CHECKS PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
