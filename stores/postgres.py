"""PostgreSQL read models (psycopg 3): the connection, the offsets table, and a row store.

Every PostgreSQL read model keeps its progress in one table,
`kes_projection_offsets(projection, topic, partition, next_offset)`, written in the same
database transaction as the rows it reflects, so the database always holds exactly "every event
below these offsets applied, none above" (pyeventsourcing's tracking records). The projection
column is the projection's consumer group (`<topic prefix><name>`).

Processes of one projection share the database, so an offset write is a compare-and-set: it
expects the offset this process last read or wrote. A process that lost a partition without
noticing yet (paused past its session timeout) finds another offset there, and its batch is
rolled back (ReadModelConflictError) instead of being applied on top of the other's.

`PostgresReadModelStore` is the `ReadModelStore` of a row projection (key → bytes) in
`kes_readmodel_rows`; kes.stores.sqlmodel holds the SQL projection's transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from kes.schemas.errors import ConfigurationError, ReadModelConflictError, ReadModelUnavailableError

__all__ = [
    "Database",
    "OffsetsTable",
    "PostgresReadModelStore",
    "connect",
    "describe_dsn",
    "unavailable",
]

Offsets = Mapping[tuple[str, int], int]
T = TypeVar("T")

OFFSETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS kes_projection_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
)"""

ROWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS kes_readmodel_rows (
    readmodel text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (readmodel, key)
)"""

_SCHEMA_LOCK = 0x6B6573  # one advisory lock: concurrent CREATE TABLE IF NOT EXISTS can collide


def describe_dsn(dsn: str) -> str:
    """`host:port/dbname` of a DSN, never its password (for messages)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"KES_POSTGRES_DSN is not a connection string: {exc}") from None
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


def unavailable(dsn: str, exc: BaseException) -> ReadModelUnavailableError:
    """The one-line error for a database that cannot be reached or dropped the connection."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ReadModelUnavailableError(
        f"PostgreSQL at {describe_dsn(dsn)} is unavailable ({detail}); check KES_POSTGRES_DSN "
        "and that the server runs"
    )


def connect(dsn: str, name: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection named `kes <name>`; ReadModelUnavailableError if none."""
    if not dsn:
        raise ConfigurationError(
            f"read model {name!r} is in PostgreSQL: set KES_POSTGRES_DSN "
            "(for example postgresql://user:password@host:5432/database)"
        )
    describe_dsn(dsn)
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=10, application_name=f"kes {name}"[:63]
        )
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from None


def create_schema(conn: psycopg.Connection[tuple[Any, ...]], *statements: str) -> None:
    """Run schema statements in one transaction, one process at a time."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in statements:
            conn.execute(statement.encode())


class Database:
    """One connection to the read model's database, used under a lock: thread-safe.

    `name` is the application name the server shows for it, and what its errors name.
    """

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn = dsn
        self.lock = threading.RLock()
        self.conn = connect(dsn, name)

    def call(self, action: Callable[..., T], *args: Any) -> T:
        """`action(connection, *args)` under the lock; a lost connection is unavailability."""
        with self.lock:
            try:
                return action(self.conn, *args)
            except psycopg.OperationalError as exc:
                raise unavailable(self.dsn, exc) from None

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.conn.close()


class OffsetsTable:
    """One projection's rows of `kes_projection_offsets`, written by compare-and-set."""

    def __init__(self, projection: str) -> None:
        self.projection = projection
        self._known: dict[tuple[str, int], int] = {}

    def read(self, conn: psycopg.Connection[tuple[Any, ...]]) -> dict[tuple[str, int], int]:
        """The stored offsets (none before the table exists); later writes expect them."""
        try:
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM kes_projection_offsets "
                "WHERE projection = %s",
                (self.projection,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
        self._known = {(topic, partition): offset for topic, partition, offset in rows}
        return dict(self._known)

    def write(self, conn: psycopg.Connection[tuple[Any, ...]], offsets: Offsets) -> None:
        """Store `offsets` inside the caller's transaction, each only over the offset this
        process last saw there; ReadModelConflictError (roll back!) when another moved it."""
        if not offsets:
            return
        fresh = [(t, p, o) for (t, p), o in offsets.items() if (t, p) not in self._known]
        moved = [(t, p, o, self._known[(t, p)]) for (t, p), o in offsets.items()
                 if (t, p) in self._known]  # fmt: skip
        changed = 0
        with conn.cursor() as cur:
            if fresh:
                cur.execute(
                    "INSERT INTO kes_projection_offsets (projection, topic, partition, "
                    "next_offset) SELECT %s, * FROM unnest(%s::text[], %s::integer[], "
                    "%s::bigint[]) ON CONFLICT DO NOTHING",
                    (self.projection, *map(list, zip(*fresh, strict=True))),
                )
                changed += cur.rowcount
            if moved:
                cur.execute(
                    "UPDATE kes_projection_offsets AS o SET next_offset = u.next "
                    "FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::bigint[]) "
                    "AS u(topic, partition, next, expected) WHERE o.projection = %s "
                    "AND o.topic = u.topic AND o.partition = u.partition "
                    "AND o.next_offset = u.expected",
                    (*map(list, zip(*moved, strict=True)), self.projection),
                )
                changed += cur.rowcount
        if changed != len(offsets):
            raise ReadModelConflictError(self.projection, sorted(offsets))

    def stored(self, offsets: Offsets) -> None:
        """The transaction that wrote `offsets` committed: expect them from now on."""
        self._known.update(offsets)

    def forget(self) -> None:
        """Expect nothing stored (after a clear)."""
        self._known.clear()

    def clear(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Delete the projection's offsets inside the caller's transaction."""
        conn.execute("DELETE FROM kes_projection_offsets WHERE projection = %s", (self.projection,))


class PostgresReadModelStore:
    """A row projection's read model in PostgreSQL: `kes_readmodel_rows` plus its offsets.

    `name` scopes the rows and offsets (the projector uses the consumer group), so many
    projections share one database. Keys sort by code point (collation "C"), as in the other
    backends; PostgreSQL text cannot hold NUL characters. Thread-safe (one lock around the
    connection). Loses nothing to a SIGKILL or a server restart: a write is one transaction.
    """

    def __init__(self, dsn: str, name: str, *, create: bool = True) -> None:
        self.name = name
        self._db = Database(dsn, name)
        self._offsets = OffsetsTable(name)
        if create:
            self._db.call(create_schema, OFFSETS_SCHEMA, ROWS_SCHEMA)
        self._db.call(self._offsets.read)

    def get(self, key: str) -> bytes | None:
        """The row under `key`, or None."""
        row = self._db.call(
            lambda conn: conn.execute(
                "SELECT value FROM kes_readmodel_rows WHERE readmodel = %s AND key = %s",
                (self.name, key),
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    def items(self, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Rows whose key starts with `prefix`, in key order."""
        rows = self._db.call(
            lambda conn: conn.execute(
                "SELECT key, value FROM kes_readmodel_rows WHERE readmodel = %s "
                "AND starts_with(key, %s) ORDER BY key",
                (self.name, prefix),
            ).fetchall()
        )
        return iter([(key, bytes(value)) for key, value in rows])

    def offsets(self) -> dict[tuple[str, int], int]:
        """The stored offsets, read from the database (another process may have moved them)."""
        return dict(self._db.call(self._offsets.read))

    def write(self, rows: Mapping[str, bytes | None], offsets: Offsets) -> None:
        """One transaction: delete, upsert, then compare-and-set the offsets; or nothing."""
        gone = [key for key, value in rows.items() if value is None]
        kept = [(key, value) for key, value in rows.items() if value is not None]

        def write(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                if gone:
                    conn.execute(
                        "DELETE FROM kes_readmodel_rows WHERE readmodel = %s AND key = ANY(%s)",
                        (self.name, gone),
                    )
                if kept:
                    keys, values = zip(*kept, strict=True)
                    conn.execute(
                        "INSERT INTO kes_readmodel_rows (readmodel, key, value) "
                        "SELECT %s, * FROM unnest(%s::text[], %s::bytea[]) "
                        "ON CONFLICT (readmodel, key) DO UPDATE SET value = EXCLUDED.value",
                        (self.name, list(keys), list(values)),
                    )
                self._offsets.write(conn, offsets)
            self._offsets.stored(offsets)

        self._db.call(write)

    def clear(self) -> None:
        """Delete the rows and offsets of this read model (one transaction)."""

        def clear(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM kes_readmodel_rows WHERE readmodel = %s", (self.name,))
                self._offsets.clear(conn)
            self._offsets.forget()

        self._db.call(clear)

    def close(self) -> None:
        """Close the connection; the data stays in the database."""
        self._db.close()
