"""Where a projection's read model lives, chosen from its kind and the settings.

- A `SqlProjection`: its own tables in the PostgreSQL database of `KES_POSTGRES_DSN`.
- A `Projection` or `Reactor` with `KES_READMODEL_STORE=postgres`: rows in that database,
  shared by every process of the projection.
- Otherwise (the default): a RocksDB directory per process, `<data dir>/projections/<group>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

from kes.schemas.errors import ConfigurationError
from kes.stores.postgres import PostgresReadModelStore, describe_dsn
from kes.stores.readmodels import ReadModelStore, RocksDBReadModelStore
from kes.stores.sqlmodel import SqlReadModel
from kes.streams.config.settings import Settings
from kes.streams.projections.projection import AnyProjection, SqlProjection

__all__ = [
    "AnyReadModel",
    "check_read_model",
    "describe",
    "exists",
    "open_read_model",
    "store_path",
]

AnyReadModel: TypeAlias = ReadModelStore | SqlReadModel
"""A row store (any backend) or a SQL projection's tables."""


def store_path(projection: AnyProjection, settings: Settings) -> Path:
    """Where a process keeps a projection's RocksDB read model: `<data dir>/projections/<group>`."""
    return settings.data_dir / "projections" / projection.group_id(settings.topic_prefix)


def _in_postgres(projection: AnyProjection, settings: Settings) -> bool:
    return isinstance(projection, SqlProjection) or settings.readmodel_store == "postgres"


def open_read_model(
    projection: AnyProjection, settings: Settings, *, read_only: bool = False
) -> AnyReadModel:
    """Open the projection's read model; `read_only` creates nothing (for `status`).

    Raises ConfigurationError when a PostgreSQL read model has no DSN configured (or, read-only,
    when the RocksDB directory does not exist), ReadModelUnavailableError when the database does
    not answer.
    """
    group = projection.group_id(settings.topic_prefix)
    if isinstance(projection, SqlProjection):
        return SqlReadModel(
            settings.postgres_dsn,
            group,
            schema=projection.schema,
            tables=projection.tables,
            create=not read_only,
        )
    if settings.readmodel_store == "postgres":
        return PostgresReadModelStore(settings.postgres_dsn, group, create=not read_only)
    return RocksDBReadModelStore(store_path(projection, settings), read_only=read_only)


def check_read_model(projection: AnyProjection, store: AnyReadModel) -> None:
    """Refuse a store of the wrong kind: a SQL projection writes tables, the others rows."""
    if isinstance(projection, SqlProjection) != isinstance(store, SqlReadModel):
        wanted = "a SqlReadModel" if isinstance(projection, SqlProjection) else "a row store"
        raise ConfigurationError(
            f"projection {projection.name!r} needs {wanted}, not {type(store).__name__}"
        )


def describe(projection: AnyProjection, settings: Settings) -> str:
    """Where the read model is, for messages (never a password)."""
    if _in_postgres(projection, settings):
        if not settings.postgres_dsn:
            return "PostgreSQL (KES_POSTGRES_DSN is not set)"
        where = f"PostgreSQL {describe_dsn(settings.postgres_dsn)}"
        if isinstance(projection, SqlProjection) and projection.tables:
            return f"{where}, tables {', '.join(projection.tables)}"
        return where
    return str(store_path(projection, settings))


def exists(projection: AnyProjection, settings: Settings) -> bool:
    """Whether a read-only open can find the read model (a database always can)."""
    return _in_postgres(projection, settings) or store_path(projection, settings).exists()
