"""Clients of the command side: send commands and wait for replies (sync and asyncio), read an
entity's events and history from the log.
"""

from kes.streams.client.after import read_after
from kes.streams.client.client import AsyncCommandClient, CommandClient, outcome, state_of
from kes.streams.client.history import read_history
from kes.streams.client.reading import read_events
from kes.streams.client.replies import ReplyRouter

__all__ = [
    "AsyncCommandClient",
    "CommandClient",
    "ReplyRouter",
    "outcome",
    "read_after",
    "read_events",
    "read_history",
    "state_of",
]
