"""kes.streams.operations.outcomes over simulated topics: a clean run passes, each kind of
corruption is named."""

from __future__ import annotations

import dataclasses

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, decode_reply, encode_command, encode_reply, new_command
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.streams.operations.migration import MIGRATED_FROM_HEADER
from kes.streams.operations.outcomes import Outcomes, check_outcomes
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.simulation import Simulation

TOPICS = AggregateTopics("account", partitions=3)


def _command(
    sim: Simulation, entity: str, msg: object, partition: int | None = None, **kw: object
) -> str:
    env = new_command(entity, msg, aggregate="account", **kw)  # type: ignore[arg-type]
    value, headers = encode_command(env)
    p = partition_for(entity, TOPICS.partitions) if partition is None else partition
    sim.append(TOPICS.commands, p, entity.encode(), value, headers)
    return env.command_id


def _world() -> tuple[Simulation, dict[str, str]]:
    sim = Simulation(account, TOPICS)
    ids = {
        "open": _command(sim, "acc-1", bank_pb2.OpenAccount(owner="a"), reply_wanted=True),
        "credit": _command(sim, "acc-1", bank_pb2.CreditAccount(amount=5), reply_wanted=True),
        "quiet": _command(sim, "acc-2", bank_pb2.OpenAccount(owner="b")),
        "bounce": _command(sim, "acc-2", bank_pb2.DebitAccount(amount=10**6), reply_wanted=True),
        "unknown": _command(sim, "acc-3", bank_pb2.AccountOpened(), reply_wanted=True),
    }
    wrong = (partition_for("acc-4", 3) + 1) % 3
    ids["misrouted"] = _command(
        sim, "acc-4", bank_pb2.OpenAccount(owner="d"), partition=wrong, reply_wanted=True
    )
    _command(
        sim, "acc-1", bank_pb2.CreditAccount(amount=1), reply_wanted=True, command_id=ids["credit"]
    )
    sim.append(TOPICS.commands, 0, b"acc-x", b"\x0a\xff\xff garbage")
    sim.append(TOPICS.commands, 1, None, None)
    sim.run()
    return sim, ids


def _check(sim: Simulation, layout: AggregateTopics = TOPICS, **replace: object) -> Outcomes:
    topics = {
        "commands": sim.records(TOPICS.commands),
        "events": sim.records(TOPICS.events),
        "replies": sim.records(TOPICS.replies),
        "dead_letters": sim.records(TOPICS.dlq),
    }
    topics.update(replace)  # type: ignore[arg-type]
    return check_outcomes(layout, "account", sim.next_offsets, **topics)  # type: ignore[arg-type]


def test_every_kind_of_outcome_of_a_clean_run_checks_out() -> None:
    sim, _ = _world()
    found = _check(sim)
    assert found.ok, found.summary()
    assert found.dead_lettered == 3  # garbage, no value, unknown command
    assert found.forwarded == 1
    assert found.replied == 6  # open, credit x2 (one DUPLICATE), bounce, unknown, misrouted copy
    assert found.pending == 0


def test_a_missing_and_a_second_reply_are_violations_naming_the_entity() -> None:
    sim, ids = _world()
    replies = sim.records(TOPICS.replies)
    open_reply = next(r for r in replies if Reply.FromString(r.value).command_id == ids["open"])
    missing = _check(sim, replies=[r for r in replies if r is not open_reply])
    assert not missing.ok and missing.entities == {"acc-1"}
    twice = _check(sim, replies=[*replies, open_reply])
    assert not twice.ok and "acc-1" in twice.entities
    assert any("accepted 2 times" in v for v in twice.violations)


def test_a_missing_dead_letter_forward_or_an_orphan_event_is_a_violation() -> None:
    sim, _ = _world()
    letters = sim.records(TOPICS.dlq)
    assert not _check(sim, dead_letters=letters[1:]).ok
    commands = sim.records(TOPICS.commands)
    copy = [r for r in commands if dict(r.headers).get("kes-forwarded-from") is not None]
    assert len(copy) == 1
    unforwarded = _check(sim, commands=[r for r in commands if r is not copy[0]])
    assert "acc-4" in unforwarded.entities
    orphan = [r for r in commands if r.key == b"acc-2"]
    without_acc2 = _check(sim, commands=[r for r in commands if r not in orphan])
    assert any("not on the topic" in v for v in without_acc2.violations)


def test_records_past_the_checkpoint_are_pending_not_violations() -> None:
    sim, _ = _world()
    _command(sim, "acc-9", bank_pb2.OpenAccount(owner="z"), reply_wanted=True)
    found = _check(sim)
    assert found.ok and found.pending == 1


def test_a_command_id_resent_after_a_poison_outcome_is_two_records_one_outcome_each() -> None:
    """Regression (hypothesis): the checker matched dead letters to command ids, not records."""
    from tests.apps.faulty import account as faulty

    sim = Simulation(faulty, TOPICS)
    _command(sim, "acc-1", bank_pb2.OpenAccount(owner="boom"), command_id="c1")  # handler raises
    _command(sim, "acc-1", bank_pb2.OpenAccount(owner="ann"), command_id="c1")  # a fixed retry
    sim.run()
    assert len(sim.records(TOPICS.dlq)) == 1 and len(sim.records(TOPICS.events)) == 1
    assert _check(sim).ok, _check(sim).violations


def test_a_command_applied_quietly_then_resent_with_a_reply_wanted_is_one_outcome_each() -> None:
    sim = Simulation(account, TOPICS)
    _command(sim, "acc-1", bank_pb2.OpenAccount(owner="a"), command_id="c1")
    _command(sim, "acc-1", bank_pb2.OpenAccount(owner="a"), command_id="c1", reply_wanted=True)
    sim.run()
    found = _check(sim)  # applied by the first; the second is answered DUPLICATE
    assert found.ok, found.summary()
    assert found.replied == 1


def test_another_aggregates_command_is_a_dead_letter_and_its_rejection() -> None:
    sim = Simulation(account, TOPICS)
    _command(sim, "acc-1", bank_pb2.OpenAccount(owner="a"), command_id="c1")
    env = new_command("acc-1", bank_pb2.OpenAccount(), aggregate="other", command_id="c1")
    env.reply_wanted = True
    value, headers = encode_command(env)
    sim.append(TOPICS.commands, partition_for("acc-1", 3), b"acc-1", value, headers)
    sim.run()
    found = _check(sim)
    assert found.ok, found.summary()
    assert (found.dead_lettered, len(sim.records(TOPICS.replies))) == (1, 1)


def test_migrated_events_need_no_command_on_this_topic_set() -> None:
    sim, _ = _world()
    events = sim.records(TOPICS.events)
    copied = [r._replace(headers=[*r.headers, (MIGRATED_FROM_HEADER, b"old[0]@1")]) for r in events]
    empty = {"commands": [], "replies": [], "dead_letters": []}
    assert _check(sim, events=copied, **empty).ok
    unmarked = _check(sim, events=events, **empty)
    assert any("not on the topic" in v for v in unmarked.violations), unmarked.summary()


def test_a_replay_naming_no_events_needs_none_on_the_topic() -> None:
    """A durable-state change deleted by retention before `kes topics migrate`: the migrated
    outcome names no offsets, so its replay has nothing to be checked against; a replay that
    names events must find them, and in an event-sourced aggregate (whose events are kept for
    good) a replay naming none is a violation."""
    sim, ids = _world()
    events = [
        r for r in sim.records(TOPICS.events) if decode_event(r.value).command_id != ids["credit"]
    ]

    def replies(clear: bool) -> list[object]:
        out = []
        for record in sim.records(TOPICS.replies):
            reply = decode_reply(record.value)
            if reply.replay and clear:
                del reply.accepted.event_offsets[:]
            out.append(record._replace(value=encode_reply(reply)))
        return out

    durable = dataclasses.replace(TOPICS, durable_state=True)
    assert _check(sim, durable, events=events, replies=replies(clear=True)).ok
    anywhere_else = _check(sim, events=events, replies=replies(clear=True))  # not durable state
    assert any(f"{ids['credit']}: replayed" in v for v in anywhere_else.violations)
    named = _check(sim, durable, events=events, replies=replies(clear=False))
    assert any(f"{ids['credit']}: replayed" in v for v in named.violations), named.summary()
