#!/usr/bin/env python3
"""kafka-python (3.0.x) reading transactional data from a Sluice broker.

Run by tests/tests/txn.rs:

    kafka_python_txn.py read --bootstrap H:P --topic T --partitions N
        --isolation read_committed|read_uncommitted

Assigns partitions 0..N-1 (no group), asks for their end offsets with the
given isolation level (the last stable offset for read_committed, the high
watermark otherwise), reads every partition from the beginning until its
position reaches that end, and prints:

    END P OFFSET           one per partition, before any record
    REC P OFFSET VALUE     every record returned, in partition and offset order
    DONE

Values are printed as text with whitespace replaced by `_`. Exits 1 with a
traceback if the end is not reached within --timeout seconds.
"""

import argparse
import logging
import sys
import time
import traceback

from kafka import KafkaConsumer, TopicPartition


def one_word(value):
    if value is None:
        return "(null)"
    text = value.decode("utf-8", errors="replace")
    return "_".join(text.split()) if text else "(empty)"


def read(args):
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        client_id="sluice-txn-kafka-python",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=args.isolation,
        fetch_max_wait_ms=100,
    )
    try:
        tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps, timeout_ms=30000)
        for tp in tps:
            print("END %d %d" % (tp.partition, ends[tp]), flush=True)
        records = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + args.timeout
        while True:
            behind = [tp for tp in tps if consumer.position(tp, timeout_ms=10000) < ends[tp]]
            if not behind:
                break
            if time.monotonic() > deadline:
                where = {tp.partition: (consumer.position(tp), ends[tp]) for tp in behind}
                raise AssertionError(
                    "timed out after %.0f s: (position, end) of the partitions behind: %r"
                    % (args.timeout, where)
                )
            for tp, batch in consumer.poll(timeout_ms=200).items():
                for r in batch:
                    if r.offset < ends[tp]:
                        records[tp.partition].append((r.offset, r.value))
        for p in sorted(records):
            for offset, value in sorted(records[p], key=lambda r: r[0]):
                print("REC %d %d %s" % (p, offset, one_word(value)), flush=True)
        print("DONE", flush=True)
    finally:
        consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("read")
    r.add_argument("--bootstrap", required=True)
    r.add_argument("--topic", required=True)
    r.add_argument("--partitions", type=int, required=True)
    r.add_argument(
        "--isolation", choices=["read_committed", "read_uncommitted"], required=True
    )
    r.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        read(args)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
