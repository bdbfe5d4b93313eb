"""Parse a device CSV into validated rows, naming the line and the column of every problem.

Columns: `device_id,feed,city,district,lat,lon,name` (required), and optionally `profile`, `dev_eui`,
`heartbeat_s` and `site_<key>` (e.g. `site_bank_level_m`). Line numbers are those a spreadsheet shows:
the header is line 1. Checks that need the database (profile exists, DevEUI not taken) are `device_import`'s.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.errors import FieldProblem
from gateway.registry.schemas import SITE_FIELDS, DeviceSpec, check_site

REQUIRED_COLUMNS = ("device_id", "feed", "city", "district", "lat", "lon", "name")
OPTIONAL_COLUMNS = ("profile", "dev_eui", "heartbeat_s")
SITE_PREFIX = "site_"
MAX_ROWS = 200_000


@dataclass(slots=True)
class CsvRow:
    line: int
    spec: DeviceSpec
    # Which optional values the file states for this row: an absent column leaves the stored value alone.
    given: frozenset[str]


@dataclass(slots=True)
class ParsedCsv:
    rows: list[CsvRow] = field(default_factory=list)
    problems: list[FieldProblem] = field(default_factory=list)
    total_rows: int = 0

    @property
    def bad_lines(self) -> set[int]:
        return {p.row for p in self.problems if p.row is not None}


def _column_for(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] == "site" and len(loc) > 1:
        return f"{SITE_PREFIX}{loc[1]}"
    return str(loc[0]) if loc else "row"


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # let the schema name it as not a number


def parse_device_csv(text: str) -> ParsedCsv:
    result = ParsedCsv()
    if text.startswith("\ufeff"):  # Excel writes a BOM in "CSV UTF-8"
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        result.problems.append(FieldProblem("header", "the file is empty; expected a header row", row=1))
        return result
    except csv.Error as exc:
        result.problems.append(FieldProblem("header", f"not valid CSV: {exc}", row=1))
        return result
    columns = [c.strip() for c in header]
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            result.problems.append(FieldProblem(column, "required column is missing from the header", row=1))
    seen_columns: set[str] = set()
    for column in columns:
        if column in seen_columns:
            result.problems.append(FieldProblem(column, "column appears twice in the header", row=1))
        seen_columns.add(column)
        known = column in REQUIRED_COLUMNS or column in OPTIONAL_COLUMNS
        if not known and column.startswith(SITE_PREFIX) and column[len(SITE_PREFIX) :] in SITE_FIELDS:
            known = True
        if not known:
            site_keys = ", ".join(SITE_PREFIX + k for k in SITE_FIELDS)
            result.problems.append(
                FieldProblem(
                    column or "(empty)",
                    f"unknown column; known: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}, {site_keys}",
                    row=1,
                )
            )
    if result.problems:
        return result

    first_line_of_id: dict[str, int] = {}
    first_line_of_eui: dict[str, int] = {}
    line = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.problems.append(FieldProblem("row", f"not valid CSV: {exc}", row=reader.line_num))
            break
        start_line, line = line + 1, reader.line_num
        if not values or all(not v.strip() for v in values):
            continue  # blank lines are harmless
        result.total_rows += 1
        if result.total_rows > MAX_ROWS:
            result.problems.append(FieldProblem("row", f"more than {MAX_ROWS} rows; split the file", row=start_line))
            break
        if len(values) != len(columns):
            result.problems.append(
                FieldProblem(
                    "row", f"has {len(values)} values but the header has {len(columns)} columns", row=start_line
                )
            )
            continue
        cells = {c: v.strip() for c, v in zip(columns, values, strict=True)}
        data: dict[str, Any] = {}
        site: dict[str, Any] = {}
        given: set[str] = set()
        site_problems: list[FieldProblem] = []
        for column, cell in cells.items():
            if column.startswith(SITE_PREFIX):
                given.add(column)
                if cell:
                    key = column[len(SITE_PREFIX) :]
                    try:
                        site.update(check_site({key: _number(cell)}))
                    except ValueError as exc:
                        site_problems.append(FieldProblem(column, str(exc), row=start_line, value=cell))
            elif column in ("lat", "lon"):
                data[column] = _number(cell) if cell else None
            elif column == "heartbeat_s" or column in OPTIONAL_COLUMNS:
                given.add(column)
                data[column] = cell or None
            else:
                data[column] = cell
        data["site"] = site
        try:
            spec = DeviceSpec.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                column = _column_for(tuple(error["loc"]))
                shown = cells.get(column)
                result.problems.append(FieldProblem(column, error["msg"], row=start_line, value=shown))
            result.problems.extend(site_problems)
            continue
        if site_problems:
            result.problems.extend(site_problems)
            continue
        earlier = first_line_of_id.get(spec.device_id)
        if earlier is not None:
            result.problems.append(
                FieldProblem(
                    "device_id", f"device {spec.device_id!r} already appears on line {earlier}", row=start_line
                )
            )
            continue
        first_line_of_id[spec.device_id] = start_line
        if spec.dev_eui:
            earlier = first_line_of_eui.get(spec.dev_eui)
            if earlier is not None:
                result.problems.append(
                    FieldProblem("dev_eui", f"DevEUI {spec.dev_eui} already appears on line {earlier}", row=start_line)
                )
                continue
            first_line_of_eui[spec.dev_eui] = start_line
        result.rows.append(CsvRow(start_line, spec, frozenset(given)))
    return result
