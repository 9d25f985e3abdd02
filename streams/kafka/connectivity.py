"""Can this process reach the Kafka cluster? One metadata request, answered in a few seconds.

Every `kes` command that talks to Kafka asks this first, so a wrong address, a port that is not
Kafka's, or refused credentials give one line that names the address and the likely cause
instead of half a minute of client log lines and a traceback. librdkafka's log lines seen while
asking are read only to tell those causes apart.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kes.schemas.errors import UnreachableError
from kes.streams.config.settings import Settings
from kes.streams.kafka.config import confluent_config

__all__ = ["check_reachable", "likely_cause"]

_CAUSES = (
    ("Invalid response size", "something answers there, but it is not a Kafka broker"),
    ("state APIVERSION_QUERY", "something accepts connections there, but it is not Kafka"),
    ("receive.message.max.bytes", "something answers there, but it is not a Kafka broker"),
    ("SSL handshake", "the TLS handshake failed (check KES_KAFKA_SECURITY_PROTOCOL, ssl.*)"),
    ("SASL authentication", "SASL authentication was refused (check KES_KAFKA_SASL_*)"),
    ("Authentication", "authentication was refused (check KES_KAFKA_SASL_*)"),
    ("Connection refused", "nothing is listening there"),
    ("Failed to resolve", "the host name does not resolve"),
    ("Name or service not known", "the host name does not resolve"),
    ("Disconnected", "the broker closed the connection (TLS or SASL expected?)"),
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def likely_cause(lines: list[str]) -> str:
    """The likeliest cause among librdkafka's log lines (the first pattern that matches)."""
    for pattern, cause in _CAUSES:
        if any(pattern in line for line in lines):
            return cause
    return "no broker answered in time"


def check_reachable(settings: Settings, timeout: float = 3.0) -> None:
    """Return when a broker answers a metadata request; else raise UnreachableError."""
    quiet = logging.getLogger(f"kes.connectivity.{id(settings)}")
    quiet.propagate = False
    collect = _Collect()
    quiet.addHandler(collect)
    setup_ms = int(timeout * 600)  # a connection gives up (and logs why) before the request
    admin = AdminClient(
        confluent_config(settings, logger=quiet, **{"socket.connection.setup.timeout.ms": setup_ms})
    )
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.2)  # log lines are delivered by poll
        cause = likely_cause(collect.lines)
        raise UnreachableError(settings.bootstrap_servers, cause, str(exc.args[0])) from None
    finally:
        quiet.removeHandler(collect)
