"""The `traccar` payload format (see README.md)."""
