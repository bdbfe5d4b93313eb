"""The app shell's typed errors."""

from __future__ import annotations

from core.errors import NakhonError


class MissingDependencyError(NakhonError):
    """A module the app needs cannot be imported: nakhon stops instead of running without a component."""

    def __init__(self, module: str, detail: str) -> None:
        super().__init__(
            f"cannot start: the Python module {module!r} is missing or broken ({detail}); "
            "install nakhon with its dependencies (pip install nakhon, or scripts/setup.sh)"
        )
        self.module = module

    @classmethod
    def from_import_error(cls, exc: ImportError) -> MissingDependencyError:
        return cls(exc.name or "?", str(exc))


__all__ = ["MissingDependencyError"]
