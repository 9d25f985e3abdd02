"""customers.v1: generated from customers.proto by `python -m kes.schemas.generate`."""
