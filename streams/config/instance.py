"""A process's stable identity, kept in its data directory: the part of its transactional id
that survives restarts on the same volume (so a restarted worker fences its own zombie)."""

from __future__ import annotations

import uuid
from pathlib import Path

__all__ = ["instance_id"]


def instance_id(data_dir: Path) -> str:
    """This instance's stable id, kept in its data dir (made on first start)."""
    path = data_dir / "instance-id"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex[:12]
    path.write_text(value + "\n")
    return value
