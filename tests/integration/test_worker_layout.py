"""A worker refuses to start when the topic layout is wrong for correctness, naming what is
wrong; a replication that differs from the declaration is the operator's choice: a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from kes.topology.admin import replication_for
from tests.fixtures.workers import ROOT, WorkerProcess


def _worker(bootstrap: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KES_TOPIC_PREFIX": prefix,
        "KES_PARTITIONS": "4",
    }
    return subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", "worker", "kes.examples.bank"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_worker_refuses_missing_topics(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("none") + "-"
    done = _worker(kafka_bootstrap, prefix)
    assert done.returncode == 1
    assert f"{prefix}account.commands: missing (run `kes topics apply`)" in done.stderr


def test_worker_refuses_a_partition_mismatch(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("bad") + "-"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KES_TOPIC_PREFIX": prefix}
    apply = ["topics", "apply", "kes.examples.bank", "--partitions", "4"]
    subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", *apply],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([f"{prefix}account.events"])[f"{prefix}account.events"].result(30)
    for _ in range(50):
        if f"{prefix}account.events" not in admin.list_topics(timeout=10).topics:
            break
    new = NewTopic(f"{prefix}account.events", num_partitions=6, replication_factor=1)
    admin.create_topics([new])[f"{prefix}account.events"].result(30)
    done = _worker(kafka_bootstrap, prefix)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("kes: error: topic layout is wrong:")
    assert f"{prefix}account.events" in line and "6" in line and "4" in line


def test_a_replication_the_cluster_does_not_have_is_a_warning_not_a_refusal(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("rf") + "-"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KES_TOPIC_PREFIX": prefix}
    argv = ["topics", "apply", "kes.examples.bank", "--partitions", "2"]
    planned = subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert replication_for({"bootstrap.servers": kafka_bootstrap}) == 1  # one broker here
    assert "all 6 topics as declared" in planned.stdout  # declared RF 1: what the cluster holds
    worker = WorkerProcess(
        "kes.examples.bank",
        {**env, "KES_PARTITIONS": "2", "KES_REPLICATION_FACTOR": "3", "KES_APP_ID": prefix + "a"},
        tmp_path / "w",
        tmp_path / "w.log",
    ).start()
    try:
        worker.wait_ready(60)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert f"{prefix}account.events: replication factor is 1, declared 3" in log
    assert "the worker runs anyway" in log
