"""The `native` payload format (see README.md)."""
