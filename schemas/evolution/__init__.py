"""The schema-evolution example (a wallet at two schema versions); generated code only."""
