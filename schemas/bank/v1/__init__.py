"""bank.v1 messages: generated from bank.proto by `python -m kes.schemas.generate`."""
