"""A YAML loader that remembers the line of every node, so validation errors can name file and line.

data, lines = load_yaml_with_lines(text)
lines[("rules", 0, "when")]  -> 1-based line of that node
line_for(lines, ("rules", 0, "when", "compare", "op"))  -> deepest known line (unknown parts skipped)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlError(ValueError):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


# The errors of a rule or routing file, by file and line (here, below both rules/check.py and the notify
# routing that raise them, so that neither imports the other).
@dataclass(frozen=True, slots=True)
class RuleError:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line if self.line is not None else '?'}: {self.message}"


class RuleLoadError(ValueError):
    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("invalid rules:\n" + "\n".join(str(e) for e in errors))
        self.errors = errors


def load_yaml_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(f"invalid YAML: {exc.problem or exc}", mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}", None) from exc
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, path: Path) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            constructor.flatten_mapping(n)
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    raise YamlError("mapping keys must be scalars", key_node.start_mark.line + 1)
                if key in out:
                    raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
                out[key] = build(value_node, (*path, key))
                lines.setdefault((*path, key), key_node.start_mark.line + 1)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    try:
        data = build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise YamlError(f"invalid YAML: {exc.problem}", mark.line + 1 if mark else None) from exc
    return data, lines


def line_for(lines: dict[Path, int], loc: Sequence[str | int]) -> int | None:
    """The line of the deepest node named by `loc`; parts of `loc` that are not keys (union tags) are skipped."""
    path: Path = ()
    best = lines.get(path)
    for part in loc:
        candidate = (*path, part)
        if candidate in lines:
            path = candidate
            best = lines[candidate]
        elif isinstance(part, str) and part.isdigit() and (*path, int(part)) in lines:
            path = (*path, int(part))
            best = lines[path]
    return best
