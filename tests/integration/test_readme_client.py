"""The README's client example runs as written, against a real worker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.workers import AppCluster
from tests.readme import python_block


def test_the_client_example_runs_against_a_worker(
    app_cluster: Callable[..., AppCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    for name, value in cluster.env().items():
        monkeypatch.setenv(name, value)
    exec(compile(python_block("CommandClient"), "README.md", "exec"), {})
