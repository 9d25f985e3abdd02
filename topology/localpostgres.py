"""A real PostgreSQL server in a temporary directory, for tests and benchmarks.

Debian's `postgresql` package puts its server under /usr/lib/postgresql/<version>/bin (not on
the PATH); the newest version found there runs. initdb refuses to run as root, so when the
process is root the directory belongs to the `postgres` user and the server binaries run as it.
The server listens on 127.0.0.1 at a free port and trusts every local connection (user `kes`).
Nothing here is used in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from kes.schemas.errors import KesError
from kes.topology.localbroker import free_ports

__all__ = ["USER", "LocalPostgres", "server_bin"]

_ROOT = Path("/usr/lib/postgresql")
USER = "kes"


def server_bin() -> Path | None:
    """The newest PostgreSQL server's bin directory, or None when none is installed."""
    found = sorted(
        (d for d in _ROOT.glob("*/bin") if (d / "initdb").exists() and (d / "pg_ctl").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


class LocalPostgres:
    """A PostgreSQL server in `base` (data directory and socket), run as `postgres` if root.

    `fsync=False` (tests) trades durability across a machine crash for speed; a killed server
    or client still loses nothing committed. Benchmarks keep fsync on.
    """

    def __init__(self, bin_dir: Path, base: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.base = base
        self.data = base / "data"
        self.port = free_ports(1)[0]
        self.log = base / "server.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin_dir / tool), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise KesError(f"{tool} failed: {done.stdout}{done.stderr}\n{tail}")

    def start(self) -> LocalPostgres:
        """initdb (the first time), then start the server and wait until it accepts."""
        if self._as:
            shutil.chown(self.base, "postgres", "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER,
                      "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back open transactions, close connections)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port: open connections break."""
        self.stop()
        self.start()

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for `database` over TCP."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Run `sql` with the server's own psql; rows of unaligned, tab-separated fields."""
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
             "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database), "-c", sql],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise KesError(f"psql failed: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def new_database(self) -> str:
        """Create an empty database; its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)
