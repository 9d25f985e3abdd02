"""Workers bound to every address (0.0.0.0, as in docker-compose) route /entities by the URL
they advertise: each consumer names itself by it, and the owner of an entity is found from the
group's members. With 0.0.0.0 advertised, every worker took every owner for itself."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

from kes.schemas.bank.v1 import bank_pb2
from kes.streams.config.settings import Settings
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster, WorkerProcess, free_port


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as resp:
            return resp.status, dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.load(exc))


def test_workers_on_every_address_answer_for_any_entity(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    workers = []
    for name in ("w1", "w2"):
        port = free_port()
        env = {
            **cluster.env(),
            "KES_WEB_HOST": "0.0.0.0",
            "KES_WEB_ADVERTISED_URL": f"http://127.0.0.1:{port}",
        }
        worker = WorkerProcess(
            cluster.app, env, cluster.workdir / name, cluster.workdir / f"{name}.log", port
        ).start()
        cluster.workers.append(worker)
        workers.append(worker)
    for worker in workers:
        worker.wait_ready(90)
    accounts = [
        next(f"adv-{i}" for i in range(100) if partition_for(f"adv-{i}", 2) == p) for p in (0, 1)
    ]
    ids = produce(bootstrap, topics, [(a, bank_pb2.OpenAccount(owner=a)) for a in accounts])
    collect_replies(bootstrap, topics, ids, timeout=60)
    served: set[object] = set()
    for account in accounts:
        for worker in workers:
            status, body = _get(worker.web_port, f"/entities/account/{account}")
            assert status == 200, body
            assert body["revision"] == 1 and body["state"]["owner"] == account  # type: ignore[index]
            served.add(body["served_by"])
    assert served == {f"http://127.0.0.1:{w.web_port}" for w in workers}  # each owns one
    assert Settings(web_host="0.0.0.0").advertised_url != "http://0.0.0.0:6066"
