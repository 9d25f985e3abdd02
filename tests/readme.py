"""The README's Python examples, extracted so tests can run them and the docs cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def python_block(containing: str) -> str:
    """The one ```python block of the README that contains `containing`."""
    found = [block for block in python_blocks() if containing in block]
    assert len(found) == 1, f"{len(found)} README blocks contain {containing!r}"
    return found[0]
