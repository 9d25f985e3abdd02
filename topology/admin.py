"""Plan, apply and describe an aggregate's topic layout against a cluster (confluent-kafka admin).

The client config is passed through untouched, so SASL and TLS settings reach the AdminClient.
`apply` only ever creates missing topics and sets declared config keys; it never changes a
partition count or replication factor, and never touches a config key kes does not declare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection

# confluent_kafka.admin re-exports these without an __all__ entry, which strict mypy rejects.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from kes.schemas.errors import AdminError, ConfigurationError, TopologyError
from kes.topology.layout import AggregateTopics, TopicSpec
from kes.topology.plans import ConfigDrift, Plan, TopicCheck, TopicState

__all__ = [
    "DEFAULT_TIMEOUT",
    "admin_result",
    "apply",
    "describe",
    "plan",
    "replication_for",
    "run_topics",
    "verify_layout",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for any one admin request, and for created topics to get leaders."""

Topics = AggregateTopics | Sequence[TopicSpec]


def plan(
    topics: Topics, client_config: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> Plan:
    """Compare the declared topics with the cluster; changes nothing."""
    return _inspect(_admin(client_config), _specs(topics), timeout)


def apply(
    topics: Topics, client_config: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> Plan:
    """Make the cluster match the declaration where that is safe, and report the rest.

    1. Inspect the cluster.
    2. Create the missing topics with their declared configs (one created meanwhile by someone
       else, TOPIC_ALREADY_EXISTS, is simply inspected like any other).
    3. Wait until every created topic is in the metadata with a leader for every partition.
    4. Set drifted declared config keys with incremental_alter_configs (SET, declared keys only).
    5. Inspect again, until what was created and set reads back (on a cluster each broker
       answers from its own metadata), and return that plan, with what was created and
       changed; partition-count and replication mismatches remain in `problems`.

    Idempotent: a second apply creates and changes nothing.
    """
    admin = _admin(client_config)
    specs = _specs(topics)
    before = _inspect(admin, specs, timeout)
    created = _create(admin, before.to_create, timeout)
    if before.to_create:
        _await_leaders(admin, [s.name for s in before.to_create], timeout)
    altered = _alter(admin, before.checks, timeout)
    after = _settle(admin, specs, created, altered, timeout)
    return Plan(after.checks, created=tuple(created), altered=tuple(altered))


def describe(
    topics: Topics, client_config: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """The layout as it is on the cluster: per topic partitions, replication, declared keys."""
    return _describe(topics, _inspect(_admin(client_config), _specs(topics), timeout))


def verify_layout(
    topics: Topics, client_config: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Raise TopologyError naming every missing topic and every mismatch a worker must not run
    with (partition counts, cleanup policies); log the others (replication factor,
    `min.insync.replicas`, retention) as warnings: they are the operator's choice."""
    found = plan(topics, client_config, timeout=timeout)
    problems = [f"{s.name}: missing (run `kes topics apply`)" for s in found.to_create]
    problems += found.blocking
    if problems:
        raise TopologyError(problems)
    for line in found.problems:
        log.warning("topic layout: %s (not what is declared; the worker runs anyway)", line)


def replication_for(client_config: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT) -> int:
    """The replication factor the cluster can hold: 3 with three brokers or more, else one
    replica per broker (Settings.topics then declares min.insync.replicas 2 from 3 on, else 1)."""
    try:
        brokers = len(_admin(client_config).list_topics(timeout=timeout).brokers)
    except KafkaException as exc:
        raise AdminError(f"listing the cluster's brokers: {exc.args[0]}") from exc
    return max(1, min(3, brokers))


def run_topics(action: str, topics: AggregateTopics, client_config: dict[str, str]) -> int:
    """`kes topics plan|apply|describe`: print the result; 0 when the layout is (or can be) right.

    plan: 1 on any mismatch of an existing topic, 0 when topics are only missing.
    apply: 1 when problems remain (a partition or replication mismatch is never fixed).
    describe: 1 when the cluster does not match the declaration.
    """
    if action == "plan":
        result = plan(topics, client_config)
        print(result.render())
        return 1 if result.problems else 0
    if action == "apply":
        result = apply(topics, client_config)
        print(result.render())
        return 1 if result.problems or result.to_create else 0
    if action == "describe":
        result = _inspect(_admin(client_config), topics.specs(), DEFAULT_TIMEOUT)
        print(_describe(topics, result))
        return 0 if result.ok else 1
    raise ConfigurationError(f"unknown topics action {action!r}: use plan, apply or describe")


def _specs(topics: Topics) -> list[TopicSpec]:
    return topics.specs() if isinstance(topics, AggregateTopics) else list(topics)


def _admin(client_config: Mapping[str, str]) -> AdminClient:
    if "bootstrap.servers" not in client_config:
        raise ConfigurationError("client config has no bootstrap.servers: set the broker address")
    return AdminClient(dict(client_config))


def _code(exc: BaseException | None) -> object:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def admin_result(future: Future[Any], what: str, timeout: float) -> Any:
    """An admin request's result; a failure or a time-out is one AdminError naming `what`."""
    try:
        return future.result(timeout)
    except KafkaException as exc:
        raise AdminError(f"{what}: {exc.args[0] if exc.args else exc}") from exc
    except TimeoutError as exc:
        raise AdminError(
            f"{what}: no answer within {timeout:g}s; is the cluster reachable?"
        ) from exc


def _describe_topics(admin: AdminClient, names: list[str], timeout: float) -> dict[str, TopicState]:
    """Partitions, replication and leaders of the named topics that exist."""
    if not names:
        return {}
    futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
    states: dict[str, TopicState] = {}
    for name, future in futures.items():
        try:
            desc = future.result(timeout)
        except KafkaException as exc:
            if _code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise AdminError(f"describing topic {name}: {exc.args[0]}") from exc
        except TimeoutError as exc:
            raise AdminError(
                f"describing topic {name}: no answer within {timeout:g}s; is the cluster reachable?"
            ) from exc
        partitions = desc.partitions
        states[name] = TopicState(
            name=name,
            partitions=len(partitions),
            replication_factor=min((len(p.replicas) for p in partitions), default=0),
            leaderless=tuple(p.id for p in partitions if p.leader is None),
        )
    return states


_TRANSIENT = frozenset(
    {
        KafkaError._DESTROY_BROKER,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_CONTROLLER,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)


def _transient(exc: AdminError) -> bool:
    """Whether asking again can succeed: librdkafka retires a bootstrap broker's connection once
    it has learned the cluster's brokers, failing what was in flight on it with _DESTROY_BROKER,
    and a broker restarting or a controller moving fails a request the same way."""
    cause = exc.__cause__
    if not (isinstance(cause, KafkaException) and cause.args):
        return False
    error = cause.args[0]
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def _inspect(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> Plan:
    """The cluster's view of `specs`; a read, so a transient failure is asked again until
    `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _inspect_once(admin, specs, timeout)
        except AdminError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
            log.info("topic layout: %s; asking again", exc)
            time.sleep(0.2)


def _inspect_once(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> Plan:
    states = _describe_topics(admin, [s.name for s in specs], timeout)
    resources = {
        s.name: ConfigResource(ResourceType.TOPIC, s.name) for s in specs if s.name in states
    }
    futures = (
        admin.describe_configs(list(resources.values()), request_timeout=timeout)
        if resources
        else {}
    )
    checks = []
    for spec in specs:
        state = states.get(spec.name)
        if state is not None:
            entries = _configs(futures[resources[spec.name]], spec.name, timeout)
            if entries is None:
                state = None  # missing, as far as the broker asked for its configs knows
            else:
                config = {key: _value(entries.get(key)) for key in spec.config}
                state = TopicState(
                    state.name, state.partitions, state.replication_factor, config, state.leaderless
                )
        checks.append(TopicCheck(spec, state))
    return Plan(tuple(checks))


def _configs(future: Future[Any], name: str, timeout: float) -> dict[str, Any] | None:
    """A topic's config entries; None when the broker asked has not heard of the topic yet (on
    a cluster, the broker that described it may not be the one asked for its configs)."""
    try:
        entries = admin_result(future, f"describing configs of {name}", timeout)
    except AdminError as exc:
        if _code(exc.__cause__) == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    assert isinstance(entries, dict)
    return entries


def _value(entry: object) -> str | None:
    return entry.value if isinstance(entry, ConfigEntry) else None


def _create(admin: AdminClient, missing: list[TopicSpec], timeout: float) -> list[str]:
    if not missing:
        return []
    new = [
        NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in missing
    ]
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise AdminError(f"creating topic {name}: {exc.args[0]}") from exc
        created.append(name)
    return sorted(created, key=[s.name for s in missing].index)


def _await_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = _describe_topics(admin, names, timeout)
        except AdminError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
            states = {}
        waiting = [
            n for n in names if n not in states or states[n].leaderless or not states[n].partitions
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise AdminError(
                f"created topics have no leader for every partition after {timeout:g}s: "
                + ", ".join(waiting)
            )
        time.sleep(0.1)


def _alter(
    admin: AdminClient, checks: Sequence[TopicCheck], timeout: float
) -> list[tuple[str, ConfigDrift]]:
    drifted = [c for c in checks if c.drift]
    if not drifted:
        return []
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            c.spec.name,
            incremental_configs=[
                ConfigEntry(d.key, d.wanted, incremental_operation=AlterConfigOpType.SET)
                for d in c.drift
            ],
        )
        for c in drifted
    ]
    futures = admin.incremental_alter_configs(resources, request_timeout=timeout)
    for resource, future in futures.items():
        admin_result(future, f"setting configs of {resource.name}", timeout)
    return [(c.spec.name, d) for c in drifted for d in c.drift]


def _settle(
    admin: AdminClient,
    specs: list[TopicSpec],
    created: list[str],
    altered: list[tuple[str, ConfigDrift]],
    timeout: float,
) -> Plan:
    """Inspect until the topics just created and the configs just set read back: brokers apply
    them asynchronously, and on a cluster each broker answers from its own metadata."""
    deadline = time.monotonic() + timeout
    pending = {(name, d.key) for name, d in altered}
    while True:
        result = _inspect(admin, specs, timeout)
        lagging = {(c.spec.name, d.key) for c in result.checks for d in c.drift} & pending
        unseen = {s.name for s in result.to_create} & set(created)
        if not (lagging or unseen) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def _describe(topics: Topics, result: Plan) -> str:
    lines = []
    for check in result.checks:
        spec, actual = check.spec, check.actual
        if actual is None:
            lines.append(f"{spec.name}: missing (declared {spec.partitions} partitions)")
            continue
        lines.append(
            f"{spec.name}: {actual.partitions} partitions, "
            f"replication factor {actual.replication_factor}"
        )
        for key, wanted in spec.config.items():
            value = actual.config.get(key)
            mark = "" if value == wanted else f"   (declared {wanted})"
            lines.append(f"    {key} = {value}{mark}")
    lines.append(_partition_check(topics, result))
    return "\n".join(lines)


def _partition_check(topics: Topics, result: Plan) -> str:
    counts = {c.spec.name: c.actual.partitions for c in result.checks if c.actual is not None}
    wrong = [
        f"{c.spec.name} has {counts[c.spec.name]}, declared {c.spec.partitions}"
        for c in result.checks
        if c.spec.name in counts and counts[c.spec.name] != c.spec.partitions
    ]
    if isinstance(topics, AggregateTopics):
        keyed = [topics.commands, topics.events, topics.snapshots]
        shown = ", ".join(f"{n.rsplit('.', 1)[1]} {counts.get(n, '-')}" for n in keyed)
        together = len({counts.get(n) for n in keyed}) == 1 and topics.commands in counts
        head = f"partition check: {shown}: " + (
            "co-partitioned" if together else "NOT co-partitioned"
        )
    else:
        head = "partition check"
    if wrong:
        return f"{head}; wrong counts: " + "; ".join(wrong)
    return f"{head}; every existing topic has its declared count"
