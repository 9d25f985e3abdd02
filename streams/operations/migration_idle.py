"""Whether an aggregate's topic set is idle enough to migrate (`kes topics migrate`, step 3).

A migration copies what the old set holds at one moment, so nothing may write to it meanwhile:
the workers' groups have no members (a stopped static member stays one for its session
timeout, so this waits), no transaction is open on its topics, and every command on its
commands topic is applied (the later of the checkpoints' and the groups' committed offsets);
commands deleted by retention before any worker applied them are refused too (`kes
skip-deleted` decides those on the old set first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from kes.schemas.errors import MigrationError
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.streams.kafka.readback import read_records
from kes.streams.kafka.watermarks import watermarks
from kes.streams.operations.migration import SourceState
from kes.topology.admin import admin_result
from kes.topology.layout import AggregateTopics

__all__ = ["require_idle"]


def require_idle(
    source: AggregateTopics,
    groups: set[str],
    config: Mapping[str, Any],
    progress: Callable[[str], None],
    *,
    keys: bool,
    wait: float,
    timeout: float,
) -> None:
    """Raise MigrationError unless the old set is idle: `groups` (the workers' groups) have no
    members and no transaction is open on its topics (`keys`: its keys topic too) within `wait`
    seconds, and every command on its commands topic is applied."""
    deadline = time.monotonic() + wait
    admin = AdminClient({**config})
    while True:
        busy = _members(admin, sorted(groups), timeout)
        busy += _open_transactions(source, config, keys)
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(1)
    if busy:
        raise MigrationError(
            "the old set is not idle: " + "; ".join(busy) + ". Stop the producers, let the "
            "workers apply what is queued (`kes lag` shows 0, or 1 per partition a process "
            "runner wrote to: its commit marker), stop every worker, and migrate"
        )
    lag = _unapplied(source, sorted(groups), config)
    if lag:
        waiting = ", ".join(f"partition {p}: {n}" for p, n in sorted(lag.items()))
        raise MigrationError(
            f"{source.commands} holds commands no worker has applied ({waiting}): start the "
            "workers on the old set until these are applied, stop them, and migrate"
        )
    progress(f"{source.name}: the old set is idle (groups {', '.join(sorted(groups))})")


def _members(admin: AdminClient, groups: list[str], timeout: float) -> list[str]:
    busy = []
    for group, future in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
        description = admin_result(future, f"describe group {group}", timeout)
        if description.members:  # a group no one joined is described as DEAD, no members
            busy.append(f"group {group!r} has {len(description.members)} member(s)")
    return busy


def _open_transactions(source: AggregateTopics, config: Mapping[str, Any], keys: bool) -> list[str]:
    """Partitions whose last stable offset is below their high watermark (a transaction open)."""
    found = []
    stable = Consumer({**config, "group.id": "kes-migrate", "isolation.level": "read_committed"})
    raw = Consumer({**config, "group.id": "kes-migrate", "isolation.level": "read_uncommitted"})
    try:
        topics = [source.commands, source.events, source.snapshots]
        for topic in [*topics, source.keys] if keys else topics:
            committed = watermarks(stable, topic, source.partitions)
            written = watermarks(raw, topic, source.partitions)
            open_ = [p for p in committed if committed[p][1] < written[p][1]]
            if open_:
                found.append(f"a transaction is open on {topic} partitions {open_}")
    finally:
        stable.close()
        raw.close()
    return found


def _unapplied(
    source: AggregateTopics, groups: list[str], config: Mapping[str, Any]
) -> dict[int, int]:
    """Commands at or past the applied offset (the later of the checkpoint's and the groups'
    committed ones), per commands partition that has any."""
    state = SourceState()
    for record in read_records(source.snapshots, source.partitions, config):
        if record.key == CHECKPOINT_KEY:
            state.changelog(record.partition, record.key, record.value, record.headers)
    applied = dict(state.next_commands)
    for group in groups:
        reader = Consumer({**config, "group.id": group, "isolation.level": "read_committed"})
        try:
            asked = [TopicPartition(source.commands, p) for p in range(source.partitions)]
            for tp in reader.committed(asked, timeout=30):
                applied[tp.partition] = max(applied.get(tp.partition, -1), tp.offset)
        finally:
            reader.close()
    lag: dict[int, int] = {}
    reader = Consumer(
        {
            **config,
            "group.id": "kes-migrate",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = watermarks(reader, source.commands, source.partitions)
        todo = {p for p, (_, high) in ends.items() if high > max(applied.get(p, 0), 0)}
        deleted = sorted(p for p in todo if max(applied.get(p, 0), 0) < ends[p][0])
        if deleted:
            raise MigrationError(
                f"{source.commands} partitions {deleted}: retention deleted commands no worker "
                "applied; decide with `kes skip-deleted` on the old set first"
            )
        reader.assign([TopicPartition(source.commands, p, max(applied.get(p, 0), 0)) for p in todo])
        while todo:
            msg = reader.poll(10)
            if msg is None:
                raise MigrationError(f"no progress reading {source.commands}")
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                todo.discard(msg.partition() or 0)
            elif error is not None:
                raise MigrationError(f"reading {source.commands}: {error}")
            else:
                lag[msg.partition() or 0] = lag.get(msg.partition() or 0, 0) + 1
    finally:
        reader.close()
    return lag
