"""Read models as consumer groups: projections and reactors (pure definitions and their row API),
their Given/When/Then kit and `once` for effects. The Kafka side runs from its modules:
kes.streams.projections.projector (one projection), .host (several in one process), .admin
(status, rebuild), .readmodels (the stores).
"""

from kes.streams.projections.dedup import once
from kes.streams.projections.projection import (
    AnyProjection,
    EventRecord,
    Projection,
    Reactor,
    SqlProjection,
)
from kes.streams.projections.rows import RowReader, RowWriter, Sql
from kes.streams.projections.testkit import ProjectionScenario, given_events

__all__ = [
    "AnyProjection",
    "EventRecord",
    "Projection",
    "ProjectionScenario",
    "Reactor",
    "RowReader",
    "RowWriter",
    "Sql",
    "SqlProjection",
    "given_events",
    "once",
]
