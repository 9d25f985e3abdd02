"""The `kes` command: every sub-command's parser and handler (`python -m kes.streams.cli`)."""

from kes.streams.cli.commands import main

__all__ = ["main"]
