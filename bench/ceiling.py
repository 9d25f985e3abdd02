"""The ceiling: a plain confluent-kafka transactional consume -> produce loop, state in a dict.

It does the per-command work kes does (decode the envelope, unpack the command, decide with the
bank behavior, encode one EventEnvelope per event with the same headers and key, a reply when
one is wanted) and commits each consumed batch with its input offsets in one transaction; but no
snapshot changelog, no local store, no dedup window, no framework. What Python on this machine
can do at best with these messages.

Run: `python -m bench.ceiling BOOTSTRAP COMMANDS EVENTS REPLIES GROUP` until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from confluent_kafka import Consumer, Producer
from google.protobuf.timestamp_pb2 import Timestamp

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, event_key, pack, type_name, unpack
from kes.schemas.kes.v1.envelopes_pb2 import Accepted as AcceptedReply
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Rejected, Reply
from kes.streams.core.decision import Accepted, CommandContext

BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("bootstrap", "commands", "events", "replies", "group"):
        parser.add_argument(name)
    args = parser.parse_args()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "transactional.id": f"{args.group}-tx",
            "linger.ms": 2,
            "batch.size": 1_000_000,
        }
    )
    producer.init_transactions()
    consumer.subscribe([args.commands])
    states: dict[str, tuple[int, bank_pb2.Account]] = {}
    try:
        while not stopping:
            records = consumer.consume(BATCH, 0.1)
            if not records:
                continue
            producer.begin_transaction()
            for record in records:
                _one(record, states, producer, args.events, args.replies)
            producer.poll(0)
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
            )
            producer.commit_transaction()
    finally:
        consumer.close()


def _one(
    record: Any,
    states: dict[str, tuple[int, bank_pb2.Account]],
    producer: Producer,
    events_topic: str,
    replies_topic: str,
) -> None:
    env = decode_command(record.value(), record.headers())
    entity_id = env.entity_id
    revision, state = states.get(entity_id) or (0, account.initial_state(entity_id))
    command = unpack(env.payload)
    ctx = CommandContext(entity_id, env.command_id, env.correlation_id, revision, env.metadata)
    decision = account.decide(state, command, ctx)
    partition = record.partition()
    if not isinstance(decision, Accepted):
        if env.reply_wanted:
            reply = Reply(
                command_id=env.command_id,
                entity_id=entity_id,
                correlation_id=env.correlation_id,
                rejected=Rejected(message=str(decision), current_revision=revision),
            )
            producer.produce(replies_topic, reply.SerializeToString(), partition=partition)
        return
    now = Timestamp()
    now.GetCurrentTime()
    for i, event in enumerate(decision.events, start=1):
        event_type = type_name(event)
        envelope = EventEnvelope(
            entity_id=entity_id,
            revision=revision + i,
            payload=pack(event),
            command_id=env.command_id,
            correlation_id=env.correlation_id,
            timestamp=now,
            metadata=env.metadata,
            source_partition=partition,
            source_offset=record.offset(),
            aggregate="account",
            event_type=event_type,
        )
        headers: list[tuple[str, str | bytes | None]] = [
            ("entity-id", entity_id.encode()),
            ("revision", str(revision + i).encode()),
            ("event-type", event_type.encode()),
            ("command-id", env.command_id.encode()),
            ("correlation-id", env.correlation_id.encode()),
        ]
        producer.produce(
            events_topic,
            envelope.SerializeToString(),
            event_key(entity_id, revision + i),
            partition=partition,
            headers=headers,
        )
    states[entity_id] = (decision.revision, decision.new_state)
    if env.reply_wanted:
        reply = Reply(
            command_id=env.command_id,
            entity_id=entity_id,
            correlation_id=env.correlation_id,
            accepted=AcceptedReply(
                revision=decision.revision, state=pack(decision.new_state), partition=partition
            ),
        )
        producer.produce(replies_topic, reply.SerializeToString(), partition=partition)


if __name__ == "__main__":
    main()
