"""The `senml` payload format (see README.md)."""
