"""The `ttn` payload format (see README.md)."""
