"""Set-up shared by every test directory (pyproject's testpaths)."""

# As the app shell does (nakhon/__init__.py): the feed plugins register their specs in core.feeds before a
# test reads them through the gateway or the rules, which do not import the collectors.
import collectors.feeds  # noqa: F401
