"""Parsing a device CSV: problems named by line and column."""

from __future__ import annotations

from gateway.registry import parse_device_csv


def test_csv_header_problems_are_on_line_1() -> None:
    parsed = parse_device_csv("device_id,feed,city,lat,lon,name,colour\n")
    assert {(p.row, p.field) for p in parsed.problems} == {(1, "district"), (1, "colour")}
    assert parse_device_csv("").problems[0].row == 1
