"""Load and check a directory of rule files; every error names the file and the line.

errors = check_rules_dir("rules/defaults")      # [] when all is well
ruleset = load_rules_dir("rules/defaults")      # raises RuleLoadError(errors) otherwise
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from rules.model import Rule, RuleFile, RuleSet, ThresholdConfig
from rules.semantic import rule_problems
from rules.yamlload import RuleError, RuleLoadError, YamlError, line_for, load_yaml_with_lines

DEFAULTS_DIR = Path(__file__).parent / "defaults"


def _loc_text(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_rule_file(path: Path) -> tuple[RuleFile | None, list[RuleError], dict[str, int]]:
    """One file: (parsed, errors, {rule name: line})."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [RuleError(name, None, f"cannot read: {exc}")], {}
    try:
        data, lines = load_yaml_with_lines(text)
    except YamlError as exc:
        return None, [RuleError(name, exc.line, str(exc))], {}
    if data is None:
        return RuleFile(), [], {}
    if not isinstance(data, dict):
        return None, [RuleError(name, 1, "a rule file is a mapping with `rules:` (and optional `thresholds:`)")], {}
    try:
        parsed = RuleFile.model_validate(data, context={"base_dir": str(path.parent)})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            errors.append(RuleError(name, line_for(lines, loc), f"{_loc_text(loc)}: {err['msg']}"))
        return None, errors, {}
    rule_lines = {r.name: lines.get(("rules", i), 0) for i, r in enumerate(parsed.rules)}
    # The schema is fine; now what cannot work: unknown fields, wrong types or ranges, template typos.
    problems = [
        RuleError(name, line, message)
        for i, rule in enumerate(parsed.rules)
        for line, message in rule_problems(rule, i, lines, parsed.thresholds)
    ]
    if problems:
        return None, problems, {}
    return parsed, [], rule_lines


def _merge(into: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> list[str]:
    clashes = []
    for key, params in new.items():
        have = into.setdefault(key, {})
        for p, v in params.items():
            if p in have and have[p] != v:
                clashes.append(f"{key}.{p}")
            have[p] = v
    return clashes


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _load(directory: Path) -> tuple[RuleSet, list[RuleError]]:
    errors: list[RuleError] = []
    if not directory.is_dir():
        return RuleSet(), [RuleError(str(directory), None, "not a directory")]
    rules: list[Rule] = []
    sources: dict[str, str] = {}
    city: dict[str, dict[str, float]] = {}
    profile: dict[str, dict[str, float]] = {}
    district: dict[str, dict[str, float]] = {}
    for path in _files(directory):
        parsed, file_errors, rule_lines = parse_rule_file(path)
        errors.extend(file_errors)
        if parsed is None:
            continue
        for rule in parsed.rules:
            where = f"{path}:{rule_lines.get(rule.name, 0)}"
            if rule.name in sources:
                errors.append(
                    RuleError(
                        str(path),
                        rule_lines.get(rule.name),
                        f"duplicate rule name {rule.name!r} (first at {sources[rule.name]})",
                    )
                )
                continue
            sources[rule.name] = where
            rules.append(rule)
        th = parsed.thresholds
        clashes = _merge(city, th.city) + _merge(profile, th.profile)
        flat = {f"{c}/{d}": params for c, ds in th.district.items() for d, params in ds.items()}
        clashes += _merge(district, flat)
        errors.extend(RuleError(str(path), None, f"thresholds: conflicting value for {c}") for c in clashes)
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for key, params in district.items():
        c, d = key.split("/", 1)
        nested.setdefault(c, {})[d] = params
    ruleset = RuleSet(
        rules=[r for r in rules if r.enabled],
        thresholds=ThresholdConfig(city=city, district=nested, profile=profile),
        sources=sources,
    )
    return ruleset, errors


def check_rules_dir(path: str | Path) -> list[RuleError]:
    """All problems in the rule files under `path` (recursively); empty when the set loads."""
    return _load(Path(path))[1]


def load_rules_dir(path: str | Path | None = None) -> RuleSet:
    """The enabled rules under `path` (default: the shipped `rules/defaults/`). Raises RuleLoadError."""
    ruleset, errors = _load(Path(path) if path is not None else DEFAULTS_DIR)
    if errors:
        raise RuleLoadError(errors)
    return ruleset
