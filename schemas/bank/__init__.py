"""The example bank-account domain (the eGo sample); generated code only."""
