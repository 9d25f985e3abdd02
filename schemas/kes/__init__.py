"""Generated protobuf code for the kes wire contract; the sources are the .proto files."""
