"""Read your writes: the `after=` hint that makes a projection's HTTP read wait for a command's
events (`partition:offset`, as a reply's accepted events give them), and its parser."""

from __future__ import annotations

from kes.schemas.errors import ConfigurationError
from kes.schemas.kes.v1.envelopes_pb2 import Reply

__all__ = ["parse_after", "read_after"]


def read_after(reply: Reply) -> str:
    """The `after=` value that waits for a reply's accepted events ("" when it has none)."""
    if reply.WhichOneof("outcome") != "accepted" or not reply.accepted.event_offsets:
        return ""
    return f"{reply.accepted.partition}:{max(reply.accepted.event_offsets)}"


def parse_after(text: str) -> dict[int, int]:
    """`"0:41,3:7"` → `{0: 41, 3: 7}` (partition → event offset); ConfigurationError if not."""
    wanted: dict[int, int] = {}
    for part in filter(None, text.split(",")):
        partition, _, offset = part.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ConfigurationError(f"after={text!r}: write partition:offset[,partition:offset]")
        wanted[int(partition)] = int(offset)
    return wanted
