"""A real single-node Kafka broker (KRaft, broker + controller in one JVM) from Maven Central jars.

For development and tests on machines without Docker: Maven resolves the broker's runtime
classpath once into its local repository (the result is cached per pom and Kafka version), the
storage is formatted in a directory, and `kafka.Kafka` runs on free loopback ports. The version is
the pom's pin unless `KES_BROKER_VERSION` names another (`4.1.2`: the suite's Kafka 4 leg).
Nothing here is used in production.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from kes.schemas.errors import BrokerStartError

__all__ = ["LocalBroker", "broker_version", "free_ports", "kafka_classpath", "kafka_version"]

_HERE = Path(__file__).parent / "broker"
POM = _HERE / "pom.xml"
LOG4J = _HERE / "log4j.properties"
CLUSTER_ID = "a2VzLWxvY2FsLWJyb2tlcg"  # fixed 22-char base64url id: no tool output to parse
READY_LINE = "Kafka Server started"
VERSION_ENV = "KES_BROKER_VERSION"


def kafka_version() -> str:
    """The Kafka version pinned in the broker pom (the one place it is pinned)."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:  # pragma: no cover - the pom ships with the package
        raise BrokerStartError(f"no <kafka.version> in {POM}")
    return match.group(1)


def broker_version() -> str:
    """The Kafka version the local broker runs: `KES_BROKER_VERSION`, else the pom's pin."""
    wanted = os.environ.get(VERSION_ENV, "").strip()
    if not wanted:
        return kafka_version()
    if not re.fullmatch(r"\d+\.\d+\.\d+", wanted):
        raise BrokerStartError(f"{VERSION_ENV}={wanted!r} is not a Kafka version like 4.1.2")
    return wanted


def _cache_dir(version: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(POM.read_bytes() + version.encode()).hexdigest()[:16]
    return Path(base) / "kes" / "kafka" / digest


def kafka_classpath(timeout: float = 900.0, version: str = "") -> str:
    """The runtime classpath of Kafka `version` (default: `broker_version()`); resolved with
    Maven on first use (the pom's `kafka.version` overridden), then read from a cache.

    Raises BrokerStartError with one line naming the cause (no Maven, Maven offline, ...).
    """
    version = version or broker_version()
    cache = _cache_dir(version)
    cp_file = cache / "classpath.txt"
    if cp_file.exists():
        classpath = cp_file.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
            return classpath
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError("Maven (mvn) is not on PATH: install Maven 3.8+ to fetch the broker")
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(POM, cache / "pom.xml")
    out = cache / "classpath.tmp"
    extra = shlex.split(os.environ.get("KES_MAVEN_ARGS", ""))  # e.g. "-s mirror-settings.xml"
    cmd = [
        mvn, "-q", "-B", *extra, "-f", str(cache / "pom.xml"),
        "dependency:build-classpath", f"-Dkafka.version={version}",
        "-Dmdep.includeScope=runtime", f"-Dmdep.outputFile={out}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerStartError(f"Maven did not resolve the Kafka jars in {timeout:g}s") from None
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
        why = lines[0].strip() if lines else f"exit code {proc.returncode}"
        raise BrokerStartError(
            f"Maven could not resolve the Kafka jars (offline?), version {version}: {why[:300]}"
        )
    out.replace(cp_file)
    return cp_file.read_text().strip()


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all bound at once, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _port_in_use(port: int) -> bool:
    """True while something listens on the port (TIME_WAIT left by a stopped broker is not use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the broker gets SIGTERM when the process that started it dies (even by kill -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class LocalBroker:
    """One Kafka broker process on loopback; `start()` returns its bootstrap address.

    With no `data_dir`, storage lives in a temporary directory that `stop()` removes; with one,
    the data survives `stop()` and a later `start()` on the same directory (a broker restart).
    As one node of a LocalCluster it has its `node_id` and the cluster's `voters`
    (controller.quorum.voters); alone it is node 1 and its own quorum. `version` is the Kafka
    version it runs (default: `broker_version()`, read at launch).
    """

    data_dir: Path | None = None
    port: int = 0
    controller_port: int = 0
    heap: str = "768m"
    node_id: int = 1
    voters: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)
    version: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """`127.0.0.1:<port>` once started."""
        return f"127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path:
        """Where the broker keeps its config, log file and data."""
        if self.data_dir is not None:
            return self.data_dir
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="kes-broker-"))
        return self._tmp

    @property
    def log_file(self) -> Path:
        """The broker's own log (server.log in its directory)."""
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def config(self) -> dict[str, str]:
        """The server.properties this broker runs with."""
        conf = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": (
                self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"
            ),
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.directory / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": "2097152",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        }
        conf.update(self.extra_config)
        return conf

    def start(self, timeout: float = 60.0) -> str:
        """Format storage (idempotent), start the JVM, wait until it answers a metadata request."""
        if self._proc is None:
            self.launch()
            self.wait_ready(timeout)
        return self.bootstrap_servers

    def launch(self) -> None:
        """Format storage (idempotent) and start the JVM without waiting for it (`wait_ready`).

        Call it from the thread that stays alive as long as the broker should: the JVM is told
        to stop when the thread that started it ends (PR_SET_PDEATHSIG is per thread).
        """
        java = shutil.which("java")
        if java is None:
            raise BrokerStartError("Java is not on PATH: install a JDK 17+ to run the local broker")
        for wanted in (self.port, self.controller_port):
            if wanted and _port_in_use(wanted):
                raise BrokerStartError(f"port {wanted} on 127.0.0.1 is already in use")
        spare = iter(free_ports(2))
        self.port = self.port or next(spare)
        self.controller_port = self.controller_port or next(spare)
        self.version = self.version or broker_version()
        classpath = kafka_classpath(version=self.version)
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        props = directory / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        jvm = [java, f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkes.broker.log={self.log_file}"]
        jvm += ["-Dlog4j2.statusLoggerLevel=OFF"]  # 4.x: log4j2 unconfigured (reload4j logs)
        jvm += ["-Djava.awt.headless=true", "-cp", classpath]
        fmt = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c", str(props), "-g"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if fmt.returncode != 0:
            lines = (fmt.stderr or fmt.stdout).strip().splitlines() or ["no output"]
            raise BrokerStartError(f"formatting Kafka storage failed: {lines[-1][:300]}")
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with (directory / "stderr.log").open("wb") as stderr:
            self._proc = subprocess.Popen(
                [*jvm, "-Xms256m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "kafka.Kafka", str(props)],
                stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the launched broker answers a metadata request; stop it if it does not."""
        try:
            self._wait_ready(timeout, self._log_start)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float, seen: int = 0) -> None:
        """Wait for the ready line after byte `seen` of the log (a restart appends to it)."""
        deadline = time.monotonic() + timeout
        if self._proc is None:
            raise BrokerStartError("the broker was not launched")
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(f"the broker exited at start: {self._last_error()}")
            if self.log_file.exists() and READY_LINE in self._log_since(seen):
                break
            time.sleep(0.1)
        else:
            raise BrokerStartError(
                f"the broker did not start within {timeout:g}s: {self._last_error()}"
            )
        from confluent_kafka.admin import AdminClient  # a metadata request: the end-to-end check

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        while True:
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as exc:  # KafkaException: not answering yet
                if time.monotonic() > deadline:
                    raise BrokerStartError(f"the broker does not answer metadata: {exc}") from None
                time.sleep(0.2)

    def _log_since(self, offset: int) -> str:
        with self.log_file.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _last_error(self) -> str:
        text = ""
        for name in ("stderr.log", "server.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if "ERROR" in ln or "Exception" in ln]
        return (errors[0] if errors else "see " + str(self.log_file))[:400]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGTERM runs the broker's shutdown hook), SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the broker (crash tests); its data directory stays."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
