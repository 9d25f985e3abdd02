"""A SQL projection's read model: the user's tables, written in one transaction per batch.

`SqlReadModel.begin()` opens the database transaction of one projector cycle; the handlers run
their statements through it, and `commit(offsets)` stores the offsets in
`kes_projection_offsets` in the same transaction, then commits: the tables hold exactly the
events below the stored offsets (kes.stores.postgres).

A failing handler must leave nothing. Savepoints give that, at a round trip per event (about
40% of a simple handler's time), so a batch first runs without them; when a handler that has
run a statement raises, the transaction asks to be rolled back and the batch run again with a
savepoint per event (`begin(undoable=True)`, BatchRedoError).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

import psycopg

from kes.schemas.errors import BatchRedoError, ConfigurationError
from kes.stores.postgres import OFFSETS_SCHEMA, Database, OffsetsTable, create_schema, unavailable

__all__ = ["EventSql", "SqlReadModel", "SqlTransaction"]

Offsets = Mapping[tuple[str, int], int]
Params = Sequence[Any] | Mapping[str, Any] | None
Connection = psycopg.Connection[tuple[Any, ...]]


class SqlReadModel:
    """The tables of one SQL projection and its offsets, in the database at `dsn`.

    `name` is the projection's consumer group (its offsets' key), `schema` the statements that
    create its tables (run with the offsets table's at open unless `create` is False), `tables`
    what `clear` empties. It has no rows of its own: `write` stores offsets only.
    """

    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        schema: Sequence[str] = (),
        tables: Sequence[str] = (),
        create: bool = True,
    ) -> None:
        self.name = name
        self.tables = tuple(tables)
        self._db = Database(dsn, name)
        self._offsets = OffsetsTable(name)
        if create:
            self._db.call(create_schema, OFFSETS_SCHEMA, *schema)
        self._db.call(self._offsets.read)

    def offsets(self) -> dict[tuple[str, int], int]:
        """The stored offsets, read from the database (another process may have moved them)."""
        return dict(self._db.call(self._offsets.read))

    def begin(self, *, undoable: bool = False) -> SqlTransaction:
        """Open one batch's transaction (with a savepoint per event if `undoable`); commit or
        close it before the next."""
        self._db.lock.acquire()
        try:
            return SqlTransaction(self._db, self._offsets, undoable=undoable)
        except BaseException:
            self._db.lock.release()
            raise

    def write(self, rows: Mapping[str, bytes | None], offsets: Offsets) -> None:
        """Store offsets (a rebuild's restart point); a SQL read model has no rows."""
        if rows:
            raise ConfigurationError(f"read model {self.name!r} is SQL tables: it has no rows")
        with self.begin() as transaction:
            transaction.commit(offsets)

    def clear(self) -> None:
        """Empty the tables and forget the offsets, in one transaction."""

        def clear(conn: Connection) -> None:
            with conn.transaction():
                if self.tables:
                    conn.execute(f"TRUNCATE {', '.join(self.tables)}".encode())
                self._offsets.clear(conn)
            self._offsets.forget()

        self._db.call(clear)

    def close(self) -> None:
        """Close the connection; the tables stay."""
        self._db.close()


class SqlTransaction:
    """One batch's open transaction (a `kes.streams.projections.rows.BatchTransaction`).

    1. `BEGIN` at creation;
    2. per event, `child()` gives the handler an `EventSql`; when `undoable`, its first
       statement opens a savepoint, `merge` keeps it (released with the next event's savepoint,
       or by the commit) and `discard` rolls back to it; otherwise `discard` of an event that
       ran a statement raises BatchRedoError (the caller closes this transaction and begins an
       undoable one);
    3. `commit(offsets)`: the offsets by compare-and-set, then `COMMIT`;
    4. `close()`: `ROLLBACK` if not committed, and the model's lock is released.
    A lost connection raises ReadModelUnavailableError from any step: nothing is stored.
    """

    def __init__(self, db: Database, offsets: OffsetsTable, *, undoable: bool = False) -> None:
        self._db = db
        self._offsets = offsets
        self._conn = db.conn
        self.undoable = undoable
        self._open = True
        self._closed = False
        self._saved = False
        self._run("BEGIN")

    def __enter__(self) -> SqlTransaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, statement: LiteralString) -> None:
        try:
            self._conn.execute(statement)
        except psycopg.OperationalError as exc:
            raise unavailable(self._db.dsn, exc) from None

    def savepoint(self) -> None:
        """Mark where the current event's statements begin (releasing the previous event's)."""
        self._run("RELEASE SAVEPOINT kes_event; SAVEPOINT kes_event" if self._saved else
                  "SAVEPOINT kes_event")  # fmt: skip
        self._saved = True

    def child(self) -> EventSql:
        """What one event's handler runs its statements through."""
        return EventSql(self)

    def merge(self, child: EventSql) -> None:
        """The handler returned: its statements stay in the transaction."""

    def discard(self, child: EventSql) -> None:
        """The handler raised: undo its statements (back to its savepoint)."""
        if not child.started:
            return
        if not self.undoable:
            raise BatchRedoError("a handler failed after running statements")
        self._run("ROLLBACK TO SAVEPOINT kes_event")

    def commit(self, offsets: Offsets) -> None:
        """Store the offsets, then commit everything; the transaction is over."""
        try:
            self._offsets.write(self._conn, offsets)
            self._conn.execute("COMMIT")
        except psycopg.OperationalError as exc:
            raise unavailable(self._db.dsn, exc) from None
        self._open = False
        self._offsets.stored(offsets)

    def close(self) -> None:
        """Roll back what was not committed; let the model be used again (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._open and not self._conn.closed:
                self._open = False
                self._conn.execute("ROLLBACK")
        except psycopg.OperationalError:
            pass  # the server has rolled it back already: the connection is gone
        finally:
            self._db.lock.release()


class EventSql:
    """The `Sql` one event's handler gets: statements in the batch's transaction."""

    def __init__(self, transaction: SqlTransaction) -> None:
        self._transaction = transaction
        self.started = False
        """Whether a statement ran (and so a savepoint was opened for this event)."""

    def _cursor(self, query: LiteralString, params: Params) -> psycopg.Cursor[tuple[Any, ...]]:
        if not self.started:
            if self._transaction.undoable:
                self._transaction.savepoint()
            self.started = True
        try:
            return self._transaction._conn.execute(query, params)
        except psycopg.OperationalError as exc:
            raise unavailable(self._transaction._db.dsn, exc) from None

    def execute(self, query: LiteralString, params: Params = None) -> int:
        """Run one statement; the number of rows it changed."""
        return self._cursor(query, params).rowcount

    def fetchone(self, query: LiteralString, params: Params = None) -> tuple[Any, ...] | None:
        """Run a query; its first row, or None."""
        return self._cursor(query, params).fetchone()

    def fetchall(self, query: LiteralString, params: Params = None) -> list[tuple[Any, ...]]:
        """Run a query; all its rows."""
        return self._cursor(query, params).fetchall()
