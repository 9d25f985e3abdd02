"""verify() folds events through the app's event adapters, as projections and `kes events` do."""

from __future__ import annotations

from collections.abc import Callable

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.core.adapters import EventAdapters
from kes.streams.operations.verify import verify
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_verify_applies_event_adapters(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    commands = [
        ("acc-1", bank_pb2.OpenAccount(owner="a")),
        ("acc-1", bank_pb2.CreditAccount(amount=5)),
    ]
    collect_replies(bootstrap, topics, produce(bootstrap, topics, commands))
    config = {"bootstrap.servers": bootstrap}
    assert verify(account, topics, config).ok

    # An adapter that turns credits into debits: folded through it, the log no longer matches
    # the snapshot, so verify must report it.
    skewed = EventAdapters()

    @skewed.adapter(bank_pb2.AccountCredited)
    def flip(old: bank_pb2.AccountCredited) -> bank_pb2.AccountDebited:
        return bank_pb2.AccountDebited(amount=old.amount, balance=-old.amount)

    checked = verify(account, topics, config, skewed)
    assert checked.states["acc-1"].balance == -5  # type: ignore[attr-defined]
    assert checked.violations == [
        "acc-1: snapshot (revision 2) differs from the fold of the log (revision 2)"
    ]
