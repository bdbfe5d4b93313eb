"""The base of nakhon's typed errors. Each component derives its own (collectors/errors.py, gateway/errors.py),
carrying the context an operator needs and never a secret."""

from __future__ import annotations


class NakhonError(Exception):
    """Base of nakhon's own errors."""


__all__ = ["NakhonError"]
