"""Tracing: spans for commands, decisions, transactions and projections (OpenTelemetry's API, a
no-op unless the application installs an SDK), and the file exporter for KES_TRACE_FILE. Pure:
the cycle traces its decisions without any client library."""

from kes.streams.telemetry.tracing import command_span, install_file_exporter, transaction_span

__all__ = ["command_span", "install_file_exporter", "transaction_span"]
