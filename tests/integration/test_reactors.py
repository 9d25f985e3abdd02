"""A reactor's side effects are in the world: a fresh volume resumes from the group's committed
offset in Kafka, never from the beginning, and a rebuild refires only when asked to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import KesError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.stores.readmodels import RocksDBReadModelStore
from kes.streams.config.settings import Settings
from kes.streams.projections.admin import rebuild
from kes.streams.projections.projection import Reactor
from kes.streams.projections.projector import Projector, store_path
from kes.topology.admin import apply
from tests.fixtures.standins import EventWriter, event


def _committed(settings: Settings, reactor: Reactor) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": reactor.group_id(settings.topic_prefix),
        }
    )
    try:
        (tp,) = consumer.committed([TopicPartition(settings.topics("account").events, 0)], 30)
        return int(tp.offset)
    finally:
        consumer.close()


def _run_until(reactor: Reactor, settings: Settings, end: int, effects: list[str]) -> None:
    """Run a projector for `reactor` until the group's committed offset reaches `end`."""
    projector = Projector(reactor, settings)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while _committed(settings, reactor) < end:
            assert time.monotonic() < deadline, (effects, _committed(settings, reactor))
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)


def test_a_reactor_on_a_fresh_volume_resumes_from_the_committed_offset(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        topic_prefix=unique_name("t") + "-",
        data_dir=tmp_path / "host-1",
        session_timeout_ms=6000,
    )
    apply(settings.topics("account"), {"bootstrap.servers": kafka_bootstrap})
    effects: list[str] = []
    reactor = Reactor("mailer", ["account"])

    @reactor.on(bank_pb2.AccountOpened)
    def mail(event: EventEnvelope, payload: Message) -> None:
        effects.append(event.entity_id)

    writer = EventWriter(kafka_bootstrap, settings.topics("account"))
    writer.write(event("a", 1, bank_pb2.AccountOpened(owner="Ann")))
    writer.write(event("b", 1, bank_pb2.AccountOpened(owner="Bob")))
    _run_until(reactor, settings, 4, effects)  # two events, two commit markers
    assert effects == ["a", "b"]

    writer.write(event("c", 1, bank_pb2.AccountOpened(owner="Cy")))
    elsewhere = replace(settings, data_dir=tmp_path / "host-2")  # a fresh volume
    _run_until(reactor, elsewhere, 6, effects)
    assert effects == ["a", "b", "c"]  # a and b were not mailed again

    store = RocksDBReadModelStore(store_path(reactor, elsewhere))
    try:
        with pytest.raises(KesError, match="--refire"):
            rebuild(reactor, elsewhere, store)
        restart = rebuild(reactor, elsewhere, store, refire=True)
    finally:
        store.close()
    assert restart == {(settings.topics("account").events, 0): 0}
    _run_until(reactor, elsewhere, 6, effects)
    assert effects == ["a", "b", "c", "a", "b", "c"]  # asked for: every effect again
