"""Dead letters an operator can read, explain and redrive: what `kes dlq` does.

A dead letter keeps the original record byte for byte with where it came from and why it could
not be processed (`kes.v1.DeadLetter`). Redriving puts chosen commands back on the topic
and partition they came from, unchanged (same key, value, headers, so the same command id) plus
a `kes-redriven-from` header: a command that was fixed by a new deployment (a handler bug, a
payload type now known) is decided then; one that fails again is dead-lettered again. A
dead-lettered command left no outcome, so a redrive is decided anew, never answered as a replay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from google.protobuf import json_format

from kes.schemas.codec import decode_command, decode_dead_letter
from kes.schemas.errors import DecodeError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import DeadLetter
from kes.streams.kafka.readback import read_records

__all__ = [
    "REDRIVEN_HEADER",
    "DeadLetterRecord",
    "explain",
    "read_dead_letters",
    "redrive",
    "select",
]

REDRIVEN_HEADER = "kes-redriven-from"
"""Header of a redriven record: its dead letter, `<dlq topic>:<partition>@<offset>`."""

_TRUNCATED = "(original value truncated"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One dead letter and where it lies on its dead-letter topic."""

    topic: str
    partition: int
    offset: int
    letter: DeadLetter

    @property
    def where(self) -> str:
        """`partition@offset` on the dead-letter topic: how `show` and `redrive --at` name it."""
        return f"{self.partition}@{self.offset}"

    @property
    def redrivable(self) -> bool:
        """False when the original value was cut to fit the dead letter (it cannot be resent)."""
        return _TRUNCATED not in self.letter.error and bool(self.letter.topic)

    def line(self) -> str:
        """One line for `kes dlq list`."""
        when = self.letter.timestamp.ToJsonString() if self.letter.timestamp.seconds else "-"
        key = self.letter.original_key.decode("utf-8", "replace")[:40]
        error = " ".join(self.letter.error.split())[:100]
        return (
            f"{self.where:>10}  {when}  {self.letter.reason:<18} "
            f"{self.letter.topic}[{self.letter.partition}]@{self.letter.offset}  key={key!r}  "
            f"{error}"
        )


def read_dead_letters(
    topic: str, client_config: Mapping[str, Any], timeout: float = 10.0
) -> list[DeadLetterRecord]:
    """Every committed dead letter on `topic`, partition by partition, oldest first.

    Raises KesError when the topic does not exist.
    """
    metadata = AdminClient(dict(client_config)).list_topics(timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise KesError(f"{topic}: no such topic (is the aggregate or projection named right?)")
    out = []
    for record in read_records(topic, len(found.partitions), client_config, timeout=timeout):
        try:
            letter = decode_dead_letter(record.value)
        except DecodeError:
            continue  # not a dead letter kes wrote: nothing to explain or redrive
        out.append(DeadLetterRecord(topic, record.partition, record.offset, letter))
    return out


def explain(record: DeadLetterRecord) -> dict[str, Any]:
    """A dead letter as a person reads it: where from, why, and the command if it decodes."""
    letter = record.letter
    headers = [(h.key, h.value) for h in letter.headers]
    shown: dict[str, Any] = {
        "dead_letter": f"{record.topic}:{record.where}",
        "reason": letter.reason,
        "error": letter.error,
        "at": letter.timestamp.ToJsonString() if letter.timestamp.seconds else None,
        "from": f"{letter.topic}[{letter.partition}]@{letter.offset}",
        "key": letter.original_key.decode("utf-8", "replace"),
        "headers": {k: v.decode("utf-8", "replace") for k, v in headers},
        "value_bytes": len(letter.original_value),
        "redrivable": record.redrivable,
    }
    try:
        env = decode_command(letter.original_value, headers)
        shown["command"] = json.loads(json_format.MessageToJson(env))
    except DecodeError as exc:
        shown["command"] = None
        shown["decode_error"] = exc.detail
        shown["value_head"] = letter.original_value[:200].decode("utf-8", "replace")
    except KeyError:  # a payload type this process does not know; the envelope is still shown
        shown["command"] = None
    return shown


def redrive(
    records: Sequence[DeadLetterRecord],
    client_config: Mapping[str, Any],
    *,
    dry_run: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Put each dead letter's original record back where it came from; one line per record.

    Records whose value was truncated are skipped (said so). With `dry_run`, only the lines.
    Raises KesError when the broker refuses a record (those before it may have been written).
    """
    lines = []
    producer = None if dry_run else Producer({**client_config, "enable.idempotence": True})
    failed: list[KafkaError] = []

    def done(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    for record in records:
        letter = record.letter
        target = f"{letter.topic}[{letter.partition}]"
        if not record.redrivable:
            lines.append(f"{record.where}: skipped: the original value was truncated")
            continue
        lines.append(f"{record.where}: {'would redrive' if dry_run else 'redriven'} to {target}")
        if producer is None:
            continue
        headers: list[tuple[str, str | bytes | None]] = [(h.key, h.value) for h in letter.headers]
        headers.append((REDRIVEN_HEADER, f"{record.topic}:{record.where}".encode()))
        producer.produce(
            letter.topic,
            letter.original_value,
            letter.original_key or None,
            partition=letter.partition,
            headers=headers,
            on_delivery=done,
        )
    if producer is not None and (producer.flush(timeout) or failed):
        raise KesError(f"redrive: not every record was written: {failed[:1] or 'timed out'}")
    return lines


def select(
    records: Iterable[DeadLetterRecord], *, at: Sequence[str] = (), reason: str | None = None
) -> list[DeadLetterRecord]:
    """The records named by `at` (`partition@offset`), else all, then those with `reason`."""
    chosen = [r for r in records if not at or r.where in at]
    return [r for r in chosen if reason is None or r.letter.reason == reason]
