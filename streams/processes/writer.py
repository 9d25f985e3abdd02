"""The process runner's transactional producer: a runner cycle in one Kafka transaction.

It is the worker's `TransactionalWriter` (the same transactional id rules, fencing by group
metadata, retries of retriable calls, abort on any non-fatal error, exit on a fatal one),
writing the runner's records instead of a worker's batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from kes.streams.cycle.records import OutRecord
from kes.streams.runtime.transaction import TransactionalWriter, _Delivery, _raise_failed

__all__ = ["ProcessWriter"]


class ProcessWriter(TransactionalWriter):
    """The worker's transactional producer (fencing, retries, abort rules), writing a cycle of
    the process runner instead of a worker's batch."""

    def write_cycle(
        self,
        records: Sequence[OutRecord],
        checkpoints: Sequence[OutRecord],
        offsets: list[TopicPartition],
        group_metadata: Callable[[], Any],
    ) -> list[int]:
        """Write one cycle in one transaction; returns each checkpoint record's offset.

        1. begin the transaction;
        2. send the records (inbox records, commands, process records), then each inbox
           partition's checkpoint record, its batch's last changelog record;
        3. add the consumed offsets with the consumer's group metadata (a stale generation is
           refused here);
        4. commit: all of it becomes visible to read_committed readers at once.
        Raises CycleAbortedError when the transaction was aborted (nothing of it is visible),
        FatalKafkaError when this producer must not go on.
        """
        delivery = _Delivery()
        slots = [-1] * len(checkpoints)
        try:
            self.producer.begin_transaction()
            for record in records:
                self._produce(record, None)
            for i, record in enumerate(checkpoints):
                self._produce(record, delivery.track(slots, i))
            self._call(
                self.producer.send_offsets_to_transaction, offsets, group_metadata(), self.timeout
            )
            self._call(self.producer.commit_transaction, self.timeout)
            self.producer.poll(0)
            _raise_failed(delivery)
        except KafkaException as exc:
            self._failed(exc)
        return slots
