"""Example domains built on kes."""
