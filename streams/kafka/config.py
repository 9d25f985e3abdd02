"""Client settings for every Kafka client kes creates, from one place.

Users give librdkafka-style keys (`security.protocol`, `sasl.mechanism`, `sasl.username`, ...)
once in `Settings.client_config` (or as `KES_KAFKA_*` environment variables); confluent-kafka
clients take them as they are, aiokafka clients (the worker's producers and readers) get the
equivalent keyword arguments, and the worker's Faust app gets the equivalent credentials.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

from kes.schemas.errors import ConfigurationError
from kes.streams.config.settings import Settings

__all__ = ["aiokafka_options", "confluent_config", "faust_credentials"]

_AIOKAFKA_KEYS = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "client.id": "client_id",
}
_SSL_KEYS = {"ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password"}


KAFKA_LOG = logging.getLogger("kes.kafka")
"""Where librdkafka's log lines go (every client kes builds passes it as `logger`): through
Python logging at the process's levels, never raw to the terminal."""


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka configuration: bootstrap servers, the user's client settings, `extra`,
    and librdkafka's log lines sent to `KAFKA_LOG`."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": KAFKA_LOG,
        **settings.client_config,
        **extra,
    }


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments equivalent to `confluent_config(settings)`."""
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers.split(",")}
    config: Mapping[str, str] = settings.client_config
    for key, value in config.items():
        if key in _AIOKAFKA_KEYS:
            options[_AIOKAFKA_KEYS[key]] = value
        elif key not in _SSL_KEYS:
            raise ConfigurationError(
                f"client setting {key!r} has no aiokafka equivalent; supported: "
                + ", ".join(sorted([*_AIOKAFKA_KEYS, *_SSL_KEYS]))
            )
    if "security_protocol" in options:
        options["security_protocol"] = options["security_protocol"].upper()
    if any(key in config for key in _SSL_KEYS) or "SSL" in options.get("security_protocol", ""):
        context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
        if "ssl.certificate.location" in config:
            context.load_cert_chain(
                config["ssl.certificate.location"],
                config.get("ssl.key.location"),
                config.get("ssl.key.password"),
            )
        options["ssl_context"] = context
    return options


def faust_credentials(settings: Settings) -> Any:
    """Faust's `broker_credentials` matching `aiokafka_options(settings)`; None: plaintext."""
    import faust  # only the worker needs it

    options = aiokafka_options(settings)
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=options.get("sasl_plain_username"),
            password=options.get("sasl_plain_password"),
            mechanism=options.get("sasl_mechanism", "PLAIN"),
            ssl_context=options.get("ssl_context") if protocol == "SASL_SSL" else None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None
