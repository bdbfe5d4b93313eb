"""The `chirpstack` payload format (see README.md)."""
