"""The `lpp` payload format (see README.md)."""
