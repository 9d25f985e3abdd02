"""kes.v1 envelopes: generated from envelopes.proto by `python -m schemas.generate`."""
