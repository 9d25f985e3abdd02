"""`kes send` and `kes events`: send commands to an aggregate and read its events from a shell.

`register(sub)` adds both sub-commands to the `kes` parser; each handler takes the parsed
arguments and returns an exit code, raising a KesError for anything the user must fix.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import IO, Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from kes.schemas.codec import unpack
from kes.schemas.errors import ConfigurationError, DecodeError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.client.after import read_after
from kes.streams.client.client import AsyncCommandClient, CommandClient, outcome
from kes.streams.client.history import read_history
from kes.streams.client.reading import read_events
from kes.streams.config.apps import behavior_named, event_adapters, import_app
from kes.streams.config.settings import Settings
from kes.streams.core.behavior import Behavior
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.keyreader import keyring_for

__all__ = ["EXIT_REJECTED", "cmd_events", "cmd_send", "register"]

EXIT_REJECTED = 3
"""Exit status of `kes send` when the aggregate rejected the command."""

_IN_FLIGHT = 1000
_PROGRESS_SECONDS = 0.5

_SEND_HELP = """\
Send one command to an entity and print the reply, or send many from a file.

The command is a protobuf message of one of the aggregate's command types, written as protobuf
JSON (field names as in the .proto or in lowerCamelCase; int64 values may be strings). It goes to
<aggregate>.commands, on the entity's partition. By default kes waits for the worker's reply and
prints it as JSON: "accepted" with the entity's new revision and state, or "rejected" with a code
and a message. Exit status: 0 accepted, 3 rejected, 1 on errors. When no reply comes in time
the error names the command id: re-send with --command-id ID and it applies at most once.
"""

_SEND_EPILOG = """\
examples:
  kes send kes.examples.bank account acc-1 OpenAccount '{"owner": "Ann", "openingBalance": 100}'
  kes send kes.examples.bank account acc-1 CreditAccount '{"amount": 25}' --expected-revision 1
  kes send kes.examples.bank account acc-1 bank.v1.DebitAccount '{"amount": 5}' --no-wait
  kes send kes.examples.bank account --file commands.txt

--file reads one command per line, sent without waiting for replies, in file order:
  acc-1 OpenAccount {"owner": "Ann"}
  {"entity": "acc-2", "type": "CreditAccount", "command": {"amount": 5}}
Blank lines and lines starting with # are skipped. Use --file - to read standard input.
"""

_EVENTS_HELP = """\
Print an aggregate's events from <aggregate>.events, one a line:

  <entity>@<revision> <EventType> <payload fields>

Only events of committed worker transactions are shown. Without --follow, kes prints the events
on the log now and exits; with --follow it keeps printing new events until Ctrl-C (only new ones,
unless --from-beginning). Events of one entity come in revision order; entities interleave.
If the app module defines EVENT_ADAPTERS (a kes.streams.core.adapters.EventAdapters), old event
types are shown adapted to the current ones.
"""

_EVENTS_EPILOG = """\
examples:
  kes events kes.examples.bank account
  kes events kes.examples.bank account --entity acc-1
  kes events kes.examples.bank account --follow --json | jq .payload
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `send` and `events` sub-commands to the `kes` parser."""
    send = sub.add_parser(
        "send",
        help="send a command to an entity and print the reply (or send a file of commands)",
        description=_SEND_HELP,
        epilog=_SEND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target(send)
    send.add_argument("entity_id", nargs="?", metavar="ENTITY-ID", help="the entity, e.g. acc-1")
    send.add_argument(
        "command_type",
        nargs="?",
        metavar="COMMAND-TYPE",
        help="one of the aggregate's command types: short (OpenAccount) or full "
        "(bank.v1.OpenAccount)",
    )
    send.add_argument(
        "json", nargs="?", default="{}", metavar="JSON", help="the command as protobuf JSON"
    )
    send.add_argument(
        "--no-wait", action="store_true", help="print the command id once Kafka has the command"
    )
    send.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the reply (default 10)"
    )
    send.add_argument(
        "--expected-revision",
        type=int,
        metavar="N",
        help="apply only if the entity is at revision N (0: it must not exist yet)",
    )
    send.add_argument(
        "--command-id", metavar="ID", help="the command's id (default: new); reuse it to retry"
    )
    send.add_argument(
        "--file", metavar="PATH", help="send the commands in PATH (- for stdin), one a line"
    )
    add_cluster_args(send)
    send.set_defaults(handler=cmd_send)

    events = sub.add_parser(
        "events",
        help="print an aggregate's events (all of them, one entity's, or follow new ones)",
        description=_EVENTS_HELP,
        epilog=_EVENTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target(events)
    events.add_argument("--entity", metavar="ID", help="only this entity's events")
    events.add_argument(
        "--from-beginning",
        action="store_true",
        help="with --follow, print the existing events first (always so without --follow)",
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="print JSON lines, for piping")
    add_cluster_args(events)
    events.set_defaults(handler=cmd_events)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
    )
    parser.add_argument("aggregate", metavar="AGGREGATE", help="behavior name, e.g. account")


# --- kes send -----------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    """Send one command and print its reply (or id), or send every command of `--file`."""
    module = import_app(args.app)
    behavior = behavior_named(module, args.aggregate)
    settings = settings_from(args)
    topics = settings.topics(behavior.name)
    if args.file is not None:
        if args.entity_id is not None or args.command_id or args.expected_revision is not None:
            raise ConfigurationError(
                "--file takes its commands from the file: give no ENTITY-ID, COMMAND-TYPE, "
                "JSON, --command-id or --expected-revision with it (not both)"
            )
        try:
            source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigurationError(f"cannot read --file {args.file}: {exc.strerror}") from None
        with nullcontext() if source is sys.stdin else source:
            count = asyncio.run(_send_lines(behavior, settings, source, args.file))
        print(f"sent {count} command(s) to {topics.commands}")
        return 0
    if args.entity_id is None or args.command_type is None:
        raise ConfigurationError("give ENTITY-ID and COMMAND-TYPE (and JSON), or --file PATH")
    command = _parse(behavior, args.command_type, args.json)
    config = dict(settings.client_config)
    ids = {"command_id": args.command_id, "expected_revision": args.expected_revision}
    with CommandClient(topics, settings.bootstrap_servers, config, aggregate=behavior.name) as cl:
        if args.no_wait:
            sent = cl.send(args.entity_id, command, **ids)
            print(sent)
            return 0
        reply = cl.ask(args.entity_id, command, args.timeout, **ids)
    print(json_format.MessageToJson(reply, indent=2))
    after = read_after(reply)
    if after:  # what a projection process's row read waits for (read-your-writes)
        where = f".../rows/{args.entity_id}?after={after}"
        print(f"read it from a projection process: {where}", file=sys.stderr)
    return 0 if outcome(reply) == "accepted" else EXIT_REJECTED


async def _send_lines(
    behavior: Behavior[Any], settings: Settings, source: IO[str], name: str
) -> int:
    """Send every command in `source` in order, up to `_IN_FLIGHT` unacknowledged at a time."""
    topics = settings.topics(behavior.name)
    config = dict(settings.client_config)
    slots = asyncio.Semaphore(_IN_FLIGHT)
    failures: list[BaseException] = []
    sent = 0
    shown = time.monotonic()

    def done(task: asyncio.Task[str]) -> None:
        nonlocal sent
        slots.release()
        if task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]
        else:
            sent += 1

    async with AsyncCommandClient(
        topics, settings.bootstrap_servers, config, aggregate=behavior.name
    ) as client:
        pending: set[asyncio.Task[str]] = set()
        for lineno, line in enumerate(source, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entity_id, command = _parse_line(behavior, line)
            except KesError as exc:
                raise ConfigurationError(f"{name}:{lineno}: {exc}") from None
            await slots.acquire()
            if failures:
                break
            task = asyncio.create_task(client.send(entity_id, command))
            task.add_done_callback(done)
            pending.add(task)
            task.add_done_callback(pending.discard)
            if time.monotonic() - shown > _PROGRESS_SECONDS:
                shown = time.monotonic()
                print(f"\rsent {sent} ...", end="", file=sys.stderr, flush=True)
        await asyncio.gather(*pending, return_exceptions=True)
    print(f"\rsent {sent}    ", file=sys.stderr, flush=True)
    if failures:
        raise KesError(f"{len(failures)} command(s) failed after {sent} sent: {failures[0]}")
    return sent


def _parse_line(behavior: Behavior[Any], line: str) -> tuple[str, Message]:
    """`<entity-id> <CommandType> <json>` or a JSON object {"entity", "type", "command"}."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"not valid JSON: {exc}") from None
        if not isinstance(obj, dict) or not {"entity", "type"} <= obj.keys():
            raise ConfigurationError('a JSON line needs "entity", "type" and "command"')
        command = _command_type(behavior, str(obj["type"]))()
        try:
            json_format.ParseDict(obj.get("command") or {}, command)
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{obj['type']}: {exc}") from None
        return str(obj["entity"]), command
    parts = text.split(maxsplit=2)
    if len(parts) < 2:
        raise ConfigurationError("expected <entity-id> <CommandType> [<json>]")
    return parts[0], _parse(behavior, parts[1], parts[2] if len(parts) > 2 else "{}")


def _parse(behavior: Behavior[Any], type_name: str, text: str) -> Message:
    command_type = _command_type(behavior, type_name)
    try:
        return json_format.Parse(text, command_type())
    except json_format.ParseError as exc:
        full = command_type.DESCRIPTOR.full_name
        raise ConfigurationError(f"the JSON is not a valid {full}: {exc}") from None


def _command_type(behavior: Behavior[Any], name: str) -> type[Message]:
    """The behavior's command type named `name`, in full (bank.v1.OpenAccount) or short."""
    types = behavior.command_types
    found = [t for t in types if t.DESCRIPTOR.full_name == name] or [
        t for t in types if t.DESCRIPTOR.name == name
    ]
    if len(found) == 1:
        return found[0]
    known = ", ".join(sorted(t.DESCRIPTOR.full_name for t in types)) or "none"
    if found:
        raise ConfigurationError(f"{name!r} is ambiguous in {behavior.name!r}: use one of {known}")
    raise ConfigurationError(f"aggregate {behavior.name!r} has no command type {name!r}: {known}")


# --- kes events ---------------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    """Print the aggregate's events, as text or JSON lines; follow new ones with --follow."""
    module = import_app(args.app)
    behavior = behavior_named(module, args.aggregate)
    settings = settings_from(args)
    adapters = event_adapters(module)
    topics = settings.topics(behavior.name)
    keys = keyring_for(topics, confluent_config(settings), settings.master())
    events: Iterator[EventEnvelope]
    if args.entity:
        events = read_history(
            topics,
            settings.bootstrap_servers,
            args.entity,
            follow=args.follow,
            adapters=adapters,
            client_config=settings.client_config,
            keys=keys,
        )
    else:
        events = read_events(
            topics,
            settings.bootstrap_servers,
            from_beginning=args.from_beginning or not args.follow,
            follow=args.follow,
            adapters=adapters,
            client_config=settings.client_config,
            keys=keys,
        )
    render = _json_line if args.json else _text_line
    try:
        for env in events:
            print(render(env), flush=args.follow)
    except BrokenPipeError:  # `kes events ... | head`: the reader has gone, which is fine.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    finally:
        events.close()  # type: ignore[attr-defined]
    return 0


def _text_line(env: EventEnvelope) -> str:
    """`<entity>@<revision> <EventType> <payload fields>`."""
    event_type = env.event_type or env.payload.TypeName()
    try:
        fields = text_format.MessageToString(unpack(env.payload), as_one_line=True)
    except DecodeError:
        fields = f"<{len(env.payload.value)} bytes of an unregistered type>"
    return f"{env.entity_id}@{env.revision} {event_type.rpartition('.')[2]} {fields}".rstrip()


def _json_line(env: EventEnvelope) -> str:
    """The envelope as one line of protobuf JSON, payload expanded when its type is registered."""
    try:
        obj = json_format.MessageToDict(env)
    except (TypeError, KeyError, json_format.SerializeToJsonError):
        payload = env.payload
        bare = EventEnvelope()
        bare.CopyFrom(env)
        bare.ClearField("payload")
        obj = json_format.MessageToDict(bare)
        obj["payload"] = {
            "@type": payload.type_url,
            "value": base64.b64encode(payload.value).decode("ascii"),
        }
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --- shared -------------------------------------------------------------------------------------
