"""A real multi-node Kafka cluster on loopback: LocalBroker nodes sharing one KRaft quorum.

Each node is a combined broker and controller with its own ports and data directory; all are
formatted with the same cluster id and list every node as a controller voter, so the quorum
and every replicated topic survive one node down (of three). The broker defaults are those of a
production cluster (replication factor 3, min.insync.replicas 2, no unclean leader election),
so that failover can be tested without Docker. Nothing here is used in production.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kes.schemas.errors import BrokerStartError
from kes.topology.localbroker import LocalBroker, free_ports

__all__ = [
    "CONSUMER_OFFSETS",
    "TRANSACTION_STATE",
    "LocalCluster",
    "cluster_config",
    "coordinator_partition",
]

TRANSACTION_STATE = "__transaction_state"
CONSUMER_OFFSETS = "__consumer_offsets"


def cluster_config(size: int) -> dict[str, str]:
    """Broker settings for a cluster of `size` nodes: 3 replicas and 2 in sync from 3 nodes on,
    else one replica per node and 1 in sync (as `kes topics` declares for such a cluster)."""
    replicas = str(min(3, size))
    insync = "2" if size >= 3 else "1"
    return {
        "default.replication.factor": replicas,
        "min.insync.replicas": insync,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": insync,
        "unclean.leader.election.enable": "false",
    }


def coordinator_partition(key: str, partitions: int = 50) -> int:
    """The partition of `__transaction_state` (or `__consumer_offsets`) whose leader coordinates
    this transactional id (or group): Kafka's `Utils.abs(key.hashCode) % partitions`, with
    Java's String.hashCode over UTF-16 code units (50 partitions is the brokers' default; the
    local brokers have 10)."""
    units = key.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


@dataclass
class LocalCluster:
    """`size` Kafka nodes on loopback; `start()` returns the bootstrap list of all of them.

    With no `data_dir` the nodes live in a temporary directory that `stop()` removes; with one,
    in `<data_dir>/node-<id>`, kept across runs. One node can be stopped, killed and started
    again on its data and ports (`node(2).kill()`, `node(2).start()`) while the others run.
    With a `port`, node i's client listener is `port + i - 1`.
    """

    size: int = 3
    data_dir: Path | None = None
    port: int = 0
    heap: str = "512m"
    extra_config: dict[str, str] = field(default_factory=dict)
    nodes: list[LocalBroker] = field(default_factory=list, init=False)
    _tmp: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise BrokerStartError(f"a cluster needs at least one node, not {self.size}")

    @property
    def bootstrap_servers(self) -> str:
        """Every node's `127.0.0.1:<port>`, comma-separated, once started."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def directory(self) -> Path:
        """Where the nodes' directories are."""
        if self.data_dir is not None:
            return self.data_dir
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="kes-cluster-"))
        return self._tmp

    def node(self, node_id: int) -> LocalBroker:
        """The node with this id (1 to size)."""
        return self.nodes[node_id - 1]

    def _make_nodes(self) -> list[LocalBroker]:
        ports = free_ports(2 * self.size)
        clients = [self.port + i for i in range(self.size)] if self.port else ports[: self.size]
        controllers = ports[self.size :]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controllers))
        config = {**cluster_config(self.size), **self.extra_config}
        return [
            LocalBroker(
                data_dir=self.directory / f"node-{i + 1}",
                port=clients[i],
                controller_port=controllers[i],
                heap=self.heap,
                node_id=i + 1,
                voters=voters,
                extra_config=config,
            )
            for i in range(self.size)
        ]

    def start(self, timeout: float = 120.0) -> str:
        """Launch every node, then wait for each (a node is ready only once a quorum of voters
        runs) and until the cluster's metadata lists all of them as brokers."""
        if not self.nodes:
            self.nodes = self._make_nodes()
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:  # from this thread: a node's JVM lives as long as it
                node.launch()
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_for_brokers(self.size, max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self.bootstrap_servers

    def brokers(self, node: LocalBroker | None = None) -> set[int]:
        """The node ids the metadata lists as brokers now, as any node (or `node`) sees it; an
        empty set if none answers."""
        from confluent_kafka.admin import AdminClient

        servers = node.bootstrap_servers if node is not None else self.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
        try:
            return set(admin.list_topics(timeout=5).brokers)
        except Exception:  # KafkaException: no node answers
            return set()

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Wait until every running node's metadata lists exactly `count` brokers (a killed
        node drops out once the controller fences it; a restarted one comes back once it has
        caught up with the cluster's metadata). Each node answers from its own copy of the
        metadata, so one node seeing them all is not enough for a client that asks another."""
        deadline = time.monotonic() + timeout
        while True:
            seen = [len(self.brokers(n)) for n in self.nodes if n.pid is not None]
            if seen and all(found == count for found in seen):
                return
            if time.monotonic() > deadline:
                raise BrokerStartError(f"the nodes list {seen} brokers, not {count} each")
            time.sleep(0.2)

    def leader_of(self, topic: str, partition: int, timeout: float = 10.0) -> LocalBroker:
        """The node that leads this partition now; LookupError if the metadata names none."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        meta = admin.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None or partition not in meta.partitions:
            raise LookupError(f"{topic}[{partition}] is not in the metadata: {meta.error}")
        leader = meta.partitions[partition].leader
        if leader < 1:
            raise LookupError(f"{topic}[{partition}] has no leader now")
        return self.node(leader)

    def coordinator(self, key: str, topic: str = TRANSACTION_STATE) -> LocalBroker:
        """The node that coordinates this transactional id now (or, with `CONSUMER_OFFSETS`,
        this group): the leader of its partition of the topic, hashed over the partitions the
        topic has (confluent-kafka has no describe of transactions)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
        if not partitions:
            raise LookupError(f"{topic} is not in the metadata")
        return self.leader_of(topic, coordinator_partition(key, partitions))

    def under_replicated(self) -> list[str]:
        """Every partition (of every topic) whose in-sync replicas are not all its replicas, as
        the broker asked sees it; `["no answer"]` when no node answers."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            topics = admin.list_topics(timeout=5).topics
        except Exception:  # KafkaException: no node answers
            return ["no answer"]
        return [
            f"{name}[{p}] isr {sorted(meta.isrs)} of {sorted(meta.replicas)}"
            for name, topic in topics.items()
            for p, meta in topic.partitions.items()
            if set(meta.isrs) != set(meta.replicas) or meta.leader < 1
        ]

    def wait_in_sync(self, timeout: float = 120.0) -> None:
        """Wait until every node is a broker again and every partition's replicas are all in
        sync (a restarted node has caught up), asked twice in a row (brokers answer from
        their own metadata, which may lag)."""
        deadline = time.monotonic() + timeout
        self.wait_for_brokers(self.size, timeout)
        agreed = 0
        while agreed < 2:
            lagging = self.under_replicated()
            agreed = 0 if lagging else agreed + 1
            if lagging and time.monotonic() > deadline:
                raise BrokerStartError(f"{len(lagging)} partitions out of sync: {lagging[:3]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node at once (one by one, the last would wait for a quorum that is gone)."""
        if self.nodes:
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                for _ in pool.map(lambda node: node.stop(timeout), self.nodes):
                    pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self.nodes = []
