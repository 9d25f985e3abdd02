"""Each peer gets its own virtualenv: Quix Streams pins older confluent-kafka releases than kes.

Environments live under the user's cache (`~/.cache/kes/bench/<name>-<hash>`), keyed by their
requirements, and are created once with the ordinary `python -m venv` and `pip install`. The
peers import only kes's pure core from the project root (protobuf, no Kafka client), so each
environment pins the protobuf runtime the project's generated code was built against.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

__all__ = ["PEERS", "Peer", "ensure"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Peer:
    """A peer's name and the requirements of its environment."""

    name: str
    requirements: tuple[str, ...]

    @property
    def directory(self) -> Path:
        """Where its environment lives (changes when the requirements do)."""
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:12]
        return base / "kes" / "bench" / f"{self.name}-{digest}"

    @property
    def python(self) -> Path:
        """The environment's interpreter."""
        return self.directory / "bin" / "python"

    def env(self) -> dict[str, str]:
        """Process environment for running a peer module from the project root.

        kes is not installed there: a directory of links (`kes/streams` -> the project's
        `streams/`, ...) on PYTHONPATH makes its folders importable under the kes namespace.
        """
        links = self.directory / "namespace"
        for folder in _FOLDERS:
            link = links / "kes" / folder
            if link.is_symlink() and link.readlink() != ROOT / folder:
                link.unlink()  # made for another checkout
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(ROOT / folder, target_is_directory=True)
        path = os.pathsep.join([str(links), str(ROOT)])
        return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


_FOLDERS = ("streams", "topology", "stores", "schemas", "examples")
"""The project's folders installed as kes.<folder>."""


_PROTOBUF = f"protobuf=={version('protobuf')}"
_OTEL = f"opentelemetry-api=={version('opentelemetry-api')}"  # the bank example imports kes
_CRYPTO = f"cryptography=={version('cryptography')}"  # kes.streams.core's keyring
PEERS = {
    "quix": Peer("quix", ("quixstreams==3.28.1", _PROTOBUF, _OTEL, _CRYPTO)),
    "eventsourcing": Peer("eventsourcing", ("eventsourcing==9.5.6", _PROTOBUF, _OTEL, _CRYPTO)),
}


def ensure(peer: Peer) -> Path:
    """Create the peer's environment unless it exists; returns its interpreter."""
    stamp = peer.directory / ".installed"
    if stamp.exists():
        return peer.python
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not kes's own metadata
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(peer.directory)], check=True)
    subprocess.run(
        [str(peer.python), "-m", "pip", "install", "-q", *peer.requirements],
        check=True,
        timeout=900,
        env=env,
    )
    stamp.write_text("\n".join(peer.requirements) + "\n")
    return peer.python
