"""The format registry: names, options, errors."""

from __future__ import annotations

import pytest

from collectors.formats import FORMATS, FormatConfigError, make_format


def test_all_formats_registered_and_named() -> None:
    assert set(FORMATS) == {"native", "ttn", "chirpstack", "senml", "lpp", "traccar"}
    for name in FORMATS:
        assert make_format(name).name == name


def test_unknown_format_names_it_and_the_known_ones() -> None:
    with pytest.raises(FormatConfigError) as exc:
        make_format("cayenne")
    msg = str(exc.value)
    assert "'cayenne'" in msg
    for known in FORMATS:
        assert known in msg


def test_unknown_option_is_an_error_naming_it() -> None:
    with pytest.raises(FormatConfigError, match="prefx"):
        make_format("native", prefx="city")


def test_bad_option_value_is_an_error() -> None:
    with pytest.raises(FormatConfigError, match="lpp_fallback"):
        make_format("ttn", lpp_fallback="no")
    with pytest.raises(FormatConfigError, match="encoding"):
        make_format("lpp", encoding="ascii")
