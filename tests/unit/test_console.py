"""`kes send` / `kes events` argument handling that fails before any broker is contacted."""

from __future__ import annotations

import argparse

import pytest

from kes.schemas.errors import ConfigurationError
from kes.streams.cli.console import register


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kes")
    register(root.add_subparsers(dest="command", required=True))
    return root


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    code: int = args.handler(args)
    return code


def test_help_explains_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("send", "events"):
        with pytest.raises(SystemExit):
            parser().parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text
        assert "--bootstrap" in text
        assert "--partitions" in text
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    assert "send a command" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no.such.module", "account", "a", "OpenAccount"], "cannot import app module"),
        (["tests", "account", "a", "OpenAccount"], "has no BEHAVIORS"),
        (["kes.examples.bank", "loan", "a", "OpenAccount"], "no aggregate 'loan'; it has: account"),
        (["kes.examples.bank", "account", "a", "FreezeAccount"], "no command type 'FreezeAccount'"),
        (["kes.examples.bank", "account", "a", "OpenAccount", "{nope"], "not a valid bank.v1.Open"),
        (["kes.examples.bank", "account", "a", "OpenAccount", '{"amount": 1}'], "not a valid"),
        (["kes.examples.bank", "account", "a"], "give ENTITY-ID and COMMAND-TYPE"),
        (["kes.examples.bank", "account", "a", "OpenAccount", "--file", "-"], "not both"),
        (["kes.examples.bank", "account", "--file", "/no/such/file"], "cannot read --file"),
    ],
)
def test_send_refuses_what_it_cannot_send(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        run("send", *argv, "--bootstrap", "127.0.0.1:1")


def test_events_needs_a_known_aggregate() -> None:
    with pytest.raises(ConfigurationError, match="no aggregate"):
        run("events", "kes.examples.bank", "loan", "--bootstrap", "127.0.0.1:1")
