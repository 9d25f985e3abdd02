"""kes.v1 envelopes: generated from envelopes.proto by `python -m kes.schemas.generate`."""
