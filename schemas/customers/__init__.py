"""The customers example domain (personal data marked in the .proto); generated code only."""
