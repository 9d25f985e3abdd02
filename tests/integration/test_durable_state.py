"""A durable-state aggregate through real Kafka: the bank's `profile` (kes.examples.bank.profiles).

Workers run with KES_SNAPSHOT_EVERY=10, which a durable-state aggregate ignores: each accepted
change is snapshotted in its transaction. A worker is SIGKILLed twice mid-stream and restarted
(warm, then beside a cold one); afterwards every command's one outcome is what the pure
behavior decides for the commands in order, there is one change record per accepted change
(revisions 1..n, no key twice), the changelog's latest record per entity is the state, the
events topic is declared delete with the retention, `kes verify` passes, and a projection over
the changes sees each change once.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import Message

from kes.examples.bank.profiles import DirectoryRow, directory, profile
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, decode_snapshot, unpack
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.streams.cli import main
from kes.streams.client.client import state_of
from kes.streams.config.durablestate import layout_of
from kes.streams.config.settings import Settings
from kes.streams.core.decision import Accepted, CommandContext
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.streams.cycle.snapshotpolicy import EVENTS_FROM_HEADER
from kes.streams.kafka.readback import read_records
from kes.streams.projections.projector import Projector
from kes.topology.admin import plan
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster

APP = "kes.examples.bank.profiles"
EVERY = {"KES_SNAPSHOT_EVERY": "10"}  # ignored by a durable-state aggregate

Profiles = dict[str, list[bank_pb2.Profile]]
"""Each entity's states after each accepted change, revision 1 first."""


def profile_commands(n: int, customers: int, seed: int) -> list[tuple[str, Message]]:
    """n commands over `customers` profiles: sets and email changes, some of them invalid (a
    bad email, an empty name, a change before any set, the same email again)."""
    rng = random.Random(seed)
    ids = [f"cust-{i:04d}" for i in range(customers)]
    out: list[tuple[str, Message]] = []
    for _ in range(n):
        customer = rng.choice(ids)
        roll = rng.random()
        email = f"{customer}.{rng.randint(0, 5)}@example.com"
        if roll < 0.3:
            name = "" if rng.random() < 0.1 else f"Name {rng.randint(0, 99)}"
            out.append((customer, bank_pb2.SetProfile(name=name, email=email)))
        elif roll < 0.9:
            out.append((customer, bank_pb2.ChangeEmail(email=email)))
        else:
            out.append((customer, bank_pb2.ChangeEmail(email="not-an-address")))
    return out


def expected(commands: list[tuple[str, Message]]) -> tuple[list[Accepted | None], Profiles]:
    """Each command's decision by the pure behavior, in order per entity (None: rejected),
    and each entity's states after each accepted change, revision 1 first."""
    states: Profiles = defaultdict(list)
    decisions: list[Accepted | None] = []
    for entity_id, command in commands:
        history = states[entity_id]
        state = history[-1] if history else profile.initial_state(entity_id)
        ctx = CommandContext(entity_id=entity_id, revision=len(history))
        decision = profile.decide(state, command, ctx)
        if isinstance(decision, Accepted):
            history.append(decision.new_state)
            decisions.append(decision)
        else:
            decisions.append(None)
    return decisions, states


def test_profiles_survive_sigkills_with_one_change_record_per_change(
    app_cluster: Callable[..., AppCluster],
    in_process: Callable[[Projector], Projector],
    tmp_path: Path,
) -> None:
    cluster = app_cluster(APP, ["profile"], partitions=4)
    settings = cluster.settings
    topics = layout_of(settings, profile)
    bootstrap = settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    [events_check] = [c for c in plan(topics, config).checks if c.spec.name == topics.events]
    assert events_check.actual is not None
    assert events_check.actual.config["cleanup.policy"] == "delete"
    assert events_check.actual.config["retention.ms"] == str(7 * 24 * 3600 * 1000)

    commands = profile_commands(3_000, customers=120, seed=19)
    worker = cluster.worker("w1", **EVERY)
    worker.wait_ready()
    ids = produce(bootstrap, topics, commands[:1_000])
    time.sleep(0.4)  # mid-stream, transactions open
    worker.kill()
    worker.start().wait_ready(90)  # warm: its own data dir
    ids += produce(bootstrap, topics, commands[1_000:2_000])
    time.sleep(0.4)
    worker.kill()
    cold = cluster.worker("w2", **EVERY)  # cold: an empty data dir
    cold.wait_ready(120)
    worker.start().wait_ready(120)  # back beside it: partitions move while commands flow
    ids += produce(bootstrap, topics, commands[2_000:])
    replies = collect_replies(bootstrap, topics, ids, timeout=240)

    # Every command decided once, as the pure behavior decides the commands in order.
    decisions, states = expected(commands)
    assert {"accepted", "rejected"} == {r[0].WhichOneof("outcome") for r in replies.values()}
    for command_id, decision in zip(ids, decisions, strict=True):
        [reply] = replies[command_id]
        _check_reply(reply, decision)

    # One change record per accepted change: revisions 1..n, no key twice, payload = state.
    keys: set[bytes] = set()
    changes: dict[str, list[tuple[int, Message]]] = defaultdict(list)
    last_offsets: dict[int, int] = {}
    for record in read_records(topics.events, topics.partitions, config):
        assert record.key not in keys, record.key
        keys.add(record.key or b"")
        env = decode_event(record.value or b"")
        changes[env.entity_id].append((env.revision, unpack(env.payload)))
        last_offsets[record.partition] = record.offset
    assert changes.keys() == {e for e, h in states.items() if h}
    for entity_id, history in states.items():
        if history:
            assert changes[entity_id] == list(enumerate(history, start=1)), entity_id

    # The changelog's latest record per entity is the state; no checkpoint names a tail.
    latest: dict[str, bytes] = {}
    for record in read_records(topics.snapshots, topics.partitions, config):
        if record.key == CHECKPOINT_KEY:
            assert EVENTS_FROM_HEADER not in dict(record.headers)
        elif record.key and not record.key.startswith(b"\x00") and record.value:
            latest[record.key.decode()] = record.value
    for entity_id, history in states.items():
        if history:
            snapshot = decode_snapshot(latest[entity_id])
            assert (snapshot.revision, unpack(snapshot.state)) == (len(history), history[-1])

    cli = ["-b", bootstrap, "--partitions", "4", "--topic-prefix", settings.topic_prefix]
    assert main(["verify", APP, "profile", "--commands", *cli]) == 0

    # A projection over the changes: each applied once, the latest email per customer.
    reader = Settings.from_env(cluster.env(), data_dir=str(tmp_path / "projection"))
    projector = in_process(Projector(directory, reader))
    projector.wait_for(last_offsets, 90)
    for entity_id, history in states.items():
        if history:
            row = DirectoryRow.decode(projector.store.get(entity_id) or b"")
            assert row == DirectoryRow(history[-1].email, len(history), len(history)), entity_id


def _check_reply(reply: Reply, decision: Accepted | None) -> None:
    if decision is None:
        assert reply.WhichOneof("outcome") == "rejected", reply
        return
    assert reply.WhichOneof("outcome") == "accepted", reply
    assert reply.accepted.revision == decision.revision
    assert state_of(reply, bank_pb2.Profile) == decision.new_state


def test_what_would_fold_durable_state_refuses(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster(APP, ["profile"], partitions=2)
    settings = cluster.settings
    cli = ["-b", settings.bootstrap_servers, "--partitions", "2"]
    cli += ["--topic-prefix", settings.topic_prefix]
    assert main(["topics", "plan", APP, *cli]) == 0  # the declared delete policy is no problem
    assert main(["snapshots", "rebuild", APP, "profile", *cli]) == 1
