"""The Quix Streams peer: the bank behavior's own `decide` in a stateful Quix app, exactly-once.

Runs in its own virtualenv (Quix pins its confluent-kafka), with the project root on PYTHONPATH
for the pure core only (`kes.examples.bank`, `schemas`: protobuf, no Kafka client). Per command:
decode the envelope, load the account from Quix's RocksDB state (JSON, Quix's default
serialisation), decide, store it back, and emit one encoded EventEnvelope per event. Quix commits
its checkpoint (state changelog, output, offsets) in one transaction every `commit_interval`
seconds.

Run: `python bench/quix_app.py BOOTSTRAP COMMANDS EVENTS GROUP STATE_DIR COMMIT_INTERVAL`
until SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from quixstreams import Application, State

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, pack, type_name, unpack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.decision import Accepted, CommandContext


def handle(value: bytes, state: State) -> list[bytes]:
    """One command: the events it produced, encoded (none when rejected)."""
    env = decode_command(value, None)
    entity_id = env.entity_id
    stored = state.get("account")
    if stored is None:
        revision, current = 0, account.initial_state(entity_id)
    else:
        revision, owner, balance, is_open = stored
        current = bank_pb2.Account(account_id=entity_id, owner=owner, balance=balance, open=is_open)
    ctx = CommandContext(entity_id, env.command_id, env.correlation_id, revision, env.metadata)
    decision = account.decide(current, unpack(env.payload), ctx)
    if not isinstance(decision, Accepted):
        return []
    new = decision.new_state
    state.set("account", [decision.revision, new.owner, new.balance, new.open])
    now = Timestamp()
    now.GetCurrentTime()
    out = []
    for i, event in enumerate(decision.events, start=1):
        envelope = EventEnvelope(
            entity_id=entity_id,
            revision=revision + i,
            payload=pack(event),
            command_id=env.command_id,
            correlation_id=env.correlation_id,
            timestamp=now,
            metadata=env.metadata,
            aggregate="account",
            event_type=type_name(event),
        )
        out.append(envelope.SerializeToString())
    return out


def main(argv: list[str]) -> None:
    bootstrap, commands, events, group, state_dir, commit_interval = argv
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        commit_interval=float(commit_interval),
        loglevel="WARNING",
    )
    source = app.topic(commands, key_deserializer="str", value_deserializer="bytes")
    sink = app.topic(events, key_serializer="str", value_serializer="bytes")
    sdf: Any = app.dataframe(source)
    sdf = sdf.apply(handle, stateful=True, expand=True)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
