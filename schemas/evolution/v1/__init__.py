"""evolution.v1: generated from evolution.proto by `python -m kes.schemas.generate`."""
