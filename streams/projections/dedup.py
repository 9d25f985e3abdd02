"""`once`: run a reactor's handler at most once per event, by the event's (entity id, revision).

    ledger = RocksDBRevisionLedger(Path("/data/notify-ledger"))

    @reactor.on(AccountDebited)
    @once(ledger)
    def notify(event, payload): send_mail(...)

An event whose revision is not above the ledger's last revision for its entity is skipped; after
the handler returns, its revision is recorded. What remains is the moment between the handler's
effect and the record (a crash there runs it again): make the effect itself idempotent, keyed by
`(event.entity_id, event.revision)`, where it must be exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope

if TYPE_CHECKING:
    from kes.stores.ledger import RevisionLedger

__all__ = ["once"]

E = TypeVar("E", bound=Message)


def once(
    ledger: RevisionLedger,
) -> Callable[[Callable[[EventEnvelope, E], None]], Callable[[EventEnvelope, E], None]]:
    """Wrap a reaction so redelivered events (revision already recorded) are skipped."""

    def wrap(handler: Callable[[EventEnvelope, E], None]) -> Callable[[EventEnvelope, E], None]:
        @wraps(handler)
        def guarded(event: EventEnvelope, payload: E) -> None:
            if event.revision <= ledger.last(event.entity_id):
                return
            handler(event, payload)
            ledger.record(event.entity_id, event.revision)

        return guarded

    return wrap
